//! Export of a run's history in the history-file format of OpenMessaging-Chaos
//! (github.com/openmessaging/openchaos), so that its checkers (queue: lost and
//! duplicated messages; order; RTO; recovery; perf) can read our runs.
//!
//! The format is text, one entry a line, fields separated by tabs, absent
//! fields written `null` (Java's `%s` of null):
//!
//! ```text
//! <client> <op> REQUEST  <value> <shardingKey> <timestamp> <extraInfo>
//! <client> <op> RESPONSE <result> <value> <shardingKey> <timestamp> <latency> <extraInfo> <endToEndLatency>
//! fault <name> start|end <timestamp>
//! ```
//!
//! `<client>` is an integer, `<op>` in the queue model `enqueue` or `dequeue`,
//! `<result>` `SUCCESS`, `FAILURE` or `UNKNOWN`; times are milliseconds. The
//! checkers match messages by value and order them per sharding key.
//!
//! Mapping:
//! - Ops: `add` (a value appended to a ledger, our queue-like log) and `send`
//!   become `enqueue`; `receive` and `read` become `dequeue`, one `SUCCESS`
//!   response per message delivered (completion field `value`, or an array
//!   `messages` of values or of objects with `value`), and a `FAILURE` when
//!   none was, as OpenChaos records an empty poll. Every other op, such as
//!   ledger create/close/recover or the metadata store's ops, is skipped:
//!   OpenChaos' KV and cache models assume every value put stays readable
//!   (they check a final `getAll`), which a store with overwrites and deletes
//!   does not promise. Ledger scenarios have no consumer, so their exports
//!   hold no dequeues: the queue and order checkers, which compare enqueues
//!   with dequeues, would call every acknowledged add lost and out of order;
//!   the RTO, recovery and perf checkers are meaningful.
//! - Sharding key: the op's `key`, else its `queue`, else its `ledger`,
//!   prefixed by `topic/` when there is a topic. Send and receive must carry
//!   the same one for the order checker to pair them.
//! - Results: ok is `SUCCESS`, fail `FAILURE`, info `UNKNOWN`; an op that never
//!   completed gets an `UNKNOWN` response at the time of the last record.
//! - Time: simulated time, so the epoch is the run's start (give the perf
//!   checker a start timestamp of 0). Latency is the difference of the two
//!   millisecond stamps, as OpenChaos computes it; end-to-end latency is the
//!   receive time less the send's invoke time, -1 (skipped) when unknown.
//! - Client: a number per node, by first appearance. The request's extra info
//!   names the node; the response's holds the completion's fields as JSON.
//! - Faults: nemesis intervals (`start`/`end`) named by fault kind; instant
//!   faults (crashes) have no interval and are skipped.

use mqsim_sim::history::{Kind, Record};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The client operations of `records` in OpenMessaging-Chaos history format.
pub fn export(records: &[Record]) -> String {
    let mut out = String::new();
    let mut clients: BTreeMap<&str, usize> = BTreeMap::new();
    // Invoked, not yet completed, by op id: a BTreeMap so leftovers come out in order.
    let mut pending: BTreeMap<u64, (usize, &str, &Record)> = BTreeMap::new();
    let mut sent_ms: BTreeMap<String, u64> = BTreeMap::new();
    for r in records {
        match r.kind {
            Kind::Invoke => {
                let (Some(id), Some(op)) = (r.u64("id"), r.str("op").and_then(queue_op)) else { continue };
                let next = clients.len();
                let client = *clients.entry(&r.node).or_insert(next);
                let value = if op == "enqueue" { text(r.data.get("value")) } else { "null".into() };
                if op == "enqueue" {
                    sent_ms.insert(value.clone(), ms(r.t));
                }
                let (shard, node) = (shard(&[&r.data]), clean(&r.node));
                out += &format!("{client}\t{op}\tREQUEST\t{value}\t{shard}\t{}\t{node}\n", ms(r.t));
                pending.insert(id, (client, op, r));
            }
            Kind::Ok | Kind::Fail | Kind::Info => {
                if let Some((client, op, inv)) = r.u64("id").and_then(|id| pending.remove(&id)) {
                    respond(&mut out, &sent_ms, client, op, inv, Some(r), r.t);
                }
            }
            Kind::Fault => {
                let (Some(phase @ ("start" | "end")), Some(name)) =
                    (r.str("phase"), r.data.get("fault").and_then(|f| f.get("kind")).and_then(Value::as_str))
                else {
                    continue;
                };
                out += &format!("fault\t{}\t{phase}\t{}\n", clean(name), ms(r.t));
            }
            Kind::Event => {}
        }
    }
    let end = records.last().map_or(0, |r| r.t);
    for (client, op, inv) in pending.into_values() {
        respond(&mut out, &sent_ms, client, op, inv, None, end);
    }
    out
}

/// The OpenChaos op that one of ours is, if any.
fn queue_op(op: &str) -> Option<&'static str> {
    match op {
        "add" | "send" => Some("enqueue"),
        "receive" | "read" => Some("dequeue"),
        _ => None,
    }
}

