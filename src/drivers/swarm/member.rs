//! One swarm member, as tasks in planrun: a sender (messages to the swarm's inbox stream at the
//! member's rate), a role loop (renew the lease while leading, else try for it; after a server
//! restart, step down and let the swarm elect again), and — while it leads — a relay (read the
//! inbox from the position the swarm's state records, commit each batch with its fencing
//! token, save the state snapshot). What the swarm as a whole knows — the latest leader's
//! token, since when it has had none and why, the last state saved — is its `Book`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::StreamReadReply;
use tokio_util::sync::CancellationToken;

use super::lease::Scripts;
use crate::events::Emitter;

/// Entries the inbox keeps at most (approximately); a swarm without a leader for long drops the
/// oldest.
const INBOX_MAXLEN: usize = 100_000;

/// The server's run id (it changes when the server restarts).
pub async fn run_id(con: &mut ConnectionManager) -> Option<String> {
    let info: String = redis::cmd("INFO").arg("server").query_async(con).await.ok()?;
    info.lines().find_map(|l| l.strip_prefix("run_id:")).map(|s| s.trim().to_string())
}

pub fn wall_ms() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1000.0
}

/// What every member of every swarm shares.
pub struct Shared {
    pub client: redis::Client,
    pub con: ConnectionManager,
    pub scripts: Scripts,
    pub events: Emitter,
    /// Bumped when the server restarted (its run id changed).
    pub epoch: AtomicU64,
    pub lease_ms: u64,
    pub renew: Duration,
    pub state_every: Duration,
    /// Time between one member's messages; None sends none.
    pub send_every: Option<Duration>,
    pub cancel: CancellationToken,
}

pub struct Keys {
    pub lease: String,
    pub fence: String,
    pub state: String,
    pub inbox: String,
}

/// A member as the swarm and the faults see it.
pub struct MemberCtl {
    pub name: String,
    pub killed: AtomicBool,
    /// Wall ms until which it is paused; 0 when not.
    pub paused_until: AtomicI64,
    /// Its token while it believes it leads; 0 otherwise.
    pub leading: AtomicU64,
}

/// One swarm: its keys, members and what it knows of its own leadership.
pub struct Book {
    pub id: String,
    pub keys: Keys,
    pub members: Vec<Arc<MemberCtl>>,
    /// The token of the latest leader elected, and which member that is.
    pub leader: Mutex<Option<(u64, usize)>>,
    /// Since when (wall ms) the swarm has had no leader, and why.
    pub leaderless: Mutex<Option<(f64, &'static str)>>,
    /// The message total its last `state_saved` recorded; -1 before any.
    pub saved: AtomicI64,
    /// The server (its run id) the swarm's state was last checked on; an election on another
    /// server — it restarted — checks the state against `saved` once.
    pub checked_on: Mutex<String>,
    /// When (wall ms) the latest leader last acquired or renewed its lease: a takeover of a
    /// leader that went quiet (paused) is timed from there.
    pub renewed: AtomicI64,
}

impl Book {
    pub fn new(prefix: &str, id: String, members: u32) -> Book {
        let k = |what: &str| format!("{prefix}:{id}:{what}");
        Book {
            keys: Keys { lease: k("lease"), fence: k("fence"), state: k("state"), inbox: k("inbox") },
            members: (1..=members)
                .map(|i| {
                    Arc::new(MemberCtl {
                        name: format!("{id}/agent-{i}"),
                        killed: AtomicBool::new(false),
                        paused_until: AtomicI64::new(0),
                        leading: AtomicU64::new(0),
                    })
                })
                .collect(),
            id,
            leader: Mutex::new(None),
            leaderless: Mutex::new(Some((wall_ms(), "initial"))),
            saved: AtomicI64::new(-1),
            checked_on: Mutex::new(String::new()),
            renewed: AtomicI64::new(0),
        }
    }

    /// The swarm has no leader from now (unless it already had none), because of `cause`.
    pub fn lose_leader(&self, token: u64, cause: &'static str) {
        let mut l = self.leader.lock().unwrap_or_else(|p| p.into_inner());
        if l.is_some_and(|(t, _)| t == token) {
            *l = None;
            let mut since = self.leaderless.lock().unwrap_or_else(|p| p.into_inner());
            since.get_or_insert((wall_ms(), cause));
        }
    }

