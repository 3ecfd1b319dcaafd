//! The kill switch without a daemon: ps, kill by session / role / all,
//! freeze and resume, lockdown that survives restarts, and who may use them.

mod common;

use std::{
    process::{Child, Command},
    time::Duration,
};

use common::{base_profile, stderr, stdout, Case};

/// A profile whose agent can run a shell, so that it can keep forking.
fn forking_profile(extra: &str) -> String {
    base_profile(extra).replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/sh\", \"/usr/bin/dash\", \"/usr/bin/sleep\"]")
}

/// Starts a session that keeps forking until killed.
fn start_forker(case: &Case, extra: &[&str]) -> Child {
    let mut args = vec!["--summary-json"];
    let summary = case.dir.path().join(format!("summary-{}.json", extra.len()));
    let summary = summary.to_str().expect("utf-8").to_owned();
    args.push(&summary);
    args.extend_from_slice(extra);
    case.command(&args, &["/bin/sh", "-c", "while true; do sleep 0.05 & wait; done"]).spawn().expect("spawn")
}

fn journal_has(case: &Case, needle: &str) -> bool {
    std::fs::read_dir(case.journal())
        .expect("journal")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .any(|e| std::fs::read_to_string(e.path()).unwrap_or_default().contains(needle))
}

#[test]
fn kill_by_session_ends_a_forking_session_and_records_who_and_why() {
    let case = Case::new("killone", &forking_profile(""));
    let mut child = start_forker(&case, &[]);
    let list = case.wait_for_sessions(1);
    let id = list[0]["session"].as_str().expect("id").to_owned();
    assert_eq!(list[0]["role"], "killone");
    assert_eq!(list[0]["state"], "running");
    assert!(list[0]["counters"]["execs"].as_u64().is_some(), "live counters: {}", list[0]);
    let out = case.ag(&["kill", "--session", &id, "--reason", "incident 42"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(137));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.dir.path().join("summary-0.json")).expect("summary")).expect("json");
    assert_eq!(summary["ended_by"], "operator", "{summary}");
    assert!(journal_has(&case, "\"reason\":\"incident 42\""));
    assert!(case.sessions().is_empty());
}

#[test]
fn kill_by_role_and_all() {
    let a = Case::new("rolea", &forking_profile(""));
    // Sessions of another role, sharing the same host config (and so registry).
    let b = Case::new("roleb", &forking_profile(""));
    std::fs::copy(a.config(), b.config()).expect("share config");
    let mut a1 = start_forker(&a, &[]);
    let mut a2 = start_forker(&a, &["--agent", "second"]);
    let mut b1 = start_forker(&b, &[]);
    a.wait_for_sessions(3);
    assert_eq!(a.ag(&["kill", "--role", "rolea"]).status.code(), Some(0));
    assert_eq!(a1.wait().expect("wait").code(), Some(137));
    assert_eq!(a2.wait().expect("wait").code(), Some(137));
    let left = a.sessions();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["role"], "roleb");
    assert_eq!(a.ag(&["kill", "--all", "--reason", "drill"]).status.code(), Some(0));
    assert_eq!(b1.wait().expect("wait").code(), Some(137));
    assert!(a.sessions().is_empty());
}

