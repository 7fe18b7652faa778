//! The replica manager: the partitions this broker hosts, each a [`Partition`] over a storage `Log`, kept in line
//! with the controller's metadata image (logs created for new partitions, deleted with their topic).
//!
//! Single node: this broker leads every partition and the ISR is itself, so the high watermark is the log end
//! offset after every append. Replication (followers, ISR changes) will live here too.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use sluice_metadata::MetadataImage;
use sluice_storage::{AppendError, AppendInfo, Log, LogConfig, LogManager, ProducerError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::BrokerConfig;
use sluice_protocol::ErrorCode;

/// The topic holding the metadata log; it is never a partition log of the replica manager.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// One partition this broker hosts.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub index: i32,
    /// The topic's id.
    pub topic_id: Uuid,
    /// True for internal topics (`__consumer_offsets`, `__transaction_state`), which clients may not produce to.
    pub internal: bool,
    /// True when the topic's `cleanup.policy` includes `compact` (every record then needs a key).
    compacted: AtomicBool,
    /// The partition log.
    pub log: Arc<Log>,
    leader_epoch: AtomicI32,
    min_insync_replicas: AtomicI32,
    isr_size: AtomicI32,
    /// Log end offset after the latest append.
    appended: watch::Sender<i64>,
    /// Broker-wide append counter shared by every partition.
    any_append: Arc<watch::Sender<u64>>,
}

/// Why a producer's batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The log refused the batch.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The batch's sequence does not follow the producer's last one (`OUT_OF_ORDER_SEQUENCE_NUMBER`).
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    /// The batch's producer epoch is older than the producer's current one (`INVALID_PRODUCER_EPOCH`).
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("topic", &self.topic)
            .field("index", &self.index)
            .field("leader_epoch", &self.leader_epoch())
            .finish_non_exhaustive()
    }
}

impl Partition {
    /// The current leader epoch (from the metadata image).
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// True when the topic's `cleanup.policy` includes `compact`.
    pub fn is_compacted(&self) -> bool {
        self.compacted.load(Ordering::Acquire)
    }

    /// `min.insync.replicas` in force for this partition's topic.
    pub fn min_insync_replicas(&self) -> i32 {
        self.min_insync_replicas.load(Ordering::Acquire)
    }

    /// Size of the in-sync replica set.
    pub fn isr_size(&self) -> i32 {
        self.isr_size.load(Ordering::Acquire)
    }

    /// Receives the log end offset after every append to this partition (and on creation); a fetch waiting for
    /// data awaits `changed()` on it.
    pub fn subscribe_appends(&self) -> watch::Receiver<i64> {
        self.appended.subscribe()
    }

    /// Appends producer batches as leader (see `Log::append_as_leader`) and advances the high watermark: with
    /// ISR = {this broker} the high watermark is the log end offset. Wakes waiters on success.
    ///
    /// May fsync when the topic has `flush.messages` set: call it from a blocking context then (see
    /// [`Partition::append_may_block`]).
    pub fn append_as_leader(
        &self,
        batches: &mut [u8],
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let info = self
            .log
            .append_as_leader(batches, self.leader_epoch(), now_ms)?;
        let leo = self.log.log_end_offset();
        if self.isr_size() <= 1 {
            self.log.set_high_watermark(leo);
        }
        self.appended.send_replace(leo);
        self.any_append.send_modify(|n| *n = n.wrapping_add(1));
        Ok(info)
    }

