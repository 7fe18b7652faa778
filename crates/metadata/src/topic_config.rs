//! Topic-level configs: the keys Kafka has, their types, validation, Kafka defaults and broker synonyms,
//! and the DescribeConfigs view (value, source, synonyms) of a topic's configs.
//!
//! A topic stores only its overrides; a key without one takes the broker's value of its first synonym
//! (`retention.ms` <- `log.retention.ms`), which the broker supplies through [`BrokerLookup`].

use std::collections::BTreeMap;

use crate::error::{code, ApiError};

/// Kafka's `ConfigEntry.ConfigType` (DescribeConfigs v3+ `config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// Unknown type (code 0).
    Unknown,
    /// `true` / `false` (code 1).
    Boolean,
    /// A string (code 2).
    String,
    /// A 32-bit integer (code 3).
    Int,
    /// A 16-bit integer (code 4).
    Short,
    /// A 64-bit integer (code 5).
    Long,
    /// A double (code 6).
    Double,
    /// A comma-separated list (code 7).
    List,
    /// A class name (code 8).
    Class,
    /// A password (code 9).
    Password,
}

impl ConfigType {
    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            ConfigType::Unknown => 0,
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Short => 4,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
            ConfigType::Class => 8,
            ConfigType::Password => 9,
        }
    }
}

/// Kafka's `DescribeConfigsResponse.ConfigSource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Unknown (0).
    Unknown,
    /// A topic override (1, `DYNAMIC_TOPIC_CONFIG`).
    TopicConfig,
    /// A dynamic per-broker config (2).
    DynamicBrokerConfig,
    /// A dynamic cluster-wide default (3).
    DynamicDefaultBrokerConfig,
    /// Set in the broker's config file or command line (4).
    StaticBrokerConfig,
    /// Kafka's built-in default (5).
    DefaultConfig,
}

impl ConfigSource {
    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            ConfigSource::Unknown => 0,
            ConfigSource::TopicConfig => 1,
            ConfigSource::DynamicBrokerConfig => 2,
            ConfigSource::DynamicDefaultBrokerConfig => 3,
            ConfigSource::StaticBrokerConfig => 4,
            ConfigSource::DefaultConfig => 5,
        }
    }
}

/// How a value is checked beyond its type.
#[derive(Debug, Clone, Copy)]
enum Check {
    None,
    AtLeast(i64),
    Between(i64, i64),
    /// A level: -1 or within the range.
    LevelOrDefault(i64, i64),
    Ratio,
    OneOf(&'static [&'static str]),
    /// Empty, `*`, or a list of `partition:broker` pairs.
    ThrottledReplicas,
    /// A tiered-storage switch: only `false`, as Sluice has no remote storage.
    NoTieredStorage,
    ListOf(&'static [&'static str]),
}

/// One topic-level config key.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    /// The topic config key (`retention.ms`).
    pub name: &'static str,
    /// Its type.
    pub config_type: ConfigType,
    /// Kafka's default value.
    pub default: &'static str,
    /// Broker keys that set the default, most specific first (`log.retention.ms`, `log.retention.minutes`, ...).
    pub broker_synonyms: &'static [&'static str],
    /// One-line documentation (DescribeConfigs v3+).
    pub documentation: &'static str,
    check: Check,
}

const LONG_MAX: &str = "9223372036854775807";

macro_rules! def {
    ($name:expr, $ty:ident, $default:expr, [$($syn:expr),*], $check:expr, $doc:expr) => {
        TopicConfigDef {
            name: $name,
            config_type: ConfigType::$ty,
            default: $default,
            broker_synonyms: &[$($syn),*],
            documentation: $doc,
            check: $check,
        }
    };
}

const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

