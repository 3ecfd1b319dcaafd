//! Behavioural baselines per role: what the role's sessions normally do,
//! learned from the journal, and the checks that flag a session leaving it.
//!
//! A baseline holds robust statistics (median, MAD, high quantiles) of
//! each counter's final value and per-second rate and of session duration,
//! and the sets of executables run, exec pairs (program -> program it ran),
//! network destinations, and where files were read and written (as path
//! classes, see [`path_class`]). The same [`Checker`] scores a session
//! live (in its supervisor) and offline (`baseline check`).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    history::{ExecTracker, SessionHistory},
    profile::BaselinePolicy,
};

/// Robust statistics of one metric over the learned sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    /// Median absolute deviation from the median.
    pub mad: f64,
    pub p90: f64,
    pub max: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Stats {
    pub fn of(values: &[f64]) -> Stats {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let median = quantile(&v, 0.5);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - median).abs()).collect();
        dev.sort_by(f64::total_cmp);
        Stats {
            n: v.len(),
            min: v.first().copied().unwrap_or(0.0),
            median,
            mad: quantile(&dev, 0.5),
            p90: quantile(&v, 0.9),
            max: v.last().copied().unwrap_or(0.0),
        }
    }

    /// The highest value that is not a deviation: never below the highest
    /// value learned, else `sensitivity` robust standard deviations above
    /// the median (the deviation floored at 5% of the median and at 1, so
    /// that a metric that never varied does not alert on the smallest step).
    pub fn bound(&self, sensitivity: f64) -> f64 {
        let sigma = (1.4826 * self.mad).max(0.05 * self.median).max(1.0);
        self.max.max(self.median + sensitivity * sigma)
    }

    /// [`Stats::bound`] for the metric `name`. Wall time depends on the
    /// machine's load more than on the agent: a session's duration only
    /// deviates past twice the longest learned, and at least a second more.
    pub fn bound_for(&self, name: &str, sensitivity: f64) -> f64 {
        let b = self.bound(sensitivity);
        if name == "duration_ms" {
            b.max(2.0 * self.max).max(self.max + 1000.0)
        } else {
            b
        }
    }
}

/// What a role normally does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    pub role: String,
    /// When it was learned (ms since the epoch).
    pub learned_ms: u64,
    /// The sessions it was learned from.
    pub sessions: Vec<String>,
    /// Final values: every counter, and `duration_ms`.
    pub totals: BTreeMap<String, Stats>,
    /// Per-second rates of every counter over each session's duration.
    pub rates: BTreeMap<String, Stats>,
    pub executables: BTreeSet<String>,
    pub exec_pairs: BTreeSet<(String, String)>,
    /// `ADDR:PORT/PROTOCOL`.
    pub destinations: BTreeSet<String>,
    /// Path classes read; `None` when no learned session recorded its reads.
    pub reads: Option<BTreeSet<String>>,
    /// Path classes written.
    pub writes: BTreeSet<String>,
}

/// Directories whose files are the system's code and data: reads beneath
/// them are one class each (and one read rule in a learned profile),
/// whatever the file.
pub const SYSTEM_TREES: [&str; 6] = ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/opt"];

