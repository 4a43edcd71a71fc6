//! Writes a run's timeline: the overview of the whole run with the failure
//! window marked, and the focused space-time view of that window. As `.html`
//! both are one self-contained page whose small script follows a thread and
//! zooms; otherwise they are two SVG files, `X.svg` and `X.focus.svg`.

use crate::story::Story;
use crate::timeline::{Esc, Mark};
use mqsim_sim::history::Record;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// What a timeline is drawn from.
pub struct Timeline<'a> {
    pub title: &'a str,
    /// The verdict's line: `L1: ledger 34 closed at entry 1, but …`.
    pub verdict: &'a str,
    /// The history with its message trace merged in.
    pub records: &'a [Record],
    /// The scenario's nodes in drawing order.
    pub lanes: &'a [String],
    pub end_us: u64,
    /// History id of the violating client operation, if any.
    pub violating_op: Option<u64>,
    /// The thread to follow; the violation's own by default.
    pub follow: Option<&'a str>,
}

/// The file beside `path` that holds the focused view of an SVG timeline.
pub fn focus_path(path: &Path) -> PathBuf {
    path.with_extension("focus.svg")
}

/// The files of the timeline at `path`, as (path, text).
pub fn files(path: &Path, t: &Timeline) -> Vec<(PathBuf, String)> {
    let html = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
    let mut story = Story::of(t.records, t.violating_op, t.follow, html);
    story.order_nodes(t.lanes);
    let mark = Mark { label: t.verdict, op: t.violating_op };
    let overview =
        crate::timeline::render(t.title, t.records, t.lanes, t.end_us, Some(&mark), Some((story.from, story.to)));
    let focus_title = format!("Focused view: {}", t.title);
    let focus = crate::spacetime::render(&focus_title, t.verdict, &story);
    if !html {
        return vec![(path.to_path_buf(), overview), (focus_path(path), focus)];
    }
    vec![(path.to_path_buf(), page(t.title, &story, &focus, &overview))]
}

/// One HTML page: controls, the focused view, then the overview.
fn page(title: &str, story: &Story, focus: &str, overview: &str) -> String {
    // The threads present, most frequent first, for the picker.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (r, _) in &story.records {
        for t in crate::story::threads_of(r) {
            *counts.entry(t).or_default() += 1;
        }
    }
    let mut threads: Vec<(String, usize)> = counts.into_iter().collect();
    threads.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    threads.truncate(300);
    let current = story.thread.clone().unwrap_or_default();
    let mut options = String::from("<option value=\"\">everything in the window</option>");
    if !current.is_empty() && !threads.iter().any(|(t, _)| *t == current) {
        threads.insert(0, (current.clone(), 0));
    }
    for (t, n) in &threads {
        let selected = if *t == current { " selected" } else { "" };
        let _ = write!(options, "<option value=\"{0}\"{selected}>{0} ({n})</option>", Esc(t));
    }
    let mut s = String::with_capacity(focus.len() + overview.len() + 4096);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font:13px sans-serif;margin:12px;color:#222}}#controls{{margin:6px 0}}#controls *{{margin-right:6px}}\
         .scroll{{overflow-x:auto;border:1px solid #ddd}}h2{{font-size:14px;margin:16px 0 4px}}</style></head>\n<body>\n\
         <div id=\"controls\"><label>Follow <select id=\"follow\">{options}</select></label>\
         <button id=\"zoom-in\" title=\"zoom in\">+</button><button id=\"zoom-out\" title=\"zoom out\">−</button>\
         <span id=\"shown\"></span></div>\n<section id=\"focus\"><div class=\"scroll\">\n{focus}</div></section>\n\
         <h2>The whole run (the focused window is outlined in red)</h2>\n<section id=\"overview\"><div class=\"scroll\">\
         \n{overview}</div></section>\n<script>\n{SCRIPT}</script>\n</body></html>\n",
        Esc(title)
    );
    s
}

/// Follows a thread (hides what does not concern it) and zooms the focused view.
/// `#follow=ledger%2034` in the address picks the thread on load.
const SCRIPT: &str = r#"(function () {
  const pick = document.getElementById('follow');
  const svg = document.querySelector('#focus svg');
  const items = Array.from(document.querySelectorAll('#focus .msg, #focus .op, #focus .ev'));
  function follow(thread) {
    let shown = 0;
    for (const e of items) {
      const threads = (e.getAttribute('data-threads') || '').split('|');
      const hide = thread !== '' && !threads.includes(thread);
      e.classList.toggle('hidden', hide);
      if (!hide) shown++;
    }
    document.getElementById('shown').textContent = shown + ' of ' + items.length + ' shown';
  }
  const m = /follow=([^&]*)/.exec(location.hash);
  let first = pick.value;
  if (m) {
    try { first = decodeURIComponent(m[1]); } catch (e) { first = m[1]; }
    if (!Array.from(pick.options).some(o => o.value === first)) pick.add(new Option(first, first));
  }
  pick.value = first;
  pick.addEventListener('change', () => follow(pick.value));
  follow(first);
  const base = parseFloat(svg.getAttribute('width'));
  let zoom = 1;
  function rezoom(f) {
    zoom = Math.min(16, Math.max(1, zoom * f));
    svg.setAttribute('width', base * zoom);
    svg.setAttribute('height', parseFloat(svg.viewBox.baseVal.height) * zoom);
  }
  document.getElementById('zoom-in').addEventListener('click', () => rezoom(1.5));
  document.getElementById('zoom-out').addEventListener('click', () => rezoom(1 / 1.5));
})();
"#;
