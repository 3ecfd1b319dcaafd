//! Probes, for real, what this host can enforce: the kernel, landlock,
//! seccomp, cgroups, bpffs, BTF, and which eBPF program types load (by
//! loading a trivial program of each from agent-guard's own object).

use std::{
    fs,
    path::{Path, PathBuf},
};

use agent_guard_common::probe::ProbeKind;
use aya::{
    programs::{
        links::CgroupAttachMode, BtfTracePoint, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, FEntry, Lsm,
        RawTracePoint, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use serde::Serialize;

use crate::sandbox::{
    cgroup::{CgroupRoots, Controller, SUBTREE},
    landlock,
};

/// The eBPF object built from `agent-guard-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-guard.bpf.o"));

/// How much a failed check matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// `agent-guard run` cannot work without it.
    Required,
    /// Some profile features or the monitor need it.
    Wanted,
    /// An optional extra, used where present.
    Optional,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub need: Need,
    pub detail: String,
}

fn check(name: impl Into<String>, ok: bool, need: Need, detail: impl Into<String>) -> Check {
    Check { name: name.into(), ok, need, detail: detail.into() }
}

/// The full report. `ok()` is false when a required check failed.
#[derive(Debug, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok || c.need != Need::Required)
    }
}

/// Runs every probe.
pub fn run(mountinfo: &Path) -> Report {
    let mut checks = Vec::new();
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    checks.push(check("kernel", true, Need::Required, release));
    checks.extend(landlock_checks());
    checks.push(seccomp_check());
    checks.push(view_check(mountinfo));
    let roots = CgroupRoots::discover(mountinfo).unwrap_or_default();
    checks.extend(cgroup_checks(&roots));
    let bpffs = fs::read_to_string(mountinfo).is_ok_and(|t| t.lines().any(|l| l.contains(" - bpf ")));
    checks.push(check("bpffs", bpffs, Need::Wanted, if bpffs { "mounted" } else { "not mounted (mount -t bpf bpf /sys/fs/bpf)" }));
    checks.push(tracefs_check(Path::new(TRACEFS)));
    let btf = Btf::from_sys_fs();
    checks.push(check(
        "kernel BTF",
        btf.is_ok(),
        Need::Wanted,
        match &btf {
            Ok(_) => "/sys/kernel/btf/vmlinux".to_owned(),
            Err(e) => e.to_string(),
        },
    ));
    checks.extend(ebpf_checks(btf.ok().as_ref(), &roots));
    checks.extend(monitor_check(&roots));
    Report { checks }
}

/// Where tracepoint programs find their ids.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Makes sure tracefs is mounted at `dir` (the kernel creates the empty
/// directory but may not mount it at boot); tracepoint programs need it.
pub fn ensure_tracefs(dir: &Path) -> Result<bool, nix::Error> {
    if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Ok(false);
    }
    nix::mount::mount(Some("tracefs"), dir, Some("tracefs"), nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC, None::<&str>)?;
    Ok(true)
}

fn tracefs_check(dir: &Path) -> Check {
    match ensure_tracefs(dir) {
        Ok(false) => check("tracefs", true, Need::Wanted, format!("mounted at {}", dir.display())),
        Ok(true) => check("tracefs", true, Need::Wanted, format!("was not mounted; mounted it at {}", dir.display())),
        Err(e) => check("tracefs", false, Need::Wanted, format!("not mounted at {} and mounting failed: {e}", dir.display())),
    }
}

fn landlock_checks() -> Vec<Check> {
    let abi = landlock::kernel_abi();
    let feature = |name: &str, min: i32, need: Need| {
        check(format!("landlock: {name}"), abi >= min, need, if abi >= min { format!("ABI {abi}") } else { format!("needs ABI {min}, have {abi}") })
    };
    vec![
        check("landlock", abi >= 1, Need::Required, if abi >= 1 { format!("ABI {abi}") } else { "not enabled".to_owned() }),
        feature("filesystem read/write/exec", 1, Need::Required),
        feature("file truncation", 3, Need::Wanted),
        feature("TCP connect/bind ports", 4, Need::Wanted),
        feature("device ioctl", 5, Need::Wanted),
        feature("signal and abstract unix socket scoping", 6, Need::Wanted),
    ]
}

