//! `planrun agent`: the built-in agent the fleet driver spawns by default. It speaks the
//! protocol (docs/agent-protocol.md) over either transport (`Link`): the file one (watches
//! `messages/`, writes `responses/` and a heartbeat to `status/`) or Redis (`RedisLink`). It
//! answers `ping`, `compute`, `memory_test` and echoes any other type, and reports its
//! memory as the soak test's agents did. It dies with its parent (PR_SET_PDEATHSIG plus a
//! parent-pid check), so no agent outlives a killed runner. Switches make it misbehave on purpose,
//! to test runners: respond slowly, leak memory, crash after N messages, write garbage, stay
//! silent, answer in another agent's name.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::protocol::{Memory, Message, Response, Status, now_ms, write_atomic};
use super::transport::RedisLink;

#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// This agent's id.
    #[arg(long, env = "PLANRUN_AGENT_ID")]
    pub id: String,
    /// The coordination directory (the file transport).
    #[arg(long, env = "PLANRUN_COORD_DIR", required_unless_present = "transport")]
    pub dir: Option<PathBuf>,
    /// The Redis transport's server, `redis://HOST:PORT/DB` (instead of `--dir`).
    #[arg(long, env = "PLANRUN_TRANSPORT", conflicts_with = "dir", hide_env_values = true)]
    pub transport: Option<String>,
    /// The Redis transport's key prefix for the stage (given by the driver).
    #[arg(long, env = "PLANRUN_REDIS_PREFIX", requires = "transport")]
    pub prefix: Option<String>,
    /// Join, by hand from any machine, the running stage that has `join = NAME` (Redis transport).
    #[arg(long, value_name = "NAME", requires = "transport")]
    pub join: Option<String>,
    /// How long to wait for that stage and its answer, in seconds.
    #[arg(long, default_value_t = 60)]
    pub join_timeout: u64,
    /// The token the driver gave this agent; every response and heartbeat carries it.
    #[arg(long, env = "PLANRUN_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Heartbeat interval in milliseconds.
    #[arg(long, env = "PLANRUN_HEARTBEAT_MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Seed for anything random (unused by the built-in handlers, passed for custom agents).
    #[arg(long, env = "PLANRUN_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Wake on SIGUSR1 (the driver's doorbell after each message) where inotify is not to be had.
    #[arg(long, env = "PLANRUN_DOORBELL", hide = true)]
    pub doorbell: bool,
    /// Misbehave: wait this many milliseconds before each response.
    #[arg(long, default_value_t = 0)]
    pub slow_ms: u64,
    /// Misbehave: keep this many bytes per message, never freed.
    #[arg(long, default_value_t = 0)]
    pub leak_bytes: usize,
    /// Misbehave: exit with code 3 after this many messages.
    #[arg(long)]
    pub crash_after: Option<u64>,
    /// Misbehave: write responses that are not JSON.
    #[arg(long)]
    pub garbage: bool,
    /// Misbehave: read messages and heartbeat, but never answer.
    #[arg(long)]
    pub silent: bool,
    /// Misbehave: answer in this other agent's name (with this agent's own token).
    #[arg(long, value_name = "AGENT_ID")]
    pub impersonate: Option<String>,
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// How the agent reaches its coordinator.
enum Link {
    Dir(PathBuf),
    Redis(Box<RedisLink>),
}

struct Agent {
    args: AgentArgs,
    link: Link,
    started: Instant,
    handled: u64,
    errors: u64,
    leaked: Vec<Vec<u8>>,
    seen: HashSet<String>,
}

impl Agent {
    fn memory(&self) -> Memory {
        Memory { rss: rss_bytes(), allocated: self.leaked.iter().map(|v| v.len() as u64).sum() }
    }

    fn heartbeat(&mut self) {
        let s = Status {
            agent_id: self.args.id.clone(),
            pid: std::process::id(),
            timestamp: now_ms(),
            uptime: self.started.elapsed().as_millis() as u64,
            memory: self.memory(),
            coordination_count: self.handled,
            error_count: self.errors,
            token: self.args.token.clone(),
            doorbell: self.args.doorbell,
        };
        if let Ok(bytes) = serde_json::to_vec(&s) {
            match &mut self.link {
                Link::Dir(d) => {
                    let _ = write_atomic(&d.join("status"), &format!("{}.json", self.args.id), &bytes);
                }
                Link::Redis(r) => {
                    r.beat(&self.args.id, &bytes);
                }
            }
        }
    }

