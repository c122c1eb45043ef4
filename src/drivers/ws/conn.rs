//! One WebSocket client's life: connect (TCP, then the handshake, within `connect_timeout`),
//! a session — sending numbered, timestamped messages at `send_rate`, pinging, timing every
//! echo, push and pong — and, after the server closes it or a connect fails, reconnecting with
//! back-off when `reconnect` allows. Each drop is followed by one `ws_reconnect` row saying
//! whether (and how fast) the connection came back.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::stage::Shared;

/// Why a session ended.
enum End {
    /// The stage is over (or interrupted); the connection was closed by us.
    Stopped,
    /// The server closed it, or it broke; the reason.
    Closed(String),
}

/// What a message from the server is, read without building it (a metrics push may carry
/// thousands of agents: they are counted, not kept).
#[derive(serde::Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<u64>,
    t_us: Option<u64>,
    c: Option<String>,
    sent_us: Option<i64>,
    agents: Option<Count>,
}

/// The length of a JSON array, its elements skipped.
struct Count(u64);

impl<'de> serde::Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                let mut n = 0;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A short word for a failure, for `error_kind`.
fn kind_of(e: &tungstenite::Error) -> &'static str {
    match e {
        tungstenite::Error::Http(_) => "handshake",
        tungstenite::Error::Io(_) => "connect",
        tungstenite::Error::Protocol(_) => "protocol",
        _ => "protocol",
    }
}

async fn connect(sh: &Shared) -> Result<WebSocketStream<TcpStream>, (&'static str, String)> {
    let t = &sh.target;
    let attempt = async {
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| ("connect", format!("cannot connect to {}:{}: {e}", t.host, t.port)))?;
        let _ = tcp.set_nodelay(true);
        let url = format!("ws://{}:{}{}", t.host, t.port, t.resource);
        // Small buffers: a connection that holds no big message costs ~10 KiB, not the library's
        // default 128 KiB read buffer (bigger messages still arrive whole: the buffer grows).
        let cfg = WebSocketConfig::default().read_buffer_size(8 * 1024).write_buffer_size(0);
        match tokio_tungstenite::client_async_with_config(url.as_str(), tcp, Some(cfg)).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(r)) => {
                Err(("handshake", format!("the server answered the upgrade with HTTP {} instead of 101", r.status())))
            }
            Err(e) => Err((kind_of(&e), format!("WebSocket handshake failed: {e}"))),
        }
    };
    match tokio::time::timeout(sh.cfg.connect_timeout(), attempt).await {
        Ok(r) => r,
        Err(_) => Err(("timeout", format!("no WebSocket within connect_timeout ({:?})", sh.cfg.connect_timeout()))),
    }
}

/// Back-off before attempt `n` (1-based): `backoff` doubled each time, at most `max_backoff`,
/// with up to 50% jitter so dropped clients do not all come back at once.
fn backoff(sh: &Shared, n: u32, rng: &mut StdRng) -> Duration {
    let Some(r) = &sh.cfg.reconnect else { return Duration::ZERO };
    let base = r.backoff.0.saturating_mul(1 << (n.saturating_sub(1)).min(16)).min(r.max_backoff.0);
    base.mul_f64(1.0 - rng.random_range(0.0..0.5))
}

