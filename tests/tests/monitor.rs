//! The eBPF monitor against the real kernel: the network allowlist by
//! address and port for TCP and UDP over IPv4 and IPv6, exact counters,
//! and limits that end or freeze the session.

mod common;

use std::{
    net::{TcpListener, UdpSocket},
    process::Command,
};

use common::{allowed, base_profile, refused, stderr, stdout, Case};

fn tcp(addr: &str) -> (TcpListener, u16) {
    let l = TcpListener::bind(addr).expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

fn network(connect: &[String]) -> String {
    base_profile(&format!("\n[network]\nconnect = {connect:?}\n"))
}

#[test]
fn tcp_by_address_ipv4_and_ipv6() {
    // The same port on two loopback addresses: landlock (ports) allows both,
    // the monitor (addresses) only the listed one.
    let (_a, port) = tcp("127.0.0.1:0");
    let _b = TcpListener::bind(("127.0.0.2", port)).expect("bind 127.0.0.2");
    let (_c, port6) = tcp("[::1]:0");
    let case = Case::new("tcpaddr", &network(&[format!("127.0.0.1:{port}"), format!("[::1]:{port6}")]));
    allowed(&case.probe(&["connect", &format!("127.0.0.1:{port}")]));
    refused(&case.probe(&["connect", &format!("127.0.0.2:{port}")]));
    allowed(&case.probe(&["connect", &format!("[::1]:{port6}")]));
    // IPv4 through an IPv6 socket (mapped address) follows the IPv4 rules.
    allowed(&case.probe(&["connect", &format!("[::ffff:127.0.0.1]:{port}")]));
    refused(&case.probe(&["connect", &format!("[::ffff:127.0.0.2]:{port}")]));
}

#[test]
fn udp_by_address_and_port_ipv4_and_ipv6() {
    let u4 = UdpSocket::bind("127.0.0.1:0").expect("udp4");
    let u6 = UdpSocket::bind("[::1]:0").expect("udp6");
    let (p4, p6) = (u4.local_addr().expect("a").port(), u6.local_addr().expect("a").port());
    let other = UdpSocket::bind("127.0.0.1:0").expect("udp").local_addr().expect("a").port();
    let case = Case::new("udp", &network(&[format!("127.0.0.1:{p4}"), format!("[::1]:{p6}")]));
    allowed(&case.probe(&["udp", &format!("127.0.0.1:{p4}")]));
    refused(&case.probe(&["udp", &format!("127.0.0.1:{other}")]));
    refused(&case.probe(&["udp", &format!("127.0.0.2:{p4}")]));
    allowed(&case.probe(&["udp", &format!("[::1]:{p6}")]));
    refused(&case.probe(&["udp", &format!("[::1]:{p4}")]));
    let mut buf = [0u8; 8];
    u4.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("timeout");
    assert_eq!(u4.recv(&mut buf).expect("the allowed datagram arrived"), 4);
}

#[test]
fn processes_outside_the_session_are_not_affected() {
    let (_l, port) = tcp("127.0.0.2:0");
    let case = Case::new("outside", &network(&["127.0.0.1:1".to_owned()]));
    // Inside: denied.
    refused(&case.probe(&["connect", &format!("127.0.0.2:{port}")]));
    // The same probe outside any session, while no session runs: allowed.
    let out = Command::new(common::probe()).args(["connect", &format!("127.0.0.2:{port}")]).output().expect("probe");
    allowed(&out);
    // And while a session is running.
    let mut running = case.command(&[], &[common::probe(), "sleep", "30"]).spawn().expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = Command::new(common::probe()).args(["connect", &format!("127.0.0.2:{port}")]).output().expect("probe");
    let _ = running.kill();
    let _ = running.wait();
    allowed(&out);
}

#[test]
fn connect_counters_are_exact() {
    let (_l, port) = tcp("127.0.0.1:0");
    let case = Case::new("counts", &network(&[format!("127.0.0.1:{port}")]));
    let probe = common::probe();
    // 1 allowed TCP connect, 1 denied UDP send (to a port not listed).
    let script = format!("{probe} connect 127.0.0.1:{port}; {probe} udp 127.0.0.1:9");
    let case_sh = Case::new(
        "countsh",
        &network(&[format!("127.0.0.1:{port}")]).replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/true\", \"/usr/bin/sh\", \"/usr/bin/dash\"]"),
    );
    let (out, s) = case_sh.summary(&[], &["/bin/sh", "-c", &script]);
    assert!(stdout(&out).contains("OK connect") && stdout(&out).contains("REFUSED udp"), "{}", stdout(&out));
    assert_eq!(s["counters"]["connects"], 2, "{s}");
    assert_eq!(s["counters"]["connects_denied"], 1, "{s}");
    assert!(s["counters"]["bytes_out"].as_u64().unwrap_or(0) > 0, "{s}");
    assert_eq!(s["ended_by"], "exit");
    assert_eq!(s["events_lost"], 0);
    drop(case);
}

