//! Tampering with a real journal on disk, and verify catching it.

use std::{fs, io::Write as _, path::Path};

use super::verify;
use crate::journal::{files, Entry, Journal};

fn entry(i: usize) -> Entry {
    Entry { kind: "event".into(), session: Some("s1".into()), data: serde_json::json!({ "n": i, "path": "/tmp/x" }) }
}

fn journal(dir: &Path, records: usize, max_file_bytes: u64) {
    let mut j = Journal::open(dir, max_file_bytes).expect("open");
    for i in 0..records {
        j.append(&[entry(i)]).expect("append");
    }
}

fn first_file(dir: &Path) -> std::path::PathBuf {
    files(dir).expect("files")[0].1.clone()
}

#[test]
fn an_untouched_journal_verifies_across_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 200, 4096);
    let r = verify(dir.path()).expect("verify");
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.records, 200);
    assert!(r.files > 2, "rotated into {} files", r.files);
}

#[test]
fn a_changed_byte_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 10, 1 << 20);
    let f = first_file(dir.path());
    let text = fs::read_to_string(&f).expect("read").replacen("\"n\":4", "\"n\":5", 1);
    fs::write(&f, text).expect("write");
    let r = verify(dir.path()).expect("verify");
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].line, 5);
    assert!(r.problems[0].what.contains("record 5 does not match its hash"), "{}", r.problems[0]);
}

#[test]
fn a_removed_line_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 10, 1 << 20);
    let f = first_file(dir.path());
    let text = fs::read_to_string(&f).expect("read");
    let kept: Vec<&str> = text.lines().enumerate().filter(|(i, _)| *i != 6).map(|(_, l)| l).collect();
    fs::write(&f, kept.join("\n") + "\n").expect("write");
    let r = verify(dir.path()).expect("verify");
    assert!(r.problems.iter().any(|p| p.line == 7 && p.what.contains("records 7..7 are missing")), "{:?}", r.problems);
}

#[test]
fn reordered_lines_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 10, 1 << 20);
    let f = first_file(dir.path());
    let text = fs::read_to_string(&f).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(2, 3);
    fs::write(&f, lines.join("\n") + "\n").expect("write");
    let r = verify(dir.path()).expect("verify");
    assert!(!r.ok());
    assert_eq!(r.problems[0].line, 3, "{:?}", r.problems);
}

#[test]
fn a_truncated_tail_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 10, 1 << 20);
    let f = first_file(dir.path());
    let text = fs::read_to_string(&f).expect("read");
    let kept: Vec<&str> = text.lines().take(7).collect();
    fs::write(&f, kept.join("\n") + "\n").expect("write");
    let r = verify(dir.path()).expect("verify");
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].what.contains("truncated: records up to 10 were written, it ends at 7"), "{}", r.problems[0]);
}

#[test]
fn a_torn_last_line_is_marked_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 5, 1 << 20);
    // A crash in the middle of writing record 6.
    let f = first_file(dir.path());
    fs::OpenOptions::new().append(true).open(&f).expect("open").write_all(b"{\"seq\":6,\"time_ms\":1,\"pre").expect("write");
    let r = verify(dir.path()).expect("verify");
    assert!(r.ok(), "a torn tail alone is a crash, not tampering: {:?}", r.problems);
    assert!(r.torn_unmarked.is_some());
    // The next append marks it and the chain goes on from record 5.
    journal(dir.path(), 1, 1 << 20);
    let r = verify(dir.path()).expect("verify");
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.torn_marked.len(), 1, "{r:?}");
    assert_eq!(r.records, 7, "5 acknowledged, the torn_tail marker, the new one");
}

#[test]
fn the_journal_is_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let jdir = dir.path().join("journal");
    journal(&jdir, 1, 1 << 20);
    let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&jdir), 0o700);
    assert_eq!(mode(&first_file(&jdir)), 0o600);
}

#[test]
fn two_writers_interleaving_keep_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = Journal::open(dir.path(), 4096).expect("a");
    let mut b = Journal::open(dir.path(), 4096).expect("b");
    for i in 0..60 {
        let j = if i % 3 == 0 { &mut a } else { &mut b };
        if i % 2 == 0 {
            j.append(&[entry(i)]).expect("append");
        } else {
            j.append_unsynced(&[entry(i), entry(i + 1000)]).expect("append");
        }
    }
    let r = verify(dir.path()).expect("verify");
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.records, 90);
    assert!(r.files > 1, "rotated");
}

