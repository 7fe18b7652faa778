//! DescribeConfigs (key 32), v1-v4: TOPIC resources (every topic config with its effective value and source:
//! TOPIC_CONFIG for an override, STATIC_BROKER_CONFIG when the broker's synonym is set, DEFAULT_CONFIG otherwise)
//! and BROKER resources (every broker key, STATIC_BROKER_CONFIG or DEFAULT_CONFIG, and the dynamic replication
//! throttle rates, DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG or DEFAULT_CONFIG, not read-only; the empty
//! name describes the cluster-wide dynamic defaults that are set). Synonyms when requested;
//! config types and documentation from v3 (documentation only when requested).

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::error::{code, ApiError};
use sluice_metadata::topic_config::{
    self, BrokerConfigView, BrokerValue, ConfigSource, ConfigSynonym, ConfigType, DescribedConfig,
};
use sluice_metadata::{validate_topic_name, ConfigResourceType};

use super::RequestContext;
use crate::broker::Broker;
use crate::config::{BrokerConfig, CONFIG_KEYS};

/// The broker's configuration as topic-config descriptions need it.
pub(crate) struct BrokerDefaults<'a>(pub(crate) &'a BrokerConfig);

impl BrokerConfigView for BrokerDefaults<'_> {
    fn broker_value(&self, key: &str) -> Option<BrokerValue> {
        self.0.value_of(key).map(|value| BrokerValue {
            value,
            is_default: !self.0.is_set(key),
        })
    }
    fn topic_default(&self, topic_key: &str) -> Option<String> {
        self.0.topic_config_default(topic_key)
    }
}

/// Describes each requested resource.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let image = broker.controller.image();
    let include_documentation = ctx.api_version >= 3 && request.include_documentation;
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            // Null or empty: every key (Kafka's `ConfigHelper`).
            let keys: Option<Vec<String>> = resource
                .configuration_keys
                .filter(|ks| !ks.is_empty())
                .map(|ks| ks.into_iter().map(|k| k.to_string()).collect());
            let name = resource.resource_name.to_string();
            let described = match ConfigResourceType::from_code(resource.resource_type) {
                Some(ConfigResourceType::Topic) => describe_topic(broker, &image, &name),
                Some(ConfigResourceType::Broker) => describe_broker(&broker.config, &image, &name),
                None => Err(ApiError::new(
                    code::INVALID_REQUEST,
                    format!("Unsupported resource type: {}", resource.resource_type),
                )),
            };
            let (error_code, error_message, configs) = match described {
                Ok(configs) => (code::NONE, None, configs),
                Err(e) => (e.code, e.message, Vec::new()),
            };
            let configs = configs
                .into_iter()
                .filter(|c| keys.as_ref().is_none_or(|ks| ks.contains(&c.name)))
                .map(|c| {
                    to_wire(
                        c,
                        ctx.api_version,
                        request.include_synonyms,
                        include_documentation,
                    )
                })
                .collect();
            DescribeConfigsResult::default()
                .with_error_code(error_code)
                .with_error_message(error_message.map(StrBytes::from_string))
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn to_wire(
    c: DescribedConfig,
    version: i16,
    include_synonyms: bool,
    include_documentation: bool,
) -> DescribeConfigsResourceResult {
    let synonyms = if include_synonyms {
        c.synonyms
            .into_iter()
            .map(|s| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(s.name))
                    .with_value(s.value.map(StrBytes::from_string))
                    .with_source(s.source.code())
            })
            .collect()
    } else {
        Vec::new()
    };
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(c.name))
        .with_value(if c.sensitive {
            None
        } else {
            c.value.map(StrBytes::from_string)
        })
        .with_read_only(c.read_only)
        .with_config_source(c.source.code())
        .with_is_sensitive(c.sensitive)
        .with_synonyms(synonyms)
        .with_config_type(if version >= 3 {
            c.config_type.code()
        } else {
            0
        })
        .with_documentation(if include_documentation {
            c.documentation.map(StrBytes::from_string)
        } else {
            None
        })
}

fn describe_topic(
    broker: &Broker,
    image: &sluice_metadata::MetadataImage,
    name: &str,
) -> Result<Vec<DescribedConfig>, ApiError> {
    validate_topic_name(name).map_err(|m| ApiError::new(code::INVALID_TOPIC_EXCEPTION, m))?;
    let topic = image
        .topic(name)
        .ok_or_else(|| ApiError::code_only(code::UNKNOWN_TOPIC_OR_PARTITION))?;
    Ok(topic_config::describe_topic(
        &topic.configs,
        &BrokerDefaults(&broker.config),
    ))
}

