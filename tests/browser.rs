//! The timeline page (`mqsim replay CASE --timeline OUT.html`) in a real headless
//! browser: the page's script has run, message arrows are there (one lost, with
//! its cross), the violation and the overview's window are marked, `#follow=`
//! hides what the followed thread is not in, and nothing is fetched from the
//! network. It also takes the screenshot that docs/ shows.
//!
//! Ignored by default, as it needs Debian's `chromium`; `.ci/run` installs it and
//! runs this test. `MQSIM_BROWSER_PAGE=FILE` checks a given page instead of the
//! one `mqsim` writes; `MQSIM_UPDATE_SCREENSHOT=1` copies the screenshot to
//! docs/focus-ledger-fencing-21.png; `CHROMIUM=PATH` names the browser.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CASE: &str = "tests/cases/ledger-fencing-21-recovery-reads-no-fence.json";
const THREAD: &str = "ledger 34";
const SCREENSHOT: &str = "docs/focus-ledger-fencing-21.png";

#[test]
#[ignore = "needs chromium; .ci/run installs it and runs it"]
fn the_timeline_page_shows_message_arrows_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("focus.html");
    write_page(root, &page);
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html);

    let chromium = Chromium::find(&dir);
    let url = file_url(&page);

    // Everything in the window (`#follow=` with no thread): arrows, the lost
    // message's cross, the violation, the overview's window; nothing hidden.
    let dom = chromium.dump_dom("all", &format!("{url}#follow="));
    let msgs: Vec<Element> = elements(&dom).filter(|e| e.has_class("msg")).collect();
    assert!(!msgs.is_empty(), "no class=\"msg\" element in the page");
    assert!(msgs.iter().any(|m| m.outer.contains("<line")), "no message has a <line> arrow");
    assert!(
        msgs.iter().any(|m| m.has_class("lost") && elements(m.outer).any(|e| e.has_class("cross"))),
        "no message of class \"msg lost\" holds a class=\"cross\" element"
    );
    assert!(msgs.iter().all(|m| !m.has_class("hidden")), "messages hidden with #follow= (everything)");
    assert!(elements(&dom).any(|e| e.has_class("violation")), "no class=\"violation\" element");
    let overview = elements(&dom)
        .find(|e| e.tag.starts_with("<section") && e.attr("id") == Some("overview"))
        .expect("no <section id=\"overview\">");
    assert!(elements(overview.outer).any(|e| e.has_class("window")), "the overview has no class=\"window\" element");

    // Following a thread: the script hides exactly the messages, operations and
    // events whose data-threads lack it; some messages stay and some go. As
    // loaded, the page follows the violation's own thread.
    let followed = chromium.dump_dom("follow", &format!("{url}#follow={}", THREAD.replace(' ', "%20")));
    assert_follows(&followed, "#follow");
    assert_follows(&chromium.dump_dom("plain", &url), "as loaded");

    // The screenshot for docs/: a PNG of the window's size.
    let png = dir.join("focus.png");
    chromium.screenshot(&url, &png);
    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    assert!(bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", png.display());
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1400, "screenshot width");
    if std::env::var("MQSIM_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        std::fs::copy(&png, root.join(SCREENSHOT)).unwrap();
    }
}

/// Checks that `dom` shows exactly what concerns [`THREAD`].
fn assert_follows(dom: &str, how: &str) {
    let (mut hidden, mut shown) = (0, 0);
    for e in elements(dom).filter(|e| ["msg", "op", "ev"].iter().any(|c| e.has_class(c))) {
        let Some(threads) = e.attr("data-threads") else { continue }; // a legend's sample, say
        let in_thread = threads.split('|').any(|t| t == THREAD);
        assert_eq!(e.has_class("hidden"), !in_thread, "{how}: following {THREAD} got this wrong: {}", e.tag);
        match (e.has_class("msg"), in_thread) {
            (true, true) => shown += 1,
            (true, false) => hidden += 1,
            _ => {}
        }
    }
    assert!(hidden > 0 && shown > 0, "{how}: {hidden} messages hidden, {shown} shown; want some of each");
}

/// The page `mqsim` writes for the case, or a copy of `MQSIM_BROWSER_PAGE`.
fn write_page(root: &Path, page: &Path) {
    if let Some(given) = std::env::var_os("MQSIM_BROWSER_PAGE") {
        std::fs::copy(root.join(given), page).unwrap();
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mqsim"))
        .current_dir(root)
        .args(["replay", CASE, "--timeline"])
        .arg(page)
        .output()
        .unwrap();
    let say = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mqsim replay exited {:?}:\n{say}", out.status.code());
}

/// No absolute http(s) or protocol-relative address where a browser would fetch
/// it (src, href, CSS url(), @import); SVG's xmlns namespace names are not fetched.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for lead in ["src=", "href=", "url(", "@import"] {
        for (at, _) in lower.match_indices(lead) {
            let value = lower[at + lead.len()..].trim_start_matches([' ', '"', '\'']);
            let fetches = ["http:", "https:", "//"].iter().any(|p| value.starts_with(p));
            assert!(!fetches, "the page fetches from the network: {}", &html[at..(at + 80).min(html.len())]);
        }
    }
}

