//! `agent-guard journal verify`: walks the hash chain and reports every
//! place where it does not hold, by file and line.

use std::{fmt, path::{Path, PathBuf}};

use super::{files, read_head, read_lines, record_hash, JournalError, Record, GENESIS};

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

pub fn verify(dir: &Path) -> Result<Report, JournalError> {
    let mut report = Report::default();
    let mut expected = 1u64;
    let mut prev = GENESIS.to_owned();
    // Unreadable lines, waiting for a `torn_tail` record that names them
    // (file name, offset, the problem, whether it is the journal's very last line).
    let mut torn_candidates: Vec<(String, u64, Problem, bool)> = Vec::new();
    let files = files(dir)?;
    report.files = files.len();
    for (file_index, (_, path)) in files.iter().enumerate() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let lines = read_lines(path)?;
        let last_index = lines.len().saturating_sub(1);
        let mut offset = 0u64;
        for (i, line) in lines.iter().enumerate() {
            let at = |what: String| Problem { file: path.clone(), line: i + 1, what };
            let line_offset = offset;
            offset += line.len() as u64;
            let complete = line.last() == Some(&b'\n');
            let record = if complete { serde_json::from_slice::<Record>(line).ok() } else { None };
            let Some(r) = record else {
                let p = at(if complete {
                    "not a journal record: the line was edited or corrupted".to_owned()
                } else {
                    "torn line (no end of line): a write cut short by a crash".to_owned()
                });
                let very_last = file_index + 1 == files.len() && i == last_index && !complete;
                torn_candidates.push((name.clone(), line_offset, p, very_last));
                continue;
            };
            if r.entry.kind == "torn_tail" {
                let file = r.entry.data["file"].as_str().unwrap_or_default().to_owned();
                let off = r.entry.data["offset"].as_u64().unwrap_or(u64::MAX);
                if let Some(pos) = torn_candidates.iter().position(|(f, o, _, _)| *f == file && *o == off) {
                    report.torn_marked.push(torn_candidates.remove(pos).2);
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
            if record_hash(r.seq, r.time_ms, &r.prev, &r.entry) != r.hash {
                report.problems.push(at(format!("record {} does not match its hash: it was edited", r.seq)));
            }
            expected = r.seq + 1;
            prev = r.hash.clone();
            report.last_seq = r.seq;
        }
    }
    // Lines no marker explains: a torn very last line is a crash since the
    // last append; anything else is tampering.
    for (_, _, p, very_last) in torn_candidates {
        if very_last {
            report.torn_unmarked = Some(p);
        } else {
            report.problems.push(p);
        }
    }
    match read_head(dir)? {
        Some(head) if head.seq > report.last_seq => report.problems.push(Problem {
            file: dir.join("head"),
            line: 0,
            what: format!(
                "the journal was truncated: records up to {} were written, it ends at {}",
                head.seq, report.last_seq
            ),
        }),
        Some(head) if head.seq == report.last_seq && head.hash != prev => report.problems.push(Problem {
            file: dir.join("head"),
            line: 0,
            what: format!("the last record ({}) is not the one that was written", head.seq),
        }),
        _ => {}
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