static DEFS: &[TopicConfigDef] = &[
    def!("cleanup.policy", List, "delete", ["log.cleanup.policy"], Check::ListOf(&["compact", "delete"]),
        "The retention policy for old log segments: delete, compact, or both."),
    def!("compression.gzip.level", Int, "-1", ["compression.gzip.level"], Check::LevelOrDefault(1, 9),
        "The compression level for gzip."),
    def!("compression.lz4.level", Int, "9", ["compression.lz4.level"], Check::Between(1, 17),
        "The compression level for lz4."),
    def!("compression.type", String, "producer", ["compression.type"], Check::OneOf(COMPRESSION_TYPES),
        "The final compression type for the topic; 'producer' retains the producer's codec."),
    def!("compression.zstd.level", Int, "3", ["compression.zstd.level"], Check::Between(-131072, 22),
        "The compression level for zstd."),
    def!("delete.retention.ms", Long, "86400000", ["log.cleaner.delete.retention.ms"], Check::AtLeast(0),
        "How long delete tombstones are retained in compacted topics."),
    def!("file.delete.delay.ms", Long, "60000", ["log.segment.delete.delay.ms"], Check::AtLeast(0),
        "How long to wait before deleting a file from the filesystem."),
    def!("flush.messages", Long, LONG_MAX, ["log.flush.interval.messages"], Check::AtLeast(1),
        "Force an fsync after this many messages are appended."),
    def!("flush.ms", Long, LONG_MAX, ["log.flush.interval.ms"], Check::AtLeast(0),
        "Force an fsync after this much time since the last one."),
    def!("follower.replication.throttled.replicas", List, "", [], Check::ThrottledReplicas,
        "Replicas whose log replication is throttled on the follower side: partition:broker pairs or *."),
    def!("index.interval.bytes", Int, "4096", ["log.index.interval.bytes"], Check::AtLeast(0),
        "How frequently an entry is added to the offset index."),
    def!("leader.replication.throttled.replicas", List, "", [], Check::ThrottledReplicas,
        "Replicas whose log replication is throttled on the leader side: partition:broker pairs or *."),
    def!("local.retention.bytes", Long, "-2", ["log.local.retention.bytes"], Check::AtLeast(-2),
        "The maximum size of local log segments before deletion (tiered storage); -2 means retention.bytes."),
    def!("local.retention.ms", Long, "-2", ["log.local.retention.ms"], Check::AtLeast(-2),
        "How long local log segments are retained (tiered storage); -2 means retention.ms."),
    def!("max.compaction.lag.ms", Long, LONG_MAX, ["log.cleaner.max.compaction.lag.ms"], Check::AtLeast(1),
        "The maximum time a message remains ineligible for compaction."),
    def!("max.message.bytes", Int, "1048588", ["message.max.bytes"], Check::AtLeast(0),
        "The largest record batch size allowed by the topic."),
    def!("message.timestamp.after.max.ms", Long, "3600000", ["log.message.timestamp.after.max.ms"],
        Check::AtLeast(0),
        "The maximum amount a message timestamp may be ahead of the broker's time (CreateTime)."),
    def!("message.timestamp.before.max.ms", Long, LONG_MAX, ["log.message.timestamp.before.max.ms"],
        Check::AtLeast(0),
        "The maximum amount a message timestamp may be behind the broker's time (CreateTime)."),
    def!("message.timestamp.type", String, "CreateTime", ["log.message.timestamp.type"],
        Check::OneOf(&["CreateTime", "LogAppendTime"]),
        "Whether message timestamps are the producer's CreateTime or the LogAppendTime."),
    def!("min.cleanable.dirty.ratio", Double, "0.5", ["log.cleaner.min.cleanable.ratio"], Check::Ratio,
        "The minimum ratio of dirty log to total log for a log to be eligible for cleaning."),
    def!("min.compaction.lag.ms", Long, "0", ["log.cleaner.min.compaction.lag.ms"], Check::AtLeast(0),
        "The minimum time a message remains uncompacted in the log."),
    def!("min.insync.replicas", Int, "1", ["min.insync.replicas"], Check::AtLeast(1),
        "The minimum number of in-sync replicas that must acknowledge a write with acks=all."),
    def!("preallocate", Boolean, "false", ["log.preallocate"], Check::None,
        "Whether to preallocate the file on disk when creating a new log segment."),
    def!("remote.log.copy.disable", Boolean, "false", [], Check::NoTieredStorage,
        "Stop copying log segments to remote storage (tiered storage)."),
    def!("remote.log.delete.on.disable", Boolean, "false", [], Check::NoTieredStorage,
        "Delete remote segments when tiered storage is disabled for the topic."),
    def!("remote.storage.enable", Boolean, "false", [], Check::NoTieredStorage,
        "Enable tiered storage for the topic (not supported by Sluice: only false is accepted)."),
    def!("retention.bytes", Long, "-1", ["log.retention.bytes"], Check::None,
        "The maximum size a partition can grow to before old segments are discarded; -1 means no limit."),
    def!("retention.ms", Long, "604800000", ["log.retention.ms", "log.retention.minutes", "log.retention.hours"],
        Check::AtLeast(-1),
        "The maximum time a log segment is retained before it is discarded; -1 means no limit."),
    // Kafka 4.0 raised the minimum from 14 bytes to 1 MiB (KIP-1030).
    def!("segment.bytes", Int, "1073741824", ["log.segment.bytes"], Check::AtLeast(1_048_576),
        "The segment file size for the log."),
    def!("segment.index.bytes", Int, "10485760", ["log.index.size.max.bytes"], Check::AtLeast(4),
        "The size of the index that maps offsets to file positions."),
    def!("segment.jitter.ms", Long, "0", ["log.roll.jitter.ms", "log.roll.jitter.hours"], Check::AtLeast(0),
        "The maximum random jitter subtracted from segment.ms."),
    def!("segment.ms", Long, "604800000", ["log.roll.ms", "log.roll.hours"], Check::AtLeast(1),
        "The period after which the log rolls a new segment even if it is not full."),
    def!("unclean.leader.election.enable", Boolean, "false", ["unclean.leader.election.enable"], Check::None,
        "Whether replicas not in the ISR may be elected leader as a last resort, at the risk of data loss."),
];

