//! The CLI's side of the control socket.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::protocol::{Op, Reply, Request, Response, VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("talking to the daemon at {path}: {source}")]
    Io { path: String, #[source] source: std::io::Error },
    #[error("the daemon sent something that is not a response: {0}")]
    Garbled(String),
    #[error("the daemon refused: {code}: {message}")]
    Daemon { code: String, message: String },
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
