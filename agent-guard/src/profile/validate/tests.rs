//! Unit tests of parsing and checking profiles: no root, no kernel.

use std::path::PathBuf;

use super::looks_secret;
use crate::profile::{from_source, Context, HostConfig, ProfileError, SourceFile};

fn ctx() -> Context {
    Context { workdir: PathBuf::from("/work/repo"), caller_uid: 0 }
}

fn parse_with(name: &str, text: &str, host: &HostConfig) -> Result<crate::profile::Policy, Vec<String>> {
    let src = SourceFile { path: PathBuf::from(format!("/p/{name}.toml")), text: text.to_owned() };
    from_source(&src, &ctx(), host).map_err(|e| match e {
        ProfileError::Invalid(d) => d.0.iter().map(|d| d.to_string()).collect(),
        other => vec![other.to_string()],
    })
}

fn parse(name: &str, text: &str) -> Result<crate::profile::Policy, Vec<String>> {
    parse_with(name, text, &HostConfig::default())
}

const MINIMAL: &str = "[role]\nname = \"r\"\nenvironment = \"production\"\n";

#[test]
fn minimal_profile_is_deny_everything() {
    let p = parse("r", MINIMAL).expect("valid");
    assert!(p.filesystem.read.is_empty() && p.filesystem.write.is_empty() && p.filesystem.exec.is_empty());
    assert!(p.network.is_none());
    assert!(p.env.pass.is_empty());
    assert_eq!(p.limits.on_limit, crate::profile::OnLimit::Kill);
}

#[test]
fn full_example_resolves_placeholders_and_units() {
    let text = r#"
[role]
name = "support-agent"
description = "d"
environment = "production"

[filesystem]
read  = ["/usr", "{workdir}"]
write = ["{workdir}/drafts/"]
exec  = ["/usr/bin/python3"]
deny  = ["/etc/shadow", "{home}/.ssh"]

[network]
connect = ["127.0.0.1:8080", "10.20.0.0/16:443", "[::1]:5432", "10.0.0.1:8000-8100"]
bind    = [9000, "9100-9101"]

[limits]
processes = 64
memory = "2GiB"
wall_time = "30m"
execs = 500
file_writes = 5000
connects = 100
bytes_out = "50MiB"
on_limit = "freeze"

[env]
pass = ["PATH", "LANG", "TERM"]
set  = { TZ = "UTC", OUT = "{workdir}/out" }

[syscalls]
allow = ["ptrace"]
"#;
    let p = parse("support-agent", text).expect("valid");
    assert_eq!(p.filesystem.read, [PathBuf::from("/usr"), PathBuf::from("/work/repo")]);
    assert_eq!(p.filesystem.write, [PathBuf::from("/work/repo/drafts")]);
    assert!(p.filesystem.deny[1].ends_with(".ssh"));
    assert_eq!(p.network.connect.len(), 4);
    assert_eq!(p.network.bind.len(), 2);
    assert_eq!(p.limits.memory.map(|m| m.0), Some(2 << 30));
    assert_eq!(p.limits.wall_time.map(|w| w.0.as_secs()), Some(1800));
    assert_eq!(p.limits.on_limit, crate::profile::OnLimit::Freeze);
    assert_eq!(p.env.set.get("OUT").map(String::as_str), Some("/work/repo/out"));
    assert_eq!(p.syscalls.allow, ["ptrace"]);
    assert!(!p.syscalls.denied.iter().any(|d| d == "ptrace"));
    assert!(p.syscalls.denied.iter().any(|d| d == "io_uring_setup"));
}

#[test]
fn syntax_and_type_errors_name_line_and_column() {
    let errs = parse("r", "[role]\nname = \"r\"\nenvironment = \"production\"\n[limits]\nmemory = \"2 gigs\"\n").unwrap_err();
    assert!(errs[0].starts_with("/p/r.toml:5:10: "), "{errs:?}");
    assert!(errs[0].contains("not a size"), "{errs:?}");

    let errs = parse("r", "[role]\nname = \"r\"\nenvironment = \"production\"\ncolour = 1\n").unwrap_err();
    assert!(errs[0].starts_with("/p/r.toml:4:1: "), "{errs:?}");
    assert!(errs[0].contains("unknown field `colour`"), "{errs:?}");

    let errs = parse("r", "[role\nname = 1").unwrap_err();
    assert!(errs[0].starts_with("/p/r.toml:1:"), "{errs:?}");

    let errs = parse("r", "[role]\nname = \"r\"\n").unwrap_err();
    assert!(errs[0].contains("missing field `environment`"), "{errs:?}");
}

