//! The daemon's control socket: who may do what (from SO_PEERCRED), and
//! that no input makes it stop serving.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    process::{Child, Command},
    time::Duration,
};

use common::{agent_guard, base_profile, stderr, stdout, Case};

struct Daemon {
    child: Child,
    socket: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(case: &Case, operator_group: Option<&str>) -> Daemon {
    if let Some(g) = operator_group {
        let mut config = std::fs::read_to_string(case.config()).expect("config");
        config = format!("operator_group = {g:?}\n{config}");
        std::fs::write(case.config(), config).expect("config");
    }
    let socket = case.dir.path().join("control.sock");
    let child = Command::new(agent_guard()).env("AGENT_GUARD_CONFIG", case.config()).arg("daemon").spawn().expect("daemon");
    // Dropped (killed and reaped) on every path from here.
    let daemon = Daemon { child, socket };
    for _ in 0..500 {
        if UnixStream::connect(&daemon.socket).is_ok() {
            return daemon;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the daemon never listened on {}", daemon.socket.display());
}

fn request(socket: &std::path::Path, line: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.write_all(format!("{line}\n").as_bytes()).expect("write");
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).expect("read");
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

fn forker(case: &Case) -> Child {
    case.command(&[], &["/bin/sh", "-c", "while true; do sleep 0.05 & wait; done"]).spawn().expect("spawn")
}

fn profile() -> String {
    base_profile("").replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/sh\", \"/usr/bin/dash\", \"/usr/bin/sleep\"]")
}

fn wait_for_session(socket: &std::path::Path) -> String {
    for _ in 0..3000 {
        let r = request(socket, r#"{"v":1,"op":{"kind":"ps"}}"#);
        if let Some(id) = r["result"]["sessions"][0]["session"].as_str() {
            return id.to_owned();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no session showed up");
}

/// `agent-guard ARGS` as an unprivileged user (uid/gid 65534, no capabilities), with extra groups.
fn as_nobody(case: &Case, groups: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(if groups.is_empty() { "--clear-groups".to_owned() } else { format!("--groups={groups}") })
        .arg(agent_guard())
        .arg("--config")
        .arg(case.config())
        .args(args)
        .output()
        .expect("setpriv");
    eprintln!("nobody$ agent-guard {args:?}\n{}{}", stdout(&out), stderr(&out));
    out
}

#[test]
fn root_controls_sessions_through_the_daemon() {
    let case = Case::new("viadaemon", &profile());
    let d = start_daemon(&case, None);
    let mut s = forker(&case);
    let id = wait_for_session(&d.socket);
    let status = request(&d.socket, r#"{"v":1,"id":7,"op":{"kind":"status"}}"#);
    assert_eq!(status["id"], 7);
    assert_eq!(status["result"]["sessions"], 1, "{status}");
    // The CLI uses the daemon when it listens.
    let out = case.ag(&["kill", "--session", &id, "--reason", "via daemon"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.wait().expect("wait").code(), Some(137));
}

#[test]
fn users_control_only_their_own_sessions_and_operators_all() {
    let case = Case::new("owners", &profile());
    // gid 4 (adm) is the operator group here.
    let d = start_daemon(&case, Some("adm"));
    let mut s = forker(&case);
    let id = wait_for_session(&d.socket);
    // nobody started nothing: sees nothing, can kill nothing, cannot lock down.
    let out = as_nobody(&case, "", &["ps", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "[]");
    let out = as_nobody(&case, "", &["kill", "--session", &id]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("no_session"), "{}", stderr(&out));
    let out = as_nobody(&case, "", &["lockdown"]);
    assert!(stderr(&out).contains("refused"), "{}", stderr(&out));
    assert!(s.try_wait().expect("try_wait").is_none(), "the session still runs");
    // In the operator group, the same user may.
    let out = as_nobody(&case, "4", &["kill", "--session", &id, "--reason", "operator on call"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.wait().expect("wait").code(), Some(137));
}

#[test]
fn a_process_inside_a_session_is_refused_by_the_daemon() {
    let case = Case::new("insidedaemon", &profile());
    let d = start_daemon(&case, None);
    let mut s = forker(&case);
    wait_for_session(&d.socket);
    // The agent talks to the socket directly (no CLI check in the way).
    let out = case.probe(&["unix-request", d.socket.to_str().expect("utf-8"), r#"{"v":1,"op":{"kind":"kill","select":"all"}}"#]);
    assert!(stdout(&out).contains("\"code\":\"refused\""), "{}", stdout(&out));
    assert!(s.try_wait().expect("try_wait").is_none(), "the other session survived");
    let _ = s.kill();
    let _ = s.wait();
}

#[test]
fn malformed_requests_never_stop_the_daemon() {
    let case = Case::new("fuzz", &base_profile(""));
    let mut d = start_daemon(&case, None);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let templates = [
        r#"{"v":1,"op":{"kind":"kill","select":{"session":5}}}"#,
        r#"{"v":2,"op":{"kind":"ps"}}"#,
        r#"{"v":1,"op":{"kind":"explode"}}"#,
        r#"{"v":1,"op":{"kind":"ps"},"extra":true}"#,
        r#"{"v":"1","op":null}"#,
        r#"[1,2,3]"#,
        r#"{"v":1,"op":{"kind":"freeze","session":"../../etc"}}"#,
        r#"{"v":1,"op":{"kind":"resume"}}"#,
        "\u{0}\u{1}\u{2}",
        "{{{{{{{{{{{{{{{{{{{{",
    ];
    for i in 0..3000 {
        let Ok(mut s) = UnixStream::connect(&d.socket) else { panic!("the daemon stopped listening at request {i}") };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let r = next();
        let payload: Vec<u8> = match r % 4 {
            0 => templates[(r >> 8) as usize % templates.len()].as_bytes().to_vec(),
            1 => (0..(r >> 8) % 300).map(|_| next() as u8).collect(),
            2 => vec![b'a'; 70_000], // over the size limit
            _ => {
                let t = templates[(r >> 8) as usize % templates.len()].as_bytes();
                let cut = (r >> 16) as usize % (t.len() + 1);
                t[..cut].to_vec()
            }
        };
        let _ = s.write_all(&payload);
        let _ = s.write_all(b"\n");
        let mut answer = String::new();
        let _ = BufReader::new(&s).read_line(&mut answer);
        if !answer.is_empty() {
            let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("request {i}: the answer is not JSON: {e}: {answer:?}"));
            assert_eq!(v["ok"], false, "request {i} ({payload:?}) was accepted: {answer}");
        }
    }
    assert!(d.child.try_wait().expect("try_wait").is_none(), "the daemon died");
    let status = request(&d.socket, r#"{"v":1,"op":{"kind":"status"}}"#);
    assert_eq!(status["ok"], true, "{status}");
}

#[test]
fn a_user_cannot_starve_the_daemon_of_connections() {
    let case = Case::new("starve", &base_profile(""));
    let d = start_daemon(&case, None);
    let socket = d.socket.to_str().expect("utf-8").to_owned();
    let nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(common::probe()).args(args);
        c
    };
    // Eight idle connections from one user...
    let mut holders: Vec<Child> = (0..8)
        .map(|_| nobody(&["unix-hold", &socket, "20"]).stdout(std::process::Stdio::piped()).spawn().expect("hold"))
        .collect();
    for h in &mut holders {
        let mut line = String::new();
        BufReader::new(h.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "HOLDING");
    }
    std::thread::sleep(Duration::from_millis(200));
    // ... the ninth from the same user is turned away ...
    let out = nobody(&["unix-request", &socket, r#"{"v":1,"op":{"kind":"status"}}"#]).output().expect("ninth");
    assert!(stdout(&out).contains("at most 8 connections"), "{}", stdout(&out));
    // ... and an operator is still served.
    assert_eq!(request(&d.socket, r#"{"v":1,"op":{"kind":"status"}}"#)["ok"], true);
    for mut h in holders {
        let _ = h.kill();
        let _ = h.wait();
    }
}

#[test]
fn the_daemon_refuses_to_start_unprivileged() {
    let case = Case::new("daemonroot", &base_profile(""));
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(agent_guard())
        .arg("--config")
        .arg(case.config())
        .arg("daemon")
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("must run as root"), "{}", stderr(&out));
    assert!(!case.dir.path().join("control.sock").exists());
}
