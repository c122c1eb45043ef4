//! The `http` stage as a plan writes it (`Http`): the target hosts, the load model (closed:
//! `users`, `spawn_rate`, `wait`, `shape`; open: `arrival_rate` or an `arrival` ramp with
//! `max_in_flight`), the tasks (method, path, headers, body templates, checks, extraction,
//! sequences), recording and target monitoring; and the checks `planrun validate` makes of them.
//! Running a stage is `driver`'s job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::drivers::config_of;
use crate::drivers::monitor::MonitorCfg;
use crate::plan::model::StageCommon;
use crate::plan::{Dur, FieldError, StageDriver};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Base URL every task's `path` is sent to (`http://127.0.0.1:8089`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Several base URLs: each user (or arrival) is given one in turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,

    /// Closed model: how many concurrent users (Locust's `-u`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u32>,
    /// Users started (or stopped) per second of plan time (Locust's `-r`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_rate: Option<f64>,
    /// Think time between a user's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
    /// A load shape as data: from each point's `at` on, the target user count and spawn rate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shape: Vec<ShapePoint>,

    /// Open model: requests started per second of plan time, whatever the responses do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_rate: Option<f64>,
    /// Open model with a ramp: the rate at each point, linear between points.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arrival: Vec<ArrivalPoint>,
    /// Open model: requests allowed in flight at once; an arrival beyond it is dropped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,

    #[serde(rename = "task")]
    pub tasks: Vec<Task>,
    /// Headers sent with every request (a task's own `headers` add to and override them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Headers whose value is read from an environment variable when the stage starts (API
    /// keys): `{ Authorization = "API_TOKEN" }`. The value is never written anywhere.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_headers: BTreeMap<String, String>,
    /// Limit for one request, connect to last body byte, in real time (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Dur>,
    /// Response bodies are read up to this many bytes; a longer one is a `body` error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Speak HTTP/2 (prior knowledge over `http://`, ALPN over `https://`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
    /// Accept any TLS certificate (self-signed test servers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// At the end of the stage, requests in flight may finish for this long (real time; k6's
    /// gracefulStop); those still out then are cut off and counted. Default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_stop: Option<Dur>,
    /// Wait up to this long (real time) for every host to accept connections before starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout: Option<Dur>,
    /// A user with no finished request for this long (real time) is reported as stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_after: Option<Dur>,
    /// What is written per request.
    #[serde(default, skip_serializing_if = "Record::is_all")]
    pub record: Record,
    /// Start `planrun serve-demo` on the (first) host's address for the stage, and stop it after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo: Option<super::demo::DemoCfg>,
    /// Sample CPU and memory of the target's processes and of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorCfg>,
    /// Share of requests that must succeed for the stage to pass (default: at least one must).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success: Option<f64>,
    /// Spread the load over `planrun worker` processes on other hosts (docs/distributed.md):
    /// users, spawn rates and arrival rates are divided among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<crate::drivers::workers::Workers>,
}

/// Think time (Locust's four kinds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Wait {
    /// Uniformly random between the two, after each request.
    Between(Dur, Dur),
    /// The same pause after each request.
    Constant(Dur),
    /// Start a request at most every this long (the pause shrinks as responses slow).
    ConstantPacing(Dur),
    /// At most this many requests per second per user.
    ConstantThroughput(f64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapePoint {
    pub at: Dur,
    pub users: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_rate: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalPoint {
    pub at: Dur,
    pub rate: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    /// One `http` event per request.
    #[default]
    All,
    /// Only per-second summaries per task (`http_window`), from HDR histograms.
    Summary,
    /// Per-second summaries, plus one `http` event for this share of the requests.
    Sample(f64),
}

impl Record {
    fn is_all(&self) -> bool {
        *self == Record::All
    }
}

/// One request a user can make, or (with `sequence`) an ordered series of them. A step of a
/// sequence is written the same way (without `weight`, `tags` or its own `sequence`); fields it
/// leaves out come from its task. Strings are minijinja templates rendered per request with
/// `vars`, `user` (`id`, `n`), `iteration` and `session` (values extracted earlier).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// What its requests are grouped under in events and reports (Locust's `name=`); default
    /// the method and path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Run these requests in order (a conversation: a first message, then follow-ups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequence: Vec<Task>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Overrides the stage's host for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body is JSON (sets `content-type: application/json`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub json: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    /// Values to keep from the JSON response for later requests: `{ conversation = "id" }`
    /// stores the response's `id` as `session.conversation`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extract: BTreeMap<String, String>,
}

impl Task {
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1)
    }
}

