//! The registry of protocols nodes speak: their kinds of message, which fault
//! rules may name. A new protocol adds its kinds here.

use crate::env::Kind;
use crate::rpc::Protocol;
use crate::{bookie, broker, meta, nameserver, producer};
use serde::Serialize;

/// Every message kind of every protocol.
pub fn kinds() -> impl Iterator<Item = Kind> {
    [meta::KINDS, bookie::KINDS, nameserver::KINDS, broker::KINDS, producer::proto::KINDS]
        .into_iter()
        .flatten()
        .copied()
}

/// Takes a decoded request or response, whatever its protocol (for message traces).
pub trait Visit {
    fn visit<T: Serialize>(&mut self, value: &T);
}

/// Decodes `body`, a request (or with `reply`, a response) of the protocol
/// numbered `service`, and hands it to `v`; false when it is not one.
pub fn visit_body(service: u8, reply: bool, body: &[u8], v: &mut impl Visit) -> bool {
    fn decode<P: Protocol>(reply: bool, body: &[u8], v: &mut impl Visit) -> bool {
        let visited = if reply {
            postcard::from_bytes::<P::Response>(body).map(|r| v.visit(&r))
        } else {
            postcard::from_bytes::<P::Request>(body).map(|r| v.visit(&r))
        };
        visited.is_ok()
    }
    match service {
        meta::Meta::SERVICE => decode::<meta::Meta>(reply, body, v),
        bookie::Bookie::SERVICE => decode::<bookie::Bookie>(reply, body, v),
        nameserver::NameServer::SERVICE => decode::<nameserver::NameServer>(reply, body, v),
        broker::Broker::SERVICE => decode::<broker::Broker>(reply, body, v),
        producer::proto::TxCheck::SERVICE => decode::<producer::proto::TxCheck>(reply, body, v),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_services_are_unique() {
        let names: Vec<&str> = kinds().map(Kind::name).collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), unique.len(), "{names:?}");
        let services = [
            meta::Meta::SERVICE,
            bookie::Bookie::SERVICE,
            nameserver::NameServer::SERVICE,
            broker::Broker::SERVICE,
            producer::proto::TxCheck::SERVICE,
        ];
        let unique: std::collections::BTreeSet<u8> = services.into_iter().collect();
        assert_eq!(unique.len(), services.len(), "{services:?}");
    }

    #[test]
    fn an_unknown_kind_does_not_parse() {
        let err = serde_json::from_str::<Kind>("\"Fenc\"").unwrap_err().to_string();
        assert!(err.starts_with("unknown message kind 'Fenc' (known: "), "{err}");
        assert!(!err.contains('\n'));
        assert_eq!(serde_json::from_str::<Kind>("\"Fence\"").unwrap(), bookie::kind::FENCE);
    }
}
