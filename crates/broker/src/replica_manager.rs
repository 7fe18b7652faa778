//! The replica manager: the partitions this broker hosts (leader or follower), each a [`Partition`] over a storage
//! `Log`, kept in line with the controller's metadata image. Each new image is compared with the one reconciled
//! before it ([`LocalChanges`]): partitions whose registration (or topic config) changed get `make_leader` or
//! `make_follower`, partitions no longer hosted here lose their log. Replication (fetching from the leader, ISR
//! changes) will live here too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use sluice_metadata::{MetadataImage, PartitionRegistration, TopicImage};
use sluice_storage::{LogConfig, LogManager};
use tokio::sync::watch;
use uuid::Uuid;

pub use crate::partition::{Partition, PartitionState, ProduceError, Replicated, Role};
use crate::replication_quota::{self, Side};

use crate::config::BrokerConfig;

/// The topic holding the metadata log; it is never a partition log of the replica manager.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// Why a partition cannot be served here; `apis/` maps it to a Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// The image has no such topic or partition.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// This broker does not lead the partition (it follows it, or holds no replica of it).
    #[error("this broker is not the leader of the partition")]
    NotLeader,
    /// The partition's log could not be opened.
    #[error("the partition log could not be opened")]
    Storage,
}

/// What changed for this node between two images (Kafka's `LocalReplicaChanges`): the partitions it now leads or
/// follows whose registration, topic id or topic configs changed, and the partitions it no longer hosts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LocalChanges {
    /// (topic, partition) this node leads, new or changed.
    pub leaders: Vec<(String, i32)>,
    /// (topic, partition) this node follows, new or changed.
    pub followers: Vec<(String, i32)>,
    /// (topic, partition, topic id) this node hosted and no longer does (topic deleted, or moved off it).
    pub deleted: Vec<(String, i32, Uuid)>,
}

impl LocalChanges {
    /// The changes for `node_id` from `prev` to `next`.
    pub fn between(prev: &MetadataImage, next: &MetadataImage, node_id: i32) -> LocalChanges {
        let hosted =
            |r: &PartitionRegistration| r.leader == node_id || r.replicas.contains(&node_id);
        let mut changes = LocalChanges::default();
        for topic in next.topics() {
            let before = prev.topic(&topic.name).filter(|t| t.id == topic.id);
            let configs_changed = before.is_none_or(|b| b.configs != topic.configs);
            for (index, registration) in topic.partitions.iter().enumerate() {
                let Ok(partition) = i32::try_from(index) else {
                    continue;
                };
                if !hosted(registration) {
                    continue;
                }
                let unchanged = !configs_changed
                    && before.and_then(|b| b.partitions.get(index)) == Some(registration);
                if unchanged {
                    continue;
                }
                let key = (topic.name.clone(), partition);
                if registration.leader == node_id {
                    changes.leaders.push(key);
                } else {
                    changes.followers.push(key);
                }
            }
        }
        for topic in prev.topics() {
            let after = next.topic(&topic.name).filter(|t| t.id == topic.id);
            for (index, registration) in topic.partitions.iter().enumerate() {
                let Ok(partition) = i32::try_from(index) else {
                    continue;
                };
                let still = after
                    .and_then(|a| a.partitions.get(index))
                    .is_some_and(&hosted);
                if hosted(registration) && !still {
                    changes
                        .deleted
                        .push((topic.name.clone(), partition, topic.id));
                }
            }
        }
        changes
    }

    /// True when nothing changed for this node.
    pub fn is_empty(&self) -> bool {
        self.leaders.is_empty() && self.followers.is_empty() && self.deleted.is_empty()
    }
}

