//! Sluice's test kit, for tests only: one seeded RNG ([`rng::Rng`]), a clock seam ([`clock::ManualClock`]),
//! record-batch builders ([`batch::BatchBuilder`]) and, with the `cluster` feature, in-process fixtures: a single
//! embedded node ([`cluster::TestBroker`]) and an N-node quorum ([`cluster::TestCluster`]).
//!
//! The RNG, clock and batch modules depend only on `sluice-protocol`, so crates below the broker (storage,
//! metadata) use them without the `cluster` feature and without building the broker.

pub mod batch;
pub mod clock;
pub mod rng;

#[cfg(feature = "cluster")]
pub mod cluster;

pub use batch::BatchBuilder;
pub use clock::{Clock, ManualClock, SystemClock};
pub use rng::Rng;

#[cfg(feature = "cluster")]
pub use cluster::{BlockingBroker, TestBroker, TestCluster};
