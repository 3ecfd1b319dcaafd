//! The journal that `run` keeps: what a session leaves in it, and
//! `journal verify` catching tampering on disk.

mod common;

use std::process::Command;

use common::{agent_guard, allowed, base_profile, stderr, stdout, Case};

fn records(case: &Case) -> Vec<serde_json::Value> {
    case.journal_records()
}

fn verify(case: &Case) -> std::process::Output {
    verify_dir(&case.journal())
}

fn verify_dir(dir: &std::path::Path) -> std::process::Output {
    let out = Command::new(agent_guard()).args(["journal", "verify", "--dir"]).arg(dir).output().expect("verify");
    eprintln!("{}{}", stdout(&out), stderr(&out));
    out
}

/// `journal verify`'s exit status when there is nothing to verify (see docs/journal.md).
const NOTHING_TO_VERIFY: i32 = 3;

/// A case whose journal holds two sessions, verified clean.
fn journaled(name: &str) -> Case {
    let case = Case::new(name, &base_profile(""));
    allowed(&case.probe(&["pid"]));
    allowed(&case.probe(&["pid"]));
    assert_eq!(verify(&case).status.code(), Some(0));
    case
}

#[test]
fn a_session_is_journaled_start_to_end() {
    let case = Case::new("journaled", &base_profile(""));
    let out = case.probe(&["exit", "0"]);
    assert_eq!(out.status.code(), Some(0));
    let rs = records(&case);
    let kinds: Vec<&str> = rs.iter().map(|r| r["kind"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds.first(), Some(&"session_start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"session_end"), "{kinds:?}");
    assert!(kinds.contains(&"event"), "{kinds:?}");
    let start = &rs[0];
    let profile = std::fs::read(&case.profile).expect("profile");
    let sha: String = {
        // The journal names the exact profile text the session ran under.
        let out = Command::new("sha256sum").arg(&case.profile).output().expect("sha256sum");
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
    };
    assert!(!profile.is_empty());
    assert_eq!(start["data"]["profile_sha256"], sha.as_str(), "{start}");
    assert_eq!(start["data"]["role"], "journaled");
    let end = rs.last().expect("end");
    assert_eq!(end["data"]["ended_by"], "exit");
    assert_eq!(end["session"], start["session"]);
    // Sequence numbers run without gaps, each record chained to the one before.
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1);
        if i > 0 {
            assert_eq!(r["prev"], rs[i - 1]["hash"]);
        }
    }
    assert_eq!(verify(&case).status.code(), Some(0));
}

#[test]
fn verify_catches_an_edited_record() {
    let case = Case::new("tamper", &base_profile(""));
    allowed(&case.probe(&["pid"]));
    allowed(&case.probe(&["pid"]));
    assert_eq!(verify(&case).status.code(), Some(0));
    let file = case.journal().join("journal-000001.jsonl");
    let text = std::fs::read_to_string(&file).expect("journal");
    // Rewrite history: make the first session look like another role.
    let forged = text.replacen("\"role\":\"tamper\"", "\"role\":\"trusted\"", 1);
    assert_ne!(forged, text);
    std::fs::write(&file, forged).expect("write");
    let out = verify(&case);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("journal-000001.jsonl:1: record 1 does not match its hash"), "{}", stdout(&out));
}

#[test]
fn limit_alerts_are_journaled() {
    let profile = base_profile("").replace("wall_time = \"2m\"", "wall_time = \"1s\"");
    let case = Case::new("alerts", &profile);
    let out = case.probe(&["sleep", "30"]);
    assert_eq!(out.status.code(), Some(137));
    let rs = records(&case);
    assert!(
        rs.iter().any(|r| r["kind"] == "alert" && r["data"]["alert"] == "wall_time"),
        "{rs:?}"
    );
    assert_eq!(rs.last().expect("end")["data"]["ended_by"], "wall_time");
}