/// Whether `path` is `dir` or beneath it (component-wise: `/usrx` is not under `/usr`).
pub fn under(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// The class of a path for baselines and learned profiles: `{workdir}` for
/// anything in the session's working directory (relative paths included,
/// as the agent's own business), a system tree as a whole, `/proc/self`
/// and `/proc/PID` as `/proc/<pid>`, else the path's parent directory.
pub fn path_class(path: &str, workdir: Option<&str>) -> String {
    if !path.starts_with('/') {
        return "{workdir}".to_owned();
    }
    if workdir.is_some_and(|w| under(path, w)) {
        return "{workdir}".to_owned();
    }
    if let Some(tree) = SYSTEM_TREES.iter().find(|t| under(path, t)) {
        return (*tree).to_owned();
    }
    if let Some(rest) = path.strip_prefix("/proc/") {
        let first = rest.split('/').next().unwrap_or_default();
        if first == "self" || first == "thread-self" || first.bytes().all(|b| b.is_ascii_digit()) {
            return "/proc/<pid>".to_owned();
        }
    }
    match Path::new(path).parent() {
        Some(p) if p != Path::new("") => p.to_string_lossy().into_owned(),
        _ => "/".to_owned(),
    }
}

/// Whether a session may teach a baseline: it ended on its own and nothing
/// about it was alarming (no deviation or limit alert).
pub fn learnable(h: &SessionHistory) -> bool {
    h.summary().is_some_and(|s| s["ended_by"] == "exit")
        && !h.alerts.iter().any(|a| matches!(a.entry.data["alert"].as_str(), Some("deviation" | "limit")))
}

/// Learns `role`'s baseline from `sessions` (which should all be learnable).
pub fn learn(role: &str, sessions: &[SessionHistory]) -> Baseline {
    let mut totals: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut rates: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut b = Baseline {
        role: role.to_owned(),
        learned_ms: crate::session::registry::now_ms(),
        sessions: Vec::new(),
        totals: BTreeMap::new(),
        rates: BTreeMap::new(),
        executables: BTreeSet::new(),
        exec_pairs: BTreeSet::new(),
        destinations: BTreeSet::new(),
        reads: None,
        writes: BTreeSet::new(),
    };
    for h in sessions {
        b.sessions.push(h.session.clone());
        let duration_ms = h.duration_ms().unwrap_or(0);
        totals.entry("duration_ms".to_owned()).or_default().push(duration_ms as f64);
        let seconds = (duration_ms as f64 / 1000.0).max(1.0);
        for (name, value) in h.counters() {
            totals.entry(name.clone()).or_default().push(value as f64);
            rates.entry(name).or_default().push(value as f64 / seconds);
        }
        let workdir = h.workdir();
        for e in h.programs() {
            b.executables.insert(e.path);
        }
        b.exec_pairs.extend(h.exec_pairs());
        b.destinations.extend(h.connects().iter().map(crate::history::Connect::destination));
        if h.recorded_reads() {
            b.reads.get_or_insert_with(BTreeSet::new).extend(h.reads().iter().map(|p| path_class(p, workdir.as_deref())));
        }
        b.writes.extend(h.writes().iter().map(|p| path_class(p, workdir.as_deref())));
    }
    b.totals = totals.into_iter().map(|(k, v)| (k, Stats::of(&v))).collect();
    b.rates = rates.into_iter().map(|(k, v)| (k, Stats::of(&v))).collect();
    b
}

/// Where a role's baseline is kept.
pub fn path(state_dir: &Path, role: &str) -> PathBuf {
    state_dir.join("baselines").join(format!("{role}.json"))
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path}: not a baseline: {source}")]
    Parse { path: PathBuf, #[source] source: serde_json::Error },
}

/// The role's baseline, if one was learned.
pub fn load(state_dir: &Path, role: &str) -> Result<Option<Baseline>, BaselineError> {
    let p = path(state_dir, role);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| BaselineError::Parse { path: p, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BaselineError::Io { path: p, source }),
    }
}

/// Stores the baseline (pretty JSON, written aside and renamed).
pub fn save(state_dir: &Path, b: &Baseline) -> Result<PathBuf, BaselineError> {
    let p = path(state_dir, &b.role);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BaselineError::Io { path, source }
    };
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = p.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(b).unwrap_or_default() + "\n";
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &p).map_err(io(&p))?;
    Ok(p)
}

/// A session leaving its role's baseline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Deviation {
    /// `total`, `rate`, `new_executable`, `new_exec_pair`,
    /// `new_destination`, `new_read_location`, `new_write_location`.
    pub kind: &'static str,
    /// The counter, program, destination or path class concerned.
    pub subject: String,
    pub seen: Value,
    pub expected: Value,
}

impl Deviation {
    /// The alert record for the journal.
    pub fn alert(&self) -> Value {
        json!({ "alert": "deviation", "kind": self.kind, "subject": self.subject, "seen": self.seen, "expected": self.expected })
    }

