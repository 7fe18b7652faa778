//! Incremental fetch sessions (KIP-227): a bounded cache of fetch sessions and the per-request `FetchContext`.
//!
//! This is the logic of Kafka's `FetchSessionCache`, `FetchSession` and `FetchManager.newContext`, kept pure:
//! no I/O, no clock (callers pass `now_ms`), no locking (the broker wraps the cache in a mutex and never holds it
//! across an `.await`). A fetch is handled in two steps:
//!
//! 1. [`FetchSessionCache::new_context`] interprets the request's session id and epoch and yields a [`FetchContext`]
//!    listing the partitions to read: the request's own partitions for a full fetch, or every partition cached in
//!    the session (after applying added, altered and forgotten partitions) for an incremental fetch.
//! 2. After reading the logs, [`FetchSessionCache::update_and_generate`] takes one [`PartitionFetchOutcome`] per
//!    context partition and decides the response's top-level error, its session id and which partitions it
//!    includes: a full fetch includes all of them (and tries to create a session), an incremental fetch only those
//!    with new records, a changed high watermark or log start offset, or an error.
//!
//! Session metadata, as in Kafka's `FetchMetadata`: session id 0 with epoch -1 is a sessionless full fetch;
//! epoch 0 asks for a new session (a full fetch); epoch -1 with a session id closes that session; any other epoch
//! is an incremental fetch in an existing session and must equal the session's expected epoch
//! (`INVALID_FETCH_SESSION_EPOCH` otherwise, `FETCH_SESSION_ID_NOT_FOUND` for an unknown id).
//!
//! Partitions are keyed by topic id from Fetch v13 (a session created at v13+ keys by id and cannot be used by an
//! older request version, and vice versa: `FETCH_SESSION_TOPIC_ID_ERROR`), and by topic name before.
//!
//! Eviction, simplified from Kafka's `FetchSessionCache.tryEvict` (same outcomes, linear scan instead of sorted
//! trees; the scan runs only when the cache is full and a new session is wanted, over at most `max_slots` entries):
//! - the least recently used session is evicted if it has been unused for longer than `eviction_ms`;
//! - otherwise a new *privileged* (follower) session may evict any unprivileged session, or a privileged one
//!   created more than `eviction_ms` ago; a new unprivileged (consumer) session may only evict sessions created more
//!   than `eviction_ms` ago;
//! - among the candidates the one that sorts first by (privileged, partition count, id) is evicted, and only if
//!   the new session sorts strictly after it by (privileged, partition count): fewer partitions lose.
//!
//! When no slot can be freed the full fetch is answered with session id 0 (sessionless), as Kafka does.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

/// Kafka's `max.incremental.fetch.session.cache.slots` default.
pub const DEFAULT_MAX_SLOTS: usize = 1000;
/// Kafka's minimum time a session must be unused (or exist) before it may be evicted
/// (`FetchSessionCache` `evictionMs`, 120 s).
pub const DEFAULT_EVICTION_MS: i64 = 120_000;

/// The session id of a sessionless fetch (`FetchMetadata.INVALID_SESSION_ID`).
pub const INVALID_SESSION_ID: i32 = 0;
/// The epoch of a full fetch that asks for a new session (`FetchMetadata.INITIAL_EPOCH`).
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a full fetch that wants no session, or closes one (`FetchMetadata.FINAL_EPOCH`).
pub const FINAL_EPOCH: i32 = -1;

/// Kafka error codes this module produces (values from the one table, `sluice_protocol::ErrorCode`).
mod error_code {
    use sluice_protocol::ErrorCode;
    pub(super) const NONE: i16 = sluice_protocol::ERROR_NONE;
    pub(super) const FETCH_SESSION_ID_NOT_FOUND: i16 = ErrorCode::FetchSessionIdNotFound.code();
    pub(super) const INVALID_FETCH_SESSION_EPOCH: i16 = ErrorCode::InvalidFetchSessionEpoch.code();
    pub(super) const FETCH_SESSION_TOPIC_ID_ERROR: i16 = ErrorCode::FetchSessionTopicIdError.code();
}

/// The first Fetch version that names topics by id.
pub const FIRST_TOPIC_ID_VERSION: i16 = 13;

/// The epoch that follows `epoch` (`FetchMetadata.nextEpoch`): negative epochs stay final, and the epoch wraps
/// from `i32::MAX` to 1, never back to the initial epoch 0.
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// How a fetch request names a topic: by id from Fetch v13, by name before.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicKey {
    /// Fetch v13+: the topic id.
    Id(Uuid),
    /// Fetch v4-v12: the topic name.
    Name(String),
}

/// One partition of a fetch, as the session cache identifies it (Kafka's `TopicIdPartition` with its
/// id-or-name equality).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FetchPartitionKey {
    /// The topic, by id or by name.
    pub topic: TopicKey,
    /// The partition index.
    pub partition: i32,
}

/// The per-partition request parameters a session remembers (Kafka's `FetchRequest.PartitionData`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchPartitionData {
    /// The offset to fetch from.
    pub fetch_offset: i64,
    /// The fetcher's log start offset (followers only; -1 from consumers).
    pub log_start_offset: i64,
    /// The most bytes to return for this partition.
    pub partition_max_bytes: i32,
    /// The leader epoch the fetcher believes current, or -1 for no check.
    pub current_leader_epoch: i32,
    /// The epoch of the last fetched batch (followers only), or -1.
    pub last_fetched_epoch: i32,
}

/// One partition a fetch context asks to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextPartition {
    /// The partition's key in the request and session.
    pub key: FetchPartitionKey,
    /// The topic name; `None` when the request named the topic by an id this broker does not know
    /// (answered with `UNKNOWN_TOPIC_ID`).
    pub topic_name: Option<String>,
    /// The request parameters.
    pub data: FetchPartitionData,
}

/// The session fields of a fetch request (Kafka's `FetchMetadata`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchMetadata {
    /// The session id; 0 for none.
    pub session_id: i32,
    /// The session epoch: 0 to create a session, -1 for none or to close one, otherwise the expected epoch.
    pub epoch: i32,
}

impl FetchMetadata {
    /// The metadata of a request version without sessions (Fetch v4-v6): sessionless full fetch.
    pub const LEGACY: FetchMetadata = FetchMetadata {
        session_id: INVALID_SESSION_ID,
        epoch: FINAL_EPOCH,
    };

