//! Broker membership, as Kafka's `ClusterControlManager` and `ReplicationControlManager` do it: registration
//! (fenced at first), heartbeats that unfence a broker once it has caught up with the metadata log, fencing when
//! heartbeats stop, controlled shutdown, and the leader elections these cause. Time is not read here: the driver
//! tracks heartbeat times and calls [`fence_broker`] when a session expires.

use super::election::{partition_change, partition_record, ElectionConfig};
use super::ControllerResult;
use crate::error::code;
use crate::image::{BrokerRegistration, MetadataImage};
use crate::record::MetadataRecord;

/// The answer to a BrokerRegistration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationOutcome {
    /// 0, or DUPLICATE_BROKER_REGISTRATION while another incarnation of the id is alive.
    pub error_code: i16,
    /// The broker epoch (the offset of the registration record), when registered.
    pub broker_epoch: i64,
}

/// Registers a broker (fenced). A retry with the same incarnation id writes nothing; a new incarnation replaces the
/// old one unless `old_session_alive` (the old incarnation still heartbeats: two processes with one node.id).
///
/// The broker epoch is the offset the registration record will get, which only the driver knows; the outcome's
/// `broker_epoch` is -1 when records are returned and the driver fills it in after commit.
///
/// Elections use Kafka's default election settings; the driver calls [`register_broker_with`].
pub fn register_broker(
    image: &MetadataImage,
    registration: BrokerRegistration,
    old_session_alive: bool,
) -> ControllerResult<RegistrationOutcome> {
    register_broker_with(
        image,
        registration,
        old_session_alive,
        CLEAN_SHUTDOWN_UNKNOWN,
        &ElectionConfig::default(),
    )
}

/// A `previous_broker_epoch` that says nothing of how the previous incarnation ended (treated as clean).
pub const CLEAN_SHUTDOWN_UNKNOWN: i64 = i64::MIN;

/// As [`register_broker`], electing with `elections` (the broker default for unclean elections).
/// `previous_broker_epoch` is BrokerRegistration's (KIP-966): the epoch the previous incarnation wrote at its clean
/// shutdown, -1 after a crash. One that is not the registered epoch is an unclean shutdown: the broker may have lost
/// records it had acknowledged as a follower, so it leaves every ISR and ELR (Kafka's
/// `handleBrokerUncleanShutdown`).
pub fn register_broker_with(
    image: &MetadataImage,
    registration: BrokerRegistration,
    old_session_alive: bool,
    previous_broker_epoch: i64,
    elections: &ElectionConfig,
) -> ControllerResult<RegistrationOutcome> {
    if let Some(existing) = image.brokers.get(&registration.node_id) {
        if existing.incarnation_id == registration.incarnation_id {
            return ControllerResult {
                records: Vec::new(),
                response: RegistrationOutcome {
                    error_code: 0,
                    broker_epoch: existing.epoch,
                },
            };
        }
        if old_session_alive {
            return ControllerResult {
                records: Vec::new(),
                response: RegistrationOutcome {
                    error_code: code::DUPLICATE_BROKER_REGISTRATION,
                    broker_epoch: -1,
                },
            };
        }
    }
    let mut records = Vec::new();
    // A new incarnation: the old one's leaderships move first (it is gone, its replacement has to catch up).
    if let Some(existing) = image.brokers.get(&registration.node_id) {
        let unclean = previous_broker_epoch != CLEAN_SHUTDOWN_UNKNOWN
            && previous_broker_epoch != existing.epoch;
        records.extend(elect_without(
            image,
            registration.node_id,
            unclean,
            elections,
        ));
    }
    let registration = BrokerRegistration {
        epoch: -1,
        fenced: true,
        in_controlled_shutdown: false,
        ..registration
    };
    records.push(MetadataRecord::RegisterBroker(registration));
    ControllerResult {
        records,
        response: RegistrationOutcome {
            error_code: 0,
            broker_epoch: -1,
        },
    }
}

