//! Benchmarks. Not tests: they measure and print, and the numbers go to
//! docs/benchmarks.md by hand, with how they were taken.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;

use crate::root;

#[derive(Subcommand)]
pub enum Which {
    /// Start-up: `agent-guard run --role readonly-summarizer -- /bin/true` beside bare /bin/true and bubblewrap, with another session running and on an idle host
    Startup {
        /// Runs per variant
        #[arg(long, default_value_t = 200)]
        runs: usize,
    },
    /// Kill switch: time from `agent-guard kill --session` to the last process gone, sessions of 1, 100 and 1,000 processes
    Kill {
        /// Runs per size
        #[arg(long, default_value_t = 7)]
        runs: usize,
    },
    /// Monitor overhead: three workloads bare, inside a session, and outside any session with the monitor loaded (idle, and while another session runs)
    Overhead {
        /// Runs per workload and variant
        #[arg(long, default_value_t = 11)]
        runs: usize,
    },
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Startup { runs } => startup(runs),
        Which::Overhead { runs } => overhead(runs),
        Which::Kill { runs } => kill(runs),
    }
}

/// What a benchmark that runs sessions needs: the release binaries, a
/// scratch directory, and its profile written there.
struct Setup {
    ag: std::path::PathBuf,
    probe: std::path::PathBuf,
    dir: std::path::PathBuf,
    profile: std::path::PathBuf,
}

