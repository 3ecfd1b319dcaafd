//! The maps of agent-guard's one shared eBPF instance, and the helpers
//! every hook uses: finding the current task's session, exact counting
//! with limit checks, and event emission that counts what the session's
//! ring buffer had no room for.
//!
//! Sessions are keyed by their cgroup v2 id (`bpf_get_current_cgroup_id`):
//! a task outside every session costs one hash lookup and nothing else.

use core::{
    ffi::c_void,
    intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering::SeqCst},
};

use agent_guard_common::{
    event::{EventHeader, LimitEvent},
    session::{Counter, PortRanges, SessionState, MAX_SESSIONS, ON_LIMIT_KILL, NET_V4_KEY, NET_V6_KEY},
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_send_signal,
        gen::{bpf_map_lookup_elem, bpf_ringbuf_output, bpf_ringbuf_reserve, bpf_ringbuf_submit},
    },
    macros::map,
    maps::{lpm_trie::LpmTrie, HashMap},
};

/// `bpf_ringbuf_submit`/`output` flags.
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Kernel struct field offsets (`OFF_*`); set by user space before load.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: [u64; agent_guard_common::session::KERNEL_OFFSETS] = [0; agent_guard_common::session::KERNEL_OFFSETS];

#[inline(always)]
pub fn offset(which: usize) -> usize {
    let which = which % agent_guard_common::session::KERNEL_OFFSETS;
    // SAFETY: reading one element of a global the loader may have
    // rewritten; volatile so the compiler does not fold the initial value
    // (and only that element: a volatile read of the whole array is one
    // load per element, on the hottest path).
    unsafe { core::ptr::read_volatile((&raw const KERNEL_OFFSETS as *const u64).wrapping_add(which)) as usize }
}

/// Every running session, by cgroup id.
#[map]
static SESSIONS: HashMap<u64, SessionState> = HashMap::with_max_entries(MAX_SESSIONS, 0);

/// Allowed destinations: (cgroup id, address prefix) -> port ranges; see
/// `agent_guard_common::session::net_key`.
#[map]
pub static NET_V4: LpmTrie<[u8; NET_V4_KEY], PortRanges> = LpmTrie::with_max_entries(65536, 1);
#[map]
pub static NET_V6: LpmTrie<[u8; NET_V6_KEY], PortRanges> = LpmTrie::with_max_entries(65536, 1);

// The sessions' ring buffers, by slot (`SessionState::ring`): an array of
// maps, declared the BTF way (the `.maps` section) because the legacy map
// definitions of aya-ebpf 0.1 cannot name an inner map. The loader reads
// the shape from the BTF of these types: each field's array length is
// the value. User space fills slots on demand and reuses them.
const BPF_MAP_TYPE_ARRAY_OF_MAPS: usize = 12;
const BPF_MAP_TYPE_RINGBUF: usize = 27;

/// The inner map template: a ring buffer (its size is each slot's own;
/// the kernel does not compare ring buffer sizes).
#[repr(C)]
pub struct RingTemplate {
    r#type: *const [i32; BPF_MAP_TYPE_RINGBUF],
    max_entries: *const [i32; 1 << 22],
}

#[repr(C)]
pub struct Rings {
    r#type: *const [i32; BPF_MAP_TYPE_ARRAY_OF_MAPS],
    key: *const u32,
    value: *const u32,
    max_entries: *const [i32; MAX_SESSIONS as usize],
    values: [*const RingTemplate; 0],
}

// SAFETY: never dereferenced; the loader replaces the definition with a map.
unsafe impl Sync for Rings {}

#[unsafe(link_section = ".maps")]
#[unsafe(no_mangle)]
static RINGS: Rings = Rings {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    values: [],
};

/// The current task's session, when it is in one.
#[derive(Clone, Copy)]
pub struct Session {
    pub cgroup: u64,
    state: *mut SessionState,
}

impl Session {
    /// The session of the current task.
    #[inline(always)]
    pub fn current() -> Option<Session> {
        // SAFETY: bpf_get_current_cgroup_id has no preconditions.
        Session::of(unsafe { bpf_get_current_cgroup_id() })
    }

    /// The session whose cgroup id is `cgroup`.
    #[inline(always)]
    pub fn of(cgroup: u64) -> Option<Session> {
        let state = SESSIONS.get_ptr_mut(&cgroup)?;
        Some(Session { cgroup, state })
    }

    /// Whether a limit has ended the session.
    #[inline(always)]
    pub fn ended(&self) -> bool {
        // SAFETY: the pointer is to the session's map value, valid during this program.
        unsafe { core::ptr::read_volatile(&(*self.state).ended) != 0 }
    }

    /// Whether the session reports files opened for reading.
    #[inline(always)]
    pub fn records_reads(&self) -> bool {
        // SAFETY: as in `ended`.
        unsafe { core::ptr::read_volatile(&(*self.state).flags) & agent_guard_common::session::SESSION_RECORD_READS != 0 }
    }

    /// Whether the session may connect to any pathname unix socket (observe mode).
    #[inline(always)]
    pub fn unix_any(&self) -> bool {
        // SAFETY: as in `ended`.
        unsafe { core::ptr::read_volatile(&(*self.state).flags) & agent_guard_common::session::SESSION_UNIX_ANY != 0 }
    }

    /// The ports the session may bind.
    #[inline(always)]
    pub fn bind_allows(&self, port: u16) -> bool {
        // SAFETY: as in `ended`.
        unsafe { (*self.state).bind.allows(port, agent_guard_common::session::PROTO_ANY) }
    }

