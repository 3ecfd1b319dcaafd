//! The profile file format, exactly as operators write it. Every table
//! refuses unknown keys; values that later checks may reject keep their
//! source span so that the error can name line and column.
//!
//! `docs/profiles.md` documents every key here.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{
    net::PortRange,
    units::{ByteSize, HumanDuration},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub role: RoleSection,
    #[serde(default)]
    pub filesystem: FilesystemSection,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub env: EnvSection,
    #[serde(default)]
    pub syscalls: SyscallsSection,
    /// Behavioural baseline checking; absent: the defaults of [`BaselineSection`].
    pub baseline: Option<BaselineSection>,
}

/// `[baseline]`: how sessions of the role are checked against the
/// baseline `agent-guard baseline learn` built from earlier sessions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSection {
    /// How many robust standard deviations (1.4826 x MAD) above the
    /// median a counter may go before an alert; also never below the
    /// highest value learned.
    pub sensitivity: Option<Spanned<f64>>,
    /// Sessions the baseline must have learned from before it alerts.
    pub min_sessions: Option<Spanned<u32>>,
    /// What a deviation does: alert (default), freeze, or kill.
    #[serde(default)]
    pub on_deviation: OnDeviation,
    /// Report every file opened for reading (for learning where the role
    /// reads); default true when the section is present, false without it.
    pub record_reads: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDeviation {
    /// Alert (journal, socket, stderr) and let the session go on.
    #[default]
    Alert,
    /// Alert and freeze the session for an operator (killed after the freeze grace).
    Freeze,
    /// Alert and end the session.
    Kill,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSection {
    /// Must equal the file stem.
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    /// Which environment (from the host config) this role works in.
    pub environment: Spanned<String>,
    /// Run the agent as this user; default: the caller's uid.
    pub user: Option<Spanned<String>>,
    /// Run the agent with this group; default: the user's primary group.
    pub group: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSection {
    #[serde(default)]
    pub read: Vec<Spanned<String>>,
    #[serde(default)]
    pub write: Vec<Spanned<String>>,
    #[serde(default)]
    pub exec: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    #[serde(default)]
    pub connect: Vec<Spanned<String>>,
    #[serde(default)]
    pub bind: Vec<Spanned<PortRange>>,
    /// Socket files the agent may connect to (absolute, placeholders allowed).
    #[serde(default)]
    pub unix: Vec<Spanned<String>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLimit {
    /// End the whole session.
    #[default]
    Kill,
    /// Freeze the session and ask an operator.
    Freeze,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub processes: Option<Spanned<u32>>,
    pub memory: Option<Spanned<ByteSize>>,
    pub wall_time: Option<Spanned<HumanDuration>>,
    pub execs: Option<Spanned<u64>>,
    pub file_writes: Option<Spanned<u64>>,
    pub connects: Option<Spanned<u64>>,
    pub bytes_out: Option<Spanned<ByteSize>>,
    #[serde(default)]
    pub on_limit: OnLimit,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSection {
    #[serde(default)]
    pub pass: Vec<Spanned<String>>,
    #[serde(default)]
    pub set: BTreeMap<Spanned<String>, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallsSection {
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
}
