//! A producer's route cache and its choice of queue for each send.
//!
//! Time comes in as milliseconds on the producer's clock; the round-robin
//! position is explicit state, so the choices replay exactly.

use crate::message::QueueId;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
struct Cached {
    /// Sorted by broker, queue ids sorted and distinct.
    routes: Vec<(String, Vec<u32>)>,
    fetched_ms: u64,
    /// A broker answered "not owner": refetch before trusting these routes again.
    invalid: bool,
}

/// Per topic, the routes last fetched from a NameServer and when.
#[derive(Clone, Debug, Default)]
pub struct RouteCache {
    topics: BTreeMap<String, Cached>,
}

impl RouteCache {
    /// Stores freshly fetched routes of `topic` (any order; normalised here).
    pub fn update(&mut self, topic: &str, routes: Vec<(String, Vec<u32>)>, now_ms: u64) {
        let mut merged: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for (broker, queues) in routes {
            merged.entry(broker).or_default().extend(queues);
        }
        let routes = merged.into_iter().map(|(b, qs)| (b, qs.into_iter().collect())).collect();
        self.topics.insert(topic.to_string(), Cached { routes, fetched_ms: now_ms, invalid: false });
    }

    /// Whether `topic` needs a fetch: never fetched, invalidated, or fetched
    /// `refresh_ms` or more ago (so a refresh every `refresh_ms` is due on time).
    pub fn stale(&self, topic: &str, now_ms: u64, refresh_ms: u64) -> bool {
        match self.topics.get(topic) {
            None => true,
            Some(c) => c.invalid || now_ms.saturating_sub(c.fetched_ms) >= refresh_ms,
        }
    }

    /// Marks `topic`'s routes as stale (after a "not owner" answer). They stay
    /// usable until the next fetch, since a stale route beats none.
    pub fn invalidate(&mut self, topic: &str) {
        if let Some(c) = self.topics.get_mut(topic) {
            c.invalid = true;
        }
    }

    /// Every (broker, queue) pair of `topic`, sorted by broker then queue.
    pub fn queues(&self, topic: &str) -> Vec<(String, QueueId)> {
        let Some(c) = self.topics.get(topic) else { return Vec::new() };
        c.routes.iter().flat_map(|(b, qs)| qs.iter().map(|&q| (b.clone(), QueueId::new(topic, q)))).collect()
    }
}

/// FNV-1a, 64 bit: a fixed hash, so a sharding key maps to the same queue in
/// every run and every process (std's hasher is randomly seeded).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What picks the queue of an ordered message: its sharding key, and the
/// number of queues of its topic (fixed, whoever owns them now).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard<'a> {
    pub key: &'a str,
    pub queues: u32,
}

impl Shard<'_> {
    /// The queue id the key maps to: `fnv1a(key) mod queues`.
    pub fn queue(&self) -> u32 {
        (fnv1a(self.key.as_bytes()) % u64::from(self.queues.max(1))) as u32
    }
}

/// Chooses the queue of each send; keeps one round-robin position per topic.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    start: u64,
    next: BTreeMap<String, u64>,
}

impl Selector {
    /// A selector whose round-robin starts at position `start` for every topic
    /// (derive it from the seed so producers do not all begin on one queue).
    pub fn new(start: u64) -> Self {
        Selector { start, next: BTreeMap::new() }
    }

