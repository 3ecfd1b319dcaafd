//! The landlock ruleset of a session: filesystem read/write/exec rights
//! beneath the profile's paths, TCP connect/bind ports, and scoping of
//! abstract unix sockets and signals. Built in the parent; the child only
//! calls `landlock_restrict_self` on the ruleset fd.

use std::{
    collections::BTreeSet,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};

use super::Gap;
use crate::profile::Policy;

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("building the landlock ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("the landlock ruleset was not created although the kernel has landlock")]
    NotCreated,
    #[error("{path} contains a NUL byte")]
    Nul { path: PathBuf },
    #[error("opening {path} for a landlock rule: {source}")]
    Path { path: PathBuf, #[source] source: landlock::PathFdError },
}

/// The landlock ABI version of the running kernel; 0 when landlock is
/// absent or disabled.
pub fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attribute and size 0 the kernel only returns the ABI version.
    let v = unsafe {
        libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<libc::c_void>(), 0usize, LANDLOCK_CREATE_RULESET_VERSION)
    };
    if v < 0 {
        0
    } else {
        v as i32
    }
}

/// What the kernel's landlock ABI can enforce of a profile, as gaps.
pub fn gaps(abi: i32, policy: &Policy) -> Vec<Gap> {
    let mut gaps = Vec::new();
    if abi < 1 {
        gaps.push(Gap::new("[filesystem] read/write/exec allowlists", "landlock (not enabled in this kernel)"));
        return gaps;
    }
    if abi < 3 {
        gaps.push(Gap::new("truncation of files outside `write`", "landlock ABI 3"));
    }
    if abi < 4 && !policy.network.is_none() {
        gaps.push(Gap::new("[network] TCP port restrictions", "landlock ABI 4"));
    }
    if abi < 5 {
        gaps.push(Gap::new("ioctl on devices outside `write`", "landlock ABI 5"));
    }
    if abi < 6 {
        gaps.push(Gap::new("signals to processes outside the session, abstract unix sockets", "landlock ABI 6"));
    }
    gaps
}

/// Notes about profile paths that do not exist on this host (their rules
/// are skipped: there is nothing there to allow).
pub type Notes = Vec<String>;

/// The ELF interpreters that must be executable for the session's programs
/// to start: those of the command, of each file in `exec`, and of `/bin/sh`.
pub fn interpreters(policy: &Policy, command: &Path) -> Vec<PathBuf> {
    let mut found = BTreeSet::new();
    let candidates = std::iter::once(command).chain(policy.filesystem.exec.iter().map(PathBuf::as_path)).chain([Path::new("/bin/sh")]);
    for file in candidates.filter(|p| p.is_file()) {
        found.extend(super::elf::interpreter(file));
    }
    found.into_iter().collect()
}

/// A rule for a path in `/proc`, added by the child once the session's
/// own procfs is mounted (a rule made in the parent would name the host's
/// procfs inodes, which the session no longer sees).
#[derive(Debug)]
pub struct LateRule {
    pub path: std::ffi::CString,
    /// `LANDLOCK_ACCESS_FS_*` bits.
    pub access: u64,
}

/// The ruleset fd, the rules the child adds itself, and notes.
pub struct Built {
    pub fd: OwnedFd,
    pub late: Vec<LateRule>,
    pub notes: Notes,
}

/// Whether `path` is in `/proc`, whose rules the child adds (see [`LateRule`]).
fn in_proc(path: &Path) -> bool {
    path.starts_with("/proc")
}

/// Builds the ruleset for `policy` on a kernel with landlock ABI `abi` (>= 1).
/// `loaders` (see [`interpreters`]) get execute beside `[filesystem] exec`.
/// With `private_proc` (the session's view mounts its own procfs), rules in
/// `/proc` are left to the child; reading `/proc` itself then also grants
/// writing there, for the session's own `/proc/self/mem` and the like (the
/// view keeps `/proc/sys` and the other kernel settings read-only, and
/// other processes are not even listed).
pub fn build(policy: &Policy, abi: i32, loaders: &[PathBuf], private_proc: bool) -> Result<Built, LandlockError> {
    let abi = ABI::from(abi);
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi) & !AccessFs::Execute;
    let write = all & !AccessFs::Execute;
    let exec = AccessFs::Execute | AccessFs::ReadFile | AccessFs::ReadDir;

    let mut ruleset = Ruleset::default().set_compatibility(CompatLevel::HardRequirement).handle_access(all)?;
    let net = AccessNet::from_all(abi) & (AccessNet::BindTcp | AccessNet::ConnectTcp);
    if !net.is_empty() {
        ruleset = ruleset.handle_access(net)?;
    }
    let scopes = Scope::from_all(abi);
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes)?;
    }
    let mut created = ruleset.create()?;
    let mut notes = Vec::new();
    let mut late = Vec::new();
    let fs = &policy.filesystem;
    for (paths, access) in [(&fs.read[..], read), (&fs.write[..], write), (&fs.exec[..], exec), (loaders, exec)] {
        for path in paths {
            if private_proc && in_proc(path) {
                let Ok(meta) = std::fs::metadata(path) else {
                    notes.push(format!("{}: not found; no rule added", path.display()));
                    continue;
                };
                let mut access = if meta.is_dir() { access } else { access & AccessFs::from_file(abi) };
                if path == Path::new("/proc") && access.contains(AccessFs::ReadFile) {
                    access |= AccessFs::WriteFile;
                }
                use std::os::unix::ffi::OsStrExt;
                let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| LandlockError::Nul { path: path.to_owned() })?;
                late.push(LateRule { path: c, access: access.bits() });
                continue;
            }
            if let Some(rule) = path_rule(path, access, abi, &mut notes)? {
                created = created.add_rule(rule)?;
            }
        }
    }
    if !net.is_empty() {
        // Landlock knows TCP only: UDP destinations are the monitor's alone.
        let connect: BTreeSet<u16> =
            policy.network.connect.iter().filter(|d| d.protocol.includes_tcp()).flat_map(|d| d.ports.ports()).collect();
        let bind: BTreeSet<u16> = policy.network.bind.iter().flat_map(|r| r.ports()).collect();
        for port in connect {
            created = created.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
        }
        for port in bind {
            created = created.add_rule(NetPort::new(port, AccessNet::BindTcp))?;
        }
    }
    let fd: Option<OwnedFd> = created.into();
    fd.map(|fd| Built { fd, late, notes }).ok_or(LandlockError::NotCreated)
}

fn path_rule(
    path: &Path,
    access: BitFlags<AccessFs>,
    abi: ABI,
    notes: &mut Notes,
) -> Result<Option<PathBeneath<PathFd>>, LandlockError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            notes.push(format!("{}: {e}; no rule added", path.display()));
            return Ok(None);
        }
    };
    // Directory-only rights are refused on files.
    let access = if meta.is_dir() { access } else { access & AccessFs::from_file(abi) };
    let fd = PathFd::new(path).map_err(|source| LandlockError::Path { path: path.to_owned(), source })?;
    Ok(Some(PathBeneath::new(fd, access)))
}
