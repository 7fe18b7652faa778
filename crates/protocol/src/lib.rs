//! Kafka wire protocol for Sluice: bytes in, types out, and back. No I/O lives here.
//!
//! Message bodies are encoded and decoded with the `kafka-protocol` crate; this crate adds what it lacks:
//! frame bounds, a guard that rejects malformed requests before they reach that decoder, a zero-copy view of
//! magic-v2 record batch headers, and Kafka's error codes.

pub mod batch;
