//! The operator-facing commands: `profile check|show`, `doctor`, and role lookup.

mod common;

use std::process::Command;

use common::{agent_guard, require_root, stderr, stdout};

fn ag(args: &[&str]) -> std::process::Output {
    let out = Command::new(agent_guard()).args(args).output().expect("run agent-guard");
    eprintln!("$ agent-guard {args:?}\n{}{}", stdout(&out), stderr(&out));
    out
}

#[test]
fn profile_check_names_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[role]\nname = \"bad\"\nenvironment = \"production\"\n\n[limits]\nwall_time = \"soon\"\n").expect("write");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[role]\nname = \"good\"\nenvironment = \"production\"\n").expect("write");
    let out = ag(&["profile", "check", &good.to_string_lossy(), &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("good.toml: ok"), "{}", stdout(&out));
    let expected = format!("{}:6:13: `soon` is not a duration", bad.display());
    assert!(stderr(&out).contains(&expected), "wanted {expected} in {}", stderr(&out));
}

#[test]
fn profile_errors_escape_terminal_sequences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("esc.toml");
    std::fs::write(&bad, "[role]\nname = \"esc\"\nenvironment = \"p\"\n[filesystem]\nread = [\"\\u001b[31mred\"]\n").expect("write");
    let out = ag(&["profile", "check", &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains('\x1b'), "raw escape reached the terminal: {:?}", stderr(&out));
    assert!(stderr(&out).contains("\\e[31mred"), "{}", stderr(&out));
}

#[test]
fn shipped_profiles_check_and_show() {
    let profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles");
    let files: Vec<String> = std::fs::read_dir(profiles)
        .expect("profiles/")
        .map(|e| e.expect("entry").path().to_string_lossy().into_owned())
        .collect();
    assert!(files.len() >= 4);
    let mut args = vec!["profile", "check"];
    args.extend(files.iter().map(String::as_str));
    assert_eq!(ag(&args).status.code(), Some(0));

    let out = ag(&["profile", "show", "--role", "support-agent", "--workdir", "/tmp", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(policy["role"], "support-agent");
    assert_eq!(policy["filesystem"]["write"][0], "/tmp/drafts");
    assert_eq!(policy["network"]["connect"][0], "127.0.0.1:8080");
    assert_eq!(policy["limits"]["on_limit"], "freeze");
}

#[test]
fn roles_are_found_on_the_search_path_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A local override of a shipped role wins over the repository's copy.
    std::fs::write(dir.path().join("coding-agent.toml"), "[role]\nname = \"coding-agent\"\ndescription = \"local override\"\nenvironment = \"staging\"\n")
        .expect("write");
    let out = Command::new(agent_guard())
        .args(["profile", "show", "--role", "coding-agent", "--json"])
        .env("AGENT_GUARD_PROFILES", dir.path())
        .output()
        .expect("run");
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(policy["description"], "local override");
    // Role names cannot walk the file system.
    let out = ag(&["profile", "show", "--role", "../etc/passwd"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("is not a role name"));
    let out = ag(&["profile", "show", "--role", "no-such-role"]);
    assert!(stderr(&out).contains("no profile for role `no-such-role`"), "{}", stderr(&out));
}

#[test]
fn host_config_keeps_environments_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[environments.production]\ncidrs = [\"10.20.0.0/16\"]\n[environments.staging]\ncidrs = [\"10.30.0.0/16\"]\n").expect("write");
    let profile = dir.path().join("stage.toml");
    std::fs::write(&profile, "[role]\nname = \"stage\"\nenvironment = \"staging\"\n[network]\nconnect = [\"10.20.1.1:5432\"]\n").expect("write");
    let out = ag(&["--config", &config.to_string_lossy(), "profile", "check", &profile.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("stage.toml:5:12: `10.20.1.1:5432` reaches 10.20.0.0/16 of environment `production`"), "{}", stderr(&out));
    // Control: without the cross-environment destination it passes.
    std::fs::write(&profile, "[role]\nname = \"stage\"\nenvironment = \"staging\"\n[network]\nconnect = [\"10.30.1.1:5432\"]\n").expect("write");
    assert_eq!(ag(&["--config", &config.to_string_lossy(), "profile", "check", &profile.to_string_lossy()]).status.code(), Some(0));
}

#[test]
fn doctor_probes_this_kernel() {
    require_root();
    let out = ag(&["doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let checks = report["checks"].as_array().expect("checks");
    let get = |name: &str| checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no check {name}"));
    // Print every probe so the run's log shows what this kernel offers.
    for c in checks {
        eprintln!("probe {}: ok={} {}", c["name"], c["ok"], c["detail"]);
    }
    // What `run` needs must be here (this is the machine the project targets).
    for name in ["landlock", "seccomp filter", "cgroup v2", "eBPF tracepoint", "eBPF cgroup_sock_addr", "eBPF monitor (what run loads)"] {
        assert_eq!(get(name)["ok"], true, "{name}: {}", get(name)["detail"]);
    }
    assert_eq!(out.status.code(), Some(0));
    // LSM and fentry are optional extras: reported either way, never fatal.
    assert_eq!(get("eBPF lsm")["need"], "optional");
    let human = ag(&["doctor"]);
    assert!(stdout(&human).contains("landlock"), "{}", stdout(&human));
}

#[test]
fn run_uses_the_shipped_coding_agent_role() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("main.c"), "int main(void){return 0;}\n").expect("write");
    let out = Command::new(agent_guard())
        .args(["run", "--role", "coding-agent", "--workdir"])
        .arg(dir.path())
        .args(["--", "sh", "-c", "ls && echo edited > notes.txt && cat /etc/shadow"])
        .output()
        .expect("run");
    eprintln!("{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("main.c"));
    assert_eq!(std::fs::read_to_string(dir.path().join("notes.txt")).expect("written"), "edited\n");
    assert_ne!(out.status.code(), Some(0), "reading /etc/shadow must fail");
    assert!(stderr(&out).contains("/etc/shadow: Permission denied"), "{}", stderr(&out));
}
