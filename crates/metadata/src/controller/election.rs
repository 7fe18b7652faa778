//! Leader elections, as Kafka's KRaft controller runs them: how a leader is picked (`PartitionChangeBuilder`'s
//! PREFERRED, ONLINE and UNCLEAN elections), the ElectLeaders API (`ReplicationControlManager.electLeaders`), and
//! the periodic work of the active controller: unclean elections for leaderless partitions of topics that allow
//! them (`maybeElectUncleanLeaders`) and moving leadership back to preferred replicas (`auto.leader.rebalance.enable`).
//!
//! An **unclean** election lets a replica outside the ISR lead when no in-sync replica can. Its log may miss
//! records that were acknowledged, so the ISR becomes the new leader alone (Kafka's "this can result in data
//! loss"). It happens only when `unclean.leader.election.enable` is true for the topic (its override, else the
//! broker default) or when an operator asks for it (ElectLeaders UNCLEAN). Kafka also marks the partition's
//! `leader_recovery_state` RECOVERING; Sluice's `PartitionRegistration` has no such field, so nothing records
//! that the new leader has not recovered yet.
//!
//! The leader imbalance check follows Kafka's ZooKeeper controller (`checkAndTriggerAutoLeaderRebalance`): for each
//! broker, the partitions it is the preferred replica of; when more than `leader.imbalance.per.broker.percentage`
//! of them are led by someone else, those whose preferred replica is live and in the ISR elect it. (Kafka's KRaft
//! controller ignores the percentage and moves every imbalanced partition; with a percentage of 0 Sluice does too.)

use std::collections::BTreeSet;

use sluice_protocol::ErrorCode;

use super::brokers::is_eligible_leader;
use super::reassign::with_epochs;
use super::{ControllerResult, MAX_RECORDS_PER_USER_OP};
use crate::image::{MetadataImage, PartitionRegistration, TopicImage};
use crate::record::MetadataRecord;
use crate::Uuid;

/// The topic config (and broker default) that allows unclean elections.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// The most elections one periodic pass makes (Kafka's `MAX_ELECTIONS_PER_IMBALANCE`); the next pass goes on.
pub const MAX_ELECTIONS_PER_IMBALANCE: usize = 1_000;

/// The broker settings elections depend on; the driver passes them in (the logic reads no configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionConfig {
    /// `unclean.leader.election.enable`: the default for topics without an override (Kafka: false).
    pub unclean_leader_election_enable: bool,
    /// `auto.leader.rebalance.enable` (Kafka: true).
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms (Kafka: 300 s). Read by the driver's timer.
    pub leader_imbalance_check_interval_ms: u64,
    /// `leader.imbalance.per.broker.percentage` (Kafka: 10).
    pub leader_imbalance_per_broker_percentage: i32,
    /// `min.insync.replicas`: the default for topics without an override (Kafka: 1). An ISR smaller than this
    /// keeps the replicas that left it as eligible leader replicas (KIP-966).
    pub min_insync_replicas: i32,
}

impl Default for ElectionConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        Self {
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
            leader_imbalance_per_broker_percentage: 10,
            min_insync_replicas: 1,
        }
    }
}

impl ElectionConfig {
    /// True when `topic` may elect a leader outside its ISR: its `unclean.leader.election.enable` override, else
    /// the broker default. Parsed as Java's `Boolean.parseBoolean` (only a case-insensitive "true" is true).
    pub fn unclean_enabled(&self, topic: &TopicImage) -> bool {
        match topic.configs.get(UNCLEAN_LEADER_ELECTION_ENABLE) {
            Some(value) => value.trim().eq_ignore_ascii_case("true"),
            None => self.unclean_leader_election_enable,
        }
    }

    /// `min.insync.replicas` of `topic`: its override, else the broker default (at least 1).
    pub fn min_isr(&self, topic: &TopicImage) -> usize {
        let min = topic
            .configs
            .get("min.insync.replicas")
            .and_then(|v| v.trim().parse::<i32>().ok())
            .unwrap_or(self.min_insync_replicas);
        usize::try_from(min.max(1)).unwrap_or(1)
    }

    /// The election a partition of `topic` runs when it must change leader: ONLINE, or UNCLEAN where allowed.
    pub(super) fn election_for(&self, topic: &TopicImage) -> Election {
        if self.unclean_enabled(topic) {
            Election::Unclean
        } else {
            Election::Online
        }
    }
}

/// How a new leader is picked (Kafka's `PartitionChangeBuilder.Election`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Election {
    /// The preferred (first) replica if it is in the ISR and may lead; else as ONLINE, keeping a valid leader.
    Preferred,
    /// Keep a leader that is in the ISR and may lead; else the first such replica in replica order; else none.
    Online,
    /// As ONLINE, then, with no in-sync replica able to lead, the first replica that may lead (outside the ISR).
    Unclean,
}

/// The eligible leader replicas of `current` once its ISR is `target_isr` (Kafka's
/// `PartitionChangeBuilder.maybePopulateTargetElr`, KIP-966): none while the ISR has at least `min_isr` members;
/// below that, the ELR and the ISR members that leave it, less those that shut down uncleanly (`unclean`: they may
/// have lost records). Below `min.insync.replicas` the leader's high watermark stands still, so each of them holds
/// every committed record. In replica order.
pub(super) fn target_elr(
    current: &PartitionRegistration,
    target_isr: &[i32],
    min_isr: usize,
    unclean: &[i32],
) -> Vec<i32> {
    // Kafka's effective min ISR: at most the replication factor.
    if target_isr.len() >= min_isr.min(current.replicas.len()) {
        return Vec::new();
    }
    current
        .replicas
        .iter()
        .copied()
        .filter(|r| current.elr.contains(r) || current.isr.contains(r))
        .filter(|r| !target_isr.contains(r) && !unclean.contains(r))
        .collect()
}

