//! `MemoryTransport`: the transport contract kept in memory, for the coordinator's unit tests
//! and for agents that live inside planrun. Its agents are `MemoryAgent` handles rather than
//! processes reading a directory, but what they send is screened exactly as the file transport
//! screens files (tokens, unknown names), and `sever` makes it fail the way a removed directory
//! or a lost server does.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::contract::{Incoming, Transport};
use super::enrollment::Enrollment;
use crate::drivers::BoxFuture;
use crate::drivers::fleet::protocol::{ENV_AGENT_TOKEN, Memory, Message, Response, Status, now_ms};

#[derive(Default)]
struct Board {
    /// Messages not yet retired, in the order sent.
    live: Vec<Message>,
    /// Every message ever sent (for assertions).
    sent: Vec<Message>,
    /// Agents enrolled so far, with their current token.
    enrolled: Vec<(String, String)>,
    lost: Option<String>,
    closed: bool,
}

pub struct MemoryTransport {
    board: Mutex<Board>,
    enrollment: Enrollment,
    tx: mpsc::UnboundedSender<Incoming>,
    /// Bumped on every change agents may wait for (a message, an enrollment).
    version: watch::Sender<u64>,
}

impl MemoryTransport {
    pub fn create() -> (Arc<MemoryTransport>, mpsc::UnboundedReceiver<Incoming>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let t = MemoryTransport {
            board: Mutex::new(Board::default()),
            enrollment: Enrollment::default(),
            tx,
            version: watch::Sender::new(0),
        };
        (Arc::new(t), rx)
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// The agent side for `agent_id` (it need not be enrolled yet).
    pub fn agent(self: &Arc<Self>, agent_id: &str) -> MemoryAgent {
        MemoryAgent {
            id: agent_id.to_string(),
            transport: Arc::clone(self),
            version: self.version.subscribe(),
            seen: HashSet::new(),
        }
    }

    /// Every message sent so far, retired or not.
    pub fn sent(&self) -> Vec<Message> {
        self.board().sent.clone()
    }

    /// Whether `close` has run.
    pub fn closed(&self) -> bool {
        self.board().closed
    }

    /// From now on the transport is gone: sends fail and `lost` says `why`.
    pub fn sever(&self, why: &str) {
        self.board().lost = Some(why.to_string());
    }

    /// Hand something to the coordinator as the transport would, screened by token.
    fn deliver(&self, inc: Incoming, from: &str) {
        let inc = self.enrollment.screen(inc, || from.to_string());
        let _ = self.tx.send(inc);
    }
}

impl Transport for MemoryTransport {
    fn enroll(&self, agent_id: &str) -> Vec<(&'static str, String)> {
        let token = self.enrollment.admit(agent_id);
        {
            let mut b = self.board();
            b.enrolled.retain(|(id, _)| id != agent_id);
            b.enrolled.push((agent_id.to_string(), token.clone()));
        }
        self.changed();
        vec![(ENV_AGENT_TOKEN, token)]
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            {
                let mut b = self.board();
                if let Some(why) = &b.lost {
                    return Err(io::Error::new(io::ErrorKind::NotFound, why.clone()));
                }
                b.live.push(msg.clone());
                b.sent.push(msg.clone());
            }
            self.changed();
            Ok(())
        })
    }

    fn retire(&self, message_id: &str) {
        self.board().live.retain(|m| m.message_id != message_id);
    }

    fn lost(&self) -> Option<String> {
        self.board().lost.clone()
    }

    fn close(&self, keep: bool) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let mut b = self.board();
            b.closed = true;
            if !keep {
                b.live.clear();
            }
            b.live.len()
        })
    }
}

/// One agent's side of a `MemoryTransport`: wait to be enrolled, heartbeat, read the messages
/// meant for it, answer them (or not, or in another's name).
pub struct MemoryAgent {
    pub id: String,
    transport: Arc<MemoryTransport>,
    version: watch::Receiver<u64>,
    seen: HashSet<String>,
}

impl MemoryAgent {
    /// This agent's current token, once enrolled.
    pub fn token(&self) -> Option<String> {
        self.transport.board().enrolled.iter().find(|(id, _)| *id == self.id).map(|(_, t)| t.clone())
    }

    /// Wait until the coordinator has enrolled this agent; its token. None: the transport is gone.
    pub async fn enrolled(&mut self) -> Option<String> {
        loop {
            if let Some(t) = self.token() {
                return Some(t);
            }
            self.version.changed().await.ok()?;
        }
    }

    /// The next live message for this agent not seen yet, waiting for one. None: the transport
    /// is gone.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            let next = {
                let b = self.transport.board();
                b.live.iter().find(|m| m.is_for(&self.id) && !self.seen.contains(&m.message_id)).cloned()
            };
            if let Some(m) = next {
                self.seen.insert(m.message_id.clone());
                return Some(m);
            }
            self.version.changed().await.ok()?;
        }
    }

    /// A heartbeat in this agent's name, with its token.
    pub fn beat(&self) {
        let s = Status {
            agent_id: self.id.clone(),
            pid: std::process::id(),
            timestamp: now_ms(),
            uptime: 0,
            memory: Memory { rss: 1 << 20, allocated: 0 },
            coordination_count: 0,
            error_count: 0,
            token: self.token(),
            doorbell: false,
        };
        self.transport.deliver(Incoming::Status(s), &format!("status/{}", self.id));
    }

    /// A valid response to `msg` in the name of `as_agent` (this agent's own id to answer
    /// honestly), carrying this agent's token.
    pub fn answer_as(&self, msg: &Message, as_agent: &str) {
        let r = Response {
            agent_id: as_agent.to_string(),
            message_id: msg.message_id.clone(),
            timestamp: now_ms(),
            processing_time: 0.5,
            coordination_count: 1,
            error_count: 0,
            uptime: 1,
            memory: Memory { rss: 2 << 20, allocated: 0 },
            response: serde_json::json!({ "pong": true }),
            token: self.token(),
        };
        self.transport.deliver(Incoming::Response(r), &format!("responses/{as_agent}--{}", msg.message_id));
    }

    pub fn answer(&self, msg: &Message) {
        self.answer_as(msg, &self.id);
    }

    /// Something that breaks the protocol, as the transport would report it.
    pub fn garble(&self, error: &str) {
        let inc = Incoming::Bad {
            file: format!("responses/{}--garbled", self.id),
            agent: Some(self.id.clone()),
            error: error.into(),
        };
        self.transport.deliver(inc, "");
    }
}
