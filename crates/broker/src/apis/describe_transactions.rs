//! DescribeTransactions (key 65), v0: the state of each transactional id this broker coordinates (what
//! `kafka-transactions.sh describe` prints). An id hashed to a partition another broker leads answers
//! NOT_COORDINATOR; an unknown id TRANSACTIONAL_ID_NOT_FOUND.

use std::sync::Arc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;

/// Describes each transactional id.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for id in request.transactional_ids {
        let base = TransactionState::default()
            .with_transactional_id(id.clone())
            .with_transaction_state(StrBytes::from_static_str(""))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        let state = match broker.txns.describe(broker, &id.0).await {
            Err(e) => base.with_error_code(e.code()),
            Ok(None) => base.with_error_code(ErrorCode::TransactionalIdNotFound.code()),
            Ok(Some(m)) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, p) in &m.partitions {
                    match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
                        Some(t) => t.partitions.push(*p),
                        None => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                                .with_partitions(vec![*p]),
                        ),
                    }
                }
                base.with_transaction_state(StrBytes::from_static_str(m.state.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.txn_start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.producer_epoch)
                    .with_topics(topics)
            }
        };
        states.push(state);
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