/// The registration `current` becomes with `target_isr` and a leader picked by `election` among the replicas
/// `acceptable` says may lead, or `None` when nothing changes: Kafka's `PartitionChangeBuilder.build` with ELR
/// (KIP-966, on by default since Kafka 4.1) and the last known leader of its "balanced" recovery. The ISR may
/// empty; the replicas that leave an ISR below `min_isr` become eligible leader replicas ([`target_elr`]). A
/// valid leader is an ISR member, or, with the ISR empty, an ELR member (which becomes the ISR alone); with
/// neither, the last known leader (the leader when the ISR emptied, kept while the ISR and ELR are empty) where
/// it may lead, then, for UNCLEAN, any replica: both unclean, the leader becoming the whole ISR. Epochs: the
/// leader epoch on a leader change, the partition epoch on any change.
pub(super) fn partition_change(
    current: &PartitionRegistration,
    target_isr: &[i32],
    election: Election,
    acceptable: impl Fn(i32) -> bool,
    min_isr: usize,
    unclean_shutdown: &[i32],
) -> Option<PartitionRegistration> {
    let elr = target_elr(current, target_isr, min_isr, unclean_shutdown);
    let valid = |r: i32| {
        (target_isr.contains(&r) || (target_isr.is_empty() && elr.contains(&r))) && acceptable(r)
    };
    let first_valid = |skip: usize| {
        current
            .replicas
            .iter()
            .skip(skip)
            .copied()
            .find(|&r| valid(r))
    };
    let last_known = (target_isr.is_empty() && elr.is_empty())
        .then(|| match current.last_known_elr.as_slice() {
            [leader] if acceptable(*leader) => Some(*leader),
            _ => None,
        })
        .flatten();
    let (leader, unclean) = match election {
        Election::Preferred => {
            let preferred = current.replicas.first().copied().unwrap_or(-1);
            if valid(preferred) {
                (preferred, false)
            } else if valid(current.leader) {
                (current.leader, false)
            } else if let Some(r) = first_valid(1) {
                (r, false)
            } else {
                last_known.map_or((-1, false), |r| (r, true))
            }
        }
        Election::Online | Election::Unclean => {
            if valid(current.leader) {
                (current.leader, false)
            } else if let Some(r) = first_valid(0) {
                (r, false)
            } else if let Some(r) = last_known {
                (r, true)
            } else if let Some(r) = (election == Election::Unclean)
                .then(|| current.replicas.iter().copied().find(|&r| acceptable(r)))
                .flatten()
            {
                (r, true)
            } else {
                (-1, false)
            }
        }
    };
    let mut next = current.clone();
    let changed = leader != current.leader;
    next.leader = leader;
    next.elr = elr;
    next.isr = target_isr.to_vec();
    if changed && unclean {
        // This can lose acknowledged records: the new leader's log is all there is now.
        next.isr = vec![leader];
        next.elr.clear();
    } else if changed && next.elr.contains(&leader) {
        next.isr = vec![leader];
        next.elr.retain(|&r| r != leader);
    }
    // The last known leader: set when the ISR empties, forgotten once the partition has a leader again.
    if next.isr.is_empty() {
        if current.leader >= 0 {
            next.last_known_elr = vec![current.leader];
        }
    } else if next.leader >= 0 {
        next.last_known_elr.clear();
    }
    with_epochs(current, next)
}

/// The record for a changed partition.
pub(super) fn partition_record(
    topic_id: Uuid,
    index: usize,
    registration: PartitionRegistration,
) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id,
        partition: i32::try_from(index).unwrap_or(i32::MAX),
        registration,
    }
}

/// ElectLeaders' `election_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// 0: the preferred replica leads (KIP-183).
    Preferred,
    /// 1: a partition without a leader elects one, out of the ISR if need be (KIP-460).
    Unclean,
}

impl ElectionType {
    /// The type for a wire value, or `None` for an unknown one (INVALID_REQUEST "Unknown election type N").
    pub fn from_wire(value: i8) -> Option<ElectionType> {
        match value {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }
}

/// The partitions of one topic an ElectLeaders request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionTarget {
    /// The topic name.
    pub topic: String,
    /// Its partition indexes.
    pub partitions: Vec<i32>,
}

/// The result for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionElectionOutcome {
    /// The partition index.
    pub partition: i32,
    /// 0, ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE,
    /// UNKNOWN_TOPIC_OR_PARTITION, or the request's error.
    pub error_code: i16,
    /// Kafka's message for the error; `None` on success.
    pub error_message: Option<String>,
}

/// The results for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicElectionOutcome {
    /// The topic name.
    pub topic: String,
    /// Per partition.
    pub partitions: Vec<PartitionElectionOutcome>,
}

/// The answer to an ElectLeaders request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectLeadersOutcome {
    /// A request-level error (POLICY_VIOLATION for too many elections at once), else 0.
    pub error_code: i16,
    /// Per topic.
    pub topics: Vec<TopicElectionOutcome>,
}