    /// True for a full fetch (epoch 0 or -1), false for an incremental one.
    pub fn is_full(&self) -> bool {
        self.epoch == INITIAL_EPOCH || self.epoch == FINAL_EPOCH
    }
}

/// A fetch request as the session cache sees it.
#[derive(Clone, Debug)]
pub struct FetchSessionRequest {
    /// The Fetch request version (topic ids from v13).
    pub version: i16,
    /// Session id and epoch.
    pub metadata: FetchMetadata,
    /// True for a follower (replica id >= 0): its sessions are privileged.
    pub is_from_follower: bool,
    /// The partitions named in the request, in request order (for an incremental fetch: added or altered).
    pub partitions: Vec<ContextPartition>,
    /// `forgotten_topics_data`: partitions to drop from the session.
    pub forgotten: Vec<FetchPartitionKey>,
}

/// What the handler must do for one fetch request (Kafka's `FetchContext` kinds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchContext {
    /// The session fields were wrong: answer with this top-level error, session id 0 and no partitions.
    SessionError {
        /// `FETCH_SESSION_ID_NOT_FOUND`, `INVALID_FETCH_SESSION_EPOCH` or `FETCH_SESSION_TOPIC_ID_ERROR`.
        error_code: i16,
    },
    /// A full fetch that creates no session: every partition is answered, session id 0.
    Sessionless {
        /// The partitions to read, in request order.
        partitions: Vec<ContextPartition>,
    },
    /// A full fetch that asks for a new session: every partition is answered and a session is created if there
    /// is (or can be made) room.
    Full {
        /// The partitions to read, in request order.
        partitions: Vec<ContextPartition>,
        /// Whether the new session keys partitions by topic id.
        uses_topic_ids: bool,
        /// Whether the new session is privileged (follower).
        privileged: bool,
    },
    /// An incremental fetch in an existing session: every cached partition is read, only changed ones answered.
    Incremental {
        /// The session.
        session_id: i32,
        /// The epoch the request carried; the session's epoch is now `next_epoch(request_epoch)`.
        request_epoch: i32,
        /// Every partition of the session, in session order.
        partitions: Vec<ContextPartition>,
    },
}

impl FetchContext {
    /// The partitions the handler must read, in the order the response lists them.
    pub fn partitions(&self) -> &[ContextPartition] {
        match self {
            FetchContext::SessionError { .. } => &[],
            FetchContext::Sessionless { partitions }
            | FetchContext::Full { partitions, .. }
            | FetchContext::Incremental { partitions, .. } => partitions,
        }
    }
}

/// What reading one partition produced, as far as the session cache cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionFetchOutcome {
    /// The partition's error code (0 for none).
    pub error_code: i16,
    /// The high watermark sent.
    pub high_watermark: i64,
    /// The leader's log start offset sent.
    pub log_start_offset: i64,
    /// Bytes of records sent.
    pub records_bytes: usize,
    /// True when a preferred read replica (not -1) is sent.
    pub has_preferred_read_replica: bool,
}

/// The top level of a fetch response as decided by the session cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchResponsePlan {
    /// The response's top-level error code.
    pub error_code: i16,
    /// The response's session id (0 for none).
    pub session_id: i32,
    /// For each context partition (same order), whether the response includes it.
    pub include: Vec<bool>,
}

/// A cached partition of a session (Kafka's `CachedPartition`).
#[derive(Clone, Debug)]
struct CachedPartition {
    /// Position in the session order (smaller first); rewritten to move a partition to the end.
    order: u64,
    data: FetchPartitionData,
    /// The high watermark last sent, -1 after an error so that the partition is sent again.
    high_watermark: i64,
    /// The leader's log start offset last sent.
    local_log_start_offset: i64,
}

impl CachedPartition {
    /// Decides whether `outcome` must be sent; when `update`, remembers what is sent
    /// (Kafka's `CachedPartition.maybeUpdateResponseData`).
    fn must_respond(&mut self, outcome: &PartitionFetchOutcome, update: bool) -> bool {
        let mut must = outcome.records_bytes > 0 || outcome.has_preferred_read_replica;
        if self.high_watermark != outcome.high_watermark {
            must = true;
            if update {
                self.high_watermark = outcome.high_watermark;
            }
        }
        if self.local_log_start_offset != outcome.log_start_offset {
            must = true;
            if update {
                self.local_log_start_offset = outcome.log_start_offset;
            }
        }
        if outcome.error_code != error_code::NONE {
            // Errors are always sent; forgetting the high watermark makes the recovered partition be sent again.
            if update {
                self.high_watermark = -1;
            }
            must = true;
        }
        must
    }
}

/// One incremental fetch session (Kafka's `FetchSession`).
#[derive(Debug)]
struct FetchSession {
    id: i32,
    privileged: bool,
    uses_topic_ids: bool,
    creation_ms: i64,
    last_used_ms: i64,
    /// The epoch the next incremental request must carry.
    epoch: i32,
    partitions: HashMap<FetchPartitionKey, CachedPartition>,
    /// Session order: order number -> key. Kept in step with `partitions`.
    order: BTreeMap<u64, FetchPartitionKey>,
    next_order: u64,
}

impl FetchSession {
    fn push_back(&mut self, key: FetchPartitionKey, mut cached: CachedPartition) {
        cached.order = self.next_order;
        self.next_order += 1;
        self.order.insert(cached.order, key.clone());
        self.partitions.insert(key, cached);
    }

    fn move_to_back(&mut self, key: &FetchPartitionKey) {
        if let Some(cached) = self.partitions.get_mut(key) {
            self.order.remove(&cached.order);
            cached.order = self.next_order;
            self.next_order += 1;
            self.order.insert(cached.order, key.clone());
        }
    }

    fn remove(&mut self, key: &FetchPartitionKey) -> bool {
        match self.partitions.remove(key) {
            Some(cached) => {
                self.order.remove(&cached.order);
                true
            }
            None => false,
        }
    }

    /// Applies an incremental request: adds or alters the named partitions, drops the forgotten ones.
    fn update(&mut self, partitions: &[ContextPartition], forgotten: &[FetchPartitionKey]) {
        for p in partitions {
            match self.partitions.get_mut(&p.key) {
                Some(cached) => cached.data = p.data,
                None => self.push_back(
                    p.key.clone(),
                    CachedPartition {
                        order: 0,
                        data: p.data,
                        high_watermark: -1,
                        local_log_start_offset: -1,
                    },
                ),
            }
        }
        for key in forgotten {
            self.remove(key);
        }
    }
}

