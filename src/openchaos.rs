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
//! - Ops: a ledger `add` (a value appended to a ledger, our queue-like log)
//!   becomes `enqueue`; the checker node's `read_entry` of a ledger entry
//!   becomes `dequeue` (`SUCCESS` with the value read, `FAILURE` or `UNKNOWN`
//!   when it could not be read). Every other op, such as ledger
//!   create/close/fence/recover or the metadata store's ops, is skipped:
//!   OpenChaos' KV and cache models assume every value put stays readable
//!   (they check a final `getAll`), which a store with overwrites and deletes
//!   does not promise.
//! - Sharding key: the ledger, so enqueues and dequeues of one ledger pair up
//!   and the order checker sees each ledger as one queue.
//! - Results: ok is `SUCCESS`, fail `FAILURE`, info `UNKNOWN`; an op that never
//!   completed gets an `UNKNOWN` response at the time of the last record.
//! - Time: simulated time, so the epoch is the run's start (give the perf
//!   checker a start timestamp of 0). Latency is the difference of the two
//!   millisecond stamps, as OpenChaos computes it; end-to-end latency is the
//!   dequeue time less the enqueue's invoke time, -1 (skipped) when unknown.
//! - Client: a number per node, by first appearance. The request's extra info
//!   names the node; the response's holds the completion's fields as JSON.
//! - Faults: nemesis windows (`start`/`end`) named by fault kind; instants
//!   (crashes) have no interval and are skipped.

use mqsim_scenarios::ops::{ops, Op, Outcome};
use mqsim_sim::history::{Body, Call, FaultRecord, Record, Ret};
use mqsim_sim::FaultKind;
use std::collections::BTreeMap;

/// One line of the export, kept with its time so ops and faults interleave in order.
type Line = (u64, usize, String);

/// The client operations of `records` in OpenMessaging-Chaos history format;
/// an error when the history's operations cannot be joined.
pub fn export(records: &[Record]) -> Result<String, String> {
    let ops = ops(records).map_err(|v| format!("the history cannot be exported: {}", v.detail))?;
    let last = records.iter().map(|r| r.t).max().unwrap_or(0);
    let mut clients: BTreeMap<&str, usize> = BTreeMap::new();
    let mut sent_ms: BTreeMap<&str, u64> = BTreeMap::new();
    let mut lines: Vec<Line> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        let Some((op, value, ledger)) = queue_op(o) else { continue };
        let next = clients.len();
        let client = *clients.entry(o.node).or_insert(next);
        if let Some(v) = value.filter(|_| op == "enqueue") {
            sent_ms.insert(v, ms(o.start));
        }
        let value = value.filter(|_| op == "enqueue").map_or("null".into(), clean);
        let request = format!("{client}\t{op}\tREQUEST\t{value}\t{ledger}\t{}\t{}", ms(o.start), clean(o.node));
        lines.push((o.start, 2 * i, request));
        let t = o.end.min(last);
        lines.push((t, 2 * i + 1, respond(o, client, op, ledger, &sent_ms, t)));
    }
    for (i, r) in records.iter().enumerate() {
        let (phase, fault) = match &r.body {
            Body::Fault(FaultRecord::Start { fault, .. }) => ("start", fault),
            Body::Fault(FaultRecord::End { fault, .. }) => ("end", fault),
            _ => continue,
        };
        lines.push((r.t, usize::MAX / 2 + i, format!("fault\t{}\t{phase}\t{}", FaultKind::of(fault).name(), ms(r.t))));
    }
    lines.sort_by_key(|(t, k, _)| (*t, *k));
    Ok(lines.into_iter().map(|(_, _, l)| l + "\n").collect())
}

/// The OpenChaos op one of ours is, with the value it carries and its ledger.
fn queue_op<'a>(o: &Op<'a>) -> Option<(&'static str, Option<&'a str>, u64)> {
    match (o.call, o.ret()) {
        (Call::Add { ledger, value }, _) => Some(("enqueue", Some(value), *ledger)),
        (Call::ReadEntry { ledger, .. }, Some(Ret::ReadEntry { value })) => Some(("dequeue", Some(value), *ledger)),
        (Call::ReadEntry { ledger, .. }, _) => Some(("dequeue", None, *ledger)),
        _ => None,
    }
}

