//! Broker configuration: Kafka's `server.properties` keys, their defaults, parsing and validation.
//!
//! Every key the broker accepts is listed once in [`CONFIG_KEYS`] with its default and meaning; `sluice server
//! --help`, `docs/configuration.md` and DescribeConfigs(BROKER) are all derived from, or checked against, that
//! table. A key not in the table is an error that names the key, as in Kafka.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sluice_storage::{LogConfig, TimestampType};

/// One broker configuration key: its name, default and a one-line meaning.
#[derive(Clone, Copy, Debug)]
pub struct ConfigKey {
    /// Kafka's name for the key, e.g. `log.retention.hours`.
    pub name: &'static str,
    /// The default as Kafka spells it; `None` means "not set" (Kafka's `null`).
    pub default: Option<&'static str>,
    /// What the key does in Sluice.
    pub doc: &'static str,
}

const fn key(name: &'static str, default: Option<&'static str>, doc: &'static str) -> ConfigKey {
    ConfigKey { name, default, doc }
}

/// Every key `sluice server` accepts, in the order `--help` and the docs list them.
pub const CONFIG_KEYS: &[ConfigKey] = &[
    key("node.id", Some("0"), "Id of this node (controller and broker)."),
    key(
        "process.roles",
        Some("broker,controller"),
        "Roles of this process; only the combined single-node mode `broker,controller` is supported.",
    ),
    key(
        "listeners",
        Some("PLAINTEXT://127.0.0.1:9092"),
        "Comma-separated NAME://host:port to listen on; an empty host binds all interfaces, port 0 an ephemeral port.",
    ),
    key(
        "advertised.listeners",
        None,
        "Listeners returned to clients in Metadata; defaults to `listeners` (with the machine's host name for an empty host).",
    ),
    key(
        "listener.security.protocol.map",
        Some("PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"),
        "Listener name to security protocol; only PLAINTEXT is supported.",
    ),
    key(
        "controller.listener.names",
        Some("CONTROLLER"),
        "Listener names used by the controller quorum; such listeners are not served (single node: the quorum is local).",
    ),
    key(
        "inter.broker.listener.name",
        None,
        "Listener used between brokers; accepted for compatibility (single node).",
    ),
    key(
        "controller.quorum.voters",
        None,
        "Controller quorum voters; accepted for compatibility, the single node is its own quorum.",
    ),
    key(
        "controller.quorum.bootstrap.servers",
        None,
        "Controller quorum bootstrap servers; accepted for compatibility, the single node is its own quorum.",
    ),
    key(
        "cluster.id",
        None,
        "Cluster id for a new metadata log (Kafka sets it with `kafka-storage format`); generated when unset.",
    ),
    key("log.dirs", Some("./data"), "Comma-separated directories holding partition logs."),
    key("log.dir", None, "Single log directory, used when `log.dirs` is not set."),
    key(
        "metadata.log.dir",
        None,
        "Directory holding the `__cluster_metadata` log; defaults to the first of `log.dirs`.",
    ),
    key("num.partitions", Some("1"), "Default partition count of new topics."),
    key("default.replication.factor", Some("1"), "Default replication factor of new topics."),
    key(
        "auto.create.topics.enable",
        Some("true"),
        "Create a topic when Metadata asks for an unknown one and allows auto-creation.",
    ),
    key("log.retention.ms", None, "Delete segments older than this; -1 keeps forever. Overrides minutes and hours."),
    key("log.retention.minutes", None, "Retention in minutes; overrides `log.retention.hours`."),
    key("log.retention.hours", Some("168"), "Retention in hours (7 days)."),
    key("log.retention.bytes", Some("-1"), "Delete oldest segments while a partition exceeds this; -1 is unbounded."),
    key(
        "log.retention.check.interval.ms",
        Some("300000"),
        "How often retention runs over every log.",
    ),
    key("log.segment.bytes", Some("1073741824"), "Roll the active segment at this size."),
    key("log.roll.ms", None, "Roll the active segment after this time; overrides `log.roll.hours`."),
    key("log.roll.hours", Some("168"), "Roll the active segment after this many hours."),
    key("log.index.interval.bytes", Some("4096"), "Bytes between offset-index entries."),
    key("log.index.size.max.bytes", Some("10485760"), "Maximum offset/time index size; a full index rolls the segment."),
    key("log.segment.delete.delay.ms", Some("60000"), "Delay before a deleted segment's files are removed."),
    key(
        "log.flush.interval.messages",
        Some("9223372036854775807"),
        "Fsync a log after this many unflushed messages; 1 makes every acknowledged batch durable on disk. The default never forces.",
    ),
    key(
        "log.flush.interval.ms",
        None,
        "Fsync a log whose last flush is older than this; unset never forces (durability comes from replication).",
    ),
    key(
        "log.message.timestamp.type",
        Some("CreateTime"),
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker's clock.",
    ),
    key("message.max.bytes", Some("1048588"), "Largest record batch accepted (topic `max.message.bytes` default)."),
    key(
        "fetch.max.bytes",
        Some("57671680"),
        "Most bytes one Fetch response returns (a request's `max_bytes` is capped at it; KIP-541); at least 1024.",
    ),
    key("min.insync.replicas", Some("1"), "Minimum ISR size for acks=all produce requests."),
    key("socket.request.max.bytes", Some("104857600"), "Largest request frame accepted; larger frames close the connection."),
    key(
        "socket.send.buffer.bytes",
        Some("102400"),
        "Accepted for compatibility; Sluice leaves socket buffers to the OS.",
    ),
    key(
        "socket.receive.buffer.bytes",
        Some("102400"),
        "Accepted for compatibility; Sluice leaves socket buffers to the OS.",
    ),
    key(
        "num.network.threads",
        Some("3"),
        "Accepted for compatibility; Sluice runs one async runtime sized to the CPU count.",
    ),
    key(
        "num.io.threads",
        Some("8"),
        "Accepted for compatibility; Sluice runs one async runtime sized to the CPU count.",
    ),
    key(
        "num.recovery.threads.per.data.dir",
        Some("2"),
        "Accepted for compatibility; log recovery parallelism is chosen by the storage layer.",
    ),
    key(
        "connections.max.idle.ms",
        Some("600000"),
        "Close a connection with no request in flight after this much idle time.",
    ),
    key(
        "group.initial.rebalance.delay.ms",
        Some("3000"),
        "Delay of the first rebalance of a new consumer group.",
    ),
    key(
        "group.min.session.timeout.ms",
        Some("6000"),
        "Smallest session timeout a consumer may ask for in JoinGroup (smaller: INVALID_SESSION_TIMEOUT).",
    ),
    key(
        "group.max.session.timeout.ms",
        Some("1800000"),
        "Largest session timeout a consumer may ask for in JoinGroup (larger: INVALID_SESSION_TIMEOUT).",
    ),
    key(
        "group.max.size",
        Some("2147483647"),
        "Most members a consumer group may have (more: GROUP_MAX_SIZE_REACHED).",
    ),
    key(
        "offsets.retention.minutes",
        Some("10080"),
        "How long the committed offsets of an empty group are kept.",
    ),
    key(
        "offsets.retention.check.interval.ms",
        Some("600000"),
        "How often expired committed offsets are looked for.",
    ),
    key(
        "offset.metadata.max.bytes",
        Some("4096"),
        "Largest metadata string an OffsetCommit may attach to an offset (larger: OFFSET_METADATA_TOO_LARGE).",
    ),
    key(
        "offsets.topic.num.partitions",
        Some("50"),
        "Partitions of `__consumer_offsets`.",
    ),
    key(
        "offsets.topic.replication.factor",
        Some("1"),
        "Replication factor of `__consumer_offsets` (Kafka defaults to 3; a single node needs 1).",
    ),
    key(
        "transaction.state.log.num.partitions",
        Some("50"),
        "Partitions of `__transaction_state`.",
    ),
    key(
        "transaction.state.log.replication.factor",
        Some("1"),
        "Replication factor of `__transaction_state` (Kafka defaults to 3; a single node needs 1).",
    ),
    key(
        "transaction.state.log.min.isr",
        Some("1"),
        "min.insync.replicas of `__transaction_state`.",
    ),
    key(
        "share.coordinator.state.topic.replication.factor",
        Some("1"),
        "Accepted for compatibility (Kafka's stock file sets it); share groups (KIP-932) are not supported.",
    ),
    key(
        "share.coordinator.state.topic.min.isr",
        Some("1"),
        "Accepted for compatibility (Kafka's stock file sets it); share groups (KIP-932) are not supported.",
    ),
];

