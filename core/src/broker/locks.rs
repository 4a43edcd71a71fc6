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
//!
//! Every grant has an id, which a renewal and an unlock must name: a late
//! unlock of an earlier grant (its request held back in the network while its
//! sender locked the queue afresh) must not end the newer lease, or another
//! consumer would be granted the queue while the first still trusts it.

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
    grant: u64,
    until_ms: u64,
}

/// The locks of the queues one broker owns, by (group, queue). Times are
/// milliseconds of this broker's monotonic clock.
#[derive(Clone, Debug, Default)]
pub struct LockTable {
    leases: BTreeMap<(String, QueueId), Lease>,
    /// Queues opened lately: no grant before the time given.
    hold: BTreeMap<QueueId, u64>,
    /// The id of the last grant.
    last_grant: u64,
}

impl LockTable {
    /// An empty table whose grant ids start after `last_grant` (make it differ
    /// between incarnations of a broker, so that no id is given twice).
    pub fn starting_after(last_grant: u64) -> LockTable {
        LockTable { last_grant, ..LockTable::default() }
    }

    /// `queue` was just opened here: forget what was known of it, and grant
    /// no lock of it for `hold_ms`.
    pub fn opened(&mut self, queue: &QueueId, now_ms: u64, hold_ms: u64) {
        self.forget(queue);
        if hold_ms > 0 {
            self.hold.insert(queue.clone(), now_ms + hold_ms);
        }
    }

    /// Nothing is owned here any more (the session that owned it is gone).
    pub fn forget_all(&mut self) {
        self.leases.clear();
        self.hold.clear();
    }

    /// `queue` is no longer owned here: its locks go with it.
    pub fn forget(&mut self, queue: &QueueId) {
        self.leases.retain(|(_, q), _| q != queue);
        self.hold.remove(queue);
    }

