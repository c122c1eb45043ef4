//! The event sink: one thread that owns `events.jsonl`. Producers (drivers, the runner) serialize
//! their events themselves — where the shared context strings already live, so no refcount
//! bounces between cores — and send the bytes over a bounded channel, bounded so a burst slows
//! producers down instead of growing memory. The sink thread assigns `seq`, writes it in front
//! of each row, and writes through a buffer. The buffer
//! reaches the file at least every second and on every `flush()` (stage ends, checkpoints), so
//! a killed runner loses at most the last second. A write error (a full disk) is kept and
//! reported by the next `flush()`/`close()`; everything written before it stays on disk.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use tokio_util::sync::CancellationToken;

use super::event::Event;

const CHANNEL_CAPACITY: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const BUFFER_BYTES: usize = 1 << 20;

enum Msg {
    /// One serialized row, without `seq` (it starts with `{` and has no newline).
    Row(Vec<u8>),
    Flush(Sender<Result<Position, SinkError>>),
    Close,
}

/// Why events could not be recorded. Cloneable: the first error is kept and reported to every
/// later caller.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing events.jsonl failed: {0}")]
    Write(Arc<io::Error>),
    #[error("cannot encode an event of kind {kind}: {reason}")]
    Encode { kind: String, reason: String },
    #[error("the event sink has stopped")]
    Stopped,
}

/// Where the log stands after a flush: the next `seq` and the file length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct Position {
    pub next_seq: u64,
    pub offset: u64,
}

#[derive(Clone, Debug, Default)]
pub struct SinkStats {
    pub events: u64,
    pub position: Position,
}

/// Cheap to clone; every clone feeds the same file.
#[derive(Clone)]
pub struct EventSink {
    tx: Sender<Msg>,
    failed: Arc<Mutex<Option<SinkError>>>,
    broken: CancellationToken,
}

pub struct SinkHandle {
    sink: EventSink,
    thread: Option<JoinHandle<SinkStats>>,
}

impl EventSink {
    /// Open (or append to) `path`, numbering from `start.next_seq`. `start.offset` must be the
    /// file's current length when appending.
    pub fn open(path: &Path, start: Position) -> io::Result<(EventSink, SinkHandle)> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        EventSink::to_writer(Box::new(file), start)
    }

    /// The same sink writing its JSONL rows to `out` instead of a file (a worker sends them on
    /// to the runner). `out` sees whole buffers, which may end inside a row; `flush` comes after
    /// whole rows only.
    pub fn to_writer(out: Box<dyn Write + Send>, start: Position) -> io::Result<(EventSink, SinkHandle)> {
        let (tx, rx) = bounded(CHANNEL_CAPACITY);
        let failed = Arc::new(Mutex::new(None));
        let broken = CancellationToken::new();
        let writer = Writer {
            out: BufWriter::with_capacity(BUFFER_BYTES, out),
            pos: start,
            events: 0,
            failed: Arc::clone(&failed),
            broken: broken.clone(),
            digits: itoa::Buffer::new(),
        };
        let thread = std::thread::Builder::new().name("planrun-sink".into()).spawn(move || writer.run(rx))?;
        let sink = EventSink { tx, failed, broken };
        Ok((sink.clone(), SinkHandle { sink, thread: Some(thread) }))
    }

    pub fn send(&self, ev: &Event) {
        let mut row = Vec::with_capacity(320);
        if let Err(e) = serde_json::to_writer(&mut row, ev) {
            if let Ok(mut g) = self.failed.lock() {
                g.get_or_insert(SinkError::Encode { kind: ev.kind.to_string(), reason: e.to_string() });
            }
            return;
        }
        // Only fails once the sink has shut down; late events have nowhere to go.
        let _ = self.tx.send(Msg::Row(row));
    }

    /// Write everything sent so far through to the file and report the position.
    pub fn flush(&self) -> Result<Position, SinkError> {
        let (tx, rx) = bounded(1);
        self.tx.send(Msg::Flush(tx)).map_err(|_| SinkError::Stopped)?;
        rx.recv().map_err(|_| SinkError::Stopped)?
    }

    /// Fires once a write has failed (a full disk): from then on nothing more is recorded, so
    /// the runner stops the stages rather than let them run unrecorded.
    pub fn broken(&self) -> &CancellationToken {
        &self.broken
    }

    /// The first write error, if any.
    pub fn error(&self) -> Option<SinkError> {
        self.failed.lock().ok().and_then(|g| g.clone())
    }
}

