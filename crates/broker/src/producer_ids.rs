//! Producer ids for idempotent producers (InitProducerId), handed out from blocks the active controller takes
//! through the metadata log (Kafka's `RPCProducerIdManager`), so no two brokers of a cluster ever hand out the
//! same id and no id is handed out twice across restarts.
//!
//! A block is taken by a committed `ProducerIds` record (`sluice_metadata::controller::allocate_producer_ids`,
//! Kafka's `ProducerIdControlManager`): every id below its end is taken, cluster-wide. The broker asks for one
//! with AllocateProducerIds (key 67) on the active controller's CONTROLLER listener, or directly when it is the
//! active controller itself (always on the embedded single node). A restart never reuses a block: the ids left in
//! it are skipped.
//!
//! Ids are claimed from the current block without waiting. When 90% of it is used the next block is fetched in
//! the background (Kafka's `PidPrefetchThreshold`), so InitProducerId rarely waits. When the current block is used
//! up and the next has not arrived, [`ProducerIdManager::generate`] waits at most its budget and then gives up
//! with [`NoProducerId`], which InitProducerId answers COORDINATOR_LOAD_IN_PROGRESS (retriable; Kafka's answer).
//! One fetch is in flight at a time; a failed fetch is retried after [`RETRY_BACKOFF`], when an id is next asked
//! for.
//!
//! # The per-node `producer-ids` file of earlier versions
//!
//! Earlier Sluice versions reserved blocks in `<metadata.log.dir>/producer-ids` on each node, starting at 0. That
//! file is no longer written. It is read once at start-up as a floor: blocks from the controller that end at or
//! below the id it recorded are skipped (they may hold ids this node handed out before, which partition logs may
//! still have producer state for), and the first id handed out is at or above it. Skipping costs one metadata
//! record per 1000 ids, once. The floor is per node: see docs/metadata.md for what this does not cover in a
//! cluster upgraded from per-node files.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{AllocateProducerIdsRequest, BrokerId};
use parking_lot::Mutex;
use sluice_protocol::ErrorCode;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::broker::Broker;

/// The per-node file earlier versions reserved blocks in (now only read, as a floor).
pub const LEGACY_PRODUCER_IDS_FILE: &str = "producer-ids";
/// The next block is fetched once this share of the current one is used (Kafka's `PidPrefetchThreshold`).
const PREFETCH_PERCENT: i64 = 90;
/// Pause after a failed fetch before the next (Kafka's `RetryBackoffMs`).
pub const RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// One AllocateProducerIds (retries to a new controller leader included) gives up after this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The legacy `producer-ids` file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    /// The file could not be read.
    #[error("producer id file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not hold a non-negative integer. It is not ignored: the ids it recorded are unknown, and
    /// handing them out again could collide with old producer state. Deleting it is the operator's decision.
    #[error("producer id file {path} is corrupt: {content:?}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
}

/// No producer id could be handed out within the budget: the current block is used up and the next has not
/// arrived (InitProducerId answers COORDINATOR_LOAD_IN_PROGRESS and the client retries).
#[derive(Debug, Clone, thiserror::Error)]
#[error("no producer id block available yet (last fetch error: {last_error})")]
pub struct NoProducerId {
    /// Why the last block fetch failed, or "none" when it is still in flight.
    pub last_error: String,
}

/// Why a block could not be fetched from the controller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// This broker has no broker epoch yet (not registered): the controller would refuse the request.
    #[error("this broker is not registered with the controller")]
    NotRegistered,
    /// The controller answered an error code (NOT_CONTROLLER, STALE_BROKER_EPOCH, ...).
    #[error("the controller answered error {0}")]
    Refused(i16),
    /// No answer (no controller reachable, timeout, the local controller failed).
    #[error("no answer from the controller: {0}")]
    Unreachable(String),
    /// The block the controller handed out is not usable (negative, empty, overflowing, or not after the
    /// previous block).
    #[error("the controller handed out an invalid block [{first}, {first} + {size})")]
    Invalid {
        /// First id of the block.
        first: i64,
        /// Its size.
        size: i32,
    },
}

/// A block of ids: `first..end`, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdBlock {
    /// The first id.
    pub first: i64,
    /// One past the last id.
    pub end: i64,
}

