//! The NameServer: a stateless route registry that brokers refresh and that expires silent brokers.

use std::time::Duration;

pub mod client;
pub mod proto;
pub mod routes;
mod server;

pub use proto::{NameServer, KINDS};
pub use server::serve;

/// How often a broker registers its queues with every NameServer.
pub const REGISTER_EVERY: Duration = Duration::from_secs(30);
/// How often a NameServer looks for expired brokers (the first scan comes one period after start).
pub const SCAN_EVERY: Duration = Duration::from_secs(5);
/// How long after its last registration a broker is dropped from the routes.
pub const BROKER_EXPIRY: Duration = Duration::from_secs(120);
