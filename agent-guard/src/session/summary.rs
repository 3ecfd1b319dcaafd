//! The end-of-session summary: JSON for machines (`run --summary-json`),
//! a few lines for the operator on stderr.

use std::{io::Write as _, path::Path};

use agent_guard_common::session::Counter;
use schemars::JsonSchema;
use serde::Serialize;

use super::{EndedBy, Outcome};

/// The counters in the summary, by name.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Counters {
    pub processes: u64,
    pub processes_peak: u64,
    pub execs: u64,
    pub files_read: u64,
    pub files_written: u64,
    pub file_writes: u64,
    pub destructive_ops: u64,
    pub connects: u64,
    pub connects_denied: u64,
    pub bytes_out: u64,
}

/// Written by `run --summary-json FILE` when the session ends.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Summary {
    pub session: String,
    pub role: String,
    pub agent: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// `exit`, `wall_time`, or `limit:COUNTER`.
    #[schemars(with = "String")]
    pub ended_by: EndedBy,
    /// `null` when the monitor was not loaded (only with `--best-effort`).
    pub counters: Option<Counters>,
    pub events_lost: u64,
    pub duration_ms: u64,
    /// Controls that were not enforced (with `--best-effort`).
    pub unenforced: Vec<String>,
    /// Started with `--observe`: recorded, not confined (limits only).
    pub observe: bool,
}

impl Summary {
    pub fn new(outcome: &Outcome, role: &str, agent: Option<&str>) -> Summary {
        let counters = outcome.counters.map(|c| {
            let get = |k: Counter| c[k as usize];
            Counters {
                processes: get(Counter::Processes),
                processes_peak: get(Counter::ProcessesPeak),
                execs: get(Counter::Execs),
                files_read: get(Counter::FilesRead),
                files_written: get(Counter::FilesWritten),
                file_writes: get(Counter::FileWrites),
                destructive_ops: get(Counter::DestructiveOps),
                connects: get(Counter::Connects),
                connects_denied: get(Counter::ConnectsDenied),
                bytes_out: get(Counter::BytesOut),
            }
        });
        Summary {
            session: outcome.session.clone(),
            role: role.to_owned(),
            agent: agent.map(str::to_owned),
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            ended_by: outcome.ended_by,
            counters,
            events_lost: outcome.counters.map_or(0, |c| c[Counter::EventsLost as usize]) + outcome.events_dropped,
            duration_ms: outcome.duration.as_millis() as u64,
            unenforced: outcome.unenforced.iter().map(ToString::to_string).collect(),
            observe: false,
        }
    }

    /// Writes the summary as one JSON object, durably.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        self.write_to(&mut std::fs::File::create(path)?)
    }

    /// Writes the summary to an open file (through the daemon, the
    /// client opened it with its own rights).
    pub fn write_to(&self, f: &mut std::fs::File) -> std::io::Result<()> {
        serde_json::to_writer(&mut *f, self)?;
        f.write_all(b"\n")?;
        f.sync_all()
    }

    /// A few lines for the operator's terminal; agent-controlled text escaped.
    pub fn human(&self) -> String {
        let how = match (self.exit_code, self.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            (None, None) => "unknown status".to_owned(),
        };
        let agent = self.agent.as_deref().map(|a| format!(", agent {}", crate::escape::for_terminal(a))).unwrap_or_default();
        let mut out = format!(
            "agent-guard: session {} (role {}{agent}) ended by {} after {} ms, {how}\n",
            self.session, self.role, self.ended_by, self.duration_ms
        );
        if let Some(c) = &self.counters {
            out.push_str(&format!(
                "agent-guard:   processes: {} started (peak {} at once), {} execs\n",
                c.processes, c.processes_peak, c.execs
            ));
            out.push_str(&format!(
                "agent-guard:   files: {} opened for reading, {} for writing, {} unlinked/renamed/truncated\n",
                c.files_read, c.files_written, c.destructive_ops
            ));
            out.push_str(&format!(
                "agent-guard:   network: {} connects ({} denied), {} bytes out\n",
                c.connects, c.connects_denied, c.bytes_out
            ));
        }
        if self.events_lost > 0 {
            out.push_str(&format!("agent-guard:   {} events lost (the ring buffer was full; counters are exact)\n", self.events_lost));
        }
        out
    }
}