/// The broker configs Sluice changes at run time (IncrementalAlterConfigs / AlterConfigs on a BROKER resource,
/// for one broker id or, with an empty name, the cluster-wide default): Kafka's broker quota configs
/// (`QuotaConfig.brokerQuotaConfigs`) that throttle replication, in bytes per second. Every other broker key is
/// static (set in the config file); the same definition shape as a topic key serves them.
static DYNAMIC_BROKER_DEFS: &[TopicConfigDef] = &[
    def!("follower.replication.throttled.rate", Long, LONG_MAX, [], Check::AtLeast(0),
        "The rate (bytes/s) at which this broker's throttled follower replicas fetch \
         (follower.replication.throttled.replicas of each topic)."),
    def!("leader.replication.throttled.rate", Long, LONG_MAX, [], Check::AtLeast(0),
        "The rate (bytes/s) at which this broker's throttled leader replicas serve followers outside the ISR \
         (leader.replication.throttled.replicas of each topic)."),
    def!("replica.alter.log.dirs.io.max.bytes.per.second", Long, LONG_MAX, [], Check::AtLeast(0),
        "The rate (bytes/s) at which this broker copies replicas between its log directories \
         (AlterReplicaLogDirs), all moves together."),
];

/// The definition of a broker config key Sluice changes at run time.
pub fn lookup_dynamic_broker(name: &str) -> Option<&'static TopicConfigDef> {
    DYNAMIC_BROKER_DEFS.iter().find(|d| d.name == name)
}

/// Every broker config key Sluice changes at run time, sorted by name.
pub fn dynamic_broker() -> &'static [TopicConfigDef] {
    DYNAMIC_BROKER_DEFS
}

/// Whether the replica of `partition` on broker `broker_id` is listed in a `*.replication.throttled.replicas`
/// value (`*`, or `partition:broker` pairs).
pub fn is_throttled_replica(value: &str, partition: i32, broker_id: i32) -> bool {
    let value = value.trim();
    value == "*"
        || value.split(',').any(|pair| {
            pair.split_once(':').is_some_and(|(p, b)| {
                p.trim().parse::<i32>() == Ok(partition) && b.trim().parse::<i32>() == Ok(broker_id)
            })
        })
}

/// Every topic config key, sorted by name.
pub fn all() -> &'static [TopicConfigDef] {
    DEFS
}

/// The definition of a topic config key.
pub fn lookup(name: &str) -> Option<&'static TopicConfigDef> {
    DEFS.iter().find(|d| d.name == name)
}

