//! Draws a failure story as a space-time diagram (SVG): a lane per node
//! involved, time to the right, messages as arrows from send to receipt. A
//! lost message ends in a cross, a delayed one is long, a duplicated one has
//! a second, dashed arrow. The violating operation is marked in red.

use crate::story::{message, threads_of, threads_of_op, Story};
use crate::timeline::{secs, tick_label, tick_step, Esc};
use mqsim_scenarios::ops::Outcome;
use mqsim_sim::history::{Body, FaultRecord, Record};
use mqsim_sim::FaultKind;
use std::collections::BTreeMap;
use std::fmt::Write;

const WIDTH: f64 = 1400.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 40.0;
/// Above a lane's node line: room for event labels; below it: operation tracks.
const ABOVE: f64 = 26.0;
const TRACK: f64 = 9.0;
const MAX_TRACKS: usize = 6;
/// Arrows lost at once are drawn this far (px) toward their receiver's lane.
const STUB: f64 = 0.8;

/// The diagram of `story`, titled `title`, with the violation's line `label`.
pub fn render(title: &str, label: &str, story: &Story) -> String {
    let span = (story.to - story.from).max(1);
    let x = |t: u64| LEFT + (t.clamp(story.from, story.to) - story.from) as f64 * (WIDTH - LEFT - RIGHT) / span as f64;
    let lane_of: BTreeMap<&str, usize> = story.nodes.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();

    // Operations on tracks below their node's line.
    let mut tracks: Vec<Vec<f64>> = vec![Vec::new(); story.nodes.len()];
    let mut bars = Vec::new();
    for (i, (o, _)) in story.ops.iter().enumerate() {
        // Every operation's node is among the story's nodes (see `Story::of`).
        let Some(&lane) = lane_of.get(o.node) else { continue };
        let (x0, x1) = (x(o.start), x(o.end.min(story.to)));
        let ends = &mut tracks[lane];
        let track = crate::timeline::take_track(ends, x0, MAX_TRACKS);
        // Room for the operation's label after its start.
        ends[track] = ends[track].max(x1).max(x0 + 70.0);
        bars.push((i, lane, track, x0, x1.max(x0 + 1.5)));
    }
    let faults: Vec<&Record> = story
        .records
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| matches!(r.body, Body::Fault(FaultRecord::Start { .. })))
        .collect();
    let top = 84.0 + 14.0 * faults.len() as f64;
    let mut lane_y = Vec::new();
    let mut y = top;
    for t in &tracks {
        lane_y.push(y);
        y += ABOVE + 8.0 + t.len().max(1) as f64 * TRACK + 6.0;
    }
    let bottom = y;
    let height = bottom + 26.0;
    let line_y = |lane: usize| lane_y[lane] + ABOVE;
    let bar_y = |lane: usize, track: usize| line_y(lane) + 8.0 + track as f64 * TRACK;

    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"focus\" width=\"{WIDTH}\" height=\"{height:.1}\" \
         viewBox=\"0 0 {WIDTH} {height:.1}\">\n<defs><marker id=\"head\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" \
         markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0 0L8 4L0 8z\" fill=\"#444\"/>\
         </marker><marker id=\"headr\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" markerWidth=\"7\" markerHeight=\"7\" \
         orient=\"auto-start-reverse\"><path d=\"M0 0L8 4L0 8z\" fill=\"#d62728\"/></marker></defs>\n<style>\
         .focus text{{font:11px sans-serif;fill:#222}}.focus .t{{font:bold 15px sans-serif}}\
         .focus .n{{font:12px monospace;text-anchor:end}}.focus .m{{fill:#c00;font-weight:bold}}\
         .msg line{{stroke:#444;stroke-width:1.2}}.msg.reply line{{stroke:#888}}\
         .msg.lost line,.msg.late line{{stroke:#d62728;stroke-width:1.8}}.msg line.copy{{stroke-dasharray:5 3}}\
         .focus .msg text{{font-size:10px;fill:#333}}.focus .msg.lost text,.focus .msg.late text{{fill:#b00}}\
         .cross{{stroke:#d62728;stroke-width:2.5;fill:none}}.focus .op path{{fill:none;stroke-width:4}}\
         .o-ok path{{stroke:#2ca02c}}.o-fail path{{stroke:#999}}.o-info path,.o-pend path{{stroke:#ff7f0e}}\
         .o-pend path{{stroke-dasharray:4 3}}.focus .op text{{font-size:9px;fill:#555}}\
         .focus .violation path{{stroke:#e00;stroke-width:6}}.focus .violation text{{fill:#c00;font-weight:bold;\
         font-size:11px}}.focus .ev text{{font-size:10px;fill:#0a5d6b}}.ev path{{fill:#17becf;stroke:#333;\
         stroke-width:.5}}.off{{opacity:.35}}.hidden{{display:none}}</style>\n<rect width=\"{WIDTH}\" height=\"{height:.1}\" fill=\"#fff\"/>\n"
    );
    let _ = writeln!(s, "<title>{0}</title><text class=\"t\" x=\"10\" y=\"22\">{0}</text>", Esc(title));
    let _ = writeln!(s, "<text class=\"m\" x=\"10\" y=\"42\">{}</text>", Esc(label));
    let about = match &story.thread {
        Some(t) => format!("following {t}"),
        None => "everything in the window".to_string(),
    };
    let left_out = match story.left_out {
        0 => String::new(),
        n => format!("; {n} more messages of the thread left out"),
    };
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"60\">{}–{}, {}{left_out}. Arrows run from send to receipt; a cross: lost; red: lost \
         or delayed by a fault; dashed: a duplicate. Hover for what each said.</text>",
        secs(story.from),
        secs(story.to),
        Esc(&about)
    );

    // Lanes with their node lines.
    for (i, name) in story.nodes.iter().enumerate() {
        let (ly, ny) = (lane_y[i], line_y(i));
        let h = lane_y.get(i + 1).copied().unwrap_or(bottom) - ly;
        if i % 2 == 0 {
            let _ = write!(s, "<rect x=\"0\" y=\"{ly:.1}\" width=\"{WIDTH}\" height=\"{h:.1}\" fill=\"#f6f6f6\"/>");
        }
        let _ = writeln!(
            s,
            "<text class=\"n\" x=\"{:.1}\" y=\"{:.1}\">{}</text><path d=\"M{LEFT} {ny:.1}H{:.1}\" stroke=\"#bbb\"/>",
            LEFT - 8.0,
            ny + 4.0,
            Esc(name),
            WIDTH - RIGHT
        );
    }

    // Time axis.
    let step = tick_step(span);
    let first = story.from.div_ceil(step) * step;
    for t in (first..=story.to).step_by(step as usize) {
        let (tx, l) = (x(t), tick_label(t, step));
        let _ = writeln!(
            s,
            "<path d=\"M{tx:.1} {top:.1}V{bottom:.1}\" stroke=\"#e4e4e4\"/><text x=\"{tx:.1}\" y=\"{:.1}\" \
             text-anchor=\"middle\">{l}</text>",
            bottom + 14.0
        );
    }

    // Faults in force, listed above the lanes and shaded on the lanes they
    // name (on all lanes when they name none).
    for (row, r) in faults.iter().enumerate() {
        let Body::Fault(FaultRecord::Start { action, for_ms, fault, .. }) = &r.body else { continue };
        let kind = FaultKind::of(fault).name();
        let colour = crate::timeline::fault_colour(&kind);
        let until = r.t.saturating_add(for_ms.saturating_mul(1000));
        let (x0, x1) = (x(r.t), x(until));
        let lanes: Vec<usize> = fault.nodes().iter().filter_map(|n| lane_of.get(n).copied()).collect();
        let json = serde_json::to_string(fault).unwrap_or_default();
        let tip = format!("action {action}, {kind} {}–{}: {json}", secs(r.t), secs(until));
        let _ = write!(s, "<g class=\"fault\" fill=\"{colour}\"><title>{}</title><g fill-opacity=\".16\">", Esc(&tip));
        let spans: Vec<(f64, f64)> = match lanes.is_empty() {
            true => vec![(top, bottom)],
            false => lanes.iter().map(|&i| (lane_y[i], lane_y.get(i + 1).copied().unwrap_or(bottom))).collect(),
        };
        for (y0, y1) in spans {
            let _ = write!(s, "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>", x1 - x0, y1 - y0);
        }
        let ty = 80.0 + 14.0 * row as f64;
        let _ = writeln!(
            s,
            "</g><rect x=\"10\" y=\"{:.1}\" width=\"14\" height=\"10\" fill-opacity=\".45\"/><text x=\"30\" \
             y=\"{ty:.1}\">fault action {action} ({kind}), {}–{}: {}</text></g>",
            ty - 9.0,
            secs(r.t),
            secs(until),
            Esc(&fault_words(fault))
        );
    }

    // Operations: bars under their node's line, labelled.
    for &(i, lane, track, x0, x1) in &bars {
        let (o, on) = &story.ops[i];
        let by = bar_y(lane, track);
        let (class, result) = match o.outcome {
            Outcome::Ok(ret) => ("ok", crate::timeline::json_fields(ret, &["op"])),
            Outcome::Fail(e) => ("fail", e.to_string()),
            Outcome::Info(e) => ("info", e.to_string()),
            Outcome::Pending => ("pend", "never completed".to_string()),
        };
        let violation = if story.violating == Some(i) { " violation" } else { "" };
        let off = if *on { "" } else { " off" };
        let args = crate::timeline::json_fields(o.call, &["op"]);
        let done = if o.end == u64::MAX { String::new() } else { format!(" → {class} at {}", secs(o.end)) };
        let tip = format!("#{} {} {args} at {}{done} {result}", o.id, o.call.name(), secs(o.start));
        let _ = writeln!(
            s,
            "<g class=\"op o-{class}{violation}{off}\" data-threads=\"{}\"><title>{}</title><path d=\"M{x0:.1} \
             {by:.1}H{x1:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\">#{} {}</text></g>",
            Esc(&threads_of_op(o).join("|")),
            Esc(&crate::timeline::clip(tip)),
            x0 + 1.0,
            by - 2.5,
            o.id,
            o.call.name()
        );
    }

    // Protocol events on their node's line, labelled.
    for (r, on) in &story.records {
        let Body::Event(_) = &r.body else { continue };
        let Some(&lane) = lane_of.get(r.node.as_str()) else { continue };
        let (ex, ey) = (x(r.t), line_y(lane));
        let v = serde_json::to_value(&r.body).unwrap_or_default();
        let step = v.get("step").or(v.get("event")).and_then(|s| s.as_str()).unwrap_or("event").to_string();
        let tip = format!("{} {}: {}", r.node, secs(r.t), crate::story::fields_text(&v, &["type"]));
        let off = if *on { "" } else { " off" };
        let _ = writeln!(
            s,
            "<g class=\"ev{off}\" data-threads=\"{}\"><title>{}</title><path d=\"M{ex:.1} {:.1}l5 5-5 5-5-5z\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
            Esc(&threads_of(r).join("|")),
            Esc(&tip),
            ey - 5.0,
            ex + 4.0,
            ey - 8.0,
            Esc(&step.replace('_', " "))
        );
    }

    // Messages, as arrows between node lines. Labels, per (lane, side of
    // its line): where each row of labels ends so far.
    let mut labels: BTreeMap<(usize, bool), Vec<f64>> = BTreeMap::new();
    for (r, on) in &story.records {
        let Some(m) = message(r) else { continue };
        let (Some(&a), Some(&b)) = (lane_of.get(r.node.as_str()), lane_of.get(m.to.as_str())) else { continue };
        let (x0, y0, y1) = (x(r.t), line_y(a), line_y(b));
        let lost = m.lost.is_some() && m.received.is_empty();
        let late = m.delayed_ms > 0;
        let mut class = String::from("msg");
        for (yes, c) in [(m.reply, " reply"), (lost, " lost"), (late, " late"), (m.copies > 1, " dup"), (!on, " off")] {
            if yes {
                class.push_str(c);
            }
        }
        let fate = match (&m.lost, m.received.as_slice()) {
            (Some(l), []) => format!("lost: {}{}", l.by, l.action.map_or(String::new(), |a| format!(" (action {a})"))),
            (_, got) => {
                let at: Vec<String> = got.iter().map(|t| secs(*t)).collect();
                format!("received at {}", at.join(", "))
            }
        };
        let delay = if late { format!(", delayed {} ms by a fault", m.delayed_ms) } else { String::new() };
        let tip = format!("{} → {} {}: {} (sent {}{delay}; {fate})", r.node, m.to, m.kind, m.summary, secs(r.t));
        let _ = write!(
            s,
            "<g class=\"{class}\" data-threads=\"{}\" data-kind=\"{}\"><title>{}</title>",
            Esc(&m.threads.join("|")),
            Esc(&m.kind),
            Esc(&crate::timeline::clip(tip))
        );
        // The first copy: to its receipt, or toward the receiver ending in a cross.
        let (xe, ye) = match m.received.first() {
            Some(&t) => (x(t), y1),
            None => {
                let at = m.lost.as_ref().and_then(|l| l.at).unwrap_or(story.to);
                (x(at).max(x0 + 24.0), y0 + (y1 - y0) * STUB)
            }
        };
        let head = if lost {
            ""
        } else if late {
            " marker-end=\"url(#headr)\""
        } else {
            " marker-end=\"url(#head)\""
        };
        let _ = write!(s, "<line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{xe:.1}\" y2=\"{ye:.1}\"{head}/>");
        if lost {
            let _ = write!(s, "<path class=\"cross\" d=\"M{:.1} {:.1}l10 10m0-10l-10 10\"/>", xe - 5.0, ye - 5.0);
        }
        for &t in m.received.iter().skip(1) {
            let _ = write!(
                s,
                "<line class=\"copy\" x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{:.1}\" y2=\"{y1:.1}\" \
                 marker-end=\"url(#head)\"/>",
                x(t)
            );
        }
        if notable(m) {
            // The label sits by the arrow's end, on the receiver's side, and
            // turns back at the right edge. Labels that would overlap one
            // already there take the next row, up to three; then only the tooltip.
            let text = arrow_label(m);
            let w = text.chars().count() as f64 * 5.5;
            let (lx0, anchor) = if xe + 3.0 + w > WIDTH {
                (xe - 6.0 - w, format!("x=\"{:.1}\" text-anchor=\"end\"", xe - 6.0))
            } else {
                (xe + 3.0, format!("x=\"{:.1}\"", xe + 3.0))
            };
            let below = ye <= y0;
            let rows = labels.entry((b, below)).or_default();
            let free = (0..3).find(|&i| rows.get(i).is_none_or(|&end| end < lx0));
            if let Some(row) = free {
                if rows.len() <= row {
                    rows.resize(row + 1, f64::MIN);
                }
                rows[row] = lx0 + w;
                let step = 11.0 * row as f64;
                let ly = if below { ye + 11.0 + step } else { ye - 4.0 - step };
                let _ = write!(s, "<text {anchor} y=\"{ly:.1}\">{}</text>", Esc(&text));
            }
        }
        s.push_str("</g>\n");
    }

    // The violation: a red line at the moment it shows.
    let vx = x(story.at);
    let _ = writeln!(
        s,
        "<path class=\"violation-line\" d=\"M{vx:.1} 66V{bottom:.1}\" stroke=\"#e00\" stroke-width=\"1.5\" \
         stroke-dasharray=\"6 3\"/>"
    );
    s.push_str("</svg>\n");
    s
}

