//! Helpers for the integration tests: real sessions of the real binary.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// The agent-guard binary under test (`cargo xtask test` sets it).
pub fn agent_guard() -> PathBuf {
    let bin = std::env::var_os("AGENT_GUARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/agent-guard"));
    assert!(bin.is_file(), "agent-guard binary not found at {}: run the tests with `cargo xtask test`", bin.display());
    bin.canonicalize().unwrap_or(bin)
}

pub fn probe() -> &'static str {
    env!("CARGO_BIN_EXE_ag-probe")
}

/// Fails loudly unless running as root: these tests enforce kernel controls.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "integration tests must run as root (cargo xtask test)");
}

/// A session's working directory and a profile for it.
pub struct Case {
    pub dir: tempfile::TempDir,
    pub profile: PathBuf,
}

impl Case {
    /// Writes `toml` as profile `name`. `@PROBE@` becomes the probe's path and
    /// `@WORK@` the working directory. Creates `out/` (writable in the
    /// default profile), `public.txt`, `secret.txt` and `secretdir/key`.
    pub fn new(name: &str, toml: &str) -> Case {
        require_root();
        let dir = tempfile::Builder::new().prefix("ag-test-").tempdir().expect("tempdir");
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("out")).expect("mkdir out");
        std::fs::create_dir_all(work.join("secretdir")).expect("mkdir secretdir");
        std::fs::write(work.join("public.txt"), "public\n").expect("write");
        std::fs::write(work.join("secret.txt"), "secret\n").expect("write");
        std::fs::write(work.join("secretdir/key"), "key\n").expect("write");
        let text = toml.replace("@PROBE@", probe()).replace("@WORK@", &work.to_string_lossy()).replace("@NAME@", name);
        let profile = dir.path().join(format!("{name}.toml"));
        std::fs::write(&profile, text).expect("write profile");
        // Each case keeps its own journal, runtime (registry) and state (lockdown) directories.
        let config = format!(
            "runtime_dir = {:?}\nstate_dir = {:?}\nsocket = {:?}\n[journal]\ndir = {:?}\n",
            dir.path().join("run"),
            dir.path().join("state"),
            dir.path().join("control.sock"),
            dir.path().join("journal")
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        Case { dir, profile }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// `agent-guard ARGS` with this case's host config.
    pub fn ag(&self, args: &[&str]) -> Output {
        let out = Command::new(agent_guard()).env("AGENT_GUARD_CONFIG", self.config()).args(args).output().expect("agent-guard");
        eprintln!("$ agent-guard {args:?}\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        out
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    /// Every record of this case's journal, oldest first; every line must parse.
    pub fn journal_records(&self) -> Vec<serde_json::Value> {
        self.journal_lines(true)
    }

    /// With `strict` false, lines that do not parse are skipped (one being
    /// appended while a session runs may be incomplete).
    fn journal_lines(&self, strict: bool) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(self.journal()) else { return out };
        let mut files: Vec<_> = dir.map(|e| e.expect("entry").path()).collect();
        files.sort();
        for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "jsonl")) {
            let text = std::fs::read_to_string(f).expect("read");
            for line in text.lines() {
                match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(v) => out.push(v),
                    Err(e) if strict => panic!("{}: {e}: {line}", f.display()),
                    Err(_) => {}
                }
            }
        }
        out
    }

    /// Waits for the cgroup id of the session this case started (from its
    /// journal's `session_start`).
    pub fn wait_cgroup_id(&self) -> u64 {
        for _ in 0..1000 {
            let id = self
                .journal_lines(false)
                .iter()
                .find(|r| r["kind"] == "session_start")
                .and_then(|r| r["data"]["cgroup_id"].as_u64());
            if let Some(id) = id {
                return id;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("no session_start with a cgroup id in {}", self.journal().display());
    }

    /// `ps --json`: the sessions this case's registry holds.
    pub fn sessions(&self) -> Vec<serde_json::Value> {
        let out = self.ag(&["ps", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("ps --json")
    }

    /// Waits until `ps` lists at least `n` sessions; returns them.
    pub fn wait_for_sessions(&self, n: usize) -> Vec<serde_json::Value> {
        let mut found = Vec::new();
        let appeared = eventually(3000, std::time::Duration::from_millis(10), || {
            found = self.sessions();
            found.len() >= n
        });
        assert!(appeared, "{n} sessions never showed up");
        found
    }

    /// The cgroup ids of the sessions the shared monitor serves now.
    pub fn monitored(&self) -> Vec<u64> {
        self.monitor_status()
            .iter()
            .flat_map(|i| i["sessions"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s.as_u64())
            .collect()
    }

    /// `monitor status --json`: every pinned instance.
    pub fn monitor_status(&self) -> Vec<serde_json::Value> {
        let out = self.ag(&["monitor", "status", "--json"]);
        assert_eq!(out.status.code(), Some(0));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// A command running `agent-guard run --profile P --workdir W [extra] -- argv`.
    pub fn command(&self, extra: &[&str], argv: &[&str]) -> Command {
        let mut cmd = Command::new(agent_guard());
        cmd.env("AGENT_GUARD_CONFIG", self.dir.path().join("config.toml"));
        cmd.arg("run").arg("--profile").arg(&self.profile).arg("--workdir").arg(self.work());
        cmd.args(extra).arg("--").args(argv);
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run_with(&self, extra: &[&str], argv: &[&str]) -> Output {
        let out = self.command(extra, argv).output().expect("running agent-guard");
        eprintln!(
            "$ agent-guard run {extra:?} -- {argv:?}\n  status: {:?}\n  stdout: {}  stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs a session with `--summary-json` and returns its output and summary.
    pub fn summary(&self, extra: &[&str], argv: &[&str]) -> (Output, serde_json::Value) {
        let path = self.dir.path().join("summary.json");
        let mut args = vec!["--summary-json", path.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        let out = self.run_with(&args, argv);
        let json = std::fs::read_to_string(&path).expect("summary written");
        (out, serde_json::from_str(&json).expect("summary is JSON"))
    }

    /// Runs the probe with `args` in a session.
    pub fn probe(&self, args: &[&str]) -> Output {
        let mut argv = vec![probe()];
        argv.extend_from_slice(args);
        self.run_with(&[], &argv)
    }
}

/// Checks `done` up to `tries` times, `every` apart; whether it came true.
pub fn eventually(tries: u32, every: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if done() {
            return true;
        }
        std::thread::sleep(every);
    }
    false
}

/// Whether process `pid` is gone within five seconds.
pub fn gone_soon(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    eventually(500, std::time::Duration::from_millis(10), || unsafe { libc::kill(pid, 0) } != 0)
}

/// A typical least-privilege profile: reads system libraries and the
/// workdir, writes `out/`, runs the probe and `true`, masks the secrets.
pub fn base_profile(extra_sections: &str) -> String {
    format!(
        r#"[role]
name = "@NAME@"
description = "integration test"
environment = "test"

[filesystem]
read = ["/usr", "/lib", "/lib64", "/etc/ld.so.cache", "{{workdir}}"]
write = ["{{workdir}}/out", "/dev/null"]
exec = ["@PROBE@", "/usr/bin/true"]
deny = ["{{workdir}}/secret.txt", "{{workdir}}/secretdir"]

[limits]
wall_time = "2m"
{extra_sections}
"#
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the probe reported success.
#[track_caller]
pub fn allowed(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "expected success; stdout: {} stderr: {}", stdout(out), stderr(out));
    assert!(stdout(out).starts_with("OK "), "stdout: {}", stdout(out));
}

/// Asserts the probe reported the kernel refused it (EPERM/EACCES).
#[track_caller]
pub fn refused(out: &Output) {
    assert_eq!(out.status.code(), Some(1), "expected refusal; stdout: {} stderr: {}", stdout(out), stderr(out));
    assert!(stdout(out).contains("REFUSED"), "stdout: {}", stdout(out));
}

/// A daemon started for a test; killed and reaped when dropped.
pub struct Daemon {
    pub child: std::process::Child,
    pub socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the daemon with the case's config as it stands; roles resolve
/// in the case's directory (where its profile is).
pub fn spawn_daemon(case: &Case) -> Daemon {
    let socket = case.dir.path().join("control.sock");
    let child = Command::new(agent_guard())
        .env("AGENT_GUARD_CONFIG", case.config())
        .env("AGENT_GUARD_PROFILES", case.dir.path())
        .arg("daemon")
        .spawn()
        .expect("daemon");
    // Dropped (killed and reaped) on every path from here.
    let daemon = Daemon { child, socket };
    for _ in 0..500 {
        if std::os::unix::net::UnixStream::connect(&daemon.socket).is_ok() {
            return daemon;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the daemon never listened on {}", daemon.socket.display());
}
