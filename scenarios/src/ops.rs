//! Client operations joined from a history: each invocation with its
//! completion. A completion that matches no invocation, or names another
//! operation, makes the history unreadable: checkers report that, never skip it.

use crate::{Violation, UNREADABLE};
use mqsim_sim::history::{Body, Call, Record, Ret};
use std::collections::BTreeMap;

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome<'a> {
    Ok(&'a Ret),
    /// Certainly did not take effect.
    Fail(&'a str),
    /// May take effect, at any time after its invocation.
    Info(&'a str),
    /// Never completed.
    Pending,
}

/// One client operation, invocation and completion joined.
#[derive(Clone, Copy, Debug)]
pub struct Op<'a> {
    pub id: u64,
    pub node: &'a str,
    pub call: &'a Call,
    pub start: u64,
    /// `u64::MAX` when it never completed.
    pub end: u64,
    pub outcome: Outcome<'a>,
    /// Where the completion stands in the history (`usize::MAX` if none): the
    /// order in which the client learned outcomes, even at equal times.
    pub done_at: usize,
}

impl<'a> Op<'a> {
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    pub fn ret(&self) -> Option<&'a Ret> {
        match self.outcome {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }

    /// The error of a failed or unknown operation.
    pub fn error(&self) -> Option<&'a str> {
        match self.outcome {
            Outcome::Fail(e) | Outcome::Info(e) => Some(e),
            _ => None,
        }
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Fail(_))
    }

    pub fn may_have_happened(&self) -> bool {
        !self.failed()
    }

    /// The last moment the operation may take effect.
    pub fn effect_end(&self) -> u64 {
        if self.ok() {
            self.end
        } else {
            u64::MAX
        }
    }

    pub fn describe(&self) -> String {
        let what = match (self.call.key(), self.call.ledger()) {
            (Some(k), _) => format!(" {k}"),
            (None, Some(l)) => format!(" ledger {l}"),
            _ => String::new(),
        };
        format!("op #{} {}{what} by {} at {}", self.id, self.call.name(), self.node, secs(self.start))
    }
}

/// The violations a checker found: at most [`Report::MAX`], in the order found.
#[derive(Default)]
pub struct Report(Vec<Violation>);

impl Report {
    pub const MAX: usize = 20;

    /// A violation, about client operation `op` when there is one.
    pub fn add(&mut self, invariant: &'static str, op: Option<&Op>, detail: String) {
        if self.0.len() < Report::MAX {
            self.0.push(Violation { invariant, detail, op: op.map(|o| o.id) });
        }
    }

    /// A violation about client operation `op`.
    pub fn at(&mut self, invariant: &'static str, op: &Op, detail: String) {
        self.add(invariant, Some(op), detail);
    }

    pub fn violations(self) -> Vec<Violation> {
        self.0
    }
}

pub fn secs(us: u64) -> String {
    if us == u64::MAX {
        return "never".into();
    }
    format!("{}.{:06}s", us / 1_000_000, us % 1_000_000)
}

