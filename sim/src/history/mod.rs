//! The history of a run: client operations (invoke, then ok / fail / info),
//! injected faults, protocol events and coverage probes, each stamped with
//! simulated time and a node. Records are typed; written out they are JSON
//! Lines (the schema is in `docs/history.md`), one object per record with its
//! kind in `type`.

mod ops;

pub use ops::{
    Call, Found, LocalState, Moved, Polled, QueueRef, Ret, Route, Searched, Segment, SentBack, Stored, TxHalf,
};

use crate::disk::CrashLoss;
use crate::nemesis::Fault;
use crate::trace::Message;
use madsim::time::Instant;
use mqsim_core::env::{Event, EventSink};
use mqsim_core::probe::Probe;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Simulated time since the run began, in microseconds.
    pub t: u64,
    pub node: String,
    #[serde(flatten)]
    pub body: Body,
}

/// What a record says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// A client operation began.
    Invoke {
        id: u64,
        #[serde(flatten)]
        call: Call,
    },
    /// It succeeded, with these results.
    Ok {
        id: u64,
        #[serde(flatten)]
        ret: Ret,
    },
    /// It certainly did not take effect.
    Fail {
        id: u64,
        error: String,
    },
    /// Its outcome is unknown (a timeout, say): it may take effect, even later.
    Info {
        id: u64,
        error: String,
    },
    Fault(FaultRecord),
    Event(Event),
    /// The node reached this coverage probe (recorded the first time per node).
    Probe {
        probe: Probe,
    },
    /// The node sent this message (only in a run with its message trace on).
    /// Boxed: it is large, and every record of every run would pay for it.
    Message(Box<Message>),
}

/// What the nemesis did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum FaultRecord {
    /// Schedule action `action` began (and holds for `for_ms`).
    Start {
        action: usize,
        for_ms: u64,
        fault: Fault,
        /// Where an at-rest bit flip landed (`disk_corrupt` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hit: Option<Hit>,
    },
    End {
        action: usize,
        fault: Fault,
    },
    /// A node lost power: what each of its files lost.
    Crash {
        target: String,
        lost: Vec<CrashLoss>,
        /// Set when the crash was aimed at an fsync of this file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        during_fsync_of: Option<String>,
    },
}

/// Where a bit flipped at rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub file: String,
    pub offset: u64,
}

/// The kind of a record, for filtering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
    Fault,
    Event,
    Probe,
    Message,
}

