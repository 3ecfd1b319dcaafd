//! Operator commands that work without a daemon: `ps`, `kill`, `freeze`,
//! `resume`, `lockdown`, `unlock`. They act on the session cgroups
//! directly and journal who did what and why. Only a privileged caller
//! outside every session may use them: an agent can never reach the kill
//! switch, `unlock`, or another session.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::{ArgGroup, Args};

use crate::{
    journal::{Entry, Journal},
    profile::HostConfig,
    session::registry::{self, Ending, Lockdown, Registry, SessionRecord},
};

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print JSON (one array)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["session", "role", "all"])))]
pub struct KillArgs {
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
    #[arg(long)]
    pub all: bool,
    /// Why, for the journal
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct SessionArg {
    #[arg(long)]
    pub session: String,
    /// Why, for the journal
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReasonArg {
    /// Why, for the journal
    #[arg(long)]
    pub reason: Option<String>,
}

/// Refuses callers inside a session or without privilege; runs before
/// anything else (even reading the host config).
pub fn authorize() -> anyhow::Result<u32> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if cgroups.lines().any(|l| l.contains(&format!("/{}/", crate::sandbox::cgroup::SUBTREE))) {
        bail!("refused: a process inside an agent session may not control sessions");
    }
    if !caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false) {
        bail!("refused: controlling sessions needs root (CAP_SYS_ADMIN); the daemon will let operator groups do it");
    }
    Ok(nix::unistd::getuid().as_raw())
}

fn journal(host: &HostConfig, by_uid: u32, action: &str, session: Option<&str>, reason: Option<&str>, extra: serde_json::Value) -> anyhow::Result<()> {
    let mut j = Journal::open(&host.journal.dir, host.journal.max_file_size.0)
        .with_context(|| format!("opening the journal {}", host.journal.dir.display()))?;
    j.append(&[Entry {
        kind: "operator".to_owned(),
        session: session.map(str::to_owned),
        data: serde_json::json!({ "action": action, "by_uid": by_uid, "reason": reason, "detail": extra }),
    }])?;
    Ok(())
}

fn state(cgroup: &Path) -> &'static str {
    if !cgroup.exists() {
        "ending"
    } else if std::fs::read_to_string(cgroup.join("cgroup.freeze")).is_ok_and(|v| v.trim() == "1") {
        "frozen"
    } else {
        "running"
    }
}