    fn handle(&mut self, msg: &Message) {
        if msg.kind == "shutdown" {
            // The stage is over (a joined agent has no process the driver could signal).
            std::process::exit(0);
        }
        let t = Instant::now();
        if self.args.slow_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.args.slow_ms));
        }
        let response = match msg.kind.as_str() {
            "ping" => serde_json::json!({ "pong": true, "timestamp": now_ms() }),
            "compute" => {
                let n = msg.data["iterations"].as_u64().unwrap_or(1000);
                let mut acc: f64 = 0.0;
                for i in 0..n {
                    acc += (i as f64).sqrt().sin();
                }
                serde_json::json!({ "result": acc, "iterations": n })
            }
            "memory_test" => {
                let size = msg.data["size"].as_u64().unwrap_or(1000) as usize;
                // Allocate and touch `size` KiB, then free it: the agent's memory should return.
                let block: Vec<u8> = (0..size * 1024).map(|i| i as u8).collect();
                serde_json::json!({ "allocated": block.len(), "checksum": block.iter().map(|b| *b as u64).sum::<u64>() })
            }
            _ => serde_json::json!({ "echo": msg.data }),
        };
        if self.args.leak_bytes > 0 {
            self.leaked.push(vec![1u8; self.args.leak_bytes]);
        }
        self.handled += 1;
        if !self.args.silent {
            self.respond(msg, response, t);
        }
        if self.args.crash_after.is_some_and(|n| self.handled >= n) {
            std::process::exit(3);
        }
    }

    /// Write the response to `msg` (in another agent's name if impersonating).
    fn respond(&mut self, msg: &Message, response: serde_json::Value, t: Instant) {
        let name_as = self.args.impersonate.as_deref().unwrap_or(&self.args.id);
        let r = Response {
            agent_id: name_as.to_string(),
            message_id: msg.message_id.clone(),
            timestamp: now_ms(),
            processing_time: t.elapsed().as_secs_f64() * 1000.0,
            coordination_count: self.handled,
            error_count: self.errors,
            uptime: self.started.elapsed().as_millis() as u64,
            memory: self.memory(),
            response,
            token: self.args.token.clone(),
        };
        let bytes =
            if self.args.garbage { b"{ this is not json".to_vec() } else { serde_json::to_vec(&r).unwrap_or_default() };
        let sent = match &mut self.link {
            Link::Dir(d) => {
                write_atomic(&d.join("responses"), &format!("{name_as}--{}.json", msg.message_id), &bytes).is_ok()
            }
            Link::Redis(link) => link.send("response", name_as, &bytes),
        };
        if !sent {
            self.errors += 1;
        }
    }

    /// Handle one message's JSON (from Redis, where each entry is read once).
    fn take(&mut self, bytes: &[u8]) {
        match serde_json::from_slice::<Message>(bytes) {
            Ok(msg) if msg.is_for(&self.args.id) => self.handle(&msg),
            Ok(_) => {}
            Err(_) => self.errors += 1,
        }
    }

    /// Handle every message for this agent not seen yet.
    fn scan(&mut self, messages: &Path) {
        let Ok(rd) = std::fs::read_dir(messages) else { return };
        let mut names: Vec<String> = rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
        names.sort();
        for name in names {
            if name.starts_with('.') || !name.ends_with(".json") || self.seen.contains(&name) {
                continue;
            }
            let Ok(bytes) = std::fs::read(messages.join(&name)) else { continue };
            self.seen.insert(name);
            match serde_json::from_slice::<Message>(&bytes) {
                Ok(msg) if msg.is_for(&self.args.id) => self.handle(&msg),
                Ok(_) => {}
                Err(_) => self.errors += 1,
            }
        }
    }
}

/// An inotify instance watching one directory for arrivals: files renamed into it, or written
/// in place and closed.
struct Inotify {
    fd: i32,
}

impl Inotify {
    fn watch(dir: &Path) -> Option<Inotify> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: plain syscalls on a descriptor this struct owns.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK);
            if fd < 0 {
                return None;
            }
            if libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) < 0 {
                libc::close(fd);
                return None;
            }
            Some(Inotify { fd })
        }
    }

    /// Wait up to `timeout` for arrivals; true if there were any (the events are drained).
    fn wait(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll and read on our own descriptor into a local buffer.
        unsafe {
            if libc::poll(&mut pfd, 1, ms) <= 0 {
                return false;
            }
            let mut buf = [0u8; 4096];
            while libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
        }
        true
    }
}

impl Drop for Inotify {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor we own, once.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// SIGUSR1 as a wake-up: blocked in this thread, taken with `sigtimedwait`.
struct Doorbell;

impl Doorbell {
    fn set() -> libc::sigset_t {
        // SAFETY: sigset manipulation on a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            set
        }
    }

