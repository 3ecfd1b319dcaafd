//! Maps and globals of one session's eBPF object, and the helpers every
//! hook uses: exact counting with limit checks, and event emission that
//! counts what the ring buffer had no room for.

use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering::SeqCst};

use agent_guard_common::{
    event::{EventHeader, LimitEvent},
    session::{Counter, PortRanges, COUNTERS, ON_LIMIT_KILL},
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_send_signal},
    macros::map,
    maps::{lpm_trie::LpmTrie, Array, RingBuf},
};

/// The session's cgroup v2 id; set by user space before load.
#[unsafe(no_mangle)]
static SESSION_CGROUP: u64 = 0;

/// Limits per counter (`u64::MAX`: none); set by user space before load.
#[unsafe(no_mangle)]
static LIMITS: [u64; COUNTERS] = [u64::MAX; COUNTERS];

/// Kernel struct field offsets (`OFF_*`); set by user space before load.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: [u64; agent_guard_common::session::KERNEL_OFFSETS] = [0; agent_guard_common::session::KERNEL_OFFSETS];

#[inline(always)]
pub fn offset(which: usize) -> usize {
    let all = global(&KERNEL_OFFSETS);
    all[which % agent_guard_common::session::KERNEL_OFFSETS] as usize
}

/// `ON_LIMIT_KILL` or `ON_LIMIT_FREEZE`; set by user space before load.
#[unsafe(no_mangle)]
static ON_LIMIT: u32 = 0;

/// Exact counters, shared by all CPUs, updated with atomic adds.
#[map]
pub static COUNTERS_MAP: Array<u64> = Array::with_max_entries(COUNTERS as u32, 0);

/// Per-session event sequence (index 0).
#[map]
static SEQ: Array<u64> = Array::with_max_entries(1, 0);

/// Allowed destinations: address prefix -> port ranges (network order keys).
#[map]
pub static NET_V4: LpmTrie<[u8; 4], PortRanges> = LpmTrie::with_max_entries(1024, 1);
#[map]
pub static NET_V6: LpmTrie<[u8; 16], PortRanges> = LpmTrie::with_max_entries(1024, 1);

/// Ports the session may bind (index 0).
#[map]
pub static BIND_PORTS: Array<PortRanges> = Array::with_max_entries(1, 0);

/// Set (index 0 = 1) once a limit with `on_limit = "kill"` has passed:
/// every task of the session is killed at its next hooked call, without
/// waiting for user space.
#[map]
static ENDED: Array<u32> = Array::with_max_entries(1, 0);

/// Whether the session has been ended by a limit.
#[inline(always)]
pub fn ended() -> bool {
    ENDED.get(0).is_some_and(|v| *v != 0)
}

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[inline(always)]
fn global<T: Copy>(v: &T) -> T {
    // SAFETY: reading a global the loader may have rewritten; volatile so the
    // compiler does not fold the initial value.
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
pub fn session_cgroup() -> u64 {
    global(&SESSION_CGROUP)
}

/// Adds `n` to `counter`; returns the new value.
///
/// SeqCst, not Relaxed: LLVM 22's BPF backend lowers a relaxed
/// fetch-and-add to the non-fetching `lock +=` even when the old value is
/// used, silently reading garbage. SeqCst gives `atomic_fetch_add`.
#[inline(always)]
pub fn add(counter: Counter, n: u64) -> u64 {
    match COUNTERS_MAP.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer is to an 8-byte aligned u64 inside the map value area.
        Some(p) => (unsafe { atomic_xadd::<u64, u64, { SeqCst }>(p, n) }) + n,
        None => 0,
    }
}

/// Raises `counter`'s stored value to at least `value`.
#[inline(always)]
pub fn raise_to(counter: Counter, value: u64) {
    if let Some(p) = COUNTERS_MAP.get_ptr_mut(counter as u32) {
        // SAFETY: as in `add`.
        // (A volatile read: the BPF backend cannot select an atomic load.)
        let mut cur = unsafe { core::ptr::read_volatile(p) };
        let mut tries = 0;
        while cur < value && tries < 8 {
            // SAFETY: as in `add`.
            let (now, swapped) = unsafe { atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(p, cur, value) };
            if swapped {
                return;
            }
            cur = now;
            tries += 1;
        }
    }
}

fn next_seq() -> u64 {
    match SEQ.get_ptr_mut(0) {
        // SAFETY: as in `add`.
        Some(p) => (unsafe { atomic_xadd::<u64, u64, { SeqCst }>(p, 1) }) + 1,
        None => 0,
    }
}

#[inline(always)]
pub fn header(kind: u32) -> EventHeader {
    EventHeader {
        kind,
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        cgroup: session_cgroup(),
        seq: next_seq(),
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    }
}

/// Sends `event` to user space, or counts it lost when the buffer is full.
#[inline(always)]
pub fn emit<T: 'static>(event: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(0);
        }
        None => {
            add(Counter::EventsLost, 1);
        }
    }
}

/// Like [`emit`] for an event that lives in map memory (too large for the
/// stack): the ring buffer copies it.
#[inline(always)]
pub fn emit_ref<T: 'static>(event: &T) {
    if EVENTS.output(event, 0).is_err() {
        add(Counter::EventsLost, 1);
    }
}

/// Whether `value` of `counter`, just raised by `step`, passes its limit.
/// The one update that crosses the limit sends a limit event; with
/// `signal`, the offending task is killed on the spot when the action is
/// "kill" (user space then kills the rest of the session).
#[inline(always)]
pub fn over_limit(counter: Counter, value: u64, step: u64, signal: bool) -> bool {
    let limits = global(&LIMITS);
    let limit = limits[counter as usize];
    if value <= limit {
        return false;
    }
    let action = global(&ON_LIMIT);
    if value - step <= limit {
        emit(LimitEvent {
            header: header(agent_guard_common::event::EventKind::Limit as u32),
            counter: counter as u32,
            action,
            value,
            limit,
        });
    }
    if action == ON_LIMIT_KILL {
        if let Some(p) = ENDED.get_ptr_mut(0) {
            // SAFETY: a 4-byte aligned u32 in the map's value area; a plain store suffices.
            unsafe { core::ptr::write_volatile(p, 1) };
        }
        if signal {
            // SAFETY: SIGKILL to the current task, delivered on return to user space.
            unsafe { bpf_send_signal(9) };
        }
    }
    true
}
