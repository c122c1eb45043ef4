//! How coordinator and agents exchange messages. `Transport` (`contract`) is the seam: the
//! coordinator sends messages through it and reads everything agents send — heartbeats,
//! responses, broken input — from one channel of `Incoming`, so it never watches agents one by
//! one. `Enrollment` (`enrollment`) binds what arrives to the agent that sent it, with a token
//! each agent gets at start; every transport screens with it.
//!
//! Implementations, one file each: `FileTransport` (`file`), the built-in one, a private
//! directory (by default in /dev/shm); `MemoryTransport` (`memory`), in-process, for tests and
//! for agents that live inside planrun; `RedisTransport` (`redis`), streams on a real Redis
//! server, with the agent's side in `redis_agent` (`RedisLink`). A new transport is one more
//! file here plus the line that chooses it in the coordinator.

mod contract;
mod enrollment;
mod file;
mod memory;
pub mod owner;
mod redis;
mod redis_agent;

pub use self::redis::{RedisTransport, join_key};
pub use contract::{Incoming, Transport};
pub use enrollment::Enrollment;
pub use file::{FileTransport, default_base};
pub use memory::{MemoryAgent, MemoryTransport};
pub use redis_agent::{Joined, RedisLink, join};
