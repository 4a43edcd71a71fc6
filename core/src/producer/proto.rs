//! What a broker sends to a producer: check-backs of transactions, which the
//! producer answers one-way with an end message (`EndTx` with `from_check`).

use crate::env::Kind;
use crate::message::QueueId;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// One-way: what became of the transaction `msg_id`, whose half is at
    /// `half` of `queue`'s half log? `check` counts the check-backs of that
    /// half so far, this one included.
    Check { queue: QueueId, half: u64, msg_id: String, check: u32 },
}

pub mod kind {
    use crate::env::Kind;
    pub const CHECK: Kind = Kind::new("CheckTransactionState");
}

pub const KINDS: &[Kind] = &[kind::CHECK];

/// A producer's check listener, as a protocol a node serves.
pub struct TxCheck;

impl crate::rpc::Protocol for TxCheck {
    const SERVICE: u8 = 5;
    const NAME: &'static str = "tx-check";
    type Request = Request;
    /// Never sent: check-backs are one-way both ways.
    type Response = ();
    fn kind(req: &Request) -> Kind {
        match req {
            Request::Check { .. } => kind::CHECK,
        }
    }
}
