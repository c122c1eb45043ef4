//! The demo server's endpoints (axum) and how it starts and stops.
//!
//! The fleet suite's services, all on one port under their names: `GET /{service}/health` for
//! each of the 20 agents; chat through the orchestrator, `POST /atlas/chat` with `message` and
//! an optional `conversation_id` (a follow-up to an unknown conversation is a 404); the event
//! bus, `POST /event-bus/publish`, `GET /event-bus/events?topic=&limit=`,
//! `POST /event-bus/ack/{id}`; slow creative work, `POST /{muse|calliope|thalia|erato|clio}/generate`.
//! The stress framework's five: `POST /api/chat`, `/api/agent`, `/api/memory/search`,
//! `/api/code/execute`, `/api/library/search`. `GET /` answers a small static body (for
//! benchmarks). `POST /admin/stall?ms=N` freezes every response for N ms; `GET|POST
//! /admin/config` reads or sets `latency_scale` and `error_rate`. Stored conversations and
//! events are bounded, so a long soak does not grow the server without limit. The dashboard's
//! WebSocket and polling endpoints are in `super::ws`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::behaviour::{Behaviour, Class, Knobs};

/// The fleet suite's agents.
pub const SERVICES: &[&str] = &[
    "atlas",
    "hades",
    "chronos",
    "hephaestus",
    "aegis",
    "athena",
    "hermes",
    "aloy",
    "argus",
    "chiron",
    "scholar",
    "sentinel",
    "event-bus",
    "cerberus",
    "port-manager",
    "muse",
    "calliope",
    "thalia",
    "erato",
    "clio",
];
const CREATIVE: &[&str] = &["muse", "calliope", "thalia", "erato", "clio"];
const MAX_CONVERSATIONS: usize = 100_000;
const MAX_EVENTS: usize = 10_000;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub addr: SocketAddr,
    /// Multiply every endpoint's latency by this (0: answer at once).
    #[arg(long, default_value_t = 1.0)]
    pub latency_scale: f64,
    /// Share of requests to non-health endpoints answered with 503.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Freeze every response for `--freeze-for` at the end of each such period (e.g. 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub freeze_every: Option<Duration>,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub freeze_for: Duration,
    /// Stop by itself after this long (for plans that start it in a parallel stage).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub exit_after: Option<Duration>,
    /// Seed for the latency and error draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Default)]
struct Conversations {
    turns: HashMap<u64, u32>,
    order: VecDeque<u64>,
}

#[derive(Default)]
struct Bus {
    events: VecDeque<(u64, String, Value, bool)>,
}

struct App {
    behaviour: Behaviour,
    hub: Arc<super::ws::Hub>,
    next_id: AtomicU64,
    conversations: Mutex<Conversations>,
    bus: Mutex<Bus>,
}

type Shared = Arc<App>;

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "service unavailable (injected)" }))).into_response()
}

async fn root(State(app): State<Shared>) -> Response {
    let _ = app.behaviour.gate(Class::Static).await;
    "ok\n".into_response()
}