/// Every broker key: this broker's id gives its static keys and the dynamic ones set for it or cluster-wide; the
/// empty name gives the cluster-wide dynamic defaults that are set (as Kafka does); another broker's id is
/// INVALID_REQUEST (clients ask each broker for its own configs).
fn describe_broker(
    config: &BrokerConfig,
    image: &sluice_metadata::MetadataImage,
    name: &str,
) -> Result<Vec<DescribedConfig>, ApiError> {
    if name.is_empty() {
        return Ok(describe_dynamic(image, None));
    }
    let id: i32 = name.parse().map_err(|_| {
        ApiError::new(
            code::INVALID_REQUEST,
            format!("Broker id must be an integer, but it is: {name}"),
        )
    })?;
    if id != config.node_id {
        return Err(ApiError::new(
            code::INVALID_REQUEST,
            format!(
                "Unexpected broker id, expected {} or empty string, but received {name}",
                config.node_id
            ),
        ));
    }
    let mut described: Vec<DescribedConfig> = config
        .entries()
        .into_iter()
        .map(|e| {
            let source = if e.is_default {
                ConfigSource::DefaultConfig
            } else {
                ConfigSource::StaticBrokerConfig
            };
            let documentation = CONFIG_KEYS
                .iter()
                .find(|k| k.name == e.name)
                .map(|k| k.doc.to_string());
            let config_type = broker_config_type(&e.name, e.value.as_deref());
            let synonyms = e
                .value
                .clone()
                .map(|v| {
                    vec![ConfigSynonym {
                        name: e.name.clone(),
                        value: Some(v),
                        source,
                    }]
                })
                .unwrap_or_default();
            DescribedConfig {
                name: e.name,
                value: e.value,
                source,
                read_only: e.read_only,
                sensitive: e.sensitive,
                config_type,
                documentation,
                synonyms,
            }
        })
        .collect();
    described.extend(describe_dynamic(image, Some(config.node_id)));
    Ok(described)
}

/// The dynamic broker configs of broker `node_id`, each with its synonyms (the per-broker value first, then the
/// cluster-wide default) and Kafka's default when neither is set. `None` describes the cluster-wide defaults that
/// are set.
fn describe_dynamic(
    image: &sluice_metadata::MetadataImage,
    node_id: Option<i32>,
) -> Vec<DescribedConfig> {
    let own = node_id.and_then(|id| image.broker_configs(&id.to_string()));
    let cluster = image.broker_configs("");
    topic_config::dynamic_broker()
        .iter()
        .filter_map(|def| {
            let mut synonyms = Vec::new();
            if let Some(v) = own.and_then(|c| c.get(def.name)) {
                synonyms.push(ConfigSynonym {
                    name: def.name.to_owned(),
                    value: Some(v.clone()),
                    source: ConfigSource::DynamicBrokerConfig,
                });
            }
            if let Some(v) = cluster.and_then(|c| c.get(def.name)) {
                synonyms.push(ConfigSynonym {
                    name: def.name.to_owned(),
                    value: Some(v.clone()),
                    source: ConfigSource::DynamicDefaultBrokerConfig,
                });
            }
            let (value, source) = match synonyms.first() {
                Some(s) => (s.value.clone(), s.source),
                // Unset on this broker: Kafka's default (unlimited), listed as a key that can be set.
                None if node_id.is_some() => {
                    (Some(def.default.to_owned()), ConfigSource::DefaultConfig)
                }
                None => return None,
            };
            Some(DescribedConfig {
                name: def.name.to_owned(),
                value,
                source,
                read_only: false,
                sensitive: false,
                config_type: def.config_type,
                documentation: Some(def.documentation.to_owned()),
                synonyms,
            })
        })
        .collect()
}

/// The type of a broker key: a topic config's type when the key is its synonym, else inferred from the value.
fn broker_config_type(name: &str, value: Option<&str>) -> ConfigType {
    // Kafka's types where the value does not tell: a DOUBLE spelled `1.7976931348623157E308`, a LONG that fits an
    // INT.
    match name {
        "log.cleaner.io.max.bytes.per.second" => return ConfigType::Double,
        "log.cleaner.dedupe.buffer.size" => return ConfigType::Long,
        _ => {}
    }
    if let Some(def) = topic_config::all()
        .iter()
        .find(|d| d.broker_synonyms.first() == Some(&name))
    {
        return def.config_type;
    }
    match value {
        Some("true") | Some("false") => ConfigType::Boolean,
        Some(v)
            if v.parse::<i32>().is_ok() && !name.ends_with(".ms") && !name.ends_with(".bytes") =>
        {
            ConfigType::Int
        }
        Some(v) if v.parse::<i64>().is_ok() => ConfigType::Long,
        Some(v) if v.contains(',') => ConfigType::List,
        _ => ConfigType::String,
    }
}
