//! Partition reassignment, as Kafka's KRaft controller runs it (`ReplicationControlManager`
//! `alterPartitionReassignments`/`listPartitionReassignments`, `PartitionReassignmentReplicas`,
//! `PartitionReassignmentRevert`, `PartitionChangeBuilder.completeReassignmentIfNeeded`):
//!
//! - A reassignment to target replicas `T` of a partition on replicas `C` records `replicas = T ++ (C - T)`,
//!   `adding = T - C`, `removing = C - T`. The brokers in `adding` start following and catching up; the ISR and
//!   the leader stay.
//! - It completes once every target replica is in the ISR (the leader adds the caught-up ones through
//!   AlterPartition): `replicas = T`, `isr = isr - removing`, no adding or removing; a leader that is no longer a
//!   replica (or not in the ISR) hands over to the first target replica in the ISR, with a new leader epoch. The
//!   brokers that lost their replica delete it. A reassignment that adds nothing completes at once.
//! - A new reassignment of a partition that is being reassigned starts from the partition as it was before (the
//!   revert); so does a cancel (target `None`), which answers NO_REASSIGNMENT_IN_PROGRESS when there is none.
//!
//! The target is checked as a manual assignment (Kafka's `validateManualPartitionAssignment`): not empty, no
//! duplicates, registered brokers, at least one of them able to lead. A different replication factor is allowed
//! unless the request says otherwise (AlterPartitionReassignments v1's `allow_replication_factor_change`, KIP-860:
//! INVALID_REPLICATION_FACTOR "The replication factor is changed from 3 to 2").

use std::collections::HashMap;

use sluice_protocol::ErrorCode;

use super::brokers::is_eligible_leader;
use super::topics::validate_manual_assignment;
use super::{ControllerResult, MAX_RECORDS_PER_USER_OP};
use crate::error::code;
use crate::image::{MetadataImage, PartitionRegistration};
use crate::record::MetadataRecord;

/// One partition's requested reassignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentTarget {
    /// The topic name.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// The target replicas, or `None` to cancel the reassignment in progress.
    pub replicas: Option<Vec<i32>>,
}

/// The answer for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentOutcome {
    /// The topic name.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// 0 or the error.
    pub error_code: i16,
    /// Why, on error.
    pub error_message: Option<String>,
}

/// A partition being reassigned (ListPartitionReassignments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    /// The topic name.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// Every replica: the target ones, then those being removed.
    pub replicas: Vec<i32>,
    /// Replicas being added.
    pub adding_replicas: Vec<i32>,
    /// Replicas being removed.
    pub removing_replicas: Vec<i32>,
}

