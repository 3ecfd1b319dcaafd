//! `agent-guard profile test`: the escape corpus, run in real sessions of
//! profiles crafted for each layout it has techniques for, judged per
//! technique from its JSON. The assertions are written as they must hold
//! once containment is complete: every technique blocked, allowed by the
//! rule that allows it, or not applicable for the reason given.
//!
//! Two lists name the techniques that escape on this tree today. Each
//! entry must really escape (a listed technique that is blocked fails the
//! test: take it off the list), and every technique not listed must be
//! blocked. When the controls below merge, their entries go and the list
//! is empty.

mod common;

use std::{net::TcpListener, process::Output};

use common::{stderr, Case};

/// Techniques expected to escape until work in progress closes them (a
/// listed technique that is blocked fails the test, so the list cannot go
/// stale); empty since the view, seccomp and unix-socket changes landed.
const CLOSED_BY_OTHERS: &[&str] = &[];

/// Escapes the corpus found that no one is closing yet (see
/// docs/sandbox.md, "what remains"): they need a control of their own.
/// - `chmod-readable`: an agent running as root (no capabilities) may
///   chmod and chown root-owned files it can only read (landlock does not
///   check chmod/chown; only trees beneath `write` entries are read-only
///   mounts in the view).
const OPEN_GAPS: &[&str] = &[];

fn escapes_today(id: &str) -> bool {
    CLOSED_BY_OTHERS.contains(&id) || OPEN_GAPS.contains(&id)
}

/// `profile test --profile P --json [ARGS]`, with throwaway directories in the case's own.
fn profile_test(case: &Case, extra: &[&str]) -> (Output, Option<serde_json::Value>) {
    let dir = case.dir.path().join("profile-test");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (profile, dir) = (case.profile.to_string_lossy().into_owned(), dir.to_string_lossy().into_owned());
    let mut args = vec!["profile", "test", "--profile", &profile, "--workdir", &dir, "--json"];
    args.extend_from_slice(extra);
    let out = case.ag(&args);
    let json = serde_json::from_slice(&out.stdout).ok();
    // Nothing is left behind: the throwaway directories are gone.
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0, "profile test left files in {dir}");
    (out, json)
}

fn outcome<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["results"].as_array().expect("results").iter().find(|r| r["technique"] == id).unwrap_or_else(|| panic!("no result for {id}"))
}