#[test]
fn connects_limit_kills_the_session() {
    let (_l, port) = tcp("127.0.0.1:0");
    let profile = network(&[format!("127.0.0.1:{port}")]).replace("wall_time = \"2m\"", "wall_time = \"2m\"\nconnects = 3\non_limit = \"kill\"");
    let case = Case::new("connlimit", &profile.replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/sh\", \"/usr/bin/dash\"]"));
    let probe = common::probe();
    let pidfile = case.work().join("out/pid");
    // A background process that must die with the session, then connects until stopped.
    let script = format!(
        "{probe} daemonize {pid} && for i in 1 2 3 4 5 6; do {probe} connect 127.0.0.1:{port} || true; done; sleep 30",
        pid = pidfile.display()
    );
    let (out, s) = case.summary(&[], &["/bin/sh", "-c", &script]);
    assert_eq!(s["ended_by"], "limit:connects", "{s}");
    assert_eq!(stdout(&out).matches("OK connect").count(), 3, "exactly the limit got through: {}", stdout(&out));
    assert!(stderr(&out).contains("limit connects passed (4 > 3)"), "{}", stderr(&out));
    let pid: i32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid");
    // SAFETY: existence check only.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the session's other processes died too");
    assert_eq!(out.status.code(), Some(128 + libc::SIGKILL));
}

#[test]
fn connects_limit_freezes_then_kills_after_the_grace() {
    let (_l, port) = tcp("127.0.0.1:0");
    let profile = network(&[format!("127.0.0.1:{port}")]).replace("wall_time = \"2m\"", "wall_time = \"2m\"\nconnects = 2\non_limit = \"freeze\"");
    let case = Case::new("connfreeze", &profile.replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/sh\", \"/usr/bin/dash\"]"));
    let probe = common::probe();
    // Freezing is user space's reaction to the limit event (milliseconds); the
    // sleep stands for the agent's next step, which the freeze must stop.
    let script = format!("for i in 1 2 3 4; do {probe} connect 127.0.0.1:{port} || true; done; {probe} sleep 5; {probe} exit 0");
    let (out, s) = case.summary(&["--freeze-grace", "1s"], &["/bin/sh", "-c", &script]);
    assert!(stderr(&out).contains("FROZEN for an operator"), "{}", stderr(&out));
    assert!(stderr(&out).contains("nobody resumed the frozen session within 1s"), "{}", stderr(&out));
    assert_eq!(s["ended_by"], "limit:connects", "{s}");
    // Past the limit every connect is refused in the kernel; frozen, the rest never ran.
    assert_eq!(stdout(&out).matches("OK connect").count(), 2, "{}", stdout(&out));
    assert!(!stdout(&out).contains("OK exit"), "{}", stdout(&out));
}

#[test]
fn a_workload_under_every_limit_runs_untouched() {
    let (_l, port) = tcp("127.0.0.1:0");
    let profile = network(&[format!("127.0.0.1:{port}")])
        .replace("wall_time = \"2m\"", "wall_time = \"2m\"\nconnects = 5\nbytes_out = \"1MiB\"\nprocesses = 16\nmemory = \"256MiB\"");
    let case = Case::new("under", &profile);
    let (out, s) = case.summary(&[], &[common::probe(), "connect", &format!("127.0.0.1:{port}")]);
    allowed(&out);
    assert_eq!(s["ended_by"], "exit");
    assert_eq!(s["counters"]["connects"], 1);
}

fn counters(case: &Case, args: &[&str]) -> serde_json::Value {
    let work = case.work().to_string_lossy().into_owned();
    let mut argv = vec![common::probe(), "workload", work.as_str()];
    argv.extend_from_slice(args);
    let (out, s) = case.summary(&[], &argv);
    allowed(&out);
    s["counters"].clone()
}

fn delta(a: &serde_json::Value, b: &serde_json::Value, key: &str) -> i64 {
    b[key].as_i64().unwrap_or(-1) - a[key].as_i64().unwrap_or(-1)
}

