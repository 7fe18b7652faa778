//! Config changes: AlterConfigs (replace all overrides) and IncrementalAlterConfigs (SET / DELETE / APPEND /
//! SUBTRACT), for topic resources, following Kafka's `ConfigurationControlManager`.

use std::collections::{BTreeMap, HashSet};

use super::ControllerResult;
use crate::error::{code, ApiError};
use crate::image::MetadataImage;
use crate::record::{ConfigResourceType, MetadataRecord};
use crate::topic_config;

/// IncrementalAlterConfigs operation types with Kafka's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOpType {
    /// Set the value (0).
    Set,
    /// Remove the override (1).
    Delete,
    /// Add items to a list value (2).
    Append,
    /// Remove items from a list value (3).
    Subtract,
}

impl ConfigOpType {
    /// The op for a Kafka wire code.
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            0 => Some(ConfigOpType::Set),
            1 => Some(ConfigOpType::Delete),
            2 => Some(ConfigOpType::Append),
            3 => Some(ConfigOpType::Subtract),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            ConfigOpType::Set => "SET",
            ConfigOpType::Delete => "DELETE",
            ConfigOpType::Append => "APPEND",
            ConfigOpType::Subtract => "SUBTRACT",
        }
    }
}

/// One operation of IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterConfigOp {
    /// The config key.
    pub key: String,
    /// The operation.
    pub op: ConfigOpType,
    /// The operand (ignored for DELETE).
    pub value: Option<String>,
}

/// One resource of IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrementalAlterConfigsResource {
    /// Kafka's resource type code (2 = topic, 4 = broker).
    pub resource_type: i8,
    /// The resource name.
    pub resource_name: String,
    /// The operations.
    pub ops: Vec<AlterConfigOp>,
}

/// One resource of (legacy) AlterConfigs: the complete new set of overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterConfigsResource {
    /// Kafka's resource type code (2 = topic, 4 = broker).
    pub resource_type: i8,
    /// The resource name.
    pub resource_name: String,
    /// The new overrides; every other override is removed.
    pub configs: Vec<(String, Option<String>)>,
}

/// The result for one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterConfigsOutcome {
    /// Kafka's resource type code, echoed.
    pub resource_type: i8,
    /// The resource name, echoed.
    pub resource_name: String,
    /// The error, if the resource was not changed.
    pub error: Option<ApiError>,
}

/// An alterable config resource: its kind, current overrides and key definitions.
struct Resource<'a> {
    resource_type: ConfigResourceType,
    overrides: &'a BTreeMap<String, String>,
}

static NO_OVERRIDES: BTreeMap<String, String> = BTreeMap::new();

impl Resource<'_> {
    /// The definition of `key`, or the error Kafka gives for a key that cannot be set on this resource.
    fn def(&self, key: &str) -> Result<&'static topic_config::TopicConfigDef, ApiError> {
        match self.resource_type {
            ConfigResourceType::Topic => topic_config::lookup(key).ok_or_else(|| {
                ApiError::new(
                    code::INVALID_CONFIG,
                    format!("Unknown topic config name: {key}"),
                )
            }),
            ConfigResourceType::Broker => topic_config::lookup_dynamic_broker(key).ok_or_else(|| {
                let dynamic: Vec<&str> = topic_config::dynamic_broker().iter().map(|d| d.name).collect();
                ApiError::new(
                    code::INVALID_REQUEST,
                    format!(
                        "Cannot update these configs dynamically: Set({key}). Sluice's dynamic broker configs are {}; \
                         set the others in the config file and restart.",
                        dynamic.join(", ")
                    ),
                )
            }),
        }
    }
}

/// The resource to alter: a topic that exists, or a broker (an id, or the empty name for the cluster-wide
/// default, as Kafka's `ConfigurationControlManager` accepts them).
fn alterable<'a>(
    image: &'a MetadataImage,
    resource_type: i8,
    name: &str,
) -> Result<Resource<'a>, ApiError> {
    match ConfigResourceType::from_code(resource_type) {
        Some(ConfigResourceType::Topic) => {
            crate::controller::validate_topic_name(name)
                .map_err(|m| ApiError::new(code::INVALID_TOPIC_EXCEPTION, m))?;
            let overrides = image.topic(name).map(|t| &t.configs).ok_or_else(|| {
                ApiError::new(
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("The topic '{name}' does not exist."),
                )
            })?;
            Ok(Resource {
                resource_type: ConfigResourceType::Topic,
                overrides,
            })
        }
        Some(ConfigResourceType::Broker) => {
            if !name.is_empty() && name.parse::<i32>().is_err() {
                return Err(ApiError::new(
                    code::INVALID_REQUEST,
                    format!("Invalid broker name {name}"),
                ));
            }
            let overrides = image.broker_configs(name).unwrap_or(&NO_OVERRIDES);
            Ok(Resource {
                resource_type: ConfigResourceType::Broker,
                overrides,
            })
        }
        None => Err(ApiError::new(
            code::INVALID_REQUEST,
            format!("Unexpected resource type {resource_type}"),
        )),
    }
}

fn diff_records(
    resource_type: ConfigResourceType,
    name: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let record = |key: &str, value: Option<&String>| MetadataRecord::Config {
        resource_type,
        resource_name: name.to_string(),
        key: key.to_string(),
        value: value.cloned(),
    };
    let mut records: Vec<MetadataRecord> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| record(k, None))
        .collect();
    records.extend(
        new.iter()
            .filter(|(k, v)| old.get(*k) != Some(v))
            .map(|(k, v)| record(k, Some(v))),
    );
    records
}

