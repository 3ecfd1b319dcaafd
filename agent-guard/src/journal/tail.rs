//! Reading the journal as it grows (`events --follow`, and the daemon's
//! `events` stream), with the filters both apply: a session, a role, and
//! for a user who is not an operator, only the sessions that user started.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use super::{files, JournalError, Record};

/// Where reading stopped: (file number, offset in it).
#[derive(Debug)]
pub struct Tail {
    dir: PathBuf,
    at: (u64, u64),
}

impl Tail {
    pub fn new(dir: &Path) -> Tail {
        Tail { dir: dir.to_owned(), at: (0, 0) }
    }

    /// Hands every complete record appended since the last call to `each`
    /// (a line still being written is read next time). Stops early, and
    /// returns false, when `each` does.
    pub fn read_new(&mut self, mut each: impl FnMut(Record) -> bool) -> Result<bool, JournalError> {
        for (n, path) in files(&self.dir)? {
            if n < self.at.0 {
                continue;
            }
            let start = if n == self.at.0 { self.at.1 } else { 0 };
            let io = |source| JournalError::Io { path: path.clone(), source };
            let mut f = std::fs::File::open(&path).map_err(io)?;
            f.seek(SeekFrom::Start(start)).map_err(io)?;
            let mut reader = BufReader::new(f);
            let mut pos = start;
            let mut line = Vec::new();
            loop {
                line.clear();
                let got = reader.read_until(b'\n', &mut line).map_err(io)?;
                if got == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                pos += got as u64;
                self.at = (n, pos);
                if let Ok(r) = serde_json::from_slice::<Record>(&line) {
                    if !each(r) {
                        return Ok(false);
                    }
                }
            }
            self.at = (n, pos);
        }
        Ok(true)
    }
}

/// Which records a reader sees.
#[derive(Debug, Default)]
pub struct Filter {
    pub session: Option<String>,
    pub role: Option<String>,
    /// Only the sessions this uid started (`None`: every record, for root
    /// and operators). Records about no session are then left out too.
    pub owner: Option<u32>,
    roles: HashMap<String, String>,
    owners: HashMap<String, u32>,
}

impl Filter {
    pub fn new(session: Option<String>, role: Option<String>, owner: Option<u32>) -> Filter {
        Filter { session, role, owner, ..Filter::default() }
    }

    /// Whether `r` passes; learns each session's role and owner from its start.
    pub fn pass(&mut self, r: &Record) -> bool {
        let session = r.entry.session.as_deref();
        if r.entry.kind == "session_start" {
            if let Some(s) = session {
                if let Some(role) = r.entry.data["role"].as_str() {
                    self.roles.insert(s.to_owned(), role.to_owned());
                }
                if let Some(uid) = r.entry.data["uid"].as_u64() {
                    self.owners.insert(s.to_owned(), uid as u32);
                }
            }
        }
        if self.session.as_deref().is_some_and(|want| session != Some(want)) {
            return false;
        }
        let role = session.and_then(|s| self.roles.get(s)).map(String::as_str);
        if self.role.as_deref().is_some_and(|want| role != Some(want)) {
            return false;
        }
        match self.owner {
            None => true,
            Some(uid) => session.and_then(|s| self.owners.get(s)) == Some(&uid),
        }
    }
}
