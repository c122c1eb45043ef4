//! A stage's keys on a Redis server, shared by the drivers that use one (the fleet's Redis
//! transport, the swarm driver): the prefix every key of a stage lives under
//! (`planrun:RUN:PHASE:STAGE`), finding and removing them at teardown, and telling Redis URLs
//! apart and showing them without their password.

use redis::aio::ConnectionManager;

/// The prefix of every key a stage makes.
pub fn stage_prefix(run: &str, phase: &str, stage: &str) -> String {
    format!("planrun:{run}:{phase}:{stage}")
}

/// Whether `url` names a Redis server.
pub fn is_redis_url(url: &str) -> bool {
    url.starts_with("redis://") || url.starts_with("redis+unix://") || url.starts_with("unix://")
}

/// `url` without its password, for messages.
pub fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Every key under `prefix` (SCAN, never KEYS: the server stays responsive).
pub async fn scan(con: &mut ConnectionManager, prefix: &str) -> redis::RedisResult<Vec<String>> {
    let mut cursor: u64 = 0;
    let mut found = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await?;
        found.extend(batch);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// Remove every key under `prefix`; how many there were.
pub async fn remove(con: &mut ConnectionManager, prefix: &str) -> redis::RedisResult<usize> {
    let found = scan(con, prefix).await?;
    for chunk in found.chunks(512) {
        let _: () = redis::cmd("UNLINK").arg(chunk).query_async(con).await?;
    }
    Ok(found.len())
}

/// What is left under `prefix` after removing it: 0 when clean (an unreachable server counts 1).
pub async fn remove_all(con: &mut ConnectionManager, prefix: &str) -> usize {
    match remove(con, prefix).await {
        Ok(_) => scan(con, prefix).await.map_or(1, |k| k.len()),
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(shown("redis://:secret@127.0.0.1:6379/0"), "redis://…@127.0.0.1:6379/0");
        assert_eq!(shown("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert!(is_redis_url("redis://x") && !is_redis_url("file") && !is_redis_url("http://x"));
    }
}
