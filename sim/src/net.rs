//! The fault-filtering transport: bytes between named nodes over madsim's
//! network, with partitions (symmetric and one-way) and per-kind rules that
//! drop, delay, duplicate or reorder messages by source, destination and kind.

use crate::trace::{Lost, Message, Sent, Tracer};
use futures::future::BoxFuture;
use madsim::net::Endpoint;
use madsim::time::Instant;
use mqsim_core::env::{Kind, MsgKind, Transport};
use mqsim_core::random::Random;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const PORT: u16 = 7000;
const TAG: u64 = 0;

/// What a filter rule does to the messages it matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    Drop {
        percent: u8,
    },
    Delay {
        ms: u64,
    },
    Duplicate {
        percent: u8,
    },
    /// A random extra delay of up to `max_ms` per message, so messages overtake each other.
    Reorder {
        max_ms: u64,
    },
}

/// Matches messages by source, destination, kind and direction; `None` matches all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// `Some(true)`: only replies; `Some(false)`: only requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<bool>,
    #[serde(flatten)]
    pub effect: Effect,
}

impl FilterRule {
    fn matches(&self, from: &str, to: &str, kind: MsgKind) -> bool {
        self.from.as_deref().is_none_or(|f| f == from)
            && self.to.as_deref().is_none_or(|t| t == to)
            && self.kind.is_none_or(|k| k == kind.kind)
            && self.reply.is_none_or(|r| r == kind.reply)
    }
}

/// Messages from any node of `from` to any node of `to` are lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub from: BTreeSet<String>,
    pub to: BTreeSet<String>,
    /// The schedule action this partition belongs to.
    pub action: usize,
}

/// What the transport hands madsim: a message's bytes, with its sequence
/// number for the trace (numbered whether or not a trace is kept).
struct Datagram {
    seq: u64,
    bytes: Vec<u8>,
}

/// Counters of what the network did, for reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NetStats {
    /// Messages nodes sent, and their bytes.
    pub sent: u64,
    pub bytes: u64,
    /// Copies handed to a node's receive loop (duplicates count twice).
    pub delivered: u64,
    /// Lost to a partition (at send or in flight), or to a drop rule.
    pub blocked: u64,
    pub dropped: u64,
    pub delayed: u64,
    pub duplicated: u64,
}

/// The network's shared state: who is where, and which faults are in force.
pub struct Network {
    state: Mutex<State>,
}

struct State {
    addrs: BTreeMap<String, SocketAddr>,
    names: BTreeMap<IpAddr, String>,
    blocks: Vec<Block>,
    /// Message rules in force, each with its schedule action.
    rules: Vec<(usize, FilterRule)>,
    /// The run's seed; each sender's fault draws come from its own stream of it.
    seed: u64,
    rngs: BTreeMap<String, Random>,
    stats: NetStats,
    /// The message trace and the run's start, when asked for.
    trace: Option<(Instant, Tracer)>,
}

impl State {
    /// The action of the partition that cuts `from` off from `to`, if any.
    fn blocked(&self, from: &str, to: &str) -> Option<usize> {
        self.blocks.iter().find(|b| b.from.contains(from) && b.to.contains(to)).map(|b| b.action)
    }
}

