//! The broker: stateless; owns queues through ephemeral keys in the metadata
//! service, keeps each queue as a managed ledger, registers with every
//! NameServer, and serves sends, pulls and consumer offsets.

pub mod balance;
pub mod index;
pub mod leader;
pub mod locks;
pub mod proto;
mod server;
pub mod tx;
pub mod txn;

pub use proto::{Broker, Request, Response, KINDS};
pub use server::{log_name, owner_lock, serve, Config, RegistrationObserver, Registrations, Topic};
