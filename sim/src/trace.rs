//! The message trace of a run, kept only when asked for: every message the
//! transport carried, with when it was sent and received (or how it was
//! lost), and a short summary of what it said. It is an extra beside the
//! history: recording it draws no randomness and schedules nothing, so a run
//! with the trace on has the same history as one without.

use mqsim_core::protocols::{visit_body, Visit};
use mqsim_core::rpc::{frame, Frame};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One message, as the history records it: sent at the record's time by its node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub to: String,
    /// The request's kind (`Add`, `Fence`, …); a reply has its request's kind.
    pub kind: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub reply: bool,
    /// The caller's incarnation and its RPC call id, which a request and its reply share.
    pub caller: u64,
    pub call: u64,
    /// What it said, in a line: `Add ledger=34 entry=2 lac=1`.
    pub summary: String,
    /// What it concerns, for following one thread: `ledger 34`, `key k7`, `msg …`, `queue t/1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub threads: Vec<String>,
    /// How many copies the network made (2 when duplicated).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub copies: u32,
    /// The extra delay the network gave the first copy, in milliseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delayed_ms: u64,
    /// When each copy reached the receiver, in microseconds since the run began.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub received: Vec<u64>,
    /// Why a copy never arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<Lost>,
}

/// How a message was lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// When, if the network knows (not for a receiver that was down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    /// `partition`, `partition in flight`, `drop rule`, `no such node`, or
    /// `not received` (the receiver was down or the run ended first).
    pub by: String,
    /// The schedule action whose fault lost it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<usize>,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn one() -> u32 {
    1
}
fn is_one(n: &u32) -> bool {
    *n == 1
}
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A message as the transport saw it leave.
pub struct Sent<'a> {
    pub t: u64,
    pub from: &'a str,
    pub to: &'a str,
    pub kind: &'a str,
    pub reply: bool,
    /// Copies handed to madsim (0 when lost at once).
    pub copies: usize,
    pub delayed_ms: u64,
    pub lost: Option<Lost>,
}

/// The trace being recorded: messages in the order they were sent, with
/// their bytes. They are decoded only when the trace is taken, after the
/// run: decoding builds JSON maps, and nothing of the kind may happen while
/// the simulation runs (a map's hasher would draw from the run's keys).
#[derive(Default)]
pub struct Tracer {
    /// (send time, sender, message, its bytes), indexed by sequence number − `first`.
    sent: Vec<(u64, String, Message, Vec<u8>)>,
    /// The sequence number of the first message traced.
    first: u64,
}

impl Tracer {
    pub fn new(first: u64) -> Tracer {
        Tracer { first, ..Tracer::default() }
    }

    /// Message `seq` left its sender with these bytes.
    pub fn sent(&mut self, seq: u64, sent: Sent, bytes: &[u8]) {
        let message = Message {
            to: sent.to.to_string(),
            kind: sent.kind.to_string(),
            reply: sent.reply,
            caller: 0,
            call: 0,
            summary: String::new(),
            threads: Vec::new(),
            copies: sent.copies.max(1) as u32,
            delayed_ms: sent.delayed_ms,
            received: Vec::new(),
            lost: sent.lost,
        };
        debug_assert_eq!(seq, self.first + self.sent.len() as u64);
        self.sent.push((sent.t, sent.from.to_string(), message, bytes.to_vec()));
    }

    fn get(&mut self, seq: u64) -> Option<&mut Message> {
        let i = seq.checked_sub(self.first)? as usize;
        self.sent.get_mut(i).map(|(_, _, m, _)| m)
    }

    /// A copy of message `seq` reached its receiver at `t`.
    pub fn received(&mut self, seq: u64, t: u64) {
        if let Some(m) = self.get(seq) {
            m.received.push(t);
        }
    }

    /// A copy of message `seq` was lost in flight.
    pub fn lost(&mut self, seq: u64, lost: Lost) {
        if let Some(m) = self.get(seq) {
            m.lost.get_or_insert(lost);
        }
    }

    /// The trace, each message as (send time, sender, message), decoded; copies
    /// that never arrived and were not lost to a fault are marked `not received`.
    pub fn finish(self) -> Vec<(u64, String, Message)> {
        // Calls by (caller incarnation, id): their service and threads, for their replies.
        let mut calls: BTreeMap<(u64, u64), (u8, Vec<String>)> = BTreeMap::new();
        let mut out = Vec::with_capacity(self.sent.len());
        for (t, from, mut m, bytes) in self.sent {
            describe(&bytes, &mut calls, &mut m);
            if m.lost.is_none() && (m.received.len() as u32) < m.copies {
                m.lost = Some(Lost { at: None, by: "not received".into(), action: None });
            }
            out.push((t, from, m));
        }
        out
    }
}

