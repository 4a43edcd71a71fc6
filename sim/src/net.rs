//! The fault-filtering transport: bytes between named nodes over madsim's
//! network, with partitions (symmetric and one-way) and per-kind rules that
//! drop, delay, duplicate or reorder messages by source, destination and kind.

use futures::future::BoxFuture;
use madsim::net::Endpoint;
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
    rules: Vec<FilterRule>,
    /// The run's seed; each sender's fault draws come from its own stream of it.
    seed: u64,
    rngs: BTreeMap<String, Random>,
    stats: NetStats,
}

impl State {
    fn blocked(&self, from: &str, to: &str) -> bool {
        self.blocks.iter().any(|b| b.from.contains(from) && b.to.contains(to))
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

    /// Replaces the partitions and rules in force.
    pub fn set_faults(&self, blocks: Vec<Block>, rules: Vec<FilterRule>) {
        let mut st = self.lock();
        st.blocks = blocks;
        st.rules = rules;
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats.clone()
    }

    /// When (after how long) each copy of a message is handed to madsim; empty when lost.
    fn plan(&self, from: &str, to: &str, kind: MsgKind, bytes: u64) -> (Option<SocketAddr>, Vec<Duration>) {
        let mut st = self.lock();
        st.stats.sent += 1;
        st.stats.bytes += bytes;
        let Some(addr) = st.addrs.get(to).copied() else { return (None, vec![]) };
        if st.blocked(from, to) {
            st.stats.blocked += 1;
            return (None, vec![]);
        }
        let copies = vec![Duration::ZERO];
        let State { rules, rngs, seed, stats, .. } = &mut *st;
        let mut matching = rules.iter().filter(|r| r.matches(from, to, kind)).peekable();
        if matching.peek().is_none() {
            return (Some(addr), copies);
        }
        let random = rngs.entry(from.to_string()).or_insert_with(|| Random::derived(*seed, &format!("network/{from}")));
        random
            .with(|rng| Network::apply(matching, rng, stats, copies))
            .map_or((None, vec![]), |copies| (Some(addr), copies))
    }

    /// What the matching rules do to one message: its copies' delays, or `None` when lost.
    fn apply<'a>(
        rules: impl Iterator<Item = &'a FilterRule>,
        rng: &mut ChaCha8Rng,
        stats: &mut NetStats,
        mut copies: Vec<Duration>,
    ) -> Option<Vec<Duration>> {
        for rule in rules {
            match rule.effect {
                Effect::Drop { percent } => {
                    if rng.gen_range(0..100) < percent {
                        stats.dropped += 1;
                        return None;
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
        Some(copies)
    }
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

    /// The sender's name of a datagram that arrived from `from`, or `None`
    /// when it is lost: a partition that began while it was in flight also loses it.
    fn admit(&self, from: SocketAddr) -> Option<String> {
        let mut st = self.network.lock();
        let sender = st.names.get(&from.ip())?;
        if st.blocked(sender, &self.name) {
            st.stats.blocked += 1;
            return None;
        }
        let sender = sender.clone();
        st.stats.delivered += 1;
        Some(sender)
    }
}

impl Transport for SimTransport {
    fn send(&self, to: &str, kind: MsgKind, bytes: Vec<u8>) -> BoxFuture<'_, ()> {
        let (addr, copies) = self.network.plan(&self.name, to, kind, bytes.len() as u64);
        Box::pin(async move {
            let Some(addr) = addr else { return };
            let last = copies.len().saturating_sub(1);
            let mut bytes = Some(bytes);
            for (i, delay) in copies.into_iter().enumerate() {
                // The last copy takes the bytes; only duplicates are cloned.
                let copy = if i == last { bytes.take().unwrap_or_default() } else { bytes.clone().unwrap_or_default() };
                let payload = Box::new(copy);
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
                let Ok(bytes) = payload.downcast::<Vec<u8>>() else { continue };
                if let Some(sender) = self.admit(from) {
                    return (sender, *bytes);
                }
            }
        })
    }
}
