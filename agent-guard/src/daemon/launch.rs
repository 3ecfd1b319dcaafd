//! `run` through the daemon, the daemon's side: authorise the request,
//! take the client's file descriptors (`SCM_RIGHTS`), and spawn the
//! session's supervisor (`agent-guard supervise`, the same code as an
//! embedded `run`) with them. The supervisor then owns the connection:
//! the client forwards signals over it and reads the exit status from it.
//!
//! The supervisor runs as root like the daemon, in its own process: a
//! daemon restart (even SIGKILL) leaves running sessions supervised.
//!
//! Descriptors the supervisor starts with: 0-2 the client's stdio, 3 the
//! connection, 4 a pipe carrying the [`Launch`] as JSON, then the events
//! file (5) and the summary file (6, or 5 without events) when asked for.

use std::{
    io::{IoSliceMut, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{net::UnixStream, process::CommandExt},
    },
    path::Path,
    process::{Command, Stdio},
};

use serde::{Deserialize, Serialize};

use super::protocol::RunSpec;
use crate::{control::Caller, profile::HostConfig};

/// The fd on which the supervisor finds the connection.
pub const CONNECTION_FD: RawFd = 3;
/// The fd on which the supervisor reads its [`Launch`].
pub const LAUNCH_FD: RawFd = 4;
/// The first of the optional files (events, then summary).
pub const FIRST_FILE_FD: RawFd = 5;

/// Who asked, as the daemon established it from `SO_PEERCRED`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// What the daemon hands its supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub spec: RunSpec,
    pub owner: Owner,
}

/// Whether `caller` may start a session of `spec`: root may run anything;
/// operators any role; others the roles `[grants]` gives them. Profile
/// files are root's only (the daemon reads them as root).
pub fn authorise(host: &HostConfig, caller: Caller, owner: &Owner, spec: &RunSpec) -> Result<(), String> {
    if let Some(l) = crate::session::registry::read_lockdown(&host.state_dir) {
        let why = l.reason.map(|r| format!(": {}", crate::escape::for_terminal(&r))).unwrap_or_default();
        return Err(format!("lockdown is on (by uid {}){why}: no new sessions until `agent-guard unlock`", l.by_uid));
    }
    if spec.observe && !caller.operator {
        return Err("--observe lifts the confinement: root and the operator group only".to_owned());
    }
    match (&spec.role, &spec.profile) {
        (_, Some(_)) if owner.uid != 0 => Err("only root may run a profile file through the daemon; name a role (--role)".to_owned()),
        (_, Some(_)) => Ok(()),
        (Some(role), None) => {
            let mut gids = owner.groups.clone();
            gids.push(owner.gid);
            if caller.operator || host.grants_role(owner.uid, &gids, role) {
                Ok(())
            } else {
                Err(format!("uid {} is not granted role `{}` ([grants] in the host config)", owner.uid, crate::escape::for_terminal(role)))
            }
        }
        (None, None) => Err("name a role or a profile".to_owned()),
    }
}

/// Receives exactly `count` descriptors sent with one byte.
pub fn receive_fds(stream: &UnixStream, count: usize) -> Result<Vec<OwnedFd>, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| format!("receiving the file descriptors: {e}"))?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(|e| format!("reading the control messages: {e}"))? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel installed these descriptors in this process for us; each is owned once here.
            fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err("too many file descriptors".to_owned());
    }
    if fds.len() != count {
        return Err(format!("expected {count} file descriptors, got {}", fds.len()));
    }
    Ok(fds)
}

/// Spawns the supervisor for `launch` with the client's descriptors
/// (stdin, stdout, stderr, then the optional files) and the connection.
pub fn spawn(config: Option<&Path>, launch: &Launch, connection: UnixStream, mut fds: Vec<OwnedFd>) -> std::io::Result<std::process::Child> {
    // This very binary, even if an upgrade replaced the file since the
    // daemon started: the supervisor must speak the daemon's protocol.
    let exe = Path::new("/proc/self/exe");
    let extra: Vec<OwnedFd> = fds.split_off(3);
    let mut stdio = fds.into_iter();
    let (Some(stdin), Some(stdout), Some(stderr)) = (stdio.next(), stdio.next(), stdio.next()) else {
        return Err(std::io::Error::other("fewer than three descriptors"));
    };
    let (launch_read, mut launch_write) = std::io::pipe()?;
    let mut cmd = Command::new(exe);
    cmd.arg0("agent-guard");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("supervise").stdin(Stdio::from(stdin)).stdout(Stdio::from(stdout)).stderr(Stdio::from(stderr));
    // The descriptors go to fixed numbers in the child; every other fd of the
    // daemon is close-on-exec.
    let mut moves: Vec<(RawFd, RawFd)> = vec![(connection.as_raw_fd(), CONNECTION_FD), (launch_read.as_raw_fd(), LAUNCH_FD)];
    for (i, fd) in extra.iter().enumerate() {
        moves.push((fd.as_raw_fd(), FIRST_FILE_FD + i as RawFd));
    }
    // SAFETY: the closure runs in the forked child before exec and only
    // calls dup/dup2/fcntl, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // First out of the way of the targets, then into place (dup2 clears close-on-exec).
            let mut staged = Vec::with_capacity(moves.len());
            for &(from, _) in &moves {
                let tmp = libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 64);
                if tmp < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                staged.push(tmp);
            }
            for (tmp, &(_, to)) in staged.iter().zip(&moves) {
                if libc::dup2(*tmp, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(launch_read);
    let text = serde_json::to_vec(launch).map_err(std::io::Error::other)?;
    launch_write.write_all(&text)?;
    drop(launch_write);
    // `connection` and `extra` close here: the supervisor holds its own copies.
    Ok(child)
}

/// Reads the [`Launch`] the daemon wrote on [`LAUNCH_FD`].
pub fn read_launch() -> Result<Launch, String> {
    // SAFETY: the daemon placed the pipe's read end at LAUNCH_FD; nothing else in this process owns it.
    let pipe = unsafe { std::fs::File::from_raw_fd(LAUNCH_FD) };
    serde_json::from_reader(std::io::BufReader::new(pipe)).map_err(|e| format!("reading the launch from fd {LAUNCH_FD}: {e}"))
}
