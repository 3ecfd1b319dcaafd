//! The child side of a session's first process: from `fork` to `execve`.
//!
//! Only system calls happen here (no allocation, no locks), so that this is
//! safe after `fork` even in a multithreaded parent. A failure is written
//! to the report pipe as `(stage, errno)` and the child exits with 127;
//! the parent turns it into a [`ChildError`].

use std::{
    ffi::CString,
    fmt,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    ptr,
};

use super::{
    masks::Masks,
    seccomp::CompiledFilters,
    view::{Op, Step},
};

/// A step of the child's set-up, reported when it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    JoinCgroup = 1,
    Chdir = 2,
    MountNamespace = 3,
    Mask = 4,
    NoNewPrivs = 5,
    DropBounding = 6,
    SetGroups = 7,
    SetUid = 8,
    ClearCaps = 9,
    Landlock = 10,
    CloseFds = 11,
    Seccomp = 12,
    Exec = 13,
    Stdio = 14,
    View = 15,
    LandlockRule = 16,
}

impl Stage {
    pub fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        [
            JoinCgroup, Chdir, MountNamespace, Mask, NoNewPrivs, DropBounding, SetGroups, SetUid, ClearCaps, Landlock, CloseFds,
            Seccomp, Exec, Stdio, View, LandlockRule,
        ]
            .into_iter()
            .find(|s| *s as u32 == v)
    }

    fn describe(self) -> &'static str {
        match self {
            Stage::JoinCgroup => "joining the session cgroup",
            Stage::Chdir => "changing to the working directory",
            Stage::MountNamespace => "creating the private mount namespace",
            Stage::Mask => "masking a `deny` path",
            Stage::NoNewPrivs => "setting no_new_privs",
            Stage::DropBounding => "dropping the capability bounding set",
            Stage::SetGroups => "switching group",
            Stage::SetUid => "switching user",
            Stage::ClearCaps => "clearing capabilities",
            Stage::Landlock => "entering the landlock domain",
            Stage::CloseFds => "closing inherited file descriptors",
            Stage::Seccomp => "installing the seccomp filter",
            Stage::Exec => "executing the command",
            Stage::Stdio => "redirecting stdout and stderr for --record-io",
            Stage::View => "building the filesystem view at",
            Stage::LandlockRule => "adding the landlock rule for",
        }
    }
}

/// A failure the child reported.
#[derive(Debug, thiserror::Error)]
pub struct ChildError {
    pub stage: Stage,
    pub errno: i32,
    /// What the stage acted on, when it names one thing (a path).
    pub subject: Option<String>,
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.stage.describe())?;
        if let Some(s) = &self.subject {
            write!(f, " {s}")?;
        }
        write!(f, ": {}", std::io::Error::from_raw_os_error(self.errno))
    }
}

/// Everything the child needs, prepared by the parent.
pub struct ChildPlan {
    pub cgroup_procs: Vec<OwnedFd>,
    pub workdir: CString,
    /// Whether to make a private mount namespace (for the view and the masks).
    pub mount_ns: bool,
    /// The filesystem view's mounts, in order ([`super::view`]).
    pub view: Vec<Step>,
    pub masks: Masks,
    /// Whether the caller holds CAP_SETPCAP and so can drop the bounding set.
    pub drop_bounding: bool,
    pub cap_last: u32,
    /// `(uid, gid)` to switch to.
    pub run_as: Option<(u32, u32)>,
    pub landlock: Option<OwnedFd>,
    /// Landlock rules added in the child, once the view is built: paths in
    /// `/proc`, whose procfs instance only exists then.
    pub landlock_late: Vec<super::landlock::LateRule>,
    pub seccomp: CompiledFilters,
    pub exe: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// `(stdout, stderr)` for the agent instead of ours (`--record-io`).
    pub output: Option<(RawFd, RawFd)>,
}