/// What makes a response a success. Without one, any status below 400 is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// `200`, `[200, 201]`, or a range `"200-299"` / `"2xx"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusSpec>,
    /// JSON fields (dotted paths) and the values they must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub json: BTreeMap<String, serde_json::Value>,
    /// Text the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    One(u16),
    Any(Vec<u16>),
    Range(String),
}

impl StatusSpec {
    /// The accepted statuses as inclusive ranges.
    pub fn ranges(&self) -> Result<Vec<(u16, u16)>, String> {
        match self {
            StatusSpec::One(s) => Ok(vec![(*s, *s)]),
            StatusSpec::Any(v) => Ok(v.iter().map(|s| (*s, *s)).collect()),
            StatusSpec::Range(r) => {
                let r = r.trim();
                if let Some(d) = r.strip_suffix("xx").and_then(|d| d.parse::<u16>().ok())
                    && (1..=5).contains(&d)
                {
                    return Ok(vec![(d * 100, d * 100 + 99)]);
                }
                let (a, b) = r
                    .split_once('-')
                    .ok_or_else(|| format!("status `{r}` is not a range: write \"200-299\" or \"2xx\""))?;
                let (a, b) = (a.trim().parse::<u16>(), b.trim().parse::<u16>());
                match (a, b) {
                    (Ok(a), Ok(b)) if a <= b => Ok(vec![(a, b)]),
                    _ => Err(format!("status `{r}` is not a range: write \"200-299\" or \"2xx\"")),
                }
            }
        }
    }
}

pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 10_000;
pub const DEFAULT_GRACEFUL_STOP: std::time::Duration = std::time::Duration::from_secs(5);
/// The smallest rate a plan may give (one per 1000 s): below it a gap overflows any schedule.
pub const MIN_RATE: f64 = 0.001;

fn is_rate(r: f64) -> bool {
    (MIN_RATE..f64::INFINITY).contains(&r)
}

impl Http {
    pub fn is_open(&self) -> bool {
        self.arrival_rate.is_some() || !self.arrival.is_empty()
    }

    /// Every base URL, in order.
    pub fn all_hosts(&self) -> Vec<&str> {
        self.host.iter().map(String::as_str).chain(self.hosts.iter().map(String::as_str)).collect()
    }
}

fn template_ok<S: ToString>(text: &str, path: &[S]) -> Result<(), FieldError> {
    super::template::compile_check(text).map_err(|e| FieldError::new(e).at(path))
}

fn check_request(r: &Task, path: &[String]) -> Result<(), FieldError> {
    let at = |k: &str| path.iter().cloned().chain(std::iter::once(k.to_string())).collect::<Vec<String>>();
    if let Some(m) = &r.method
        && (m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        return Err(FieldError::new(format!("`{m}` is not an HTTP method (GET, POST, …)")).at(&at("method")));
    }
    if let Some(p) = &r.path {
        if !p.starts_with('/') && !p.starts_with("{{") {
            return Err(FieldError::new(format!("a path starts with `/` (got `{p}`)")).at(&at("path")));
        }
        template_ok(p, &at("path"))?;
    }
    if let Some(h) = &r.host {
        super::target::Target::parse(h).map_err(|e| FieldError::new(e).at(&at("host")))?;
    }
    if let Some(b) = &r.body {
        template_ok(b, &at("body"))?;
    }
    for (k, v) in &r.headers {
        template_ok(v, &[at("headers"), vec![k.clone()]].concat())?;
    }
    if let Some(c) = &r.check
        && let Some(s) = &c.status
    {
        s.ranges().map_err(|e| FieldError::new(e).at(&at("check")))?;
    }
    Ok(())
}

