//! The dashboard's routes (axum): `/` the live page (report.html in live mode), `/events` the
//! page's data as Server-Sent Events — the whole history so far in every message, so a browser
//! that connects late draws everything — `/api/stats` the whole report tree as JSON, `/metrics`
//! Prometheus' text format. Listens on loopback unless told otherwise.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::Stream;

use super::snapshot::{Fresh, Snapshot};
use crate::analyze::charts::LiveCharts;
use crate::report::Renderer;

/// How often the page's data is pushed (and at most how often it is recomputed).
const EVERY: Duration = Duration::from_secs(1);

struct App {
    fresh: Fresh,
    renderer: Renderer,
}

type Shared = Arc<App>;

/// A dashboard being served: where, and how to tell it the run directory.
pub struct Dashboard {
    pub addr: SocketAddr,
    dir: Arc<Mutex<Option<PathBuf>>>,
    app: Shared,
}

impl Dashboard {
    /// The run directory to show (a run that has just created it).
    pub fn show(&self, dir: PathBuf) {
        if let Ok(mut d) = self.dir.lock() {
            *d = Some(dir);
        }
    }

    /// The run is over: analyze it once more now and give the browsers watching a moment to
    /// receive that last state before the process ends.
    pub fn settle(&self) {
        self.app.fresh.finish();
        let _ = self.app.fresh.get();
        std::thread::sleep(EVERY + Duration::from_millis(500));
    }
}

fn unavailable(why: String) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], why).into_response()
}

/// A page for before the run has data: it reloads itself.
fn waiting(why: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"1\"><title>planrun — waiting</title></head><body><p id=\"waiting\">{}: this page reloads itself.</p></body></html>",
        why.replace('&', "&amp;").replace('<', "&lt;")
    );
    Html(body).into_response()
}

async fn snapshot(app: &Shared) -> Result<Arc<Snapshot>, String> {
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || app.fresh.get()).await.map_err(|e| e.to_string())?
}

async fn page(State(app): State<Shared>) -> Response {
    match snapshot(&app).await {
        Ok(s) => match app.renderer.render_live(&s.report, &s.page_data) {
            Ok(html) => Html(html).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Err(why) => waiting(&why),
    }
}

async fn stats(State(app): State<Shared>) -> Response {
    match snapshot(&app).await {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s.stats.clone()).into_response(),
        Err(why) => unavailable(why),
    }
}