#[test]
fn events_come_from_the_journal_filtered_and_followed() {
    use std::io::BufRead as _;
    let case = Case::new("evjournal", &base_profile(""));
    // Follow first, so the session below is seen as it is appended.
    let mut follower = Command::new(agent_guard())
        .env("AGENT_GUARD_CONFIG", case.config())
        .args(["events", "--follow", "--role", "evjournal"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("follow");
    let out = case.probe(&["exit", "0", "\u{1b}[31mred"]);
    assert_eq!(out.status.code(), Some(0));
    let mut lines = std::io::BufReader::new(follower.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        let done = line.contains("end by exit");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let text = seen.join("\n");
    assert!(text.contains("start role evjournal"), "{text}");
    assert!(text.contains(&format!("exec {}", common::probe())), "{text}");
    assert!(!text.contains('\u{1b}'), "raw escape on the terminal: {text:?}");
    assert!(text.contains("\\e[31mred"), "{text}");
    // JSON, filtered by another role: nothing.
    let out = case.ag(&["events", "--role", "someone-else", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    let out = case.ag(&["events", "--json"]);
    let n = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("\"kind\":\"event\"")).count();
    assert!(n >= 2, "exec and exit at least: {}", stdout(&out));
}

#[test]
fn alerts_also_go_to_the_systemd_journal_socket() {
    let profile = base_profile("").replace("wall_time = \"2m\"", "wall_time = \"1s\"");
    let case = Case::new("journald", &profile);
    // A stand-in for /run/systemd/journal/socket.
    let socket = case.dir.path().join("journald.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&socket).expect("bind");
    listener.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    let config = std::fs::read_to_string(case.config()).expect("config");
    std::fs::write(case.config(), format!("journald_socket = {socket:?}\n{config}")).expect("config");
    let out = case.probe(&["sleep", "30"]);
    assert_eq!(out.status.code(), Some(137));
    let mut buf = vec![0u8; 65536];
    let n = listener.recv(&mut buf).expect("a datagram from the alert");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.contains("SYSLOG_IDENTIFIER=agent-guard\n") && text.contains("AGENT_GUARD_ALERT=wall_time\n"), "{text}");
}

#[test]
fn verify_catches_a_field_added_to_a_record() {
    let case = journaled("addfield");
    let file = case.journal().join("journal-000001.jsonl");
    let text = std::fs::read_to_string(&file).expect("journal");
    // A field no writer puts there, with the hash still the last field.
    let forged = text.replacen(",\"hash\":", ",\"approved\":true,\"hash\":", 1);
    std::fs::write(&file, forged).expect("write");
    let out = verify(&case);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("journal-000001.jsonl:1: not a journal record (unknown field `approved`"), "{}", stdout(&out));
}

#[test]
fn verify_refuses_nothing_to_verify() {
    let case = journaled("nothing");
    // Every file and head deleted (the lock is all that is left).
    for e in std::fs::read_dir(case.journal()).expect("journal") {
        let path = e.expect("entry").path();
        if path.file_name().is_some_and(|n| n != "lock") {
            std::fs::remove_file(path).expect("rm");
        }
    }
    let empty = case.dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    for (dir, why) in [
        (case.journal(), "holds no record and no head: nothing to verify"),
        (empty, "holds no record and no head: nothing to verify"),
        (case.dir.path().join("missing"), "does not exist: nothing to verify"),
    ] {
        let out = verify_dir(&dir);
        assert_eq!(out.status.code(), Some(NOTHING_TO_VERIFY), "{}", dir.display());
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
        assert!(!stdout(&out).contains("the chain holds"), "{}", stdout(&out));
    }
}

#[test]
fn verify_reports_a_head_cut_to_nothing_as_tampering() {
    let case = journaled("headzero");
    std::fs::write(case.journal().join("head"), "").expect("truncate");
    let out = verify(&case);
    assert_eq!(out.status.code(), Some(1), "tampering, not an internal error");
    assert!(stdout(&out).contains("head:1: head is empty: it was truncated"), "{}", stdout(&out));
}

#[test]
fn verify_reports_a_record_file_cut_mid_line_as_tampering() {
    let case = journaled("midline");
    let file = case.journal().join("journal-000001.jsonl");
    let text = std::fs::read(&file).expect("journal");
    // Cut 10 bytes into line 3.
    let line3 = text.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(1).map(|(i, _)| i + 1).expect("three lines");
    std::fs::write(&file, &text[..line3 + 10]).expect("cut");
    let out = verify(&case);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("journal-000001.jsonl:3: record cut off mid-line: the journal was truncated"), "{}", stdout(&out));
}
