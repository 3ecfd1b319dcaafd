//! The control socket's file: bound at start over a stale one that nobody
//! listens on, refused when another daemon listens there, and removed at a
//! clean stop (only if it is still the one this daemon bound).

use std::{
    io,
    os::unix::{
        fs::{FileTypeExt, MetadataExt},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another daemon is listening on {path}: stop it first (or give this one another socket)")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket: not replacing it")]
    NotASocket { path: PathBuf },
    #[error("{path}: is another daemon listening there? {source}")]
    Probe { path: PathBuf, #[source] source: io::Error },
    #[error("removing the stale socket {path}: {source}")]
    RemoveStale { path: PathBuf, #[source] source: io::Error },
    #[error("binding {path}: {source}")]
    Bind { path: PathBuf, #[source] source: io::Error },
}

/// Which file a bound socket is, so that a stop removes only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    dev: u64,
    ino: u64,
}

/// What is at the socket's path before binding.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Nothing,
    /// A socket file nobody accepts on: left by a daemon that did not stop cleanly.
    Stale,
}

fn look(path: &Path) -> Result<Found, SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(source) => return Err(SocketError::Probe { path: path.to_owned(), source }),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket { path: path.to_owned() });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse { path: path.to_owned() }),
        Err(e) => match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Ok(Found::Stale),
            // Removed in between.
            Some(libc::ENOENT) => Ok(Found::Nothing),
            // A listener whose backlog is full is still a listener.
            Some(libc::EAGAIN) => Err(SocketError::InUse { path: path.to_owned() }),
            _ => Err(SocketError::Probe { path: path.to_owned(), source: e }),
        },
    }
}

/// Binds `path`, replacing a stale socket file there (and saying so on
/// stderr); refuses when a daemon listens on it or it is not a socket.
pub fn bind(path: &Path) -> Result<(UnixListener, Bound), SocketError> {
    if look(path)? == Found::Stale {
        match std::fs::remove_file(path) {
            Ok(()) => eprintln!("agent-guard daemon: replacing the stale socket {} (nobody listened on it)", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(SocketError::RemoveStale { path: path.to_owned(), source }),
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| match source.raw_os_error() {
        // Another daemon bound it since we looked.
        Some(libc::EADDRINUSE) => SocketError::InUse { path: path.to_owned() },
        _ => SocketError::Bind { path: path.to_owned(), source },
    })?;
    let meta = std::fs::symlink_metadata(path).map_err(|source| SocketError::Bind { path: path.to_owned(), source })?;
    Ok((listener, Bound { dev: meta.dev(), ino: meta.ino() }))
}

/// Removes the socket file at a clean stop, if it is still the one bound
/// (never one another daemon put there since). Best effort.
pub fn remove(path: &Path, bound: Bound) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if (meta.dev(), meta.ino()) == (bound.dev, bound.ino) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        // Bound and dropped: the file stays, nobody listens.
        drop(UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let (live, bound) = bind(&path).expect("over a stale socket");
        assert!(matches!(bind(&path), Err(SocketError::InUse { .. })));
        // Another file at the path since (say a new daemon's): not removed.
        let other = dir.path().join("other.sock");
        let (_other_listener, other_bound) = bind(&other).expect("bind other");
        remove(&path, other_bound);
        assert!(path.exists());
        remove(&path, bound);
        assert!(!path.exists());
        drop(live);
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        std::fs::write(&path, "precious").expect("write");
        assert!(matches!(bind(&path), Err(SocketError::NotASocket { .. })));
        assert_eq!(std::fs::read_to_string(&path).ok().as_deref(), Some("precious"));
    }
}
