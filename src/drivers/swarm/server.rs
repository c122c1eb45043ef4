//! `start_server = { … }`: a `redis-server` the stage starts on a free loopback port, in a
//! private directory (so `appendonly yes` survives a restart), restarts when a fault says so,
//! and stops by its pid at the end. The child dies with the runner (PR_SET_PDEATHSIG).

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::config::ServerCfg;

pub struct Server {
    cfg: ServerCfg,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Server {
    pub async fn start(cfg: &ServerCfg) -> Result<Server, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port for redis-server: {e}"))?
            .port();
        let dir = tempfile::Builder::new()
            .prefix("planrun-redis-")
            .tempdir()
            .map_err(|e| format!("cannot make a directory for redis-server: {e}"))?;
        let mut s = Server { cfg: cfg.clone(), port, dir, child: None };
        s.spawn().await?;
        Ok(s)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(&self.cfg.program);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", if self.cfg.appendonly { "yes" } else { "no" }])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it asks the kernel to KILL the server when the
        // runner thread that spawned it dies, so it never outlives a killed runner.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start `{}` ({e}): install Redis (`apt-get install -y redis-server`) or give `server = \"redis://…\"`",
                self.cfg.program
            )
        })?;
        self.child = Some(child);
        // Ready when it answers PING.
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("`{}` on port {} exited at start ({status})", self.cfg.program, self.port));
            }
            if tokio::time::Instant::now() > until {
                return Err(format!("`{}` on port {} did not answer PING within 10 s", self.cfg.program, self.port));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop the server: SIGKILL if `kill`, else SIGTERM (it writes its AOF and exits), then
    /// SIGKILL after 5 s.
    pub async fn stop(&mut self, kill: bool) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on our own child's pid, not yet reaped.
            unsafe {
                libc::kill(pid as i32, if kill { libc::SIGKILL } else { libc::SIGTERM });
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    /// Stop and start again on the same port and directory; how long it was down.
    pub async fn restart(&mut self, kill: bool) -> Result<Duration, String> {
        let t = std::time::Instant::now();
        self.stop(kill).await;
        self.spawn().await?;
        Ok(t.elapsed())
    }
}
