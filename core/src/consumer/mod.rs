//! A push-style consumer: the pure decision logic (which queues it holds, how far it may commit)
//! and the client that drives it.

pub mod client;
pub mod offsets;
pub mod rebalance;
pub mod retry;

pub use client::{run, Config, Consumed, Handler, Observer, Step, StepResult};
