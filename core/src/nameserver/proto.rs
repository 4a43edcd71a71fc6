//! What travels between brokers, clients and NameServers.

use super::routes::Version;
use crate::env::Kind;
use crate::message::QueueId;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A broker's registration: every queue it owns now (it replaces the
    /// last one, unless it is older than the last one of the same incarnation).
    Register { broker: String, version: Version, queues: Vec<QueueId> },
    /// A topic's routes: each broker with the queues of the topic it owns.
    Routes { topic: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Registered,
    Routes(Vec<(String, Vec<u32>)>),
}

pub mod kind {
    use crate::env::Kind;
    pub const REGISTER: Kind = Kind::new("RegisterBroker");
    pub const ROUTES: Kind = Kind::new("GetRoutes");
}

pub const KINDS: &[Kind] = &[kind::REGISTER, kind::ROUTES];

/// The NameServer, as a protocol a node serves.
pub struct NameServer;

impl crate::rpc::Protocol for NameServer {
    const SERVICE: u8 = 3;
    const NAME: &'static str = "nameserver";
    type Request = Request;
    type Response = Response;
    fn kind(req: &Request) -> Kind {
        match req {
            Request::Register { .. } => kind::REGISTER,
            Request::Routes { .. } => kind::ROUTES,
        }
    }
}
