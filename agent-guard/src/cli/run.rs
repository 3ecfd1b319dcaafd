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
    /// Run the session in this process even when a daemon listens (root only)
    #[arg(long)]
    pub embedded: bool,
    /// Record everything and confine nothing but the limits, to learn a
    /// profile from (`profile suggest`); flagged in ps, the journal and the
    /// summary. Root and operators only
    #[arg(long)]
    pub observe: bool,
    /// Record the agent's stdout and stderr with their timing (secret values
    /// the profile sets are redacted in the recording); `replay --io` plays it back
    #[arg(long)]
    pub record_io: bool,
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

/// Everything a session needs from whoever started it, in embedded mode
/// (this process) or through the daemon (the client, via the supervisor).
pub struct Inputs {
    pub profile: PathBuf,
    pub workdir: PathBuf,
    /// The uid that started the session.
    pub owner_uid: u32,
    /// A non-root client of the daemon: its agent runs as it when the
    /// profile names no `run_as` user (never as root), and it must itself
    /// have the rights on the working directory the profile grants there.
    pub client: Option<crate::daemon::launch::Owner>,
    pub argv: Vec<OsString>,
    pub agent: Option<String>,
    pub best_effort: bool,
    pub freeze_grace: std::time::Duration,
    pub quiet: bool,
    pub events: Option<std::fs::File>,
    pub summary: Option<std::fs::File>,
    pub env: Vec<(OsString, OsString)>,
    pub observe: bool,
    pub record_io: bool,
    /// Run by the daemon's supervisor: see [`RunRequest::linger_hooks`].
    pub linger_hooks: bool,
}

pub fn run(args: RunArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    let host = super::load_host_config(config)?;
    if !args.embedded {
        let socket = super::control::socket_path(config);
        if let Some(stream) = crate::daemon::client::connect(&socket) {
            return via_daemon(stream, &socket, args);
        }
    }
    anyhow::ensure!(
        caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false),
        "`run` without a daemon needs root (it creates the session's cgroup and mount namespace): \
         start `agent-guard daemon`, or run this as root"
    );
    let create = |path: &Option<PathBuf>, what: &str| -> anyhow::Result<Option<std::fs::File>> {
        path.as_ref()
            .map(|p| std::fs::File::create(p).with_context(|| format!("creating the {what} file {}", p.display())))
            .transpose()
    };
    let inputs = Inputs {
        profile: profile_path(args.role.as_deref(), args.profile.as_deref())?,
        workdir: workdir(args.workdir.as_deref())?,
        owner_uid: nix::unistd::getuid().as_raw(),
        client: None,
        argv: args.command,
        agent: args.agent,
        best_effort: args.best_effort,
        freeze_grace: args.freeze_grace.0,
        quiet: args.quiet,
        events: create(&args.events_json, "events")?,
        summary: create(&args.summary_json, "summary")?,
        env: std::env::vars_os().collect(),
        observe: args.observe,
        record_io: args.record_io,
        linger_hooks: false,
    };
    execute(&host, inputs)
}

/// A non-root client names the working directory, and `{workdir}` in the
/// profile grants rights there, possibly to an agent running as another
/// user (`run_as`): the client must have those rights itself, or a role
/// running as root would let it write wherever it points `--workdir`.
fn client_may_use_workdir(client: &crate::daemon::launch::Owner, policy: &crate::profile::Policy) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = &policy.workdir;
    let meta = std::fs::metadata(dir).with_context(|| format!("working directory {}", dir.display()))?;
    let mode = meta.mode();
    let bits = if meta.uid() == client.uid {
        mode >> 6
    } else if meta.gid() == client.gid || client.groups.contains(&meta.gid()) {
        mode >> 3
    } else {
        mode
    } & 0o7;
    let writes_there = policy.filesystem.write.iter().any(|w| w.starts_with(dir));
    let reads_there = policy.filesystem.read.iter().chain(&policy.filesystem.exec).any(|r| r.starts_with(dir) || dir.starts_with(r));
    anyhow::ensure!(
        bits & 0o5 == 0o5 || !reads_there,
        "uid {} may not read the working directory {} itself, and the role would let its agent read there",
        client.uid,
        dir.display()
    );
    anyhow::ensure!(
        bits & 0o2 != 0 || !writes_there,
        "uid {} may not write in the working directory {} itself, and the role would let its agent write there",
        client.uid,
        dir.display()
    );
    Ok(())
}

