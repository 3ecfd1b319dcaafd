//! The monitor: agent-guard's eBPF object, loaded once per host and pinned
//! ([`shared`]); each session registers with it (its limits, network
//! rules and ring buffer, keyed by its cgroup id) and reads back exact
//! counters and events.
//!
//! Registered before the agent joins the cgroup, so nothing it does escapes.

pub mod btf;
pub mod events;
pub mod record;
pub mod rules;
pub mod shared;

use std::{
    fs,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::Path,
};

use agent_guard_common::session::{Counter, SessionState, COUNTERS, ON_LIMIT_FREEZE, ON_LIMIT_KILL};
use aya::maps::{MapData, RingBuf};

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
    #[error("pinning under {path}: {source}")]
    Pin { path: std::path::PathBuf, #[source] source: std::io::Error },
    #[error("eBPF link of {name}: {source}")]
    Link { name: &'static str, #[source] source: aya::programs::links::LinkError },
    #[error("the eBPF monitor loaded but failed its self-test: {0}")]
    SelfTest(String),
    #[error("all {0} ring buffer slots are in use: too many sessions at once")]
    NoRingSlot(u32),
    #[error("the session with cgroup id {0} is no longer in the kernel's session map")]
    SessionGone(u64),
}

/// The part of a rendered load error before the verifier's log, which can
/// run to pages; `None` when the verifier was not involved.
pub fn before_verifier_log(rendered: &str) -> Option<&str> {
    rendered.split_once(" Verifier output:").map(|(gist, _)| gist)
}

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> MonitorError {
    move |source| MonitorError::Map { name, source }
}

pub(crate) fn prog_err(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> MonitorError {
    move |source| MonitorError::Program { name, source }
}

/// A session's registration with the shared monitor: its entry in the
/// kernel's session map, its network rules, and its own ring buffer.
/// Dropping it forgets the session in the kernel.
pub struct Monitor {
    shared: shared::Shared,
    events: RingBuf<MapData>,
    pub cgroup_id: u64,
    /// How long registering took, loading included when this session loaded the instance.
    pub load_time: std::time::Duration,
    /// Whether this session loaded the shared instance (else it was pinned already).
    pub loaded_instance: bool,
    /// The events ring buffer's size in bytes.
    pub ring_bytes: u32,
    /// Whether ending the last session detaches the system-wide hooks
    /// (else the daemon does, after `[monitor] hooks_linger`).
    pub detach_when_idle: bool,
    /// Whether the unix socket hooks are attached (Linux 6.7+); without
    /// them `[network] unix` is not enforced: a gap for every session
    /// (see [`unix_gap`]).
    pub unix_hooks: bool,
}

/// The gap when the unix socket hooks are missing, `why`: every session
/// has it, since without a `[network] unix` list no socket file may be
/// connected to.
pub fn unix_gap(why: &str) -> crate::sandbox::Gap {
    crate::sandbox::Gap::new(
        "[network] unix: connecting only to the listed socket files (every session: without the list, to none)",
        format!("the cgroup connect_unix/sendmsg_unix hooks (Linux 6.7), {why}"),
    )
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // Under the pin lock: the last session out detaches the system-wide
        // hooks, and none may register between the check and the detach.
        let lock = shared::PinLock::take(&shared::pin_root());
        self.shared.forget(self.cgroup_id);
        if let (true, Ok(lock)) = (self.detach_when_idle, &lock) {
            self.shared.hooks_off_if_idle(lock);
        }
    }
}

impl Monitor {
    /// Registers the session whose cgroup v2 directory is `cgroup_dir`
    /// with the shared instance, loading and pinning that first if no
    /// process has yet. The parent of `cgroup_dir` holds every session:
    /// the cgroup hooks attach there.
    /// With `record_reads`, every file the session opens for reading is
    /// reported; with `unix_any` (observing), every socket file may be
    /// connected to (and each connect is reported).
    pub fn attach(policy: &Policy, cgroup_dir: &Path, record_reads: bool, unix_any: bool) -> Result<Monitor, MonitorError> {
        let started = std::time::Instant::now();
        let cgroup_id = fs::metadata(cgroup_dir)
            .map_err(|source| MonitorError::Cgroup { path: cgroup_dir.display().to_string(), source })?
            .ino();
        let subtree = cgroup_dir.parent().unwrap_or(cgroup_dir);
        let rules = rules::Rules::from_policy(policy)?;
        let ring_bytes = ring_bytes_override().unwrap_or(DEFAULT_RING_BYTES);
        let (mut shared, loaded, lock) = shared::Shared::ensure(subtree)?;
        shared.sweep(subtree);
        let on_limit = match policy.limits.on_limit {
            OnLimit::Kill => ON_LIMIT_KILL,
            OnLimit::Freeze => ON_LIMIT_FREEZE,
        };
        use agent_guard_common::session::{SESSION_RECORD_READS, SESSION_UNIX_ANY};
        let flags = if record_reads { SESSION_RECORD_READS } else { 0 } | if unix_any { SESSION_UNIX_ANY } else { 0 };
        let mut state = SessionState::new(limits_array(policy), on_limit, rules.bind, flags);
        // The session's first process was forked outside it: count it here.
        for c in [Counter::Processes, Counter::ProcessesAlive, Counter::ProcessesPeak] {
            state.counters[c as usize] = 1;
        }
        let events = match shared.hooks_on(&lock).and_then(|()| shared.register(cgroup_id, state, ring_bytes, &rules)) {
            Ok(ring) => ring,
            Err(e) => {
                shared.forget(cgroup_id);
                return Err(e);
            }
        };
        let unix_hooks = shared.unix_hooks;
        Ok(Monitor {
            unix_hooks,
            shared,
            events,
            cgroup_id,
            load_time: started.elapsed(),
            loaded_instance: matches!(loaded, shared::Loaded::Now(_)),
            ring_bytes,
            detach_when_idle: true,
        })
    }

    /// The counters as they stand now (exact: kept in the kernel).
    pub fn counters(&self) -> Result<[u64; COUNTERS], MonitorError> {
        self.shared.counters(self.cgroup_id).ok_or(MonitorError::SessionGone(self.cgroup_id))
    }

    /// The ring buffer's fd, to poll for readiness.
    pub fn events_fd(&self) -> std::os::fd::RawFd {
        self.events.as_raw_fd()
    }

    /// Takes every event waiting in the ring buffer. A reused ring buffer
    /// may still hold events of its previous session (one whose supervisor
    /// died): those are skipped.
    pub fn drain(&mut self) -> Vec<events::Event> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if events::cgroup_of(&item).is_some_and(|c| c != self.cgroup_id) {
                continue;
            }
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

#[cfg(test)]
mod tests {
    /// The vendored aya-obj patch (docs/development.md): the embedded
    /// object's unix socket hooks parse as cgroup sock_addr programs of the
    /// kernel's BPF_CGROUP_UNIX_CONNECT (49) and BPF_CGROUP_UNIX_SENDMSG (50).
    #[test]
    fn the_object_carries_the_unix_hooks_with_their_attach_types() {
        use aya_obj::{generated::bpf_attach_type, programs::CgroupSockAddrAttachType, ProgramSection};
        let obj = aya_obj::Object::parse(crate::doctor::EBPF_OBJECT).expect("the embedded object parses");
        for (name, expected, number) in [
            ("connect_unix", CgroupSockAddrAttachType::UnixConnect, 49),
            ("sendmsg_unix", CgroupSockAddrAttachType::UnixSendMsg, 50),
        ] {
            let prog = obj.programs.get(name).unwrap_or_else(|| panic!("{name} missing from the object"));
            match prog.section {
                ProgramSection::CgroupSockAddr { attach_type } => {
                    assert_eq!(bpf_attach_type::from(attach_type), bpf_attach_type::from(expected), "{name}");
                    assert_eq!(bpf_attach_type::from(attach_type) as u32, number, "{name}");
                }
                ref other => panic!("{name}: {other:?}"),
            }
        }
    }
}
