//! `agent-guard daemon`: serves the operator actions of [`crate::control`]
//! on a Unix socket to local peers, authorised by their credentials
//! (`SO_PEERCRED`): root and members of the operator group control every
//! session; other users see and control the sessions they started; a
//! process inside any session is refused everything.
//!
//! Each connection is served by its own thread; bad input gets an error
//! response and, when it cannot be read as a request (malformed, too large),
//! the connection is closed. Nothing a peer sends can make the daemon panic.

pub mod client;
pub mod protocol;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::Path,
    sync::Arc,
    time::Duration,
};

use self::protocol::{Op, Reply, Request, Response, MAX_REQUEST_BYTES, VERSION};
use crate::{
    control::{self, Caller, ControlError},
    profile::HostConfig,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Io { path: String, #[source] source: std::io::Error },
    #[error("operator group `{0}` does not exist on this host")]
    NoGroup(String),
    #[error("the daemon must run as root (CAP_SYS_ADMIN): it acts on session cgroups for its peers")]
    NotRoot,
}

/// The peer's credentials and whether it may act as an operator.
fn caller_of(stream: &UnixStream, operator_gid: Option<u32>) -> Result<(Caller, u32), String> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let (pid, uid, gid) = (cred.pid() as u32, cred.uid(), cred.gid());
    let in_group = |g: u32| {
        gid == g
            || std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Groups:"))
                    .is_some_and(|groups| groups.split_whitespace().any(|x| x.parse() == Ok(g)))
            })
    };
    let operator = uid == 0 || operator_gid.is_some_and(in_group);
    Ok((Caller { uid, operator }, pid))
}

fn answer(host: &HostConfig, caller: Caller, req: Request) -> Response {
    let id = req.id;
    if req.v != VERSION {
        return Response::err(id, "unsupported_version", format!("this daemon speaks protocol {VERSION}, not {}", req.v));
    }
    let result = match req.op {
        Op::Status => control::list(host, Caller { operator: true, ..caller }).map(|s| Reply::Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: VERSION,
            sessions: s.len(),
            lockdown: crate::session::registry::read_lockdown(&host.state_dir).is_some(),
        }),
        Op::Ps => control::list(host, caller).map(|sessions| Reply::Sessions { sessions }),
        Op::Kill { select, reason } => control::kill(host, caller, &select, reason.as_deref()).map(|sessions| Reply::Killed { sessions }),
        Op::Freeze { session, reason } => control::set_frozen(host, caller, &session, true, reason.as_deref()).map(|()| Reply::Done {}),
        Op::Resume { session, reason } => control::set_frozen(host, caller, &session, false, reason.as_deref()).map(|()| Reply::Done {}),
        Op::Lockdown { reason } => control::lockdown(host, caller, reason.as_deref()).map(|killed| Reply::LockedDown { killed }),
        Op::Unlock { reason } => control::unlock(host, caller, reason.as_deref()).map(|was_locked| Reply::Unlocked { was_locked }),
    };
    match result {
        Ok(r) => Response::ok(id, r),
        Err(ControlError::Refused(m)) => Response::err(id, "refused", m),
        Err(e @ ControlError::NoSession(_)) => Response::err(id, "no_session", e.to_string()),
        Err(e) => Response::err(id, "internal", e.to_string()),
    }
}

fn send(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).unwrap_or_default();
    line.push(b'\n');
    stream.write_all(&line)
}

/// Connections a non-operator user may hold open at once: enough for any
/// honest use, too few to starve the threads operators need.
const MAX_CONNECTIONS_PER_USER: usize = 8;

/// Open connections per non-operator uid.
type Open = Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>;

/// Serves one connection until it closes or sends something unreadable.
fn serve(mut stream: UnixStream, host: &HostConfig, operator_gid: Option<u32>, open: &Open) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let (caller, pid) = match caller_of(&stream, operator_gid) {
        Ok(c) => c,
        Err(e) => {
            let _ = send(&mut stream, &Response::err(0, "internal", e));
            return;
        }
    };
    if control::in_session(pid) {
        refuse(&mut stream, "a process inside an agent session may not control sessions");
        return;
    }
    // Operators are always served; others get a bounded number of connections.
    if !caller.operator {
        let mut map = open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(caller.uid).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_USER {
            drop(map);
            refuse(&mut stream, &format!("at most {MAX_CONNECTIONS_PER_USER} connections per user"));
            return;
        }
        *n += 1;
    }
    serve_requests(&mut stream, host, caller);
    if !caller.operator {
        let mut map = open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&caller.uid) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Answers the peer's first request (read, bounded, so that its write does
/// not fail on a closed socket) with a refusal, and closes.
fn refuse(stream: &mut UnixStream, why: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if let Ok(read_half) = stream.try_clone() {
        let mut line = Vec::new();
        let _ = std::io::Read::take(BufReader::new(read_half), MAX_REQUEST_BYTES as u64 + 1).read_until(b'\n', &mut line);
    }
    let _ = send(stream, &Response::err(0, "refused", why));
}

fn serve_requests(stream: &mut UnixStream, host: &HostConfig, caller: Caller) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    loop {
        let mut line = Vec::new();
        // One byte past the limit tells an oversized line from one that fits.
        let n = match std::io::Read::take(&mut reader, MAX_REQUEST_BYTES as u64 + 1).read_until(b'\n', &mut line) {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        if line.len() > MAX_REQUEST_BYTES {
            let _ = send(stream, &Response::err(0, "too_large", format!("a request may be at most {MAX_REQUEST_BYTES} bytes")));
            return;
        }
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => answer(host, caller, req),
            Err(e) => {
                let _ = send(stream, &Response::err(0, "bad_request", format!("not a request: {e}")));
                return;
            }
        };
        if send(stream, &response).is_err() {
            return;
        }
    }
}

/// Binds the socket and serves until killed.
pub fn run(host: HostConfig, socket: &Path) -> Result<(), DaemonError> {
    if !caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false) {
        return Err(DaemonError::NotRoot);
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| DaemonError::Io { path, source }
    };
    let operator_gid = match &host.operator_group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
                .ok_or_else(|| DaemonError::NoGroup(name.clone()))?,
        ),
        None => None,
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    // A socket left by a previous daemon: replace it.
    if socket.exists() && UnixStream::connect(socket).is_err() {
        let _ = std::fs::remove_file(socket);
    }
    let listener = UnixListener::bind(socket).map_err(io(socket))?;
    // Anyone may connect; what they may do is decided per request from their credentials.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).map_err(io(socket))?;
    eprintln!("agent-guard daemon: serving {}", socket.display());
    let host = Arc::new(host);
    let open: Open = Arc::default();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (host, open) = (Arc::clone(&host), Arc::clone(&open));
        std::thread::spawn(move || serve(stream, &host, operator_gid, &open));
    }
    Ok(())
}