/// Runs one session to its end; returns the status to exit with.
pub fn execute(host: &crate::profile::HostConfig, inputs: Inputs) -> anyhow::Result<i32> {
    let ctx = Context { workdir: inputs.workdir.clone(), caller_uid: inputs.owner_uid };
    let mut policy = profile::load(&inputs.profile, &ctx, host)?;
    if let Some(client) = &inputs.client {
        client_may_use_workdir(client, &policy)?;
    }
    if let (None, Some((uid, gid))) = (&policy.run_as, inputs.client.as_ref().map(|c| (c.uid, c.gid))) {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map_or_else(|| uid.to_string(), |u| u.name);
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)).ok().flatten().map_or_else(|| gid.to_string(), |g| g.name);
        policy.run_as = Some(profile::RunAs { user, uid, group, gid });
    }
    let role = policy.role.clone();
    let cgroups = CgroupRoots::discover(Path::new("/proc/self/mountinfo"))?;
    let open_journal = || {
        crate::journal::Journal::open(&host.journal.dir, host.journal.max_file_size.0)
            .with_context(|| format!("opening the journal {} (set [journal] dir in the host config)", host.journal.dir.display()))
    };
    let journal = open_journal()?;
    let outcome = session::run(RunRequest {
        policy,
        argv: inputs.argv,
        agent: inputs.agent.clone(),
        best_effort: inputs.best_effort,
        runtime_dir: host.runtime_dir.clone(),
        cgroups,
        freeze_grace: inputs.freeze_grace,
        events_json: inputs.events,
        env: inputs.env,
        owner_uid: inputs.owner_uid,
        observe: inputs.observe,
        record_io: inputs.record_io,
        journal: Some(journal),
        state_dir: host.state_dir.clone(),
        journald_socket: Some(host.journald_socket.clone()),
        linger_hooks: inputs.linger_hooks,
    })?;
    let mut summary = crate::session::summary::Summary::new(&outcome, &role, inputs.agent.as_deref());
    summary.observe = inputs.observe;
    open_journal()?
        .append(&[crate::journal::Entry {
            kind: "session_end".to_owned(),
            session: Some(outcome.session.clone()),
            data: serde_json::to_value(&summary)?,
        }])
        .context("journaling the end of the session")?;
    if let Some(mut f) = inputs.summary {
        summary.write_to(&mut f).context("writing the summary file")?;
    }
    if !inputs.quiet {
        eprint!("{}", summary.human());
    }
    Ok(outcome.status())
}

/// `run` through the daemon: the daemon's supervisor runs the session with
/// our stdio; we forward signals and exit with the agent's status.
fn via_daemon(stream: std::os::unix::net::UnixStream, socket: &Path, args: RunArgs) -> anyhow::Result<i32> {
    use crate::daemon::protocol::RunSpec;
    let utf8 = |what: &str, s: OsString| -> anyhow::Result<String> {
        s.into_string().map_err(|s| anyhow::anyhow!("{what} {s:?} is not UTF-8, which `run` through the daemon needs (`--embedded` as root runs it)"))
    };
    let argv = args.command.into_iter().map(|a| utf8("argument", a)).collect::<anyhow::Result<Vec<_>>>()?;
    let profile = match &args.profile {
        Some(p) => Some(std::path::absolute(p).with_context(|| format!("profile {}", p.display()))?),
        None => None,
    };
    let spec = RunSpec {
        role: args.role,
        profile,
        workdir: workdir(args.workdir.as_deref())?,
        agent: args.agent,
        best_effort: args.best_effort,
        freeze_grace_ms: args.freeze_grace.0.as_millis() as u64,
        quiet: args.quiet,
        events_json: args.events_json.is_some(),
        summary_json: args.summary_json.is_some(),
        observe: args.observe,
        record_io: args.record_io,
        argv,
        // Only what can travel as JSON text; the profile picks what it passes.
        env: std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect(),
    };
    let mut files = Vec::new();
    for (path, what) in [(&args.events_json, "events"), (&args.summary_json, "summary")] {
        if let Some(p) = path {
            files.push(std::fs::File::create(p).with_context(|| format!("creating the {what} file {}", p.display()))?);
        }
    }
    Ok(crate::daemon::client::run_session(stream, socket, spec, &files)?)
}

/// `agent-guard supervise`: a session's supervisor, spawned by the daemon
/// for a `run` request (see [`crate::daemon::launch`]); not for people.
pub fn supervise(config: Option<&Path>) -> anyhow::Result<i32> {
    use std::os::fd::FromRawFd;

    use crate::daemon::launch;
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "`supervise` is the daemon's, and runs as root");
    let launch = launch::read_launch().map_err(anyhow::Error::msg)?;
    // SAFETY: the daemon placed the connection at CONNECTION_FD; it is owned here only.
    let connection = unsafe { std::os::unix::net::UnixStream::from_raw_fd(launch::CONNECTION_FD) };
    crate::daemon::client::forward_signals_to_self(&connection)?;
    let mut next_fd = launch::FIRST_FILE_FD;
    let mut take = |wanted: bool| {
        wanted.then(|| {
            let fd = next_fd;
            next_fd += 1;
            // SAFETY: the daemon placed the client's files at consecutive fds from FIRST_FILE_FD.
            unsafe { std::fs::File::from_raw_fd(fd) }
        })
    };
    let spec = launch.spec;
    let events = take(spec.events_json);
    let summary = take(spec.summary_json);
    let status = (|| -> anyhow::Result<i32> {
        let host = super::load_host_config(config)?;
        let owner = &launch.owner;
        let inputs = Inputs {
            profile: profile_path(spec.role.as_deref(), spec.profile.as_deref())?,
            workdir: workdir(Some(&spec.workdir))?,
            owner_uid: owner.uid,
            client: (owner.uid != 0).then(|| owner.clone()),
            argv: spec.argv.iter().map(OsString::from).collect(),
            agent: spec.agent.clone(),
            best_effort: spec.best_effort,
            freeze_grace: std::time::Duration::from_millis(spec.freeze_grace_ms),
            quiet: spec.quiet,
            events,
            summary,
            env: spec.env.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect(),
            observe: spec.observe,
            record_io: spec.record_io,
            linger_hooks: true,
        };
        execute(&host, inputs)
    })();
    let status = status.unwrap_or_else(|err| {
        eprintln!("agent-guard: {}", super::render_error(&err));
        125
    });
    crate::daemon::client::send_exit(&connection, status);
    Ok(status)
}