/// Starts, replaces or cancels the reassignments of `targets`, in order (a partition named twice gets the last).
/// Without `allow_replication_factor_change`, a target with another replication factor than the partition's
/// (its target replicas' while a reassignment runs) is refused.
pub fn alter_partition_reassignments(
    image: &MetadataImage,
    targets: &[ReassignmentTarget],
    allow_replication_factor_change: bool,
) -> ControllerResult<Vec<ReassignmentOutcome>> {
    // The registration each partition has after the targets before it in this request.
    let mut changed: HashMap<(String, i32), (crate::Uuid, PartitionRegistration)> = HashMap::new();
    let mut outcomes = Vec::with_capacity(targets.len());
    for target in targets {
        let outcome = |error_code: i16, error_message: Option<String>| ReassignmentOutcome {
            topic: target.topic.clone(),
            partition: target.partition,
            error_code,
            error_message,
        };
        let key = (target.topic.clone(), target.partition);
        let Some((topic_id, original)) = image.topic(&target.topic).and_then(|t| {
            usize::try_from(target.partition)
                .ok()
                .and_then(|i| t.partitions.get(i))
                .map(|p| (t.id, p))
        }) else {
            outcomes.push(outcome(
                code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(format!(
                    "Unable to find partition {}:{}.",
                    target.topic, target.partition
                )),
            ));
            continue;
        };
        if !changed.contains_key(&key) && changed.len() >= MAX_RECORDS_PER_USER_OP {
            outcomes.push(outcome(
                code::POLICY_VIOLATION,
                Some(format!(
                    "Too many partitions in one request (at most {MAX_RECORDS_PER_USER_OP})."
                )),
            ));
            continue;
        }
        let current = changed.get(&key).map_or(original, |(_, p)| p);
        let next = match &target.replicas {
            None => {
                if !current.is_reassigning() {
                    outcomes.push(outcome(
                        ErrorCode::NoReassignmentInProgress.code(),
                        Some(format!(
                            "No ongoing reassignment for partition {}:{}.",
                            target.topic, target.partition
                        )),
                    ));
                    continue;
                }
                revert(image, current)
            }
            Some(replicas) => {
                if let Err(e) = validate_manual_assignment(image, replicas, None) {
                    outcomes.push(outcome(e.code, e.message));
                    continue;
                }
                let current_rf = current.replicas.len() - current.removing_replicas.len();
                if !allow_replication_factor_change && replicas.len() != current_rf {
                    outcomes.push(outcome(
                        code::INVALID_REPLICATION_FACTOR,
                        Some(format!(
                            "The replication factor is changed from {current_rf} to {}",
                            replicas.len()
                        )),
                    ));
                    continue;
                }
                start(image, current, replicas)
            }
        };
        changed.insert(key, (topic_id, next));
        outcomes.push(outcome(0, None));
    }
    // One record per partition, against the registration in the image (epochs bumped once).
    let mut records = Vec::new();
    let mut keys: Vec<_> = changed.keys().cloned().collect();
    keys.sort();
    for key in keys {
        let (topic_id, next) = changed.remove(&key).expect("key taken from the map");
        let original = image
            .topic(&key.0)
            .and_then(|t| t.partition(key.1))
            .expect("looked up above");
        if let Some(registration) = with_epochs(original, next) {
            records.push(MetadataRecord::Partition {
                topic_id,
                partition: key.1,
                registration,
            });
        }
    }
    ControllerResult {
        records,
        response: outcomes,
    }
}

/// The reassignments in progress: of every partition (`filter` `None`), or of the named topics' partitions
/// (unknown topics and partitions that are not being reassigned are left out, as Kafka does).
pub fn list_partition_reassignments(
    image: &MetadataImage,
    filter: Option<&[(String, Vec<i32>)]>,
) -> Vec<OngoingReassignment> {
    let ongoing = |topic: &str, partition: i32, p: &PartitionRegistration| {
        p.is_reassigning().then(|| OngoingReassignment {
            topic: topic.to_string(),
            partition,
            replicas: p.replicas.clone(),
            adding_replicas: p.adding_replicas.clone(),
            removing_replicas: p.removing_replicas.clone(),
        })
    };
    match filter {
        None => image
            .topics()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| ongoing(&t.name, i32::try_from(i).unwrap_or(i32::MAX), p))
            })
            .collect(),
        Some(topics) => topics
            .iter()
            .filter_map(|(name, partitions)| image.topic(name).map(|t| (t, partitions)))
            .flat_map(|(t, partitions)| {
                partitions
                    .iter()
                    .filter_map(|&i| t.partition(i).and_then(|p| ongoing(&t.name, i, p)))
            })
            .collect(),
    }
}

/// Completes the reassignment of `next` if every target replica is in its ISR (and the ISR without the removed
/// replicas is not empty); `next` unchanged otherwise. Epochs are left to the caller.
pub(super) fn complete_if_caught_up(
    image: &MetadataImage,
    mut next: PartitionRegistration,
) -> PartitionRegistration {
    if !next.is_reassigning() {
        return next;
    }
    let removing = std::mem::take(&mut next.removing_replicas);
    let target = without(&next.replicas, &removing);
    let isr = without(&next.isr, &removing);
    if isr.is_empty() || !target.iter().all(|r| isr.contains(r)) {
        next.removing_replicas = removing;
        return next;
    }
    next.replicas = target;
    next.isr = isr;
    next.adding_replicas.clear();
    keep_or_elect_leader(image, &mut next);
    next
}

/// A reassignment of `current` to `target` (from `current` as it was before any reassignment in progress),
/// completed at once when nothing needs to catch up.
fn start(
    image: &MetadataImage,
    current: &PartitionRegistration,
    target: &[i32],
) -> PartitionRegistration {
    let mut next = revert(image, current);
    let adding = without(target, &next.replicas);
    let removing = without(&next.replicas, target);
    next.replicas = target.iter().chain(&removing).copied().collect();
    next.adding_replicas = adding;
    next.removing_replicas = removing;
    complete_if_caught_up(image, next)
}

