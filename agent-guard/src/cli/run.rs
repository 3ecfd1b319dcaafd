//! `agent-guard run`: start a command as a session of a role.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::{ArgGroup, Args};

use crate::{
    profile::{self, Context},
    sandbox::cgroup::CgroupRoots,
    session::{self, RunRequest},
};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["role", "profile"])))]
pub struct RunArgs {
    /// Role whose profile to use (looked up as ROLE.toml on the profile path)
    #[arg(long)]
    pub role: Option<String>,
    /// Profile file to use instead of a role name
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// The session's working directory, `{workdir}` in the profile [default: current directory]
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Name of the agent, recorded with the session
    #[arg(long)]
    pub agent: Option<String>,
    /// Run even when the host cannot enforce all of the profile; prints what is not enforced
    #[arg(long)]
    pub best_effort: bool,
    /// How long a session frozen by `on_limit = "freeze"` waits for an operator before it is killed
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub freeze_grace: crate::profile::HumanDuration,
    /// Write a JSON summary of the session (counters, how it ended) to FILE when it ends
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Write the session's events (exec, exit, connect, limit, events_lost) to FILE as JSON lines
    #[arg(long, value_name = "FILE")]
    pub events_json: Option<PathBuf>,
    /// Print no summary on stderr
    #[arg(long)]
    pub quiet: bool,
    /// The command to run and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

fn parse_duration(text: &str) -> Result<crate::profile::HumanDuration, String> {
    crate::profile::HumanDuration::parse(text)
}

/// Finds the profile of `--role` or `--profile`.
pub fn profile_path(role: Option<&str>, file: Option<&Path>) -> anyhow::Result<PathBuf> {
    match (role, file) {
        (_, Some(file)) => Ok(file.to_owned()),
        (Some(role), None) => Ok(profile::find(role)?),
        (None, None) => anyhow::bail!("name a role (--role) or a profile file (--profile)"),
    }
}

/// Resolves `--workdir` (default: the current directory) to an absolute, existing directory.
pub fn workdir(arg: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match arg {
        Some(d) => d.to_owned(),
        None => std::env::current_dir().context("reading the current directory")?,
    };
    let dir = dir.canonicalize().with_context(|| format!("working directory {}", dir.display()))?;
    anyhow::ensure!(dir.is_dir(), "working directory {} is not a directory", dir.display());
    Ok(dir)
}

pub fn run(args: RunArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    let host = super::load_host_config(config)?;
    let path = profile_path(args.role.as_deref(), args.profile.as_deref())?;
    let ctx = Context { workdir: workdir(args.workdir.as_deref())?, caller_uid: nix::unistd::getuid().as_raw() };
    let policy = profile::load(&path, &ctx, &host)?;
    let role = policy.role.clone();
    let cgroups = CgroupRoots::discover(Path::new("/proc/self/mountinfo"))?;
    let open_journal = || {
        crate::journal::Journal::open(&host.journal.dir, host.journal.max_file_size.0)
            .with_context(|| format!("opening the journal {} (set [journal] dir in the host config)", host.journal.dir.display()))
    };
    let journal = open_journal()?;
    let outcome = session::run(RunRequest {
        policy,
        argv: args.command,
        agent: args.agent.clone(),
        best_effort: args.best_effort,
        runtime_dir: host.runtime_dir.clone(),
        cgroups,
        freeze_grace: args.freeze_grace.0,
        events_json: args.events_json.clone(),
        journal: Some(journal),
        state_dir: host.state_dir.clone(),
        journald_socket: Some(host.journald_socket.clone()),
    })?;
    let summary = crate::session::summary::Summary::new(&outcome, &role, args.agent.as_deref());
    open_journal()?
        .append(&[crate::journal::Entry {
            kind: "session_end".to_owned(),
            session: Some(outcome.session.clone()),
            data: serde_json::to_value(&summary)?,
        }])
        .context("journaling the end of the session")?;
    if let Some(path) = &args.summary_json {
        summary.write_json(path).with_context(|| format!("writing the summary to {}", path.display()))?;
    }
    if !args.quiet {
        eprint!("{}", summary.human());
    }
    Ok(outcome.status())
}
