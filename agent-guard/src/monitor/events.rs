//! Decoding ring-buffer records into typed events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_guard_common::{
    event::{ConnectEvent, EventHeader, EventKind, ExecEvent, ExitEvent, FileOpenEvent, LimitEvent, UnixConnectEvent},
    session::{Counter, ON_LIMIT_FREEZE},
};

/// What the kernel side reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Connect { pid: u32, seq: u64, ktime_ns: u64, addr: IpAddr, port: u16, protocol: u16, allowed: bool, via_sendmsg: bool },
    /// A connect or addressed send to a pathname unix socket; `path` is
    /// agent-controlled (escape before display).
    UnixConnect { pid: u32, seq: u64, ktime_ns: u64, path: Vec<u8>, allowed: bool, via_sendmsg: bool },
    Limit { pid: u32, seq: u64, ktime_ns: u64, counter: Counter, freeze: bool, value: u64, limit: u64 },
    /// `path` and `argv` are agent-controlled bytes: escape before display.
    Exec { pid: u32, seq: u64, ktime_ns: u64, uid: u32, ppid: u32, result: i32, path: Vec<u8>, argv: Vec<Vec<u8>> },
    /// A file opened for writing; `path` is agent-controlled.
    FileOpenWrite { pid: u32, seq: u64, ktime_ns: u64, flags: u32, fd: i32, path: Vec<u8> },
    FileOpenRead { pid: u32, seq: u64, ktime_ns: u64, fd: i32, path: Vec<u8> },
    /// `status` as `wait` reports it.
    Exit { pid: u32, seq: u64, ktime_ns: u64, status: u32 },
    /// A record this build cannot read (wrong size or unknown kind).
    Malformed { kind: u32, len: usize },
}

/// Reads a `T` from the start of `bytes` when it is long enough.
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked; `T` is a `#[repr(C)]` struct of integers
    // (valid for any bit pattern), read unaligned from the record.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The session (cgroup id) an event's header names, if it has a header.
pub fn cgroup_of(bytes: &[u8]) -> Option<u64> {
    read::<EventHeader>(bytes).map(|h| h.cgroup)
}

pub fn decode(bytes: &[u8]) -> Event {
    let malformed = |kind| Event::Malformed { kind, len: bytes.len() };
    let Some(h) = read::<EventHeader>(bytes) else { return malformed(0) };
    match EventKind::from_u32(h.kind) {
        Some(EventKind::Connect) => match read::<ConnectEvent>(bytes) {
            Some(e) => {
                let addr = if e.family == libc::AF_INET as u16 {
                    IpAddr::V4(Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3]))
                } else {
                    let v6 = Ipv6Addr::from(e.addr);
                    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
                };
                Event::Connect {
                    pid: h.pid,
                    seq: h.seq,
                    ktime_ns: h.ktime_ns,
                    addr,
                    port: e.port,
                    protocol: e.protocol,
                    allowed: e.allowed != 0,
                    via_sendmsg: e.via_sendmsg != 0,
                }
            }
            None => malformed(h.kind),
        },
        Some(EventKind::UnixConnect) => match read::<UnixConnectEvent>(bytes) {
            Some(e) => Event::UnixConnect {
                pid: h.pid,
                seq: h.seq,
                ktime_ns: h.ktime_ns,
                path: c_bytes(&e.target.path),
                allowed: e.allowed != 0,
                via_sendmsg: e.via_sendmsg != 0,
            },
            None => malformed(h.kind),
        },
        Some(EventKind::Limit) => match read::<LimitEvent>(bytes).and_then(|e| Counter::from_u32(e.counter).map(|c| (e, c))) {
            Some((e, counter)) => Event::Limit {
                pid: h.pid,
                seq: h.seq,
                ktime_ns: h.ktime_ns,
                counter,
                freeze: e.action == ON_LIMIT_FREEZE,
                value: e.value,
                limit: e.limit,
            },
            None => malformed(h.kind),
        },
        Some(EventKind::Exec) => match read::<ExecEvent>(bytes) {
            Some(e) => Event::Exec {
                pid: h.pid,
                seq: h.seq,
                ktime_ns: h.ktime_ns,
                uid: e.uid,
                ppid: e.ppid,
                result: e.result,
                path: c_bytes(&e.path),
                argv: e.args.iter().take(e.argc as usize).map(|a| c_bytes(a)).collect(),
            },
            None => malformed(h.kind),
        },
        Some(EventKind::FileOpenRead) => match read::<FileOpenEvent>(bytes) {
            Some(e) => Event::FileOpenRead { pid: h.pid, seq: h.seq, ktime_ns: h.ktime_ns, fd: e.fd, path: c_bytes(&e.path) },
            None => malformed(h.kind),
        },
        Some(EventKind::FileOpenWrite) => match read::<FileOpenEvent>(bytes) {
            Some(e) => Event::FileOpenWrite { pid: h.pid, seq: h.seq, ktime_ns: h.ktime_ns, flags: e.flags, fd: e.fd, path: c_bytes(&e.path) },
            None => malformed(h.kind),
        },
        Some(EventKind::Exit) => match read::<ExitEvent>(bytes) {
            Some(e) => Event::Exit { pid: h.pid, seq: h.seq, ktime_ns: h.ktime_ns, status: e.status },
            None => malformed(h.kind),
        },
        _ => malformed(h.kind),
    }
}

/// The bytes of a NUL-terminated buffer, up to the NUL.
fn c_bytes(buf: &[u8]) -> Vec<u8> {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf[..end].to_vec()
}
