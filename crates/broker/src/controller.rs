//! The controller driver: runs the pure controller logic of `sluice-metadata` on one dedicated thread, appends
//! the records to the metadata log, applies them to the image and publishes each new image.
//!
//! Operations are serialized through a bounded queue to the `sluice-controller` thread, as Kafka's
//! `QuorumController` event queue: the thread reads the current image, computes `(records, response)`,
//! replays the records onto a delta (so a record that would not apply is never written), appends them as
//! one fsynced batch, and only then publishes the image and answers. Blocking file I/O therefore never runs
//! on the async workers, and no lock is held across an `.await`.

use std::path::PathBuf;
use std::sync::Arc;

use sluice_metadata::controller::{
    self as logic, AlterConfigsOutcome, AlterConfigsResource, ControllerDefaults, ControllerResult,
    IncrementalAlterConfigsResource,
};
use sluice_metadata::error::code;
use sluice_metadata::log::{self as mlog, FileLogOptions, FileMetadataLog, LogError, MetadataLog};
use sluice_metadata::{
    BrokerRegistration, CreatePartitions, CreatePartitionsOutcome, CreateTopicOutcome,
    DeleteTopicOutcome, DeleteTopicTarget, MetadataDelta, MetadataImage, NewTopic, ReplayError,
    Uuid,
};
use tokio::sync::{mpsc, oneshot, watch};

/// A snapshot is written after this many records since the previous one.
pub const SNAPSHOT_INTERVAL_RECORDS: u64 = 1000;
/// How long opening waits for another instance to release the metadata log.
const LOCK_WAIT_MS: u64 = 5_000;
/// Operations waiting for the controller thread beyond this make callers wait (back-pressure).
const QUEUE_DEPTH: usize = 256;

/// Settings for [`Controller::open`].
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This node's id (the controller id too, single node).
    pub node_id: i32,
    /// The metadata dir (`metadata.log.dir`).
    pub metadata_dir: PathBuf,
    /// `num.partitions`, used when a request says -1.
    pub num_partitions: i32,
    /// `default.replication.factor`, used when a request says -1.
    pub default_replication_factor: i16,
    /// `cluster.id` if configured; otherwise the one in `meta.properties`, or a new one.
    pub cluster_id: Option<String>,
}