/// What a broker said in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The broker.
    pub node_id: i32,
    /// Its broker epoch.
    pub broker_epoch: i64,
    /// The metadata offset it has applied.
    pub current_metadata_offset: i64,
    /// It wants to be fenced.
    pub want_fence: bool,
    /// It wants to shut down.
    pub want_shut_down: bool,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// 0, BROKER_ID_NOT_REGISTERED or STALE_BROKER_EPOCH.
    pub error_code: i16,
    /// The broker has applied the metadata log up to its registration.
    pub is_caught_up: bool,
    /// The broker is fenced (after the returned records apply).
    pub is_fenced: bool,
    /// The broker may shut down now (it leads nothing any more).
    pub should_shut_down: bool,
}

/// Handles a heartbeat: unfences a caught-up broker, fences one that asks, and moves the leaderships of one that
/// wants to shut down (answering `should_shut_down` once it leads nothing).
///
/// Elections use Kafka's default election settings; the driver calls [`broker_heartbeat_with`].
pub fn broker_heartbeat(
    image: &MetadataImage,
    hb: Heartbeat,
) -> ControllerResult<HeartbeatOutcome> {
    broker_heartbeat_with(image, hb, &ElectionConfig::default())
}

/// As [`broker_heartbeat`], electing with `elections` (the broker default for unclean elections).
pub fn broker_heartbeat_with(
    image: &MetadataImage,
    hb: Heartbeat,
    elections: &ElectionConfig,
) -> ControllerResult<HeartbeatOutcome> {
    let Some(broker) = image.brokers.get(&hb.node_id) else {
        return ControllerResult {
            records: Vec::new(),
            response: HeartbeatOutcome {
                error_code: code::BROKER_ID_NOT_REGISTERED,
                is_caught_up: false,
                is_fenced: true,
                should_shut_down: false,
            },
        };
    };
    if broker.epoch != hb.broker_epoch {
        return ControllerResult {
            records: Vec::new(),
            response: HeartbeatOutcome {
                error_code: code::STALE_BROKER_EPOCH,
                is_caught_up: false,
                is_fenced: true,
                should_shut_down: false,
            },
        };
    }
    let caught_up = hb.current_metadata_offset >= broker.epoch;
    let mut records = Vec::new();
    let mut fenced = broker.fenced;
    let mut should_shut_down = false;
    if hb.want_shut_down {
        // Kafka: move every leadership away (and leave the ISRs), then the broker may go; fenced once it leads
        // nothing.
        let moves = elect_without(image, hb.node_id, false, elections);
        let leads_after = leads_any_after(image, hb.node_id, &moves);
        records.extend(moves);
        if !broker.in_controlled_shutdown || (!leads_after && !fenced) {
            records.push(MetadataRecord::BrokerState {
                node_id: hb.node_id,
                epoch: broker.epoch,
                fenced: fenced || !leads_after,
                in_controlled_shutdown: true,
            });
        }
        if !leads_after {
            fenced = true;
            should_shut_down = true;
        }
    } else if hb.want_fence && !fenced {
        records.extend(elect_without(image, hb.node_id, false, elections));
        records.push(MetadataRecord::BrokerState {
            node_id: hb.node_id,
            epoch: broker.epoch,
            fenced: true,
            in_controlled_shutdown: false,
        });
        fenced = true;
    } else if fenced && !hb.want_fence && caught_up && !broker.in_controlled_shutdown {
        records.push(MetadataRecord::BrokerState {
            node_id: hb.node_id,
            epoch: broker.epoch,
            fenced: false,
            in_controlled_shutdown: false,
        });
        records.extend(elect_offline_with(image, hb.node_id, elections));
        fenced = false;
    }
    ControllerResult {
        records,
        response: HeartbeatOutcome {
            error_code: 0,
            is_caught_up: caught_up,
            is_fenced: fenced,
            should_shut_down,
        },
    }
}

/// Fences a broker whose session expired: it leaves every ISR it can leave, and the partitions it led elect a new
/// leader from the rest of the ISR; with none left, a replica outside the ISR where the topic allows unclean
/// elections (`elections` holds the broker default), else the partition goes offline. Nothing when it is already
/// fenced or unknown.
pub fn fence_broker(
    image: &MetadataImage,
    node_id: i32,
    elections: &ElectionConfig,
) -> ControllerResult<()> {
    let Some(broker) = image.brokers.get(&node_id) else {
        return ControllerResult {
            records: Vec::new(),
            response: (),
        };
    };
    if broker.fenced {
        return ControllerResult {
            records: Vec::new(),
            response: (),
        };
    }
    let mut records = elect_without(image, node_id, false, elections);
    records.push(MetadataRecord::BrokerState {
        node_id,
        epoch: broker.epoch,
        fenced: true,
        in_controlled_shutdown: broker.in_controlled_shutdown,
    });
    ControllerResult {
        records,
        response: (),
    }
}

