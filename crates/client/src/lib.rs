//! Async Rust client: producer, consumer, admin.