impl ElectLeadersOutcome {
    /// Every partition `targets` names with `error_code` and `message`, and the same request-level error (Kafka's
    /// `ElectLeadersRequest.getErrorResponse`); no partitions when the request named none (all partitions).
    pub fn failed(targets: Option<&[ElectionTarget]>, error_code: i16, message: &str) -> Self {
        let topics = targets
            .unwrap_or_default()
            .iter()
            .map(|t| TopicElectionOutcome {
                topic: t.topic.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|&partition| PartitionElectionOutcome {
                        partition,
                        error_code,
                        error_message: Some(message.to_string()),
                    })
                    .collect(),
            })
            .collect();
        ElectLeadersOutcome { error_code, topics }
    }
}

/// Runs the elections of an ElectLeaders request, checked against Kafka's `ReplicationControlManager.electLeaders`:
/// `targets` `None` means every partition of every topic, and then partitions answered ELECTION_NOT_NEEDED are
/// left out of the answer. PREFERRED: ELECTION_NOT_NEEDED when the preferred replica leads already, else a preferred
/// election, PREFERRED_LEADER_NOT_AVAILABLE when it changes nothing. UNCLEAN: ELECTION_NOT_NEEDED when the partition
/// has a leader, else an unclean election (an in-sync replica first), ELIGIBLE_LEADERS_NOT_AVAILABLE when no replica
/// can lead. Unknown topics and partitions are UNKNOWN_TOPIC_OR_PARTITION. A partition named twice is elected once.
pub fn elect_leaders(
    image: &MetadataImage,
    election_type: ElectionType,
    targets: Option<&[ElectionTarget]>,
    config: &ElectionConfig,
) -> ControllerResult<ElectLeadersOutcome> {
    let mut records = Vec::new();
    let mut elected = BTreeSet::new();
    let mut topics = Vec::new();
    let mut elect = |topic: &str, partition: i32, records: &mut Vec<MetadataRecord>| {
        let outcome = elect_one(image, election_type, topic, partition, config);
        let error = match outcome {
            Ok((topic_id, index, next)) => {
                if elected.insert((topic_id, index)) {
                    records.push(partition_record(topic_id, index, next));
                }
                None
            }
            Err(error) => Some(error),
        };
        PartitionElectionOutcome {
            partition,
            error_code: error.as_ref().map_or(0, |(code, _)| *code),
            error_message: error.map(|(_, message)| message),
        }
    };
    match targets {
        None => {
            for topic in image.topics() {
                let partitions = (0..topic.partitions.len())
                    .map(|i| {
                        elect(
                            &topic.name,
                            i32::try_from(i).unwrap_or(i32::MAX),
                            &mut records,
                        )
                    })
                    .filter(|o| o.error_code != ErrorCode::ElectionNotNeeded.code())
                    .collect();
                topics.push(TopicElectionOutcome {
                    topic: topic.name.clone(),
                    partitions,
                });
            }
        }
        Some(targets) => {
            for target in targets {
                let partitions = target
                    .partitions
                    .iter()
                    .map(|&p| elect(&target.topic, p, &mut records))
                    .collect();
                topics.push(TopicElectionOutcome {
                    topic: target.topic.clone(),
                    partitions,
                });
            }
        }
    }
    if records.len() > MAX_RECORDS_PER_USER_OP {
        // Kafka's BoundedListTooLongException, answered as a policy violation for the whole request.
        return ControllerResult {
            records: Vec::new(),
            response: ElectLeadersOutcome::failed(
                targets,
                ErrorCode::PolicyViolation.code(),
                "Unable to perform excessively large batch operation.",
            ),
        };
    }
    ControllerResult {
        records,
        response: ElectLeadersOutcome {
            error_code: 0,
            topics,
        },
    }
}

/// One partition's election: the new registration, or the error code and Kafka's message.
fn elect_one(
    image: &MetadataImage,
    election_type: ElectionType,
    topic_name: &str,
    partition: i32,
    config: &ElectionConfig,
) -> Result<(Uuid, usize, PartitionRegistration), (i16, String)> {
    let unknown = ErrorCode::UnknownTopicOrPartition.code();
    let topic = image
        .topic(topic_name)
        .ok_or_else(|| (unknown, format!("No such topic as {topic_name}")))?;
    let index = usize::try_from(partition)
        .ok()
        .filter(|&i| i < topic.partitions.len())
        .ok_or_else(|| {
            (
                unknown,
                format!("No such partition as {topic_name}-{partition}"),
            )
        })?;
    let current = &topic.partitions[index];
    let (not_needed, election, failure) = match election_type {
        ElectionType::Preferred => (
            current.replicas.first() == Some(&current.leader),
            Election::Preferred,
            (
                ErrorCode::PreferredLeaderNotAvailable.code(),
                "The preferred leader was not available.",
            ),
        ),
        ElectionType::Unclean => (
            current.leader != -1,
            Election::Unclean,
            (
                ErrorCode::EligibleLeadersNotAvailable.code(),
                "Eligible topic partition leaders are not available.",
            ),
        ),
    };
    if not_needed {
        return Err((
            ErrorCode::ElectionNotNeeded.code(),
            "Leader election not needed for topic partition.".into(),
        ));
    }
    partition_change(
        current,
        &current.isr,
        election,
        |r| is_eligible_leader(image, r),
        config.min_isr(topic),
        &[],
    )
    .map(|next| (topic.id, index, next))
    .ok_or_else(|| (failure.0, failure.1.to_string()))
}

