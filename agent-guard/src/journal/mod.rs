//! The tamper-evident journal: every session start and end, every event
//! and alert, as JSON lines in a directory. Each record carries a global
//! sequence number and the hash of the record before it, so that
//! `agent-guard journal verify` finds an edited, removed, reordered or
//! truncated record and says where.
//!
//! Files are `journal-NNNNNN.jsonl`, rotated by size; the first record of a
//! file chains to the last of the one before. `head` holds the sequence
//! number and hash of the newest record, updated with every append, so a
//! tail cut off whole lines is noticed too. Appends are serialised with
//! `flock` on `lock` (several `run`s may share a journal) and reach the
//! disk (`fdatasync`) before `append` returns. A torn last line left by a
//! crash is kept, and marked by a `torn_tail` record at the next append.

pub mod journald;
pub mod tail;
pub mod verify;

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Seek, SeekFrom, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the journal lives unless the host config says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/agent-guard/journal";
/// Rotate a file once it is larger than this, unless configured.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io { path: PathBuf, #[source] source: io::Error },
    #[error("journal head {path} is not `SEQ HASH`")]
    BadHead { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_owned(), source }
}

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record says, before it is chained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// `session_start`, `session_end`, `event`, `alert`, `torn_tail`, ...
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub data: serde_json::Value,
}

/// One line of the journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub seq: u64,
    /// Milliseconds since the Unix epoch when it was written.
    pub time_ms: u64,
    /// Hash of the previous record (`GENESIS` for the first).
    pub prev: String,
    #[serde(flatten)]
    pub entry: Entry,
    /// SHA-256 of this record without this field, hex.
    pub hash: String,
}

/// The hashed part of a record, in a fixed field order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    time_ms: u64,
    prev: &'a str,
    #[serde(flatten)]
    entry: &'a Entry,
}

/// The hash a record must carry.
pub fn record_hash(seq: u64, time_ms: u64, prev: &str, entry: &Entry) -> String {
    let bytes = serde_json::to_vec(&Hashed { seq, time_ms, prev, entry }).unwrap_or_default();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn file_name(n: u64) -> String {
    format!("journal-{n:06}.jsonl")
}

/// The journal files in `dir`, oldest first, with their numbers.
pub fn files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(JournalError::Io { path: dir.to_owned(), source: e }),
    };
    for entry in rd {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_prefix("journal-").and_then(|r| r.strip_suffix(".jsonl")).and_then(|n| n.parse().ok()) {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest record's sequence number and hash, as `head` records them,
/// with the file it is in and that file's length after it (`SEQ HASH FILE
/// LEN`), so that an append can trust `head` instead of rereading the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    pub file_no: Option<u64>,
    pub file_len: Option<u64>,
}

pub fn read_head(dir: &Path) -> Result<Option<Head>, JournalError> {
    let path = dir.join("head");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::Io { path, source: e }),
    };
    let mut parts = text.split_whitespace();
    match (parts.next().and_then(|s| s.parse().ok()), parts.next()) {
        (Some(seq), Some(hash)) => Ok(Some(Head {
            seq,
            hash: hash.to_owned(),
            file_no: parts.next().and_then(|s| s.parse().ok()),
            file_len: parts.next().and_then(|s| s.parse().ok()),
        })),
        _ => Err(JournalError::BadHead { path }),
    }
}

/// An open journal, locked while it appends.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    max_file_bytes: u64,
    lock: File,
}

/// The state at the end of the journal, found under the lock.
struct Tail {
    seq: u64,
    hash: String,
    file_no: u64,
    /// A torn last line: its file, offset and length.
    torn: Option<(PathBuf, u64, u64)>,
}