/// Fills in a message's call, summary and threads from its bytes.
fn describe(bytes: &[u8], calls: &mut BTreeMap<(u64, u64), (u8, Vec<String>)>, m: &mut Message) {
    match frame(bytes) {
        Some(Frame::Call { id, caller, service, body }) => {
            let (summary, threads) = body_summary(service, false, body);
            calls.insert((caller, id), (service, threads.clone()));
            (m.caller, m.call, m.summary, m.threads) = (caller, id, summary, threads);
        }
        Some(Frame::Reply { id, caller, body }) => {
            (m.caller, m.call) = (caller, id);
            match calls.get(&(caller, id)) {
                Some((service, call_threads)) => {
                    let (summary, mut threads) = body_summary(*service, true, body);
                    threads.extend(call_threads.iter().cloned());
                    threads.sort();
                    threads.dedup();
                    (m.summary, m.threads) = (summary, threads);
                }
                None => m.summary = "reply to an untraced call".into(),
            }
        }
        Some(Frame::Notify { caller, service, body }) => {
            let (summary, threads) = body_summary(service, false, body);
            (m.caller, m.summary, m.threads) = (caller, format!("one-way {summary}"), threads);
        }
        Some(Frame::Stale { id, caller, callee }) => {
            (m.caller, m.call) = (caller, id);
            m.threads = calls.get(&(caller, id)).map(|(_, t)| t.clone()).unwrap_or_default();
            m.summary = format!("Stale: not executed, callee restarted (incarnation {callee:x})");
        }
        None => m.summary = format!("undecodable frame of {} bytes", bytes.len()),
    }
}

/// The summary and threads of a request or response body.
fn body_summary(service: u8, reply: bool, body: &[u8]) -> (String, Vec<String>) {
    struct ToJson(Option<Value>);
    impl Visit for ToJson {
        fn visit<T: Serialize>(&mut self, value: &T) {
            self.0 = serde_json::to_value(value).ok();
        }
    }
    let mut json = ToJson(None);
    if !visit_body(service, reply, body, &mut json) {
        return (format!("undecodable body of service {service}"), vec![]);
    }
    let mut value = json.0.unwrap_or(Value::Null);
    decode_ledger_meta(&mut value);
    let mut threads = Vec::new();
    collect_threads(None, &value, &mut threads);
    threads.sort();
    threads.dedup();
    (summarize(&value), threads)
}

/// Replaces the bytes a metadata write puts at a ledger's path with the
/// ledger metadata they encode, so a summary shows `state=Closed last_entry=1`.
fn decode_ledger_meta(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let at_ledger = map.get("path").and_then(Value::as_str).and_then(ledger_of_path).is_some();
            if at_ledger {
                let bytes: Option<Vec<u8>> = map
                    .get("value")
                    .and_then(Value::as_array)
                    .and_then(|items| items.iter().map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect());
                let meta = bytes.and_then(|b| mqsim_core::ledger::decode_meta(&b));
                if let Some(meta) = meta.and_then(|m| serde_json::to_value(m).ok()) {
                    map.remove("value");
                    map.insert("meta".into(), meta);
                }
            }
            map.values_mut().for_each(decode_ledger_meta);
        }
        Value::Array(items) => items.iter_mut().for_each(decode_ledger_meta),
        _ => {}
    }
}

/// Fields that are bytes or checksums: a summary names their size at most.
const OPAQUE: &[&str] = &["payload", "body", "value", "digest"];
/// A summary stops here.
const MAX_SUMMARY: usize = 160;
/// Lists longer than this are summarized by their length.
const MAX_LIST: usize = 3;

/// A serde value in one line: the enum variant's name, then its fields as `name=value`.
pub fn summarize(v: &Value) -> String {
    let mut out = String::new();
    write_value(None, v, &mut out);
    let out = out.trim().to_string();
    match out.char_indices().nth(MAX_SUMMARY) {
        Some((cut, _)) => format!("{}…", &out[..cut]),
        None => out,
    }
}

