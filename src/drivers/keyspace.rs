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
    let url = match url.split_once('?') {
        Some((base, _)) => base,
        None => url,
    };
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Whether `url` carries a password (`redis://:PASS@host` or `redis://user:PASS@host`).
/// Also `?pass=` (how redis-rs takes a unix socket's password).
pub fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    authority.rsplit_once('@').is_some_and(|(user, _)| user.contains(':'))
        || query.split('&').any(|kv| kv.starts_with("pass="))
}

/// The URL to connect with: `url` plus the password read from the environment variable
/// `password_env`, when the plan names one. The result lives in memory (and in agents'
/// environments), never in what planrun writes.
pub fn with_password(url: &str, password_env: Option<&str>) -> Result<String, String> {
    let Some(var) = password_env else { return Ok(url.to_string()) };
    let pass = std::env::var(var)
        .map_err(|_| format!("`password_env` names {var}, which is not set: export {var}=… before the run"))?;
    let Some((scheme, rest)) = url.split_once("://") else { return Ok(url.to_string()) };
    let encoded = encode(&pass);
    if scheme != "redis" {
        // A unix socket takes its password as a query parameter.
        let sep = if rest.contains('?') { '&' } else { '?' };
        return Ok(format!("{url}{sep}pass={encoded}"));
    }
    Ok(match rest.split_once('@') {
        Some((user, host)) if !user.contains('/') => format!("{scheme}://{user}:{encoded}@{host}"),
        _ => format!("{scheme}://:{encoded}@{rest}"),
    })
}

fn encode(pass: &str) -> String {
    let encoded: String = pass
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    encoded
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
        assert!(has_password("redis://:pw@h:1/0") && has_password("redis://u:pw@h/0"));
        assert!(!has_password("redis://h:1/0") && !has_password("redis://u@h/0"));
        assert!(has_password("redis+unix:///run/redis.sock?pass=pw"));
        assert_eq!(shown("redis+unix:///run/redis.sock?pass=pw"), "redis+unix:///run/redis.sock");
    }

    #[test]
    fn a_password_comes_from_the_environment_encoded() {
        // SAFETY: set in this test only, read back at once.
        unsafe { std::env::set_var("PLANRUN_TEST_REDIS_PW", "p@ss:w/rd") };
        let url = with_password("redis://127.0.0.1:6379/0", Some("PLANRUN_TEST_REDIS_PW")).unwrap();
        assert_eq!(url, "redis://:p%40ss%3Aw%2Frd@127.0.0.1:6379/0");
        assert!(redis::Client::open(url.as_str()).is_ok());
        assert!(with_password("redis://h/0", Some("PLANRUN_TEST_UNSET_VAR")).unwrap_err().contains("not set"));
    }
}
