//! AlterPartition (KIP-497): a partition leader asks the controller to change the partition's ISR, naming the
//! leader epoch and partition epoch it acted on. The controller checks them against the image (a stale leader is
//! FENCED_LEADER_EPOCH, a stale registration INVALID_UPDATE_VERSION), checks the proposed ISR (the leader in it,
//! only replicas, none fenced or shutting down: INELIGIBLE_REPLICA), and records the new ISR with the partition
//! epoch bumped. Checks and codes follow Kafka's `ReplicationControlManager.alterPartition`. An ISR that now holds
//! every target replica of a reassignment in progress completes it (`reassign.rs`).

use sluice_protocol::ErrorCode;

use super::brokers::is_eligible_leader;
use super::election::{target_elr, ElectionConfig};
use super::reassign::{complete_if_caught_up, with_epochs};
use super::ControllerResult;
use crate::error::code;
use crate::image::{MetadataImage, PartitionRegistration};
use crate::record::MetadataRecord;
use crate::Uuid;

/// One partition's proposed ISR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    /// The topic's id (v2+) or nil with `topic_name` set (v0-1).
    pub topic_id: Uuid,
    /// The topic's name (v0-1).
    pub topic_name: Option<String>,
    /// The partition index.
    pub partition: i32,
    /// The leader epoch the leader acted on.
    pub leader_epoch: i32,
    /// The partition epoch the leader acted on.
    pub partition_epoch: i32,
    /// The proposed ISR.
    pub new_isr: Vec<i32>,
}

/// The answer for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChangeOutcome {
    /// The topic's id (nil when it was named).
    pub topic_id: Uuid,
    /// The topic's name, when it was named.
    pub topic_name: Option<String>,
    /// The partition index.
    pub partition: i32,
    /// 0 or the error.
    pub error_code: i16,
    /// The registration after the change (or as it is, on error; empty when the partition is unknown).
    pub registration: Option<PartitionRegistration>,
}

/// The outcome of a whole AlterPartition request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionOutcome {
    /// A request-level error (STALE_BROKER_EPOCH, ...), else 0.
    pub error_code: i16,
    /// Per partition.
    pub partitions: Vec<IsrChangeOutcome>,
}

/// Applies the ISR changes `broker_id` (at `broker_epoch`) asks for.
pub fn alter_partition(
    image: &MetadataImage,
    broker_id: i32,
    broker_epoch: i64,
    changes: &[IsrChange],
    elections: &ElectionConfig,
) -> ControllerResult<AlterPartitionOutcome> {
    let stale = match image.brokers.get(&broker_id) {
        None => true,
        // -1: an old client that does not send its epoch.
        Some(b) => broker_epoch != -1 && b.epoch != broker_epoch,
    };
    if stale {
        return ControllerResult {
            records: Vec::new(),
            response: AlterPartitionOutcome {
                error_code: code::STALE_BROKER_EPOCH,
                partitions: Vec::new(),
            },
        };
    }
    let mut records = Vec::new();
    let mut partitions = Vec::with_capacity(changes.len());
    for change in changes {
        let topic = if change.topic_id.is_nil() {
            change.topic_name.as_deref().and_then(|n| image.topic(n))
        } else {
            image.topic_by_id(change.topic_id)
        };
        let outcome =
            |error_code: i16, registration: Option<PartitionRegistration>| IsrChangeOutcome {
                topic_id: change.topic_id,
                topic_name: change.topic_name.clone(),
                partition: change.partition,
                error_code,
                registration,
            };
        let Some((topic, current)) = topic.and_then(|t| {
            usize::try_from(change.partition)
                .ok()
                .and_then(|i| t.partitions.get(i))
                .map(|p| (t, p))
        }) else {
            let missing = if change.topic_id.is_nil() {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                code::UNKNOWN_TOPIC_ID
            };
            partitions.push(outcome(missing, None));
            continue;
        };
        let error = if current.leader != broker_id {
            Some(ErrorCode::NotLeaderOrFollower.code())
        } else if change.leader_epoch != current.leader_epoch {
            Some(ErrorCode::FencedLeaderEpoch.code())
        } else if change.partition_epoch != current.partition_epoch {
            Some(ErrorCode::InvalidUpdateVersion.code())
        } else if change.new_isr.is_empty()
            || !change.new_isr.contains(&broker_id)
            || change.new_isr.iter().any(|r| !current.replicas.contains(r))
            || has_duplicates(&change.new_isr)
        {
            Some(code::INVALID_REQUEST)
        } else if change
            .new_isr
            .iter()
            .any(|&r| r != broker_id && !is_eligible_leader(image, r))
        {
            Some(ErrorCode::IneligibleReplica.code())
        } else {
            None
        };
        if let Some(error_code) = error {
            partitions.push(outcome(error_code, Some(current.clone())));
            continue;
        }
        let mut next = current.clone();
        // Replica order, as Kafka keeps it.
        next.isr = current
            .replicas
            .iter()
            .copied()
            .filter(|r| change.new_isr.contains(r))
            .collect();
        // KIP-966: replicas leaving an ISR below min.insync.replicas stay eligible leaders.
        next.elr = target_elr(current, &next.isr, elections.min_isr(topic), &[]);
        next.last_known_elr.clear();
        // A reassignment whose target replicas are now all in sync completes (the leader may move).
        let next = match with_epochs(current, complete_if_caught_up(image, next)) {
            Some(next) => {
                records.push(MetadataRecord::Partition {
                    topic_id: topic.id,
                    partition: change.partition,
                    registration: next.clone(),
                });
                next
            }
            None => current.clone(),
        };
        partitions.push(outcome(0, Some(next)));
    }
    ControllerResult {
        records,
        response: AlterPartitionOutcome {
            error_code: 0,
            partitions,
        },
    }
}

fn has_duplicates(ids: &[i32]) -> bool {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).any(|w| w[0] == w[1])
}
