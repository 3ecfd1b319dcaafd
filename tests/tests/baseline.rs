//! Behavioural baselines measured on a corpus (tests/corpus): a baseline
//! learned from normal sessions of two roles must flag every misbehaving
//! script and stay quiet on normal sessions held out from learning, live
//! (alerts in the journal) and offline (`baseline check`) alike.

mod common;

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::Path,
};

use common::{stderr, stdout, Case};

/// A local HTTP API that answers every request with `ok`.
fn api() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then as many body bytes as Content-Length says.
                loop {
                    let Ok(n) = s.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
            });
        }
    });
    port
}

/// Something listening on 127.0.0.2, the destination no normal session uses.
fn other() -> u16 {
    let listener = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    port
}

fn profile(case_dir: &Path, api: u16, other: u16, on_deviation: &str) -> String {
    format!(
        r#"[role]
name = "@NAME@"
description = "baseline corpus"
environment = "test"

[filesystem]
# Broad on purpose: the credentials beside the work are readable, so only
# the baseline can notice that the agent reads them.
read = ["/usr", "/lib", "/lib64", "/etc", "{case}"]
write = ["{{workdir}}/out", "/dev/null"]
exec = ["/usr/bin", "/bin"]

[network]
connect = ["127.0.0.1:{api}", "127.0.0.2:{other}"]

[limits]
wall_time = "2m"
bytes_out = "10MiB"
file_writes = 100000

[env]
pass = ["API", "CREDS", "OTHER"]

[baseline]
min_sessions = 5
on_deviation = "{on_deviation}"
"#,
        case = case_dir.display()
    )
}

/// The repository, tickets and corpus scripts the sessions work on.
fn fixtures(case: &Case, role: &str) {
    let work = case.work();
    // The scripts, and the role's work they source.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    std::fs::create_dir_all(work.join("corpus").join(role)).expect("mkdir");
    for entry in std::fs::read_dir(&corpus).expect("corpus") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "sh") {
            std::fs::copy(&p, work.join("corpus").join(p.file_name().expect("name"))).expect("copy");
        }
    }
    std::fs::copy(corpus.join(role).join("work.sh"), work.join("corpus").join(role).join("work.sh")).expect("copy");
    std::fs::create_dir_all(work.join("src")).expect("mkdir");
    for (i, name) in ["app", "models", "views", "utils", "config", "tests"].iter().enumerate() {
        let body: String = (0..(10 + 7 * i)).map(|l| format!("def f{l}():\n    return {l}\n")).collect();
        std::fs::write(work.join("src").join(format!("{name}.py")), body).expect("write");
    }
    std::fs::write(work.join("run-tests.sh"), "for f in src/*.py; do grep -c def \"$f\"; done\nwc -l src/*.py\n").expect("write");
    std::fs::create_dir_all(work.join("tickets")).expect("mkdir");
    for i in 1..=4 {
        std::fs::write(work.join("tickets").join(format!("{i}.txt")), format!("ticket {i}: my order {i}42 did not arrive\n").repeat(i)).expect("write");
    }
    let creds = case.dir.path().join("creds");
    std::fs::create_dir_all(&creds).expect("mkdir");
    std::fs::write(creds.join("credentials"), "[default]\naws_access_key_id = AKIAEXAMPLE\n").expect("write");
}

/// Runs `script` doing the work of role `work` with `seed`; returns the session id and status.
fn session(case: &Case, work: &str, script: &str, seed: u32, api: u16, other: u16) -> (String, Option<i32>) {
    let summary = case.work().join("out").join(format!("summary-{script}-{seed}.json"));
    let out = case
        .command(&["--quiet", "--summary-json", summary.to_str().expect("utf-8")], &["/bin/sh", &format!("corpus/{script}.sh"), &seed.to_string(), work])
        .env("API", api.to_string())
        .env("OTHER", other.to_string())
        .env("CREDS", case.dir.path().join("creds"))
        .output()
        .expect("run");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap_or_else(|e| panic!("{script} {seed}: no summary ({e}): {}", stderr(&out)))).expect("summary");
    // Each session leaves out/ as it found it, but for the summaries.
    for entry in std::fs::read_dir(case.work().join("out")).expect("out") {
        let p = entry.expect("entry").path();
        if !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("summary-")) {
            let _ = std::fs::remove_file(p);
        }
    }
    (s["session"].as_str().expect("session id").to_owned(), out.status.code())
}