/// The response line of `o`, completed at `t` (µs) or never.
fn respond(o: &Op, client: usize, op: &str, ledger: u64, sent_ms: &BTreeMap<&str, u64>, t: u64) -> String {
    let (result, extra) = match o.outcome {
        Outcome::Ok(ret) => ("SUCCESS", details(ret)),
        Outcome::Fail(e) => ("FAILURE", serde_json::json!({ "error": e }).to_string()),
        Outcome::Info(e) => ("UNKNOWN", serde_json::json!({ "error": e }).to_string()),
        Outcome::Pending => ("UNKNOWN", "never completed".into()),
    };
    let latency = ms(t).saturating_sub(ms(o.start));
    let (value, e2e) = match (op, queue_op(o).and_then(|(_, v, _)| v)) {
        // OpenChaos writes 0 end-to-end latency for enqueues (its default).
        ("enqueue", Some(v)) => (clean(v), 0),
        (_, Some(v)) => (clean(v), sent_ms.get(v).map_or(-1, |&s| ms(t) as i64 - s as i64)),
        (_, None) => ("null".into(), -1),
    };
    format!("{client}\t{op}\tRESPONSE\t{result}\t{value}\t{ledger}\t{}\t{latency}\t{extra}\t{e2e}", ms(t))
}

/// Simulated microseconds to the format's milliseconds.
fn ms(t_us: u64) -> u64 {
    t_us / 1000
}

/// A completion's fields, less the op, as compact JSON (which holds no tab or newline).
fn details(ret: &Ret) -> String {
    match serde_json::to_value(ret) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.remove("op");
            if m.is_empty() {
                "null".into()
            } else {
                serde_json::Value::Object(m).to_string()
            }
        }
        _ => "null".into(),
    }
}

