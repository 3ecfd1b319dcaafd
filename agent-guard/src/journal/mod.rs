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
    #[error("journal head {path} ({len} bytes) is not one `SEQ HASH FILE LEN` line")]
    BadHead { path: PathBuf, len: usize },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_owned(), source }
}

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record says, before it is chained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `session_start`, `session_end`, `event`, `alert`, `torn_tail`, ...
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub data: serde_json::Value,
}

/// One line of the journal. Read strictly: a line with a field that is not
/// one of these (or one of them twice) is not a record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(from = "RecordLine")]
pub struct Record {
    pub seq: u64,
    /// Milliseconds since the Unix epoch when it was written.
    pub time_ms: u64,
    /// Hash of the previous record (`GENESIS` for the first).
    pub prev: String,
    #[serde(flatten)]
    pub entry: Entry,
    /// SHA-256 of this record's line as written, without this field, hex.
    pub hash: String,
}

/// A record as it is read: the fields of [`Record`] and nothing else
/// (`flatten` cannot deny unknown fields, so reading does without it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordLine {
    seq: u64,
    time_ms: u64,
    prev: String,
    kind: String,
    #[serde(default)]
    session: Option<String>,
    data: serde_json::Value,
    hash: String,
}

impl From<RecordLine> for Record {
    fn from(r: RecordLine) -> Record {
        Record { seq: r.seq, time_ms: r.time_ms, prev: r.prev, entry: Entry { kind: r.kind, session: r.session, data: r.data }, hash: r.hash }
    }
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

fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What follows the hashed bytes on a line: `,"hash":"` HEX `"}` and the newline.
const HASH_KEY: &[u8] = b",\"hash\":\"";
const HASH_HEX_LEN: usize = 64;
const LINE_TAIL: &[u8] = b"\"}\n";

/// Encodes a record: its hash, and its line (with the newline). The line is
/// the hashed bytes with `,"hash":"…"` put before their closing brace, so
/// what is hashed is exactly what is written (see [`line_hash`]).
fn encode(seq: u64, time_ms: u64, prev: &str, entry: &Entry) -> Result<(String, Vec<u8>), serde_json::Error> {
    let hashed = serde_json::to_vec(&Hashed { seq, time_ms, prev, entry })?;
    let hash = hex_sha256(&[&hashed]);
    // `hashed` is a JSON object: it ends with its closing brace.
    let body = hashed.strip_suffix(b"}").unwrap_or(&hashed);
    let mut line = Vec::with_capacity(hashed.len() + HASH_KEY.len() + HASH_HEX_LEN + LINE_TAIL.len());
    line.extend_from_slice(body);
    line.extend_from_slice(HASH_KEY);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(LINE_TAIL);
    Ok((hash, line))
}

/// The hash a stored line must carry: SHA-256 of its bytes up to its last
/// field, `"hash"`, with the object closed there, which is what the writer
/// hashed. `None` when the line does not end in a `hash` field as the
/// writer puts it (so it was not written as it stands). Journals written
/// before the hash covered the stored bytes verify the same: the writer
/// always laid a line out this way.
pub fn line_hash(line: &[u8]) -> Option<String> {
    let tail_len = HASH_KEY.len() + HASH_HEX_LEN + LINE_TAIL.len();
    let split = line.len().checked_sub(tail_len)?;
    let (body, tail) = line.split_at(split);
    let hex = tail.strip_prefix(HASH_KEY)?.strip_suffix(LINE_TAIL)?;
    if !hex.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return None;
    }
    Some(hex_sha256(&[body, b"}"]))
}

pub(crate) fn file_name(n: u64) -> String {
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

/// Reads `head`: `None` when there is none, [`JournalError::BadHead`] when
/// it is not exactly one `SEQ HASH FILE LEN` line (or `SEQ HASH`, as the
/// first journals wrote it): a head cut short or edited.
pub fn read_head(dir: &Path) -> Result<Option<Head>, JournalError> {
    let path = dir.join("head");
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::Io { path, source: e }),
    };
    match parse_head(&text) {
        Some(head) => Ok(Some(head)),
        None => Err(JournalError::BadHead { path, len: text.len() }),
    }
}

fn parse_head(text: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('\n')?;
    let parts: Vec<&str> = text.split(' ').collect();
    let number = |s: &str| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    let (seq, hash) = (number(parts.first()?)?, *parts.get(1)?);
    if hash.len() != GENESIS.len() || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let (file_no, file_len) = match parts.len() {
        2 => (None, None),
        4 => (Some(number(parts[2])?), Some(number(parts[3])?)),
        _ => return None,
    };
    Some(Head { seq, hash: hash.to_owned(), file_no, file_len })
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
                // Only a line without its newline is a write cut short by a crash.
                _ if !complete => torn = Some((path.clone(), offset, n as u64)),
                // A whole line that is not a record (edited) is for `verify` to
                // report, never to be marked as torn; chain from the last good one.
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
            let (hash, line) = encode(seq, now, &tail.hash, &entry).map_err(|e| JournalError::Io { path: path.clone(), source: e.into() })?;
            file.write_all(&line).map_err(io_err(&path))?;
            size += line.len() as u64;
            tail.seq = seq;
            tail.hash = hash;
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
