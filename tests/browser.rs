//! Pages in a real browser: report.html and the live dashboard opened in headless Chromium,
//! failing on any script error, checking that every chart drew, and saving a screenshot under
//! the test's output (`target/tmp/screenshots/`). Skipped, saying why, where Chromium is absent
//! (`scripts/test.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::http::Demo;
use crate::support::Sandbox;

pub fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|c| {
        Command::new("which")
            .arg(c)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string()))
    })
}

/// The page after its scripts ran, the browser's log, and a screenshot at `shot`.
pub fn open(browser: &Path, url: &str, shot: &Path, wait_ms: u32) -> (String, String) {
    let common = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2400"];
    let budget = format!("--virtual-time-budget={wait_ms}");
    // A profile of its own each time: two browsers on one profile wait for each other.
    let profile = tempfile::tempdir().unwrap();
    let dom = Command::new(browser)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.path().join("dom").display()))
        .args([budget.as_str(), "--enable-logging=stderr", "--v=0", "--dump-dom", url])
        .output()
        .expect("run chromium");
    let shot_arg = format!("--screenshot={}", shot.display());
    let taken = Command::new(browser)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.path().join("shot").display()))
        .args([budget.as_str(), shot_arg.as_str(), url])
        .output()
        .expect("run chromium");
    assert!(shot.exists(), "chromium took no screenshot: {}", String::from_utf8_lossy(&taken.stderr));
    (String::from_utf8_lossy(&dom.stdout).into_owned(), String::from_utf8_lossy(&dom.stderr).into_owned())
}

pub fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `data-NAME="…"` of the element with `id`.
pub fn attr(dom: &str, id: &str, name: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let tag_end = at + dom[at..].find('>')?;
    let start = dom[..at].rfind('<')?;
    let tag = &dom[start..tag_end];
    let key = format!("{name}=\"");
    let v = tag.find(&key)? + key.len();
    Some(tag[v..v + tag[v..].find('"')?].to_string())
}

/// Console errors and uncaught exceptions in Chromium's log.
pub fn script_errors(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error"))).collect()
}

#[test]
fn report_html_draws_every_chart_in_a_real_browser_with_no_network_and_no_script_error() {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: no chromium on PATH (scripts/test.sh installs it: apt-get install -y chromium)");
        return;
    };
    let demo = Demo::start(&["--latency-scale", "0.05"]);
    let sb = Sandbox::new();
    sb.write(
        "h.toml",
        &format!(
            "[plan]\nname = \"charts\"\n[[phase]]\nname = \"p\"\n[[phase.stage]]\nname = \"load\"\ndriver = \"http\"\n\
             host = \"{}\"\nduration = \"3s\"\nshape = [{{ at = \"0s\", users = 2 }}, {{ at = \"1500ms\", users = 5 }}]\n\
             wait = {{ constant = \"20ms\" }}\nmonitor = {{ every = \"500ms\", pids = [{}] }}\n\
             [[phase.stage.task]]\nmethod = \"POST\"\npath = \"/api/chat\"\njson = true\nbody = '{{\"message\": \"hi\"}}'\n",
            demo.url,
            demo.pid()
        ),
    );
    let r = sb.run(&["run", "h.toml", "--quiet", "--format", "html"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = sb.path().join(r.run_dir()).join("report.html");
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(!html.contains("<script src") && !html.contains("<link "), "the page loads nothing from elsewhere");
    let shot = screenshots().join("report.png");
    let (dom, log) = open(&browser, &format!("file://{}", report.display()), &shot, 3000);
    assert_eq!(script_errors(&log), Vec::<&str>::new());
    assert!(!dom.contains("data-errors="), "a script error on the page");
    let drawn = attr(&dom, "charts", "data-drawn").unwrap();
    // One stage: throughput, latency, users; and memory (runner and target).
    assert_eq!(attr(&dom, "charts", "data-expected").as_deref(), Some("4"), "{dom}");
    assert_eq!(drawn, "4");
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "no screenshot at {}", shot.display());
}