/// Builds ag-probe and writes `profile` (with `@PROBE@` filled in) as `NAME.toml`
/// in a fresh scratch directory.
fn setup(name: &str, profile: &str) -> Result<Setup> {
    crate::run(std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args(["build", "--release", "-p", "agent-guard-tests", "--bin", "ag-probe"]))?;
    let ag = crate::target_dir().join("release/agent-guard");
    let probe = crate::target_dir().join("release/ag-probe");
    let dir = std::env::temp_dir().join(format!("ag-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The file is named after the role it defines (the profile checker insists).
    let role = profile
        .lines()
        .find_map(|l| l.trim().strip_prefix("name = ").map(|v| v.trim_matches('"').to_owned()))
        .with_context(|| format!("no role name in the {name} profile"))?;
    let path = dir.join(format!("{role}.toml"));
    std::fs::write(&path, profile.replace("@PROBE@", &probe.to_string_lossy()))?;
    Ok(Setup { ag, probe, dir, profile: path })
}

/// A session of `setup`'s profile that sleeps (an hour at most) until it
/// is sent SIGTERM: while it runs, the monitor's system-wide hooks are attached.
fn idle_session(setup: &Setup) -> Result<std::process::Child> {
    let mut child = Command::new(&setup.ag)
        .args(["run", "--quiet", "--profile"])
        .arg(&setup.profile)
        .arg("--workdir")
        .arg(&setup.dir)
        .arg("--")
        .arg(&setup.probe)
        .args(["sleep", "3600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    // A session that could not start would make every "session running" figure a lie.
    std::thread::sleep(Duration::from_millis(500));
    if let Some(status) = child.try_wait()? {
        bail!("the idle session of {} ended at once: {status}", setup.profile.display());
    }
    Ok(child)
}

/// The profile the overhead workloads run under: what they need, no more.
const BENCH_PROFILE: &str = r#"[role]
name = "bench"
description = "overhead benchmark workloads"
environment = "bench"

[filesystem]
read = ["/usr", "/lib", "/lib64", "/etc", "/dev/zero", "/dev/urandom", "{workdir}"]
write = ["{workdir}", "/dev/null"]
exec = ["/usr/bin", "/bin", "@PROBE@"]
"#;

fn overhead(runs: usize) -> Result<()> {
    let bench = setup("bench", BENCH_PROFILE)?;
    let Setup { ag, probe, dir, profile } = &bench;
    let out_file = dir.join("dd.out");
    let workloads: [(&str, Vec<String>); 3] = [
        (
            "dd write flood (bs=512 count=200000)",
            ["/usr/bin/dd", "if=/dev/zero", &format!("of={}", out_file.display()), "bs=512", "count=200000", "status=none"]
                .map(String::from)
                .to_vec(),
        ),
        ("sh loop: /bin/cat x300", ["/bin/sh", "-c", "i=0; while [ $i -lt 300 ]; do /bin/cat /dev/null; i=$((i+1)); done"].map(String::from).to_vec()),
        (
            "python3 imports (~1,400 opens)",
            ["/usr/bin/python3", "-c", "import json, email, http.client, asyncio, unittest, decimal"].map(String::from).to_vec(),
        ),
    ];
    let run_args = |inside: bool, workload: &[String]| -> Vec<String> {
        let mut v = Vec::new();
        if inside {
            v.extend([ag.to_string_lossy().into_owned(), "run".into(), "--quiet".into(), "--profile".into(), profile.to_string_lossy().into_owned(), "--workdir".into(), dir.to_string_lossy().into_owned(), "--".into()]);
        }
        v.push(probe.to_string_lossy().into_owned());
        v.push("time".into());
        v.extend(workload.iter().cloned());
        v
    };
    // The monitor stays pinned after a session; "bare" unloads it first
    // (which needs a host with no other session running).
    let unload = || -> Result<()> {
        let out = Command::new(ag).args(["monitor", "unload"]).output()?;
        if !out.status.success() {
            bail!("`agent-guard monitor unload` kept an instance (sessions running?): {}", String::from_utf8_lossy(&out.stdout));
        }
        Ok(())
    };
    // This binary's monitor instance, from `monitor status --json`.
    let current_instance = || -> Result<Option<serde_json::Value>> {
        let out = Command::new(ag).args(["monitor", "status", "--json"]).output()?;
        let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
        Ok(all.into_iter().find(|i| i["current"] == true))
    };
    // Another session, idle, so that the system-wide hooks are attached
    // while a process outside every session works.
    let other_session = || -> Result<std::process::Child> {
        let child = idle_session(&bench)?;
        let started = Instant::now();
        let attached = || -> Result<bool> { Ok(current_instance()?.is_some_and(|i| i["system_hooks"] == true)) };
        while !attached()? {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the idle session never registered with the monitor");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(child)
    };
    // For attribution only: the workload in a session whose system-wide
    // hooks were detached by hand (their pins removed while the session
    // waits to start it), so that it pays the sandbox (landlock, seccomp)
    // and not the monitor's tracepoints. The monitor never runs a session
    // like this on its own.
    let sandbox_only = |workload: &[String]| -> Result<Duration> {
        let _ = std::fs::remove_file(&out_file);
        crate::run(&mut Command::new("sync"))?;
        let mut argv = run_args(true, &[]);
        argv.truncate(argv.len() - 2); // without `probe time`
        argv.extend(["/bin/sh".into(), "-c".into(), "sleep 2; exec \"$@\"".into(), "sh".into(), probe.to_string_lossy().into_owned(), "time".into()]);
        argv.extend(workload.iter().cloned());
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        if let Some(path) = current_instance()?.and_then(|i| i["path"].as_str().map(std::path::PathBuf::from)) {
            std::fs::remove_dir_all(path.join("hooks"))?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("{argv:?} failed: {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        let ns: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| anyhow::anyhow!("{argv:?} printed no time"))?;
        Ok(Duration::from_nanos(ns))
    };
    let mut rows = Vec::new();
    for (name, workload) in &workloads {
        let mut samples: [Vec<Duration>; 5] = Default::default();
        // Interleaved, after one warm-up of each.
        // Before each timed run: the previous run's output removed (else the
        // write flood's O_TRUNC frees 100 MB inside the timing) and the page
        // cache written back (else writeback of the last run competes with
        // this one for the two CPUs).
        let prepare = || -> Result<()> {
            let _ = std::fs::remove_file(&out_file);
            crate::run(&mut Command::new("sync"))
        };
        // The kernel drops a syscall tracepoint's probes after an RCU
        // (tasks-trace) grace period: perf showed them still running ~0.5 s
        // after the links went. Variants measured with the hooks detached
        // wait that out, busy with the same workload (not asleep, which
        // would measure a colder machine).
        let settle = || -> Result<()> {
            let settle = Instant::now();
            while settle.elapsed() < Duration::from_millis(1500) {
                time_inner(&run_args(false, workload), dir)?;
            }
            Ok(())
        };
        for i in 0..=runs {
            unload()?;
            settle()?;
            prepare()?;
            let b = time_inner(&run_args(false, workload), dir)?;
            // Loads the instance again (outside the timed workload).
            prepare()?;
            let s = time_inner(&run_args(true, workload), dir)?;
            // The session is over; its instance stays loaded, idle.
            settle()?;
            prepare()?;
            let idle = time_inner(&run_args(false, workload), dir)?;
            let mut other = other_session()?;
            prepare()?;
            let busy = time_inner(&run_args(false, workload), dir);
            // SIGTERM: the supervisor ends its session.
            Command::new("kill").arg(other.id().to_string()).status()?;
            other.wait()?;
            let busy = busy?;
            let sandbox = sandbox_only(workload)?;
            if i > 0 {
                for (v, x) in samples.iter_mut().zip([b, s, idle, busy, sandbox]) {
                    v.push(x);
                }
            }
        }
        let [b, s, idle, busy, sandbox] = samples.map(|mut v| median(&mut v));
        rows.push((name.to_string(), b, s, idle, busy, sandbox));
    }
    let _ = std::fs::remove_dir_all(dir);
    println!("monitor overhead, median of {runs} interleaved runs ({})", std::env::consts::ARCH);
    println!("| workload | bare | in a session | ratio | in a session, hooks detached (sandbox only) | ratio | outside, no session running | ratio | outside, while a session runs | ratio |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, b, s, idle, busy, sandbox) in rows {
        let r = |x: Duration| x.as_secs_f64() / b.as_secs_f64();
        print!("| {name} | {:.1} ms ", ms(b));
        for x in [s, sandbox, idle, busy] {
            print!("| {:.1} ms | {:.3} ", ms(x), r(x));
        }
        println!("|");
    }
    Ok(())
}

const KILL_PROFILE: &str = r#"[role]
name = "killbench"
description = "kill benchmark sessions"
environment = "bench"

[filesystem]
read = ["/usr", "/lib", "/lib64", "/etc", "{workdir}"]
write = ["/dev/null"]
exec = ["/usr/bin", "/bin", "@PROBE@"]
"#;

fn kill(runs: usize) -> Result<()> {
    let Setup { ag, probe, dir, profile } = setup("killbench", KILL_PROFILE)?;
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("runtime_dir = {:?}\nstate_dir = {:?}\n[journal]\ndir = {:?}\n", dir.join("run"), dir.join("state"), dir.join("journal")),
    )?;
    println!("kill switch: `agent-guard kill --session ID` until the last process is gone, median of {runs} ({})", std::env::consts::ARCH);
    println!("| processes in the session | median | min | max |");
    println!("| ---: | ---: | ---: | ---: |");
    for size in [1usize, 100, 1000] {
        let mut samples = Vec::new();
        for _ in 0..runs {
            // The first process forks size-1 children that wait, then waits itself.
            let script = format!("{} forks {} >/dev/null; exec {} sleep 3600", probe.display(), size - 1, probe.display());
            let mut session = Command::new(&ag)
                .env("AGENT_GUARD_CONFIG", &config)
                .args(["run", "--quiet", "--profile"])
                .arg(&profile)
                .arg("--workdir")
                .arg(&dir)
                .args(["--", "/bin/sh", "-c", &script])
                .stdout(Stdio::null())
                .spawn()?;
            // Wait until the session holds all its processes.
            let waiting = Instant::now();
            let id = loop {
                if waiting.elapsed() > Duration::from_secs(60) {
                    let _ = session.kill();
                    bail!("a session of {size} processes never came up");
                }
                let out = Command::new(&ag).env("AGENT_GUARD_CONFIG", &config).args(["ps", "--json"]).output()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if let Some(id) = text.split("\"session\": \"").nth(1).and_then(|r| r.split('"').next()) {
                    let procs = std::fs::read_to_string(format!("/sys/fs/cgroup/unified/agent-guard/{id}/cgroup.procs"))
                        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/agent-guard/{id}/cgroup.procs")))
                        .unwrap_or_default();
                    if procs.lines().count() >= size {
                        break id.to_owned();
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let start = Instant::now();
            let out = Command::new(&ag).env("AGENT_GUARD_CONFIG", &config).args(["kill", "--session", &id]).output()?;
            let took = start.elapsed();
            if !out.status.success() {
                bail!("kill failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            samples.push(took);
            let _ = session.wait();
        }
        samples.sort();
        println!("| {size} | {:.2} ms | {:.2} ms | {:.2} ms |", ms(samples[samples.len() / 2]), ms(samples[0]), ms(samples[samples.len() - 1]));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs `argv` (ending in `ag-probe time WORKLOAD`) and returns the time
/// the probe measured around the workload alone.
fn time_inner(argv: &[String], dir: &std::path::Path) -> Result<Duration> {
    // The same small environment for every variant: a session rebuilds its
    // environment, and exec-heavy work is measurably slower with a big one.
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("{argv:?} failed: {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let ns: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| anyhow::anyhow!("{argv:?} printed no time"))?;
    Ok(Duration::from_nanos(ns))
}

struct Variant {
    name: &'static str,
    argv: Vec<String>,
    /// `AGENT_GUARD_CONFIG` for this variant.
    config: Option<std::path::PathBuf>,
    samples: Vec<Duration>,
}

fn startup(runs: usize) -> Result<()> {
    let ag = crate::target_dir().join("release/agent-guard").to_string_lossy().into_owned();
    let argv = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // The same run with its journal on tmpfs: what durable journaling (fsync) costs.
    let dir = std::env::temp_dir().join(format!("ag-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tmpfs_config = dir.join("config.toml");
    std::fs::write(&tmpfs_config, format!("[journal]\ndir = {:?}\n", format!("/dev/shm/ag-startup-{}", std::process::id())))?;
    // And through a daemon, which listens on its own socket.
    let daemon_config = dir.join("daemon.toml");
    let socket = dir.join("control.sock");
    std::fs::write(&daemon_config, format!("socket = {socket:?}\n"))?;
    let run = vec![ag.clone(), "run".into(), "--quiet".into(), "--role".into(), "readonly-summarizer".into(), "--".into(), "/bin/true".into()];
    let baselines = || {
        vec![
            Variant { name: "bare /bin/true", argv: argv(&["/bin/true"]), config: None, samples: Vec::new() },
            Variant {
                name: "bwrap --unshare-all",
                argv: argv(&["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all", "/bin/true"]),
                config: None,
                samples: Vec::new(),
            },
        ]
    };

    // 1. A host where a session is running: the monitor's system-wide
    // hooks are attached already, each start only registers.
    let other_setup = setup("startup", BENCH_PROFILE)?;
    let mut other = idle_session(&other_setup)?;
    let other_dir = other_setup.dir;
    let mut daemon = Command::new(&ag).env("AGENT_GUARD_CONFIG", &daemon_config).arg("daemon").stderr(Stdio::null()).spawn()?;
    let waiting = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if waiting.elapsed() > Duration::from_secs(30) {
            let _ = daemon.kill();
            let _ = other.kill();
            bail!("the daemon never listened on {}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut busy = baselines();
    busy.extend([
        Variant { name: "agent-guard run (readonly-summarizer)", argv: run.clone(), config: None, samples: Vec::new() },
        Variant { name: "agent-guard run, journal on tmpfs", argv: run.clone(), config: Some(tmpfs_config), samples: Vec::new() },
        Variant { name: "agent-guard run through the daemon", argv: run.clone(), config: Some(daemon_config), samples: Vec::new() },
    ]);
    let measured = measure_startup(&mut busy, runs);
    // SIGTERM: the daemon exits, the session ends; then the host is idle.
    for pid in [daemon.id(), other.id()] {
        Command::new("kill").arg(pid.to_string()).status()?;
    }
    let _ = daemon.wait();
    let _ = other.wait();
    measured?;

    // 2. An idle host: each start attaches the system-wide hooks, each end
    // detaches them (no daemon keeps them).
    std::thread::sleep(Duration::from_millis(1500));
    let mut idle = baselines();
    idle.push(Variant { name: "agent-guard run (readonly-summarizer), idle host", argv: run, config: None, samples: Vec::new() });
    let measured = measure_startup(&mut idle, runs);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
    let _ = std::fs::remove_dir_all(format!("/dev/shm/ag-startup-{}", std::process::id()));
    measured?;

    println!("start-up, {runs} runs each, interleaved ({})", std::env::consts::ARCH);
    for (title, variants) in [("another session running (hooks attached)", &mut busy), ("idle host (each run attaches and detaches the hooks)", &mut idle)] {
        println!("\n{title}:\n");
        let bwrap = median(&mut variants[1].samples.clone());
        println!("| variant | median | p10 | p90 | ratio to bwrap |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        for v in variants.iter_mut() {
            let med = median(&mut v.samples);
            let pct = |p: usize| v.samples[(v.samples.len() - 1) * p / 100];
            println!(
                "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} |",
                v.name,
                ms(med),
                ms(pct(10)),
                ms(pct(90)),
                med.as_secs_f64() / bwrap.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Warms each variant up, then runs them interleaved so that machine noise
/// hits all alike.
fn measure_startup(variants: &mut [Variant], runs: usize) -> Result<()> {
    for v in variants.iter_mut() {
        for _ in 0..5 {
            time_once(&v.argv, v.config.as_deref())?;
        }
    }
    for _ in 0..runs {
        for v in variants.iter_mut() {
            v.samples.push(time_once(&v.argv, v.config.as_deref())?);
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time_once(argv: &[String], config: Option<&std::path::Path>) -> Result<Duration> {
    let mut cmd = Command::new(&argv[0]);
    if let Some(c) = config {
        cmd.env("AGENT_GUARD_CONFIG", c);
    }
    let start = Instant::now();
    let status = cmd
        .args(&argv[1..])
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{argv:?} failed: {status}");
    }
    Ok(elapsed)
}

