//! Per-session counters, limits and network rules as the kernel side sees
//! them. One eBPF object instance, loaded once and pinned, serves every
//! session: the `SESSIONS` map holds a [`SessionState`] per session keyed
//! by the session's cgroup v2 id, and the network maps key their entries
//! by the same id.

/// A per-session counter, the index into the `COUNTERS` map and `LIMITS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Counter {
    /// Processes started (forks/clones that create a process).
    Processes = 0,
    /// Successful and attempted `execve`s.
    Execs = 1,
    /// Files opened for reading.
    FilesRead = 2,
    /// Files opened for writing (by their open flags).
    FilesWritten = 3,
    /// Write-family calls on regular files.
    FileWrites = 4,
    /// unlink/rename/truncate of files.
    DestructiveOps = 5,
    /// Connects (and unconnected sends) attempted.
    Connects = 6,
    /// Connects (and unconnected sends) denied by the allowlist.
    ConnectsDenied = 7,
    /// Bytes sent over the network.
    BytesOut = 8,
    /// Processes alive now.
    ProcessesAlive = 9,
    /// The peak of `ProcessesAlive`.
    ProcessesPeak = 10,
    /// Events the ring buffer had no room for.
    EventsLost = 11,
}

/// Number of counters.
pub const COUNTERS: usize = 12;

impl Counter {
    pub const ALL: [Counter; COUNTERS] = [
        Counter::Processes,
        Counter::Execs,
        Counter::FilesRead,
        Counter::FilesWritten,
        Counter::FileWrites,
        Counter::DestructiveOps,
        Counter::Connects,
        Counter::ConnectsDenied,
        Counter::BytesOut,
        Counter::ProcessesAlive,
        Counter::ProcessesPeak,
        Counter::EventsLost,
    ];

    /// The name used in profiles (`[limits]`), JSON and messages.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Processes => "processes",
            Counter::Execs => "execs",
            Counter::FilesRead => "files_read",
            Counter::FilesWritten => "files_written",
            Counter::FileWrites => "file_writes",
            Counter::DestructiveOps => "destructive_ops",
            Counter::Connects => "connects",
            Counter::ConnectsDenied => "connects_denied",
            Counter::BytesOut => "bytes_out",
            Counter::ProcessesAlive => "processes_alive",
            Counter::ProcessesPeak => "processes_peak",
            Counter::EventsLost => "events_lost",
        }
    }

    pub const fn from_u32(v: u32) -> Option<Counter> {
        if (v as usize) < COUNTERS {
            Some(Counter::ALL[v as usize])
        } else {
            None
        }
    }
}

/// Kernel struct field offsets user space finds in BTF and passes to the
/// programs (aya-ebpf has no CO-RE): indexes into `KERNEL_OFFSETS`.
pub const KERNEL_OFFSETS: usize = 11;
pub const OFF_TASK_FILES: usize = 0;
pub const OFF_FILES_FDT: usize = 1;
pub const OFF_FDTABLE_FD: usize = 2;
pub const OFF_FILE_INODE: usize = 3;
pub const OFF_INODE_MODE: usize = 4;
pub const OFF_TASK_EXIT_CODE: usize = 5;
pub const OFF_FDTABLE_MAX_FDS: usize = 6;
pub const OFF_TASK_REAL_PARENT: usize = 7;
pub const OFF_TASK_TGID: usize = 8;
/// `struct bpf_sock_addr_kern` (what a cgroup sock_addr program's context
/// really points to): the address the caller passed, and its length.
pub const OFF_SOCK_ADDR_UADDR: usize = 9;
pub const OFF_SOCK_ADDR_UADDRLEN: usize = 10;

/// What the kernel side does when a counter passes its limit.
pub const ON_LIMIT_KILL: u32 = 0;
pub const ON_LIMIT_FREEZE: u32 = 1;

/// Port ranges allowed for one network prefix.
pub const MAX_PORT_RANGES: usize = 16;

/// `PortRangeRaw::protocols` bits: which transport protocols a range allows.
pub const PROTO_TCP: u8 = 1;
pub const PROTO_UDP: u8 = 2;
pub const PROTO_ANY: u8 = PROTO_TCP | PROTO_UDP;

