//! KIP-392, fetching from the closest replica: which replica serves a consumer's fetch.
//!
//! - A consumer Fetch at v11+ (it carries `rack_id`, Kafka's `ClientMetadata`) may be served by a follower replica
//!   of the partition: the follower reads up to its own high watermark, which it takes from the leader's fetch
//!   responses. Older versions and replica (follower) fetches need the leader (Kafka's
//!   `fetchOnlyFromLeader = isFromFollower || (isFromConsumer && clientMetadata.isEmpty)`).
//! - On the leader, with `replica.selector.class` = `RackAwareReplicaSelector` and a non-empty client rack, the
//!   leader picks a preferred read replica as Kafka's `ReplicaManager.findPreferredReadReplica` and
//!   `RackAwareReplicaSelector` do: the candidates are the leader plus the in-sync, live (unfenced) followers whose
//!   log end offset is at or past the fetch offset and whose log start is at or before it; among those in the
//!   client's rack, the leader if it is there, else the one with the highest log end offset (ties: the most recently
//!   caught up); none in the rack: the leader. A choice other than the leader is answered with no records and the
//!   `preferred_read_replica` set, at once; the client then fetches from that replica.

use std::sync::Arc;

use sluice_metadata::MetadataImage;

use crate::broker::Broker;
use crate::config::ReplicaSelectorClass;
use crate::partition::{Partition, PartitionState, Role};
use crate::replica_manager::ReplicaError;

/// The first Fetch version that carries the client's `rack_id` (Kafka's `ClientMetadata`).
pub(crate) const FIRST_RACK_ID_VERSION: i16 = 11;

/// The client metadata of a fetch: `Some(rack)` (possibly empty) for a consumer Fetch at v11+, `None` otherwise
/// (a follower's fetch, or an older consumer).
pub(crate) fn client_rack(version: i16, is_from_follower: bool, rack_id: &str) -> Option<String> {
    (version >= FIRST_RACK_ID_VERSION && !is_from_follower).then(|| rack_id.to_string())
}

/// The partition that serves a fetch: the led partition, or, for a consumer with client metadata (v11+), a
/// follower replica hosted here too.
pub(crate) fn partition_for_fetch(
    broker: &Broker,
    client_rack: Option<&str>,
    topic: &str,
    index: i32,
) -> Result<Arc<Partition>, ReplicaError> {
    if client_rack.is_some() {
        broker.replicas.hosted_partition(topic, index)
    } else {
        broker.replicas.partition(topic, index)
    }
}

/// On the leader: the broker a consumer in `client_rack` should fetch `fetch_offset` from instead, when the
/// configured selector picks a replica other than this leader.
pub(crate) fn preferred_read_replica(
    broker: &Broker,
    partition: &Partition,
    client_rack: Option<&str>,
    fetch_offset: i64,
    now_ms: i64,
) -> Option<i32> {
    if broker.config.replica_selector != Some(ReplicaSelectorClass::RackAware) {
        return None;
    }
    let rack = client_rack.filter(|r| !r.is_empty())?;
    let state = partition.state();
    if state.role != Role::Leader {
        return None;
    }
    let image = broker.replicas.image();
    let candidates = candidates(
        &state,
        broker.config.node_id,
        partition.log.log_end_offset(),
        fetch_offset,
        now_ms,
        &image,
    );
    select_rack_aware(rack, broker.config.node_id, &candidates)
}

/// What the selector knows of one replica (Kafka's `ReplicaView`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaView {
    pub broker_id: i32,
    pub rack: Option<String>,
    pub log_end_offset: i64,
    /// Milliseconds since it was last caught up with the leader (0 for the leader).
    pub since_caught_up_ms: i64,
}

