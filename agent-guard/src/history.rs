//! Sessions as the journal recorded them: what replay, baselines and
//! learned profiles read. Each session is its `session_start` record, its
//! events, alerts and operator actions, and its `session_end` record.
//!
//! The journal holds agent-controlled strings escaped (see
//! [`crate::escape`]); everything here keeps them as the journal has them.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
};

use serde_json::Value;

use crate::journal::{self, JournalError, Record};

/// One session, from the journal.
#[derive(Debug, Clone, Default)]
pub struct SessionHistory {
    pub session: String,
    /// From `session_start` (empty if the start is not in the journal).
    pub role: String,
    pub start: Option<Record>,
    pub end: Option<Record>,
    /// `event` records, in journal order.
    pub events: Vec<Record>,
    /// `alert` records.
    pub alerts: Vec<Record>,
    /// `operator` records naming this session.
    pub operator: Vec<Record>,
    /// Other records about the session (`io`, ...).
    pub other: Vec<Record>,
}

/// An exec as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Exec {
    pub seq: u64,
    pub ktime_ns: u64,
    pub pid: u32,
    pub ppid: u32,
    pub path: String,
    pub argv: Vec<String>,
    /// 0 when the program ran, else the errno of the failed exec.
    pub errno: i64,
}

/// A connect (or unconnected send) as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub addr: String,
    pub port: u64,
    pub protocol: String,
    pub allowed: bool,
}

impl Exec {
    /// From the data of an `exec` event record.
    pub fn from_event(d: &Value) -> Exec {
        Exec {
            seq: d["seq"].as_u64().unwrap_or(0),
            ktime_ns: d["ktime_ns"].as_u64().unwrap_or(0),
            pid: d["pid"].as_u64().unwrap_or(0) as u32,
            ppid: d["ppid"].as_u64().unwrap_or(0) as u32,
            path: d["path"].as_str().unwrap_or_default().to_owned(),
            argv: d["argv"].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default(),
            errno: d["errno"].as_i64().unwrap_or(0),
        }
    }
}

impl Connect {
    /// From the data of a `connect` event record.
    pub fn from_event(d: &Value) -> Connect {
        Connect {
            addr: d["addr"].as_str().unwrap_or_default().to_owned(),
            port: d["port"].as_u64().unwrap_or(0),
            protocol: d["protocol"].as_str().unwrap_or_default().to_owned(),
            allowed: d["allowed"].as_bool().unwrap_or(false),
        }
    }

    /// `ADDR:PORT`, IPv6 in brackets (as a profile's `connect` writes it).
    pub fn addr_port(&self) -> String {
        let addr = if self.addr.contains(':') { format!("[{}]", self.addr) } else { self.addr.clone() };
        format!("{addr}:{}", self.port)
    }

    /// `ADDR:PORT/PROTOCOL`, IPv6 in brackets.
    pub fn destination(&self) -> String {
        format!("{}/{}", self.addr_port(), self.protocol)
    }
}

impl SessionHistory {
    /// The `session_end` summary, when the session ended in the journal.
    pub fn summary(&self) -> Option<&Value> {
        self.end.as_ref().map(|r| &r.entry.data)
    }

    /// The final counters, by name.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.summary()
            .and_then(|s| s["counters"].as_object())
            .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
            .unwrap_or_default()
    }

    pub fn duration_ms(&self) -> Option<u64> {
        self.summary().and_then(|s| s["duration_ms"].as_u64())
    }

    /// The start record's data (`argv`, `workdir`, `profile`, ...).
    pub fn start_data(&self) -> Option<&Value> {
        self.start.as_ref().map(|r| &r.entry.data)
    }

    /// The session's working directory, from its start.
    pub fn workdir(&self) -> Option<String> {
        self.start_data().and_then(|d| d["workdir"].as_str()).map(str::to_owned)
    }

    fn events_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().map(|r| &r.entry.data).filter(move |d| d["type"] == kind)
    }

    pub fn execs(&self) -> Vec<Exec> {
        let mut out: Vec<Exec> = self.events_of("exec").map(Exec::from_event).collect();
        out.sort_by_key(|e| e.seq);
        out
    }

    pub fn connects(&self) -> Vec<Connect> {
        self.events_of("connect").map(Connect::from_event).collect()
    }

    /// Paths of files opened for reading (sessions that record reads).
    pub fn reads(&self) -> Vec<String> {
        self.events_of("file_open_read").filter_map(|d| d["path"].as_str().map(str::to_owned)).collect()
    }

    /// Socket files the session connected to (allowed `unix_connect`
    /// events), as the agent spelled them.
    pub fn unix_connects(&self) -> Vec<String> {
        self.events_of("unix_connect").filter_map(|d| d["path"].as_str().map(str::to_owned)).collect()
    }

    /// Paths of files opened for writing.
    pub fn writes(&self) -> Vec<String> {
        self.events_of("file_open_write").filter_map(|d| d["path"].as_str().map(str::to_owned)).collect()
    }

    /// Whether the session recorded the files it read.
    pub fn recorded_reads(&self) -> bool {
        self.events_of("file_open_read").next().is_some()
    }

    /// Pairs of consecutive executables: for each exec, the program the
    /// process ran before (its own previous exec, else its parent's
    /// program), then the new one; `(start)` for the session's first.
    pub fn exec_pairs(&self) -> BTreeSet<(String, String)> {
        exec_pairs(&self.execs())
    }

    /// The execs that ran a program (not the failed attempts).
    pub fn programs(&self) -> Vec<Exec> {
        self.execs().into_iter().filter(|e| e.errno == 0).collect()
    }
}