impl IdBlock {
    /// The block `[first, first + size)`, if it is valid: non-negative, not empty, not past `i64::MAX`.
    pub fn new(first: i64, size: i32) -> Result<IdBlock, BlockError> {
        let invalid = BlockError::Invalid { first, size };
        if first < 0 || size <= 0 {
            return Err(invalid);
        }
        let end = first.checked_add(i64::from(size)).ok_or(invalid)?;
        Ok(IdBlock { first, end })
    }
}

/// Where blocks come from: the active controller ([`ControllerBlocks`]), or a test's fake.
pub trait BlockSource: Clone + Send + Sync + 'static {
    /// Asks the controller for the next block (one AllocateProducerIds).
    fn allocate(&self) -> impl Future<Output = Result<IdBlock, BlockError>> + Send;
}

/// Hands out cluster-unique producer ids; `Send + Sync`, shared by every connection task.
#[derive(Debug)]
pub struct ProducerIdManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Bumped after every fetch, successful or not: wakes the requests waiting for a block.
    fetched: watch::Sender<u64>,
    /// Ids below this may have been handed out by the legacy per-node file: never hand them out again.
    legacy_floor: i64,
}

#[derive(Debug)]
struct State {
    /// The next id to hand out from the current block.
    next: i64,
    /// One past the current block's last id.
    end: i64,
    /// Claiming this id starts the prefetch of the next block.
    prefetch_at: i64,
    /// The block fetched ahead, if any.
    next_block: Option<IdBlock>,
    /// A fetch is running.
    in_flight: bool,
    /// No fetch before this (after a failed one).
    retry_at: Option<Instant>,
    /// The end of the last block the controller handed out: a new block must start at or after it.
    fetched_end: i64,
    /// What the last failed fetch ran into.
    last_error: Option<String>,
}

impl ProducerIdManager {
    /// A manager with no block yet; the first [`generate`](Self::generate) fetches one. `dir` is
    /// `metadata.log.dir`: an earlier version's `producer-ids` file there sets the floor (see the module docs).
    pub fn open(dir: &Path) -> Result<ProducerIdManager, ProducerIdError> {
        let legacy_floor = read_legacy_floor(dir)?;
        if legacy_floor > 0 {
            tracing::info!(
                floor = legacy_floor,
                file = %dir.join(LEGACY_PRODUCER_IDS_FILE).display(),
                "producer ids come from the controller; ids below the old per-node file's value are not handed out \
                 again (the file is no longer written)"
            );
        }
        Ok(ProducerIdManager::with_floor(legacy_floor))
    }

    fn with_floor(legacy_floor: i64) -> ProducerIdManager {
        ProducerIdManager {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    next: 0,
                    end: 0,
                    prefetch_at: 0,
                    next_block: None,
                    in_flight: false,
                    retry_at: None,
                    fetched_end: 0,
                    last_error: None,
                }),
                fetched: watch::channel(0).0,
                legacy_floor,
            }),
        }
    }

    /// A new producer id. Fetches blocks from `source` as needed (in a background task, so a request that gives
    /// up does not abandon a fetch); waits at most `budget` for one.
    pub async fn generate<S: BlockSource>(
        &self,
        source: S,
        budget: Duration,
    ) -> Result<i64, NoProducerId> {
        let deadline = Instant::now() + budget;
        loop {
            // Subscribed before looking, so a fetch that completes in between still wakes us.
            let mut fetched = self.inner.fetched.subscribe();
            let retry_at = {
                let mut state = self.inner.state.lock();
                if state.next >= state.end {
                    if let Some(block) = state.next_block.take() {
                        state.start_block(block);
                    }
                }
                if state.next < state.end {
                    let id = state.next;
                    state.next += 1;
                    if id >= state.prefetch_at {
                        self.maybe_fetch(&mut state, &source);
                    }
                    return Ok(id);
                }
                self.maybe_fetch(&mut state, &source);
                state.retry_at
            };
            let now = Instant::now();
            if now >= deadline {
                let state = self.inner.state.lock();
                return Err(NoProducerId {
                    last_error: state.last_error.clone().unwrap_or_else(|| "none".into()),
                });
            }
            // Look again when a fetch completes, or when the backoff after a failed one ends.
            let wake = retry_at.map_or(deadline, |at| at.max(now).min(deadline));
            let _ = tokio::time::timeout_at(wake, fetched.changed()).await;
        }
    }

    /// Starts a fetch unless one is running, a block is already waiting, or a failed fetch is backing off.
    fn maybe_fetch<S: BlockSource>(&self, state: &mut State, source: &S) {
        if state.in_flight || state.next_block.is_some() {
            return;
        }
        if state.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        state.in_flight = true;
        state.retry_at = None;
        let inner = self.inner.clone();
        let source = source.clone();
        tokio::spawn(async move {
            let result = inner.fetch(&source).await;
            inner.complete(result);
        });
    }
}