#[test]
fn every_problem_is_reported_with_its_location() {
    let text = r#"[role]
name = "Other"
environment = "production"
[filesystem]
read = ["relative/path", "{nope}/x", "/a/../b"]
[network]
connect = ["localhost:80", "10.0.0.1/8:443"]
bind = [0]
"#;
    let errs = parse("r", text).unwrap_err();
    // `bind = [0]` is a type error caught while parsing, before the checks.
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains(":8:9: ") && errs[0].contains("not a port"), "{errs:?}");

    let errs = parse("r", &text.replace("bind = [0]\n", "")).unwrap_err();
    let joined = errs.join("\n");
    assert!(joined.contains(":2:8: role name `Other`"), "{joined}");
    assert!(joined.contains(":5:9: `relative/path` must be an absolute path"), "{joined}");
    assert!(joined.contains(":5:26: unknown placeholder `{nope}`"), "{joined}");
    assert!(joined.contains(":5:38: `/a/../b` may not contain `..`"), "{joined}");
    assert!(joined.contains(":7:12: `localhost` is not an IP address"), "{joined}");
    assert!(joined.contains(":7:28: `10.0.0.1/8` has host bits set"), "{joined}");
    assert_eq!(errs.len(), 6, "{joined}");
}

#[test]
fn name_must_match_the_file() {
    let errs = parse("other", MINIMAL).unwrap_err();
    assert!(errs[0].contains("must equal the file name `other.toml`"), "{errs:?}");
}

#[test]
fn secret_looking_names_cannot_be_passed() {
    let text = format!("{MINIMAL}[env]\npass = [\"PATH\", \"OPENAI_API_KEY\", \"GITHUB_TOKEN\", \"DB_PASSWORD\"]\n");
    let errs = parse("r", &text).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].contains(":5:17: `OPENAI_API_KEY` looks like a secret"), "{errs:?}");
    for (name, secret) in [
        ("PATH", false),
        ("LANG", false),
        ("TERM", false),
        ("HOME", false),
        ("AWS_SECRET_ACCESS_KEY", true),
        ("SSH_AUTH_SOCK", true),
        ("STRIPE_KEY", true),
        ("database_url", true),
    ] {
        assert_eq!(looks_secret(name), secret, "{name}");
    }
}

#[test]
fn syscall_allowances_must_name_the_deny_set() {
    let errs = parse("r", &format!("{MINIMAL}[syscalls]\nallow = [\"ptrace\", \"read\"]\n")).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("`read` is not in the default deny set"), "{errs:?}");
}

