//! The control socket's protocol: newline-delimited JSON, one request per
//! line, one response per request, with a protocol version. JSON Schemas
//! come from these types (`agent-guard schema request|response`,
//! docs/schemas/).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::control::{Selector, SessionView};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// A request line longer than this is refused and the connection closed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

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
    /// The daemon's version, lockdown state and number of sessions.
    Status,
    /// Sessions the caller may see.
    Ps,
    /// End sessions; answers when their processes are gone.
    Kill { select: Selector, #[serde(default)] reason: Option<String> },
    Freeze { session: String, #[serde(default)] reason: Option<String> },
    Resume { session: String, #[serde(default)] reason: Option<String> },
    /// Operators only.
    Lockdown { #[serde(default)] reason: Option<String> },
    /// Operators only.
    Unlock { #[serde(default)] reason: Option<String> },
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