fn problems(dir: &Path) -> Vec<super::Problem> {
    verify(dir).expect("verify").problems
}

#[test]
fn a_record_with_an_unknown_field_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 5, 1 << 20);
    let f = first_file(dir.path());
    let text = fs::read_to_string(&f).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // A field the hash never covered, put where it keeps the hash field last.
    lines[2] = lines[2].replacen(",\"hash\":", ",\"approved_by\":\"root\",\"hash\":", 1);
    fs::write(&f, lines.join("\n") + "\n").expect("write");
    let p = problems(dir.path());
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!((p[0].file.as_path(), p[0].line), (f.as_path(), 3));
    assert!(p[0].what.contains("unknown field `approved_by`"), "{}", p[0]);
    // Not a record, so the chain has a gap where it was.
    assert!(p[1].line == 4 && p[1].what.contains("records 3..3 are missing"), "{}", p[1]);
}

#[test]
fn a_repeated_field_or_a_reformatted_line_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 5, 1 << 20);
    let f = first_file(dir.path());
    let text = fs::read_to_string(&f).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1] = lines[1].replacen("{\"seq\":2,", "{\"seq\":2,\"seq\":2,", 1);
    // Same values, other bytes: a space, and an escaped letter.
    lines[3] = lines[3].replacen("\"seq\":4", "\"seq\": 4", 1).replacen("\"kind\":\"event\"", "\"kind\":\"\\u0065vent\"", 1);
    fs::write(&f, lines.join("\n") + "\n").expect("write");
    let p = problems(dir.path());
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[0].line == 2 && p[0].what.contains("duplicate field `seq`"), "{}", p[0]);
    assert!(p[1].line == 3 && p[1].what.contains("records 2..2 are missing"), "{}", p[1]);
    assert!(p[2].line == 4 && p[2].what.contains("record 4 does not match its hash"), "{}", p[2]);
}

#[test]
fn a_hash_moved_from_the_end_of_its_line_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 3, 1 << 20);
    let f = first_file(dir.path());
    let text = fs::read_to_string(&f).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let r: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
    let hash = r["hash"].as_str().expect("hash").to_owned();
    lines[0] = lines[0].replacen(&format!(",\"hash\":\"{hash}\""), "", 1).replacen("{", &format!("{{\"hash\":\"{hash}\","), 1);
    fs::write(&f, lines.join("\n") + "\n").expect("write");
    let p = problems(dir.path());
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].line == 1 && p[0].what.contains("does not end with its hash"), "{}", p[0]);
}

/// The line the writer wrote before the hash covered the stored bytes:
/// the record serialised, hashed without its `hash` as re-serialised.
fn old_line(seq: u64, prev: &str, entry: &Entry) -> (String, Vec<u8>) {
    use sha2::Digest as _;
    let hashed = serde_json::to_vec(&crate::journal::Hashed { seq, time_ms: 1_795_555_200_123, prev, entry }).expect("json");
    let hash: String = sha2::Sha256::digest(&hashed).iter().map(|b| format!("{b:02x}")).collect();
    let record = crate::journal::Record { seq, time_ms: 1_795_555_200_123, prev: prev.to_owned(), entry: entry.clone(), hash: hash.clone() };
    let mut line = serde_json::to_vec(&record).expect("json");
    line.push(b'\n');
    (hash, line)
}

#[test]
fn journals_written_before_still_verify_byte_for_byte() {
    let entries = [
        entry(1),
        Entry { kind: "session_start".into(), session: None, data: serde_json::json!({"argv": ["a\u{1b}[31m\"\\", "\u{202e}é"], "n": -1.5e300, "z": null}) },
        Entry { kind: "alert".into(), session: Some("s\u{0}2".into()), data: serde_json::json!([{"b": 1, "a": [true]}]) },
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut prev = crate::journal::GENESIS.to_owned();
    let mut text = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (hash, line) = old_line(i as u64 + 1, &prev, e);
        // The new writer lays the same record out in the same bytes.
        let (new_hash, new_line) = crate::journal::encode(i as u64 + 1, 1_795_555_200_123, &prev, e).expect("encode");
        assert_eq!((&new_hash, &new_line), (&hash, &line), "{}", String::from_utf8_lossy(&line));
        text.extend_from_slice(&line);
        prev = hash;
    }
    fs::write(dir.path().join("journal-000001.jsonl"), &text).expect("write");
    fs::write(dir.path().join("head"), format!("3 {prev} 1 {}\n", text.len())).expect("head");
    let r = verify(dir.path()).expect("verify");
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.records, 3);
}

