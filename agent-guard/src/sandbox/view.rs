//! The session's filesystem view: the mounts of its private mount
//! namespace, planned from the profile in the parent ([`plan`]) and made by
//! the child with plain system calls (`child::enter`). Landlock decides
//! what may be opened; the view decides what the kernel will map
//! executable, which subtrees are read-only whatever landlock says, and
//! what the session sees of the host's processes and kernel settings.
//!
//! - Every mount is read-only, `nosuid`, `nodev` (but `/dev`) and `noexec`;
//!   `write` entries are bind-mounted writable again.
//! - `exec` entries, the ELF interpreters and the system library
//!   directories are bind-mounted executable and read-only: what can be
//!   executed or mapped executable cannot be written.
//! - The most specific entry wins: a `read` or `exec` entry beneath a
//!   `write` entry is a read-only bind mount, and every directory between
//!   the writable tree and it is a mount point, which cannot be renamed
//!   or removed (EBUSY), so the subtree cannot be swapped away.
//! - `/proc` is a procfs instance of the session's own, `hidepid=invisible`
//!   (a process outside the session's landlock domain is not even listed),
//!   with `/proc/sys`, `/proc/sysrq-trigger` and the like read-only and
//!   kernel-memory files masked; `/sys` is read-only.
//!
//! Bind mounts are cloned detached (`open_tree`), given their flags there
//! (`mount_setattr`), and only then attached (`move_mount`), without
//! following a symbolic link at the target: the mount never exists with
//! the wrong flags, and a link swapped in since planning is not followed.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use crate::profile::Policy;

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// System library directories: shared objects here may be mapped
/// executable by any allowed program. Resolved through symbolic links
/// (`/lib` is `/usr/lib` on merged-/usr systems) and kept when present.
pub const LIBRARY_DIRS: &[&str] =
    &["/lib", "/lib32", "/lib64", "/libx32", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32", "/usr/local/lib"];

/// Files and directories of `/proc` no session may write, even as root
/// (as container runtimes keep them).
const PROC_READ_ONLY: &[&str] =
    &["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs", "/proc/acpi", "/proc/scsi", "/proc/asound"];

/// Files of `/proc` that show kernel memory or other users' state: masked.
pub const PROC_MASKED: &[&str] = &["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats"];

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("reading {path}: {source}")]
    Mountinfo { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path} is both writable and executable in this profile (through `write` and `exec`); what the agent writes there it could run: keep them apart")]
    WriteAndExec { path: PathBuf },
    #[error("unix socket {path} does not exist and its directory is writable by the session: the agent could put a link to another socket there; create the socket before the session starts or move it out of the writable tree")]
    UnpinnableSocket { path: PathBuf },
    #[error("unix socket path {path} goes through the symbolic link {link}, which the session may replace: name the socket by its real path")]
    SocketThroughLink { path: PathBuf, link: PathBuf },
    #[error("{path} contains a NUL byte")]
    Nul { path: PathBuf },
}

/// What the child does for one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `mount_setattr` on an existing mount point.
    Setattr,
    /// Clone the tree at the target (recursively), set its flags, attach it over the target.
    Bind,
    /// Mount a procfs instance of the session's own.
    Proc,
}

/// One mount operation of the child, prepared in the parent.
#[derive(Debug)]
pub struct Step {
    pub op: Op,
    pub target: CString,
    /// `MOUNT_ATTR_*` to set and to clear, on every mount of the tree.
    pub set: u64,
    pub clr: u64,
}

/// How a path is reached in the session, for `profile show` and the docs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ViewEntry {
    pub path: PathBuf,
    /// `read-only`, `read-only, executable`, `writable, not executable`, `pinned` ...
    pub access: String,
    /// Why: the profile entry or the rule that made it so.
    pub why: String,
}

/// The mounts a session's child makes, in order, and what they mean.
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub entries: Vec<ViewEntry>,
    /// Paths masked like `deny` entries (kernel-memory files of `/proc`).
    pub masked: Vec<PathBuf>,
    /// Things the operator should know (e.g. an exec entry on a `noexec` file system).
    pub notes: Vec<String>,
}

/// A mount of the host as `/proc/self/mountinfo` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMount {
    pub point: PathBuf,
    /// `MOUNT_ATTR_*` flags it has.
    pub flags: u64,
}

