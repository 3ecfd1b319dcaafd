//! The session supervisor: one session's lifecycle. It prepares the
//! sandbox, forks the agent into it, forwards signals, enforces
//! `wall_time`, and when the agent exits ends the whole session: every
//! process left in the session cgroup is killed and the cgroup removed.
//!
//! `agent-guard run` uses it in-process; the daemon will drive the same code.

/// Prints one line on stderr with a single write, so that it is never torn
/// by what the agent writes to the same terminal at the same moment.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("{}\n", format_args!($($arg)*));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

pub mod guardian;
pub mod io;
pub mod registry;
pub mod summary;

use std::{
    ffi::OsString,
    fs,
    io::Read as _,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use agent_guard_common::session::{Counter, COUNTERS};

use crate::{
    journal::{Entry, Journal},
    monitor::{events::Event, Monitor},
    profile::Policy,
    sandbox::{
        self, cgroup::{CgroupRoots, SessionCgroup}, child::{self, ChildPlan}, landlock, masks, seccomp, Gap, SandboxError,
    },
};

/// Runtime directory for mask sources and, later, the daemon's socket.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/agent-guard";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the host cannot enforce everything role `{role}` asks for; refusing to run (use --best-effort to run anyway):\n{}", list(gaps))]
    Unenforceable { role: String, gaps: Vec<Gap> },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("session {session}: the sandbox could not be set up: {source}")]
    Child { session: String, #[source] source: child::ChildError },
    #[error("{what}: {source}")]
    Sys { what: &'static str, #[source] source: std::io::Error },
    #[error(transparent)]
    Journal(crate::journal::JournalError),
    #[error("agent-guard is in lockdown (since {since}, by uid {by_uid}{}): no session may start until `agent-guard unlock`", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Lockdown { since: String, by_uid: u32, reason: Option<String> },
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
}

fn list(gaps: &[Gap]) -> String {
    gaps.iter().map(|g| format!("  - {g}")).collect::<Vec<_>>().join("\n")
}

fn last_err(what: &'static str) -> SessionError {
    SessionError::Sys { what, source: std::io::Error::last_os_error() }
}

/// What to run, and how.
#[derive(Debug)]
pub struct RunRequest {
    pub policy: Policy,
    pub argv: Vec<OsString>,
    pub agent: Option<String>,
    pub best_effort: bool,
    pub runtime_dir: PathBuf,
    pub cgroups: CgroupRoots,
    /// How long a session frozen by `on_limit = "freeze"` waits for an
    /// operator before it is killed.
    pub freeze_grace: Duration,
    /// Where to write the session's events as JSON lines (opened by the
    /// caller: through the daemon, by the client, with its own rights).
    pub events_json: Option<fs::File>,
    /// The caller's environment, from which `[env] pass` takes values.
    pub env: Vec<(OsString, OsString)>,
    /// The uid that started the session (through the daemon: the client's).
    pub owner_uid: u32,
    /// Record everything, confine nothing but the limits (for learning a
    /// profile): no landlock, every destination allowed, reads reported.
    pub observe: bool,
    /// Record the agent's stdout and stderr (`--record-io`).
    pub record_io: bool,
    /// The journal that records the session (start, events, alerts).
    pub journal: Option<Journal>,
    /// Where the lockdown switch lives.
    pub state_dir: PathBuf,
    /// The systemd journal's socket: alerts also go there when it exists.
    pub journald_socket: Option<PathBuf>,
    /// Leave the monitor's system-wide hooks attached if this is the last
    /// session to end (the daemon detaches them once the host has been
    /// idle for `[monitor] hooks_linger`).
    pub linger_hooks: bool,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedBy {
    /// The agent's first process exited.
    Exit,
    /// `wall_time` ran out.
    WallTime,
    /// A counter passed its limit (and `on_limit` killed the session, or
    /// froze it and nobody resumed it within the grace period).
    Limit(Counter),
    /// An operator ended it (`agent-guard kill` or `lockdown`).
    Operator,
    /// It left its role's baseline (`on_deviation = "kill"`, or "freeze"
    /// and nobody resumed it); the deviation's kind.
    Deviation(&'static str),
}

impl std::fmt::Display for EndedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndedBy::Exit => f.write_str("exit"),
            EndedBy::WallTime => f.write_str("wall_time"),
            EndedBy::Limit(c) => write!(f, "limit:{}", c.name()),
            EndedBy::Operator => f.write_str("operator"),
            EndedBy::Deviation(kind) => write!(f, "deviation:{kind}"),
        }
    }
}

impl serde::Serialize for EndedBy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub session: String,
    /// The agent's exit code, or `None` when it died of a signal.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub ended_by: EndedBy,
    pub duration: Duration,
    /// Controls that were not enforced (only with `--best-effort`).
    pub unenforced: Vec<Gap>,
    /// The monitor's counters at the end (indexed by `Counter`), when it ran.
    pub counters: Option<[u64; COUNTERS]>,
    /// Events user space dropped because its recorder fell behind (beside
    /// those the kernel had no room for, in `counters`).
    pub events_dropped: u64,
}

impl Outcome {
    /// The status `agent-guard run` exits with: the agent's code, or 128+N
    /// for death by signal N.
    pub fn status(&self) -> i32 {
        match (self.exit_code, self.signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 1,
        }
    }
}

/// A random session id: 16 hex digits.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // getrandom cannot fail for 8 bytes once the pool is initialised; fall back to time and pid.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = (t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32).to_ne_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn has_cap(cap: caps::Capability) -> bool {
    caps::has_cap(None, caps::CapSet::Effective, cap).unwrap_or(false)
}

/// Whether this caller can make the private mount namespace for `deny` masks.
fn can_mask() -> bool {
    has_cap(caps::Capability::CAP_SYS_ADMIN)
}