#[test]
fn nothing_to_verify_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nowhere");
    assert!(matches!(verify(&missing), Err(super::VerifyError::NoDirectory { .. })));
    // Empty, and opened but never written to (only `lock`).
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    assert!(matches!(verify(&empty), Err(super::VerifyError::Empty { .. })));
    Journal::open(&empty, 1 << 20).expect("open");
    assert!(matches!(verify(&empty), Err(super::VerifyError::Empty { .. })));
    // Every file and head deleted.
    let used = dir.path().join("used");
    journal(&used, 50, 4096);
    for (_, f) in files(&used).expect("files") {
        fs::remove_file(f).expect("rm");
    }
    fs::remove_file(used.join("head")).expect("rm head");
    let e = verify(&used).expect_err("nothing to verify");
    assert!(e.nothing_to_verify() && e.to_string().contains("nothing to verify"), "{e}");
    let file = dir.path().join("file");
    fs::write(&file, "").expect("write");
    assert!(matches!(verify(&file), Err(super::VerifyError::NotADirectory { .. })));
}

#[test]
fn every_cut_of_head_is_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 3, 1 << 20);
    let head = dir.path().join("head");
    let full = fs::read(&head).expect("head");
    for len in 0..full.len() {
        fs::write(&head, &full[..len]).expect("cut");
        let p = problems(dir.path());
        assert_eq!(p.len(), 1, "head cut to {len} bytes: {p:?}");
        assert_eq!((p[0].file.as_path(), p[0].line), (head.as_path(), 1), "{}", p[0]);
        assert!(p[0].what.contains(if len == 0 { "head is empty: it was truncated" } else { "truncated or edited" }), "{}", p[0]);
    }
    fs::write(&head, &full).expect("restore");
    assert!(problems(dir.path()).is_empty());
}

#[test]
fn a_record_file_cut_mid_line_is_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 10, 1 << 20);
    let f = first_file(dir.path());
    let text = fs::read(&f).expect("read");
    let starts: Vec<usize> = std::iter::once(0).chain(text.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1)).collect();
    // In the middle of line 6.
    fs::write(&f, &text[..starts[5] + 20]).expect("cut");
    let r = verify(dir.path()).expect("verify");
    assert!(r.torn_unmarked.is_none(), "not a crash: {r:?}");
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    let p = &r.problems[0];
    assert_eq!((p.file.as_path(), p.line), (f.as_path(), 6), "{p}");
    assert!(p.what.contains("cut off mid-line") && p.what.contains("records up to 10 were written, it ends at 5"), "{p}");
}

#[test]
fn deleted_files_or_a_deleted_head_are_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 100, 4096);
    let all = files(dir.path()).expect("files");
    assert!(all.len() > 2);
    // The newest file gone: head names it.
    let (_, newest) = all.last().expect("newest").clone();
    fs::remove_file(&newest).expect("rm");
    let p = problems(dir.path());
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].file, newest);
    assert!(p[0].what.contains("missing: the journal was truncated: records up to 100 were written"), "{}", p[0]);
    // Every file gone, head kept.
    for (_, f) in &all[..all.len() - 1] {
        fs::remove_file(f).expect("rm");
    }
    let p = problems(dir.path());
    assert!(p.len() == 1 && p[0].what.contains("ends at 0"), "{p:?}");
    // Records kept, head gone.
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 3, 1 << 20);
    fs::remove_file(dir.path().join("head")).expect("rm head");
    let p = problems(dir.path());
    assert!(p.len() == 1 && p[0].what.contains("head is missing"), "{p:?}");
}

#[test]
fn an_edited_last_record_is_not_excused_as_torn_by_the_next_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    journal(dir.path(), 5, 1 << 20);
    let f = first_file(dir.path());
    let text = fs::read_to_string(&f).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[4] = lines[4].replacen(",\"hash\":", ",\"x\":1,\"hash\":", 1);
    fs::write(&f, lines.join("\n") + "\n").expect("write");
    // The next writer chains on, and does not mark the edited line as a crash.
    journal(dir.path(), 1, 1 << 20);
    let r = verify(dir.path()).expect("verify");
    assert!(r.torn_marked.is_empty(), "{r:?}");
    assert!(r.problems.iter().any(|p| p.line == 5 && p.what.contains("unknown field `x`")), "{:?}", r.problems);
}
