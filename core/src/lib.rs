//! The system under test. Every node is an async task that receives its world
//! through an [`env::Env`]; nothing here knows whether that world is simulated.

pub mod auditor;
pub mod bookie;
pub mod broker;
pub mod bugs;
pub mod consumer;
pub mod env;
pub mod ledger;
pub mod managed;
pub mod message;
pub mod meta;
pub mod nameserver;
pub mod probe;
pub mod producer;
pub mod protocols;
pub mod random;
pub mod rpc;
pub mod wal;