/// The active controller's periodic elections (every `leader.imbalance.check.interval.seconds`): unclean elections
/// for leaderless partitions of topics that allow them, then, with `auto.leader.rebalance.enable`, preferred
/// elections for brokers whose leader imbalance is above `leader.imbalance.per.broker.percentage`. At most
/// [`MAX_ELECTIONS_PER_IMBALANCE`] elections; the response is true when that cap cut the pass short.
pub fn periodic_elections(
    image: &MetadataImage,
    config: &ElectionConfig,
) -> ControllerResult<bool> {
    let eligible = |r: i32| is_eligible_leader(image, r);
    let mut records = Vec::new();
    let mut changed = BTreeSet::new();
    let mut capped = false;
    // Kafka's `maybeElectUncleanLeaders`: an offline partition whose topic allows unclean elections (perhaps since
    // an override set after it went offline) takes any replica that can lead.
    'unclean: for topic in image.topics() {
        if !config.unclean_enabled(topic) {
            continue;
        }
        for (index, p) in topic.partitions.iter().enumerate() {
            if p.leader != -1 {
                continue;
            }
            if records.len() >= MAX_ELECTIONS_PER_IMBALANCE {
                capped = true;
                break 'unclean;
            }
            let min_isr = config.min_isr(topic);
            if let Some(next) =
                partition_change(p, &p.isr, Election::Unclean, eligible, min_isr, &[])
            {
                changed.insert((topic.id, index));
                records.push(partition_record(topic.id, index, next));
            }
        }
    }
    if config.auto_leader_rebalance_enable && !capped {
        for (topic_id, index, next) in imbalanced_preferred_elections(image, config) {
            if changed.contains(&(topic_id, index)) {
                continue;
            }
            if records.len() >= MAX_ELECTIONS_PER_IMBALANCE {
                capped = true;
                break;
            }
            records.push(partition_record(topic_id, index, next));
        }
    }
    ControllerResult {
        records,
        response: capped,
    }
}

/// Kafka's `checkAndTriggerAutoLeaderRebalance`: for each preferred replica (first replica), the share of its
/// partitions led by another broker (or by none); above the percentage, the preferred elections of those whose
/// preferred replica is in the ISR and may lead. In topic and partition order.
fn imbalanced_preferred_elections(
    image: &MetadataImage,
    config: &ElectionConfig,
) -> Vec<(Uuid, usize, PartitionRegistration)> {
    use std::collections::BTreeMap;
    // preferred broker -> (partitions it is preferred for, of which led by another)
    let mut counts: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for topic in image.topics() {
        for p in &topic.partitions {
            if let Some(&preferred) = p.replicas.first() {
                let entry = counts.entry(preferred).or_default();
                entry.0 += 1;
                if p.leader != preferred {
                    entry.1 += 1;
                }
            }
        }
    }
    let percentage = i64::from(config.leader_imbalance_per_broker_percentage);
    // ratio > percentage / 100, in integers: not_preferred * 100 > percentage * total.
    let imbalanced: BTreeSet<i32> = counts
        .into_iter()
        .filter(|(_, (total, off))| off * 100 > percentage * total)
        .map(|(broker, _)| broker)
        .collect();
    let mut elections = Vec::new();
    if imbalanced.is_empty() {
        return elections;
    }
    for topic in image.topics() {
        for (index, p) in topic.partitions.iter().enumerate() {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.leader == preferred
                || !imbalanced.contains(&preferred)
                || !p.isr.contains(&preferred)
                || !is_eligible_leader(image, preferred)
            {
                continue;
            }
            let eligible = |r: i32| is_eligible_leader(image, r);
            let min_isr = config.min_isr(topic);
            if let Some(next) =
                partition_change(p, &p.isr, Election::Preferred, eligible, min_isr, &[])
            {
                elections.push((topic.id, index, next));
            }
        }
    }
    elections
}

#[cfg(test)]
pub(super) mod tests {
    //! Checked against Kafka's `PartitionChangeBuilderTest` and `ReplicationControlManagerTest` (electLeaders,
    //! unclean elections on fencing and unfencing) and the ZooKeeper controller's leader imbalance check.
    use super::*;
    use crate::controller::{broker_heartbeat_with, fence_broker, register_broker, Heartbeat};
    use crate::image::{BrokerRegistration, MetadataDelta};
    use crate::record::ConfigResourceType;

    pub(in crate::controller) fn apply(
        image: &MetadataImage,
        records: &[MetadataRecord],
    ) -> MetadataImage {
        let mut delta = MetadataDelta::new(image);
        for r in records {
            delta.replay(image.offset + 1, r).unwrap();
        }
        delta.apply()
    }

    /// Brokers `ids`, registered and unfenced.
    pub(in crate::controller) fn brokers(ids: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::empty("c", 1);
        for &id in ids {
            let reg = BrokerRegistration {
                node_id: id,
                host: "h".into(),
                port: 9092,
                incarnation_id: Uuid::from_u128(id as u128 + 1),
                ..Default::default()
            };
            image = apply(&image, &register_broker(&image, reg, false).records);
            image = apply(
                &image,
                &heartbeat(&image, id, &ElectionConfig::default()).records,
            );
            assert!(!image.brokers[&id].fenced);
        }
        image
    }

