//! Trivial programs, one per program type, that `agent-guard doctor` loads
//! (and attaches where it is harmless) to learn what this kernel accepts.
//! Their names are `agent_guard_common::probe::ProbeKind::program_name`.
//! None of them changes behaviour: each returns the "carry on" value of
//! its program type.

use aya_ebpf::{
    macros::{btf_tracepoint, cgroup_skb, cgroup_sock_addr, fentry, lsm, raw_tracepoint, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, LsmContext, RawTracePointContext, SkBuffContext,
        SockAddrContext, TracePointContext,
    },
};

#[tracepoint]
pub fn probe_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn probe_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// Allows every connect: 1 means "allow" for cgroup_sock_addr.
#[cgroup_sock_addr(connect4)]
pub fn probe_connect4(_ctx: SockAddrContext) -> i32 {
    1
}

/// Passes every packet: 1 means "pass" for cgroup_skb.
#[cgroup_skb]
pub fn probe_skb(_ctx: SkBuffContext) -> i32 {
    1
}

/// Allows every open: 0 means "no objection" for an LSM hook.
#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    0
}

#[fentry(function = "do_unlinkat")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}
