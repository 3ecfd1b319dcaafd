//! `agent-guard replay SESSION [--json]`: a session from the journal as a
//! timeline: how it started, its process tree with each exec and its
//! arguments, files written, connections allowed and denied, limits,
//! alerts and operator actions, and how it ended.

use std::{collections::BTreeMap, path::PathBuf};

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::{
    escape::for_terminal,
    history::{self, SessionHistory},
};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The session id (or a unique prefix of it)
    pub session: String,
    /// Print the replay as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Journal directory [default: the host config's]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Play back the agent's output recorded with `run --record-io`, with its timing
    #[arg(long)]
    pub io: bool,
    /// Playback speed factor with --io (2 = twice as fast); pauses are capped at 2 s
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
}

/// A process of the session: one that exec'd at least once.
#[derive(Debug, Serialize)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// Every program it exec'd, in order, with its arguments.
    pub execs: Vec<ProcessExec>,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub children: Vec<Process>,
}

#[derive(Debug, Serialize)]
pub struct ProcessExec {
    pub path: String,
    pub argv: Vec<String>,
    /// 0 when the program ran, else why the exec failed.
    pub errno: i64,
}

/// One line of the timeline.
#[derive(Debug, Serialize)]
pub struct Moment {
    /// Milliseconds since the session started (kernel clock for events,
    /// journal clock for alerts and operator actions).
    pub at_ms: f64,
    /// The journal record's kind (`event`, `alert`, `operator`).
    pub kind: String,
    pub data: Value,
}

#[derive(Debug, Serialize)]
pub struct Replay {
    pub session: String,
    pub role: String,
    pub start: Option<Value>,
    pub end: Option<Value>,
    pub processes: Vec<Process>,
    pub timeline: Vec<Moment>,
}

/// The process forest of a session's execs and exits.
fn processes(h: &SessionHistory) -> Vec<Process> {
    let mut by_pid: BTreeMap<u32, Process> = BTreeMap::new();
    let mut order = Vec::new();
    // Failed attempts with ENOENT are a shell searching PATH: noise. Other
    // failures (EACCES: refused) stay, marked.
    for e in h.execs().into_iter().filter(|e| e.errno != i64::from(libc::ENOENT)) {
        let p = by_pid.entry(e.pid).or_insert_with(|| {
            order.push(e.pid);
            Process { pid: e.pid, ppid: e.ppid, execs: Vec::new(), exit_code: None, signal: None, children: Vec::new() }
        });
        p.execs.push(ProcessExec { path: e.path, argv: e.argv, errno: e.errno });
    }
    for r in &h.events {
        let d = &r.entry.data;
        if d["type"] == "exit" {
            if let Some(p) = d["pid"].as_u64().and_then(|pid| by_pid.get_mut(&(pid as u32))) {
                p.exit_code = d["exit_code"].as_i64();
                p.signal = d["signal"].as_i64();
            }
        }
    }
    // Children under their parents, latest first so that each is taken out before its parent.
    for pid in order.iter().rev() {
        let ppid = by_pid[pid].ppid;
        if ppid != *pid && by_pid.contains_key(&ppid) {
            if let Some(child) = by_pid.remove(pid) {
                if let Some(parent) = by_pid.get_mut(&ppid) {
                    parent.children.insert(0, child);
                }
            }
        }
    }
    order.iter().filter_map(|pid| by_pid.remove(pid)).collect()
}

/// The records worth a line, in journal order, with their time since the start.
fn timeline(h: &SessionHistory) -> Vec<(f64, &crate::journal::Record)> {
    let start_ms = h.start.as_ref().map_or(0, |r| r.time_ms);
    let first_ktime = h.events.iter().filter_map(|r| r.entry.data["ktime_ns"].as_u64()).find(|&k| k > 0);
    let mut out: Vec<_> = h
        .events
        .iter()
        .chain(&h.alerts)
        .chain(&h.operator)
        // Exits are in the process tree; health records and a shell's PATH
        // search (execs failing with ENOENT) are noise here.
        .filter(|r| !matches!(r.entry.data["type"].as_str(), Some("exit" | "health")))
        .filter(|r| !(r.entry.data["type"] == "exec" && r.entry.data["errno"].as_i64() == Some(i64::from(libc::ENOENT))))
        .map(|r| {
            let at_ms = match (r.entry.data["ktime_ns"].as_u64(), first_ktime) {
                (Some(k), Some(first)) if k > 0 => k.saturating_sub(first) as f64 / 1e6,
                _ => r.time_ms.saturating_sub(start_ms) as f64,
            };
            (at_ms, r)
        })
        .collect();
    out.sort_by_key(|(_, r)| r.seq);
    out
}

pub fn build(h: &SessionHistory) -> Replay {
    Replay {
        session: h.session.clone(),
        role: h.role.clone(),
        start: h.start_data().cloned(),
        end: h.summary().cloned(),
        processes: processes(h),
        timeline: timeline(h).into_iter().map(|(at_ms, r)| Moment { at_ms, kind: r.entry.kind.clone(), data: r.entry.data.clone() }).collect(),
    }
}