/// Pointer arrays for `execve`, built before `fork`.
pub struct ExecArgs {
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ChildPlan {
    pub fn exec_args(&self) -> ExecArgs {
        let ptrs = |v: &[CString]| v.iter().map(|s| s.as_ptr()).chain(std::iter::once(ptr::null())).collect();
        ExecArgs { argv: ptrs(&self.argv), envp: ptrs(&self.envp) }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Reports `(stage, index, errno)` on `report` and exits.
fn fail(report: RawFd, stage: Stage, index: u32, err: i32) -> ! {
    let mut buf = [0u8; 12];
    buf[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&index.to_ne_bytes());
    buf[8..].copy_from_slice(&err.to_ne_bytes());
    // SAFETY: writing a stack buffer to a pipe fd we own, then exiting without
    // running destructors or atexit handlers (which could take locks).
    unsafe {
        libc::write(report, buf.as_ptr().cast(), buf.len());
        libc::_exit(127)
    }
}

/// Decodes a report written by the child; `None` when it carried none
/// (the exec succeeded).
pub fn decode_report(buf: &[u8], plan: &ChildPlan) -> Option<ChildError> {
    if buf.len() < 12 {
        return None;
    }
    let word = |i: usize| [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]];
    let stage = Stage::from_u32(u32::from_ne_bytes(word(0)))?;
    let index = u32::from_ne_bytes(word(4)) as usize;
    let errno = i32::from_ne_bytes(word(8));
    let subject = match stage {
        Stage::Mask => plan.masks.mounts.get(index).map(|m| m.target.to_string_lossy().into_owned()),
        Stage::View => plan.view.get(index).map(|s| s.target.to_string_lossy().into_owned()),
        Stage::LandlockRule => plan.landlock_late.get(index).map(|r| r.path.to_string_lossy().into_owned()),
        Stage::Chdir => Some(plan.workdir.to_string_lossy().into_owned()),
        Stage::Exec => Some(plan.exe.to_string_lossy().into_owned()),
        _ => None,
    };
    Some(ChildError { stage, errno, subject })
}

/// Runs in the forked child: sets up the sandbox and executes the command.
/// Never returns.
///
/// # Safety
///
/// Must be called only in a freshly forked child. `args` must come from
/// `plan.exec_args()`; `report` is the write end of a close-on-exec pipe.
pub unsafe fn enter(plan: &ChildPlan, args: &ExecArgs, report: RawFd, old_mask: &libc::sigset_t) -> ! {
    macro_rules! check {
        ($stage:expr, $index:expr, $call:expr) => {
            if $call < 0 {
                fail(report, $stage, $index as u32, errno());
            }
        };
    }
    // SAFETY: raw system calls on fds and C strings the parent prepared and
    // keeps alive (the whole block); no allocation happens after fork.
    unsafe {
        for fd in &plan.cgroup_procs {
            check!(Stage::JoinCgroup, 0, libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1));
        }
        if let Some((out, err)) = plan.output {
            check!(Stage::Stdio, 1, libc::dup2(out, 1));
            check!(Stage::Stdio, 2, libc::dup2(err, 2));
        }

        if plan.mount_ns {
            check!(Stage::MountNamespace, 0, libc::unshare(libc::CLONE_NEWNS));
            check!(
                Stage::MountNamespace,
                0,
                libc::mount(ptr::null(), c"/".as_ptr(), ptr::null(), libc::MS_REC | libc::MS_PRIVATE, ptr::null())
            );
            for (i, step) in plan.view.iter().enumerate() {
                if view_step(step) < 0 {
                    fail(report, Stage::View, i as u32, errno());
                }
            }
            for (i, m) in plan.masks.mounts.iter().enumerate() {
                check!(Stage::Mask, i, libc::mount(m.source.as_ptr(), m.target.as_ptr(), ptr::null(), libc::MS_BIND, ptr::null()));
                let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                check!(Stage::Mask, i, libc::mount(ptr::null(), m.target.as_ptr(), ptr::null(), flags, ptr::null()));
            }
        }
        // After the mounts, so that the working directory is the view's.
        check!(Stage::Chdir, 0, libc::chdir(plan.workdir.as_ptr()));

        check!(Stage::NoNewPrivs, 0, libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));

        if plan.drop_bounding {
            for cap in 0..=plan.cap_last {
                check!(Stage::DropBounding, cap, libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0));
            }
        }
        // Fails with EINVAL only on kernels without ambient capabilities, where there is nothing to clear.
        let r = libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0);
        if r < 0 && errno() != libc::EINVAL {
            fail(report, Stage::DropBounding, 0, errno());
        }

        if let Some((uid, gid)) = plan.run_as {
            let groups = [gid as libc::gid_t];
            check!(Stage::SetGroups, 0, libc::setgroups(1, groups.as_ptr()));
            check!(Stage::SetGroups, 0, libc::setresgid(gid, gid, gid));
            check!(Stage::SetUid, 0, libc::setresuid(uid, uid, uid));
        }

        let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let data = [CapData::default(); 2];
        check!(Stage::ClearCaps, 0, libc::syscall(libc::SYS_capset, &header, data.as_ptr()));

        if let Some(ruleset) = &plan.landlock {
            for (i, rule) in plan.landlock_late.iter().enumerate() {
                let fd = libc::open(rule.path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                check!(Stage::LandlockRule, i, fd);
                let attr = PathBeneathAttr { allowed_access: rule.access, parent_fd: fd };
                let r = libc::syscall(libc::SYS_landlock_add_rule, ruleset.as_raw_fd(), LANDLOCK_RULE_PATH_BENEATH, &attr, 0u32);
                check!(Stage::LandlockRule, i, r);
                libc::close(fd);
            }
            check!(Stage::Landlock, 0, libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32));
        }

        check!(Stage::CloseFds, 0, libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC));

        if seccompiler::apply_filter(&plan.seccomp.deny).is_err() {
            fail(report, Stage::Seccomp, 0, errno());
        }
        if let Some(enosys) = &plan.seccomp.enosys {
            if seccompiler::apply_filter(enosys).is_err() {
                fail(report, Stage::Seccomp, 1, errno());
            }
        }

        libc::pthread_sigmask(libc::SIG_SETMASK, old_mask, ptr::null_mut());
        libc::execve(plan.exe.as_ptr(), args.argv.as_ptr(), args.envp.as_ptr());
        fail(report, Stage::Exec, 0, errno())
    }
}