/// `current` as it was before its reassignment in progress (itself when there is none): the adding replicas
/// leave the replicas and the ISR. An ISR left empty (every in-sync replica was being added) keeps the first
/// remaining replica, as Kafka's `PartitionReassignmentRevert` does.
fn revert(image: &MetadataImage, current: &PartitionRegistration) -> PartitionRegistration {
    let mut next = current.clone();
    if !current.is_reassigning() {
        return next;
    }
    let adding = std::mem::take(&mut next.adding_replicas);
    next.removing_replicas.clear();
    next.replicas.retain(|r| !adding.contains(r));
    next.isr.retain(|r| !adding.contains(r));
    if next.isr.is_empty() {
        next.isr = next.replicas.first().copied().into_iter().collect();
    }
    keep_or_elect_leader(image, &mut next);
    next
}

/// `ids` without those in `excluded`, in order.
fn without(ids: &[i32], excluded: &[i32]) -> Vec<i32> {
    ids.iter()
        .copied()
        .filter(|r| !excluded.contains(r))
        .collect()
}

/// Keeps a leader that is still an in-sync replica able to lead; else the first replica that is (or none).
fn keep_or_elect_leader(image: &MetadataImage, next: &mut PartitionRegistration) {
    let valid = |r: i32| {
        next.replicas.contains(&r) && next.isr.contains(&r) && is_eligible_leader(image, r)
    };
    if !valid(next.leader) {
        next.leader = next
            .replicas
            .iter()
            .copied()
            .find(|&r| valid(r))
            .unwrap_or(-1);
    }
}