async fn health(State(app): State<Shared>, Path(service): Path<String>) -> Response {
    if !SERVICES.contains(&service.as_str()) {
        return (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no service {service}") }))).into_response();
    }
    let _ = app.behaviour.gate(Class::Health).await;
    Json(json!({ "status": "healthy", "service": service })).into_response()
}

#[derive(Deserialize)]
struct ChatIn {
    #[serde(default)]
    message: String,
    #[serde(default)]
    conversation_id: Option<String>,
}

async fn chat(State(app): State<Shared>, body: Option<Json<ChatIn>>) -> Response {
    let Some(Json(msg)) = body else {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "expected JSON with `message`" }))).into_response();
    };
    if app.behaviour.gate(Class::Chat).await.is_err() {
        return unavailable();
    }
    let mut convs = app.conversations.lock().unwrap_or_else(|p| p.into_inner());
    let (id, turn) = match &msg.conversation_id {
        Some(c) => {
            let Some(n) = c.strip_prefix("c-").and_then(|n| n.parse::<u64>().ok()) else {
                return (StatusCode::NOT_FOUND, Json(json!({ "error": "unknown conversation" }))).into_response();
            };
            match convs.turns.get_mut(&n) {
                Some(t) => {
                    *t += 1;
                    (n, *t)
                }
                None => {
                    return (StatusCode::NOT_FOUND, Json(json!({ "error": "unknown conversation" }))).into_response();
                }
            }
        }
        None => {
            let n = app.next_id.fetch_add(1, Ordering::Relaxed);
            convs.turns.insert(n, 1);
            convs.order.push_back(n);
            if convs.order.len() > MAX_CONVERSATIONS
                && let Some(old) = convs.order.pop_front()
            {
                convs.turns.remove(&old);
            }
            (n, 1)
        }
    };
    Json(json!({
        "conversation_id": format!("c-{id}"),
        "turn": turn,
        "agent": "aria",
        "reply": format!("ARIA (via ATLAS), turn {turn}: {} characters received", msg.message.len()),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct PublishIn {
    topic: String,
    #[serde(default)]
    payload: Value,
}

async fn publish(State(app): State<Shared>, body: Option<Json<PublishIn>>) -> Response {
    let Some(Json(ev)) = body else {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "expected JSON with `topic`" }))).into_response();
    };
    if app.behaviour.gate(Class::Event).await.is_err() {
        return unavailable();
    }
    let id = app.next_id.fetch_add(1, Ordering::Relaxed);
    let mut bus = app.bus.lock().unwrap_or_else(|p| p.into_inner());
    bus.events.push_back((id, ev.topic, ev.payload, false));
    if bus.events.len() > MAX_EVENTS {
        bus.events.pop_front();
    }
    (StatusCode::CREATED, Json(json!({ "id": id, "status": "published" }))).into_response()
}

#[derive(Deserialize)]
struct QueryIn {
    topic: Option<String>,
    limit: Option<usize>,
}

async fn events(State(app): State<Shared>, Query(q): Query<QueryIn>) -> Response {
    if app.behaviour.gate(Class::Event).await.is_err() {
        return unavailable();
    }
    let bus = app.bus.lock().unwrap_or_else(|p| p.into_inner());
    let limit = q.limit.unwrap_or(10).min(1000);
    let found: Vec<Value> = bus
        .events
        .iter()
        .rev()
        .filter(|(_, t, _, _)| q.topic.as_ref().is_none_or(|want| want == t))
        .take(limit)
        .map(|(id, t, p, acked)| json!({ "id": id, "topic": t, "payload": p, "acked": acked }))
        .collect();
    Json(json!({ "count": found.len(), "events": found })).into_response()
}