/// Connect, run sessions and reconnect until the stage stops.
pub async fn run(id: Arc<str>, sh: Arc<Shared>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut failures = 0u32;
    let mut dropped_at: Option<Instant> = None;
    let mut ever_open = false;
    let e = &sh.events;
    while !sh.stop.is_cancelled() {
        let t0 = Instant::now();
        let attempt = tokio::select! {
            r = connect(&sh) => r,
            _ = sh.stop.cancelled() => break,
        };
        let ws = match attempt {
            Ok(ws) => ws,
            Err((kind, msg)) => {
                let mut ev = e.event("ws_connect").agent(Arc::clone(&id)).ok(false).latency(t0.elapsed()).error(msg);
                ev.error_kind = Some(kind.into());
                e.emit(ev.attrs(serde_json::json!({ "attempt": failures + 1 })));
                failures += 1;
                match &sh.cfg.reconnect {
                    Some(r) if failures <= r.attempts => {
                        tokio::select! {
                            _ = tokio::time::sleep(backoff(&sh, failures, &mut rng)) => continue,
                            _ = sh.stop.cancelled() => break,
                        }
                    }
                    _ => break,
                }
            }
        };
        e.emit(
            e.event("ws_connect")
                .agent(Arc::clone(&id))
                .ok(true)
                .latency(t0.elapsed())
                .attrs(serde_json::json!({ "attempt": failures + 1 })),
        );
        if !ever_open {
            ever_open = true;
            sh.tally.opened.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(d) = dropped_at.take() {
            e.emit(e.event("ws_reconnect").agent(Arc::clone(&id)).ok(true).latency(d.elapsed()));
            sh.tally.recovered.fetch_add(1, Ordering::Relaxed);
        }
        let open = sh.tally.open.fetch_add(1, Ordering::Relaxed) + 1;
        sh.tally.peak.fetch_max(open, Ordering::Relaxed);
        let end = session(ws, &id, &sh, &mut rng).await;
        sh.tally.open.fetch_sub(1, Ordering::Relaxed);
        match end {
            End::Stopped => break,
            End::Closed(why) => {
                e.emit(e.event("ws_close").agent(Arc::clone(&id)).ok(false).error(why));
                sh.tally.dropped.fetch_add(1, Ordering::Relaxed);
                dropped_at = Some(Instant::now());
                if sh.cfg.reconnect.is_none() {
                    break;
                }
                failures = 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff(&sh, 1, &mut rng)) => {}
                    _ = sh.stop.cancelled() => break,
                }
            }
        }
    }
    if let Some(d) = dropped_at {
        let why = if sh.cfg.reconnect.is_none() {
            "dropped, and `reconnect` is not set".to_string()
        } else {
            format!(
                "not reconnected within {:.1} s (the stage ended or the attempts ran out)",
                d.elapsed().as_secs_f64()
            )
        };
        e.emit(e.event("ws_reconnect").agent(Arc::clone(&id)).ok(false).error(why));
    }
    if !ever_open {
        sh.tally.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// An interval whose first tick comes after a random part of its period (so connections opened
/// together do not send in lockstep); never, for a zero rate.
fn ticker(period: Option<Duration>, rng: &mut StdRng) -> Option<tokio::time::Interval> {
    let p = period.filter(|p| !p.is_zero())?;
    let first = tokio::time::Instant::now() + p.mul_f64(rng.random_range(0.0..1.0));
    let mut i = tokio::time::interval_at(first, p);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Some(i)
}

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn session(mut ws: WebSocketStream<TcpStream>, id: &Arc<str>, sh: &Shared, rng: &mut StdRng) -> End {
    let send_period = sh.cfg.send_rate.filter(|r| *r > 0.0).map(|r| sh.clock.scaled(Duration::from_secs_f64(1.0 / r)));
    let mut sends = ticker(send_period, rng);
    let mut pings = ticker(sh.cfg.ping_every.map(|d| sh.clock.scaled(d.0)), rng);
    let pad = "x".repeat(sh.cfg.payload_bytes.unwrap_or(0) as usize);
    let ping_period = sh.cfg.ping_every.map(|d| sh.clock.scaled(d.0));
    let mut outstanding: HashSet<u64> = HashSet::new();
    let mut seq = 0u64;
    let mut push = PushSeq::default();
    let mut last_pong = Instant::now();
    let end = loop {
        tokio::select! {
            _ = sh.stop.cancelled() => break End::Stopped,
            _ = tick(&mut sends) => {
                seq += 1;
                let t_us = sh.started.elapsed().as_micros() as u64;
                let text = if pad.is_empty() {
                    format!("{{\"seq\":{seq},\"t_us\":{t_us},\"c\":\"{id}\"}}")
                } else {
                    format!("{{\"seq\":{seq},\"t_us\":{t_us},\"c\":\"{id}\",\"pad\":\"{pad}\"}}")
                };
                // Counted as sent before it goes: a send the stage's end cuts short is lost, not unseen.
                outstanding.insert(seq);
                sh.tally.sent.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    r = ws.send(Message::text(text)) => if let Err(e) = r {
                        break End::Closed(format!("sending failed: {e}"));
                    },
                    _ = sh.stop.cancelled() => break End::Stopped,
                }
            }
            _ = tick(&mut pings) => {
                // A peer that stopped answering pings is gone, though its socket looks open.
                if let Some(p) = ping_period
                    && last_pong.elapsed() > p * 3 + Duration::from_secs(1)
                {
                    break End::Closed(format!("no pong for {:.1} s: the connection is dead", last_pong.elapsed().as_secs_f64()));
                }
                let t_us = sh.started.elapsed().as_micros() as u64;
                tokio::select! {
                    r = ws.send(Message::Ping(t_us.to_be_bytes().to_vec().into())) => if let Err(e) = r {
                        break End::Closed(format!("sending a ping failed: {e}"));
                    },
                    _ = sh.stop.cancelled() => break End::Stopped,
                }
            }
            got = ws.next() => match got {
                None => break End::Closed("the connection ended without a close frame".into()),
                Some(Err(e)) => break End::Closed(format!("the connection broke: {e}")),
                Some(Ok(Message::Close(f))) => {
                    break End::Closed(match f {
                        Some(f) => format!("closed by the server ({} {})", u16::from(f.code), f.reason),
                        None => "closed by the server".into(),
                    })
                }
                Some(Ok(m)) => {
                    if matches!(m, Message::Pong(_)) {
                        last_pong = Instant::now();
                    }
                    received(m, id, sh, &mut outstanding, &mut push)
                }
            },
        }
    };
    if let End::Stopped = end {
        // Echoes still due may come in during the graceful stop; then close properly.
        let grace = tokio::time::Instant::now() + sh.cfg.graceful_stop();
        while !outstanding.is_empty() {
            match tokio::time::timeout_at(grace, ws.next()).await {
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => break,
                Ok(Some(Ok(m))) => received(m, id, sh, &mut outstanding, &mut push),
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
    }
    if !outstanding.is_empty() {
        sh.tally.lost.fetch_add(outstanding.len() as u64, Ordering::Relaxed);
        let e = &sh.events;
        e.emit(
            e.event("ws_lost")
                .agent(Arc::clone(id))
                .ok(false)
                .value(outstanding.len() as f64, "messages")
                .error("sent messages whose echo never came"),
        );
    }
    end
}

/// The last push sequence number a session saw: a gap is updates the server skipped (a slow
/// client's) or lost, counted rather than left out of the push latencies unseen.
#[derive(Default)]
struct PushSeq {
    last: Option<u64>,
}

fn received(m: Message, id: &Arc<str>, sh: &Shared, outstanding: &mut HashSet<u64>, push: &mut PushSeq) {
    let e = &sh.events;
    let bytes = match &m {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b.as_ref(),
        Message::Pong(p) => {
            if let Ok(b) = <[u8; 8]>::try_from(p.as_ref()) {
                let sent = u64::from_be_bytes(b);
                let now = sh.started.elapsed().as_micros() as u64;
                e.emit(
                    e.event("ws_ping")
                        .agent(Arc::clone(id))
                        .ok(true)
                        .latency_ms(now.saturating_sub(sent) as f64 / 1000.0),
                );
            }
            return;
        }
        _ => return,
    };
    let n = bytes.len() as i64;
    sh.tally.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    let msg: Option<Incoming> = serde_json::from_slice(bytes).ok();
    match msg {
        Some(Incoming { seq: Some(seq), t_us: Some(t_us), c: Some(c), .. }) if *c == **id => {
            let now = sh.started.elapsed().as_micros() as u64;
            if outstanding.remove(&seq) {
                sh.tally.received.fetch_add(1, Ordering::Relaxed);
                e.emit(
                    e.event("ws_message")
                        .name("echo")
                        .agent(Arc::clone(id))
                        .ok(true)
                        .latency_ms(now.saturating_sub(t_us) as f64 / 1000.0)
                        .bytes(n),
                );
            } else {
                e.emit(
                    e.event("ws_message")
                        .name("echo")
                        .agent(Arc::clone(id))
                        .ok(false)
                        .bytes(n)
                        .error(format!("an echo of message {seq}, which is not due (never sent, or echoed twice)")),
                );
            }
        }
        Some(Incoming { kind: Some(k), sent_us: Some(sent), agents, seq: pseq, .. }) if k == "metrics" => {
            sh.tally.pushes.fetch_add(1, Ordering::Relaxed);
            if let (Some(last), Some(s)) = (push.last, pseq)
                && s > last + 1
            {
                sh.tally.pushes_missed.fetch_add(s - last - 1, Ordering::Relaxed);
            }
            if pseq.is_some() {
                push.last = pseq;
            }
            // The wall clock now (not the run clock's reckoning of it), against the server's.
            let now = chrono::Utc::now().timestamp_micros();
            let mut ev = e.event("ws_message").name("push").agent(Arc::clone(id)).ok(true).bytes(n);
            if now >= sent {
                ev = ev.latency_ms((now - sent) as f64 / 1000.0);
            } else {
                // The server's clock is ahead of ours: no latency can be told; counted.
                sh.tally.push_clock_behind.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(Count(a)) = agents {
                ev = ev.value(a as f64, "agents");
            }
            e.emit(ev);
        }
        _ => e.emit(e.event("ws_message").name("other").agent(Arc::clone(id)).bytes(n)),
    }
}
