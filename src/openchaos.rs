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
//!   when it could not be read). In the messaging scenarios a producer's `send`
//!   is an `enqueue` of the message's body, and a consumer's `process` of a
//!   delivered message a `dequeue` of it (`SUCCESS` when the processing ended
//!   well, its value the body of the send with that message id, or the message
//!   id when no send has it; `null` otherwise). Every other op, such as ledger
//!   create/close/fence/recover, the metadata store's ops, or a consumer's
//!   polls, commits and rebalances, is skipped: OpenChaos' KV and cache models
//!   assume every value put stays readable (they check a final `getAll`),
//!   which a store with overwrites and deletes does not promise.
//! - Sharding key: the ledger, so enqueues and dequeues of one ledger pair up
//!   and the order checker sees each ledger as one queue; for messages the
//!   queue, `<topic>/q<queue>` (for a send, on its request too, the queue its
//!   acknowledgement names; `null` when it was not acknowledged).
//! - Results: ok is `SUCCESS`, fail `FAILURE`, info `UNKNOWN`; an op that never
//!   completed gets an `UNKNOWN` response at the time of the last record.
//! - Time: simulated time, so the epoch is the run's start (give the perf
//!   checker a start timestamp of 0). Latency is the difference of the two
//!   millisecond stamps, as OpenChaos computes it; end-to-end latency is the
//!   dequeue time less the enqueue's invoke time, -1 (skipped) when unknown.
//! - Client: a number per node, by first appearance. The request's extra info
//!   names the node; the response's holds the completion's fields as JSON,
//!   after, for messages, the message id (and a consumer's group and offset).
//! - Faults: nemesis windows (`start`/`end`) named by fault kind; instants
//!   (crashes) have no interval and are skipped.
//!
//! OpenChaos' queue checker assumes one consumer group: with several, each
//! group's delivery of a message past the first counts as a duplicate (the
//! dequeue's extra info names the group, to split the file by).

use mqsim_scenarios::ops::{ops, Op, Outcome};
use mqsim_sim::history::{Body, Call, FaultRecord, Record, Ret};
use mqsim_sim::FaultKind;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One line of the export, kept with its time so ops and faults interleave in order.
type Line = (u64, usize, String);

/// The client operations of `records` in OpenMessaging-Chaos history format;
/// an error when the history's operations cannot be joined.
pub fn export(records: &[Record]) -> Result<String, String> {
    let ops = ops(records).map_err(|v| format!("the history cannot be exported: {}", v.detail))?;
    let last = records.iter().map(|r| r.t).max().unwrap_or(0);
    // A message id's body: the first send's with that id.
    let mut bodies: BTreeMap<&str, &str> = BTreeMap::new();
    for o in &ops {
        if let Call::Send { msg_id, body, .. } = o.call {
            bodies.entry(msg_id).or_insert(body);
        }
    }
    let mut clients: BTreeMap<&str, usize> = BTreeMap::new();
    let mut sent_ms: BTreeMap<&str, u64> = BTreeMap::new();
    let mut lines: Vec<Line> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        let Some(q) = queue_op(o, &bodies) else { continue };
        let next = clients.len();
        let client = *clients.entry(o.node).or_insert(next);
        let enqueued = q.value.filter(|_| q.op == "enqueue");
        if let Some(v) = enqueued {
            sent_ms.insert(v, ms(o.start));
        }
        let (op, shard) = (q.op, q.shard());
        let value = enqueued.map_or("null".into(), clean);
        let request = format!("{client}\t{op}\tREQUEST\t{value}\t{shard}\t{}\t{}", ms(o.start), clean(o.node));
        lines.push((o.start, 2 * i, request));
        let t = o.end.min(last);
        lines.push((t, 2 * i + 1, respond(o, q, client, &sent_ms, t)));
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

/// One of our ops as an OpenChaos op.
struct QueueOp<'a> {
    /// `enqueue` or `dequeue`.
    op: &'static str,
    /// The value enqueued, or dequeued when the dequeue succeeded.
    value: Option<&'a str>,
    /// The sharding key, when known.
    shard: Option<String>,
    /// What names the op's message (messaging ops), first in the response's extra info.
    fields: Map<String, Value>,
}

impl QueueOp<'_> {
    fn shard(&self) -> String {
        self.shard.as_deref().map_or("null".into(), clean)
    }
}

