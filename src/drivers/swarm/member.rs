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
    /// Its place in the swarm's `members`.
    pub idx: usize,
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
                        idx: i as usize - 1,
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

    /// The swarm has no leader from now (unless it already had none, or another leader was
    /// elected since), because of `cause`. Token *and* member: after a restart that lost the
    /// fence counter, two leaders in a row can hold the same token.
    pub fn lose_leader(&self, token: u64, idx: usize, cause: &'static str) {
        let mut l = self.leader.lock().unwrap_or_else(|p| p.into_inner());
        if *l == Some((token, idx)) {
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

/// Sleep out a pause (the fault), unless the stage ends first; whether there was one.
async fn paused(me: &MemberCtl, cancel: &CancellationToken) -> bool {
    let until = me.paused_until.load(Ordering::Relaxed);
    let left = until as f64 - wall_ms();
    if until == 0 || left <= 0.0 {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(left / 1000.0)) => {}
        _ = cancel.cancelled() => {}
    }
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
        paused(&me, &shared.cancel).await;
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
    let mut relay: Option<Relay> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.renew) => {}
            _ = shared.cancel.cancelled() => break,
        }
        if gone(&shared, &me) {
            break;
        }
        paused(&me, &shared.cancel).await;
        let token = me.leading.load(Ordering::Relaxed);
        let now_epoch = shared.epoch.load(Ordering::Relaxed);
        if now_epoch != epoch {
            epoch = now_epoch;
            if token != 0 {
                // The server restarted: hand the lease back and let the swarm elect again.
                let _: redis::RedisResult<i64> =
                    shared.scripts.release.key(&book.keys.lease).arg(&holder).invoke_async(&mut con).await;
                me.leading.store(0, Ordering::Relaxed);
                book.lose_leader(token, idx, "redis_restart");
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
                book.lose_leader(token, idx, "lease_lapsed");
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
            relay =
                Some(Relay(tokio::spawn(relay_loop(Arc::clone(&shared), Arc::clone(&book), idx, t, holder.clone()))));
        }
    }
    drop(relay);
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

/// Aborts its task when dropped: a relay never outlives the role loop that started it.
struct Relay(tokio::task::JoinHandle<()>);

impl Drop for Relay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a fenced write came to.
enum Write {
    /// Accepted; the swarm's message total.
    Done(i64),
    /// Refused: the writer no longer holds the lease, or its token is fenced off.
    Fenced,
    /// Refused: the state is gone (a restart without persistence).
    Lost,
    /// Refused: the state has moved past the batch's start (it was committed already).
    Moved,
    /// No answer (connection trouble): try again.
    Failed,
}

/// Read a script's `{code, previous token}` reply, and report a write accepted over a newer
/// token's — by the server's record — as the failure fencing exists to prevent.
fn written(
    shared: &Shared,
    book: &Book,
    me: &MemberCtl,
    token: u64,
    what: &str,
    r: redis::RedisResult<(i64, u64)>,
) -> Write {
    match r {
        Ok((code, prev)) => {
            if code >= 0 && prev > token {
                shared.events.emit(
                    shared
                        .events
                        .event("fenced")
                        .name(book.id.as_str())
                        .agent(me.name.as_str())
                        .ok(false)
                        .error(format!("a {what} with token {token} was accepted over token {prev}'s"))
                        .attrs(
                            serde_json::json!({ "token": token, "previous": prev, "write": what, "accepted": true }),
                        ),
                );
            }
            match code {
                -1 => Write::Fenced,
                -2 => Write::Lost,
                -3 => Write::Moved,
                c if c >= 0 => Write::Done(c),
                _ => Write::Failed,
            }
        }
        Err(_) => Write::Failed,
    }
}

/// Relay the inbox while leading with `token` (and while the server is the one it was elected on).
async fn relay_loop(shared: Arc<Shared>, book: Arc<Book>, idx: usize, token: u64, holder: String) {
    let me = Arc::clone(&book.members[idx]);
    // Shared by every message event this relay writes (one allocation, not one per message).
    let swarm: Arc<str> = book.id.as_str().into();
    let epoch = shared.epoch.load(Ordering::Relaxed);
    let mut con = shared.con.clone();
    let mut rcon: Option<MultiplexedConnection> = None;
    let mut last: Option<String> = None;
    let mut next_save = tokio::time::Instant::now() + shared.state_every;
    while !gone(&shared, &me)
        && me.leading.load(Ordering::Relaxed) == token
        && shared.epoch.load(Ordering::Relaxed) == epoch
    {
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
        // believing it leads, with a batch in hand, while another holds the lease.
        if paused(&me, &shared.cancel).await && !save(&shared, &book, &me, token, &holder).await {
            return;
        }
        if let Some(end) = batch.last().map(|e| e.id.clone()) {
            let r = shared
                .scripts
                .commit
                .key(&book.keys.lease)
                .key(&book.keys.fence)
                .key(&book.keys.state)
                .arg(&holder)
                .arg(token)
                .arg(batch.len())
                .arg(&from)
                .arg(&end)
                .invoke_async(&mut con)
                .await;
            match written(&shared, &book, &me, token, "commit", r) {
                Write::Done(_) => {
                    let now_us = chrono::Utc::now().timestamp_micros();
                    for e in &batch {
                        let from: String = e.get("from").unwrap_or_default();
                        let sent: i64 = e.get("sent_us").unwrap_or(now_us);
                        shared.events.emit(
                            shared
                                .events
                                .event("message")
                                .name(Arc::clone(&swarm))
                                .agent(from)
                                .ok(true)
                                .latency_ms((now_us - sent) as f64 / 1000.0),
                        );
                    }
                    last = Some(end);
                }
                Write::Lost => {
                    state_lost(&book, &me, token);
                    return;
                }
                Write::Fenced => {
                    fenced(&shared, &book, &me, token, "commit");
                    return;
                }
                // Committed already (a reply lost on the way): read on from the state's position.
                Write::Moved => last = None,
                // Not committed: the batch is read again from `last`.
                Write::Failed => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        if tokio::time::Instant::now() >= next_save {
            next_save += shared.state_every;
            if !save(&shared, &book, &me, token, &holder).await {
                return;
            }
        }
    }
}

/// The state snapshot, fenced; false if this member may no longer write.
async fn save(shared: &Shared, book: &Book, me: &MemberCtl, token: u64, holder: &str) -> bool {
    let mut con = shared.con.clone();
    let r = shared
        .scripts
        .save
        .key(&book.keys.lease)
        .key(&book.keys.fence)
        .key(&book.keys.state)
        .arg(holder)
        .arg(token)
        .arg(&me.name)
        .arg(wall_ms() as i64)
        .invoke_async(&mut con)
        .await;
    match written(shared, book, me, token, "save", r) {
        Write::Done(total) => {
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
        Write::Lost => {
            state_lost(book, me, token);
            false
        }
        Write::Fenced => {
            fenced(shared, book, me, token, "save");
            false
        }
        Write::Moved | Write::Failed => true,
    }
}

/// The swarm's state is gone from the server: stop leading; the next leader reports it.
fn state_lost(book: &Book, me: &MemberCtl, token: u64) {
    me.leading.store(0, Ordering::Relaxed);
    book.lose_leader(token, me.idx, "state_lost");
}

/// A deposed leader's write was refused: what fencing is for.
fn fenced(shared: &Shared, book: &Book, me: &MemberCtl, token: u64, what: &str) {
    me.leading.store(0, Ordering::Relaxed);
    book.lose_leader(token, me.idx, "fenced");
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