/// True when `node_id` can lead: registered, unfenced, not shutting down.
pub fn is_eligible_leader(image: &MetadataImage, node_id: i32) -> bool {
    image
        .brokers
        .get(&node_id)
        .is_some_and(|b| !b.fenced && !b.in_controlled_shutdown)
}

/// Partition changes that take `node_id` out of every ISR it is in (the ISR may empty: the replicas that leave an
/// ISR below `min.insync.replicas` become eligible leader replicas, KIP-966) and, after an `unclean` shutdown, out of
/// every ELR too, and give the partitions it leads (and leaderless ones it was in the ISR of) a new leader: the next
/// eligible ISR member in replica order, else an ELR member with the ISR empty, else the last known leader; with
/// none, where the topic allows it, the first eligible replica outside the ISR, which becomes the whole ISR
/// (unclean); else none (leader -1, offline). Kafka's `generateLeaderAndIsrUpdates` with `brokerToRemove`.
fn elect_without(
    image: &MetadataImage,
    node_id: i32,
    unclean: bool,
    elections: &ElectionConfig,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    let acceptable = |r: i32| r != node_id && is_eligible_leader(image, r);
    let unclean_shutdown: &[i32] = if unclean { &[node_id] } else { &[] };
    for topic in image.topics() {
        let election = elections.election_for(topic);
        let min_isr = elections.min_isr(topic);
        for (index, p) in topic.partitions.iter().enumerate() {
            let in_elr = unclean && p.elr.contains(&node_id);
            if p.leader != node_id && !p.isr.contains(&node_id) && !in_elr {
                continue;
            }
            let target_isr: Vec<i32> = p.isr.iter().copied().filter(|&r| r != node_id).collect();
            let change = partition_change(
                p,
                &target_isr,
                election,
                acceptable,
                min_isr,
                unclean_shutdown,
            );
            if let Some(next) = change {
                records.push(partition_record(topic.id, index, next));
            }
        }
    }
    records
}

/// Partition changes that give leaderless partitions a leader now that `node_id` is unfenced (it counts as eligible
/// although the image still has it fenced): the first eligible ISR member in replica order, else an ELR member,
/// else the last known leader; with none, where the topic allows it, the first eligible replica (unclean). Kafka's
/// `handleBrokerUnfenced`.
fn elect_offline_with(
    image: &MetadataImage,
    node_id: i32,
    elections: &ElectionConfig,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    let acceptable = |r: i32| r == node_id || is_eligible_leader(image, r);
    for topic in image.topics() {
        let election = elections.election_for(topic);
        let min_isr = elections.min_isr(topic);
        for (index, p) in topic.partitions.iter().enumerate() {
            if p.leader != -1 {
                continue;
            }
            if let Some(next) = partition_change(p, &p.isr, election, acceptable, min_isr, &[]) {
                records.push(partition_record(topic.id, index, next));
            }
        }
    }
    records
}

/// True when `node_id` still leads a partition once `changes` apply.
fn leads_any_after(image: &MetadataImage, node_id: i32, changes: &[MetadataRecord]) -> bool {
    image.topics().any(|topic| {
        topic.partitions.iter().enumerate().any(|(index, p)| {
            let changed = changes.iter().rev().find_map(|r| match r {
                MetadataRecord::Partition {
                    topic_id,
                    partition,
                    registration,
                } if *topic_id == topic.id && *partition as usize == index => Some(registration),
                _ => None,
            });
            changed.unwrap_or(p).leader == node_id
        })
    })
}

/// The answer to AllocateProducerIds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    /// 0 or STALE_BROKER_EPOCH / BROKER_ID_NOT_REGISTERED.
    pub error_code: i16,
    /// The first id of the block.
    pub first_producer_id: i64,
    /// How many ids.
    pub size: i32,
}

/// Kafka's block size (`ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i32 = 1000;

