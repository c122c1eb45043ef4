//! Leader election with a lease and a fencing token, as Lua scripts Redis runs atomically:
//!
//! * `acquire`: `SET lease ME NX PX ttl`, and on success `INCR fence` — the new leader's token,
//!   larger than every earlier leader's.
//! * `renew` / `release`: extend or delete the lease only if ME still holds it (a leader whose
//!   lease lapsed must not extend or delete its successor's).
//! * `commit`: a leader's write (relayed messages counted into the swarm's state, the stream
//!   position it read to), accepted only if its token is not below `fence`. A leader paused
//!   past its lease wakes believing it leads; its write carries the old token and is refused.
//! * `save`: the state snapshot, fenced the same way.
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
            // KEYS: fence, state. ARGV: token, n, last_id. → the swarm's message total, -1
            // when the token is fenced off, -2 when the state is gone.
            commit: Script::new(
                r"if redis.call('HEXISTS', KEYS[2], 'created_at') == 0 then return -2 end
                  local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
                  if tonumber(ARGV[1]) < fence then return -1 end
                  redis.call('HSET', KEYS[2], 'last_id', ARGV[3], 'token', ARGV[1])
                  return redis.call('HINCRBY', KEYS[2], 'messages', ARGV[2])",
            ),
            // KEYS: fence, state. ARGV: token, leader, saved_at_ms. → the total saved, -1, or -2.
            save: Script::new(
                r"if redis.call('HEXISTS', KEYS[2], 'created_at') == 0 then return -2 end
                  local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
                  if tonumber(ARGV[1]) < fence then return -1 end
                  local total = tonumber(redis.call('HGET', KEYS[2], 'messages') or '0')
                  redis.call('HSET', KEYS[2], 'saved_messages', total, 'leader', ARGV[2], 'saved_at', ARGV[3])
                  return total",
            ),
        }
    }
}