fn text(v: &Value) -> String {
    for_terminal(v.as_str().unwrap_or(&v.to_string()))
}

fn print_process(p: &Process, prefix: &str, last: bool, top: bool) {
    let branch = if top { "" } else if last { "└─ " } else { "├─ " };
    let status = match (p.exit_code, p.signal) {
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(code), None) => format!("exit {code}"),
        (None, None) => "still running or unknown".to_owned(),
    };
    let mut first = true;
    for e in &p.execs {
        let mut argv = e.argv.iter().map(|a| for_terminal(a)).collect::<Vec<_>>().join(" ");
        if e.errno != 0 {
            argv.push_str(&format!("] (FAILED: {}) [", std::io::Error::from_raw_os_error(e.errno as i32)));
        }
        if first {
            println!("{prefix}{branch}{} {}  [{argv}]  {status}", p.pid, for_terminal(&e.path));
            first = false;
        } else {
            let pad = if top { String::new() } else if last { "   ".to_owned() } else { "│  ".to_owned() };
            println!("{prefix}{pad}{:>width$} then {}  [{argv}]", "", for_terminal(&e.path), width = p.pid.to_string().len());
        }
    }
    let child_prefix = format!("{prefix}{}", if top { "" } else if last { "   " } else { "│  " });
    for (i, c) in p.children.iter().enumerate() {
        print_process(c, &child_prefix, i + 1 == p.children.len(), false);
    }
}

pub fn run(args: ReplayArgs, config: Option<&std::path::Path>) -> anyhow::Result<i32> {
    super::control::authorize()?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => super::load_host_config(config)?.journal.dir,
    };
    let h = history::one(&dir, &args.session)?;
    if args.io {
        return play_io(&h, args.speed);
    }
    let replay = build(&h);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&replay)?);
        return Ok(0);
    }
    println!("session {}  role {}", for_terminal(&replay.session), for_terminal(&replay.role));
    if let (Some(s), Some(r)) = (&replay.start, &h.start) {
        let agent = if s["agent"].is_null() { "-".to_owned() } else { text(&s["agent"]) };
        println!("started {}  uid {}  agent {agent}", super::events::utc(r.time_ms), s["uid"]);
        println!("  argv     {}", s["argv"].as_array().map(|a| a.iter().map(text).collect::<Vec<_>>().join(" ")).unwrap_or_default());
        println!("  workdir  {}", text(&s["workdir"]));
        println!("  profile  {} (sha256 {})", text(&s["profile"]), text(&s["profile_sha256"]));
        if s["observe"] == true {
            println!("  OBSERVE MODE: recorded, not confined (limits only)");
        }
    }
    println!("\nprocesses");
    for p in &replay.processes {
        print_process(p, "  ", true, true);
    }
    println!("\ntimeline (ms after the first event)");
    for (at_ms, r) in timeline(&h) {
        // The same one-line description `events` prints.
        println!("  {at_ms:>10.1}  {}", super::events::describe(r));
    }
    match &replay.end {
        Some(e) => {
            let how = match (e["exit_code"].as_i64(), e["signal"].as_i64()) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "no status".to_owned(),
            };
            println!("\nended by {} after {} ms, {how}", text(&e["ended_by"]), e["duration_ms"]);
            if let Some(c) = e["counters"].as_object() {
                let list = c.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
                println!("  counters: {list}");
            }
            if e["events_lost"].as_u64().unwrap_or(0) > 0 {
                println!("  events lost: {} (the replay is incomplete; the counters are exact)", e["events_lost"]);
            }
        }
        None => println!("\nno end in the journal: still running, or its supervisor died"),
    }
    Ok(0)
}

/// Plays back the recording of `run --record-io`, after checking it against
/// the SHA-256 the journal holds for it.
fn play_io(h: &SessionHistory, speed: f64) -> anyhow::Result<i32> {
    use std::io::Write as _;
    anyhow::ensure!(speed.is_finite() && speed > 0.0, "--speed must be a positive number");
    let rec = h
        .other
        .iter()
        .find(|r| r.entry.kind == "io")
        .ok_or_else(|| anyhow::anyhow!("session {} has no output recording (it ran without --record-io)", for_terminal(&h.session)))?;
    let file = rec.entry.data["file"].as_str().unwrap_or_default();
    let want = rec.entry.data["sha256"].as_str().unwrap_or_default();
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("reading the recording {file}: {e}"))?;
    let got: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
    };
    anyhow::ensure!(got == want, "the recording {file} was altered: its SHA-256 is {got}, the journal recorded {want}");
    let mut last_ms = 0.0;
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let chunk: crate::session::io::Chunk = serde_json::from_slice(line)?;
        let pause = ((chunk.at_ms - last_ms) / speed).clamp(0.0, 2000.0);
        last_ms = chunk.at_ms;
        std::thread::sleep(std::time::Duration::from_secs_f64(pause / 1000.0));
        let text = crate::session::io::playback_text(&chunk.data);
        if chunk.stream == "stderr" {
            err.write_all(text.as_bytes())?;
            err.flush()?;
        } else {
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(0)
}
