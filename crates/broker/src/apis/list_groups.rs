//! ListGroups (key 16), v0-v5: every group this broker coordinates, filtered by state (v4+, KIP-518) and by
//! type (v5+, KIP-848; all groups here are `classic`). COORDINATOR_LOAD_IN_PROGRESS while the groups of an
//! existing `__consumer_offsets` are still loading at start-up.

use std::sync::Arc;

use kafka_protocol::messages::{ListGroupsRequest, ListGroupsResponse};

use super::RequestContext;
use crate::broker::Broker;

/// Lists groups.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let states: Vec<String> = if ctx.api_version >= 4 {
        request
            .states_filter
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        Vec::new()
    };
    let types: Vec<String> = if ctx.api_version >= 5 {
        request.types_filter.iter().map(|s| s.to_string()).collect()
    } else {
        Vec::new()
    };
    let mut groups = match broker.groups.list_groups(&states, &types) {
        Ok(groups) => groups,
        Err(code) => return ListGroupsResponse::default().with_error_code(code),
    };
    if ctx.api_version < 4 {
        for g in &mut groups {
            g.group_state = Default::default();
        }
    }
    if ctx.api_version < 5 {
        for g in &mut groups {
            g.group_type = Default::default();
        }
    }
    ListGroupsResponse::default().with_groups(groups)
}