/// The host's mounts, in mountinfo order (a later mount at a point covers an earlier one).
#[derive(Clone, Debug, Default)]
pub struct HostMounts(pub Vec<HostMount>);

impl HostMounts {
    pub fn read(mountinfo: &Path) -> Result<HostMounts, ViewError> {
        let text = fs::read_to_string(mountinfo).map_err(|source| ViewError::Mountinfo { path: mountinfo.to_owned(), source })?;
        Ok(HostMounts::parse(&text))
    }

    pub fn parse(text: &str) -> HostMounts {
        let mut mounts = Vec::new();
        for line in text.lines() {
            // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
            let mut fields = line.split(' ');
            let (Some(point), Some(options)) = (fields.nth(4), fields.next()) else { continue };
            let mut flags = 0;
            for opt in options.split(',') {
                flags |= match opt {
                    "ro" => MOUNT_ATTR_RDONLY,
                    "nosuid" => MOUNT_ATTR_NOSUID,
                    "nodev" => MOUNT_ATTR_NODEV,
                    "noexec" => MOUNT_ATTR_NOEXEC,
                    _ => 0,
                };
            }
            mounts.push(HostMount { point: PathBuf::from(super::cgroup::unescape_mountinfo(point)), flags });
        }
        HostMounts(mounts)
    }

    /// The flags of the mount `path` lies on (the topmost at its longest mount point).
    fn flags_at(&self, path: &Path) -> u64 {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, m)| path.starts_with(&m.point))
            .max_by_key(|(i, m)| (m.point.components().count(), *i))
            .map_or(0, |(_, m)| m.flags)
    }

    fn is_mount_point(&self, path: &Path) -> bool {
        self.0.iter().any(|m| m.point == path)
    }

    /// Mount points strictly beneath `path`.
    fn beneath<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = &'a HostMount> + 'a {
        self.0.iter().filter(move |m| m.point != path && m.point.starts_with(path))
    }
}

/// What a profile entry asks for a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Read,
    /// A system library directory or an ELF interpreter: mapped executable.
    Library,
    Exec,
    Write,
}

/// Mount flags in effect at a path of the view, as far as the plan tracks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flags {
    ro: bool,
    exec: bool,
}

/// Options of a plan beyond the profile.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Confine execution and writes (noexec trees, read-only subtrees).
    /// Off for `--observe`, which records rather than confines: the
    /// private `/proc`, read-only `/sys` and `nosuid` stay.
    pub confine: bool,
}

