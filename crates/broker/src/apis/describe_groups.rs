//! DescribeGroups (key 15), v0-v5: state, protocol and members of groups (member metadata and assignments
//! while Stable, as Kafka); an unknown group is described as Dead. v3+ may ask for the authorized operations
//! (all of READ, DELETE and DESCRIBE, without ACLs); v4+ carries group instance ids.

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::RequestContext;
use crate::broker::Broker;

/// READ (3), DELETE (6) and DESCRIBE (8) as Kafka's AclOperation bit set.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// Describes groups.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let mut g = match broker.groups.describe_group(broker, &group_id).await {
            Ok(g) => g,
            Err(e) => DescribedGroup::default()
                .with_group_id(group_id)
                .with_error_code(e.code()),
        };
        g.authorized_operations = if ctx.api_version >= 3 && request.include_authorized_operations {
            GROUP_OPERATIONS
        } else {
            i32::MIN
        };
        if ctx.api_version < 4 {
            for m in &mut g.members {
                m.group_instance_id = None;
            }
        }
        groups.push(g);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