/// Tabs and line breaks would split fields or lines; the checkers split on both.
fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqsim_core::env::Event;
    use mqsim_sim::Fault;

    fn rec(t_ms: u64, node: &str, body: Body) -> Record {
        Record { t: t_ms * 1000, node: node.into(), body }
    }

    fn add(t: u64, node: &str, id: u64, value: &str) -> Record {
        rec(t, node, Body::Invoke { id, call: Call::Add { ledger: 7, value: value.into() } })
    }

    fn lines(records: &[Record]) -> Vec<String> {
        export(records).unwrap().lines().map(String::from).collect()
    }

    #[test]
    fn an_unreadable_history_is_an_error() {
        let h = [rec(1, "writer-0", Body::Ok { id: 9, ret: Ret::Add { entry: 0 } })];
        assert!(export(&h).unwrap_err().contains("never invoked"));
    }

    #[test]
    fn ok_add_is_a_successful_enqueue_into_the_ledgers_shard() {
        let h = [add(10, "writer-0", 1, "v1"), rec(25, "writer-0", Body::Ok { id: 1, ret: Ret::Add { entry: 0 } })];
        assert_eq!(
            lines(&h),
            [
                "0\tenqueue\tREQUEST\tv1\t7\t10\twriter-0",
                "0\tenqueue\tRESPONSE\tSUCCESS\tv1\t7\t25\t15\t{\"entry\":0}\t0",
            ]
        );
    }

    #[test]
    fn fail_is_failure_info_and_never_completed_are_unknown() {
        let h = [
            add(1, "writer-0", 1, "a"),
            add(2, "writer-0", 2, "b"),
            add(3, "writer-0", 3, "c"),
            rec(4, "writer-0", Body::Fail { id: 1, error: "Fenced".into() }),
            rec(5, "writer-0", Body::Info { id: 2, error: "Timeout".into() }),
            rec(9, "bookie-0", Body::Event(Event::SessionExpired { session: 1 })),
        ];
        let out = lines(&h);
        assert_eq!(out[3], "0\tenqueue\tRESPONSE\tFAILURE\ta\t7\t4\t3\t{\"error\":\"Fenced\"}\t0");
        assert_eq!(out[4], "0\tenqueue\tRESPONSE\tUNKNOWN\tb\t7\t5\t3\t{\"error\":\"Timeout\"}\t0");
        // Op 3 never completed: unknown at the time of the last record.
        assert_eq!(out[5], "0\tenqueue\tRESPONSE\tUNKNOWN\tc\t7\t9\t6\tnever completed\t0");
        assert_eq!(out.len(), 6);
    }

    #[test]
    fn non_queue_ops_are_skipped_and_clients_numbered_by_node() {
        let h = [
            rec(1, "writer-0", Body::Invoke { id: 1, call: Call::CreateLedger { e: 3, qw: 2, qa: 2 } }),
            rec(2, "writer-0", Body::Ok { id: 1, ret: Ret::CreateLedger { ledger: 7 } }),
            rec(3, "client-0", Body::Invoke { id: 2, call: Call::Get { key: "/k/0".into() } }),
            add(4, "writer-1", 3, "v"),
            add(5, "writer-0", 4, "w"),
            rec(6, "checker", Body::Invoke { id: 5, call: Call::ReadMeta { ledger: 7 } }),
            rec(
                7,
                "nemesis",
                Body::Fault(FaultRecord::Crash { target: "bookie-0".into(), lost: vec![], during_fsync_of: None }),
            ),
        ];
        let out = lines(&h);
        assert_eq!(out.len(), 4, "{out:#?}");
        assert!(out[0].starts_with("0\tenqueue\tREQUEST\tv\t"));
        assert!(out[1].starts_with("1\tenqueue\tREQUEST\tw\t"));
        assert!(out[2..].iter().all(|l| l.contains("UNKNOWN")));
    }

    #[test]
    fn faults_are_intervals_named_by_kind() {
        let fault = Fault::Isolate { node: "b".into() };
        let h = [
            rec(
                2,
                "nemesis",
                Body::Fault(FaultRecord::Start { action: 0, for_ms: 2, fault: fault.clone(), hit: None }),
            ),
            rec(4, "nemesis", Body::Fault(FaultRecord::End { action: 0, fault })),
        ];
        assert_eq!(lines(&h), ["fault\tisolate\tstart\t2", "fault\tisolate\tend\t4"]);
    }

    #[test]
    fn entry_reads_are_dequeues_of_the_ledger() {
        let h = [
            add(1, "writer-0", 1, "m1"),
            rec(2, "writer-0", Body::Ok { id: 1, ret: Ret::Add { entry: 0 } }),
            rec(5, "checker", Body::Invoke { id: 2, call: Call::ReadEntry { ledger: 7, entry: 0 } }),
            rec(8, "checker", Body::Ok { id: 2, ret: Ret::ReadEntry { value: "m1".into() } }),
            rec(9, "checker", Body::Invoke { id: 3, call: Call::ReadEntry { ledger: 7, entry: 1 } }),
            rec(9, "checker", Body::Fail { id: 3, error: "Unreadable".into() }),
        ];
        let out = lines(&h);
        assert_eq!(out[2], "1\tdequeue\tREQUEST\tnull\t7\t5\tchecker");
        // End-to-end latency runs from the enqueue's invoke.
        assert!(
            out[3].starts_with("1\tdequeue\tRESPONSE\tSUCCESS\tm1\t7\t8\t3\t") && out[3].ends_with("\t7"),
            "{}",
            out[3]
        );
        assert!(out[5].starts_with("1\tdequeue\tRESPONSE\tFAILURE\tnull\t7\t"), "{}", out[5]);
        assert_eq!(out.len(), 6);
    }

    #[test]
    fn tabs_and_newlines_do_not_break_fields() {
        let h = [add(1, "writer-0", 1, "a\tb\nc")];
        assert!(lines(&h)[0].starts_with("0\tenqueue\tREQUEST\ta b c\t7\t"));
    }
}
