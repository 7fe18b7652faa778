//! CreateTopics (key 19), v2-v7: validate_only, explicit replica assignments, configs, -1 defaults (KIP-464),
//! topic ids (v7) and, from v5, the created topic's partition count, replication factor and every config with
//! its source (KIP-525). Validation and errors are the controller's (`sluice_metadata::controller`).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::{topic_config, NewTopic};

use super::describe_configs::BrokerDefaults;
use super::RequestContext;
use crate::broker::Broker;

/// Creates the requested topics through the controller.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let topics: Vec<NewTopic> = request
        .topics
        .into_iter()
        .map(|t| NewTopic {
            name: t.name.0.to_string(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .into_iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.into_iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
            configs: t
                .configs
                .into_iter()
                .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
                .collect(),
        })
        .collect();
    let outcomes = broker
        .controller
        .create_topics(topics, request.validate_only)
        .await;
    let view = BrokerDefaults(&broker.config);
    let topics = outcomes
        .into_iter()
        .map(|o| {
            let ok = o.error_code == 0;
            let configs = if ok && ctx.api_version >= 5 {
                let overrides: BTreeMap<String, String> = o.configs.iter().cloned().collect();
                topic_config::describe_topic(&overrides, &view)
                    .into_iter()
                    .map(|c| {
                        CreatableTopicConfigs::default()
                            .with_name(StrBytes::from_string(c.name))
                            .with_value(c.value.map(StrBytes::from_string))
                            .with_read_only(c.read_only)
                            .with_config_source(c.source.code())
                            .with_is_sensitive(c.sensitive)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            CreatableTopicResult::default()
                .with_name(TopicName(StrBytes::from_string(o.name)))
                .with_topic_id(o.topic_id)
                .with_error_code(o.error_code)
                .with_error_message(o.error_message.map(StrBytes::from_string))
                .with_num_partitions(o.num_partitions)
                .with_replication_factor(o.replication_factor)
                .with_configs(Some(configs))
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}
