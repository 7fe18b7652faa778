//! The Sluice broker: the tokio server that speaks Kafka's wire protocol, one module per API under `apis/`,
//! the replica manager over the storage engine, and the controller driver over the metadata log.
//!
//! Start one with [`server::Server::start`]; `sluice server` is a thin shell around it.

pub mod apis;
pub mod broker;
pub mod config;
pub mod controller;
pub mod controller_channel;
pub mod fetch_session;
pub mod group_coordinator;
mod internal_topic;
pub mod isr;
pub mod lifecycle;
pub mod network;
pub mod partition;
pub mod producer_ids;
pub mod purgatory;
pub mod quorum_net;
pub mod replica_fetcher;
pub mod replica_manager;
pub mod replication_quota;
#[cfg(test)]
mod replication_sim;
pub mod server;
pub mod txn_coordinator;

pub use broker::{Broker, BrokerError};
pub use config::{BrokerConfig, ConfigError, ConfigKey, CONFIG_KEYS};
pub use server::{Server, ServerError};
