//! Tasks made ready to send: each plan task becomes a `Plan` of one or more `Step`s (a
//! `sequence` is several), with its method parsed, its templates compiled, its host resolved to
//! a connector index and its checks and extractions prepared. `Book` holds them with the
//! weights a user picks by, after `--tags`/`--exclude-tags` selection. Judging a response
//! against a step's check, and pulling `extract`ed values out of it, live here too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use rand::Rng;

use super::config::{Http, Task};
use super::outcome::{ErrorKind, Failure};
use super::template::{Templates, Tpl};
use crate::drivers::TagFilter;

/// The name a task's requests are grouped under: its `name`, else its path as written.
pub fn task_name(t: &Task) -> String {
    t.name.clone().or_else(|| t.path.clone()).unwrap_or_else(|| "(sequence)".into())
}

pub struct Step {
    pub name: Arc<str>,
    pub method: Method,
    pub method_str: &'static str,
    /// Index into the stage's connectors; `None`: the user's own host.
    pub host: Option<usize>,
    pub path: Tpl,
    pub headers: Vec<(HeaderName, Tpl)>,
    pub body: Option<Tpl>,
    pub timeout: Duration,
    pub statuses: Vec<(u16, u16)>,
    pub json_checks: Vec<(Vec<String>, serde_json::Value)>,
    pub contains: Option<String>,
    pub extract: Vec<(String, Vec<String>)>,
    /// Whether the body must be kept (a body check or an extraction reads it).
    pub needs_body: bool,
    /// Whether any of its strings is a template (the render context is built only then).
    pub templated: bool,
    /// What of the request is the same every time, made once (`prepare`): the hot path then
    /// formats and validates nothing for a plain `GET /`.
    pub fixed: Fixed,
}

/// The parts of a step's request that need no rendering, ready to send.
#[derive(Default)]
pub struct Fixed {
    /// Per connector, the request URI of a plain path.
    pub uris: Vec<Option<hyper::Uri>>,
    /// Per header of the step, its value when it is not a template.
    pub headers: Vec<Option<HeaderValue>>,
    pub body: Option<bytes::Bytes>,
}

pub struct Plan {
    pub steps: Vec<Step>,
}

/// The stage's tasks after tag selection, and how to pick one.
pub struct Book {
    pub tasks: Vec<Plan>,
    cumulative: Vec<u64>,
    pub templates: Templates,
}

