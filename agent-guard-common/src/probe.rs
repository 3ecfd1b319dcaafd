//! Feature-probe programs: one trivial program per eBPF program type that
//! `agent-guard doctor` loads to learn, for real, what this kernel accepts.
//!
//! The kernel side defines one program per [`ProbeKind`] under the name
//! [`ProbeKind::program_name`]; the user side loads them by that name.

/// An eBPF program type the doctor probes by loading a trivial program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ProbeKind {
    /// `tracepoint` (`syscalls/sys_enter_getpid`).
    TracePoint = 0,
    /// `raw_tracepoint` (`sys_enter`).
    RawTracePoint = 1,
    /// `tp_btf`, a BTF-enabled raw tracepoint (`sched_process_exec`).
    BtfTracePoint = 2,
    /// `cgroup_sock_addr` at `connect4`.
    CgroupSockAddr = 3,
    /// `cgroup_skb` at egress.
    CgroupSkb = 4,
    /// BPF LSM (`file_open`).
    Lsm = 5,
    /// `fentry` (on `do_unlinkat`).
    Fentry = 6,
}

impl ProbeKind {
    /// Every probe, in the order the doctor prints them.
    pub const ALL: [ProbeKind; 7] = [
        ProbeKind::TracePoint,
        ProbeKind::RawTracePoint,
        ProbeKind::BtfTracePoint,
        ProbeKind::CgroupSockAddr,
        ProbeKind::CgroupSkb,
        ProbeKind::Lsm,
        ProbeKind::Fentry,
    ];

    /// Name of the program in the eBPF object.
    pub const fn program_name(self) -> &'static str {
        match self {
            ProbeKind::TracePoint => "probe_tracepoint",
            ProbeKind::RawTracePoint => "probe_raw_tracepoint",
            ProbeKind::BtfTracePoint => "probe_tp_btf",
            ProbeKind::CgroupSockAddr => "probe_connect4",
            ProbeKind::CgroupSkb => "probe_skb",
            ProbeKind::Lsm => "probe_lsm",
            ProbeKind::Fentry => "probe_fentry",
        }
    }

    /// Name of the program type as the kernel documentation spells it.
    pub const fn type_name(self) -> &'static str {
        match self {
            ProbeKind::TracePoint => "tracepoint",
            ProbeKind::RawTracePoint => "raw_tracepoint",
            ProbeKind::BtfTracePoint => "tp_btf",
            ProbeKind::CgroupSockAddr => "cgroup_sock_addr",
            ProbeKind::CgroupSkb => "cgroup_skb",
            ProbeKind::Lsm => "lsm",
            ProbeKind::Fentry => "fentry",
        }
    }

    /// Checked conversion from the numeric tag.
    pub const fn from_u32(tag: u32) -> Option<ProbeKind> {
        match tag {
            0 => Some(ProbeKind::TracePoint),
            1 => Some(ProbeKind::RawTracePoint),
            2 => Some(ProbeKind::BtfTracePoint),
            3 => Some(ProbeKind::CgroupSockAddr),
            4 => Some(ProbeKind::CgroupSkb),
            5 => Some(ProbeKind::Lsm),
            6 => Some(ProbeKind::Fentry),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProbeKind;

    #[test]
    fn tags_round_trip() {
        for kind in ProbeKind::ALL {
            assert_eq!(ProbeKind::from_u32(kind as u32), Some(kind));
        }
        assert_eq!(ProbeKind::from_u32(ProbeKind::ALL.len() as u32), None);
    }
}