#[test]
fn file_and_process_counters_equal_the_workload() {
    let case = Case::new("exact", &base_profile(""));
    // The dynamic loader opens files too; comparing two runs that differ only
    // in the workload isolates exactly what the workload did.
    let base = counters(&case, &["0", "0", "0", "0", "0"]);
    let busy = counters(&case, &["300", "120", "70", "25", "0"]);
    eprintln!("base {base}\nbusy {busy}");
    assert_eq!(delta(&base, &busy, "files_read"), 300);
    assert_eq!(delta(&base, &busy, "files_written"), 120);
    assert_eq!(delta(&base, &busy, "destructive_ops"), 70);
    assert_eq!(delta(&base, &busy, "processes"), 25);
    assert_eq!(delta(&base, &busy, "execs"), 0);
    assert_eq!(base["processes"], 1, "the first process counts");
    assert_eq!(base["execs"], 1, "its exec counts");
    assert_eq!(busy["processes_peak"], 2, "one child at a time beside the probe");
}

#[test]
fn exec_counter_equals_the_workload() {
    let case = Case::new("exactexec", &base_profile(""));
    let base = counters(&case, &["0", "0", "0", "0", "0"]);
    let execs = counters(&case, &["0", "0", "0", "0", "17"]);
    assert_eq!(delta(&base, &execs, "execs"), 17);
    assert_eq!(delta(&base, &execs, "processes"), 17);
}

#[test]
fn execs_limit_kills_at_the_limit() {
    let profile = base_profile("").replace("wall_time = \"2m\"", "wall_time = \"2m\"\nexecs = 6\non_limit = \"kill\"");
    let case = Case::new("execlimit", &profile);
    let work = case.work().to_string_lossy().into_owned();
    // The probe's own exec is the first; 5 more fit, the 7th is killed.
    let (out, s) = case.summary(&[], &[common::probe(), "workload", &work, "0", "0", "0", "0", "20"]);
    assert_eq!(s["ended_by"], "limit:execs", "{s}");
    // The exec past the limit is killed in the kernel before its first
    // instruction, and from then on every task of the session dies at its
    // next hooked call (the parent at its next fork), without waiting for
    // user space: nothing slips past.
    assert_eq!(s["counters"]["execs"], 7, "{s}");
    assert!(!stdout(&out).contains("OK workload"), "the workload never finished: {}", stdout(&out));
    assert!(stderr(&out).contains("limit execs passed (7 > 6)"), "{}", stderr(&out));
}

#[test]
fn overflowing_the_ring_buffer_loses_events_not_counts() {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let port = sink.local_addr().expect("addr").port();
    let case = Case::new("flood", &network(&[format!("127.0.0.1:{port}")]));
    let events = case.dir.path().join("events.jsonl");
    let n = 20_000;
    let summary_path = case.dir.path().join("summary.json");
    let out = case
        .command(
            &["--events-json", events.to_str().expect("utf-8"), "--summary-json", summary_path.to_str().expect("utf-8")],
            &[common::probe(), "udp-flood", &format!("127.0.0.1:{port}"), &n.to_string()],
        )
        // A one-page ring buffer: a few dozen events fit.
        .env("AGENT_GUARD_RING_BYTES", "4096")
        .output()
        .expect("run");
    allowed(&out);
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary_path).expect("summary")).expect("json");
    let text = std::fs::read_to_string(&events).expect("events file");
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    let connects = records.iter().filter(|r| r["type"] == "connect").count() as u64;
    // Losses are reported as they happen, in one or more records.
    let lost_record: u64 = records.iter().filter(|r| r["type"] == "events_lost").map(|r| r["count"].as_u64().unwrap_or(0)).sum();
    let lost = s["events_lost"].as_u64().expect("events_lost");
    eprintln!("connects counted {} / events {connects} / lost {lost}", s["counters"]["connects"]);
    // The counter is exact whatever the buffer did.
    assert_eq!(s["counters"]["connects"], n, "{s}");
    assert!(lost > 0, "a one-page buffer must overflow under {n} sends: {s}");
    assert_eq!(lost, lost_record, "the events file reports the loss explicitly");
    // Every event the kernel produced (n sends, the probe's exec and exit) is
    // either in the file or counted lost: nothing vanishes silently.
    let other = records.iter().filter(|r| r["type"] != "connect" && r["type"] != "events_lost" && r["type"] != "health").count() as u64;
    assert_eq!(connects + other + lost, n + 2, "connects {connects}, others {other}, lost {lost}");
}