    fn heartbeat(
        image: &MetadataImage,
        id: i32,
        config: &ElectionConfig,
    ) -> ControllerResult<crate::controller::HeartbeatOutcome> {
        broker_heartbeat_with(
            image,
            Heartbeat {
                node_id: id,
                broker_epoch: image.brokers[&id].epoch,
                current_metadata_offset: i64::MAX,
                want_fence: false,
                want_shut_down: false,
            },
            config,
        )
    }

    /// A topic whose partitions have these (replicas, isr, leader).
    pub(in crate::controller) fn topic(
        image: &MetadataImage,
        name: &str,
        parts: &[(&[i32], &[i32], i32)],
    ) -> MetadataImage {
        let id = Uuid::from_u128(1000 + image.topic_count() as u128);
        let mut records = vec![MetadataRecord::Topic {
            name: name.into(),
            topic_id: id,
            internal: false,
        }];
        for (i, (replicas, isr, leader)) in parts.iter().enumerate() {
            records.push(partition_record(
                id,
                i,
                PartitionRegistration {
                    replicas: replicas.to_vec(),
                    isr: isr.to_vec(),
                    leader: *leader,
                    leader_epoch: 5,
                    partition_epoch: 7,
                    ..Default::default()
                },
            ));
        }
        apply(image, &records)
    }

    fn set_unclean(image: &MetadataImage, topic: &str, value: &str) -> MetadataImage {
        apply(
            image,
            &[MetadataRecord::Config {
                resource_type: ConfigResourceType::Topic,
                resource_name: topic.into(),
                key: UNCLEAN_LEADER_ELECTION_ENABLE.into(),
                value: Some(value.into()),
            }],
        )
    }