/// Builds, in a throwaway mount namespace, the view of a profile with an
/// `exec` entry and a read-only entry inside a writable tree.
fn view_check(mountinfo: &Path) -> Check {
    use crate::sandbox::{child, view};
    let name = "filesystem view (mount namespace, open_tree, mount_setattr, private procfs)";
    let result = (|| -> Result<String, String> {
        let dir = tempfile_dir().map_err(|e| format!("making a probe directory: {e}"))?;
        let mut policy = crate::profile::Policy::probe_only(&dir);
        std::fs::create_dir_all(dir.join("ro")).map_err(|e| e.to_string())?;
        policy.filesystem.write = vec![dir.clone()];
        policy.filesystem.read = vec![dir.join("ro")];
        policy.filesystem.exec = vec![PathBuf::from("/bin/sh")];
        let host = view::HostMounts::read(mountinfo).map_err(|e| e.to_string())?;
        let plan = view::plan(&policy, &[], &[], &host, view::Options { confine: true }).map_err(|e| e.to_string())?;
        let outcome = child::try_view(&plan.steps);
        let _ = std::fs::remove_dir_all(&dir);
        match outcome {
            Ok(()) => Ok(format!("{} mounts built", plan.steps.len())),
            Err((i, errno)) => Err(format!(
                "{} failed: {}",
                plan.steps.get(i).map_or_else(|| "making the mount namespace".to_owned(), |s| format!("step {i} at {}", s.target.to_string_lossy())),
                std::io::Error::from_raw_os_error(errno)
            )),
        }
    })();
    match result {
        Ok(detail) => check(name, true, Need::Required, detail),
        Err(detail) => check(name, false, Need::Required, detail),
    }
}

/// A fresh directory for a probe, under the system's temporary directory.
fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("agent-guard-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn seccomp_check() -> Check {
    // SAFETY: PR_GET_SECCOMP only reads this thread's seccomp mode.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    let actions = fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let needed = ["errno", "kill_process", "allow"];
    let ok = mode >= 0 && needed.iter().all(|a| actions.split_whitespace().any(|x| x == *a));
    check("seccomp filter", ok, Need::Required, format!("actions: {}", actions.trim()))
}

fn cgroup_checks(roots: &CgroupRoots) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(v2) = &roots.v2 else {
        checks.push(check("cgroup v2", false, Need::Required, "no cgroup2 mount"));
        return checks;
    };
    checks.push(check("cgroup v2", true, Need::Required, v2.display().to_string()));
    // cgroup.kill and cgroup.freeze exist only below the root: look in a probe cgroup.
    let probe = v2.join(SUBTREE).join(format!("doctor-{}", std::process::id()));
    let made = fs::create_dir_all(&probe);
    let has = |f: &str| probe.join(f).exists();
    let (kill, freeze) = (has("cgroup.kill"), has("cgroup.freeze"));
    let _ = fs::remove_dir(&probe);
    let why = |ok: bool| match (&made, ok) {
        (Err(e), _) => format!("cannot create a probe cgroup: {e}"),
        (Ok(()), true) => "present".to_owned(),
        (Ok(()), false) => "absent: sessions are ended by killing each process".to_owned(),
    };
    checks.push(check("cgroup.kill", kill, Need::Wanted, why(kill)));
    checks.push(check("cgroup.freeze", freeze, Need::Wanted, why(freeze)));
    for controller in [Controller::Memory, Controller::Pids] {
        let (ok, detail) = match roots.controller_home(controller) {
            Some(true) => (true, "cgroup v2".to_owned()),
            Some(false) => (true, "cgroup v1 (hybrid host)".to_owned()),
            None => (false, "unavailable".to_owned()),
        };
        checks.push(check(format!("{} controller", controller.name()), ok, Need::Wanted, detail));
    }
    checks
}

