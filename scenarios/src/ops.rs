//! Client operations joined from a history: each invocation with its completion.

use mqsim_sim::history::Kind;
use mqsim_sim::Record;
use serde_json::Value;
use std::collections::BTreeMap;

/// One client operation, invocation and completion joined.
pub struct Op<'a> {
    pub id: u64,
    pub node: &'a str,
    pub op: &'a str,
    pub start: u64,
    /// `u64::MAX` when it never completed.
    pub end: u64,
    pub outcome: Option<Kind>,
    pub args: &'a Record,
    pub res: Option<&'a Record>,
}

impl<'a> Op<'a> {
    pub fn ok(&self) -> bool {
        self.outcome == Some(Kind::Ok)
    }
    pub fn may_have_happened(&self) -> bool {
        self.outcome != Some(Kind::Fail)
    }
    /// The last moment the operation may take effect.
    pub fn effect_end(&self) -> u64 {
        if self.ok() {
            self.end
        } else {
            u64::MAX
        }
    }
    pub fn arg(&self, f: &str) -> Option<&'a str> {
        self.args.str(f)
    }
    pub fn res_field(&self, f: &str) -> Option<&'a Value> {
        self.res.and_then(|r| r.data.get(f))
    }
    /// A field of the result, decoded.
    pub fn res_as<T: serde::de::DeserializeOwned>(&self, f: &str) -> Option<T> {
        serde_json::from_value(self.res_field(f)?.clone()).ok()
    }
    pub fn describe(&self) -> String {
        let key = self.arg("key").map(|k| format!(" {k}")).unwrap_or_default();
        format!("op #{} {}{key} by {} at {}", self.id, self.op, self.node, secs(self.start))
    }
}

pub fn secs(us: u64) -> String {
    if us == u64::MAX {
        return "never".into();
    }
    format!("{}.{:06}s", us / 1_000_000, us % 1_000_000)
}

pub fn ops(history: &[Record]) -> Vec<Op<'_>> {
    let mut ops: Vec<Op> = Vec::new();
    let mut index = BTreeMap::new();
    for r in history {
        let Some(id) = r.u64("id") else { continue };
        match r.kind {
            Kind::Invoke => {
                index.insert(id, ops.len());
                ops.push(Op {
                    id,
                    node: &r.node,
                    op: r.str("op").unwrap_or(""),
                    start: r.t,
                    end: u64::MAX,
                    outcome: None,
                    args: r,
                    res: None,
                });
            }
            Kind::Ok | Kind::Fail | Kind::Info => {
                if let Some(&i) = index.get(&id) {
                    ops[i].end = r.t;
                    ops[i].outcome = Some(r.kind);
                    ops[i].res = Some(r);
                }
            }
            _ => {}
        }
    }
    ops
}