fn invalid(value: &str, name: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        code::INVALID_CONFIG,
        format!("Invalid value {value} for configuration {name}: {why}"),
    )
}

impl TopicConfigDef {
    /// Checks a value for this key as Kafka's `ConfigDef` does; the error is `INVALID_CONFIG`.
    pub fn validate(&self, value: &str) -> Result<(), ApiError> {
        let trimmed = value.trim();
        let number = match self.config_type {
            ConfigType::Long => Some(
                trimmed
                    .parse::<i64>()
                    .map_err(|_| invalid(value, self.name, "Not a number of type LONG"))?,
            ),
            ConfigType::Int => {
                Some(i64::from(trimmed.parse::<i32>().map_err(|_| {
                    invalid(value, self.name, "Not a number of type INT")
                })?))
            }
            ConfigType::Boolean => {
                if !trimmed.eq_ignore_ascii_case("true") && !trimmed.eq_ignore_ascii_case("false") {
                    return Err(invalid(
                        value,
                        self.name,
                        "Expected value to be either true or false",
                    ));
                }
                None
            }
            ConfigType::Double => {
                let d = trimmed
                    .parse::<f64>()
                    .map_err(|_| invalid(value, self.name, "Not a number of type DOUBLE"))?;
                if let Check::Ratio = self.check {
                    if !(0.0..=1.0).contains(&d) {
                        return Err(invalid(
                            value,
                            self.name,
                            "Value must be no less than 0 and no more than 1",
                        ));
                    }
                }
                None
            }
            _ => None,
        };
        match (self.check, number) {
            (Check::AtLeast(min), Some(n)) if n < min => Err(invalid(
                value,
                self.name,
                format!("Value must be at least {min}"),
            )),
            (Check::Between(lo, hi), Some(n)) if n < lo || n > hi => Err(invalid(
                value,
                self.name,
                format!("Value must be no less than {lo} and no more than {hi}"),
            )),
            (Check::LevelOrDefault(lo, hi), Some(n)) if n != -1 && (n < lo || n > hi) => {
                Err(invalid(
                    value,
                    self.name,
                    format!("Value must be -1 or between {lo} and {hi}"),
                ))
            }
            (Check::OneOf(allowed), _) if !allowed.contains(&trimmed) => Err(invalid(
                value,
                self.name,
                format!("String must be one of: {}", allowed.join(", ")),
            )),
            (Check::ThrottledReplicas, _) => {
                let valid = trimmed.is_empty()
                    || trimmed == "*"
                    || trimmed.split(',').map(str::trim).all(|pair| {
                        pair.split_once(':').is_some_and(|(p, b)| {
                            p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                        })
                    });
                if valid {
                    Ok(())
                } else {
                    Err(invalid(
                        value,
                        self.name,
                        "must be the literal '*' or a list of replicas in the following format: \
                         [partitionId]:[brokerId],[partitionId]:[brokerId],...",
                    ))
                }
            }
            (Check::NoTieredStorage, _) if trimmed.eq_ignore_ascii_case("true") => Err(ApiError::new(
                code::INVALID_CONFIG,
                "Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote \
                 log storage.",
            )),
            (Check::ListOf(allowed), _) => {
                for item in trimmed.split(',').map(str::trim) {
                    if !allowed.contains(&item) {
                        return Err(invalid(
                            value,
                            self.name,
                            format!(
                                "Invalid value {item}; valid values are: [{}]",
                                allowed.join(", ")
                            ),
                        ));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Validates one topic config entry as the controller does for CreateTopics and AlterConfigs.
pub fn validate(name: &str, value: Option<&str>) -> Result<(), ApiError> {
    let def = lookup(name).ok_or_else(|| {
        ApiError::new(
            code::INVALID_CONFIG,
            format!("Unknown topic config name: {name}"),
        )
    })?;
    match value {
        Some(v) => def.validate(v),
        None => Err(ApiError::new(
            code::INVALID_CONFIG,
            format!("Null value not supported for topic configs: {name}"),
        )),
    }
}

/// A broker config value as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerValue {
    /// The value, as a string.
    pub value: String,
    /// True when the broker uses its built-in default (not set in the config file or command line).
    pub is_default: bool,
}

/// What topic-config descriptions need from the broker's configuration.
pub trait BrokerConfigView {
    /// The raw value of a broker key (`log.retention.hours`) and whether it was set explicitly.
    fn broker_value(&self, key: &str) -> Option<BrokerValue>;
    /// The broker-level default of a topic key in the topic key's units (`retention.ms` from
    /// `log.retention.hours`), if the broker defines one.
    fn topic_default(&self, topic_key: &str) -> Option<String>;
}

/// One synonym in a DescribeConfigs answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSynonym {
    /// The key (topic or broker).
    pub name: String,
    /// Its value.
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
}

/// One config of a resource as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedConfig {
    /// The key.
    pub name: String,
    /// The effective value.
    pub value: Option<String>,
    /// Where the effective value comes from.
    pub source: ConfigSource,
    /// Whether it cannot be altered.
    pub read_only: bool,
    /// Whether the value is secret (then `value` is `None`).
    pub sensitive: bool,
    /// Its type.
    pub config_type: ConfigType,
    /// Its documentation, if known.
    pub documentation: Option<String>,
    /// The synonyms in precedence order, the effective one first.
    pub synonyms: Vec<ConfigSynonym>,
}

/// The effective value of `def` for a topic with `overrides`, with its source and synonyms (Kafka lists the
/// topic override, then each broker synonym that has a value: set ones as STATIC_BROKER_CONFIG, defaults as
/// DEFAULT_CONFIG).
pub fn describe_one(
    def: &TopicConfigDef,
    overrides: &BTreeMap<String, String>,
    broker: &dyn BrokerConfigView,
) -> DescribedConfig {
    let mut synonyms = Vec::new();
    let topic_override = overrides.get(def.name);
    if let Some(v) = topic_override {
        synonyms.push(ConfigSynonym {
            name: def.name.into(),
            value: Some(v.clone()),
            source: ConfigSource::TopicConfig,
        });
    }
    let mut broker_set = false;
    for key in def.broker_synonyms {
        if let Some(bv) = broker.broker_value(key) {
            let source = if bv.is_default {
                ConfigSource::DefaultConfig
            } else {
                ConfigSource::StaticBrokerConfig
            };
            broker_set |= !bv.is_default;
            synonyms.push(ConfigSynonym {
                name: (*key).into(),
                value: Some(bv.value),
                source,
            });
        }
    }
    if def.broker_synonyms.is_empty() {
        synonyms.push(ConfigSynonym {
            name: def.name.into(),
            value: Some(def.default.into()),
            source: ConfigSource::DefaultConfig,
        });
    }
    let (value, source) = match topic_override {
        Some(v) => (v.clone(), ConfigSource::TopicConfig),
        None => {
            let value = broker.topic_default(def.name).unwrap_or_else(|| {
                // Without a unit conversion from the broker, only the primary synonym (same units) applies.
                def.broker_synonyms
                    .first()
                    .and_then(|k| broker.broker_value(k))
                    .map(|bv| bv.value)
                    .unwrap_or_else(|| def.default.to_string())
            });
            (
                value,
                if broker_set {
                    ConfigSource::StaticBrokerConfig
                } else {
                    ConfigSource::DefaultConfig
                },
            )
        }
    };
    DescribedConfig {
        name: def.name.into(),
        value: Some(value),
        source,
        read_only: false,
        sensitive: false,
        config_type: def.config_type,
        documentation: Some(def.documentation.into()),
        synonyms,
    }
}

/// Every topic config with its effective value for a topic with `overrides`, sorted by name.
pub fn describe_topic(
    overrides: &BTreeMap<String, String>,
    broker: &dyn BrokerConfigView,
) -> Vec<DescribedConfig> {
    DEFS.iter()
        .map(|def| describe_one(def, overrides, broker))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defs_are_sorted_and_defaults_are_valid() {
        for pair in DEFS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for def in DEFS {
            def.validate(def.default)
                .unwrap_or_else(|e| panic!("default of {} invalid: {e}", def.name));
        }
    }

    #[test]
    fn validation_follows_kafka_config_def() {
        assert!(validate("retention.ms", Some("-1")).is_ok());
        let err = validate("retention.ms", Some("-2")).unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        assert_eq!(
            err.message.as_deref(),
            Some("Invalid value -2 for configuration retention.ms: Value must be at least -1")
        );
        assert!(validate("retention.ms", Some("abc")).is_err());
        assert!(
            validate("segment.bytes", Some("99999999999")).is_err(),
            "INT overflow"
        );
        assert!(validate("cleanup.policy", Some("compact,delete")).is_ok());
        assert!(validate("cleanup.policy", Some("shred")).is_err());
        assert!(validate("message.timestamp.type", Some("LogAppendTime")).is_ok());
        assert!(validate("message.timestamp.type", Some("Whenever")).is_err());
        assert!(validate("unclean.leader.election.enable", Some("TRUE")).is_ok());
        assert!(validate("unclean.leader.election.enable", Some("yes")).is_err());
        assert!(validate("min.cleanable.dirty.ratio", Some("1.5")).is_err());
        assert!(validate("compression.gzip.level", Some("-1")).is_ok());
        assert!(validate("compression.gzip.level", Some("0")).is_err());
        assert!(
            validate("segment.bytes", Some("1048575")).is_err(),
            "Kafka 4.0 minimum"
        );
        assert!(validate("follower.replication.throttled.replicas", Some("0:1, 1:2")).is_ok());
        assert!(validate("leader.replication.throttled.replicas", Some("*")).is_ok());
        assert!(validate("leader.replication.throttled.replicas", Some("0-1")).is_err());
        assert!(validate("remote.storage.enable", Some("false")).is_ok());
        assert_eq!(
            validate("remote.storage.enable", Some("true"))
                .unwrap_err()
                .code,
            code::INVALID_CONFIG
        );
        assert_eq!(
            validate("no.such.key", Some("1")).unwrap_err().code,
            code::INVALID_CONFIG
        );
        assert_eq!(
            validate("retention.ms", None).unwrap_err().code,
            code::INVALID_CONFIG
        );
    }

    struct Broker;
    impl BrokerConfigView for Broker {
        fn broker_value(&self, key: &str) -> Option<BrokerValue> {
            match key {
                "log.retention.hours" => Some(BrokerValue {
                    value: "168".into(),
                    is_default: true,
                }),
                "log.segment.bytes" => Some(BrokerValue {
                    value: "1048576".into(),
                    is_default: false,
                }),
                _ => None,
            }
        }
        fn topic_default(&self, topic_key: &str) -> Option<String> {
            (topic_key == "retention.ms").then(|| "604800000".to_string())
        }
    }

    #[test]
    fn describe_reports_override_then_static_broker_then_default() {
        let overrides = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        let all = describe_topic(&overrides, &Broker);
        assert_eq!(all.len(), DEFS.len());
        let retention = all.iter().find(|c| c.name == "retention.ms").unwrap();
        assert_eq!(
            (retention.value.as_deref(), retention.source),
            (Some("1000"), ConfigSource::TopicConfig)
        );
        assert_eq!(retention.synonyms.len(), 2);
        assert_eq!(retention.synonyms[1].name, "log.retention.hours");
        assert_eq!(retention.synonyms[1].source, ConfigSource::DefaultConfig);
        let segment = all.iter().find(|c| c.name == "segment.bytes").unwrap();
        assert_eq!(
            (segment.value.as_deref(), segment.source),
            (Some("1048576"), ConfigSource::StaticBrokerConfig)
        );
        let flush = all.iter().find(|c| c.name == "flush.ms").unwrap();
        assert_eq!(
            (flush.value.as_deref(), flush.source),
            (Some(LONG_MAX), ConfigSource::DefaultConfig)
        );

        let all = describe_topic(&BTreeMap::new(), &Broker);
        let retention = all.iter().find(|c| c.name == "retention.ms").unwrap();
        assert_eq!(
            (retention.value.as_deref(), retention.source),
            (Some("604800000"), ConfigSource::DefaultConfig)
        );
    }
}
