//! Live sessions, as files an operator command can find without a daemon:
//! `/run/agent-guard/sessions/<id>.json` (root only) while a session runs,
//! and the lockdown switch in the state directory, which survives reboots.
//! The daemon (issue 4) will serve the same information over its socket.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Where the lockdown switch lives (persistent).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/agent-guard";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path}: not a session record: {source}")]
    Parse { path: PathBuf, #[source] source: serde_json::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io { path: path.to_owned(), source }
}

/// What an operator needs to find and stop a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    pub session: String,
    pub role: String,
    pub agent: Option<String>,
    /// The uid that started it.
    pub uid: u32,
    /// The supervisor (`agent-guard run`).
    pub supervisor_pid: u32,
    /// The agent's first process.
    pub main_pid: u32,
    /// The session's cgroup v2 directory.
    pub cgroup: PathBuf,
    /// The session's cgroup v2 id, its key in the monitor's maps, when the monitor watches it.
    pub cgroup_id: Option<u64>,
    /// Started with `--observe`: recorded, not confined.
    #[serde(default)]
    pub observe: bool,
    pub started_ms: u64,
}

/// Why and by whom a session was ended from outside.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ending {
    pub by_uid: u32,
    pub reason: Option<String>,
    pub action: String,
}

#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// The registry under `runtime_dir` (created root-only).
    pub fn new(runtime_dir: &Path) -> Registry {
        Registry { dir: runtime_dir.join("sessions") }
    }

    /// Every file the registry keeps for `session` (for whoever cleans up
    /// after a supervisor that could not).
    pub fn files(&self, session: &str) -> [PathBuf; 2] {
        [self.record_path(session), self.ending_path(session)]
    }

    fn record_path(&self, session: &str) -> PathBuf {
        self.dir.join(format!("{session}.json"))
    }

    fn ending_path(&self, session: &str) -> PathBuf {
        self.dir.join(format!("{session}.ended"))
    }

    pub fn add(&self, record: &SessionRecord) -> Result<(), RegistryError> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(io(&self.dir))?;
        let path = self.record_path(&record.session);
        let tmp = path.with_extension("tmp");
        let mut f = fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
        f.write_all(&serde_json::to_vec(record).unwrap_or_default()).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))
    }

    pub fn remove(&self, session: &str) {
        for path in self.files(session) {
            let _ = fs::remove_file(path);
        }
    }

    /// Every live session, oldest first.
    pub fn list(&self) -> Result<Vec<SessionRecord>, RegistryError> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(RegistryError::Io { path: self.dir.clone(), source: e }),
        };
        for entry in rd {
            let path = entry.map_err(io(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = match fs::read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // it just ended
                    Err(e) => return Err(RegistryError::Io { path, source: e }),
                };
                out.push(serde_json::from_slice(&bytes).map_err(|source| RegistryError::Parse { path: path.clone(), source })?);
            }
        }
        out.sort_by_key(|r: &SessionRecord| r.started_ms);
        Ok(out)
    }

    /// Marks a session as ended by an operator, before killing it, so that
    /// its supervisor reports `ended_by: operator`.
    pub fn mark_ending(&self, session: &str, ending: &Ending) -> Result<(), RegistryError> {
        let path = self.ending_path(session);
        fs::write(&path, serde_json::to_vec(ending).unwrap_or_default()).map_err(io(&path))
    }

    pub fn ending(&self, session: &str) -> Option<Ending> {
        fs::read(self.ending_path(session)).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }
}

/// The lockdown switch: while set, `run` refuses to start sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lockdown {
    pub by_uid: u32,
    pub reason: Option<String>,
    pub since_ms: u64,
}

pub fn lockdown_path(state_dir: &Path) -> PathBuf {
    state_dir.join("lockdown")
}

pub fn read_lockdown(state_dir: &Path) -> Option<Lockdown> {
    fs::read(lockdown_path(state_dir)).ok().map(|b| {
        serde_json::from_slice(&b).unwrap_or(Lockdown { by_uid: 0, reason: Some("(unreadable lockdown record)".into()), since_ms: 0 })
    })
}

/// Sets the switch durably (it must survive a crash or reboot).
pub fn set_lockdown(state_dir: &Path, lockdown: &Lockdown) -> Result<(), RegistryError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(state_dir).map_err(io(state_dir))?;
    let path = lockdown_path(state_dir);
    let mut f = fs::File::create(&path).map_err(io(&path))?;
    f.write_all(&serde_json::to_vec(lockdown).unwrap_or_default()).map_err(io(&path))?;
    f.sync_all().map_err(io(&path))?;
    if let Ok(d) = fs::File::open(state_dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn clear_lockdown(state_dir: &Path) -> Result<bool, RegistryError> {
    let path = lockdown_path(state_dir);
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(RegistryError::Io { path, source: e }),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
