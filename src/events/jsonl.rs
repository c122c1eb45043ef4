//! Reading `events.jsonl` back: streaming, in bounded batches, so a 10-million-event log never
//! sits in memory at once. A torn last line (the runner killed mid-write) is dropped with a
//! warning; a bad line anywhere else is an error naming the file and line.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}:{line}: not a valid event: {reason}")]
    BadLine { path: String, line: u64, reason: String },
    /// What the events were handed to failed (writing the Parquet file): not the log's fault.
    #[error("{0}")]
    Consumer(String),
}

/// What reading found besides the events.
#[derive(Debug, Default, Clone)]
pub struct ReadReport {
    pub events: u64,
    /// Bytes of a torn final line that were skipped.
    pub torn_tail_bytes: u64,
}

/// Call `batch` with up to `batch_size` events at a time, in file order.
pub fn read_batches(
    path: &Path,
    batch_size: usize,
    mut batch: impl FnMut(Vec<Event>) -> Result<(), String>,
) -> Result<ReadReport, ReadError> {
    let p = path.display().to_string();
    let file = File::open(path).map_err(|source| ReadError::Io { path: p.clone(), source })?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut report = ReadReport::default();
    let mut buf = Vec::with_capacity(batch_size);
    let mut line = String::new();
    let mut lineno = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|source| ReadError::Io { path: p.clone(), source })?;
        if n == 0 {
            break;
        }
        lineno += 1;
        if !line.ends_with('\n') {
            // Only the last line can lack its newline: the writer was stopped mid-line.
            report.torn_tail_bytes = n as u64;
            break;
        }
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        let ev: Event = serde_json::from_str(text).map_err(|e| ReadError::BadLine {
            path: p.clone(),
            line: lineno,
            reason: e.to_string(),
        })?;
        buf.push(ev);
        report.events += 1;
        if buf.len() >= batch_size {
            batch(std::mem::replace(&mut buf, Vec::with_capacity(batch_size))).map_err(ReadError::Consumer)?;
        }
    }
    if !buf.is_empty() {
        batch(buf).map_err(ReadError::Consumer)?;
    }
    Ok(report)
}

/// Cut the file back to `offset` bytes, saving what is cut to `save_to` (nothing recorded is
/// thrown away). Returns the number of bytes moved.
pub fn truncate_to(path: &Path, offset: u64, save_to: &Path) -> io::Result<u64> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    if len <= offset {
        return Ok(0);
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut tail = Vec::with_capacity((len - offset) as usize);
    f.read_to_end(&mut tail)?;
    std::fs::write(save_to, &tail)?;
    f.set_len(offset)?;
    f.sync_all()?;
    Ok(tail.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_skipped_bad_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.jsonl");
        let row = serde_json::to_string(&Event { kind: "x".into(), ..Event::default() }).unwrap();
        let good = format!("{{\"seq\":0,{}", &row[1..]);
        std::fs::write(&p, format!("{good}\n{good}\n{{\"seq\":2,\"t_")).unwrap();
        let mut n = 0;
        let r = read_batches(&p, 1, |b| {
            n += b.len();
            Ok(())
        })
        .unwrap();
        assert_eq!((n, r.events), (2, 2));
        assert!(r.torn_tail_bytes > 0);

        std::fs::write(&p, format!("{good}\nnot json\n{good}\n")).unwrap();
        let e = read_batches(&p, 10, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("e.jsonl:2:"), "{e}");
    }
}