/// The OpenChaos op one of ours is, if any; `bodies` gives a message id's body.
fn queue_op<'a>(o: &Op<'a>, bodies: &BTreeMap<&'a str, &'a str>) -> Option<QueueOp<'a>> {
    let ledger = |op, value, ledger: &u64| QueueOp { op, value, shard: Some(ledger.to_string()), fields: Map::new() };
    Some(match (o.call, o.ret()) {
        (Call::Add { ledger: l, value }, _) => ledger("enqueue", Some(value.as_str()), l),
        (Call::ReadEntry { ledger: l, .. }, Some(Ret::ReadEntry { value })) => ledger("dequeue", Some(value), l),
        (Call::ReadEntry { ledger: l, .. }, _) => ledger("dequeue", None, l),
        (Call::Send { topic, msg_id, body, .. }, ret) => QueueOp {
            op: "enqueue",
            value: Some(body),
            shard: match ret {
                Some(Ret::Send { queue, .. }) => Some(format!("{topic}/q{queue}")),
                _ => None,
            },
            fields: fields([("msg_id", msg_id.as_str().into())]),
        },
        (Call::Process { group, topic, queue, offset, msg_id }, ret) => QueueOp {
            op: "dequeue",
            value: ret.map(|_| bodies.get(msg_id.as_str()).copied().unwrap_or(msg_id)),
            shard: Some(format!("{topic}/q{queue}")),
            fields: fields([
                ("group", group.as_str().into()),
                ("msg_id", msg_id.as_str().into()),
                ("offset", (*offset).into()),
            ]),
        },
        _ => return None,
    })
}

