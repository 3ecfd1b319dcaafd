//! `agent-guard journal verify`: walks the hash chain and reports every
//! place where it does not hold, by file and line.

use std::{
    fmt, io,
    path::{Path, PathBuf},
};

use super::{file_name, files, line_hash, read_head, read_lines, Head, JournalError, Record, GENESIS};

/// Why there was nothing to verify, or it could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("journal directory {dir} does not exist: nothing to verify")]
    NoDirectory { dir: PathBuf },
    #[error("{dir} is not a directory: nothing to verify")]
    NotADirectory { dir: PathBuf },
    #[error(
        "journal directory {dir} holds no record and no head: nothing to verify \
         (a journal never written to, or one whose files were all deleted)"
    )]
    Empty { dir: PathBuf },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl VerifyError {
    /// No journal was found to verify (as opposed to one that could not be read).
    pub fn nothing_to_verify(&self) -> bool {
        !matches!(self, VerifyError::Journal(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is about the journal as a whole.
    pub line: usize,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.what)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.what)
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub records: u64,
    pub last_seq: u64,
    /// Torn lines a crash left, already marked by a `torn_tail` record.
    pub torn_marked: Vec<Problem>,
    /// A torn last line not yet marked (a crash since the last append).
    pub torn_unmarked: Option<Problem>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// `head` as verify found it.
enum HeadState {
    Missing,
    /// Not one well-formed line: cut short or edited.
    Bad { path: PathBuf, len: usize },
    Good(Head),
}

pub fn verify(dir: &Path) -> Result<Report, VerifyError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(VerifyError::NotADirectory { dir: dir.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(VerifyError::NoDirectory { dir: dir.to_owned() }),
        Err(e) => return Err(JournalError::Io { path: dir.to_owned(), source: e }.into()),
    }
    let head = match read_head(dir) {
        Ok(None) => HeadState::Missing,
        Ok(Some(h)) => HeadState::Good(h),
        Err(JournalError::BadHead { path, len }) => HeadState::Bad { path, len },
        Err(e) => return Err(e.into()),
    };
    let mut report = Report::default();
    // The place after the last line of the last file, where a cut-off tail would go on.
    let mut end: Option<(PathBuf, usize)> = None;
    let mut expected = 1u64;
    let mut prev = GENESIS.to_owned();
    // Unreadable lines, waiting for a `torn_tail` record that names them
    // (file name, offset, length, the problem, whether it is the journal's very last line).
    let mut torn_candidates: Vec<(String, u64, u64, Problem, bool)> = Vec::new();
    let files = files(dir)?;
    report.files = files.len();
    for (file_index, (_, path)) in files.iter().enumerate() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let lines = read_lines(path)?;
        end = Some((path.clone(), lines.len() + 1));
        let last_index = lines.len().saturating_sub(1);
        let mut offset = 0u64;
        for (i, line) in lines.iter().enumerate() {
            let at = |what: String| Problem { file: path.clone(), line: i + 1, what };
            let line_offset = offset;
            offset += line.len() as u64;
            let complete = line.last() == Some(&b'\n');
            let record = if complete { Some(serde_json::from_slice::<Record>(line)) } else { None };
            let Some(Ok(r)) = record else {
                let p = at(match record {
                    // serde's message names the field (`unknown field `x``, `duplicate field `seq``).
                    Some(Err(e)) => format!("not a journal record ({e}): the line was edited or corrupted"),
                    _ => "torn line (no end of line): a write cut short by a crash".to_owned(),
                });
                let very_last = file_index + 1 == files.len() && i == last_index && !complete;
                torn_candidates.push((name.clone(), line_offset, line.len() as u64, p, very_last));
                continue;
            };
            if r.entry.kind == "torn_tail" {
                let file = r.entry.data["file"].as_str().unwrap_or_default().to_owned();
                let off = r.entry.data["offset"].as_u64().unwrap_or(u64::MAX);
                let bytes = r.entry.data["bytes"].as_u64().unwrap_or(u64::MAX);
                // Only a line that was torn when marked: the writer completed it
                // with one newline, so it is one byte longer than it was. (A whole
                // line that does not parse is never a crash's doing.)
                let torn = |(f, o, len, _, _): &(String, u64, u64, Problem, bool)| *f == file && *o == off && bytes.checked_add(1) == Some(*len);
                if let Some(pos) = torn_candidates.iter().position(torn) {
                    report.torn_marked.push(torn_candidates.remove(pos).3);
                }
            }
            report.records += 1;
            if r.seq != expected {
                report.problems.push(at(if r.seq > expected {
                    format!("record {} follows record {}: records {}..{} are missing (removed)", r.seq, expected - 1, expected, r.seq - 1)
                } else {
                    format!("record {} after record {}: out of order or repeated", r.seq, expected - 1)
                }));
            } else if r.prev != prev {
                report.problems.push(at(format!(
                    "record {} does not chain to the record before it: a record was changed, removed or reordered",
                    r.seq
                )));
            }
            // The hash covers the line's bytes as they are stored, so nothing in
            // it (a field added, a space, an escape) changes unnoticed.
            match line_hash(line) {
                Some(h) if h == r.hash => {}
                Some(_) => report.problems.push(at(format!("record {} does not match its hash: it was edited", r.seq))),
                None => report.problems.push(at(format!(
                    "record {} does not end with its hash as written: it was edited",
                    r.seq
                ))),
            }
            expected = r.seq + 1;
            prev = r.hash.clone();
            report.last_seq = r.seq;
        }
    }
    // Lines no marker explains: a torn very last line is a crash since the
    // last append; anything else is tampering.
    for (_, _, _, p, very_last) in torn_candidates {
        if very_last {
            report.torn_unmarked = Some(p);
        } else {
            report.problems.push(p);
        }
    }
    // In the order of the files and lines (unreadable lines were held back above).
    report.problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    match head {
        HeadState::Missing if report.records == 0 && report.problems.is_empty() => return Err(VerifyError::Empty { dir: dir.to_owned() }),
        HeadState::Missing => report.problems.push(Problem {
            file: dir.join("head"),
            line: 0,
            what: format!("head is missing: it was deleted ({} records, last {})", report.records, report.last_seq),
        }),
        HeadState::Bad { path, len } => report.problems.push(Problem {
            file: path,
            line: 1,
            what: if len == 0 {
                "head is empty: it was truncated".to_owned()
            } else {
                format!("head ({len} bytes) is not one `SEQ HASH FILE LEN` line: it was truncated or edited")
            },
        }),
        HeadState::Good(head) if head.seq > report.last_seq => {
            let what = format!(
                "the journal was truncated: records up to {} were written, it ends at {}",
                head.seq, report.last_seq
            );
            // Where it was cut: a line cut short (no crash tears a record
            // that head already counts), a file named by head that is gone,
            // or the end of the last file.
            let problem = if let Some(torn) = report.torn_unmarked.take() {
                Problem { what: format!("record cut off mid-line: {what}"), ..torn }
            } else if let Some(n) = head.file_no.filter(|n| !files.iter().any(|(f, _)| f == n)) {
                Problem { file: dir.join(file_name(n)), line: 0, what: format!("missing: {what}") }
            } else if let Some((file, line)) = end {
                Problem { file, line, what }
            } else {
                Problem { file: dir.join("head"), line: 0, what }
            };
            report.problems.push(problem);
        }
        HeadState::Good(head) if head.seq == report.last_seq && head.hash != prev => report.problems.push(Problem {
            file: dir.join("head"),
            line: 0,
            what: format!("the last record ({}) is not the one that was written", head.seq),
        }),
        HeadState::Good(_) => {}
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