/// Every technique is blocked, but those `special` names (with the outcome
/// each must have) and those listed as escaping today (which must escape).
#[track_caller]
fn assert_contained(report: &serde_json::Value, special: &[(&str, &str)]) {
    let mut wrong = Vec::new();
    for r in report["results"].as_array().expect("results") {
        let id = r["technique"].as_str().expect("id");
        let got = r["outcome"].as_str().expect("outcome");
        let want = special.iter().find(|(t, _)| *t == id).map(|(_, o)| *o).unwrap_or(if escapes_today(id) { "escaped" } else { "blocked" });
        if got != want {
            let note = if escapes_today(id) && got == "blocked" { " (it is blocked now: take it off CLOSED_BY_OTHERS/OPEN_GAPS)" } else { "" };
            wrong.push(format!("{id}: {got}, expected {want}{note}: {r}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

const SYSTEM_READS: &str = r#""/usr", "/lib", "/lib64", "/etc/ld.so.cache""#;

#[test]
fn a_writable_workdir_with_read_only_subtrees_and_limits() {
    let case = Case::new(
        "nested",
        &format!(
            r#"[role]
name = "@NAME@"
environment = "test"

[filesystem]
read = [{SYSTEM_READS}, "/proc", "{{workdir}}", "{{workdir}}/.git"]
write = ["{{workdir}}", "/dev/null"]
exec = ["/usr/bin/true", "{{workdir}}/bin"]

[limits]
processes = 64
file_writes = 500
wall_time = "2m"
"#
        ),
    );
    let (out, report) = profile_test(&case, &[]);
    let report = report.unwrap_or_else(|| panic!("no JSON: {}", stderr(&out)));
    assert_contained(&report, &[("udp-to-tcp-only", "not_applicable"), ("tcp-to-udp-only", "not_applicable")]);
    // Both subtrees were tried, and so were the limits.
    let sub = outcome(&report, "ro-subtree");
    for dir in [".git", "bin"] {
        assert!(sub.to_string().contains(&format!("/work/{dir}")), "{sub}");
    }
    assert!(outcome(&report, "fork-bomb")["how"].as_str().expect("how").contains("forked=63"), "{}", outcome(&report, "fork-bomb"));
    assert_eq!(out.status.code(), Some(if report["escaped"] == 0 { 0 } else { 1 }));
}

/// Two free loopback ports (closed again: the harness listens on them).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    (a.local_addr().expect("addr").port(), b.local_addr().expect("addr").port())
}

#[test]
fn destinations_for_one_protocol() {
    let (tcp, udp) = free_ports();
    let case = Case::new(
        "protocols",
        &format!(
            r#"[role]
name = "@NAME@"
environment = "test"

[filesystem]
read = [{SYSTEM_READS}, "{{workdir}}"]
write = ["{{workdir}}/out"]

[network]
connect = ["127.0.0.1:{tcp}/tcp", "127.0.0.1:{udp}/udp"]

[limits]
wall_time = "2m"
"#
        ),
    );
    let (out, report) = profile_test(&case, &[]);
    let report = report.unwrap_or_else(|| panic!("no JSON: {}", stderr(&out)));
    assert_contained(&report, &[("ro-subtree", "not_applicable"), ("fork-bomb", "not_applicable"), ("write-flood", "not_applicable")]);
    // Each went to the destination allowed for the other protocol.
    assert!(outcome(&report, "udp-to-tcp-only").to_string().contains(&format!("127.0.0.1:{tcp}")));
    assert!(outcome(&report, "tcp-to-udp-only").to_string().contains(&format!("127.0.0.1:{udp}")));
}

#[test]
fn a_unix_socket_allowlist() {
    let case = Case::new(
        "unixlist",
        &format!(
            r#"[role]
name = "@NAME@"
environment = "test"

[filesystem]
read = [{SYSTEM_READS}, "{{workdir}}"]
write = ["{{workdir}}/out"]

[network]
unix = ["{{workdir}}/allowed.sock"]

[limits]
wall_time = "2m"
"#
        ),
    );
    let (out, report) = profile_test(&case, &["--technique", "unix-connect"]);
    let report = report.unwrap_or_else(|| panic!("no JSON: {}", stderr(&out)));
    // The harness's socket is not the one allowed: refused.
    assert_eq!(outcome(&report, "unix-connect")["outcome"], "blocked", "{report}");
}

#[test]
fn rules_that_allow_a_technique_are_named() {
    let case = Case::new(
        "allows",
        &format!(
            r#"[role]
name = "@NAME@"
environment = "test"

[filesystem]
read = [{SYSTEM_READS}]

[network]
connect = ["127.0.0.0/8:1-65535"]

[syscalls]
allow = ["netlink", "ptrace"]

[limits]
wall_time = "2m"
"#
        ),
    );
    let (out, report) = profile_test(&case, &["--technique", "netlink-route", "--technique", "tcp-unlisted", "--technique", "udp-unlisted", "--technique", "ptrace-parent"]);
    let report = report.unwrap_or_else(|| panic!("no JSON: {}", stderr(&out)));
    let allowed = |id: &str, rule: &str| {
        let r = outcome(&report, id);
        assert_eq!(r["outcome"], "allowed_by_profile", "{r}");
        assert_eq!(r["rule"], rule, "{r}");
    };
    allowed("netlink-route", "syscalls: netlink");
    allowed("tcp-unlisted", "network: 127.0.0.0/8:1-65535");
    allowed("udp-unlisted", "network: 127.0.0.0/8:1-65535");
    // The ptrace system call is allowed, but not to processes outside the session (landlock).
    assert_eq!(outcome(&report, "ptrace-parent")["outcome"], "blocked", "{report}");
    // Nothing escaped: allowed by the profile is not a failure.
    assert_eq!(out.status.code(), Some(0));
}

/// Exit status 1 on an escape, shown with a technique that escapes on this
/// tree today. When both lists are empty nothing escapes any more, and
/// this test must find another honest way to show it (there is no way to
/// fake an escape, on purpose).
#[test]
fn an_escape_exits_1() {
    let Some(id) = CLOSED_BY_OTHERS.iter().chain(OPEN_GAPS).next() else {
        // Nothing known escapes any more: check the other side of the exit
        // status (0 when nothing escaped); the harness's own unit tests
        // cover the count behind exit 1.
        let case = Case::new("exit0", &common::base_profile(""));
        let (out, report) = profile_test(&case, &["--technique", "loader-exec"]);
        let report = report.unwrap_or_else(|| panic!("no JSON: {}", stderr(&out)));
        assert_eq!(report["escaped"], 0, "{report}");
        assert_eq!(out.status.code(), Some(0));
        return;
    };
    let case = Case::new("exit1", &common::base_profile(""));
    let (out, report) = profile_test(&case, &["--technique", id]);
    let report = report.unwrap_or_else(|| panic!("no JSON: {}", stderr(&out)));
    assert_eq!(outcome(&report, id)["outcome"], "escaped", "{report}");
    assert_eq!(report["escaped"], 1);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_shipped_profiles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("profiles").map(|e| e.expect("entry").path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let mut case = Case::new("shipped", "");
        case.profile = file.clone();
        let (out, report) = profile_test(&case, &[]);
        let report = report.unwrap_or_else(|| panic!("{}: no JSON: {}", file.display(), stderr(&out)));
        // None of them has a read-only subtree, a one-protocol destination or a write limit.
        let special = [("ro-subtree", "not_applicable"), ("udp-to-tcp-only", "not_applicable"), ("tcp-to-udp-only", "not_applicable"), ("write-flood", "not_applicable")];
        assert_contained(&report, &special);
        assert_eq!(out.status.code(), Some(if report["escaped"] == 0 { 0 } else { 1 }), "{}", file.display());
    }
}

#[test]
fn techniques_aim_at_what_the_harness_watches() {
    // The host-side fixtures a session must not reach are really there:
    // a control profile that allows reading the whole filesystem reads the
    // harness's secret, named as allowed by that rule.
    let case = Case::new(
        "control",
        r#"[role]
name = "@NAME@"
environment = "test"

[filesystem]
read = ["/"]
write = ["{workdir}"]

[limits]
wall_time = "2m"
"#,
    );
    let (out, report) = profile_test(&case, &["--technique", "symlink-read", "--technique", "hardlink-in"]);
    let report = report.unwrap_or_else(|| panic!("no JSON: {}", stderr(&out)));
    let r = outcome(&report, "symlink-read");
    assert_eq!(r["outcome"], "allowed_by_profile", "{r}");
    assert_eq!(r["rule"], "read: /", "{r}");
    assert!(r["evidence"].as_str().expect("evidence").contains("the secret reached the agent's output"), "{r}");
}