/// Writes the response lines of `inv`, completed by `done` at `t` (µs), or never.
fn respond(
    out: &mut String,
    sent_ms: &BTreeMap<String, u64>,
    client: usize,
    op: &str,
    inv: &Record,
    done: Option<&Record>,
    t: u64,
) {
    let result = match done.map(|d| d.kind) {
        Some(Kind::Ok) => "SUCCESS",
        Some(Kind::Fail) => "FAILURE",
        _ => "UNKNOWN",
    };
    let extra = done.map_or("never completed".into(), |d| details(&d.data));
    let latency = ms(t).saturating_sub(ms(inv.t));
    let mut line = |result: &str, value: String, shard: String, e2e: i64| {
        *out +=
            &format!("{client}\t{op}\tRESPONSE\t{result}\t{value}\t{shard}\t{}\t{latency}\t{extra}\t{e2e}\n", ms(t));
    };
    // An enqueue's key may be known only once it completes (a queue the broker chose).
    let with_done = [&inv.data, done.map_or(&inv.data, |d| &d.data)];
    // OpenChaos writes 0 end-to-end latency for enqueues (its default).
    if op == "enqueue" {
        return line(result, text(inv.data.get("value")), shard(&with_done), 0);
    }
    let Some(d) = done.filter(|d| d.kind == Kind::Ok) else {
        return line(result, "null".into(), shard(&[&inv.data]), -1);
    };
    // Each delivered message: its value, and the fields that carry its sharding key.
    let single = d.data.get("value").filter(|v| !v.is_null()).map(|v| (v, &d.data));
    let many = d.data.get("messages").and_then(Value::as_array).into_iter().flatten().map(|m| match m {
        Value::Object(o) => (o.get("value").unwrap_or(&Value::Null), o),
        v => (v, &d.data),
    });
    let mut delivered = 0;
    for (value, fields) in single.into_iter().chain(many) {
        let value = text(Some(value));
        let shard = shard(&[fields, &d.data, &inv.data]);
        let e2e = sent_ms.get(&value).map_or(-1, |&s| ms(t) as i64 - s as i64);
        line("SUCCESS", value, shard, e2e);
        delivered += 1;
    }
    if delivered == 0 {
        line("FAILURE", "null".into(), shard(&[&inv.data]), -1);
    }
}

/// Simulated microseconds to the format's milliseconds.
fn ms(t_us: u64) -> u64 {
    t_us / 1000
}

/// The sharding key (see the module doc) from the first of `maps` that has each field, or `null`.
fn shard(maps: &[&Map<String, Value>]) -> String {
    let get = |f: &str| maps.iter().find_map(|m| m.get(f).filter(|v| !v.is_null()));
    let Some(part) = ["key", "queue", "ledger"].into_iter().find_map(get) else {
        return "null".into();
    };
    match get("topic").and_then(Value::as_str) {
        Some(topic) => format!("{}/{}", clean(topic), text(Some(part))),
        None => text(Some(part)),
    }
}

/// A field's text: strings as they are, anything else as JSON, absent as `null`.
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => clean(s),
        Some(v) => v.to_string(),
        None => "null".into(),
    }
}

/// A completion's fields, less the id and op, as compact JSON (which holds no tab or newline).
fn details(data: &Map<String, Value>) -> String {
    let rest: Map<String, Value> =
        data.iter().filter(|(k, _)| *k != "id" && *k != "op").map(|(k, v)| (k.clone(), v.clone())).collect();
    if rest.is_empty() {
        "null".into()
    } else {
        Value::Object(rest).to_string()
    }
}

