//! ListTransactions (key 66), v0-v1: the transactional ids of the `__transaction_state` partitions this broker
//! leads (admin clients ask every broker and merge), filtered by state, producer id and (v1, KIP-994) by running
//! longer than a duration. Unknown state names are echoed in `unknown_state_filters`, as Kafka does.

use std::sync::Arc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use sluice_coordinator::txn::TransactionState as State;

use super::RequestContext;
use crate::broker::Broker;

/// Lists transactions.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let (known, unknown): (Vec<String>, Vec<String>) = request
        .state_filters
        .iter()
        .map(|s| s.to_string())
        .partition(|s| State::from_name(s).is_some());
    if !unknown.is_empty() && known.is_empty() {
        // Only unknown states asked for: nothing can match.
        return ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown.into_iter().map(StrBytes::from_string).collect());
    }
    let producer_ids: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let duration = if ctx.api_version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let states = broker
        .txns
        .list(&known, &producer_ids, duration)
        .into_iter()
        .map(|m| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    m.transactional_id.clone(),
                )))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown.into_iter().map(StrBytes::from_string).collect())
        .with_transaction_states(states)
}
