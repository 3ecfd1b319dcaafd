//! Project tasks. `cargo xtask setup` installs the toolchain, `build`,
//! `run -- ARGS`, `test`, and `bench startup`.

mod bench;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every prerequisite (idempotent): LLVM dev packages, nightly + rust-src, bpf-linker, bubblewrap
    Setup,
    /// Set up, then build agent-guard (release) with its eBPF programs
    Build,
    /// Set up, build, then run agent-guard with ARGS (as root for `run`)
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, then run the unit tests, the root integration tests against the real kernel, and `profile test` on every shipped profile
    Test {
        /// Extra arguments for the test harness (e.g. a test name filter)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks (measured in one run, recorded in docs/benchmarks.md)
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::setup(),
        Task::Build => {
            setup::setup()?;
            build()
        }
        Task::Run { args } => {
            setup::setup()?;
            build()?;
            let status = Command::new(target_dir().join("release/agent-guard")).args(&args).status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test { args } => {
            setup::setup()?;
            test(&args)
        }
        Task::Bench { which } => {
            setup::setup()?;
            build()?;
            bench::run(which)
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

/// Where cargo puts what it builds: `$CARGO_TARGET_DIR`, else `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Runs a command, failing with its name when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn build() -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "agent-guard"]))
}

fn test(args: &[String]) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("the integration tests enforce real kernel controls and must run as root; run `sudo cargo xtask test`");
    }
    // Unit tests of every crate (no root needed, but run here too).
    run(cargo().args(["test", "--workspace", "--exclude", "agent-guard-tests", "--"]).args(args))?;
    // The integration tests drive the real binary.
    run(cargo().args(["build", "-p", "agent-guard"]))?;
    let bin = target_dir().join("debug/agent-guard");
    run(cargo()
        .args(["test", "-p", "agent-guard-tests", "--"])
        .args(args)
        .env("AGENT_GUARD_BIN", &bin)
        .env("RUST_BACKTRACE", "1"))?;
    // Filtered runs (`cargo xtask test memfd`) are for one test, not the whole suite.
    if args.is_empty() {
        profile_tests(&bin)?;
    }
    Ok(())
}

/// `agent-guard profile test` on every shipped profile: the escape corpus
/// in real sessions of each. Any ESCAPED fails the run (after all of them
/// ran, so that the log shows every profile).
fn profile_tests(bin: &Path) -> Result<()> {
    let mut profiles: Vec<PathBuf> = std::fs::read_dir(root().join("profiles"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    profiles.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    profiles.sort();
    // The sessions journal into a directory of their own, not the host's.
    let scratch = std::env::temp_dir().join(format!("xtask-profile-test-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let config = scratch.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "runtime_dir = {:?}\nstate_dir = {:?}\nsocket = {:?}\n[journal]\ndir = {:?}\n",
            scratch.join("run"),
            scratch.join("state"),
            scratch.join("control.sock"),
            scratch.join("journal")
        ),
    )?;
    let mut failed = Vec::new();
    for profile in &profiles {
        eprintln!("$ agent-guard profile test --profile {}", profile.display());
        let status = Command::new(bin).env("AGENT_GUARD_CONFIG", &config).args(["profile", "test", "--profile"]).arg(profile).status()?;
        if !status.success() {
            failed.push(format!("{} ({status})", profile.display()));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if !failed.is_empty() {
        bail!("profile test found escapes (or could not judge) in: {}", failed.join(", "));
    }
    Ok(())
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