/// The partitions this broker hosts, keyed by (topic, partition).
pub struct ReplicaManager {
    config: Arc<BrokerConfig>,
    logs: Arc<LogManager>,
    image: watch::Receiver<Arc<MetadataImage>>,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    /// Serializes log creation, deletion and state changes, and holds the image reconciled last (never held
    /// across an `.await`).
    changes: Mutex<Arc<MetadataImage>>,
    /// Set by [`ReplicaManager::activate`]: until then this broker hosts nothing (see there).
    active: watch::Sender<bool>,
    /// Serializes [`ReplicaManager::activate`].
    activation: Mutex<()>,
    /// The offset of the image reconciled last, published after its changes are applied (the replica fetchers
    /// wake on it: the image itself is published before the partitions change role).
    applied: watch::Sender<i64>,
    /// The time (ms) a new leader's in-sync followers count as caught up from.
    clock: fn() -> i64,
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
        let empty = Arc::new(MetadataImage::empty(image.borrow().cluster_id.clone(), -1));
        ReplicaManager {
            config,
            logs,
            image,
            partitions: RwLock::new(HashMap::new()),
            changes: Mutex::new(empty),
            active: watch::channel(false).0,
            activation: Mutex::new(()),
            applied: watch::channel(-1).0,
            clock: crate::apis::now_ms,
        }
    }

    /// The same, reading the time (ms) from `clock` (the replication simulation's virtual clock).
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, clock: fn() -> i64) -> ReplicaManager {
        self.clock = clock;
        self
    }

    /// Starts hosting partitions: reconciles with the latest image, deleting the logs on disk it does not place on
    /// this node (see [`ReplicaManager::reconcile`]). Call it once this broker's registration is committed and its
    /// image has caught up with it, as Kafka's broker installs its metadata publishers only after the controller
    /// says it caught up: the image it had before the restart may still name it leader at an epoch its followers
    /// hold more records of (a leader restarted within its old session, having lost its unflushed tail), and
    /// leading there would make them truncate acknowledged records. By the time its new registration is committed,
    /// the controller has fenced the old incarnation and moved its leaderships away with a new leader epoch.
    /// Calling it again does nothing.
    pub fn activate(&self) {
        // Under the lock, so that nothing is looked up between the flag and the first reconciliation.
        let _guard = self.activation.lock();
        if *self.active.borrow() {
            return;
        }
        tracing::info!(
            offset = self.image().offset,
            "registered and caught up with the metadata log: hosting partitions"
        );
        self.apply(&self.image(), true);
        self.active.send_replace(true);
        // An image published meanwhile found the manager inactive: apply it now.
        self.apply(&self.image(), false);
    }

    /// True once [`ReplicaManager::activate`] ran.
    pub fn is_active(&self) -> bool {
        *self.active.borrow()
    }

    /// Waits until [`ReplicaManager::activate`] ran; false if `timeout` passed first.
    pub async fn wait_active(&self, timeout: std::time::Duration) -> bool {
        let mut active = self.active.subscribe();
        tokio::time::timeout(timeout, active.wait_for(|a| *a))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The latest metadata image this replica manager has seen.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// The hosted partition `topic`-`partition` when this broker leads it, creating its log and applying its
    /// registration if the image has it and that is not done yet (so a topic is writable as soon as the controller
    /// committed it).
    pub(crate) fn partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Partition>, ReplicaError> {
        let image = self.image();
        let (topic_image, registration) = self.lookup(&image, topic, partition)?;
        if !self.is_active() {
            return Err(ReplicaError::NotLeader);
        }
        if let Some(p) = self.partitions.read().get(&(topic.to_string(), partition)) {
            if p.topic_id == topic_image.id && p.is_leader() {
                return Ok(p.clone());
            }
        }
        if registration.leader != self.config.node_id {
            return Err(ReplicaError::NotLeader);
        }
        // Slow path, under the lock and against the latest image: a reconcile may have run since the lookup
        // above, and a log must never be created from an image older than the one reconciled last.
        let _guard = self.changes.lock();
        let image = self.image();
        let (topic_image, registration) = self.lookup(&image, topic, partition)?;
        let p = self
            .ensure_partition(topic_image, partition, registration)
            .map_err(|e| {
                tracing::error!(topic, partition, error = %e, "cannot open partition log");
                ReplicaError::Storage
            })?;
        if p.is_leader() {
            Ok(p)
        } else {
            Err(ReplicaError::NotLeader)
        }
    }

    /// The hosted partition `topic`-`partition` in either role (KIP-392: followers serve consumer fetches): what
    /// [`ReplicaManager::partition`] returns when this broker leads it, else the follower replica it hosts for the
    /// image's topic (the same topic id). Errors as [`ReplicaManager::partition`] when it hosts neither.
    pub(crate) fn hosted_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Partition>, ReplicaError> {
        match self.partition(topic, partition) {
            Err(ReplicaError::NotLeader) if self.is_active() => {
                let image = self.image();
                let (topic_image, _) = self.lookup(&image, topic, partition)?;
                self.partitions
                    .read()
                    .get(&(topic.to_string(), partition))
                    .filter(|p| p.topic_id == topic_image.id && !p.is_leader())
                    .cloned()
                    .ok_or(ReplicaError::NotLeader)
            }
            other => other,
        }
    }

    /// The image's topic and partition registration, if this node hosts a replica of the partition.
    fn lookup<'a>(
        &self,
        image: &'a MetadataImage,
        topic: &str,
        partition: i32,
    ) -> Result<(&'a TopicImage, &'a PartitionRegistration), ReplicaError> {
        let Some(topic_image) = image.topic(topic) else {
            return Err(ReplicaError::UnknownTopicOrPartition);
        };
        let Some(registration) = usize::try_from(partition)
            .ok()
            .and_then(|i| topic_image.partitions.get(i))
        else {
            return Err(ReplicaError::UnknownTopicOrPartition);
        };
        let node_id = self.config.node_id;
        if registration.leader != node_id && !registration.replicas.contains(&node_id) {
            return Err(ReplicaError::NotLeader);
        }
        Ok((topic_image, registration))
    }

    /// Every hosted partition (a snapshot).
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    /// Creates (or re-creates after a delete + re-create of the topic) the partition, applies its registration
    /// (`make_leader` or `make_follower`) and topic configs, and returns it. Must be called with `changes` held.
    fn ensure_partition(
        &self,
        topic_image: &TopicImage,
        partition: i32,
        registration: &PartitionRegistration,
    ) -> Result<Arc<Partition>, sluice_storage::StorageError> {
        let key = (topic_image.name.clone(), partition);
        let log_config = self.config.log_config(&topic_image.configs);
        let min_isr = self.config.min_insync_replicas_for(&topic_image.configs);
        // The effective `cleanup.policy` (the topic's, else `log.cleanup.policy`) decides the produce-side key check.
        let compacted = log_config.compact;
        let existing = self.partitions.read().get(&key).cloned();
        let p = match existing {
            Some(p) if p.topic_id == topic_image.id => p,
            other => {
                if other.is_some() {
                    // Same name, new topic id: the old topic was deleted and a new one created.
                    tracing::info!(topic = %key.0, partition, "topic re-created; deleting the old log");
                    self.partitions.write().remove(&key);
                    self.logs.delete(&key.0, partition)?;
                }
                let log = self
                    .logs
                    .get_or_create(&key.0, partition, log_config.clone())?;
                let p = Arc::new(Partition::new(
                    key.0.clone(),
                    partition,
                    topic_image.id,
                    topic_image.internal,
                    log,
                ));
                self.partitions.write().insert(key, p.clone());
                p
            }
        };
        if p.log.config() != log_config {
            p.log.update_config(log_config);
        }
        p.set_compacted(compacted);
        for side in [Side::Leader, Side::Follower] {
            let throttled = replication_quota::is_throttled(
                &topic_image.configs,
                side,
                partition,
                self.config.node_id,
            );
            p.set_replication_throttled(side, throttled);
        }
        let node_id = self.config.node_id;
        let state = p.state();
        let same = state.leader == registration.leader
            && state.leader_epoch == registration.leader_epoch
            && state.partition_epoch == registration.partition_epoch
            && state.isr == registration.isr
            && state.replicas == registration.replicas;
        if same {
            if state.min_insync_replicas != min_isr {
                p.set_min_insync_replicas(min_isr);
            }
        } else if registration.leader == node_id {
            p.make_leader_at(node_id, registration, min_isr, (self.clock)());
        } else {
            p.make_follower(registration, min_isr);
        }
        Ok(p)
    }

    /// Brings the hosted partitions in line with `image` (or the latest image, if newer): applies the
    /// [`LocalChanges`] since the image reconciled last (`make_leader`/`make_follower` on new or changed
    /// partitions, logs deleted for partitions no longer hosted here). Does nothing before
    /// [`ReplicaManager::activate`].
    pub fn reconcile(&self, image: &Arc<MetadataImage>) {
        if self.is_active() {
            self.apply(image, false);
        }
    }

    /// [`ReplicaManager::reconcile`]; at start-up (`startup`), logs on disk that the image does not place on this
    /// node are deleted too, unless the image has no topics at all (a wrong `metadata.log.dir` must not wipe the
    /// data).
    fn apply(&self, image: &Arc<MetadataImage>, startup: bool) {
        let mut last = self.changes.lock();
        // Never reconcile against an image older than the latest one: a log created on first use from the latest
        // image must not be deleted by a reconciliation that started from an earlier image.
        let latest = self.image();
        let image = if latest.offset > image.offset {
            &latest
        } else {
            image
        };
        let node_id = self.config.node_id;
        let changes = LocalChanges::between(&last, image, node_id);
        if !changes.is_empty() {
            tracing::debug!(
                leaders = changes.leaders.len(),
                followers = changes.followers.len(),
                deleted = changes.deleted.len(),
                offset = image.offset,
                "applying metadata changes for this broker"
            );
        }
        for (topic, partition) in changes.leaders.iter().chain(&changes.followers) {
            let Ok((topic_image, registration)) = self.lookup(image, topic, *partition) else {
                continue;
            };
            if let Err(e) = self.ensure_partition(topic_image, *partition, registration) {
                tracing::error!(%topic, partition, error = %e, "cannot open partition log");
            }
        }
        for (topic, partition, topic_id) in &changes.deleted {
            let key = (topic.clone(), *partition);
            let hosted = self.partitions.read().get(&key).cloned();
            if let Some(p) = hosted {
                if p.topic_id != *topic_id {
                    // Replaced by a re-created topic's partition above.
                    continue;
                }
                self.partitions.write().remove(&key);
            }
            tracing::info!(%topic, partition, "partition no longer hosted here; deleting its log");
            if let Err(e) = self.logs.delete(topic, *partition) {
                tracing::error!(%topic, partition, error = %e, "cannot delete partition log");
            }
        }
        if startup {
            let hosted = |t: &str, p: i32| {
                image
                    .topic(t)
                    .and_then(|topic| {
                        usize::try_from(p)
                            .ok()
                            .and_then(|i| topic.partitions.get(i))
                    })
                    .is_some_and(|r| r.leader == node_id || r.replicas.contains(&node_id))
            };
            let strays: Vec<_> = self
                .logs
                .partitions()
                .into_iter()
                .filter(|(t, p)| t != METADATA_TOPIC && !hosted(t, *p))
                .collect();
            if !strays.is_empty() && image.topics().next().is_none() {
                tracing::warn!(
                    count = strays.len(),
                    "logs on disk but no topics in the metadata image; leaving them untouched (check metadata.log.dir)"
                );
            } else {
                for (topic, partition) in strays {
                    tracing::warn!(%topic, partition, "stray log: the metadata image does not place it here; deleting it");
                    if let Err(e) = self.logs.delete(&topic, partition) {
                        tracing::error!(%topic, partition, error = %e, "cannot delete stray log");
                    }
                }
            }
        }
        *last = image.clone();
        self.applied.send_replace(image.offset);
    }

    /// A receiver that changes each time a metadata image has been applied to the hosted partitions (its value: the
    /// image's offset), so a waiter sees the partitions' new roles.
    pub(crate) fn applied_receiver(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
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
