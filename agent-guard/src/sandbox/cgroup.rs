//! Session cgroups: one cgroup v2 directory per session (for membership,
//! `cgroup.kill` and `cgroup.freeze`), plus v1 `memory`/`pids` directories
//! when the host keeps those controllers on v1 (hybrid hosts).
//!
//! All paths are passed in (`CgroupRoots`) so tests can point them elsewhere.

use std::{
    fs,
    io::{self, Write as _},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use crate::profile::Limits;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, #[source] source: io::Error },
    #[error("no cgroup v2 mount in {mountinfo}: agent-guard needs cgroup2 for session membership and cgroup.kill")]
    NoV2 { mountinfo: PathBuf },
    #[error("creating cgroup {path}: {source}")]
    Create { path: PathBuf, #[source] source: io::Error },
    #[error("writing {value:?} to {path}: {source}")]
    Write { path: PathBuf, value: String, #[source] source: io::Error },
    #[error("opening {path}: {source}")]
    Open { path: PathBuf, #[source] source: io::Error },
    #[error("the {controller} controller is available neither on cgroup v2 nor on v1, so `{limit}` cannot be enforced")]
    NoController { controller: &'static str, limit: &'static str },
    #[error("processes of session cgroup {path} survived 5 s of SIGKILL")]
    Unkillable { path: PathBuf },
    #[error("removing cgroup {path}: {source}")]
    Remove { path: PathBuf, #[source] source: io::Error },
}

/// A cgroup controller agent-guard uses for limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Pids,
}

impl Controller {
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

/// Where the cgroup hierarchies are mounted on this host.
#[derive(Clone, Debug, Default)]
pub struct CgroupRoots {
    /// The cgroup2 mount point.
    pub v2: Option<PathBuf>,
    /// v1 hierarchy of the `memory` controller.
    pub v1_memory: Option<PathBuf>,
    /// v1 hierarchy of the `pids` controller.
    pub v1_pids: Option<PathBuf>,
}

impl CgroupRoots {
    /// Finds the hierarchies in a `mountinfo` file (normally `/proc/self/mountinfo`).
    pub fn discover(mountinfo: &Path) -> Result<CgroupRoots, CgroupError> {
        let text = fs::read_to_string(mountinfo).map_err(|source| CgroupError::Read { path: mountinfo.to_owned(), source })?;
        Ok(Self::parse_mountinfo(&text))
    }

    pub fn parse_mountinfo(text: &str) -> CgroupRoots {
        let mut roots = CgroupRoots::default();
        for line in text.lines() {
            // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let Some(mountpoint) = left.split(' ').nth(4) else { continue };
            let mut right = right.split(' ');
            let (Some(fstype), Some(_source), Some(super_opts)) = (right.next(), right.next(), right.next()) else {
                continue;
            };
            let mountpoint = PathBuf::from(unescape_mountinfo(mountpoint));
            match fstype {
                "cgroup2" if roots.v2.is_none() => roots.v2 = Some(mountpoint),
                "cgroup" => {
                    let opts: Vec<&str> = super_opts.split(',').collect();
                    if opts.contains(&"memory") && roots.v1_memory.is_none() {
                        roots.v1_memory = Some(mountpoint);
                    } else if opts.contains(&"pids") && roots.v1_pids.is_none() {
                        roots.v1_pids = Some(mountpoint);
                    }
                }
                _ => {}
            }
        }
        roots
    }

    /// Whether `controller` can be enabled for children on the v2 hierarchy.
    pub fn v2_has(&self, controller: Controller) -> bool {
        self.v2.as_ref().is_some_and(|root| {
            fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|n| n == controller.name()))
        })
    }

    /// Where `controller` lives: `Some(true)` on v2, `Some(false)` on v1, `None` nowhere.
    pub fn controller_home(&self, controller: Controller) -> Option<bool> {
        if self.v2_has(controller) {
            return Some(true);
        }
        let v1 = match controller {
            Controller::Memory => &self.v1_memory,
            Controller::Pids => &self.v1_pids,
        };
        v1.as_ref().map(|_| false)
    }
}

/// `mountinfo` escapes space, tab, newline and backslash as octal.
pub(crate) fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push((bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kills every process in the cgroup v2 directory `dir` (`cgroup.kill`, or
/// SIGKILL to each pid until none is left where the kernel lacks
/// `cgroup.kill`), and waits until it is empty; a cgroup that is gone is
/// empty. `reap` is called while waiting so that the caller can collect
/// its own exited children.
pub fn kill_cgroup(dir: &Path, mut reap: impl FnMut()) -> Result<(), CgroupError> {
    let kill_file = dir.join("cgroup.kill");
    let procs = dir.join("cgroup.procs");
    if kill_file.exists() {
        return kill_with_cgroup_kill(dir, &kill_file, reap);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = match fs::read_to_string(&procs) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(CgroupError::Read { path: procs, source }),
        };
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            // SAFETY: kill(2) with a pid read from the session's cgroup; no memory is touched.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        reap();
        if Instant::now() > deadline {
            return Err(CgroupError::Unkillable { path: dir.to_owned() });
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// `cgroup.kill` once (the kernel also kills what forks meanwhile), then
/// waits for `cgroup.events` to say `populated 0`, woken by the kernel's
/// notification on that file rather than by polling the process list.
fn kill_with_cgroup_kill(dir: &Path, kill_file: &Path, mut reap: impl FnMut()) -> Result<(), CgroupError> {
    use std::os::fd::AsFd;
    let events_path = dir.join("cgroup.events");
    let mut events = match fs::File::open(&events_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CgroupError::Read { path: events_path, source }),
    };
    let populated = |f: &mut fs::File| -> Result<bool, CgroupError> {
        use std::io::{Read, Seek};
        let mut text = String::new();
        match f.rewind().and_then(|_| f.read_to_string(&mut text)) {
            Ok(_) => Ok(text.lines().any(|l| l.trim() == "populated 1")),
            // The session's supervisor removed the emptied cgroup meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) || e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(CgroupError::Read { path: dir.join("cgroup.events"), source }),
        }
    };
    let started = Instant::now();
    let mut last_kill = started;
    match write_file(kill_file, "1") {
        // Gone already: nothing left to kill.
        Err(CgroupError::Write { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) || source.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    }
    loop {
        reap();
        if !populated(&mut events)? {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(5) {
            return Err(CgroupError::Unkillable { path: dir.to_owned() });
        }
        // Belt and braces: should anything have escaped, kill again now and then.
        if last_kill.elapsed() > Duration::from_millis(500) {
            if !kill_file.exists() {
                return Ok(());
            }
            write_file(kill_file, "1")?;
            last_kill = Instant::now();
        }
        // kernfs wakes pollers of cgroup.events (POLLPRI) when it changes; the
        // timeout also lets `reap` collect our own children.
        let mut fds = [nix::poll::PollFd::new(events.as_fd(), nix::poll::PollFlags::POLLPRI)];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10u8));
    }
}

/// The cgroup directories of one session.
#[derive(Debug)]
pub struct SessionCgroup {
    /// The session's cgroup v2 directory: membership, kill, freeze, and
    /// v2 limits where the host has the controllers there.
    pub v2: PathBuf,
    /// v1 directories holding the limits the host keeps on v1.
    pub v1: Vec<PathBuf>,
    /// `cgroup.procs` of every directory above, opened for the child to
    /// join with `write("0")` before exec.
    pub procs: Vec<OwnedFd>,
}

/// The directory under each hierarchy that holds all session cgroups.
pub const SUBTREE: &str = "agent-guard";

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write { path: path.to_owned(), value: value.to_owned(), source })
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(CgroupError::Create { path: path.to_owned(), source: e }),
        _ => Ok(()),
    }
}

fn open_procs(dir: &Path) -> Result<OwnedFd, CgroupError> {
    let path = dir.join("cgroup.procs");
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map(OwnedFd::from)
        .map_err(|source| CgroupError::Open { path, source })
}

impl SessionCgroup {
    /// Creates the session's cgroups and sets the memory and pids limits.
    pub fn create(roots: &CgroupRoots, session: &str, limits: &Limits) -> Result<SessionCgroup, CgroupError> {
        let v2_root = roots.v2.as_ref().ok_or_else(|| CgroupError::NoV2 { mountinfo: "/proc/self/mountinfo".into() })?;
        let subtree = v2_root.join(SUBTREE);
        mkdir(&subtree)?;
        let mut wanted = Vec::new();
        if limits.memory.is_some() {
            wanted.push((Controller::Memory, "memory"));
        }
        if limits.processes.is_some() {
            wanted.push((Controller::Pids, "processes"));
        }
        let mut on_v2 = Vec::new();
        let mut on_v1 = Vec::new();
        for (controller, limit) in wanted {
            match roots.controller_home(controller) {
                Some(true) => on_v2.push(controller),
                Some(false) => on_v1.push(controller),
                None => return Err(CgroupError::NoController { controller: controller.name(), limit }),
            }
        }
        for controller in &on_v2 {
            // The root and our subtree must hand the controller down.
            write_file(&v2_root.join("cgroup.subtree_control"), &format!("+{}", controller.name()))?;
            write_file(&subtree.join("cgroup.subtree_control"), &format!("+{}", controller.name()))?;
        }
        let v2 = subtree.join(session);
        mkdir(&v2)?;
        let mut cg = SessionCgroup { procs: vec![open_procs(&v2)?], v2, v1: Vec::new() };
        for controller in on_v2 {
            cg.set_limit(&cg.v2.clone(), controller, limits, true)?;
        }
        for controller in on_v1 {
            let root = match controller {
                Controller::Memory => roots.v1_memory.as_ref(),
                Controller::Pids => roots.v1_pids.as_ref(),
            };
            let Some(root) = root else { continue };
            let dir = root.join(SUBTREE);
            mkdir(&dir)?;
            let dir = dir.join(session);
            mkdir(&dir)?;
            cg.v1.push(dir.clone());
            cg.set_limit(&dir, controller, limits, false)?;
            cg.procs.push(open_procs(&dir)?);
        }
        Ok(cg)
    }

    /// The directories session `session` has on this host (its v2
    /// directory `v2`, and those of the v1 hierarchies that exist), for
    /// cleaning up after a supervisor that could not.
    pub fn existing(roots: &CgroupRoots, v2: PathBuf, session: &str) -> SessionCgroup {
        let v1 = [roots.v1_memory.as_ref(), roots.v1_pids.as_ref()]
            .into_iter()
            .flatten()
            .map(|root| root.join(SUBTREE).join(session))
            .filter(|dir| dir.is_dir())
            .collect();
        SessionCgroup { v2, v1, procs: Vec::new() }
    }

    fn set_limit(&self, dir: &Path, controller: Controller, limits: &Limits, v2: bool) -> Result<(), CgroupError> {
        match controller {
            Controller::Memory => {
                if let Some(mem) = limits.memory {
                    let file = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
                    write_file(&dir.join(file), &mem.0.to_string())?;
                    if v2 {
                        // No swap beyond the limit either, where the host has swap accounting.
                        let _ = write_file(&dir.join("memory.swap.max"), "0");
                    }
                }
            }
            Controller::Pids => {
                if let Some(n) = limits.processes {
                    write_file(&dir.join("pids.max"), &n.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Kills every process in the session and waits until the cgroup is
    /// empty (see [`kill_cgroup`]).
    pub fn kill_all(&self, reap: impl FnMut()) -> Result<(), CgroupError> {
        kill_cgroup(&self.v2, reap)
    }

    /// Freezes (`true`) or thaws the whole session (`cgroup.freeze`).
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        write_file(&self.v2.join("cgroup.freeze"), if frozen { "1" } else { "0" })
    }

    /// Whether the session is frozen now (`cgroup.freeze` reads 1).
    pub fn is_frozen(&self) -> bool {
        fs::read_to_string(self.v2.join("cgroup.freeze")).is_ok_and(|v| v.trim() == "1")
    }

    /// Removes the session's directories. The cgroups must be empty.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in std::iter::once(&self.v2).chain(&self.v1) {
            // An exited task can linger in the cgroup for a moment after it is reaped.
            let mut tries = 0;
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 500 => {
                        tries += 1;
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(source) => return Err(CgroupError::Remove { path: dir.clone(), source }),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_mountinfo() {
        let text = "\
25 30 0:23 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
28 25 0:26 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
29 25 0:27 / /sys/fs/cgroup/cpu\\040x rw,nosuid - cgroup cgroup rw,cpu,cpuacct
";
        let roots = CgroupRoots::parse_mountinfo(text);
        assert_eq!(roots.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(roots.v1_memory.as_deref(), Some(Path::new("/sys/fs/cgroup/memory")));
        assert_eq!(roots.v1_pids.as_deref(), Some(Path::new("/sys/fs/cgroup/pids")));
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }
}
