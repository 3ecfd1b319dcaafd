//! Operator actions on running sessions, shared by the CLI (acting
//! directly, as root) and the daemon (acting for the peer on its socket):
//! list, kill, freeze/resume, lockdown/unlock. Every action is journaled
//! with who asked and why before it takes effect.
//!
//! Who may: an operator (root, or a member of the configured operator
//! group) may act on every session and flip the lockdown; any other user
//! sees and controls only the sessions it started. Callers inside a
//! session are refused before they get here.

use std::path::Path;

use agent_guard_common::session::Counter;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    journal::{Entry, Journal},
    profile::HostConfig,
    session::registry::{self, Ending, Lockdown, Registry, SessionRecord},
};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("no running session {0} that you may control")]
    NoSession(String),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("{path}: {source}")]
    Io { path: String, #[source] source: std::io::Error },
    #[error(transparent)]
    Cgroup(#[from] crate::sandbox::cgroup::CgroupError),
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// Root or a member of the operator group: may act on every session.
    pub operator: bool,
}

/// Which sessions an action is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    Session(String),
    Role(String),
    All,
}

/// Live counters of a session, as `ps` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct LiveCounters {
    pub processes: u64,
    pub processes_alive: u64,
    pub execs: u64,
    pub files_written: u64,
    pub file_writes: u64,
    pub connects: u64,
    pub connects_denied: u64,
    pub bytes_out: u64,
}

/// A running session, as `ps` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct SessionView {
    pub session: String,
    pub role: String,
    pub agent: Option<String>,
    pub uid: u32,
    pub main_pid: u32,
    /// The session's supervisor: the `run` process in embedded mode, else
    /// the `agent-guard supervise` the daemon spawned.
    pub supervisor_pid: u32,
    /// Started with `--observe`: recorded, not confined (limits only).
    pub observe: bool,
    /// `running`, `frozen`, `ending`, or `orphaned` (its supervisor is gone).
    pub state: String,
    pub age_ms: u64,
    /// `null` when the session's monitor is not pinned.
    pub counters: Option<LiveCounters>,
}

fn may_act(caller: Caller, record: &SessionRecord) -> bool {
    caller.operator || caller.uid == record.uid
}

fn journal(host: &HostConfig, caller: Caller, action: &str, session: Option<&str>, reason: Option<&str>, detail: serde_json::Value) -> Result<(), ControlError> {
    let mut j = Journal::open(&host.journal.dir, host.journal.max_file_size.0)?;
    j.append(&[Entry {
        kind: "operator".to_owned(),
        session: session.map(str::to_owned),
        data: serde_json::json!({ "action": action, "by_uid": caller.uid, "reason": reason, "detail": detail }),
    }])?;
    Ok(())
}

fn state(cgroup: &Path, supervisor_pid: u32) -> &'static str {
    // The supervisor's process, still running agent-guard (not a reused pid;
    // "agent-guard (deleted)" after an upgrade replaced the file).
    let supervised = std::fs::read_link(format!("/proc/{supervisor_pid}/exe"))
        .is_ok_and(|exe| exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("agent-guard")));
    if !cgroup.exists() {
        "ending"
    } else if !supervised {
        // Its supervisor and guardian are both gone (killed by hand): the
        // kernel side still counts and limits it, nothing else watches it.
        "orphaned"
    } else if std::fs::read_to_string(cgroup.join("cgroup.freeze")).is_ok_and(|v| v.trim() == "1") {
        "frozen"
    } else {
        "running"
    }
}

/// The sessions `caller` may see.
pub fn list(host: &HostConfig, caller: Caller) -> Result<Vec<SessionView>, ControlError> {
    let now = registry::now_ms();
    // Opened once for all the sessions listed, whichever instance serves each.
    let monitors = crate::monitor::shared::open_all();
    Ok(Registry::new(&host.runtime_dir)
        .list()?
        .into_iter()
        .filter(|r| may_act(caller, r))
        .map(|r| {
            let counters = r.cgroup_id.and_then(|id| monitors.iter().find_map(|m| m.counters(id))).map(|c| LiveCounters {
                processes: c[Counter::Processes as usize],
                processes_alive: c[Counter::ProcessesAlive as usize],
                execs: c[Counter::Execs as usize],
                files_written: c[Counter::FilesWritten as usize],
                file_writes: c[Counter::FileWrites as usize],
                connects: c[Counter::Connects as usize],
                connects_denied: c[Counter::ConnectsDenied as usize],
                bytes_out: c[Counter::BytesOut as usize],
            });
            SessionView {
                state: state(&r.cgroup, r.supervisor_pid).to_owned(),
                age_ms: now.saturating_sub(r.started_ms),
                session: r.session,
                role: r.role,
                agent: r.agent,
                uid: r.uid,
                main_pid: r.main_pid,
                supervisor_pid: r.supervisor_pid,
                observe: r.observe,
                counters,
            }
        })
        .collect())
}

