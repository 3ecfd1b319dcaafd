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
