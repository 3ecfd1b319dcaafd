//! Learning from sessions: `replay` shows what a session did, `--observe`
//! records without confining (and says so everywhere), and `profile
//! suggest` writes a profile that lets the same work run and refuses more.

mod common;

use common::{base_profile, stderr, stdout, Case};

/// Where a session of `case` writes its summary `name`.
fn summary_path(case: &Case, name: &str) -> String {
    case.work().join("out").join(name).to_str().expect("utf-8").to_owned()
}

fn summary_of(case: &Case, name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(case.work().join("out").join(name)).expect("summary")).expect("JSON")
}

#[test]
fn replay_shows_what_the_session_did() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let case = Case::new(
        "replayed",
        &base_profile(&format!("\n[network]\nconnect = [\"127.0.0.1:{port}\"]\n"))
            .replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/sh\", \"/usr/bin/dash\", \"/usr/bin/cat\"]"),
    );
    let probe = common::probe();
    let script = format!("cat public.txt > out/copy.txt; {probe} connect 127.0.0.1:{port} > /dev/null; {probe} connect 127.0.0.2:{port} > /dev/null; exit 3");
    let out = case.run_with(&["--quiet", "--summary-json", &summary_path(&case, "s.json")], &["/bin/sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(3));
    let id = summary_of(&case, "s.json")["session"].as_str().expect("id").to_owned();
    let out = case.ag(&["replay", &id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("replay JSON");
    // The tree: the shell, and under it cat and the probe twice, with their arguments.
    let top = &r["processes"][0];
    assert_eq!(top["execs"][0]["path"], "/bin/sh", "{r}");
    assert_eq!(top["exit_code"], 3);
    let children: Vec<(String, String)> = top["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|c| (c["execs"][0]["path"].as_str().unwrap_or("").to_owned(), c["execs"][0]["argv"][1].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(children, vec![("/usr/bin/cat".to_owned(), "public.txt".to_owned()), (probe.to_owned(), "connect".to_owned()), (probe.to_owned(), "connect".to_owned())], "{r}");
    // The timeline: the file written, one connect allowed and one denied, in order.
    let kinds: Vec<String> = r["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|m| m["data"]["type"] != "exec")
        .map(|m| match m["data"]["type"].as_str() {
            Some("file_open_write") => format!("write {}", m["data"]["path"].as_str().unwrap_or("")),
            Some("connect") => format!("connect {} {}", m["data"]["addr"].as_str().unwrap_or(""), m["data"]["allowed"]),
            other => format!("{other:?}"),
        })
        .filter(|k| !k.contains("/dev/null"))
        .collect();
    assert_eq!(kinds, vec!["write out/copy.txt", "connect 127.0.0.1 true", "connect 127.0.0.2 false"], "{r}");
    assert_eq!(r["end"]["exit_code"], 3);
    // The human view names the same things.
    let text = stdout(&case.ag(&["replay", &id]));
    for needle in ["/usr/bin/cat  [cat public.txt]", "write-open out/copy.txt", "DENIED", "ended by exit"] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn observe_records_without_confining_and_says_so() {
    let case = Case::new("observed", &base_profile("").replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/sh\", \"/usr/bin/dash\"]"));
    let outside = case.dir.path().join("outside.txt");
    std::fs::write(&outside, "outside\n").expect("write");
    let outside = outside.to_str().expect("utf-8");
    // Confined: the read outside the profile is refused (the control).
    common::refused(&case.probe(&["read", outside]));
    // Observed: it works, and the read is recorded.
    let mut running = case.command(&["--observe", "--summary-json", &summary_path(&case, "s.json")], &["/bin/sh", "-c", &format!("{} read {outside}; {} sleep 30", common::probe(), common::probe())]).spawn().expect("spawn");
    let ps = case.wait_for_sessions(1);
    assert_eq!(ps[0]["observe"], true, "ps flags it: {ps:?}");
    let session = ps[0]["session"].as_str().expect("id").to_owned();
    assert_eq!(case.ag(&["kill", "--session", &session]).status.code(), Some(0));
    let _ = running.wait();
    assert_eq!(summary_of(&case, "s.json")["observe"], true, "the summary flags it");
    let records = case.journal_records();
    let start = records.iter().find(|r| r["kind"] == "session_start" && r["session"] == session.as_str()).expect("start");
    assert_eq!(start["data"]["observe"], true, "the journal flags it");
    assert!(
        records.iter().any(|r| r["session"] == session.as_str() && r["data"]["type"] == "file_open_read" && r["data"]["path"] == outside),
        "the read outside the profile was recorded"
    );
}

#[test]
fn a_suggested_profile_runs_the_same_work_and_refuses_more() {
    let case = Case::new(
        "learner",
        &base_profile("").replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/sh\", \"/usr/bin/dash\", \"/usr/bin/cat\", \"/usr/bin/wc\"]"),
    );
    let etc = case.dir.path().join("etc");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::write(etc.join("app.conf"), "setting = 1\n").expect("write");
    std::fs::write(etc.join("secret.key"), "KEY\n").expect("write");
    let work = format!("cat public.txt {}/app.conf | wc -l > out/count.txt; cat out/count.txt", etc.display());
    let observed = case.run_with(&["--observe", "--quiet", "--summary-json", &summary_path(&case, "s.json")], &["/bin/sh", "-c", &work]);
    assert_eq!(observed.status.code(), Some(0), "{}", stderr(&observed));
    let id = summary_of(&case, "s.json")["session"].as_str().expect("id").to_owned();
    let suggested = case.dir.path().join("suggested.toml");
    let out = case.ag(&["profile", "suggest", "--from-session", &id, "--name", "suggested", "--out", suggested.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&suggested).expect("suggested");
    assert!(text.contains(&format!("{}/app.conf", etc.display())), "{text}");
    assert!(!text.contains("secret.key"), "{text}");
    assert_eq!(case.ag(&["profile", "check", suggested.to_str().expect("utf-8")]).status.code(), Some(0), "{text}");
    // The same work under the suggested profile: it passes, with the same output.
    let run = |argv: &[&str]| {
        let mut cmd = std::process::Command::new(common::agent_guard());
        cmd.env("AGENT_GUARD_CONFIG", case.config())
            .args(["run", "--quiet", "--profile"])
            .arg(&suggested)
            .arg("--workdir")
            .arg(case.work())
            .arg("--")
            .args(argv)
            .stdin(std::process::Stdio::null());
        let out = cmd.output().expect("run");
        eprintln!("{argv:?}: {:?}\n{}{}", out.status, stdout(&out), stderr(&out));
        out
    };
    let again = run(&["/bin/sh", "-c", &work]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(stdout(&again), stdout(&observed));
    // A variant that also reads a secret beside the config is refused.
    let variant = run(&["/bin/sh", "-c", &format!("cat public.txt {0}/app.conf {0}/secret.key", etc.display())]);
    assert_eq!(variant.status.code(), Some(1), "cat fails on the secret");
    assert!(stderr(&variant).contains("secret.key: Permission denied"), "{}", stderr(&variant));
    assert!(!stdout(&variant).contains("KEY"));
}

#[test]
fn record_io_passes_output_through_records_it_redacted_and_replays_it() {
    let case = Case::new(
        "recorded",
        &base_profile("\n[env]\nset = { API_TOKEN = \"tok-5ecret-value\", DB_URL = \"postgres://agent:pw@db/x\", MODE = \"on\" }\n")
            .replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/sh\", \"/usr/bin/dash\", \"/usr/bin/sleep\"]"),
    );
    let script = "echo first; sleep 0.3; echo \"token $API_TOKEN\"; echo \"db $DB_URL mode $MODE\"; printf '\\033[2Jcleared\\n'; echo warn >&2";
    let out = case.run_with(&["--quiet", "--record-io", "--summary-json", &summary_path(&case, "s.json")], &["/bin/sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0));
    // Passed through unchanged (it is the agent's own output to its own terminal).
    assert_eq!(stdout(&out), "first\ntoken tok-5ecret-value\ndb postgres://agent:pw@db/x mode on\n\x1b[2Jcleared\n");
    assert_eq!(stderr(&out), "warn\n");
    let id = summary_of(&case, "s.json")["session"].as_str().expect("id").to_owned();
    let started = std::time::Instant::now();
    let played = case.ag(&["replay", &id, "--io"]);
    let took = started.elapsed();
    assert_eq!(played.status.code(), Some(0), "{}", stderr(&played));
    // Redacted (whatever the variable's name; not a two-byte value), escaped
    // for the terminal, in order, with the pause kept.
    assert_eq!(stdout(&played), "first\ntoken [REDACTED:API_TOKEN]\ndb [REDACTED:DB_URL] mode on\n\\e[2Jcleared\n");
    assert_eq!(stderr(&played), "warn\n");
    assert!(took >= std::time::Duration::from_millis(250), "the 0.3 s pause was played back ({took:?})");
    // The recording on disk holds no secret, and editing it is detected.
    let file = case
        .journal_records()
        .into_iter()
        .find(|r| r["kind"] == "io" && r["session"] == id.as_str())
        .and_then(|r| r["data"]["file"].as_str().map(str::to_owned))
        .expect("io record");
    let text = std::fs::read_to_string(&file).expect("recording");
    assert!(!text.contains("tok-5ecret-value") && !text.contains("agent:pw"), "{text}");
    std::fs::write(&file, text.replace("first", "forged")).expect("tamper");
    let played = case.ag(&["replay", &id, "--io"]);
    assert_eq!(played.status.code(), Some(125));
    assert!(stderr(&played).contains("was altered"), "{}", stderr(&played));
    assert!(!stdout(&played).contains("forged"));
}
