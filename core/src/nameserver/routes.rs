//! The NameServer's route table: which broker serves which queues, as last registered, with expiry.
//!
//! Time comes in as milliseconds on the NameServer's own clock; nothing here
//! reads a clock, so the table replays exactly.

use crate::message::QueueId;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
struct Registration {
    queues: BTreeSet<QueueId>,
    at_ms: u64,
    version: Version,
}

/// Which registration of a broker is newer: within one incarnation of the
/// broker (`epoch`) the higher `seq`. Registrations travel on their own and
/// may arrive out of order; an older one must not undo a newer one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Version {
    pub epoch: u64,
    pub seq: u64,
}

#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    brokers: BTreeMap<String, Registration>,
}

impl RouteTable {
    /// Records a broker's registration: its queue list replaces the previous one
    /// (a broker reports everything it owns each time) and its time is refreshed,
    /// unless it is older than the last one of the same incarnation (false then).
    pub fn register(&mut self, broker: &str, version: Version, queues: Vec<QueueId>, now_ms: u64) -> bool {
        if let Some(last) = self.brokers.get(broker) {
            if last.version.epoch == version.epoch && version.seq < last.version.seq {
                return false;
            }
        }
        let reg = Registration { queues: queues.into_iter().collect(), at_ms: now_ms, version };
        self.brokers.insert(broker.to_string(), reg);
        true
    }

    /// Removes the brokers whose last registration is more than `expiry_ms` before
    /// `now_ms`, and returns their names, sorted.
    pub fn scan(&mut self, now_ms: u64, expiry_ms: u64) -> Vec<String> {
        let expired: Vec<String> = self
            .brokers
            .iter()
            .filter(|(_, r)| now_ms.saturating_sub(r.at_ms) > expiry_ms)
            .map(|(b, _)| b.clone())
            .collect();
        for b in &expired {
            self.brokers.remove(b);
        }
        expired
    }

    /// The brokers serving `topic` with their queue ids, both sorted; brokers
    /// without a queue of the topic are left out.
    pub fn routes(&self, topic: &str) -> Vec<(String, Vec<u32>)> {
        self.brokers
            .iter()
            .map(|(b, r)| {
                (b.clone(), r.queues.iter().filter(|q| q.topic == topic).map(|q| q.queue).collect::<Vec<_>>())
            })
            .filter(|(_, qs)| !qs.is_empty())
            .collect()
    }

