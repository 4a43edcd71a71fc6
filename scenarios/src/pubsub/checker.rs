//! The checker of the publish/subscribe scenarios, a pure function of the
//! recorded history. It judges what clients saw (producers' sends, consumers'
//! rebalances, polls, processing and commits, brokers' registrations and the
//! route answers of NameServers) and the final durable content of every queue
//! (the checker node's final reads), never a node's own claim. Each violation's
//! detail begins with its anomaly, named as in Jepsen's queue workload
//! (`jepsen.tests.kafka`) where it has a name there:
//!
//! - **M1** *lost-write*: an acknowledged send is not at its acknowledged
//!   (queue, offset) in the final read; or a message of the final read below the
//!   highest offset a group received from its queue, of a tag the group
//!   subscribes to, was never delivered to that group. *unseen*: an acknowledged
//!   send invoked before the calm phase that a subscribed group never processed.
//!   *key-query-lost*: a broker's answer to a query by key leaves out an
//!   acknowledged send with the key from a queue it searched, though the send's
//!   offset is below the end it searched to.
//! - **M2** *nonmonotonic-poll*: offsets of one poll do not increase within
//!   `[offset, next)`, or a poll starts below the previous poll's `next` while
//!   the same consumer incarnation held the queue throughout (no rebalance
//!   between, and no fetch of the committed offset that started it over); *poll-skip*: such a
//!   poll starts above it (or above the committed offset the consumer fetched
//!   when it took the queue), or a poll's answer leaves out a message of a
//!   subscribed tag that the final read has within its range;
//!   *nonmonotonic-send*: a producer's send to a queue that completed before
//!   another of its sends to that queue began got an offset at least as high.
//! - **M3** duplicates are counted by cause ([`Duplicates`]); *duplicate-msg-id*:
//!   two sends with different bodies share a message id; *changed-msg-id*: the
//!   final read holds a send's body under another message id.
//! - **M4** *unsubscribed-tag*: a poll returned a message whose tag (in the
//!   answer or as stored) the group does not subscribe to.
//! - **M5** *committed-offset-backwards*: a committed offset read back is below
//!   one acknowledged or read before; *commit-skips-unprocessed*: a commit
//!   acknowledged at c while a message below c of a subscribed tag had not been
//!   processed by the group when the commit began.
//! - **M6** *inconsistent-offsets*: one (queue, offset) delivered with two
//!   message ids, a delivered message not at its offset in the final read (a
//!   phantom read of an entry that recovery truncated), an acknowledged offset
//!   holding another message, a final read whose offsets are not dense from 0
//!   or that holds a message no send wrote; *key-query-phantom*: a query by
//!   key found a message that is not at that offset in the final read, or one
//!   sent without the key.
//! - **M7** *G1a*: the message of a send that certainly failed is delivered or
//!   in the final read.
//! - **R1** *stale-route*: a NameServer lists a broker whose last registration
//!   that may have reached it is older than the expiry plus one scan (or that
//!   never registered with it since it restarted); *missing-route*: it leaves
//!   out a broker whose registration naming the topic it acknowledged less than
//!   the expiry minus one scan earlier, since its last restart, with no later
//!   registration that could have withdrawn the topic.
//!
//! A message whose processing failed and that a consumer then sent back to
//! its group's retry or dead-letter topic (a send with `back`, acknowledged)
//! counts as processed by the group, for *unseen* and M5; its copy is a send
//! like any other, judged in the topic it went to.
//!
//! What the checker relies on the workload to record: bodies unique per send
//! (two sends with one body make the history unreadable); a send that is `Fail`
//! only when no attempt of it can have been stored; consumers that start a
//! group with no committed offset from offset 0 (otherwise *lost-write* flags
//! what they skipped); a `FetchOffset` whenever a consumer takes a queue and
//! starts from what it answered; brokers that register under the name route
//! answers give them (their node name) and NameServers named by their node
//! name. Times are the simulation's (µs); a node's crash (`FaultRecord::Crash`)
//! ends its incarnation.

use crate::ops::{ops, secs, Op, Outcome};
use crate::{Violation, JUDGED_NOTHING, UNREADABLE};
use mqsim_sim::history::{Body, Call, FaultRecord, Record, Ret, Stored};
use mqsim_sim::Fault;
use serde::{Deserialize, Serialize};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

/// Slack on top of the NameServer's expiry windows for the round trips of
/// registrations and route queries (µs). Clock faults and pauses of the
/// NameServer found in the history are allowed for on top of it.
pub const ROUTE_MARGIN: u64 = 1_000_000;

/// Violations kept per anomaly; the rest are counted in one closing line.
pub const PER_ANOMALY: usize = 3;

/// A consumer group's subscription: the tags of one topic it receives (`*` for all).
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub group: String,
    pub topic: String,
    pub tags: Vec<String>,
}

/// What the run was configured to do, as the checker needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub subscriptions: Vec<Subscription>,
    /// Every topic and its number of queues (ids `0..n`); each must have a final read.
    pub topics: Vec<(String, u32)>,
    /// When faults stopped and consumers could catch up (µs); "unseen" is judged on acked sends invoked before it.
    pub calm_from: u64,
    /// The NameServer removes a broker this long after its last registration (µs, 120 s).
    pub broker_expiry: u64,
    /// How often the NameServer scans for expired brokers (µs).
    pub scan_every: u64,
    /// The longest a message may spend in the network (µs): an unanswered
    /// registration may arrive until this long after its client gave up.
    pub max_message_delay: u64,
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checked {
    pub violations: Vec<Violation>,
    pub duplicates: Duplicates,
}

/// Duplicates by cause: counted and reported, not violations (delivery is at least once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicates {
    /// Extra copies of a message id in the final reads (a send retried after an unknown outcome).
    pub producer_retry: u64,
    /// Redeliveries of a (queue, offset) to a group by another consumer, or by
    /// one consumer after a rebalance took the queue away and gave it back.
    pub rebalance: u64,
    /// Redeliveries to a group by one consumer across its restart.
    pub crash: u64,
    /// Any other redelivery to a group (the consumer went back over offsets it had polled).
    pub offset_loss: u64,
}

impl Checked {
    fn failed(v: Violation) -> Checked {
        Checked { violations: vec![v], duplicates: Duplicates::default() }
    }
}

/// Violations in the order found, at most [`PER_ANOMALY`] of each anomaly.
#[derive(Default)]
struct Found {
    kept: Vec<Violation>,
    counts: BTreeMap<&'static str, (&'static str, usize)>,
}

impl Found {
    fn add(&mut self, invariant: &'static str, anomaly: &'static str, op: Option<&Op>, detail: String) {
        let n = &mut self.counts.entry(anomaly).or_insert((invariant, 0)).1;
        *n += 1;
        if *n <= PER_ANOMALY {
            self.kept.push(Violation { invariant, detail: format!("{anomaly}: {detail}"), op: op.map(|o| o.id) });
        }
    }

    fn violations(mut self) -> Vec<Violation> {
        for (anomaly, (invariant, n)) in self.counts {
            if n > PER_ANOMALY {
                let detail = format!("{anomaly}: {} more like the above", n - PER_ANOMALY);
                self.kept.push(Violation::new(invariant, detail));
            }
        }
        self.kept
    }
}

/// (node, group, topic, queue).
type HoldKey<'a> = (&'a str, &'a str, &'a str, u32);

/// The history, joined and indexed.
struct Run<'a> {
    spec: &'a Spec,
    ops: Vec<Op<'a>>,
    /// Where each operation's invocation stands in the history.
    inv: Vec<usize>,
    /// Per node, its crashes: where they stand in the history, and when.
    crashes: BTreeMap<&'a str, Vec<(usize, u64)>>,
    /// The final content of each (topic, queue), by offset.
    finals: BTreeMap<(&'a str, u32), BTreeMap<u64, &'a Stored>>,
    /// Tags per (group, topic).
    subs: BTreeMap<(&'a str, &'a str), BTreeSet<&'a str>>,
    /// Where a consumer's hold of a queue may have begun or ended (history
    /// positions of its rebalances' invocations and completions), sorted.
    breaks: BTreeMap<HoldKey<'a>, Vec<usize>>,
}

impl<'a> Run<'a> {
    fn queues_of(&self, topic: &str) -> u32 {
        self.spec.topics.iter().find(|(t, _)| t == topic).map_or(0, |(_, n)| *n)
    }

    fn subscribed(&self, group: &str, topic: &str, tag: &str) -> bool {
        self.subs.get(&(group, topic)).is_some_and(|tags| tags.contains("*") || tags.contains(tag))
    }

    /// The groups that subscribe to `tag` of `topic`.
    fn groups_for(&self, topic: &str, tag: &str) -> Vec<&'a str> {
        self.subs
            .iter()
            .filter(|((_, t), tags)| *t == topic && (tags.contains("*") || tags.contains(tag)))
            .map(|((g, _), _)| *g)
            .collect()
    }

    /// Which incarnation of `node` was running at history position `at`.
    fn incarnation(&self, node: &str, at: usize) -> usize {
        self.crashes.get(node).map_or(0, |c| c.partition_point(|&(i, _)| i < at))
    }

    /// Which of `node`'s holds of the queue position `at` falls in.
    fn epoch(&self, node: &'a str, group: &'a str, topic: &'a str, queue: u32, at: usize) -> usize {
        self.breaks.get(&(node, group, topic, queue)).map_or(0, |b| b.partition_point(|&i| i < at))
    }

    /// When `node` last crashed at or before time `t` (µs).
    fn last_crash(&self, node: &str, t: u64) -> Option<u64> {
        let c = self.crashes.get(node)?;
        let n = c.partition_point(|&(_, at)| at <= t);
        (n > 0).then(|| c[n - 1].1)
    }

    /// Rebalances cut a consumer's holds: a queue it held before and after one
    /// that succeeded is held throughout; every other queue of the topic may
    /// have been taken or given. One with an unknown outcome cuts them all.
    /// A fetch of a queue's committed offset cuts the hold of that queue.
    fn find_breaks(&mut self) {
        let mut holding: BTreeMap<(&str, usize, &str, &str), BTreeSet<u32>> = BTreeMap::new();
        let mut breaks: BTreeMap<HoldKey<'a>, Vec<usize>> = BTreeMap::new();
        for (i, o) in self.ops.iter().enumerate() {
            // A fetch of the committed offset starts the queue over (an
            // ordered consumer whose lock lapsed does): a hold ends just
            // before it, so the fetch opens the new one.
            if let Call::FetchOffset { group, topic, queue } = o.call {
                breaks.entry((o.node, group, topic, *queue)).or_default().push(self.inv[i].saturating_sub(1));
                continue;
            }
            let Call::Rebalance { group, topic } = o.call else { continue };
            let at = self.inv[i];
            let all: BTreeSet<u32> = (0..self.queues_of(topic)).collect();
            let prev = holding.entry((o.node, self.incarnation(o.node, at), group, topic)).or_default();
            let (changed, now): (BTreeSet<u32>, BTreeSet<u32>) = match o.outcome {
                Outcome::Ok(Ret::Rebalance { queues }) => {
                    let now: BTreeSet<u32> = queues.iter().copied().collect();
                    let kept: BTreeSet<u32> = prev.intersection(&now).copied().collect();
                    (
                        all.iter()
                            .chain(prev.iter())
                            .chain(now.iter())
                            .filter(|q| !kept.contains(q))
                            .copied()
                            .collect(),
                        now,
                    )
                }
                Outcome::Fail(_) | Outcome::Ok(_) => continue,
                Outcome::Info(_) | Outcome::Pending => (all.union(prev).copied().collect(), BTreeSet::new()),
            };
            for q in changed {
                let b = breaks.entry((o.node, group, topic, q)).or_default();
                b.push(at);
                if o.done_at != usize::MAX {
                    b.push(o.done_at);
                }
            }
            *prev = now;
        }
        for b in breaks.values_mut() {
            b.sort_unstable();
        }
        self.breaks = breaks;
    }
}