async fn ack(State(app): State<Shared>, Path(id): Path<u64>) -> Response {
    if app.behaviour.gate(Class::Event).await.is_err() {
        return unavailable();
    }
    let mut bus = app.bus.lock().unwrap_or_else(|p| p.into_inner());
    match bus.events.iter_mut().find(|(i, _, _, _)| *i == id) {
        Some(e) => {
            e.3 = true;
            Json(json!({ "id": id, "acked": true })).into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no event {id}") }))).into_response(),
    }
}

async fn generate(State(app): State<Shared>, Path(service): Path<String>, body: Option<Json<Value>>) -> Response {
    if !CREATIVE.contains(&service.as_str()) {
        return (StatusCode::NOT_FOUND, Json(json!({ "error": format!("{service} does no creative work") })))
            .into_response();
    }
    if app.behaviour.gate(Class::Creative).await.is_err() {
        return unavailable();
    }
    let id = app.next_id.fetch_add(1, Ordering::Relaxed);
    let prompt = body.and_then(|Json(v)| v.get("prompt").and_then(Value::as_str).map(str::len)).unwrap_or(0);
    Json(json!({ "task_id": format!("t-{id}"), "service": service, "status": "done", "prompt_chars": prompt }))
        .into_response()
}

async fn api(app: Shared, class: Class, what: &str, body: Option<Json<Value>>) -> Response {
    if app.behaviour.gate(class).await.is_err() {
        return unavailable();
    }
    let input = body.map(|Json(v)| v).unwrap_or(Value::Null);
    Json(json!({ "ok": true, "endpoint": what, "echo": input })).into_response()
}

#[derive(Deserialize)]
struct StallIn {
    ms: u64,
}

async fn stall(State(app): State<Shared>, Query(q): Query<StallIn>) -> Response {
    app.behaviour.stall(Duration::from_millis(q.ms.min(3_600_000)));
    Json(json!({ "stalled_ms": q.ms })).into_response()
}

async fn get_config(State(app): State<Shared>) -> Response {
    Json(app.behaviour.knobs()).into_response()
}

async fn set_config(State(app): State<Shared>, body: Option<Json<Knobs>>) -> Response {
    let Some(Json(k)) = body else {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "expected {latency_scale, error_rate}" })))
            .into_response();
    };
    if !(k.latency_scale >= 0.0 && (0.0..=1.0).contains(&k.error_rate)) {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "latency_scale >= 0, error_rate in [0, 1]" })))
            .into_response();
    }
    app.behaviour.set_knobs(k);
    Json(k).into_response()
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/{service}/health", get(health))
        .route("/atlas/chat", post(chat))
        .route("/event-bus/publish", post(publish))
        .route("/event-bus/events", get(events))
        .route("/event-bus/ack/{id}", post(ack))
        .route("/{service}/generate", post(generate))
        .route("/api/chat", post(|State(a): State<Shared>, b: Option<Json<Value>>| api(a, Class::Chat, "chat", b)))
        .route("/api/agent", post(|State(a): State<Shared>, b: Option<Json<Value>>| api(a, Class::Agent, "agent", b)))
        .route(
            "/api/memory/search",
            post(|State(a): State<Shared>, b: Option<Json<Value>>| api(a, Class::Memory, "memory_search", b)),
        )
        .route(
            "/api/code/execute",
            post(|State(a): State<Shared>, b: Option<Json<Value>>| api(a, Class::Code, "code_execution", b)),
        )
        .route(
            "/api/library/search",
            post(|State(a): State<Shared>, b: Option<Json<Value>>| api(a, Class::Library, "library_search", b)),
        )
        .route("/admin/stall", post(stall))
        .route("/admin/config", get(get_config).post(set_config))
        .route("/api/dashboard/metrics", get(super::ws::poll))
        .merge(
            Router::new()
                .route("/ws", get(super::ws::upgrade))
                .route("/admin/drop-ws", post(super::ws::drop_all))
                .route("/admin/ws", get(super::ws::status))
                .with_state(Arc::clone(&app.hub)),
        )
        .with_state(app)
}

/// Serve until Ctrl-C, SIGTERM or `--exit-after`. Prints `listening on http://ADDR` once bound.
pub fn serve(args: &DemoArgs) -> Result<(), String> {
    if !(args.latency_scale >= 0.0 && args.latency_scale.is_finite()) {
        return Err(format!("--latency-scale must be 0 or more (got {})", args.latency_scale));
    }
    if !(0.0..=1.0).contains(&args.error_rate) {
        return Err(format!("--error-rate is a share from 0 to 1 (got {})", args.error_rate));
    }
    // A descriptor per connection (thousands of WebSockets): take the hard limit.
    raise_open_files();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e} (is another server using the port?)", args.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let periodic = args.freeze_every.map(|every| (every, args.freeze_for));
        let app = Arc::new(App {
            behaviour: Behaviour::new(
                Knobs { latency_scale: args.latency_scale, error_rate: args.error_rate },
                args.seed,
                periodic,
            ),
            hub: Arc::default(),
            next_id: AtomicU64::new(1),
            conversations: Mutex::default(),
            bus: Mutex::default(),
        });
        println!("listening on http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let exit_after = args.exit_after;
        let stop = async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let term = async move {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let timer = async move {
                match exit_after {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
                _ = timer => {}
            }
        };
        axum::serve(listener, router(app))
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| format!("server stopped: {e}"))
    })
}

/// Raise this process's open-file limit to its hard limit (a WebSocket client or server holds a
/// descriptor per connection, and many systems start processes at 1024; the `ws` driver calls
/// it too); the limit it now has.
pub fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
    let n = lim.rlim_cur as u64;
    n
}