    /// The registered brokers, sorted.
    pub fn brokers(&self) -> Vec<String> {
        self.brokers.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nameserver::BROKER_EXPIRY;
    use proptest::prelude::*;

    /// Registrations of one version: each replaces the last.
    const V: Version = Version { epoch: 0, seq: 0 };

    fn qs(topic: &str, ids: &[u32]) -> Vec<QueueId> {
        ids.iter().map(|&i| QueueId::new(topic, i)).collect()
    }

    #[test]
    fn an_older_registration_of_the_same_incarnation_arriving_late_is_ignored() {
        let mut t = RouteTable::default();
        let v = |epoch, seq| Version { epoch, seq };
        assert!(t.register("b", v(7, 2), qs("orders", &[1, 5]), 1_000));
        assert!(!t.register("b", v(7, 1), vec![], 1_500), "an older registration must not undo a newer one");
        assert_eq!(t.routes("orders"), vec![("b".to_string(), vec![1, 5])]);
        assert_eq!(
            t.scan(1_000 + 120_000, 120_000),
            Vec::<String>::new(),
            "the late one did not refresh the time either"
        );
        assert_eq!(t.scan(1_001 + 120_000, 120_000), vec!["b".to_string()]);
        // A new incarnation starts its own count.
        assert!(t.register("b", v(8, 0), qs("orders", &[2]), 2_000));
        assert_eq!(t.routes("orders"), vec![("b".to_string(), vec![2])]);
    }

    #[test]
    fn registration_expiry_and_routes() {
        let expiry = BROKER_EXPIRY.as_millis() as u64;
        let mut t = RouteTable::default();
        let mut b1 = qs("orders", &[3, 1]);
        b1.extend(qs("audit", &[0]));
        t.register("broker-1", V, b1, 0);
        t.register("broker-0", V, qs("orders", &[2, 0]), 10_000);
        t.register("broker-2", V, vec![], 10_000);
        assert_eq!(t.brokers(), vec!["broker-0", "broker-1", "broker-2"]);
        assert_eq!(
            t.routes("orders"),
            vec![("broker-0".to_string(), vec![0, 2]), ("broker-1".to_string(), vec![1, 3])]
        );
        assert_eq!(t.routes("audit"), vec![("broker-1".to_string(), vec![0])]);
        assert_eq!(t.routes("none"), vec![]);
        // Exactly at the expiry a broker stays; one millisecond later it goes.
        assert_eq!(t.scan(expiry, expiry), Vec::<String>::new());
        assert_eq!(t.scan(expiry + 1, expiry), vec!["broker-1"]);
        // A re-registration replaces the queue list.
        t.register("broker-0", Version { epoch: 0, seq: 1 }, qs("orders", &[1]), 20_000);
        assert_eq!(t.routes("orders"), vec![("broker-0".to_string(), vec![1])]);
        assert_eq!(t.scan(20_000 + expiry + 1, expiry), vec!["broker-0", "broker-2"]);
        assert!(t.brokers().is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// After `dt` ms, broker `b` registers these queues of topics "a"/"b".
        Register { dt: u64, b: u8, queues: Vec<(bool, u32)> },
        /// After `dt` ms, a scan.
        Scan { dt: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..60_000, 0u8..4, prop::collection::vec((any::<bool>(), 0u32..6), 0..6))
                .prop_map(|(dt, b, queues)| Op::Register { dt, b, queues }),
            (0u64..60_000).prop_map(|dt| Op::Scan { dt }),
        ]
    }

    proptest! {
        #[test]
        fn scans_keep_fresh_brokers_drop_stale_ones_and_routes_follow_the_latest_registration(
            ops in prop::collection::vec(op(), 0..40),
            expiry in 1u64..150_000,
        ) {
            let mut t = RouteTable::default();
            // The test's model: each broker's latest registration.
            let mut latest: BTreeMap<String, (u64, Vec<QueueId>)> = BTreeMap::new();
            let mut now = 0;
            for op in ops {
                match op {
                    Op::Register { dt, b, queues } => {
                        now += dt;
                        let name = format!("broker-{b}");
                        let queues: Vec<QueueId> =
                            queues.into_iter().map(|(a, i)| QueueId::new(if a { "a" } else { "b" }, i)).collect();
                        t.register(&name, V, queues.clone(), now);
                        latest.insert(name, (now, queues));
                    }
                    Op::Scan { dt } => {
                        now += dt;
                        let removed = t.scan(now, expiry);
                        prop_assert!(removed.windows(2).all(|w| w[0] < w[1]), "{:?}", removed);
                        for b in &removed {
                            let (at, _) = latest.remove(b).expect("removed a broker that was registered");
                            prop_assert!(now - at > expiry, "{} registered at {} removed at {}", b, at, now);
                        }
                        for (b, (at, _)) in &latest {
                            prop_assert!(now - at <= expiry, "{} registered at {} kept at {}", b, at, now);
                        }
                    }
                }
                prop_assert_eq!(t.brokers(), latest.keys().cloned().collect::<Vec<_>>());
                for topic in ["a", "b"] {
                    let expected: Vec<(String, Vec<u32>)> = latest
                        .iter()
                        .map(|(b, (_, qs))| {
                            let ids: BTreeSet<u32> = qs.iter().filter(|q| q.topic == topic).map(|q| q.queue).collect();
                            (b.clone(), ids.into_iter().collect::<Vec<_>>())
                        })
                        .filter(|(_, ids)| !ids.is_empty())
                        .collect();
                    prop_assert_eq!(t.routes(topic), expected);
                }
            }
        }
    }
}
