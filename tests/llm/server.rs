//! A scripted OpenAI-compatible server on loopback, for the `openai` provider's tests: real
//! HTTP over a real socket, answers and error statuses (with any headers) in a set order.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted HTTP response.
#[derive(Clone)]
pub struct Reply {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    pub fn answer() -> Reply {
        let body =
            r#"{"choices":[{"message":{"content":"cooperate"}}],"usage":{"prompt_tokens":120,"completion_tokens":30}}"#;
        Reply { status: "200 OK", headers: vec![], body: body.to_string() }
    }

    pub fn error(status: &'static str) -> Reply {
        Reply { status, headers: vec![], body: "{}".to_string() }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// An OpenAI-compatible server on loopback answering from a script (its last reply repeats),
/// one connection at a time. It records every request's Authorization header and stops when
/// dropped.
pub struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(script: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let reply = &script[i.min(script.len() - 1)];
                if let Some(auth) = Server::answer(stream, reply) {
                    seen2.lock().unwrap().push(auth);
                }
            }
        });
        Server { port, seen, stop, thread: Some(thread) }
    }

    /// Read one request (headers, then the body) and write `reply`; returns the Authorization
    /// header ("" without one), or None if the request could not be read.
    fn answer(mut stream: TcpStream, reply: &Reply) -> Option<String> {
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let (mut len, mut auth) = (0usize, String::new());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => len = value.trim().parse().ok()?,
                "authorization" => auth = value.trim().to_string(),
                _ => {}
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok()?;
        let headers: String = reply.headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
        let resp = format!(
            "HTTP/1.1 {}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            reply.status,
            reply.body.len(),
            reply.body
        );
        stream.write_all(resp.as_bytes()).ok()?;
        Some(auth)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The Authorization header of every request answered so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