/// Looks a key up in [`CONFIG_KEYS`].
pub fn config_key(name: &str) -> Option<&'static ConfigKey> {
    CONFIG_KEYS.iter().find(|k| k.name == name)
}

/// Why a configuration was rejected; each variant names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The key is not one Sluice knows.
    #[error("unknown configuration key `{0}` (see `sluice server --help` for every key)")]
    UnknownKey(String),
    /// The value does not parse or is out of range.
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A line of a properties file is not `key=value`.
    #[error("{path}:{line}: expected `key=value`")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
    },
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A listener the broker accepts client connections on (`NAME://host:port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Listener name, e.g. `PLAINTEXT`.
    pub name: String,
    /// Host to bind; empty means every interface.
    pub host: String,
    /// Port to bind; 0 picks a free port.
    pub port: u16,
}

impl Listener {
    /// The `host:port` string to bind (`0.0.0.0` for an empty host).
    pub fn bind_address(&self) -> String {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            self.host.as_str()
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// One broker config as DescribeConfigs(BROKER) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Key name.
    pub name: String,
    /// Current value (`None` for Kafka's `null`).
    pub value: Option<String>,
    /// True when the value is the built-in default (not set in the file or overrides).
    pub is_default: bool,
    /// True for secrets (none yet).
    pub sensitive: bool,
    /// True when the value cannot be changed at run time (all broker keys for now).
    pub read_only: bool,
}

/// The broker's configuration: typed fields for what the code uses, plus the raw values that were set.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: i32,
    /// `listeners` minus the controller listeners.
    pub listeners: Vec<Listener>,
    /// Host returned to clients in Metadata.
    pub advertised_host: String,
    /// Port returned to clients in Metadata (resolved after binding when the listener port is 0).
    pub advertised_port: u16,
    /// `log.dirs` (or `log.dir`).
    pub log_dirs: Vec<PathBuf>,
    /// `metadata.log.dir`, defaulting to the first log dir.
    pub metadata_log_dir: PathBuf,
    /// `cluster.id`, if set.
    pub cluster_id: Option<String>,
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `message.max.bytes`.
    pub message_max_bytes: u64,
    /// `fetch.max.bytes`: the cap on a Fetch response's size (KIP-541).
    pub fetch_max_bytes: usize,
    /// `socket.request.max.bytes`.
    pub socket_request_max_bytes: usize,
    /// `connections.max.idle.ms`.
    pub connections_max_idle_ms: u64,
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor`.
    pub offsets_topic_replication_factor: i16,
    /// `transaction.state.log.num.partitions`.
    pub transaction_state_log_num_partitions: i32,
    /// `transaction.state.log.replication.factor`.
    pub transaction_state_log_replication_factor: i16,
    /// `transaction.state.log.min.isr`.
    pub transaction_state_log_min_isr: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i32,
    /// `group.max.size`.
    pub group_max_size: i32,
    /// `offsets.retention.minutes`.
    pub offsets_retention_minutes: i32,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: i32,
    /// `min.insync.replicas`.
    pub min_insync_replicas: i32,
    /// Effective retention (`log.retention.ms` > `.minutes` > `.hours`); -1 keeps forever.
    pub log_retention_ms: i64,
    /// `log.retention.bytes`.
    pub log_retention_bytes: i64,
    /// `log.retention.check.interval.ms`.
    pub log_retention_check_interval_ms: u64,
    /// `log.segment.bytes`.
    pub log_segment_bytes: u64,
    /// Effective roll time (`log.roll.ms` > `log.roll.hours`).
    pub log_roll_ms: i64,
    /// `log.index.interval.bytes`.
    pub log_index_interval_bytes: u64,
    /// `log.index.size.max.bytes`.
    pub log_index_size_max_bytes: u64,
    /// `log.segment.delete.delay.ms`.
    pub log_segment_delete_delay_ms: u64,
    /// `log.flush.interval.messages`; `None` for Kafka's default Long.MAX_VALUE.
    pub log_flush_interval_messages: Option<u64>,
    /// `log.flush.interval.ms`; `None` when unset.
    pub log_flush_interval_ms: Option<u64>,
    /// `log.message.timestamp.type`.
    pub log_message_timestamp_type: TimestampType,
    /// The keys that were set explicitly (file, then overrides), with their values.
    set: BTreeMap<String, String>,
}