pub fn ps(args: PsArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    authorize()?;
    let host = &super::load_host_config(config)?;
    let now = registry::now_ms();
    let rows: Vec<serde_json::Value> = Registry::new(&host.runtime_dir)
        .list()?
        .into_iter()
        .map(|r| {
            let counters = r.counters_pin.as_deref().and_then(crate::monitor::pinned_counters).map(|c| {
                use agent_guard_common::session::Counter;
                serde_json::json!({
                    "processes": c[Counter::Processes as usize],
                    "processes_alive": c[Counter::ProcessesAlive as usize],
                    "execs": c[Counter::Execs as usize],
                    "files_written": c[Counter::FilesWritten as usize],
                    "file_writes": c[Counter::FileWrites as usize],
                    "connects": c[Counter::Connects as usize],
                    "connects_denied": c[Counter::ConnectsDenied as usize],
                    "bytes_out": c[Counter::BytesOut as usize],
                })
            });
            serde_json::json!({
                "session": r.session, "role": r.role, "agent": r.agent, "uid": r.uid,
                "main_pid": r.main_pid, "state": state(&r.cgroup),
                "age_ms": now.saturating_sub(r.started_ms), "counters": counters,
            })
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!("{:16}  {:20}  {:16}  {:>5}  {:>8}  {:8}  {:>8}  {:>6}  {:>8}", "SESSION", "ROLE", "AGENT", "UID", "PID", "STATE", "AGE", "EXECS", "CONNECTS");
    for r in &rows {
        let s = |k: &str| r[k].as_str().map(crate::escape::for_terminal).unwrap_or_else(|| "-".into());
        let n = |k: &str| r["counters"][k].as_u64().map_or("-".to_owned(), |v| v.to_string());
        println!(
            "{:16}  {:20}  {:16}  {:>5}  {:>8}  {:8}  {:>7}s  {:>6}  {:>8}",
            s("session"), s("role"), s("agent"), r["uid"], r["main_pid"], s("state"),
            r["age_ms"].as_u64().unwrap_or(0) / 1000, n("execs"), n("connects"),
        );
    }
    Ok(0)
}

/// Kills one session and waits until its processes are gone.
fn end(registry: &Registry, record: &SessionRecord, ending: &Ending) -> anyhow::Result<()> {
    registry.mark_ending(&record.session, ending)?;
    let kill = record.cgroup.join("cgroup.kill");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = match std::fs::read_to_string(record.cgroup.join("cgroup.procs")) {
            Ok(p) => p,
            Err(_) => return Ok(()), // the cgroup is gone: the session has ended
        };
        if procs.trim().is_empty() {
            return Ok(());
        }
        if kill.exists() {
            std::fs::write(&kill, "1").with_context(|| format!("writing {}", kill.display()))?;
        } else {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        if Instant::now() > deadline {
            bail!("session {}: processes survived 5 s of SIGKILL", record.session);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn kill(args: KillArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    let uid = authorize()?;
    let host = &super::load_host_config(config)?;
    let registry = Registry::new(&host.runtime_dir);
    let targets: Vec<SessionRecord> = registry
        .list()?
        .into_iter()
        .filter(|r| args.all || args.session.as_deref() == Some(r.session.as_str()) || args.role.as_deref() == Some(r.role.as_str()))
        .collect();
    if targets.is_empty() && args.session.is_some() {
        bail!("no running session {}", args.session.as_deref().unwrap_or_default());
    }
    let ending = Ending { by_uid: uid, reason: args.reason.clone(), action: "kill".to_owned() };
    for t in &targets {
        journal(host, uid, "kill", Some(&t.session), args.reason.as_deref(), serde_json::json!({ "role": t.role }))?;
        end(&registry, t, &ending)?;
        println!("killed session {} (role {})", t.session, crate::escape::for_terminal(&t.role));
    }
    if targets.is_empty() {
        println!("no matching session");
    }
    Ok(0)
}

pub fn freeze(args: SessionArg, config: Option<&Path>, frozen: bool) -> anyhow::Result<i32> {
    let uid = authorize()?;
    let host = &super::load_host_config(config)?;
    let record = Registry::new(&host.runtime_dir)
        .list()?
        .into_iter()
        .find(|r| r.session == args.session)
        .with_context(|| format!("no running session {}", args.session))?;
    let action = if frozen { "freeze" } else { "resume" };
    journal(host, uid, action, Some(&record.session), args.reason.as_deref(), serde_json::Value::Null)?;
    let path = record.cgroup.join("cgroup.freeze");
    std::fs::write(&path, if frozen { "1" } else { "0" }).with_context(|| format!("writing {}", path.display()))?;
    println!("{} session {}", if frozen { "froze" } else { "resumed" }, record.session);
    Ok(0)
}

pub fn lockdown(args: ReasonArg, config: Option<&Path>) -> anyhow::Result<i32> {
    let uid = authorize()?;
    let host = &super::load_host_config(config)?;
    // The switch first, so that nothing new starts while the rest die.
    registry::set_lockdown(&host.state_dir, &Lockdown { by_uid: uid, reason: args.reason.clone(), since_ms: registry::now_ms() })?;
    journal(host, uid, "lockdown", None, args.reason.as_deref(), serde_json::Value::Null)?;
    let registry = Registry::new(&host.runtime_dir);
    let ending = Ending { by_uid: uid, reason: args.reason, action: "lockdown".to_owned() };
    let targets = registry.list()?;
    for t in &targets {
        end(&registry, t, &ending)?;
    }
    println!("lockdown: {} sessions killed; no session may start until `agent-guard unlock`", targets.len());
    Ok(0)
}

pub fn unlock(args: ReasonArg, config: Option<&Path>) -> anyhow::Result<i32> {
    let uid = authorize()?;
    let host = &super::load_host_config(config)?;
    let was = registry::clear_lockdown(&host.state_dir)?;
    journal(host, uid, "unlock", None, args.reason.as_deref(), serde_json::json!({ "was_locked": was }))?;
    println!("{}", if was { "unlocked: sessions may start again" } else { "was not in lockdown" });
    Ok(0)
}
