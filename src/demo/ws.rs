//! The demo server's dashboard side, for the `ws` driver and the dashboard plan: `GET /ws`
//! upgrades to a WebSocket that echoes every text or binary message back as it came (a client
//! measures its round trip from the sequence number and send time it put in), and with
//! `?push=N&every_ms=M` also pushes a metrics update for N simulated agents every M ms
//! (`{"type":"metrics","seq":K,"sent_us":WALL_US,"agents":[{"id":…,"cpu":…,"mem_mb":…},…]}`;
//! one frame is built per tick and shared by every connection that asked for the same N and
//! M). `GET /api/dashboard/metrics?agents=N` answers the same update for polling clients.
//! `POST /admin/drop-ws` closes every WebSocket open at that moment (close code 1012, "service
//! restart"), once, so clients' reconnection can be tested. `GET /admin/ws` says how many are open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, watch};

/// Most agents one update may carry.
const MAX_AGENTS: u32 = 100_000;

/// What the WebSocket side keeps.
pub struct Hub {
    /// Bumped by `/admin/drop-ws`: every connection open then closes.
    drops: watch::Sender<u64>,
    open: AtomicU64,
    /// One pusher per (agents, every_ms).
    pushers: Mutex<HashMap<(u32, u64), broadcast::Sender<Utf8Bytes>>>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub { drops: watch::channel(0).0, open: AtomicU64::new(0), pushers: Mutex::default() }
    }
}

/// A metrics update for `agents` simulated agents, as JSON text.
fn update(seq: u64, agents: u32) -> String {
    use std::fmt::Write;
    let sent_us = chrono::Utc::now().timestamp_micros();
    let mut s = String::with_capacity(64 + agents as usize * 48);
    let _ = write!(s, "{{\"type\":\"metrics\",\"seq\":{seq},\"sent_us\":{sent_us},\"agents\":[");
    for i in 0..agents as u64 {
        // Deterministic, varied values: a cheap hash of (tick, agent).
        let h = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)) >> 40;
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            s,
            "{sep}{{\"id\":\"agent-{i}\",\"cpu\":{:.1},\"mem_mb\":{}}}",
            (h % 1000) as f64 / 10.0,
            64 + h % 448
        );
    }
    s.push_str("]}");
    s
}

impl Hub {
    fn subscribe(self: &Arc<Self>, agents: u32, every_ms: u64) -> broadcast::Receiver<Utf8Bytes> {
        let mut p = self.pushers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = p.get(&(agents, every_ms)) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(4);
        p.insert((agents, every_ms), tx.clone());
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut seq = 0;
            loop {
                tick.tick().await;
                // Nobody listening any more: this pusher ends (under the lock, so a new
                // subscriber either finds it still running or starts another).
                {
                    let mut p = hub.pushers.lock().unwrap_or_else(|p| p.into_inner());
                    if tx.receiver_count() == 0 {
                        p.remove(&(agents, every_ms));
                        return;
                    }
                }
                seq += 1;
                let _ = tx.send(Utf8Bytes::from(update(seq, agents)));
            }
        });
        rx
    }
}

/// A send to a client that stopped reading gives up after this long (and the session ends).
const SEND_LIMIT: Duration = Duration::from_secs(5);

async fn send(socket: &mut WebSocket, m: Message) -> bool {
    matches!(tokio::time::timeout(SEND_LIMIT, socket.send(m)).await, Ok(Ok(())))
}

#[derive(Deserialize)]
pub struct WsQuery {
    push: Option<u32>,
    every_ms: Option<u64>,
}

pub async fn upgrade(State(hub): State<Arc<Hub>>, Query(q): Query<WsQuery>, ws: WebSocketUpgrade) -> Response {
    let push = q.push.map(|n| (n.min(MAX_AGENTS), q.every_ms.unwrap_or(1000).clamp(10, 3_600_000)));
    // Small buffers, as a server holding thousands of mostly idle connections would use.
    ws.read_buffer_size(8 * 1024).write_buffer_size(0).on_upgrade(move |socket| session(hub, socket, push))
}

async fn session(hub: Arc<Hub>, mut socket: WebSocket, push: Option<(u32, u64)>) {
    hub.open.fetch_add(1, Ordering::Relaxed);
    let mut drops = hub.drops.subscribe();
    drops.mark_unchanged();
    let mut pushes = push.map(|(n, every)| hub.subscribe(n, every));
    loop {
        tokio::select! {
            got = socket.recv() => match got {
                Some(Ok(Message::Text(t))) => {
                    if !send(&mut socket, Message::Text(t)).await {
                        break;
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    if !send(&mut socket, Message::Binary(b)).await {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                // Pings are answered by the library.
                Some(Ok(_)) => {}
            },
            frame = async {
                match pushes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match frame {
                Ok(f) => {
                    if !send(&mut socket, Message::Text(f)).await {
                        break;
                    }
                }
                // A slow client skips the updates it missed.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => pushes = None,
            },
            _ = drops.changed() => {
                let close = CloseFrame { code: 1012, reason: "dropped by /admin/drop-ws".into() };
                let _ = send(&mut socket, Message::Close(Some(close))).await;
                break;
            }
        }
    }
    hub.open.fetch_sub(1, Ordering::Relaxed);
}

pub async fn drop_all(State(hub): State<Arc<Hub>>) -> Response {
    let open = hub.open.load(Ordering::Relaxed);
    hub.drops.send_modify(|g| *g += 1);
    Json(json!({ "dropped": open })).into_response()
}

pub async fn status(State(hub): State<Arc<Hub>>) -> Response {
    Json(json!({ "open": hub.open.load(Ordering::Relaxed) })).into_response()
}

#[derive(Deserialize)]
pub struct PollQuery {
    agents: Option<u32>,
}

pub async fn poll(Query(q): Query<PollQuery>) -> Response {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
    let body = update(seq, q.agents.unwrap_or(100).min(MAX_AGENTS));
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}