fn static_method(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn dotted(path: &str) -> Vec<String> {
    path.split('.').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// A JSON value at a dotted path (`data.items.0.id`).
pub fn lookup<'a>(v: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(v, |v, k| match v {
        serde_json::Value::Object(o) => o.get(k),
        serde_json::Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

impl Book {
    /// Compile the stage's tasks. `hosts` maps a request's own `host` to a connector index.
    pub fn new(cfg: &Http, tags: &TagFilter, hosts: &BTreeMap<String, usize>) -> Result<Book, String> {
        let mut templates = Templates::default();
        let default_timeout = cfg.request_timeout.map_or(super::config::DEFAULT_TIMEOUT, |d| d.0);
        let mut tasks = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0u64;
        for t in &cfg.tasks {
            if !tags.admits(&t.tags) {
                continue;
            }
            let name: Arc<str> = task_name(t).into();
            let parts: Vec<&Task> = if t.sequence.is_empty() { vec![t] } else { t.sequence.iter().collect() };
            let mut steps = Vec::new();
            for (i, s) in parts.iter().enumerate() {
                let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
                let method_text = pick(&s.method, &t.method).unwrap_or_else(|| "GET".into()).to_ascii_uppercase();
                let method = Method::from_bytes(method_text.as_bytes())
                    .map_err(|_| format!("task {name}: `{method_text}` is not an HTTP method"))?;
                let path = pick(&s.path, &t.path).ok_or_else(|| format!("task {name}: step {i} has no path"))?;
                let step_name: Arc<str> = if t.sequence.is_empty() {
                    Arc::clone(&name)
                } else {
                    match &s.name {
                        Some(n) => format!("{name}/{n}").into(),
                        None => format!("{name}/{path}").into(),
                    }
                };
                let mut headers = Vec::new();
                let mut merged: BTreeMap<String, String> = cfg.headers.clone();
                merged.extend(t.headers.clone());
                if !t.sequence.is_empty() {
                    merged.extend(s.headers.clone());
                }
                let json = s.json || t.json;
                if json && !merged.keys().any(|k| k.eq_ignore_ascii_case("content-type")) {
                    merged.insert("content-type".into(), "application/json".into());
                }
                for (k, v) in &merged {
                    let hn = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("`{k}` is not a header name"))?;
                    headers.push((hn, templates.add(v)?));
                }
                for (k, env) in &cfg.secret_headers {
                    let hn = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("`{k}` is not a header name"))?;
                    let value = std::env::var(env).map_err(|_| {
                        format!("header {k} is read from the environment variable {env}, which is not set")
                    })?;
                    // A secret is sent as written, never rendered (and so never echoed by a template error).
                    HeaderValue::from_str(&value)
                        .map_err(|_| format!("the value of {env} is not a valid header value"))?;
                    headers.push((hn, Tpl::Static(value)));
                }
                let body = pick(&s.body, &t.body).map(|b| templates.add(&b)).transpose()?;
                let check = if t.sequence.is_empty() { t.check.clone() } else { s.check.clone().or(t.check.clone()) };
                let statuses = match check.as_ref().and_then(|c| c.status.as_ref()) {
                    Some(spec) => spec.ranges()?,
                    None => vec![(100, 399)],
                };
                let json_checks: Vec<(Vec<String>, serde_json::Value)> = check
                    .as_ref()
                    .map(|c| c.json.iter().map(|(k, v)| (dotted(k), v.clone())).collect())
                    .unwrap_or_default();
                let contains = check.as_ref().and_then(|c| c.contains.clone());
                let extract_src = if t.sequence.is_empty() { &t.extract } else { &s.extract };
                let extract: Vec<(String, Vec<String>)> =
                    extract_src.iter().map(|(k, p)| (k.clone(), dotted(p))).collect();
                let host = match pick(&s.host, &t.host) {
                    Some(h) => Some(*hosts.get(&h).ok_or_else(|| format!("host {h} was not prepared"))?),
                    None => None,
                };
                let path = templates.add(&path)?;
                let templated = !path.is_static()
                    || headers.iter().any(|(_, v)| !v.is_static())
                    || body.as_ref().is_some_and(|b| !b.is_static());
                steps.push(Step {
                    name: step_name,
                    method_str: static_method(&method),
                    method,
                    host,
                    path,
                    headers,
                    body,
                    timeout: pick_timeout(s.timeout.or(t.timeout).map(|d| d.0), default_timeout),
                    needs_body: !json_checks.is_empty() || contains.is_some() || !extract.is_empty(),
                    statuses,
                    json_checks,
                    contains,
                    extract,
                    templated,
                    fixed: Fixed::default(),
                });
            }
            total += t.weight() as u64;
            cumulative.push(total);
            tasks.push(Plan { steps });
        }
        if tasks.is_empty() {
            return Err(format!("no task of this stage matches {}", tags.describe()));
        }
        Ok(Book { tasks, cumulative, templates })
    }

    /// A task chosen by weight.
    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        if self.tasks.len() == 1 {
            return 0;
        }
        let total = *self.cumulative.last().unwrap_or(&1);
        let r = rng.random_range(0..total);
        self.cumulative.partition_point(|&c| c <= r)
    }
}

fn pick_timeout(own: Option<Duration>, default: Duration) -> Duration {
    own.unwrap_or(default)
}

impl Step {
    /// Make the fixed parts once, for these connectors (the URI is theirs: prefix, and for
    /// HTTP/2 scheme and authority).
    pub fn prepare(&mut self, connectors: &[super::target::Connector]) {
        self.fixed.uris = connectors
            .iter()
            .map(|c| match &self.path {
                Tpl::Static(p) => c.uri_for(p).parse().ok(),
                Tpl::Jinja(_) => None,
            })
            .collect();
        self.fixed.headers = self
            .headers
            .iter()
            .map(|(_, v)| match v {
                Tpl::Static(s) => HeaderValue::from_str(s).ok(),
                Tpl::Jinja(_) => None,
            })
            .collect();
        self.fixed.body = match &self.body {
            Some(Tpl::Static(b)) => Some(bytes::Bytes::from(b.clone())),
            None => Some(bytes::Bytes::new()),
            Some(Tpl::Jinja(_)) => None,
        };
    }

