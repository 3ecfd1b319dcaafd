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
pub mod launch;
pub mod protocol;
pub mod socket;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{
        fs::PermissionsExt,
        net::UnixStream,
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
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
}

/// A peer as `SO_PEERCRED` and `/proc` tell it.
struct Peer {
    caller: Caller,
    pid: u32,
    owner: launch::Owner,
}

/// The peer's credentials and whether it may act as an operator.
fn caller_of(stream: &UnixStream, operator_gid: Option<u32>) -> Result<Peer, String> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let (pid, uid, gid) = (cred.pid() as u32, cred.uid(), cred.gid());
    let groups: Vec<u32> = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Groups:").map(|g| g.split_whitespace().filter_map(|x| x.parse().ok()).collect())))
        .unwrap_or_default();
    let operator = uid == 0 || operator_gid.is_some_and(|g| gid == g || groups.contains(&g));
    Ok(Peer { caller: Caller { uid, operator }, pid, owner: launch::Owner { uid, gid, groups } })
}

fn answer(host: &HostConfig, caller: Caller, req: Request) -> Response {
    let id = req.id;
    if req.v != VERSION {
        return Response::err(id, "unsupported_version", format!("this daemon speaks protocol {VERSION}, not {}", req.v));
    }
    let result = match req.op {
        Op::Status {} => control::list(host, Caller { operator: true, ..caller }).map(|s| Reply::Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: VERSION,
            sessions: s.len(),
            lockdown: crate::session::registry::read_lockdown(&host.state_dir).is_some(),
        }),
        Op::Ps {} => control::list(host, caller).map(|sessions| Reply::Sessions { sessions }),
        Op::Kill { select, reason } => control::kill(host, caller, &select, reason.as_deref()).map(|sessions| Reply::Killed { sessions }),
        Op::Freeze { session, reason } => control::set_frozen(host, caller, &session, true, reason.as_deref()).map(|()| Reply::Done {}),
        Op::Resume { session, reason } => control::set_frozen(host, caller, &session, false, reason.as_deref()).map(|()| Reply::Done {}),
        Op::Lockdown { reason } => control::lockdown(host, caller, reason.as_deref()).map(|killed| Reply::LockedDown { killed }),
        Op::Unlock { reason } => control::unlock(host, caller, reason.as_deref()).map(|was_locked| Reply::Unlocked { was_locked }),
        // Served by `launch_session` and `stream_events`, which need the connection itself.
        Op::Run { .. } => Err(ControlError::Refused("`run` must be the only request on its connection".to_owned())),
        Op::Events { .. } => Err(ControlError::Refused("`events` must be the last request on its connection".to_owned())),
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

/// Loads and pins the shared eBPF monitor now rather than at the first
/// session. A host where it cannot load still gets the kill switch; each
/// `run` then refuses what it cannot enforce and says why.
fn load_monitor() {
    let Some(subtree) = crate::monitor::shared::sessions_subtree() else {
        eprintln!("agent-guard daemon: warning: no cgroup v2 mount: the monitor is not loaded");
        return;
    };
    let _ = std::fs::create_dir_all(&subtree);
    match crate::monitor::shared::Shared::ensure(&subtree) {
        Ok((_, loaded, _lock)) => eprintln!(
            "agent-guard daemon: eBPF monitor {} {}",
            crate::monitor::shared::version(),
            match loaded {
                crate::monitor::shared::Loaded::Reused => "already pinned".to_owned(),
                crate::monitor::shared::Loaded::Now(t) => format!("loaded and pinned in {} ms", t.as_millis()),
            }
        ),
        Err(e) => eprintln!("agent-guard daemon: warning: the eBPF monitor could not be loaded: {}", crate::cli::render_error(&anyhow::Error::from(e))),
    }
}

/// Detaches the monitor's system-wide hooks once no session has been
/// registered for `linger` (the daemon's sessions leave them attached, so
/// that back-to-back sessions do not attach them each time). Checks
/// twice a second, under the pin lock.
fn detach_idle_hooks(linger: Duration) {
    use crate::monitor::shared;
    let tick = Duration::from_millis(500);
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        std::thread::sleep(tick);
        // Nothing attached (the usual case): no lock, no map reads.
        if !shared::instances().iter().any(|(dir, _)| shared::hooks_attached(dir)) {
            idle_since = None;
            continue;
        }
        let Ok(lock) = shared::PinLock::take(&shared::pin_root()) else { continue };
        let mut busy = false;
        let mut instances = shared::open_all();
        let subtree = shared::sessions_subtree();
        for instance in &mut instances {
            // Entries whose cgroup is gone (supervisor and guardian both
            // killed) would keep the hooks attached for good.
            if let Some(subtree) = &subtree {
                instance.sweep(subtree);
            }
            busy |= !instance.sessions().is_empty();
        }
        if busy {
            idle_since = None;
            continue;
        }
        let since = *idle_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= linger {
            shared::hooks_off_where_idle(&instances, &lock);
        }
    }
}