/// Hands a block of producer ids to a broker (Kafka's `ProducerIdControlManager`): cluster-wide unique, because
/// the block is taken by a committed record.
pub fn allocate_producer_ids(
    image: &MetadataImage,
    broker_id: i32,
    broker_epoch: i64,
) -> ControllerResult<ProducerIdBlock> {
    let error_code = match image.brokers.get(&broker_id) {
        None => code::BROKER_ID_NOT_REGISTERED,
        Some(b) if b.epoch != broker_epoch => code::STALE_BROKER_EPOCH,
        Some(_) => 0,
    };
    if error_code != 0 {
        return ControllerResult {
            records: Vec::new(),
            response: ProducerIdBlock {
                error_code,
                first_producer_id: -1,
                size: 0,
            },
        };
    }
    let first = image.next_producer_id;
    ControllerResult {
        records: vec![MetadataRecord::ProducerIds {
            broker_id,
            broker_epoch,
            next_producer_id: first + i64::from(PRODUCER_ID_BLOCK_SIZE),
        }],
        response: ProducerIdBlock {
            error_code: 0,
            first_producer_id: first,
            size: PRODUCER_ID_BLOCK_SIZE,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{MetadataDelta, PartitionRegistration};
    use uuid::Uuid;

    pub(super) fn apply(
        image: &MetadataImage,
        records: &[MetadataRecord],
        offset: i64,
    ) -> MetadataImage {
        let mut delta = MetadataDelta::new(image);
        for r in records {
            delta.replay(offset, r).unwrap();
        }
        delta.apply()
    }

    fn reg(node_id: i32, incarnation: u128) -> BrokerRegistration {
        BrokerRegistration {
            node_id,
            host: "h".into(),
            port: 9092,
            incarnation_id: Uuid::from_u128(incarnation),
            ..Default::default()
        }
    }

    pub(super) fn registered(ids: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::empty("c", 1);
        for (i, &id) in ids.iter().enumerate() {
            let r = register_broker(&image, reg(id, 1), false);
            image = apply(&image, &r.records, i as i64 * 10);
            let hb = broker_heartbeat(
                &image,
                Heartbeat {
                    node_id: id,
                    broker_epoch: i as i64 * 10,
                    current_metadata_offset: 1000,
                    want_fence: false,
                    want_shut_down: false,
                },
            );
            assert!(!hb.response.is_fenced);
            image = apply(&image, &hb.records, i as i64 * 10 + 1);
        }
        image
    }

    #[test]
    fn registration_is_fenced_idempotent_per_incarnation_and_refuses_a_live_duplicate() {
        let image = MetadataImage::empty("c", 1);
        let first = register_broker(&image, reg(1, 1), false);
        assert_eq!(first.records.len(), 1);
        let image = apply(&image, &first.records, 5);
        let b = &image.brokers[&1];
        assert!(b.fenced);
        assert_eq!(b.epoch, 5, "the broker epoch is the registration's offset");
        let retry = register_broker(&image, reg(1, 1), true);
        assert!(retry.records.is_empty());
        assert_eq!(retry.response.broker_epoch, 5);
        let dup = register_broker(&image, reg(1, 2), true);
        assert_eq!(dup.response.error_code, code::DUPLICATE_BROKER_REGISTRATION);
        let restarted = register_broker(&image, reg(1, 2), false);
        assert_eq!(restarted.response.error_code, 0);
        assert!(!restarted.records.is_empty());
    }

    #[test]
    fn heartbeat_unfences_only_a_caught_up_broker_and_checks_the_epoch() {
        let image = MetadataImage::empty("c", 1);
        let image = apply(
            &image,
            &register_broker(&image, reg(1, 1), false).records,
            7,
        );
        let behind = broker_heartbeat(
            &image,
            Heartbeat {
                node_id: 1,
                broker_epoch: 7,
                current_metadata_offset: 6,
                want_fence: false,
                want_shut_down: false,
            },
        );
        assert!(behind.records.is_empty());
        assert!(behind.response.is_fenced && !behind.response.is_caught_up);
        let stale = broker_heartbeat(
            &image,
            Heartbeat {
                node_id: 1,
                broker_epoch: 3,
                current_metadata_offset: 9,
                want_fence: false,
                want_shut_down: false,
            },
        );
        assert_eq!(stale.response.error_code, code::STALE_BROKER_EPOCH);
        let unknown = broker_heartbeat(
            &image,
            Heartbeat {
                node_id: 9,
                broker_epoch: 7,
                current_metadata_offset: 9,
                want_fence: false,
                want_shut_down: false,
            },
        );
        assert_eq!(unknown.response.error_code, code::BROKER_ID_NOT_REGISTERED);
        let ok = broker_heartbeat(
            &image,
            Heartbeat {
                node_id: 1,
                broker_epoch: 7,
                current_metadata_offset: 7,
                want_fence: false,
                want_shut_down: false,
            },
        );
        assert!(!ok.response.is_fenced);
        let image = apply(&image, &ok.records, 8);
        assert!(!image.brokers[&1].fenced);
    }

    pub(super) fn with_partition(
        image: &MetadataImage,
        replicas: Vec<i32>,
    ) -> (MetadataImage, Uuid) {
        let id = Uuid::from_u128(77);
        let records = vec![
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
                internal: false,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 0,
                registration: PartitionRegistration {
                    leader: replicas[0],
                    isr: replicas.clone(),
                    replicas,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    ..Default::default()
                },
            },
        ];
        (apply(image, &records, 100), id)
    }

    #[test]
    fn fencing_the_leader_elects_the_next_live_isr_member_and_bumps_epochs() {
        let image = registered(&[1, 2, 3]);
        let (image, _) = with_partition(&image, vec![1, 2, 3]);
        let fenced = fence_broker(&image, 1, &ElectionConfig::default());
        let image = apply(&image, &fenced.records, 200);
        assert!(image.brokers[&1].fenced);
        let p = &image.topic("t").unwrap().partitions[0];
        assert_eq!(p.leader, 2);
        assert_eq!(p.isr, vec![2, 3]);
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 1));
        // Fencing 2 and then 3: the ISR empties into the ELR (min.insync.replicas 1, KIP-966) and the partition goes
        // offline.
        let image = apply(
            &image,
            &fence_broker(&image, 2, &ElectionConfig::default()).records,
            201,
        );
        let image = apply(
            &image,
            &fence_broker(&image, 3, &ElectionConfig::default()).records,
            202,
        );
        let p = &image.topic("t").unwrap().partitions[0];
        assert_eq!(p.leader, -1);
        assert_eq!(p.isr, Vec::<i32>::new());
        assert_eq!(p.elr, vec![3]);
        // Broker 3 unfences: it leads again (it was the last in-sync replica), the ISR alone.
        let hb = broker_heartbeat(
            &image,
            Heartbeat {
                node_id: 3,
                broker_epoch: 20,
                current_metadata_offset: 300,
                want_fence: false,
                want_shut_down: false,
            },
        );
        let image = apply(&image, &hb.records, 203);
        assert_eq!(image.topic("t").unwrap().partitions[0].leader, 3);
        assert!(
            fence_broker(&image, 1, &ElectionConfig::default())
                .records
                .is_empty(),
            "already fenced"
        );
    }

    #[test]
    fn controlled_shutdown_moves_leaderships_then_allows_shutdown() {
        let image = registered(&[1, 2]);
        let (image, _) = with_partition(&image, vec![1, 2]);
        let hb = broker_heartbeat(
            &image,
            Heartbeat {
                node_id: 1,
                broker_epoch: 0,
                current_metadata_offset: 300,
                want_fence: false,
                want_shut_down: true,
            },
        );
        assert!(hb.response.should_shut_down);
        let image = apply(&image, &hb.records, 300);
        assert_eq!(image.topic("t").unwrap().partitions[0].leader, 2);
        assert!(image.brokers[&1].fenced && image.brokers[&1].in_controlled_shutdown);
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let image = registered(&[1]);
        let a = allocate_producer_ids(&image, 1, 0);
        let image = apply(&image, &a.records, 50);
        let b = allocate_producer_ids(&image, 1, 0);
        assert_eq!(a.response.first_producer_id, 0);
        assert_eq!(b.response.first_producer_id, 1000);
        assert_eq!(
            allocate_producer_ids(&image, 1, 9).response.error_code,
            code::STALE_BROKER_EPOCH
        );
    }
}