    /// The (broker, queue) to send a message of `topic` to, from `queues` (any
    /// order, as from [`RouteCache::queues`]); `None` when there is none.
    ///
    /// With a `shard` the queue is [`Shard::queue`], whatever `avoid` says and
    /// whichever queues are listed now, so a key keeps its queue while
    /// ownership moves; `None` while no broker lists it. Only when that queue
    /// is listed under several brokers (an ownership move the NameServer has
    /// not yet expired) does `avoid` pick among them. (Hashing over the queues
    /// listed now would move a key to another queue whenever one is
    /// unowned for a while, and its order would be lost.)
    ///
    /// Without a key, round-robin, skipping queues of the `avoid` broker (the
    /// one the last try failed on) while another broker has queues.
    pub fn select(
        &mut self,
        topic: &str,
        queues: &[(String, QueueId)],
        shard: Option<Shard>,
        avoid: Option<&str>,
    ) -> Option<(String, QueueId)> {
        let sorted: Vec<&(String, QueueId)> = queues.iter().collect::<BTreeSet<_>>().into_iter().collect();
        if sorted.is_empty() {
            return None;
        }
        let not_avoided = |(b, _): &(String, QueueId)| avoid != Some(b.as_str());
        if let Some(shard) = shard {
            let id = shard.queue();
            let owners: Vec<&(String, QueueId)> = sorted.iter().copied().filter(|(_, q)| q.queue == id).collect();
            let pick = owners.iter().find(|p| not_avoided(p)).or(owners.first())?;
            return Some((*pick).clone());
        }
        let n = sorted.len() as u64;
        let pos = self.next.entry(topic.to_string()).or_insert(self.start);
        // As RocketMQ: advance past avoided queues, at most one full cycle.
        for _ in 0..n {
            let candidate = sorted[(*pos % n) as usize];
            *pos = pos.wrapping_add(1);
            if not_avoided(candidate) {
                return Some(candidate.clone());
            }
        }
        let fallback = sorted[(*pos % n) as usize];
        *pos = pos.wrapping_add(1);
        Some(fallback.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn routes(v: &[(&str, &[u32])]) -> Vec<(String, Vec<u32>)> {
        v.iter().map(|(b, qs)| (b.to_string(), qs.to_vec())).collect()
    }

    fn pair(b: &str, q: u32) -> (String, QueueId) {
        (b.to_string(), QueueId::new("t", q))
    }

    #[test]
    fn the_cache_goes_stale_on_time_and_on_invalidation() {
        let mut c = RouteCache::default();
        assert!(c.stale("t", 0, 30_000));
        assert!(c.queues("t").is_empty());
        c.update("t", routes(&[("b1", &[1, 0]), ("b0", &[2])]), 1_000);
        assert_eq!(c.queues("t"), vec![pair("b0", 2), pair("b1", 0), pair("b1", 1)]);
        assert!(!c.stale("t", 30_999, 30_000));
        assert!(c.stale("t", 31_000, 30_000));
        assert!(c.stale("other", 1_000, 30_000));
        c.invalidate("t");
        assert!(c.stale("t", 1_000, 30_000));
        assert_eq!(c.queues("t").len(), 3, "invalidated routes stay usable");
        c.update("t", routes(&[("b1", &[0])]), 2_000);
        assert!(!c.stale("t", 2_000, 30_000));
        assert_eq!(c.queues("t"), vec![pair("b1", 0)]);
    }

    #[test]
    fn round_robin_skips_the_failed_broker_and_keys_stick() {
        let queues = vec![pair("b1", 0), pair("b0", 1), pair("b0", 0)];
        let mut s = Selector::default();
        let picks: Vec<_> = (0..4).map(|_| s.select("t", &queues, None, None).unwrap()).collect();
        assert_eq!(picks, vec![pair("b0", 0), pair("b0", 1), pair("b1", 0), pair("b0", 0)]);
        // Position 4 is b0/q1; avoiding b0 moves on to b1/q0.
        assert_eq!(s.select("t", &queues, None, Some("b0")), Some(pair("b1", 0)));
        // Only one broker left: it is used even though it is avoided.
        assert_eq!(s.select("t", &queues[1..], None, Some("b0")), Some(pair("b0", 0)));
        assert_eq!(s.select("t", &[], None, None), None);
        // Two queues (q0 is listed twice): fnv1a(key) mod 2 picks one,
        // whatever the counter or `avoid`.
        for key in ["order-1", "order-2", "order-3"] {
            let shard = Shard { key, queues: 2 };
            let (_, q) = s.select("t", &queues, Some(shard), None).unwrap();
            assert_eq!(q.queue, (fnv1a(key.as_bytes()) % 2) as u32);
            assert_eq!(s.select("t", &queues, Some(shard), Some("b0")).unwrap().1, q);
        }
        // A key whose queue nobody lists now has nowhere to go: it does not move.
        let key = ["a", "b", "c", "d", "e", "f", "g", "h"]
            .into_iter()
            .find(|k| Shard { key: k, queues: 3 }.queue() == 2)
            .unwrap();
        assert_eq!(s.select("t", &queues, Some(Shard { key, queues: 3 }), None), None);
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_queue_listed_under_two_brokers_keeps_its_keys_and_avoid_picks_the_owner() {
        let queues = vec![pair("old", 0), pair("new", 0)];
        let mut s = Selector::default();
        let shard = Some(Shard { key: "k", queues: 1 });
        assert_eq!(s.select("t", &queues, shard, None), Some(pair("new", 0)));
        assert_eq!(s.select("t", &queues, shard, Some("new")), Some(pair("old", 0)));
    }

    /// A topic's (broker, queue) pairs over up to four brokers, in any order.
    fn queue_list() -> impl Strategy<Value = Vec<(String, QueueId)>> {
        prop::collection::btree_set((0u8..4, 0u32..8), 1..16)
            .prop_map(|s| s.into_iter().map(|(b, q)| (format!("b{b}"), QueueId::new("t", q))).collect::<Vec<_>>())
            .prop_shuffle()
    }

    proptest! {
        #[test]
        fn round_robin_visits_every_queue_once_per_cycle(queues in queue_list(), start in any::<u64>(), warm in 0usize..10) {
            let mut s = Selector::new(start);
            for _ in 0..warm {
                s.select("t", &queues, None, None);
            }
            // Sends to another topic, in between, do not disturb this topic's cycle.
            let mut seen: Vec<(String, QueueId)> = (0..queues.len())
                .map(|_| {
                    s.select("u", &[pair("b0", 0)], None, None);
                    s.select("t", &queues, None, None).unwrap()
                })
                .collect();
            seen.sort();
            let mut all = queues.clone();
            all.sort();
            prop_assert_eq!(seen, all);
        }

        #[test]
        fn avoid_moves_the_send_to_another_broker_when_there_is_one(
            queues in queue_list(),
            start in any::<u64>(),
            avoid in 0u8..4,
            tries in 1usize..6,
        ) {
            let avoid = format!("b{avoid}");
            let other = queues.iter().any(|(b, _)| *b != avoid);
            let mut s = Selector::new(start);
            for _ in 0..tries {
                let (b, q) = s.select("t", &queues, None, Some(&avoid)).unwrap();
                prop_assert!(queues.contains(&(b.clone(), q)));
                prop_assert!(!other || b != avoid, "picked avoided {} among {:?}", b, queues);
            }
        }

        #[test]
        fn the_sharded_queue_depends_only_on_the_key_and_the_queue_count(
            queues in queue_list(),
            key in ".{0,12}",
            count in 1u32..9,
            start in any::<u64>(),
            warm in 0usize..5,
            avoid in prop::option::of(0u8..4),
        ) {
            let shard = Shard { key: &key, queues: count };
            let id = (fnv1a(key.as_bytes()) % u64::from(count)) as u32;
            let listed = queues.iter().any(|(_, q)| q.queue == id);
            let avoid = avoid.map(|b| format!("b{b}"));
            let reference = Selector::default().select("t", &queues, Some(shard), None);
            prop_assert_eq!(reference.is_some(), listed);
            let mut s = Selector::new(start);
            for _ in 0..warm {
                s.select("t", &queues, None, None);
            }
            let mut reversed = queues.clone();
            reversed.reverse();
            let picked = s.select("t", &reversed, Some(shard), avoid.as_deref());
            prop_assert_eq!(picked.as_ref().map(|(_, q)| q.queue), listed.then_some(id));
            // Without `avoid`, the broker too is fixed.
            prop_assert_eq!(s.select("t", &reversed, Some(shard), None), reference);
        }
    }
}