#[test]
fn bad_limits_are_refused() {
    let errs = parse("r", &format!("{MINIMAL}[limits]\nprocesses = 0\nmemory = \"1KiB\"\non_limit = \"explode\"\n")).unwrap_err();
    assert!(errs[0].contains("unknown variant `explode`"), "{errs:?}");
    let errs = parse("r", &format!("{MINIMAL}[limits]\nprocesses = 0\nmemory = \"1KiB\"\nwall_time = \"0s\"\n")).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn environments_are_kept_apart() {
    let host: HostConfig = toml::from_str(
        r#"
[environments.production]
cidrs = ["10.20.0.0/16"]
paths = ["/srv/prod"]
[environments.staging]
cidrs = ["10.30.0.0/16"]
paths = ["/srv/staging"]
"#,
    )
    .expect("host config");
    let staging = |body: &str| format!("[role]\nname = \"r\"\nenvironment = \"staging\"\n{body}");

    // Its own environment is fine.
    parse_with("r", &staging("[network]\nconnect = [\"10.30.1.1:443\"]\n[filesystem]\nread = [\"/srv/staging\"]\n"), &host)
        .expect("own environment");
    // Another environment's network or paths are not.
    let errs = parse_with("r", &staging("[network]\nconnect = [\"10.20.5.0/24:443\", \"10.0.0.0/8:22\"]\n"), &host).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("reaches 10.20.0.0/16 of environment `production`"), "{errs:?}");
    let errs = parse_with("r", &staging("[filesystem]\nread = [\"/srv/prod/db\"]\nwrite = [\"/srv\"]\n"), &host).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("lies in /srv/prod of environment `production`"), "{errs:?}");
    assert!(errs[1].contains("contains /srv/prod"), "{errs:?}");
    // ... unless `deny` masks the other environment's path.
    parse_with("r", &staging("[filesystem]\nread = [\"/srv\"]\ndeny = [\"/srv/prod\"]\n"), &host).expect("masked");
    // A protocol suffix changes nothing about which networks a destination reaches.
    parse_with("r", &staging("[network]\nconnect = [\"10.30.1.1:443/tcp\", \"10.30.1.1:53/udp\"]\n"), &host).expect("own, with protocols");
    let errs = parse_with("r", &staging("[network]\nconnect = [\"10.20.5.0/24:443/tcp\", \"[::ffff:10.30.0.1]:53/udp\"]\n"), &host).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("`10.20.5.0/24:443/tcp` reaches 10.20.0.0/16 of environment `production`"), "{errs:?}");
    // Socket files too: one inside another environment's path is refused.
    parse_with("r", &staging("[network]\nunix = [\"/srv/staging/app.sock\"]\n"), &host).expect("own socket");
    let errs = parse_with("r", &staging("[network]\nunix = [\"/srv/prod/db.sock\"]\n"), &host).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("`/srv/prod/db.sock` (unix) lies in /srv/prod of environment `production`"), "{errs:?}");
    // An environment the host does not define is refused.
    let errs = parse_with("r", "[role]\nname = \"r\"\nenvironment = \"qa\"\n", &host).unwrap_err();
    assert!(errs[0].contains("environment `qa` is not defined"), "{errs:?}");
}

#[test]
fn role_user_must_exist() {
    let errs = parse("r", "[role]\nname = \"r\"\nenvironment = \"e\"\nuser = \"no-such-user-here\"\n").unwrap_err();
    assert!(errs[0].contains("user `no-such-user-here` does not exist"), "{errs:?}");
    let p = parse("r", "[role]\nname = \"r\"\nenvironment = \"e\"\nuser = \"nobody\"\n").expect("nobody exists");
    assert_eq!(p.run_as.map(|r| r.uid), Some(65534));
}

#[test]
fn shipped_profiles_are_valid() {
    let dir = PathBuf::from(crate::profile::REPO_PROFILES);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("profiles/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            crate::profile::load(&path, &ctx(), &HostConfig::default()).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 4, "at least four roles ship");
}

#[test]
fn loader_and_shell_startup_variables_cannot_be_passed() {
    let text = format!("{MINIMAL}[env]\npass = [\"PATH\", \"LD_PRELOAD\", \"LD_LIBRARY_PATH\", \"BASH_ENV\"]\nset = {{ LD_LIBRARY_PATH = \"/opt/lib\" }}\n");
    let errs = parse("r", &text).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].contains(":5:17: `LD_PRELOAD` would let whoever starts the session choose code"), "{errs:?}");
    // A fixed value set by the profile is the profile's choice.
    let ok = format!("{MINIMAL}[env]\npass = [\"PATH\"]\nset = {{ LD_LIBRARY_PATH = \"/opt/lib\" }}\n");
    assert!(parse("r", &ok).is_ok());
}

#[test]
fn one_path_writable_and_executable_is_refused_with_its_position() {
    let text = format!("{MINIMAL}[filesystem]\nwrite = [\"{{workdir}}\"]\nexec = [\"/usr/bin\", \"{{workdir}}\"]\n");
    let errors = parse("r", &text).expect_err("write + exec on one path");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("/p/r.toml:6:21:") && errors[0].contains("both `write` and `exec`"), "{errors:?}");
    // Beneath is fine: that subtree becomes read-only and executable.
    let text = format!("{MINIMAL}[filesystem]\nwrite = [\"{{workdir}}\"]\nexec = [\"{{workdir}}/bin\"]\nread = [\"{{workdir}}\"]\n");
    parse("r", &text).expect("exec beneath write");
}