impl Journal {
    /// Opens (creating) the journal in `dir`.
    pub fn open(dir: &Path, max_file_bytes: u64) -> Result<Journal, JournalError> {
        // Root only: the journal holds argv, paths and destinations of every session.
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&lock_path).map_err(io_err(&lock_path))?;
        Ok(Journal { dir: dir.to_owned(), max_file_bytes: max_file_bytes.max(4096), lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the end of the chain from the newest file (the head file is
    /// only a witness for `verify`; the records themselves are the truth).
    fn tail(&self) -> Result<Tail, JournalError> {
        let files = files(&self.dir)?;
        let Some((file_no, path)) = files.last().cloned() else {
            return Ok(Tail { seq: 0, hash: GENESIS.to_owned(), file_no: 1, torn: None });
        };
        let f = File::open(&path).map_err(io_err(&path))?;
        let len = f.metadata().map_err(io_err(&path))?.len();
        // Fast path: `head` names this file at exactly its length, so nothing was
        // written after it (no torn line, no other writer behind our back).
        if let Ok(Some(head)) = read_head(&self.dir) {
            if head.file_no == Some(file_no) && head.file_len == Some(len) {
                return Ok(Tail { seq: head.seq, hash: head.hash, file_no, torn: None });
            }
        }
        let mut reader = BufReader::new(f);
        let mut last: Option<Record> = None;
        let mut offset = 0u64;
        let mut torn = None;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io_err(&path))?;
            if n == 0 {
                break;
            }
            let complete = line.last() == Some(&b'\n');
            match serde_json::from_slice::<Record>(&line) {
                Ok(r) if complete => last = Some(r),
                _ if !complete || offset + n as u64 == len => torn = Some((path.clone(), offset, n as u64)),
                // A bad line in the middle is for `verify` to report; chain from the last good one.
                _ => {}
            }
            offset += n as u64;
        }
        // An empty newest file (rotation interrupted): chain from the one before.
        if last.is_none() && files.len() > 1 {
            let (_, prev_path) = &files[files.len() - 2];
            let text = fs::read_to_string(prev_path).map_err(io_err(prev_path))?;
            last = text.lines().rev().find_map(|l| serde_json::from_str::<Record>(l).ok());
        }
        Ok(match last {
            Some(r) => Tail { seq: r.seq, hash: r.hash, file_no, torn },
            None => Tail { seq: 0, hash: GENESIS.to_owned(), file_no, torn },
        })
    }

    /// Appends `entries` in order and makes them durable before returning.
    /// Returns the sequence number of the last one.
    pub fn append(&mut self, entries: &[Entry]) -> Result<u64, JournalError> {
        self.append_with(entries, true)
    }

    /// Appends without waiting for the disk: for a stream of events, made
    /// durable by the next `append` (or lost with the whole machine, never
    /// torn beyond the last line).
    pub fn append_unsynced(&mut self, entries: &[Entry]) -> Result<u64, JournalError> {
        self.append_with(entries, false)
    }

    fn append_with(&mut self, entries: &[Entry], sync: bool) -> Result<u64, JournalError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let lock_path = self.dir.join("lock");
        // SAFETY: flock on a file we own; released when unlocked below or on close.
        if unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_EX) } < 0 {
            return Err(JournalError::Io { path: lock_path, source: io::Error::last_os_error() });
        }
        let result = self.append_locked(entries, sync);
        // SAFETY: as above.
        unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_UN) };
        result
    }

    fn append_locked(&mut self, entries: &[Entry], sync: bool) -> Result<u64, JournalError> {
        let mut tail = self.tail()?;
        let mut path = self.dir.join(file_name(tail.file_no));
        let mut file = OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(io_err(&path))?;
        let mut pending: Vec<Entry> = Vec::with_capacity(entries.len() + 1);
        if let Some((torn_path, offset, len)) = &tail.torn {
            // Finish the torn line so the next record starts on its own line, and say so.
            file.write_all(b"\n").map_err(io_err(&path))?;
            pending.push(Entry {
                kind: "torn_tail".to_owned(),
                session: None,
                data: serde_json::json!({
                    "file": torn_path.file_name().map(|n| n.to_string_lossy().into_owned()),
                    "offset": offset,
                    "bytes": len,
                }),
            });
        }
        pending.extend(entries.iter().cloned());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut size = file.metadata().map_err(io_err(&path))?.len();
        for entry in pending {
            if size >= self.max_file_bytes {
                file.sync_data().map_err(io_err(&path))?;
                tail.file_no += 1;
                path = self.dir.join(file_name(tail.file_no));
                file = OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(io_err(&path))?;
                size = 0;
            }
            let seq = tail.seq + 1;
            let hash = record_hash(seq, now, &tail.hash, &entry);
            let record = Record { seq, time_ms: now, prev: std::mem::take(&mut tail.hash), entry, hash };
            let mut line = serde_json::to_vec(&record).map_err(|e| JournalError::Io { path: path.clone(), source: e.into() })?;
            line.push(b'\n');
            file.write_all(&line).map_err(io_err(&path))?;
            size += line.len() as u64;
            tail.seq = seq;
            tail.hash = record.hash;
        }
        if sync {
            file.sync_data().map_err(io_err(&path))?;
        }
        self.write_head(tail.seq, &tail.hash, tail.file_no, size, sync)?;
        Ok(tail.seq)
    }

    fn write_head(&self, seq: u64, hash: &str, file_no: u64, file_len: u64, sync: bool) -> Result<(), JournalError> {
        let tmp = self.dir.join("head.tmp");
        let head = self.dir.join("head");
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        writeln!(f, "{seq} {hash} {file_no} {file_len}").map_err(io_err(&tmp))?;
        if sync {
            f.sync_data().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &head).map_err(io_err(&head))?;
        // The rename itself must survive a crash.
        if sync {
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Reads every record of the journal, oldest first (for `verify`, replay, ...).
pub fn read_lines(path: &Path) -> Result<Vec<Vec<u8>>, JournalError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    f.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut out = Vec::new();
    let mut reader = BufReader::new(f);
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        out.push(line);
    }
    Ok(out)
}