impl Default for BrokerConfig {
    /// The embedded default: node 0, controller + broker, `127.0.0.1:9092`, data in `./data`.
    fn default() -> Self {
        match BrokerConfig::from_pairs(Vec::<(String, String)>::new()) {
            Ok(config) => config,
            // The defaults in CONFIG_KEYS are constants checked by a unit test; this arm is unreachable.
            Err(e) => panic!("built-in broker defaults are invalid: {e}"),
        }
    }
}

/// Parses Java `.properties` text (the `server.properties` format): `key=value`, `key: value` or `key value`
/// lines, `#`/`!` comments, backslash line continuations.
pub fn parse_properties(text: &str, path: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut pairs = Vec::new();
    let mut pending = String::new();
    let mut pending_line = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if pending.is_empty() {
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            pending_line = index + 1;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            continue;
        }
        pending.push_str(line);
        let logical = std::mem::take(&mut pending);
        let split_at = logical.find(['=', ':', ' ', '\t']);
        let (key, value) = match split_at {
            Some(at) => {
                let (k, rest) = logical.split_at(at);
                let rest = rest.trim_start();
                let rest = rest.strip_prefix(['=', ':']).unwrap_or(rest);
                (k.trim().to_string(), rest.trim().to_string())
            }
            None => (logical.trim().to_string(), String::new()),
        };
        if key.is_empty() {
            return Err(ConfigError::Syntax {
                path: path.to_string(),
                line: pending_line,
            });
        }
        pairs.push((key, value));
    }
    if !pending.is_empty() {
        return Err(ConfigError::Syntax {
            path: path.to_string(),
            line: pending_line,
        });
    }
    Ok(pairs)
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse::<T>()
        .map_err(|e| invalid(key, value, e.to_string()))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "expected true or false")),
    }
}

fn parse_timestamp_type(key: &str, value: &str) -> Result<TimestampType, ConfigError> {
    match value.trim() {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        _ => Err(invalid(key, value, "expected CreateTime or LogAppendTime")),
    }
}

/// Parses `NAME://host:port[,NAME://host:port...]`.
fn parse_listeners(key: &str, value: &str) -> Result<Vec<Listener>, ConfigError> {
    let mut listeners = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item
            .split_once("://")
            .ok_or_else(|| invalid(key, value, format!("`{item}` is not NAME://host:port")))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, value, format!("`{item}` has no port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(key, value, format!("bad port in `{item}`")))?;
        if name.is_empty() {
            return Err(invalid(
                key,
                value,
                format!("`{item}` has no listener name"),
            ));
        }
        if listeners.iter().any(|l: &Listener| l.name == name) {
            return Err(invalid(
                key,
                value,
                format!("listener name `{name}` appears twice"),
            ));
        }
        listeners.push(Listener {
            name: name.to_string(),
            host: host.to_string(),
            port,
        });
    }
    Ok(listeners)
}

fn parse_nonneg_i64(key: &str, value: &str) -> Result<i64, ConfigError> {
    let v: i64 = parse_num(key, value)?;
    if v < 0 {
        return Err(invalid(key, value, "must be >= 0"));
    }
    Ok(v)
}