/// The deviation alerts the journal holds for `session`: (kind, subject).
fn live_deviations(case: &Case, session: &str) -> Vec<(String, String)> {
    case.journal_records()
        .into_iter()
        .filter(|r| r["kind"] == "alert" && r["session"] == session && r["data"]["alert"] == "deviation")
        .map(|r| (r["data"]["kind"].as_str().unwrap_or("").to_owned(), r["data"]["subject"].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// `baseline check` of `session`: whether it deviates, and what it printed.
fn offline(case: &Case, session: &str) -> (bool, String) {
    let out = case.ag(&["baseline", "check", "--session", session]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "baseline check failed: {}", stderr(&out));
    (out.status.code() == Some(1), stdout(&out))
}

const BAD: [&str; 5] = ["bad-credentials", "bad-write-burst", "bad-new-destination", "bad-new-tool", "bad-slow-exfil"];
const LEARN: std::ops::Range<u32> = 0..10;
const HELD_OUT: std::ops::Range<u32> = 10..16;

#[test]
fn baselines_catch_every_misbehaviour_and_spare_held_out_normal_sessions() {
    let (api, other) = (api(), other());
    let mut table = Vec::new();
    for role in ["repo-helper", "support-bot"] {
        let case = Case::new(role, "[role]\nname = \"@NAME@\"\n");
        std::fs::write(&case.profile, profile(case.dir.path(), api, other, "alert").replace("@NAME@", role)).expect("profile");
        fixtures(&case, role);
        // Learn from ten normal sessions.
        for seed in LEARN {
            let (id, status) = session(&case, role, "normal", seed, api, other);
            assert_eq!(status, Some(0), "{role} normal {seed} ({id}) failed");
        }
        let out = case.ag(&["baseline", "learn", "--role", role]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stdout(&out).contains("from 10 session(s)"), "{}", stdout(&out));
        // Held-out normal sessions: no alarm, live or offline.
        let mut false_alarms = 0;
        for seed in HELD_OUT {
            let (id, status) = session(&case, role, "normal", seed, api, other);
            assert_eq!(status, Some(0));
            let live = live_deviations(&case, &id);
            let (deviates, printed) = offline(&case, &id);
            assert_eq!(deviates, !live.is_empty(), "live {live:?} and offline disagree on {id}: {printed}");
            if !live.is_empty() {
                eprintln!("FALSE ALARM {role} normal seed {seed}: {live:?}");
                false_alarms += 1;
            }
        }
        table.push(format!("| {role} | normal, held out | {} | {false_alarms} false alarms |", HELD_OUT.len()));
        // Every misbehaving script is caught.
        let mut missed = Vec::new();
        for bad in BAD {
            let (id, _) = session(&case, role, bad, 3, api, other);
            let live = live_deviations(&case, &id);
            let (deviates, printed) = offline(&case, &id);
            assert_eq!(deviates, !live.is_empty(), "live {live:?} and offline disagree on {id}: {printed}");
            table.push(format!(
                "| {role} | {bad} | 1 | {} |",
                if live.is_empty() { "MISSED".to_owned() } else { live.iter().map(|(k, s)| format!("{k} ({s})")).collect::<Vec<_>>().join(", ") }
            ));
            if live.is_empty() {
                missed.push(bad);
            }
        }
        assert!(missed.is_empty(), "{role}: not caught: {missed:?}");
        assert_eq!(false_alarms, 0, "{role}: alarms on held-out normal sessions");
    }
    eprintln!("| role | sessions | n | result |\n| --- | --- | ---: | --- |\n{}", table.join("\n"));
}

#[test]
fn on_deviation_kill_ends_the_session() {
    let (api, other) = (api(), other());
    let role = "killer-bot";
    let case = Case::new(role, "[role]\nname = \"@NAME@\"\n");
    std::fs::write(&case.profile, profile(case.dir.path(), api, other, "kill").replace("@NAME@", role)).expect("profile");
    // Its work is repo-helper's.
    let work = "repo-helper";
    fixtures(&case, work);
    for seed in 0..5 {
        assert_eq!(session(&case, work, "normal", seed, api, other).1, Some(0));
    }
    assert_eq!(case.ag(&["baseline", "learn", "--role", role]).status.code(), Some(0));
    // The control: a normal session still runs to its end.
    assert_eq!(session(&case, work, "normal", 7, api, other).1, Some(0));
    let (id, status) = session(&case, work, "bad-new-tool", 3, api, other);
    assert_eq!(status, Some(137), "killed");
    let summary = case.work().join("out").join("summary-bad-new-tool-3.json");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(summary).expect("summary")).expect("JSON");
    assert_eq!(s["ended_by"], "deviation:new_executable", "{id}: {s}");
}