#[test]
fn events_file_records_execs_and_escapes_agent_strings() {
    let case = Case::new("evfile", &base_profile(""));
    let events = case.dir.path().join("events.jsonl");
    let evil = "x\u{1b}[2Jy";
    let out = case.run_with(&["--events-json", events.to_str().expect("utf-8")], &[common::probe(), "exit", "0", evil]);
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(&events).expect("events file");
    assert!(!text.contains('\u{1b}'), "raw escape in the events file: {text}");
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let exec = records.iter().find(|r| r["type"] == "exec").expect("an exec event");
    assert_eq!(exec["path"], common::probe());
    assert_eq!(exec["argv"][3], "x\\e[2Jy", "{exec}");
    assert!(records.iter().any(|r| r["type"] == "exit"), "{text}");
    // Sequence numbers are per session, from 1, without gaps (user space's
    // own records, health and events_lost, carry 0).
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap_or(0)).filter(|&s| s > 0).collect();
    let health: Vec<&serde_json::Value> = records.iter().filter(|r| r["type"] == "health").collect();
    assert_eq!(health.len(), 2, "a health record at the start and at the end: {text}");
    assert_eq!(health[0]["phase"], "start");
    assert_eq!(health[0]["monitor"], true);
    assert_eq!(health[1]["phase"], "end");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn the_monitor_loads_without_verifier_complaints() {
    // A profile that needs nothing of the monitor still gets it: every
    // program must load and attach on this kernel, or `run` says so.
    let case = Case::new("loads", &base_profile(""));
    let (out, s) = case.summary(&[], &[common::probe(), "exit", "0"]);
    assert!(!stderr(&out).contains("could not be loaded"), "{}", stderr(&out));
    assert!(s["counters"].is_object(), "counters present: {s}");
    assert_eq!(s["counters"]["execs"], 1, "{s}");
    // With AGENT_GUARD_LOG=debug nothing about the monitor is logged as a failure either.
    let out = case.command(&[], &[common::probe(), "exit", "0"]).env("AGENT_GUARD_LOG", "debug").output().expect("run");
    assert!(!stderr(&out).contains("loading the monitor"), "{}", stderr(&out));
}

#[test]
fn file_writes_count_regular_files_only() {
    let case = Case::new("fwrites", &base_profile(""));
    let file = case.work().join("out/data");
    let file = file.to_str().expect("utf-8");
    let run = |n: &str, m: &str| {
        let (out, s) = case.summary(&[], &[common::probe(), "writes", file, n, m]);
        allowed(&out);
        s["counters"].clone()
    };
    let base = run("0", "0");
    let busy = run("500", "300");
    // 500 writes to a regular file; the 300 to /dev/null and 300 to a pipe do not count.
    assert_eq!(delta(&base, &busy, "file_writes"), 500, "{base} {busy}");
}

#[test]
fn file_writes_limit_kills() {
    let profile = base_profile("").replace("wall_time = \"2m\"", "wall_time = \"2m\"\nfile_writes = 100\non_limit = \"kill\"");
    let case = Case::new("fwlimit", &profile);
    let file = case.work().join("out/data");
    let (out, s) = case.summary(&[], &[common::probe(), "writes", file.to_str().expect("utf-8"), "1000", "0"]);
    assert_eq!(s["ended_by"], "limit:file_writes", "{s}");
    assert_eq!(out.status.code(), Some(128 + libc::SIGKILL));
    // The write that passed the limit completed before the signal landed: at most one more.
    let written = std::fs::metadata(&file).expect("data").len();
    assert!((100..=101).contains(&written), "{written} bytes written");
}