impl State {
    fn start_block(&mut self, block: IdBlock) {
        self.next = block.first;
        self.end = block.end;
        self.prefetch_at = block.first + (block.end - block.first) * PREFETCH_PERCENT / 100;
    }
}

impl Inner {
    /// Fetches blocks until one reaches above the legacy floor; returns the part of it at or above the floor.
    async fn fetch<S: BlockSource>(&self, source: &S) -> Result<IdBlock, BlockError> {
        let mut skipped = 0u64;
        loop {
            let block = match tokio::time::timeout(FETCH_TIMEOUT, source.allocate()).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(BlockError::Unreachable(format!(
                        "AllocateProducerIds not answered within {FETCH_TIMEOUT:?}"
                    )))
                }
            };
            {
                let mut state = self.state.lock();
                // Kafka's sanity check: the controller's blocks only move forward.
                if block.first < state.fetched_end {
                    return Err(BlockError::Invalid {
                        first: block.first,
                        size: i32::try_from(block.end - block.first).unwrap_or(i32::MAX),
                    });
                }
                state.fetched_end = block.end;
            }
            if block.end > self.legacy_floor {
                if skipped > 0 {
                    tracing::info!(
                        skipped_blocks = skipped,
                        floor = self.legacy_floor,
                        "skipped the producer id blocks the old per-node file may have handed out"
                    );
                }
                return Ok(IdBlock {
                    first: block.first.max(self.legacy_floor),
                    end: block.end,
                });
            }
            // Every id of this block may have been handed out by the old per-node file: take the next.
            skipped += 1;
        }
    }

    fn complete(&self, result: Result<IdBlock, BlockError>) {
        {
            let mut state = self.state.lock();
            state.in_flight = false;
            match result {
                Ok(block) => {
                    tracing::debug!(
                        first = block.first,
                        end = block.end,
                        "producer id block received"
                    );
                    state.next_block = Some(block);
                    state.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot get a producer id block from the controller");
                    state.retry_at = Some(Instant::now() + RETRY_BACKOFF);
                    state.last_error = Some(e.to_string());
                }
            }
        }
        self.fetched.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The value an earlier version's `producer-ids` file recorded (the first id of the next unreserved block), or
/// 0 when there is none. A leftover `producer-ids.tmp` is not read: its block was never used (the file was
/// renamed into place before any id of a block was handed out).
fn read_legacy_floor(dir: &Path) -> Result<i64, ProducerIdError> {
    let path = dir.join(LEGACY_PRODUCER_IDS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(content) => content
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or(ProducerIdError::Corrupt { path, content }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(ProducerIdError::Io { path, source }),
    }
}

/// Blocks from the active controller: asked directly when this node is the active controller (or the embedded
/// single node, its own controller), else with AllocateProducerIds over the [`ControllerChannel`](crate::controller_channel::ControllerChannel), as
/// `lifecycle.rs` reaches the controller. The broker epoch is read at every request, so a retry after
/// STALE_BROKER_EPOCH carries the epoch of the broker's new registration.
#[derive(Clone)]
pub struct ControllerBlocks {
    broker: Arc<Broker>,
}

impl ControllerBlocks {
    /// The source for `broker`.
    pub fn of(broker: &Arc<Broker>) -> ControllerBlocks {
        ControllerBlocks {
            broker: broker.clone(),
        }
    }
}

impl BlockSource for ControllerBlocks {
    async fn allocate(&self) -> Result<IdBlock, BlockError> {
        let broker = &self.broker;
        let node_id = broker.config.node_id;
        let broker_epoch = broker
            .lifecycle
            .broker_epoch()
            .ok_or(BlockError::NotRegistered)?;
        if broker.controller.is_active() || !broker.controller_channel.has_voters() {
            let block = broker
                .controller
                .allocate_producer_ids(node_id, broker_epoch)
                .await
                .map_err(|e| match e.code() {
                    code if code == ErrorCode::NotController.code() => BlockError::Refused(code),
                    _ => BlockError::Unreachable(e.to_string()),
                })?;
            if block.error_code != 0 {
                return Err(BlockError::Refused(block.error_code));
            }
            return IdBlock::new(block.first_producer_id, block.size);
        }
        let request = AllocateProducerIdsRequest::default()
            .with_broker_id(BrokerId(node_id))
            .with_broker_epoch(broker_epoch);
        let response = broker
            .controller_channel
            .send(&request, FETCH_TIMEOUT)
            .await
            .map_err(|e| BlockError::Unreachable(e.to_string()))?;
        if response.error_code != 0 {
            return Err(BlockError::Refused(response.error_code));
        }
        IdBlock::new(response.producer_id_start.0, response.producer_id_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A controller that answers from a script: each call takes the next answer, or blocks until one is pushed.
    #[derive(Clone, Default)]
    struct Scripted {
        answers: Arc<Mutex<VecDeque<Result<IdBlock, BlockError>>>>,
        pushed: Arc<tokio::sync::Notify>,
        calls: Arc<AtomicUsize>,
    }

    impl Scripted {
        fn push(&self, answer: Result<IdBlock, BlockError>) {
            self.answers.lock().push_back(answer);
            self.pushed.notify_waiters();
        }
        /// Blocks `[k * 1000, (k + 1) * 1000)` for each `k` in `ks`, as the controller hands them out.
        fn with_blocks(ks: impl IntoIterator<Item = i64>) -> Scripted {
            let s = Scripted::default();
            for k in ks {
                s.push(Ok(IdBlock::new(k * 1000, 1000).unwrap()));
            }
            s
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl BlockSource for Scripted {
        async fn allocate(&self) -> Result<IdBlock, BlockError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            loop {
                let pushed = self.pushed.notified();
                if let Some(answer) = self.answers.lock().pop_front() {
                    return answer;
                }
                pushed.await;
            }
        }
    }

    const WAIT: Duration = Duration::from_secs(5);

    /// Waits until the background fetch has run `n` times.
    async fn until_calls(source: &Scripted, n: usize) {
        let deadline = Instant::now() + WAIT;
        while source.calls() < n {
            assert!(
                Instant::now() < deadline,
                "{} calls, expected {n}",
                source.calls()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits until the manager holds a prefetched block.
    async fn until_prefetched(m: &ProducerIdManager) {
        let deadline = Instant::now() + WAIT;
        while m.inner.state.lock().next_block.is_none() {
            assert!(Instant::now() < deadline, "no block was prefetched");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn ids_come_from_the_controllers_block_in_order() {
        let source = Scripted::with_blocks([3]);
        let m = ProducerIdManager::with_floor(0);
        let ids = [
            m.generate(source.clone(), WAIT).await.unwrap(),
            m.generate(source.clone(), WAIT).await.unwrap(),
        ];
        assert_eq!(ids, [3000, 3001]);
        assert_eq!(source.calls(), 1);
    }

    /// Kafka's RPCProducerIdManager: the next block is requested once 90% of the current one is used, so the
    /// first id of the next block is handed out without waiting (a zero budget).
    #[tokio::test]
    async fn prefetches_the_next_block_at_ninety_percent() {
        let source = Scripted::with_blocks([0, 1]);
        let m = ProducerIdManager::with_floor(0);
        for expected in 0..900 {
            assert_eq!(m.generate(source.clone(), WAIT).await.unwrap(), expected);
        }
        assert_eq!(source.calls(), 1, "no prefetch before 90%");
        assert_eq!(m.generate(source.clone(), WAIT).await.unwrap(), 900);
        until_prefetched(&m).await;
        assert_eq!(source.calls(), 2);
        for expected in 901..1000 {
            assert_eq!(m.generate(source.clone(), WAIT).await.unwrap(), expected);
        }
        assert_eq!(
            m.generate(source.clone(), Duration::ZERO).await.unwrap(),
            1000,
            "the prefetched block is used at once"
        );
        assert_eq!(source.calls(), 2, "one fetch per block");
    }

    /// No block within the budget: an error (COORDINATOR_LOAD_IN_PROGRESS on the wire), never a wait without
    /// end; concurrent requests share one fetch, and the id arrives once the controller answers.
    #[tokio::test]
    async fn exhausted_without_a_next_block_gives_up_after_the_budget() {
        let source = Scripted::default();
        let m = Arc::new(ProducerIdManager::with_floor(0));
        let started = Instant::now();
        let err = m
            .generate(source.clone(), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(err.last_error, "none", "the fetch is still in flight");
        assert!(m.generate(source.clone(), Duration::ZERO).await.is_err());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (m, source) = (m.clone(), source.clone());
                tokio::spawn(async move { m.generate(source, WAIT).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(source.calls(), 1, "one fetch in flight at a time");
        source.push(Ok(IdBlock::new(0, 1000).unwrap()));
        let mut ids = Vec::new();
        for w in waiters {
            ids.push(w.await.unwrap().unwrap());
        }
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2]);
    }

    /// A block that is used up with the controller not answering: the next request fails after its budget.
    #[tokio::test]
    async fn a_used_up_block_without_an_answer_fails_the_request() {
        let source = Scripted::with_blocks([0]);
        let m = ProducerIdManager::with_floor(0);
        for _ in 0..1000 {
            m.generate(source.clone(), WAIT).await.unwrap();
        }
        until_calls(&source, 2).await;
        assert!(m
            .generate(source.clone(), Duration::from_millis(20))
            .await
            .is_err());
    }

    /// Controller errors (NOT_CONTROLLER, STALE_BROKER_EPOCH, an unreachable controller) are retried after the
    /// backoff within the request's budget; an invalid or backwards block is refused like an error.
    #[tokio::test]
    async fn controller_errors_are_retried_after_a_backoff() {
        let source = Scripted::default();
        source.push(Err(BlockError::Refused(ErrorCode::NotController.code())));
        source.push(Err(BlockError::Refused(ErrorCode::StaleBrokerEpoch.code())));
        source.push(Err(BlockError::Unreachable("connection refused".into())));
        source.push(Ok(IdBlock::new(5000, 1000).unwrap()));
        let m = ProducerIdManager::with_floor(0);
        let started = Instant::now();
        assert_eq!(m.generate(source.clone(), WAIT).await.unwrap(), 5000);
        assert_eq!(source.calls(), 4);
        assert!(
            started.elapsed() >= RETRY_BACKOFF * 3,
            "each retry waited out the backoff"
        );

        // A block below the one already handed out would repeat ids: refused, and the error is reported.
        for _ in 5001..6000 {
            m.generate(source.clone(), WAIT).await.unwrap();
        }
        source.push(Ok(IdBlock::new(4000, 1000).unwrap()));
        let err = m
            .generate(source.clone(), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.last_error.contains("invalid block"), "{err}");
        source.push(Ok(IdBlock::new(6000, 1000).unwrap()));
        assert_eq!(m.generate(source.clone(), WAIT).await.unwrap(), 6000);
    }

    #[test]
    fn invalid_blocks_are_refused() {
        assert!(IdBlock::new(-1, 1000).is_err());
        assert!(IdBlock::new(0, 0).is_err());
        assert!(IdBlock::new(i64::MAX - 10, 1000).is_err());
        assert_eq!(IdBlock::new(7, 3).unwrap(), IdBlock { first: 7, end: 10 });
    }

    /// Upgrade from the per-node file: blocks wholly below its value are skipped and the first id handed out is
    /// its value, so no id the old file may have handed out comes back.
    #[tokio::test]
    async fn a_legacy_file_sets_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEGACY_PRODUCER_IDS_FILE), "2500\n").unwrap();
        // A temporary file left by a crash is never read.
        std::fs::write(dir.path().join("producer-ids.tmp"), "9000\n").unwrap();
        let m = ProducerIdManager::open(dir.path()).unwrap();
        let source = Scripted::with_blocks([0, 1, 2, 3]);
        assert_eq!(m.generate(source.clone(), WAIT).await.unwrap(), 2500);
        assert_eq!(
            source.calls(),
            3,
            "blocks 0 and 1 skipped, block 2 from 2500"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LEGACY_PRODUCER_IDS_FILE)).unwrap(),
            "2500\n",
            "the file is not written"
        );
        // The rest of the partial block, then the next block with its prefetch point.
        for expected in 2501..3000 {
            assert_eq!(m.generate(source.clone(), WAIT).await.unwrap(), expected);
        }
        until_prefetched(&m).await;
        assert_eq!(m.generate(source.clone(), WAIT).await.unwrap(), 3000);

        let none = tempfile::tempdir().unwrap();
        assert_eq!(read_legacy_floor(none.path()).unwrap(), 0);
    }

    #[test]
    fn a_corrupt_legacy_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEGACY_PRODUCER_IDS_FILE), "banana").unwrap();
        assert!(matches!(
            ProducerIdManager::open(dir.path()),
            Err(ProducerIdError::Corrupt { .. })
        ));
    }
}