/// The leader (`leader_id`, this broker, with `leader_log_end_offset`) and the followers that could serve
/// `fetch_offset`: in the ISR, unfenced in `image`, log end at or past it, log start at or before it.
pub(crate) fn candidates(
    state: &PartitionState,
    leader_id: i32,
    leader_log_end_offset: i64,
    fetch_offset: i64,
    now_ms: i64,
    image: &MetadataImage,
) -> Vec<ReplicaView> {
    let rack_of = |id: i32| image.brokers.get(&id).and_then(|b| b.rack.clone());
    let mut views = vec![ReplicaView {
        broker_id: leader_id,
        rack: rack_of(leader_id),
        log_end_offset: leader_log_end_offset,
        since_caught_up_ms: 0,
    }];
    for &id in &state.replicas {
        if id == leader_id {
            continue;
        }
        // In the ISR (a lagging follower would keep the consumer behind) and live (Kafka lists the endpoints of
        // unfenced brokers only).
        let live = state.isr.contains(&id) && image.brokers.get(&id).is_some_and(|b| !b.fenced);
        let Some(progress) = state.followers.get(&id) else {
            continue;
        };
        if live
            && progress.log_end_offset >= fetch_offset
            && progress.log_start_offset <= fetch_offset
        {
            views.push(ReplicaView {
                broker_id: id,
                rack: rack_of(id),
                log_end_offset: progress.log_end_offset,
                since_caught_up_ms: now_ms.saturating_sub(progress.last_caught_up_ms).max(0),
            });
        }
    }
    views
}

