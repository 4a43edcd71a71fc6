//! Which consumer of a group may consume a queue in order now (RocketMQ's
//! `RebalanceLockManager`), as a pure table kept in the owning broker's memory.
//!
//! A lock is a lease: it lapses [`LEASE`] after it was last granted unless its
//! holder renews it. The table lives in memory, so a broker that opens a queue
//! (a takeover, or the same broker after a restart) cannot know what leases an
//! earlier owner granted. It grants none for [`TAKEOVER_HOLD`] after opening:
//! longer than a consumer trusts a lease it got ([`CLIENT_LEASE`]), with room
//! for clock drift, so every lease an earlier owner granted has lapsed at its
//! holder before a new one is granted.

use crate::message::QueueId;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a broker keeps a lock it granted (RocketMQ's `rebalance.lockMaxLiveTime`, 60 s).
pub const LEASE: Duration = Duration::from_secs(60);
/// How long a consumer trusts a lock from the moment it asked for it
/// (RocketMQ's client-side `rebalanceLockMaxLiveTime`, 30 s).
pub const CLIENT_LEASE: Duration = Duration::from_secs(30);
/// How often a consumer renews its locks (`rebalanceLockInterval`, 20 s).
pub const RENEW_EVERY: Duration = Duration::from_secs(20);
/// No lock of a queue is granted this long after the queue was opened here:
/// a client lease plus a third for the drift of two clocks.
pub const TAKEOVER_HOLD: Duration = Duration::from_secs(40);

/// Why a lock was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another consumer of the group holds it.
    HeldBy(String),
    /// The queue was opened here lately; no lock before this time (ms of the broker's clock).
    Opened { until_ms: u64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::HeldBy(c) => write!(f, "locked by {c}"),
            Refusal::Opened { until_ms } => write!(f, "queue opened lately: no lock before {until_ms} ms"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Lease {
    client: String,
    until_ms: u64,
}

/// The locks of the queues one broker owns, by (group, queue). Times are
/// milliseconds of this broker's monotonic clock.
#[derive(Clone, Debug, Default)]
pub struct LockTable {
    leases: BTreeMap<(String, QueueId), Lease>,
    /// Queues opened lately: no grant before the time given.
    hold: BTreeMap<QueueId, u64>,
}

impl LockTable {
    /// `queue` was just opened here: forget what was known of it, and grant
    /// no lock of it for `hold_ms`.
    pub fn opened(&mut self, queue: &QueueId, now_ms: u64, hold_ms: u64) {
        self.forget(queue);
        if hold_ms > 0 {
            self.hold.insert(queue.clone(), now_ms + hold_ms);
        }
    }

    /// `queue` is no longer owned here: its locks go with it.
    pub fn forget(&mut self, queue: &QueueId) {
        self.leases.retain(|(_, q), _| q != queue);
        self.hold.remove(queue);
    }

    /// Grants or renews `client`'s lock of `queue` for `group` until
    /// `now_ms + lease_ms`, unless another consumer's lease runs or the queue
    /// was opened too lately.
    pub fn lock(
        &mut self,
        group: &str,
        queue: &QueueId,
        client: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<(), Refusal> {
        if let Some(&until_ms) = self.hold.get(queue) {
            if now_ms < until_ms {
                return Err(Refusal::Opened { until_ms });
            }
            self.hold.remove(queue);
        }
        let key = (group.to_string(), queue.clone());
        if let Some(l) = self.leases.get(&key) {
            if l.client != client && now_ms < l.until_ms {
                return Err(Refusal::HeldBy(l.client.clone()));
            }
        }
        self.leases.insert(key, Lease { client: client.to_string(), until_ms: now_ms + lease_ms });
        Ok(())
    }

    /// Drops `client`'s lock of `queue` for `group`; true when it held one.
    pub fn unlock(&mut self, group: &str, queue: &QueueId, client: &str) -> bool {
        let key = (group.to_string(), queue.clone());
        if self.leases.get(&key).is_some_and(|l| l.client == client) {
            self.leases.remove(&key);
            return true;
        }
        false
    }

    /// Who holds `queue` for `group` at `now_ms`, if anyone.
    pub fn holder(&self, group: &str, queue: &QueueId, now_ms: u64) -> Option<&str> {
        let l = self.leases.get(&(group.to_string(), queue.clone()))?;
        (now_ms < l.until_ms).then_some(l.client.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const L: u64 = 60_000;

    fn q(i: u32) -> QueueId {
        QueueId::new("t", i)
    }

    #[test]
    fn a_lease_excludes_others_until_it_lapses_or_is_dropped() {
        let mut t = LockTable::default();
        assert_eq!(t.lock("g", &q(0), "a", 0, L), Ok(()));
        assert_eq!(t.lock("g", &q(0), "b", 10, L), Err(Refusal::HeldBy("a".into())));
        assert_eq!(t.lock("other", &q(0), "b", 10, L), Ok(()), "groups lock apart");
        assert_eq!(t.lock("g", &q(1), "b", 10, L), Ok(()), "queues lock apart");
        assert_eq!(t.lock("g", &q(0), "a", 30_000, L), Ok(()), "the holder renews");
        assert_eq!(t.lock("g", &q(0), "b", 60_000, L), Err(Refusal::HeldBy("a".into())));
        assert_eq!(t.holder("g", &q(0), 89_999), Some("a"));
        assert_eq!(t.lock("g", &q(0), "b", 90_000, L), Ok(()), "the renewed lease lapsed");
        assert!(!t.unlock("g", &q(0), "a"), "only the holder unlocks");
        assert!(t.unlock("g", &q(0), "b"));
        assert_eq!(t.holder("g", &q(0), 90_001), None);
        assert_eq!(t.lock("g", &q(0), "a", 90_001, L), Ok(()));
    }

    #[test]
    fn a_queue_opened_lately_grants_nothing_until_the_hold_ends() {
        let mut t = LockTable::default();
        t.lock("g", &q(0), "a", 0, L).unwrap();
        t.opened(&q(0), 1_000, 40_000);
        assert_eq!(t.holder("g", &q(0), 1_000), None, "what was known of the queue is forgotten");
        assert_eq!(t.lock("g", &q(0), "b", 5_000, L), Err(Refusal::Opened { until_ms: 41_000 }));
        assert_eq!(t.lock("g", &q(0), "a", 40_999, L), Err(Refusal::Opened { until_ms: 41_000 }));
        assert_eq!(t.lock("g", &q(0), "b", 41_000, L), Ok(()));
        t.forget(&q(0));
        assert_eq!(t.holder("g", &q(0), 41_001), None);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Lock(usize),
        Unlock(usize),
        Open(u64),
        Wait(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0usize..3).prop_map(Step::Lock),
            1 => (0usize..3).prop_map(Step::Unlock),
            1 => (0u64..50_000).prop_map(Step::Open),
            3 => (0u64..40_000).prop_map(Step::Wait),
        ]
    }

    proptest! {
        /// Against a model: a grant to one client never comes while another
        /// client's grant is younger than the lease and not dropped, nor
        /// within the hold after the queue was opened.
        #[test]
        fn no_two_clients_hold_one_queue_at_once(steps in prop::collection::vec(step(), 1..80)) {
            let mut t = LockTable::default();
            let mut now = 0u64;
            // The live grant, as the model sees it: (client, until), and the hold's end.
            let mut live: Option<(usize, u64)> = None;
            let mut hold_until = 0u64;
            let name = |c: usize| format!("c{c}");
            for s in steps {
                match s {
                    Step::Wait(d) => now += d,
                    Step::Open(hold) => {
                        t.opened(&q(0), now, hold);
                        live = None;
                        hold_until = now + hold;
                    }
                    Step::Unlock(c) => {
                        let held = live.is_some_and(|(h, _)| h == c);
                        prop_assert_eq!(t.unlock("g", &q(0), &name(c)), held);
                        if held {
                            live = None;
                        }
                    }
                    Step::Lock(c) => {
                        let granted = t.lock("g", &q(0), &name(c), now, L).is_ok();
                        let other_live = live.is_some_and(|(h, until)| h != c && now < until);
                        prop_assert_eq!(granted, !other_live && now >= hold_until, "{:?} at {}", live, now);
                        if granted {
                            live = Some((c, now + L));
                        }
                    }
                }
                let expected = live.filter(|(_, until)| now < *until).map(|(c, _)| name(c));
                prop_assert_eq!(t.holder("g", &q(0), now).map(str::to_string), expected);
            }
        }
    }
}