/// Whether a message gets a label: what a fault did to it, an error it
/// carried, a step of recovery (a fence, a recovery add), or a change of a
/// ledger's state in the metadata service.
pub fn notable(m: &mqsim_sim::trace::Message) -> bool {
    m.summary.contains("state=")
        || m.lost.is_some()
        || m.delayed_ms > 0
        || m.copies > 1
        || m.summary.starts_with("Error")
        || m.summary.starts_with("Failed")
        || m.summary.starts_with("Stale")
        || m.summary.contains("fence=true")
        || m.summary.contains("recovery=true")
}

/// A message's summary without sizes and routine fields.
pub fn short(m: &mqsim_sim::trace::Message) -> String {
    // Leave out sizes (`payload=<21 bytes>`) and routine fields.
    let mut kept = String::new();
    let mut rest = m.summary.as_str();
    while let Some(i) = rest.find("=<") {
        let start = rest[..i].rfind(' ').map_or(0, |j| j + 1);
        kept.push_str(&rest[..start]);
        rest = rest[i..].find('>').map_or("", |j| &rest[i + j + 1..]);
    }
    kept.push_str(rest);
    // A ledger's metadata ends with its ensembles: long, and not what a label is for.
    if let Some(i) = kept.find(" ensembles=") {
        kept.truncate(i);
    }
    let routine =
        ["lac=", "recovery=false", "fence=false", "zxid=", "czxid=", "mzxid=", "qw=", "qa=", "path=", "version="];
    let words: Vec<&str> =
        kept.split_whitespace().filter(|w| !routine.iter().any(|r| w.starts_with(r))).take(6).collect();
    words.join(" ")
}