fn ebpf_checks(btf: Option<&Btf>, roots: &CgroupRoots) -> Vec<Check> {
    let mut ebpf = match EbpfLoader::new().btf(btf).load(EBPF_OBJECT) {
        Ok(e) => e,
        Err(e) => return vec![check("eBPF object", false, Need::Wanted, e.to_string())],
    };
    let cgroup_dir = roots.v2.as_ref().map(|v2| v2.join(SUBTREE).join(format!("doctor-bpf-{}", std::process::id())));
    if let Some(dir) = &cgroup_dir {
        let _ = fs::create_dir_all(dir);
    }
    let checks = ProbeKind::ALL
        .into_iter()
        .map(|kind| {
            let need = match kind {
                ProbeKind::Lsm | ProbeKind::Fentry => Need::Optional,
                _ => Need::Wanted,
            };
            let result = probe_program(&mut ebpf, kind, btf, cgroup_dir.as_deref());
            let ok = result.is_ok();
            check(format!("eBPF {}", kind.type_name()), ok, need, result.unwrap_or_else(|e| e))
        })
        .collect();
    drop(ebpf);
    if let Some(dir) = &cgroup_dir {
        let _ = fs::remove_dir(dir);
    }
    checks
}

/// Registers an empty probe session with the shared monitor, as `run`
/// does (loading and pinning the instance if no process has yet), then
/// forgets it; and whether that instance has the unix socket hooks,
/// which every session needs (`[network] unix`: without the list, no
/// socket file may be connected to).
fn monitor_check(roots: &CgroupRoots) -> Vec<Check> {
    let name = "eBPF monitor (what run loads)";
    let unix = "eBPF unix socket hooks (connect_unix, sendmsg_unix)";
    let Some(v2) = &roots.v2 else {
        return vec![check(name, false, Need::Wanted, "needs a cgroup v2 mount"), check(unix, false, Need::Wanted, "needs the eBPF monitor")];
    };
    let dir = v2.join(SUBTREE).join(format!("doctor-monitor-{}", std::process::id()));
    if let Err(e) = fs::create_dir_all(&dir) {
        return vec![check(name, false, Need::Wanted, format!("creating {}: {e}", dir.display())), check(unix, false, Need::Wanted, "needs the eBPF monitor")];
    }
    let policy = crate::profile::Policy::probe_only(&dir);
    let started = std::time::Instant::now();
    let result = crate::monitor::Monitor::attach(&policy, &dir, false, false);
    let took = started.elapsed();
    let out = match result {
        Ok(m) => {
            let how = if m.loaded_instance { "loaded, attached and pinned" } else { "already pinned" };
            let unix_hooks = m.unix_hooks;
            drop(m);
            let detail = format!(
                "instance {} {how} under {}; a session registered in {} ms",
                crate::monitor::shared::version(),
                crate::monitor::shared::pin_root().display(),
                took.as_millis()
            );
            let unix_check = if unix_hooks {
                check(unix, true, Need::Wanted, "attached: only a session's listed socket files may be connected to")
            } else {
                check(unix, false, Need::Wanted, format!("not attached: {}; every session is refused unless --best-effort", unix_hook_failure()))
            };
            vec![check(name, true, Need::Wanted, detail), unix_check]
        }
        Err(e) => {
            let full = crate::cli::render_error(&anyhow::Error::from(e));
            vec![
                check(name, false, Need::Wanted, crate::monitor::before_verifier_log(&full).unwrap_or(&full).to_owned()),
                check(unix, false, Need::Wanted, "needs the eBPF monitor"),
            ]
        }
    };
    let _ = fs::remove_dir(&dir);
    out
}