/// The controller failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The metadata log could not be read or written.
    #[error("metadata log: {0}")]
    Log(#[from] LogError),
    /// The controller's records did not apply to its own image (a bug); nothing was written.
    #[error("controller produced records that do not apply: {0}")]
    Replay(#[from] ReplayError),
    /// The configured `cluster.id` differs from the one stored in `meta.properties`.
    #[error("cluster.id {configured} does not match {stored} stored in meta.properties")]
    ClusterIdMismatch {
        /// The configured id.
        configured: String,
        /// The stored id.
        stored: String,
    },
    /// The controller thread could not be started, or it has stopped.
    #[error("the controller is not running: {0}")]
    Stopped(String),
}

type Job = Box<dyn FnOnce(&mut State) + Send>;

/// What the controller thread owns.
struct State {
    log: Box<dyn MetadataLog>,
    image: Arc<MetadataImage>,
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
}

impl State {
    /// Applies a controller result: replay, append, publish. The records are empty for validate-only and
    /// no-op requests, which then change nothing.
    fn commit<T>(&mut self, result: ControllerResult<T>) -> Result<T, ControllerError> {
        if result.records.is_empty() {
            return Ok(result.response);
        }
        let base_offset = self.log.next_offset();
        let mut delta = MetadataDelta::new(&self.image);
        for (i, record) in result.records.iter().enumerate() {
            delta.replay(base_offset + i as i64, record)?;
        }
        self.log.append(&result.records)?;
        let image = Arc::new(delta.apply());
        self.image = image.clone();
        self.publisher.send_replace(image.clone());
        if let Err(e) = self.log.maybe_snapshot(&image) {
            // The records are durable in the log; a failed snapshot only costs replay time at start-up.
            tracing::warn!("metadata snapshot failed: {e}");
        }
        Ok(result.response)
    }
}

/// A random topic id whose URL-safe base64 form does not start with `-` (Kafka's `Uuid.randomUuid` rule, so the
/// id can be passed to command-line tools without reading as an option).
fn new_topic_id() -> Uuid {
    loop {
        let id = Uuid::new_v4();
        // The first base64 character is the top 6 bits of the first byte; '-' is index 62.
        if id.as_bytes()[0] >> 2 != 62 {
            return id;
        }
    }
}

/// The controller handle; cheap to clone, shared by every connection task.
#[derive(Clone)]
pub struct Controller {
    thread: Arc<ControllerThread>,
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    defaults: ControllerDefaults,
}

/// The queue to the controller thread. Dropping the last handle closes the queue and joins the thread, so the
/// metadata log (and its lock) is closed once the last `Controller` is gone: a restart in the same process can
/// open it again at once.
struct ControllerThread {
    jobs: Option<mpsc::Sender<Job>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ControllerThread {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("the controller thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("offset", &self.image().offset)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Opens (creating if absent) the metadata log under `config.metadata_dir`, replays snapshot + records into
    /// the image and starts the controller thread. Blocking: call it from `spawn_blocking` in async code.
    pub fn open(config: ControllerConfig) -> Result<Controller, ControllerError> {
        let stored = mlog::load_or_create_meta_properties_with(
            &config.metadata_dir,
            config.node_id,
            config.cluster_id.as_deref(),
        )?;
        if let Some(configured) = &config.cluster_id {
            if configured != &stored {
                return Err(ControllerError::ClusterIdMismatch {
                    configured: configured.clone(),
                    stored,
                });
            }
        }
        let options = FileLogOptions {
            dir: config.metadata_dir.clone(),
            node_id: config.node_id,
            snapshot_interval_records: SNAPSHOT_INTERVAL_RECORDS,
            lock_wait_ms: LOCK_WAIT_MS,
        };
        let (log, image, report) =
            FileMetadataLog::open(&options, MetadataImage::empty(stored, config.node_id))?;
        tracing::info!(
            snapshot_offset = ?report.snapshot_offset,
            records_replayed = report.records_replayed,
            truncated_bytes = report.truncated_bytes,
            topics = image.topic_count(),
            "metadata log recovered"
        );
        let defaults = ControllerDefaults {
            num_partitions: config.num_partitions,
            default_replication_factor: config.default_replication_factor,
        };
        Self::start(Box::new(log), image, defaults)
    }

    /// Starts a controller over any metadata log (tests use [`mlog::MemoryMetadataLog`]).
    pub fn start(
        log: Box<dyn MetadataLog>,
        image: MetadataImage,
        defaults: ControllerDefaults,
    ) -> Result<Controller, ControllerError> {
        let image = Arc::new(image);
        let (publisher, _) = watch::channel(image.clone());
        let publisher = Arc::new(publisher);
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let mut state = State {
            log,
            image,
            publisher: publisher.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("sluice-controller".into())
            .spawn(move || {
                // Ends when every Controller handle is dropped.
                while let Some(job) = queue.blocking_recv() {
                    job(&mut state);
                }
            })
            .map_err(|e| ControllerError::Stopped(e.to_string()))?;
        Ok(Controller {
            thread: Arc::new(ControllerThread {
                jobs: Some(jobs),
                handle: Some(handle),
            }),
            publisher,
            defaults,
        })
    }

    /// Runs `op` on the controller thread against the current image and commits its records.
    async fn run<T, F>(&self, op: F) -> Result<T, ControllerError>
    where
        T: Send + 'static,
        F: FnOnce(&MetadataImage) -> ControllerResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |state: &mut State| {
            let result = op(&state.image);
            let _ = tx.send(state.commit(result));
        });
        let jobs = self
            .thread
            .jobs
            .as_ref()
            .ok_or_else(|| ControllerError::Stopped("controller closed".into()))?;
        jobs.send(job)
            .await
            .map_err(|_| ControllerError::Stopped("controller thread exited".into()))?;
        rx.await.map_err(|_| {
            ControllerError::Stopped("controller thread dropped the operation".into())
        })?
    }

    /// The broker registers itself at start-up. Idempotent across restarts (an identical registration writes nothing).
    pub async fn register_broker(
        &self,
        registration: BrokerRegistration,
    ) -> Result<(), ControllerError> {
        let node_id = registration.node_id;
        self.run(move |image| {
            let result = logic::register_broker(image, registration, false);
            ControllerResult {
                records: result.records,
                response: (),
            }
        })
        .await?;
        // Single node: the broker is caught up by construction; unfence it at once.
        self.run(move |image| {
            let epoch = image.brokers.get(&node_id).map_or(-1, |b| b.epoch);
            let result = logic::broker_heartbeat(
                image,
                logic::Heartbeat {
                    node_id,
                    broker_epoch: epoch,
                    current_metadata_offset: i64::MAX,
                    want_fence: false,
                    want_shut_down: false,
                },
            );
            ControllerResult {
                records: result.records,
                response: (),
            }
        })
        .await
    }

    /// The current metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.publisher.borrow().clone()
    }

    /// Fires after every committed change; the replica manager reconciles local logs against the image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.publisher.subscribe()
    }

    /// The defaults applied to -1 partition counts and replication factors.
    pub fn defaults(&self) -> ControllerDefaults {
        self.defaults
    }

    /// Creates topics (CreateTopics and Metadata auto-creation). -1 counts take the broker defaults. A metadata
    /// log failure is reported per topic as UNKNOWN_SERVER_ERROR, nothing having been created.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<CreateTopicOutcome> {
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        let defaults = self.defaults;
        let result = self
            .run(move |image| {
                logic::create_topics(image, defaults, &topics, validate_only, &mut new_topic_id)
            })
            .await;
        match result {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::error!("CreateTopics failed: {e}");
                names
                    .into_iter()
                    .map(|name| CreateTopicOutcome {
                        name,
                        error_code: code::UNKNOWN_SERVER_ERROR,
                        error_message: Some(format!("The metadata log could not be written: {e}")),
                        topic_id: Uuid::nil(),
                        num_partitions: -1,
                        replication_factor: -1,
                        configs: Vec::new(),
                    })
                    .collect()
            }
        }
    }

    /// Deletes topics by name or id (DeleteTopics).
    pub async fn delete_topics(
        &self,
        targets: Vec<DeleteTopicTarget>,
    ) -> Result<Vec<DeleteTopicOutcome>, ControllerError> {
        self.run(move |image| logic::delete_topics(image, &targets))
            .await
    }

    /// Adds partitions to existing topics (CreatePartitions).
    pub async fn create_partitions(
        &self,
        topics: Vec<CreatePartitions>,
        validate_only: bool,
    ) -> Result<Vec<CreatePartitionsOutcome>, ControllerError> {
        self.run(move |image| logic::create_partitions(image, &topics, validate_only))
            .await
    }

    /// Replaces the config overrides of resources (AlterConfigs).
    pub async fn alter_configs(
        &self,
        resources: Vec<AlterConfigsResource>,
        validate_only: bool,
    ) -> Result<Vec<AlterConfigsOutcome>, ControllerError> {
        self.run(move |image| logic::alter_configs(image, &resources, validate_only))
            .await
    }

    /// Applies config operations to resources (IncrementalAlterConfigs).
    pub async fn incremental_alter_configs(
        &self,
        resources: Vec<IncrementalAlterConfigsResource>,
        validate_only: bool,
    ) -> Result<Vec<AlterConfigsOutcome>, ControllerError> {
        self.run(move |image| logic::incremental_alter_configs(image, &resources, validate_only))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> ControllerConfig {
        ControllerConfig {
            node_id: 1,
            metadata_dir: dir.to_path_buf(),
            num_partitions: 3,
            default_replication_factor: 1,
            cluster_id: None,
        }
    }

    fn registration() -> BrokerRegistration {
        BrokerRegistration {
            node_id: 1,
            host: "localhost".into(),
            port: 9092,
            rack: None,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn creates_topics_publishes_images_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let controller = Controller::open(config(dir.path())).unwrap();
        controller.register_broker(registration()).await.unwrap();
        let mut changes = controller.subscribe();
        changes.borrow_and_update();
        let outcomes = controller
            .create_topics(vec![NewTopic::with_defaults("orders")], false)
            .await;
        assert_eq!(outcomes[0].error_code, 0, "{outcomes:?}");
        assert_eq!(outcomes[0].num_partitions, 3);
        assert!(changes.has_changed().unwrap());
        let image = controller.image();
        let topic = image.topic("orders").unwrap();
        assert_eq!(topic.id, outcomes[0].topic_id);
        assert_eq!(topic.partitions.len(), 3);
        assert_eq!(topic.partitions[0].leader, 1);
        let cluster_id = image.cluster_id.clone();
        assert_eq!(cluster_id.len(), 22);

        // validate_only writes nothing.
        let outcomes = controller
            .create_topics(vec![NewTopic::with_defaults("dry")], true)
            .await;
        assert_eq!(outcomes[0].error_code, 0);
        assert!(controller.image().topic("dry").is_none());
        drop(controller);

        let controller = Controller::open(config(dir.path())).unwrap();
        controller.register_broker(registration()).await.unwrap();
        let reopened = controller.image();
        assert_eq!(reopened.cluster_id, cluster_id);
        assert_eq!(reopened.topic("orders"), image.topic("orders"));
        assert_eq!(
            reopened.offset, image.offset,
            "re-registering the same broker writes nothing"
        );
    }

    /// A log whose appends fail, as a full disk would make them.
    struct FailingLog;

    impl MetadataLog for FailingLog {
        fn append(
            &mut self,
            _records: &[sluice_metadata::MetadataRecord],
        ) -> Result<i64, LogError> {
            Err(LogError::Io {
                context: "append".into(),
                source: std::io::Error::other("disk full"),
            })
        }
        fn next_offset(&self) -> i64 {
            0
        }
        fn maybe_snapshot(&mut self, _image: &MetadataImage) -> Result<bool, LogError> {
            Ok(false)
        }
    }

    #[tokio::test]
    async fn a_failed_append_changes_nothing_and_is_reported() {
        let mut image = MetadataImage::empty("c", 1);
        let mut delta = MetadataDelta::new(&image);
        delta
            .replay(
                0,
                &sluice_metadata::MetadataRecord::RegisterBroker(registration()),
            )
            .unwrap();
        image = delta.apply();
        let controller =
            Controller::start(Box::new(FailingLog), image, ControllerDefaults::default()).unwrap();
        let mut changes = controller.subscribe();
        changes.borrow_and_update();
        let outcomes = controller
            .create_topics(vec![NewTopic::with_defaults("t")], false)
            .await;
        assert_eq!(outcomes[0].error_code, code::UNKNOWN_SERVER_ERROR);
        assert!(controller.image().topic("t").is_none());
        assert!(!changes.has_changed().unwrap(), "nothing was published");
        // validate_only writes nothing, so it still answers.
        let outcomes = controller
            .create_topics(vec![NewTopic::with_defaults("t")], true)
            .await;
        assert_eq!(outcomes[0].error_code, 0);
    }

    #[test]
    fn topic_ids_never_start_with_a_dash_in_base64() {
        for _ in 0..2000 {
            assert_ne!(new_topic_id().as_bytes()[0] >> 2, 62);
        }
    }

    #[tokio::test]
    async fn rejects_a_different_configured_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        drop(Controller::open(config(dir.path())).unwrap());
        let other = ControllerConfig {
            cluster_id: Some("someOtherClusterId0000".into()),
            ..config(dir.path())
        };
        assert!(matches!(
            Controller::open(other),
            Err(ControllerError::ClusterIdMismatch { .. })
        ));
    }

    #[tokio::test]
    async fn admin_operations_go_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let controller = Controller::open(config(dir.path())).unwrap();
        controller.register_broker(registration()).await.unwrap();
        controller
            .create_topics(vec![NewTopic::with_defaults("t")], false)
            .await;
        let out = controller
            .create_partitions(
                vec![CreatePartitions {
                    name: "t".into(),
                    count: 5,
                    assignments: None,
                }],
                false,
            )
            .await
            .unwrap();
        assert_eq!(out[0].error, None);
        let out = controller
            .incremental_alter_configs(
                vec![IncrementalAlterConfigsResource {
                    resource_type: 2,
                    resource_name: "t".into(),
                    ops: vec![logic::AlterConfigOp {
                        key: "retention.ms".into(),
                        op: logic::ConfigOpType::Set,
                        value: Some("1000".into()),
                    }],
                }],
                false,
            )
            .await
            .unwrap();
        assert_eq!(out[0].error, None);
        let image = controller.image();
        assert_eq!(image.topic("t").unwrap().partitions.len(), 5);
        assert_eq!(
            image
                .topic("t")
                .unwrap()
                .configs
                .get("retention.ms")
                .map(String::as_str),
            Some("1000")
        );
        drop(controller);
        let controller = Controller::open(config(dir.path())).unwrap();
        assert_eq!(controller.image().topic("t"), image.topic("t"));
        let out = controller
            .delete_topics(vec![DeleteTopicTarget {
                name: Some("t".into()),
                topic_id: Uuid::nil(),
            }])
            .await
            .unwrap();
        assert_eq!(out[0].error, None);
        assert!(controller.image().topic("t").is_none());
    }
}