#[test]
fn exit_events_carry_codes_and_signals() {
    let case = Case::new("exitev", &base_profile(""));
    let events = case.dir.path().join("events.jsonl");
    let out = case.run_with(&["--events-json", events.to_str().expect("utf-8")], &[common::probe(), "exit", "7"]);
    assert_eq!(out.status.code(), Some(7));
    let text = std::fs::read_to_string(&events).expect("events");
    assert!(text.contains(r#""type":"exit","exit_code":7,"signal":null"#), "{text}");
    let out = case.run_with(&["--events-json", events.to_str().expect("utf-8")], &[common::probe(), "kill-self", "15"]);
    assert_eq!(out.status.code(), Some(143));
    let text = std::fs::read_to_string(&events).expect("events");
    assert!(text.contains(r#""type":"exit","exit_code":null,"signal":15"#), "{text}");
}

#[test]
fn files_opened_for_writing_are_reported_with_their_path() {
    let case = Case::new("fopen", &base_profile(""));
    let events = case.dir.path().join("events.jsonl");
    let target = case.work().join("out/report\u{1b}[1m.txt");
    let out = case.run_with(&["--events-json", events.to_str().expect("utf-8")], &[common::probe(), "write", target.to_str().expect("utf-8")]);
    allowed(&out);
    let text = std::fs::read_to_string(&events).expect("events");
    let rec: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|r| r["type"] == "file_open_write")
        .unwrap_or_else(|| panic!("no file_open_write in {text}"));
    let expected = format!("{}/out/report\\e[1m.txt", case.work().display());
    assert_eq!(rec["path"], expected.as_str(), "{rec}");
    assert!(rec["fd"].as_i64().unwrap_or(-1) >= 3, "{rec}");
}

#[test]
fn connects_refused_by_landlock_are_counted_and_reported_too() {
    let (_l, port) = tcp("127.0.0.1:0");
    let (_m, other) = tcp("127.0.0.1:0");
    let case = Case::new("llcount", &network(&[format!("127.0.0.1:{port}")]));
    let events = case.dir.path().join("events.jsonl");
    let path = events.to_str().expect("utf-8");
    // A port landlock refuses (EACCES) before the cgroup hook would run.
    let (out, s) = case.summary(&["--events-json", path], &[common::probe(), "connect", &format!("127.0.0.1:{other}")]);
    refused(&out);
    assert!(stdout(&out).contains("Permission denied"), "landlock's EACCES: {}", stdout(&out));
    assert_eq!(s["counters"]["connects"], 1, "{s}");
    assert_eq!(s["counters"]["connects_denied"], 1, "{s}");
    let text = std::fs::read_to_string(&events).expect("events");
    assert!(text.contains(&format!("\"port\":{other}")) && text.contains("\"allowed\":false"), "{text}");
}

#[test]
fn sessions_share_one_instance_but_each_keeps_its_own_rules() {
    let (_l, port) = tcp("127.0.0.1:0");
    let open = Case::new("rules-open", &network(&[format!("127.0.0.1:{port}")]));
    let closed = Case::new("rules-closed", &network(&["127.0.0.1:1".to_owned()]));
    // A session with the open rules stays registered meanwhile.
    let mut running = open.command(&[], &[common::probe(), "sleep", "30"]).spawn().expect("spawn");
    let id = open.wait_cgroup_id();
    assert!(open.monitored().contains(&id), "the running session is registered");
    refused(&closed.probe(&["connect", &format!("127.0.0.1:{port}")]));
    allowed(&open.probe(&["connect", &format!("127.0.0.1:{port}")]));
    refused(&closed.probe(&["connect", &format!("127.0.0.1:{port}")]));
    let _ = running.kill();
    let _ = running.wait();
}

#[test]
fn a_session_whose_supervisor_is_killed_is_forgotten_by_the_monitor() {
    let case = Case::new("forgotten", &base_profile(""));
    let mut running = case.command(&[], &[common::probe(), "sleep", "60"]).spawn().expect("spawn");
    let id = case.wait_cgroup_id();
    assert!(case.monitored().contains(&id), "registered while it runs");
    let _ = running.kill(); // SIGKILL: the supervisor cannot clean up
    let _ = running.wait();
    let forgotten = common::eventually(500, std::time::Duration::from_millis(20), || !case.monitored().contains(&id));
    assert!(forgotten, "the guardian removed session {id} from the monitor's maps");
}

#[test]
fn unload_keeps_an_instance_that_serves_a_session() {
    let case = Case::new("unload", &base_profile(""));
    let mut running = case.command(&[], &[common::probe(), "sleep", "30"]).spawn().expect("spawn");
    let id = case.wait_cgroup_id();
    let out = case.ag(&["monitor", "unload"]);
    assert_eq!(out.status.code(), Some(1), "unload reports what it kept");
    assert!(stdout(&out).contains("kept"), "{}", stdout(&out));
    assert!(case.monitored().contains(&id), "the session is still watched");
    let _ = running.kill();
    let _ = running.wait();
}

/// A TCP listener and a UDP socket on one port of `ip`.
fn tcp_and_udp(ip: &str) -> (TcpListener, UdpSocket, u16) {
    for _ in 0..20 {
        let (l, port) = tcp(&format!("{ip}:0"));
        // The same number may be taken for UDP; try another.
        if let Ok(u) = UdpSocket::bind((ip.trim_matches(['[', ']']), port)) {
            u.set_nonblocking(true).expect("nonblocking");
            return (l, u, port);
        }
    }
    panic!("no port free for both TCP and UDP on {ip}");
}

/// Datagrams waiting on `u`.
fn datagrams(u: &UdpSocket) -> usize {
    let mut buf = [0u8; 64];
    std::iter::from_fn(|| u.recv(&mut buf).ok()).count()
}

#[test]
fn destinations_allow_only_their_protocol() {
    // Every port listens for TCP and UDP alike, so a refusal is the rules'
    // doing, never a closed port.
    let (_tl, tu, t) = tcp_and_udp("127.0.0.1"); // /tcp
    let (_ul, uu, u) = tcp_and_udp("127.0.0.1"); // /udp, and /tcp on another address: landlock allows the TCP port
    let (_wl, wu, w) = tcp_and_udp("127.0.0.1"); // /udp only: landlock refuses TCP to it
    let (_bl, bu, b) = tcp_and_udp("127.0.0.1"); // no suffix: both
    let (_6l, u6, p6) = tcp_and_udp("[::1]"); // IPv6, /udp
    let rules = [
        format!("127.0.0.1:{t}/tcp"),
        format!("127.0.0.1:{u}/udp"),
        format!("127.0.0.2:{u}/tcp"),
        format!("127.0.0.1:{w}/udp"),
        format!("127.0.0.1:{b}"),
        format!("[::1]:{p6}/udp"),
    ];
    let profile = network(&rules)
        .replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/true\", \"/usr/bin/sh\", \"/usr/bin/dash\"]");
    let case = Case::new("protocols", &profile);
    let probe = common::probe();
    let tries = [
        (format!("connect 127.0.0.1:{t}"), "OK"),
        (format!("udp 127.0.0.1:{t}"), "REFUSED udp: Operation not permitted"),
        (format!("udp 127.0.0.1:{u}"), "OK"),
        // Landlock lets the port through (the /tcp rule on 127.0.0.2); the monitor refuses the protocol.
        (format!("connect 127.0.0.1:{u}"), "REFUSED connect: Operation not permitted"),
        (format!("udp 127.0.0.1:{w}"), "OK"),
        // No TCP rule names the port: landlock refuses it first (EACCES), the monitor counts it.
        (format!("connect 127.0.0.1:{w}"), "REFUSED connect: Permission denied"),
        (format!("connect 127.0.0.1:{b}"), "OK"),
        (format!("udp 127.0.0.1:{b}"), "OK"),
        (format!("udp [::1]:{p6}"), "OK"),
        (format!("connect [::1]:{p6}"), "REFUSED connect: Permission denied"),
    ];
    let script: Vec<String> = tries.iter().map(|(args, _)| format!("{probe} {args}")).collect();
    let events = case.dir.path().join("events.jsonl");
    let (out, s) = case.summary(&["--events-json", events.to_str().expect("utf-8")], &["/bin/sh", "-c", &script.join("; ")]);
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), tries.len(), "{lines:?}");
    for ((args, expect), line) in tries.iter().zip(&lines) {
        assert!(line.starts_with(expect), "{args}: expected {expect}, got {line}");
    }
    // Every attempt counted, the four refusals as denied.
    assert_eq!(s["counters"]["connects"], tries.len() as u64, "{s}");
    assert_eq!(s["counters"]["connects_denied"], 4, "{s}");
    // The allowed datagrams arrived, the refused one did not.
    assert_eq!((datagrams(&tu), datagrams(&uu), datagrams(&wu), datagrams(&bu), datagrams(&u6)), (0, 1, 1, 1, 1));
    // The refused UDP send is reported with its protocol.
    let text = std::fs::read_to_string(&events).expect("events");
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let refused_udp = records
        .iter()
        .find(|r| r["type"] == "connect" && r["port"] == t && r["protocol"] == "udp")
        .unwrap_or_else(|| panic!("no event of the UDP send to {t}: {text}"));
    assert_eq!(refused_udp["allowed"], false, "{refused_udp}");
    assert_eq!(refused_udp["via"], "sendmsg", "{refused_udp}");
    let refused_tcp = records.iter().find(|r| r["type"] == "connect" && r["port"] == u && r["protocol"] == "tcp").expect("TCP to the /udp port");
    assert_eq!(refused_tcp["allowed"], false, "{refused_tcp}");
}