/// See [`SessionHistory::exec_pairs`]; also used live, exec by exec.
pub fn exec_pairs(execs: &[Exec]) -> BTreeSet<(String, String)> {
    let mut tracker = ExecTracker::default();
    execs.iter().filter(|e| e.errno == 0).map(|e| tracker.pair(e.pid, e.ppid, &e.path)).collect()
}

/// What each process of a session runs, to name exec pairs as they come.
#[derive(Debug, Default)]
pub struct ExecTracker {
    program: HashMap<u32, String>,
}

/// The "previous program" of a session's first exec.
pub const START: &str = "(start)";

impl ExecTracker {
    /// The pair an exec by `pid` (child of `ppid`) of `path` makes.
    pub fn pair(&mut self, pid: u32, ppid: u32, path: &str) -> (String, String) {
        let before = self.program.get(&pid).or_else(|| self.program.get(&ppid)).cloned().unwrap_or_else(|| START.to_owned());
        self.program.insert(pid, path.to_owned());
        (before, path.to_owned())
    }
}

/// Which sessions to load.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// A session id, or a unique prefix of one.
    pub session: Option<String>,
    pub role: Option<String>,
    /// Only sessions started at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only sessions whose end is in the journal.
    pub ended_only: bool,
}

/// The sessions in the journal at `dir` that pass `filter`, oldest first.
pub fn load(dir: &Path, filter: &Filter) -> Result<Vec<SessionHistory>, JournalError> {
    let mut by_id: HashMap<String, SessionHistory> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (_, path) in journal::files(dir)? {
        for line in journal::read_lines(&path)? {
            // A torn or edited line is `journal verify`'s business; skip it here.
            let Ok(record) = serde_json::from_slice::<Record>(&line) else { continue };
            let Some(id) = record.entry.session.clone() else { continue };
            if let Some(want) = &filter.session {
                if !id.starts_with(want.as_str()) {
                    continue;
                }
            }
            let h = by_id.entry(id.clone()).or_insert_with(|| {
                order.push(id.clone());
                SessionHistory { session: id.clone(), ..SessionHistory::default() }
            });
            match record.entry.kind.as_str() {
                "session_start" => {
                    h.role = record.entry.data["role"].as_str().unwrap_or_default().to_owned();
                    h.start = Some(record);
                }
                "session_end" => h.end = Some(record),
                "event" => h.events.push(record),
                "alert" => h.alerts.push(record),
                "operator" => h.operator.push(record),
                _ => h.other.push(record),
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .filter(|h| filter.role.as_ref().is_none_or(|r| &h.role == r))
        .filter(|h| filter.since_ms.is_none_or(|t| h.start.as_ref().is_some_and(|s| s.time_ms >= t)))
        .filter(|h| !filter.ended_only || h.end.is_some())
        .collect())
}

/// The one session `id` names (an id or a unique prefix).
pub fn one(dir: &Path, id: &str) -> anyhow::Result<SessionHistory> {
    let mut found = load(dir, &Filter { session: Some(id.to_owned()), ..Filter::default() })?;
    match found.len() {
        0 => anyhow::bail!("no session {} in the journal {}", crate::escape::for_terminal(id), dir.display()),
        1 => Ok(found.remove(0)),
        n => anyhow::bail!("{n} sessions start with {}: give more of the id", crate::escape::for_terminal(id)),
    }
}

/// Parses `--since`: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ`, or milliseconds since the epoch.
pub fn parse_since(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let bad = || format!("`{text}` is not a date: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
    let (date, time) = text.split_once('T').unwrap_or((text, "00:00:00Z"));
    let d: Vec<i64> = date.split('-').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad())?;
    let t: Vec<i64> = time.trim_end_matches('Z').split(':').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad())?;
    let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), t.as_slice()) else { return Err(bad()) };
    if !(1..=12).contains(m) || !(1..=31).contains(day) || *hh > 23 || *mm > 59 || *ss > 60 {
        return Err(bad());
    }
    // Days from the civil date (proleptic Gregorian), as in `cli::events::utc` reversed.
    let (y, m) = if *m <= 2 { (y - 1, m + 9) } else { (*y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_since("1970-01-01"), Ok(0));
        assert_eq!(parse_since("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(parse_since("2026-11-25T00:14:22Z"), Ok(1_795_565_662_000));
        assert_eq!(parse_since("12345"), Ok(12345));
        assert!(parse_since("2026-13-01").is_err());
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn exec_pairs_follow_processes() {
        let e = |seq, pid, ppid, path: &str| Exec { seq, ktime_ns: 0, pid, ppid, path: path.to_owned(), argv: vec![], errno: 0 };
        // sh (10, child of the supervisor 1) runs python (11) and cat (12); python execs into git.
        let pairs = exec_pairs(&[e(1, 10, 1, "/bin/sh"), e(2, 11, 10, "/usr/bin/python3"), e(3, 12, 10, "/bin/cat"), e(4, 11, 10, "/usr/bin/git")]);
        let want: BTreeSet<(String, String)> = [
            (START, "/bin/sh"),
            ("/bin/sh", "/usr/bin/python3"),
            ("/bin/sh", "/bin/cat"),
            ("/usr/bin/python3", "/usr/bin/git"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        assert_eq!(pairs, want);
    }
}
