//! The metadata service (ZooKeeper's role): a linearizable, versioned key-value
//! store with sequential and ephemeral keys, on one node that fsyncs every
//! acknowledged write and recovers from its disk.

mod client;
mod proto;
mod server;
mod store;

pub use client::MetaClient;
pub use proto::{MetaError, Reply, Request, Response, SessionId, Stat};
pub use server::{serve, LOG_NAME};
pub use store::parent;