/// Joins invocations with completions, in invocation order.
pub fn ops(history: &[Record]) -> Result<Vec<Op<'_>>, Violation> {
    let mut ops: Vec<Op> = Vec::new();
    let mut index: BTreeMap<u64, usize> = BTreeMap::new();
    let unreadable = |i: usize, r: &Record, why: &str| {
        Violation::new(UNREADABLE, format!("record {i} (t={}, {}): {why}", secs(r.t), r.node))
    };
    for (i, r) in history.iter().enumerate() {
        let (id, outcome) = match &r.body {
            Body::Invoke { id, call } => {
                if index.insert(*id, ops.len()).is_some() {
                    return Err(unreadable(i, r, &format!("operation id {id} invoked twice")));
                }
                ops.push(Op {
                    id: *id,
                    node: &r.node,
                    call,
                    start: r.t,
                    end: u64::MAX,
                    outcome: Outcome::Pending,
                    done_at: usize::MAX,
                });
                continue;
            }
            Body::Ok { id, ret } => (*id, Outcome::Ok(ret)),
            Body::Fail { id, error } => (*id, Outcome::Fail(error)),
            Body::Info { id, error } => (*id, Outcome::Info(error)),
            // Not operations: what the nemesis, the nodes and (in a traced run) the network did.
            Body::Fault(_) | Body::Event(_) | Body::Probe { .. } | Body::Message(_) => continue,
        };
        let Some(&at) = index.get(&id) else {
            return Err(unreadable(i, r, &format!("completes operation {id}, which was never invoked")));
        };
        let op = &mut ops[at];
        if op.outcome != Outcome::Pending {
            return Err(unreadable(i, r, &format!("completes operation {id} a second time")));
        }
        if op.node != r.node || r.t < op.start {
            return Err(unreadable(i, r, &format!("completes operation {id} of {} before or beside it", op.node)));
        }
        if let Outcome::Ok(ret) = outcome {
            if ret.name() != op.call.name() {
                let why = format!("answers {} {id} with a result of {}", op.call.name(), ret.name());
                return Err(unreadable(i, r, &why));
            }
        }
        (op.end, op.outcome, op.done_at) = (r.t, outcome, i);
    }
    Ok(ops)
}

/// Hand-made histories for checker self-tests.
#[cfg(test)]
pub mod build {
    use mqsim_core::env::Event;
    use mqsim_sim::history::{Body, Call, FaultRecord, Record, Ret};

    /// Records in the order they are added; times in milliseconds.
    #[derive(Default)]
    pub struct History {
        pub records: Vec<Record>,
        next_id: u64,
    }

    /// How a hand-made operation ends.
    pub enum End {
        Ok(Ret),
        Fail(&'static str),
        Info,
        Pending,
    }

    impl History {
        fn push(&mut self, t_ms: u64, node: &str, body: Body) {
            self.records.push(Record { t: t_ms * 1000, node: node.into(), body });
        }

        /// An operation invoked at `start` and completed at `end` (ms).
        pub fn op(&mut self, node: &str, start: u64, end: u64, call: Call, outcome: End) -> u64 {
            self.next_id += 1;
            let id = self.next_id;
            self.push(start, node, Body::Invoke { id, call });
            let body = match outcome {
                End::Ok(ret) => Body::Ok { id, ret },
                End::Fail(e) => Body::Fail { id, error: e.into() },
                End::Info => Body::Info { id, error: "Timeout".into() },
                End::Pending => return id,
            };
            self.push(end, node, body);
            id
        }

        pub fn event(&mut self, t: u64, node: &str, event: Event) {
            self.push(t, node, Body::Event(event));
        }

        pub fn fault(&mut self, t: u64, fault: FaultRecord) {
            self.push(t, "nemesis", Body::Fault(fault));
        }

        /// The records sorted by time, as a run would have recorded them.
        pub fn done(mut self) -> Vec<Record> {
            self.records.sort_by_key(|r| r.t);
            self.records
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: u64, body: Body) -> Record {
        Record { t, node: "n".into(), body }
    }

    #[test]
    fn joins_and_refuses_what_it_cannot_read() {
        let inv = |id| rec(1, Body::Invoke { id, call: Call::Get { key: "/k".into() } });
        let get = Ret::Get { value: None, stat: None, zxid: 1 };
        let joined = vec![inv(1), inv(2), rec(3, Body::Ok { id: 2, ret: get.clone() })];
        let ops = ops(&joined).unwrap();
        assert_eq!((ops[0].outcome, ops[1].end, ops[1].done_at), (Outcome::Pending, 3, 2));
        let bad = [
            vec![rec(3, Body::Ok { id: 9, ret: get.clone() })],
            vec![inv(1), rec(2, Body::Ok { id: 1, ret: get.clone() }), rec(3, Body::Ok { id: 1, ret: get.clone() })],
            vec![inv(1), rec(2, Body::Ok { id: 1, ret: Ret::Delete { zxid: 1 } })],
            vec![inv(1), inv(1)],
        ];
        for h in bad {
            assert_eq!(super::ops(&h).unwrap_err().invariant, UNREADABLE, "{h:?}");
        }
    }
}
