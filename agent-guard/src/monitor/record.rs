//! Events as JSON lines (`run --events-json FILE`): one object per line,
//! with stable field names. The JSON Schema is generated from these types
//! (`agent-guard schema events`) and kept in `docs/schemas/`.
//!
//! Agent-controlled strings (paths, argv) are escaped: control characters
//! as `\e`, `\n`, `\u{..}`, bytes that are not UTF-8 as `\xNN`, and a
//! backslash as `\\`, so that a file shown in a terminal cannot drive it.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::Serialize;

use super::events::Event;
use crate::escape::bytes_for_terminal;

/// One line of the events file.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventRecord {
    /// The session id.
    pub session: String,
    /// Per-session sequence number from the kernel side (0 for records
    /// user space adds, such as `events_lost`).
    pub seq: u64,
    /// Kernel monotonic time (boot-based) in nanoseconds; 0 for records user space adds.
    pub ktime_ns: u64,
    /// The thread-group id that acted (0 for records user space adds).
    pub pid: u32,
    #[serde(flatten)]
    pub event: EventBody,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// An `execve`/`execveat` attempt.
    Exec {
        uid: u32,
        /// The parent's process id (0 when unknown).
        ppid: u32,
        /// 0 when the program runs, else the errno the exec failed with
        /// (ENOENT while a shell searches PATH, EACCES when refused, ...).
        errno: i32,
        /// The path as passed to exec (escaped).
        path: String,
        /// The head of argv (at most 4 arguments of at most 63 bytes, escaped).
        argv: Vec<String>,
    },
    /// A file opened for writing (by its flags).
    FileOpenWrite {
        /// The path as the caller passed it, relative to its cwd or dirfd (escaped).
        path: String,
        /// The open(2) flags, octal as in `<fcntl.h>`.
        flags: String,
        fd: i32,
    },
    /// A file opened for reading (sessions that record reads: `[baseline]`, `--observe`).
    FileOpenRead {
        /// The path as the caller passed it, relative to its cwd or dirfd (escaped).
        path: String,
        fd: i32,
    },
    /// A process of the session ended: with an exit code, or killed by a signal.
    Exit { exit_code: Option<i32>, signal: Option<i32> },
    /// A connect or unconnected send.
    Connect {
        addr: IpAddr,
        port: u16,
        /// `tcp`, `udp`, or the protocol number.
        protocol: String,
        allowed: bool,
        /// `connect`, or `sendmsg` for an unconnected UDP send.
        via: String,
    },
    /// A connect (stream, seqpacket or datagram socket) or an addressed
    /// datagram send to a socket file, allowed by `[network] unix`.
    UnixConnect {
        /// The socket's path as the caller passed it (escaped).
        path: String,
        /// `connect`, or `sendmsg` for a datagram sent with an address.
        via: String,
    },
    /// A connect or addressed datagram send to a socket file that
    /// `[network] unix` does not list (or past the `connects` limit):
    /// refused with EPERM.
    ConnectDenied {
        /// The socket's path as the caller passed it (escaped); relative
        /// paths are never allowed.
        path: String,
        /// `connect`, or `sendmsg` for a datagram sent with an address.
        via: String,
    },
    /// A counter passed its limit.
    Limit {
        counter: String,
        value: u64,
        limit: u64,
        /// `kill` or `freeze`.
        action: String,
    },
    /// Events the kernel had no room for (the counters stay exact).
    EventsLost { count: u64 },
    /// The monitor's state, written by user space when the session starts
    /// (`phase: "start"`) and ends (`"end"`).
    Health {
        phase: String,
        /// Whether the eBPF monitor is loaded for this session.
        monitor: bool,
        /// How long loading and attaching it took (start only).
        load_ms: Option<u64>,
        /// The ring buffer's size in bytes.
        ring_bytes: Option<u32>,
        /// Events lost so far (the counters stay exact).
        events_lost: u64,
    },
    /// A record this build could not decode.
    Malformed { kind: u32, len: usize },
}

