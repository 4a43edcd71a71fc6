//! Pure decision logic of a push-style consumer: which queues it holds, and how far it may commit.

pub mod offsets;
pub mod rebalance;