impl SinkHandle {
    /// Flush, stop the thread, and return what was written.
    pub fn close(mut self) -> Result<SinkStats, SinkError> {
        let _ = self.sink.tx.send(Msg::Close);
        let stats = self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default();
        match self.sink.error() {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.sink.tx.send(Msg::Close);
            let _ = t.join();
        }
    }
}

struct Writer {
    out: BufWriter<Box<dyn Write + Send>>,
    pos: Position,
    events: u64,
    failed: Arc<Mutex<Option<SinkError>>>,
    broken: CancellationToken,
    digits: itoa::Buffer,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) -> SinkStats {
        let mut deadline = Instant::now() + FLUSH_EVERY;
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(_) => match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        let _ = self.flush();
                        deadline = Instant::now() + FLUSH_EVERY;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            match msg {
                Msg::Row(row) => self.write(&row),
                Msg::Flush(reply) => {
                    let r = self.flush();
                    let _ = reply.send(r);
                }
                Msg::Close => break,
            }
            // A steady stream never times out, so check the clock every few thousand events.
            if self.events % 4096 == 0 && Instant::now() >= deadline {
                let _ = self.flush();
                deadline = Instant::now() + FLUSH_EVERY;
            }
        }
        self.flush().ok();
        SinkStats { events: self.events, position: self.pos }
    }

    fn write(&mut self, row: &[u8]) {
        if self.is_failed() || row.len() < 2 {
            return;
        }
        let seq = self.digits.format(self.pos.next_seq).as_bytes();
        // `{"seq":N,` + the row without its opening brace + newline.
        let len = 8 + seq.len() + (row.len() - 1) + 1;
        let written = (|| {
            self.out.write_all(b"{\"seq\":")?;
            self.out.write_all(seq)?;
            self.out.write_all(b",")?;
            self.out.write_all(&row[1..])?;
            self.out.write_all(b"\n")
        })();
        match written {
            Ok(()) => {
                self.pos.next_seq += 1;
                self.pos.offset += len as u64;
                self.events += 1;
            }
            Err(e) => self.fail(SinkError::Write(Arc::new(e))),
        }
    }

    fn flush(&mut self) -> Result<Position, SinkError> {
        if let Some(e) = self.failed_msg() {
            return Err(e);
        }
        match self.out.flush() {
            Ok(()) => Ok(self.pos),
            Err(e) => {
                let err = SinkError::Write(Arc::new(e));
                self.fail(err.clone());
                Err(err)
            }
        }
    }

    fn fail(&mut self, msg: SinkError) {
        if let Ok(mut g) = self.failed.lock() {
            g.get_or_insert(msg);
        }
        self.broken.cancel();
    }

    fn failed_msg(&self) -> Option<SinkError> {
        self.failed.lock().ok().and_then(|g| g.clone())
    }

    fn is_failed(&self) -> bool {
        self.failed.lock().map(|g| g.is_some()).unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_contiguously_and_reports_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let (sink, handle) = EventSink::open(&path, Position::default()).unwrap();
        for _ in 0..10 {
            sink.send(&Event { kind: "x".into(), ..Event::default() });
        }
        let pos = sink.flush().unwrap();
        assert_eq!(pos.next_seq, 10);
        assert_eq!(pos.offset, std::fs::metadata(&path).unwrap().len());
        let stats = handle.close().unwrap();
        assert_eq!(stats.events, 10);
        let seqs: Vec<u64> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Event>(l).unwrap().seq)
            .collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn full_disk_is_reported_not_panicked() {
        // /dev/full accepts opens and fails every write with ENOSPC.
        let (sink, handle) = EventSink::open(Path::new("/dev/full"), Position::default()).unwrap();
        for _ in 0..10 {
            sink.send(&Event::default());
        }
        let err = sink.flush().unwrap_err().to_string();
        assert!(err.contains("No space left"), "{err}");
        assert!(sink.broken().is_cancelled(), "the failure is signalled to whoever waits on it");
        assert!(handle.close().is_err());
    }
}