/// Builds `steps` in a forked child's own mount namespace, as a session's
/// child would, and reports the first step that failed with its errno
/// (`doctor`'s probe of the view). The host's mounts are not touched.
pub fn try_view(steps: &[Step]) -> Result<(), (usize, i32)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds; fork's child makes only system calls on
    // prepared data and leaves with _exit; the parent reads and reaps it.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err((0, errno()));
        }
        let pid = libc::fork();
        if pid == 0 {
            let mut r = libc::unshare(libc::CLONE_NEWNS);
            if r >= 0 {
                r = libc::mount(ptr::null(), c"/".as_ptr(), ptr::null(), libc::MS_REC | libc::MS_PRIVATE, ptr::null()) as i32;
            }
            if r < 0 {
                fail(fds[1], Stage::MountNamespace, 0, errno());
            }
            for (i, step) in steps.iter().enumerate() {
                if view_step(step) < 0 {
                    fail(fds[1], Stage::View, i as u32, errno());
                }
            }
            libc::_exit(0);
        }
        libc::close(fds[1]);
        let mut buf = [0u8; 12];
        let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
        libc::close(fds[0]);
        if pid > 0 {
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        } else {
            return Err((0, errno()));
        }
        if n == 12 {
            let word = |i: usize| [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]];
            return Err((u32::from_ne_bytes(word(4)) as usize, i32::from_ne_bytes(word(8))));
        }
        Ok(())
    }
}

/// One mount of the view; returns a negative value on failure (errno set).
///
/// # Safety
///
/// Only system calls on the step's prepared C string; safe after fork.
unsafe fn view_step(step: &Step) -> i64 {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let attr = MountAttr { attr_set: step.set, attr_clr: step.clr, propagation: 0, userns_fd: 0 };
    let size = std::mem::size_of::<MountAttr>();
    // SAFETY: raw mount-API calls with a valid C string and a stack struct of the kernel's layout.
    unsafe {
        match step.op {
            Op::Setattr => libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                step.target.as_ptr(),
                AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                &attr,
                size,
            ),
            Op::Bind => {
                let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
                let tree = libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, step.target.as_ptr(), flags);
                if tree < 0 {
                    return tree;
                }
                let tree = tree as libc::c_int;
                if step.set | step.clr != 0 {
                    let r = libc::syscall(libc::SYS_mount_setattr, tree, c"".as_ptr(), libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE, &attr, size);
                    if r < 0 {
                        return r;
                    }
                }
                // The target's last component is not followed if it is a link (no MOVE_MOUNT_T_SYMLINKS).
                let r = libc::syscall(libc::SYS_move_mount, tree, c"".as_ptr(), libc::AT_FDCWD, step.target.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH);
                libc::close(tree);
                r
            }
            Op::Proc => i64::from(libc::mount(
                c"proc".as_ptr(),
                step.target.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                PROC_OPTIONS.as_ptr().cast(),
            )),
        }
    }
}

/// The session's procfs: processes the caller may not ptrace are not even
/// listed. `gid=` names a group no session has: members of the procfs's
/// group see everything, and that group is root's (0) by default.
const PROC_OPTIONS: &std::ffi::CStr = c"hidepid=invisible,gid=4294967294";

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `struct landlock_path_beneath_attr` (packed in the kernel's UAPI).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