    #[inline(always)]
    fn counter_ptr(&self, counter: Counter) -> *mut u64 {
        // SAFETY: an in-bounds field of the map value (`Counter` < COUNTERS).
        unsafe { core::ptr::addr_of_mut!((*self.state).counters[counter as usize % agent_guard_common::session::COUNTERS]) }
    }

    /// Adds `n` to `counter`; returns the new value.
    ///
    /// SeqCst, not Relaxed: LLVM 22's BPF backend lowers a relaxed
    /// fetch-and-add to the non-fetching `lock +=` even when the old value
    /// is used, silently reading garbage. SeqCst gives `atomic_fetch_add`.
    #[inline(always)]
    pub fn add(&self, counter: Counter, n: u64) -> u64 {
        // SAFETY: an 8-byte aligned u64 inside the map value.
        (unsafe { atomic_xadd::<u64, u64, { SeqCst }>(self.counter_ptr(counter), n) }) + n
    }

    /// Raises `counter`'s stored value to at least `value`.
    #[inline(always)]
    pub fn raise_to(&self, counter: Counter, value: u64) {
        let p = self.counter_ptr(counter);
        // SAFETY: as in `add`. (A volatile read: the BPF backend cannot select an atomic load.)
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

    #[inline(always)]
    fn next_seq(&self) -> u64 {
        // SAFETY: as in `add`.
        (unsafe { atomic_xadd::<u64, u64, { SeqCst }>(core::ptr::addr_of_mut!((*self.state).seq), 1) }) + 1
    }

    #[inline(always)]
    pub fn header(&self, kind: u32) -> EventHeader {
        EventHeader {
            kind,
            pid: (bpf_get_current_pid_tgid() >> 32) as u32,
            cgroup: self.cgroup,
            seq: self.next_seq(),
            // SAFETY: bpf_ktime_get_ns has no preconditions.
            ktime_ns: unsafe { bpf_ktime_get_ns() },
        }
    }

    /// The session's ring buffer, or null when it has none.
    #[inline(always)]
    fn ring(&self) -> *mut c_void {
        // SAFETY: reading the slot from the map value, then a lookup in our own map with a key on the stack.
        unsafe {
            let slot: u32 = core::ptr::read_volatile(&(*self.state).ring);
            bpf_map_lookup_elem(core::ptr::addr_of!(RINGS) as *mut c_void, core::ptr::addr_of!(slot) as *const c_void)
        }
    }

    /// Sends `event` to user space without waking it (it collects events
    /// every few milliseconds), or counts it lost when the buffer is full
    /// (or the session has no buffer).
    #[inline(always)]
    pub fn emit<T: 'static>(&self, event: T) {
        self.emit_with(event, BPF_RB_NO_WAKEUP)
    }

    #[inline(always)]
    fn emit_with<T: 'static>(&self, event: T, flags: u64) {
        let ring = self.ring();
        if !ring.is_null() {
            // SAFETY: reserving in a ring buffer map; the size is a constant.
            let slot = unsafe { bpf_ringbuf_reserve(ring, core::mem::size_of::<T>() as u64, 0) } as *mut T;
            if !slot.is_null() {
                // SAFETY: the reservation is at least size_of::<T>() bytes, 8-byte aligned, ours until submitted.
                unsafe {
                    slot.write(event);
                    bpf_ringbuf_submit(slot as *mut c_void, flags);
                }
                return;
            }
        }
        self.add(Counter::EventsLost, 1);
    }

    /// Like [`Session::emit`] for an event that lives in map memory (too
    /// large for the stack): the ring buffer copies it.
    #[inline(always)]
    pub fn emit_ref<T: 'static>(&self, event: &T) {
        let ring = self.ring();
        // SAFETY: copying size_of::<T>() bytes of a valid reference into the ring buffer.
        if ring.is_null() || unsafe { bpf_ringbuf_output(ring, event as *const T as *mut c_void, core::mem::size_of::<T>() as u64, BPF_RB_NO_WAKEUP) } != 0 {
            self.add(Counter::EventsLost, 1);
        }
    }

    /// Whether `value` of `counter`, just raised by `step`, passes its
    /// limit. The one update that crosses the limit sends a limit event;
    /// with `signal`, the offending task is killed on the spot when the
    /// action is "kill" (user space then kills the rest of the session).
    #[inline(always)]
    pub fn over_limit(&self, counter: Counter, value: u64, step: u64, signal: bool) -> bool {
        // SAFETY: reads of the map value, as in `ended`.
        let (limit, action) = unsafe {
            (
                core::ptr::read_volatile(&(*self.state).limits[counter as usize % agent_guard_common::session::COUNTERS]),
                core::ptr::read_volatile(&(*self.state).on_limit),
            )
        };
        if value <= limit {
            return false;
        }
        if value - step <= limit {
            // User space must act now: wake it.
            self.emit_with(LimitEvent {
                header: self.header(agent_guard_common::event::EventKind::Limit as u32),
                counter: counter as u32,
                action,
                value,
                limit,
            }, BPF_RB_FORCE_WAKEUP);
        }
        if action == ON_LIMIT_KILL {
            // SAFETY: a 4-byte aligned u32 in the map value; a plain store suffices.
            unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*self.state).ended), 1) };
            if signal {
                // SAFETY: SIGKILL to the current task, delivered on return to user space.
                unsafe { bpf_send_signal(9) };
            }
        }
        true
    }
}