/// Why the unix socket hooks are missing: the kernel's answer to loading
/// `connect_unix` from agent-guard's own object (not attached).
fn unix_hook_failure() -> String {
    let offsets = match crate::monitor::btf::field_offsets(Path::new("/sys/kernel/btf/vmlinux"), Path::new(crate::monitor::btf::CACHE_DIR)) {
        Ok(o) => o,
        Err(e) => return e.to_string(),
    };
    use agent_guard_common::session::OFF_SOCK_ADDR_UADDRLEN;
    if offsets[OFF_SOCK_ADDR_UADDRLEN] == crate::monitor::btf::ABSENT {
        return "kernel BTF has no bpf_sock_addr_kern.uaddrlen (the hooks came with Linux 6.7)".to_owned();
    }
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    let loaded = loader.override_global("KERNEL_OFFSETS", &offsets, true).load(EBPF_OBJECT);
    let mut ebpf = match loaded {
        Ok(e) => e,
        Err(e) => return format!("loading the object: {e}"),
    };
    let Some(prog) = ebpf.program_mut("connect_unix") else { return "program connect_unix missing from the object".to_owned() };
    let prog: Result<&mut CgroupSockAddr, _> = prog.try_into();
    match prog.map_err(|e| e.to_string()).and_then(|p| p.load().map_err(|e| crate::cli::render_error(&anyhow::Error::from(e)))) {
        Ok(()) => "connect_unix loads here; the instance was pinned without it (`agent-guard monitor unload` and retry)".to_owned(),
        Err(e) => crate::monitor::before_verifier_log(&e).unwrap_or(&e).to_owned(),
    }
}

/// Loads (and where harmless, attaches then detaches) one probe program.
fn probe_program(ebpf: &mut Ebpf, kind: ProbeKind, btf: Option<&Btf>, cgroup: Option<&Path>) -> Result<String, String> {
    let name = kind.program_name();
    let prog = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the object"))?;
    let e = |e: aya::programs::ProgramError| {
        use std::error::Error as _;
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        msg
    };
    let need_btf = || btf.ok_or_else(|| "needs kernel BTF".to_owned());
    let open_cgroup = || -> Result<fs::File, String> {
        let dir = cgroup.ok_or_else(|| "needs a cgroup v2 mount".to_owned())?;
        fs::File::open(dir).map_err(|err| format!("opening {}: {err}", dir.display()))
    };
    match kind {
        ProbeKind::TracePoint => {
            let p: &mut TracePoint = prog.try_into().map_err(e)?;
            p.load().map_err(e)?;
            let link = p.attach("syscalls", "sys_enter_getpid").map_err(e)?;
            p.detach(link).map_err(e)?;
            Ok("loaded and attached (syscalls/sys_enter_getpid)".into())
        }
        ProbeKind::RawTracePoint => {
            let p: &mut RawTracePoint = prog.try_into().map_err(e)?;
            p.load().map_err(e)?;
            let link = p.attach("sys_enter").map_err(e)?;
            p.detach(link).map_err(e)?;
            Ok("loaded and attached (sys_enter)".into())
        }
        ProbeKind::BtfTracePoint => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(e)?;
            p.load("sched_process_exec", need_btf()?).map_err(e)?;
            let link = p.attach().map_err(e)?;
            p.detach(link).map_err(e)?;
            Ok("loaded and attached (sched_process_exec)".into())
        }
        ProbeKind::CgroupSockAddr => {
            let p: &mut CgroupSockAddr = prog.try_into().map_err(e)?;
            p.load().map_err(e)?;
            let link = p.attach(open_cgroup()?, CgroupAttachMode::Single).map_err(e)?;
            p.detach(link).map_err(e)?;
            Ok("loaded and attached (connect4, to an empty cgroup)".into())
        }
        ProbeKind::CgroupSkb => {
            let p: &mut CgroupSkb = prog.try_into().map_err(e)?;
            p.load().map_err(e)?;
            let link = p.attach(open_cgroup()?, CgroupSkbAttachType::Egress, CgroupAttachMode::Single).map_err(e)?;
            p.detach(link).map_err(e)?;
            Ok("loaded and attached (egress, to an empty cgroup)".into())
        }
        ProbeKind::Lsm => {
            let p: &mut Lsm = prog.try_into().map_err(e)?;
            p.load("file_open", need_btf()?).map_err(e)?;
            Ok("loaded (file_open; not attached)".into())
        }
        ProbeKind::Fentry => {
            let p: &mut FEntry = prog.try_into().map_err(e)?;
            p.load("do_unlinkat", need_btf()?).map_err(e)?;
            Ok("loaded (do_unlinkat; not attached)".into())
        }
    }
}
