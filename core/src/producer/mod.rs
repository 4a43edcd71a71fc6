//! Pure decision logic of a producer: its cached routes and the queue each send goes to.

pub mod client;
pub mod select;
pub use client::{Producer, SendOutcome};