fn duplicate_resource_errors<'a>(
    keys: impl Iterator<Item = (i8, &'a str)>,
) -> HashSet<(i8, String)> {
    let mut seen = HashSet::new();
    keys.filter(|(t, n)| !seen.insert((*t, n.to_string())))
        .map(|(t, n)| (t, n.to_string()))
        .collect()
}

/// IncrementalAlterConfigs; `validate_only` writes nothing.
pub fn incremental_alter_configs(
    image: &MetadataImage,
    resources: &[IncrementalAlterConfigsResource],
    validate_only: bool,
) -> ControllerResult<Vec<AlterConfigsOutcome>> {
    let dups = duplicate_resource_errors(
        resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut records = Vec::new();
    let mut outcomes = Vec::with_capacity(resources.len());
    for resource in resources {
        let result = if dups.contains(&(resource.resource_type, resource.resource_name.clone())) {
            Err(ApiError::new(
                code::INVALID_REQUEST,
                "Duplicate resource in request.",
            ))
        } else {
            incremental_one(image, resource)
        };
        let error = match result {
            Ok(new) => {
                records.extend(new);
                None
            }
            Err(e) => Some(e),
        };
        outcomes.push(AlterConfigsOutcome {
            resource_type: resource.resource_type,
            resource_name: resource.resource_name.clone(),
            error,
        });
    }
    if validate_only {
        records.clear();
    }
    ControllerResult {
        records,
        response: outcomes,
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn incremental_one(
    image: &MetadataImage,
    resource: &IncrementalAlterConfigsResource,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let target = alterable(image, resource.resource_type, &resource.resource_name)?;
    let old = target.overrides;
    let mut seen = HashSet::new();
    if resource.ops.iter().any(|op| !seen.insert(op.key.as_str())) {
        return Err(ApiError::new(
            code::INVALID_REQUEST,
            "Error due to duplicate config keys",
        ));
    }
    let mut new = old.clone();
    for op in &resource.ops {
        let def = target.def(&op.key)?;
        match op.op {
            ConfigOpType::Set => {
                let value = op.value.as_deref().ok_or_else(|| {
                    ApiError::new(
                        code::INVALID_REQUEST,
                        format!("Null value not supported for : {}", op.key),
                    )
                })?;
                def.validate(value)?;
                new.insert(op.key.clone(), value.to_string());
            }
            ConfigOpType::Delete => {
                new.remove(&op.key);
            }
            ConfigOpType::Append | ConfigOpType::Subtract => {
                if def.config_type != topic_config::ConfigType::List {
                    return Err(ApiError::new(
                        code::INVALID_CONFIG,
                        format!(
                            "Can't {} to key {} because its type is not LIST.",
                            op.op.name(),
                            op.key
                        ),
                    ));
                }
                let mut items =
                    split_list(new.get(&op.key).map(String::as_str).unwrap_or(def.default));
                let operand = split_list(op.value.as_deref().unwrap_or(""));
                if op.op == ConfigOpType::Append {
                    for item in operand {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    }
                } else {
                    items.retain(|i| !operand.contains(i));
                }
                let value = items.join(",");
                def.validate(&value)?;
                new.insert(op.key.clone(), value);
            }
        }
    }
    Ok(diff_records(
        target.resource_type,
        &resource.resource_name,
        old,
        &new,
    ))
}

/// AlterConfigs (legacy, non-incremental): the given configs replace all of the resource's overrides.
pub fn alter_configs(
    image: &MetadataImage,
    resources: &[AlterConfigsResource],
    validate_only: bool,
) -> ControllerResult<Vec<AlterConfigsOutcome>> {
    let dups = duplicate_resource_errors(
        resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut records = Vec::new();
    let mut outcomes = Vec::with_capacity(resources.len());
    for resource in resources {
        let result = if dups.contains(&(resource.resource_type, resource.resource_name.clone())) {
            Err(ApiError::new(
                code::INVALID_REQUEST,
                "Duplicate resource in request.",
            ))
        } else {
            legacy_one(image, resource)
        };
        let error = match result {
            Ok(new) => {
                records.extend(new);
                None
            }
            Err(e) => Some(e),
        };
        outcomes.push(AlterConfigsOutcome {
            resource_type: resource.resource_type,
            resource_name: resource.resource_name.clone(),
            error,
        });
    }
    if validate_only {
        records.clear();
    }
    ControllerResult {
        records,
        response: outcomes,
    }
}

fn legacy_one(
    image: &MetadataImage,
    resource: &AlterConfigsResource,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let target = alterable(image, resource.resource_type, &resource.resource_name)?;
    let mut new = BTreeMap::new();
    for (key, value) in &resource.configs {
        let def = target.def(key)?;
        let value = value.as_deref().ok_or_else(|| {
            ApiError::new(
                code::INVALID_CONFIG,
                format!("Null value not supported for configs: {key}"),
            )
        })?;
        def.validate(value)?;
        new.insert(key.clone(), value.to_string());
    }
    Ok(diff_records(
        target.resource_type,
        &resource.resource_name,
        target.overrides,
        &new,
    ))
}
