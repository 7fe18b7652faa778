//! Broker configuration: Kafka's `server.properties` keys, their defaults, parsing and validation.
//!
//! Every key the broker accepts is listed once in [`CONFIG_KEYS`] with its default and meaning; `sluice server
//! --help`, `docs/configuration.md` and DescribeConfigs(BROKER) are all derived from, or checked against, that
//! table. A key not in the table is an error that names the key, as in Kafka.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sluice_storage::log::CleanOptions;
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
    key(
        "node.id",
        Some("0"),
        "Id of this node (as a controller and as a broker); unique in the cluster.",
    ),
    key(
        "process.roles",
        Some("broker,controller"),
        "Roles of this process: `broker`, `controller`, or both (any order). Both roles with no `controller.quorum.voters` and no `controller.quorum.bootstrap.servers` is the embedded single node (a local quorum).",
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
        "Names of the listeners the controller quorum uses; a controller serves them, a broker reaches the quorum through the first one. A broker-only node must not list them in `listeners`.",
    ),
    key(
        "inter.broker.listener.name",
        None,
        "Listener brokers use between themselves (replication); must name a non-controller listener. Defaults to the first non-controller listener.",
    ),
    key(
        "controller.quorum.voters",
        None,
        "Static controller quorum: comma-separated `{id}@{host}:{port}` entries. A controller's `node.id` must be one of them.",
    ),
    key(
        "controller.quorum.bootstrap.servers",
        None,
        "Comma-separated `{host}:{port}` of controllers to discover the quorum from. Accepted beside `controller.quorum.voters`; alone (a dynamic quorum, KIP-853) it is refused at start-up: Sluice's voter set is static.",
    ),
    key(
        "controller.quorum.election.timeout.ms",
        Some("1000"),
        "Longest a voter waits without hearing from the leader before starting an election.",
    ),
    key(
        "controller.quorum.fetch.timeout.ms",
        Some("2000"),
        "Longest a voter goes without a successful fetch from the leader before becoming a candidate; a leader that hears from no majority for this long resigns.",
    ),
    key(
        "controller.quorum.election.backoff.max.ms",
        Some("1000"),
        "Upper bound of the exponential backoff before a new election (avoids split votes).",
    ),
    key(
        "controller.quorum.request.timeout.ms",
        Some("2000"),
        "Timeout of a request between quorum members.",
    ),
    key(
        "broker.session.timeout.ms",
        Some("9000"),
        "A broker that has not heartbeated to the controller for this long is fenced.",
    ),
    key(
        "broker.heartbeat.interval.ms",
        Some("2000"),
        "Interval between a broker's heartbeats to the controller.",
    ),
    key(
        "broker.rack",
        None,
        "Rack of this broker, used to spread a partition's replicas over racks.",
    ),
    key(
        "replica.selector.class",
        None,
        "How a leader picks the replica a consumer should fetch from (KIP-392): `org.apache.kafka.common.replica.RackAwareReplicaSelector` (a replica in the consumer's `client.rack`) or `org.apache.kafka.common.replica.LeaderSelector`. Unset: the leader.",
    ),
    key(
        "metadata.log.segment.bytes",
        Some("1073741824"),
        "Largest metadata log segment; at least 8388608 (8 MiB), as in Kafka.",
    ),
    key(
        "metadata.log.segment.ms",
        Some("604800000"),
        "Roll the metadata log segment after this time.",
    ),
    key(
        "metadata.max.retention.bytes",
        Some("104857600"),
        "Soft limit on the metadata log plus snapshots; older segments and snapshots covered by a newer snapshot are deleted beyond it. -1 is unbounded.",
    ),
    key(
        "metadata.max.retention.ms",
        Some("604800000"),
        "Delete metadata log segments and snapshots older than this once a newer snapshot covers them. -1 keeps forever.",
    ),
    key(
        "metadata.log.max.record.bytes.between.snapshots",
        Some("20971520"),
        "Take a metadata snapshot after this many bytes of records since the last one. At least 1.",
    ),
    key(
        "metadata.log.max.snapshot.interval.ms",
        Some("3600000"),
        "Take a metadata snapshot when records not in the latest snapshot are older than this; 0 disables time-based snapshots.",
    ),
    key(
        "replica.high.watermark.checkpoint.interval.ms",
        Some("5000"),
        "How often each log dir's high watermarks are written to `replication-offset-checkpoint`.",
    ),
    key(
        "replica.lag.time.max.ms",
        Some("30000"),
        "A follower that has not caught up with its leader for this long leaves the ISR (AlterPartition); one that reaches the high watermark rejoins it.",
    ),
    key(
        "controlled.shutdown.enable",
        Some("true"),
        "On shutdown, ask the controller to move leadership away before stopping (a broker in a cluster).",
    ),
    key(
        "unclean.leader.election.enable",
        Some("false"),
        "Let a replica outside the ISR lead when no in-sync replica can (acknowledged records may be lost); the default for topics without their own `unclean.leader.election.enable`. Read by the active controller.",
    ),
    key(
        "auto.leader.rebalance.enable",
        Some("true"),
        "The active controller moves leadership back to preferred replicas every `leader.imbalance.check.interval.seconds` when a broker's leader imbalance is above `leader.imbalance.per.broker.percentage`.",
    ),
    key(
        "leader.imbalance.check.interval.seconds",
        Some("300"),
        "How often the active controller checks leader imbalance (and elects leaders for offline partitions of topics that allow unclean elections). At least 1.",
    ),
    key(
        "leader.imbalance.per.broker.percentage",
        Some("10"),
        "Share (percent) of a broker's preferred partitions led by others above which the controller moves them back; 0 moves every one.",
    ),
    key(
        "cluster.id",
        None,
        "Cluster id this node expects: the embedded single node formats its directories with it (a random one when unset); on a cluster node it must equal the id given to `sluice storage format`.",
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
    key(
        "log.cleanup.policy",
        Some("delete"),
        "Default `cleanup.policy` of topics: comma-separated `delete` (retention by time and size) and/or `compact` (the log cleaner keeps the latest record of every key; a log without `delete` is never cut by retention).",
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
    key(
        "log.cleaner.enable",
        Some("true"),
        "Run the log cleaner, which compacts the logs whose `cleanup.policy` holds `compact` (`__consumer_offsets` among them). False leaves them growing.",
    ),
    key(
        "log.cleaner.threads",
        Some("1"),
        "Cleaner tasks; each cleans one log at a time, the one that needs it most. 0 runs none. Integer >= 0.",
    ),
    key(
        "log.cleaner.dedupe.buffer.size",
        Some("134217728"),
        "Memory of the cleaners' key maps, shared evenly by the threads (24 bytes per key, as Kafka); a pass whose map fills cleans up to the last offset it holds. More than 1 MiB per thread.",
    ),
    key(
        "log.cleaner.io.max.bytes.per.second",
        Some("1.7976931348623157E308"),
        "Bytes the cleaners read and write per second, shared evenly by the threads. The default (Double.MAX_VALUE) is unbounded. > 0.",
    ),
    key(
        "log.cleaner.backoff.ms",
        Some("15000"),
        "How long a cleaner sleeps when no log needs cleaning.",
    ),
    key(
        "log.cleaner.min.cleanable.ratio",
        Some("0.5"),
        "Default `min.cleanable.dirty.ratio`: a compacted log is cleaned once its dirty part (written since its last cleaning) is at least this share of it. 0 to 1.",
    ),
    key(
        "log.cleaner.delete.retention.ms",
        Some("86400000"),
        "Default `delete.retention.ms`: how long a tombstone (a record with a null value) stays readable once the cleaner has cleaned the segment holding it, so consumers see the delete.",
    ),
    key(
        "log.cleaner.min.compaction.lag.ms",
        Some("0"),
        "Default `min.compaction.lag.ms`: records younger than this are not compacted.",
    ),
    key(
        "log.cleaner.max.compaction.lag.ms",
        Some("9223372036854775807"),
        "Default `max.compaction.lag.ms`: a log holding a record left uncompacted for longer is cleaned whatever its dirty ratio. At least 1.",
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
        Some("3"),
        "Replication factor of `__consumer_offsets`, capped at the live brokers when the topic is first created (a single node gets 1).",
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
        "transaction.max.timeout.ms",
        Some("900000"),
        "Largest transaction.timeout.ms a transactional producer may ask for (larger: INVALID_TRANSACTION_TIMEOUT).",
    ),
    key(
        "transactional.id.expiration.ms",
        Some("604800000"),
        "A transactional id with no transaction for this long is forgotten.",
    ),
    key(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        Some("10000"),
        "How often transactions past their timeout are looked for (and aborted).",
    ),
    key(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        Some("3600000"),
        "How often expired transactional ids are looked for.",
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

/// `process.roles`: which of the two KRaft roles this process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serves clients and hosts partition replicas.
    pub broker: bool,
    /// Is a member of the controller quorum (a voter when `controller.quorum.voters` lists it).
    pub controller: bool,
}

impl Roles {
    /// Both roles in one process (Kafka's combined mode).
    pub const COMBINED: Roles = Roles {
        broker: true,
        controller: true,
    };

    /// True when both roles are set.
    pub fn is_combined(&self) -> bool {
        self.broker && self.controller
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.broker, self.controller) {
            (true, true) => f.write_str("broker,controller"),
            (true, false) => f.write_str("broker"),
            (false, true) => f.write_str("controller"),
            (false, false) => f.write_str(""),
        }
    }
}

/// One entry of `controller.quorum.voters` (`{id}@{host}:{port}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumVoter {
    /// The voter's `node.id`.
    pub id: i32,
    /// Host of the voter's controller listener.
    pub host: String,
    /// Port of the voter's controller listener.
    pub port: u16,
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
    /// `listeners` minus the controller listeners: what clients (and other brokers) connect to.
    pub listeners: Vec<Listener>,
    /// `process.roles`.
    pub roles: Roles,
    /// `controller.listener.names`, in order (a broker reaches the quorum through the first).
    pub controller_listener_names: Vec<String>,
    /// The entries of `listeners` named in `controller.listener.names`: served by a node with the controller
    /// role (empty on a broker-only node).
    pub controller_listeners: Vec<Listener>,
    /// `controller.quorum.voters` (empty when unset).
    pub quorum_voters: Vec<QuorumVoter>,
    /// `controller.quorum.bootstrap.servers` as `(host, port)` (empty when unset).
    pub quorum_bootstrap_servers: Vec<(String, u16)>,
    /// `inter.broker.listener.name`, defaulting to the first non-controller listener (empty on a
    /// controller-only node).
    pub inter_broker_listener: String,
    /// `controller.quorum.election.timeout.ms`.
    pub quorum_election_timeout_ms: u64,
    /// `controller.quorum.fetch.timeout.ms`.
    pub quorum_fetch_timeout_ms: u64,
    /// `controller.quorum.election.backoff.max.ms`.
    pub quorum_election_backoff_max_ms: u64,
    /// `controller.quorum.request.timeout.ms`.
    pub quorum_request_timeout_ms: u64,
    /// `broker.session.timeout.ms`.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// `broker.rack`, if set.
    pub broker_rack: Option<String>,
    /// `replica.selector.class`, if set (KIP-392).
    pub replica_selector: Option<ReplicaSelectorClass>,
    /// `metadata.log.segment.bytes`.
    pub metadata_log_segment_bytes: u64,
    /// `metadata.log.segment.ms`.
    pub metadata_log_segment_ms: u64,
    /// `metadata.max.retention.bytes`; -1 is unbounded.
    pub metadata_max_retention_bytes: i64,
    /// `metadata.max.retention.ms`; -1 keeps forever.
    pub metadata_max_retention_ms: i64,
    /// `metadata.log.max.record.bytes.between.snapshots`.
    pub metadata_log_max_record_bytes_between_snapshots: u64,
    /// `metadata.log.max.snapshot.interval.ms`; 0 disables time-based snapshots.
    pub metadata_log_max_snapshot_interval_ms: u64,
    /// `replica.high.watermark.checkpoint.interval.ms`.
    pub replica_high_watermark_checkpoint_interval_ms: u64,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
    /// `controlled.shutdown.enable`.
    pub controlled_shutdown_enable: bool,
    /// `unclean.leader.election.enable`.
    pub unclean_leader_election_enable: bool,
    /// `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`.
    pub leader_imbalance_check_interval_seconds: u64,
    /// `leader.imbalance.per.broker.percentage`.
    pub leader_imbalance_per_broker_percentage: i32,
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
    /// `transaction.max.timeout.ms`.
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`.
    pub transactional_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub transaction_remove_expired_transaction_cleanup_interval_ms: i64,
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
    /// `log.cleanup.policy`: the default `cleanup.policy` items (`compact`, `delete`), in the order given.
    pub log_cleanup_policy: Vec<String>,
    /// `log.cleaner.enable`.
    pub log_cleaner_enable: bool,
    /// `log.cleaner.threads`; 0 runs no cleaner.
    pub log_cleaner_threads: usize,
    /// `log.cleaner.dedupe.buffer.size`: bytes of key maps, shared by the cleaner threads.
    pub log_cleaner_dedupe_buffer_size: u64,
    /// `log.cleaner.io.max.bytes.per.second`, shared by the cleaner threads.
    pub log_cleaner_io_max_bytes_per_second: f64,
    /// `log.cleaner.backoff.ms`.
    pub log_cleaner_backoff_ms: u64,
    /// `log.cleaner.min.cleanable.ratio` (topic `min.cleanable.dirty.ratio` default).
    pub log_cleaner_min_cleanable_ratio: f64,
    /// `log.cleaner.delete.retention.ms` (topic `delete.retention.ms` default).
    pub log_cleaner_delete_retention_ms: i64,
    /// `log.cleaner.min.compaction.lag.ms` (topic `min.compaction.lag.ms` default).
    pub log_cleaner_min_compaction_lag_ms: i64,
    /// `log.cleaner.max.compaction.lag.ms` (topic `max.compaction.lag.ms` default).
    pub log_cleaner_max_compaction_lag_ms: i64,
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

/// Kafka's rack-aware replica selector class name (`replica.selector.class`).
pub const RACK_AWARE_REPLICA_SELECTOR: &str =
    "org.apache.kafka.common.replica.RackAwareReplicaSelector";
/// Kafka's leader-only replica selector class name (`replica.selector.class`).
pub const LEADER_SELECTOR: &str = "org.apache.kafka.common.replica.LeaderSelector";

/// The replica selectors `replica.selector.class` may name (KIP-392).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaSelectorClass {
    /// `LeaderSelector`: consumers always fetch from the leader.
    Leader,
    /// `RackAwareReplicaSelector`: a replica in the consumer's rack, the leader if it is there.
    RackAware,
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

/// Parses `process.roles` as Kafka does: `broker` and/or `controller`, any order, no duplicates, not empty.
fn parse_roles(key: &str, value: &str) -> Result<Roles, ConfigError> {
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    let items: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for item in &items {
        let slot = match *item {
            "broker" => &mut roles.broker,
            "controller" => &mut roles.controller,
            other => {
                return Err(invalid(
                    key,
                    value,
                    format!(
                        "Unknown process role '{other}' (only 'broker' and 'controller' are allowed roles)"
                    ),
                ))
            }
        };
        if *slot {
            return Err(invalid(
                key,
                value,
                format!("Duplicate role names found in {key}: {items:?}"),
            ));
        }
        *slot = true;
    }
    if !roles.broker && !roles.controller {
        return Err(invalid(
            key,
            value,
            "must contain `broker`, `controller` or both",
        ));
    }
    Ok(roles)
}

/// Splits `host:port` (`[v6]:port` too) as Kafka's `Utils.getHost`/`getPort` do: the host may contain only
/// letters, digits, `-`, `%`, `.`, `_` and `:`; the port is decimal. `None` names the part that failed.
fn split_host_port(address: &str) -> Result<(String, u16), &'static str> {
    let (host, port) = address.rsplit_once(':').ok_or("host")?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '%' | '.' | '_' | ':'));
    if !valid_host {
        return Err("host");
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port");
    }
    let port: u16 = port.parse().map_err(|_| "port")?;
    Ok((host.to_string(), port))
}

/// Parses `controller.quorum.voters` (`{id}@{host}:{port},...`) with Kafka's `QuorumConfig` messages.
fn parse_quorum_voters(key: &str, value: &str) -> Result<Vec<QuorumVoter>, ConfigError> {
    let mut voters: Vec<QuorumVoter> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = entry.split('@').collect();
        if parts.len() != 2 || parts[1].is_empty() {
            return Err(invalid(
                key,
                value,
                format!(
                    "Invalid configuration value for {key}. Each entry should be in the form `{{id}}@{{host}}:{{port}}`."
                ),
            ));
        }
        let id: i32 = parts[0].parse().map_err(|_| {
            invalid(
                key,
                value,
                format!("Failed to parse voter ID as an integer from {}", parts[0]),
            )
        })?;
        if id < 0 {
            return Err(invalid(
                key,
                value,
                format!("voter ID {id} in {entry} must be >= 0"),
            ));
        }
        let (host, port) = split_host_port(parts[1]).map_err(|what| {
            invalid(
                key,
                value,
                format!(
                    "Failed to parse host {} from entry {entry} for the configuration {key}. Each entry should be in the form `{{id}}@{{host}}:{{port}}`.",
                    if what == "host" { "name" } else { "port" }
                ),
            )
        })?;
        if host == "0.0.0.0" {
            return Err(invalid(
                key,
                value,
                format!("Host string ({host}) is not routeable"),
            ));
        }
        if voters.iter().any(|v| v.id == id) {
            return Err(invalid(
                key,
                value,
                format!("voter ID {id} appears more than once"),
            ));
        }
        voters.push(QuorumVoter { id, host, port });
    }
    Ok(voters)
}

/// Parses `controller.quorum.bootstrap.servers` (`{host}:{port},...`) with Kafka's `QuorumConfig` messages.
fn parse_bootstrap_servers(key: &str, value: &str) -> Result<Vec<(String, u16)>, ConfigError> {
    let mut servers = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let server = split_host_port(entry).map_err(|what| {
            invalid(
                key,
                value,
                format!(
                    "Failed to parse host {} from {entry} for the configuration {key}. Each entry should be in the form \"{{host}}:{{port}}\"",
                    if what == "host" { "name" } else { "port" }
                ),
            )
        })?;
        servers.push(server);
    }
    Ok(servers)
}

/// Parses a Kafka DOUBLE (Java's `Double.parseDouble` spellings, `1.7976931348623157E308` among them); NaN is
/// refused, as no double key of Sluice's has a use for it.
fn parse_f64(key: &str, value: &str) -> Result<f64, ConfigError> {
    let v: f64 = parse_num(key, value)?;
    if v.is_nan() {
        return Err(invalid(key, value, "not a number"));
    }
    Ok(v)
}

/// Parses a `cleanup.policy` list as Kafka's `ValidList`: comma-separated `compact` and/or `delete`.
fn parse_cleanup_policy(key: &str, value: &str) -> Result<Vec<String>, ConfigError> {
    let mut items = Vec::new();
    for item in value.split(',').map(str::trim) {
        if item != "compact" && item != "delete" {
            return Err(invalid(
                key,
                value,
                format!("Invalid value {item}; valid values are: [compact, delete]"),
            ));
        }
        if !items.iter().any(|i| i == item) {
            items.push(item.to_string());
        }
    }
    Ok(items)
}

fn parse_nonneg_i64(key: &str, value: &str) -> Result<i64, ConfigError> {
    let v: i64 = parse_num(key, value)?;
    if v < 0 {
        return Err(invalid(key, value, "must be >= 0"));
    }
    Ok(v)
}

/// The cluster-related settings of one node, checked together with Kafka's rules (`KafkaConfig`'s
/// `validateValues` for KRaft) before the rest of the configuration is built.
struct ClusterShape<'a> {
    node_id: i32,
    roles: Roles,
    roles_value: &'a str,
    voters: &'a [QuorumVoter],
    voters_value: &'a str,
    bootstrap: &'a [(String, u16)],
    controller_names: &'a [String],
    listeners: &'a [Listener],
    controller_listeners: &'a [Listener],
    listeners_value: &'a str,
}

impl ClusterShape<'_> {
    fn validate(&self) -> Result<(), ConfigError> {
        let roles = self.roles;
        let no_quorum_config = self.voters.is_empty() && self.bootstrap.is_empty();
        // Both roles with no quorum configuration is the embedded single node: its quorum is local.
        let embedded = roles.is_combined() && no_quorum_config;
        let voter_ids = {
            let mut ids: Vec<i32> = self.voters.iter().map(|v| v.id).collect();
            ids.sort_unstable();
            let ids: Vec<String> = ids.iter().map(i32::to_string).collect();
            format!("[{}]", ids.join(", "))
        };
        let node_id_value = self.node_id.to_string();
        if !embedded && no_quorum_config {
            return Err(invalid(
                "controller.quorum.voters",
                self.voters_value,
                format!(
                    "If using process.roles, either controller.quorum.bootstrap.servers must contain the set of bootstrap controllers or controller.quorum.voters must contain a parseable set of controllers. (process.roles={}; only `broker,controller` without either runs the embedded single-node quorum)",
                    self.roles_value
                ),
            ));
        }
        if roles.broker && self.listeners.is_empty() {
            return Err(invalid(
                "listeners",
                self.listeners_value,
                "a node with the broker role needs at least one non-controller listener (There must be at least one advertised listener. Perhaps all listeners appear in controller.listener.names?)",
            ));
        }
        if roles.broker && !roles.controller {
            if self.controller_names.is_empty() {
                return Err(invalid(
                    "controller.listener.names",
                    "",
                    "controller.listener.names must contain at least one value when running KRaft with just the broker role",
                ));
            }
            if !self.controller_listeners.is_empty() {
                return Err(invalid(
                    "listeners",
                    self.listeners_value,
                    "controller.listener.names must not contain a value appearing in the 'listeners' configuration when running KRaft with just the broker role",
                ));
            }
            if self.voters.iter().any(|v| v.id == self.node_id) {
                return Err(invalid(
                    "node.id",
                    &node_id_value,
                    format!(
                        "If process.roles contains just the 'broker' role, the node id {} must not be included in the set of voters controller.quorum.voters={voter_ids}",
                        self.node_id
                    ),
                ));
            }
        }
        if roles.controller {
            if !roles.broker && !self.listeners.is_empty() {
                let names: Vec<&str> = self.listeners.iter().map(|l| l.name.as_str()).collect();
                return Err(invalid(
                    "listeners",
                    self.listeners_value,
                    format!(
                        "The listeners config must only contain KRaft controller listeners from controller.listener.names when process.roles=controller (not a controller listener: {})",
                        names.join(",")
                    ),
                ));
            }
            if !embedded {
                if self.controller_listeners.is_empty() {
                    return Err(invalid(
                        "listeners",
                        self.listeners_value,
                        "controller.listener.names must contain at least one value appearing in the 'listeners' configuration when running the KRaft controller role",
                    ));
                }
                if let Some(missing) = self
                    .controller_names
                    .iter()
                    .find(|n| !self.controller_listeners.iter().any(|l| &&l.name == n))
                {
                    return Err(invalid(
                        "listeners",
                        self.listeners_value,
                        format!(
                            "controller.listener.names must only contain values appearing in the 'listeners' configuration when running the KRaft controller role (`{missing}` is not in listeners)"
                        ),
                    ));
                }
            }
            if !self.voters.is_empty() && !self.voters.iter().any(|v| v.id == self.node_id) {
                return Err(invalid(
                    "node.id",
                    &node_id_value,
                    format!(
                        "If process.roles contains the 'controller' role, the node id {} must be included in the set of voters controller.quorum.voters={voter_ids}",
                        self.node_id
                    ),
                ));
            }
        }
        Ok(())
    }
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
        let roles_value = req("process.roles");
        let roles = parse_roles("process.roles", &roles_value)?;
        let voters_value = req("controller.quorum.voters");
        let quorum_voters = parse_quorum_voters("controller.quorum.voters", &voters_value)?;
        let bootstrap_value = req("controller.quorum.bootstrap.servers");
        let quorum_bootstrap_servers =
            parse_bootstrap_servers("controller.quorum.bootstrap.servers", &bootstrap_value)?;

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
        let mut controller_listeners = Vec::new();
        for l in all_listeners {
            check_protocol("listeners", &listeners_value, &l)?;
            if controller_names.contains(&l.name) {
                controller_listeners.push(l);
            } else {
                listeners.push(l);
            }
        }
        let cluster = ClusterShape {
            node_id,
            roles,
            roles_value: &roles_value,
            voters: &quorum_voters,
            voters_value: &voters_value,
            bootstrap: &quorum_bootstrap_servers,
            controller_names: &controller_names,
            listeners: &listeners,
            controller_listeners: &controller_listeners,
            listeners_value: &listeners_value,
        };
        cluster.validate()?;
        let inter_broker_listener = match set.get("inter.broker.listener.name") {
            Some(name) if roles.broker => {
                let name = name.trim();
                if !listeners.iter().any(|l| l.name == name) {
                    let valid: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
                    return Err(invalid(
                        "inter.broker.listener.name",
                        name,
                        format!(
                            "inter.broker.listener.name must be a listener name defined in listeners (and not in controller.listener.names). The valid options based on currently configured listeners are {}",
                            valid.join(",")
                        ),
                    ));
                }
                name.to_string()
            }
            Some(name) => name.trim().to_string(),
            None => listeners
                .first()
                .map(|l| l.name.clone())
                .unwrap_or_default(),
        };
        // The address this node advertises: its first client listener, or on a controller-only node its first
        // controller listener.
        let primary = listeners
            .first()
            .or_else(|| controller_listeners.first())
            .ok_or_else(|| invalid("listeners", &listeners_value, "no listener"))?;
        let (advertised_host, advertised_port) = match set.get("advertised.listeners") {
            Some(value) => {
                let advertised = parse_listeners("advertised.listeners", value)?;
                if roles.broker && !roles.controller {
                    if advertised
                        .iter()
                        .any(|a| controller_names.contains(&a.name))
                    {
                        return Err(invalid(
                            "advertised.listeners",
                            value,
                            "The advertised.listeners config must not contain KRaft controller listeners from controller.listener.names when process.roles contains the broker role because Kafka clients that send requests via advertised listeners do not send requests to KRaft controllers -- they only send requests to KRaft brokers.",
                        ));
                    }
                } else if !roles.broker {
                    if let Some(a) = advertised
                        .iter()
                        .find(|a| !controller_names.contains(&a.name))
                    {
                        return Err(invalid(
                            "advertised.listeners",
                            value,
                            format!(
                                "listener `{}` is not a controller listener; the advertised.listeners config must only contain KRaft controller listeners from controller.listener.names when process.roles=controller",
                                a.name
                            ),
                        ));
                    }
                }
                let first = advertised
                    .iter()
                    .find(|a| a.name == primary.name)
                    .or_else(|| {
                        advertised
                            .iter()
                            .find(|a| roles.broker != controller_names.contains(&a.name))
                    })
                    .ok_or_else(|| {
                        invalid(
                            "advertised.listeners",
                            value,
                            format!("no entry for listener `{}`", primary.name),
                        )
                    })?;
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
                let l = primary;
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

        // Cluster timings and the metadata log, with Kafka's types (INT or LONG) and floors. Kafka has no
        // validator on the quorum and broker-session timeouts; zero or negative values make no sense there, so
        // Sluice asks for >= 1.
        let int_at_least = |name: &str, min: i32| -> Result<u64, ConfigError> {
            let v: i32 = parse_num(name, &req(name))?;
            if v < min {
                return Err(invalid(name, &req(name), format!("must be >= {min}")));
            }
            Ok(v as u64)
        };
        let long_at_least = |name: &str, min: i64| -> Result<i64, ConfigError> {
            let v: i64 = parse_num(name, &req(name))?;
            if v < min {
                return Err(invalid(name, &req(name), format!("must be >= {min}")));
            }
            Ok(v)
        };
        // Retention: any negative value means unbounded, reported as -1.
        let retention = |name: &str| -> Result<i64, ConfigError> {
            let v: i64 = parse_num(name, &req(name))?;
            Ok(if v < 0 { -1 } else { v })
        };
        let quorum_election_timeout_ms = int_at_least("controller.quorum.election.timeout.ms", 1)?;
        let quorum_fetch_timeout_ms = int_at_least("controller.quorum.fetch.timeout.ms", 1)?;
        let quorum_election_backoff_max_ms =
            int_at_least("controller.quorum.election.backoff.max.ms", 1)?;
        let quorum_request_timeout_ms = int_at_least("controller.quorum.request.timeout.ms", 1)?;
        let broker_session_timeout_ms = int_at_least("broker.session.timeout.ms", 1)?;
        let broker_heartbeat_interval_ms = int_at_least("broker.heartbeat.interval.ms", 1)?;
        // Kafka 4.1's MetadataLogConfig: INT, at least 8 MiB (4.0 had the same floor at start-up).
        let metadata_log_segment_bytes =
            int_at_least("metadata.log.segment.bytes", 8 * 1024 * 1024)?;
        let metadata_log_segment_ms = long_at_least("metadata.log.segment.ms", 1)? as u64;
        let metadata_max_retention_bytes = retention("metadata.max.retention.bytes")?;
        let metadata_max_retention_ms = retention("metadata.max.retention.ms")?;
        let metadata_log_max_record_bytes_between_snapshots =
            long_at_least("metadata.log.max.record.bytes.between.snapshots", 1)? as u64;
        let metadata_log_max_snapshot_interval_ms =
            long_at_least("metadata.log.max.snapshot.interval.ms", 0)? as u64;
        let replica_high_watermark_checkpoint_interval_ms =
            long_at_least("replica.high.watermark.checkpoint.interval.ms", 1)? as u64;
        let replica_lag_time_max_ms = long_at_least("replica.lag.time.max.ms", 1)? as u64;
        let controlled_shutdown_enable = parse_bool(
            "controlled.shutdown.enable",
            &req("controlled.shutdown.enable"),
        )?;
        let unclean_leader_election_enable = parse_bool(
            "unclean.leader.election.enable",
            &req("unclean.leader.election.enable"),
        )?;
        let auto_leader_rebalance_enable = parse_bool(
            "auto.leader.rebalance.enable",
            &req("auto.leader.rebalance.enable"),
        )?;
        let leader_imbalance_check_interval_seconds =
            long_at_least("leader.imbalance.check.interval.seconds", 1)? as u64;
        // Kafka defines it as an INT without a range.
        let leader_imbalance_per_broker_percentage: i32 = parse_num(
            "leader.imbalance.per.broker.percentage",
            &req("leader.imbalance.per.broker.percentage"),
        )?;
        let broker_rack = match set.get("broker.rack").map(|r| r.trim()) {
            Some("") => {
                return Err(invalid("broker.rack", "", "must not be empty"));
            }
            Some(rack) => Some(rack.to_string()),
            None => None,
        };
        let replica_selector = match set.get("replica.selector.class").map(|c| c.trim()) {
            None => None,
            Some(RACK_AWARE_REPLICA_SELECTOR) => Some(ReplicaSelectorClass::RackAware),
            Some(LEADER_SELECTOR) => Some(ReplicaSelectorClass::Leader),
            Some(other) => {
                return Err(invalid(
                    "replica.selector.class",
                    other,
                    format!(
                        "unknown replica selector; Sluice knows {RACK_AWARE_REPLICA_SELECTOR} and {LEADER_SELECTOR}"
                    ),
                ));
            }
        };

        // The log cleaner, with Kafka's types and ranges (CleanerConfig, and KafkaConfig's "at least 1MB per
        // cleaner thread").
        let log_cleanup_policy =
            parse_cleanup_policy("log.cleanup.policy", &req("log.cleanup.policy"))?;
        let log_cleaner_enable = parse_bool("log.cleaner.enable", &req("log.cleaner.enable"))?;
        let log_cleaner_threads = int_at_least("log.cleaner.threads", 0)? as usize;
        let log_cleaner_dedupe_buffer_size =
            long_at_least("log.cleaner.dedupe.buffer.size", 0)? as u64;
        if log_cleaner_threads > 0
            && log_cleaner_dedupe_buffer_size / log_cleaner_threads as u64 <= 1024 * 1024
        {
            return Err(invalid(
                "log.cleaner.dedupe.buffer.size",
                &req("log.cleaner.dedupe.buffer.size"),
                "log.cleaner.dedupe.buffer.size must be at least 1MB per cleaner thread.",
            ));
        }
        let log_cleaner_io_max_bytes_per_second = parse_f64(
            "log.cleaner.io.max.bytes.per.second",
            &req("log.cleaner.io.max.bytes.per.second"),
        )?;
        if log_cleaner_io_max_bytes_per_second <= 0.0 {
            return Err(invalid(
                "log.cleaner.io.max.bytes.per.second",
                &req("log.cleaner.io.max.bytes.per.second"),
                "must be > 0",
            ));
        }
        let log_cleaner_backoff_ms = long_at_least("log.cleaner.backoff.ms", 0)? as u64;
        let log_cleaner_min_cleanable_ratio = parse_f64(
            "log.cleaner.min.cleanable.ratio",
            &req("log.cleaner.min.cleanable.ratio"),
        )?;
        if !(0.0..=1.0).contains(&log_cleaner_min_cleanable_ratio) {
            return Err(invalid(
                "log.cleaner.min.cleanable.ratio",
                &req("log.cleaner.min.cleanable.ratio"),
                "Value must be no less than 0 and no more than 1",
            ));
        }
        let log_cleaner_delete_retention_ms = long_at_least("log.cleaner.delete.retention.ms", 0)?;
        let log_cleaner_min_compaction_lag_ms =
            long_at_least("log.cleaner.min.compaction.lag.ms", 0)?;
        let log_cleaner_max_compaction_lag_ms =
            long_at_least("log.cleaner.max.compaction.lag.ms", 1)?;

        Ok(BrokerConfig {
            node_id,
            listeners,
            roles,
            controller_listener_names: controller_names,
            controller_listeners,
            quorum_voters,
            quorum_bootstrap_servers,
            inter_broker_listener,
            quorum_election_timeout_ms,
            quorum_fetch_timeout_ms,
            quorum_election_backoff_max_ms,
            quorum_request_timeout_ms,
            broker_session_timeout_ms,
            broker_heartbeat_interval_ms,
            broker_rack,
            replica_selector,
            metadata_log_segment_bytes,
            metadata_log_segment_ms,
            metadata_max_retention_bytes,
            metadata_max_retention_ms,
            metadata_log_max_record_bytes_between_snapshots,
            metadata_log_max_snapshot_interval_ms,
            replica_high_watermark_checkpoint_interval_ms,
            replica_lag_time_max_ms,
            controlled_shutdown_enable,
            unclean_leader_election_enable,
            auto_leader_rebalance_enable,
            leader_imbalance_check_interval_seconds,
            leader_imbalance_per_broker_percentage,
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
            transaction_max_timeout_ms: positive_i32("transaction.max.timeout.ms")?,
            transactional_id_expiration_ms: i64::from(positive_i32(
                "transactional.id.expiration.ms",
            )?),
            transaction_abort_timed_out_transaction_cleanup_interval_ms: i64::from(positive_i32(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            )?),
            transaction_remove_expired_transaction_cleanup_interval_ms: i64::from(positive_i32(
                "transaction.remove.expired.transaction.cleanup.interval.ms",
            )?),
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
            log_cleanup_policy,
            log_cleaner_enable,
            log_cleaner_threads,
            log_cleaner_dedupe_buffer_size,
            log_cleaner_io_max_bytes_per_second,
            log_cleaner_backoff_ms,
            log_cleaner_min_cleanable_ratio,
            log_cleaner_delete_retention_ms,
            log_cleaner_min_compaction_lag_ms,
            log_cleaner_max_compaction_lag_ms,
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

    /// True for the embedded single node: both roles and no quorum configured (no `controller.quorum.voters`, no
    /// `controller.quorum.bootstrap.servers`), so the controller quorum is this process alone.
    pub fn is_embedded_single_node(&self) -> bool {
        self.roles.is_combined()
            && self.quorum_voters.is_empty()
            && self.quorum_bootstrap_servers.is_empty()
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
            "cleanup.policy" => self.log_cleanup_policy.join(","),
            "min.cleanable.dirty.ratio" => self.log_cleaner_min_cleanable_ratio.to_string(),
            "delete.retention.ms" => self.log_cleaner_delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => self.log_cleaner_min_compaction_lag_ms.to_string(),
            "max.compaction.lag.ms" => self.log_cleaner_max_compaction_lag_ms.to_string(),
            _ => return None,
        };
        Some(value)
    }

    /// The settings the controller's leader elections take from this config (unclean elections, leader rebalance).
    pub fn election_config(&self) -> sluice_metadata::controller::ElectionConfig {
        sluice_metadata::controller::ElectionConfig {
            unclean_leader_election_enable: self.unclean_leader_election_enable,
            auto_leader_rebalance_enable: self.auto_leader_rebalance_enable,
            leader_imbalance_check_interval_ms: self
                .leader_imbalance_check_interval_seconds
                .saturating_mul(1000),
            leader_imbalance_per_broker_percentage: self.leader_imbalance_per_broker_percentage,
            min_insync_replicas: self.min_insync_replicas,
        }
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
            compact: self.log_cleanup_policy.iter().any(|p| p == "compact"),
            delete: self.log_cleanup_policy.iter().any(|p| p == "delete"),
            min_cleanable_dirty_ratio: self.log_cleaner_min_cleanable_ratio,
            delete_retention_ms: self.log_cleaner_delete_retention_ms,
            min_compaction_lag_ms: self.log_cleaner_min_compaction_lag_ms,
            max_compaction_lag_ms: self.log_cleaner_max_compaction_lag_ms,
        };
        for (key, value) in topic_overrides {
            if let Err(reason) = apply_topic_override(&mut config, key, value) {
                tracing::warn!(key = %key, value = %value, %reason, "ignoring invalid topic config override");
            }
        }
        config
    }

    /// What one of the `log.cleaner.threads` cleaners may use in a pass at `now_ms`: an even share of
    /// `log.cleaner.dedupe.buffer.size` as key-map entries (24 bytes each, as Kafka's offset map) and of
    /// `log.cleaner.io.max.bytes.per.second`.
    pub fn clean_options(&self, now_ms: i64) -> CleanOptions {
        let threads = self.log_cleaner_threads.max(1);
        CleanOptions {
            now_ms,
            max_map_entries: usize::try_from(self.log_cleaner_dedupe_buffer_size / 24)
                .unwrap_or(usize::MAX)
                / threads,
            io_max_bytes_per_second: self.log_cleaner_io_max_bytes_per_second / threads as f64,
        }
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

/// Applies one topic-level override to a [`LogConfig`]; keys the log does not use (e.g. `compression.type`)
/// leave it unchanged.
fn apply_topic_override(config: &mut LogConfig, key: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    let as_u64 = || v.parse::<u64>().map_err(|e| e.to_string());
    let as_i64 = || v.parse::<i64>().map_err(|e| e.to_string());
    let as_i64_at_least = |min: i64| -> Result<i64, String> {
        let n = as_i64()?;
        if n < min {
            return Err(format!("must be >= {min}"));
        }
        Ok(n)
    };
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
        "cleanup.policy" => {
            let policy = parse_cleanup_policy(key, v).map_err(|e| e.to_string())?;
            config.compact = policy.iter().any(|p| p == "compact");
            config.delete = policy.iter().any(|p| p == "delete");
        }
        "min.cleanable.dirty.ratio" => {
            let ratio = v.parse::<f64>().map_err(|e| e.to_string())?;
            if !(0.0..=1.0).contains(&ratio) {
                return Err("must be between 0 and 1".to_string());
            }
            config.min_cleanable_dirty_ratio = ratio;
        }
        "delete.retention.ms" => config.delete_retention_ms = as_i64_at_least(0)?,
        "min.compaction.lag.ms" => config.min_compaction_lag_ms = as_i64_at_least(0)?,
        "max.compaction.lag.ms" => config.max_compaction_lag_ms = as_i64_at_least(1)?,
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
        // Kafka 4's stock combined file: a quorum found through bootstrap servers, its CONTROLLER listener served.
        assert!(!c.is_embedded_single_node());
        assert_eq!(
            c.quorum_bootstrap_servers,
            vec![("localhost".to_string(), 9093)]
        );
        assert_eq!(
            c.controller_listeners,
            vec![Listener {
                name: "CONTROLLER".into(),
                host: String::new(),
                port: 9093
            }]
        );
        assert_eq!(c.inter_broker_listener, "PLAINTEXT");
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
        assert!(lc.compact && !lc.delete);
        assert_eq!(
            c.topic_config_default("segment.bytes").as_deref(),
            Some("1000")
        );
    }

    #[test]
    fn log_cleaner_keys_have_kafkas_defaults() {
        let c = BrokerConfig::default();
        assert_eq!(c.log_cleanup_policy, vec!["delete".to_string()]);
        assert!(c.log_cleaner_enable);
        assert_eq!(c.log_cleaner_threads, 1);
        assert_eq!(c.log_cleaner_dedupe_buffer_size, 134_217_728);
        assert_eq!(c.log_cleaner_io_max_bytes_per_second, f64::MAX);
        assert_eq!(c.log_cleaner_backoff_ms, 15_000);
        assert_eq!(c.log_cleaner_min_cleanable_ratio, 0.5);
        assert_eq!(c.log_cleaner_delete_retention_ms, 86_400_000);
        assert_eq!(c.log_cleaner_min_compaction_lag_ms, 0);
        assert_eq!(c.log_cleaner_max_compaction_lag_ms, i64::MAX);
        for (topic_key, value) in [
            ("cleanup.policy", "delete"),
            ("min.cleanable.dirty.ratio", "0.5"),
            ("delete.retention.ms", "86400000"),
            ("min.compaction.lag.ms", "0"),
            ("max.compaction.lag.ms", "9223372036854775807"),
        ] {
            assert_eq!(
                c.topic_config_default(topic_key).as_deref(),
                Some(value),
                "{topic_key}"
            );
        }
        let entry = c
            .entries()
            .into_iter()
            .find(|e| e.name == "log.cleaner.io.max.bytes.per.second")
            .unwrap();
        assert_eq!(entry.value.as_deref(), Some("1.7976931348623157E308"));
        assert!(entry.is_default);
        // Kafka's offset map: 24 bytes per key; one thread has the whole buffer and an unbounded rate.
        let options = c.clean_options(7);
        assert_eq!(options.now_ms, 7);
        assert_eq!(options.max_map_entries, 134_217_728 / 24);
        assert_eq!(options.io_max_bytes_per_second, f64::MAX);
    }

    #[test]
    fn log_cleaner_keys_take_overrides_and_reach_topic_logs() {
        let c = BrokerConfig::from_pairs([
            ("log.cleanup.policy", "compact, delete"),
            ("log.cleaner.enable", "false"),
            ("log.cleaner.threads", "4"),
            ("log.cleaner.dedupe.buffer.size", "100000000"),
            ("log.cleaner.io.max.bytes.per.second", "1E6"),
            ("log.cleaner.backoff.ms", "200"),
            ("log.cleaner.min.cleanable.ratio", "0.01"),
            ("log.cleaner.delete.retention.ms", "1000"),
            ("log.cleaner.min.compaction.lag.ms", "5"),
            ("log.cleaner.max.compaction.lag.ms", "60000"),
        ])
        .unwrap();
        assert!(!c.log_cleaner_enable);
        assert_eq!(c.log_cleaner_threads, 4);
        assert_eq!(c.log_cleaner_backoff_ms, 200);
        // The buffer and the rate are shared evenly by the threads.
        let options = c.clean_options(0);
        assert_eq!(options.max_map_entries, 100_000_000 / 24 / 4);
        assert_eq!(options.io_max_bytes_per_second, 250_000.0);
        assert_eq!(
            c.topic_config_default("cleanup.policy").as_deref(),
            Some("compact,delete")
        );
        assert_eq!(
            c.topic_config_default("min.cleanable.dirty.ratio")
                .as_deref(),
            Some("0.01")
        );
        let lc = c.log_config(&BTreeMap::new());
        assert!(lc.compact && lc.delete);
        assert_eq!(lc.min_cleanable_dirty_ratio, 0.01);
        assert_eq!(lc.delete_retention_ms, 1000);
        assert_eq!(lc.min_compaction_lag_ms, 5);
        assert_eq!(lc.max_compaction_lag_ms, 60000);
        // Topic overrides win over the broker's defaults; invalid ones are ignored (the controller refuses them).
        let overrides: BTreeMap<String, String> = [
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.9"),
            ("delete.retention.ms", "7"),
            ("min.compaction.lag.ms", "-1"),
            ("max.compaction.lag.ms", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let lc = c.log_config(&overrides);
        assert!(lc.compact && !lc.delete);
        assert_eq!(lc.min_cleanable_dirty_ratio, 0.9);
        assert_eq!(lc.delete_retention_ms, 7);
        assert_eq!(lc.min_compaction_lag_ms, 5);
        assert_eq!(lc.max_compaction_lag_ms, 60000);
        // No cleaner thread: the options are still well-formed.
        let c = BrokerConfig::from_pairs([("log.cleaner.threads", "0")]).unwrap();
        assert_eq!(c.log_cleaner_threads, 0);
        assert_eq!(c.clean_options(0).max_map_entries, 134_217_728 / 24);
    }

    #[test]
    fn log_cleaner_keys_reject_bad_values_naming_the_key() {
        for (name, value) in [
            ("log.cleanup.policy", "shred"),
            ("log.cleanup.policy", ""),
            ("log.cleanup.policy", "compact,,delete"),
            ("log.cleaner.enable", "yes"),
            ("log.cleaner.threads", "-1"),
            ("log.cleaner.threads", "2147483648"),
            ("log.cleaner.dedupe.buffer.size", "1048576"),
            ("log.cleaner.dedupe.buffer.size", "lots"),
            ("log.cleaner.io.max.bytes.per.second", "0"),
            ("log.cleaner.io.max.bytes.per.second", "NaN"),
            ("log.cleaner.io.max.bytes.per.second", "fast"),
            ("log.cleaner.backoff.ms", "-1"),
            ("log.cleaner.min.cleanable.ratio", "1.5"),
            ("log.cleaner.min.cleanable.ratio", "-0.1"),
            ("log.cleaner.delete.retention.ms", "-1"),
            ("log.cleaner.min.compaction.lag.ms", "-1"),
            ("log.cleaner.max.compaction.lag.ms", "0"),
        ] {
            let (key, message) = refusal([(name, value)]);
            assert_eq!(key, name, "{name}={value}: {message}");
        }
        // Kafka: more than 1 MiB of dedupe buffer per cleaner thread.
        let (key, message) = refusal([
            ("log.cleaner.threads", "8"),
            ("log.cleaner.dedupe.buffer.size", "8388608"),
        ]);
        assert_eq!(key, "log.cleaner.dedupe.buffer.size");
        assert!(
            message.contains("at least 1MB per cleaner thread"),
            "{message}"
        );
        BrokerConfig::from_pairs([
            ("log.cleaner.threads", "8"),
            ("log.cleaner.dedupe.buffer.size", "8388616"),
        ])
        .unwrap();
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

    /// The key an `InvalidValue` error names, and its message.
    fn refusal<const N: usize>(pairs: [(&str, &str); N]) -> (String, String) {
        match BrokerConfig::from_pairs(pairs) {
            Ok(c) => panic!("{pairs:?} was accepted: {c:?}"),
            Err(ConfigError::InvalidValue { key, .. }) => {
                let message = BrokerConfig::from_pairs(pairs).unwrap_err().to_string();
                (key, message)
            }
            Err(other) => panic!("{pairs:?}: unexpected error {other}"),
        }
    }

    const VOTERS: &str = "1@host1:9093,2@host2:9093,3@host3:9093";

    #[test]
    fn cluster_defaults_are_the_embedded_single_node() {
        let c = BrokerConfig::default();
        assert_eq!(c.roles, Roles::COMBINED);
        assert!(c.is_embedded_single_node());
        assert!(c.quorum_voters.is_empty() && c.quorum_bootstrap_servers.is_empty());
        assert!(c.controller_listeners.is_empty());
        assert_eq!(c.controller_listener_names, vec!["CONTROLLER".to_string()]);
        assert_eq!(c.inter_broker_listener, "PLAINTEXT");
        assert_eq!(c.broker_session_timeout_ms, 9000);
        assert_eq!(c.broker_heartbeat_interval_ms, 2000);
        assert_eq!(c.quorum_election_timeout_ms, 1000);
        assert_eq!(c.quorum_fetch_timeout_ms, 2000);
        assert_eq!(c.quorum_election_backoff_max_ms, 1000);
        assert_eq!(c.quorum_request_timeout_ms, 2000);
        assert_eq!(c.metadata_log_segment_bytes, 1_073_741_824);
        assert_eq!(c.metadata_log_segment_ms, 604_800_000);
        assert_eq!(c.metadata_max_retention_bytes, 104_857_600);
        assert_eq!(c.metadata_max_retention_ms, 604_800_000);
        assert_eq!(
            c.metadata_log_max_record_bytes_between_snapshots,
            20_971_520
        );
        assert_eq!(c.metadata_log_max_snapshot_interval_ms, 3_600_000);
        assert_eq!(c.replica_high_watermark_checkpoint_interval_ms, 5000);
        assert_eq!(c.broker_rack, None);
        assert!(c.controlled_shutdown_enable);
        assert_eq!(
            c.value_of("process.roles").as_deref(),
            Some("broker,controller")
        );
        // The embedded node may still declare a CONTROLLER listener; it is then a controller listener.
        let c = BrokerConfig::from_pairs([(
            "listeners",
            "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        )])
        .unwrap();
        assert!(c.is_embedded_single_node());
        assert_eq!(c.controller_listeners.len(), 1);
        assert_eq!(c.listeners.len(), 1);
    }

    #[test]
    fn process_roles_any_order_no_duplicates_not_empty() {
        for (value, roles) in [
            ("broker,controller", Roles::COMBINED),
            ("controller, broker", Roles::COMBINED),
        ] {
            let c = BrokerConfig::from_pairs([("process.roles", value)]).unwrap();
            assert_eq!(c.roles, roles, "{value}");
        }
        for bad in ["", " , ", "broker,broker", "broker,zookeeper", "Broker"] {
            let (key, message) = refusal([("process.roles", bad)]);
            assert_eq!(key, "process.roles", "{bad}: {message}");
        }
        let (_, message) = refusal([("process.roles", "broker,broker")]);
        assert!(message.contains("Duplicate role names"), "{message}");
        let (_, message) = refusal([("process.roles", "zookeeper")]);
        assert!(
            message.contains("Unknown process role 'zookeeper'"),
            "{message}"
        );
    }

    #[test]
    fn quorum_voters_parse_with_kafkas_rules() {
        let c = BrokerConfig::from_pairs([
            ("node.id", "2"),
            (
                "controller.quorum.voters",
                "1@host1:9093, 2@10.0.0.2:9093,3@[::1]:9094",
            ),
            ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
        ])
        .unwrap();
        assert_eq!(
            c.quorum_voters,
            vec![
                QuorumVoter {
                    id: 1,
                    host: "host1".into(),
                    port: 9093
                },
                QuorumVoter {
                    id: 2,
                    host: "10.0.0.2".into(),
                    port: 9093
                },
                QuorumVoter {
                    id: 3,
                    host: "::1".into(),
                    port: 9094
                },
            ]
        );
        assert!(!c.is_embedded_single_node());
        for (bad, expected) in [
            (
                "x@host:9093",
                "Failed to parse voter ID as an integer from x",
            ),
            (
                "host:9093",
                "Each entry should be in the form `{id}@{host}:{port}`",
            ),
            (
                "1@2@host:9093",
                "Each entry should be in the form `{id}@{host}:{port}`",
            ),
            (
                "1@",
                "Each entry should be in the form `{id}@{host}:{port}`",
            ),
            ("1@host", "Failed to parse host name from entry 1@host"),
            (
                "1@ho/st:9093",
                "Failed to parse host name from entry 1@ho/st:9093",
            ),
            (
                "1@host:port",
                "Failed to parse host port from entry 1@host:port",
            ),
            (
                "1@host:70000",
                "Failed to parse host port from entry 1@host:70000",
            ),
            ("1@0.0.0.0:9093", "Host string (0.0.0.0) is not routeable"),
            ("1@a:9093,1@b:9093", "voter ID 1 appears more than once"),
            ("-1@a:9093", "must be >= 0"),
        ] {
            let (key, message) = refusal([("controller.quorum.voters", bad)]);
            assert_eq!(key, "controller.quorum.voters", "{bad}");
            assert!(message.contains(expected), "{bad}: {message}");
        }
    }

    #[test]
    fn quorum_bootstrap_servers_parse_with_kafkas_rules() {
        let c = BrokerConfig::from_pairs([
            ("controller.quorum.bootstrap.servers", "c1:9093,c2:9093"),
            ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
        ])
        .unwrap();
        assert_eq!(
            c.quorum_bootstrap_servers,
            vec![("c1".to_string(), 9093), ("c2".to_string(), 9093)]
        );
        assert!(!c.is_embedded_single_node());
        for (bad, expected) in [
            ("c1", "Failed to parse host name from c1"),
            ("c1:x", "Failed to parse host port from c1:x"),
            ("1@c1:9093", "Failed to parse host name from 1@c1:9093"),
        ] {
            let (key, message) = refusal([("controller.quorum.bootstrap.servers", bad)]);
            assert_eq!(key, "controller.quorum.bootstrap.servers", "{bad}");
            assert!(message.contains(expected), "{bad}: {message}");
        }
    }

    #[test]
    fn three_node_combined_cluster() {
        for node in ["1", "2", "3"] {
            let c = BrokerConfig::from_pairs([
                ("node.id", node),
                ("process.roles", "broker,controller"),
                ("controller.quorum.voters", VOTERS),
                ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                ("advertised.listeners", "PLAINTEXT://host1:9092"),
            ])
            .unwrap();
            assert_eq!(c.roles, Roles::COMBINED);
            assert!(!c.is_embedded_single_node());
            assert_eq!(c.quorum_voters.len(), 3);
            assert_eq!(
                c.controller_listeners,
                vec![Listener {
                    name: "CONTROLLER".into(),
                    host: String::new(),
                    port: 9093
                }]
            );
            assert_eq!(c.listeners.len(), 1);
            assert_eq!(c.listeners[0].name, "PLAINTEXT");
            assert_eq!(c.inter_broker_listener, "PLAINTEXT");
            assert_eq!(
                (c.advertised_host.as_str(), c.advertised_port),
                ("host1", 9092)
            );
        }
    }

    #[test]
    fn a_controller_must_be_one_of_the_voters() {
        for roles in ["broker,controller", "controller"] {
            let listeners = if roles == "controller" {
                "CONTROLLER://:9093"
            } else {
                "PLAINTEXT://:9092,CONTROLLER://:9093"
            };
            let (key, message) = refusal([
                ("node.id", "4"),
                ("process.roles", roles),
                ("controller.quorum.voters", VOTERS),
                ("listeners", listeners),
            ]);
            assert_eq!(key, "node.id", "{roles}");
            assert!(
                message.contains(
                    "If process.roles contains the 'controller' role, the node id 4 must be included in the set of voters controller.quorum.voters=[1, 2, 3]"
                ),
                "{message}"
            );
        }
    }

    #[test]
    fn controller_only_node() {
        let c = BrokerConfig::from_pairs([
            ("node.id", "1"),
            ("process.roles", "controller"),
            ("controller.quorum.voters", VOTERS),
            ("listeners", "CONTROLLER://host1:9093"),
        ])
        .unwrap();
        assert_eq!(
            c.roles,
            Roles {
                broker: false,
                controller: true
            }
        );
        assert!(c.listeners.is_empty());
        assert_eq!(c.controller_listeners.len(), 1);
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("host1", 9093)
        );
        assert_eq!(c.inter_broker_listener, "");
        // A client listener on a controller-only node is refused, as in Kafka.
        let (key, message) = refusal([
            ("node.id", "1"),
            ("process.roles", "controller"),
            ("controller.quorum.voters", VOTERS),
            ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
        ]);
        assert_eq!(key, "listeners");
        assert!(
            message.contains("must only contain KRaft controller listeners"),
            "{message}"
        );
        // It needs its controller listener.
        let (key, message) = refusal([
            ("node.id", "1"),
            ("process.roles", "controller"),
            ("controller.quorum.voters", VOTERS),
            ("listeners", "OTHER://:9093"),
            ("listener.security.protocol.map", "OTHER:PLAINTEXT"),
        ]);
        assert_eq!(key, "listeners");
        assert!(
            message.contains("must only contain KRaft controller listeners"),
            "{message}"
        );
        // And a quorum to belong to.
        let (key, message) = refusal([
            ("process.roles", "controller"),
            ("listeners", "CONTROLLER://:9093"),
        ]);
        assert_eq!(key, "controller.quorum.voters");
        assert!(
            message.contains("controller.quorum.bootstrap.servers"),
            "{message}"
        );
        // Its advertised listeners can only be controller listeners.
        let (key, _) = refusal([
            ("node.id", "1"),
            ("process.roles", "controller"),
            ("controller.quorum.voters", VOTERS),
            ("listeners", "CONTROLLER://:9093"),
            ("advertised.listeners", "PLAINTEXT://host1:9092"),
        ]);
        assert_eq!(key, "advertised.listeners");
    }

    #[test]
    fn a_controller_with_a_quorum_serves_its_controller_listener() {
        for roles in ["broker,controller", "controller"] {
            let listeners = if roles == "controller" {
                "CONTROLLER://:9093"
            } else {
                "PLAINTEXT://:9092,CONTROLLER://:9093"
            };
            let c = BrokerConfig::from_pairs([
                ("node.id", "1"),
                ("process.roles", roles),
                ("controller.quorum.voters", VOTERS),
                ("listeners", listeners),
            ])
            .unwrap();
            assert_eq!(c.controller_listeners[0].name, "CONTROLLER");
        }
        let (key, message) = refusal([
            ("node.id", "1"),
            ("controller.quorum.voters", VOTERS),
            ("listeners", "PLAINTEXT://:9092"),
        ]);
        assert_eq!(key, "listeners");
        assert!(
            message.contains("controller.listener.names must contain at least one value appearing in the 'listeners' configuration"),
            "{message}"
        );
        let (key, message) = refusal([
            ("node.id", "1"),
            ("controller.quorum.bootstrap.servers", "host1:9093"),
            ("controller.listener.names", "CONTROLLER,CONTROLLER2"),
            ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
        ]);
        assert_eq!(key, "listeners");
        assert!(
            message.contains("`CONTROLLER2` is not in listeners"),
            "{message}"
        );
    }

    #[test]
    fn broker_only_node() {
        let c = BrokerConfig::from_pairs([
            ("node.id", "4"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", VOTERS),
            ("listeners", "PLAINTEXT://:9092"),
            ("broker.rack", "rack-a"),
        ])
        .unwrap();
        assert_eq!(
            c.roles,
            Roles {
                broker: true,
                controller: false
            }
        );
        assert!(c.controller_listeners.is_empty());
        assert!(!c.is_embedded_single_node());
        assert_eq!(c.broker_rack.as_deref(), Some("rack-a"));
        assert_eq!(c.replica_selector, None);
        // Bootstrap servers instead of voters are enough.
        BrokerConfig::from_pairs([
            ("node.id", "4"),
            ("process.roles", "broker"),
            ("controller.quorum.bootstrap.servers", "host1:9093"),
        ])
        .unwrap();
        // Neither: refused.
        let (key, message) = refusal([("node.id", "4"), ("process.roles", "broker")]);
        assert_eq!(key, "controller.quorum.voters");
        assert!(
            message.contains("If using process.roles, either controller.quorum.bootstrap.servers must contain the set of bootstrap controllers or controller.quorum.voters must contain a parseable set of controllers."),
            "{message}"
        );
        // A controller listener in `listeners`: refused.
        let (key, message) = refusal([
            ("node.id", "4"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", VOTERS),
            ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
        ]);
        assert_eq!(key, "listeners");
        assert!(
            message.contains("controller.listener.names must not contain a value appearing in the 'listeners' configuration when running KRaft with just the broker role"),
            "{message}"
        );
        // Its node id among the voters: refused.
        let (key, message) = refusal([
            ("node.id", "2"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", VOTERS),
        ]);
        assert_eq!(key, "node.id");
        assert!(
            message.contains("If process.roles contains just the 'broker' role, the node id 2 must not be included in the set of voters controller.quorum.voters=[1, 2, 3]"),
            "{message}"
        );
        // A controller listener advertised to clients: refused.
        let (key, _) = refusal([
            ("node.id", "4"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", VOTERS),
            (
                "advertised.listeners",
                "PLAINTEXT://b4:9092,CONTROLLER://b4:9093",
            ),
        ]);
        assert_eq!(key, "advertised.listeners");
        // No controller listener name at all: refused.
        let (key, _) = refusal([
            ("node.id", "4"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", VOTERS),
            ("controller.listener.names", ""),
        ]);
        assert_eq!(key, "controller.listener.names");
    }

    #[test]
    fn a_broker_needs_a_non_controller_listener() {
        let (key, message) = refusal([("listeners", "CONTROLLER://:9093")]);
        assert_eq!(key, "listeners");
        assert!(
            message.contains("at least one non-controller listener"),
            "{message}"
        );
        let (key, _) = refusal([
            ("node.id", "1"),
            ("controller.quorum.voters", VOTERS),
            ("listeners", "CONTROLLER://:9093"),
        ]);
        assert_eq!(key, "listeners");
    }

    #[test]
    fn inter_broker_listener_names_a_client_listener() {
        let pairs = |name: &'static str| {
            [
                (
                    "listeners",
                    "EXTERNAL://:9092,INTERNAL://:9094,CONTROLLER://:9093",
                ),
                (
                    "listener.security.protocol.map",
                    "EXTERNAL:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
                ),
                ("inter.broker.listener.name", name),
            ]
        };
        let c = BrokerConfig::from_pairs(pairs("INTERNAL")).unwrap();
        assert_eq!(c.inter_broker_listener, "INTERNAL");
        let c = BrokerConfig::from_pairs([
            ("listeners", "EXTERNAL://:9092,INTERNAL://:9094"),
            (
                "listener.security.protocol.map",
                "EXTERNAL:PLAINTEXT,INTERNAL:PLAINTEXT",
            ),
        ])
        .unwrap();
        assert_eq!(c.inter_broker_listener, "EXTERNAL");
        for bad in ["CONTROLLER", "REPLICATION"] {
            let (key, message) = refusal(pairs(bad));
            assert_eq!(key, "inter.broker.listener.name", "{bad}");
            assert!(
                message.contains("The valid options based on currently configured listeners are EXTERNAL,INTERNAL"),
                "{message}"
            );
        }
    }

    #[test]
    fn cluster_timing_and_metadata_log_keys() {
        let c = BrokerConfig::from_pairs([
            ("broker.session.timeout.ms", "18000"),
            ("broker.heartbeat.interval.ms", "500"),
            ("controller.quorum.election.timeout.ms", "1500"),
            ("controller.quorum.fetch.timeout.ms", "3000"),
            ("controller.quorum.election.backoff.max.ms", "2000"),
            ("controller.quorum.request.timeout.ms", "4000"),
            ("metadata.log.segment.bytes", "8388608"),
            ("metadata.log.segment.ms", "60000"),
            ("metadata.max.retention.bytes", "-1"),
            ("metadata.max.retention.ms", "-7"),
            ("metadata.log.max.record.bytes.between.snapshots", "1"),
            ("metadata.log.max.snapshot.interval.ms", "0"),
            ("replica.high.watermark.checkpoint.interval.ms", "100"),
            ("controlled.shutdown.enable", "false"),
        ])
        .unwrap();
        assert_eq!(c.broker_session_timeout_ms, 18000);
        assert_eq!(c.broker_heartbeat_interval_ms, 500);
        assert_eq!(c.quorum_election_timeout_ms, 1500);
        assert_eq!(c.quorum_fetch_timeout_ms, 3000);
        assert_eq!(c.quorum_election_backoff_max_ms, 2000);
        assert_eq!(c.quorum_request_timeout_ms, 4000);
        assert_eq!(c.metadata_log_segment_bytes, 8_388_608);
        assert_eq!(c.metadata_log_segment_ms, 60000);
        assert_eq!(c.metadata_max_retention_bytes, -1);
        assert_eq!(c.metadata_max_retention_ms, -1);
        assert_eq!(c.metadata_log_max_record_bytes_between_snapshots, 1);
        assert_eq!(c.metadata_log_max_snapshot_interval_ms, 0);
        assert_eq!(c.replica_high_watermark_checkpoint_interval_ms, 100);
        assert!(!c.controlled_shutdown_enable);
        for (name, value) in [
            ("broker.session.timeout.ms", "0"),
            ("broker.heartbeat.interval.ms", "2147483648"),
            ("controller.quorum.election.timeout.ms", "-1"),
            ("controller.quorum.fetch.timeout.ms", "soon"),
            ("controller.quorum.election.backoff.max.ms", "0"),
            ("controller.quorum.request.timeout.ms", "0"),
            ("metadata.log.segment.bytes", "8388607"),
            ("metadata.log.segment.bytes", "2147483648"),
            ("metadata.log.segment.ms", "0"),
            ("metadata.max.retention.bytes", "lots"),
            ("metadata.max.retention.ms", "1.5"),
            ("metadata.log.max.record.bytes.between.snapshots", "0"),
            ("metadata.log.max.snapshot.interval.ms", "-1"),
            ("replica.high.watermark.checkpoint.interval.ms", "0"),
            ("controlled.shutdown.enable", "yes"),
            ("broker.rack", " "),
            ("replica.selector.class", "com.example.MySelector"),
            ("replica.selector.class", ""),
        ] {
            let (key, message) = refusal([(name, value)]);
            assert_eq!(key, name, "{name}={value}: {message}");
        }
        // Kafka 4 removed the ZooKeeper-era retry keys; Sluice does not know them either.
        for removed in [
            "controlled.shutdown.max.retries",
            "controlled.shutdown.retry.backoff.ms",
        ] {
            assert!(config_key(removed).is_none(), "{removed}");
        }
    }

    #[test]
    fn replica_selector_class_takes_kafkas_two_selectors() {
        let c = BrokerConfig::from_pairs([("replica.selector.class", RACK_AWARE_REPLICA_SELECTOR)])
            .unwrap();
        assert_eq!(c.replica_selector, Some(ReplicaSelectorClass::RackAware));
        let c = BrokerConfig::from_pairs([("replica.selector.class", LEADER_SELECTOR)]).unwrap();
        assert_eq!(c.replica_selector, Some(ReplicaSelectorClass::Leader));
        assert_eq!(BrokerConfig::default().replica_selector, None);
        let (key, message) = refusal([("replica.selector.class", "com.example.Nearest")]);
        assert_eq!(key, "replica.selector.class");
        assert!(message.contains("RackAwareReplicaSelector"), "{message}");
    }
}
