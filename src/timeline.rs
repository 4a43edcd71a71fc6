//! Renders the history of one run as a standalone SVG timeline: a lane per node, faults shaded, operations as bars.

use mqsim_scenarios::ops::{Op, Outcome};
use mqsim_sim::history::{Body, FaultRecord, Kind, Record};
use mqsim_sim::FaultKind;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write};

/// What to mark on the timeline as the violation.
pub struct Mark<'a> {
    /// One line saying what went wrong.
    pub label: &'a str,
    /// History id of the violating client operation, if any.
    pub op: Option<u64>,
}

const WIDTH: f64 = 1400.0;
/// Room at the left for node names.
const LEFT: f64 = 150.0;
const RIGHT: f64 = 20.0;
const PAD: f64 = 3.0;
/// Each lane has one row for event markers above its operation tracks.
const EVENT_ROW: f64 = 12.0;
const TRACK: f64 = 5.0;
/// A writer pipelining many adds would otherwise make its lane very tall; past
/// this many concurrent operations bars share the least busy track.
const MAX_TRACKS: usize = 8;
/// The lane for faults that name no node, such as a rule on one message kind.
const NETWORK: &str = "(network)";
/// Tooltips are cut here: a final read can return the whole store.
const MAX_TITLE: usize = 300;
/// Bars are at least this wide, so that sub-pixel operations stay visible.
const MIN_BAR: f64 = 0.8;

