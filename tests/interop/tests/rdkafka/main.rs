//! Interop tests driving a real `sluice server` with librdkafka 2.12.1 through the `rdkafka` crate: codecs,
//! acks, delivery reports, durability across restarts, metadata and auto-creation, offsets and admin.
//!
//! One test binary (librdkafka is linked once); each test starts its own broker on a free loopback port.

mod acks;
mod admin;
mod codecs;
mod common;
mod durability;
mod groups;
mod metadata;
mod offsets;
