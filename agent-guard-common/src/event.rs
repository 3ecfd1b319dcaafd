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
    /// A file opened for reading; only for sessions that record reads.
    FileOpenRead = 6,
    /// A connect or addressed send to a pathname unix socket.
    UnixConnect = 7,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<EventKind> {
        match v {
            1 => Some(EventKind::Exec),
            2 => Some(EventKind::Exit),
            3 => Some(EventKind::Connect),
            4 => Some(EventKind::FileOpenWrite),
            5 => Some(EventKind::Limit),
            6 => Some(EventKind::FileOpenRead),
            7 => Some(EventKind::UnixConnect),
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

/// A connect (stream, seqpacket or datagram) or an addressed datagram
/// send to a pathname unix socket, allowed or denied. Abstract and
/// unnamed sockets make none.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct UnixConnectEvent {
    pub header: EventHeader,
    /// 1 allowed, 0 denied.
    pub allowed: u8,
    /// 1 for `sendmsg`/`sendto` with an address, 0 for `connect`.
    pub via_sendmsg: u8,
    pub _pad: [u8; 6],
    /// The allowlist key it was looked up under: the session's cgroup id
    /// and the path as the caller passed it (up to its NUL or the address
    /// length, zero-filled).
    pub target: crate::session::UnixKey,
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

/// Bytes of the executable's path kept in an exec event.
pub const EXEC_PATH_LEN: usize = 256;
/// Arguments (argv[0..]) kept in an exec event, and bytes of each.
pub const EXEC_ARGS: usize = 4;
pub const EXEC_ARG_LEN: usize = 64;

/// An `execve`/`execveat` attempt: the path and the head of argv, read
/// from the caller's memory (NUL-terminated, truncated to fit).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub uid: u32,
    /// How many of `args` were read.
    pub argc: u32,
    /// The parent's thread-group id (0 when it could not be read).
    pub ppid: u32,
    /// The exec's result: 0 when the program runs, else minus the errno
    /// (ENOENT while a shell searches PATH, EACCES when refused, ...).
    pub result: i32,
    pub path: [u8; EXEC_PATH_LEN],
    pub args: [[u8; EXEC_ARG_LEN]; EXEC_ARGS],
}

/// Bytes of a path kept in a file event.
pub const FILE_PATH_LEN: usize = 256;

/// A file opened for writing (by its flags): the path as the caller
/// passed it (relative paths are relative to its cwd or dirfd).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct FileOpenEvent {
    pub header: EventHeader,
    /// The open flags.
    pub flags: u32,
    /// The descriptor it returned.
    pub fd: i32,
    pub path: [u8; FILE_PATH_LEN],
}

/// A process (thread group) of the session ended.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// The exit status as `wait` reports it: code << 8 | signal.
    pub status: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 32);
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 32 + 16 + EXEC_PATH_LEN + EXEC_ARGS * EXEC_ARG_LEN);
const _: () = assert!(core::mem::size_of::<ExitEvent>() == 40);
const _: () = assert!(core::mem::size_of::<FileOpenEvent>() == 40 + FILE_PATH_LEN);
const _: () = assert!(core::mem::size_of::<ConnectEvent>() == 32 + 24);
const _: () = assert!(core::mem::size_of::<LimitEvent>() == 32 + 24);
const _: () = assert!(core::mem::size_of::<UnixConnectEvent>() == 32 + 8 + core::mem::size_of::<crate::session::UnixKey>());