/// The machine's host name, advertised when a listener binds every interface (as Kafka advertises the
/// canonical host name).
fn local_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl BrokerConfig {
    /// Builds a configuration from `key=value` pairs applied in order (later ones win). Unknown keys and invalid
    /// values are errors naming the key.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<BrokerConfig, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut set = BTreeMap::new();
        for (k, v) in pairs {
            let (k, v) = (k.into(), v.into());
            if config_key(&k).is_none() {
                return Err(ConfigError::UnknownKey(k));
            }
            set.insert(k, v);
        }
        Self::build(set)
    }

    /// Reads a `server.properties` file, then applies `overrides` (`KEY=VALUE` strings) on top.
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: &[String],
    ) -> Result<BrokerConfig, ConfigError> {
        let mut pairs = Vec::new();
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: shown.clone(),
                source,
            })?;
            pairs.extend(parse_properties(&text, &shown)?);
        }
        for item in overrides {
            let (k, v) = item.split_once('=').ok_or_else(|| ConfigError::Syntax {
                path: format!("--override {item}"),
                line: 1,
            })?;
            pairs.push((k.trim().to_string(), v.trim().to_string()));
        }
        Self::from_pairs(pairs)
    }

    fn build(set: BTreeMap<String, String>) -> Result<BrokerConfig, ConfigError> {
        // The effective string of a key: explicitly set, else its default.
        let get = |name: &str| -> Option<String> {
            set.get(name)
                .cloned()
                .or_else(|| config_key(name).and_then(|k| k.default.map(str::to_string)))
        };
        let req = |name: &str| -> String { get(name).unwrap_or_default() };

        let node_id: i32 = parse_num("node.id", &req("node.id"))?;
        if node_id < 0 {
            return Err(invalid("node.id", &req("node.id"), "must be >= 0"));
        }
        let roles = req("process.roles");
        let mut role_list: Vec<&str> = roles
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        role_list.sort_unstable();
        if role_list != ["broker", "controller"] {
            return Err(invalid(
                "process.roles",
                &roles,
                "only `broker,controller` (single node) is supported",
            ));
        }

        let protocol_map = req("listener.security.protocol.map");
        let mut protocols = BTreeMap::new();
        for item in protocol_map
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (name, protocol) = item.split_once(':').ok_or_else(|| {
                invalid(
                    "listener.security.protocol.map",
                    &protocol_map,
                    format!("`{item}` is not NAME:PROTOCOL"),
                )
            })?;
            protocols.insert(name.to_string(), protocol.to_string());
        }
        let controller_names: Vec<String> = req("controller.listener.names")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        // A listener's protocol is its map entry (a listener named PLAINTEXT needs none). Entries for listeners that
        // are not configured (Kafka's stock file maps SSL, SASL_SSL, ...) are allowed; a configured listener that
        // is not PLAINTEXT is not.
        let check_protocol = |key: &str, value: &str, l: &Listener| -> Result<(), ConfigError> {
            match protocols.get(&l.name).map(String::as_str) {
                Some("PLAINTEXT") => Ok(()),
                None if l.name == "PLAINTEXT" => Ok(()),
                None => Err(invalid(
                    key,
                    value,
                    format!(
                        "listener `{}` has no entry in listener.security.protocol.map",
                        l.name
                    ),
                )),
                Some(other) => Err(invalid(
                    key,
                    value,
                    format!(
                        "listener `{}` uses security protocol {other}; only PLAINTEXT is supported",
                        l.name
                    ),
                )),
            }
        };

        let listeners_value = req("listeners");
        let all_listeners = parse_listeners("listeners", &listeners_value)?;
        let mut listeners = Vec::new();
        for l in all_listeners {
            check_protocol("listeners", &listeners_value, &l)?;
            if !controller_names.contains(&l.name) {
                listeners.push(l);
            }
        }
        if listeners.is_empty() {
            return Err(invalid(
                "listeners",
                &listeners_value,
                "no client listener (every listener is a controller listener)",
            ));
        }
        let (advertised_host, advertised_port) = match set.get("advertised.listeners") {
            Some(value) => {
                let advertised = parse_listeners("advertised.listeners", value)?;
                let first = advertised
                    .iter()
                    .find(|a| a.name == listeners[0].name)
                    .or_else(|| advertised.first())
                    .ok_or_else(|| invalid("advertised.listeners", value, "empty"))?;
                check_protocol("advertised.listeners", value, first)?;
                if first.host.is_empty() || first.host == "0.0.0.0" || first.host == "::" {
                    return Err(invalid(
                        "advertised.listeners",
                        value,
                        "cannot advertise an unspecified address",
                    ));
                }
                (first.host.clone(), first.port)
            }
            None => {
                let l = &listeners[0];
                let host = if l.host.is_empty() || l.host == "0.0.0.0" || l.host == "::" {
                    local_host_name()
                } else {
                    l.host.clone()
                };
                (host, l.port)
            }
        };

        let dirs_value = set
            .get("log.dirs")
            .cloned()
            .or_else(|| set.get("log.dir").cloned())
            .unwrap_or_else(|| req("log.dirs"));
        let log_dirs: Vec<PathBuf> = dirs_value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if log_dirs.is_empty() {
            return Err(invalid(
                "log.dirs",
                &dirs_value,
                "at least one directory is required",
            ));
        }
        let metadata_log_dir = match get("metadata.log.dir") {
            Some(d) if !d.trim().is_empty() => PathBuf::from(d.trim()),
            _ => log_dirs[0].clone(),
        };

        let num_partitions: i32 = parse_num("num.partitions", &req("num.partitions"))?;
        if num_partitions < 1 {
            return Err(invalid(
                "num.partitions",
                &req("num.partitions"),
                "must be >= 1",
            ));
        }
        let default_replication_factor: i16 = parse_num(
            "default.replication.factor",
            &req("default.replication.factor"),
        )?;
        if default_replication_factor < 1 {
            return Err(invalid(
                "default.replication.factor",
                &req("default.replication.factor"),
                "must be >= 1",
            ));
        }

        let log_retention_ms = if let Some(v) = set.get("log.retention.ms") {
            parse_num::<i64>("log.retention.ms", v)?
        } else if let Some(v) = set.get("log.retention.minutes") {
            parse_num::<i64>("log.retention.minutes", v)?.saturating_mul(60_000)
        } else {
            parse_num::<i64>("log.retention.hours", &req("log.retention.hours"))?
                .saturating_mul(3_600_000)
        };
        let log_retention_ms = if log_retention_ms < 0 {
            -1
        } else {
            log_retention_ms
        };
        let log_roll_ms = if let Some(v) = set.get("log.roll.ms") {
            parse_nonneg_i64("log.roll.ms", v)?
        } else {
            parse_nonneg_i64("log.roll.hours", &req("log.roll.hours"))?.saturating_mul(3_600_000)
        };
        let log_roll_ms = if log_roll_ms == 0 { 1 } else { log_roll_ms };

        let flush_messages: i64 = parse_num(
            "log.flush.interval.messages",
            &req("log.flush.interval.messages"),
        )?;
        if flush_messages < 1 {
            return Err(invalid(
                "log.flush.interval.messages",
                &req("log.flush.interval.messages"),
                "must be >= 1",
            ));
        }
        let log_flush_interval_messages = if flush_messages == i64::MAX {
            None
        } else {
            Some(flush_messages as u64)
        };
        let log_flush_interval_ms = match set.get("log.flush.interval.ms") {
            Some(v) => {
                let ms = parse_nonneg_i64("log.flush.interval.ms", v)?;
                if ms == i64::MAX {
                    None
                } else {
                    Some(ms as u64)
                }
            }
            None => None,
        };

        let message_max_bytes: i64 = parse_num("message.max.bytes", &req("message.max.bytes"))?;
        if message_max_bytes < 0 {
            return Err(invalid(
                "message.max.bytes",
                &req("message.max.bytes"),
                "must be >= 0",
            ));
        }
        let fetch_max_bytes: i64 = parse_num("fetch.max.bytes", &req("fetch.max.bytes"))?;
        if !(1024..=i32::MAX as i64).contains(&fetch_max_bytes) {
            return Err(invalid(
                "fetch.max.bytes",
                &req("fetch.max.bytes"),
                "must be in 1024..=2147483647",
            ));
        }
        let socket_request_max_bytes: i64 =
            parse_num("socket.request.max.bytes", &req("socket.request.max.bytes"))?;
        if !(1..=i32::MAX as i64).contains(&socket_request_max_bytes) {
            return Err(invalid(
                "socket.request.max.bytes",
                &req("socket.request.max.bytes"),
                "must be in 1..=2147483647",
            ));
        }
        let log_segment_bytes: i64 = parse_num("log.segment.bytes", &req("log.segment.bytes"))?;
        if log_segment_bytes < 14 {
            return Err(invalid(
                "log.segment.bytes",
                &req("log.segment.bytes"),
                "must be >= 14",
            ));
        }
        let min_insync_replicas: i32 =
            parse_num("min.insync.replicas", &req("min.insync.replicas"))?;
        if min_insync_replicas < 1 {
            return Err(invalid(
                "min.insync.replicas",
                &req("min.insync.replicas"),
                "must be >= 1",
            ));
        }
        let connections_max_idle_ms =
            parse_nonneg_i64("connections.max.idle.ms", &req("connections.max.idle.ms"))? as u64;
        let retention_check = parse_nonneg_i64(
            "log.retention.check.interval.ms",
            &req("log.retention.check.interval.ms"),
        )?;
        if retention_check < 1 {
            return Err(invalid(
                "log.retention.check.interval.ms",
                &req("log.retention.check.interval.ms"),
                "must be >= 1",
            ));
        }

        // Keys accepted for compatibility still have to be well-formed.
        for name in ["socket.send.buffer.bytes", "socket.receive.buffer.bytes"] {
            parse_num::<i32>(name, &req(name))?;
        }
        for name in [
            "num.network.threads",
            "num.io.threads",
            "num.recovery.threads.per.data.dir",
        ] {
            let v: i32 = parse_num(name, &req(name))?;
            if v < 1 {
                return Err(invalid(name, &req(name), "must be >= 1"));
            }
        }
        if let Some(id) = set.get("cluster.id") {
            if id.trim().is_empty() {
                return Err(invalid("cluster.id", id, "must not be empty"));
            }
        }

        let positive_i32 = |name: &str| -> Result<i32, ConfigError> {
            let v: i32 = parse_num(name, &req(name))?;
            if v < 1 {
                return Err(invalid(name, &req(name), "must be >= 1"));
            }
            Ok(v)
        };
        let positive_i16 = |name: &str| -> Result<i16, ConfigError> {
            let v: i16 = parse_num(name, &req(name))?;
            if v < 1 {
                return Err(invalid(name, &req(name), "must be >= 1"));
            }
            Ok(v)
        };

        // Group settings with Kafka's types and ranges (GroupCoordinatorConfig): the session bounds, the initial
        // rebalance delay and the metadata cap are any INT there (no validator), the rest have floors.
        let group_min_session_timeout_ms: i32 = parse_num(
            "group.min.session.timeout.ms",
            &req("group.min.session.timeout.ms"),
        )?;
        let group_max_session_timeout_ms: i32 = parse_num(
            "group.max.session.timeout.ms",
            &req("group.max.session.timeout.ms"),
        )?;
        let offsets_retention_check_interval_ms: i64 = parse_num(
            "offsets.retention.check.interval.ms",
            &req("offsets.retention.check.interval.ms"),
        )?;
        if offsets_retention_check_interval_ms < 1 {
            return Err(invalid(
                "offsets.retention.check.interval.ms",
                &req("offsets.retention.check.interval.ms"),
                "must be >= 1",
            ));
        }
        let offset_metadata_max_bytes: i32 = parse_num(
            "offset.metadata.max.bytes",
            &req("offset.metadata.max.bytes"),
        )?;
        // A negative delay is no delay, as in Kafka.
        let group_initial_rebalance_delay_ms: i32 = parse_num(
            "group.initial.rebalance.delay.ms",
            &req("group.initial.rebalance.delay.ms"),
        )?;

        Ok(BrokerConfig {
            node_id,
            listeners,
            advertised_host,
            advertised_port,
            log_dirs,
            metadata_log_dir,
            cluster_id: set.get("cluster.id").map(|s| s.trim().to_string()),
            num_partitions,
            default_replication_factor,
            auto_create_topics_enable: parse_bool(
                "auto.create.topics.enable",
                &req("auto.create.topics.enable"),
            )?,
            message_max_bytes: message_max_bytes as u64,
            fetch_max_bytes: fetch_max_bytes as usize,
            socket_request_max_bytes: socket_request_max_bytes as usize,
            connections_max_idle_ms,
            offsets_topic_num_partitions: positive_i32("offsets.topic.num.partitions")?,
            offsets_topic_replication_factor: positive_i16("offsets.topic.replication.factor")?,
            transaction_state_log_num_partitions: positive_i32(
                "transaction.state.log.num.partitions",
            )?,
            transaction_state_log_replication_factor: positive_i16(
                "transaction.state.log.replication.factor",
            )?,
            transaction_state_log_min_isr: positive_i32("transaction.state.log.min.isr")?,
            group_initial_rebalance_delay_ms: group_initial_rebalance_delay_ms.max(0) as u64,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            group_max_size: positive_i32("group.max.size")?,
            offsets_retention_minutes: positive_i32("offsets.retention.minutes")?,
            offsets_retention_check_interval_ms,
            offset_metadata_max_bytes,
            min_insync_replicas,
            log_retention_ms,
            log_retention_bytes: parse_num("log.retention.bytes", &req("log.retention.bytes"))?,
            log_retention_check_interval_ms: retention_check as u64,
            log_segment_bytes: log_segment_bytes as u64,
            log_roll_ms,
            log_index_interval_bytes: parse_nonneg_i64(
                "log.index.interval.bytes",
                &req("log.index.interval.bytes"),
            )? as u64,
            log_index_size_max_bytes: parse_nonneg_i64(
                "log.index.size.max.bytes",
                &req("log.index.size.max.bytes"),
            )? as u64,
            log_segment_delete_delay_ms: parse_nonneg_i64(
                "log.segment.delete.delay.ms",
                &req("log.segment.delete.delay.ms"),
            )? as u64,
            log_flush_interval_messages,
            log_flush_interval_ms,
            log_message_timestamp_type: parse_timestamp_type(
                "log.message.timestamp.type",
                &req("log.message.timestamp.type"),
            )?,
            set,
        })
    }

    /// The value of a broker key as a string (`None` when unset with a `null` default or unknown), e.g.
    /// `value_of("log.retention.hours") == Some("168")`.
    pub fn value_of(&self, key: &str) -> Option<String> {
        self.set
            .get(key)
            .cloned()
            .or_else(|| config_key(key).and_then(|k| k.default.map(str::to_string)))
    }

    /// True when `key` was set in the file or an override (not a built-in default).
    pub fn is_set(&self, key: &str) -> bool {
        self.set.contains_key(key)
    }

    /// Every broker config key with its current value, for DescribeConfigs(BROKER).
    pub fn entries(&self) -> Vec<ConfigEntry> {
        CONFIG_KEYS
            .iter()
            .map(|k| ConfigEntry {
                name: k.name.to_string(),
                value: self.value_of(k.name),
                is_default: !self.set.contains_key(k.name),
                sensitive: false,
                read_only: true,
            })
            .collect()
    }

    /// The broker-level default of a topic config key (e.g. `retention.ms` -> the effective `log.retention.*`),
    /// as DescribeConfigs reports for a topic without an override. `None` for keys the broker does not default.
    pub fn topic_config_default(&self, topic_key: &str) -> Option<String> {
        let value = match topic_key {
            "retention.ms" => self.log_retention_ms.to_string(),
            "retention.bytes" => self.log_retention_bytes.to_string(),
            "segment.bytes" => self.log_segment_bytes.to_string(),
            "segment.ms" => self.log_roll_ms.to_string(),
            "segment.index.bytes" => self.log_index_size_max_bytes.to_string(),
            "index.interval.bytes" => self.log_index_interval_bytes.to_string(),
            "file.delete.delay.ms" => self.log_segment_delete_delay_ms.to_string(),
            "max.message.bytes" => self.message_max_bytes.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "message.timestamp.type" => match self.log_message_timestamp_type {
                TimestampType::CreateTime => "CreateTime".to_string(),
                TimestampType::LogAppendTime => "LogAppendTime".to_string(),
            },
            "flush.messages" => self
                .log_flush_interval_messages
                .map_or(i64::MAX.to_string(), |v| v.to_string()),
            "flush.ms" => self
                .log_flush_interval_ms
                .map_or(i64::MAX.to_string(), |v| v.to_string()),
            "cleanup.policy" => "delete".to_string(),
            _ => return None,
        };
        Some(value)
    }

    /// The storage [`LogConfig`] for a topic: broker defaults overlaid with the topic's config overrides. Overrides
    /// that do not parse are ignored with a warning (the controller validates them before they are committed).
    pub fn log_config(&self, topic_overrides: &BTreeMap<String, String>) -> LogConfig {
        let mut config = LogConfig {
            segment_bytes: self.log_segment_bytes,
            segment_ms: self.log_roll_ms,
            segment_index_bytes: self.log_index_size_max_bytes,
            index_interval_bytes: self.log_index_interval_bytes,
            max_message_bytes: self.message_max_bytes,
            retention_ms: self.log_retention_ms,
            retention_bytes: self.log_retention_bytes,
            flush_messages: self.log_flush_interval_messages,
            flush_ms: self.log_flush_interval_ms,
            timestamp_type: self.log_message_timestamp_type,
            file_delete_delay_ms: self.log_segment_delete_delay_ms,
        };
        for (key, value) in topic_overrides {
            if let Err(reason) = apply_topic_override(&mut config, key, value) {
                tracing::warn!(key = %key, value = %value, %reason, "ignoring invalid topic config override");
            }
        }
        config
    }

    /// The `min.insync.replicas` in force for a topic with these overrides.
    pub fn min_insync_replicas_for(&self, topic_overrides: &BTreeMap<String, String>) -> i32 {
        topic_overrides
            .get("min.insync.replicas")
            .and_then(|v| v.trim().parse::<i32>().ok())
            .filter(|v| *v >= 1)
            .unwrap_or(self.min_insync_replicas)
    }
}

