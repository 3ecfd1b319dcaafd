//! What happens between `fork` and `execve`: the sandbox a session's first
//! process enters. Everything that can allocate or fail for reasons other
//! than the kernel saying no is prepared in the parent ([`Prepared`]); the
//! child ([`child`]) only makes system calls, in this order:
//!
//! 1. join the session cgroups (v2, and v1 for limits kept there)
//! 2. private mount namespace: the filesystem view ([`view`]), then the `deny` masks
//! 3. change to the working directory (the view's)
//! 4. `no_new_privs`
//! 5. drop the capability bounding set and clear ambient capabilities
//! 6. switch user and group (when the role names a user)
//! 7. clear the effective, permitted and inheritable capabilities
//! 8. landlock (rules in `/proc` added now, on the session's own procfs)
//! 9. mark every fd above 2 close-on-exec
//! 10. seccomp, last, so that nothing above is filtered
//! 11. restore the signal mask and `execve` with the rebuilt environment

pub mod cgroup;
pub mod child;
pub mod elf;
pub mod landlock;
pub mod masks;
pub mod seccomp;
pub mod view;

use std::{
    ffi::{CString, OsStr, OsString},
    fmt,
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
};

use crate::profile::Policy;

/// Something a profile asks for that this host cannot enforce, and what
/// it would take.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    pub what: String,
    pub needs: String,
}

impl Gap {
    pub fn new(what: impl Into<String>, needs: impl Into<String>) -> Gap {
        Gap { what: what.into(), needs: needs.into() }
    }
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (needs {})", self.what, self.needs)
    }
}

/// Controls of a profile that only the eBPF monitor enforces: the gaps
/// when it could not be loaded, `why`. Every profile has at least one:
/// which socket files may be connected to (`[network] unix`; without the
/// list, none).
pub fn monitor_gaps(policy: &Policy, why: &str) -> Vec<Gap> {
    let l = &policy.limits;
    let mut gaps = Vec::new();
    let needs = format!("the eBPF monitor, which failed to load: {why}");
    gaps.push(Gap::new(
        "[network] unix: connecting only to the listed socket files (every session: without the list, to none)",
        needs.clone(),
    ));
    for (name, set) in [
        ("execs", l.execs.is_some()),
        ("file_writes", l.file_writes.is_some()),
        ("connects", l.connects.is_some()),
        ("bytes_out", l.bytes_out.is_some()),
    ] {
        if set {
            gaps.push(Gap::new(format!("[limits] {name}"), needs.clone()));
        }
    }
    if !policy.network.connect.is_empty() {
        gaps.push(Gap::new("[network] connect: destination addresses (landlock checks TCP ports only) and UDP", needs.clone()));
    }
    if !policy.network.bind.is_empty() {
        gaps.push(Gap::new("[network] bind: UDP ports", needs));
    }
    gaps
}

/// Turns a string into a C string for the child, refusing interior NULs.
pub fn cstring(what: &str, bytes: impl Into<Vec<u8>>) -> Result<CString, SandboxError> {
    CString::new(bytes).map_err(|_| SandboxError::Nul { what: what.to_owned() })
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what} contains a NUL byte")]
    Nul { what: String },
    #[error("no command to run")]
    NoCommand,
    #[error("command `{command}` not found in the agent's PATH ({path})")]
    NotFound { command: String, path: String },
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Landlock(#[from] landlock::LandlockError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Masks(#[from] masks::MaskError),
    #[error(transparent)]
    View(#[from] view::ViewError),
}

/// Builds the agent's environment: the `pass` names taken from the
/// caller's environment, then `set`, then the session's own variables.
pub fn build_env(
    policy: &Policy,
    caller: impl IntoIterator<Item = (OsString, OsString)>,
    session: &str,
    agent: Option<&str>,
) -> Vec<(OsString, OsString)> {
    let caller: Vec<(OsString, OsString)> = caller.into_iter().collect();
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut put = |k: OsString, v: OsString| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for name in &policy.env.pass {
        if let Some((k, v)) = caller.iter().find(|(k, _)| k.as_bytes() == name.as_bytes()) {
            put(k.clone(), v.clone());
        }
    }
    for (k, v) in &policy.env.set {
        put(k.into(), v.into());
    }
    put("AGENT_GUARD_SESSION".into(), session.into());
    put("AGENT_GUARD_ROLE".into(), policy.role.clone().into());
    if let Some(agent) = agent {
        put("AGENT_GUARD_AGENT".into(), agent.into());
    }
    env
}

/// Finds `command` the way `execvp` would, with the agent's `PATH`.
pub fn resolve_command(command: &OsStr, env: &[(OsString, OsString)]) -> Result<PathBuf, SandboxError> {
    if command.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(command));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| SandboxError::NotFound {
            command: command.to_string_lossy().into_owned(),
            path: path.to_string_lossy().into_owned(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `KEY=VALUE` C strings for `execve`.
pub fn env_cstrings(env: &[(OsString, OsString)]) -> Result<Vec<CString>, SandboxError> {
    env.iter()
        .map(|(k, v)| {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(&format!("environment variable {}", k.to_string_lossy()), kv)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_monitor_every_profile_has_the_unix_gap() {
        // Even a profile asking for nothing of the monitor: no socket file may be
        // connected to unless listed, and only the monitor enforces that.
        let p = Policy::probe_only(Path::new("/w"));
        let gaps = monitor_gaps(&p, "no bpffs");
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].what.starts_with("[network] unix") && gaps[0].needs.contains("no bpffs"), "{gaps:?}");
        // The gap of a monitor loaded without the unix hooks says the same.
        assert_eq!(crate::monitor::unix_gap("x").what, gaps[0].what);
    }
}