fn file_url(path: &Path) -> String {
    let path = path.canonicalize().unwrap();
    let path = path.to_str().unwrap();
    format!("file://{}", path.replace('%', "%25").replace(' ', "%20").replace('#', "%23"))
}

struct Chromium {
    exe: PathBuf,
    dir: PathBuf,
}

impl Chromium {
    /// `$CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
    fn find(dir: &Path) -> Chromium {
        let exe = std::env::var_os("CHROMIUM").map(PathBuf::from).or_else(|| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
                .find(|p| p.is_file())
        });
        let exe = exe.expect(
            "no Chromium: install Debian's (apt-get install -y chromium; .ci/run does) or set CHROMIUM=/path/to/it",
        );
        Chromium { exe, dir: dir.to_owned() }
    }

    /// The DOM after the page's scripts ran; and, from the browser's net log,
    /// no request that the page made (the browser's own background requests
    /// carry no initiator; all name lookups fail anyway, see `run`).
    fn dump_dom(&self, name: &str, url: &str) -> String {
        let log = self.dir.join(format!("{name}.net.json"));
        let out = self.run(name, &[&format!("--log-net-log={}", log.display()), "--dump-dom", url]);
        let log: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).expect("chromium's net log");
        let start_job = &log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"];
        for event in log["events"].as_array().unwrap().iter().filter(|e| &e["type"] == start_job) {
            let initiator = event["params"]["initiator"].as_str().unwrap_or("not an origin");
            assert!(initiator == "not an origin", "the page ({initiator}) fetched {}", event["params"]["url"]);
        }
        assert!(out.contains("</html>"), "chromium dumped no page for {url}:\n{out}");
        out
    }

    fn screenshot(&self, url: &str, png: &Path) {
        let shot = format!("--screenshot={}", png.display());
        self.run("shot", &[&shot, "--window-size=1400,1000", "--hide-scrollbars", url]);
    }

    /// One headless run with a fresh profile, killed if it takes over a minute;
    /// its stdout. Flags: no sandbox (CI runs as root), no GPU, none of the
    /// browser's background services, and every host name resolves to nothing,
    /// so no request can leave the machine whatever asks for it.
    fn run(&self, name: &str, args: &[&str]) -> String {
        let profile = self.dir.join(format!("profile-{name}"));
        let (stdout, stderr) = (self.dir.join(format!("{name}.out")), self.dir.join(format!("{name}.err")));
        let mut child = Command::new(&self.exe)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            .args(["--no-first-run", "--disable-sync", "--disable-background-networking", "--disable-component-update"])
            .args(["--disable-quic", "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.exe.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium took over 60 s on {args:?}; its stderr is in {}", stderr.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Chromium's stderr is full of harmless D-Bus complaints: shown only on failure.
        let err = std::fs::read_to_string(&stderr).unwrap_or_default();
        assert!(status.success(), "chromium {args:?} exited {:?}:\n{err}", status.code());
        std::fs::read_to_string(&stdout).unwrap()
    }
}

/// One element of a serialized DOM: its start tag and its whole outer text.
struct Element<'a> {
    tag: &'a str,
    outer: &'a str,
}

impl<'a> Element<'a> {
    fn attr(&self, name: &str) -> Option<&'a str> {
        let at = self.tag.find(&format!(" {name}=\""))? + name.len() + 3;
        self.tag[at..].split('"').next()
    }

    fn has_class(&self, class: &str) -> bool {
        self.attr("class").is_some_and(|c| c.split_whitespace().any(|c| c == class))
    }
}

/// Every element of a DOM as Chromium serializes it (double-quoted attributes,
/// an end tag for every non-void element, SVG's included), in document order.
fn elements(dom: &str) -> impl Iterator<Item = Element<'_>> {
    dom.match_indices('<').filter_map(move |(at, _)| {
        let rest = &dom[at + 1..];
        let name_len = rest.find(|c: char| !c.is_ascii_alphanumeric() && c != '-').unwrap_or(rest.len());
        if name_len == 0 {
            return None; // an end tag, comment or doctype
        }
        let tag = &dom[at..at + 1 + rest.find('>')? + 1];
        let name = &rest[..name_len];
        // Find the matching end tag, counting nested elements of the same name.
        let (open, close) = (format!("<{name}"), format!("</{name}>"));
        let mut depth = 0;
        let mut i = at;
        loop {
            let next_open = dom[i + 1..].find(&open).map(|j| i + 1 + j);
            let next_close = dom[i..].find(&close).map(|j| i + j);
            match (next_open, next_close) {
                (Some(o), Some(c)) if o < c => {
                    let after = dom.as_bytes().get(o + open.len()).copied().unwrap_or(b'>');
                    if matches!(after, b' ' | b'>' | b'/' | b'\n' | b'\t') {
                        depth += 1;
                    }
                    i = o;
                }
                (_, Some(c)) if depth > 0 => {
                    depth -= 1;
                    i = c + close.len() - 1;
                }
                (_, Some(c)) => return Some(Element { tag, outer: &dom[at..c + close.len()] }),
                // A void element (<input>, <meta>, ...): just its tag.
                (_, None) => return Some(Element { tag, outer: tag }),
            }
        }
    })
}