/// `next` with the epochs of a change from `current`: a new leader epoch when the leader changed, a new partition
/// epoch when anything did; `None` when nothing did.
pub(super) fn with_epochs(
    current: &PartitionRegistration,
    mut next: PartitionRegistration,
) -> Option<PartitionRegistration> {
    next.leader_epoch = current.leader_epoch;
    next.partition_epoch = current.partition_epoch;
    // Eligible leader replicas are replicas outside the ISR (a reassignment may have removed some).
    next.elr
        .retain(|r| next.replicas.contains(r) && !next.isr.contains(r));
    if &next == current {
        return None;
    }
    if next.leader != current.leader {
        next.leader_epoch = current.leader_epoch + 1;
    }
    next.partition_epoch = current.partition_epoch + 1;
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::election::tests::{apply, brokers, topic};

    /// Brokers `ids` and a topic "t" with partitions of (replicas, isr, leader) at leader epoch 5, partition
    /// epoch 7.
    fn image(ids: &[i32], partitions: &[(&[i32], &[i32], i32)]) -> MetadataImage {
        topic(&brokers(ids), "t", partitions)
    }

    fn target(partition: i32, replicas: Option<&[i32]>) -> ReassignmentTarget {
        ReassignmentTarget {
            topic: "t".into(),
            partition,
            replicas: replicas.map(<[i32]>::to_vec),
        }
    }

    fn part(image: &MetadataImage, partition: i32) -> PartitionRegistration {
        image
            .topic("t")
            .unwrap()
            .partition(partition)
            .unwrap()
            .clone()
    }

    #[test]
    fn adding_a_replica_waits_for_it_to_join_the_isr_then_drops_the_removed_one() {
        let img = image(&[1, 2, 3], &[(&[1, 2], &[1, 2], 1)]);
        let result = alter_partition_reassignments(&img, &[target(0, Some(&[3, 2]))], true);
        assert_eq!(result.response[0].error_code, 0);
        let img = apply(&img, &result.records);
        let p = part(&img, 0);
        assert_eq!(p.replicas, vec![3, 2, 1]);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![3], vec![1])
        );
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 5, 8));
        let listed = list_partition_reassignments(&img, None);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].adding_replicas, vec![3]);

        // Replica 3 caught up: the leader puts it in the ISR, which completes the reassignment; leader 1 is
        // removed, so 3 (first target replica in the ISR) leads under a new epoch.
        let mut grown = p.clone();
        grown.isr = vec![1, 2, 3];
        let done = with_epochs(&p, complete_if_caught_up(&img, grown)).unwrap();
        assert_eq!(done.replicas, vec![3, 2]);
        assert_eq!(done.isr, vec![2, 3]);
        assert!(!done.is_reassigning());
        assert_eq!(
            (done.leader, done.leader_epoch, done.partition_epoch),
            (3, 6, 9)
        );
    }

    #[test]
    fn a_reassignment_that_adds_nothing_completes_at_once_and_keeps_a_leader_that_stays() {
        let img = image(&[1, 2, 3], &[(&[1, 2, 3], &[1, 2, 3], 2)]);
        let result = alter_partition_reassignments(&img, &[target(0, Some(&[2, 3]))], true);
        let img = apply(&img, &result.records);
        let p = part(&img, 0);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone()),
            (vec![2, 3], vec![2, 3])
        );
        assert!(!p.is_reassigning());
        assert_eq!((p.leader, p.leader_epoch), (2, 5));
        assert!(list_partition_reassignments(&img, None).is_empty());
    }

    #[test]
    fn cancel_reverts_and_a_second_cancel_finds_nothing() {
        let img = image(&[1, 2, 3, 4], &[(&[1, 2], &[1, 2], 1)]);
        let started = alter_partition_reassignments(&img, &[target(0, Some(&[3, 4]))], true);
        let img2 = apply(&img, &started.records);
        assert_eq!(part(&img2, 0).replicas, vec![3, 4, 1, 2]);
        let cancelled = alter_partition_reassignments(&img2, &[target(0, None)], true);
        assert_eq!(cancelled.response[0].error_code, 0);
        let img3 = apply(&img2, &cancelled.records);
        let p = part(&img3, 0);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![1, 2], vec![1, 2], 1)
        );
        assert!(!p.is_reassigning());
        let again = alter_partition_reassignments(&img3, &[target(0, None)], true);
        assert_eq!(
            again.response[0].error_code,
            ErrorCode::NoReassignmentInProgress.code()
        );
        assert!(again.records.is_empty());
    }

    #[test]
    fn a_new_target_replaces_the_one_in_progress_from_the_original_replicas() {
        let img = image(&[1, 2, 3, 4], &[(&[1, 2], &[1, 2], 1)]);
        let first = alter_partition_reassignments(&img, &[target(0, Some(&[3, 2]))], true);
        let img = apply(&img, &first.records);
        let second = alter_partition_reassignments(&img, &[target(0, Some(&[4, 1]))], true);
        let img = apply(&img, &second.records);
        let p = part(&img, 0);
        assert_eq!(p.replicas, vec![4, 1, 2]);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![4], vec![2])
        );
        assert_eq!(p.isr, vec![1, 2]);
    }

    #[test]
    fn bad_targets_get_kafkas_errors_and_change_nothing() {
        let img = image(&[1, 2], &[(&[1], &[1], 1)]);
        let result = alter_partition_reassignments(
            &img,
            &[
                target(0, Some(&[])),
                target(0, Some(&[2, 2])),
                target(0, Some(&[9])),
                target(5, Some(&[1])),
                ReassignmentTarget {
                    topic: "nope".into(),
                    partition: 0,
                    replicas: Some(vec![1]),
                },
            ],
            true,
        );
        let codes: Vec<i16> = result.response.iter().map(|o| o.error_code).collect();
        assert_eq!(
            codes,
            vec![
                code::INVALID_REPLICA_ASSIGNMENT,
                code::INVALID_REPLICA_ASSIGNMENT,
                code::INVALID_REPLICA_ASSIGNMENT,
                code::UNKNOWN_TOPIC_OR_PARTITION,
                code::UNKNOWN_TOPIC_OR_PARTITION,
            ]
        );
        assert!(result.records.is_empty());
    }

    #[test]
    fn listing_by_topic_leaves_out_unknown_topics_and_settled_partitions() {
        let img = image(&[1, 2, 3], &[(&[1], &[1], 1), (&[2], &[2], 2)]);
        let result = alter_partition_reassignments(&img, &[target(1, Some(&[3]))], true);
        let img = apply(&img, &result.records);
        let filter = vec![
            ("t".to_string(), vec![0, 1, 9]),
            ("nope".to_string(), vec![0]),
        ];
        let listed = list_partition_reassignments(&img, Some(&filter));
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].partition, listed[0].replicas.clone()),
            (1, vec![3, 2])
        );
    }
}