/// Kills one session and waits until its processes are gone. An orphaned
/// session (no supervisor left to do it) is also cleaned up here, as its
/// guardian would have: its cgroups, its registry files, its entries in
/// the monitor's maps.
fn end(registry: &Registry, record: &SessionRecord, ending: &Ending) -> Result<(), ControlError> {
    registry.mark_ending(&record.session, ending)?;
    if state(&record.cgroup, record.supervisor_pid) == "orphaned" {
        let roots = crate::sandbox::cgroup::CgroupRoots::discover(Path::new("/proc/self/mountinfo"))?;
        let cgroup = crate::sandbox::cgroup::SessionCgroup::existing(&roots, record.cgroup.clone(), &record.session);
        crate::session::guardian::clean_up(&cgroup, &registry.files(&record.session), record.cgroup_id)?;
    } else {
        crate::sandbox::cgroup::kill_cgroup(&record.cgroup, || {})?;
    }
    Ok(())
}

/// Ends the selected sessions `caller` may control; returns their ids.
pub fn kill(host: &HostConfig, caller: Caller, selector: &Selector, reason: Option<&str>) -> Result<Vec<String>, ControlError> {
    let registry = Registry::new(&host.runtime_dir);
    let targets: Vec<SessionRecord> = registry
        .list()?
        .into_iter()
        .filter(|r| may_act(caller, r))
        .filter(|r| match selector {
            Selector::Session(id) => *id == r.session,
            Selector::Role(role) => *role == r.role,
            Selector::All => true,
        })
        .collect();
    if let (Selector::Session(id), true) = (selector, targets.is_empty()) {
        return Err(ControlError::NoSession(id.clone()));
    }
    let ending = Ending { by_uid: caller.uid, reason: reason.map(str::to_owned), action: "kill".to_owned() };
    for t in &targets {
        journal(host, caller, "kill", Some(&t.session), reason, serde_json::json!({ "role": t.role }))?;
        end(&registry, t, &ending)?;
    }
    Ok(targets.into_iter().map(|t| t.session).collect())
}

/// Freezes or thaws one session.
pub fn set_frozen(host: &HostConfig, caller: Caller, session: &str, frozen: bool, reason: Option<&str>) -> Result<(), ControlError> {
    let record = Registry::new(&host.runtime_dir)
        .list()?
        .into_iter()
        .find(|r| r.session == session && may_act(caller, r))
        .ok_or_else(|| ControlError::NoSession(session.to_owned()))?;
    journal(host, caller, if frozen { "freeze" } else { "resume" }, Some(session), reason, serde_json::Value::Null)?;
    let path = record.cgroup.join("cgroup.freeze");
    std::fs::write(&path, if frozen { "1" } else { "0" }).map_err(|source| ControlError::Io { path: path.display().to_string(), source })
}

/// Sets the lockdown and kills every session; returns how many.
pub fn lockdown(host: &HostConfig, caller: Caller, reason: Option<&str>) -> Result<usize, ControlError> {
    if !caller.operator {
        return Err(ControlError::Refused("only operators may lock down".to_owned()));
    }
    // The switch first, so that nothing new starts while the rest die.
    registry::set_lockdown(&host.state_dir, &Lockdown { by_uid: caller.uid, reason: reason.map(str::to_owned), since_ms: registry::now_ms() })?;
    journal(host, caller, "lockdown", None, reason, serde_json::Value::Null)?;
    let registry = Registry::new(&host.runtime_dir);
    let ending = Ending { by_uid: caller.uid, reason: reason.map(str::to_owned), action: "lockdown".to_owned() };
    let targets = registry.list()?;
    for t in &targets {
        end(&registry, t, &ending)?;
    }
    Ok(targets.len())
}

/// Lifts the lockdown; returns whether it was set.
pub fn unlock(host: &HostConfig, caller: Caller, reason: Option<&str>) -> Result<bool, ControlError> {
    if !caller.operator {
        return Err(ControlError::Refused("only operators may unlock".to_owned()));
    }
    let was = registry::clear_lockdown(&host.state_dir)?;
    journal(host, caller, "unlock", None, reason, serde_json::json!({ "was_locked": was }))?;
    Ok(was)
}

/// Whether the process `pid` runs inside an agent session (its cgroup is
/// under the sessions' subtree): such callers are refused everything.
pub fn in_session(pid: u32) -> bool {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    cgroups.lines().any(|l| l.contains(&format!("/{}/", crate::sandbox::cgroup::SUBTREE)))
}
