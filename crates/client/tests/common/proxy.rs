//! A TCP proxy in front of a broker that can lose responses: it forwards Kafka frames both ways and, while
//! told to, swallows the response to a Produce request and closes the connection, as a network failure after
//! the broker wrote the batch would. The client sees a lost connection and retries a batch the broker already
//! has, which is what idempotence (KIP-98) must turn into exactly one copy.
//!
//! Start the broker with `advertised.listeners` set to the proxy's address (bind the proxy first), so the
//! client's every connection goes through it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Produce's API key.
const PRODUCE: i16 = 0;

/// The proxy; dropping it stops accepting (open connections live on until either side closes).
pub struct LossyProxy {
    addr: SocketAddr,
    /// Produce responses still to swallow.
    to_drop: Arc<AtomicUsize>,
    /// Produce responses swallowed so far.
    dropped: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    /// Binds a loopback port; connections are forwarded to the broker address `upstream` once it is set.
    pub async fn bind() -> (LossyProxy, tokio::sync::oneshot::Sender<SocketAddr>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let to_drop = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let (upstream_tx, upstream_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let (d, n) = (to_drop.clone(), dropped.clone());
        let accept = tokio::spawn(async move {
            let Ok(upstream) = upstream_rx.await else {
                return;
            };
            while let Ok((client, _)) = listener.accept().await {
                let (d, n) = (d.clone(), n.clone());
                tokio::spawn(async move {
                    if let Ok(broker) = TcpStream::connect(upstream).await {
                        relay(client, broker, d, n).await;
                    }
                });
            }
        });
        (
            LossyProxy {
                addr,
                to_drop,
                dropped,
                accept,
            },
            upstream_tx,
        )
    }

    /// `host:port` of the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Swallows the next `n` Produce responses (each closes its connection).
    pub fn drop_produce_responses(&self, n: usize) {
        self.to_drop.fetch_add(n, Ordering::SeqCst);
    }

    /// How many Produce responses were swallowed.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn read_frame(r: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    r.read_exact(&mut size).await.ok()?;
    let len = usize::try_from(i32::from_be_bytes(size)).ok()?;
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&size);
    r.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

async fn relay(
    client: TcpStream,
    broker: TcpStream,
    to_drop: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
) {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut broker_r, mut broker_w) = broker.into_split();
    // (correlation id, api key) of the requests forwarded, in order: Kafka answers a connection in order.
    let requests: Arc<Mutex<VecDeque<(i32, i16)>>> = Arc::default();
    let seen = requests.clone();
    let upstream = tokio::spawn(async move {
        while let Some(frame) = read_frame(&mut client_r).await {
            if frame.len() >= 12 {
                let api_key = i16::from_be_bytes([frame[4], frame[5]]);
                let correlation_id = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
                seen.lock().push_back((correlation_id, api_key));
            }
            if broker_w.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = broker_w.shutdown().await;
    });
    downstream(&mut broker_r, &mut client_w, &requests, &to_drop, &dropped).await;
    let _ = client_w.shutdown().await;
    upstream.abort();
}

async fn downstream(
    broker_r: &mut OwnedReadHalf,
    client_w: &mut OwnedWriteHalf,
    requests: &Mutex<VecDeque<(i32, i16)>>,
    to_drop: &AtomicUsize,
    dropped: &AtomicUsize,
) {
    while let Some(frame) = read_frame(broker_r).await {
        let correlation_id = frame
            .get(4..8)
            .map_or(-1, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let api_key = {
            let mut queue = requests.lock();
            // Requests without a response (acks=0) are skipped.
            let mut key = -1;
            while let Some((id, k)) = queue.pop_front() {
                if id == correlation_id {
                    key = k;
                    break;
                }
            }
            key
        };
        if api_key == PRODUCE
            && to_drop
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            dropped.fetch_add(1, Ordering::SeqCst);
            // The broker wrote the batch; the client never hears so.
            return;
        }
        if client_w.write_all(&frame).await.is_err() {
            return;
        }
    }
}
