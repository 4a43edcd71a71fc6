//! The metadata service (ZooKeeper's role): a linearizable, versioned key-value
//! store with sequential and ephemeral keys, on one node that fsyncs every
//! acknowledged write and recovers from its disk.

mod client;
mod proto;
mod server;
mod session;
mod store;

pub use client::{MetaClient, Observer};
pub use proto::{kind, Meta, MetaError, Reply, Request, Response, SessionId, Stat, KINDS};
pub use server::{recorded, serve, LOG_NAME};
pub use session::{Lock, Session};
pub use store::{parent, Txn};