/// Applies one topic-level override to a [`LogConfig`]; unknown keys (e.g. `cleanup.policy`) leave it unchanged.
fn apply_topic_override(config: &mut LogConfig, key: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    let as_u64 = || v.parse::<u64>().map_err(|e| e.to_string());
    let as_i64 = || v.parse::<i64>().map_err(|e| e.to_string());
    // Kafka's "never" for flush.* is Long.MAX_VALUE.
    let as_flush = || -> Result<Option<u64>, String> {
        let n = v.parse::<i64>().map_err(|e| e.to_string())?;
        if n < 0 {
            return Err("must be >= 0".to_string());
        }
        Ok(if n == i64::MAX { None } else { Some(n as u64) })
    };
    match key {
        "segment.bytes" => config.segment_bytes = as_u64()?,
        "segment.ms" => config.segment_ms = as_i64()?,
        "segment.index.bytes" => config.segment_index_bytes = as_u64()?,
        "index.interval.bytes" => config.index_interval_bytes = as_u64()?,
        "max.message.bytes" => config.max_message_bytes = as_u64()?,
        "retention.ms" => config.retention_ms = as_i64()?.max(-1),
        "retention.bytes" => config.retention_bytes = as_i64()?,
        "flush.messages" => config.flush_messages = as_flush()?,
        "flush.ms" => config.flush_ms = as_flush()?,
        "file.delete.delay.ms" => config.file_delete_delay_ms = as_u64()?,
        "message.timestamp.type" => {
            config.timestamp_type = match v {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => return Err("expected CreateTime or LogAppendTime".to_string()),
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_single_node() {
        let c = BrokerConfig::default();
        assert_eq!(c.node_id, 0);
        assert_eq!(
            c.listeners,
            vec![Listener {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092
            }]
        );
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("127.0.0.1", 9092)
        );
        assert_eq!(c.log_dirs, vec![PathBuf::from("./data")]);
        assert_eq!(c.metadata_log_dir, PathBuf::from("./data"));
        assert_eq!(c.log_retention_ms, 168 * 3_600_000);
        assert_eq!(c.socket_request_max_bytes, 104_857_600);
        assert_eq!(c.message_max_bytes, 1_048_588);
        assert_eq!(c.log_flush_interval_messages, None);
        assert!(c.auto_create_topics_enable);
        // The storage defaults and the broker defaults agree (Kafka's).
        assert_eq!(c.log_config(&BTreeMap::new()), LogConfig::default());
    }

    #[test]
    fn fetch_max_bytes_is_a_known_key_with_kafkas_default_and_bounds() {
        assert_eq!(BrokerConfig::default().fetch_max_bytes, 57_671_680);
        let c = BrokerConfig::from_pairs([("fetch.max.bytes", "2048")]).unwrap();
        assert_eq!(c.fetch_max_bytes, 2048);
        assert_eq!(c.value_of("fetch.max.bytes").as_deref(), Some("2048"));
        for bad in ["1023", "-1", "lots", "2147483648"] {
            let e = BrokerConfig::from_pairs([("fetch.max.bytes", bad)]).unwrap_err();
            assert!(e.to_string().contains("fetch.max.bytes"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = BrokerConfig::from_pairs([("log.retention.hourz", "1")]).unwrap_err();
        assert!(err.to_string().contains("log.retention.hourz"), "{err}");
    }

    #[test]
    fn invalid_value_names_key() {
        let err = BrokerConfig::from_pairs([("num.partitions", "zero")]).unwrap_err();
        assert!(err.to_string().contains("num.partitions"), "{err}");
        let err = BrokerConfig::from_pairs([("listeners", "127.0.0.1:9092")]).unwrap_err();
        assert!(err.to_string().contains("listeners"), "{err}");
    }

    #[test]
    fn only_plaintext_listeners_are_served() {
        let err = BrokerConfig::from_pairs([
            ("listeners", "SSL://127.0.0.1:9093"),
            ("listener.security.protocol.map", "SSL:SSL"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("only PLAINTEXT"), "{err}");
        let err = BrokerConfig::from_pairs([("listeners", "CLIENT://127.0.0.1:9093")]).unwrap_err();
        assert!(
            err.to_string().contains("listener.security.protocol.map"),
            "{err}"
        );
        let c = BrokerConfig::from_pairs([
            ("listeners", "CLIENT://127.0.0.1:9093"),
            ("listener.security.protocol.map", "CLIENT:PLAINTEXT"),
        ])
        .unwrap();
        assert_eq!(c.listeners[0].name, "CLIENT");
    }

    #[test]
    fn retention_precedence_ms_over_minutes_over_hours() {
        let c = BrokerConfig::from_pairs([
            ("log.retention.hours", "1"),
            ("log.retention.minutes", "2"),
        ])
        .unwrap();
        assert_eq!(c.log_retention_ms, 120_000);
        let c =
            BrokerConfig::from_pairs([("log.retention.minutes", "2"), ("log.retention.ms", "5")])
                .unwrap();
        assert_eq!(c.log_retention_ms, 5);
        let c = BrokerConfig::from_pairs([("log.retention.ms", "-1")]).unwrap();
        assert_eq!(c.log_retention_ms, -1);
    }

    #[test]
    fn stock_kraft_server_properties_parse() {
        let text = "\
# comment
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=localhost:9093
listeners=PLAINTEXT://:9092,CONTROLLER://:9093
inter.broker.listener.name=PLAINTEXT
advertised.listeners=PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.dirs=/tmp/kraft-combined-logs
num.partitions=1
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.state.log.min.isr=1
log.retention.hours=168
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
";
        let pairs = parse_properties(text, "server.properties").unwrap();
        let c = BrokerConfig::from_pairs(pairs).unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(
            c.listeners,
            vec![Listener {
                name: "PLAINTEXT".into(),
                host: String::new(),
                port: 9092
            }]
        );
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("localhost", 9092)
        );
        assert_eq!(c.log_dirs, vec![PathBuf::from("/tmp/kraft-combined-logs")]);
    }

    #[test]
    fn properties_syntax_variants() {
        let pairs =
            parse_properties("a=1\nb: 2\nc 3\nd = x\\\n  y\n! bang comment\n", "f").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string()),
                ("c".to_string(), "3".to_string()),
                ("d".to_string(), "xy".to_string()),
            ]
        );
    }

    #[test]
    fn topic_overrides_overlay_broker_defaults() {
        let c = BrokerConfig::from_pairs([
            ("log.segment.bytes", "1000"),
            ("log.flush.interval.messages", "1"),
        ])
        .unwrap();
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "1234".to_string());
        overrides.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        overrides.insert("cleanup.policy".to_string(), "compact".to_string());
        let lc = c.log_config(&overrides);
        assert_eq!(lc.segment_bytes, 1000);
        assert_eq!(lc.retention_ms, 1234);
        assert_eq!(lc.flush_messages, Some(1));
        assert_eq!(lc.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(
            c.topic_config_default("segment.bytes").as_deref(),
            Some("1000")
        );
    }

    #[test]
    fn configuration_doc_lists_every_key_with_its_default() {
        let doc = include_str!("../../../docs/configuration.md");
        for key in CONFIG_KEYS {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", key.name)))
                .unwrap_or_else(|| panic!("docs/configuration.md has no row for {}", key.name));
            if let Some(default) = key.default {
                assert!(
                    row.contains(&format!("`{default}`")),
                    "{}: default {default} not documented",
                    key.name
                );
            }
        }
    }

    #[test]
    fn entries_cover_every_key_and_mark_defaults() {
        let c = BrokerConfig::from_pairs([("num.partitions", "3")]).unwrap();
        let entries = c.entries();
        assert_eq!(entries.len(), CONFIG_KEYS.len());
        let np = entries.iter().find(|e| e.name == "num.partitions").unwrap();
        assert_eq!((np.value.as_deref(), np.is_default), (Some("3"), false));
        let rh = entries
            .iter()
            .find(|e| e.name == "log.retention.hours")
            .unwrap();
        assert_eq!((rh.value.as_deref(), rh.is_default), (Some("168"), true));
        assert_eq!(c.value_of("log.retention.ms"), None);
    }

    #[test]
    fn group_keys_have_kafkas_defaults() {
        let c = BrokerConfig::default();
        assert_eq!(c.group_min_session_timeout_ms, 6000);
        assert_eq!(c.group_max_session_timeout_ms, 1_800_000);
        assert_eq!(c.group_max_size, i32::MAX);
        assert_eq!(c.offsets_retention_minutes, 10080);
        assert_eq!(c.offsets_retention_check_interval_ms, 600_000);
        assert_eq!(c.offset_metadata_max_bytes, 4096);
        assert_eq!(c.group_initial_rebalance_delay_ms, 3000);
        assert_eq!(c.offsets_topic_num_partitions, 50);
        for name in [
            "group.min.session.timeout.ms",
            "group.max.session.timeout.ms",
            "group.max.size",
            "offsets.retention.minutes",
            "offsets.retention.check.interval.ms",
            "offset.metadata.max.bytes",
        ] {
            assert!(config_key(name).is_some(), "{name} is a known key");
            let entry = c.entries().into_iter().find(|e| e.name == name).unwrap();
            assert!(entry.is_default && entry.value.is_some(), "{name}");
        }
    }

    #[test]
    fn group_keys_take_overrides() {
        let c = BrokerConfig::from_pairs([
            ("group.min.session.timeout.ms", "1000"),
            ("group.max.session.timeout.ms", "10000"),
            ("group.max.size", "5"),
            ("offsets.retention.minutes", "60"),
            ("offsets.retention.check.interval.ms", "1000"),
            ("offset.metadata.max.bytes", "0"),
            ("group.initial.rebalance.delay.ms", "0"),
            ("offsets.topic.num.partitions", "3"),
        ])
        .unwrap();
        assert_eq!(c.group_min_session_timeout_ms, 1000);
        assert_eq!(c.group_max_session_timeout_ms, 10000);
        assert_eq!(c.group_max_size, 5);
        assert_eq!(c.offsets_retention_minutes, 60);
        assert_eq!(c.offsets_retention_check_interval_ms, 1000);
        assert_eq!(c.offset_metadata_max_bytes, 0);
        assert_eq!(c.group_initial_rebalance_delay_ms, 0);
        assert_eq!(c.offsets_topic_num_partitions, 3);
        assert_eq!(c.value_of("group.max.size").as_deref(), Some("5"));
        assert!(c.is_set("group.max.session.timeout.ms"));
    }

    #[test]
    fn group_keys_reject_bad_values_naming_the_key() {
        for (name, value) in [
            ("group.min.session.timeout.ms", "abc"),
            ("group.max.session.timeout.ms", "2147483648"),
            ("group.max.size", "0"),
            ("offsets.retention.minutes", "0"),
            ("offsets.retention.check.interval.ms", "0"),
            ("offset.metadata.max.bytes", "4096.5"),
            ("group.initial.rebalance.delay.ms", "3s"),
            ("offsets.topic.num.partitions", "0"),
        ] {
            let err = BrokerConfig::from_pairs([(name, value)]).unwrap_err();
            match &err {
                ConfigError::InvalidValue { key, .. } => assert_eq!(key, name, "{name}={value}"),
                other => panic!("{name}={value}: {other}"),
            }
        }
        // Kafka has no range on these INTs (crossed session bounds just reject every JoinGroup); a negative
        // initial delay is no delay.
        let c = BrokerConfig::from_pairs([
            ("group.min.session.timeout.ms", "7000"),
            ("group.max.session.timeout.ms", "5000"),
            ("offset.metadata.max.bytes", "-1"),
            ("group.initial.rebalance.delay.ms", "-1"),
        ])
        .unwrap();
        assert_eq!(c.group_max_session_timeout_ms, 5000);
        assert_eq!(c.offset_metadata_max_bytes, -1);
        assert_eq!(c.group_initial_rebalance_delay_ms, 0);
    }
}