#[cfg(test)]
mod isr_tests {
    use super::tests::{apply, registered, with_partition};
    use super::{fence_broker, ElectionConfig};
    use crate::controller::{alter_partition, IsrChange};
    use crate::error::code;
    use sluice_protocol::ErrorCode;

    fn change(
        image: &MetadataImage,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[i32],
    ) -> IsrChange {
        IsrChange {
            topic_id: image.topic("t").unwrap().id,
            topic_name: None,
            partition: 0,
            leader_epoch,
            partition_epoch,
            new_isr: isr.to_vec(),
        }
    }

    use crate::image::MetadataImage;

    #[test]
    fn the_leader_shrinks_and_expands_the_isr_with_current_epochs_only() {
        let image = registered(&[1, 2, 3]);
        let (image, _) = with_partition(&image, vec![1, 2, 3]);
        let epoch1 = image.brokers[&1].epoch;
        // Shrink to {1, 3}: recorded with the partition epoch bumped, in replica order.
        let r = alter_partition(
            &image,
            1,
            epoch1,
            &[change(&image, 0, 0, &[3, 1])],
            &ElectionConfig::default(),
        );
        assert_eq!(r.response.error_code, 0);
        assert_eq!(r.response.partitions[0].error_code, 0);
        let image = apply(&image, &r.records, 300);
        let p = &image.topic("t").unwrap().partitions[0];
        assert_eq!(
            (p.isr.clone(), p.partition_epoch, p.leader_epoch),
            (vec![1, 3], 1, 0)
        );
        // The same request again acted on an old partition epoch.
        let stale = alter_partition(
            &image,
            1,
            epoch1,
            &[change(&image, 0, 0, &[1, 3])],
            &ElectionConfig::default(),
        );
        assert_eq!(
            stale.response.partitions[0].error_code,
            ErrorCode::InvalidUpdateVersion.code()
        );
        assert!(stale.records.is_empty());
        // A leader epoch that is not the current one is fenced; a non-leader is refused.
        let fenced = alter_partition(
            &image,
            1,
            epoch1,
            &[change(&image, 7, 1, &[1])],
            &ElectionConfig::default(),
        );
        assert_eq!(
            fenced.response.partitions[0].error_code,
            ErrorCode::FencedLeaderEpoch.code()
        );
        let epoch2 = image.brokers[&2].epoch;
        let other = alter_partition(
            &image,
            2,
            epoch2,
            &[change(&image, 0, 1, &[2])],
            &ElectionConfig::default(),
        );
        assert_eq!(
            other.response.partitions[0].error_code,
            ErrorCode::NotLeaderOrFollower.code()
        );
        // The ISR must hold the leader and only replicas.
        for bad in [&[3][..], &[1, 4], &[1, 1]] {
            let r = alter_partition(
                &image,
                1,
                epoch1,
                &[change(&image, 0, 1, bad)],
                &ElectionConfig::default(),
            );
            assert_eq!(
                r.response.partitions[0].error_code,
                code::INVALID_REQUEST,
                "{bad:?}"
            );
        }
        // A stale broker epoch is refused as a whole.
        let r = alter_partition(
            &image,
            1,
            epoch1 + 1000,
            &[change(&image, 0, 1, &[1])],
            &ElectionConfig::default(),
        );
        assert_eq!(r.response.error_code, code::STALE_BROKER_EPOCH);
        // A fenced broker cannot join the ISR; an unfenced one can.
        let image2 = apply(
            &image,
            &fence_broker(&image, 2, &ElectionConfig::default()).records,
            301,
        );
        let r = alter_partition(
            &image2,
            1,
            epoch1,
            &[change(&image2, 0, 1, &[1, 2, 3])],
            &ElectionConfig::default(),
        );
        assert_eq!(
            r.response.partitions[0].error_code,
            ErrorCode::IneligibleReplica.code()
        );
        let r = alter_partition(
            &image,
            1,
            epoch1,
            &[change(&image, 0, 1, &[1, 2, 3])],
            &ElectionConfig::default(),
        );
        let image = apply(&image, &r.records, 302);
        assert_eq!(image.topic("t").unwrap().partitions[0].isr, vec![1, 2, 3]);
    }
}
