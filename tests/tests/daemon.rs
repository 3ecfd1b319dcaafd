//! The daemon's control socket: who may do what (from SO_PEERCRED), and
//! that no input makes it stop serving.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    process::{Child, Command},
    time::Duration,
};

use common::{agent_guard, base_profile, spawn_daemon, stderr, stdout, Case, Daemon};

fn start_daemon(case: &Case, operator_group: Option<&str>) -> Daemon {
    if let Some(g) = operator_group {
        let mut config = std::fs::read_to_string(case.config()).expect("config");
        config = format!("operator_group = {g:?}\n{config}");
        std::fs::write(case.config(), config).expect("config");
    }
    spawn_daemon(case)
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
    // The profile lets the agent reach the control socket (`[network] unix`),
    // so that what refuses it here is the daemon's own peer check.
    let listed = format!("\n[network]\nunix = [{:?}]\n", case.dir.path().join("control.sock"));
    let text = std::fs::read_to_string(&case.profile).expect("profile") + &listed;
    std::fs::write(&case.profile, text).expect("profile");
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
            2 => vec![b'a'; MAX_REQUEST_BYTES + 1], // over the size limit
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

/// The registry record of the one session of `case` as `ps --json` shows it.
fn only_session(case: &Case) -> serde_json::Value {
    let out = case.ag(&["ps", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ps JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    v[0].clone()
}

#[test]
fn run_goes_through_the_daemon_with_stdio_status_and_signals() {
    let case = Case::new("runvia", &profile().replace("\"/usr/bin/sleep\"]", "\"/usr/bin/sleep\", \"/usr/bin/cat\"]"));
    let _d = start_daemon(&case, None);
    // stdin, stdout, stderr and the exit status cross the daemon.
    let mut child = case
        .command(&["--quiet"], &["/bin/sh", "-c", "cat; echo to-stderr >&2; exit 7"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"from-stdin\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from-stdin\n");
    assert_eq!(stderr(&out), "to-stderr\n");
    // A signal to the client reaches the agent; the supervisor is not the client.
    let mut client = case.command(&["--quiet"], &[common::probe(), "sleep", "30"]).spawn().expect("spawn");
    wait_for_session(&case.dir.path().join("control.sock"));
    let record = only_session(&case);
    assert_ne!(record["supervisor_pid"].as_u64(), Some(u64::from(client.id())), "{record}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(client.id() as i32, libc::SIGTERM) };
    assert_eq!(client.wait().expect("wait").code(), Some(128 + libc::SIGTERM));
}

#[test]
fn a_client_that_dies_hangs_up_its_session() {
    let case = Case::new("hangup", &profile());
    let d = start_daemon(&case, None);
    let mut client = case.command(&["--quiet"], &[common::probe(), "sleep", "60"]).spawn().expect("spawn");
    wait_for_session(&d.socket);
    let main = only_session(&case)["main_pid"].as_u64().expect("main pid") as i32;
    let _ = client.kill(); // SIGKILL: no goodbye
    let _ = client.wait();
    assert!(common::gone_soon(main), "the agent {main} outlived its client");
}

/// A directory anyone may use, for an unprivileged user's session.
fn shared_dir(case: &Case, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new("/tmp").join(format!("ag-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("out")).expect("mkdir");
    for d in [dir.clone(), dir.join("out")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    }
    // The case's own directory must be reachable for its config and profile.
    std::fs::set_permissions(case.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

#[test]
fn unprivileged_users_run_granted_roles_as_themselves() {
    let case = Case::new("granted", &profile().replace("{workdir}/out", "{workdir}/out\", \"{workdir}"));
    let mut config = std::fs::read_to_string(case.config()).expect("config");
    config.push_str("[grants]\nnobody = [\"granted\"]\n");
    std::fs::write(case.config(), config).expect("config");
    let _d = spawn_daemon(&case);
    let work = shared_dir(&case, "granted");
    let summary = work.join("out/summary.json");
    let work_s = work.to_str().expect("utf-8");
    let summary_s = summary.to_str().expect("utf-8");
    let probe = common::probe();
    // The granted role: the agent runs as the client, the summary file is the client's.
    let out = as_nobody(&case, "", &["run", "--role", "granted", "--workdir", work_s, "--summary-json", summary_s, "--", probe, "uid"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("uid=65534 gid=65534"), "{}", stdout(&out));
    let meta = std::fs::metadata(&summary).expect("summary written");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534, "the client created the summary file");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).expect("read")).expect("summary JSON");
    assert_eq!(s["exit_code"], 0);
    // The journal records the client as the session's owner.
    let start = case.journal_records().into_iter().find(|r| r["kind"] == "session_start").expect("session_start");
    assert_eq!(start["data"]["uid"], 65534, "{start}");
    let mine = start["session"].as_str().expect("id").to_owned();
    // A session of root's beside it; `events` through the daemon shows the
    // user its own session's records only, root both.
    let theirs = case.run_with(&["--quiet", "--summary-json", summary_s], &[probe, "uid"]);
    assert_eq!(theirs.status.code(), Some(0), "{}", stderr(&theirs));
    let root_session = case.journal_records().into_iter().rev().find(|r| r["kind"] == "session_start").expect("start")["session"].as_str().expect("id").to_owned();
    assert_ne!(root_session, mine);
    let sessions_in = |out: &std::process::Output| -> std::collections::BTreeSet<String> {
        stdout(out).lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter_map(|r| r["session"].as_str().map(str::to_owned)).collect()
    };
    let out = as_nobody(&case, "", &["events", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sessions_in(&out), [mine.clone()].into_iter().collect(), "{}", stdout(&out));
    let out = case.ag(&["events", "--json"]);
    assert!(sessions_in(&out).contains(&root_session) && sessions_in(&out).contains(&mine));
    // Pointing the working directory where the user may not write itself is
    // refused: the role writes in {workdir}, possibly as another user.
    let out = as_nobody(&case, "", &["run", "--role", "granted", "--workdir", "/etc", "--", probe, "uid"]);
    assert_eq!(out.status.code(), Some(125), "{}", stdout(&out));
    assert!(stderr(&out).contains("may not write in the working directory /etc"), "{}", stderr(&out));
    // --observe lifts the confinement: not for a user, even with the role granted.
    let out = as_nobody(&case, "", &["run", "--observe", "--role", "granted", "--workdir", work_s, "--", probe, "uid"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("root and the operator group only"), "{}", stderr(&out));
    // A role not granted, and a profile file, are refused; nothing runs.
    let out = as_nobody(&case, "", &["run", "--role", "coding-agent", "--workdir", work_s, "--", probe, "uid"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("not granted role"), "{}", stderr(&out));
    let profile_path = case.profile.to_str().expect("utf-8");
    let out = as_nobody(&case, "", &["run", "--profile", profile_path, "--workdir", work_s, "--", probe, "uid"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("only root may run a profile file"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn sessions_outlive_a_killed_daemon_with_their_limits_and_rules() {
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = allowed.local_addr().expect("addr").port();
    let _other = std::net::TcpListener::bind(("127.0.0.2", port)).expect("bind 127.0.0.2");
    let case = Case::new(
        "restart",
        &profile().replace("[limits]", &format!("[network]\nconnect = [\"127.0.0.1:{port}\"]\n\n[limits]\nfile_writes = 50")),
    );
    let d = start_daemon(&case, None);
    let go = case.work().join("out/go");
    let probe = common::probe();
    // Waits for the go-ahead, then tries a denied and an allowed destination,
    // then writes past its limit.
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; \
         {probe} connect 127.0.0.2:{port} > out/denied; {probe} connect 127.0.0.1:{port} > out/allowed; \
         {probe} writes out/big 1000 0; {probe} sleep 30",
        go = go.display()
    );
    let summary = case.work().join("out/summary.json");
    let mut client = case
        .command(&["--summary-json", summary.to_str().expect("utf-8")], &["/bin/sh", "-c", &script])
        .spawn()
        .expect("spawn");
    let id = wait_for_session(&d.socket);
    // SIGKILL the daemon: the session, its supervisor and its client carry on.
    drop(d);
    std::fs::write(&go, "").expect("go");
    let status = client.wait().expect("wait");
    assert_eq!(status.code(), Some(137), "killed by its file_writes limit with no daemon running");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("JSON");
    assert_eq!(s["session"], id.as_str());
    assert_eq!(s["ended_by"], "limit:file_writes", "{s}");
    let read = |f: &str| std::fs::read_to_string(case.work().join("out").join(f)).unwrap_or_default();
    assert!(read("denied").contains("REFUSED"), "denied: {}", read("denied"));
    assert!(read("allowed").starts_with("OK"), "allowed: {}", read("allowed"));
}

#[test]
fn a_restarted_daemon_finds_running_sessions() {
    let case = Case::new("rediscover", &profile());
    let d = start_daemon(&case, None);
    let mut client = case.command(&["--quiet"], &[common::probe(), "sleep", "60"]).spawn().expect("spawn");
    let id = wait_for_session(&d.socket);
    drop(d); // SIGKILL
    let d = spawn_daemon(&case);
    assert_eq!(wait_for_session(&d.socket), id);
    let out = case.ag(&["kill", "--session", &id, "--reason", "after restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(client.wait().expect("wait").code(), Some(137));
}

/// The protocol's request limit (docs/protocol.md), the newline included.
const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Sends `line` (which ends with its newline) and reads every response line until the daemon closes.
fn exchange(stream: &mut UnixStream, line: &[u8]) -> Vec<serde_json::Value> {
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(line).expect("write");
    let mut answer = String::new();
    BufReader::new(&*stream).read_line(&mut answer).expect("read");
    vec![serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))]
}

/// Reads until the daemon closes the connection: true when it did, with nothing more sent.
fn closed(stream: &UnixStream) -> bool {
    let mut rest = Vec::new();
    matches!(std::io::Read::read_to_end(&mut &*stream, &mut rest), Ok(0))
}

/// A `ps` request padded with spaces to exactly `len` bytes with its newline.
fn padded_ps(len: usize) -> Vec<u8> {
    let head = br#"{"v":1,"id":3,"op":{"kind":"ps"}"#;
    let mut line = head.to_vec();
    line.resize(len - 2, b' ');
    line.extend_from_slice(b"}\n");
    assert_eq!(line.len(), len);
    line
}

#[test]
fn ps_and_status_refuse_unknown_fields_over_the_socket() {
    let case = Case::new("strictops", &base_profile(""));
    let d = start_daemon(&case, None);
    for op in ["ps", "status"] {
        let ok = request(&d.socket, &format!(r#"{{"v":1,"id":1,"op":{{"kind":"{op}"}}}}"#));
        assert_eq!(ok["ok"], true, "{ok}");
        let mut s = UnixStream::connect(&d.socket).expect("connect");
        let r = exchange(&mut s, format!("{{\"v\":1,\"id\":2,\"op\":{{\"kind\":\"{op}\",\"all\":true}}}}\n").as_bytes());
        assert_eq!(r[0]["ok"], false, "{op}: {}", r[0]);
        assert_eq!(r[0]["error"]["code"], "bad_request", "{}", r[0]);
        assert!(r[0]["error"]["message"].as_str().unwrap_or("").contains("unknown field `all`"), "{}", r[0]);
        assert!(closed(&s), "a bad request closes the connection");
    }
}

#[test]
fn a_request_over_the_size_limit_is_refused_and_one_at_it_served() {
    let case = Case::new("sizelimit", &base_profile(""));
    let d = start_daemon(&case, None);
    // Exactly at the limit: answered, and the connection serves on.
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    let r = exchange(&mut s, &padded_ps(MAX_REQUEST_BYTES));
    assert_eq!((r[0]["ok"].clone(), r[0]["id"].clone()), (serde_json::json!(true), serde_json::json!(3)), "{}", r[0]);
    let r = exchange(&mut s, b"{\"v\":1,\"id\":4,\"op\":{\"kind\":\"status\"}}\n");
    assert_eq!(r[0]["ok"], true, "{}", r[0]);
    // One byte over: too_large, and closed.
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    let r = exchange(&mut s, &padded_ps(MAX_REQUEST_BYTES + 1));
    assert_eq!(r[0]["ok"], false, "{}", r[0]);
    assert_eq!(r[0]["error"]["code"], "too_large", "{}", r[0]);
    assert!(r[0]["error"]["message"].as_str().unwrap_or("").contains(&MAX_REQUEST_BYTES.to_string()), "{}", r[0]);
    assert!(closed(&s), "an oversized request closes the connection");
}

/// Waits for `child` to exit (a guard against a hang, not a timing check).
fn exit_of(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..3000 {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("the daemon did not exit");
}

fn daemon_command(case: &Case) -> Command {
    let mut c = Command::new(agent_guard());
    c.env("AGENT_GUARD_CONFIG", case.config()).env("AGENT_GUARD_PROFILES", case.dir.path()).arg("daemon");
    c
}

#[test]
fn a_daemon_stopped_with_sigterm_removes_its_socket() {
    let case = Case::new("sigterm", &base_profile(""));
    let mut d = start_daemon(&case, None);
    // SAFETY: signalling the daemon this test started (and has not reaped).
    assert_eq!(unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status = exit_of(&mut d.child);
    assert_eq!(status.code(), Some(0), "a clean stop");
    assert!(!d.socket.exists(), "{} left behind", d.socket.display());
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let case = Case::new("stalesock", &base_profile(""));
    let socket = case.dir.path().join("control.sock");
    // What a daemon killed with SIGKILL leaves: the file, and nobody listening.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    let d = start_daemon(&case, None);
    assert_eq!(request(&d.socket, r#"{"v":1,"op":{"kind":"status"}}"#)["ok"], true);
    // A second daemon on the same socket is refused, and the first serves on.
    let mut second = daemon_command(&case).stderr(std::process::Stdio::piped()).spawn().expect("second daemon");
    let status = exit_of(&mut second);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert_eq!(status.code(), Some(125), "{err}");
    assert!(err.contains("another daemon is listening on") && err.contains("control.sock"), "{err}");
    assert_eq!(request(&d.socket, r#"{"v":1,"op":{"kind":"status"}}"#)["ok"], true, "the first daemon still serves");
}

#[test]
fn a_file_that_is_not_a_socket_is_not_replaced() {
    let case = Case::new("notsock", &base_profile(""));
    let socket = case.dir.path().join("control.sock");
    std::fs::write(&socket, "not a socket").expect("write");
    let mut daemon = daemon_command(&case).stderr(std::process::Stdio::piped()).spawn().expect("daemon");
    let status = exit_of(&mut daemon);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut daemon.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert_eq!(status.code(), Some(125), "{err}");
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&socket).expect("kept"), "not a socket");
}