/// The `PROTO_*` bit of an IP socket's protocol (`IPPROTO_TCP` 6,
/// `IPPROTO_UDP` 17); 0 for any other, which no range allows.
#[inline(always)]
pub const fn proto_bit(ipproto: u32) -> u8 {
    match ipproto {
        6 => PROTO_TCP,
        17 => PROTO_UDP,
        _ => 0,
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PortRangeRaw {
    /// Host byte order, inclusive.
    pub lo: u16,
    pub hi: u16,
    /// `PROTO_*` bits the range allows.
    pub protocols: u8,
    pub _pad: [u8; 3],
}

/// The value of an entry of the `NET_V4`/`NET_V6` LPM tries: every port
/// range allowed for addresses under this prefix, including those of
/// wider prefixes that contain it (an LPM lookup returns only the longest
/// match, so each entry carries its ancestors' ranges too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct PortRanges {
    pub count: u32,
    pub ranges: [PortRangeRaw; MAX_PORT_RANGES],
}

const _: () = assert!(core::mem::size_of::<PortRangeRaw>() == 8);
const _: () = assert!(core::mem::size_of::<PortRanges>() == 4 + 8 * MAX_PORT_RANGES);

impl Default for PortRanges {
    fn default() -> PortRanges {
        PortRanges::EMPTY
    }
}

impl PortRanges {
    pub const EMPTY: PortRanges =
        PortRanges { count: 0, ranges: [PortRangeRaw { lo: 0, hi: 0, protocols: 0, _pad: [0; 3] }; MAX_PORT_RANGES] };

    /// Whether `port` (host order) is in one of the ranges that allow the
    /// protocol `proto` (a `PROTO_*` bit; 0 matches nothing).
    #[inline(always)]
    pub fn allows(&self, port: u16, proto: u8) -> bool {
        let mut i = 0;
        while i < MAX_PORT_RANGES {
            let r = &self.ranges[i];
            if (i as u32) < self.count && r.lo <= port && port <= r.hi && r.protocols & proto != 0 {
                return true;
            }
            i += 1;
        }
        false
    }
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` data without padding (asserted above), valid for any bit pattern.
unsafe impl aya::Pod for PortRanges {}

/// One session as the kernel side sees it: the value of the `SESSIONS`
/// map, keyed by the session's cgroup id. User space inserts it once when
/// the session starts (never rewrites it: the kernel side updates the
/// counters in place with atomic adds) and removes it when the session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SessionState {
    /// Exact counters, indexed by [`Counter`].
    pub counters: [u64; COUNTERS],
    /// Limits per counter (`u64::MAX`: none).
    pub limits: [u64; COUNTERS],
    /// The last event sequence number handed out.
    pub seq: u64,
    /// `ON_LIMIT_KILL` or `ON_LIMIT_FREEZE`.
    pub on_limit: u32,
    /// Set to 1 once a limit with `on_limit = "kill"` has passed: every
    /// task of the session is killed at its next hooked call.
    pub ended: u32,
    /// Ports the session may bind.
    pub bind: PortRanges,
    /// The session's slot in `RINGS`: which ring buffer its events go to.
    pub ring: u32,
    /// `SESSION_RECORD_READS`, ...
    pub flags: u32,
    pub _pad: u32,
}

/// `SessionState::flags`: report every file opened for reading (a
/// `FileOpenRead` event each), for baselines and learned profiles.
pub const SESSION_RECORD_READS: u32 = 1;
/// `SessionState::flags`: connecting to any pathname unix socket is
/// allowed (and reported): `run --observe`, where the allowlists are off.
pub const SESSION_UNIX_ANY: u32 = 2;

const _: () = assert!(core::mem::size_of::<SessionState>() == 8 * COUNTERS * 2 + 8 + 4 + 4 + core::mem::size_of::<PortRanges>() + 4 + 8);

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` data without padding (asserted above), valid for any bit pattern.
unsafe impl aya::Pod for SessionState {}

impl SessionState {
    /// A session about to start: counters at zero, nothing sent yet, its
    /// ring slot assigned when it registers.
    pub const fn new(limits: [u64; COUNTERS], on_limit: u32, bind: PortRanges, flags: u32) -> SessionState {
        SessionState { counters: [0; COUNTERS], limits, seq: 0, on_limit, ended: 0, bind, ring: 0, flags, _pad: 0 }
    }
}

/// Most sessions at once (entries of `SESSIONS`, slots of `RINGS`).
pub const MAX_SESSIONS: u32 = 4096;

/// User space's bookkeeping of a `RINGS` slot (the `RING_SLOTS` array).
/// Ring buffers are created once and reused by later sessions: putting a
/// map into a map of maps costs an RCU grace period (milliseconds), so a
/// session start must not do it when a free ring of its size exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RingSlot {
    /// The cgroup id of the session using it; 0 when free.
    pub owner: u64,
    /// The ring buffer's size; 0 when the slot has never held one.
    pub bytes: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<RingSlot>() == 16);

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` data without padding (asserted above), valid for any bit pattern.
unsafe impl aya::Pod for RingSlot {}

/// Bytes of `sockaddr_un.sun_path`.
pub const UNIX_PATH_LEN: usize = 108;

/// A key of the `UNIX_ALLOW` hash map: a socket file a session may
/// connect to. The path is the whole `sun_path` up to its first NUL (or
/// the address length), zero-filled to the end, so that a lookup compares
/// the whole string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct UnixKey {
    /// The session's cgroup id.
    pub cgroup: u64,
    pub path: [u8; UNIX_PATH_LEN],
    pub _pad: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<UnixKey>() == 8 + UNIX_PATH_LEN + 4);

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` data without implicit padding (asserted above), valid for any bit pattern.
unsafe impl aya::Pod for UnixKey {}

impl UnixKey {
    /// The key of `path` (at most [`UNIX_PATH_LEN`] bytes, else `None`) in
    /// the session `cgroup`.
    pub fn new(cgroup: u64, path: &[u8]) -> Option<UnixKey> {
        if path.len() > UNIX_PATH_LEN {
            return None;
        }
        let mut key = UnixKey { cgroup, path: [0; UNIX_PATH_LEN], _pad: [0; 4] };
        key.path[..path.len()].copy_from_slice(path);
        Some(key)
    }
}

/// Keys of the `NET_V4`/`NET_V6` LPM tries: the session's cgroup id (big
/// endian, so that it forms the first 64 bits of every prefix), then the
/// address in network order.
pub const NET_V4_KEY: usize = 8 + 4;
pub const NET_V6_KEY: usize = 8 + 16;

/// The LPM key data for `addr` in the session `cgroup`; the prefix length
/// is 64 plus the address prefix's.
pub fn net_key<const N: usize>(cgroup: u64, addr: &[u8]) -> [u8; N] {
    let mut key = [0u8; N];
    key[..8].copy_from_slice(&cgroup.to_be_bytes());
    let mut i = 0;
    while i < addr.len() && 8 + i < N {
        key[8 + i] = addr[i];
        i += 1;
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_tags_round_trip() {
        for c in Counter::ALL {
            assert_eq!(Counter::from_u32(c as u32), Some(c));
        }
        assert_eq!(Counter::from_u32(COUNTERS as u32), None);
    }

    #[test]
    fn port_ranges() {
        let mut r = PortRanges::EMPTY;
        r.ranges[0] = PortRangeRaw { lo: 80, hi: 80, protocols: PROTO_TCP, _pad: [0; 3] };
        r.ranges[1] = PortRangeRaw { lo: 8000, hi: 8100, protocols: PROTO_ANY, _pad: [0; 3] };
        r.ranges[2] = PortRangeRaw { lo: 53, hi: 53, protocols: PROTO_UDP, _pad: [0; 3] };
        r.count = 3;
        let (tcp, udp) = (proto_bit(6), proto_bit(17));
        assert!(r.allows(80, tcp) && r.allows(8000, tcp) && r.allows(8100, udp) && r.allows(53, udp));
        assert!(!r.allows(80, udp) && !r.allows(53, tcp));
        assert!(!r.allows(81, tcp) && !r.allows(443, tcp));
        // Another protocol (e.g. SCTP, 132) matches no range.
        assert!(!r.allows(8000, proto_bit(132)));
        assert!(!PortRanges::EMPTY.allows(0, PROTO_ANY));
    }
}