    fn block() {
        let set = Doorbell::set();
        // SAFETY: blocks SIGUSR1 in the calling thread (the agent is single-threaded).
        unsafe {
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
    }

    /// Wait up to `timeout` for a ring.
    fn wait(timeout: Duration) {
        let set = Doorbell::set();
        let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
        // SAFETY: waits for a blocked signal; no handler runs.
        unsafe {
            libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
        }
    }
}

const POLL_MIN: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(200);

/// Run the agent until it is terminated or its parent goes away.
pub fn run(mut args: AgentArgs) -> i32 {
    let parent = std::os::unix::process::parent_id();
    // SAFETY: prctl only asks the kernel to send SIGKILL when our parent dies.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    if std::os::unix::process::parent_id() != parent {
        return 0; // the parent died before the request above took effect
    }
    if args.doorbell {
        // Before the first heartbeat: the driver rings only agents that have heartbeated, so
        // the signal always finds it blocked (pending until `Doorbell::wait` takes it).
        Doorbell::block();
    }
    let link = match (&args.dir, &args.transport) {
        (_, Some(url)) => {
            if let Some(name) = &args.join {
                match super::transport::join(url, name, &args.id, Duration::from_secs(args.join_timeout)) {
                    Ok(j) => {
                        args.prefix = Some(j.prefix);
                        args.token = Some(j.token);
                        if let Some(h) = j.heartbeat_ms {
                            args.heartbeat_ms = h;
                        }
                    }
                    Err(e) => {
                        eprintln!("planrun agent: {e}");
                        return 2;
                    }
                }
            }
            let Some(prefix) = args.prefix.clone() else {
                eprintln!(
                    "planrun agent: --transport needs --prefix (PLANRUN_REDIS_PREFIX), which the fleet driver gives"
                );
                return 2;
            };
            match RedisLink::open(url, &prefix, heartbeat_of(&args)) {
                Ok(mut l) => {
                    if let Some(name) = &args.join {
                        l.joined(name);
                    }
                    Link::Redis(Box::new(l))
                }
                Err(e) => {
                    eprintln!("planrun agent: {e}");
                    return 2;
                }
            }
        }
        (Some(dir), None) => {
            if !dir.join("messages").is_dir() {
                eprintln!("planrun agent: {} is not a coordination directory (no messages/)", dir.display());
                return 2;
            }
            Link::Dir(dir.clone())
        }
        (None, None) => {
            eprintln!("planrun agent: give --dir (the file transport) or --transport redis://HOST:PORT");
            return 2;
        }
    };
    // After a join: a joined agent heartbeats at the interval the stage's answer gave.
    let heartbeat = heartbeat_of(&args);
    let mut agent =
        Agent { args, link, started: Instant::now(), handled: 0, errors: 0, leaked: Vec::new(), seen: HashSet::new() };
    match &agent.link {
        Link::Dir(d) => {
            let messages = d.join("messages");
            run_files(&mut agent, &messages, heartbeat, parent)
        }
        Link::Redis(_) => run_redis(&mut agent, heartbeat, parent),
    }
}

fn heartbeat_of(args: &AgentArgs) -> Duration {
    Duration::from_millis(args.heartbeat_ms.max(10))
}

/// The Redis loop: block in `XREAD` until a message or the next heartbeat is due.
fn run_redis(agent: &mut Agent, heartbeat: Duration, parent: u32) -> i32 {
    agent.heartbeat();
    let mut last_beat = Instant::now();
    loop {
        let wait = heartbeat.saturating_sub(last_beat.elapsed()).max(Duration::from_millis(1));
        let got = match &mut agent.link {
            Link::Redis(l) => l.read(wait),
            Link::Dir(_) => return 2,
        };
        for m in got {
            agent.take(&m);
        }
        if last_beat.elapsed() >= heartbeat {
            // A joined agent outlives its stage only until the stage's join key is gone (a
            // missed `shutdown`, a crashed runner).
            if let Link::Redis(l) = &mut agent.link
                && l.stage_gone()
            {
                return 0;
            }
            agent.heartbeat();
            last_beat = Instant::now();
            if std::os::unix::process::parent_id() != parent {
                return 0;
            }
        }
    }
}

/// The file loop: inotify on `messages/`, or polling without it.
fn run_files(agent: &mut Agent, messages: &Path, heartbeat: Duration, parent: u32) -> i32 {
    // Watch `messages/` with inotify read directly in this thread: one wake-up per message,
    // where a watcher thread plus a channel cost two (it matters when 50 agents wake at once on
    // 2 cores). Without inotify (the kernel allows 128 instances per user by default), poll:
    // every 20 ms just after a message, backing off to 200 ms while idle.
    let inotify = Inotify::watch(messages);
    let doorbell = agent.args.doorbell;
    let mut poll = POLL_MIN;
    agent.heartbeat();
    agent.scan(messages);
    let mut last_beat = Instant::now();
    loop {
        let wait = match &inotify {
            Some(_) => heartbeat.saturating_sub(last_beat.elapsed()),
            None => poll.min(heartbeat),
        };
        let woke = match &inotify {
            Some(i) => i.wait(wait),
            // Past the inotify limit, the doorbell: asleep until the driver rings or the next
            // heartbeat is due (and a scan then anyway, in case a ring came before a message).
            // At most POLL_MAX: a message sent before the driver had this agent's first
            // heartbeat was never rung.
            None if doorbell => {
                Doorbell::wait(heartbeat.saturating_sub(last_beat.elapsed()).min(POLL_MAX));
                true
            }
            None => {
                std::thread::sleep(wait);
                false
            }
        };
        let before = agent.seen.len();
        if woke || inotify.is_none() {
            agent.scan(messages);
        }
        if inotify.is_none() && !doorbell {
            poll = if agent.seen.len() > before { POLL_MIN } else { (poll * 2).min(POLL_MAX) };
        }
        if last_beat.elapsed() >= heartbeat {
            agent.heartbeat();
            last_beat = Instant::now();
            if std::os::unix::process::parent_id() != parent {
                return 0;
            }
        }
    }
}
