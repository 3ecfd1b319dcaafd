//! Profiles: one TOML file per agent role, parsed strictly, checked, and
//! resolved into the effective [`Policy`] a session runs under.

pub mod diag;
pub mod host;
pub mod net;
pub mod schema;
pub mod suggest;
pub mod units;
mod validate;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Serialize;

pub use self::{
    diag::{Diagnostic, Diagnostics, SourceFile},
    host::HostConfig,
    net::{Destination, PortRange, Protocol},
    schema::{OnDeviation, OnLimit},
    units::{ByteSize, HumanDuration},
    validate::looks_secret,
};

/// Directory of the profiles shipped in this repository, searched last.
pub const REPO_PROFILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles");
/// System-wide profile directory, searched after `$AGENT_GUARD_PROFILES`.
pub const SYSTEM_PROFILES: &str = "/etc/agent-guard/profiles";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("reading profile {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("`{role}` is not a role name: use lowercase letters, digits, `-` and `_`")]
    BadRoleName { role: String },
    #[error("no profile for role `{role}`; looked for {role}.toml in: {}", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound { role: String, searched: Vec<PathBuf> },
}

/// The directories searched for `ROLE.toml`, in order.
pub fn search_path() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("AGENT_GUARD_PROFILES")
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from(SYSTEM_PROFILES));
    dirs.push(PathBuf::from(REPO_PROFILES));
    dirs
}

/// Whether `name` is acceptable as a role name (and so as a file stem).
pub fn valid_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with('-')
}

/// Finds the profile file of `role` on the search path.
pub fn find(role: &str) -> Result<PathBuf, ProfileError> {
    if !valid_role_name(role) {
        return Err(ProfileError::BadRoleName { role: role.to_owned() });
    }
    let searched = search_path();
    searched
        .iter()
        .map(|dir| dir.join(format!("{role}.toml")))
        .find(|p| p.is_file())
        .map(|p| p.canonicalize().unwrap_or(p))
        .ok_or_else(|| ProfileError::NotFound { role: role.to_owned(), searched })
}

/// What placeholders in a profile expand to, and who runs it.
#[derive(Clone, Debug)]
pub struct Context {
    /// `{workdir}`: the session's working directory (absolute).
    pub workdir: PathBuf,
    /// The uid of the caller, whose home is `{home}` unless the role names a user.
    pub caller_uid: u32,
}

/// The user and group an agent runs as when the role names them.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub group: String,
    pub gid: u32,
}

/// The effective policy of a session: the profile after defaults,
/// placeholders and checks.
#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    pub role: String,
    pub description: String,
    pub environment: String,
    /// The profile file it came from.
    pub source: PathBuf,
    /// SHA-256 of the profile file's bytes, hex.
    pub sha256: String,
    pub run_as: Option<RunAs>,
    pub workdir: PathBuf,
    pub home: PathBuf,
    pub filesystem: FsPolicy,
    pub network: NetPolicy,
    pub limits: Limits,
    pub env: EnvPolicy,
    pub syscalls: SyscallPolicy,
    pub baseline: BaselinePolicy,
}

/// `[baseline]` after defaults.
#[derive(Clone, Debug, Serialize)]
pub struct BaselinePolicy {
    pub sensitivity: f64,
    pub min_sessions: u32,
    pub on_deviation: OnDeviation,
    pub record_reads: bool,
}

impl Default for BaselinePolicy {
    fn default() -> BaselinePolicy {
        BaselinePolicy { sensitivity: 4.0, min_sessions: 5, on_deviation: OnDeviation::Alert, record_reads: false }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FsPolicy {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub exec: Vec<PathBuf>,
    pub deny: Vec<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct NetPolicy {
    pub connect: Vec<Destination>,
    pub bind: Vec<PortRange>,
    /// Pathname unix sockets the agent may connect to (`[network] unix`,
    /// placeholders expanded); every other socket file is refused.
    pub unix: Vec<PathBuf>,
}

impl NetPolicy {
    /// No IP network at all: no TCP/UDP sockets may be created (unix
    /// sockets are always allowed to be made; `unix` decides what they
    /// may connect to).
    pub fn is_none(&self) -> bool {
        self.connect.is_empty() && self.bind.is_empty()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Limits {
    pub processes: Option<u32>,
    pub memory: Option<ByteSize>,
    pub wall_time: Option<HumanDuration>,
    pub execs: Option<u64>,
    pub file_writes: Option<u64>,
    pub connects: Option<u64>,
    pub bytes_out: Option<ByteSize>,
    pub on_limit: OnLimit,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct EnvPolicy {
    pub pass: Vec<String>,
    pub set: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SyscallPolicy {
    /// Calls of the default deny set this role opts back into.
    pub allow: Vec<String>,
    /// What stays denied: the default deny set minus `allow` (shown by
    /// `profile show`; see docs/seccomp.md).
    pub denied: Vec<String>,
}

impl Policy {
    /// An empty policy (no rules, no limits) for probing, e.g. by `doctor`.
    pub fn probe_only(workdir: &Path) -> Policy {
        Policy {
            role: "doctor-probe".to_owned(),
            description: String::new(),
            environment: String::new(),
            source: PathBuf::new(),
            sha256: String::new(),
            run_as: None,
            workdir: workdir.to_owned(),
            home: workdir.to_owned(),
            filesystem: FsPolicy::default(),
            network: NetPolicy::default(),
            limits: Limits::default(),
            env: EnvPolicy::default(),
            syscalls: SyscallPolicy::default(),
            baseline: BaselinePolicy::default(),
        }
    }
}

/// Reads, parses, checks and resolves the profile at `path`.
pub fn load(path: &Path, ctx: &Context, host: &HostConfig) -> Result<Policy, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read { path: path.to_owned(), source })?;
    let source = SourceFile { path: path.to_owned(), text };
    from_source(&source, ctx, host)
}

/// Parses, checks and resolves a profile already read into memory.
pub fn from_source(source: &SourceFile, ctx: &Context, host: &HostConfig) -> Result<Policy, ProfileError> {
    let file: schema::ProfileFile = toml::from_str(&source.text)
        .map_err(|e| ProfileError::Invalid(Diagnostics(vec![source.diagnostic(e.span(), e.message().trim_end())])))?;
    validate::resolve(source, file, ctx, host).map_err(|d| ProfileError::Invalid(Diagnostics(d)))
}
