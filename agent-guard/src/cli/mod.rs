//! Command-line interface: one module per subcommand.

pub mod baseline;
pub mod control;
pub mod doctor;
pub mod events;
pub mod journal;
pub mod monitor;
pub mod profile;
pub mod profile_test;
pub mod replay;
pub mod run;
pub mod schema;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::profile::{host, HostConfig};

#[derive(Debug, Parser)]
#[command(name = "agent-guard", version, about = "Run AI agents as confined, monitored sessions")]
pub struct Cli {
    /// Host configuration file [default: $AGENT_GUARD_CONFIG, else /etc/agent-guard/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command as an agent session inside the sandbox of its role
    Run(run::RunArgs),
    /// Check or show profiles
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// Probe what this host can enforce
    Doctor(doctor::DoctorArgs),
    /// Serve the control socket (as root): operator actions for operator groups and owners
    Daemon,
    /// List running sessions
    Ps(control::PsArgs),
    /// End sessions (by id, role, or all) and wait until their processes are gone
    Kill(control::KillArgs),
    /// Freeze a session (cgroup.freeze) for an operator to look at
    Freeze(control::SessionArg),
    /// Thaw a frozen session, also one frozen by a limit
    Resume(control::SessionArg),
    /// Kill every session and refuse new ones until `unlock` (survives restarts)
    Lockdown(control::ReasonArg),
    /// Lift the lockdown
    Unlock(control::ReasonArg),
    /// Events, alerts and operator actions from the journal (--follow for live)
    Events(events::EventsArgs),
    /// Behavioural baselines per role: learn from the journal, show, check a session
    #[command(subcommand)]
    Baseline(baseline::BaselineCommand),
    /// A session from the journal: its process tree, files, connections, alerts, and end
    Replay(replay::ReplayArgs),
    /// Check the journal
    #[command(subcommand)]
    Journal(journal::JournalCommand),
    /// A session's supervisor, spawned by the daemon for `run` (internal)
    #[command(hide = true)]
    Supervise,
    /// One technique of the escape corpus, run inside a session by `profile test` (internal)
    #[command(name = "__escape", hide = true)]
    Escape {
        technique: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The shared eBPF monitor: which instances are pinned, and unloading them
    #[command(subcommand)]
    Monitor(monitor::MonitorCommand),
    /// Print the JSON Schema of a file `run` writes
    Schema {
        #[arg(value_enum)]
        which: schema::Which,
    },
}

/// Runs the command; returns the process exit status.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let config = cli.config;
    // Commands whose output is read by people and pipes end quietly when
    // the reader goes away (`| head`), as command-line tools do; the daemon,
    // `run` and the supervisor keep SIGPIPE ignored and see EPIPE instead.
    if matches!(
        cli.command,
        Command::Events(_) | Command::Replay(_) | Command::Ps(_) | Command::Baseline(_) | Command::Schema { .. } | Command::Journal(_) | Command::Profile(_) | Command::Monitor(_)
    ) {
        // SAFETY: restoring the default disposition of SIGPIPE; no handler is involved.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Run(args) => run::run(args, config.as_deref()),
        Command::Profile(cmd) => profile::run(cmd, config.as_deref()),
        Command::Doctor(args) => doctor::run(args),
        Command::Schema { which } => schema::run(which),
        Command::Monitor(cmd) => monitor::run(cmd),
        Command::Supervise => run::supervise(config.as_deref()),
        Command::Escape { technique, args } => Ok(crate::corpus::inside::main(&technique, &args)),
        Command::Journal(cmd) => journal::run(cmd, config.as_deref()),
        Command::Events(args) => events::run(args, config.as_deref()),
        Command::Replay(args) => replay::run(args, config.as_deref()),
        Command::Baseline(cmd) => baseline::run(cmd, config.as_deref()),
        Command::Daemon => {
            let host = load_host_config(config.as_deref())?;
            let socket = std::env::var_os("AGENT_GUARD_SOCKET").map(PathBuf::from).unwrap_or_else(|| host.socket.clone());
            crate::daemon::run(host, config.as_deref(), &socket)?;
            Ok(0)
        }
        Command::Ps(args) => control::ps(args, config.as_deref()),
        Command::Kill(args) => control::kill(args, config.as_deref()),
        Command::Freeze(args) => control::freeze(args, config.as_deref(), true),
        Command::Resume(args) => control::freeze(args, config.as_deref(), false),
        Command::Lockdown(args) => control::lockdown(args, config.as_deref()),
        Command::Unlock(args) => control::unlock(args, config.as_deref()),
    }
}

/// Loads the host config named by `--config`, `$AGENT_GUARD_CONFIG`, or the default path.
pub fn load_host_config(flag: Option<&std::path::Path>) -> anyhow::Result<HostConfig> {
    let (path, explicit) = match (flag, std::env::var_os("AGENT_GUARD_CONFIG")) {
        (Some(p), _) => (p.to_owned(), true),
        (None, Some(p)) => (PathBuf::from(p), true),
        (None, None) => (PathBuf::from(host::DEFAULT_CONFIG_PATH), false),
    };
    Ok(HostConfig::load(&path, explicit)?)
}

/// An error and its causes on one line each, escaped for the terminal.
pub fn render_error(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    // Profile text and paths may come from anywhere; keep newlines, escape the rest.
    out.lines().map(crate::escape::for_terminal).collect::<Vec<_>>().join("\n")
}
