//! The fetch purgatory: where a fetch that found fewer than `min_bytes` waits (long polling) until the high
//! watermark of one of its partitions moves, its `max_wait_ms` deadline, or the end of its connection.
//!
//! Kafka parks a `DelayedFetch` keyed by its partitions and completes it when the high watermark moves. Here a
//! parked fetch is an `.await` on the high-watermark notifiers of its partitions
//! (`Partition::subscribe_high_watermark`, bumped whenever the high watermark or the replica state changes) raced
//! against the deadline; the handler then reads again and decides whether the
//! fetch is now satisfied (see `apis::fetch`). Nothing is locked while waiting, and the wait is cancel-safe:
//! dropping the handler's future just drops the receivers and frees the slot. The connection processor
//! (`network.rs`) relies on this: when the peer closes the connection, it drops the in-flight fetch at once rather
//! than letting it wait out its `max_wait_ms`.
//!
//! Bounded: at most `max_parked` fetches wait at once; a fetch beyond that is answered at once with what it has
//! (a short poll), which is always a correct Fetch response.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use tokio::sync::watch;
use tokio::time::Instant;

/// Default bound on fetches waiting at once.
pub const DEFAULT_MAX_PARKED: usize = 10_000;

/// Why a parked fetch woke up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeReason {
    /// A watched partition's high watermark (or state) changed, or it went away (its notifier closed).
    Appended,
    /// The fetch's `max_wait_ms` deadline passed.
    Expired,
    /// The purgatory is full: the fetch must be answered now.
    Full,
}

/// The fetch purgatory of one broker: counts and bounds the fetches waiting for data.
#[derive(Debug)]
pub struct FetchPurgatory {
    parked: AtomicUsize,
    max_parked: usize,
}

impl Default for FetchPurgatory {
    fn default() -> Self {
        FetchPurgatory::new(DEFAULT_MAX_PARKED)
    }
}

impl FetchPurgatory {
    /// A purgatory holding at most `max_parked` waiting fetches.
    pub fn new(max_parked: usize) -> FetchPurgatory {
        FetchPurgatory {
            parked: AtomicUsize::new(0),
            max_parked,
        }
    }

    /// Number of fetches waiting right now.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Acquire)
    }

    /// Waits until one of `notifiers` reports an append made after it was subscribed (or last woke this fetch),
    /// or until `deadline`, whichever comes first.
    ///
    /// Subscribe the notifiers *before* reading the logs: an append that lands between the read and this call is
    /// then seen at once instead of being missed until the deadline. With no notifiers, waits for the deadline.
    pub async fn wait(
        &self,
        notifiers: &mut [watch::Receiver<i64>],
        deadline: Instant,
    ) -> WakeReason {
        let Some(_slot) = self.try_park() else {
            return WakeReason::Full;
        };
        if notifiers.iter().any(|n| n.has_changed().unwrap_or(true)) {
            return WakeReason::Appended;
        }
        match tokio::time::timeout_at(deadline, any_changed(notifiers)).await {
            Ok(()) => WakeReason::Appended,
            Err(_elapsed) => WakeReason::Expired,
        }
    }

    fn try_park(&self) -> Option<ParkedSlot<'_>> {
        self.parked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_parked).then_some(n + 1)
            })
            .ok()
            .map(|_| ParkedSlot { purgatory: self })
    }
}

/// One occupied purgatory slot; released on drop (also when the waiting future is cancelled).
struct ParkedSlot<'a> {
    purgatory: &'a FetchPurgatory,
}

impl Drop for ParkedSlot<'_> {
    fn drop(&mut self) {
        self.purgatory.parked.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Completes when any receiver sees a new value or its sender is dropped; pending forever for an empty slice.
async fn any_changed(notifiers: &mut [watch::Receiver<i64>]) {
    type Changed<'a> =
        Pin<Box<dyn Future<Output = Result<(), watch::error::RecvError>> + Send + 'a>>;
    let mut waits: Vec<Changed<'_>> = notifiers
        .iter_mut()
        .map(|n| Box::pin(n.changed()) as Changed<'_>)
        .collect();
    std::future::poll_fn(|cx| {
        for wait in waits.iter_mut() {
            if wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn deadline_in(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn expires_at_the_deadline_without_appends() {
        let purgatory = FetchPurgatory::new(4);
        let (_tx, rx) = watch::channel(0i64);
        let start = Instant::now();
        let reason = purgatory.wait(&mut [rx], deadline_in(500)).await;
        assert_eq!(reason, WakeReason::Expired);
        assert!(start.elapsed() >= Duration::from_millis(500));
        assert_eq!(purgatory.parked(), 0);
    }

    #[tokio::test]
    async fn wakes_on_an_append_to_any_watched_partition() {
        let purgatory = Arc::new(FetchPurgatory::new(4));
        let (tx_a, rx_a) = watch::channel(0i64);
        let (tx_b, rx_b) = watch::channel(0i64);
        let p = purgatory.clone();
        let waiter = tokio::spawn(async move {
            let start = Instant::now();
            let reason = p.wait(&mut [rx_a, rx_b], deadline_in(10_000)).await;
            (reason, start.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(purgatory.parked(), 1);
        tx_b.send_replace(7);
        let (reason, waited) = waiter.await.expect("waiter");
        assert_eq!(reason, WakeReason::Appended);
        assert!(waited < Duration::from_millis(1000));
        assert_eq!(purgatory.parked(), 0);
        drop(tx_a);
    }

    #[tokio::test]
    async fn an_append_between_subscribe_and_wait_is_not_missed() {
        let purgatory = FetchPurgatory::new(4);
        let (tx, rx) = watch::channel(0i64);
        // The handler subscribed, read the log, then an append landed before it parked.
        tx.send_replace(1);
        let reason = purgatory.wait(&mut [rx], deadline_in(10_000)).await;
        assert_eq!(reason, WakeReason::Appended);
    }

    #[tokio::test]
    async fn a_closed_notifier_wakes_the_fetch() {
        let purgatory = FetchPurgatory::new(4);
        let (tx, rx) = watch::channel(0i64);
        drop(tx);
        assert_eq!(
            purgatory.wait(&mut [rx], deadline_in(10_000)).await,
            WakeReason::Appended
        );
    }

    #[tokio::test]
    async fn a_full_purgatory_answers_at_once() {
        let purgatory = Arc::new(FetchPurgatory::new(1));
        let (_tx, rx) = watch::channel(0i64);
        let p = purgatory.clone();
        let first = tokio::spawn(async move { p.wait(&mut [rx], deadline_in(1000)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (_tx2, rx2) = watch::channel(0i64);
        assert_eq!(
            purgatory.wait(&mut [rx2], deadline_in(1000)).await,
            WakeReason::Full
        );
        assert_eq!(first.await.expect("first"), WakeReason::Expired);
        assert_eq!(purgatory.parked(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_wait_releases_its_slot() {
        let purgatory = Arc::new(FetchPurgatory::new(1));
        let (_tx, rx) = watch::channel(0i64);
        let p = purgatory.clone();
        let waiter = tokio::spawn(async move { p.wait(&mut [rx], deadline_in(60_000)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(purgatory.parked(), 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(purgatory.parked(), 0);
    }

    #[tokio::test]
    async fn no_notifiers_waits_for_the_deadline() {
        let purgatory = FetchPurgatory::new(1);
        let start = Instant::now();
        assert_eq!(
            purgatory.wait(&mut [], deadline_in(300)).await,
            WakeReason::Expired
        );
        assert!(start.elapsed() >= Duration::from_millis(300));
    }
}
