//! `mqsim explain`: the failure story as numbered lines of text, to paste
//! into an issue: time, node, what happened, and the invariant the last line
//! breaks. It tells what the focused view draws, in the same window.

use crate::case::{Case, Verdict};
use crate::exec::Outputs;
use crate::spacetime::{fault_words, notable, short};
use crate::story::{message, Story};
use crate::timeline::secs;
use crate::BadInput;
use mqsim_scenarios::ops::Outcome;
use mqsim_sim::history::{Body, FaultRecord, Record};
use mqsim_sim::trace::Message;
use mqsim_sim::FaultKind;
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Replays `case` with its message trace (in a child process, under the
/// watchdog) and prints its story.
pub fn command(path: &Path, follow: Option<&str>, watchdog: Duration) -> Result<ExitCode, BadInput> {
    let case = Case::load(path)?;
    let follow = follow.map(crate::story::parse_thread).transpose().map_err(BadInput)?;
    let file = std::env::temp_dir().join(format!("mqsim-explain-{}.jsonl", std::process::id()));
    let outputs = Outputs { history: Some(file.clone()), trace: true, ..Outputs::default() };
    let ran = crate::exec::execute(&case.job(outputs), watchdog);
    let text = std::fs::read_to_string(&file);
    let _ = std::fs::remove_file(&file);
    let ran = ran?;
    if let Some(e) = ran.output_error {
        return Err(BadInput(e));
    }
    let Verdict::Fail { invariant, detail, op, .. } = &ran.verdict else {
        println!("nothing to explain: {} now ends {}", case.title(), ran.verdict.line());
        return Ok(ExitCode::from(1));
    };
    if !ran.verdict.same_failure(&case.verdict) {
        println!("note: recorded {}; now {}", case.verdict.line(), ran.verdict.line());
    }
    let text = text.map_err(|e| BadInput(format!("the replay wrote no history: {e}")))?;
    let records = mqsim_sim::history::from_jsonl(&text).map_err(|e| BadInput(format!("the replayed history: {e}")))?;
    let story = Story::of(&records, *op, follow.as_deref(), false);
    for line in explain(&case.title(), &story, invariant, detail) {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A story longer than this many lines loses its routine lines first.
pub const MAX_LINES: usize = 36;

/// One line of the story.
struct Line {
    t: u64,
    node: String,
    text: String,
    /// Routine lines (an exchange that went as expected) go first when the story is too long.
    routine: bool,
}

/// The story's lines, numbered, with a header; the last names the invariant.
pub fn explain(title: &str, story: &Story, invariant: &str, detail: &str) -> Vec<String> {
    let mut lines: Vec<Line> = Vec::new();
    let line = |t: u64, node: &str, text: String, routine: bool| Line { t, node: node.to_string(), text, routine };

    for (r, _) in &story.records {
        match &r.body {
            Body::Fault(FaultRecord::Start { action, for_ms, fault, .. }) => {
                let kind = FaultKind::of(fault).name();
                let since = if r.t < story.from { " (in force since before the window)" } else { "" };
                let what = format!("fault action {action} ({kind}, {for_ms} ms): {}{since}", fault_words(fault));
                lines.push(line(r.t.max(story.from), "nemesis", what, false));
            }
            Body::Fault(FaultRecord::Crash { target, .. }) => {
                lines.push(line(r.t, "nemesis", format!("{target} loses power"), false));
            }
            Body::Event(_) => {
                let v = serde_json::to_value(&r.body).unwrap_or_default();
                lines.push(line(r.t, &r.node, event_words(&v), false));
            }
            _ => {}
        }
    }
    exchanges(story, &mut lines);
    for (i, (o, _)) in story.ops.iter().enumerate() {
        let args = crate::story::fields_text(&serde_json::to_value(o.call).unwrap_or_default(), &["op", "value"]);
        let outcome = match o.outcome {
            Outcome::Ok(ret) => {
                let ret = crate::story::fields_text(&serde_json::to_value(ret).unwrap_or_default(), &["op"]);
                format!("ok {ret}")
            }
            Outcome::Fail(e) => format!("failed: {e}"),
            Outcome::Info(e) => format!("unknown: {e}"),
            Outcome::Pending => "never completed".to_string(),
        };
        let invoke = format!("invokes #{} {} {args}", o.id, o.call.name());
        if story.violating == Some(i) {
            lines.push(line(o.start, o.node, invoke, false));
            let acked = format!("#{} {} completes: {}", o.id, o.call.name(), outcome.trim_end());
            lines.push(line(o.end.min(story.at), o.node, acked, false));
        } else {
            let when = if o.end == u64::MAX { String::new() } else { format!(" (at {})", secs(o.end)) };
            let routine = matches!(o.outcome, Outcome::Ok(_));
            lines.push(line(o.start, o.node, format!("{invoke} → {}{when}", outcome.trim_end()), routine));
        }
    }
    // Nothing after the violation, whose line ends the story.
    lines.retain(|l| l.t <= story.at);
    lines.sort_by_key(|l| l.t);

    // Too long: routine lines go first, then the earliest, as the end of the story matters most.
    let mut left_out = 0;
    while lines.len() > MAX_LINES {
        let i = lines.iter().position(|l| l.routine).unwrap_or(0);
        lines.remove(i);
        left_out += 1;
    }
    let thread = story.thread.as_deref().map_or("everything".to_string(), |t| format!("following {t}"));
    let mut out = vec![format!("{title}: {}–{}, {thread}", secs(story.from), secs(story.at))];
    let width = lines.iter().map(|l| l.node.len()).max().unwrap_or(8);
    for (n, l) in lines.iter().enumerate() {
        out.push(format!("{:>2}. {}  {:<width$}  {}", n + 1, secs(l.t), l.node, l.text));
    }
    let n = lines.len() + 1;
    out.push(format!("{n:>2}. {}  {:<width$}  breaks {invariant}: {detail}", secs(story.at), "checker"));
    if left_out > 0 {
        out.push(format!("({left_out} lines left out, routine ones first; the timeline has them all)"));
    }
    out
}

/// A protocol event in words: `ledger fenced: ledger=34 lac=1`.
fn event_words(v: &Value) -> String {
    let event = v.get("event").and_then(Value::as_str).unwrap_or("event");
    match v.get("step").and_then(Value::as_str) {
        Some(step) => {
            format!("{event} {}: {}", step.replace('_', " "), crate::story::fields_text(v, &["type", "event", "step"]))
        }
        None => format!("{}: {}", event.replace('_', " "), crate::story::fields_text(v, &["type", "event"])),
    }
}

/// The messages as exchanges: a request with its reply on one line at the
/// send time; a message that arrived late gets a second line when it arrives.
/// Routine requests a node sent at one moment share a line.
fn exchanges(story: &Story, lines: &mut Vec<Line>) {
    let msgs: Vec<(&Record, &Message)> =
        story.records.iter().filter_map(|(r, _)| message(r).map(|m| (*r, m))).collect();
    // A reply answers the call of the same caller incarnation and id, between the same nodes.
    let reply_of = |req: &Record, m: &Message| {
        msgs.iter()
            .find(|(r, x)| {
                x.reply
                    && (x.caller, x.call, &x.kind) == (m.caller, m.call, &m.kind)
                    && r.node == m.to
                    && x.to == req.node
                    && r.t >= req.t
            })
            .map(|(r, x)| (*r, *x))
    };
    // Routine requests batched by (time, sender, kind): the receivers and summaries.
    let mut batch: Option<(u64, String, String, Vec<String>)> = None;
    let flush = |batch: &mut Option<(u64, String, String, Vec<String>)>, lines: &mut Vec<Line>| {
        if let Some((t, node, kind, parts)) = batch.take() {
            let text = format!("sends {kind}: {}, each answered as expected", parts.join("; "));
            lines.push(Line { t, node, text, routine: true });
        }
    };
    for &(r, m) in &msgs {
        if m.reply {
            continue;
        }
        let reply = reply_of(r, m);
        let answer = match reply {
            Some((rr, x)) => match (&x.lost, x.received.first()) {
                (_, Some(&at)) => format!("answered {} at {}", short(x), secs(at)),
                (Some(_), None) => format!("answered {} at {}, {}", short(x), secs(rr.t), lost_words(x)),
                (None, None) => format!("answered {} at {}", short(x), secs(rr.t)),
            },
            None => "no answer".to_string(),
        };
        let fate = match (&m.lost, m.received.first()) {
            (Some(_), None) => lost_words(m),
            (_, Some(&at)) if m.delayed_ms > 0 => {
                format!("delayed {} ms by a fault, arrives {}", m.delayed_ms, secs(at))
            }
            _ => String::new(),
        };
        let routine = !notable(m) && reply.is_none_or(|(_, x)| !notable(x));
        if routine {
            let summary = short(m);
            let summary = summary.strip_prefix(m.kind.as_str()).unwrap_or(&summary).trim_start();
            let part = format!("{} {summary}", m.to).trim_end().to_string();
            match &mut batch {
                Some((t, node, kind, parts)) if *t == r.t && *node == r.node && *kind == m.kind => parts.push(part),
                _ => {
                    flush(&mut batch, lines);
                    batch = Some((r.t, r.node.clone(), m.kind.clone(), vec![part]));
                }
            }
            continue;
        }
        flush(&mut batch, lines);
        let fate = match (fate.is_empty(), reply.is_none() && m.lost.is_some()) {
            (true, _) => answer.clone(),
            (false, true) => fate,
            (false, false) => format!("{fate}; {answer}"),
        };
        let text = format!("→ {}: {} — {fate}", m.to, short(m));
        lines.push(Line { t: r.t, node: r.node.clone(), text, routine: false });
        if let (true, Some(&at)) = (m.delayed_ms > 0, m.received.first()) {
            let text = format!("takes the late {} from {} (sent {}); {answer}", short(m), r.node, secs(r.t));
            lines.push(Line { t: at, node: m.to.clone(), text, routine: false });
        }
    }
    flush(&mut batch, lines);
}

fn lost_words(m: &Message) -> String {
    match &m.lost {
        Some(l) => {
            let action = l.action.map_or(String::new(), |a| format!(", fault action {a}"));
            format!("LOST ({}{action})", l.by)
        }
        None => String::new(),
    }
}
