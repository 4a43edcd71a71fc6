//! The failure story of a run: which stretch of time, which thread (a ledger,
//! key, message id or queue) and which nodes tell how the violation came
//! about, and what happened there. The focused view and `mqsim explain` both
//! draw from it.

use mqsim_scenarios::ops::{Op, Outcome};
use mqsim_sim::history::{Body, FaultRecord, Record};
use mqsim_sim::trace::{collect_threads, Message};
use serde_json::Value;
use std::collections::BTreeSet;

/// What the story shows.
pub struct Story<'a> {
    /// Simulated microseconds, both included.
    pub from: u64,
    pub to: u64,
    /// When the violation shows: the violating operation's completion, or the run's end.
    pub at: u64,
    /// The thread followed (`ledger 34`); `None` follows everything in the window.
    pub thread: Option<String>,
    /// The nodes involved, in drawing order.
    pub nodes: Vec<String>,
    /// Operations in the window, each with whether it concerns the thread.
    pub ops: Vec<(Op<'a>, bool)>,
    /// Messages, events and fault records in the window, in history order,
    /// each with whether it concerns the thread (faults always do).
    pub records: Vec<(&'a Record, bool)>,
    /// The violating operation's index in `ops`.
    pub violating: Option<usize>,
    /// Messages of the thread in the window beyond [`MAX_MESSAGES`], left out.
    pub left_out: usize,
}

/// A focused view draws at most this many messages; a window without a thread can hold thousands.
pub const MAX_MESSAGES: usize = 400;

/// A thread as the command line names it: `ledger=34` or `ledger 34` is `ledger 34`.
pub fn parse_thread(s: &str) -> Result<String, String> {
    let (kind, id) =
        s.split_once(['=', ' ']).ok_or_else(|| format!("--follow {s}: expected KIND=ID, e.g. ledger=34"))?;
    if !["ledger", "key", "msg", "queue"].contains(&kind) || id.is_empty() {
        return Err(format!("--follow {s}: the kind must be ledger, key, msg or queue, with an id"));
    }
    Ok(format!("{kind} {id}"))
}

/// The threads a record concerns.
pub fn threads_of(r: &Record) -> Vec<String> {
    match &r.body {
        Body::Message(m) => m.threads.clone(),
        body => threads_of_value(body),
    }
}

/// The threads of an operation: its call and its result.
pub fn threads_of_op(o: &Op) -> Vec<String> {
    let mut t = threads_of_value(o.call);
    if let Outcome::Ok(ret) = o.outcome {
        t.extend(threads_of_value(ret));
    }
    t.sort();
    t.dedup();
    t
}

fn threads_of_value(v: &impl serde::Serialize) -> Vec<String> {
    let mut threads = Vec::new();
    if let Ok(v) = serde_json::to_value(v) {
        collect_threads(None, &v, &mut threads);
    }
    threads.sort();
    threads.dedup();
    threads
}

/// The message of a record, if it is one.
pub fn message(r: &Record) -> Option<&Message> {
    match &r.body {
        Body::Message(m) => Some(m),
        _ => None,
    }
}

/// When a message's last copy arrived or was lost; its send time when neither is known.
pub fn message_end(r: &Record) -> u64 {
    let Some(m) = message(r) else { return r.t };
    let lost = m.lost.as_ref().and_then(|l| l.at).unwrap_or(r.t);
    m.received.iter().copied().max().unwrap_or(r.t).max(lost)
}

impl<'a> Story<'a> {
    /// The story of `records` (a history with its message trace) leading to
    /// the violation of operation `violating_op` (or found at the run's end). The window runs from shortly before the last fault action
    /// that began before the violation (or the violating operation's start,
    /// if earlier) to just after the violation. The nodes are those the
    /// thread's messages, events and faults involve; with `wide`, what else
    /// they did in the window is in the story too, marked as off the thread.
    pub fn of(records: &'a [Record], violating_op: Option<u64>, follow: Option<&str>, wide: bool) -> Story<'a> {
        let ops = mqsim_scenarios::ops::ops(records).unwrap_or_default();
        let run_end = records.last().map_or(0, |r| r.t);
        let violating = violating_op.and_then(|id| ops.iter().position(|o| o.id == id));
        let at = violating.map_or(run_end, |i| if ops[i].end == u64::MAX { ops[i].start } else { ops[i].end });
        let last_fault = records
            .iter()
            .filter(|r| {
                r.t <= at && matches!(r.body, Body::Fault(FaultRecord::Start { .. } | FaultRecord::Crash { .. }))
            })
            .map(|r| r.t)
            .max();
        let begin = [last_fault, violating.map(|i| ops[i].start)].into_iter().flatten().min().unwrap_or(at);
        let lead = ((at - begin) / 10).max(5_000);
        let (from, to) = (begin.saturating_sub(lead), at + lead / 2);

        let thread = follow.map(str::to_string).or_else(|| {
            // The violating operation's thread: what its call names (a ledger, a
            // message, a key, a queue), else what its result names.
            let o = &ops[violating?];
            let pick = |threads: Vec<String>| {
                ["ledger ", "msg ", "key ", "queue "]
                    .iter()
                    .find_map(|kind| threads.iter().find(|t| t.starts_with(kind)).cloned())
            };
            pick(threads_of_value(o.call)).or_else(|| pick(threads_of_op(o)))
        });
        let concerns = |threads: &[String]| thread.as_ref().is_none_or(|t| threads.contains(t));

        let mut nodes: BTreeSet<String> = BTreeSet::new();
        if let Some(i) = violating {
            nodes.insert(ops[i].node.to_string());
        }
        let in_window = |r: &Record| match &r.body {
            Body::Message(_) => message_end(r) >= from && r.t <= to,
            // Fault actions in force in the window.
            Body::Fault(FaultRecord::Start { for_ms, .. }) => {
                r.t <= to && r.t.saturating_add(for_ms.saturating_mul(1000)) >= from
            }
            _ => r.t >= from && r.t <= to,
        };
        // (index in the history, record, whether it concerns the thread)
        let mut shown: Vec<(usize, &Record, bool)> = Vec::new();
        for (i, r) in records.iter().enumerate().filter(|(_, r)| in_window(r)) {
            let on_thread = match &r.body {
                Body::Message(m) => concerns(&m.threads),
                Body::Event(_) => concerns(&threads_of(r)),
                Body::Fault(_) => true,
                _ => false,
            };
            if !on_thread {
                continue;
            }
            match &r.body {
                Body::Message(m) => {
                    nodes.insert(r.node.clone());
                    nodes.insert(m.to.clone());
                }
                Body::Event(_) => {
                    nodes.insert(r.node.clone());
                }
                // Nodes a fault action in force names (a crashed node, say), even if they sent nothing.
                Body::Fault(FaultRecord::Start { fault, .. }) => {
                    nodes.extend(fault.nodes().into_iter().map(str::to_string));
                }
                Body::Fault(FaultRecord::Crash { target, .. }) => {
                    nodes.insert(target.clone());
                }
                _ => {}
            }
            shown.push((i, r, true));
        }
        if wide {
            // What else the same nodes did among themselves in the window.
            for (i, r) in records.iter().enumerate().filter(|(_, r)| in_window(r)) {
                let between = match &r.body {
                    Body::Message(m) => !concerns(&m.threads) && nodes.contains(&r.node) && nodes.contains(&m.to),
                    Body::Event(_) => !concerns(&threads_of(r)) && nodes.contains(&r.node),
                    _ => false,
                };
                if between {
                    shown.push((i, r, false));
                }
            }
            // Back into history order.
            shown.sort_by_key(|(i, ..)| *i);
        }
        // At most MAX_MESSAGES messages, the thread's first.
        let mut budget = MAX_MESSAGES;
        let mut left_out = 0;
        let mut keep = vec![true; shown.len()];
        for pass in [true, false] {
            for (i, (_, r, on)) in shown.iter().enumerate() {
                if *on == pass && matches!(r.body, Body::Message(_)) {
                    if budget == 0 {
                        keep[i] = false;
                        left_out += usize::from(*on);
                    } else {
                        budget -= 1;
                    }
                }
            }
        }
        let mut keep = keep.into_iter();
        shown.retain(|_| keep.next().unwrap_or(false));
        let ops: Vec<(Op, bool)> = ops
            .into_iter()
            .filter_map(|o| {
                let end = if o.end == u64::MAX { to } else { o.end };
                let near = end >= from && o.start <= to && nodes.contains(o.node);
                if !near && Some(o.id) != violating_op {
                    return None;
                }
                let on = Some(o.id) == violating_op || concerns(&threads_of_op(&o));
                (Some(o.id) == violating_op || on || wide).then_some((o, on))
            })
            .collect();
        let violating = violating_op.and_then(|id| ops.iter().position(|(o, _)| o.id == id));
        let records = shown.into_iter().map(|(_, r, on)| (r, on)).collect();
        Story { from, to, at, thread, nodes: nodes.into_iter().collect(), ops, records, violating, left_out }
    }

    /// Orders the nodes as the scenario's lanes do; others follow by name.
    pub fn order_nodes(&mut self, lanes: &[String]) {
        self.nodes.sort_by_key(|n| (lanes.iter().position(|l| l == n).unwrap_or(usize::MAX), n.clone()));
    }
}

/// A JSON value's fields as `name=value`, without `skip`.
pub fn fields_text(v: &Value, skip: &[&str]) -> String {
    let Value::Object(map) = v else { return v.to_string() };
    let parts: Vec<String> = map
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqsim_core::env::{Event, LedgerEvent};
    use mqsim_sim::history::{Call, Ret};
    use mqsim_sim::net::{Effect, FilterRule};
    use mqsim_sim::trace::Lost;
    use mqsim_sim::Fault;

    fn rec(t: u64, node: &str, body: Body) -> Record {
        Record { t, node: node.into(), body }
    }

    fn msg(t: u64, from: &str, to: &str, ledger: u64, received: Option<u64>) -> Record {
        let m = Message {
            to: to.into(),
            kind: "Add".into(),
            reply: false,
            caller: 1,
            call: t,
            summary: format!("Add ledger={ledger}"),
            threads: vec![format!("ledger {ledger}")],
            copies: 1,
            delayed_ms: 0,
            received: received.into_iter().collect(),
            lost: received.is_none().then(|| Lost { at: Some(t), by: "drop rule".into(), action: Some(0) }),
        };
        rec(t, from, Body::Message(Box::new(m)))
    }

    /// A writer's add to ledger 1 acknowledged after a drop rule began, with
    /// traffic of ledger 2 beside it and long before it.
    fn history() -> Vec<Record> {
        let rule = FilterRule {
            from: None,
            to: Some("bookie-1".into()),
            kind: None,
            reply: None,
            effect: Effect::Drop { percent: 100 },
        };
        vec![
            msg(1_000, "writer-0", "bookie-0", 1, Some(1_500)),
            rec(100_000, "writer-0", Body::Invoke { id: 1, call: Call::Add { ledger: 1, value: "v".into() } }),
            rec(
                200_000,
                "nemesis",
                Body::Fault(FaultRecord::Start { action: 0, for_ms: 50, fault: Fault::Filter { rule }, hit: None }),
            ),
            msg(201_000, "writer-0", "bookie-1", 1, None),
            msg(202_000, "writer-0", "bookie-2", 2, Some(203_000)),
            msg(202_500, "writer-0", "bookie-1", 2, Some(203_500)),
            msg(203_000, "recoverer-0", "bookie-3", 2, Some(204_000)),
            rec(210_000, "recoverer-0", Body::Event(Event::Ledger(LedgerEvent::Fenced { ledger: 1, lac: 0 }))),
            rec(300_000, "writer-0", Body::Ok { id: 1, ret: Ret::Add { entry: 0 } }),
            msg(900_000, "writer-0", "bookie-0", 1, Some(901_000)),
        ]
    }

    #[test]
    fn the_window_runs_from_before_the_violating_operation_to_its_completion() {
        let records = history();
        let story = Story::of(&records, Some(1), None, false);
        assert_eq!(story.at, 300_000);
        assert!(story.from < 100_000 && story.from > 1_500, "{}", story.from);
        assert!(story.to >= 300_000 && story.to < 900_000, "{}", story.to);
        assert_eq!(story.thread.as_deref(), Some("ledger 1"));
        assert_eq!(story.violating, Some(0));
    }

    #[test]
    fn a_story_follows_its_thread_and_the_nodes_it_involves() {
        let records = history();
        let story = Story::of(&records, Some(1), None, false);
        let times: Vec<u64> = story.records.iter().map(|(r, _)| r.t).collect();
        assert_eq!(times, [200_000, 201_000, 210_000], "the fault, the lost add, the fence");
        assert_eq!(story.nodes, ["bookie-1", "recoverer-0", "writer-0"]);
        // Wide: what else those nodes did among themselves, marked off the thread.
        let wide = Story::of(&records, Some(1), None, true);
        let off: Vec<u64> = wide.records.iter().filter(|(_, on)| !on).map(|(r, _)| r.t).collect();
        assert_eq!(off, [202_500], "only writer-0 → bookie-1: bookie-2 and bookie-3 are not among the nodes");
        // Another thread, picked by the reader.
        let other = Story::of(&records, Some(1), Some("ledger 2"), false);
        let times: Vec<u64> = other.records.iter().map(|(r, _)| r.t).collect();
        assert_eq!(times, [200_000, 202_000, 202_500, 203_000]);
    }

    #[test]
    fn threads_are_named_kind_then_id() {
        assert_eq!(parse_thread("ledger=34").unwrap(), "ledger 34");
        assert_eq!(parse_thread("key k7").unwrap(), "key k7");
        assert!(parse_thread("ledger").unwrap_err().contains("KIND=ID"));
        assert!(parse_thread("colour=red").unwrap_err().contains("ledger, key, msg or queue"));
    }
}
