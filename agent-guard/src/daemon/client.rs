//! The CLI's side of the control socket.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::protocol::{Op, Reply, Request, Response, RunMessage, RunSpec, MAX_REQUEST_BYTES, VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("talking to the daemon at {path}: {source}")]
    Io { path: String, #[source] source: std::io::Error },
    #[error("the daemon sent something that is not a response: {0}")]
    Garbled(String),
    #[error("the daemon refused: {code}: {message}")]
    Daemon { code: String, message: String },
    #[error("the request to the daemon at {path} would be {bytes} bytes, over the protocol's {max} (a very large environment or command line?)")]
    TooLarge { path: String, bytes: usize, max: usize },
}

/// Connects when a daemon listens at `socket`; `None` when none does.
pub fn connect(socket: &Path) -> Option<UnixStream> {
    let s = UnixStream::connect(socket).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    Some(s)
}

/// Sends one request and waits for its response.
pub fn call(stream: &mut UnixStream, socket: &Path, op: Op) -> Result<Reply, ClientError> {
    let io = |source| ClientError::Io { path: socket.display().to_string(), source };
    let mut line = serde_json::to_vec(&Request { v: VERSION, id: 1, op }).unwrap_or_default();
    line.push(b'\n');
    // The daemon would refuse it: say why here, with the sizes.
    if line.len() > MAX_REQUEST_BYTES {
        return Err(ClientError::TooLarge { path: socket.display().to_string(), bytes: line.len(), max: MAX_REQUEST_BYTES });
    }
    stream.write_all(&line).map_err(io)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io)?;
    let response: Response = serde_json::from_str(&answer).map_err(|e| ClientError::Garbled(e.to_string()))?;
    match (response.ok, response.result, response.error) {
        (true, Some(r), _) => Ok(r),
        (_, _, Some(e)) => Err(ClientError::Daemon { code: e.code, message: e.message }),
        _ => Err(ClientError::Garbled(answer)),
    }
}

/// Signals a `run` client forwards to its session's agent.
pub const FORWARDED: [libc::c_int; 7] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];

use crate::session::{block, sigset};

fn send_message(mut stream: &UnixStream, message: &RunMessage) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// `run` through the daemon, the client's side: sends `spec`, then its
/// stdio and `files` as `SCM_RIGHTS`, forwards the signals in [`FORWARDED`]
/// as they come, and returns the status the supervisor reports.
pub fn run_session(mut stream: UnixStream, socket: &Path, spec: RunSpec, files: &[std::fs::File]) -> Result<i32, ClientError> {
    use std::os::fd::AsRawFd;
    let io = |source| ClientError::Io { path: socket.display().to_string(), source };
    let count = spec.fd_count();
    match call(&mut stream, socket, Op::Run { spec })? {
        Reply::SendFds { count: asked } if asked == count => {}
        other => return Err(ClientError::Garbled(format!("expected send_fds for {count} descriptors, got {other:?}"))),
    }
    let mut fds = vec![0, 1, 2];
    fds.extend(files.iter().map(AsRawFd::as_raw_fd));
    let rights = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(stream.as_raw_fd(), &[std::io::IoSlice::new(b"F")], &rights, nix::sys::socket::MsgFlags::empty(), None)
        .map_err(|e| io(e.into()))?;
    // Signals meant for the agent: blocked here, taken by a thread, sent on.
    block(&FORWARDED);
    let sender = stream.try_clone().map_err(io)?;
    std::thread::spawn(move || {
        let set = sigset(&FORWARDED);
        loop {
            let mut sig = 0;
            // SAFETY: waiting for one of the blocked signals into a local.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            if send_message(&sender, &RunMessage::Signal { signal: sig }).is_err() {
                return;
            }
        }
    });
    let _ = stream.set_read_timeout(None);
    // One line ends the exchange: the exit status, or an error from the
    // daemon (bad descriptors, a supervisor that could not start).
    let Some(line) = BufReader::new(stream).lines().next() else {
        return Err(ClientError::Garbled("the session's supervisor closed the connection without an exit status".to_owned()));
    };
    let line = line.map_err(io)?;
    if let Ok(RunMessage::Exit { status }) = serde_json::from_str::<RunMessage>(&line) {
        return Ok(status);
    }
    match serde_json::from_str::<Response>(&line).ok().and_then(|r| r.error) {
        Some(e) => Err(ClientError::Daemon { code: e.code, message: e.message }),
        None => Err(ClientError::Garbled(line)),
    }
}

/// The supervisor's side of a `run` connection: a thread that turns each
/// forwarded signal into the same signal sent to this process, where the
/// session's signal handling forwards it to the agent as it does for
/// `run` in embedded mode. The client's hanging up counts as SIGHUP.
/// Blocks every signal the session handles in the calling thread first,
/// so that the thread started here inherits that: a process-directed
/// signal (SIGCHLD above all) must reach the session's signalfd, not be
/// delivered to this thread, and none can end the supervisor early.
pub fn forward_signals_to_self(connection: &UnixStream) -> std::io::Result<()> {
    block(&crate::session::HANDLED);
    let reader = BufReader::new(connection.try_clone()?);
    std::thread::spawn(move || {
        let me = std::process::id() as libc::pid_t;
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Ok(RunMessage::Signal { signal }) = serde_json::from_str(&line) {
                if FORWARDED.contains(&signal) {
                    // SAFETY: sending a signal to this process.
                    unsafe { libc::kill(me, signal) };
                }
            }
        }
        // SAFETY: as above.
        unsafe { libc::kill(me, libc::SIGHUP) };
    });
    Ok(())
}

/// Tells the client the session's status (best effort: it may be gone).
pub fn send_exit(connection: &UnixStream, status: i32) {
    let _ = send_message(connection, &RunMessage::Exit { status });
}

/// Sends an `events` request and hands each record to `each` until the
/// daemon says it is done (or, when following, until interrupted).
pub fn stream_events(mut stream: UnixStream, socket: &Path, op: Op, mut each: impl FnMut(crate::journal::Record)) -> Result<(), ClientError> {
    let io = |source| ClientError::Io { path: socket.display().to_string(), source };
    let mut line = serde_json::to_vec(&Request { v: VERSION, id: 1, op }).unwrap_or_default();
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let _ = stream.set_read_timeout(None);
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(io)?;
        let response: Response = serde_json::from_str(&line).map_err(|e| ClientError::Garbled(e.to_string()))?;
        match (response.result, response.error) {
            (Some(Reply::Record { record }), _) => {
                if let Ok(r) = serde_json::from_value(record) {
                    each(r);
                }
            }
            (Some(Reply::Done {}), _) => return Ok(()),
            (_, Some(e)) => return Err(ClientError::Daemon { code: e.code, message: e.message }),
            _ => return Err(ClientError::Garbled(line)),
        }
    }
    Ok(())
}
