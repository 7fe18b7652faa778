//! ISR changes from the leader's side (KIP-497): every half `replica.lag.time.max.ms` (at most every 500 ms, so a
//! follower that caught up rejoins promptly) each partition this broker leads proposes the ISR its followers'
//! progress calls for (`Partition::propose_isr`: laggards out, caught-up replicas in), and the proposals go to the
//! active controller in one AlterPartition request (locally when this node is it). Until the controller's record
//! reaches the image, the partition counts the union of the old and proposed ISR for its high watermark; a refused
//! proposal is dropped and recomputed next round.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::alter_partition_request::{BrokerState, PartitionData, TopicData};
use kafka_protocol::messages::{AlterPartitionRequest, BrokerId};
use sluice_metadata::controller::IsrChange;
use sluice_metadata::MetadataImage;
use tokio::sync::watch;
use uuid::Uuid;

use crate::apis::now_ms;
use crate::broker::Broker;
use crate::partition::{IsrProposal, Partition};

/// A proposal the image has not answered after this is proposed again.
const PROPOSAL_RETRY_MS: i64 = 5_000;
/// How long one AlterPartition may take.
const ALTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether broker `id` may join an ISR (Kafka's `isReplicaIsrEligible`, KIP-841): registered, not fenced and not in
/// controlled shutdown in `image`.
pub(crate) fn isr_eligible(image: &MetadataImage, id: i32) -> bool {
    image
        .brokers
        .get(&id)
        .is_some_and(|b| !b.fenced && !b.in_controlled_shutdown)
}

/// Proposes ISR changes until `shutdown`.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let lag_max_ms = i64::try_from(broker.config.replica_lag_time_max_ms).unwrap_or(i64::MAX);
    let every = Duration::from_millis((broker.config.replica_lag_time_max_ms / 2).clamp(10, 500));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let node_id = broker.config.node_id;
        let now = now_ms();
        let image = broker.replicas.image();
        let eligible = |id: i32| isr_eligible(&image, id);
        let proposals: Vec<(Arc<Partition>, IsrProposal)> = broker
            .replicas
            .partitions()
            .into_iter()
            .filter_map(|p| {
                let proposal =
                    p.propose_isr(node_id, now, lag_max_ms, PROPOSAL_RETRY_MS, eligible)?;
                Some((p, proposal))
            })
            .collect();
        if proposals.is_empty() {
            continue;
        }
        for (p, proposal) in &proposals {
            tracing::info!(
                topic = %p.topic,
                partition = p.index,
                isr = ?p.state().isr,
                proposed = ?proposal.new_isr,
                "proposing an ISR change"
            );
        }
        let errors = tokio::select! {
            e = alter(&broker, &proposals) => e,
            _ = shutdown.changed() => return,
        };
        for ((p, proposal), error) in proposals.iter().zip(errors) {
            if error != 0 {
                tracing::info!(topic = %p.topic, partition = p.index, error_code = error,
                    "the controller refused the ISR change");
                p.isr_proposal_failed(proposal);
            }
        }
    }
}

/// Sends the proposals to the active controller; returns each one's error code (0: accepted).
async fn alter(broker: &Arc<Broker>, proposals: &[(Arc<Partition>, IsrProposal)]) -> Vec<i16> {
    let unknown = sluice_protocol::ErrorCode::UnknownServerError.code();
    let Some(broker_epoch) = broker.lifecycle.broker_epoch() else {
        return vec![sluice_protocol::ErrorCode::StaleBrokerEpoch.code(); proposals.len()];
    };
    let node_id = broker.config.node_id;
    let local = broker.controller.is_active() || !broker.controller_channel.has_voters();
    // (topic id, partition) -> error code.
    let mut codes: HashMap<(Uuid, i32), i16> = HashMap::new();
    if local {
        let changes = proposals
            .iter()
            .map(|(p, proposal)| IsrChange {
                topic_id: p.topic_id,
                topic_name: None,
                partition: p.index,
                leader_epoch: proposal.leader_epoch,
                partition_epoch: proposal.partition_epoch,
                new_isr: proposal.new_isr.clone(),
            })
            .collect();
        match tokio::time::timeout(
            ALTER_TIMEOUT,
            broker
                .controller
                .alter_partition(node_id, broker_epoch, changes),
        )
        .await
        {
            Ok(Ok(outcome)) if outcome.error_code == 0 => {
                for o in outcome.partitions {
                    codes.insert((o.topic_id, o.partition), o.error_code);
                }
            }
            Ok(Ok(outcome)) => return vec![outcome.error_code; proposals.len()],
            Ok(Err(e)) => return vec![e.code(); proposals.len()],
            Err(_) => return vec![unknown; proposals.len()],
        }
    } else {
        let mut topics: Vec<TopicData> = Vec::new();
        for (p, proposal) in proposals {
            let data = PartitionData::default()
                .with_partition_index(p.index)
                .with_leader_epoch(proposal.leader_epoch)
                .with_partition_epoch(proposal.partition_epoch)
                .with_new_isr_with_epochs(
                    proposal
                        .new_isr
                        .iter()
                        .map(|&b| {
                            BrokerState::default()
                                .with_broker_id(BrokerId(b))
                                .with_broker_epoch(-1)
                        })
                        .collect(),
                );
            match topics.iter_mut().find(|t| t.topic_id == p.topic_id) {
                Some(t) => t.partitions.push(data),
                None => topics.push(
                    TopicData::default()
                        .with_topic_id(p.topic_id)
                        .with_partitions(vec![data]),
                ),
            }
        }
        let request = AlterPartitionRequest::default()
            .with_broker_id(BrokerId(node_id))
            .with_broker_epoch(broker_epoch)
            .with_topics(topics);
        match broker
            .controller_channel
            .send(&request, ALTER_TIMEOUT)
            .await
        {
            Ok(response) if response.error_code == 0 => {
                for t in response.topics {
                    for p in t.partitions {
                        codes.insert((t.topic_id, p.partition_index), p.error_code);
                    }
                }
            }
            Ok(response) => return vec![response.error_code; proposals.len()],
            Err(e) => return vec![e.error_code(); proposals.len()],
        }
    }
    proposals
        .iter()
        .map(|(p, _)| {
            codes
                .get(&(p.topic_id, p.index))
                .copied()
                .unwrap_or(unknown)
        })
        .collect()
}