async fn events(State(app): State<Shared>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = futures::stream::unfold((app, None::<Arc<Snapshot>>), |(app, last)| async move {
        loop {
            if last.is_some() {
                tokio::time::sleep(EVERY).await;
            }
            if let Ok(s) = snapshot(&app).await {
                // Only a new analysis is sent again.
                if last.as_ref().is_none_or(|l| !Arc::ptr_eq(l, &s)) {
                    let ev = SseEvent::default().data(s.page_data.clone());
                    return Some((Ok(ev), (app, Some(s))));
                }
            } else if last.is_none() {
                tokio::time::sleep(EVERY).await;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Prometheus' text exposition format, from the same analysis.
fn prometheus(s: &Snapshot) -> String {
    let r = &s.report;
    let mut out = String::new();
    let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let stages = serde_json::to_value(&r.metrics.stages).unwrap_or_default();
    let rows = stages.as_array().cloned().unwrap_or_default();
    let num = |row: &serde_json::Value, k: &str| row.get(k).and_then(|v| v.as_f64());
    let series: &[(&str, &str, &str, &str)] = &[
        ("planrun_events_total", "counter", "count", "Events the stage wrote, its own start and end rows aside."),
        ("planrun_measured_ok_total", "counter", "ok", "Measured events that succeeded."),
        ("planrun_measured_failed_total", "counter", "failed", "Measured events that failed."),
        ("planrun_throughput_per_second", "gauge", "throughput", "Events per second over the stage's window."),
        ("planrun_cost_usd_total", "counter", "cost_usd", "Cost so far, USD."),
    ];
    for (name, kind, field, help) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for row in &rows {
            if let Some(v) = num(row, field) {
                let (p, st) = (row["phase"].as_str().unwrap_or(""), row["stage"].as_str().unwrap_or(""));
                let _ = writeln!(out, "{name}{{phase=\"{}\",stage=\"{}\"}} {v}", esc(p), esc(st));
            }
        }
    }
    let _ =
        writeln!(out, "# HELP planrun_latency_ms Latency percentiles per stage, ms.\n# TYPE planrun_latency_ms gauge");
    for row in &rows {
        let (p, st) = (row["phase"].as_str().unwrap_or(""), row["stage"].as_str().unwrap_or(""));
        for (q, field) in [("0.5", "latency_p50"), ("0.95", "latency_p95"), ("0.99", "latency_p99")] {
            if let Some(v) = num(row, field) {
                let _ = writeln!(
                    out,
                    "planrun_latency_ms{{phase=\"{}\",stage=\"{}\",quantile=\"{q}\"}} {v}",
                    esc(p),
                    esc(st)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP planrun_users Users (or connections) running in the latest bucket.\n# TYPE planrun_users gauge"
    );
    let charts = s
        .live
        .as_ref()
        .and_then(|v| v.get("stages"))
        .cloned()
        .unwrap_or_else(|| serde_json::to_value(&r.charts.stages).unwrap_or_default());
    for st in charts.as_array().cloned().unwrap_or_default() {
        let users = st.get("users").and_then(|u| u.as_array()).and_then(|u| u.last()).and_then(|u| u.as_f64());
        if let (Some(u), Some((phase, stage))) = (users, st["key"].as_str().and_then(|k| k.split_once('/'))) {
            let _ = writeln!(out, "planrun_users{{phase=\"{}\",stage=\"{}\"}} {u}", esc(phase), esc(stage));
        }
    }
    // A criterion's status is a label (pass, fail, no_data, skipped): a 0 is not "failed" for
    // one that has no data yet. Each family's samples together, as the format asks.
    let labels = |c: &crate::analyze::report_data::CriterionResult| {
        format!("check=\"{}\",scope=\"{}\"", esc(&c.check), esc(&c.scope))
    };
    let _ = writeln!(
        out,
        "# HELP planrun_criterion_pass 1 while a criterion holds; its status as a label.\n# TYPE planrun_criterion_pass gauge"
    );
    for c in &r.criteria {
        let status =
            serde_json::to_value(c.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let _ = writeln!(out, "planrun_criterion_pass{{{},status=\"{status}\"}} {}", labels(c), u8::from(c.pass));
    }
    let _ = writeln!(
        out,
        "# HELP planrun_criterion_observed A criterion's observed value.\n# TYPE planrun_criterion_observed gauge"
    );
    for c in &r.criteria {
        if let Some(v) = c.observed {
            let _ = writeln!(out, "planrun_criterion_observed{{{}}} {v}", labels(c));
        }
    }
    let _ = writeln!(out, "# HELP planrun_confidence The run's confidence so far.\n# TYPE planrun_confidence gauge");
    let _ = writeln!(out, "planrun_confidence {}", r.verdict.confidence);
    out
}

async fn metrics(State(app): State<Shared>) -> Response {
    match snapshot(&app).await {
        Ok(s) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus(&s)).into_response(),
        Err(why) => unavailable(why),
    }
}

/// Whether a Host header names this machine's loopback: `localhost`, or a loopback address
/// (`127.0.0.1`, `127.0.0.2`, `[::1]`), with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Start serving on `addr` (in the background, on a runtime of its own), showing `dir` — or,
/// with None, the run directory given later (`Dashboard::show`) — with its charts from `live`
/// when the run is watched as it goes.
pub fn serve(addr: SocketAddr, dir: Option<PathBuf>, live: Option<Arc<LiveCharts>>) -> Result<Dashboard, String> {
    let renderer = Renderer::new(None).map_err(|e| e.to_string())?;
    let shared_dir = Arc::new(Mutex::new(dir));
    let app = Arc::new(App { fresh: Fresh::new(Arc::clone(&shared_dir), live), renderer });
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("the dashboard cannot listen on {addr}: {e}"))?;
    let bound = std_listener.local_addr().map_err(|e| e.to_string())?;
    std_listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let loopback = bound.ip().is_loopback();
    let router = Router::new()
        .route("/", get(page))
        .route("/events", get(events))
        .route("/api/stats", get(stats))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&app))
        // On loopback, only pages of this machine may ask (no DNS rebinding from a web page).
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| req.uri().authority().map(|a| a.to_string()))
                    .unwrap_or_default();
                if loopback && !loopback_host(&host) {
                    return (StatusCode::FORBIDDEN, "this dashboard answers requests for 127.0.0.1 or localhost only")
                        .into_response();
                }
                next.run(req).await
            },
        ));
    std::thread::Builder::new()
        .name("planrun-dashboard".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) {
                    let _ = axum::serve(listener, router).await;
                }
            });
        })
        .map_err(|e| e.to_string())?;
    Ok(Dashboard { addr: bound, dir: shared_dir, app: Arc::clone(&app) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_hosts_are_told_apart() {
        for ok in ["127.0.0.1:8090", "localhost:1", "LOCALHOST", "[::1]:8090", "[::1]", "127.0.0.2:9"] {
            assert!(super::loopback_host(ok), "{ok}");
        }
        for no in ["attacker.example", "attacker.example:8090", "10.0.0.5:8090", "", "127.0.0.1.evil:80"] {
            assert!(!super::loopback_host(no), "{no}");
        }
    }
}