/// A JSON object of `kv`, in that order.
fn fields<const N: usize>(kv: [(&str, Value); N]) -> Map<String, Value> {
    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The response line of `o` (as `q`), completed at `t` (µs) or never.
fn respond(o: &Op, q: QueueOp, client: usize, sent_ms: &BTreeMap<&str, u64>, t: u64) -> String {
    let (op, shard) = (q.op, q.shard());
    let mut extra = q.fields;
    let (result, error) = match o.outcome {
        Outcome::Ok(ret) => {
            extra.extend(details(ret));
            ("SUCCESS", None)
        }
        Outcome::Fail(e) => ("FAILURE", Some(e)),
        Outcome::Info(e) => ("UNKNOWN", Some(e)),
        Outcome::Pending => ("UNKNOWN", Some("never completed")),
    };
    let extra = match error {
        // A ledger op that never completed says just that; a message's op names its message too.
        Some(e) if extra.is_empty() && matches!(o.outcome, Outcome::Pending) => e.to_string(),
        Some(e) => {
            extra.insert("error".into(), e.into());
            Value::Object(extra).to_string()
        }
        None if extra.is_empty() => "null".into(),
        None => Value::Object(extra).to_string(),
    };
    let latency = ms(t).saturating_sub(ms(o.start));
    let (value, e2e) = match (op, q.value) {
        // OpenChaos writes 0 end-to-end latency for enqueues (its default).
        ("enqueue", Some(v)) => (clean(v), 0),
        (_, Some(v)) => (clean(v), sent_ms.get(v).map_or(-1, |&s| ms(t) as i64 - s as i64)),
        (_, None) => ("null".into(), -1),
    };
    format!("{client}\t{op}\tRESPONSE\t{result}\t{value}\t{shard}\t{}\t{latency}\t{extra}\t{e2e}", ms(t))
}

/// Simulated microseconds to the format's milliseconds.
fn ms(t_us: u64) -> u64 {
    t_us / 1000
}

/// A completion's fields, less the op (their JSON holds no tab or newline).
fn details(ret: &Ret) -> Map<String, Value> {
    match serde_json::to_value(ret) {
        // Filtered, not removed: a removal would reorder the rest under `preserve_order`.
        Ok(Value::Object(m)) => m.into_iter().filter(|(k, _)| k != "op").collect(),
        _ => Map::new(),
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

    fn send(t: u64, node: &str, id: u64, msg_id: &str) -> Record {
        let call = Call::Send {
            topic: "T".into(),
            tag: "TagA".into(),
            keys: vec!["k1".into()],
            shard: None,
            msg_id: msg_id.into(),
            body: format!("body.{msg_id}"),
            back: None,
        };
        rec(t, node, Body::Invoke { id, call })
    }

    fn process(t: u64, node: &str, id: u64, group: &str, offset: u64, msg_id: &str) -> Record {
        let call = Call::Process { group: group.into(), topic: "T".into(), queue: 3, offset, msg_id: msg_id.into() };
        rec(t, node, Body::Invoke { id, call })
    }

    fn sent(t: u64, node: &str, id: u64, offset: u64) -> Record {
        rec(t, node, Body::Ok { id, ret: Ret::Send { broker: "broker-0".into(), queue: 3, offset } })
    }

    #[test]
    fn an_acked_send_processed_twice_is_one_enqueue_and_two_dequeues_of_its_body() {
        let h = [
            send(10, "producer-0", 1, "m1"),
            sent(25, "producer-0", 1, 4),
            process(30, "consumer-0", 2, "g-all", 4, "m1"),
            rec(33, "consumer-0", Body::Ok { id: 2, ret: Ret::Process }),
            process(40, "consumer-0", 3, "g-all", 4, "m1"),
            rec(41, "consumer-0", Body::Ok { id: 3, ret: Ret::Process }),
        ];
        assert_eq!(
            lines(&h),
            [
                "0\tenqueue\tREQUEST\tbody.m1\tT/q3\t10\tproducer-0",
                "0\tenqueue\tRESPONSE\tSUCCESS\tbody.m1\tT/q3\t25\t15\t\
                 {\"msg_id\":\"m1\",\"broker\":\"broker-0\",\"queue\":3,\"offset\":4}\t0",
                "1\tdequeue\tREQUEST\tnull\tT/q3\t30\tconsumer-0",
                // End-to-end latency runs from the send's invoke.
                "1\tdequeue\tRESPONSE\tSUCCESS\tbody.m1\tT/q3\t33\t3\t{\"group\":\"g-all\",\"msg_id\":\"m1\",\"offset\":4}\t23",
                "1\tdequeue\tREQUEST\tnull\tT/q3\t40\tconsumer-0",
                "1\tdequeue\tRESPONSE\tSUCCESS\tbody.m1\tT/q3\t41\t1\t{\"group\":\"g-all\",\"msg_id\":\"m1\",\"offset\":4}\t31",
            ]
        );
    }

    #[test]
    fn failed_sends_are_failed_enqueues_and_unknown_ones_unknown() {
        let h = [
            send(1, "producer-0", 1, "m1"),
            send(2, "producer-1", 2, "m2"),
            send(3, "producer-2", 3, "m3"),
            rec(4, "producer-0", Body::Fail { id: 1, error: "NoRoute".into() }),
            rec(5, "producer-1", Body::Info { id: 2, error: "Timeout".into() }),
            rec(9, "broker-0", Body::Event(Event::SessionExpired { session: 1 })),
        ];
        let out = lines(&h);
        assert_eq!(out.len(), 6, "{out:#?}");
        // The queue of a send that was not acknowledged is unknown.
        assert_eq!(out[0], "0\tenqueue\tREQUEST\tbody.m1\tnull\t1\tproducer-0");
        assert_eq!(
            out[3],
            "0\tenqueue\tRESPONSE\tFAILURE\tbody.m1\tnull\t4\t3\t{\"msg_id\":\"m1\",\"error\":\"NoRoute\"}\t0"
        );
        assert_eq!(
            out[4],
            "1\tenqueue\tRESPONSE\tUNKNOWN\tbody.m2\tnull\t5\t3\t{\"msg_id\":\"m2\",\"error\":\"Timeout\"}\t0"
        );
        assert_eq!(
            out[5],
            "2\tenqueue\tRESPONSE\tUNKNOWN\tbody.m3\tnull\t9\t6\t{\"msg_id\":\"m3\",\"error\":\"never completed\"}\t0"
        );
    }

    #[test]
    fn a_message_no_send_wrote_is_dequeued_as_its_id_and_failed_processing_as_a_failure() {
        let h = [
            process(1, "consumer-1", 1, "g-ab", 0, "ghost"),
            rec(2, "consumer-1", Body::Ok { id: 1, ret: Ret::Process }),
            process(3, "consumer-1", 2, "g-ab", 1, "m9"),
            rec(4, "consumer-1", Body::Fail { id: 2, error: "Rebalanced".into() }),
        ];
        let out = lines(&h);
        assert_eq!(out[1], "0\tdequeue\tRESPONSE\tSUCCESS\tghost\tT/q3\t2\t1\t{\"group\":\"g-ab\",\"msg_id\":\"ghost\",\"offset\":0}\t-1");
        assert_eq!(
            out[3],
            "0\tdequeue\tRESPONSE\tFAILURE\tnull\tT/q3\t4\t1\t{\"group\":\"g-ab\",\"msg_id\":\"m9\",\"offset\":1,\"error\":\"Rebalanced\"}\t-1"
        );
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn consumer_steps_other_than_processing_are_skipped() {
        let (group, topic) = (String::from("g-all"), String::from("T"));
        let h = [
            rec(
                1,
                "consumer-0",
                Body::Invoke { id: 1, call: Call::Rebalance { group: group.clone(), topic: topic.clone() } },
            ),
            rec(2, "consumer-0", Body::Ok { id: 1, ret: Ret::Rebalance { queues: vec![3] } }),
            rec(
                3,
                "consumer-0",
                Body::Invoke {
                    id: 2,
                    call: Call::Poll { group: group.clone(), topic: topic.clone(), queue: 3, offset: 0 },
                },
            ),
            rec(4, "consumer-0", Body::Ok { id: 2, ret: Ret::Poll { msgs: vec![], next: 0 } }),
            rec(
                5,
                "consumer-0",
                Body::Invoke { id: 3, call: Call::Commit { group, topic: topic.clone(), queue: 3, offset: 0 } },
            ),
            rec(6, "checker", Body::Invoke { id: 4, call: Call::ReadQueue { topic, queue: 3 } }),
        ];
        assert!(lines(&h).is_empty());
    }

    #[test]
    fn tabs_and_newlines_do_not_break_fields() {
        let h = [add(1, "writer-0", 1, "a\tb\nc")];
        assert!(lines(&h)[0].starts_with("0\tenqueue\tREQUEST\ta b c\t7\t"));
    }
}
