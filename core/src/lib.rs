//! The system under test. Every node is an async task that receives its world
//! through an [`env::Env`]; nothing here knows whether that world is simulated.

pub mod auditor;
pub mod bookie;
pub mod bugs;
pub mod env;
pub mod ledger;
pub mod meta;
pub mod probe;
pub mod protocols;
pub mod random;
pub mod rpc;
pub mod wal;