/// The sends, indexed.
#[derive(Default)]
struct Sends<'a> {
    /// The send of each body.
    by_body: BTreeMap<&'a str, usize>,
    by_id: BTreeMap<&'a str, Vec<usize>>,
    /// Message ids whose every send certainly failed.
    failed_ids: BTreeMap<&'a str, usize>,
}

/// The operations, where each was invoked, and every node's crashes.
type Joined<'a> = (Vec<Op<'a>>, Vec<usize>, BTreeMap<&'a str, Vec<(usize, u64)>>);

fn join(history: &[Record]) -> Result<Joined<'_>, Violation> {
    let ops = ops(history)?;
    let mut inv = Vec::with_capacity(ops.len());
    let mut crashes: BTreeMap<&str, Vec<(usize, u64)>> = BTreeMap::new();
    for (i, r) in history.iter().enumerate() {
        match &r.body {
            Body::Invoke { .. } => inv.push(i),
            Body::Fault(FaultRecord::Crash { target, .. }) => crashes.entry(target).or_default().push((i, r.t)),
            _ => {}
        }
    }
    Ok((ops, inv, crashes))
}

/// R1 alone, for runs without messages (scenario `routes`), judged from the
/// brokers' registrations and the route answers; a run without a route
/// answer judged nothing.
pub fn check_routes_alone(history: &[Record], spec: &Spec) -> Vec<Violation> {
    let (ops, inv, crashes) = match join(history) {
        Ok(joined) => joined,
        Err(v) => return vec![v],
    };
    if !ops.iter().any(|o| matches!(o.ret(), Some(Ret::Routes { brokers }) if !brokers.is_empty())) {
        return vec![Violation::new(JUDGED_NOTHING, "no route answer named a broker in the whole run".into())];
    }
    let run = Run { spec, ops, inv, crashes, finals: BTreeMap::new(), subs: BTreeMap::new(), breaks: BTreeMap::new() };
    let mut found = Found::default();
    check_routes(history, &run, &mut found);
    found.violations()
}

pub fn check(history: &[Record], spec: &Spec) -> Checked {
    let (ops, inv, crashes) = match join(history) {
        Ok(joined) => joined,
        Err(v) => return Checked::failed(v),
    };
    let mut found = Found::default();

    // The final reads: the last that ended well, per queue.
    let mut last: BTreeMap<(&str, u32), (usize, &Vec<Stored>)> = BTreeMap::new();
    for o in &ops {
        if let (Call::ReadQueue { topic, queue }, Some(Ret::ReadQueue { msgs })) = (o.call, o.ret()) {
            let e = last.entry((topic, *queue)).or_insert((o.done_at, msgs));
            if o.done_at >= e.0 {
                *e = (o.done_at, msgs);
            }
        }
    }
    let missing: Vec<String> = spec
        .topics
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |q| (t.as_str(), q)))
        .filter(|k| !last.contains_key(k))
        .map(|(t, q)| format!("{t}/q{q}"))
        .collect();
    if !missing.is_empty() {
        let detail =
            format!("no final read of {} ended well: the queues' final content is unknown", missing.join(", "));
        return Checked::failed(Violation::new(JUDGED_NOTHING, detail));
    }
    let acked = ops.iter().any(|o| matches!(o.ret(), Some(Ret::Send { .. })));
    let polled = ops.iter().any(|o| matches!(o.ret(), Some(Ret::Poll { msgs, .. }) if !msgs.is_empty()));
    if !acked && !polled {
        let detail = "no send was acknowledged and no poll returned a message in the whole run".into();
        return Checked::failed(Violation::new(JUDGED_NOTHING, detail));
    }
    let mut finals: BTreeMap<(&str, u32), BTreeMap<u64, &Stored>> = BTreeMap::new();
    for (&(topic, queue), &(_, msgs)) in &last {
        let q = finals.entry((topic, queue)).or_default();
        if let Some((i, m)) = msgs.iter().enumerate().find(|(i, m)| m.offset != *i as u64) {
            found.add(
                "M6",
                "inconsistent-offsets",
                None,
                format!(
                    "the final read of {topic}/q{queue} has offset {} at position {i}: offsets must be dense from 0",
                    m.offset
                ),
            );
        }
        for m in msgs {
            q.entry(m.offset).or_insert(m);
        }
    }
    let subs = spec.subscriptions.iter().fold(BTreeMap::<(&str, &str), BTreeSet<&str>>::new(), |mut subs, s| {
        subs.entry((&s.group, &s.topic)).or_default().extend(s.tags.iter().map(String::as_str));
        subs
    });
    let mut run = Run { spec, ops, inv, crashes, finals, subs, breaks: BTreeMap::new() };
    run.find_breaks();

    let sends = match index_sends(&run) {
        Ok(s) => s,
        Err(v) => return Checked::failed(v),
    };
    let mut duplicates = Duplicates::default();
    check_stored(&run, &sends, &mut found, &mut duplicates);
    check_sends(&run, &sends, &mut found);
    check_polls(&run, &sends, &mut found, &mut duplicates);
    check_offsets(&run, &mut found);
    check_key_queries(&run, &sends, &mut found);
    check_routes(history, &run, &mut found);
    Checked { violations: found.violations(), duplicates }
}

/// The sends by body and by message id; two sends with one body are unreadable.
fn index_sends<'a>(run: &Run<'a>) -> Result<Sends<'a>, Violation> {
    let mut s = Sends::default();
    let mut ok_ids: BTreeSet<&str> = BTreeSet::new();
    for (i, o) in run.ops.iter().enumerate() {
        let Call::Send { msg_id, body, .. } = o.call else { continue };
        if let Some(&j) = s.by_body.get(body.as_str()) {
            let detail = format!(
                "{} and {} send the same body {body:?}: the workload must make bodies unique",
                run.ops[j].describe(),
                o.describe()
            );
            return Err(Violation::new(UNREADABLE, detail));
        }
        s.by_body.insert(body, i);
        s.by_id.entry(msg_id).or_default().push(i);
        if o.failed() {
            s.failed_ids.entry(msg_id).or_insert(i);
        } else {
            ok_ids.insert(msg_id);
        }
    }
    s.failed_ids.retain(|id, _| !ok_ids.contains(id));
    Ok(s)
}

/// Every message of the final reads: one some send wrote, as it wrote it (M3,
/// M6), not one that certainly failed (M7); copies of one id are producer retries.
fn check_stored(run: &Run, sends: &Sends, found: &mut Found, dup: &mut Duplicates) {
    let mut copies: BTreeMap<&str, u64> = BTreeMap::new();
    for (&(topic, queue), msgs) in &run.finals {
        for (&offset, m) in msgs {
            *copies.entry(&m.msg_id).or_default() += 1;
            let Some(s) = sends.by_body.get(m.body.as_str()).map(|&i| &run.ops[i]) else {
                let detail = format!(
                    "the final read holds {} (body {:?}) at {topic}/q{queue} offset {offset}, which no send wrote",
                    m.msg_id, m.body
                );
                found.add("M6", "inconsistent-offsets", None, detail);
                continue;
            };
            let Call::Send { topic: sent_to, tag, msg_id, .. } = s.call else { continue };
            if *msg_id != m.msg_id {
                let detail = format!(
                    "{} sent body {:?} as {msg_id}, but the final read holds it at {topic}/q{queue} offset {offset} as {}",
                    s.describe(),
                    m.body,
                    m.msg_id
                );
                found.add("M3", "changed-msg-id", Some(s), detail);
            }
            if sent_to != topic || *tag != m.tag {
                let detail = format!(
                    "{} sent {msg_id} to topic {sent_to} with tag {tag:?}, but the final read holds it at {topic}/q{queue} offset {offset} with tag {:?}",
                    s.describe(),
                    m.tag
                );
                found.add("M6", "inconsistent-offsets", Some(s), detail);
            }
            let failed =
                if s.failed() { Some(s) } else { sends.failed_ids.get(m.msg_id.as_str()).map(|&i| &run.ops[i]) };
            if let Some(f) = failed {
                let detail = format!(
                    "{} failed, but the final read holds {} at {topic}/q{queue} offset {offset}",
                    f.describe(),
                    m.msg_id
                );
                found.add("M7", "G1a", Some(f), detail);
            }
        }
    }
    dup.producer_retry = copies.values().map(|c| c - 1).sum();
}

/// Queries by key, each the answer of one broker: every message found is at
/// its offset in the final read and was sent with the key (M6); every queue
/// the broker searched gave every acknowledged send with the key whose offset
/// is below the end the broker searched to (M1), whichever broker acknowledged
/// it and whenever. Offsets below a log's durable end are settled: that prefix
/// is the same in every owner's log and in the final read.
/// An acknowledged send with a given key: its queue, offset and operation.
type KeyedAck<'r, 'a> = (u32, u64, &'r Op<'a>);

