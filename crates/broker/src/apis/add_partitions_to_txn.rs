//! AddPartitionsToTxn (key 24), v0-v4: adds partitions to a producer's ongoing transaction at its transaction
//! coordinator (`TxnCoordinator::add_partitions`). v4 batches several transactions and carries KIP-890's
//! verify-only form, which a partition leader sends to check that a transactional batch belongs to an ongoing
//! transaction; it is answered from the coordinator's state without writing anything.
//!
//! As in Kafka, a request naming a partition that does not exist changes nothing: those partitions answer
//! UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED.

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;

/// Adds (or verifies) the partitions of each transaction.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if ctx.api_version <= 3 {
        let results = one(
            broker,
            ctx.api_version,
            &request.v3_and_below_transactional_id.0,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            &request.v3_and_below_topics,
            false,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    let mut out = Vec::with_capacity(request.transactions.len());
    for t in &request.transactions {
        let results = one(
            broker,
            ctx.api_version,
            &t.transactional_id.0,
            t.producer_id.0,
            t.producer_epoch,
            &t.topics,
            t.verify_only,
        )
        .await;
        out.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(TransactionalId(t.transactional_id.0.clone()))
                .with_topic_results(results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(out)
}

async fn one(
    broker: &Arc<Broker>,
    version: i16,
    transactional_id: &StrBytes,
    producer_id: i64,
    producer_epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let partitions: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let image = broker.controller.image();
    let unknown: Vec<bool> = partitions
        .iter()
        .map(|(t, p)| {
            image
                .topic(t)
                .is_none_or(|t| usize::try_from(*p).map_or(true, |i| i >= t.partitions.len()))
        })
        .collect();
    let codes: Vec<i16> = if unknown.iter().any(|u| *u) {
        unknown
            .iter()
            .map(|u| {
                if *u {
                    ErrorCode::UnknownTopicOrPartition.code()
                } else {
                    ErrorCode::OperationNotAttempted.code()
                }
            })
            .collect()
    } else if transactional_id.is_empty() {
        vec![ErrorCode::InvalidRequest.code(); partitions.len()]
    } else if verify_only {
        match broker
            .txns
            .verify_partitions(
                broker,
                transactional_id,
                producer_id,
                producer_epoch,
                &partitions,
            )
            .await
        {
            Ok(v) => partitions
                .iter()
                .map(|tp| v.iter().find(|(q, _)| q == tp).map_or(0, |(_, e)| e.code()))
                .collect(),
            Err(e) => vec![e.code(); partitions.len()],
        }
    } else {
        let code = match broker
            .txns
            .add_partitions(
                broker,
                transactional_id,
                producer_id,
                producer_epoch,
                &partitions,
            )
            .await
        {
            // KIP-588: clients before v2 know INVALID_PRODUCER_EPOCH, not PRODUCER_FENCED.
            Ok(e) if version < 2 => e.for_pre_kip588_client().code(),
            Ok(e) => e.code(),
            Err(e) => e.code(),
        };
        vec![code; partitions.len()]
    };
    let mut results: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, p), code) in partitions.into_iter().zip(codes) {
        let r = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(p)
            .with_partition_error_code(code);
        match results.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.results_by_partition.push(r),
            None => results.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_results_by_partition(vec![r]),
            ),
        }
    }
    results
}