    fn part<'a>(image: &'a MetadataImage, topic: &str, i: usize) -> &'a PartitionRegistration {
        &image.topic(topic).unwrap().partitions[i]
    }

    fn unclean_default() -> ElectionConfig {
        ElectionConfig {
            unclean_leader_election_enable: true,
            ..ElectionConfig::default()
        }
    }

    /// Broker `id` registers a new incarnation after a crash (no clean-shutdown epoch: -1).
    fn crash_and_register(
        image: &MetadataImage,
        id: i32,
        config: &ElectionConfig,
    ) -> MetadataImage {
        let again = BrokerRegistration {
            node_id: id,
            host: "h".into(),
            port: 9092,
            incarnation_id: Uuid::from_u128(1000 + image.offset as u128),
            ..Default::default()
        };
        let registered = crate::controller::register_broker_with(image, again, false, -1, config);
        apply(image, &registered.records)
    }

    /// KIP-966 as Kafka 4.1 runs it by default, through the paths that change an ISR: the leader's AlterPartition,
    /// fencing, an unclean re-registration and unfencing. RF 3, min.insync.replicas 2.
    #[test]
    fn replicas_that_leave_an_isr_below_min_insync_replicas_stay_eligible_leaders() {
        use crate::controller::{alter_partition, IsrChange};
        let config = ElectionConfig {
            min_insync_replicas: 2,
            ..ElectionConfig::default()
        };
        let image = brokers(&[1, 2, 3]);
        let image = topic(&image, "t", &[(&[1, 2, 3], &[1, 2, 3], 1)]);
        let shrink = |image: &MetadataImage, isr: &[i32]| {
            let p = part(image, "t", 0);
            let change = IsrChange {
                topic_id: image.topic("t").unwrap().id,
                topic_name: None,
                partition: 0,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: isr.to_vec(),
            };
            let epoch = image.brokers[&1].epoch;
            apply(
                image,
                &alter_partition(image, 1, epoch, &[change], &config).records,
            )
        };
        // Down to min.insync.replicas: no ELR. Below it: the replica that left is eligible.
        let image = shrink(&image, &[1, 2]);
        assert_eq!(part(&image, "t", 0).elr, Vec::<i32>::new());
        let image = shrink(&image, &[1]);
        assert_eq!(
            (
                part(&image, "t", 0).isr.clone(),
                part(&image, "t", 0).elr.clone()
            ),
            (vec![1], vec![2])
        );
        // The leader is fenced: the ISR empties into the ELR; 2 is fenced too, so no leader yet.
        let image = apply(&image, &fence_broker(&image, 2, &config).records);
        let image = apply(&image, &fence_broker(&image, 1, &config).records);
        let p = part(&image, "t", 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.elr.clone()),
            (-1, vec![], vec![1, 2])
        );
        assert_eq!(p.last_known_elr, vec![1]);
        // 1 comes back after a crash (no clean-shutdown epoch): it may have lost records, so it leaves the ELR.
        let image = crash_and_register(&image, 1, &config);
        assert_eq!(part(&image, "t", 0).elr, vec![2]);
        let image = apply(&image, &heartbeat(&image, 1, &config).records);
        assert_eq!(
            part(&image, "t", 0).leader,
            -1,
            "an ELR member is left, so 1 does not lead"
        );
        // 2 is unfenced: it leads from the ELR, alone in the ISR.
        let image = apply(&image, &heartbeat(&image, 2, &config).records);
        let p = part(&image, "t", 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.elr.clone()),
            (2, vec![2], vec![])
        );
        assert_eq!(p.last_known_elr, Vec::<i32>::new());
    }

    /// With the ISR and the ELR empty, the last known leader leads again when it comes back, even after an unclean
    /// shutdown (Kafka's balanced recovery): an RF 1 partition is not lost to a crash.
    #[test]
    fn the_last_known_leader_leads_when_nothing_else_can() {
        let config = ElectionConfig::default();
        let image = brokers(&[1, 2]);
        let image = topic(&image, "one", &[(&[1], &[1], 1)]);
        let image = apply(&image, &fence_broker(&image, 1, &config).records);
        let p = part(&image, "one", 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.elr.clone()),
            (-1, vec![], vec![1])
        );
        let image = crash_and_register(&image, 1, &config);
        let p = part(&image, "one", 0);
        assert_eq!((p.elr.clone(), p.last_known_elr.clone()), (vec![], vec![1]));
        let image = apply(&image, &heartbeat(&image, 1, &config).records);
        let p = part(&image, "one", 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.last_known_elr.clone()),
            (1, vec![1], vec![])
        );
    }

    #[test]
    fn fencing_the_last_in_sync_leader_elects_out_of_sync_replicas_only_where_allowed() {
        let image = brokers(&[1, 2, 3]);
        let image = topic(&image, "clean", &[(&[1, 2, 3], &[1], 1)]);
        let image = topic(&image, "dirty", &[(&[1, 2, 3], &[1], 1)]);
        let image = set_unclean(&image, "dirty", "true");
        let fenced = apply(
            &image,
            &fence_broker(&image, 1, &ElectionConfig::default()).records,
        );
        // Without unclean elections: offline; the last ISR member leaves the ISR for the ELR (KIP-966) and is the
        // last known leader.
        let p = part(&fenced, "clean", 0);
        assert_eq!((p.leader, p.isr.clone()), (-1, vec![]));
        assert_eq!(
            (p.elr.clone(), p.last_known_elr.clone()),
            (vec![1], vec![1])
        );
        assert_eq!((p.leader_epoch, p.partition_epoch), (6, 8));
        // The topic override allows it: the first eligible replica leads alone in the ISR (Kafka: ISR = [leader]).
        let p = part(&fenced, "dirty", 0);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (6, 8));

        // The broker default allows it, unless the topic's override says false.
        let image = set_unclean(&image, "dirty", "false");
        let fenced = apply(&image, &fence_broker(&image, 1, &unclean_default()).records);
        assert_eq!(part(&fenced, "clean", 0).leader, 2);
        assert_eq!(part(&fenced, "clean", 0).isr, vec![2]);
        assert_eq!(part(&fenced, "dirty", 0).leader, -1);
    }

    #[test]
    fn an_in_sync_replica_is_always_preferred_to_an_unclean_one() {
        let image = brokers(&[1, 2, 3]);
        // Replica 2 is out of sync, 3 in sync: 3 leads, the ISR only loses the fenced broker.
        let image = topic(&image, "t", &[(&[1, 2, 3], &[1, 3], 1)]);
        let fenced = apply(&image, &fence_broker(&image, 1, &unclean_default()).records);
        let p = part(&fenced, "t", 0);
        assert_eq!((p.leader, p.isr.clone()), (3, vec![3]));
    }

    #[test]
    fn unfencing_an_out_of_sync_replica_of_an_offline_partition_elects_it_only_where_allowed() {
        let image = brokers(&[1, 2]);
        let image = topic(&image, "t", &[(&[1, 2], &[1], 1)]);
        // Both go: the partition is offline with ISR [1].
        let image = apply(
            &image,
            &fence_broker(&image, 2, &ElectionConfig::default()).records,
        );
        let image = apply(
            &image,
            &fence_broker(&image, 1, &ElectionConfig::default()).records,
        );
        assert_eq!(part(&image, "t", 0).leader, -1);
        // Broker 2 (not in the ISR) comes back: offline without unclean elections...
        let hb = heartbeat(&image, 2, &ElectionConfig::default());
        assert_eq!(hb.records.len(), 1, "only the unfencing: {:?}", hb.records);
        // ... and the leader with them, alone in the ISR.
        let hb = heartbeat(&image, 2, &unclean_default());
        let after = apply(&image, &hb.records);
        let p = part(&after, "t", 0);
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 7));
        // Broker 1 (the last in-sync replica) coming back is a clean election, ISR unchanged.
        let hb = heartbeat(&image, 1, &ElectionConfig::default());
        let after = apply(&image, &hb.records);
        let p = part(&after, "t", 0);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
    }

    #[test]
    fn controlled_shutdown_of_the_last_in_sync_leader_moves_leadership_uncleanly_where_allowed() {
        let image = brokers(&[1, 2]);
        let image = topic(&image, "t", &[(&[1, 2], &[1], 1)]);
        let hb = broker_heartbeat_with(
            &image,
            Heartbeat {
                node_id: 1,
                broker_epoch: image.brokers[&1].epoch,
                current_metadata_offset: i64::MAX,
                want_fence: false,
                want_shut_down: true,
            },
            &unclean_default(),
        );
        assert!(hb.response.should_shut_down);
        let after = apply(&image, &hb.records);
        assert_eq!(part(&after, "t", 0).leader, 2);
        assert_eq!(part(&after, "t", 0).isr, vec![2]);
    }

    fn targets(topic: &str, partitions: &[i32]) -> Vec<ElectionTarget> {
        vec![ElectionTarget {
            topic: topic.into(),
            partitions: partitions.to_vec(),
        }]
    }

    fn codes(outcome: &ElectLeadersOutcome) -> Vec<(String, i32, i16)> {
        outcome
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.clone(), p.partition, p.error_code))
            })
            .collect()
    }

    #[test]
    fn preferred_election_moves_leadership_back_or_says_why_not() {
        let image = brokers(&[1, 2, 3]);
        let image = topic(
            &image,
            "t",
            &[
                (&[1, 2, 3], &[1, 2, 3], 1), // 0: already preferred
                (&[1, 2, 3], &[1, 2, 3], 2), // 1: preferred in ISR and live: elected
                (&[1, 2, 3], &[2, 3], 2),    // 2: preferred out of the ISR
            ],
        );
        let r = elect_leaders(
            &image,
            ElectionType::Preferred,
            Some(&targets("t", &[0, 1, 2, 1])),
            &ElectionConfig::default(),
        );
        let t = "t".to_string();
        assert_eq!(
            codes(&r.response),
            vec![
                (t.clone(), 0, ErrorCode::ElectionNotNeeded.code()),
                (t.clone(), 1, 0),
                (t.clone(), 2, ErrorCode::PreferredLeaderNotAvailable.code()),
                (t.clone(), 1, 0),
            ]
        );
        let messages: Vec<_> = r.response.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_message.clone())
            .collect();
        assert_eq!(
            messages[0].as_deref(),
            Some("Leader election not needed for topic partition.")
        );
        assert_eq!(messages[1], None);
        assert_eq!(
            messages[2].as_deref(),
            Some("The preferred leader was not available.")
        );
        assert_eq!(
            r.records.len(),
            1,
            "a partition named twice is elected once"
        );
        let after = apply(&image, &r.records);
        let p = part(&after, "t", 1);
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 6, 8));
        assert_eq!(p.isr, vec![1, 2, 3]);
        // A fenced preferred replica cannot lead.
        let image = apply(
            &image,
            &fence_broker(&image, 3, &ElectionConfig::default()).records,
        );
        let image = topic(&image, "u", &[(&[3, 1], &[3, 1], 1)]);
        let r = elect_leaders(
            &image,
            ElectionType::Preferred,
            Some(&targets("u", &[0])),
            &ElectionConfig::default(),
        );
        assert_eq!(
            r.response.topics[0].partitions[0].error_code,
            ErrorCode::PreferredLeaderNotAvailable.code()
        );
        assert!(r.records.is_empty());
    }

    #[test]
    fn unknown_topics_and_partitions_are_named_in_kafkas_words() {
        let image = topic(&brokers(&[1]), "t", &[(&[1], &[1], 1)]);
        for election in [ElectionType::Preferred, ElectionType::Unclean] {
            let mut asked = targets("t", &[1, -1]);
            asked.extend(targets("nope", &[0]));
            let r = elect_leaders(&image, election, Some(&asked), &ElectionConfig::default());
            let unknown = ErrorCode::UnknownTopicOrPartition.code();
            assert!(codes(&r.response).iter().all(|(_, _, c)| *c == unknown));
            let messages: Vec<_> = r
                .response
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| p.error_message.clone().unwrap())
                })
                .collect();
            assert_eq!(
                messages,
                vec![
                    "No such partition as t-1",
                    "No such partition as t--1",
                    "No such topic as nope"
                ]
            );
        }
    }

    #[test]
    fn all_partitions_leave_out_those_that_need_no_election() {
        let image = brokers(&[1, 2]);
        let image = topic(&image, "a", &[(&[1, 2], &[1, 2], 1), (&[2, 1], &[1, 2], 1)]);
        let image = topic(&image, "b", &[(&[2, 1], &[2, 1], 2)]);
        let r = elect_leaders(
            &image,
            ElectionType::Preferred,
            None,
            &ElectionConfig::default(),
        );
        assert_eq!(codes(&r.response), vec![("a".to_string(), 1, 0)]);
        assert_eq!(
            r.response.topics.len(),
            2,
            "every topic is listed, even with nothing to say"
        );
        assert_eq!(part(&apply(&image, &r.records), "a", 1).leader, 2);
    }

    #[test]
    fn unclean_election_only_for_leaderless_partitions() {
        let image = brokers(&[1, 2, 3]);
        let image = topic(
            &image,
            "t",
            &[
                (&[1, 2], &[1, 2], 1), // 0: has a leader
                (&[3, 2], &[3], -1),   // 1: ISR [3] fenced below; 2 leads uncleanly
                (&[3], &[3], -1),      // 2: nobody can lead
                (&[3, 1], &[1], -1),   // 3: an in-sync replica is live: a clean election
            ],
        );
        let image = apply(
            &image,
            &fence_broker(&image, 3, &ElectionConfig::default()).records,
        );
        let r = elect_leaders(
            &image,
            ElectionType::Unclean,
            Some(&targets("t", &[0, 1, 2, 3])),
            &ElectionConfig::default(),
        );
        let t = "t".to_string();
        assert_eq!(
            codes(&r.response),
            vec![
                (t.clone(), 0, ErrorCode::ElectionNotNeeded.code()),
                (t.clone(), 1, 0),
                (t.clone(), 2, ErrorCode::EligibleLeadersNotAvailable.code()),
                (t.clone(), 3, 0),
            ]
        );
        let after = apply(&image, &r.records);
        assert_eq!(
            (
                part(&after, "t", 1).leader,
                part(&after, "t", 1).isr.clone()
            ),
            (2, vec![2])
        );
        assert_eq!(
            (
                part(&after, "t", 3).leader,
                part(&after, "t", 3).isr.clone()
            ),
            (1, vec![1])
        );
    }

    #[test]
    fn too_many_elections_in_one_request_are_a_policy_violation() {
        let image = brokers(&[1, 2]);
        let parts: Vec<(&[i32], &[i32], i32)> =
            vec![(&[1, 2], &[1, 2], 2); MAX_RECORDS_PER_USER_OP + 1];
        let image = topic(&image, "big", &parts);
        let asked = targets("big", &[0, 1]);
        assert_eq!(
            elect_leaders(
                &image,
                ElectionType::Preferred,
                Some(&asked),
                &ElectionConfig::default()
            )
            .records
            .len(),
            2
        );
        let r = elect_leaders(
            &image,
            ElectionType::Preferred,
            None,
            &ElectionConfig::default(),
        );
        assert!(r.records.is_empty());
        assert_eq!(r.response.error_code, ErrorCode::PolicyViolation.code());
        assert!(r.response.topics.is_empty());
    }

    /// Broker 1 is the preferred replica of ten partitions; `moved` of them are led by broker 2.
    fn imbalanced(moved: usize) -> MetadataImage {
        let image = brokers(&[1, 2]);
        let parts: Vec<(&[i32], &[i32], i32)> = (0..10)
            .map(|i| (&[1, 2][..], &[1, 2][..], if i < moved { 2 } else { 1 }))
            .collect();
        topic(&image, "t", &parts)
    }

    #[test]
    fn rebalance_starts_above_the_imbalance_percentage_and_moves_every_imbalanced_partition() {
        let config = ElectionConfig::default();
        // 1 of 10 (10%) is not above 10%.
        let r = periodic_elections(&imbalanced(1), &config);
        assert!(r.records.is_empty());
        // 2 of 10: both move back to broker 1.
        let image = imbalanced(2);
        let r = periodic_elections(&image, &config);
        assert!(!r.response);
        let after = apply(&image, &r.records);
        assert!(after
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.leader == 1));
        assert_eq!(r.records.len(), 2);
        // A percentage of 0 (Kafka's KRaft behaviour) moves even one; rebalancing off moves none.
        let zero = ElectionConfig {
            leader_imbalance_per_broker_percentage: 0,
            ..config
        };
        assert_eq!(periodic_elections(&imbalanced(1), &zero).records.len(), 1);
        let off = ElectionConfig {
            auto_leader_rebalance_enable: false,
            ..zero
        };
        assert!(periodic_elections(&imbalanced(5), &off).records.is_empty());
    }

    #[test]
    fn rebalance_skips_preferred_replicas_that_are_out_of_sync_or_fenced() {
        let image = brokers(&[1, 2, 3]);
        let image = topic(
            &image,
            "t",
            &[
                (&[1, 2], &[2], 2),    // preferred out of the ISR
                (&[1, 2], &[1, 2], 2), // movable
                (&[3, 2], &[3, 2], 2), // preferred fenced below
            ],
        );
        let image = apply(
            &image,
            &fence_broker(&image, 3, &ElectionConfig::default()).records,
        );
        let r = periodic_elections(&image, &ElectionConfig::default());
        let after = apply(&image, &r.records);
        let leaders: Vec<i32> = after
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        assert_eq!(leaders, vec![2, 1, 2]);
    }

    #[test]
    fn periodic_pass_elects_leaderless_partitions_of_topics_that_allow_unclean_elections() {
        let image = brokers(&[1, 2]);
        let image = topic(&image, "t", &[(&[1, 2], &[1], 1)]);
        let image = apply(
            &image,
            &fence_broker(&image, 1, &ElectionConfig::default()).records,
        );
        assert_eq!(part(&image, "t", 0).leader, -1);
        let quiet = ElectionConfig {
            auto_leader_rebalance_enable: false,
            ..ElectionConfig::default()
        };
        assert!(periodic_elections(&image, &quiet).records.is_empty());
        // The override arrives after the partition went offline: the next pass elects broker 2.
        let image = set_unclean(&image, "t", "true");
        let r = periodic_elections(&image, &quiet);
        let after = apply(&image, &r.records);
        assert_eq!(
            (
                part(&after, "t", 0).leader,
                part(&after, "t", 0).isr.clone()
            ),
            (2, vec![2])
        );
    }

    #[test]
    fn a_periodic_pass_makes_at_most_the_kafka_cap_of_elections() {
        let image = brokers(&[1, 2]);
        let parts: Vec<(&[i32], &[i32], i32)> =
            vec![(&[1, 2], &[1, 2], 2); MAX_ELECTIONS_PER_IMBALANCE + 5];
        let image = topic(&image, "t", &parts);
        let config = ElectionConfig {
            leader_imbalance_per_broker_percentage: 0,
            ..ElectionConfig::default()
        };
        let r = periodic_elections(&image, &config);
        assert_eq!(r.records.len(), MAX_ELECTIONS_PER_IMBALANCE);
        assert!(r.response, "more to do");
        let image = apply(&image, &r.records);
        let r = periodic_elections(&image, &config);
        assert_eq!((r.records.len(), r.response), (5, false));
    }
}
