//! `agent-guard baseline learn|show|check`: behavioural baselines per role
//! (see [`crate::baseline`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::{
    baseline::{self, Baseline},
    escape::for_terminal,
    history,
    profile::BaselinePolicy,
};

#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Learn a role's baseline from its sessions in the journal
    Learn(LearnArgs),
    /// Print a role's baseline
    Show(ShowArgs),
    /// Score a finished session against its role's baseline (exit 1 when it deviates)
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct LearnArgs {
    #[arg(long)]
    pub role: String,
    /// Only sessions started at or after this date (YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, or ms since the epoch)
    #[arg(long, value_parser = history::parse_since)]
    pub since: Option<u64>,
    /// Journal directory [default: the host config's]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[arg(long)]
    pub role: String,
    /// Print the stored JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The session id (or a unique prefix)
    #[arg(long)]
    pub session: String,
    /// Robust standard deviations allowed [default: the role profile's `[baseline] sensitivity`]
    #[arg(long)]
    pub sensitivity: Option<f64>,
    #[arg(long)]
    pub json: bool,
    /// Journal directory [default: the host config's]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The `[baseline]` settings of `role`'s profile, as a session in `workdir` would get them.
fn role_policy(role: &str, workdir: Option<&str>, host: &crate::profile::HostConfig) -> BaselinePolicy {
    let load = || -> anyhow::Result<BaselinePolicy> {
        let path = crate::profile::find(role)?;
        let workdir = workdir.map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
        let ctx = crate::profile::Context { workdir, caller_uid: 0 };
        Ok(crate::profile::load(&path, &ctx, host)?.baseline)
    };
    load().unwrap_or_default()
}

fn journal_dir(dir: &Option<PathBuf>, host: &crate::profile::HostConfig) -> PathBuf {
    dir.clone().unwrap_or_else(|| host.journal.dir.clone())
}

pub fn run(cmd: BaselineCommand, config: Option<&Path>) -> anyhow::Result<i32> {
    super::control::authorize()?;
    let host = super::load_host_config(config)?;
    match cmd {
        BaselineCommand::Learn(args) => {
            let filter = history::Filter { role: Some(args.role.clone()), since_ms: args.since, ended_only: true, ..Default::default() };
            let all = history::load(&journal_dir(&args.dir, &host), &filter)?;
            let (good, skipped): (Vec<_>, Vec<_>) = all.into_iter().partition(baseline::learnable);
            anyhow::ensure!(!good.is_empty(), "no session of role `{}` to learn from in the journal ({} skipped: ended by a limit, an operator or a deviation)", for_terminal(&args.role), skipped.len());
            let b = baseline::learn(&args.role, &good);
            let path = baseline::save(&host.state_dir, &b)?;
            println!(
                "learned the baseline of `{}` from {} session(s) ({} skipped) into {}",
                for_terminal(&args.role),
                good.len(),
                skipped.len(),
                path.display()
            );
            let min = role_policy(&args.role, None, &host).min_sessions;
            if (good.len() as u32) < min {
                println!("note: the role's profile wants {min} sessions before alerting; live checks stay off until then");
            }
            Ok(0)
        }
        BaselineCommand::Show(args) => {
            let b = baseline::load(&host.state_dir, &args.role)?
                .with_context(|| format!("no baseline for role `{}`: `agent-guard baseline learn --role {0}`", for_terminal(&args.role)))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&b)?);
            } else {
                show(&b);
            }
            Ok(0)
        }
        BaselineCommand::Check(args) => {
            let h = history::one(&journal_dir(&args.dir, &host), &args.session)?;
            let b = baseline::load(&host.state_dir, &h.role)?
                .with_context(|| format!("no baseline for role `{}`", for_terminal(&h.role)))?;
            let mut policy = role_policy(&h.role, h.workdir().as_deref(), &host);
            if let Some(s) = args.sensitivity {
                anyhow::ensure!(s.is_finite() && s > 0.0, "--sensitivity must be a positive number");
                policy.sensitivity = s;
            }
            let deviations = baseline::check(&b, &policy, &h);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&deviations)?);
            } else if deviations.is_empty() {
                println!("session {} stays within the baseline of `{}` ({} sessions)", for_terminal(&h.session), for_terminal(&h.role), b.sessions.len());
            } else {
                println!("session {} deviates from the baseline of `{}` ({} sessions):", for_terminal(&h.session), for_terminal(&h.role), b.sessions.len());
                for d in &deviations {
                    println!("  {}", d.human());
                }
            }
            Ok(if deviations.is_empty() { 0 } else { 1 })
        }
    }
}

fn show(b: &Baseline) {
    println!("baseline of `{}`: {} session(s), learned {}", for_terminal(&b.role), b.sessions.len(), super::events::utc(b.learned_ms));
    println!("\n{:18} {:>10} {:>10} {:>10} {:>10} {:>10}", "total", "median", "MAD", "p90", "max", "bound@4");
    for (name, s) in &b.totals {
        println!("{name:18} {:>10.0} {:>10.1} {:>10.0} {:>10.0} {:>10.0}", s.median, s.mad, s.p90, s.max, s.bound_for(name, 4.0));
    }
    let list = |title: &str, items: Vec<String>| {
        println!("\n{title} ({})", items.len());
        for i in items {
            println!("  {}", for_terminal(&i));
        }
    };
    list("executables", b.executables.iter().cloned().collect());
    list("exec pairs", b.exec_pairs.iter().map(|(a, c)| format!("{a} -> {c}")).collect());
    list("destinations", b.destinations.iter().cloned().collect());
    match &b.reads {
        Some(r) => list("read locations", r.iter().cloned().collect()),
        None => println!("\nread locations: not recorded (the role's profile has no [baseline] section, or record_reads = false)"),
    }
    list("write locations", b.writes.iter().cloned().collect());
}