    /// Appends one producer batch, enforcing idempotence for batches with a producer id (KIP-98): the log's
    /// producer state (`sluice_storage::producer_state`, rebuilt from snapshots and batch headers on open, so it
    /// survives a restart) refuses an older producer epoch or a sequence that does not follow the producer's last
    /// one, and a retry of one of the producer's last 5 batches is answered with the original offsets without
    /// appending again. A producer the partition does not know (new or expired) may start at any sequence, as in
    /// Kafka.
    pub fn append_producer_batch(
        &self,
        batch: &mut [u8],
        now_ms: i64,
    ) -> Result<AppendInfo, ProduceError> {
        match self.append_as_leader(batch, now_ms) {
            Ok(info) => Ok(info),
            Err(AppendError::DuplicateSequence {
                base_offset,
                last_offset,
                max_timestamp_ms,
                ..
            }) => Ok(AppendInfo {
                base_offset,
                last_offset,
                max_timestamp_ms,
                log_append_time_ms: -1,
                record_count: (last_offset - base_offset + 1).max(0) as u64,
                log_start_offset: self.log.log_start_offset(),
            }),
            Err(AppendError::Producer(e @ ProducerError::OutOfOrderSequence { .. })) => {
                Err(ProduceError::OutOfOrderSequence(e.to_string()))
            }
            Err(AppendError::Producer(e @ ProducerError::InvalidProducerEpoch { .. })) => {
                Err(ProduceError::InvalidProducerEpoch(e.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The leader epoch of the batch holding `offset`, from the leader-epoch cache (`None` when the cache has
    /// no epoch starting at or before it). A binary search over `Log::end_offset_for_epoch`, which is monotonic
    /// in the requested epoch.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let latest = self.log.latest_epoch()?;
        if latest < 0 {
            return None;
        }
        // Smallest requested epoch whose (floor epoch's) end offset lies beyond `offset`.
        let (mut lo, mut hi) = (0i32, latest);
        let mut found = None;
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            match self.log.end_offset_for_epoch(mid) {
                Some((epoch, end)) if epoch >= 0 && end > offset => {
                    found = Some(epoch);
                    if mid == 0 {
                        break;
                    }
                    hi = mid - 1;
                }
                _ => lo = mid + 1,
            }
        }
        found.or(Some(latest).filter(|_| offset >= self.log.log_start_offset()))
    }

    /// True when an append may fsync (the topic forces flushes by message count), so it must not run on an
    /// async worker thread.
    pub fn append_may_block(&self) -> bool {
        self.log.config().flush_messages.is_some()
    }
}

/// The partitions this broker hosts, keyed by (topic, partition).
pub struct ReplicaManager {
    config: Arc<BrokerConfig>,
    logs: Arc<LogManager>,
    image: watch::Receiver<Arc<MetadataImage>>,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    /// Serializes log creation and deletion (never held across an `.await`).
    changes: Mutex<()>,
    any_append: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for ReplicaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaManager")
            .field("partitions", &self.partitions.read().len())
            .finish_non_exhaustive()
    }
}

impl ReplicaManager {
    /// A replica manager over `logs` that follows the metadata image published on `image`.
    pub fn new(
        config: Arc<BrokerConfig>,
        logs: Arc<LogManager>,
        image: watch::Receiver<Arc<MetadataImage>>,
    ) -> ReplicaManager {
        let (any_append, _) = watch::channel(0u64);
        ReplicaManager {
            config,
            logs,
            image,
            partitions: RwLock::new(HashMap::new()),
            changes: Mutex::new(()),
            any_append: Arc::new(any_append),
        }
    }

    /// Receives a counter bumped after every append to any partition: a fetch waiting on many partitions awaits
    /// `changed()` on it and then re-checks its partitions.
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.any_append.subscribe()
    }

    /// The latest metadata image this replica manager has seen.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// The hosted partition `topic`-`partition`, creating its log if the image has it and the log is not open yet
    /// (so a topic is writable as soon as the controller committed it). Errors are Kafka error codes:
    /// UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, KAFKA_STORAGE_ERROR.
    pub(crate) fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, i16> {
        let image = self.image();
        let (topic_image, _) = self.lookup(&image, topic, partition)?;
        if let Some(p) = self.partitions.read().get(&(topic.to_string(), partition)) {
            if p.topic_id == topic_image.id {
                return Ok(p.clone());
            }
        }
        // Slow path, under the lock and against the latest image: a reconcile may have run since the lookup
        // above, and a log must never be created from an image older than the one reconciled last.
        let _guard = self.changes.lock();
        let image = self.image();
        let (topic_image, registration) = self.lookup(&image, topic, partition)?;
        self.ensure_partition(topic_image, partition, registration)
            .map_err(|e| {
                tracing::error!(topic, partition, error = %e, "cannot open partition log");
                ErrorCode::KafkaStorageError.code()
            })
    }

    /// The image's topic and partition registration, if this node leads the partition.
    fn lookup<'a>(
        &self,
        image: &'a MetadataImage,
        topic: &str,
        partition: i32,
    ) -> Result<
        (
            &'a sluice_metadata::TopicImage,
            &'a sluice_metadata::PartitionRegistration,
        ),
        i16,
    > {
        let Some(topic_image) = image.topic(topic) else {
            return Err(ErrorCode::UnknownTopicOrPartition.code());
        };
        let Some(registration) = usize::try_from(partition)
            .ok()
            .and_then(|i| topic_image.partitions.get(i))
        else {
            return Err(ErrorCode::UnknownTopicOrPartition.code());
        };
        if registration.leader != self.config.node_id {
            return Err(ErrorCode::NotLeaderOrFollower.code());
        }
        Ok((topic_image, registration))
    }

    /// Every hosted partition (a snapshot).
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    /// Creates (or re-creates after a delete + re-create of the topic) the partition and returns it; refreshes its
    /// epoch, ISR size and config. Must be called with `changes` held.
    fn ensure_partition(
        &self,
        topic_image: &sluice_metadata::TopicImage,
        partition: i32,
        registration: &sluice_metadata::PartitionRegistration,
    ) -> Result<Arc<Partition>, sluice_storage::StorageError> {
        let key = (topic_image.name.clone(), partition);
        let log_config = self.config.log_config(&topic_image.configs);
        let min_isr = self.config.min_insync_replicas_for(&topic_image.configs);
        let isr_size = i32::try_from(registration.isr.len()).unwrap_or(i32::MAX);
        let compacted = topic_image
            .configs
            .get("cleanup.policy")
            .is_some_and(|policy| policy.split(',').any(|p| p.trim() == "compact"));
        let existing = self.partitions.read().get(&key).cloned();
        if let Some(p) = existing {
            if p.topic_id == topic_image.id {
                p.leader_epoch
                    .store(registration.leader_epoch, Ordering::Release);
                p.min_insync_replicas.store(min_isr, Ordering::Release);
                p.isr_size.store(isr_size, Ordering::Release);
                p.compacted.store(compacted, Ordering::Release);
                if p.log.config() != log_config {
                    p.log.update_config(log_config);
                }
                return Ok(p);
            }
            // Same name, new topic id: the old topic was deleted and a new one created.
            tracing::info!(topic = %key.0, partition, "topic re-created; deleting the old log");
            self.partitions.write().remove(&key);
            self.logs.delete(&key.0, partition)?;
        }
        let log = self
            .logs
            .get_or_create(&key.0, partition, log_config.clone())?;
        if log.config() != log_config {
            log.update_config(log_config);
        }
        let leo = log.log_end_offset();
        // A sole in-sync replica has everything it holds committed; with followers in the ISR, the high watermark
        // read back from the checkpoint stands until they report their log end offsets.
        if registration.isr.len() <= 1 {
            log.set_high_watermark(leo);
        }
        let (appended, _) = watch::channel(leo);
        let p = Arc::new(Partition {
            topic: key.0.clone(),
            index: partition,
            topic_id: topic_image.id,
            internal: topic_image.internal,
            compacted: AtomicBool::new(compacted),
            log,
            leader_epoch: AtomicI32::new(registration.leader_epoch),
            min_insync_replicas: AtomicI32::new(min_isr),
            isr_size: AtomicI32::new(isr_size),
            appended,
            any_append: self.any_append.clone(),
        });
        self.partitions.write().insert(key, p.clone());
        Ok(p)
    }

    /// Brings the hosted partitions in line with `image`: opens logs for partitions this node leads, updates epochs
    /// and configs, and deletes the logs of partitions no longer in the image. At start-up (`startup`), logs on
    /// disk whose topic is absent from the image are deleted too, unless the image has no topics at all (a wrong
    /// `metadata.log.dir` must not wipe the data).
    pub fn reconcile(&self, image: &MetadataImage, startup: bool) {
        let _guard = self.changes.lock();
        // Never reconcile against an image older than the latest one: a log created on first use from the latest
        // image must not be deleted by a reconciliation that started from an earlier image.
        let latest = self.image();
        let image = if latest.offset > image.offset {
            &*latest
        } else {
            image
        };
        let node_id = self.config.node_id;
        let mut wanted: BTreeMap<(String, i32), Uuid> = BTreeMap::new();
        for topic in image.topics() {
            for (index, registration) in topic.partitions.iter().enumerate() {
                let Ok(partition) = i32::try_from(index) else {
                    continue;
                };
                if registration.leader == node_id || registration.replicas.contains(&node_id) {
                    wanted.insert((topic.name.clone(), partition), topic.id);
                    if registration.leader == node_id {
                        if let Err(e) = self.ensure_partition(topic, partition, registration) {
                            tracing::error!(topic = %topic.name, partition, error = %e, "cannot open partition log");
                        }
                    }
                }
            }
        }
        let stale: Vec<(String, i32)> = self
            .partitions
            .read()
            .iter()
            .filter(|(key, p)| wanted.get(*key) != Some(&p.topic_id))
            .map(|(key, _)| key.clone())
            .collect();
        for (topic, partition) in stale {
            self.partitions.write().remove(&(topic.clone(), partition));
            // A partition of a re-created topic was replaced by `ensure_partition` above; only delete if gone.
            if wanted.contains_key(&(topic.clone(), partition)) {
                continue;
            }
            tracing::info!(%topic, partition, "partition no longer in the metadata image; deleting its log");
            if let Err(e) = self.logs.delete(&topic, partition) {
                tracing::error!(%topic, partition, error = %e, "cannot delete partition log");
            }
        }
        if startup {
            let on_disk = self.logs.partitions();
            let strays: Vec<_> = on_disk
                .into_iter()
                .filter(|(t, p)| t != METADATA_TOPIC && !wanted.contains_key(&(t.clone(), *p)))
                .collect();
            if !strays.is_empty() && image.topics().next().is_none() {
                tracing::warn!(
                    count = strays.len(),
                    "logs on disk but no topics in the metadata image; leaving them untouched (check metadata.log.dir)"
                );
            } else {
                for (topic, partition) in strays {
                    tracing::warn!(%topic, partition, "stray log: its topic is not in the metadata image; deleting it");
                    if let Err(e) = self.logs.delete(&topic, partition) {
                        tracing::error!(%topic, partition, error = %e, "cannot delete stray log");
                    }
                }
            }
        }
    }

    /// A receiver of the controller's metadata images (for the reconciler task).
    pub(crate) fn image_receiver(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    /// The default log config for a topic with these overrides.
    pub fn log_config_for(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        self.config.log_config(overrides)
    }
}
