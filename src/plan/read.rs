//! Reading a plan file into a `Source`, refusing what is not a plan before it costs anything:
//! anything but a regular file (reading a FIFO or a device blocks or never ends), a file over
//! [`MAX_PLAN_BYTES`], and text that is not UTF-8 (pointing at the first bad byte). Every
//! refusal names the file.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::limits::{MAX_PLAN_BYTES, human_bytes};
use crate::diag::{Diag, Source};

/// Read the plan at `path`.
pub fn read_plan(path: &Path) -> Result<Source, Diag> {
    let name = path.display().to_string();
    let cannot = |e: std::io::Error| {
        Diag::new(format!("cannot read plan {name}: {e}")).help("check the path and that the file is readable")
    };
    // Look before opening: opening a FIFO for reading waits for a writer.
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_a_file(&name, &meta));
    }
    too_big(&name, meta.len())?;
    let file = open(path).map_err(cannot)?;
    // The path may have changed between the look and the open; the open file is what counts.
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_a_file(&name, &meta));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_PLAN_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(cannot)?;
    too_big(&name, bytes.len() as u64)?;
    source_from_bytes(&name, bytes)
}

/// A plan's bytes as a `Source`: at most [`MAX_PLAN_BYTES`], and UTF-8, or an error at the
/// first byte that is not.
pub fn source_from_bytes(name: &str, bytes: Vec<u8>) -> Result<Source, Diag> {
    too_big(name, bytes.len() as u64)?;
    let e = match String::from_utf8(bytes) {
        Ok(text) => return Ok(Source::new(name, text)),
        Err(e) => e,
    };
    let at = e.utf8_error().valid_up_to();
    let message = match e.utf8_error().error_len() {
        Some(_) => format!("plan is not UTF-8 text: byte 0x{:02X} is not valid UTF-8 here", e.as_bytes()[at]),
        None => "plan is not UTF-8 text: it ends in the middle of a character".to_string(),
    };
    // Text before `at` is valid, so its offsets (and line:col) are the file's; the bad bytes
    // show as U+FFFD.
    let src = Source::new(name, String::from_utf8_lossy(e.as_bytes()).into_owned());
    Err(Diag::new(message)
        .at(&src, at..at + char::REPLACEMENT_CHARACTER.len_utf8())
        .label("not UTF-8")
        .help("plans are UTF-8 text: re-save the file as UTF-8"))
}

/// The error for a plan over the size limit, naming both sizes.
pub fn too_big(name: &str, len: u64) -> Result<(), Diag> {
    if len <= MAX_PLAN_BYTES as u64 {
        return Ok(());
    }
    Err(Diag::new(format!(
        "{name}: plan is {} ({len} bytes), over the limit of {}",
        human_bytes(usize::try_from(len).unwrap_or(usize::MAX)),
        human_bytes(MAX_PLAN_BYTES)
    ))
    .help("plans are a few kilobytes: is this the right file?"))
}

fn not_a_file(name: &str, meta: &std::fs::Metadata) -> Diag {
    Diag::new(format!("{name} is {}, not a plan file", kind(meta))).help("give the path of a .toml or .kdl plan file")
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Open for reading without waiting: should a FIFO have replaced the file since it was
/// looked at, the open returns at once and the check after it refuses the FIFO.
fn open(path: &Path) -> std::io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    opts.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bad_byte_is_located() {
        let e = source_from_bytes("p.toml", b"[plan]\nname = \"x\xffy\"\n".to_vec()).unwrap_err();
        assert_eq!(e.location().as_deref(), Some("p.toml:2:10"));
        assert!(e.message.contains("byte 0xFF"), "{}", e.message);
        let e = source_from_bytes("p.toml", b"[plan]\n\xc3".to_vec()).unwrap_err();
        assert_eq!(e.location().as_deref(), Some("p.toml:2:1"));
        assert!(e.message.contains("middle of a character"), "{}", e.message);
    }

    #[test]
    fn a_plan_over_the_limit_is_refused_naming_its_size() {
        let e = source_from_bytes("big.kdl", vec![b' '; MAX_PLAN_BYTES + 1]).unwrap_err();
        assert_eq!(e.message, "big.kdl: plan is 1 MiB (1048577 bytes), over the limit of 1 MiB");
        assert!(source_from_bytes("ok.kdl", vec![b' '; MAX_PLAN_BYTES]).is_ok());
    }

    #[test]
    fn a_directory_is_not_a_plan() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_plan(dir.path()).unwrap_err();
        assert!(e.message.ends_with("is a directory, not a plan file"), "{}", e.message);
    }
}
