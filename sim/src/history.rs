//! The history of a run, as JSON Lines: client operations (invoke / ok / fail /
//! info), injected faults and protocol events, each stamped with simulated time.

use madsim::time::Instant;
use mqsim_core::env::{Event, EventSink};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Invoke,
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// The outcome is unknown (a timeout).
    Info,
    Fault,
    Event,
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Simulated time since the run began, in microseconds.
    pub t: u64,
    pub node: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(flatten)]
    pub data: Map<String, Value>,
}

impl Record {
    pub fn str(&self, field: &str) -> Option<&str> {
        self.data.get(field).and_then(Value::as_str)
    }

    pub fn u64(&self, field: &str) -> Option<u64> {
        self.data.get(field).and_then(Value::as_u64)
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
}

/// Identifies an invoked operation until it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpId(pub u64);

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => Map::from_iter([("value".to_string(), other)]),
    }
}

impl History {
    pub fn new(start: Instant) -> History {
        History { start, state: Mutex::default() }
    }

    pub fn now_us(&self) -> u64 {
        madsim::time::Instant::now().duration_since(self.start).as_micros() as u64
    }

    fn push(&self, node: &str, kind: Kind, data: Map<String, Value>) {
        let t = self.now_us();
        self.state.lock().expect("history").records.push(Record { t, node: node.to_string(), kind, data });
    }

    /// Records the start of operation `op` with its arguments (a JSON object).
    pub fn invoke(&self, node: &str, op: &str, args: Value) -> OpId {
        let id = {
            let mut st = self.state.lock().expect("history");
            st.next_op += 1;
            st.next_op
        };
        let mut data = Map::from_iter([("id".to_string(), id.into()), ("op".to_string(), op.into())]);
        data.extend(object(args));
        self.push(node, Kind::Invoke, data);
        OpId(id)
    }

    /// Records how operation `id` ended (`Ok`, `Fail` or `Info`) with its results.
    pub fn complete(&self, node: &str, id: OpId, op: &str, kind: Kind, result: Value) {
        let mut data = Map::from_iter([("id".to_string(), id.0.into()), ("op".to_string(), op.into())]);
        data.extend(object(result));
        self.push(node, kind, data);
    }

    pub fn fault(&self, phase: &str, details: Value) {
        let mut data = Map::from_iter([("phase".to_string(), phase.into())]);
        data.extend(object(details));
        self.push("nemesis", Kind::Fault, data);
    }

    pub fn event(&self, node: &str, event: &Event) {
        let data = object(serde_json::to_value(event).expect("event to json"));
        self.push(node, Kind::Event, data);
    }

    pub fn records(&self) -> Vec<Record> {
        self.state.lock().expect("history").records.clone()
    }
}

/// Writes records as JSON Lines.
pub fn to_jsonl(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r).expect("record to json"));
        out.push('\n');
    }
    out
}

/// A node's event sink: events go to the history under the node's name.
pub struct NodeEvents {
    pub node: String,
    pub history: Arc<History>,
}

impl EventSink for NodeEvents {
    fn event(&self, event: Event) {
        tracing::debug!(node = %self.node, ?event, "event");
        self.history.event(&self.node, &event);
    }
}