fn write_value(name: Option<&str>, v: &Value, out: &mut String) {
    let sep = |out: &mut String| {
        if !out.is_empty() && !out.ends_with(' ') && !out.ends_with('(') {
            out.push(' ');
        }
    };
    match v {
        // An enum variant with data: `Name` then its fields.
        Value::Object(map) if map.len() == 1 && map.keys().all(|k| k.starts_with(char::is_uppercase)) => {
            let (variant, inner) = map.iter().next().expect("one entry");
            sep(out);
            if let Some(name) = name {
                out.push_str(name);
                out.push('=');
            }
            out.push_str(variant);
            write_value(None, inner, out);
        }
        Value::Object(map) => {
            for (k, v) in map {
                write_value(Some(k), v, out);
            }
        }
        Value::Array(items) if name.is_some_and(|n| OPAQUE.contains(&n)) || items.iter().all(Value::is_number) => {
            if name.is_some_and(|n| OPAQUE.contains(&n)) || items.len() > MAX_LIST * 3 {
                sep(out);
                out.push_str(&format!("{}=<{} bytes>", name.unwrap_or("data"), items.len()));
            } else {
                sep(out);
                let list: Vec<String> = items.iter().map(Value::to_string).collect();
                out.push_str(&format!("{}=[{}]", name.unwrap_or("list"), list.join(",")));
            }
        }
        Value::Array(items) => {
            sep(out);
            out.push_str(&format!("{}=[", name.unwrap_or("list")));
            for (i, item) in items.iter().take(MAX_LIST).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let mut one = String::new();
                write_value(None, item, &mut one);
                out.push_str(one.trim());
            }
            if items.len() > MAX_LIST {
                out.push_str(&format!(", +{} more", items.len() - MAX_LIST));
            }
            out.push(']');
        }
        Value::Null => {}
        Value::String(s) if name.is_some_and(|n| OPAQUE.contains(&n)) => {
            sep(out);
            out.push_str(&format!("{}=<{} chars>", name.unwrap_or("value"), s.len()));
        }
        scalar => {
            if name.is_some_and(|n| n == "digest") {
                return;
            }
            sep(out);
            let text = match scalar {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match name {
                Some(name) => out.push_str(&format!("{name}={text}")),
                None => out.push_str(&text),
            }
        }
    }
}

/// The threads a value concerns: ledgers, keys, message ids and queues, by field name.
pub fn collect_threads(name: Option<&str>, v: &Value, into: &mut Vec<String>) {
    match (name, v) {
        (Some("ledger"), Value::Number(n)) => into.push(format!("ledger {n}")),
        (Some("key"), Value::String(k)) => into.push(format!("key {k}")),
        (Some("msg_id"), Value::String(id)) => into.push(format!("msg {id}")),
        (Some("path"), Value::String(p)) => match ledger_of_path(p) {
            Some(n) => into.push(format!("ledger {n}")),
            // A metadata operation's key is its path.
            None => into.push(format!("key {p}")),
        },
        (Some("keys"), Value::Array(keys)) => {
            into.extend(keys.iter().filter_map(Value::as_str).map(|k| format!("key {k}")));
        }
        (_, Value::Object(map)) => {
            if let (Some(Value::String(topic)), Some(Value::Number(q))) = (map.get("topic"), map.get("queue")) {
                into.push(format!("queue {topic}/{q}"));
            }
            for (k, v) in map {
                collect_threads(Some(k), v, into);
            }
        }
        (_, Value::Array(items)) => {
            for item in items {
                collect_threads(name, item, into);
            }
        }
        _ => {}
    }
}

/// The ledger a metadata path names: `/ledgers/L0000000034` is ledger 34.
fn ledger_of_path(path: &str) -> Option<u64> {
    let rest = path.strip_prefix(mqsim_core::ledger::LEDGERS)?.strip_prefix('/')?;
    let name = rest.split('/').next()?;
    name.strip_prefix('L').unwrap_or(name).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summaries_name_the_variant_and_its_fields_and_leave_out_bytes() {
        let add = json!({"Add": {"entry": {"ledger": 34, "entry": 2, "lac": 1, "payload": [1, 2, 3], "digest": 9}, "recovery": false}});
        assert_eq!(summarize(&add), "Add ledger=34 entry=2 lac=1 payload=<3 bytes> recovery=false");
        assert_eq!(summarize(&json!({"Error": "NoSuchEntry"})), "Error NoSuchEntry");
        assert_eq!(summarize(&json!("Added")), "Added");
        assert_eq!(summarize(&json!({"Entries": [1, 2, 3]})), "Entries list=[1,2,3]");
        let pulled =
            json!({"Pulled": {"msgs": [{"offset": 1}, {"offset": 2}, {"offset": 3}, {"offset": 4}], "next": 5}});
        assert_eq!(summarize(&pulled), "Pulled msgs=[offset=1, offset=2, offset=3, +1 more] next=5");
    }

    #[test]
    fn threads_are_found_by_field_name() {
        let send =
            json!({"Send": {"queue": {"topic": "t", "queue": 1}, "message": {"msg_id": "m1", "keys": ["k1", "k2"]}}});
        let mut threads = Vec::new();
        collect_threads(None, &send, &mut threads);
        threads.sort();
        assert_eq!(threads, ["key k1", "key k2", "msg m1", "queue t/1"]);
        let mut threads = Vec::new();
        collect_threads(None, &json!({"Get": {"path": "/ledgers/L0000000034"}}), &mut threads);
        assert_eq!(threads, ["ledger 34"]);
    }
}
