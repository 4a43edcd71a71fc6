//! The registry of protocols nodes speak: their kinds of message, which fault
//! rules may name. A new protocol adds its kinds here.

use crate::env::Kind;
use crate::{bookie, broker, meta, nameserver};

/// Every message kind of every protocol.
pub fn kinds() -> impl Iterator<Item = Kind> {
    [meta::KINDS, bookie::KINDS, nameserver::KINDS, broker::KINDS].into_iter().flatten().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::Protocol;

    #[test]
    fn kinds_and_services_are_unique() {
        let names: Vec<&str> = kinds().map(Kind::name).collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), unique.len(), "{names:?}");
        let services =
            [meta::Meta::SERVICE, bookie::Bookie::SERVICE, nameserver::NameServer::SERVICE, broker::Broker::SERVICE];
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
