//! The admin requests over a shard's groups: ListGroups, DescribeGroups and DeleteGroups (which writes the
//! group's offset tombstones, pending transactional ones included, then its own).

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::GroupId;

use super::{code, sb, CoordinatorResult, GroupCoordinatorShard, GroupError, Records};
use crate::group::GroupState;

impl GroupCoordinatorShard {
    /// ListGroups of this shard, filtered by state (v4+, KIP-518) and type (v5+, KIP-848: only `classic` here).
    pub fn list_groups(&self, states: &[String], types: &[String]) -> Vec<ListedGroup> {
        if !types.is_empty() && !types.iter().any(|t| t.eq_ignore_ascii_case("classic")) {
            return Vec::new();
        }
        let states: Vec<GroupState> = states.iter().filter_map(|s| GroupState::parse(s)).collect();
        self.groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .filter(|g| states.is_empty() || states.contains(&g.state))
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(GroupId(sb(&g.group_id)))
                    .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or("")))
                    .with_group_state(sb(g.state.name()))
                    .with_group_type(sb("classic"))
            })
            .collect()
    }

    /// DescribeGroups for one group. An unknown group is described as Dead with no error (v0-v5).
    pub fn describe_group(&self, group_id: &str) -> DescribedGroup {
        let base = DescribedGroup::default().with_group_id(GroupId(sb(group_id)));
        let Some(g) = self.groups.get(group_id) else {
            return base
                .with_group_state(sb(GroupState::Dead.name()))
                .with_protocol_type(sb(""))
                .with_protocol_data(sb(""));
        };
        let stable = g.state == GroupState::Stable;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let members = g
            .members
            .iter()
            .map(|m| {
                let (metadata, assignment) = if stable {
                    (
                        m.metadata(&protocol).cloned().unwrap_or_default(),
                        m.assignment.clone(),
                    )
                } else {
                    (Bytes::new(), Bytes::new())
                };
                DescribedGroupMember::default()
                    .with_member_id(sb(&m.member_id))
                    .with_group_instance_id(m.group_instance_id.as_deref().map(sb))
                    .with_client_id(sb(&m.client_id))
                    .with_client_host(sb(&m.client_host))
                    .with_member_metadata(metadata)
                    .with_member_assignment(assignment)
            })
            .collect();
        base.with_group_state(sb(g.state.name()))
            .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or("")))
            .with_protocol_data(sb(if stable { &protocol } else { "" }))
            .with_members(members)
    }

    /// DeleteGroups for one group: only an Empty group is deleted (offset tombstones, then the group's).
    pub fn delete_group(&mut self, group_id: &str) -> CoordinatorResult<i16> {
        let mut records = Vec::new();
        let error = match self.groups.get(group_id) {
            None => GroupError::GroupIdNotFound,
            Some(g) if g.state == GroupState::Dead => GroupError::GroupIdNotFound,
            Some(g) if g.state != GroupState::Empty => GroupError::NonEmptyGroup,
            Some(_) => {
                self.delete_group_records(group_id, &mut records);
                GroupError::None
            }
        };
        CoordinatorResult {
            records,
            response: code(error),
            deliveries: Vec::new(),
        }
    }

    /// The tombstones of a group: its committed offsets, the partitions that only open transactions wrote
    /// (Kafka's `deleteAllOffsets`: one tombstone per partition), then the group.
    fn delete_group_records(&mut self, group_id: &str, records: &mut Records) {
        let mut keys: Vec<(String, i32)> = self
            .offsets
            .get(group_id)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for key in self.pending_partitions(group_id) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        for (topic, partition) in keys {
            self.emit_offset_tombstone(records, group_id, topic, partition);
        }
        self.emit_group_tombstone(records, group_id);
    }
}
