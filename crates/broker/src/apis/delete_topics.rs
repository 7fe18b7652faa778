//! DeleteTopics (key 20), v1-v6: by name, and from v6 by topic id, with Kafka's checks (duplicates, neither or
//! both given, unknown names -> UNKNOWN_TOPIC_OR_PARTITION, unknown ids -> UNKNOWN_TOPIC_ID). The replica manager
//! deletes the local logs when it sees the new image.

use std::sync::Arc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::error::code;
use sluice_metadata::{DeleteTopicTarget, Uuid};

use super::RequestContext;
use crate::broker::Broker;

/// Deletes the requested topics through the controller.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let targets: Vec<DeleteTopicTarget> = if ctx.api_version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| DeleteTopicTarget {
                name: t.name.map(|n| n.0.to_string()),
                topic_id: t.topic_id,
            })
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| DeleteTopicTarget {
                name: Some(n.0.to_string()),
                topic_id: Uuid::nil(),
            })
            .collect()
    };
    let outcomes = match broker.controller.delete_topics(targets.clone()).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::error!("DeleteTopics failed: {e}");
            targets
                .into_iter()
                .map(|t| sluice_metadata::DeleteTopicOutcome {
                    name: t.name,
                    topic_id: t.topic_id,
                    error: Some(sluice_metadata::ApiError::new(e.code(), e.to_string())),
                })
                .collect()
        }
    };
    let responses = outcomes
        .into_iter()
        .map(|o| {
            let (error_code, error_message) = match o.error {
                Some(e) => (e.code, e.message),
                None => (code::NONE, None),
            };
            DeletableTopicResult::default()
                // Before v6 the name is not nullable; every entry there was requested by name.
                .with_name(
                    o.name
                        .or_else(|| (ctx.api_version < 6).then(String::new))
                        .map(|n| TopicName(StrBytes::from_string(n))),
                )
                .with_topic_id(o.topic_id)
                .with_error_code(error_code)
                .with_error_message(error_message.map(StrBytes::from_string))
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