/// Tabs and line breaks would split fields or lines; the checkers split on both.
fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(t_ms: u64, node: &str, kind: Kind, data: Value) -> Record {
        let Value::Object(data) = data else { panic!("record data must be an object") };
        Record { t: t_ms * 1000, node: node.into(), kind, data }
    }

    fn add(t: u64, node: &str, id: u64, value: &str) -> Record {
        rec(t, node, Kind::Invoke, json!({"id": id, "op": "add", "ledger": 7, "value": value}))
    }

    fn lines(records: &[Record]) -> Vec<String> {
        export(records).lines().map(String::from).collect()
    }

    #[test]
    fn ok_add_is_a_successful_enqueue_into_the_ledgers_shard() {
        let h = [
            add(10, "writer-0", 1, "v1"),
            rec(25, "writer-0", Kind::Ok, json!({"id": 1, "op": "add", "ledger": 7, "entry": 0})),
        ];
        assert_eq!(
            lines(&h),
            [
                "0\tenqueue\tREQUEST\tv1\t7\t10\twriter-0",
                "0\tenqueue\tRESPONSE\tSUCCESS\tv1\t7\t25\t15\t{\"ledger\":7,\"entry\":0}\t0",
            ]
        );
    }

    #[test]
    fn fail_is_failure_info_and_never_completed_are_unknown() {
        let h = [
            add(1, "writer-0", 1, "a"),
            add(2, "writer-0", 2, "b"),
            add(3, "writer-0", 3, "c"),
            rec(4, "writer-0", Kind::Fail, json!({"id": 1, "op": "add", "error": "Fenced"})),
            rec(5, "writer-0", Kind::Info, json!({"id": 2, "op": "add", "error": "timeout"})),
            rec(9, "bookie-0", Kind::Event, json!({"event": "recovered"})),
        ];
        let out = lines(&h);
        assert_eq!(out[3], "0\tenqueue\tRESPONSE\tFAILURE\ta\t7\t4\t3\t{\"error\":\"Fenced\"}\t0");
        assert_eq!(out[4], "0\tenqueue\tRESPONSE\tUNKNOWN\tb\t7\t5\t3\t{\"error\":\"timeout\"}\t0");
        // Op 3 never completed: unknown at the time of the last record.
        assert_eq!(out[5], "0\tenqueue\tRESPONSE\tUNKNOWN\tc\t7\t9\t6\tnever completed\t0");
        assert_eq!(out.len(), 6);
    }

    #[test]
    fn non_queue_ops_are_skipped_and_clients_numbered_by_node() {
        let h = [
            rec(1, "writer-0", Kind::Invoke, json!({"id": 1, "op": "create", "e": 3})),
            rec(2, "writer-0", Kind::Ok, json!({"id": 1, "op": "create", "ledger": 7})),
            rec(3, "client-0", Kind::Invoke, json!({"id": 2, "op": "set", "key": "/k/0", "value": "x"})),
            add(4, "writer-1", 3, "v"),
            add(5, "writer-0", 4, "w"),
            rec(6, "checker", Kind::Invoke, json!({"id": 5, "op": "read_meta", "ledger": 7})),
            rec(7, "nemesis", Kind::Fault, json!({"phase": "crash", "target": "bookie-0", "lost": []})),
        ];
        let out = lines(&h);
        assert_eq!(out.len(), 4, "{out:#?}");
        assert!(out[0].starts_with("0\tenqueue\tREQUEST\tv\t"));
        assert!(out[1].starts_with("1\tenqueue\tREQUEST\tw\t"));
        assert!(out[2..].iter().all(|l| l.contains("UNKNOWN")));
    }

    #[test]
    fn faults_are_intervals_named_by_kind() {
        let fault = |t, phase| rec(t, "nemesis", Kind::Fault, json!({"phase": phase, "fault": {"kind": "isolate"}}));
        assert_eq!(
            lines(&[fault(2, "start"), fault(4, "end")]),
            ["fault\tisolate\tstart\t2", "fault\tisolate\tend\t4"]
        );
    }

    #[test]
    fn sends_and_receives_map_to_enqueue_and_dequeue() {
        let h = [
            rec(1, "producer-0", Kind::Invoke, json!({"id": 1, "op": "send", "topic": "t", "key": "k", "value": "m1"})),
            rec(2, "producer-0", Kind::Ok, json!({"id": 1, "op": "send", "queue": 3, "offset": 0})),
            rec(5, "consumer-0", Kind::Invoke, json!({"id": 2, "op": "receive", "topic": "t"})),
            rec(
                8,
                "consumer-0",
                Kind::Ok,
                json!({"id": 2, "op": "receive", "messages": [{"key": "k", "value": "m1"}, {"key": "k", "value": "m0"}]}),
            ),
            rec(9, "consumer-0", Kind::Invoke, json!({"id": 3, "op": "receive", "topic": "t"})),
            rec(9, "consumer-0", Kind::Ok, json!({"id": 3, "op": "receive", "messages": []})),
        ];
        let out = lines(&h);
        assert_eq!(out[0], "0\tenqueue\tREQUEST\tm1\tt/k\t1\tproducer-0");
        assert!(out[1].starts_with("0\tenqueue\tRESPONSE\tSUCCESS\tm1\tt/k\t2\t1\t"));
        assert_eq!(out[2], "1\tdequeue\tREQUEST\tnull\tnull\t5\tconsumer-0");
        // End-to-end latency runs from the send's invoke; unknown for a value never sent.
        assert!(out[3].starts_with("1\tdequeue\tRESPONSE\tSUCCESS\tm1\tt/k\t8\t3\t") && out[3].ends_with("\t7"));
        assert!(out[4].starts_with("1\tdequeue\tRESPONSE\tSUCCESS\tm0\tt/k\t") && out[4].ends_with("\t-1"));
        // An empty poll is a failed dequeue, as OpenChaos records it.
        assert!(out[6].starts_with("1\tdequeue\tRESPONSE\tFAILURE\tnull\t"));
        assert_eq!(out.len(), 7);
    }

    #[test]
    fn tabs_and_newlines_do_not_break_fields() {
        let h = [add(1, "writer-0", 1, "a\tb\nc")];
        assert!(lines(&h)[0].starts_with("0\tenqueue\tREQUEST\ta b c\t7\t"));
    }
}