/// Connections a non-operator user may hold open at once: enough for any
/// honest use, too few to starve the threads operators need.
const MAX_CONNECTIONS_PER_USER: usize = 8;

/// Open connections per non-operator uid.
type Open = Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>;

/// What a connection needs from the daemon.
struct Served {
    host: HostConfig,
    /// The `--config` the daemon was started with, for its supervisors.
    config: Option<std::path::PathBuf>,
    operator_gid: Option<u32>,
}

/// Serves one connection until it closes or sends something unreadable.
fn serve(mut stream: UnixStream, served: &Served, open: &Open) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let peer = match caller_of(&stream, served.operator_gid) {
        Ok(c) => c,
        Err(e) => {
            let _ = send(&mut stream, &Response::err(0, "internal", e));
            return;
        }
    };
    let (caller, pid) = (peer.caller, peer.pid);
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
    serve_requests(stream, served, &peer);
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

fn serve_requests(mut stream: UnixStream, served: &Served, peer: &Peer) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut first = true;
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
            let _ = send(&mut stream, &Response::err(0, "too_large", format!("a request may be at most {MAX_REQUEST_BYTES} bytes")));
            return;
        }
        let req = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => req,
            Err(e) => {
                let _ = send(&mut stream, &Response::err(0, "bad_request", format!("not a request: {e}")));
                return;
            }
        };
        if let (Op::Run { spec }, true, VERSION) = (&req.op, first, req.v) {
            // Nothing may follow the request before our answer, so the reader holds no more bytes.
            drop(reader);
            launch_session(stream, served, peer, req.id, spec.clone());
            return;
        }
        if let (Op::Events { follow, session, role }, VERSION) = (&req.op, req.v) {
            let owner = (!peer.caller.operator).then_some(peer.caller.uid);
            let filter = crate::journal::tail::Filter::new(session.clone(), role.clone(), owner);
            stream_events(stream, &served.host, req.id, *follow, filter);
            return;
        }
        first = false;
        if send(&mut stream, &answer(&served.host, peer.caller, req)).is_err() {
            return;
        }
    }
}