/// Plans the view of `policy`. `loaders` are the ELF interpreters the
/// session's programs need; `sockets` the unix socket files the session
/// may connect to (pinned so that they cannot be swapped).
pub fn plan(policy: &Policy, loaders: &[PathBuf], sockets: &[PathBuf], host: &HostMounts, opts: Options) -> Result<Plan, ViewError> {
    let mut plan = Plan::default();
    let fs_ = &policy.filesystem;
    // Canonical path -> the kind its most specific profile entry gives it.
    let mut rules: BTreeMap<PathBuf, (Kind, String)> = BTreeMap::new();
    let add = |rules: &mut BTreeMap<PathBuf, (Kind, String)>, path: &Path, kind: Kind, why: String| -> Result<(), ViewError> {
        let Ok(real) = path.canonicalize() else { return Ok(()) };
        match rules.get(&real) {
            Some((Kind::Write, _)) if kind == Kind::Exec => return Err(ViewError::WriteAndExec { path: real }),
            Some((Kind::Exec, _)) if kind == Kind::Write => return Err(ViewError::WriteAndExec { path: real }),
            Some((k, _)) if *k >= kind => return Ok(()),
            _ => {}
        }
        rules.insert(real, (kind, why));
        Ok(())
    };
    for p in &fs_.read {
        add(&mut rules, p, Kind::Read, format!("read: {}", p.display()))?;
    }
    for p in &fs_.write {
        add(&mut rules, p, Kind::Write, format!("write: {}", p.display()))?;
    }
    for p in &fs_.exec {
        add(&mut rules, p, Kind::Exec, format!("exec: {}", p.display()))?;
    }
    if opts.confine {
        for d in LIBRARY_DIRS {
            add(&mut rules, Path::new(d), Kind::Library, format!("system library directory {d}"))?;
        }
        for l in loaders {
            add(&mut rules, l, Kind::Library, format!("ELF interpreter {}", l.display()))?;
        }
    }
    // No plain bind in /proc (it gets its own instance, after these) or /sys (read-only whatever is asked).
    let special = |p: &Path| p.starts_with("/proc") || p.starts_with("/sys");
    let kind_at = |p: &Path| -> Option<Kind> { p.ancestors().find_map(|a| rules.get(a).map(|(k, _)| *k)) };
    let writable_above = |p: &Path| p.parent().is_some_and(|parent| kind_at(parent) == Some(Kind::Write));

    let target = cpath;
    // 1. Everything nosuid, nodev, noexec (nosuid only when not confining).
    // Read-only too when confining: landlock does not check chmod/chown, so an
    // agent running as root could change the mode or owner of any root-owned
    // file; `write` entries get their writability back below.
    let global = if opts.confine {
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_RDONLY
    } else {
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
    };
    plan.steps.push(Step { op: Op::Setattr, target: target(Path::new("/"))?, set: global, clr: 0 });
    // 2. /dev keeps its devices, where the host lets it.
    let dev = Path::new("/dev");
    if dev.is_dir() && host.flags_at(dev) & MOUNT_ATTR_NODEV == 0 {
        let op = if host.is_mount_point(dev) { Op::Setattr } else { Op::Bind };
        plan.steps.push(Step { op, target: target(dev)?, set: 0, clr: MOUNT_ATTR_NODEV });
        restore(&mut plan, host, dev, MOUNT_ATTR_NODEV)?;
    }

    // 3. The profile's entries, shallowest first, each only where it changes something.
    let mut applied: Vec<(PathBuf, Flags)> = Vec::new();
    let effective = |applied: &[(PathBuf, Flags)], p: &Path| -> Flags {
        applied
            .iter()
            .filter(|(a, _)| p.starts_with(a))
            .max_by_key(|(a, _)| a.components().count())
            .map_or(Flags { ro: opts.confine || host.flags_at(p) & MOUNT_ATTR_RDONLY != 0, exec: !opts.confine }, |(_, f)| *f)
    };
    // Pins: the directories between a writable tree and a protected entry (and unix sockets).
    let mut pins: BTreeMap<PathBuf, String> = BTreeMap::new();
    let pin_ancestors = |pins: &mut BTreeMap<PathBuf, String>, p: &Path, why: &str| {
        for d in p.ancestors().skip(1) {
            if writable_above(d) {
                pins.entry(d.to_owned()).or_insert_with(|| format!("holds {why}"));
            }
        }
    };
    if opts.confine {
        for (p, (kind, why)) in &rules {
            if matches!(kind, Kind::Read | Kind::Exec) && writable_above(p) && !special(p) {
                pin_ancestors(&mut pins, p, why);
            }
        }
    }
    for s in sockets {
        // The spelling must not go through a link the session could replace.
        let mut prefix = PathBuf::new();
        for c in s.components() {
            prefix.push(c);
            if prefix.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) && writable_above(&prefix) {
                return Err(ViewError::SocketThroughLink { path: s.clone(), link: prefix });
            }
        }
        match s.canonicalize() {
            Ok(real) => {
                if writable_above(&real) || real.ancestors().skip(1).any(writable_above) {
                    pins.entry(real.clone()).or_insert_with(|| format!("unix socket {}", s.display()));
                    pin_ancestors(&mut pins, &real, &format!("unix socket {}", s.display()));
                }
            }
            Err(_) if s.parent().is_some_and(|d| kind_at(d) == Some(Kind::Write)) => {
                return Err(ViewError::UnpinnableSocket { path: s.clone() })
            }
            Err(_) => {}
        }
    }
    let mut order: Vec<&Path> = rules.keys().map(PathBuf::as_path).chain(pins.keys().map(PathBuf::as_path)).collect();
    order.sort_by_key(|p| (p.components().count(), p.to_path_buf()));
    order.dedup();
    for p in order {
        if special(p) {
            continue;
        }
        let now = effective(&applied, p);
        let rule = rules.get(p);
        let want = match rule.map(|(k, _)| *k) {
            Some(Kind::Write) => Flags { ro: false, exec: false },
            Some(Kind::Exec | Kind::Library) if opts.confine => Flags { ro: true, exec: true },
            Some(Kind::Read) if opts.confine => Flags { ro: now.ro || writable_above(p), exec: false },
            _ => now,
        };
        let host_flags = host.flags_at(p);
        // Never more than the host gives: a read-only or noexec host mount stays so.
        let want = Flags {
            ro: want.ro || host_flags & MOUNT_ATTR_RDONLY != 0,
            exec: want.exec && host_flags & MOUNT_ATTR_NOEXEC == 0,
        };
        if let Some((Kind::Exec, why)) = rule {
            if !want.exec && opts.confine {
                plan.notes.push(format!("{} ({why}) is on a noexec mount of this host: nothing there can run", p.display()));
            }
        }
        let pinned = pins.get(p);
        if want == now && pinned.is_none() {
            continue;
        }
        let (mut set, mut clr) = (0, 0);
        if want.ro != now.ro {
            if want.ro { set |= MOUNT_ATTR_RDONLY } else { clr |= MOUNT_ATTR_RDONLY }
        }
        if want.exec != now.exec {
            if want.exec { clr |= MOUNT_ATTR_NOEXEC } else { set |= MOUNT_ATTR_NOEXEC }
        }
        // A mount over `/` would not be the process's root: change `/` itself.
        let op = if p == Path::new("/") { Op::Setattr } else { Op::Bind };
        plan.steps.push(Step { op, target: target(p)?, set, clr });
        if clr != 0 {
            restore(&mut plan, host, p, clr)?;
        }
        applied.push((p.to_owned(), want));
        let access = match (want.ro, want.exec) {
            (true, true) => "read-only, executable",
            (true, false) => "read-only, not executable",
            (false, false) => "writable, not executable",
            (false, true) => "writable, executable",
        };
        let (access, why) = match (rule, pinned) {
            (Some((_, why)), _) => (access.to_owned(), why.clone()),
            (None, Some(why)) => (format!("pinned ({access}): cannot be renamed or removed"), why.clone()),
            (None, None) => continue,
        };
        plan.entries.push(ViewEntry { path: p.to_owned(), access, why });
    }

    // 4. /proc of the session's own, then its read-only and masked parts; /sys read-only.
    let proc_ = Path::new("/proc");
    plan.steps.push(Step { op: Op::Proc, target: target(proc_)?, set: 0, clr: 0 });
    plan.entries.push(ViewEntry {
        path: proc_.to_owned(),
        access: "private procfs, hidepid=invisible".to_owned(),
        why: "only the session's own processes are listed".to_owned(),
    });
    for p in PROC_READ_ONLY.iter().map(Path::new).filter(|p| p.exists()) {
        plan.steps.push(Step { op: Op::Bind, target: target(p)?, set: MOUNT_ATTR_RDONLY, clr: 0 });
        plan.entries.push(ViewEntry { path: p.to_owned(), access: "read-only".to_owned(), why: "kernel settings".to_owned() });
    }
    plan.masked.extend(PROC_MASKED.iter().map(PathBuf::from).filter(|p| p.exists()));
    let sys = Path::new("/sys");
    if sys.is_dir() {
        let op = if host.is_mount_point(sys) { Op::Setattr } else { Op::Bind };
        plan.steps.push(Step { op, target: target(sys)?, set: MOUNT_ATTR_RDONLY, clr: 0 });
        plan.entries.push(ViewEntry { path: sys.to_owned(), access: "read-only".to_owned(), why: "kernel settings".to_owned() });
    }
    Ok(plan)
}

/// After clearing `cleared` on the tree at `path`, sets it again on the
/// mounts beneath that had it on the host.
fn restore(plan: &mut Plan, host: &HostMounts, path: &Path, cleared: u64) -> Result<(), ViewError> {
    for m in host.beneath(path) {
        let again = m.flags & cleared;
        if again != 0 {
            let target = cpath(&m.point)?;
            plan.steps.push(Step { op: Op::Setattr, target, set: again, clr: 0 });
        }
    }
    Ok(())
}

fn cpath(p: &Path) -> Result<CString, ViewError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| ViewError::Nul { path: p.to_owned() })
}

/// Whether this kernel has `mount_setattr` (Linux 5.12), which the view needs.
pub fn kernel_has_mount_setattr() -> bool {
    // SAFETY: an invalid fd and a NULL attribute: the kernel answers EBADF
    // (or EINVAL/EFAULT) when the call exists, ENOSYS when it does not.
    let r = unsafe { libc::syscall(libc::SYS_mount_setattr, -1, c"".as_ptr(), 0u32, std::ptr::null::<u8>(), 0usize) };
    !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

#[cfg(test)]
mod tests;