    /// Judge a response: its status, then the body checks; on success, the values to extract.
    pub fn judge(&self, status: u16, body: &[u8]) -> Result<Vec<(String, serde_json::Value)>, Failure> {
        if !self.statuses.iter().any(|(a, b)| (*a..=*b).contains(&status)) {
            return Err(Failure::new(ErrorKind::Status, format!("HTTP {status}")));
        }
        if !self.needs_body {
            return Ok(Vec::new());
        }
        if let Some(c) = &self.contains
            && !String::from_utf8_lossy(body).contains(c.as_str())
        {
            return Err(Failure::new(ErrorKind::Check, format!("body does not contain {c:?}")));
        }
        if self.json_checks.is_empty() && self.extract.is_empty() {
            return Ok(Vec::new());
        }
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Failure::new(ErrorKind::Check, format!("body is not JSON ({e})")))?;
        for (path, want) in &self.json_checks {
            match lookup(&v, path) {
                Some(got) if got == want => {}
                Some(got) => {
                    return Err(Failure::new(
                        ErrorKind::Check,
                        format!("json {} is {got}, not {want}", path.join(".")),
                    ));
                }
                None => return Err(Failure::new(ErrorKind::Check, format!("json has no {}", path.join(".")))),
            }
        }
        let mut out = Vec::with_capacity(self.extract.len());
        for (key, path) in &self.extract {
            match lookup(&v, path) {
                Some(x) => out.push((key.clone(), x.clone())),
                None => {
                    return Err(Failure::new(
                        ErrorKind::Check,
                        format!("extract {key}: the response has no {}", path.join(".")),
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(toml_tasks: serde_json::Value, tags: TagFilter) -> Result<Book, String> {
        let cfg: Http = serde_json::from_value(serde_json::json!({
            "host": "http://127.0.0.1:1", "users": 1, "task": toml_tasks,
        }))
        .unwrap();
        Book::new(&cfg, &tags, &BTreeMap::new())
    }

    #[test]
    fn tags_select_tasks_and_weights_pick_them() {
        let tasks = serde_json::json!([
            { "path": "/a", "weight": 3, "tags": ["health"] },
            { "path": "/b", "weight": 1, "tags": ["chat"] },
            { "path": "/c", "tags": ["chat", "slow"] },
        ]);
        let b = book(tasks.clone(), TagFilter::default()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut n = [0u32; 3];
        for _ in 0..50_000 {
            n[b.pick(&mut rng)] += 1;
        }
        let share = n[0] as f64 / 50_000.0;
        assert!((share - 0.6).abs() < 0.01, "{n:?}");
        let only_chat = book(tasks.clone(), TagFilter::new(vec!["chat".into()], vec!["slow".into()])).unwrap();
        assert_eq!(only_chat.tasks.iter().map(|t| &*t.steps[0].name).collect::<Vec<_>>(), ["/b"]);
        let none = book(tasks, TagFilter::new(vec!["nope".into()], vec![])).err().unwrap();
        assert!(none.contains("--tags nope"), "{none}");
    }

    #[test]
    fn checks_judge_status_body_and_json_and_extract_values() {
        let tasks = serde_json::json!([{
            "path": "/chat", "method": "post",
            "check": { "status": "2xx", "json": { "state": "ok" }, "contains": "conv" },
            "extract": { "conv": "conversation.id" },
        }]);
        let b = book(tasks, TagFilter::default()).unwrap();
        let s = &b.tasks[0].steps[0];
        assert_eq!(s.method_str, "POST");
        let good = br#"{"state":"ok","conversation":{"id":"c-1"}}"#;
        assert_eq!(s.judge(201, good).unwrap(), vec![("conv".to_string(), serde_json::json!("c-1"))]);
        assert_eq!(s.judge(503, good).unwrap_err().kind, ErrorKind::Status);
        let bad = s.judge(200, br#"{"state":"busy","conversation":{"id":"c-1"}}"#).unwrap_err();
        assert_eq!((bad.kind, bad.message.as_ref()), (ErrorKind::Check, r#"json state is "busy", not "ok""#));
        assert_eq!(s.judge(200, b"<html>conv").unwrap_err().kind, ErrorKind::Check);
        let no_id = s.judge(200, br#"{"state":"ok","conv":1}"#).unwrap_err();
        assert!(no_id.message.contains("extract conv"), "{no_id:?}");
    }

    #[test]
    fn without_a_check_any_status_below_400_succeeds() {
        let b = book(serde_json::json!([{ "path": "/x" }]), TagFilter::default()).unwrap();
        let s = &b.tasks[0].steps[0];
        assert!(s.judge(302, b"").is_ok());
        assert_eq!(s.judge(404, b"").unwrap_err().message, "HTTP 404");
    }

    use rand::SeedableRng;
}