/// A message's label on the diagram: its short summary, and what a fault did to it.
fn arrow_label(m: &mqsim_sim::trace::Message) -> String {
    let mut text = short(m);
    if m.delayed_ms > 0 {
        text.push_str(&format!(" (delayed {} ms)", m.delayed_ms));
    }
    if m.copies > 1 {
        text.push_str(" (duplicated)");
    }
    if let (Some(lost), true) = (&m.lost, m.received.is_empty()) {
        let action = lost.action.map_or(String::new(), |a| format!(", action {a}"));
        text.push_str(&format!(" ✗ lost ({}{action})", lost.by));
    }
    text
}

/// A fault action in a few words: `drop Fence → bookie-4`.
pub fn fault_words(fault: &mqsim_sim::Fault) -> String {
    let v = serde_json::to_value(fault).unwrap_or_default();
    let Some(rule) = v.get("rule") else {
        return crate::story::fields_text(&v, &["kind"]);
    };
    let get = |k: &str| rule.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let effect = get("effect");
    let amount = match effect.as_str() {
        "drop" | "duplicate" => format!(" {}%", rule.get("percent").map_or(String::new(), |p| p.to_string())),
        "delay" => format!(" {} ms", rule.get("ms").map_or(String::new(), |p| p.to_string())),
        "reorder" => format!(" ≤{} ms", rule.get("max_ms").map_or(String::new(), |p| p.to_string())),
        _ => String::new(),
    };
    let kind = match (get("kind").as_str(), rule.get("reply").and_then(|r| r.as_bool())) {
        ("", _) => "messages".to_string(),
        (k, Some(true)) => format!("{k} replies"),
        (k, _) => k.to_string(),
    };
    let from = get("from");
    let to = get("to");
    let route = match (from.is_empty(), to.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(" from {from}"),
        (true, false) => format!(" to {to}"),
        (false, false) => format!(" {from} → {to}"),
    };
    format!("{effect}{amount} {kind}{route}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_thread_is_escaped() {
        let story = Story {
            from: 0,
            to: 1_000,
            at: 1_000,
            thread: Some("key a<&\"b".into()),
            nodes: vec!["n<1>".into()],
            ops: vec![],
            records: vec![],
            violating: None,
            left_out: 0,
        };
        let svg = render("t&", "L1: <x>", &story);
        assert!(svg.contains("following key a&lt;&amp;&quot;b"), "{svg}");
        assert!(!svg.contains("a<&") && !svg.contains("<x>") && !svg.contains("n<1>"), "{svg}");
    }
}
