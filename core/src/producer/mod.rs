//! A producer: its client, its cached routes and the queue each send goes to
//! (pure decision logic), and its local transactions.

pub mod client;
pub mod local_tx;
pub mod proto;
pub mod select;
pub mod transactional;
pub use client::{Producer, SendOutcome};
