//! One request and its response over a connection a caller owns: build the request from a step
//! (rendering its templates), send it, read the body up to the cap, and judge it — all within
//! the step's timeout, so a server that never answers, trickles bytes or sends a gigabyte costs
//! a counted failure and no more memory than the cap. Whatever happens, the caller gets a
//! `Done` and learns whether its connection is still usable.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HOST, HeaderValue};

use super::outcome::{Done, ErrorKind, Failure};
use super::target::{Connector, Sender, Unsent};
use super::task::{Book, Step};

/// A user's connection slot for one target: empty until first used or after a failure.
pub type Slot = Option<Sender>;

/// Values a request is rendered with.
pub struct Render<'a> {
    pub book: &'a Book,
    pub ctx: Option<minijinja::Value>,
}

fn build(step: &Step, target: &Connector, r: &Render<'_>) -> Result<hyper::Request<Full<Bytes>>, Failure> {
    let render = |t| -> Result<std::borrow::Cow<'_, str>, Failure> {
        match &r.ctx {
            Some(ctx) => r.book.templates.render(t, ctx).map_err(|e| Failure::new(ErrorKind::Request, e)),
            None => r
                .book
                .templates
                .render(t, &minijinja::Value::UNDEFINED)
                .map_err(|e| Failure::new(ErrorKind::Request, e)),
        }
    };
    let fixed_uri = step.fixed.uris.get(target.index).cloned().flatten();
    let uri = match fixed_uri {
        Some(u) => u,
        None => {
            let path = render(&step.path)?;
            let text = target.uri_for(&path);
            text.parse::<hyper::Uri>().map_err(|e| Failure::new(ErrorKind::Request, format!("bad URI {text}: {e}")))?
        }
    };
    let mut b = hyper::Request::builder().method(step.method.clone()).uri(uri);
    let headers = b.headers_mut().expect("a fresh builder has headers");
    headers.insert(HOST, target.host_header.clone());
    for (i, (k, v)) in step.headers.iter().enumerate() {
        let value = match step.fixed.headers.get(i).cloned().flatten() {
            Some(h) => h,
            None => HeaderValue::from_str(&render(v)?).map_err(|_| bad_header(k.as_str()))?,
        };
        headers.insert(k.clone(), value);
    }
    let body = match (&step.fixed.body, &step.body) {
        (Some(b), _) => b.clone(),
        (None, Some(t)) => Bytes::from(render(t)?.into_owned()),
        (None, None) => Bytes::new(),
    };
    b.body(Full::new(body)).map_err(|e| Failure::new(ErrorKind::Request, format!("cannot build the request: {e}")))
}

fn bad_header(name: &str) -> Failure {
    Failure::new(ErrorKind::Request, format!("the value of header {name} is not a valid header value"))
}

/// What a response's body came to.
struct Read {
    status: u16,
    bytes: u64,
    body: Vec<u8>,
}

async fn exchange(
    slot: &mut Slot,
    target: &Connector,
    req: hyper::Request<Full<Bytes>>,
    keep: bool,
    cap: u64,
    bytes_seen: &mut u64,
    status_seen: &mut Option<u16>,
) -> Result<Read, Failure> {
    let mut reused = slot.as_ref().is_some_and(Sender::is_open);
    if !reused {
        *slot = Some(target.connect().await?);
    }
    let mut req = req;
    let resp = loop {
        let sender = slot.as_mut().expect("connected above");
        match sender.send(req).await {
            Ok(r) => break r,
            // The server closed a kept-alive connection before this request went out: that is
            // the connection's end, not the target's failure; send it once more on a new one.
            Err(Unsent { request: Some(r), .. }) if reused => {
                *slot = Some(target.connect().await?);
                reused = false;
                req = r;
            }
            Err(Unsent { error: e, .. }) => {
                let kind = if e.is_parse() || e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
                    ErrorKind::Protocol
                } else {
                    ErrorKind::Connect
                };
                return Err(Failure::new(kind, format!("request failed: {e}")));
            }
        }
    };
    let status = resp.status().as_u16();
    *status_seen = Some(status);
    let mut body = resp.into_body();
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::new(ErrorKind::Protocol, format!("response body broke off: {e}")))?;
        if let Some(data) = frame.data_ref() {
            *bytes_seen += data.len() as u64;
            if *bytes_seen > cap {
                return Err(Failure::new(ErrorKind::Body, format!("body longer than max_body_bytes ({cap})")));
            }
            if keep {
                kept.extend_from_slice(data);
            }
        }
    }
    Ok(Read { status, bytes: *bytes_seen, body: kept })
}

/// Send `step` over `slot` (connecting first if it is empty or closed). `intended` is when the
/// request was scheduled to go (open model); latency counts from it.
pub async fn send(
    step: &Step,
    target: &Connector,
    slot: &mut Slot,
    render: &Render<'_>,
    cap: u64,
    intended: Option<Instant>,
) -> (Done, Vec<(String, serde_json::Value)>) {
    let start = Instant::now();
    let finish = |status: Option<u16>, bytes: u64, failure: Option<Failure>| {
        let end = Instant::now();
        let service_ms = end.duration_since(start).as_secs_f64() * 1000.0;
        let latency_ms = intended.map_or(service_ms, |i| end.duration_since(i).as_secs_f64() * 1000.0);
        Done { status, bytes, latency_ms, service_ms, failure }
    };
    let built = match build(step, target, render) {
        Ok(b) => b,
        Err(f) => return (finish(None, 0, Some(f)), Vec::new()),
    };
    let mut bytes = 0u64;
    let mut status = None;
    let result = tokio::time::timeout(
        step.timeout,
        exchange(slot, target, built, step.needs_body, cap, &mut bytes, &mut status),
    )
    .await;
    match result {
        Err(_) => {
            *slot = None;
            let f =
                Failure::new(ErrorKind::Timeout, format!("timed out: no complete response within {:?}", step.timeout));
            (finish(status, bytes, Some(f)), Vec::new())
        }
        Ok(Err(f)) => {
            if !f.kind.keeps_connection() {
                *slot = None;
            }
            (finish(status, bytes, Some(f)), Vec::new())
        }
        Ok(Ok(read)) => match step.judge(read.status, &read.body) {
            Ok(extracted) => (finish(Some(read.status), read.bytes, None), extracted),
            Err(f) => (finish(Some(read.status), read.bytes, Some(f)), Vec::new()),
        },
    }
}