    /// Grants `client` the lock of `queue` for `group` until
    /// `now_ms + lease_ms`, unless another consumer's lease runs or the queue
    /// was opened too lately; the grant's id comes back. `renew`: the grant
    /// the client holds, to extend (a grant it no longer holds is granted
    /// afresh, under a new id).
    pub fn lock(
        &mut self,
        group: &str,
        queue: &QueueId,
        client: &str,
        renew: Option<u64>,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<u64, Refusal> {
        if let Some(&until_ms) = self.hold.get(queue) {
            if now_ms < until_ms {
                return Err(Refusal::Opened { until_ms });
            }
            self.hold.remove(queue);
        }
        let key = (group.to_string(), queue.clone());
        let held = self.leases.get(&key).filter(|l| now_ms < l.until_ms);
        if let Some(l) = held.filter(|l| l.client != client) {
            return Err(Refusal::HeldBy(l.client.clone()));
        }
        let grant = match held {
            Some(l) if renew == Some(l.grant) => l.grant,
            _ => {
                self.last_grant += 1;
                self.last_grant
            }
        };
        self.leases.insert(key, Lease { client: client.to_string(), grant, until_ms: now_ms + lease_ms });
        Ok(grant)
    }

    /// Drops `client`'s lock of `queue` for `group` if it is grant `grant`;
    /// true when it was.
    pub fn unlock(&mut self, group: &str, queue: &QueueId, client: &str, grant: u64) -> bool {
        let key = (group.to_string(), queue.clone());
        if self.leases.get(&key).is_some_and(|l| l.client == client && l.grant == grant) {
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
        let mut t = LockTable::starting_after(100);
        assert_eq!(t.lock("g", &q(0), "a", None, 0, L), Ok(101));
        assert_eq!(t.lock("g", &q(0), "b", None, 10, L), Err(Refusal::HeldBy("a".into())));
        assert_eq!(t.lock("other", &q(0), "b", None, 10, L), Ok(102), "groups lock apart");
        assert_eq!(t.lock("g", &q(1), "b", None, 10, L), Ok(103), "queues lock apart");
        assert_eq!(t.lock("g", &q(0), "a", Some(101), 30_000, L), Ok(101), "the holder renews");
        assert_eq!(t.lock("g", &q(0), "b", None, 60_000, L), Err(Refusal::HeldBy("a".into())));
        assert_eq!(t.holder("g", &q(0), 89_999), Some("a"));
        assert_eq!(t.lock("g", &q(0), "b", None, 90_000, L), Ok(104), "the renewed lease lapsed");
        assert!(!t.unlock("g", &q(0), "a", 101), "only the holder unlocks");
        assert!(!t.unlock("g", &q(0), "b", 101), "only its own grant");
        assert!(t.unlock("g", &q(0), "b", 104));
        assert_eq!(t.holder("g", &q(0), 90_001), None);
        assert_eq!(t.lock("g", &q(0), "a", Some(101), 90_001, L), Ok(105), "a grant no longer held is granted afresh");
    }

    #[test]
    fn a_late_unlock_of_an_earlier_grant_leaves_the_new_one() {
        let mut t = LockTable::default();
        let first = t.lock("g", &q(0), "a", None, 0, L).unwrap();
        // `a` gave the queue up, but its unlock is held back; it locks afresh.
        let second = t.lock("g", &q(0), "a", None, 5_000, L).unwrap();
        assert_ne!(first, second);
        assert!(!t.unlock("g", &q(0), "a", first), "the late unlock ends nothing");
        assert_eq!(t.lock("g", &q(0), "b", None, 6_000, L), Err(Refusal::HeldBy("a".into())));
    }

    #[test]
    fn a_queue_opened_lately_grants_nothing_until_the_hold_ends() {
        let mut t = LockTable::default();
        t.lock("g", &q(0), "a", None, 0, L).unwrap();
        t.opened(&q(0), 1_000, 40_000);
        assert_eq!(t.holder("g", &q(0), 1_000), None, "what was known of the queue is forgotten");
        assert_eq!(t.lock("g", &q(0), "b", None, 5_000, L), Err(Refusal::Opened { until_ms: 41_000 }));
        assert_eq!(t.lock("g", &q(0), "a", Some(1), 40_999, L), Err(Refusal::Opened { until_ms: 41_000 }));
        assert!(t.lock("g", &q(0), "b", None, 41_000, L).is_ok());
        t.forget(&q(0));
        assert_eq!(t.holder("g", &q(0), 41_001), None);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Lock(usize),
        /// A renewal naming the client's last grant.
        Renew(usize),
        /// An unlock naming the client's last grant, or (late) the one before.
        Unlock(usize, bool),
        Open(u64),
        Wait(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0usize..3).prop_map(Step::Lock),
            2 => (0usize..3).prop_map(Step::Renew),
            2 => (0usize..3, any::<bool>()).prop_map(|(c, late)| Step::Unlock(c, late)),
            1 => (0u64..50_000).prop_map(Step::Open),
            3 => (0u64..40_000).prop_map(Step::Wait),
        ]
    }

    proptest! {
        /// Against a model: a grant to one client never comes while another
        /// client's grant is younger than the lease and not dropped, nor
        /// within the hold after the queue was opened; an unlock ends only
        /// the grant it names, and no id is given to two grants.
        #[test]
        fn no_two_clients_hold_one_queue_at_once(steps in prop::collection::vec(step(), 1..80)) {
            let mut t = LockTable::default();
            let mut now = 0u64;
            // The live grant, as the model sees it: (client, grant, until), and the hold's end.
            let mut live: Option<(usize, u64, u64)> = None;
            let mut hold_until = 0u64;
            // Each client's grants, oldest first.
            let mut grants: [Vec<u64>; 3] = Default::default();
            let name = |c: usize| format!("c{c}");
            for s in steps {
                match s {
                    Step::Wait(d) => now += d,
                    Step::Open(hold) => {
                        t.opened(&q(0), now, hold);
                        live = None;
                        hold_until = now + hold;
                    }
                    Step::Unlock(c, late) => {
                        let n = grants[c].len();
                        let Some(&grant) = grants[c].get(n.saturating_sub(if late { 2 } else { 1 })) else {
                            continue;
                        };
                        let held = live.is_some_and(|(h, g, _)| h == c && g == grant);
                        prop_assert_eq!(t.unlock("g", &q(0), &name(c), grant), held);
                        if held {
                            live = None;
                        }
                    }
                    Step::Lock(c) | Step::Renew(c) => {
                        let renew = if matches!(s, Step::Renew(_)) { grants[c].last().copied() } else { None };
                        let result = t.lock("g", &q(0), &name(c), renew, now, L);
                        let other_live = live.is_some_and(|(h, _, until)| h != c && now < until);
                        prop_assert_eq!(result.is_ok(), !other_live && now >= hold_until, "{:?} at {}", live, now);
                        if let Ok(grant) = result {
                            let renewed = live.is_some_and(|(h, g, until)| h == c && now < until && Some(g) == renew);
                            prop_assert_eq!(renewed, Some(grant) == renew);
                            if !renewed {
                                prop_assert!(grants.iter().flatten().all(|g| *g != grant), "grant {} given twice", grant);
                                grants[c].push(grant);
                            }
                            live = Some((c, grant, now + L));
                        }
                    }
                }
                let expected = live.filter(|(_, _, until)| now < *until).map(|(c, _, _)| name(c));
                prop_assert_eq!(t.holder("g", &q(0), now).map(str::to_string), expected);
            }
        }
    }
}