/// Whether this caller and kernel can build the session's filesystem view.
fn can_build_view() -> bool {
    can_mask() && sandbox::view::kernel_has_mount_setattr()
}

/// Everything the profile asks for that this host (or this caller) cannot
/// enforce, before the monitor is loaded (see [`sandbox::monitor_gaps`]).
pub fn enforcement_gaps(policy: &Policy, cgroups: &CgroupRoots) -> Vec<Gap> {
    let mut gaps = landlock::gaps(landlock::kernel_abi(), policy);
    use sandbox::cgroup::Controller;
    for (controller, limit, set) in [
        (Controller::Memory, "memory", policy.limits.memory.is_some()),
        (Controller::Pids, "processes", policy.limits.processes.is_some()),
    ] {
        if set && cgroups.controller_home(controller).is_none() {
            gaps.push(Gap::new(format!("[limits] {limit}"), format!("the {} cgroup controller", controller.name())));
        }
    }
    if !policy.filesystem.deny.is_empty() && !can_mask() {
        gaps.push(Gap::new("[filesystem] deny masks", "CAP_SYS_ADMIN (run as root)"));
    }
    if !can_build_view() {
        gaps.push(Gap::new(
            "the filesystem view: nothing mapped executable outside `exec` and the system library directories, read-only `read`/`exec` entries inside `write` trees, a private /proc, read-only /proc/sys and /sys, nosuid everywhere",
            "CAP_SYS_ADMIN (run as root) and mount_setattr (Linux 5.12)",
        ));
    }
    gaps
}