/// The bounded cache of incremental fetch sessions on this broker (Kafka's `FetchSessionCache` plus
/// `FetchManager`). Not thread-safe: the broker keeps it behind a mutex held only for the synchronous calls.
#[derive(Debug)]
pub struct FetchSessionCache {
    max_slots: usize,
    eviction_ms: i64,
    sessions: HashMap<i32, FetchSession>,
    /// Sum of the partition counts of all sessions.
    total_partitions: usize,
    evictions: u64,
    /// xorshift64* state for session ids.
    rng_state: u64,
}

impl FetchSessionCache {
    /// A cache of at most `max_slots` sessions (`max.incremental.fetch.session.cache.slots`); a session must be
    /// unused (or exist) for `eviction_ms` before a less privileged or smaller one may evict it.
    pub fn new(max_slots: usize, eviction_ms: i64) -> FetchSessionCache {
        let seed = u64::from_le_bytes(
            Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .unwrap_or([0x9e; 8]),
        );
        Self::with_seed(max_slots, eviction_ms, seed)
    }

    /// A cache sized by `max.incremental.fetch.session.cache.slots` when the broker config has that key
    /// (Kafka's default, 1000, otherwise).
    pub fn from_config(config: &crate::config::BrokerConfig) -> FetchSessionCache {
        let max_slots = config
            .value_of("max.incremental.fetch.session.cache.slots")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_MAX_SLOTS);
        Self::new(max_slots, DEFAULT_EVICTION_MS)
    }

    /// As [`FetchSessionCache::new`], with session ids drawn from a generator seeded by `seed` (tests).
    pub fn with_seed(max_slots: usize, eviction_ms: i64, seed: u64) -> FetchSessionCache {
        FetchSessionCache {
            max_slots,
            eviction_ms,
            sessions: HashMap::new(),
            total_partitions: 0,
            evictions: 0,
            // xorshift state must not be zero.
            rng_state: seed | 1,
        }
    }

    /// Number of sessions cached (Kafka's `NumIncrementalFetchSessions`).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is cached.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Number of partitions cached over all sessions (`NumIncrementalFetchPartitionsCached`).
    pub fn total_partitions(&self) -> usize {
        self.total_partitions
    }

    /// Number of sessions evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The epoch the next incremental request of `session_id` must carry, if the session exists.
    pub fn session_epoch(&self, session_id: i32) -> Option<i32> {
        self.sessions.get(&session_id).map(|s| s.epoch)
    }

    /// Interprets a fetch request's session fields (Kafka's `FetchManager.newContext`).
    ///
    /// `topic_name` resolves a topic id to its current name; it is called for id-keyed partitions cached in the
    /// session, so that a topic created after the partition was added is found, and a deleted one is not.
    pub fn new_context(
        &mut self,
        request: FetchSessionRequest,
        topic_name: &dyn Fn(Uuid) -> Option<String>,
        now_ms: i64,
    ) -> FetchContext {
        let FetchSessionRequest {
            version,
            metadata,
            is_from_follower,
            partitions,
            forgotten,
        } = request;
        let partitions = dedup(partitions);
        if metadata.is_full() {
            if metadata.session_id != INVALID_SESSION_ID {
                // Any session named in a full fetch is closed.
                self.remove(metadata.session_id);
            }
            if metadata.epoch == FINAL_EPOCH {
                return FetchContext::Sessionless { partitions };
            }
            return FetchContext::Full {
                partitions,
                uses_topic_ids: version >= FIRST_TOPIC_ID_VERSION,
                privileged: is_from_follower,
            };
        }

        let Some(session) = self.sessions.get_mut(&metadata.session_id) else {
            return FetchContext::SessionError {
                error_code: error_code::FETCH_SESSION_ID_NOT_FOUND,
            };
        };
        if session.epoch != metadata.epoch {
            return FetchContext::SessionError {
                error_code: error_code::INVALID_FETCH_SESSION_EPOCH,
            };
        }
        if session.uses_topic_ids != (version >= FIRST_TOPIC_ID_VERSION) {
            return FetchContext::SessionError {
                error_code: error_code::FETCH_SESSION_TOPIC_ID_ERROR,
            };
        }
        let before = session.partitions.len();
        session.update(&partitions, &forgotten);
        let after = session.partitions.len();
        self.total_partitions = (self.total_partitions + after).saturating_sub(before);
        if after == 0 {
            // Nothing left to fetch: the session closes and this request is answered sessionlessly.
            self.remove(metadata.session_id);
            return FetchContext::Sessionless { partitions };
        }
        session.last_used_ms = now_ms;
        session.epoch = next_epoch(session.epoch);
        let named: HashMap<&FetchPartitionKey, &Option<String>> =
            partitions.iter().map(|p| (&p.key, &p.topic_name)).collect();
        let context_partitions = session
            .order
            .values()
            .filter_map(|key| {
                let cached = session.partitions.get(key)?;
                let topic_name = match &key.topic {
                    TopicKey::Name(name) => Some(name.clone()),
                    TopicKey::Id(id) => match named.get(key) {
                        Some(name) => (*name).clone(),
                        None => topic_name(*id),
                    },
                };
                Some(ContextPartition {
                    key: key.clone(),
                    topic_name,
                    data: cached.data,
                })
            })
            .collect();
        FetchContext::Incremental {
            session_id: metadata.session_id,
            request_epoch: metadata.epoch,
            partitions: context_partitions,
        }
    }

    /// Decides the response for `context` from the read `outcomes` (one per `context.partitions()`, same order)
    /// and updates the session (Kafka's `FetchContext.updateAndGenerateResponseData`).
    ///
    /// A full context creates a session here when there is room. An incremental context whose session moved to
    /// another epoch meanwhile (a duplicate request racing this one) is answered `INVALID_FETCH_SESSION_EPOCH`; if
    /// its session was evicted meanwhile, every partition is included (always correct, just not incremental).
    pub fn update_and_generate(
        &mut self,
        context: &FetchContext,
        outcomes: &[PartitionFetchOutcome],
        now_ms: i64,
    ) -> FetchResponsePlan {
        match context {
            FetchContext::SessionError { error_code } => FetchResponsePlan {
                error_code: *error_code,
                session_id: INVALID_SESSION_ID,
                include: Vec::new(),
            },
            FetchContext::Sessionless { partitions } => FetchResponsePlan {
                error_code: error_code::NONE,
                session_id: INVALID_SESSION_ID,
                include: vec![true; partitions.len()],
            },
            FetchContext::Full {
                partitions,
                uses_topic_ids,
                privileged,
            } => {
                let session_id = self.maybe_create_session(
                    now_ms,
                    *privileged,
                    *uses_topic_ids,
                    partitions,
                    outcomes,
                );
                FetchResponsePlan {
                    error_code: error_code::NONE,
                    session_id,
                    include: vec![true; partitions.len()],
                }
            }
            FetchContext::Incremental {
                session_id,
                request_epoch,
                partitions,
            } => {
                let Some(session) = self.sessions.get_mut(session_id) else {
                    return FetchResponsePlan {
                        error_code: error_code::NONE,
                        session_id: *session_id,
                        include: vec![true; partitions.len()],
                    };
                };
                if session.epoch != next_epoch(*request_epoch) {
                    return FetchResponsePlan {
                        error_code: error_code::INVALID_FETCH_SESSION_EPOCH,
                        session_id: *session_id,
                        include: vec![false; partitions.len()],
                    };
                }
                let mut include = Vec::with_capacity(partitions.len());
                for (i, p) in partitions.iter().enumerate() {
                    let Some(outcome) = outcomes.get(i) else {
                        include.push(false);
                        continue;
                    };
                    let must = match session.partitions.get_mut(&p.key) {
                        Some(cached) => cached.must_respond(outcome, true),
                        None => false,
                    };
                    if must && outcome.records_bytes > 0 {
                        // Round-robin: a partition that returned data goes to the back, so that a response-level
                        // max_bytes does not starve the partitions after it.
                        session.move_to_back(&p.key);
                    }
                    include.push(must);
                }
                FetchResponsePlan {
                    error_code: error_code::NONE,
                    session_id: *session_id,
                    include,
                }
            }
        }
    }

    /// Removes a session; true if it existed.
    pub fn remove(&mut self, session_id: i32) -> bool {
        match self.sessions.remove(&session_id) {
            Some(session) => {
                self.total_partitions = self
                    .total_partitions
                    .saturating_sub(session.partitions.len());
                true
            }
            None => false,
        }
    }

    fn maybe_create_session(
        &mut self,
        now_ms: i64,
        privileged: bool,
        uses_topic_ids: bool,
        partitions: &[ContextPartition],
        outcomes: &[PartitionFetchOutcome],
    ) -> i32 {
        if self.max_slots == 0 {
            return INVALID_SESSION_ID;
        }
        if self.sessions.len() >= self.max_slots
            && !self.try_evict(privileged, partitions.len(), now_ms)
        {
            return INVALID_SESSION_ID;
        }
        let id = self.new_session_id();
        let mut session = FetchSession {
            id,
            privileged,
            uses_topic_ids,
            creation_ms: now_ms,
            last_used_ms: now_ms,
            epoch: next_epoch(INITIAL_EPOCH),
            partitions: HashMap::with_capacity(partitions.len()),
            order: BTreeMap::new(),
            next_order: 0,
        };
        for (i, p) in partitions.iter().enumerate() {
            let (high_watermark, local_log_start_offset) = match outcomes.get(i) {
                Some(o) if o.error_code == error_code::NONE => {
                    (o.high_watermark, o.log_start_offset)
                }
                Some(o) => (-1, o.log_start_offset),
                None => (-1, -1),
            };
            if session.partitions.contains_key(&p.key) {
                continue;
            }
            session.push_back(
                p.key.clone(),
                CachedPartition {
                    order: 0,
                    data: p.data,
                    high_watermark,
                    local_log_start_offset,
                },
            );
        }
        self.total_partitions += session.partitions.len();
        self.sessions.insert(id, session);
        id
    }

    /// Frees one slot if the rules in the module docs allow it; true if a session was evicted.
    fn try_evict(&mut self, privileged: bool, size: usize, now_ms: i64) -> bool {
        // 1. The least recently used session, if stale.
        let lru = self
            .sessions
            .values()
            .min_by_key(|s| (s.last_used_ms, s.id))
            .map(|s| (s.id, s.last_used_ms));
        let Some((lru_id, lru_last_used_ms)) = lru else {
            return false;
        };
        if now_ms.saturating_sub(lru_last_used_ms) > self.eviction_ms {
            self.remove(lru_id);
            self.evictions += 1;
            return true;
        }
        // 2. The least valuable evictable session, if less valuable than the new one.
        let eviction_ms = self.eviction_ms;
        let victim = self
            .sessions
            .values()
            .filter(|s| {
                let old = now_ms.saturating_sub(s.creation_ms) > eviction_ms;
                if privileged {
                    !s.privileged || old
                } else {
                    old
                }
            })
            .min_by_key(|s| (s.privileged, s.partitions.len(), s.id))
            .map(|s| (s.id, s.privileged, s.partitions.len()));
        match victim {
            Some((id, victim_privileged, victim_size))
                if (privileged, size) > (victim_privileged, victim_size) =>
            {
                self.remove(id);
                self.evictions += 1;
                true
            }
            _ => false,
        }
    }

    /// A new random positive session id not in use.
    fn new_session_id(&mut self) -> i32 {
        loop {
            // xorshift64*
            let mut x = self.rng_state;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.rng_state = x;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let id = ((r >> 33) as i32) & i32::MAX;
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

/// Drops repeated partitions from a request, keeping the first position and the last parameters
/// (as Kafka's `LinkedHashMap` of request partitions does).
fn dedup(partitions: Vec<ContextPartition>) -> Vec<ContextPartition> {
    let mut index: HashMap<FetchPartitionKey, usize> = HashMap::with_capacity(partitions.len());
    let mut out: Vec<ContextPartition> = Vec::with_capacity(partitions.len());
    for p in partitions {
        match index.get(&p.key) {
            Some(&i) => out[i] = p,
            None => {
                index.insert(p.key.clone(), out.len());
                out.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Reference: KIP-227 and Kafka's `FetchSessionTest` behaviours.
    use super::*;

    const NOT_FOUND: i16 = error_code::FETCH_SESSION_ID_NOT_FOUND;
    const BAD_EPOCH: i16 = error_code::INVALID_FETCH_SESSION_EPOCH;

    fn key(topic: &str, partition: i32) -> FetchPartitionKey {
        FetchPartitionKey {
            topic: TopicKey::Name(topic.to_string()),
            partition,
        }
    }

    fn part(topic: &str, partition: i32, fetch_offset: i64) -> ContextPartition {
        ContextPartition {
            key: key(topic, partition),
            topic_name: Some(topic.to_string()),
            data: data(fetch_offset),
        }
    }

    fn data(fetch_offset: i64) -> FetchPartitionData {
        FetchPartitionData {
            fetch_offset,
            log_start_offset: -1,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
            last_fetched_epoch: -1,
        }
    }

    fn request(
        session_id: i32,
        epoch: i32,
        partitions: Vec<ContextPartition>,
        forgotten: Vec<FetchPartitionKey>,
    ) -> FetchSessionRequest {
        FetchSessionRequest {
            version: 12,
            metadata: FetchMetadata { session_id, epoch },
            is_from_follower: false,
            partitions,
            forgotten,
        }
    }

    fn no_ids(_: Uuid) -> Option<String> {
        None
    }

    fn quiet(high_watermark: i64) -> PartitionFetchOutcome {
        PartitionFetchOutcome {
            error_code: 0,
            high_watermark,
            log_start_offset: 0,
            records_bytes: 0,
            has_preferred_read_replica: false,
        }
    }

    fn with_records(high_watermark: i64, records_bytes: usize) -> PartitionFetchOutcome {
        PartitionFetchOutcome {
            records_bytes,
            ..quiet(high_watermark)
        }
    }

    fn cache() -> FetchSessionCache {
        FetchSessionCache::with_seed(DEFAULT_MAX_SLOTS, DEFAULT_EVICTION_MS, 42)
    }

    /// Opens a session over `partitions` (all with high watermark `hw`) and returns its id.
    fn open_session(
        cache: &mut FetchSessionCache,
        partitions: Vec<ContextPartition>,
        hw: i64,
    ) -> i32 {
        let n = partitions.len();
        let ctx = cache.new_context(request(0, 0, partitions, vec![]), &no_ids, 0);
        assert!(matches!(ctx, FetchContext::Full { .. }));
        let plan = cache.update_and_generate(&ctx, &vec![quiet(hw); n], 0);
        assert_eq!(plan.error_code, 0);
        assert_eq!(plan.include, vec![true; n]);
        assert!(plan.session_id > 0);
        plan.session_id
    }

    fn names(ctx: &FetchContext) -> Vec<(String, i32)> {
        ctx.partitions()
            .iter()
            .map(|p| (p.topic_name.clone().unwrap_or_default(), p.key.partition))
            .collect()
    }

    #[test]
    fn next_epoch_follows_fetch_metadata() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(41), 42);
        assert_eq!(
            next_epoch(i32::MAX),
            1,
            "wraps to 1, never to the initial epoch"
        );
        assert_eq!(next_epoch(-1), -1);
        assert_eq!(next_epoch(-7), -1);
    }

    #[test]
    fn session_id_zero_epoch_minus_one_is_sessionless() {
        let mut cache = cache();
        let ctx = cache.new_context(request(0, -1, vec![part("t", 0, 5)], vec![]), &no_ids, 0);
        assert_eq!(
            ctx,
            FetchContext::Sessionless {
                partitions: vec![part("t", 0, 5)]
            }
        );
        let plan = cache.update_and_generate(&ctx, &[quiet(10)], 0);
        assert_eq!(
            plan,
            FetchResponsePlan {
                error_code: 0,
                session_id: 0,
                include: vec![true]
            }
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn legacy_metadata_is_sessionless_full() {
        assert!(FetchMetadata::LEGACY.is_full());
        let mut cache = cache();
        let ctx = cache.new_context(
            FetchSessionRequest {
                version: 4,
                metadata: FetchMetadata::LEGACY,
                is_from_follower: false,
                partitions: vec![part("t", 0, 0)],
                forgotten: vec![],
            },
            &no_ids,
            0,
        );
        assert!(matches!(ctx, FetchContext::Sessionless { .. }));
    }

    #[test]
    fn epoch_zero_creates_a_session_at_epoch_one() {
        let mut cache = cache();
        let id = open_session(&mut cache, vec![part("t", 0, 0), part("t", 1, 0)], 3);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.total_partitions(), 2);
        assert_eq!(cache.session_epoch(id), Some(1));
    }

    #[test]
    fn incremental_fetch_reads_every_cached_partition_and_sends_only_changes() {
        let mut cache = cache();
        let id = open_session(
            &mut cache,
            vec![part("a", 0, 0), part("a", 1, 0), part("b", 0, 0)],
            3,
        );
        // Epoch 1, no partitions named: all three cached partitions are read.
        let ctx = cache.new_context(request(id, 1, vec![], vec![]), &no_ids, 10);
        assert_eq!(
            names(&ctx),
            vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 0)]
        );
        assert_eq!(cache.session_epoch(id), Some(2));
        // a-0 unchanged, a-1 high watermark moved, b-0 returned records.
        let plan = cache.update_and_generate(&ctx, &[quiet(3), quiet(4), with_records(3, 100)], 10);
        assert_eq!(plan.error_code, 0);
        assert_eq!(plan.session_id, id);
        assert_eq!(plan.include, vec![false, true, true]);

        // Nothing changed since: nothing is sent.
        let ctx = cache.new_context(request(id, 2, vec![], vec![]), &no_ids, 20);
        let plan = cache.update_and_generate(&ctx, &[quiet(3), quiet(4), quiet(3)], 20);
        assert_eq!(plan.include, vec![false, false, false]);
    }

    #[test]
    fn log_start_offset_change_is_sent() {
        let mut cache = cache();
        let id = open_session(&mut cache, vec![part("t", 0, 0)], 3);
        let ctx = cache.new_context(request(id, 1, vec![], vec![]), &no_ids, 0);
        let moved = PartitionFetchOutcome {
            log_start_offset: 2,
            ..quiet(3)
        };
        assert_eq!(
            cache.update_and_generate(&ctx, &[moved], 0).include,
            vec![true]
        );
        let ctx = cache.new_context(request(id, 2, vec![], vec![]), &no_ids, 0);
        assert_eq!(
            cache.update_and_generate(&ctx, &[moved], 0).include,
            vec![false]
        );
    }

    #[test]
    fn partitions_with_records_move_to_the_back() {
        let mut cache = cache();
        let id = open_session(
            &mut cache,
            vec![part("t", 0, 0), part("t", 1, 0), part("t", 2, 0)],
            0,
        );
        let ctx = cache.new_context(request(id, 1, vec![], vec![]), &no_ids, 0);
        cache.update_and_generate(&ctx, &[with_records(5, 10), quiet(0), quiet(0)], 0);
        let ctx = cache.new_context(request(id, 2, vec![], vec![]), &no_ids, 0);
        assert_eq!(
            names(&ctx),
            vec![("t".into(), 1), ("t".into(), 2), ("t".into(), 0)]
        );
    }

    #[test]
    fn errors_are_always_sent_and_recovery_is_sent_again() {
        let mut cache = cache();
        let id = open_session(&mut cache, vec![part("t", 0, 0)], 3);
        let failed = PartitionFetchOutcome {
            error_code: 6, // NOT_LEADER_OR_FOLLOWER
            high_watermark: -1,
            log_start_offset: -1,
            records_bytes: 0,
            has_preferred_read_replica: false,
        };
        for epoch in 1..=2 {
            let ctx = cache.new_context(request(id, epoch, vec![], vec![]), &no_ids, 0);
            assert_eq!(
                cache.update_and_generate(&ctx, &[failed], 0).include,
                vec![true]
            );
        }
        // The error went away and the high watermark is back where it was: still sent once.
        let ctx = cache.new_context(request(id, 3, vec![], vec![]), &no_ids, 0);
        assert_eq!(
            cache.update_and_generate(&ctx, &[quiet(3)], 0).include,
            vec![true]
        );
        let ctx = cache.new_context(request(id, 4, vec![], vec![]), &no_ids, 0);
        assert_eq!(
            cache.update_and_generate(&ctx, &[quiet(3)], 0).include,
            vec![false]
        );
    }

    #[test]
    fn added_and_altered_partitions_update_the_session() {
        let mut cache = cache();
        let id = open_session(&mut cache, vec![part("t", 0, 0)], 3);
        // Alter t-0's offset, add t-1.
        let ctx = cache.new_context(
            request(id, 1, vec![part("t", 0, 2), part("t", 1, 0)], vec![]),
            &no_ids,
            0,
        );
        let parts = ctx.partitions();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].data.fetch_offset, 2);
        assert_eq!(parts[1].key, key("t", 1));
        assert_eq!(cache.total_partitions(), 2);
        // The added partition is sent even with nothing new (its cached high watermark was unknown).
        let plan = cache.update_and_generate(&ctx, &[quiet(3), quiet(0)], 0);
        assert_eq!(plan.include, vec![false, true]);
    }

    #[test]
    fn forgotten_partitions_leave_the_session() {
        let mut cache = cache();
        let id = open_session(&mut cache, vec![part("t", 0, 0), part("t", 1, 0)], 3);
        let ctx = cache.new_context(
            request(id, 1, vec![], vec![key("t", 0), key("x", 9)]),
            &no_ids,
            0,
        );
        assert_eq!(names(&ctx), vec![("t".into(), 1)]);
        assert_eq!(cache.total_partitions(), 1);
        cache.update_and_generate(&ctx, &[quiet(3)], 0);
    }

    #[test]
    fn forgetting_every_partition_closes_the_session() {
        let mut cache = cache();
        let id = open_session(&mut cache, vec![part("t", 0, 0)], 3);
        let ctx = cache.new_context(request(id, 1, vec![], vec![key("t", 0)]), &no_ids, 0);
        assert_eq!(ctx, FetchContext::Sessionless { partitions: vec![] });
        let plan = cache.update_and_generate(&ctx, &[], 0);
        assert_eq!(plan.session_id, 0);
        assert!(cache.is_empty());
        assert_eq!(cache.total_partitions(), 0);
        let ctx = cache.new_context(request(id, 2, vec![], vec![]), &no_ids, 0);
        assert_eq!(
            ctx,
            FetchContext::SessionError {
                error_code: NOT_FOUND
            }
        );
    }

    #[test]
    fn wrong_epoch_and_unknown_session_are_errors() {
        let mut cache = cache();
        let id = open_session(&mut cache, vec![part("t", 0, 0)], 3);
        let ctx = cache.new_context(request(id, 5, vec![], vec![]), &no_ids, 0);
        assert_eq!(
            ctx,
            FetchContext::SessionError {
                error_code: BAD_EPOCH
            }
        );
        let plan = cache.update_and_generate(&ctx, &[], 0);
        assert_eq!(
            plan,
            FetchResponsePlan {
                error_code: BAD_EPOCH,
                session_id: 0,
                include: vec![]
            }
        );
        // The session is intact: the right epoch still works.
        assert_eq!(cache.session_epoch(id), Some(1));
        let ctx = cache.new_context(request(id.wrapping_add(1), 1, vec![], vec![]), &no_ids, 0);
        assert_eq!(
            ctx,
            FetchContext::SessionError {
                error_code: NOT_FOUND
            }
        );
        // An incremental epoch with session id 0 names no session.
        let ctx = cache.new_context(request(0, 1, vec![], vec![]), &no_ids, 0);
        assert_eq!(
            ctx,
            FetchContext::SessionError {
                error_code: NOT_FOUND
            }
        );
    }

    #[test]
    fn a_duplicate_request_racing_the_first_gets_invalid_epoch() {
        let mut cache = cache();
        let id = open_session(&mut cache, vec![part("t", 0, 0)], 3);
        let first = cache.new_context(request(id, 1, vec![], vec![]), &no_ids, 0);
        // A second request at epoch 2 is contexted before the first one answers.
        let second = cache.new_context(request(id, 2, vec![], vec![]), &no_ids, 0);
        let plan = cache.update_and_generate(&first, &[with_records(4, 10)], 0);
        assert_eq!(plan.error_code, BAD_EPOCH);
        assert_eq!(plan.session_id, id);
        let plan = cache.update_and_generate(&second, &[with_records(4, 10)], 0);
        assert_eq!(plan.error_code, 0);
        assert_eq!(plan.include, vec![true]);
    }

    #[test]
    fn full_fetch_naming_a_session_closes_it() {
        let mut cache = cache();
        let id = open_session(&mut cache, vec![part("t", 0, 0)], 3);
        // Epoch 0 with the old id: the old session is closed and a new one created.
        let ctx = cache.new_context(request(id, 0, vec![part("t", 0, 1)], vec![]), &no_ids, 0);
        assert!(cache.session_epoch(id).is_none());
        let plan = cache.update_and_generate(&ctx, &[quiet(3)], 0);
        assert_ne!(plan.session_id, id);
        assert_eq!(cache.len(), 1);
        // Epoch -1 with the new id: closed, and no new session.
        let ctx = cache.new_context(
            request(plan.session_id, -1, vec![part("t", 0, 1)], vec![]),
            &no_ids,
            0,
        );
        assert!(matches!(ctx, FetchContext::Sessionless { .. }));
        assert!(cache.is_empty());
    }

    #[test]
    fn topic_id_sessions_key_by_id_and_resolve_names_late() {
        let mut cache = cache();
        let known = Uuid::from_u128(1);
        let unknown = Uuid::from_u128(2);
        let by_id = |id: Uuid, partition: i32, name: Option<&str>| ContextPartition {
            key: FetchPartitionKey {
                topic: TopicKey::Id(id),
                partition,
            },
            topic_name: name.map(str::to_string),
            data: data(0),
        };
        let ctx = cache.new_context(
            FetchSessionRequest {
                version: 13,
                metadata: FetchMetadata {
                    session_id: 0,
                    epoch: 0,
                },
                is_from_follower: false,
                partitions: vec![by_id(known, 0, Some("k")), by_id(unknown, 0, None)],
                forgotten: vec![],
            },
            &no_ids,
            0,
        );
        assert!(matches!(
            ctx,
            FetchContext::Full {
                uses_topic_ids: true,
                ..
            }
        ));
        let unknown_outcome = PartitionFetchOutcome {
            error_code: 100, // UNKNOWN_TOPIC_ID
            high_watermark: -1,
            log_start_offset: -1,
            records_bytes: 0,
            has_preferred_read_replica: false,
        };
        let id = cache
            .update_and_generate(&ctx, &[quiet(0), unknown_outcome], 0)
            .session_id;

        // The unknown topic now exists: the incremental fetch resolves its name.
        let resolve = |id: Uuid| {
            (id == unknown)
                .then(|| "late".to_string())
                .or((id == known).then(|| "k".into()))
        };
        let incremental = |epoch: i32, version: i16| FetchSessionRequest {
            version,
            metadata: FetchMetadata {
                session_id: id,
                epoch,
            },
            is_from_follower: false,
            partitions: vec![],
            forgotten: vec![],
        };
        let ctx = cache.new_context(incremental(1, 13), &resolve, 0);
        assert_eq!(names(&ctx), vec![("k".into(), 0), ("late".into(), 0)]);

        // A v12 request cannot continue a v13 session.
        let ctx = cache.new_context(incremental(2, 12), &resolve, 0);
        assert_eq!(
            ctx,
            FetchContext::SessionError {
                error_code: error_code::FETCH_SESSION_TOPIC_ID_ERROR
            }
        );
        // Forgetting by id works whatever the name.
        let mut forget = incremental(2, 13);
        forget.forgotten = vec![FetchPartitionKey {
            topic: TopicKey::Id(unknown),
            partition: 0,
        }];
        let ctx = cache.new_context(forget, &resolve, 0);
        assert_eq!(names(&ctx), vec![("k".into(), 0)]);
    }

    #[test]
    fn duplicate_partitions_keep_first_position_and_last_parameters() {
        let mut cache = cache();
        let ctx = cache.new_context(
            request(
                0,
                -1,
                vec![part("t", 0, 1), part("t", 1, 0), part("t", 0, 7)],
                vec![],
            ),
            &no_ids,
            0,
        );
        let parts = ctx.partitions();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].key, key("t", 0));
        assert_eq!(parts[0].data.fetch_offset, 7);
    }

    fn open_at(cache: &mut FetchSessionCache, follower: bool, size: usize, now_ms: i64) -> i32 {
        let partitions: Vec<_> = (0..size as i32).map(|p| part("t", p, 0)).collect();
        let mut req = request(0, 0, partitions, vec![]);
        req.is_from_follower = follower;
        let ctx = cache.new_context(req, &no_ids, now_ms);
        cache
            .update_and_generate(&ctx, &vec![quiet(0); size], now_ms)
            .session_id
    }

    #[test]
    fn the_cache_is_bounded_by_its_slots() {
        let mut cache = FetchSessionCache::with_seed(2, 1000, 7);
        let a = open_at(&mut cache, false, 2, 0);
        let b = open_at(&mut cache, false, 2, 0);
        assert!(a > 0 && b > 0 && a != b);
        // Same size, nothing stale, nothing old enough: no session, answered sessionless.
        assert_eq!(open_at(&mut cache, false, 2, 10), 0);
        // Bigger, but the others are too young to be evicted by a consumer.
        assert_eq!(open_at(&mut cache, false, 5, 10), 0);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.evictions(), 0);
    }

    #[test]
    fn a_stale_session_is_evicted_first() {
        let mut cache = FetchSessionCache::with_seed(2, 1000, 7);
        let a = open_at(&mut cache, false, 5, 0);
        let b = open_at(&mut cache, false, 5, 500);
        // a unused for 1001 ms: stale, evicted even by a smaller session.
        let c = open_at(&mut cache, false, 1, 1001);
        assert!(c > 0);
        assert!(cache.session_epoch(a).is_none());
        assert!(cache.session_epoch(b).is_some());
        assert_eq!(cache.evictions(), 1);
        assert_eq!(cache.total_partitions(), 6);
    }

    #[test]
    fn a_follower_session_evicts_a_consumer_session() {
        let mut cache = FetchSessionCache::with_seed(2, 1000, 7);
        let small = open_at(&mut cache, false, 1, 0);
        let big = open_at(&mut cache, false, 9, 0);
        let follower = open_at(&mut cache, true, 1, 10);
        assert!(follower > 0);
        assert!(
            cache.session_epoch(small).is_none(),
            "the smaller consumer session goes first"
        );
        assert!(cache.session_epoch(big).is_some());
        // Followers cannot evict young follower sessions of the same size; the consumer session goes.
        let follower2 = open_at(&mut cache, true, 1, 20);
        assert!(follower2 > 0);
        assert!(cache.session_epoch(big).is_none());
        assert_eq!(open_at(&mut cache, true, 1, 30), 0);
        // A consumer cannot evict followers at all while they are young.
        assert_eq!(open_at(&mut cache, false, 100, 40), 0);
    }

    #[test]
    fn a_bigger_session_evicts_an_old_smaller_one() {
        let mut cache = FetchSessionCache::with_seed(2, 1000, 7);
        let small = open_at(&mut cache, false, 1, 0);
        let other = open_at(&mut cache, false, 3, 0);
        // Keep both in use so that neither is stale, but both are older than eviction_ms.
        for (id, epoch) in [(small, 1), (other, 1)] {
            let ctx = cache.new_context(request(id, epoch, vec![], vec![]), &no_ids, 1500);
            let n = ctx.partitions().len();
            cache.update_and_generate(&ctx, &vec![quiet(0); n], 1500);
        }
        // Same size as the smallest: no.
        assert_eq!(open_at(&mut cache, false, 1, 1600), 0);
        // Bigger: the smallest goes.
        assert!(open_at(&mut cache, false, 2, 1600) > 0);
        assert!(cache.session_epoch(small).is_none());
        assert!(cache.session_epoch(other).is_some());
    }

    #[test]
    fn zero_slots_means_no_sessions() {
        let mut cache = FetchSessionCache::with_seed(0, 1000, 7);
        assert_eq!(open_at(&mut cache, false, 1, 0), 0);
        assert!(cache.is_empty());
    }

    #[test]
    fn session_ids_are_positive_and_unique() {
        let mut cache = FetchSessionCache::with_seed(10_000, 1000, 1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let id = open_at(&mut cache, false, 0, 0);
            assert!(id > 0);
            assert!(seen.insert(id));
        }
    }

    /// A tiny deterministic generator for the simulation below.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// KIP-227's promise, checked over random runs: a client that applies only the partitions an incremental
    /// response carries always holds the broker's current high watermark, log start offset and error of every
    /// partition in its session, and every partition with records is sent.
    #[test]
    fn incremental_responses_keep_the_client_view_exact() {
        for seed in 1..=200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut cache = FetchSessionCache::with_seed(8, DEFAULT_EVICTION_MS, seed);
            const N: i32 = 6;
            // Broker truth per partition: (high watermark, log start offset, error code).
            let mut truth: Vec<(i64, i64, i16)> = (0..N).map(|_| (0, 0, 0)).collect();
            // Client view: what it last received, for partitions in its session.
            let mut view: std::collections::BTreeMap<i32, (i64, i64, i16)> = Default::default();
            let mut offsets: std::collections::BTreeMap<i32, i64> = Default::default();
            let outcome_of = |p: i32, fetch_offset: i64, truth: &[(i64, i64, i16)]| {
                let (hw, lso, err) = truth[p as usize];
                if err != 0 {
                    PartitionFetchOutcome {
                        error_code: err,
                        high_watermark: -1,
                        log_start_offset: -1,
                        records_bytes: 0,
                        has_preferred_read_replica: false,
                    }
                } else {
                    PartitionFetchOutcome {
                        error_code: 0,
                        high_watermark: hw,
                        log_start_offset: lso,
                        records_bytes: usize::try_from((hw - fetch_offset).max(0)).unwrap_or(0)
                            * 10,
                        has_preferred_read_replica: false,
                    }
                }
            };
            // Open with partitions 0..3.
            let initial: Vec<_> = (0..3).map(|p| part("t", p, 0)).collect();
            let ctx = cache.new_context(request(0, 0, initial, vec![]), &no_ids, 0);
            let outs: Vec<_> = ctx
                .partitions()
                .iter()
                .map(|p| outcome_of(p.key.partition, 0, &truth))
                .collect();
            let plan = cache.update_and_generate(&ctx, &outs, 0);
            let id = plan.session_id;
            assert!(id > 0);
            for (p, o) in ctx.partitions().iter().zip(&outs) {
                view.insert(
                    p.key.partition,
                    (o.high_watermark, o.log_start_offset, o.error_code),
                );
                offsets.insert(p.key.partition, 0);
            }
            let mut epoch = 1;
            for step in 0..60 {
                // The broker moves on.
                for _ in 0..rng.below(3) {
                    let p = rng.below(N as u64) as usize;
                    match rng.below(4) {
                        0 => truth[p].2 = if truth[p].2 == 0 { 6 } else { 0 },
                        1 => truth[p].1 = (truth[p].1 + 1).min(truth[p].0),
                        _ => truth[p].0 += 1 + rng.below(3) as i64,
                    }
                }
                // The client adds, alters or forgets a partition now and then (never the last one).
                let mut named = vec![];
                let mut forgotten = vec![];
                match rng.below(5) {
                    0 => {
                        let p = rng.below(N as u64) as i32;
                        let o = *offsets.get(&p).unwrap_or(&0);
                        named.push(part("t", p, o));
                        offsets.insert(p, o);
                        view.entry(p).or_insert((i64::MIN, i64::MIN, i16::MIN));
                    }
                    1 if view.len() > 1 => {
                        let p = *view
                            .keys()
                            .nth(rng.below(view.len() as u64) as usize)
                            .expect("key");
                        forgotten.push(key("t", p));
                        view.remove(&p);
                        offsets.remove(&p);
                    }
                    _ => {}
                }
                let ctx = cache.new_context(request(id, epoch, named, forgotten), &no_ids, step);
                let FetchContext::Incremental { partitions, .. } = &ctx else {
                    panic!("seed {seed} step {step}: expected an incremental context, got {ctx:?}");
                };
                let outs: Vec<_> = partitions
                    .iter()
                    .map(|p| outcome_of(p.key.partition, offsets[&p.key.partition], &truth))
                    .collect();
                let plan = cache.update_and_generate(&ctx, &outs, step);
                assert_eq!(plan.error_code, 0, "seed {seed} step {step}");
                for ((p, o), sent) in partitions.iter().zip(&outs).zip(&plan.include) {
                    if o.records_bytes > 0 {
                        assert!(
                            sent,
                            "seed {seed} step {step}: partition {} had records",
                            p.key.partition
                        );
                    }
                    if *sent {
                        view.insert(
                            p.key.partition,
                            (o.high_watermark, o.log_start_offset, o.error_code),
                        );
                        if o.error_code == 0 {
                            offsets.insert(p.key.partition, o.high_watermark);
                        }
                    }
                }
                for (p, seen) in &view {
                    let o = outcome_of(*p, offsets[p], &truth);
                    assert_eq!(
                        *seen,
                        (o.high_watermark, o.log_start_offset, o.error_code),
                        "seed {seed} step {step}: client view of partition {p} is stale"
                    );
                }
                epoch = next_epoch(epoch);
            }
            assert_eq!(cache.total_partitions(), view.len(), "seed {seed}");
        }
    }
}