    /// The member leading now, if any: (token, index).
    pub fn current(&self) -> Option<(u64, usize)> {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn paused(me: &MemberCtl) -> bool {
    let until = me.paused_until.load(Ordering::Relaxed);
    let left = until as f64 - wall_ms();
    if until == 0 || left <= 0.0 {
        return false;
    }
    tokio::time::sleep(Duration::from_secs_f64(left / 1000.0)).await;
    me.paused_until.store(0, Ordering::Relaxed);
    true
}

fn gone(shared: &Shared, me: &MemberCtl) -> bool {
    shared.cancel.is_cancelled() || me.killed.load(Ordering::Relaxed)
}

/// Send messages to the swarm's inbox until the stage ends or the member is killed.
pub async fn sender(shared: Arc<Shared>, book: Arc<Book>, idx: usize, offset: Duration) {
    let Some(every) = shared.send_every else { return };
    let me = Arc::clone(&book.members[idx]);
    let mut con = shared.con.clone();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.cancel.cancelled() => return,
        }
        if gone(&shared, &me) {
            return;
        }
        paused(&me).await;
        let sent_us = chrono::Utc::now().timestamp_micros();
        let r: redis::RedisResult<()> = redis::cmd("XADD")
            .arg(&book.keys.inbox)
            .arg("MAXLEN")
            .arg("~")
            .arg(INBOX_MAXLEN)
            .arg("*")
            .arg("from")
            .arg(&me.name)
            .arg("sent_us")
            .arg(sent_us)
            .query_async(&mut con)
            .await;
        if let Err(e) = r {
            let mut ev = shared.events.event("message").name(book.id.as_str()).agent(me.name.as_str()).ok(false);
            ev.error_kind = Some("connect".into());
            shared.events.emit(ev.error(format!("send: {e}")));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Lead or follow, until the stage ends or the member is killed.
pub async fn role(shared: Arc<Shared>, book: Arc<Book>, idx: usize) {
    let me = Arc::clone(&book.members[idx]);
    let holder = format!("{}#{}", me.name, rand::random::<u32>());
    let mut con = shared.con.clone();
    let mut epoch = shared.epoch.load(Ordering::Relaxed);
    let mut relay: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.renew) => {}
            _ = shared.cancel.cancelled() => break,
        }
        if gone(&shared, &me) {
            break;
        }
        paused(&me).await;
        let token = me.leading.load(Ordering::Relaxed);
        let now_epoch = shared.epoch.load(Ordering::Relaxed);
        if now_epoch != epoch {
            epoch = now_epoch;
            if token != 0 {
                // The server restarted: hand the lease back and let the swarm elect again.
                let _: redis::RedisResult<i64> =
                    shared.scripts.release.key(&book.keys.lease).arg(&holder).invoke_async(&mut con).await;
                me.leading.store(0, Ordering::Relaxed);
                book.lose_leader(token, "redis_restart");
                continue;
            }
        }
        if token != 0 {
            let renewed: redis::RedisResult<i64> = shared
                .scripts
                .renew
                .key(&book.keys.lease)
                .arg(&holder)
                .arg(shared.lease_ms)
                .invoke_async(&mut con)
                .await;
            if let Ok(1) = renewed
                && book.current().is_some_and(|(t, _)| t == token)
            {
                book.renewed.store(wall_ms() as i64, Ordering::Relaxed);
            }
            if let Ok(0) = renewed {
                // The lease lapsed (a pause, a slow renew): someone else may hold it already.
                me.leading.store(0, Ordering::Relaxed);
                book.lose_leader(token, "lease_lapsed");
            }
            continue;
        }
        let got: redis::RedisResult<u64> = shared
            .scripts
            .acquire
            .key(&book.keys.lease)
            .key(&book.keys.fence)
            .arg(&holder)
            .arg(shared.lease_ms)
            .invoke_async(&mut con)
            .await;
        if let Ok(t) = got
            && t > 0
        {
            me.leading.store(t, Ordering::Relaxed);
            elected(&shared, &book, idx, t).await;
            if let Some(r) = relay.take() {
                r.abort();
            }
            relay = Some(tokio::spawn(relay_loop(Arc::clone(&shared), Arc::clone(&book), idx, t)));
        }
    }
    if let Some(r) = relay {
        r.abort();
    }
}

/// Record the election (how long the swarm was without a leader, and why) and, after a server
/// restart, whether the swarm's state survived it.
async fn elected(shared: &Shared, book: &Book, idx: usize, token: u64) {
    let me = &book.members[idx];
    let since = {
        *book.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some((token, idx));
        book.leaderless.lock().unwrap_or_else(|p| p.into_inner()).take()
    };
    // No one said the swarm lost its leader: the leader went quiet (a pause) and its lease
    // lapsed. Time the takeover from its last renewal.
    let (since, cause) = since.unwrap_or_else(|| (book.renewed.load(Ordering::Relaxed) as f64, "takeover"));
    book.renewed.store(wall_ms() as i64, Ordering::Relaxed);
    shared.events.emit(
        shared
            .events
            .event("election")
            .name(cause)
            .agent(me.name.as_str())
            .ok(true)
            .latency_ms(wall_ms() - since)
            .attrs(serde_json::json!({ "swarm": book.id, "token": token })),
    );
    let mut con = shared.con.clone();
    let exists: redis::RedisResult<bool> =
        redis::cmd("HEXISTS").arg(&book.keys.state).arg("created_at").query_async(&mut con).await;
    let lost = matches!(exists, Ok(false));
    // On a server other than the one the state was last checked on (it restarted), or with the
    // state plainly gone, check what survived — once per server.
    let server = run_id(&mut con).await.unwrap_or_default();
    let moved = {
        let mut on = book.checked_on.lock().unwrap_or_else(|p| p.into_inner());
        let moved = !server.is_empty() && *on != server;
        if moved || lost {
            *on = server;
        }
        moved
    };
    if moved || lost {
        let found: redis::RedisResult<Option<i64>> =
            redis::cmd("HGET").arg(&book.keys.state).arg("messages").query_async(&mut con).await;
        let saved = book.saved.load(Ordering::Relaxed);
        let (ok, found, error) = match found {
            Ok(_) if lost => (false, 0, Some(format!("the swarm's state is gone ({saved} messages were saved)"))),
            Ok(f) => {
                let f = f.unwrap_or(0);
                (f >= saved, f, (f < saved).then(|| format!("state holds {f} messages, {saved} were saved")))
            }
            Err(e) => (false, 0, Some(format!("cannot read the state: {e}"))),
        };
        let mut ev = shared
            .events
            .event("state_recovered")
            .name(book.id.as_str())
            .agent(me.name.as_str())
            .ok(ok)
            .value(found as f64, "messages")
            .attrs(serde_json::json!({ "saved": saved, "found": found, "state_lost": lost }));
        if let Some(e) = error {
            ev = ev.error(e);
        }
        shared.events.emit(ev);
        if lost {
            // Start the swarm's state again, from what the new leader can know: nothing.
            let _: redis::RedisResult<()> = redis::cmd("HSET")
                .arg(&book.keys.state)
                .arg("created_at")
                .arg(wall_ms() as i64)
                .arg("recreated")
                .arg(1)
                .query_async(&mut con)
                .await;
            book.saved.store(-1, Ordering::Relaxed);
        }
    }
}

async fn reader(client: &redis::Client) -> redis::RedisResult<MultiplexedConnection> {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    client.get_multiplexed_async_connection_with_config(&cfg).await
}

/// Relay the inbox while leading with `token`.
async fn relay_loop(shared: Arc<Shared>, book: Arc<Book>, idx: usize, token: u64) {
    let me = Arc::clone(&book.members[idx]);
    let mut con = shared.con.clone();
    let mut rcon: Option<MultiplexedConnection> = None;
    let mut last: Option<String> = None;
    let mut next_save = tokio::time::Instant::now() + shared.state_every;
    while !gone(&shared, &me) && me.leading.load(Ordering::Relaxed) == token {
        // Where the swarm's state says the last leader stopped.
        let from = match &last {
            Some(l) => l.clone(),
            None => {
                let r: redis::RedisResult<Option<String>> =
                    redis::cmd("HGET").arg(&book.keys.state).arg("last_id").query_async(&mut con).await;
                match r {
                    Ok(l) => last.insert(l.unwrap_or_else(|| "0".into())).clone(),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
        };
        let c = match rcon.as_mut() {
            Some(c) => c,
            None => match reader(&shared.client).await {
                Ok(c) => rcon.insert(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(50)
            .arg("STREAMS")
            .arg(&book.keys.inbox)
            .arg(&from)
            .query_async(c)
            .await;
        let batch: Vec<redis::streams::StreamId> = match read {
            Ok(r) => r.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect(),
            Err(_) => {
                rcon = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A stop-the-world pause here (the fault) is the classic case: the leader wakes
        // believing it leads, with a batch in hand, while another holds a newer token.
        let was_paused = paused(&me).await;
        if was_paused {
            save(&shared, &book, &me, token, true).await;
        }
        if let Some(end) = batch.last().map(|e| e.id.clone()) {
            let total: redis::RedisResult<i64> = shared
                .scripts
                .commit
                .key(&book.keys.fence)
                .key(&book.keys.state)
                .arg(token)
                .arg(batch.len())
                .arg(&end)
                .invoke_async(&mut con)
                .await;
            match total {
                Ok(t) if t >= 0 => {
                    let now_us = chrono::Utc::now().timestamp_micros();
                    for e in &batch {
                        let from: String = e.get("from").unwrap_or_default();
                        let sent: i64 = e.get("sent_us").unwrap_or(now_us);
                        shared.events.emit(
                            shared
                                .events
                                .event("message")
                                .name(book.id.as_str())
                                .agent(from)
                                .ok(true)
                                .latency_ms((now_us - sent) as f64 / 1000.0),
                        );
                    }
                    last = Some(end);
                    if was_paused {
                        check_still_leader(&shared, &book, &me, token).await;
                    }
                }
                Ok(-2) => {
                    state_lost(&book, &me, token);
                    return;
                }
                Ok(_) => {
                    fenced(&shared, &book, &me, token, "commit");
                    return;
                }
                Err(_) => {
                    // Not committed: the batch is read again from `last`.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        if tokio::time::Instant::now() >= next_save {
            next_save += shared.state_every;
            if !save(&shared, &book, &me, token, false).await {
                return;
            }
        }
    }
}

/// The state snapshot, fenced; false if this member's token was refused.
async fn save(shared: &Shared, book: &Book, me: &MemberCtl, token: u64, after_pause: bool) -> bool {
    let mut con = shared.con.clone();
    let r: redis::RedisResult<i64> = shared
        .scripts
        .save
        .key(&book.keys.fence)
        .key(&book.keys.state)
        .arg(token)
        .arg(&me.name)
        .arg(wall_ms() as i64)
        .invoke_async(&mut con)
        .await;
    match r {
        Ok(total) if total >= 0 => {
            if after_pause {
                check_still_leader(shared, book, me, token).await;
            }
            book.saved.store(total, Ordering::Relaxed);
            shared.events.emit(
                shared
                    .events
                    .event("state_saved")
                    .name(book.id.as_str())
                    .agent(me.name.as_str())
                    .ok(true)
                    .value(total as f64, "messages"),
            );
            true
        }
        Ok(-2) => {
            state_lost(book, me, token);
            false
        }
        Ok(_) => {
            fenced(shared, book, me, token, "save");
            false
        }
        Err(_) => true,
    }
}

/// The swarm's state is gone from the server: stop leading; the next leader reports it.
fn state_lost(book: &Book, me: &MemberCtl, token: u64) {
    me.leading.store(0, Ordering::Relaxed);
    book.lose_leader(token, "state_lost");
}

/// A deposed leader's write was refused: what fencing is for.
fn fenced(shared: &Shared, book: &Book, me: &MemberCtl, token: u64, what: &str) {
    me.leading.store(0, Ordering::Relaxed);
    book.lose_leader(token, "fenced");
    shared.events.emit(
        shared
            .events
            .event("fenced")
            .name(book.id.as_str())
            .agent(me.name.as_str())
            .ok(true)
            .attrs(serde_json::json!({ "token": token, "write": what, "accepted": false })),
    );
}

/// After a pause, a write was accepted: right only if no one else was elected meanwhile.
async fn check_still_leader(shared: &Shared, book: &Book, me: &MemberCtl, token: u64) {
    let newest = book.current().map(|(t, _)| t).unwrap_or(0);
    if newest > token {
        shared.events.emit(
            shared
                .events
                .event("fenced")
                .name(book.id.as_str())
                .agent(me.name.as_str())
                .ok(false)
                .error(format!("a write with token {token} was accepted after token {newest} was elected"))
                .attrs(serde_json::json!({ "token": token, "newest": newest, "accepted": true })),
        );
    }
}
