//! The monitor: loads one instance of agent-guard's eBPF object for a
//! session, fills its maps from the policy, attaches its programs to the
//! session cgroup, and reads back exact counters and events.
//!
//! Attached before the agent joins the cgroup, so nothing it does escapes.

pub mod btf;
pub mod events;
pub mod record;
pub mod rules;

use std::{
    fs,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::Path,
};

use agent_guard_common::session::{Counter, PortRanges, COUNTERS, ON_LIMIT_FREEZE, ON_LIMIT_KILL};
use aya::{
    maps::{lpm_trie::Key, Array, LpmTrie, MapData, RingBuf},
    programs::{links::CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, TracePoint},
    Ebpf, EbpfLoader,
};

use crate::profile::{OnLimit, Policy};

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program { name: &'static str, #[source] source: aya::programs::ProgramError },
    #[error("eBPF map {name}: {source}")]
    Map { name: &'static str, #[source] source: aya::maps::MapError },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("{path}: {source}")]
    Cgroup { path: String, #[source] source: std::io::Error },
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
}

/// The part of a rendered load error before the verifier's log, which can
/// run to pages; `None` when the verifier was not involved.
pub fn before_verifier_log(rendered: &str) -> Option<&str> {
    rendered.split_once(" Verifier output:").map(|(gist, _)| gist)
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> MonitorError {
    move |source| MonitorError::Map { name, source }
}

fn prog_err(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> MonitorError {
    move |source| MonitorError::Program { name, source }
}

/// A session's loaded and attached monitor.
pub struct Monitor {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    pub cgroup_id: u64,
    /// Where the counters map is pinned for `ps`, if it is.
    pub counters_pin: Option<std::path::PathBuf>,
    /// How long loading and attaching took.
    pub load_time: std::time::Duration,
    /// The events ring buffer's size in bytes.
    pub ring_bytes: u32,
}

/// bpffs, where maps are pinned.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Pins the counters map under bpffs (mounting it if needed); a failure
/// only costs `ps` its live counters, so it is logged, not fatal.
fn pin_counters(ebpf: &Ebpf, requested: &Path) -> Option<std::path::PathBuf> {
    let bpffs = Path::new(BPFFS);
    let mounted = fs::read_to_string("/proc/self/mountinfo").is_ok_and(|t| t.lines().any(|l| l.contains(" /sys/fs/bpf ") && l.contains(" - bpf ")));
    if !mounted {
        if let Err(e) = nix::mount::mount(Some("bpf"), bpffs, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>) {
            tracing::debug!("mounting bpffs at {BPFFS}: {e}");
            return None;
        }
    }
    let name = requested.file_name()?;
    let dir = bpffs.join("agent-guard");
    let _ = fs::create_dir_all(&dir);
    let path = dir.join(name);
    match ebpf.map("COUNTERS_MAP").map(|m| m.pin(&path)) {
        Some(Ok(())) => Some(path),
        other => {
            tracing::debug!("pinning the counters map at {}: {other:?}", path.display());
            None
        }
    }
}

/// Reads a session's counters from where its supervisor pinned them.
pub fn pinned_counters(path: &Path) -> Option<[u64; COUNTERS]> {
    let data = MapData::from_pin(path).ok()?;
    let map: Array<_, u64> = Array::try_from(aya::maps::Map::Array(data)).ok()?;
    let mut out = [0; COUNTERS];
    for c in Counter::ALL {
        out[c as usize] = map.get(&(c as u32), 0).ok()?;
    }
    Some(out)
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(p) = &self.counters_pin {
            let _ = fs::remove_file(p);
        }
    }
}

/// System-wide tracepoints: (program, category, tracepoint).
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("tp_enter_clone", "syscalls", "sys_enter_clone"),
    ("tp_enter_clone3", "syscalls", "sys_enter_clone3"),
    ("tp_exit_clone", "syscalls", "sys_exit_clone"),
    ("tp_exit_clone", "syscalls", "sys_exit_clone3"),
    ("tp_exit_fork", "syscalls", "sys_exit_fork"),
    ("tp_exit_fork", "syscalls", "sys_exit_vfork"),
    ("tp_process_exit", "sched", "sched_process_exit"),
    ("tp_process_exec", "sched", "sched_process_exec"),
    ("tp_enter_execve", "syscalls", "sys_enter_execve"),
    ("tp_enter_execveat", "syscalls", "sys_enter_execveat"),
    ("tp_enter_openat", "syscalls", "sys_enter_openat"),
    ("tp_enter_open", "syscalls", "sys_enter_open"),
    ("tp_enter_creat", "syscalls", "sys_enter_creat"),
    ("tp_enter_openat2", "syscalls", "sys_enter_openat2"),
    ("tp_exit_open", "syscalls", "sys_exit_openat"),
    ("tp_exit_open", "syscalls", "sys_exit_open"),
    ("tp_exit_open", "syscalls", "sys_exit_creat"),
    ("tp_exit_open", "syscalls", "sys_exit_openat2"),
    ("tp_exit_destructive", "syscalls", "sys_exit_unlink"),
    ("tp_exit_destructive", "syscalls", "sys_exit_unlinkat"),
    ("tp_exit_destructive", "syscalls", "sys_exit_rename"),
    ("tp_exit_destructive", "syscalls", "sys_exit_renameat"),
    ("tp_exit_destructive", "syscalls", "sys_exit_renameat2"),
    ("tp_exit_destructive", "syscalls", "sys_exit_truncate"),
    ("tp_exit_destructive", "syscalls", "sys_exit_ftruncate"),
    ("tp_enter_connect", "syscalls", "sys_enter_connect"),
    ("tp_exit_connect", "syscalls", "sys_exit_connect"),
    ("tp_enter_write", "syscalls", "sys_enter_write"),
    ("tp_enter_write", "syscalls", "sys_enter_writev"),
    ("tp_enter_write", "syscalls", "sys_enter_pwrite64"),
    ("tp_enter_write", "syscalls", "sys_enter_pwritev"),
    ("tp_enter_write", "syscalls", "sys_enter_pwritev2"),
];

/// Programs attached to the session cgroup.
const SOCK_ADDR_PROGRAMS: [&str; 6] = ["connect4", "connect6", "sendmsg4", "sendmsg6", "bind4", "bind6"];

impl Monitor {
    /// Loads the object for the session whose cgroup v2 directory is
    /// `cgroup_dir`, and attaches it there.
    /// With `pin`, the counters map is pinned there (on bpffs, mounted if
    /// needed) so that `agent-guard ps` can read it; unpinned on drop.
    pub fn attach(policy: &Policy, cgroup_dir: &Path, pin: Option<&Path>) -> Result<Monitor, MonitorError> {
        let started = std::time::Instant::now();
        let cgroup_id = fs::metadata(cgroup_dir)
            .map_err(|source| MonitorError::Cgroup { path: cgroup_dir.display().to_string(), source })?
            .ino();
        let limits = limits_array(policy);
        let offsets = btf::field_offsets(Path::new("/sys/kernel/btf/vmlinux"), Path::new(btf::CACHE_DIR))?;
        let on_limit = match policy.limits.on_limit {
            OnLimit::Kill => ON_LIMIT_KILL,
            OnLimit::Freeze => ON_LIMIT_FREEZE,
        };
        // No program here needs kernel BTF (no tp_btf, no CO-RE).
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        if let Some(bytes) = ring_bytes_override() {
            loader.map_max_entries("EVENTS", bytes);
        }
        let mut ebpf = loader
            .override_global("SESSION_CGROUP", &cgroup_id, true)
            .override_global("LIMITS", &limits, true)
            .override_global("ON_LIMIT", &on_limit, true)
            .override_global("KERNEL_OFFSETS", &offsets, true)
            .load(crate::doctor::EBPF_OBJECT)?;

        let rules = rules::Rules::from_policy(policy)?;
        {
            let mut v4: LpmTrie<_, [u8; 4], PortRanges> =
                LpmTrie::try_from(ebpf.map_mut("NET_V4").ok_or(MonitorError::MissingMap("NET_V4"))?).map_err(map_err("NET_V4"))?;
            for (prefix, addr, ranges) in &rules.v4 {
                v4.insert(&Key::new(*prefix, *addr), ranges, 0).map_err(map_err("NET_V4"))?;
            }
        }
        {
            let mut v6: LpmTrie<_, [u8; 16], PortRanges> =
                LpmTrie::try_from(ebpf.map_mut("NET_V6").ok_or(MonitorError::MissingMap("NET_V6"))?).map_err(map_err("NET_V6"))?;
            for (prefix, addr, ranges) in &rules.v6 {
                v6.insert(&Key::new(*prefix, *addr), ranges, 0).map_err(map_err("NET_V6"))?;
            }
        }
        {
            let mut bind: Array<_, PortRanges> =
                Array::try_from(ebpf.map_mut("BIND_PORTS").ok_or(MonitorError::MissingMap("BIND_PORTS"))?).map_err(map_err("BIND_PORTS"))?;
            bind.set(0, rules.bind, 0).map_err(map_err("BIND_PORTS"))?;
        }

        let cgroup = fs::File::open(cgroup_dir).map_err(|source| MonitorError::Cgroup { path: cgroup_dir.display().to_string(), source })?;
        for name in SOCK_ADDR_PROGRAMS {
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(MonitorError::Program { name, source: aya::programs::ProgramError::NotLoaded })?
                .try_into()
                .map_err(prog_err(name))?;
            prog.load().map_err(prog_err(name))?;
            prog.attach(&cgroup, CgroupAttachMode::Single).map_err(prog_err(name))?;
        }
        let egress: &mut CgroupSkb = ebpf
            .program_mut("egress")
            .ok_or(MonitorError::Program { name: "egress", source: aya::programs::ProgramError::NotLoaded })?
            .try_into()
            .map_err(prog_err("egress"))?;
        egress.load().map_err(prog_err("egress"))?;
        egress.attach(&cgroup, CgroupSkbAttachType::Egress, CgroupAttachMode::Single).map_err(prog_err("egress"))?;

        crate::doctor::ensure_tracefs(Path::new(crate::doctor::TRACEFS)).map_err(|e| MonitorError::Cgroup {
            path: crate::doctor::TRACEFS.to_owned(),
            source: std::io::Error::from(e),
        })?;
        for &(name, category, tracepoint) in TRACEPOINTS {
            let prog: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or(MonitorError::Program { name, source: aya::programs::ProgramError::NotLoaded })?
                .try_into()
                .map_err(prog_err(name))?;
            // A program serving several tracepoints is loaded once.
            if prog.fd().is_err() {
                prog.load().map_err(prog_err(name))?;
            }
            // The link lives as long as the program (detaching each waits for an RCU
            // grace period; the session's guardian holds copies of the fds and pays
            // that after the supervisor has exited).
            prog.attach(category, tracepoint).map_err(prog_err(name))?;
        }

        // The session's first process was forked outside it: count it here.
        {
            let mut counters: Array<_, u64> = Array::try_from(
                ebpf.map_mut("COUNTERS_MAP").ok_or(MonitorError::MissingMap("COUNTERS_MAP"))?,
            )
            .map_err(map_err("COUNTERS_MAP"))?;
            for c in [Counter::Processes, Counter::ProcessesAlive, Counter::ProcessesPeak] {
                counters.set(c as u32, 1, 0).map_err(map_err("COUNTERS_MAP"))?;
            }
        }

        let events = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or(MonitorError::MissingMap("EVENTS"))?).map_err(map_err("EVENTS"))?;
        let counters_pin = match pin {
            Some(requested) => pin_counters(&ebpf, requested),
            None => None,
        };
        Ok(Monitor {
            ebpf,
            events,
            cgroup_id,
            counters_pin,
            load_time: started.elapsed(),
            ring_bytes: ring_bytes_override().unwrap_or(DEFAULT_RING_BYTES),
        })
    }

    /// The counters as they stand now (exact: kept in the kernel).
    pub fn counters(&self) -> Result<[u64; COUNTERS], MonitorError> {
        let map: Array<_, u64> =
            Array::try_from(self.ebpf.map("COUNTERS_MAP").ok_or(MonitorError::MissingMap("COUNTERS_MAP"))?).map_err(map_err("COUNTERS_MAP"))?;
        let mut out = [0; COUNTERS];
        for c in Counter::ALL {
            out[c as usize] = map.get(&(c as u32), 0).map_err(map_err("COUNTERS_MAP"))?;
        }
        Ok(out)
    }

    /// The ring buffer's fd, to poll for readiness.
    pub fn events_fd(&self) -> std::os::fd::RawFd {
        self.events.as_raw_fd()
    }

    /// Takes every event waiting in the ring buffer.
    pub fn drain(&mut self) -> Vec<events::Event> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            out.push(events::decode(&item));
        }
        out
    }
}