    /// One line for a terminal, agent-controlled text escaped.
    pub fn human(&self) -> String {
        let subject = crate::escape::for_terminal(&self.subject);
        match self.kind {
            "total" => format!("{subject} at {} is above the baseline's bound {}", self.seen, self.expected["bound"]),
            "rate" => format!("{subject} at {}/s is above the baseline's bound {}/s", self.seen, self.expected["bound"]),
            "new_executable" => format!("ran {subject}, which this role never ran"),
            "new_exec_pair" => format!("{} ran {}, a combination this role never showed", crate::escape::for_terminal(self.seen[0].as_str().unwrap_or("")), crate::escape::for_terminal(self.seen[1].as_str().unwrap_or(""))),
            "new_destination" => format!("contacted {subject}, which this role never contacted"),
            "new_read_location" => format!("read in {subject}, where this role never read"),
            "new_write_location" => format!("wrote in {subject}, where this role never wrote"),
            other => format!("{other} {subject}"),
        }
    }
}

/// Rates are checked only once a session has run this long: the first
/// moments of a session are a burst by nature.
pub const RATE_AFTER_MS: u64 = 5_000;

/// Scores one session against a baseline, event by event; each deviation
/// is reported once.
pub struct Checker<'a> {
    baseline: &'a Baseline,
    sensitivity: f64,
    workdir: Option<String>,
    tracker: ExecTracker,
    reported: HashSet<(&'static str, String)>,
}

/// A few members of a set, for an alert's "expected".
fn sample(set: &BTreeSet<String>) -> Value {
    let v: Vec<&String> = set.iter().take(8).collect();
    json!({ "known": v, "of": set.len() })
}