/// Kafka's `RackAwareReplicaSelector.select` over `replicas` (the leader `leader_id` among them), as a preferred
/// read replica: `None` when the choice is the leader.
pub(crate) fn select_rack_aware(
    client_rack: &str,
    leader_id: i32,
    replicas: &[ReplicaView],
) -> Option<i32> {
    if client_rack.is_empty() {
        return None;
    }
    let same_rack: Vec<&ReplicaView> = replicas
        .iter()
        .filter(|r| r.rack.as_deref() == Some(client_rack))
        .collect();
    if same_rack.iter().any(|r| r.broker_id == leader_id) {
        return None;
    }
    // The most caught-up: highest log end offset, then the least time since caught up; then the lowest id, so
    // that the choice is stable.
    let best = same_rack.into_iter().max_by(|a, b| {
        a.log_end_offset
            .cmp(&b.log_end_offset)
            .then(b.since_caught_up_ms.cmp(&a.since_caught_up_ms))
            .then(b.broker_id.cmp(&a.broker_id))
    })?;
    (best.broker_id != leader_id).then_some(best.broker_id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_metadata::BrokerRegistration;

    use super::*;
    use crate::partition::ReplicaProgress;

    fn view(id: i32, rack: &str, leo: i64, since: i64) -> ReplicaView {
        ReplicaView {
            broker_id: id,
            rack: (!rack.is_empty()).then(|| rack.to_string()),
            log_end_offset: leo,
            since_caught_up_ms: since,
        }
    }

    #[test]
    fn a_replica_in_the_clients_rack_is_preferred() {
        let replicas = [
            view(1, "A", 10, 0),
            view(2, "B", 10, 0),
            view(3, "C", 10, 0),
        ];
        assert_eq!(select_rack_aware("B", 1, &replicas), Some(2));
        assert_eq!(select_rack_aware("C", 1, &replicas), Some(3));
    }

    #[test]
    fn the_leader_when_it_is_in_the_rack_or_none_is() {
        let replicas = [
            view(1, "A", 10, 0),
            view(2, "A", 12, 0),
            view(3, "C", 10, 0),
        ];
        assert_eq!(select_rack_aware("A", 1, &replicas), None);
        assert_eq!(select_rack_aware("Z", 1, &replicas), None);
        assert_eq!(select_rack_aware("", 1, &replicas), None);
        // Replicas without a rack never match.
        let no_racks = [view(1, "", 10, 0), view(2, "", 10, 0)];
        assert_eq!(select_rack_aware("A", 1, &no_racks), None);
    }

    #[test]
    fn the_most_caught_up_in_the_rack_wins() {
        let replicas = [
            view(1, "A", 20, 0),
            view(2, "B", 15, 0),
            view(3, "B", 18, 500),
        ];
        assert_eq!(select_rack_aware("B", 1, &replicas), Some(3));
        // Same log end: the most recently caught up.
        let replicas = [
            view(1, "A", 20, 0),
            view(2, "B", 18, 100),
            view(3, "B", 18, 500),
        ];
        assert_eq!(select_rack_aware("B", 1, &replicas), Some(2));
        // Full tie: the lowest id.
        let replicas = [
            view(1, "A", 20, 0),
            view(3, "B", 18, 100),
            view(2, "B", 18, 100),
        ];
        assert_eq!(select_rack_aware("B", 1, &replicas), Some(2));
    }

    fn image(racks: &[(i32, &str, bool)]) -> MetadataImage {
        let mut image = MetadataImage::empty("cluster", 0);
        for &(id, rack, fenced) in racks {
            image.brokers.insert(
                id,
                BrokerRegistration {
                    node_id: id,
                    rack: Some(rack.to_string()),
                    fenced,
                    ..BrokerRegistration::default()
                },
            );
        }
        image
    }

    fn state(followers: &[(i32, i64, i64, i64)]) -> PartitionState {
        PartitionState {
            role: Role::Leader,
            leader: 1,
            leader_epoch: 3,
            partition_epoch: 3,
            replicas: vec![1, 2, 3, 4],
            isr: vec![1, 2, 3, 4],
            min_insync_replicas: 1,
            followers: followers
                .iter()
                .map(|&(id, leo, start, caught_up)| {
                    (
                        id,
                        ReplicaProgress {
                            log_end_offset: leo,
                            last_caught_up_ms: caught_up,
                            last_fetch_leader_leo: leo,
                            last_fetch_ms: caught_up,
                            log_start_offset: start,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            pending_isr: None,
        }
    }

    fn ids(views: &[ReplicaView]) -> Vec<i32> {
        views.iter().map(|v| v.broker_id).collect()
    }

    #[test]
    fn candidates_have_the_fetch_offset_and_are_unfenced() {
        let image = image(&[
            (1, "A", false),
            (2, "B", false),
            (3, "B", true),
            (4, "C", false),
        ]);
        let state = state(&[(2, 50, 0, 900), (3, 50, 0, 1000), (4, 50, 0, 1000)]);
        let views = candidates(&state, 1, 60, 40, 1000, &image);
        // 3 is fenced.
        assert_eq!(ids(&views), vec![1, 2, 4]);
        assert_eq!(views[0], view(1, "A", 60, 0));
        assert_eq!(views[1], view(2, "B", 50, 100));
        // Past a follower's log end: only the leader.
        assert_eq!(ids(&candidates(&state, 1, 60, 55, 1000, &image)), vec![1]);
        // Before a follower's log start.
        let state = self::state(&[(2, 50, 30, 900), (4, 50, 0, 1000)]);
        assert_eq!(
            ids(&candidates(&state, 1, 60, 20, 1000, &image)),
            vec![1, 4]
        );
        // A follower that has not fetched in this epoch is not a candidate.
        let state = self::state(&[(4, 50, 0, 1000)]);
        assert_eq!(
            ids(&candidates(&state, 1, 60, 10, 1000, &image)),
            vec![1, 4]
        );
        // Nor one outside the ISR.
        let mut state = self::state(&[(2, 50, 0, 1000), (4, 50, 0, 1000)]);
        state.isr = vec![1, 4];
        assert_eq!(
            ids(&candidates(&state, 1, 60, 10, 1000, &image)),
            vec![1, 4]
        );
    }

    #[test]
    fn fenced_or_behind_replicas_in_the_rack_leave_the_leader() {
        let image = image(&[(1, "A", false), (2, "B", false), (3, "B", true)]);
        let state = state(&[(2, 10, 0, 1000), (3, 50, 0, 1000)]);
        // 3 (rack B) is fenced, 2 (rack B) is behind the fetch offset.
        let views = candidates(&state, 1, 60, 40, 1000, &image);
        assert_eq!(select_rack_aware("B", 1, &views), None);
        let views = candidates(&state, 1, 60, 5, 1000, &image);
        assert_eq!(select_rack_aware("B", 1, &views), Some(2));
    }

    #[test]
    fn only_v11_consumers_carry_client_metadata() {
        assert_eq!(client_rack(10, false, ""), None);
        assert_eq!(client_rack(11, false, ""), Some(String::new()));
        assert_eq!(client_rack(16, false, "r1"), Some("r1".to_string()));
        assert_eq!(client_rack(16, true, "r1"), None);
    }
}
