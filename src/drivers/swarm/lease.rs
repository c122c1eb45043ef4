//! Leader election with a lease and a fencing token, as Lua scripts Redis runs atomically:
//!
//! * `acquire`: `SET lease ME NX PX ttl`, and on success `INCR fence` — the new leader's token,
//!   larger than every earlier leader's.
//! * `renew` / `release`: extend or delete the lease only if ME still holds it (a leader whose
//!   lease lapsed must not extend or delete its successor's).
//! * `commit`: a leader's write (relayed messages counted into the swarm's state, the stream
//!   position it read to), accepted only if the writer still holds the lease *and* its token is
//!   not below `fence`. A leader paused past its lease wakes believing it leads; its write is
//!   refused. The lease check also holds when a restart lost the fence counter (tokens start
//!   again at 1). A commit names the position it read from and is refused once the state has
//!   moved past it, so a batch whose reply was lost is not counted twice.
//! * `save`: the state snapshot, fenced the same way.
//!
//! Both return the token of the state's previous writer: a write accepted over a newer token's
//! would be the failure fencing exists to prevent, and is reported as such (`fenced`, ok false),
//! from the server's own record rather than the client's view.
//!
//! Both writes also refuse (-2) when the swarm's state has no `created_at`: the server lost it
//! (restarted without persistence), and writing into the empty hash would pass a count from
//! zero off as the swarm's state. The next leader reports the loss and makes the state anew.
//!
//! `redis::Script` sends each by its SHA and reloads it after a server restart (NOSCRIPT).

use redis::Script;

pub struct Scripts {
    pub acquire: Script,
    pub renew: Script,
    pub release: Script,
    pub commit: Script,
    pub save: Script,
}

/// How every fenced write (`commit`, `save`) starts — KEYS: lease, fence, state; ARGV[1]: the
/// holder, ARGV[2]: its token. Refuses with {-2, 0} when the state is gone and {-1, prev} when
/// the writer no longer holds the lease or its token is below the fence; leaves `prev`, the
/// state's previous writer's token, for the rest of the script.
const FENCED: &str = r"if redis.call('HEXISTS', KEYS[3], 'created_at') == 0 then return {-2, 0} end
  local prev = tonumber(redis.call('HGET', KEYS[3], 'token') or '0')
  if redis.call('GET', KEYS[1]) ~= ARGV[1]
     or tonumber(ARGV[2]) < tonumber(redis.call('GET', KEYS[2]) or '0') then
    return {-1, prev}
  end
";

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts {
            // KEYS: lease, fence. ARGV: me, ttl_ms. → token, or 0.
            acquire: Script::new(
                r"if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
                    return redis.call('INCR', KEYS[2])
                  end
                  return 0",
            ),
            // KEYS: lease. ARGV: me, ttl_ms. → 1 if renewed.
            renew: Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
                  end
                  return 0",
            ),
            // KEYS: lease. ARGV: me. → 1 if released.
            release: Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                    return redis.call('DEL', KEYS[1])
                  end
                  return 0",
            ),
            // KEYS: lease, fence, state. ARGV: holder, token, n, from_id, end_id.
            // → {the swarm's message total, the state's previous token}; the total is -1 when
            // the writer no longer holds the lease or its token is fenced off, -2 when the state
            // is gone, -3 when the state has moved past `from_id` (the batch was committed).
            commit: Script::new(&format!(
                "{FENCED}{}",
                r"if (redis.call('HGET', KEYS[3], 'last_id') or '0') ~= ARGV[4] then return {-3, prev} end
                  redis.call('HSET', KEYS[3], 'last_id', ARGV[5], 'token', ARGV[2])
                  return {redis.call('HINCRBY', KEYS[3], 'messages', ARGV[3]), prev}"
            )),
            // KEYS: lease, fence, state. ARGV: holder, token, leader, saved_at_ms.
            // → {the total saved (or -1, -2 as above), the state's previous token}.
            save: Script::new(&format!(
                "{FENCED}{}",
                r"local total = tonumber(redis.call('HGET', KEYS[3], 'messages') or '0')
                  redis.call('HSET', KEYS[3], 'saved_messages', total, 'leader', ARGV[3], 'saved_at', ARGV[4], 'token', ARGV[2])
                  return {total, prev}"
            )),
        }
    }
}