fn check_key_queries(run: &Run, sends: &Sends, found: &mut Found) {
    let ops = &run.ops;
    let mut keyed: BTreeMap<(&str, &str), Vec<KeyedAck>> = BTreeMap::new();
    for s in ops {
        if let (Call::Send { topic, keys, .. }, Some(Ret::Send { queue, offset, .. })) = (s.call, s.ret()) {
            for key in keys {
                keyed.entry((topic, key)).or_default().push((*queue, *offset, s));
            }
        }
    }
    for q in ops {
        let (Call::QueryKey { topic, key, .. }, Some(Ret::QueryKey { searched, found: got })) = (q.call, q.ret())
        else {
            continue;
        };
        for f in got {
            let stored = run.finals.get(&(topic.as_str(), f.queue)).and_then(|m| m.get(&f.offset));
            if stored.is_none_or(|m| m.msg_id != f.msg_id) {
                let now = stored.map_or("nothing".to_string(), |m| m.msg_id.clone());
                let detail = format!(
                    "{} found {} at {topic}/q{} offset {}, but the final read holds {now} there",
                    q.describe(),
                    f.msg_id,
                    f.queue,
                    f.offset
                );
                found.add("M6", "key-query-phantom", Some(q), detail);
                continue;
            }
            let keys_of = |&i: &usize| match ops[i].call {
                Call::Send { keys, .. } => keys.as_slice(),
                _ => &[],
            };
            let sent = sends.by_id.get(f.msg_id.as_str()).map(|ids| ids.iter().map(keys_of).collect::<Vec<_>>());
            if let Some(keys) = sent.filter(|keys| !keys.iter().any(|k| k.contains(key))) {
                let detail = format!(
                    "{} found {} for key {key:?}, but it was sent with keys {:?}",
                    q.describe(),
                    f.msg_id,
                    keys[0]
                );
                found.add("M6", "key-query-phantom", Some(q), detail);
            }
        }
        let got: BTreeSet<(u32, u64)> = got.iter().map(|f| (f.queue, f.offset)).collect();
        let ends: BTreeMap<u32, u64> = searched.iter().map(|s| (s.queue, s.end)).collect();
        for &(queue, offset, s) in keyed.get(&(topic.as_str(), key.as_str())).into_iter().flatten() {
            let Some(&end) = ends.get(&queue).filter(|&&end| offset < end) else { continue };
            if !got.contains(&(queue, offset)) {
                let Call::Send { msg_id, .. } = s.call else { continue };
                let detail = format!(
                    "{} searched {topic}/q{queue} below offset {end} but did not find {msg_id}, acknowledged at offset {offset} ({})",
                    q.describe(),
                    s.describe()
                );
                found.add("M1", "key-query-lost", Some(q), detail);
            }
        }
    }
}

/// (completion, offset, op) of an acknowledged send.
type Ack = (u64, u64, usize);

/// M1 (acknowledged sends in the final reads, and processed by every
/// subscribed group), M2 (a producer's offsets per queue increase), M3 (ids
/// unique per send), M6 (an acknowledged offset holds that send's message).
fn check_sends(run: &Run, sends: &Sends, found: &mut Found) {
    let ops = &run.ops;
    for ids in sends.by_id.values() {
        let body = |i: usize| match ops[i].call {
            Call::Send { body, .. } => body.as_str(),
            _ => "",
        };
        if let Some(&j) = ids.iter().find(|&&j| body(j) != body(ids[0])) {
            let (a, b) = (&ops[ids[0]], &ops[j]);
            let Call::Send { msg_id, .. } = a.call else { continue };
            let detail =
                format!("{} and {} are different sends with one message id {msg_id}", a.describe(), b.describe());
            found.add("M3", "duplicate-msg-id", Some(b), detail);
        }
    }
    let stored_bodies: BTreeSet<&str> = run.finals.values().flat_map(|q| q.values().map(|m| m.body.as_str())).collect();
    let mut processed: BTreeSet<(&str, &str)> = BTreeSet::new();
    for o in ops {
        if let Some((group, _, _, _, msg_id)) = handled(o) {
            processed.insert((group, msg_id));
        }
    }
    // (producer, topic, queue) → its acknowledged sends.
    let mut by_producer: BTreeMap<(&str, &str, u32), Vec<Ack>> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        let (Call::Send { topic, tag, msg_id, body, .. }, Some(Ret::Send { queue, offset, .. })) = (o.call, o.ret())
        else {
            continue;
        };
        by_producer.entry((o.node, topic, *queue)).or_default().push((o.end, *offset, i));
        let at = format!("{topic}/q{queue} offset {offset}");
        match run.finals.get(&(topic.as_str(), *queue)).map(|q| (q, q.get(offset))) {
            None => found.add(
                "M1",
                "lost-write",
                Some(o),
                format!("{} was acknowledged at {at}, a queue the final reads do not have", o.describe()),
            ),
            Some((q, None)) => {
                let len = q.keys().next_back().map_or(0, |l| l + 1);
                let detail =
                    format!("{} was acknowledged at {at}, but the final read of the queue ends at {len}", o.describe());
                found.add("M1", "lost-write", Some(o), detail);
            }
            Some((_, Some(m))) if m.body != *body => {
                let detail = format!(
                    "{} was acknowledged at {at}, but the final read holds {} (body {:?}) there",
                    o.describe(),
                    m.msg_id,
                    m.body
                );
                found.add("M6", "inconsistent-offsets", Some(o), detail);
                if !stored_bodies.contains(body.as_str()) {
                    let detail = format!(
                        "{} was acknowledged at {at}, but its message {msg_id} is nowhere in the final reads",
                        o.describe()
                    );
                    found.add("M1", "lost-write", Some(o), detail);
                }
            }
            Some(_) => {}
        }
        if o.start < run.spec.calm_from {
            for g in run.groups_for(topic, tag) {
                if !processed.contains(&(g, msg_id.as_str())) {
                    let detail = format!(
                        "{} was acknowledged at {at} before the calm phase began at {}, but group {g} never processed {msg_id}",
                        o.describe(),
                        secs(run.spec.calm_from)
                    );
                    found.add("M1", "unseen", Some(o), detail);
                }
            }
        }
    }
    for ((_, topic, queue), mut acks) in by_producer {
        acks.sort_unstable();
        // best[k]: the highest offset among acks[..=k], and its op.
        let mut best: Vec<(u64, usize)> = Vec::with_capacity(acks.len());
        for &(_, offset, i) in &acks {
            let b = match best.last() {
                Some(&(m, j)) if m >= offset => (m, j),
                _ => (offset, i),
            };
            best.push(b);
        }
        for &(_, offset, i) in &acks {
            let o = &ops[i];
            let k = acks.partition_point(|&(end, _, _)| end < o.start);
            if k == 0 {
                continue;
            }
            let (m, j) = best[k - 1];
            if m >= offset {
                let detail = format!(
                    "{} got {topic}/q{queue} offset {m} and completed before the same producer's {} began, which got offset {offset}",
                    ops[j].describe(),
                    o.describe()
                );
                found.add("M2", "nonmonotonic-send", Some(o), detail);
            }
        }
    }
}

/// One hold of a queue by one consumer incarnation: (node, incarnation,
/// group, topic, queue, epoch). Per hold, the chain's last link, when it
/// completed (history position) and its op.
type HoldOf<'a> = (&'a str, usize, &'a str, &'a str, u32, usize);

/// How a consumer's run over a queue it holds last stood.
#[derive(Clone, Copy)]
enum Link {
    /// It fetched the committed offset to start from, and has not polled since.
    Fetched(u64),
    /// Its last poll answered this `next`.
    Polled(u64),
}

/// The last delivery of a (group, queue, offset), and whether any delivery of it
/// had the message the final read holds there.
struct Delivered<'a> {
    node: &'a str,
    incarnation: usize,
    epoch: usize,
    matched: bool,
}

