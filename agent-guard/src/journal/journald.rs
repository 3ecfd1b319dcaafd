//! Alerts to the systemd journal, where its socket exists: one datagram
//! in the journal's native protocol (`FIELD=value` lines). Values are
//! single-line (JSON, or text with newlines escaped), so no field needs
//! the binary form. Best effort: the agent-guard journal is the record.

use std::{os::unix::net::UnixDatagram, path::Path};

/// The systemd journal's socket on a systemd host.
pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";

/// The datagram for an alert.
pub fn datagram(session: &str, data: &serde_json::Value) -> Vec<u8> {
    let what = data["alert"].as_str().unwrap_or("alert");
    let one_line = |s: &str| s.replace('\n', "\\n");
    let message = one_line(&format!("agent-guard session {session}: {what} {data}"));
    format!(
        "MESSAGE={message}\nPRIORITY=4\nSYSLOG_IDENTIFIER=agent-guard\nAGENT_GUARD_SESSION={}\nAGENT_GUARD_ALERT={}\nAGENT_GUARD_DATA={}\n",
        one_line(session),
        one_line(what),
        one_line(&data.to_string())
    )
    .into_bytes()
}

/// Sends an alert when `socket` exists; failures are ignored.
pub fn send_alert(socket: &Path, session: &str, data: &serde_json::Value) {
    if !socket.exists() {
        return;
    }
    if let Ok(s) = UnixDatagram::unbound() {
        let _ = s.send_to(&datagram(session, data), socket);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_single_lines() {
        let d = super::datagram("s1", &serde_json::json!({ "alert": "limit", "counter": "execs", "note": "a\nb" }));
        let text = String::from_utf8(d).unwrap_or_default();
        assert!(text.starts_with("MESSAGE=agent-guard session s1: limit "), "{text}");
        assert!(text.contains("\nPRIORITY=4\n") && text.contains("\nAGENT_GUARD_ALERT=limit\n"), "{text}");
        assert_eq!(text.lines().count(), 6, "no field spills onto another line: {text}");
    }
}
