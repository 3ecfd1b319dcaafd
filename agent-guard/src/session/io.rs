//! `run --record-io`: the agent's stdout and stderr go through pipes to
//! the supervisor, which passes them on unchanged to where they were going
//! and records them, with their timing, in `<state_dir>/io/SESSION.jsonl`.
//! Secret values the profile `set`s in the environment are redacted in the
//! recording (not on the way through). The file's SHA-256 goes into the
//! journal, so an edited recording is detected at playback
//! (`agent-guard replay --io`).

use std::{
    fs,
    io::{BufWriter, Write},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One recorded chunk.
#[derive(Debug, Serialize, Deserialize)]
pub struct Chunk {
    /// Milliseconds since the session started.
    pub at_ms: f64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The bytes, escaped as for a terminal (`\n`, `\e`, `\xNN`, ...).
    pub data: String,
}

/// What the recording holds, for the journal.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub file: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    pub chunks: u64,
    /// Secret values replaced by `[REDACTED:NAME]`.
    pub redactions: u64,
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = std::io::pipe()?;
    Ok((r.into(), w.into()))
}

/// The pipes between the agent and the supervisor.
pub struct Capture {
    readers: [OwnedFd; 2],
    /// The agent's ends; the supervisor drops them once the agent is forked.
    pub writers: Option<[OwnedFd; 2]>,
}

impl Capture {
    pub fn new() -> std::io::Result<Capture> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Ok(Capture { readers: [out_r, err_r], writers: Some([out_w, err_w]) })
    }

    /// The fds the agent gets as its stdout and stderr.
    pub fn child_fds(&self) -> Option<(RawFd, RawFd)> {
        self.writers.as_ref().map(|[o, e]| (o.as_raw_fd(), e.as_raw_fd()))
    }

    /// Starts copying and recording; `secrets` are (name, value) pairs to
    /// redact. Drops the agent's ends first: call right after the fork.
    pub fn start(mut self, file: PathBuf, secrets: Vec<(String, Vec<u8>)>, started: Instant) -> std::thread::JoinHandle<std::io::Result<Recorded>> {
        self.writers = None;
        std::thread::spawn(move || copy_and_record(self.readers, &file, &secrets, started))
    }
}

/// Replaces each secret value in `data`; returns how many were replaced.
fn redact(data: &mut Vec<u8>, secrets: &[(String, Vec<u8>)]) -> u64 {
    let mut n = 0;
    for (name, value) in secrets {
        if value.is_empty() {
            continue;
        }
        let mark = format!("[REDACTED:{name}]").into_bytes();
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            if data[i..].starts_with(value) {
                out.extend_from_slice(&mark);
                i += value.len();
                n += 1;
            } else {
                out.push(data[i]);
                i += 1;
            }
        }
        *data = out;
    }
    n
}

/// One stream's bytes not yet recorded: a secret may straddle two reads,
/// so the last `keep` bytes wait for the next read (or the end).
struct Pending {
    stream: &'static str,
    buf: Vec<u8>,
}

fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a live slice to a borrowed fd.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // The reader went away (a closed terminal): keep recording.
            return;
        }
        data = &data[n as usize..];
    }
}

fn copy_and_record(readers: [OwnedFd; 2], file: &Path, secrets: &[(String, Vec<u8>)], started: Instant) -> std::io::Result<Recorded> {
    if let Some(dir) = file.parent() {
        use std::os::unix::fs::DirBuilderExt;
        // Root's only: recordings may hold what the agent printed of other secrets.
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let f = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file)?
    };
    let mut out = BufWriter::new(f);
    let mut hash = Sha256::new();
    let keep = secrets.iter().map(|(_, v)| v.len()).max().unwrap_or(1).saturating_sub(1);
    let mut pending = [Pending { stream: "stdout", buf: Vec::new() }, Pending { stream: "stderr", buf: Vec::new() }];
    let mut rec = Recorded { file: file.to_owned(), sha256: String::new(), bytes: 0, chunks: 0, redactions: 0 };
    let mut open = [true, true];
    let emit = |p: &mut Pending, all: bool, rec: &mut Recorded, out: &mut BufWriter<fs::File>, hash: &mut Sha256| -> std::io::Result<()> {
        rec.redactions += redact(&mut p.buf, secrets);
        let cut = if all { p.buf.len() } else { p.buf.len().saturating_sub(keep) };
        if cut == 0 {
            return Ok(());
        }
        let rest = p.buf.split_off(cut);
        let chunk = Chunk { at_ms: started.elapsed().as_secs_f64() * 1000.0, stream: p.stream.to_owned(), data: crate::escape::bytes_for_terminal(&p.buf) };
        let mut line = serde_json::to_vec(&chunk).map_err(std::io::Error::other)?;
        line.push(b'\n');
        hash.update(&line);
        out.write_all(&line)?;
        rec.chunks += 1;
        p.buf = rest;
        Ok(())
    };
    let mut buf = vec![0u8; 64 * 1024];
    while open.iter().any(|o| *o) {
        let mut fds: Vec<nix::poll::PollFd> = Vec::new();
        let mut which = Vec::new();
        for (i, r) in readers.iter().enumerate() {
            if open[i] {
                fds.push(nix::poll::PollFd::new(r.as_fd(), nix::poll::PollFlags::POLLIN));
                which.push(i);
            }
        }
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let ready: Vec<(usize, bool)> = fds.iter().zip(&which).map(|(f, &i)| (i, f.revents().is_some_and(|r| !r.is_empty()))).collect();
        for (i, is_ready) in ready {
            if !is_ready {
                continue;
            }
            // SAFETY: reading into a live buffer from our own pipe.
            let n = unsafe { libc::read(readers[i].as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                open[i] = false;
                emit(&mut pending[i], true, &mut rec, &mut out, &mut hash)?;
                continue;
            }
            let data = &buf[..n as usize];
            // SAFETY: fds 1 and 2 are this process's stdout and stderr, open for its life.
            write_all_fd(unsafe { BorrowedFd::borrow_raw(i as RawFd + 1) }, data);
            rec.bytes += data.len() as u64;
            pending[i].buf.extend_from_slice(data);
            emit(&mut pending[i], false, &mut rec, &mut out, &mut hash)?;
        }
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    rec.sha256 = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(rec)
}

/// A recorded chunk's text as it may be played back on a terminal: the
/// recording's escapes stay, except newlines and tabs.
pub fn playback_text(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_and_playback() {
        let secrets = vec![("API_TOKEN".to_owned(), b"s3cr3t-v4lue".to_vec())];
        let mut data = b"token=s3cr3t-v4lue; again s3cr3t-v4lue.".to_vec();
        assert_eq!(redact(&mut data, &secrets), 2);
        assert_eq!(data, b"token=[REDACTED:API_TOKEN]; again [REDACTED:API_TOKEN].");
        assert_eq!(playback_text(&crate::escape::bytes_for_terminal(b"a\tb\nc\x1b[2J\\")), "a\tb\nc\\e[2J\\");
    }
}
