//! `agent-guard events [--follow] [--session ID] [--role R] [--json]`:
//! events, alerts and operator actions from the journal, as they were
//! recorded and, with `--follow`, as they are appended. The human view
//! escapes agent-controlled strings.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Args;

use crate::journal::{self, Record};

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing records as they are appended
    #[arg(long)]
    pub follow: bool,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
    /// Print the journal records as JSON lines
    #[arg(long)]
    pub json: bool,
    /// The journal directory [default: [journal] dir of the host config]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints one record as `--json` or a line for people.
fn print(r: &Record, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    } else {
        println!("{:>8}  {}  {:16}  {}", r.seq, utc(r.time_ms), r.entry.session.as_deref().unwrap_or("-"), describe(r));
    }
}

/// One line for a journal record, agent-controlled text escaped.
pub fn describe(r: &Record) -> String {
    let d = &r.entry.data;
    match (r.entry.kind.as_str(), d["type"].as_str()) {
        ("event", Some("exec")) => match d["errno"].as_i64().unwrap_or(0) {
            0 => format!("exec {} {}", s(&d["path"]), list(&d["argv"])),
            e => format!("exec {} {} FAILED: {}", s(&d["path"]), list(&d["argv"]), std::io::Error::from_raw_os_error(e as i32)),
        },
        ("event", Some("exit")) => match d["signal"].as_i64() {
            Some(sig) => format!("exit pid {} signal {sig}", d["pid"]),
            None => format!("exit pid {} code {}", d["pid"], d["exit_code"]),
        },
        ("event", Some("file_open_write")) => format!("write-open {}", s(&d["path"])),
        ("event", Some("file_open_read")) => format!("read-open {}", s(&d["path"])),
        ("event", Some("connect")) => format!(
            "connect {} {}:{} {}",
            s(&d["protocol"]),
            s(&d["addr"]),
            d["port"],
            if d["allowed"] == true { "allowed" } else { "DENIED" }
        ),
        ("event", Some("limit")) => format!("LIMIT {} {} > {} ({})", s(&d["counter"]), d["value"], d["limit"], s(&d["action"])),
        ("event", Some("events_lost")) => format!("events lost: {}", d["count"]),
        ("alert", _) => format!("ALERT {}", crate::escape::for_terminal(&d.to_string())),
        ("operator", _) => format!(
            "OPERATOR uid {} {}{}",
            d["by_uid"],
            s(&d["action"]),
            d["reason"].as_str().map(|r| format!(": {}", crate::escape::for_terminal(r))).unwrap_or_default()
        ),
        ("session_start", _) => format!("start role {} argv {}", s(&d["role"]), list(&d["argv"])),
        ("session_end", _) => format!("end by {} ({} ms)", s(&d["ended_by"]), d["duration_ms"]),
        (kind, _) => crate::escape::for_terminal(kind),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// A JSON string value, escaped for the terminal (the journal already
/// escapes agent strings; this guards the rest).
fn s(v: &serde_json::Value) -> String {
    crate::escape::for_terminal(v.as_str().unwrap_or(&v.to_string()))
}

fn list(v: &serde_json::Value) -> String {
    v.as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

pub fn run(args: EventsArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    // Through the daemon when one listens (users see their own sessions).
    if args.dir.is_none() {
        super::control::refuse_in_session()?;
        let socket = super::control::socket_path(config);
        if let Some(stream) = crate::daemon::client::connect(&socket) {
            let op = crate::daemon::protocol::Op::Events { follow: args.follow, session: args.session.clone(), role: args.role.clone() };
            crate::daemon::client::stream_events(stream, &socket, op, |r| print(&r, args.json))?;
            return Ok(0);
        }
    }
    super::control::authorize()?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => super::load_host_config(config)?.journal.dir,
    };
    let mut filter = journal::tail::Filter::new(args.session.clone(), args.role.clone(), None);
    let mut tail = journal::tail::Tail::new(&dir);
    loop {
        tail.read_new(|r| {
            if filter.pass(&r) {
                print(&r, args.json);
            }
            true
        })?;
        if !args.follow {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_times() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(super::utc(1_795_565_662_430), "2026-11-25T00:14:22.430Z"); // date -u -d @1795565662.430
    }
}
