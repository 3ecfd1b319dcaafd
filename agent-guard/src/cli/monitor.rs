//! `agent-guard monitor status|unload`: the shared eBPF instance. It is
//! loaded by the daemon or the first `run` and stays pinned until unloaded
//! here (its cgroup hooks attached; its system-wide tracepoints only while
//! a session runs); an instance still serving sessions is kept unless
//! `--force`, which leaves those sessions unwatched.

use clap::{Args, Subcommand};

use crate::monitor::shared;

#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// List the pinned instances and the sessions each serves
    Status(StatusArgs),
    /// Unpin (and so detach) every instance that serves no session
    Unload(UnloadArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UnloadArgs {
    /// Also unload instances that still serve sessions: their counters,
    /// limits and network rules stop at once
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, serde::Serialize)]
struct Instance {
    version: String,
    path: String,
    /// This binary's object (else an older or newer agent-guard's).
    current: bool,
    /// Cgroup ids of the sessions it serves.
    sessions: Vec<u64>,
    /// Whether its system-wide tracepoints are attached (only while it
    /// serves a session: an idle instance costs other processes nothing).
    system_hooks: bool,
}

pub fn run(cmd: MonitorCommand) -> anyhow::Result<i32> {
    match cmd {
        MonitorCommand::Status(args) => {
            let instances: Vec<Instance> = shared::instances()
                .into_iter()
                .map(|(dir, current)| Instance {
                    version: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                    sessions: shared::Shared::open(&dir).map(|s| s.sessions()).unwrap_or_default(),
                    system_hooks: shared::hooks_attached(&dir),
                    path: dir.display().to_string(),
                    current,
                })
                .collect();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&instances)?);
            } else if instances.is_empty() {
                println!("no instance loaded (the daemon or the next `run` loads {})", shared::version());
            } else {
                for i in &instances {
                    let which = if i.current { "this binary's" } else { "another version's" };
                    let hooks = if i.system_hooks { "system-wide hooks attached" } else { "system-wide hooks detached" };
                    println!("{}  {which}, {} session(s), {hooks}, pinned at {}", i.version, i.sessions.len(), i.path);
                }
            }
            Ok(0)
        }
        MonitorCommand::Unload(args) => {
            let outcome = shared::unload(args.force)?;
            for dir in &outcome.removed {
                println!("unloaded {}", dir.display());
            }
            for (dir, n) in &outcome.kept {
                println!("kept {}: it serves {n} running session(s) (--force unloads it anyway)", dir.display());
            }
            Ok(if outcome.kept.is_empty() { 0 } else { 1 })
        }
    }
}
