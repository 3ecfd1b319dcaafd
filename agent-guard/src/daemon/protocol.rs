//! The control socket's protocol: newline-delimited JSON, one request per
//! line, one response per request, with a protocol version. JSON Schemas
//! come from these types (`agent-guard schema request|response`,
//! docs/schemas/).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::control::{Selector, SessionView};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// A request line (with its newline) longer than this is refused with
/// `too_large` and the connection closed. Control requests are tiny, but a
/// `run` request carries the client's whole environment and the command
/// line, which Linux lets reach 128 KiB in a single string (and ARG_MAX,
/// 2 MiB by default, in all): 64 KiB would refuse an ordinary long prompt
/// or a CI environment, so one limit of 256 KiB for every request.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Must be 1.
    pub v: u32,
    /// Echoed in the response.
    #[serde(default)]
    pub id: u64,
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    // Variants without fields are written `{}`: serde lets a unit variant
    // of an internally tagged enum through with any other field.
    /// The daemon's version, lockdown state and number of sessions.
    Status {},
    /// Sessions the caller may see.
    Ps {},
    /// End sessions; answers when their processes are gone.
    Kill { select: Selector, #[serde(default)] reason: Option<String> },
    Freeze { session: String, #[serde(default)] reason: Option<String> },
    Resume { session: String, #[serde(default)] reason: Option<String> },
    /// Operators only.
    Lockdown { #[serde(default)] reason: Option<String> },
    /// Operators only.
    Unlock { #[serde(default)] reason: Option<String> },
    /// Start a session. Answered with `send_fds`; the client then sends one
    /// byte carrying its stdin, stdout and stderr (then the events file and
    /// the summary file, when asked for) as `SCM_RIGHTS`; from then on the
    /// connection belongs to the session's supervisor and carries
    /// [`RunMessage`] lines.
    Run { spec: RunSpec },
    /// Journal records as `record` replies, then `done`; with `follow`, new
    /// records as they are appended until the client closes. Operators see
    /// every record, other users those of the sessions they started.
    Events {
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        session: Option<String>,
        #[serde(default)]
        role: Option<String>,
    },
}

/// What to run, as `agent-guard run` was asked on the client's side.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Role name (its profile from the daemon's profile path).
    #[serde(default)]
    pub role: Option<String>,
    /// A profile file instead of a role: root only (the daemon reads it).
    #[serde(default)]
    pub profile: Option<std::path::PathBuf>,
    /// The session's working directory (absolute).
    pub workdir: std::path::PathBuf,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub best_effort: bool,
    /// How long a session frozen by a limit waits for an operator.
    pub freeze_grace_ms: u64,
    /// No human summary on stderr.
    #[serde(default)]
    pub quiet: bool,
    /// The client sends an events file descriptor.
    #[serde(default)]
    pub events_json: bool,
    /// The client sends a summary file descriptor.
    #[serde(default)]
    pub summary_json: bool,
    /// `--observe`: recorded, not confined; root and operators only.
    #[serde(default)]
    pub observe: bool,
    /// `--record-io`: the supervisor records the agent's output.
    #[serde(default)]
    pub record_io: bool,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// The client's environment, from which the profile's `[env] pass` takes values.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

impl RunSpec {
    /// How many file descriptors the client sends.
    pub fn fd_count(&self) -> usize {
        3 + usize::from(self.events_json) + usize::from(self.summary_json)
    }
}

/// Lines on a `run` connection once the session's supervisor has it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RunMessage {
    /// Client to supervisor: deliver this signal to the agent (SIGINT,
    /// SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH; others are ignored).
    Signal { signal: i32 },
    /// Supervisor to client: the session is over; exit with this status
    /// (the agent's exit code, 128+N for its death by signal N, 125 when
    /// agent-guard itself failed and the agent never ran).
    Exit { status: i32 },
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub v: u32,
    pub id: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Status { version: String, protocol: u32, sessions: usize, lockdown: bool },
    Sessions { sessions: Vec<SessionView> },
    Killed { sessions: Vec<String> },
    Done {},
    LockedDown { killed: usize },
    Unlocked { was_locked: bool },
    /// Send this many file descriptors now (see `Op::Run`).
    SendFds { count: usize },
    /// One journal record (see `Op::Events`).
    Record { record: serde_json::Value },
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// `bad_request`, `too_large`, `unsupported_version`, `refused`, `no_session`, `internal`.
    pub code: String,
    pub message: String,
}

impl Response {
    pub fn ok(id: u64, result: Reply) -> Response {
        Response { v: VERSION, id, ok: true, result: Some(result), error: None }
    }

    pub fn err(id: u64, code: &str, message: impl Into<String>) -> Response {
        Response { v: VERSION, id, ok: false, result: None, error: Some(ErrorBody { code: code.to_owned(), message: message.into() }) }
    }
}

#[cfg(test)]
mod tests {
    use super::{Op, Request};

    #[test]
    fn every_op_refuses_a_field_it_does_not_have() {
        for op in [
            r#"{"kind":"status"}"#,
            r#"{"kind":"ps"}"#,
            r#"{"kind":"kill","select":"all"}"#,
            r#"{"kind":"freeze","session":"s"}"#,
            r#"{"kind":"resume","session":"s"}"#,
            r#"{"kind":"lockdown"}"#,
            r#"{"kind":"unlock"}"#,
            r#"{"kind":"events"}"#,
        ] {
            let line = format!(r#"{{"v":1,"op":{op}}}"#);
            assert!(serde_json::from_str::<Request>(&line).is_ok(), "{line}");
            let extra = line.replacen(r#"{"kind""#, r#"{"extra":1,"kind""#, 1);
            let e = serde_json::from_str::<Request>(&extra).expect_err(&extra);
            assert!(e.to_string().contains("unknown field `extra`"), "{extra}: {e}");
        }
        // And they are written as before.
        assert_eq!(serde_json::to_string(&Op::Ps {}).ok().as_deref(), Some(r#"{"kind":"ps"}"#));
        assert_eq!(serde_json::to_string(&Op::Status {}).ok().as_deref(), Some(r#"{"kind":"status"}"#));
    }
}