/// Renders the run as a standalone SVG document (no external resources, no scripts).
/// `lanes`: the scenario's nodes in the order to draw them (its topology's
/// roles); any other node follows, by name.
pub fn render(
    title: &str,
    records: &[Record],
    lanes: &[String],
    end_us: u64,
    mark: Option<&Mark>,
    window: Option<(u64, u64)>,
) -> String {
    let end = records.iter().map(|r| r.t).max().unwrap_or(0).max(end_us).max(1);
    let x = |t: u64| LEFT + t.min(end) as f64 * (WIDTH - LEFT - RIGHT) / end as f64;

    // Each invocation with its completion; an operation may never complete.
    // A history the join cannot read is drawn without its operations.
    let (ops, unreadable): (Vec<Op>, _) = match mqsim_scenarios::ops::ops(records) {
        Ok(ops) => (ops, None),
        Err(v) => (Vec::new(), Some(v.detail)),
    };
    let title = match &unreadable {
        Some(why) => format!("{title} (operations not drawn: {why})"),
        None => title.to_string(),
    };
    // Fault windows and instants, paired by the action index of start and end.
    let mut shades: Vec<Shade> = Vec::new();
    let mut open_faults = BTreeMap::new();
    for r in records {
        let Body::Fault(f) = &r.body else { continue };
        match f {
            FaultRecord::Start { action, for_ms, fault, .. } => {
                // A window without an end record was cut short by the end of the run.
                let to = (*for_ms > 0).then(|| r.t.saturating_add(for_ms.saturating_mul(1000)).min(end));
                open_faults.insert(*action, shades.len());
                let mut nodes: Vec<String> = fault.nodes().into_iter().map(str::to_string).collect();
                nodes.sort();
                nodes.dedup();
                shades.push(Shade { rec: r, kind: FaultKind::of(fault).name(), nodes, to });
            }
            FaultRecord::End { action, .. } => {
                if let Some(i) = open_faults.remove(action) {
                    shades[i].to = Some(r.t);
                }
            }
            // A node lost power: an instant on its lane.
            FaultRecord::Crash { target, .. } => {
                shades.push(Shade { rec: r, kind: "crash".into(), nodes: vec![target.clone()], to: None });
            }
        }
    }

    // Lanes: every node that left a record other than a fault (so not the
    // nemesis itself) or is named by a fault.
    let mut names: BTreeSet<&str> =
        records.iter().filter(|r| !matches!(r.kind(), Kind::Fault | Kind::Message)).map(|r| r.node.as_str()).collect();
    names.extend(shades.iter().flat_map(|s| s.nodes.iter().map(String::as_str)));
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_by_key(|n| (lanes.iter().position(|l| l == n).unwrap_or(usize::MAX), *n));
    if shades.iter().any(|s| s.nodes.is_empty()) {
        names.insert(0, NETWORK);
    }
    let lane_of: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();

    // Stack concurrent operations of a lane on tracks, greedily. A track is free
    // again at the true end of its last operation, not at the end of its widened
    // bar, so that back-to-back operations share a track.
    let mut tracks: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut bars = Vec::with_capacity(ops.len());
    for o in &ops {
        let lane = lane_of[o.node];
        let (x0, x1) = (x(o.start), x(o.end.min(end)));
        let ends = &mut tracks[lane];
        let track = take_track(ends, x0, MAX_TRACKS);
        ends[track] = ends[track].max(x1);
        bars.push((lane, track, x0, x1.max(x0 + MIN_BAR)));
    }

    // Header: title, violation banner, legend (which wraps), axis labels.
    let mut legend = String::new();
    let legend_bottom = write_legend(&mut legend, 56.0, &shades, records);
    let top = legend_bottom + 18.0;
    let mut lane_y = Vec::with_capacity(names.len());
    let mut y = top;
    for t in &tracks {
        lane_y.push(y);
        y += (2.0 * PAD + EVENT_ROW + t.len() as f64 * TRACK).max(20.0);
    }
    let bottom = y;
    let height = bottom + 24.0;
    let lane_h = |i: usize| lane_y.get(i + 1).copied().unwrap_or(bottom) - lane_y[i];

    let mut s = String::with_capacity(64 * 1024 + records.len() * 160);
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.1}\" \
         viewBox=\"0 0 {WIDTH} {height:.1}\">\n<style>text{{font:11px sans-serif;fill:#222}}\
         .t{{font:bold 15px sans-serif}}.n{{font:12px monospace;text-anchor:end}}.m{{fill:#c00;font-weight:bold}}\
         .op path,path.op{{fill:none;stroke-width:3}}.ok{{stroke:#2ca02c}}.fail{{stroke:#999}}.info{{stroke:#ff7f0e}}\
         .pend{{stroke:#ff7f0e;stroke-dasharray:4 3}}"
    );
    for style in EVENT_STYLES {
        let _ = match style.shape {
            Shape::Ring | Shape::Cross | Shape::Bar => {
                write!(s, ".e-{}{{fill:none;stroke:{};stroke-width:1.5}}", style.class, style.colour)
            }
            _ => write!(s, ".e-{}{{fill:{};stroke:#333;stroke-width:.5}}", style.class, style.colour),
        };
    }
    let _ = write!(s, "</style>\n<rect width=\"{WIDTH}\" height=\"{height:.1}\" fill=\"#fff\"/>\n");
    let _ = writeln!(s, "<title>{0}</title><text class=\"t\" x=\"10\" y=\"22\">{0}</text>", Esc(&title));
    s.push_str(&legend);

    // Lanes, alternately shaded, with their names.
    for (i, name) in names.iter().enumerate() {
        let (ly, h, name) = (lane_y[i], lane_h(i), Esc(name));
        if i % 2 == 0 {
            let _ = write!(s, "<rect x=\"0\" y=\"{ly:.1}\" width=\"{WIDTH}\" height=\"{h:.1}\" fill=\"#f4f4f4\"/>");
        }
        let (nx, ny) = (LEFT - 8.0, ly + h / 2.0 + 4.0);
        let _ = writeln!(s, "<text class=\"n\" x=\"{nx:.1}\" y=\"{ny:.1}\">{name}</text>");
    }

    // Time axis: round ticks, gridlines through the lanes, labels above and below.
    let (step, above, below) = (tick_step(end), top - 5.0, bottom + 14.0);
    for t in (0..=end).step_by(step as usize) {
        let (tx, l) = (x(t), tick_label(t, step));
        let _ = writeln!(
            s,
            "<path d=\"M{tx:.1} {top:.1}V{bottom:.1}\" stroke=\"#ddd\"/><g text-anchor=\"middle\">\
             <text x=\"{tx:.1}\" y=\"{above:.1}\">{l}</text><text x=\"{tx:.1}\" y=\"{below:.1}\">{l}</text></g>"
        );
    }

    // Faults under everything else, translucent, one group (and tooltip) per fault.
    for f in &shades {
        let colour = fault_colour(&f.kind);
        let (x0, w, opacity) = match f.to {
            Some(to) => (x(f.rec.t), (x(to) - x(f.rec.t)).max(1.0), 0.18),
            None => (x(f.rec.t) - 1.0, 2.0, 0.8),
        };
        let span = secs(f.rec.t) + &f.to.map_or(String::new(), |to| format!("–{}", secs(to)));
        let json = match &f.rec.body {
            Body::Fault(FaultRecord::Start { fault, .. }) => serde_json::to_string(fault).unwrap_or_default(),
            _ => fields(f.rec),
        };
        let tip = Esc(&clip(format!("{} {span}: {json}", f.kind))).to_string();
        let _ = write!(s, "<g fill=\"{colour}\" fill-opacity=\"{opacity}\"><title>{tip}</title>");
        let lanes: Vec<usize> = match f.nodes.is_empty() {
            true => vec![lane_of[NETWORK]],
            false => f.nodes.iter().map(|n| lane_of[n.as_str()]).collect(),
        };
        for i in lanes {
            let (ry, rh) = (lane_y[i] + 1.0, lane_h(i) - 2.0);
            let _ = write!(s, "<rect x=\"{x0:.1}\" y=\"{ry:.1}\" width=\"{w:.1}\" height=\"{rh:.1}\"/>");
        }
        s.push_str("</g>\n");
    }

    // Operations, one bar each, with their arguments and results as the tooltip.
    let bar_y = |lane: usize, track: usize| lane_y[lane] + PAD + EVENT_ROW + (track as f64 + 0.5) * TRACK;
    s.push_str("<g class=\"op\">\n");
    for (o, &(lane, track, x0, x1)) in ops.iter().zip(&bars) {
        let by = bar_y(lane, track);
        let (class, result) = match o.outcome {
            Outcome::Ok(ret) => ("ok", json_fields(ret, &["op"])),
            Outcome::Fail(e) => ("fail", e.to_string()),
            Outcome::Info(e) => ("info", e.to_string()),
            Outcome::Pending => ("pend", String::new()),
        };
        let outcome = match o.outcome {
            Outcome::Pending => "never completed".to_string(),
            _ => {
                let ms = o.end.saturating_sub(o.start) as f64 / 1000.0;
                format!("{class} at {} ({ms} ms) {result}", secs(o.end))
            }
        };
        let (id, op, args) = (o.id, o.call.name(), json_fields(o.call, &["op"]));
        let tip = Esc(&clip(format!("#{id} {op} {args} at {}: {outcome}", secs(o.start)))).to_string();
        let _ = writeln!(s, "<path class=\"{class}\" d=\"M{x0:.1} {by:.1}H{x1:.1}\"><title>{tip}</title></path>");
    }
    s.push_str("</g>\n");

    // Protocol events as markers in the top row of their node's lane.
    for r in records.iter().filter(|r| matches!(r.kind(), Kind::Event | Kind::Probe)) {
        let style = event_style(r);
        let (ex, ey) = (x(r.t), lane_y[lane_of[r.node.as_str()]] + PAD + EVENT_ROW / 2.0);
        let tip = clip(format!("{} {}: {}", r.node, secs(r.t), fields(r)));
        let _ = write!(s, "<g class=\"e-{}\"><title>{}</title>", style.class, Esc(&tip));
        shape(&mut s, style.shape, ex, ey);
        s.push_str("</g>\n");
    }

    // The focused view's window, outlined across the lanes.
    if let Some((from, to)) = window {
        let (x0, x1) = (x(from), x(to));
        let _ = writeln!(
            s,
            "<rect class=\"window\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d62728\" \
             fill-opacity=\".06\" stroke=\"#d62728\" stroke-dasharray=\"4 2\"><title>the focused view: {}–{}</title></rect>",
            x0 - 2.0,
            x1 - x0 + 4.0,
            bottom - top,
            secs(from),
            secs(to)
        );
    }

    // The violation: a red line at the violating invocation and a red box around
    // its bar, on top of everything; or a red banner when there is no such operation.
    let marked = mark.and_then(|m| m.op).and_then(|id| ops.iter().position(|o| o.id == id));
    if let Some(m) = mark {
        match marked {
            Some(i) => {
                let (lane, track, x0, x1) = bars[i];
                // Put the label on the side with room for it (about 6.2 px per character).
                let room_right = WIDTH - RIGHT - x0;
                let anchor = if room_right >= m.label.chars().count() as f64 * 6.2 || room_right >= x0 - LEFT {
                    format!("x=\"{:.1}\"", x0 + 4.0)
                } else {
                    format!("x=\"{:.1}\" text-anchor=\"end\"", x0 - 4.0)
                };
                let (bx, by, bw) = (x0 - 3.0, bar_y(lane, track) - 4.0, x1 - x0 + 6.0);
                let _ = writeln!(
                    s,
                    "<path d=\"M{x0:.1} 30V{bottom:.1}\" stroke=\"#e00\" stroke-width=\"1.5\"/>\
                     <text class=\"m\" {anchor} y=\"43\">{}</text><rect x=\"{bx:.1}\" y=\"{by:.1}\" width=\"{bw:.1}\" \
                     height=\"8\" fill=\"none\" stroke=\"#e00\" stroke-width=\"2\"/>",
                    Esc(m.label)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "<rect x=\"0\" y=\"30\" width=\"{WIDTH}\" height=\"18\" fill=\"#c00\"/>\
                     <text x=\"10\" y=\"43\" style=\"fill:#fff;font-weight:bold\">{}</text>",
                    Esc(m.label)
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The track (of a lane whose tracks are free again at `ends`) for a bar
/// starting at `x0`: the first free one, a new one while fewer than `max`,
/// else the one that frees first.
pub(crate) fn take_track(ends: &mut Vec<f64>, x0: f64, max: usize) -> usize {
    match ends.iter().position(|&e| e <= x0) {
        Some(i) => i,
        None if ends.len() < max => {
            ends.push(0.0);
            ends.len() - 1
        }
        None => (0..ends.len()).min_by(|&a, &b| ends[a].total_cmp(&ends[b])).unwrap_or(0),
    }
}

/// A fault's shading: a window, or an instant when `to` is `None`.
struct Shade<'a> {
    rec: &'a Record,
    kind: String,
    /// The nodes it affects; empty for the whole network.
    nodes: Vec<String>,
    to: Option<u64>,
}

/// What kind of fault this is, as `mqsim list` names it; message rules by their effect.
pub(crate) fn fault_colour(kind: &str) -> &'static str {
    match kind {
        "crash" => "#333",
        "pause" => "#9467bd",
        "isolate" => "#393b79",
        "partition" => "#1f77b4",
        "one-way" => "#17becf",
        "drop" => "#bcbd22",
        "delay" => "#e7ba52",
        "duplicate" => "#8ca252",
        "reorder" => "#ad494a",
        "disk-corrupt" => "#8c564b",
        "disk-read-flips" => "#e377c2",
        "disk-errors" => "#843c39",
        "slow-fsync" => "#c49c94",
        "clock-skew" | "clock-drift" | "clock-jump" => "#6b6ecf",
        _ => "#999",
    }
}

/// Legend rows from `y`: fault kinds present, operation outcomes, event markers
/// present. Returns the bottom of the last row.
fn write_legend(s: &mut String, mut y: f64, shades: &[Shade], records: &[Record]) -> f64 {
    let mut kinds: Vec<&str> = Vec::new();
    for f in shades {
        if !kinds.contains(&f.kind.as_str()) {
            kinds.push(&f.kind);
        }
    }
    let used: BTreeSet<&str> = records
        .iter()
        .filter(|r| matches!(r.kind(), Kind::Event | Kind::Probe))
        .map(|r| event_style(r).class)
        .collect();
    let mut x = 10.0;
    let mut item = |s: &mut String, label: &str, swatch: &dyn Fn(&mut String, f64, f64)| {
        let w = 22.0 + label.chars().count() as f64 * 6.2 + 12.0;
        if x + w > WIDTH - RIGHT {
            (x, y) = (10.0, y + 16.0);
        }
        swatch(s, x + 8.0, y);
        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>", x + 20.0, y + 4.0, Esc(label));
        x += w;
    };
    for k in kinds {
        let fill = fault_colour(k);
        item(s, k, &|s, x, y| {
            let (rx, ry) = (x - 6.0, y - 5.0);
            let _ = write!(
                s,
                "<rect x=\"{rx:.1}\" y=\"{ry:.1}\" width=\"12\" height=\"10\" fill=\"{fill}\" fill-opacity=\".35\"/>"
            );
        });
    }
    for (class, label) in [("ok", "ok"), ("fail", "fail"), ("info", "unknown (info)"), ("pend", "never completed")] {
        item(s, label, &|s, x, y| {
            let _ = write!(s, "<path class=\"op {class}\" d=\"M{:.1} {y:.1}h14\"/>", x - 7.0);
        });
    }
    for style in EVENT_STYLES.iter().filter(|st| used.contains(st.class)) {
        item(s, style.label, &|s, x, y| {
            let _ = write!(s, "<g class=\"e-{}\">", style.class);
            shape(s, style.shape, x, y);
            s.push_str("</g>");
        });
    }
    y + 8.0
}

#[derive(Clone, Copy)]
enum Shape {
    Circle,
    Ring,
    Diamond,
    Square,
    TriangleRight,
    TriangleLeft,
    Star,
    Cross,
    Bar,
}

struct EventStyle {
    class: &'static str,
    label: &'static str,
    shape: Shape,
    colour: &'static str,
}

const fn style(class: &'static str, label: &'static str, shape: Shape, colour: &'static str) -> EventStyle {
    EventStyle { class, label, shape, colour }
}

/// The ledger steps that tell the story of a violation (fence, recovery, ensemble
/// change, ownership change) get their own shape and colour; the rest are muted.
const EVENT_STYLES: &[EventStyle] = &[
    style("created", "ledger created", Shape::Circle, "#1f77b4"),
    style("ensemble_changed", "ensemble changed", Shape::Diamond, "#9467bd"),
    style("recovery_started", "recovery started", Shape::TriangleRight, "#17becf"),
    style("fenced", "fenced", Shape::Square, "#111"),
    style("recovery_closed", "recovery closed", Shape::TriangleLeft, "#17becf"),
    style("closed", "ledger closed", Shape::Circle, "#888"),
    style("ownership", "ownership change", Shape::Star, "#f0b400"),
    style("session_expired", "session expired", Shape::Ring, "#9467bd"),
    style("storage", "disk failure / corruption", Shape::Cross, "#8c564b"),
    style("replication", "re-replication", Shape::Diamond, "#c49c94"),
    style("recovered", "recovered from disk", Shape::Bar, "#999"),
    style("probe", "coverage probe", Shape::Ring, "#2ca02c"),
    style("other", "other event", Shape::Diamond, "#ddd"),
];

fn event_style(r: &Record) -> &'static EventStyle {
    let name = match &r.body {
        Body::Probe { .. } => "probe".to_string(),
        body => {
            let v = serde_json::to_value(body).unwrap_or_default();
            v.get("step").or(v.get("event")).and_then(Value::as_str).unwrap_or("").to_string()
        }
    };
    let class = match name.as_str() {
        "disk_failed" | "checksum_failed" | "refuses_corrupt_state" | "expiry_rolled_back" => "storage",
        n if n.contains("replicat") => "replication",
        n if ["owner", "leader", "elect", "lock", "lease"].iter().any(|w| n.contains(w)) => "ownership",
        n => n,
    };
    EVENT_STYLES.iter().find(|st| st.class == class).unwrap_or(&EVENT_STYLES[EVENT_STYLES.len() - 1])
}

/// A marker about 9 px across centred on (x, y); its class gives the colour.
fn shape(s: &mut String, shape: Shape, x: f64, y: f64) {
    let _ = match shape {
        Shape::Circle | Shape::Ring => write!(s, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\"/>"),
        Shape::Diamond => write!(s, "<path d=\"M{x:.1} {:.1}l4.5 4.5-4.5 4.5-4.5-4.5z\"/>", y - 4.5),
        Shape::Square => write!(s, "<path d=\"M{:.1} {:.1}h7v7h-7z\"/>", x - 3.5, y - 3.5),
        Shape::TriangleRight => write!(s, "<path d=\"M{:.1} {:.1}l8 4.5-8 4.5z\"/>", x - 4.0, y - 4.5),
        Shape::TriangleLeft => write!(s, "<path d=\"M{:.1} {:.1}l-8 4.5 8 4.5z\"/>", x + 4.0, y - 4.5),
        Shape::Cross => write!(s, "<path d=\"M{:.1} {:.1}l6 6m0-6l-6 6\"/>", x - 3.0, y - 3.0),
        Shape::Bar => write!(s, "<path d=\"M{x:.1} {:.1}v8\"/>", y - 4.0),
        Shape::Star => {
            // Five points: radius 5 at even corners, 2 at odd ones, the first straight up.
            let points: Vec<String> = (0..10)
                .map(|i| {
                    let (r, a) = (if i % 2 == 0 { 5.0 } else { 2.0 }, std::f64::consts::PI * (i as f64 / 5.0 - 0.5));
                    format!("{:.1},{:.1}", x + r * a.cos(), y + r * a.sin())
                })
                .collect();
            write!(s, "<polygon points=\"{}\"/>", points.join(" "))
        }
    };
}

/// What a record says, as compact JSON without its time, node and type.
fn fields(r: &Record) -> String {
    json_fields(&r.body, &["type"])
}

/// `v` as a compact JSON object without the fields `skip`; "" when none are left.
pub(crate) fn json_fields(v: &impl serde::Serialize, skip: &[&str]) -> String {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => {
            let rest: Map<String, Value> = m.into_iter().filter(|(k, _)| !skip.contains(&k.as_str())).collect();
            if rest.is_empty() {
                String::new()
            } else {
                Value::Object(rest).to_string()
            }
        }
        Ok(v) => v.to_string(),
        Err(_) => String::new(),
    }
}

