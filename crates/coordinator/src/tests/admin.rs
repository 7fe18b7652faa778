//! Tests of ListGroups, DescribeGroups and DeleteGroups.

use bytes::Bytes;
use kafka_protocol::messages::{GroupId, LeaveGroupRequest};
use sluice_protocol::ErrorCode;

use super::{any_partition, commit_req, s, shard, stable_single};
use crate::record::CoordinatorRecord;

#[test]
fn delete_groups_requires_empty_and_writes_tombstones() {
    let mut sh = shard();
    let a = stable_single(&mut sh);
    sh.offset_commit(0, 8, &commit_req(1, &a, 5), &any_partition);
    assert_eq!(
        sh.delete_group("g").response,
        ErrorCode::NonEmptyGroup.code()
    );
    assert_eq!(
        sh.delete_group("nope").response,
        ErrorCode::GroupIdNotFound.code()
    );
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(&a));
    assert_eq!(sh.leave_group(1, 1, &leave).response.error_code, 0);
    let r = sh.delete_group("g");
    assert_eq!(r.response, 0);
    assert_eq!(
        r.records,
        vec![
            CoordinatorRecord::OffsetCommit {
                group_id: "g".into(),
                topic: "t".into(),
                partition: 0,
                value: None
            },
            CoordinatorRecord::GroupMetadata {
                group_id: "g".into(),
                value: None
            },
        ]
    );
    assert!(sh.group("g").is_none());
    assert_eq!(sh.describe_group("g").group_state.as_str(), "Dead");
}

#[test]
fn describe_and_list_groups_with_state_filter() {
    let mut sh = shard();
    let a = stable_single(&mut sh);
    let d = sh.describe_group("g");
    assert_eq!(
        (
            d.group_state.as_str(),
            d.protocol_type.as_str(),
            d.protocol_data.as_str()
        ),
        ("Stable", "consumer", "range")
    );
    assert_eq!(d.members[0].member_id.as_str(), a);
    assert_eq!(d.members[0].member_assignment, Bytes::from_static(b"a1"));
    assert_eq!(sh.list_groups(&["stable".into()], &[]).len(), 1);
    assert_eq!(sh.list_groups(&["Empty".into()], &[]).len(), 0);
    assert_eq!(sh.list_groups(&[], &["consumer".into()]).len(), 0);
}
