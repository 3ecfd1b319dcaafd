//! The guardian: a small process, forked when a session starts, that ends
//! the session if its supervisor dies without doing so (SIGKILL, OOM, a
//! crash), so that no agent outlives the process that confines it.
//!
//! Protocol: the supervisor holds the write end of a pipe. It writes one
//! byte once the session is over; the guardian then only waits for the
//! pipe to close (the supervisor's exit) and exits. End of file without
//! that byte means the supervisor died: the guardian kills the session's
//! cgroup and removes it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sandbox::cgroup::SessionCgroup;

/// The supervisor's end of the guardian's pipe.
#[derive(Debug)]
pub struct Guardian {
    tx: Option<OwnedFd>,
}

const DONE: u8 = b'd';

impl Guardian {
    /// Forks the guardian (twice, so that it is not our child and never
    /// waits on us to reap it). `leftovers` are files to remove if it has
    /// to clean up (the session's registry records); `monitored` the
    /// session's cgroup id, to forget in the monitor's maps.
    pub fn spawn(cgroup: &SessionCgroup, leftovers: &[std::path::PathBuf], monitored: Option<u64>) -> std::io::Result<Guardian> {
        let (rx, tx) = super::io::pipe()?;
        // SAFETY: fork of a single-threaded supervisor; the child runs `watch`, then exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            drop(tx);
            // SAFETY: in the first child: fork again and exit, leaving the grandchild to init.
            unsafe {
                if libc::fork() != 0 {
                    libc::_exit(0);
                }
            }
            // Hold nothing of the supervisor's but our pipe: not the agent's
            // output pipes (`--record-io` waits for their end), not a daemon
            // client's connection.
            // SAFETY: moving our pipe to fd 3 and closing every fd above it; the
            // OwnedFd is forgotten, fd 3 is wrapped again below.
            let rx = unsafe {
                let fd = libc::dup2(rx.as_raw_fd(), 3);
                if fd != rx.as_raw_fd() {
                    drop(rx);
                } else {
                    std::mem::forget(rx);
                }
                libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
                OwnedFd::from_raw_fd(3)
            };
            watch(&rx, cgroup, leftovers, monitored);
            // SAFETY: ending the guardian without running the supervisor's destructors.
            unsafe { libc::_exit(0) }
        }
        let mut status = 0;
        // SAFETY: reaping the intermediate child, which exits at once.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        drop(rx);
        Ok(Guardian { tx: Some(tx) })
    }

    /// The session is over and cleaned up: tell the guardian, and keep the
    /// pipe open until this process exits.
    pub fn release(mut self) {
        if let Some(tx) = self.tx.take() {
            // SAFETY: writing one byte from a local to our pipe.
            unsafe { libc::write(tx.as_raw_fd(), [DONE].as_ptr().cast(), 1) };
            // Closed by the kernel when this process exits (close-on-exec, never exec'd here).
            std::mem::forget(tx);
        }
    }
}

/// The guardian's life: detach from the terminal, wait, and clean up if
/// the supervisor vanished.
fn watch(rx: &OwnedFd, cgroup: &SessionCgroup, leftovers: &[std::path::PathBuf], monitored: Option<u64>) {
    // SAFETY: setsid and dup2 onto stdio: no memory is involved.
    unsafe {
        // Out of the terminal's process group: Ctrl-C is for the agent, not for us.
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
    }
    let mut done = false;
    let mut b = 0u8;
    loop {
        // SAFETY: reading one byte into a local.
        let n = unsafe { libc::read(rx.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
        match n {
            1 if b == DONE => done = true,
            1 => {}
            0 => break,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    if !done {
        let _ = clean_up(cgroup, leftovers, monitored);
    }
}

/// What a session leaves when its supervisor could not clean up: the
/// processes still in it are killed, its cgroups removed (v1 ones too),
/// its `leftovers` (registry files) deleted, and its entries in the
/// monitor's maps (cgroup id `monitored`) forgotten. The guardian does
/// this when the supervisor dies; `kill` does it for a session whose
/// supervisor and guardian are both gone.
pub fn clean_up(cgroup: &SessionCgroup, leftovers: &[std::path::PathBuf], monitored: Option<u64>) -> Result<(), crate::sandbox::cgroup::CgroupError> {
    let killed = cgroup.kill_all(|| {});
    let removed = cgroup.remove();
    for path in leftovers {
        let _ = std::fs::remove_file(path);
    }
    if let Some(id) = monitored {
        crate::monitor::shared::forget_everywhere(id);
    }
    killed.and(removed)
}