impl StageDriver for Http {
    fn config(&self) -> serde_json::Value {
        config_of(self)
    }

    fn describe(&self) -> String {
        let hosts = self.all_hosts().join(", ");
        let load = if let Some(r) = self.arrival_rate {
            format!("{r} requests/s (open model)")
        } else if !self.arrival.is_empty() {
            format!("an arrival ramp of {} points (open model)", self.arrival.len())
        } else if !self.shape.is_empty() {
            format!("a load shape of {} points", self.shape.len())
        } else {
            format!("{} users", self.users.unwrap_or(1))
        };
        format!("{load} against {hosts}, {} tasks", self.tasks.len())
    }

    fn check(&self, stage: &StageCommon) -> Result<(), FieldError> {
        let hosts = self.all_hosts();
        if hosts.is_empty() {
            return Err("an http stage needs `host = \"http://HOST:PORT\"` (or `hosts = [...]`)".into());
        }
        for (i, h) in hosts.iter().enumerate() {
            let key: Vec<String> =
                if self.host.is_some() && i == 0 { vec!["host".into()] } else { vec!["hosts".into(), i.to_string()] };
            super::target::Target::parse(h).map_err(|e| FieldError::new(e).at(&key))?;
        }
        if stage.duration.is_none() {
            return Err("an http stage needs a `duration` (how long the load runs)".into());
        }
        if self.tasks.is_empty() {
            return Err("an http stage needs at least one `[[...task]]` with a `path`".into());
        }
        let open = self.is_open();
        if open && (self.users.is_some() || !self.shape.is_empty() || self.wait.is_some()) {
            return Err(FieldError::new(
                "`arrival_rate`/`arrival` (open model) and `users`/`shape`/`wait` (closed model) do not mix: choose one",
            )
            .at(&[if self.arrival_rate.is_some() { "arrival_rate" } else { "arrival" }]));
        }
        if self.arrival_rate.is_some() && !self.arrival.is_empty() {
            return Err(
                FieldError::new("give `arrival_rate` (constant) or `arrival` (a ramp), not both").at(&["arrival"])
            );
        }
        if let Some(r) = self.arrival_rate
            && !is_rate(r)
        {
            return Err(FieldError::new("arrival_rate is requests per second, at least 0.001").at(&["arrival_rate"]));
        }
        for (i, p) in self.arrival.iter().enumerate() {
            if !(p.rate == 0.0 || is_rate(p.rate)) {
                return Err(FieldError::new("a rate is requests per second: 0, or at least 0.001").at(&[
                    "arrival".to_string(),
                    i.to_string(),
                    "rate".into(),
                ]));
            }
            if i > 0 && p.at.0 < self.arrival[i - 1].at.0 {
                return Err(FieldError::new("arrival points go in order of `at`").at(&[
                    "arrival".to_string(),
                    i.to_string(),
                    "at".into(),
                ]));
            }
        }
        if !open && self.users.is_none() && self.shape.is_empty() {
            return Err("an http stage needs `users` (closed model), `shape`, or `arrival_rate` (open model)".into());
        }
        if self.users.is_some() && !self.shape.is_empty() {
            return Err(FieldError::new("give `users` or a `shape`, not both").at(&["shape"]));
        }
        if let Some(r) = self.spawn_rate
            && !is_rate(r)
        {
            return Err(FieldError::new("spawn_rate is users per second, at least 0.001").at(&["spawn_rate"]));
        }
        for (i, p) in self.shape.iter().enumerate() {
            if i > 0 && p.at.0 < self.shape[i - 1].at.0 {
                return Err(FieldError::new("shape points go in order of `at`").at(&[
                    "shape".to_string(),
                    i.to_string(),
                    "at".into(),
                ]));
            }
            if let Some(r) = p.spawn_rate
                && !is_rate(r)
            {
                return Err(FieldError::new("spawn_rate is users per second, at least 0.001").at(&[
                    "shape".to_string(),
                    i.to_string(),
                    "spawn_rate".into(),
                ]));
            }
        }
        match &self.wait {
            Some(Wait::Between(a, b)) if a.0 > b.0 => {
                return Err(FieldError::new("`between` takes the shorter wait first").at(&["wait"]));
            }
            Some(Wait::ConstantThroughput(n)) if !is_rate(*n) => {
                return Err(FieldError::new("constant_throughput is requests per second, at least 0.001").at(&["wait"]));
            }
            _ => {}
        }
        if let Record::Sample(f) = self.record
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(FieldError::new("sample is a share of the requests, above 0 and at most 1").at(&["record"]));
        }
        if self.demo.as_ref().is_some_and(|d| d.enabled) {
            let t = super::target::Target::parse(hosts[0]).map_err(|e| FieldError::new(e).at(&["host"]))?;
            if t.tls {
                return Err(FieldError::new("serve-demo speaks plain HTTP: give an http:// host").at(&["demo"]));
            }
        }
        if let Some(m) = self.min_success
            && !(0.0..=1.0).contains(&m)
        {
            let msg = format!("min_success is a share of the requests, from 0 to 1 (got {m})");
            return Err(FieldError::new(msg).at(&["min_success"]));
        }
        if self.max_in_flight == Some(0) {
            return Err(FieldError::new("max_in_flight must be at least 1").at(&["max_in_flight"]));
        }
        if let Some(w) = &self.workers {
            w.check()?;
            let fewest = self.users.or_else(|| self.shape.iter().map(|p| p.users).filter(|&u| u > 0).min());
            if let Some(u) = fewest
                && u < w.count
            {
                return Err(FieldError::new(format!(
                    "{} workers share {u} users: give at least one user per worker",
                    w.count
                ))
                .at(&["workers", "count"]));
            }
        }
        for (k, v) in &self.headers {
            template_ok(v, &["headers", k])?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.tasks.iter().enumerate() {
            let base = vec!["task".to_string(), i.to_string()];
            if t.weight == Some(0) {
                return Err(FieldError::new("a task's weight is at least 1 (leave a task out with tags)").at(&[
                    base.clone(),
                    vec!["weight".into()],
                ]
                .concat()));
            }
            check_request(t, &base)?;
            if t.sequence.is_empty() && t.path.is_none() {
                return Err(FieldError::new("a task needs a `path` (or a `sequence` of steps with paths)").at(&base));
            }
            for (j, s) in t.sequence.iter().enumerate() {
                let at = [base.clone(), vec!["sequence".into(), j.to_string()]].concat();
                check_request(s, &at)?;
                for (field, set) in
                    [("weight", s.weight.is_some()), ("tags", !s.tags.is_empty()), ("sequence", !s.sequence.is_empty())]
                {
                    if set {
                        let msg = format!("`{field}` belongs to the task, not to a step of its sequence");
                        return Err(FieldError::new(msg).at(&[at.clone(), vec![field.to_string()]].concat()));
                    }
                }
                if s.path.is_none() && t.path.is_none() {
                    return Err(FieldError::new("this step needs a `path`").at(&at));
                }
            }
            let name = super::task::task_name(t);
            if !names.insert(name.clone()) {
                return Err(FieldError::new(format!(
                    "two tasks are named `{name}`: give one a `name` (it groups requests in reports)"
                ))
                .at(&base));
            }
        }
        Ok(())
    }
}
