//! Request forwarding (KIP-590): admin requests that change metadata reach any broker, but only the active
//! controller can commit them. A node that is not the active controller sends the decoded request, at the
//! client's version, to the active controller's CONTROLLER listener (which runs the same handlers) and returns
//! its answer. When no controller answers in time, every item gets NOT_CONTROLLER (none was reachable; the
//! client retries after refreshing metadata) or REQUEST_TIMED_OUT (one was reached but did not answer).
//!
//! Kafka wraps the request in an Envelope carrying the client's principal; without authentication there is
//! nothing to carry, so the request goes as it is. DescribeQuorum is forwarded too, as Kafka's brokers do.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::{RequestKind, ResponseKind};

use super::{ListenerKind, RequestContext};
use crate::broker::Broker;
use crate::controller_channel::ControllerRequest;

/// How long a forwarded request may wait for the controller when the request carries no timeout of its own
/// (Kafka's `request.timeout.ms` default).
const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Forwards `request` to the active controller when it is an API that only the controller can answer, it came
/// in on a client listener, there is a controller quorum, and this node is not its leader. Otherwise hands the
/// request back to be handled here.
pub(super) async fn forward_if_needed(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: RequestKind,
) -> Result<ResponseKind, RequestKind> {
    let forwardable = matches!(
        request,
        RequestKind::CreateTopics(_)
            | RequestKind::DeleteTopics(_)
            | RequestKind::CreatePartitions(_)
            | RequestKind::AlterConfigs(_)
            | RequestKind::IncrementalAlterConfigs(_)
            | RequestKind::DescribeQuorum(_)
            | RequestKind::ElectLeaders(_)
            | RequestKind::AlterPartitionReassignments(_)
            | RequestKind::ListPartitionReassignments(_)
    );
    // On the controller listener a non-leader answers NOT_CONTROLLER itself: forwarding again could loop.
    if !forwardable
        || ctx.listener != ListenerKind::Client
        || broker.controller.is_active()
        || broker.controller.voters().is_empty()
    {
        return Err(request);
    }
    Ok(match request {
        RequestKind::CreateTopics(r) => {
            let timeout = request_timeout(r.timeout_ms);
            ResponseKind::CreateTopics(forward(broker, ctx, r, timeout).await)
        }
        RequestKind::DeleteTopics(r) => {
            let timeout = request_timeout(r.timeout_ms);
            ResponseKind::DeleteTopics(forward(broker, ctx, r, timeout).await)
        }
        RequestKind::CreatePartitions(r) => {
            let timeout = request_timeout(r.timeout_ms);
            ResponseKind::CreatePartitions(forward(broker, ctx, r, timeout).await)
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(forward(broker, ctx, r, DEFAULT_FORWARD_TIMEOUT).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            forward(broker, ctx, r, DEFAULT_FORWARD_TIMEOUT).await,
        ),
        RequestKind::DescribeQuorum(r) => {
            ResponseKind::DescribeQuorum(forward(broker, ctx, r, DEFAULT_FORWARD_TIMEOUT).await)
        }
        RequestKind::ElectLeaders(r) => {
            let timeout = request_timeout(r.timeout_ms);
            ResponseKind::ElectLeaders(forward(broker, ctx, r, timeout).await)
        }
        RequestKind::AlterPartitionReassignments(r) => {
            let timeout = request_timeout(r.timeout_ms);
            ResponseKind::AlterPartitionReassignments(forward(broker, ctx, r, timeout).await)
        }
        RequestKind::ListPartitionReassignments(r) => {
            let timeout = request_timeout(r.timeout_ms);
            ResponseKind::ListPartitionReassignments(forward(broker, ctx, r, timeout).await)
        }
        other => return Err(other),
    })
}

/// The request's own `timeout_ms` when it has a positive one (at most the default), else the default.
fn request_timeout(timeout_ms: i32) -> Duration {
    match u64::try_from(timeout_ms) {
        Ok(ms) if ms > 0 => Duration::from_millis(ms).min(DEFAULT_FORWARD_TIMEOUT),
        _ => DEFAULT_FORWARD_TIMEOUT,
    }
}

async fn forward<R: ControllerRequest>(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: R,
    timeout: Duration,
) -> R::Response {
    match broker
        .controller_channel
        .forward_to_leader_broker(&request, ctx.api_version, timeout)
        .await
    {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(api_key = ?ctx.api_key, api_version = ctx.api_version, peer = %ctx.peer,
                error = %e, "forwarding to the active controller failed");
            request.error_response(ctx.api_version, e.error_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_requests_wait_no_longer_than_they_asked() {
        assert_eq!(request_timeout(5_000), Duration::from_secs(5));
        assert_eq!(request_timeout(0), DEFAULT_FORWARD_TIMEOUT);
        assert_eq!(request_timeout(-1), DEFAULT_FORWARD_TIMEOUT);
        assert_eq!(request_timeout(600_000), DEFAULT_FORWARD_TIMEOUT);
    }
}