/// The events ring buffer's size unless `$AGENT_GUARD_RING_BYTES` says otherwise
/// (as the eBPF object declares it).
pub const DEFAULT_RING_BYTES: u32 = 1 << 22;

/// `$AGENT_GUARD_RING_BYTES`: the events ring buffer's size (a power of
/// two, at least a page; default 4 MiB). A knob for tuning, and for the
/// tests that overflow it on purpose.
fn ring_bytes_override() -> Option<u32> {
    let v: u32 = std::env::var("AGENT_GUARD_RING_BYTES").ok()?.parse().ok()?;
    (v.is_power_of_two() && v >= 4096).then_some(v)
}

/// `LIMITS` for the kernel side: `u64::MAX` means no limit.
pub fn limits_array(policy: &Policy) -> [u64; COUNTERS] {
    let l = &policy.limits;
    let mut limits = [u64::MAX; COUNTERS];
    let none = u64::MAX;
    limits[Counter::Execs as usize] = l.execs.unwrap_or(none);
    limits[Counter::FileWrites as usize] = l.file_writes.unwrap_or(none);
    limits[Counter::Connects as usize] = l.connects.unwrap_or(none);
    limits[Counter::BytesOut as usize] = l.bytes_out.map_or(none, |b| b.0);
    limits
}