/// Runs one session to its end.
pub fn run(mut req: RunRequest) -> Result<Outcome, SessionError> {
    if let Some(l) = registry::read_lockdown(&req.state_dir) {
        return Err(SessionError::Lockdown { since: format!("{} ms after the epoch", l.since_ms), by_uid: l.by_uid, reason: l.reason });
    }
    let mut journal = req.journal.take();
    let req = req;
    // Observing: the network opens to every destination (seccomp lets IP
    // sockets be made, the monitor allows and reports each connect), and
    // landlock is left out below.
    let observed;
    let policy = if req.observe {
        let mut p = req.policy.clone();
        let any = crate::profile::PortRange { lo: 1, hi: u16::MAX };
        p.network = crate::profile::NetPolicy {
            connect: ["0.0.0.0/0", "::/0"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .map(|net| crate::profile::Destination { net, ports: any, protocol: crate::profile::Protocol::Both })
                .collect(),
            bind: vec![any],
            // Every socket file may be connected to (the monitor's SESSION_UNIX_ANY), and each connect is reported.
            unix: Vec::new(),
        };
        observed = p;
        say!("agent-guard: OBSERVE MODE: this session is recorded, not confined: landlock and the network allowlist are off; seccomp, deny masks, capabilities, cgroup and counter limits stay on");
        &observed
    } else {
        &req.policy
    };
    let mut gaps = enforcement_gaps(policy, &req.cgroups);
    if !gaps.is_empty() && !req.best_effort {
        return Err(SessionError::Unenforceable { role: policy.role.clone(), gaps });
    }
    let session = new_session_id();

    // Everything the child needs, prepared before fork.
    let env = sandbox::build_env(policy, req.env.iter().cloned(), &session, req.agent.as_deref());
    let Some(command) = req.argv.first() else {
        return Err(SandboxError::NoCommand.into());
    };
    let exe = sandbox::resolve_command(command, &env)?;
    let loaders = landlock::interpreters(policy, &exe);
    // The view is a gap when it cannot be built (refused above unless --best-effort).
    let view = if can_build_view() {
        let host = sandbox::view::HostMounts::read(Path::new("/proc/self/mountinfo")).map_err(SandboxError::from)?;
        let opts = sandbox::view::Options { confine: !req.observe };
        Some(sandbox::view::plan(policy, &loaders, &policy.network.unix, &host, opts).map_err(SandboxError::from)?)
    } else {
        None
    };
    let abi = landlock::kernel_abi();
    let (landlock_fd, landlock_late, notes) = if abi >= 1 && !req.observe {
        let built = landlock::build(policy, abi, &loaders, view.is_some()).map_err(SandboxError::from)?;
        (Some(built.fd), built.late, built.notes)
    } else {
        (None, Vec::new(), Vec::new())
    };
    for note in notes.iter().chain(view.iter().flat_map(|v| v.notes.iter())) {
        say!("agent-guard: note: {}", crate::escape::for_terminal(note));
    }
    // Without CAP_SYS_ADMIN the masks are a gap (refused above unless --best-effort).
    let deny_masks = if !can_mask() {
        masks::Masks::default()
    } else {
        let mut deny = policy.filesystem.deny.clone();
        deny.extend(view.iter().flat_map(|v| v.masked.iter().cloned()));
        masks::plan(&deny, &req.runtime_dir).map_err(SandboxError::from)?
    };
    let seccomp = seccomp::compile(&policy.syscalls.allow, &policy.network).map_err(SandboxError::from)?;
    use std::os::unix::ffi::OsStrExt;
    let workdir = sandbox::cstring("working directory", policy.workdir.as_os_str().as_bytes())?;
    let exe = sandbox::cstring("command path", exe.as_os_str().as_bytes())?;
    let argv = req.argv.iter().map(|a| sandbox::cstring("argument", a.as_bytes())).collect::<Result<_, _>>()?;
    let envp = sandbox::env_cstrings(&env)?;
    // From here on, a failure must not leave the session's cgroup behind.
    let mut cgroup = SessionCgroup::create(&req.cgroups, &session, &policy.limits).map_err(SandboxError::from)?;
    // The session is registered with the monitor before the agent joins its cgroup.
    let monitor = match Monitor::attach(policy, &cgroup.v2, policy.baseline.record_reads || req.observe, req.observe) {
        Ok(mut m) => {
            m.detach_when_idle = !req.linger_hooks;
            if !m.unix_hooks && !req.observe {
                gaps.push(crate::monitor::unix_gap("which this kernel did not load (`agent-guard doctor` says why)"));
            }
            tracing::debug!(session = %session, loaded_instance = m.loaded_instance, "monitor registration took {:?}", m.load_time);
            Some(m)
        }
        Err(e) => {
            let full = crate::cli::render_error(&anyhow::Error::from(e));
            tracing::debug!("loading the monitor: {full}");
            // The verifier's log can run to pages: keep the gist, `doctor` and AGENT_GUARD_LOG=debug tell more.
            let why = match crate::monitor::before_verifier_log(&full) {
                Some(gist) => format!("{gist} (the verifier refused it; AGENT_GUARD_LOG=debug shows its log)"),
                None => full.lines().next().unwrap_or_default().to_owned(),
            };
            gaps.extend(sandbox::monitor_gaps(policy, &why));
            if gaps.is_empty() {
                say!("agent-guard: warning: the eBPF monitor could not be loaded, so this session has no counters: {why}");
            }
            None
        }
    };
    if !gaps.is_empty() && !req.best_effort {
        let _ = cgroup.remove();
        return Err(SessionError::Unenforceable { role: policy.role.clone(), gaps });
    }
    for gap in &gaps {
        say!("agent-guard: NOT ENFORCED (--best-effort): {gap}");
    }
    let cap_last = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    let capture = if req.record_io {
        Some(io::Capture::new().map_err(|source| SessionError::Sys { what: "creating the --record-io pipes", source })?)
    } else {
        None
    };
    let plan = ChildPlan {
        output: capture.as_ref().and_then(io::Capture::child_fds),
        cgroup_procs: std::mem::take(&mut cgroup.procs),
        workdir,
        mount_ns: view.is_some() || !deny_masks.mounts.is_empty(),
        view: view.map(|v| v.steps).unwrap_or_default(),
        masks: deny_masks,
        drop_bounding: has_cap(caps::Capability::CAP_SETPCAP),
        cap_last,
        run_as: policy.run_as.as_ref().map(|r| (r.uid, r.gid)),
        landlock: landlock_fd,
        landlock_late,
        seccomp,
        exe,
        argv,
        envp,
    };
    let mut monitor = monitor;
    let leftovers = registry::Registry::new(&req.runtime_dir).files(&session).to_vec();
    let guardian = match guardian::Guardian::spawn(&cgroup, &leftovers, monitor.as_ref().map(|m| m.cgroup_id)) {
        Ok(g) => g,
        Err(source) => {
            let _ = cgroup.remove();
            return Err(SessionError::Sys { what: "starting the session's guardian", source });
        }
    };
    if let Some(j) = &mut journal {
        let argv: Vec<String> = req.argv.iter().map(|a| crate::escape::bytes_for_terminal(a.as_bytes())).collect();
        j.append(&[Entry {
            kind: "session_start".to_owned(),
            session: Some(session.clone()),
            data: serde_json::json!({
                "role": policy.role,
                "environment": policy.environment,
                "agent": req.agent,
                "uid": req.owner_uid,
                "run_as": policy.run_as.as_ref().map(|r| r.uid),
                "argv": argv,
                "workdir": policy.workdir,
                "profile": policy.source,
                "profile_sha256": policy.sha256,
                "cgroup_id": monitor.as_ref().map(|m| m.cgroup_id),
                "unenforced": gaps.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "observe": req.observe,
            }),
        }])
        .map_err(|e| {
            // Nothing ran; the guardian, at our exit, finds nothing left to clean.
            let _ = cgroup.remove();
            journal_err(e)
        })?;
    }
    let result = supervise(&req, &plan, &cgroup, &session, Recording { monitor: monitor.as_mut(), journal, capture });
    registry::Registry::new(&req.runtime_dir).remove(&session);
    let cleanup = cgroup.kill_all(reap_any).and_then(|()| {
        // Orphans re-parented to us (we are their subreaper) are dead now; collect
        // them so that none lingers as a zombie after the session.
        reap_all();
        cgroup.remove()
    });
    if cleanup.is_ok() {
        guardian.release();
    }
    let mut outcome = result?;
    cleanup.map_err(SandboxError::from)?;
    outcome.unenforced = gaps;
    if let Some(m) = &monitor {
        outcome.counters = m.counters().ok();
    }
    Ok(outcome)
}

/// Signals the supervisor handles itself; blocked while it runs.
pub const HANDLED: [libc::c_int; 9] = [
    libc::SIGCHLD,
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGALRM,
];

/// A signal set holding `signals`.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise and fill it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks `signals` in the calling thread (and the threads it spawns
/// later); returns the mask it had.
pub fn block(signals: &[libc::c_int]) -> libc::sigset_t {
    let set = sigset(signals);
    // SAFETY: sigset_t is plain data; pthread_sigmask fills `old` from this thread's mask.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

fn reap_any() {
    loop {
        // SAFETY: waitpid with WNOHANG on any child; the status is not needed.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

fn supervise(
    req: &RunRequest,
    plan: &ChildPlan,
    cgroup: &SessionCgroup,
    session: &str,
    recording: Recording<'_>,
) -> Result<Outcome, SessionError> {
    let set = sigset(&HANDLED);
    let old = block(&HANDLED);
    // Orphans of the agent are re-parented to us, so we can reap them.
    // SAFETY: a prctl that takes no pointers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // The agent starts with the signals we forward unblocked, whatever our
    // caller blocked (a supervisor spawned by the daemon blocks them from
    // its first instruction): a forwarded signal must not wait forever.
    let mut child_mask = old;
    for sig in HANDLED {
        // SAFETY: editing a local, initialised sigset.
        unsafe { libc::sigdelset(&mut child_mask, sig) };
    }
    let result = supervise_blocked(req, plan, cgroup, session, SignalMasks { handled: &set, old: &child_mask }, recording);
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    result
}

/// What watches and records the session: its monitor registration, the
/// journal, and the output capture of `--record-io`.
struct Recording<'m> {
    monitor: Option<&'m mut Monitor>,
    journal: Option<Journal>,
    capture: Option<io::Capture>,
}

/// The signals the supervisor handles (blocked) and the mask it found.
struct SignalMasks<'a> {
    handled: &'a libc::sigset_t,
    old: &'a libc::sigset_t,
}

/// What the supervisor loop waits for next.
enum Wake {
    Signal(libc::signalfd_siginfo),
    Events,
    Timeout,
}

/// Waits on the signalfd and the monitor's ring buffer until `deadline`.
fn wait(sfd: &OwnedFd, events_fd: Option<std::os::fd::RawFd>, deadline: Option<Instant>) -> Result<Wake, SessionError> {
    let mut fds = vec![libc::pollfd { fd: sfd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    if let Some(fd) = events_fd {
        fds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    }
    let timeout_ms = match deadline {
        Some(d) => d.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32,
        None => -1,
    };
    // SAFETY: poll on a local array of pollfds.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(Wake::Timeout);
        }
        return Err(SessionError::Sys { what: "poll", source: e });
    }
    if fds[0].revents & libc::POLLIN != 0 {
        // SAFETY: signalfd_siginfo is plain data; read fills it whole or fails.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading one record into the local struct.
        let r = unsafe { libc::read(sfd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
        if r == size as isize {
            return Ok(Wake::Signal(info));
        }
    }
    if fds.len() > 1 && fds[1].revents & libc::POLLIN != 0 {
        return Ok(Wake::Events);
    }
    Ok(Wake::Timeout)
}

fn supervise_blocked(
    req: &RunRequest,
    plan: &ChildPlan,
    cgroup: &SessionCgroup,
    session: &str,
    masks: SignalMasks<'_>,
    recording: Recording<'_>,
) -> Result<Outcome, SessionError> {
    let SignalMasks { handled: set, old } = masks;
    let Recording { mut monitor, journal, capture } = recording;
    let (read_end, write_end) = io::pipe().map_err(|source| SessionError::Sys { what: "creating the report pipe", source })?;
    // SAFETY: signalfd on the signals blocked above; the fd is ours.
    let sfd = unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if sfd < 0 {
        return Err(last_err("creating the signalfd"));
    }
    // SAFETY: the fd was just created and is owned here only.
    let sfd = unsafe { OwnedFd::from_raw_fd(sfd) };
    let args = plan.exec_args();
    let started = Instant::now();
    // SAFETY: the child only runs `child::enter`, which makes raw system calls on data
    // prepared above and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_err("fork"));
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child; `args` comes from `plan`.
        unsafe { child::enter(plan, &args, write_end.as_raw_fd(), old) }
    }
    drop(write_end);
    // The agent's output is read (and passed on) from now on; the agent holds the only write ends.
    let io_thread = capture.map(|c| c.start(req.state_dir.join("io").join(format!("{session}.jsonl")), secrets_of(&req.policy), started));
    let mut report = Vec::new();
    let _ = fs::File::from(read_end).read_to_end(&mut report);
    if let Some(err) = child::decode_report(&report, plan) {
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return Err(SessionError::Child { session: session.to_owned(), source: err });
    }

    let registry = registry::Registry::new(&req.runtime_dir);
    registry.add(&registry::SessionRecord {
        session: session.to_owned(),
        role: req.policy.role.clone(),
        agent: req.agent.clone(),
        uid: req.owner_uid,
        supervisor_pid: std::process::id(),
        main_pid: pid as u32,
        cgroup: cgroup.v2.clone(),
        cgroup_id: monitor.as_ref().map(|m| m.cgroup_id),
        observe: req.observe,
        started_ms: registry::now_ms(),
    })?;
    let health = monitor.as_ref().map(|m| (m.load_time, m.ring_bytes));
    let sink = Background::start(Recorder::open(req.events_json.as_ref(), journal, session, req.journald_socket.clone())?);
    sink.send(move |r| r.health("start", health, 0));
    let wall_deadline = req.policy.limits.wall_time.map(|w| started + w.0);
    // Set while the session is frozen by a limit or a deviation: when the
    // grace period ends, and what the session ends by then.
    let mut frozen_until: Option<(Instant, EndedBy)> = None;
    let baseline = live_baseline(req, session);
    let mut checker = baseline.as_ref().map(|b| crate::baseline::Checker::new(b, &req.policy.baseline, Some(req.policy.workdir.display().to_string())));
    let mut next_counter_check = Instant::now();
    let mut poll_every = EVENT_POLL;
    let mut ended_by = EndedBy::Exit;
    let who = format!(
        "session {session} (role {}{})",
        req.policy.role,
        req.agent.as_deref().map(|a| format!(", agent {}", crate::escape::for_terminal(a))).unwrap_or_default()
    );
    let status = loop {
        let now = Instant::now();
        if sink.failed() {
            // Recording failed (say, the journal's disk is full): nothing may go on unrecorded.
            say!("agent-guard: {who}: recording the session failed; ending it");
            break end_session(cgroup, pid)?;
        }
        if let Some((until, why)) = frozen_until {
            if now >= until {
                let what = why.to_string();
                sink.send(move |r| r.alert(serde_json::json!({ "alert": "freeze_grace_expired", "frozen_by": what })));
                say!("agent-guard: {who}: nobody resumed the frozen session within {}; ending it", crate::profile::HumanDuration(req.freeze_grace));
                ended_by = why;
                break end_session(cgroup, pid)?;
            }
        }
        // Counters move without events (writes, reads): look at them twice a second.
        if let (Some(c), Some(m)) = (checker.as_mut(), monitor.as_deref()) {
            if now >= next_counter_check {
                next_counter_check = now + COUNTER_CHECK;
                if let Ok(values) = m.counters() {
                    let found = counter_deviations(c, &values, started.elapsed());
                    if let Some(why) = on_deviations(req, &who, cgroup, &sink, found, &mut frozen_until)? {
                        ended_by = why;
                        break end_session(cgroup, pid)?;
                    }
                }
            }
        }
        if wall_deadline.is_some_and(|d| now >= d) {
            ended_by = EndedBy::WallTime;
            let limit = req.policy.limits.wall_time.map(|w| w.to_string());
            sink.send(move |r| r.alert(serde_json::json!({ "alert": "wall_time", "limit": limit })));
            say!(
                "agent-guard: {who}: wall_time {} reached; ending the session",
                req.policy.limits.wall_time.map(|w| w.to_string()).unwrap_or_default()
            );
            break end_session(cgroup, pid)?;
        }
        if frozen_until.is_some() && !cgroup.is_frozen() {
            // An operator thawed it (`agent-guard resume`): the limit stands, the kill does not.
            frozen_until = None;
            say!("agent-guard: {who}: resumed by an operator");
            sink.send(|r| r.alert(serde_json::json!({ "alert": "resumed" })));
        }
        let deadline = match (wall_deadline, frozen_until) {
            (Some(a), Some((b, _))) => Some(a.min(b)),
            (a, b) => a.or(b.map(|(b, _)| b)),
        };
        let deadline = match checker {
            Some(_) => Some(deadline.map_or(next_counter_check, |d| d.min(next_counter_check))),
            None => deadline,
        };
        // Ordinary events do not wake us (the kernel side submits them
        // without a wakeup, limits excepted): collect them this often.
        let deadline = match monitor {
            Some(_) => {
                let next_drain = now + poll_every;
                Some(deadline.map_or(next_drain, |d| d.min(next_drain)))
            }
            None => deadline,
        };
        // While frozen, look for an operator's resume a few times a second.
        let deadline = match frozen_until {
            Some(_) => Some(deadline.map_or(now + Duration::from_millis(200), |d| d.min(now + Duration::from_millis(200)))),
            None => deadline,
        };
        match wait(&sfd, monitor.as_ref().map(|m| m.events_fd()), deadline)? {
            Wake::Timeout | Wake::Events => {
                let Some(m) = monitor.as_deref_mut() else { continue };
                let batch = m.drain();
                // Idle sessions are looked at less and less often, busy ones every EVENT_POLL.
                poll_every = if batch.is_empty() { (poll_every * 2).min(EVENT_POLL_IDLE) } else { EVENT_POLL };
                // Act on limits first: the journal's fsync must not delay a kill.
                let mut end_now = None;
                let mut alerts = Vec::new();
                for event in &batch {
                    if let Event::Limit { counter, freeze, value, limit, .. } = *event {
                        let first_freeze = freeze && frozen_until.is_none();
                        if first_freeze {
                            cgroup.set_frozen(true).map_err(SandboxError::from)?;
                            frozen_until = Some((Instant::now() + req.freeze_grace, EndedBy::Limit(counter)));
                        } else if !freeze && end_now.is_none() {
                            end_now = Some(counter);
                        }
                        let action = if freeze { "freeze" } else { "kill" };
                        say!("agent-guard: {who}: limit {} passed ({value} > {limit})", counter.name());
                        if first_freeze {
                            say!(
                                "agent-guard: {who}: FROZEN for an operator; it will be killed in {} (resume needs the daemon)",
                                crate::profile::HumanDuration(req.freeze_grace)
                            );
                        }
                        alerts.push(serde_json::json!({
                            "alert": "limit", "counter": counter.name(), "value": value, "limit": limit, "action": action,
                        }));
                    }
                }
                let mut end_by = end_now.map(EndedBy::Limit);
                if let Some(c) = checker.as_mut() {
                    let found = event_deviations(c, session, &batch);
                    let why = on_deviations(req, &who, cgroup, &sink, found, &mut frozen_until)?;
                    end_by = end_by.or(why);
                }
                let status = match end_by {
                    Some(why) => {
                        ended_by = why;
                        Some(end_session(cgroup, pid)?)
                    }
                    None => None,
                };
                let dropped = sink.dropped();
                let lost = m.counters().ok().map(|c| c[Counter::EventsLost as usize] + dropped);
                let n = batch.len() as u64;
                sink.send_events(n, move |r| {
                    if let Some(lost) = lost {
                        r.lost(lost)?;
                    }
                    for event in &batch {
                        r.event(event)?;
                    }
                    for alert in alerts {
                        r.alert(alert)?;
                    }
                    Ok(())
                });
                if let Some(st) = status {
                    break st;
                }
            }
            Wake::Signal(info) => {
                let sig = info.ssi_signo as libc::c_int;
                if sig == libc::SIGCHLD {
                    if let Some(st) = reap_until(pid) {
                        break st;
                    }
                    continue;
                }
                // Signals from the terminal (SI_KERNEL) reach the agent directly, being in our
                // foreground process group; forward only what someone sent to us explicitly.
                if info.ssi_code <= 0 && info.ssi_pid != pid as u32 {
                    // SAFETY: kill(2) on our own child.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
    };
    if let Some(ending) = registry.ending(session) {
        ended_by = EndedBy::Operator;
        say!(
            "agent-guard: {who}: ended by an operator (uid {}, {}){}",
            ending.by_uid,
            ending.action,
            ending.reason.as_deref().map(|r| format!(": {}", crate::escape::for_terminal(r))).unwrap_or_default()
        );
    }
    let mut events_lost = 0;
    if let Some(m) = monitor {
        // Events still queued when the session ended.
        let rest = m.drain();
        for event in &rest {
            if let Event::Limit { counter, value, limit, .. } = *event {
                say!("agent-guard: {who}: limit {} passed ({value} > {limit})", counter.name());
                if ended_by == EndedBy::Exit {
                    ended_by = EndedBy::Limit(counter);
                }
            }
        }
        // The last events and the final counters (a burst may fit between two checks).
        if let Some(c) = checker.as_mut() {
            let mut found = event_deviations(c, session, &rest);
            if let Ok(values) = m.counters() {
                found.extend(counter_deviations(c, &values, started.elapsed()));
            }
            // The session is over: report, nothing left to freeze or kill.
            report_deviations(req, &who, &sink, &found);
        }
        sink.send(move |r| {
            for event in &rest {
                r.event(event)?;
            }
            Ok(())
        });
        events_lost = m.counters().map_or(0, |c| c[Counter::EventsLost as usize]) + sink.dropped();
    }
    // Every writer of the agent's output is gone with the session: the copy ends.
    if let Some(t) = io_thread {
        match t.join() {
            Ok(Ok(rec)) => sink.send(move |r| r.entry("io", serde_json::to_value(&rec).unwrap_or_default())),
            Ok(Err(e)) => say!("agent-guard: {who}: recording the agent's output failed: {e}"),
            Err(_) => say!("agent-guard: {who}: recording the agent's output failed"),
        }
    }
    sink.send(move |r| {
        r.health("end", health, events_lost)?;
        r.finish(events_lost)
    });
    let dropped = sink.dropped();
    sink.finish()?;
    let (exit_code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Ok(Outcome {
        session: session.to_owned(),
        exit_code,
        signal,
        ended_by,
        duration: started.elapsed(),
        unenforced: Vec::new(),
        counters: None,
        events_dropped: dropped,
    })
}

/// Where a session's events go: the `--events-json` file and the journal.
/// Journal entries are committed (durably) batch by batch.
struct Recorder {
    out: Option<std::io::BufWriter<fs::File>>,
    journal: Option<Journal>,
    pending: Vec<Entry>,
    session: String,
    /// Events lost that an `events_lost` record has reported already.
    lost_reported: u64,
    /// The systemd journal's socket, where alerts also go when it exists.
    journald: Option<PathBuf>,
}

fn journal_err(source: crate::journal::JournalError) -> SessionError {
    SessionError::Journal(source)
}

impl Recorder {
    fn open(events: Option<&fs::File>, journal: Option<Journal>, session: &str, journald: Option<PathBuf>) -> Result<Recorder, SessionError> {
        let out = match events {
            Some(f) => Some(std::io::BufWriter::new(f.try_clone().map_err(|source| SessionError::Sys { what: "duplicating the events file", source })?)),
            None => None,
        };
        Ok(Recorder { out, journal, pending: Vec::new(), session: session.to_owned(), lost_reported: 0, journald })
    }

    fn write(&mut self, record: &crate::monitor::record::EventRecord) -> Result<(), SessionError> {
        use std::io::Write as _;
        if let Some(out) = &mut self.out {
            serde_json::to_writer(&mut *out, record)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|source| SessionError::Sys { what: "writing the events file", source })?;
        }
        if self.journal.is_some() {
            self.pending.push(Entry {
                kind: "event".to_owned(),
                session: Some(self.session.clone()),
                data: serde_json::to_value(record).unwrap_or_default(),
            });
        }
        Ok(())
    }

    fn event(&mut self, event: &Event) -> Result<(), SessionError> {
        if self.out.is_none() && self.journal.is_none() {
            return Ok(());
        }
        self.write(&crate::monitor::record::EventRecord::from_event(&self.session, event))
    }

    /// A `health` record: whether the monitor runs (`monitor` gives its load
    /// time and ring size), what loading it took.
    fn health(&mut self, phase: &str, monitor: Option<(Duration, u32)>, events_lost: u64) -> Result<(), SessionError> {
        if self.out.is_none() && self.journal.is_none() {
            return Ok(());
        }
        let body = crate::monitor::record::EventBody::Health {
            phase: phase.to_owned(),
            monitor: monitor.is_some(),
            load_ms: monitor.filter(|_| phase == "start").map(|(t, _)| t.as_millis() as u64),
            ring_bytes: monitor.map(|(_, r)| r),
            events_lost,
        };
        self.write(&crate::monitor::record::EventRecord::health(&self.session, body))
    }

    /// An alert for the operator, journaled at once.
    /// A record of `kind` about the session, committed durably.
    fn entry(&mut self, kind: &str, data: serde_json::Value) -> Result<(), SessionError> {
        self.pending.push(Entry { kind: kind.to_owned(), session: Some(self.session.clone()), data });
        self.commit_with(true)
    }

    fn alert(&mut self, data: serde_json::Value) -> Result<(), SessionError> {
        if let Some(socket) = &self.journald {
            crate::journal::journald::send_alert(socket, &self.session, &data);
        }
        self.pending.push(Entry { kind: "alert".to_owned(), session: Some(self.session.clone()), data });
        self.commit_with(true)
    }

    /// Reports, as an `events_lost` record in the stream, losses since the
    /// last report: `total` is the kernel's running count.
    fn lost(&mut self, total: u64) -> Result<(), SessionError> {
        if total > self.lost_reported {
            let delta = total - self.lost_reported;
            self.lost_reported = total;
            self.write(&crate::monitor::record::EventRecord::events_lost(&self.session, delta))?;
        }
        Ok(())
    }

    /// Writes the batch to the journal; `durable` waits for the disk (alerts
    /// and the end do; the event stream does not, so that the journal never
    /// slows the supervisor's reaction to the next limit).
    fn commit_with(&mut self, durable: bool) -> Result<(), SessionError> {
        if let Some(j) = &mut self.journal {
            if durable {
                j.append(&self.pending).map_err(journal_err)?;
            } else {
                j.append_unsynced(&self.pending).map_err(journal_err)?;
            }
        }
        self.pending.clear();
        Ok(())
    }

    fn commit(&mut self) -> Result<(), SessionError> {
        self.commit_with(false)
    }

    /// Reports the last losses and flushes everything to disk: the events
    /// file and the journal survive a crash of what follows.
    fn finish(&mut self, events_lost: u64) -> Result<(), SessionError> {
        use std::io::Write as _;
        self.lost(events_lost)?;
        self.commit_with(true)?;
        if let Some(out) = &mut self.out {
            out.flush()
                .and_then(|()| out.get_ref().sync_all())
                .map_err(|source| SessionError::Sys { what: "writing the events file", source })?;
        }
        Ok(())
    }
}

/// Events the recorder may fall behind by (about 20 MiB at most) before
/// further ones are dropped, and counted.
const RECORDER_BACKLOG: u64 = 262_144;

/// Runs the [`Recorder`] on its own thread, so that serialising, hashing
/// and journaling events never slows the loop that drains the ring buffer
/// and acts on limits. Jobs run in order; the first failure stops the
/// recording and raises `failed`, which makes the supervisor end the
/// session (nothing unrecorded goes on).
struct Background {
    tx: Option<std::sync::mpsc::Sender<Job>>,
    /// Events queued for the recorder and not yet written.
    queued: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Events dropped in user space because the recorder fell too far behind.
    dropped: std::cell::Cell<u64>,
    worker: Option<std::thread::JoinHandle<Result<(), SessionError>>>,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

type Job = Box<dyn FnOnce(&mut Recorder) -> Result<(), SessionError> + Send>;

/// Events reach the journal in appends at most this often (alerts and the
/// session's end at once): event-heavy sessions append a few times a
/// second rather than once per exec.
const GROUP_COMMIT: Duration = Duration::from_millis(50);

impl Background {
    fn start(mut recorder: Recorder) -> Background {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let queued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&failed);
        let worker = std::thread::spawn(move || {
            let fail = |e| {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Err(e)
            };
            // Run every job waiting, then write them to the journal together: one
            // append per burst, however many small batches the drain loop sent,
            // and at most one per GROUP_COMMIT (each append rewrites the
            // journal's head file). Alerts and the end commit durably at once,
            // inside their jobs.
            let mut last_commit = Instant::now().checked_sub(GROUP_COMMIT).unwrap_or_else(Instant::now);
            while let Ok(job) = rx.recv() {
                if let Err(e) = job(&mut recorder) {
                    return fail(e);
                }
                loop {
                    while let Ok(job) = rx.try_recv() {
                        if let Err(e) = job(&mut recorder) {
                            return fail(e);
                        }
                    }
                    let wait = GROUP_COMMIT.saturating_sub(last_commit.elapsed());
                    if wait.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(wait) {
                        Ok(job) => {
                            if let Err(e) = job(&mut recorder) {
                                return fail(e);
                            }
                        }
                        Err(_) => break,
                    }
                }
                last_commit = Instant::now();
                if let Err(e) = recorder.commit() {
                    return fail(e);
                }
            }
            Ok(())
        });
        Background { tx: Some(tx), queued, dropped: std::cell::Cell::new(0), worker: Some(worker), failed }
    }

    /// Queues a job that must run (health, alerts, the end): waits for room.
    fn send(&self, job: impl FnOnce(&mut Recorder) -> Result<(), SessionError> + Send + 'static) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Box::new(job));
        }
    }

    /// Queues a batch of `events` events, or drops it (counted) when the
    /// recorder is too far behind: the drain loop never waits, and a flood
    /// cannot grow the supervisor's memory without bound.
    fn send_events(&self, events: u64, job: impl FnOnce(&mut Recorder) -> Result<(), SessionError> + Send + 'static) {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(tx) = &self.tx else { return };
        if self.queued.load(SeqCst) + events > RECORDER_BACKLOG {
            self.dropped.set(self.dropped.get() + events);
            return;
        }
        self.queued.fetch_add(events, SeqCst);
        let queued = std::sync::Arc::clone(&self.queued);
        let sent = tx.send(Box::new(move |r: &mut Recorder| {
            let result = job(r);
            queued.fetch_sub(events, SeqCst);
            result
        }));
        if sent.is_err() {
            self.dropped.set(self.dropped.get() + events);
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    fn failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for every job; returns the first failure.
    fn finish(mut self) -> Result<(), SessionError> {
        drop(self.tx.take());
        match self.worker.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(SessionError::Sys { what: "recording the session", source: std::io::Error::other("the recorder thread panicked") }),
            None => Ok(()),
        }
    }
}

/// Kills the whole session and returns the first process's wait status.
/// Variables a profile sets that hold no secret; every other `[env] set`
/// value of four bytes or more is redacted by `--record-io` (a name need
/// not look secret to hold one: `OPENAI_KEY`, `DB_URL`).
const ORDINARY_VARIABLES: [&str; 14] =
    ["PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TMPDIR", "TZ", "USER", "LOGNAME", "SHELL", "EDITOR", "PAGER", "PWD", "GIT_TERMINAL_PROMPT"];

/// What `--record-io` redacts: (name, value) of the profile's `[env] set`
/// entries but ordinary variables, `LC_*` and values under four bytes
/// (which would redact every "1" in the output).
fn secrets_of(policy: &Policy) -> Vec<(String, Vec<u8>)> {
    policy
        .env
        .set
        .iter()
        .filter(|(name, value)| {
            crate::profile::looks_secret(name) || (!ORDINARY_VARIABLES.contains(&name.as_str()) && !name.starts_with("LC_") && value.len() >= 4)
        })
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name.clone(), value.clone().into_bytes()))
        .collect()
}

/// How often the supervisor collects events from the ring buffer: event
/// submissions do not wake it, so that an event-heavy agent does not pay a
/// context switch per exec; limit events do (the kernel side forces the
/// wakeup), and a full ring buffer loses events counted, never silently.
const EVENT_POLL: Duration = Duration::from_millis(10);

/// The longest wait between two collections, reached by doubling while a
/// session makes no events (a thousand idle sessions should not cost a
/// core); 100 ms of the fastest flood fits the ring buffer.
const EVENT_POLL_IDLE: Duration = Duration::from_millis(100);

/// How often a session with a baseline has its counters checked.
const COUNTER_CHECK: Duration = Duration::from_millis(500);

/// The role's baseline when the session should be checked against it:
/// learned from at least `min_sessions` sessions. Says why not otherwise.
fn live_baseline(req: &RunRequest, session: &str) -> Option<crate::baseline::Baseline> {
    let role = &req.policy.role;
    match crate::baseline::load(&req.state_dir, role) {
        Ok(Some(b)) if b.sessions.len() as u32 >= req.policy.baseline.min_sessions => Some(b),
        Ok(Some(b)) => {
            tracing::debug!(session, "the baseline of {role} has {} sessions, fewer than min_sessions {}: not checking", b.sessions.len(), req.policy.baseline.min_sessions);
            None
        }
        Ok(None) => None,
        Err(e) => {
            say!("agent-guard: warning: session {session}: the baseline of role {} cannot be read, so it is not checked: {e}", crate::escape::for_terminal(role));
            None
        }
    }
}

/// What `events` of the session show that its baseline does not, checked
/// on the records the journal gets (the offline check reads the same).
fn event_deviations(c: &mut crate::baseline::Checker<'_>, session: &str, events: &[Event]) -> Vec<crate::baseline::Deviation> {
    events.iter().flat_map(|event| c.record(&crate::monitor::record::EventRecord::from_event(session, event))).collect()
}

/// What the counters `values` show `elapsed` into the session.
fn counter_deviations(c: &mut crate::baseline::Checker<'_>, values: &[u64; COUNTERS], elapsed: Duration) -> Vec<crate::baseline::Deviation> {
    let named = Counter::ALL.iter().map(|k| (k.name().to_owned(), values[*k as usize])).collect();
    c.counters(&named, elapsed.as_millis() as u64)
}

/// Reports `found` deviations (stderr, journal, journald) and applies the
/// profile's `on_deviation`: returns why the session must end now, if it must.
fn on_deviations(
    req: &RunRequest,
    who: &str,
    cgroup: &SessionCgroup,
    sink: &Background,
    found: Vec<crate::baseline::Deviation>,
    frozen_until: &mut Option<(Instant, EndedBy)>,
) -> Result<Option<EndedBy>, SessionError> {
    use crate::profile::OnDeviation;
    let Some(first) = found.first() else { return Ok(None) };
    let kind = first.kind;
    report_deviations(req, who, sink, &found);
    match req.policy.baseline.on_deviation {
        OnDeviation::Alert => Ok(None),
        OnDeviation::Kill => Ok(Some(EndedBy::Deviation(kind))),
        OnDeviation::Freeze => {
            if frozen_until.is_none() {
                cgroup.set_frozen(true).map_err(SandboxError::from)?;
                *frozen_until = Some((Instant::now() + req.freeze_grace, EndedBy::Deviation(kind)));
                say!("agent-guard: {who}: FROZEN for an operator; it will be killed in {}", crate::profile::HumanDuration(req.freeze_grace));
            }
            Ok(None)
        }
    }
}

/// Says each deviation on stderr and records it as an alert (journal, journald).
fn report_deviations(req: &RunRequest, who: &str, sink: &Background, found: &[crate::baseline::Deviation]) {
    let action = req.policy.baseline.on_deviation;
    for d in found {
        say!("agent-guard: {who}: DEVIATION: {}", d.human());
    }
    let alerts: Vec<serde_json::Value> = found
        .iter()
        .map(|d| {
            let mut a = d.alert();
            a["action"] = serde_json::json!(action);
            a
        })
        .collect();
    if !alerts.is_empty() {
        sink.send(move |r| {
            for a in alerts {
                r.alert(a)?;
            }
            Ok(())
        });
    }
}

fn end_session(cgroup: &SessionCgroup, pid: libc::pid_t) -> Result<libc::c_int, SessionError> {
    cgroup.kill_all(|| {}).map_err(SandboxError::from)?;
    let mut st = 0;
    // SAFETY: waiting for our own child, now killed.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    Ok(st)
}

/// Waits for every remaining child. Called once the session cgroup is empty,
/// so each of them has exited already and this does not block for long.
fn reap_all() {
    // SAFETY: blocking wait for any child until none is left (ECHILD).
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
}

/// Reaps exited children; returns the main child's status once it exited.
fn reap_until(main: libc::pid_t) -> Option<libc::c_int> {
    let mut main_status = None;
    loop {
        let mut st = 0;
        // SAFETY: non-blocking wait for any child.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid <= 0 {
            return main_status;
        }
        if pid == main {
            main_status = Some(st);
        }
    }
}