pub(crate) fn clip(mut s: String) -> String {
    if let Some((i, _)) = s.char_indices().nth(MAX_TITLE) {
        s.truncate(i);
        s.push('…');
    }
    s
}

/// Simulated time as seconds with microsecond precision, the way checkers print it.
pub(crate) fn secs(us: u64) -> String {
    format!("{}.{:06}s", us / 1_000_000, us % 1_000_000)
}

/// A round tick interval giving at most about 16 ticks.
pub(crate) fn tick_step(end: u64) -> u64 {
    let mut unit = 1u64;
    loop {
        for m in [1, 2, 5] {
            if end / (unit * m) <= 16 {
                return unit * m;
            }
        }
        unit *= 10;
    }
}

/// A tick label in seconds, with only as many decimals as the step needs.
pub(crate) fn tick_label(t: u64, step: u64) -> String {
    let decimals = (0..6).find(|&d| step.is_multiple_of(10u64.pow(6 - d))).unwrap_or(6);
    format!("{:.*}s", decimals as usize, t as f64 / 1e6)
}

/// Escapes text for XML content and attribute values, and drops the control
/// characters XML 1.0 cannot carry at all.
pub(crate) struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&apos;")?,
                '\t' | '\n' | '\r' => f.write_char(c)?,
                c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => f.write_char('\u{fffd}')?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqsim_core::env::{Event, LedgerEvent};
    use mqsim_sim::history::{Call, Ret};
    use mqsim_sim::net::{Effect, FilterRule};
    use mqsim_sim::Fault;

    fn rec(t: u64, node: &str, body: Body) -> Record {
        Record { t, node: node.to_string(), body }
    }

    fn sample() -> Vec<Record> {
        let isolate = Fault::Isolate { node: "bookie-1".into() };
        // A message rule naming no node: it belongs on the network lane.
        let rule = Fault::Filter {
            rule: FilterRule {
                from: None,
                to: None,
                kind: Some(mqsim_core::bookie::kind::FENCE),
                reply: None,
                effect: Effect::Drop { percent: 50 },
            },
        };
        let start = |action, for_ms, fault| Body::Fault(FaultRecord::Start { action, for_ms, fault, hit: None });
        vec![
            rec(1_000, "writer-0", Body::Invoke { id: 1, call: Call::Add { ledger: 0, value: "a<b&c".into() } }),
            rec(5_000, "writer-0", Body::Ok { id: 1, ret: Ret::Add { entry: 0 } }),
            rec(6_000, "writer-0", Body::Invoke { id: 2, call: Call::Add { ledger: 0, value: "x".into() } }),
            rec(7_000, "bookie-1", Body::Event(Event::Ledger(LedgerEvent::Fenced { ledger: 0, lac: 0 }))),
            rec(2_000, "nemesis", start(0, 3, isolate)),
            rec(3_000, "nemesis", start(1, 9, rule)),
            rec(4_000, "meta-0", Body::Event(Event::SessionExpired { session: 1 })),
        ]
    }

    #[test]
    fn escapes_text() {
        assert_eq!(Esc("a<b>&\"c'\u{1}").to_string(), "a&lt;b&gt;&amp;&quot;c&apos;\u{fffd}");
        let svg =
            render("t <&> \"x\"", &sample(), &[], 10_000, Some(&Mark { label: "L1: <bad> & worse", op: None }), None);
        assert!(svg.contains("t &lt;&amp;&gt; &quot;x&quot;"));
        assert!(svg.contains("L1: &lt;bad&gt; &amp; worse"));
        assert!(svg.contains("a&lt;b&amp;c"));
        assert!(!svg.contains("a<b"));
    }

    #[test]
    fn orders_lanes_and_shades_faults_on_their_lanes() {
        let lanes = ["meta-0", "bookie-1", "writer-0"].map(String::from);
        let svg = render("t", &sample(), &lanes, 10_000, None, None);
        let pos = |s: &str| svg.find(s).unwrap_or_else(|| panic!("{s} missing"));
        // Network first (a rule naming no node), then the scenario's lanes in order.
        assert!(pos(">(network)<") < pos(">meta-0<"));
        assert!(pos(">meta-0<") < pos(">bookie-1<") && pos(">bookie-1<") < pos(">writer-0<"));
        // The other way round when the topology says so.
        let reversed = ["writer-0", "bookie-1", "meta-0"].map(String::from);
        let svg = render("t", &sample(), &reversed, 10_000, None, None);
        assert!(svg.find(">writer-0<").unwrap() < svg.find(">meta-0<").unwrap());
        let svg = render("t", &sample(), &lanes, 10_000, None, None);
        let pos = |s: &str| svg.find(s).unwrap_or_else(|| panic!("{s} missing"));
        // The isolation shades exactly one lane, the one bookie-1's name is centred on.
        let attr = |s: &str, name: &str| -> f64 {
            let v = &s[s.find(&format!(" {name}=\"")).expect(name) + name.len() + 3..];
            v[..v.find('"').unwrap()].parse().unwrap()
        };
        let group = &svg[pos("<title>isolate")..];
        let group = &group[..group.find("</g>").unwrap()];
        assert_eq!(group.matches("<rect").count(), 1);
        let rect = &group[group.find("<rect").unwrap()..];
        let name_y = |name: &str| attr(&svg[svg[..pos(&format!(">{name}<"))].rfind("<text").unwrap()..], "y");
        let centre = attr(rect, "y") + attr(rect, "height") / 2.0 + 4.0;
        assert!((centre - name_y("bookie-1")).abs() < 0.11, "{centre} vs {}", name_y("bookie-1"));
        // The message rule names no node: it shades the network lane.
        let group = &svg[pos("<title>drop")..];
        let rect = &group[group.find("<rect").unwrap()..];
        assert!((attr(rect, "y") + attr(rect, "height") / 2.0 + 4.0 - name_y("(network)")).abs() < 0.11);
        assert!(svg.contains("<title>drop 0.003000s–0.010000s"));
    }

    #[test]
    fn marks_the_violating_op_and_is_deterministic() {
        let mark = Mark { label: "L1: entry 0 lost", op: Some(1) };
        let svg = render("t", &sample(), &[], 10_000, Some(&mark), None);
        assert!(svg.contains("fill=\"none\" stroke=\"#e00\" stroke-width=\"2\""), "red box around op 1");
        assert!(svg.contains("class=\"m\"") && svg.contains("L1: entry 0 lost"));
        assert!(!svg.contains("fill=\"#c00\""), "no banner when the op is found");
        assert!(svg.contains("class=\"pend\""), "op 2 never completed");
        assert!(svg.contains("class=\"e-fenced\"") && svg.contains("class=\"e-session_expired\""));
        assert_eq!(svg, render("t", &sample(), &[], 10_000, Some(&mark), None));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(72_000_000), 5_000_000);
        assert_eq!(tick_label(5_000_000, 5_000_000), "5s");
        assert_eq!(tick_step(1_000), 100);
        assert_eq!(tick_label(200, 100), "0.0002s");
        assert_eq!(tick_label(1_500_000, 500_000), "1.5s");
    }
}