impl EventRecord {
    pub fn from_event(session: &str, event: &Event) -> EventRecord {
        let (pid, seq, ktime_ns, body) = match event {
            Event::Exec { pid, seq, ktime_ns, uid, ppid, result, path, argv } => (
                *pid,
                *seq,
                *ktime_ns,
                EventBody::Exec { uid: *uid, ppid: *ppid, errno: -*result, path: bytes_for_terminal(path), argv: argv.iter().map(|a| bytes_for_terminal(a)).collect() },
            ),
            Event::FileOpenRead { pid, seq, ktime_ns, fd, path } => {
                (*pid, *seq, *ktime_ns, EventBody::FileOpenRead { path: bytes_for_terminal(path), fd: *fd })
            }
            Event::FileOpenWrite { pid, seq, ktime_ns, flags, fd, path } => (
                *pid,
                *seq,
                *ktime_ns,
                EventBody::FileOpenWrite { path: bytes_for_terminal(path), flags: format!("{flags:#o}"), fd: *fd },
            ),
            Event::Exit { pid, seq, ktime_ns, status } => {
                let (code, sig) = ((status >> 8) & 0xff, status & 0x7f);
                let body = if sig == 0 {
                    EventBody::Exit { exit_code: Some(code as i32), signal: None }
                } else {
                    EventBody::Exit { exit_code: None, signal: Some(sig as i32) }
                };
                (*pid, *seq, *ktime_ns, body)
            }
            Event::Connect { pid, seq, ktime_ns, addr, port, protocol, allowed, via_sendmsg } => (
                *pid,
                *seq,
                *ktime_ns,
                EventBody::Connect {
                    addr: *addr,
                    port: *port,
                    protocol: match protocol {
                        6 => "tcp".to_owned(),
                        17 => "udp".to_owned(),
                        n => n.to_string(),
                    },
                    allowed: *allowed,
                    via: if *via_sendmsg { "sendmsg" } else { "connect" }.to_owned(),
                },
            ),
            Event::UnixConnect { pid, seq, ktime_ns, path, allowed, via_sendmsg } => {
                let (path, via) = (bytes_for_terminal(path), if *via_sendmsg { "sendmsg" } else { "connect" }.to_owned());
                let body = if *allowed { EventBody::UnixConnect { path, via } } else { EventBody::ConnectDenied { path, via } };
                (*pid, *seq, *ktime_ns, body)
            }
            Event::Limit { pid, seq, ktime_ns, counter, freeze, value, limit } => (
                *pid,
                *seq,
                *ktime_ns,
                EventBody::Limit {
                    counter: counter.name().to_owned(),
                    value: *value,
                    limit: *limit,
                    action: if *freeze { "freeze" } else { "kill" }.to_owned(),
                },
            ),
            Event::Malformed { kind, len } => (0, 0, 0, EventBody::Malformed { kind: *kind, len: *len }),
        };
        EventRecord { session: session.to_owned(), seq, ktime_ns, pid, event: body }
    }

    pub fn health(session: &str, body: EventBody) -> EventRecord {
        EventRecord { session: session.to_owned(), seq: 0, ktime_ns: 0, pid: 0, event: body }
    }

    pub fn events_lost(session: &str, count: u64) -> EventRecord {
        EventRecord { session: session.to_owned(), seq: 0, ktime_ns: 0, pid: 0, event: EventBody::EventsLost { count } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_strings_are_escaped() {
        let ev = Event::Exec { pid: 7, seq: 1, ktime_ns: 5, uid: 0, ppid: 6, result: 0, path: b"/tmp/\x1b[31mx\xff".to_vec(), argv: vec![b"a\nb".to_vec()] };
        let line = serde_json::to_string(&EventRecord::from_event("s", &ev)).unwrap();
        assert_eq!(
            line,
            r#"{"session":"s","seq":1,"ktime_ns":5,"pid":7,"type":"exec","uid":0,"ppid":6,"errno":0,"path":"/tmp/\\e[31mx\\xff","argv":["a\\nb"]}"#
        );
    }

    #[test]
    fn unix_connects_are_reported_with_escaped_paths() {
        let denied = Event::UnixConnect { pid: 7, seq: 2, ktime_ns: 5, path: b"/run/\x1b]0;x\x07.sock".to_vec(), allowed: false, via_sendmsg: false };
        assert_eq!(
            serde_json::to_string(&EventRecord::from_event("s", &denied)).unwrap(),
            r#"{"session":"s","seq":2,"ktime_ns":5,"pid":7,"type":"connect_denied","path":"/run/\\e]0;x\\u{7}.sock","via":"connect"}"#
        );
        let allowed = Event::UnixConnect { pid: 7, seq: 3, ktime_ns: 6, path: b"/run/app.sock".to_vec(), allowed: true, via_sendmsg: true };
        assert_eq!(
            serde_json::to_string(&EventRecord::from_event("s", &allowed)).unwrap(),
            r#"{"session":"s","seq":3,"ktime_ns":6,"pid":7,"type":"unix_connect","path":"/run/app.sock","via":"sendmsg"}"#
        );
    }
}