#[test]
fn lockdown_kills_everything_refuses_new_sessions_and_survives_restarts() {
    let case = Case::new("lockdown", &forking_profile(""));
    let mut running = start_forker(&case, &[]);
    case.wait_for_sessions(1);
    let out = case.ag(&["lockdown", "--reason", "suspected injection"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(running.wait().expect("wait").code(), Some(137));
    // New sessions are refused, by a fresh process (nothing in memory): the switch is on disk.
    let out = case.probe(&["exit", "0"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("lockdown") && stderr(&out).contains("suspected injection"), "{}", stderr(&out));
    assert_eq!(case.ag(&["unlock", "--reason", "all clear"]).status.code(), Some(0));
    assert_eq!(case.probe(&["exit", "0"]).status.code(), Some(0));
    assert!(journal_has(&case, "\"action\":\"lockdown\"") && journal_has(&case, "\"action\":\"unlock\""));
}

#[test]
fn an_operator_resumes_a_session_frozen_by_a_limit() {
    let (l, port) = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().expect("addr").port();
        (l, p)
    };
    let profile = forking_profile(&format!("\n[network]\nconnect = [\"127.0.0.1:{port}\"]\n"))
        .replace("wall_time = \"2m\"", "wall_time = \"2m\"\nconnects = 1\non_limit = \"freeze\"");
    let case = Case::new("resume", &profile);
    let probe = common::probe();
    // Freezing is user space's reaction to the limit event (milliseconds): give it the
    // time a real agent would, then exit with a code the test can recognise.
    let script = format!("{probe} connect 127.0.0.1:{port}; {probe} connect 127.0.0.1:{port}; {probe} sleep 1; {probe} exit 3");
    let child = case
        .command(&["--freeze-grace", "1m"], &["/bin/sh", "-c", &script])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut frozen = None;
    for _ in 0..3000 {
        if let Some(s) = case.sessions().into_iter().find(|s| s["state"] == "frozen") {
            frozen = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Some(frozen) = frozen else {
        let mut child = child;
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait");
        panic!("the session never froze at the limit: {:?} {}", out.status, stderr(&out));
    };
    let id = frozen["session"].as_str().expect("id");
    assert_eq!(case.ag(&["resume", "--session", id, "--reason", "looked fine"]).status.code(), Some(0));
    let out = child.wait_with_output().expect("wait");
    drop(l);
    assert_eq!(out.status.code(), Some(3), "the session ran to its end: {}", stderr(&out));
    assert!(stderr(&out).contains("resumed by an operator"), "{}", stderr(&out));
}

#[test]
fn agents_and_unprivileged_users_cannot_reach_the_kill_switch() {
    let ag = common::agent_guard();
    let ag_dir = ag.parent().expect("dir").to_str().expect("utf-8").to_owned();
    // An agent allowed to run agent-guard itself, and to read what it needs.
    let profile = base_profile("").replace(
        "exec = [\"@PROBE@\", \"/usr/bin/true\"]",
        &format!("exec = [\"@PROBE@\", \"{}\"]", ag.display()),
    );
    let profile = profile.replace("read = [\"/usr\"", &format!("read = [\"{ag_dir}\", \"/proc\", \"/usr\""));
    let case = Case::new("insider", &profile);
    let config = case.config();
    let config = config.to_str().expect("utf-8");
    for cmd in [vec!["ps"], vec!["kill", "--all"], vec!["unlock"], vec!["lockdown"]] {
        let mut argv = vec![ag.to_str().expect("utf-8"), "--config", config];
        argv.extend(cmd.iter().copied());
        let out = case.run_with(&[], &argv);
        assert_eq!(out.status.code(), Some(125), "{cmd:?} from inside a session: {}", stderr(&out));
        assert!(stderr(&out).contains("inside an agent session"), "{}", stderr(&out));
    }
    // An unprivileged user outside any session.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(&ag)
        .args(["--config", config, "kill", "--all"])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(125), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("needs root"), "{}", stderr(&out));
}

/// The agent-guard processes (supervisor and guardian) of `case`'s sessions.
fn supervisors_of(case: &Case) -> Vec<i32> {
    let profile = case.profile.to_str().expect("utf-8").to_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("agent-guard"))
                && String::from_utf8_lossy(&cmdline).contains(&profile)
        })
        .collect()
}

#[test]
fn an_orphaned_session_is_shown_so_and_kill_cleans_it_up() {
    // Memory and process limits: on a hybrid host they live in v1 cgroups too, which must go as well.
    let case = Case::new("orphan", &forking_profile("processes = 64\nmemory = \"256MiB\"\n"));
    let mut client = start_forker(&case, &[]);
    let s = case.wait_for_sessions(1);
    let id = s[0]["session"].as_str().expect("id").to_owned();
    let cgroup_id = case.wait_cgroup_id();
    // Supervisor and guardian both SIGKILLed: nothing of agent-guard watches the session.
    let pids = supervisors_of(&case);
    assert!(pids.len() >= 2, "supervisor and guardian: {pids:?}");
    // Stopped first, so that the guardian cannot see the supervisor die and clean up.
    for sig in [libc::SIGSTOP, libc::SIGKILL] {
        for pid in &pids {
            // SAFETY: kill(2) on processes of this test's session.
            unsafe { libc::kill(*pid, sig) };
        }
    }
    let _ = client.wait();
    let mut state = String::new();
    for _ in 0..200 {
        state = case.sessions()[0]["state"].as_str().unwrap_or("").to_owned();
        if state == "orphaned" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(state, "orphaned");
    let dirs: Vec<std::path::PathBuf> = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"]
        .iter()
        .map(|root| std::path::Path::new(root).join("agent-guard").join(&id))
        .filter(|dir| dir.is_dir())
        .collect();
    eprintln!("the session's cgroups: {dirs:?}");
    assert!(!dirs.is_empty(), "no cgroup directory of the session found");
    // `kill` ends it and cleans up what its supervisor would have.
    let out = case.ag(&["kill", "--session", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(case.sessions().is_empty(), "the registry forgot it");
    assert!(!case.monitored().contains(&cgroup_id), "the monitor forgot it");
    assert!(stdout(&out).contains(&id));
    for dir in &dirs {
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
}