impl<'a> Checker<'a> {
    pub fn new(baseline: &'a Baseline, policy: &BaselinePolicy, workdir: Option<String>) -> Checker<'a> {
        Checker { baseline, sensitivity: policy.sensitivity, workdir, tracker: ExecTracker::default(), reported: HashSet::new() }
    }

    fn once(&mut self, d: Deviation) -> Option<Deviation> {
        self.reported.insert((d.kind, d.subject.clone())).then_some(d)
    }

    pub fn exec(&mut self, pid: u32, ppid: u32, path: &str) -> Vec<Deviation> {
        let mut out = Vec::new();
        let (before, after) = self.tracker.pair(pid, ppid, path);
        if !self.baseline.executables.contains(path) {
            out.extend(self.once(Deviation { kind: "new_executable", subject: path.to_owned(), seen: json!(path), expected: sample(&self.baseline.executables) }));
        } else if !self.baseline.exec_pairs.contains(&(before.clone(), after.clone())) {
            // A new program is alarm enough; a known one in a new combination is the pair's alarm.
            out.extend(self.once(Deviation {
                kind: "new_exec_pair",
                subject: format!("{before} -> {after}"),
                seen: json!([before, after]),
                expected: json!({ "pairs_known": self.baseline.exec_pairs.len() }),
            }));
        }
        out
    }

    pub fn connect(&mut self, destination: &str) -> Option<Deviation> {
        if self.baseline.destinations.contains(destination) {
            return None;
        }
        self.once(Deviation { kind: "new_destination", subject: destination.to_owned(), seen: json!(destination), expected: sample(&self.baseline.destinations) })
    }

    pub fn read(&mut self, path: &str) -> Option<Deviation> {
        let known = self.baseline.reads.as_ref()?;
        let class = path_class(path, self.workdir.as_deref());
        if known.contains(&class) {
            return None;
        }
        self.once(Deviation { kind: "new_read_location", subject: class, seen: json!(path), expected: sample(known) })
    }

    pub fn write(&mut self, path: &str) -> Option<Deviation> {
        let class = path_class(path, self.workdir.as_deref());
        if self.baseline.writes.contains(&class) {
            return None;
        }
        self.once(Deviation { kind: "new_write_location", subject: class, seen: json!(path), expected: sample(&self.baseline.writes) })
    }

    /// Counters (by name) after `elapsed_ms` of the session.
    pub fn counters(&mut self, counters: &BTreeMap<String, u64>, elapsed_ms: u64) -> Vec<Deviation> {
        let mut out = Vec::new();
        let mut values: Vec<(String, f64)> = counters.iter().map(|(k, v)| (k.clone(), *v as f64)).collect();
        values.push(("duration_ms".to_owned(), elapsed_ms as f64));
        for (name, value) in values {
            let Some(stats) = self.baseline.totals.get(&name) else { continue };
            let bound = stats.bound_for(&name, self.sensitivity);
            if value > bound {
                out.extend(self.once(Deviation {
                    kind: "total",
                    subject: name.clone(),
                    seen: json!(value),
                    expected: json!({ "median": stats.median, "max": stats.max, "bound": bound.round() }),
                }));
            }
            if elapsed_ms >= RATE_AFTER_MS {
                if let Some(stats) = self.baseline.rates.get(&name) {
                    let rate = value / (elapsed_ms as f64 / 1000.0);
                    let bound = stats.bound(self.sensitivity);
                    if rate > bound {
                        out.extend(self.once(Deviation {
                            kind: "rate",
                            subject: name,
                            seen: json!((rate * 100.0).round() / 100.0),
                            expected: json!({ "median": stats.median, "max": stats.max, "bound": (bound * 100.0).round() / 100.0 }),
                        }));
                    }
                }
            }
        }
        out
    }

    /// Feeds one journal event record (its data, as the journal holds it:
    /// the offline check); returns what deviates.
    pub fn event(&mut self, d: &Value) -> Vec<Deviation> {
        let seen = match d["type"].as_str() {
            Some("exec") => {
                let e = crate::history::Exec::from_event(d);
                Seen::Exec { pid: e.pid, ppid: e.ppid, path: e.path.into(), errno: e.errno }
            }
            Some("connect") => Seen::Connect(crate::history::Connect::from_event(d).destination()),
            Some("file_open_read") => Seen::Read(d["path"].as_str().unwrap_or_default().into()),
            Some("file_open_write") => Seen::Write(d["path"].as_str().unwrap_or_default().into()),
            _ => Seen::Other,
        };
        self.seen(seen)
    }

    /// Feeds one event record as the supervisor builds it (the live check:
    /// no round trip through JSON); returns what deviates.
    pub fn record(&mut self, r: &crate::monitor::record::EventRecord) -> Vec<Deviation> {
        use crate::monitor::record::EventBody;
        let seen = match &r.event {
            EventBody::Exec { ppid, errno, path, .. } => Seen::Exec { pid: r.pid, ppid: *ppid, path: path.as_str().into(), errno: i64::from(*errno) },
            EventBody::Connect { addr, port, protocol, allowed, .. } => {
                let c = crate::history::Connect { addr: addr.to_string(), port: u64::from(*port), protocol: protocol.clone(), allowed: *allowed };
                Seen::Connect(c.destination())
            }
            EventBody::FileOpenRead { path, .. } => Seen::Read(path.as_str().into()),
            EventBody::FileOpenWrite { path, .. } => Seen::Write(path.as_str().into()),
            _ => Seen::Other,
        };
        self.seen(seen)
    }

    fn seen(&mut self, seen: Seen<'_>) -> Vec<Deviation> {
        match seen {
            // A failed exec (a shell searching PATH) runs nothing.
            Seen::Exec { pid, ppid, path, errno: 0 } => self.exec(pid, ppid, &path),
            Seen::Exec { .. } | Seen::Other => Vec::new(),
            Seen::Connect(destination) => self.connect(&destination).into_iter().collect(),
            Seen::Read(path) => self.read(&path).into_iter().collect(),
            Seen::Write(path) => self.write(&path).into_iter().collect(),
        }
    }
}

/// What an event shows the checker, from a journal record or a live one.
enum Seen<'a> {
    Exec { pid: u32, ppid: u32, path: std::borrow::Cow<'a, str>, errno: i64 },
    Connect(String),
    Read(std::borrow::Cow<'a, str>),
    Write(std::borrow::Cow<'a, str>),
    Other,
}

/// Scores a finished session offline: every event, then its final counters.
pub fn check(baseline: &Baseline, policy: &BaselinePolicy, h: &SessionHistory) -> Vec<Deviation> {
    let mut c = Checker::new(baseline, policy, h.workdir());
    let mut out = Vec::new();
    for r in &h.events {
        out.extend(c.event(&r.entry.data));
    }
    out.extend(c.counters(&h.counters(), h.duration_ms().unwrap_or(0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_bounds() {
        let s = Stats::of(&[10.0, 12.0, 11.0, 13.0, 9.0]);
        assert_eq!((s.n, s.min, s.median, s.max), (5, 9.0, 11.0, 13.0));
        assert_eq!(s.mad, 1.0);
        // max(13, 11 + 4 * max(1.4826, 0.55, 1)) = 16.93
        assert!((s.bound(4.0) - 16.9304).abs() < 1e-3, "{}", s.bound(4.0));
        // A metric that never varied still allows a small step.
        let flat = Stats::of(&[3.0, 3.0, 3.0]);
        assert_eq!(flat.bound(4.0), 7.0);
        assert_eq!(Stats::of(&[]).n, 0);
    }

    #[test]
    fn path_classes() {
        let w = Some("/srv/repo");
        assert_eq!(path_class("src/main.rs", w), "{workdir}");
        assert_eq!(path_class("/srv/repo/src/main.rs", w), "{workdir}");
        assert_eq!(path_class("/srv/repository/x", w), "/srv/repository");
        assert_eq!(path_class("/usr/lib/python3.11/json/__init__.py", w), "/usr");
        assert_eq!(path_class("/proc/self/status", w), "/proc/<pid>");
        assert_eq!(path_class("/proc/4242/maps", w), "/proc/<pid>");
        assert_eq!(path_class("/root/.aws/credentials", w), "/root/.aws");
        assert_eq!(path_class("/etc/hostname", None), "/etc");
        assert_eq!(path_class("/", None), "/");
    }

    /// The live check (typed records) and the offline one (the records'
    /// JSON, as the journal holds them) see the same deviations.
    #[test]
    fn live_and_offline_checks_agree() {
        use crate::monitor::{events::Event, record::EventRecord};
        let baseline = Baseline {
            role: "r".into(),
            learned_ms: 0,
            sessions: Vec::new(),
            totals: BTreeMap::new(),
            rates: BTreeMap::new(),
            executables: ["/bin/sh".to_owned()].into(),
            exec_pairs: BTreeSet::new(),
            destinations: ["127.0.0.1:443/tcp".to_owned()].into(),
            reads: Some(["{workdir}".to_owned()].into()),
            writes: ["{workdir}".to_owned()].into(),
        };
        let exec = |pid, ppid, result, path: &str| Event::Exec { pid, seq: 1, ktime_ns: 1, uid: 0, ppid, result, path: path.into(), argv: Vec::new() };
        let connect = |addr: &str, port| Event::Connect { pid: 3, seq: 2, ktime_ns: 2, addr: addr.parse().expect("addr"), port, protocol: 6, allowed: true, via_sendmsg: false };
        let events = [
            exec(2, 1, 0, "/bin/sh"),
            exec(3, 2, 0, "/usr/bin/curl"),
            exec(4, 2, -2, "/usr/local/bin/nothing"),
            connect("127.0.0.1", 443),
            connect("10.1.2.3", 22),
            connect("::1", 8443),
            Event::FileOpenRead { pid: 3, seq: 3, ktime_ns: 3, fd: 4, path: b"/srv/w/notes.txt".to_vec() },
            Event::FileOpenRead { pid: 3, seq: 4, ktime_ns: 4, fd: 5, path: b"/root/.ssh/id_ed25519".to_vec() },
            Event::FileOpenWrite { pid: 3, seq: 5, ktime_ns: 5, flags: 0o1101, fd: 6, path: b"/etc/cron.d/x\x1b[2J".to_vec() },
            Event::Exit { pid: 3, seq: 6, ktime_ns: 6, status: 0 },
        ];
        let policy = BaselinePolicy::default();
        let mut live = Checker::new(&baseline, &policy, Some("/srv/w".into()));
        let mut offline = Checker::new(&baseline, &policy, Some("/srv/w".into()));
        let mut kinds = Vec::new();
        for event in &events {
            let record = EventRecord::from_event("s", event);
            let seen = live.record(&record);
            let json = serde_json::to_value(&record).expect("JSON");
            assert_eq!(seen, offline.event(&json), "{json}");
            kinds.extend(seen.iter().map(|d| d.kind));
        }
        assert_eq!(kinds, ["new_exec_pair", "new_executable", "new_destination", "new_destination", "new_read_location", "new_write_location"]);
    }
}
