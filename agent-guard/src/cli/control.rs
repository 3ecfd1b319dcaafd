//! Operator commands: `ps`, `kill`, `freeze`, `resume`, `lockdown`,
//! `unlock`. Through the daemon when one listens (which authorises the
//! caller by its credentials), else directly, as root. A process inside a
//! session is refused either way: an agent can never reach the kill
//! switch, `unlock`, or another session.

use std::path::Path;

use anyhow::bail;
use clap::{ArgGroup, Args};

use crate::{
    control::{self, Caller, Selector},
    daemon::{
        client,
        protocol::{Op, Reply},
    },
};

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print JSON (one array)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["session", "role", "all"])))]
pub struct KillArgs {
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
    #[arg(long)]
    pub all: bool,
    /// Why, for the journal
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct SessionArg {
    #[arg(long)]
    pub session: String,
    /// Why, for the journal
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReasonArg {
    /// Why, for the journal
    #[arg(long)]
    pub reason: Option<String>,
}

/// Refuses callers inside a session or without privilege; runs before
/// anything else (even reading the host config).
pub fn authorize() -> anyhow::Result<u32> {
    refuse_in_session()?;
    if !caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false) {
        bail!("refused: controlling sessions without the daemon needs root (CAP_SYS_ADMIN); start `agent-guard daemon` to let operator groups and owners do it");
    }
    Ok(nix::unistd::getuid().as_raw())
}

/// Refuses a caller that runs inside an agent session.
pub(crate) fn refuse_in_session() -> anyhow::Result<()> {
    if control::in_session(std::process::id()) {
        bail!("refused: a process inside an agent session may not control sessions");
    }
    Ok(())
}

/// The socket named by `$AGENT_GUARD_SOCKET`, else the host config's.
pub(crate) fn socket_path(config: Option<&Path>) -> std::path::PathBuf {
    std::env::var_os("AGENT_GUARD_SOCKET")
        .map(std::path::PathBuf::from)
        .or_else(|| super::load_host_config(config).ok().map(|h| h.socket))
        .unwrap_or_else(|| crate::profile::HostConfig::default().socket)
}

/// Runs `op` through the daemon when one is listening, else directly (root only).
fn act(config: Option<&Path>, op: Op) -> anyhow::Result<Reply> {
    // Inside a session, not even the daemon is asked.
    refuse_in_session()?;
    let socket = socket_path(config);
    if let Some(mut stream) = client::connect(&socket) {
        return Ok(client::call(&mut stream, &socket, op)?);
    }
    let uid = authorize()?;
    let host = super::load_host_config(config)?;
    let caller = Caller { uid, operator: true };
    Ok(match op {
        Op::Status {} => Reply::Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: crate::daemon::protocol::VERSION,
            sessions: control::list(&host, caller)?.len(),
            lockdown: crate::session::registry::read_lockdown(&host.state_dir).is_some(),
        },
        Op::Ps {} => Reply::Sessions { sessions: control::list(&host, caller)? },
        Op::Kill { select, reason } => Reply::Killed { sessions: control::kill(&host, caller, &select, reason.as_deref())? },
        Op::Freeze { session, reason } => {
            control::set_frozen(&host, caller, &session, true, reason.as_deref())?;
            Reply::Done {}
        }
        Op::Resume { session, reason } => {
            control::set_frozen(&host, caller, &session, false, reason.as_deref())?;
            Reply::Done {}
        }
        Op::Lockdown { reason } => Reply::LockedDown { killed: control::lockdown(&host, caller, reason.as_deref())? },
        Op::Unlock { reason } => Reply::Unlocked { was_locked: control::unlock(&host, caller, reason.as_deref())? },
        Op::Run { .. } => bail!("`run` goes through `agent-guard run`"),
        Op::Events { .. } => bail!("`events` goes through `agent-guard events`"),
    })
}

pub fn ps(args: PsArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    let Reply::Sessions { sessions } = act(config, Op::Ps {})? else { bail!("unexpected reply to ps") };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(0);
    }
    println!("{:16}  {:20}  {:16}  {:>5}  {:>8}  {:12}  {:>8}  {:>6}  {:>8}", "SESSION", "ROLE", "AGENT", "UID", "PID", "STATE", "AGE", "EXECS", "CONNECTS");
    for r in &sessions {
        let n = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        println!(
            "{:16}  {:20}  {:16}  {:>5}  {:>8}  {:12}  {:>7}s  {:>6}  {:>8}",
            r.session,
            crate::escape::for_terminal(&r.role),
            r.agent.as_deref().map(crate::escape::for_terminal).unwrap_or_else(|| "-".into()),
            r.uid,
            r.main_pid,
            // An observed session is not confined: say so where operators look.
            if r.observe { format!("{}!OBS", r.state) } else { r.state.clone() },
            r.age_ms / 1000,
            n(r.counters.as_ref().map(|c| c.execs)),
            n(r.counters.as_ref().map(|c| c.connects)),
        );
    }
    if sessions.iter().any(|r| r.observe) {
        println!("!OBS: started with --observe: recorded, not confined (limits only)");
    }
    Ok(0)
}

pub fn kill(args: KillArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    let select = match (args.session, args.role, args.all) {
        (Some(id), _, _) => Selector::Session(id),
        (None, Some(role), _) => Selector::Role(role),
        _ => Selector::All,
    };
    let Reply::Killed { sessions } = act(config, Op::Kill { select, reason: args.reason })? else { bail!("unexpected reply to kill") };
    for s in &sessions {
        println!("killed session {s}");
    }
    if sessions.is_empty() {
        println!("no matching session");
    }
    Ok(0)
}

pub fn freeze(args: SessionArg, config: Option<&Path>, frozen: bool) -> anyhow::Result<i32> {
    let op = if frozen {
        Op::Freeze { session: args.session.clone(), reason: args.reason }
    } else {
        Op::Resume { session: args.session.clone(), reason: args.reason }
    };
    act(config, op)?;
    println!("{} session {}", if frozen { "froze" } else { "resumed" }, args.session);
    Ok(0)
}

pub fn lockdown(args: ReasonArg, config: Option<&Path>) -> anyhow::Result<i32> {
    let Reply::LockedDown { killed } = act(config, Op::Lockdown { reason: args.reason })? else { bail!("unexpected reply to lockdown") };
    println!("lockdown: {killed} sessions killed; no session may start until `agent-guard unlock`");
    Ok(0)
}

pub fn unlock(args: ReasonArg, config: Option<&Path>) -> anyhow::Result<i32> {
    let Reply::Unlocked { was_locked } = act(config, Op::Unlock { reason: args.reason })? else { bail!("unexpected reply to unlock") };
    println!("{}", if was_locked { "unlocked: sessions may start again" } else { "was not in lockdown" });
    Ok(0)
}