#[test]
fn kernel_settings_cannot_be_granted_for_writing() {
    for path in ["/sys", "/sys/fs/cgroup/x", "/proc/sys/kernel/hostname", "/proc/sysrq-trigger"] {
        let text = format!("{MINIMAL}[filesystem]\nwrite = [{path:?}]\n");
        let errors = parse("r", &text).expect_err(path);
        assert!(errors.iter().any(|e| e.contains("/p/r.toml:5:10:") && e.contains("read-only in every session")), "{path}: {errors:?}");
    }
}

#[test]
fn socket_families_are_opted_in_by_name() {
    let text = format!("{MINIMAL}[syscalls]\nallow = [\"netlink\", \"setid-files\"]\n");
    let p = parse("r", &text).expect("known names");
    assert_eq!(p.syscalls.allow, ["netlink", "setid-files"]);
    assert!(p.syscalls.denied.iter().any(|d| d == "packet") && !p.syscalls.denied.iter().any(|d| d == "netlink"));
    let text = format!("{MINIMAL}[syscalls]\nallow = [\"inet\"]\n");
    let errors = parse("r", &text).expect_err("unknown family");
    assert!(errors[0].contains("/p/r.toml:5:10:") && errors[0].contains("netlink"), "{errors:?}");
}

#[test]
fn destination_protocols_parse_with_positions() {
    let p = parse("r", &format!("{MINIMAL}[network]\nconnect = [\"127.0.0.1:8080/tcp\", \"[::1]:53/udp\", \"10.0.0.0/8:443-444\"]\n")).expect("valid");
    let shown: Vec<String> = p.network.connect.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["127.0.0.1:8080/tcp", "[::1]:53/udp", "10.0.0.0/8:443-444"]);
    // `profile show` serialises the same form.
    assert_eq!(serde_json::to_value(&p.network.connect).expect("json"), serde_json::json!(["127.0.0.1:8080/tcp", "[::1]:53/udp", "10.0.0.0/8:443-444"]));
    let errors = parse("r", &format!("{MINIMAL}[network]\nconnect = [\"127.0.0.1:80/sctp\", \"127.0.0.1:81/TCP\", \"127.0.0.1:82/\"]\n")).expect_err("bad suffixes");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("/p/r.toml:5:12:") && errors[0].contains("`sctp` is not a protocol"), "{errors:?}");
    assert!(errors[1].starts_with("/p/r.toml:5:33:") && errors[1].contains("lowercase, `/tcp`"), "{errors:?}");
    assert!(errors[2].starts_with("/p/r.toml:5:53:") && errors[2].contains("without a protocol"), "{errors:?}");
}

#[test]
fn unix_socket_files_expand_and_are_checked_with_positions() {
    let p = parse("r", &format!("{MINIMAL}[network]\nunix = [\"/run/app.sock\", \"{{workdir}}/s.sock\", \"{{home}}/.agent.sock\"]\n")).expect("valid");
    assert_eq!(p.network.unix[..2], [PathBuf::from("/run/app.sock"), PathBuf::from("/work/repo/s.sock")]);
    assert!(p.network.unix[2].ends_with(".agent.sock") && p.network.unix[2].is_absolute());
    // Socket files alone are not "network": no IP sockets for such a profile.
    assert!(p.network.is_none());
    let long = format!("/{}", "s".repeat(108));
    let errors = parse("r", &format!("{MINIMAL}[network]\nunix = [\"app.sock\", \"/run/../x\", \"{long}\", \"/{}\"]\n", "s".repeat(107))).expect_err("bad");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("/p/r.toml:5:9:") && errors[0].contains("`app.sock` must be an absolute path"), "{errors:?}");
    assert!(errors[1].starts_with("/p/r.toml:5:21:") && errors[1].contains("may not contain `..`"), "{errors:?}");
    assert!(errors[2].starts_with("/p/r.toml:5:34:") && errors[2].contains("is 109 bytes long"), "{errors:?}");
}