impl Network {
    pub fn new(seed: u64) -> Network {
        Network {
            state: Mutex::new(State {
                addrs: BTreeMap::new(),
                names: BTreeMap::new(),
                blocks: Vec::new(),
                rules: Vec::new(),
                seed,
                rngs: BTreeMap::new(),
                stats: NetStats::default(),
                trace: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("network lock")
    }

    pub fn register(&self, name: &str, ip: IpAddr) {
        let mut st = self.lock();
        st.addrs.insert(name.to_string(), SocketAddr::new(ip, PORT));
        st.names.insert(ip, name.to_string());
    }

    /// Keeps a trace of every message from now on; `start` is the run's start.
    pub fn trace(&self, start: Instant) {
        let mut st = self.lock();
        let first = st.stats.sent + 1;
        st.trace = Some((start, Tracer::new(first)));
    }

    /// The trace kept so far, taken out: (send time, sender, message) in send order.
    pub fn take_trace(&self) -> Vec<(u64, String, Message)> {
        self.lock().trace.take().map(|(_, tracer)| tracer.finish()).unwrap_or_default()
    }

    /// Replaces the partitions and rules in force.
    pub fn set_faults(&self, blocks: Vec<Block>, rules: Vec<(usize, FilterRule)>) {
        let mut st = self.lock();
        st.blocks = blocks;
        st.rules = rules;
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats.clone()
    }

    /// The sequence number of a message, and when (after how long) each of
    /// its copies is handed to madsim; no copies when it is lost.
    fn plan(&self, from: &str, to: &str, kind: MsgKind, bytes: &[u8]) -> (u64, Option<SocketAddr>, Vec<Duration>) {
        let mut st = self.lock();
        st.stats.sent += 1;
        st.stats.bytes += bytes.len() as u64;
        // Messages are numbered by the count sent so far.
        let seq = st.stats.sent;
        let (addr, fate) = match st.addrs.get(to).copied() {
            None => (None, Err(None)),
            Some(addr) => match st.blocked(from, to) {
                Some(action) => {
                    st.stats.blocked += 1;
                    (Some(addr), Err(Some(("partition", action))))
                }
                None => (Some(addr), st.apply_rules(from, to, kind)),
            },
        };
        if let Some((start, tracer)) = &mut st.trace {
            let t = Instant::now().duration_since(*start).as_micros() as u64;
            let (copies, delayed_ms, lost) = match &fate {
                Ok(copies) => (copies.len(), copies[0].as_millis() as u64, None),
                Err(why) => {
                    let (by, action) = why.map_or(("no such node", None), |(by, a)| (by, Some(a)));
                    (0, 0, Some(Lost { at: Some(t), by: by.into(), action }))
                }
            };
            let (kind, reply) = (kind.kind.name(), kind.reply);
            tracer.sent(seq, Sent { t, from, to, kind, reply, copies, delayed_ms, lost }, bytes);
        }
        match fate {
            Ok(copies) => (seq, addr, copies),
            Err(_) => (seq, None, vec![]),
        }
    }
}

impl State {
    /// What the message rules in force do to one message: its copies'
    /// delays, or the action of the rule that dropped it.
    fn apply_rules(
        &mut self,
        from: &str,
        to: &str,
        kind: MsgKind,
    ) -> Result<Vec<Duration>, Option<(&'static str, usize)>> {
        let copies = vec![Duration::ZERO];
        let State { rules, rngs, seed, stats, .. } = self;
        let mut matching = rules.iter().filter(|(_, r)| r.matches(from, to, kind)).peekable();
        if matching.peek().is_none() {
            return Ok(copies);
        }
        let random = rngs.entry(from.to_string()).or_insert_with(|| Random::derived(*seed, &format!("network/{from}")));
        random.with(|rng| apply(matching, rng, stats, copies)).map_err(|action| Some(("drop rule", action)))
    }
}

/// What the matching rules do to one message: its copies' delays, or the
/// action of the rule that dropped it.
fn apply<'a>(
    rules: impl Iterator<Item = &'a (usize, FilterRule)>,
    rng: &mut ChaCha8Rng,
    stats: &mut NetStats,
    mut copies: Vec<Duration>,
) -> Result<Vec<Duration>, usize> {
    for (action, rule) in rules {
        match rule.effect {
            Effect::Drop { percent } => {
                if rng.gen_range(0..100) < percent {
                    stats.dropped += 1;
                    return Err(*action);
                }
            }
            Effect::Delay { ms } => {
                stats.delayed += 1;
                copies.iter_mut().for_each(|d| *d += Duration::from_millis(ms));
            }
            Effect::Duplicate { percent } => {
                if rng.gen_range(0..100) < percent {
                    stats.duplicated += 1;
                    let extra = copies[0] + Duration::from_millis(rng.gen_range(0..50));
                    copies.push(extra);
                }
            }
            Effect::Reorder { max_ms } => {
                stats.delayed += 1;
                copies.iter_mut().for_each(|d| *d += Duration::from_millis(rng.gen_range(0..=max_ms)));
            }
        }
    }
    Ok(copies)
}

/// One node's transport. Created inside the node, so it dies with it.
pub struct SimTransport {
    name: String,
    endpoint: Endpoint,
    network: Arc<Network>,
}

impl SimTransport {
    pub async fn bind(name: &str, ip: IpAddr, network: Arc<Network>) -> SimTransport {
        let endpoint = Endpoint::bind(SocketAddr::new(ip, PORT)).await.expect("bind node endpoint");
        SimTransport { name: name.to_string(), endpoint, network }
    }

    /// The sender's name of message `seq` that arrived from `from`, or `None`
    /// when it is lost: a partition that began while it was in flight also loses it.
    fn admit(&self, from: SocketAddr, seq: u64) -> Option<String> {
        let mut st = self.network.lock();
        let sender = st.names.get(&from.ip())?;
        let blocked = st.blocked(sender, &self.name);
        let sender = sender.clone();
        if let Some((start, tracer)) = &mut st.trace {
            let t = Instant::now().duration_since(*start).as_micros() as u64;
            match blocked {
                Some(action) => {
                    tracer.lost(seq, Lost { at: Some(t), by: "partition in flight".into(), action: Some(action) })
                }
                None => tracer.received(seq, t),
            }
        }
        if blocked.is_some() {
            st.stats.blocked += 1;
            return None;
        }
        st.stats.delivered += 1;
        Some(sender)
    }
}

impl Transport for SimTransport {
    fn send(&self, to: &str, kind: MsgKind, bytes: Vec<u8>) -> BoxFuture<'_, ()> {
        let (seq, addr, copies) = self.network.plan(&self.name, to, kind, &bytes);
        Box::pin(async move {
            let Some(addr) = addr else { return };
            let last = copies.len().saturating_sub(1);
            let mut bytes = Some(bytes);
            for (i, delay) in copies.into_iter().enumerate() {
                // The last copy takes the bytes; only duplicates are cloned.
                let copy = if i == last { bytes.take().unwrap_or_default() } else { bytes.clone().unwrap_or_default() };
                let payload = Box::new(Datagram { seq, bytes: copy });
                if delay.is_zero() {
                    let _ = self.endpoint.send_to_raw(addr, TAG, payload).await;
                } else {
                    let ep = self.endpoint.clone();
                    madsim::task::spawn(async move {
                        madsim::time::sleep(delay).await;
                        let _ = ep.send_to_raw(addr, TAG, payload).await;
                    });
                }
            }
        })
    }

    /// The next datagram. Its one caller (the node's RPC loop) never cancels
    /// it mid-receive, so no datagram taken from the endpoint is lost.
    fn recv(&self) -> BoxFuture<'_, (String, Vec<u8>)> {
        Box::pin(async move {
            loop {
                let Ok((payload, from)) = self.endpoint.recv_from_raw(TAG).await else {
                    // The endpoint is gone only because the node is going away.
                    return futures::future::pending().await;
                };
                let Ok(datagram) = payload.downcast::<Datagram>() else { continue };
                if let Some(sender) = self.admit(from, datagram.seq) {
                    return (sender, datagram.bytes);
                }
            }
        })
    }
}
