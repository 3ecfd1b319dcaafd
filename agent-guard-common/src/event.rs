//! Events the kernel side sends to user space through the `EVENTS` ring
//! buffer. Each starts with an [`EventHeader`]; `kind` says which struct
//! follows. Counters never depend on events: a full ring buffer loses
//! events (counted in `Counter::EventsLost`), never counts.

/// Which event a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EventKind {
    Exec = 1,
    Exit = 2,
    Connect = 3,
    FileOpenWrite = 4,
    Limit = 5,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<EventKind> {
        match v {
            1 => Some(EventKind::Exec),
            2 => Some(EventKind::Exit),
            3 => Some(EventKind::Connect),
            4 => Some(EventKind::FileOpenWrite),
            5 => Some(EventKind::Limit),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct EventHeader {
    pub kind: u32,
    /// Thread-group id of the task that acted.
    pub pid: u32,
    /// The session's cgroup id.
    pub cgroup: u64,
    /// Per-session sequence number, from 1.
    pub seq: u64,
    /// `bpf_ktime_get_ns()`: monotonic, boot-based.
    pub ktime_ns: u64,
}

/// A connect or unconnected send, allowed or denied.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct ConnectEvent {
    pub header: EventHeader,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// IPPROTO_TCP (6), IPPROTO_UDP (17), or 0 when unknown.
    pub protocol: u16,
    /// Destination port, host order.
    pub port: u16,
    /// 1 allowed, 0 denied.
    pub allowed: u8,
    /// 1 for `sendmsg` (unconnected UDP), 0 for `connect`.
    pub via_sendmsg: u8,
    /// IPv4 in the first 4 bytes, or IPv6; network order.
    pub addr: [u8; 16],
}

/// A counter passed its limit.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct LimitEvent {
    pub header: EventHeader,
    /// `Counter` tag.
    pub counter: u32,
    /// `ON_LIMIT_KILL` or `ON_LIMIT_FREEZE`.
    pub action: u32,
    pub value: u64,
    pub limit: u64,
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 32);
const _: () = assert!(core::mem::size_of::<ConnectEvent>() == 32 + 24);
const _: () = assert!(core::mem::size_of::<LimitEvent>() == 32 + 24);