/// Serves an `events` request: the journal's records that pass `filter`,
/// then `done`, or with `follow` new ones as they come, until the client
/// goes away.
fn stream_events(mut stream: UnixStream, host: &HostConfig, id: u64, follow: bool, mut filter: crate::journal::tail::Filter) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut tail = crate::journal::tail::Tail::new(&host.journal.dir);
    loop {
        let mut alive = true;
        let read = tail.read_new(|r| {
            if !filter.pass(&r) {
                return true;
            }
            let record = serde_json::to_value(&r).unwrap_or_default();
            alive = send(&mut stream, &Response::ok(id, Reply::Record { record })).is_ok();
            alive
        });
        if let Err(e) = read {
            let _ = send(&mut stream, &Response::err(id, "internal", e.to_string()));
            return;
        }
        if !alive {
            return;
        }
        if !follow {
            let _ = send(&mut stream, &Response::ok(id, Reply::Done {}));
            return;
        }
        // A client that went away is noticed at the next write; look now and then.
        let mut probe = [0u8; 1];
        let _ = stream.set_nonblocking(true);
        let gone = matches!(std::io::Read::read(&mut stream, &mut probe), Ok(0));
        let _ = stream.set_nonblocking(false);
        if gone {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Serves a `run` request: authorises it, takes the client's descriptors,
/// and hands the connection to a new supervisor. The daemon does not wait
/// for the session: a thread reaps the supervisor when it exits.
fn launch_session(mut stream: UnixStream, served: &Served, peer: &Peer, id: u64, spec: protocol::RunSpec) {
    if let Err(why) = launch::authorise(&served.host, peer.caller, &peer.owner, &spec) {
        let _ = send(&mut stream, &Response::err(id, "refused", why));
        return;
    }
    let count = spec.fd_count();
    if send(&mut stream, &Response::ok(id, Reply::SendFds { count })).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let fds = match launch::receive_fds(&stream, count) {
        Ok(fds) => fds,
        Err(e) => {
            let _ = send(&mut stream, &Response::err(id, "bad_request", e));
            return;
        }
    };
    let _ = stream.set_read_timeout(None);
    let Ok(keep) = stream.try_clone() else { return };
    let launch = launch::Launch { spec, owner: peer.owner.clone() };
    match launch::spawn(served.config.as_deref(), &launch, stream, fds) {
        Ok(mut child) => {
            drop(keep);
            std::thread::spawn(move || child.wait());
        }
        Err(e) => {
            let mut keep = keep;
            let _ = send(&mut keep, &Response::err(id, "internal", format!("starting the session's supervisor: {e}")));
        }
    }
}

/// Binds the socket and serves until killed. `config` is the host config
/// file the daemon was started with, passed on to session supervisors.
pub fn run(host: HostConfig, config: Option<&Path>, socket: &Path) -> Result<(), DaemonError> {
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
    // A socket file left by a daemon that did not stop cleanly is replaced;
    // one a daemon listens on is refused.
    let (listener, bound) = socket::bind(socket)?;
    // Anyone may connect; what they may do is decided per request from their credentials.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).map_err(io(socket))?;
    // SIGTERM/SIGINT (`systemctl stop`): blocked in every thread (before
    // the first is spawned), taken by one that detaches idle hooks before
    // the daemon exits (the sessions, and the hooks they need, live on
    // without it). Supervisors start with an empty mask (std resets it).
    let stop = [libc::SIGTERM, libc::SIGINT];
    crate::session::block(&stop);
    load_monitor();
    let linger = host.monitor.hooks_linger.0;
    std::thread::spawn(move || detach_idle_hooks(linger));
    let socket_path = socket.to_owned();
    std::thread::spawn(move || {
        let set = crate::session::sigset(&stop);
        let mut sig = 0;
        // SAFETY: waiting for one of the signals blocked above, into a local.
        while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
        // First, so that clients see no daemon (and act directly) at once.
        socket::remove(&socket_path, bound);
        use crate::monitor::shared;
        if let Ok(lock) = shared::PinLock::take(&shared::pin_root()) {
            shared::hooks_off_where_idle(&shared::open_all(), &lock);
        }
        eprintln!("agent-guard daemon: stopping on signal {sig}");
        std::process::exit(0);
    });
    eprintln!("agent-guard daemon: serving {}", socket.display());
    let served = Arc::new(Served { host, config: config.map(Path::to_owned), operator_gid });
    let open: Open = Arc::default();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (served, open) = (Arc::clone(&served), Arc::clone(&open));
        std::thread::spawn(move || serve(stream, &served, &open));
    }
    Ok(())
}
