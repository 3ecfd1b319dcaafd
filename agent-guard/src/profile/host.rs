//! The host configuration (`/etc/agent-guard/config.toml`): which
//! environments exist on this host and what belongs to each, so that a
//! profile of one environment cannot reach another's networks or paths.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;

use super::diag::{Diagnostic, SourceFile};

/// Where the host configuration lives unless `--config` or
/// `$AGENT_GUARD_CONFIG` say otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/agent-guard/config.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Environment name to what belongs to it.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentDef>,
    #[serde(default)]
    pub journal: JournalConfig,
    /// Runtime files: live sessions, mask sources, caches.
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    /// Persistent state: the lockdown switch.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The daemon's control socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Members of this group may control every session through the daemon.
    #[serde(default)]
    pub operator_group: Option<String>,
    /// The systemd journal's socket, where alerts also go when it exists.
    #[serde(default = "default_journald_socket")]
    pub journald_socket: PathBuf,
    /// Who may start sessions of which roles through the daemon: a user
    /// name, or `@group`, to role names (`"*"`: every role). Root and the
    /// operator group may start every role; nobody else may start any
    /// role not granted here.
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub monitor: MonitorConfig,
}

fn default_journald_socket() -> PathBuf {
    PathBuf::from(crate::journal::journald::DEFAULT_SOCKET)
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/agent-guard/control.sock")
}

fn default_runtime_dir() -> PathBuf {
    PathBuf::from(crate::session::DEFAULT_RUNTIME_DIR)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(crate::session::registry::DEFAULT_STATE_DIR)
}

impl Default for HostConfig {
    fn default() -> HostConfig {
        HostConfig {
            environments: BTreeMap::new(),
            journal: JournalConfig::default(),
            runtime_dir: default_runtime_dir(),
            state_dir: default_state_dir(),
            socket: default_socket(),
            operator_group: None,
            journald_socket: default_journald_socket(),
            grants: BTreeMap::new(),
            monitor: MonitorConfig::default(),
        }
    }
}

impl HostConfig {
    /// Whether the user `uid` (primary group `gid`, supplementary `groups`)
    /// is granted `role` by `[grants]`.
    pub fn grants_role(&self, uid: u32, gids: &[u32], role: &str) -> bool {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name);
        self.grants.iter().any(|(who, roles)| {
            let named = match who.strip_prefix('@') {
                Some(group) => nix::unistd::Group::from_name(group)
                    .ok()
                    .flatten()
                    .is_some_and(|g| gids.contains(&g.gid.as_raw())),
                None => user.as_deref() == Some(who.as_str()),
            };
            named && roles.iter().any(|r| r == role || r == "*")
        })
    }
}

/// `[journal]`: where sessions are recorded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// The journal directory.
    #[serde(default = "default_journal_dir")]
    pub dir: PathBuf,
    /// Rotate a journal file past this size.
    #[serde(default = "default_max_file_size")]
    pub max_file_size: super::ByteSize,
}

fn default_journal_dir() -> PathBuf {
    PathBuf::from(crate::journal::DEFAULT_DIR)
}

fn default_max_file_size() -> super::ByteSize {
    super::ByteSize(crate::journal::DEFAULT_MAX_FILE_BYTES)
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig { dir: default_journal_dir(), max_file_size: default_max_file_size() }
    }
}

/// `[monitor]`: the shared eBPF monitor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// How long the daemon keeps the monitor's system-wide tracepoints
    /// attached after its last session ended, so that the next session
    /// need not attach them again (a few ms). Sessions `run` without the
    /// daemon detach them at once.
    #[serde(default = "default_hooks_linger")]
    pub hooks_linger: super::HumanDuration,
}

fn default_hooks_linger() -> super::HumanDuration {
    super::HumanDuration(std::time::Duration::from_secs(10))
}

impl Default for MonitorConfig {
    fn default() -> MonitorConfig {
        MonitorConfig { hooks_linger: default_hooks_linger() }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentDef {
    #[serde(default)]
    pub description: String,
    /// Networks that belong to this environment.
    #[serde(default)]
    pub cidrs: Vec<IpNet>,
    /// Path prefixes that belong to this environment.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostConfigError {
    #[error("reading host config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(Diagnostic),
    #[error("{0}")]
    Invalid(Diagnostic),
}

impl HostConfig {
    /// Loads the host config. A missing file is an empty config only when
    /// it is the default path; a path the operator named must exist.
    pub fn load(path: &Path, explicit: bool) -> Result<HostConfig, HostConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(HostConfig::default())
            }
            Err(source) => return Err(HostConfigError::Read { path: path.to_owned(), source }),
        };
        let source = SourceFile { path: path.to_owned(), text };
        let config: HostConfig = toml::from_str(&source.text)
            .map_err(|e| HostConfigError::Parse(source.diagnostic(e.span(), e.message())))?;
        for (name, env) in &config.environments {
            if let Some(p) = env.paths.iter().find(|p| !p.is_absolute()) {
                return Err(HostConfigError::Invalid(source.diagnostic(
                    None,
                    format!("environment `{name}`: path `{}` must be absolute", p.display()),
                )));
            }
        }
        Ok(config)
    }
}