impl Record {
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Invoke { .. } => Kind::Invoke,
            Body::Ok { .. } => Kind::Ok,
            Body::Fail { .. } => Kind::Fail,
            Body::Info { .. } => Kind::Info,
            Body::Fault(_) => Kind::Fault,
            Body::Event(_) => Kind::Event,
            Body::Probe { .. } => Kind::Probe,
            Body::Message(_) => Kind::Message,
        }
    }

    /// The operation id of an invocation or completion.
    pub fn op_id(&self) -> Option<u64> {
        match self.body {
            Body::Invoke { id, .. } | Body::Ok { id, .. } | Body::Fail { id, .. } | Body::Info { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// The recorder, shared by every node of a run.
pub struct History {
    start: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    records: Vec<Record>,
    next_op: u64,
    /// Hits per probe, and the (probe, node) pairs already recorded.
    probes: BTreeMap<Probe, u64>,
    probes_recorded: BTreeSet<(Probe, String)>,
}

/// Identifies an invoked operation until it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpId(pub u64);

impl History {
    pub fn new(start: Instant) -> History {
        History { start, state: Mutex::default() }
    }

    pub fn now_us(&self) -> u64 {
        madsim::time::Instant::now().duration_since(self.start).as_micros() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("history")
    }

    fn push(&self, node: &str, body: Body) {
        let t = self.now_us();
        self.lock().records.push(Record { t, node: node.to_string(), body });
    }

    /// Records the start of an operation.
    pub fn invoke(&self, node: &str, call: Call) -> OpId {
        let t = self.now_us();
        let mut st = self.lock();
        st.next_op += 1;
        let id = st.next_op;
        st.records.push(Record { t, node: node.to_string(), body: Body::Invoke { id, call } });
        OpId(id)
    }

    /// Operation `id` succeeded.
    pub fn ok(&self, node: &str, id: OpId, ret: Ret) {
        self.push(node, Body::Ok { id: id.0, ret });
    }

    /// Operation `id` certainly did not take effect.
    pub fn fail(&self, node: &str, id: OpId, error: impl std::fmt::Debug) {
        self.push(node, Body::Fail { id: id.0, error: format!("{error:?}") });
    }

    /// Operation `id` may or may not take effect.
    pub fn info(&self, node: &str, id: OpId, error: impl std::fmt::Debug) {
        self.push(node, Body::Info { id: id.0, error: format!("{error:?}") });
    }

    pub fn fault(&self, record: FaultRecord) {
        self.push("nemesis", Body::Fault(record));
    }

    pub fn event(&self, node: &str, event: Event) {
        self.push(node, Body::Event(event));
    }

    /// Counts a probe hit; its first hit on each node is recorded.
    pub fn probe(&self, node: &str, probe: Probe) {
        let t = self.now_us();
        let mut st = self.lock();
        *st.probes.entry(probe).or_default() += 1;
        if !st.probes_recorded.contains(&(probe, node.to_string())) {
            st.probes_recorded.insert((probe, node.to_string()));
            st.records.push(Record { t, node: node.to_string(), body: Body::Probe { probe } });
        }
    }

    /// Hits per probe reached so far, by name.
    pub fn probe_counts(&self) -> BTreeMap<String, u64> {
        self.lock().probes.iter().map(|(p, n)| (p.name().to_string(), *n)).collect()
    }

    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// Runs `f` over the records so far, without copying them.
    pub fn scan<T>(&self, f: impl FnOnce(&[Record]) -> T) -> T {
        f(&self.lock().records)
    }

    /// The records so far, taken out: for the end of a run, when nothing records any more.
    pub fn take(&self) -> Vec<Record> {
        std::mem::take(&mut self.lock().records)
    }
}

/// The history with the message trace merged in by time: a message is
/// placed after every record of the same or an earlier time.
pub fn with_trace(records: &[Record], trace: Vec<(u64, String, Message)>) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len() + trace.len());
    let mut messages = trace.into_iter().peekable();
    for r in records {
        while let Some((t, ..)) = messages.peek() {
            if *t >= r.t {
                break;
            }
            let (t, node, m) = messages.next().expect("peeked");
            out.push(Record { t, node, body: Body::Message(Box::new(m)) });
        }
        out.push(r.clone());
    }
    out.extend(messages.map(|(t, node, m)| Record { t, node, body: Body::Message(Box::new(m)) }));
    out
}

/// Writes records as JSON Lines.
pub fn to_jsonl(records: &[Record]) -> String {
    let mut out = Vec::with_capacity(records.len() * 120);
    for r in records {
        serde_json::to_writer(&mut out, r).expect("record to json");
        out.push(b'\n');
    }
    String::from_utf8(out).expect("json is utf-8")
}

/// Reads JSON Lines written by [`to_jsonl`]; the first line that is not a
/// record is an error naming it.
pub fn from_jsonl(text: &str) -> Result<Vec<Record>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// A node's event sink: events and probes go to the history under the node's name.
pub struct NodeEvents {
    pub node: String,
    pub history: Arc<History>,
}

impl EventSink for NodeEvents {
    fn event(&self, event: Event) {
        tracing::debug!(node = %self.node, ?event, "event");
        self.history.event(&self.node, event);
    }

    fn probe(&self, probe: Probe) {
        tracing::trace!(node = %self.node, probe = probe.name(), "probe");
        self.history.probe(&self.node, probe);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqsim_core::env::LedgerEvent;
    use mqsim_core::ledger::{LedgerMeta, State};
    use mqsim_core::meta::Stat;

    #[test]
    fn records_round_trip_through_json_lines() {
        let stat = Stat { czxid: 3, mzxid: 5, version: 2, owner: Some(1) };
        let meta = LedgerMeta {
            state: State::Closed,
            last_entry: 7,
            qw: 2,
            qa: 2,
            ensembles: [(0, vec!["bookie-0".into(), "bookie-1".into()]), (4, vec!["bookie-2".into()])].into(),
        };
        let body = |b| Record { t: 12, node: "n".into(), body: b };
        let records = vec![
            body(Body::Invoke { id: 1, call: Call::Get { key: "/k/1".into() } }),
            body(Body::Ok { id: 1, ret: Ret::Get { value: Some("v".into()), stat: Some(stat.clone()), zxid: 9 } }),
            body(Body::Ok { id: 2, ret: Ret::Get { value: None, stat: None, zxid: 9 } }),
            body(Body::Ok { id: 3, ret: Ret::ReadMeta { version: 4, meta } }),
            body(Body::Invoke { id: 4, call: Call::ListLedgers }),
            body(Body::Info { id: 4, error: "Timeout".into() }),
            body(Body::Fault(FaultRecord::Crash { target: "b".into(), lost: vec![], during_fsync_of: None })),
            body(Body::Fault(FaultRecord::Start {
                action: 0,
                for_ms: 10,
                fault: Fault::Crash { node: "b".into() },
                hit: None,
            })),
            body(Body::Event(Event::Ledger(LedgerEvent::Fenced { ledger: 1, lac: 3 }))),
            body(Body::Event(Event::SessionExpired { session: 4 })),
            body(Body::Probe { probe: Probe::WriterFenced }),
        ];
        let text = to_jsonl(&records);
        assert_eq!(from_jsonl(&text).unwrap(), records, "{text}");
        assert!(text
            .starts_with("{\"t\":12,\"node\":\"n\",\"type\":\"invoke\",\"id\":1,\"op\":\"get\",\"key\":\"/k/1\"}\n"));
        assert!(from_jsonl("{\"t\":1,\"node\":\"n\",\"type\":\"nonsense\"}").unwrap_err().starts_with("line 1:"));
    }
}
