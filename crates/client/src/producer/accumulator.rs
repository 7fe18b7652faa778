//! The record accumulator: per-partition queues of batches, and the drain that picks the batches to send now
//! (Java's `RecordAccumulator`).
//!
//! Each partition has a queue in which every batch but the last is full; records are appended to the last
//! one while it has not been drained. A batch that must be retried goes back to the front of its queue, in
//! sequence order (Java's `insertInSequenceOrder`), and blocks the partition until its backoff ends, so a
//! partition's batches leave in order. The drain takes at most one batch per partition; with idempotence it
//! asks the [`TransactionManager`] whether the partition may send and with which producer id, epoch and base
//! sequence (see its docs).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::transaction_manager::{BatchId, TransactionManager};
use super::BatchHandle;
use crate::consumer::TopicPartition;
use crate::records::{ProducerRecord, ProducerStamp};

/// When a batch that came back for a retry may be drained again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RetryState {
    /// Not a retry, or its backoff is over.
    Ready,
    /// `retry.backoff.ms` from the failure.
    Backoff(Instant),
    /// Waits for the metadata refresh its error asked for (then backs off from when that began).
    AwaitingMetadata(Instant),
}

/// A batch of one partition, from its first record until its outcome is known.
pub(super) struct Batch {
    /// The records with their resolved timestamps; emptied once the batch is encoded.
    pub(super) records: Vec<(ProducerRecord, i64)>,
    /// How many records the batch holds.
    pub(super) record_count: usize,
    /// The outcome shared by the records' delivery futures.
    pub(super) outcome: BatchHandle,
    /// Approximate size of the records, for `batch.size`.
    pub(super) size_bytes: usize,
    /// When the first record was appended (for `linger.ms` and `delivery.timeout.ms`).
    pub(super) created: Instant,
    /// `buffer.memory` permits held by the records.
    pub(super) permits: usize,
    /// The encoded batch, once drained.
    pub(super) encoded: Option<Bytes>,
    /// The producer fields written in `encoded`.
    pub(super) stamp: Option<ProducerStamp>,
    /// The transaction manager's id for the batch, once drained by an idempotent producer.
    pub(super) id: Option<BatchId>,
    /// Retries done so far.
    pub(super) attempts: u32,
    /// When a retried batch may go again.
    pub(super) retry: RetryState,
}

impl Batch {
    pub(super) fn new(outcome: BatchHandle) -> Batch {
        Batch {
            records: Vec::new(),
            record_count: 0,
            outcome,
            size_bytes: 0,
            created: Instant::now(),
            permits: 0,
            encoded: None,
            stamp: None,
            id: None,
            attempts: 0,
            retry: RetryState::Ready,
        }
    }

    /// Whether records may still be appended (it was never drained).
    pub(super) fn is_open(&self) -> bool {
        self.encoded.is_none() && self.id.is_none() && self.attempts == 0
    }
}

/// A batch taken by the drain, with the producer fields to send it with.
pub(super) struct Drained {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) batch: Batch,
    pub(super) stamp: Option<ProducerStamp>,
}

/// One topic's queues and sticky partition: a record costs one topic lookup, then indexing.
#[derive(Default)]
pub(super) struct TopicBatches {
    /// Indexed by partition.
    pub(super) partitions: Vec<VecDeque<Batch>>,
    /// KIP-480: the partition keyless records of this topic currently stick to.
    pub(super) sticky: Option<i32>,
}

impl TopicBatches {
    /// The queue of `partition` (non-negative: validated or reduced modulo the partition count by `send`).
    pub(super) fn queue_mut(&mut self, partition: i32) -> &mut VecDeque<Batch> {
        let index = usize::try_from(partition).unwrap_or(0);
        if index >= self.partitions.len() {
            self.partitions.resize_with(index + 1, VecDeque::new);
        }
        &mut self.partitions[index]
    }
}

/// Settings the drain needs.
pub(super) struct DrainConfig {
    pub(super) linger: Duration,
    pub(super) batch_size_bytes: usize,
    pub(super) delivery_timeout: Duration,
    /// `flush` or `close` is waiting: every batch is due.
    pub(super) flushing: bool,
}

/// What one drain produced.
#[derive(Default)]
pub(super) struct DrainResult {
    /// Batches to send now.
    pub(super) ready: Vec<Drained>,
    /// Batches past `delivery.timeout.ms`, taken out of their queues.
    pub(super) expired: Vec<(TopicPartition, Batch)>,
    /// The earliest moment a queued batch becomes due (linger, backoff or expiry).
    pub(super) next_deadline: Option<Instant>,
}