/// M1 (nothing skipped below what a group received), M2 (polls), M4, M6 and
/// M7 (deliveries), and redeliveries by cause.
fn check_polls(run: &Run, sends: &Sends, found: &mut Found, dup: &mut Duplicates) {
    let ops = &run.ops;
    // (topic, queue, offset) → the first message id delivered there, and by which op.
    let mut at_offset: BTreeMap<(&str, u32, u64), (&str, usize)> = BTreeMap::new();
    let mut phantoms: BTreeSet<(&str, u32, u64)> = BTreeSet::new();
    let mut delivered: BTreeMap<(&str, &str, u32, u64), Delivered> = BTreeMap::new();
    let mut highest: BTreeMap<(&str, &str, u32), (u64, usize)> = BTreeMap::new();
    let mut chains: BTreeMap<HoldOf, (Link, usize, usize)> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        let at = run.inv[i];
        match (o.call, o.ret()) {
            (Call::FetchOffset { group, topic, queue }, Some(Ret::FetchOffset { offset })) => {
                let incarnation = run.incarnation(o.node, at);
                let epoch = run.epoch(o.node, group, topic, *queue, at);
                let key = (o.node, incarnation, group.as_str(), topic.as_str(), *queue, epoch);
                // The committed offset starts a hold only until its first poll.
                if !matches!(chains.get(&key), Some((Link::Polled(_), _, _))) {
                    chains.insert(key, (Link::Fetched(*offset), o.done_at, i));
                }
            }
            (Call::Poll { group, topic, queue, offset }, Some(Ret::Poll { msgs, next })) => {
                let (group, topic, queue, offset, next) = (group.as_str(), topic.as_str(), *queue, *offset, *next);
                let incarnation = run.incarnation(o.node, at);
                let epoch = run.epoch(o.node, group, topic, queue, at);
                let final_q = run.finals.get(&(topic, queue));
                let offsets: Vec<u64> = msgs.iter().map(|m| m.offset).collect();
                let inside = offsets.iter().all(|&m| m >= offset && m < next);
                if next < offset || !inside || offsets.windows(2).any(|w| w[0] >= w[1]) {
                    let detail = format!(
                        "{} of {topic}/q{queue} from offset {offset} returned offsets {offsets:?} and next {next}: offsets must increase within [offset, next)",
                        o.describe()
                    );
                    found.add("M2", "nonmonotonic-poll", Some(o), detail);
                }
                let key = (o.node, incarnation, group, topic, queue, epoch);
                if let Some(&(link, done, j)) = chains.get(&key) {
                    let (before, what) = match link {
                        Link::Polled(n) => (n, "the next offset of"),
                        Link::Fetched(n) => (n, "the committed offset fetched by"),
                    };
                    let (anomaly, rel) = match offset.cmp(&before) {
                        std::cmp::Ordering::Less if matches!(link, Link::Polled(_)) => ("nonmonotonic-poll", "below"),
                        std::cmp::Ordering::Greater => ("poll-skip", "above"),
                        _ => ("", ""),
                    };
                    if done < at && !anomaly.is_empty() {
                        let detail = format!(
                            "{} of {topic}/q{queue} for group {group} starts at {offset}, {rel} {before}, {what} {}, while {} held the queue throughout",
                            o.describe(),
                            ops[j].describe(),
                            o.node
                        );
                        found.add("M2", anomaly, Some(o), detail);
                    }
                }
                chains.insert(key, (Link::Polled(next), o.done_at, i));
                if let Some(q) = final_q.filter(|_| offset < next) {
                    let skipped = q
                        .range(offset..next)
                        .map(|(_, s)| *s)
                        .find(|s| run.subscribed(group, topic, &s.tag) && offsets.binary_search(&s.offset).is_err());
                    if let Some(s) = skipped.filter(|_| offsets.windows(2).all(|w| w[0] < w[1])) {
                        let detail = format!(
                            "{} of {topic}/q{queue} for group {group} covered [{offset}, {next}) but left out offset {} ({}, tag {:?}) of the final read",
                            o.describe(),
                            s.offset,
                            s.msg_id,
                            s.tag
                        );
                        found.add("M2", "poll-skip", Some(o), detail);
                    }
                }
                let mut seen: BTreeSet<u64> = BTreeSet::new();
                for m in msgs {
                    if !seen.insert(m.offset) {
                        continue;
                    }
                    let stored = final_q.and_then(|q| q.get(&m.offset)).copied();
                    let here = || format!("{topic}/q{queue} offset {}", m.offset);
                    if !run.subscribed(group, topic, &m.tag) {
                        let detail = format!(
                            "{} for group {group} returned {} at {} with tag {:?}, which the group does not subscribe to",
                            o.describe(),
                            m.msg_id,
                            here(),
                            m.tag
                        );
                        found.add("M4", "unsubscribed-tag", Some(o), detail);
                    } else if let Some(s) =
                        stored.filter(|s| s.msg_id == m.msg_id && !run.subscribed(group, topic, &s.tag))
                    {
                        let detail = format!(
                            "{} for group {group} returned {} at {}, stored with tag {:?}, which the group does not subscribe to",
                            o.describe(),
                            m.msg_id,
                            here(),
                            s.tag
                        );
                        found.add("M4", "unsubscribed-tag", Some(o), detail);
                    }
                    if let Some(&f) = sends.failed_ids.get(m.msg_id.as_str()) {
                        let detail = format!(
                            "{} delivered {} at {}, but its send {} failed",
                            o.describe(),
                            m.msg_id,
                            here(),
                            ops[f].describe()
                        );
                        found.add("M7", "G1a", Some(o), detail);
                    }
                    match at_offset.entry((topic, queue, m.offset)) {
                        Entry::Vacant(e) => {
                            e.insert((&m.msg_id, i));
                        }
                        Entry::Occupied(e) if e.get().0 != m.msg_id => {
                            let (other, j) = *e.get();
                            let detail = format!(
                                "{}: {} delivered {other}, {} delivered {}",
                                here(),
                                ops[j].describe(),
                                o.describe(),
                                m.msg_id
                            );
                            found.add("M6", "inconsistent-offsets", Some(o), detail);
                        }
                        Entry::Occupied(_) => {}
                    }
                    let matched = stored.is_some_and(|s| s.msg_id == m.msg_id);
                    if !matched && phantoms.insert((topic, queue, m.offset)) {
                        let there = stored.map_or("nothing".to_string(), |s| s.msg_id.clone());
                        let detail = format!(
                            "{} delivered {} at {}, but the final read holds {there} there",
                            o.describe(),
                            m.msg_id,
                            here()
                        );
                        found.add("M6", "inconsistent-offsets", Some(o), detail);
                    }
                    match delivered.entry((group, topic, queue, m.offset)) {
                        Entry::Vacant(e) => {
                            e.insert(Delivered { node: o.node, incarnation, epoch, matched });
                        }
                        Entry::Occupied(mut e) => {
                            let d = e.get_mut();
                            let cause = if d.node != o.node {
                                &mut dup.rebalance
                            } else if d.incarnation != incarnation {
                                &mut dup.crash
                            } else if d.epoch != epoch {
                                &mut dup.rebalance
                            } else {
                                &mut dup.offset_loss
                            };
                            *cause += 1;
                            *d = Delivered { node: o.node, incarnation, epoch, matched: d.matched || matched };
                        }
                    }
                    let h = highest.entry((group, topic, queue)).or_insert((m.offset, i));
                    if m.offset > h.0 {
                        *h = (m.offset, i);
                    }
                }
            }
            _ => {}
        }
    }
    for (&(group, topic, queue), &(h, j)) in &highest {
        let Some(q) = run.finals.get(&(topic, queue)) else { continue };
        for (&offset, s) in q.range(..h) {
            let got = delivered.get(&(group, topic, queue, offset)).is_some_and(|d| d.matched);
            if !got && run.subscribed(group, topic, &s.tag) {
                let detail = format!(
                    "group {group} received {topic}/q{queue} offset {h} ({}), but never {} (tag {:?}) at offset {offset} below it",
                    ops[j].describe(),
                    s.msg_id,
                    s.tag
                );
                found.add("M1", "lost-write", Some(&ops[j]), detail);
            }
        }
    }
}

/// A committed offset some operation revealed: an acknowledged commit, or a read.
struct Seen {
    offset: u64,
    start: u64,
    end: u64,
    commit: bool,
    op: usize,
}

/// The message a group is done with by `o`, if `o` is an acknowledged
/// processing of it, or an acknowledged send-back of it after its
/// processing failed: (group, topic, queue, offset, message id).
fn handled<'a>(o: &Op<'a>) -> Option<(&'a str, &'a str, u32, u64, &'a str)> {
    match (o.call, o.ok()) {
        (Call::Process { group, topic, queue, offset, msg_id }, true) => Some((group, topic, *queue, *offset, msg_id)),
        (Call::Send { back: Some(b), .. }, true) => Some((&b.group, &b.topic, b.queue, b.offset, &b.msg_id)),
        _ => None,
    }
}

/// M5: committed offsets never move backwards, and never pass a message the
/// group had not processed.
fn check_offsets(run: &Run, found: &mut Found) {
    let ops = &run.ops;
    let mut seen: BTreeMap<(&str, &str, u32), Vec<Seen>> = BTreeMap::new();
    let mut commits: BTreeMap<(&str, &str, u32), Vec<usize>> = BTreeMap::new();
    // (group, topic, queue, offset, msg_id) → when it was first processed.
    let mut processed: BTreeMap<(&str, &str, u32, u64, &str), u64> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        match (o.call, o.ret()) {
            (Call::Commit { group, topic, queue, offset }, ret) => {
                if ret.is_some() {
                    let s = Seen { offset: *offset, start: o.start, end: o.end, commit: true, op: i };
                    seen.entry((group, topic, *queue)).or_default().push(s);
                }
                // A commit whose answer was lost may have taken effect: it
                // must not skip unprocessed messages either.
                if o.may_have_happened() {
                    commits.entry((group, topic, *queue)).or_default().push(i);
                }
            }
            (Call::FetchOffset { group, topic, queue }, Some(Ret::FetchOffset { offset })) => {
                let s = Seen { offset: *offset, start: o.start, end: o.end, commit: false, op: i };
                seen.entry((group, topic, *queue)).or_default().push(s);
            }
            _ => {
                if let Some(key) = handled(o) {
                    let e = processed.entry(key).or_insert(o.end);
                    *e = (*e).min(o.end);
                }
            }
        }
    }
    for ((group, topic, queue), mut v) in seen {
        v.sort_by_key(|s| s.end);
        let mut best: Vec<usize> = Vec::with_capacity(v.len());
        for i in 0..v.len() {
            let b = match best.last() {
                Some(&b) if v[b].offset >= v[i].offset => b,
                _ => i,
            };
            best.push(b);
        }
        for s in v.iter().filter(|s| !s.commit) {
            let k = v.partition_point(|x| x.end < s.start);
            if k == 0 {
                continue;
            }
            let f = &v[best[k - 1]];
            if f.offset > s.offset {
                let how = if f.commit { "committed" } else { "read" };
                let detail = format!(
                    "{} read group {group}'s committed offset of {topic}/q{queue} as {}, but {} had {how} {} before it began",
                    ops[s.op].describe(),
                    s.offset,
                    ops[f.op].describe(),
                    f.offset
                );
                found.add("M5", "committed-offset-backwards", Some(&ops[s.op]), detail);
            }
        }
    }
    for ((group, topic, queue), cs) in commits {
        let Some(q) = run.finals.get(&(topic, queue)) else { continue };
        // The subscribed messages of the final read, when each was first processed.
        let due: Vec<(&Stored, u64)> = q
            .values()
            .filter(|s| run.subscribed(group, topic, &s.tag))
            .map(|s| {
                (*s, processed.get(&(group, topic, queue, s.offset, s.msg_id.as_str())).copied().unwrap_or(u64::MAX))
            })
            .collect();
        let mut latest: Vec<u64> = Vec::with_capacity(due.len());
        for &(_, t) in &due {
            latest.push(latest.last().map_or(t, |&l: &u64| l.max(t)));
        }
        for c in cs {
            let o = &ops[c];
            let Call::Commit { offset, .. } = o.call else { continue };
            let k = due.partition_point(|(s, _)| s.offset < *offset);
            // A processing that ended at the very instant the commit began
            // came before it: one task does both in turn.
            if k == 0 || latest[k - 1] <= o.start {
                continue;
            }
            let Some(&(s, t)) = due[..k].iter().find(|(_, t)| *t > o.start) else { continue };
            let when =
                if t == u64::MAX { "was never processed".to_string() } else { format!("was processed at {}", secs(t)) };
            let detail = format!(
                "{} committed {offset} for group {group} at {topic}/q{queue}, but {} at offset {} (tag {:?}) {when}",
                o.describe(),
                s.msg_id,
                s.offset,
                s.tag
            );
            found.add("M5", "commit-skips-unprocessed", Some(o), detail);
            break;
        }
    }
}

