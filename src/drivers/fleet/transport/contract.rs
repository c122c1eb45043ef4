//! The contract between the coordinator and a transport: `Transport` (the coordinator's side)
//! and `Incoming` (what arrives from agents). Nothing here knows how bytes move.

use std::io;

use crate::drivers::BoxFuture;
use crate::drivers::fleet::protocol::{Message, Response, Status};

/// Something that arrived from an agent, in the order the transport saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A response whose token matches its agent (or whose agent the transport never enrolled:
    /// the coordinator reports those).
    Response(Response),
    /// A heartbeat, screened the same way.
    Status(Status),
    /// Input that broke the protocol: where it came from, whose it claims to be, and why.
    Bad {
        /// Where it was read (`responses/agent-3--x.json` for the file transport); kept as the
        /// `file` attribute of the `protocol_error` event.
        file: String,
        agent: Option<String>,
        error: String,
    },
    /// Something about the transport itself the user should hear of, without stopping the stage
    /// (a connection lost and retried, then restored); the coordinator records it as a `warning`.
    Notice(String),
    /// An agent started by hand elsewhere asks to join the stage (Redis transport, `join`):
    /// its id, and the nonce its answer goes back under.
    Join { agent: String, nonce: String, host: String },
}

/// The coordinator's side of a transport.
///
/// A transport is created by its own constructor, which also hands the coordinator the one
/// receiving end of an `Incoming` channel: every heartbeat, response and protocol violation of
/// every agent arrives there. That channel is the coordinator's only wake-up; a transport must
/// not need one watch per agent (a thousand agents must cost one reader, not a thousand).
///
/// The contract:
/// * `enroll` comes before an agent (re)starts; the agent is started with exactly the
///   environment it returns, and from then on only what carries its token is delivered as its
///   own. Anything in another agent's name, or without a token, arrives as `Incoming::Bad`.
/// * `send` delivers a message to every agent it is for (`Message::to`), including agents that
///   start later while the message is live; `retire` ends that.
/// * `send` errors are per message (the cycle fails, the fleet goes on); `lost` says when the
///   transport itself is gone and nothing further can be delivered, which stops the stage.
/// * `close` runs once, at teardown, after every agent has stopped; `release` once per agent a
///   scale-down stopped, after it exited.
/// * `send` and `close` may do network I/O, so they are async; `enroll`, `retire` and `lost`
///   must not block (a network transport queues a retirement, and tracks its connection's
///   health as it goes).
/// * Nothing an agent sends may crash, hang or exhaust the coordinator: sizes are bounded, and
///   what cannot be read becomes `Incoming::Bad`.
pub trait Transport: Send + Sync {
    /// Admit agent `agent_id` (again, after a restart: its earlier token stops being valid) and
    /// return the environment variables it needs to connect.
    fn enroll(&self, agent_id: &str) -> Vec<(&'static str, String)>;
    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, io::Result<()>>;
    /// Forget a message once its cycle is over.
    fn retire(&self, message_id: &str);
    /// Why the transport can no longer carry anything (its directory was removed, its server is
    /// gone for good), if that is so.
    fn lost(&self) -> Option<String>;
    /// Remove everything the transport created, unless `keep`; return how much is left (with
    /// `keep`, what it holds; without, what could not be removed). Zero means clean.
    fn close(&self, keep: bool) -> BoxFuture<'_, usize>;
    /// Agent `agent_id` was stopped for good (a scale-down) and has exited: remove what the
    /// transport holds of it (its heartbeat) and return how much is left of it (0: clean).
    fn release<'a>(&'a self, _agent_id: &'a str) -> BoxFuture<'a, usize> {
        Box::pin(async { 0 })
    }
    /// Whether agents that cannot watch (past the inotify limit) need the doorbell after a
    /// `send` to learn of it promptly; a transport whose agents block on a read says no.
    fn doorbell(&self) -> bool {
        false
    }
    /// Let agents started by hand join under `name` (None: this transport cannot take them).
    fn open_join<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async { Some("only the Redis transport takes agents started by hand (`join`)".to_string()) })
    }
    /// Enroll joining agent `agent` and send it its token (and the heartbeat interval) under `nonce`.
    fn admit_remote<'a>(
        &'a self,
        _agent: &'a str,
        _nonce: &'a str,
        _heartbeat_ms: u64,
    ) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async { Err(std::io::Error::other("this transport takes no remote agents")) })
    }
    /// Tell joining agent `nonce` why it was refused.
    fn refuse_remote<'a>(&'a self, _nonce: &'a str, _why: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}