/// Everything behind the producer's one state lock.
#[derive(Default)]
pub(super) struct Accumulator {
    /// Batches by topic; a topic is dropped once none of its partitions holds a batch.
    pub(super) batches: HashMap<String, TopicBatches>,
    /// `flush` is waiting.
    pub(super) flushing: bool,
    /// Idempotence and transactions (`None` with idempotence off).
    pub(super) txn: Option<TransactionManager>,
    /// An InitProducerId for an idempotent producer is under way.
    pub(super) init_in_flight: bool,
    /// An AddPartitionsToTxn is under way.
    pub(super) add_partitions_in_flight: bool,
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl Accumulator {
    /// Whether any batch is queued (not counting batches in a send task).
    pub(super) fn has_queued(&self) -> bool {
        self.batches
            .values()
            .any(|t| t.partitions.iter().any(|q| !q.is_empty()))
    }

    /// Takes the batches due now (at most one per partition, as Kafka's producer sends), and the expired ones.
    pub(super) fn drain(&mut self, now: Instant, config: &DrainConfig) -> DrainResult {
        let mut out = DrainResult::default();
        let txn = &mut self.txn;
        self.batches.retain(|topic, parts| {
            for (index, queue) in parts.partitions.iter_mut().enumerate() {
                let partition = i32::try_from(index).unwrap_or(i32::MAX);
                // Java's `expiredBatches`: queued batches past the delivery timeout fail.
                while queue
                    .front()
                    .is_some_and(|b| b.created + config.delivery_timeout <= now)
                {
                    if let Some(b) = queue.pop_front() {
                        out.expired.push(((topic.clone(), partition), b));
                    }
                }
                let Some(first) = queue.front() else {
                    if parts.sticky == Some(partition) {
                        parts.sticky = None;
                    }
                    continue;
                };
                let expiry = first.created + config.delivery_timeout;
                let due = match first.retry {
                    RetryState::Backoff(at) if at > now => {
                        out.next_deadline = earliest(out.next_deadline, at.min(expiry));
                        false
                    }
                    RetryState::AwaitingMetadata(_) => {
                        out.next_deadline = earliest(out.next_deadline, expiry);
                        false
                    }
                    _ if !first.is_open() => true,
                    _ => {
                        let linger_end = first.created + config.linger;
                        let due = queue.len() > 1
                            || config.flushing
                            || first.size_bytes >= config.batch_size_bytes
                            || linger_end <= now;
                        if !due {
                            out.next_deadline = earliest(out.next_deadline, linger_end);
                        }
                        due
                    }
                };
                if !due {
                    continue;
                }
                let mut stamp = None;
                if let Some(tm) = txn.as_mut() {
                    // Allocates the key once per batch (not per record).
                    let tp = (topic.clone(), partition);
                    if tm.should_stop_drain(&tp, first.id) {
                        continue;
                    }
                    let transactional = tm.is_transactional();
                    let sequence = match first.id {
                        Some(id) => tm.in_flight_batch(&tp, id),
                        None => Some(tm.assign_sequence(
                            &tp,
                            i32::try_from(first.record_count).unwrap_or(i32::MAX),
                        )),
                    };
                    stamp = match sequence {
                        Some(s) => Some(ProducerStamp {
                            producer_id: s.producer.producer_id,
                            epoch: s.producer.epoch,
                            base_sequence: s.base_sequence,
                            transactional,
                        }),
                        // A retry the manager no longer tracks (its partition was reset): resent as it was.
                        None => first.stamp,
                    };
                    if first.id.is_none() {
                        if let (Some(s), Some(b)) = (sequence, queue.front_mut()) {
                            b.id = Some(s.id);
                        }
                    }
                }
                let Some(batch) = queue.pop_front() else {
                    continue;
                };
                if queue.is_empty() && parts.sticky == Some(partition) {
                    parts.sticky = None;
                }
                out.ready.push(Drained {
                    topic: topic.clone(),
                    partition,
                    batch,
                    stamp,
                });
            }
            parts.partitions.iter().any(|q| !q.is_empty())
        });
        out
    }

    /// Puts a batch back for a retry: ahead of every batch never drained, behind retries with a lower
    /// sequence (Java's `insertInSequenceOrder`), so the partition resends in sequence order.
    pub(super) fn reenqueue(&mut self, topic: &str, partition: i32, batch: Batch) {
        let sequence_of = |b: &Batch, txn: &Option<TransactionManager>| -> Option<i32> {
            let id = b.id?;
            let tm = txn.as_ref()?;
            tm.in_flight_batch(&(topic.to_owned(), partition), id)
                .map(|s| s.base_sequence)
        };
        let own = sequence_of(&batch, &self.txn);
        let txn = &self.txn;
        let parts = match self.batches.get_mut(topic) {
            Some(p) => p,
            None => self.batches.entry(topic.to_owned()).or_default(),
        };
        let queue = parts.queue_mut(partition);
        let position = match own {
            Some(own) => queue
                .iter()
                .position(|b| b.is_open() || sequence_of(b, txn).is_none_or(|s| s > own))
                .unwrap_or(queue.len()),
            None => 0,
        };
        queue.insert(position, batch);
    }

    /// Takes every queued batch (`only_undrained`: only those never sent), for a fatal error or an abort.
    pub(super) fn take_batches(&mut self, only_undrained: bool) -> Vec<(TopicPartition, Batch)> {
        let mut out = Vec::new();
        self.batches.retain(|topic, parts| {
            for (index, queue) in parts.partitions.iter_mut().enumerate() {
                let partition = i32::try_from(index).unwrap_or(i32::MAX);
                let mut kept = VecDeque::new();
                for b in queue.drain(..) {
                    if only_undrained && !b.is_open() {
                        kept.push_back(b);
                    } else {
                        out.push(((topic.clone(), partition), b));
                    }
                }
                *queue = kept;
            }
            parts.sticky = None;
            parts.partitions.iter().any(|q| !q.is_empty())
        });
        out
    }

    /// A metadata refresh for `topic` is over: its waiting retries go once `backoff` has passed since they
    /// failed.
    pub(super) fn metadata_refreshed(&mut self, topic: &str, backoff: Duration) {
        let Some(parts) = self.batches.get_mut(topic) else {
            return;
        };
        for b in parts.partitions.iter_mut().flat_map(|q| q.iter_mut()) {
            if let RetryState::AwaitingMetadata(failed) = b.retry {
                b.retry = RetryState::Backoff(failed + backoff);
            }
        }
    }
}