/// A registration of a broker with a NameServer that may have taken effect.
struct Reg<'a> {
    start: u64,
    /// The last moment it may have arrived.
    latest: u64,
    /// When it was acknowledged, if it was.
    acked: Option<u64>,
    topics: BTreeSet<&'a str>,
    op: usize,
}

/// How far a node's clock (and pauses) may have bent its sense of elapsed time (µs).
#[derive(Clone, Copy, Default)]
struct Bend {
    drift_ppm: u64,
    jumps: u64,
    paused: u64,
}

impl Bend {
    /// The most the node's measure of a `span` long wait may be off.
    fn clock(&self, span: u64) -> u64 {
        span.saturating_mul(self.drift_ppm) / 1_000_000 + self.jumps
    }
}

/// R1: NameServers drop dead brokers in time, and only those.
fn check_routes(history: &[Record], run: &Run, found: &mut Found) {
    let (ops, spec) = (&run.ops, run.spec);
    let mut bends: BTreeMap<&str, Bend> = BTreeMap::new();
    for r in history {
        let Body::Fault(FaultRecord::Start { fault, for_ms, .. }) = &r.body else { continue };
        match fault {
            Fault::ClockDrift { node, ppm } => bends.entry(node).or_default().drift_ppm += ppm.unsigned_abs(),
            Fault::ClockJump { node, ms } | Fault::ClockSkew { node, ms } => {
                bends.entry(node).or_default().jumps += ms.unsigned_abs() * 1000
            }
            Fault::Pause { node } => bends.entry(node).or_default().paused += for_ms * 1000,
            _ => {}
        }
    }
    // (nameserver, broker) → its registrations, in invocation order.
    let mut regs: BTreeMap<(&str, &str), Vec<Reg>> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        let Call::Register { nameserver, queues } = o.call else { continue };
        let (latest, acked) = match o.outcome {
            Outcome::Ok(_) => (o.end, Some(o.end)),
            Outcome::Fail(_) => continue,
            Outcome::Info(_) => (o.end.saturating_add(spec.max_message_delay), None),
            // Sent before the broker crashed, if it did, or at any time.
            Outcome::Pending => {
                let crashed = run.crashes.get(o.node).and_then(|c| c.iter().find(|&&(at, _)| at > run.inv[i]));
                (crashed.map_or(u64::MAX, |&(_, t)| t.saturating_add(spec.max_message_delay)), None)
            }
        };
        let topics = queues.iter().map(|q| q.topic.as_str()).collect();
        regs.entry((nameserver, o.node)).or_default().push(Reg { start: o.start, latest, acked, topics, op: i });
    }
    for o in ops {
        let (Call::Routes { nameserver: ns, topic }, Some(Ret::Routes { brokers })) = (o.call, o.ret()) else {
            continue;
        };
        let (ns, topic, s) = (ns.as_str(), topic.as_str(), o.start);
        let restart = run.last_crash(ns, s);
        let bend = bends.get(ns).copied().unwrap_or_default();
        // A listed broker: some registration since the last restart, recent enough.
        let live = spec.broker_expiry + spec.scan_every + ROUTE_MARGIN;
        let allowed = live + bend.clock(live) + bend.paused;
        for route in brokers {
            let b = route.broker.as_str();
            let list = regs.get(&(ns, b)).map_or(&[][..], |l| &l[..l.partition_point(|r| r.start < s)]);
            let last = list.iter().map(|r| r.latest.min(s)).max().filter(|&l| restart.is_none_or(|c| l > c));
            let detail = match last {
                None => {
                    let since = restart.map_or(String::new(), |c| format!(" since it restarted at {}", secs(c)));
                    format!(
                        "{} got broker {b} for topic {topic} from {ns}, which {b} had not registered with{since}",
                        o.describe()
                    )
                }
                Some(l) if s - l > allowed => format!(
                    "{} got broker {b} for topic {topic} from {ns}, but the last registration of {b} that may have reached {ns} was at {}, {} before the query",
                    o.describe(),
                    secs(l),
                    secs(s - l)
                ),
                Some(_) => continue,
            };
            found.add("R1", "stale-route", Some(o), detail);
        }
        // A broker left out: registered with the topic recently, since the
        // last restart, and nothing since could have taken the topic away.
        // The NameServer answered at some moment before the answer came back
        // (`end`): the registration's age and what may have reached it are
        // judged at that moment.
        let end = o.end;
        let restart = run.last_crash(ns, end);
        let keep = spec.broker_expiry.saturating_sub(spec.scan_every);
        let keep = keep.saturating_sub(bend.clock(keep));
        for (&(_, b), list) in regs.range((ns, "")..).take_while(|((n, _), _)| *n == ns) {
            if brokers.iter().any(|r| r.broker == b) {
                continue;
            }
            let list = &list[..list.partition_point(|r| r.start < end)];
            let Some(r) = list.iter().rev().find(|r| r.acked.is_some_and(|e| e < s) && r.topics.contains(topic)) else {
                continue;
            };
            if restart.is_some_and(|c| r.start <= c) || end - r.start >= keep {
                continue;
            }
            if list.iter().any(|x| x.op != r.op && x.latest > r.start && !x.topics.contains(topic)) {
                continue;
            }
            let detail = format!(
                "{} got no route to broker {b} for topic {topic} from {ns}, although {} registered {b}'s queues of {topic} there {} before the answer, and {ns} had not restarted since",
                o.describe(),
                ops[r.op].describe(),
                secs(end - r.start)
            );
            found.add("R1", "missing-route", Some(o), detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::build::{End, History};
    use mqsim_sim::history::{Polled, QueueRef, Route, SentBack};

    const P: &str = "producer-0";
    const P1: &str = "producer-1";
    const C: &str = "consumer-0";
    const C1: &str = "consumer-1";
    const CHECKER: &str = "checker-0";
    const NS: &str = "ns-0";
    const G: &str = "g";
    const T: &str = "t";

    /// Messages as (offset, msg_id, tag).
    type Msgs<'m> = &'m [(u64, &'m str, &'m str)];

    fn spec(queues: u32) -> Spec {
        Spec {
            subscriptions: vec![Subscription { group: G.into(), topic: T.into(), tags: vec!["a".into()] }],
            topics: vec![(T.into(), queues)],
            calm_from: 50_000_000,
            broker_expiry: 120_000_000,
            scan_every: 5_000_000,
            max_message_delay: 1_000_000,
        }
    }

    fn body(id: &str) -> String {
        format!("body-{id}")
    }

    fn send_body(h: &mut History, node: &str, t: u64, id: &str, body: &str, tag: &str, end: End) {
        let call = Call::Send {
            topic: T.into(),
            tag: tag.into(),
            keys: vec![],
            shard: None,
            msg_id: id.into(),
            body: body.into(),
            back: None,
        };
        h.op(node, t, t + 5, call, end);
    }

    fn send(h: &mut History, node: &str, t: u64, id: &str, tag: &str, end: End) {
        send_body(h, node, t, id, &body(id), tag, end);
    }

    fn at(queue: u32, offset: u64) -> End {
        End::Ok(Ret::Send { broker: "broker-0".into(), queue, offset })
    }

    fn rebalance(h: &mut History, node: &str, t: u64, queues: &[u32]) {
        let ret = Ret::Rebalance { queues: queues.to_vec() };
        h.op(node, t, t + 1, Call::Rebalance { group: G.into(), topic: T.into() }, End::Ok(ret));
    }

    fn fetch(h: &mut History, node: &str, t: u64, queue: u32, offset: u64) {
        let call = Call::FetchOffset { group: G.into(), topic: T.into(), queue };
        h.op(node, t, t + 1, call, End::Ok(Ret::FetchOffset { offset }));
    }

    fn poll(h: &mut History, node: &str, t: u64, queue: u32, offset: u64, msgs: Msgs, next: u64) {
        let msgs =
            msgs.iter().map(|&(offset, id, tag)| Polled { offset, msg_id: id.into(), tag: tag.into() }).collect();
        let call = Call::Poll { group: G.into(), topic: T.into(), queue, offset };
        h.op(node, t, t + 1, call, End::Ok(Ret::Poll { msgs, next }));
    }

    fn process(h: &mut History, node: &str, t: u64, queue: u32, offset: u64, id: &str) {
        let call = Call::Process { group: G.into(), topic: T.into(), queue, offset, msg_id: id.into() };
        h.op(node, t, t + 1, call, End::Ok(Ret::Process));
    }

    fn commit(h: &mut History, node: &str, t: u64, queue: u32, offset: u64) {
        let call = Call::Commit { group: G.into(), topic: T.into(), queue, offset };
        h.op(node, t, t + 1, call, End::Ok(Ret::Commit));
    }

    fn stored(msgs: Msgs) -> Vec<Stored> {
        msgs.iter()
            .map(|&(offset, id, tag)| Stored { offset, msg_id: id.into(), tag: tag.into(), body: body(id) })
            .collect()
    }

    /// The checker node's final read of each queue, in queue order.
    fn finals(h: &mut History, queues: Vec<Vec<Stored>>) {
        for (q, msgs) in queues.into_iter().enumerate() {
            let (t, queue) = (90_000 + q as u64 * 10, q as u32);
            h.op(CHECKER, t, t + 1, Call::ReadQueue { topic: T.into(), queue }, End::Ok(Ret::ReadQueue { msgs }));
        }
    }

    fn register(h: &mut History, broker: &str, t: u64, queues: &[u32], end: End) {
        let queues = queues.iter().map(|&queue| QueueRef { topic: T.into(), queue }).collect();
        h.op(broker, t, t + 1, Call::Register { nameserver: NS.into(), queues }, end);
    }

    fn routes(h: &mut History, t: u64, brokers: &[(&str, &[u32])]) {
        let brokers = brokers.iter().map(|(b, qs)| Route { broker: b.to_string(), queues: qs.to_vec() }).collect();
        h.op(P, t, t + 1, Call::Routes { nameserver: NS.into(), topic: T.into() }, End::Ok(Ret::Routes { brokers }));
    }

    fn crash(h: &mut History, t: u64, node: &str) {
        h.fault(t, FaultRecord::Crash { target: node.into(), lost: vec![], during_fsync_of: None });
    }

    const MINI: Msgs = &[(0, "m1", "a"), (1, "m2", "a")];

    /// Two acknowledged sends to queue 0, delivered, processed and committed by one consumer.
    fn mini() -> History {
        let mut h = History::default();
        send(&mut h, P, 10, "m1", "a", at(0, 0));
        send(&mut h, P, 30, "m2", "a", at(0, 1));
        rebalance(&mut h, C, 100, &[0]);
        fetch(&mut h, C, 102, 0, 0);
        poll(&mut h, C, 110, 0, 0, MINI, 2);
        process(&mut h, C, 120, 0, 0, "m1");
        process(&mut h, C, 122, 0, 1, "m2");
        commit(&mut h, C, 130, 0, 2);
        h
    }

    /// `MINI` followed by `more`, as the final read of queue 0.
    fn mini_final(h: &mut History, more: Msgs) {
        let all: Vec<_> = MINI.iter().chain(more).copied().collect();
        finals(h, vec![stored(&all)]);
    }

    /// (invariant, anomaly) of every violation found.
    fn anomalies(checked: &Checked) -> Vec<(&'static str, String)> {
        checked.violations.iter().map(|v| (v.invariant, v.detail.split(':').next().unwrap_or("").to_string())).collect()
    }

    fn flags(h: History, spec: &Spec, invariant: &str, anomaly: &str) -> Checked {
        let checked = check(&h.done(), spec);
        let found = anomalies(&checked);
        assert!(
            found.iter().any(|(i, a)| *i == invariant && a == anomaly),
            "expected {invariant} {anomaly}, found {:#?}",
            checked.violations
        );
        checked
    }

    #[test]
    fn the_smallest_valid_history_passes() {
        let mut h = mini();
        mini_final(&mut h, &[]);
        let checked = check(&h.done(), &spec(1));
        assert_eq!(checked, Checked::default());
    }

    #[test]
    fn a_valid_history_with_retries_a_rebalance_a_crash_and_redeliveries_passes() {
        let mut h = History::default();
        // m2's first attempt was stored at q0 offset 1 but timed out; the retry
        // (same message id) was acknowledged at q1 offset 0.
        send(&mut h, P, 10, "m1", "a", at(0, 0));
        send(&mut h, P, 20, "m2", "b", at(1, 0));
        send(&mut h, P, 30, "m3", "a", at(0, 2));
        send(&mut h, P1, 40, "m4", "a", End::Fail("Unavailable"));
        send(&mut h, P1, 50, "m5", "a", End::Info);
        // consumer-0 holds both queues.
        rebalance(&mut h, C, 100, &[0, 1]);
        fetch(&mut h, C, 102, 0, 0);
        fetch(&mut h, C, 104, 1, 0);
        poll(&mut h, C, 110, 0, 0, &[(0, "m1", "a"), (2, "m3", "a")], 3);
        process(&mut h, C, 120, 0, 0, "m1");
        process(&mut h, C, 122, 0, 2, "m3");
        commit(&mut h, C, 130, 0, 3);
        poll(&mut h, C, 140, 1, 0, &[(1, "m5", "a")], 2);
        process(&mut h, C, 150, 1, 1, "m5");
        // consumer-1 joins and takes q1 before consumer-0 committed it: m5 again.
        rebalance(&mut h, C1, 1_000, &[1]);
        rebalance(&mut h, C, 1_000, &[0]);
        fetch(&mut h, C1, 1_010, 1, 0);
        poll(&mut h, C1, 1_020, 1, 0, &[(1, "m5", "a")], 2);
        process(&mut h, C1, 1_030, 1, 1, "m5");
        commit(&mut h, C1, 1_040, 1, 2);
        poll(&mut h, C, 1_050, 0, 3, &[], 3);
        send(&mut h, P1, 2_000, "m6", "a", at(1, 2));
        poll(&mut h, C1, 2_100, 1, 2, &[(2, "m6", "a")], 3);
        process(&mut h, C1, 2_110, 1, 2, "m6");
        // consumer-1 crashes before committing m6 and gets it again after its restart.
        crash(&mut h, 2_200, C1);
        rebalance(&mut h, C1, 3_000, &[1]);
        fetch(&mut h, C1, 3_010, 1, 2);
        poll(&mut h, C1, 3_020, 1, 2, &[(2, "m6", "a")], 3);
        process(&mut h, C1, 3_030, 1, 2, "m6");
        commit(&mut h, C1, 3_040, 1, 3);
        // Routes: a registration with an unknown outcome counts until it may
        // have arrived; a restarted NameServer forgets every broker.
        register(&mut h, "broker-0", 0, &[0], End::Ok(Ret::Register));
        register(&mut h, "broker-1", 0, &[1], End::Ok(Ret::Register));
        routes(&mut h, 5, &[("broker-0", &[0]), ("broker-1", &[1])]);
        register(&mut h, "broker-0", 30_000, &[0], End::Info);
        routes(&mut h, 40_000, &[("broker-0", &[0]), ("broker-1", &[1])]);
        crash(&mut h, 50_000, NS);
        routes(&mut h, 55_000, &[]);
        register(&mut h, "broker-0", 60_000, &[0], End::Ok(Ret::Register));
        routes(&mut h, 61_000, &[("broker-0", &[0])]);
        finals(
            &mut h,
            vec![
                stored(&[(0, "m1", "a"), (1, "m2", "b"), (2, "m3", "a")]),
                stored(&[(0, "m2", "b"), (1, "m5", "a"), (2, "m6", "a")]),
            ],
        );
        fetch(&mut h, CHECKER, 90_100, 0, 3);
        fetch(&mut h, CHECKER, 90_110, 1, 3);
        let checked = check(&h.done(), &spec(2));
        assert_eq!(checked.violations, vec![]);
        let expected = Duplicates { producer_retry: 1, rebalance: 1, crash: 1, offset_loss: 0 };
        assert_eq!(checked.duplicates, expected);
    }

    #[test]
    fn a_missing_final_read_fails() {
        let mut h = mini();
        mini_final(&mut h, &[]);
        flags(h, &spec(2), JUDGED_NOTHING, "no final read of t/q1 ended well");
        let mut h = mini();
        mini_final(&mut h, &[]);
        h.op(CHECKER, 90_010, 90_011, Call::ReadQueue { topic: T.into(), queue: 1 }, End::Info);
        flags(h, &spec(2), JUDGED_NOTHING, "no final read of t/q1 ended well");
    }

    #[test]
    fn an_empty_run_fails() {
        let mut h = History::default();
        send(&mut h, P, 10, "m1", "a", End::Info);
        rebalance(&mut h, C, 100, &[0]);
        poll(&mut h, C, 110, 0, 0, &[], 0);
        finals(&mut h, vec![vec![]]);
        let checked = check(&h.done(), &spec(1));
        assert_eq!(checked.violations.len(), 1);
        assert_eq!(checked.violations[0].invariant, JUDGED_NOTHING);
    }

    #[test]
    fn an_unreadable_history_fails() {
        let mut h = mini();
        mini_final(&mut h, &[]);
        h.records.push(Record { t: 5, node: C.into(), body: Body::Ok { id: 99, ret: Ret::Commit } });
        let checked = check(&h.done(), &spec(1));
        assert_eq!(checked.violations[0].invariant, UNREADABLE);
        // Two sends with one body cannot be told apart.
        let mut h = mini();
        send_body(&mut h, P, 200, "m3", &body("m1"), "a", End::Info);
        mini_final(&mut h, &[]);
        assert_eq!(check(&h.done(), &spec(1)).violations[0].invariant, UNREADABLE);
    }

    #[test]
    fn m1_lost_write_of_an_acknowledged_send() {
        let mut h = mini();
        send(&mut h, P, 200, "m3", "a", at(0, 2));
        mini_final(&mut h, &[]);
        flags(h, &spec(1), "M1", "lost-write");
    }

    #[test]
    fn m1_lost_write_below_what_the_group_received() {
        // m3 (unknown outcome) is stored at 2; another consumer of the group
        // received offset 3, but nobody in the group ever got m3.
        let mut h = mini();
        send(&mut h, P, 200, "m3", "a", End::Info);
        send(&mut h, P, 210, "m4", "a", at(0, 3));
        poll(&mut h, C1, 300, 0, 3, &[(3, "m4", "a")], 4);
        process(&mut h, C1, 310, 0, 3, "m4");
        mini_final(&mut h, &[(2, "m3", "a"), (3, "m4", "a")]);
        let checked = flags(h, &spec(1), "M1", "lost-write");
        assert_eq!(anomalies(&checked), vec![("M1", "lost-write".to_string())]);
    }

    #[test]
    fn m1_unseen() {
        let mut h = mini();
        send(&mut h, P, 200, "m3", "a", at(0, 2));
        mini_final(&mut h, &[(2, "m3", "a")]);
        let checked = flags(h, &spec(1), "M1", "unseen");
        assert_eq!(anomalies(&checked), vec![("M1", "unseen".to_string())]);
        // A send invoked after the calm phase began is not judged.
        let mut h = mini();
        send(&mut h, P, 60_000, "m3", "a", at(0, 2));
        mini_final(&mut h, &[(2, "m3", "a")]);
        assert_eq!(check(&h.done(), &spec(1)), Checked::default());
    }

    #[test]
    fn m2_nonmonotonic_poll_within_a_poll() {
        let mut h = mini();
        send(&mut h, P, 200, "m3", "a", at(0, 2));
        send(&mut h, P, 210, "m4", "a", at(0, 3));
        poll(&mut h, C, 300, 0, 2, &[(3, "m4", "a"), (2, "m3", "a")], 4);
        process(&mut h, C, 310, 0, 2, "m3");
        process(&mut h, C, 312, 0, 3, "m4");
        mini_final(&mut h, &[(2, "m3", "a"), (3, "m4", "a")]);
        let checked = flags(h, &spec(1), "M2", "nonmonotonic-poll");
        assert_eq!(anomalies(&checked), vec![("M2", "nonmonotonic-poll".to_string())]);
    }

    #[test]
    fn m2_nonmonotonic_poll_across_polls_is_an_offset_loss() {
        let mut h = mini();
        poll(&mut h, C, 200, 0, 1, &[(1, "m2", "a")], 2);
        mini_final(&mut h, &[]);
        let checked = flags(h, &spec(1), "M2", "nonmonotonic-poll");
        assert_eq!(checked.duplicates, Duplicates { offset_loss: 1, ..Duplicates::default() });
        // A re-poll after a rebalance that took the queue away and gave it back is fine.
        let mut h = mini();
        send(&mut h, P, 140, "m3", "a", at(0, 2));
        poll(&mut h, C, 146, 0, 2, &[(2, "m3", "a")], 3);
        rebalance(&mut h, C, 150, &[]);
        rebalance(&mut h, C, 160, &[0]);
        fetch(&mut h, C, 170, 0, 2);
        poll(&mut h, C, 200, 0, 2, &[(2, "m3", "a")], 3);
        process(&mut h, C, 210, 0, 2, "m3");
        commit(&mut h, C, 220, 0, 3);
        mini_final(&mut h, &[(2, "m3", "a")]);
        let checked = check(&h.done(), &spec(1));
        assert_eq!(checked.violations, vec![]);
        assert_eq!(checked.duplicates, Duplicates { rebalance: 1, ..Duplicates::default() });
        // So is one after the consumer started the queue over from its
        // committed offset (an ordered consumer whose lease lapsed), but not
        // one that starts above the offset it fetched.
        for (from, fine) in [(2, true), (3, false)] {
            let mut h = mini();
            send(&mut h, P, 140, "m3", "a", at(0, 2));
            poll(&mut h, C, 146, 0, 2, &[(2, "m3", "a")], 3);
            fetch(&mut h, C, 170, 0, 2);
            let msgs: Msgs = if from == 2 { &[(2, "m3", "a")] } else { &[] };
            poll(&mut h, C, 200, 0, from, msgs, 3);
            process(&mut h, C, 210, 0, 2, "m3");
            mini_final(&mut h, &[(2, "m3", "a")]);
            let violations = check(&h.done(), &spec(1)).violations;
            assert_eq!(violations.is_empty(), fine, "from {from}: {violations:?}");
        }
    }

    #[test]
    fn m2_poll_skip_across_polls() {
        let mut h = mini();
        send(&mut h, P, 200, "m3", "a", at(0, 2));
        send(&mut h, P, 210, "m4", "a", at(0, 3));
        poll(&mut h, C, 300, 0, 3, &[(3, "m4", "a")], 4);
        process(&mut h, C, 310, 0, 3, "m4");
        mini_final(&mut h, &[(2, "m3", "a"), (3, "m4", "a")]);
        flags(h, &spec(1), "M2", "poll-skip");
        // Starting a held queue above the committed offset fetched for it.
        let mut h = mini();
        rebalance(&mut h, C1, 150, &[0]);
        fetch(&mut h, C1, 160, 0, 0);
        poll(&mut h, C1, 170, 0, 1, &[(1, "m2", "a")], 2);
        mini_final(&mut h, &[]);
        flags(h, &spec(1), "M2", "poll-skip");
    }

    #[test]
    fn m2_poll_skip_within_a_poll() {
        let mut h = mini();
        send(&mut h, P, 200, "m3", "a", at(0, 2));
        send(&mut h, P, 210, "m4", "a", at(0, 3));
        poll(&mut h, C, 300, 0, 2, &[(3, "m4", "a")], 4);
        process(&mut h, C, 310, 0, 3, "m4");
        mini_final(&mut h, &[(2, "m3", "a"), (3, "m4", "a")]);
        flags(h, &spec(1), "M2", "poll-skip");
        // A message of a tag the group does not subscribe to may be left out.
        let mut h = mini();
        send(&mut h, P, 200, "m3", "b", at(0, 2));
        poll(&mut h, C, 300, 0, 2, &[], 3);
        mini_final(&mut h, &[(2, "m3", "b")]);
        assert_eq!(check(&h.done(), &spec(1)), Checked::default());
    }

    #[test]
    fn m2_nonmonotonic_send() {
        let mut h = History::default();
        send(&mut h, P, 10, "m1", "a", at(0, 1));
        send(&mut h, P, 30, "m2", "a", at(0, 0));
        finals(&mut h, vec![stored(&[(0, "m2", "a"), (1, "m1", "a")])]);
        let spec = Spec { calm_from: 0, ..spec(1) };
        let checked = flags(h, &spec, "M2", "nonmonotonic-send");
        assert_eq!(anomalies(&checked), vec![("M2", "nonmonotonic-send".to_string())]);
        // Concurrent sends may land in either order.
        let mut h = History::default();
        send(&mut h, P, 10, "m1", "a", at(0, 1));
        send(&mut h, P, 12, "m2", "a", at(0, 0));
        finals(&mut h, vec![stored(&[(0, "m2", "a"), (1, "m1", "a")])]);
        assert_eq!(check(&h.done(), &spec), Checked::default());
    }

    #[test]
    fn m3_two_sends_share_a_message_id() {
        let mut h = mini();
        send_body(&mut h, P, 200, "m1", "another body", "a", End::Info);
        mini_final(&mut h, &[]);
        flags(h, &spec(1), "M3", "duplicate-msg-id");
    }

    #[test]
    fn m3_a_retry_stored_under_a_new_message_id() {
        let mut h = mini();
        let mut q = stored(MINI);
        q.push(Stored { offset: 2, msg_id: "m2-again".into(), tag: "a".into(), body: body("m2") });
        finals(&mut h, vec![q]);
        flags(h, &spec(1), "M3", "changed-msg-id");
    }

    #[test]
    fn m4_an_unsubscribed_tag() {
        let mut h = mini();
        send(&mut h, P, 200, "m3", "b", at(0, 2));
        poll(&mut h, C, 300, 0, 2, &[(2, "m3", "b")], 3);
        mini_final(&mut h, &[(2, "m3", "b")]);
        flags(h, &spec(1), "M4", "unsubscribed-tag");
        // The answer names a subscribed tag, but the message is stored with another.
        let mut h = mini();
        send(&mut h, P, 200, "m3", "b", at(0, 2));
        poll(&mut h, C, 300, 0, 2, &[(2, "m3", "a")], 3);
        mini_final(&mut h, &[(2, "m3", "b")]);
        let checked = flags(h, &spec(1), "M4", "unsubscribed-tag");
        assert_eq!(anomalies(&checked), vec![("M4", "unsubscribed-tag".to_string())]);
    }

    #[test]
    fn m5_a_committed_offset_moving_backwards() {
        let mut h = mini();
        fetch(&mut h, C1, 200, 0, 1);
        mini_final(&mut h, &[]);
        flags(h, &spec(1), "M5", "committed-offset-backwards");
        // Seen by the checker node's final read too.
        let mut h = mini();
        mini_final(&mut h, &[]);
        fetch(&mut h, CHECKER, 90_100, 0, 0);
        flags(h, &spec(1), "M5", "committed-offset-backwards");
    }

    #[test]
    fn m5_a_commit_past_an_unprocessed_message() {
        let mut h = mini();
        send(&mut h, P, 200, "m3", "a", at(0, 2));
        poll(&mut h, C, 300, 0, 2, &[(2, "m3", "a")], 3);
        commit(&mut h, C, 310, 0, 3);
        process(&mut h, C, 320, 0, 2, "m3");
        mini_final(&mut h, &[(2, "m3", "a")]);
        let checked = flags(h, &spec(1), "M5", "commit-skips-unprocessed");
        assert_eq!(anomalies(&checked), vec![("M5", "commit-skips-unprocessed".to_string())]);
    }

    /// m3 fails and goes, as copy c3, to the retry topic `R` (acknowledged
    /// when `acked`), where the group processes c3; the group commits past m3.
    fn sent_back(acked: bool) -> (History, Spec) {
        const R: &str = "%RETRY%g";
        let mut h = mini();
        send(&mut h, P, 200, "m3", "a", at(0, 2));
        poll(&mut h, C, 300, 0, 2, &[(2, "m3", "a")], 3);
        let call = Call::Process { group: G.into(), topic: T.into(), queue: 0, offset: 2, msg_id: "m3".into() };
        h.op(C, 310, 311, call, End::Fail("consume later"));
        let back = SentBack { group: G.into(), topic: T.into(), queue: 0, offset: 2, msg_id: "m3".into() };
        let call = Call::Send {
            topic: R.into(),
            tag: "a".into(),
            keys: vec![],
            shard: None,
            msg_id: "c3".into(),
            body: body("c3"),
            back: Some(back),
        };
        h.op(
            C,
            312,
            315,
            call,
            if acked { End::Ok(Ret::Send { broker: "broker-0".into(), queue: 0, offset: 0 }) } else { End::Info },
        );
        commit(&mut h, C, 320, 0, 3);
        let call = Call::Process { group: G.into(), topic: R.into(), queue: 0, offset: 0, msg_id: "c3".into() };
        h.op(C, 400, 401, call, End::Ok(Ret::Process));
        mini_final(&mut h, &[(2, "m3", "a")]);
        let read = Ret::ReadQueue { msgs: if acked { stored(&[(0, "c3", "a")]) } else { vec![] } };
        h.op(CHECKER, 90_100, 90_101, Call::ReadQueue { topic: R.into(), queue: 0 }, End::Ok(read));
        let mut spec = spec(1);
        spec.topics.push((R.into(), 1));
        spec.subscriptions.push(Subscription { group: G.into(), topic: R.into(), tags: vec!["*".into()] });
        (h, spec)
    }

    #[test]
    fn a_message_sent_back_counts_as_processed_only_once_its_copy_is_stored() {
        let (h, spec) = sent_back(true);
        assert_eq!(check(&h.done(), &spec), Checked::default());
        let (h, spec) = sent_back(false);
        let checked = check(&h.done(), &spec);
        let found = anomalies(&checked);
        assert!(found.contains(&("M1", "unseen".to_string())), "{found:?}");
        assert!(found.contains(&("M5", "commit-skips-unprocessed".to_string())), "{found:?}");
    }

    #[test]
    fn m6_two_messages_delivered_at_one_offset() {
        let mut h = mini();
        poll(&mut h, C1, 200, 0, 0, &[(0, "m2", "a")], 1);
        mini_final(&mut h, &[]);
        let checked = flags(h, &spec(1), "M6", "inconsistent-offsets");
        assert!(checked
            .violations
            .iter()
            .any(|v| v.detail.contains("delivered m1") && v.detail.contains("delivered m2")));
    }

    #[test]
    fn m6_a_phantom_read_of_a_truncated_entry() {
        let mut h = mini();
        send(&mut h, P, 200, "m3", "a", End::Info);
        poll(&mut h, C, 300, 0, 2, &[(2, "m3", "a")], 3);
        process(&mut h, C, 310, 0, 2, "m3");
        mini_final(&mut h, &[]);
        let checked = flags(h, &spec(1), "M6", "inconsistent-offsets");
        assert_eq!(anomalies(&checked), vec![("M6", "inconsistent-offsets".to_string())]);
    }

    #[test]
    fn m6_an_acknowledged_offset_holding_another_message() {
        let mut h = mini();
        send(&mut h, P, 200, "m3", "a", at(0, 1));
        mini_final(&mut h, &[]);
        flags(h, &spec(1), "M6", "inconsistent-offsets");
    }

    #[test]
    fn m6_a_final_read_with_a_hole_or_a_message_nobody_sent() {
        let mut h = mini();
        finals(&mut h, vec![stored(&[(0, "m1", "a"), (1, "m2", "a"), (3, "m2", "a")])]);
        flags(h, &spec(1), "M6", "inconsistent-offsets");
        let mut h = mini();
        mini_final(&mut h, &[(2, "ghost", "a")]);
        flags(h, &spec(1), "M6", "inconsistent-offsets");
    }

    /// A send of `id` with key `key` (tag "a").
    fn send_keyed(h: &mut History, t: u64, id: &str, key: &str, end: End) {
        let call = Call::Send {
            topic: T.into(),
            tag: "a".into(),
            keys: vec![key.into()],
            shard: None,
            msg_id: id.into(),
            body: body(id),
            back: None,
        };
        h.op(P, t, t + 5, call, end);
    }

    /// `broker`'s answer to a query by `key`: the queues it searched as
    /// (queue, end), and what it found as (queue, offset, msg_id).
    fn query(h: &mut History, t: u64, broker: &str, key: &str, searched: &[(u32, u64)], got: &[(u32, u64, &str)]) {
        let call = Call::QueryKey { broker: broker.into(), topic: T.into(), key: key.into() };
        let found = got
            .iter()
            .map(|&(queue, offset, id)| mqsim_sim::history::Found { queue, offset, msg_id: id.into() })
            .collect();
        let searched = searched.iter().map(|&(queue, end)| mqsim_sim::history::Searched { queue, end }).collect();
        h.op(P1, t, t + 2, call, End::Ok(Ret::QueryKey { searched, found }));
    }

    /// Three keyed sends, acknowledged by broker-0 at queue 0 offsets 0–2.
    fn keyed() -> History {
        let mut h = History::default();
        send_keyed(&mut h, 10, "m1", "k", at(0, 0));
        send_keyed(&mut h, 30, "m2", "k", at(0, 1));
        send_keyed(&mut h, 50, "m3", "k", at(0, 2));
        h
    }

    /// No group subscribes, so only the sends and queries are judged.
    fn keyed_spec() -> Spec {
        Spec { subscriptions: vec![], ..spec(1) }
    }

    fn keyed_final(h: &mut History) {
        finals(h, vec![stored(&[(0, "m1", "a"), (1, "m2", "a"), (2, "m3", "a")])]);
    }

    #[test]
    fn queries_by_key_that_find_everything_below_the_end_they_searched_pass() {
        let mut h = keyed();
        // A broker that searched queue 0 below offset 2 (a zombie, or before
        // m3 was stored) owes m1 and m2 only, whoever acknowledged them.
        query(&mut h, 20, "broker-1", "k", &[(0, 2)], &[(0, 0, "m1"), (0, 1, "m2")]);
        query(&mut h, 60, "broker-0", "k", &[(0, 3)], &[(0, 0, "m1"), (0, 1, "m2"), (0, 2, "m3")]);
        // Queue 0 not searched (its log unreadable, or too many matches): no finding.
        query(&mut h, 70, "broker-0", "k", &[], &[]);
        query(&mut h, 80, "broker-0", "other", &[(0, 3)], &[]);
        keyed_final(&mut h);
        let checked = check(&h.done(), &keyed_spec());
        assert_eq!(checked, Checked::default());
    }

    #[test]
    fn m1_key_query_lost_an_acknowledged_message() {
        let mut h = keyed();
        // broker-1 acknowledged none of them, but searched past all three.
        query(&mut h, 60, "broker-1", "k", &[(0, 3)], &[(0, 0, "m1"), (0, 2, "m3")]);
        keyed_final(&mut h);
        let checked = flags(h, &keyed_spec(), "M1", "key-query-lost");
        assert_eq!(anomalies(&checked), vec![("M1", "key-query-lost".to_string())]);
        assert!(checked.violations[0].detail.contains("m2"));
    }

    #[test]
    fn m6_key_query_phantom() {
        // A message that is not at that offset in the end (a truncated entry).
        let mut h = keyed();
        query(&mut h, 60, "broker-0", "k", &[(0, 4)], &[(0, 0, "m1"), (0, 1, "m2"), (0, 2, "m3"), (0, 3, "m4")]);
        keyed_final(&mut h);
        let checked = flags(h, &keyed_spec(), "M6", "key-query-phantom");
        assert_eq!(anomalies(&checked), vec![("M6", "key-query-phantom".to_string())]);
        // A message sent with other keys.
        let mut h = keyed();
        query(&mut h, 60, "broker-0", "j", &[(0, 3)], &[(0, 1, "m2")]);
        keyed_final(&mut h);
        let checked = flags(h, &keyed_spec(), "M6", "key-query-phantom");
        assert!(checked.violations[0].detail.contains("sent with keys"));
    }

    #[test]
    fn m7_g1a_a_failed_send_delivered() {
        let mut h = mini();
        send(&mut h, P, 200, "m3", "a", End::Fail("Unavailable"));
        poll(&mut h, C, 300, 0, 2, &[(2, "m3", "a")], 3);
        process(&mut h, C, 310, 0, 2, "m3");
        mini_final(&mut h, &[(2, "m3", "a")]);
        flags(h, &spec(1), "M7", "G1a");
        // Found in the final read only.
        let mut h = mini();
        send(&mut h, P, 200, "m3", "b", End::Fail("Unavailable"));
        mini_final(&mut h, &[(2, "m3", "b")]);
        let checked = flags(h, &spec(1), "M7", "G1a");
        assert_eq!(anomalies(&checked), vec![("M7", "G1a".to_string())]);
    }

    #[test]
    fn r1_a_stale_route() {
        let mut h = mini();
        register(&mut h, "broker-0", 1_000, &[0], End::Ok(Ret::Register));
        routes(&mut h, 200_000, &[("broker-0", &[0])]);
        mini_final(&mut h, &[]);
        let checked = flags(h, &spec(1), "R1", "stale-route");
        assert_eq!(anomalies(&checked), vec![("R1", "stale-route".to_string())]);
        // A broker that never registered, or not since the NameServer restarted.
        let mut h = mini();
        register(&mut h, "broker-0", 1_000, &[0], End::Ok(Ret::Register));
        crash(&mut h, 2_000, NS);
        routes(&mut h, 3_000, &[("broker-0", &[0]), ("broker-1", &[1])]);
        mini_final(&mut h, &[]);
        let checked = flags(h, &spec(1), "R1", "stale-route");
        assert_eq!(checked.violations.len(), 2, "{:#?}", checked.violations);
        // A broker that crashed with its registration under way: that message
        // may arrive until the network's longest delay after the crash, no later.
        let mut h = mini();
        register(&mut h, "broker-0", 1_000, &[0], End::Pending);
        crash(&mut h, 1_500, "broker-0");
        routes(&mut h, 127_000, &[("broker-0", &[0])]);
        routes(&mut h, 129_000, &[("broker-0", &[0])]);
        mini_final(&mut h, &[]);
        let checked = flags(h, &spec(1), "R1", "stale-route");
        assert_eq!(checked.violations.len(), 1, "{:#?}", checked.violations);
    }

    #[test]
    fn r1_allows_for_the_nameservers_clock_and_pauses() {
        let mut h = mini();
        register(&mut h, "broker-0", 1_000, &[0], End::Ok(Ret::Register));
        let drift = Fault::ClockDrift { node: NS.into(), ppm: 100_000 };
        h.fault(0, FaultRecord::Start { action: 0, for_ms: 300_000, fault: drift, hit: None });
        routes(&mut h, 136_000, &[("broker-0", &[0])]);
        mini_final(&mut h, &[]);
        assert_eq!(check(&h.done(), &spec(1)), Checked::default());
        // A NameServer frozen for 20 s scans late.
        let mut h = mini();
        register(&mut h, "broker-0", 1_000, &[0], End::Ok(Ret::Register));
        let pause = Fault::Pause { node: NS.into() };
        h.fault(100_000, FaultRecord::Start { action: 0, for_ms: 20_000, fault: pause, hit: None });
        routes(&mut h, 145_000, &[("broker-0", &[0])]);
        mini_final(&mut h, &[]);
        assert_eq!(check(&h.done(), &spec(1)), Checked::default());
    }

    #[test]
    fn r1_a_missing_route() {
        let mut h = mini();
        register(&mut h, "broker-0", 1_000, &[0], End::Ok(Ret::Register));
        register(&mut h, "broker-1", 1_000, &[1], End::Ok(Ret::Register));
        routes(&mut h, 60_000, &[("broker-1", &[1])]);
        mini_final(&mut h, &[]);
        let checked = flags(h, &spec(1), "R1", "missing-route");
        assert_eq!(anomalies(&checked), vec![("R1", "missing-route".to_string())]);
        // A later registration (outcome unknown) without the topic may have withdrawn it.
        let mut h = mini();
        register(&mut h, "broker-0", 1_000, &[0], End::Ok(Ret::Register));
        register(&mut h, "broker-0", 31_000, &[], End::Info);
        routes(&mut h, 60_000, &[]);
        mini_final(&mut h, &[]);
        assert_eq!(check(&h.done(), &spec(1)), Checked::default());
    }
}
