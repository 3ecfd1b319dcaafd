//! The sandbox of `agent-guard run`, proved against the real kernel: each
//! forbidden action fails, and beside it a control case shows the allowed
//! one still works (so an over-blocking sandbox fails too).

mod common;

use std::{net::TcpListener, os::unix::fs::PermissionsExt, time::Duration};

use common::{allowed, base_profile, refused, stderr, stdout, Case};

#[test]
fn read_inside_allowed_paths_only() {
    let case = Case::new("reads", &base_profile(""));
    allowed(&case.probe(&["read", &case.work().join("public.txt").to_string_lossy()]));
    let outside = tempfile::tempdir().expect("tempdir");
    let file = outside.path().join("other.txt");
    std::fs::write(&file, "x").expect("write");
    refused(&case.probe(&["read", &file.to_string_lossy()]));
    refused(&case.probe(&["read", "/etc/passwd"]));
    refused(&case.probe(&["list", "/etc"]));
}

#[test]
fn deny_masks_hide_paths_inside_an_allowed_tree() {
    let case = Case::new("masks", &base_profile(""));
    let work = case.work();
    allowed(&case.probe(&["read", &work.join("public.txt").to_string_lossy()]));
    refused(&case.probe(&["read", &work.join("secret.txt").to_string_lossy()]));
    refused(&case.probe(&["list", &work.join("secretdir").to_string_lossy()]));
    refused(&case.probe(&["read", &work.join("secretdir/key").to_string_lossy()]));
    // The masks live in the session's own mount namespace only.
    assert_eq!(std::fs::read_to_string(work.join("secret.txt")).expect("host still sees it"), "secret\n");
}

#[test]
fn write_only_where_the_profile_allows() {
    let case = Case::new("writes", &base_profile(""));
    let work = case.work();
    allowed(&case.probe(&["write", &work.join("out/result.txt").to_string_lossy()]));
    assert_eq!(std::fs::read_to_string(work.join("out/result.txt")).expect("written"), "probe\n");
    // Readable is not writable.
    refused(&case.probe(&["write", &work.join("public.txt").to_string_lossy()]));
    refused(&case.probe(&["write", &work.join("new.txt").to_string_lossy()]));
    refused(&case.probe(&["write", "/tmp/agent-guard-escape.txt"]));
    assert!(!std::path::Path::new("/tmp/agent-guard-escape.txt").exists());
}

#[test]
fn exec_only_listed_programs() {
    let case = Case::new("execs", &base_profile(""));
    let work = case.work();
    // Control: an allowed program runs (exec replaces the probe; `true` exits 0).
    let out = case.probe(&["exec", "/usr/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A program not in `exec` is refused.
    refused(&case.probe(&["exec", "/usr/bin/id"]));
    // A copy of an allowed binary placed in the workdir is refused too.
    let copy = work.join("out/true");
    std::fs::copy("/usr/bin/true", &copy).expect("copy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    refused(&case.probe(&["exec", &copy.to_string_lossy()]));
}

#[test]
fn memfd_exec_is_refused() {
    let case = Case::new("memfd", &base_profile(""));
    // An executable memfd cannot be created ...
    let out = case.probe(&["memfd-exec"]);
    refused(&out);
    assert!(stdout(&out).contains("Operation not permitted"), "memfd_create itself is refused: {}", stdout(&out));
    // ... and a sealed non-executable one cannot be executed.
    let out = case.probe(&["memfd-exec", "noexec-seal"]);
    refused(&out);
    assert!(stdout(&out).contains("Permission denied"), "fexecve is refused: {}", stdout(&out));
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

#[test]
fn tcp_connect_to_allowed_port_only() {
    let (_ok, ok_port) = listener();
    let (_no, no_port) = listener();
    let case = Case::new("tcp", &base_profile(&format!("\n[network]\nconnect = [\"127.0.0.1:{ok_port}\"]\n")));
    allowed(&case.probe(&["connect", &format!("127.0.0.1:{ok_port}")]));
    refused(&case.probe(&["connect", &format!("127.0.0.1:{no_port}")]));
}

#[test]
fn tcp_bind_only_listed_ports() {
    let free = || listener().1;
    let (ok_port, no_port) = (free(), free());
    let case = Case::new("bind", &base_profile(&format!("\n[network]\nbind = [{ok_port}]\n")));
    allowed(&case.probe(&["bind", &ok_port.to_string()]));
    refused(&case.probe(&["bind", &no_port.to_string()]));
}

#[test]
fn no_network_means_no_ip_sockets() {
    let (_l, port) = listener();
    let case = Case::new("nonet", &base_profile(""));
    refused(&case.probe(&["connect", &format!("127.0.0.1:{port}")]));
    refused(&case.probe(&["udp", "127.0.0.1:53"]));
    refused(&case.probe(&["udp", "[::1]:53"]));
}

#[test]
fn io_uring_is_blocked_unless_allowed() {
    refused(&Case::new("uring", &base_profile("")).probe(&["io-uring"]));
    let allow = Case::new("uring_ok", &base_profile("\n[syscalls]\nallow = [\"io_uring_setup\"]\n"));
    allowed(&allow.probe(&["io-uring"]));
}

#[test]
fn ptrace_of_the_parent_is_blocked() {
    refused(&Case::new("ptrace", &base_profile("")).probe(&["ptrace-parent"]));
}

#[test]
fn new_user_namespace_is_blocked_unless_allowed() {
    refused(&Case::new("userns", &base_profile("")).probe(&["unshare-user"]));
    let allow = Case::new("userns_ok", &base_profile("\n[syscalls]\nallow = [\"unshare\"]\n"));
    allowed(&allow.probe(&["unshare-user"]));
}

#[test]
fn personality_change_and_tiocsti_are_blocked() {
    refused(&Case::new("persona", &base_profile("")).probe(&["personality"]));
    refused(&Case::new("tiocsti", &base_profile("")).probe(&["tiocsti"]));
    // Control: with the rule opted out, the ioctl reaches the (non-)terminal: ENOTTY, not EPERM.
    let out = Case::new("tiocsti_ok", &base_profile("\n[syscalls]\nallow = [\"ioctl:TIOCSTI\"]\n")).probe(&["tiocsti"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("Inappropriate ioctl"), "{}", stdout(&out));
}

#[test]
fn i386_abi_kills_the_process() {
    let out = Case::new("int80", &base_profile("")).probe(&["int80"]);
    assert_eq!(out.status.code(), Some(128 + libc::SIGSYS), "killed by SIGSYS: {}", stdout(&out));
    assert!(stdout(&out).is_empty(), "nothing ran after the call: {}", stdout(&out));
}

#[test]
fn capabilities_are_all_dropped() {
    let out = Case::new("caps", &base_profile("")).probe(&["caps"]);
    allowed(&out);
    assert!(stdout(&out).contains("eff=0 prm=0 inh=0 bnd=0 nnp=1"), "{}", stdout(&out));
}

#[test]
fn runs_as_the_role_user() {
    let case = Case::new("asuser", &base_profile("").replace("environment = \"test\"", "environment = \"test\"\nuser = \"nobody\""));
    let out = case.probe(&["uid"]);
    allowed(&out);
    assert!(stdout(&out).contains("uid=65534 gid=65534"), "{}", stdout(&out));
}

#[test]
fn secrets_stay_out_of_the_environment() {
    let case = Case::new("envs", &base_profile("\n[env]\npass = [\"LANG\"]\nset = { GREETING = \"hi\" }\n"));
    let probe = common::probe();
    let run = |name: &str| {
        let out = case.command(&[], &[probe, "env", name]).env("MY_API_TOKEN", "s3cr3t").env("LANG", "C.UTF-8").output().expect("run");
        eprintln!("{}", stdout(&out));
        out
    };
    let out = run("MY_API_TOKEN");
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("UNSET"));
    // Controls: a passed name and a set one arrive.
    assert!(stdout(&run("LANG")).contains("LANG=C.UTF-8"));
    assert!(stdout(&run("GREETING")).contains("GREETING=hi"));
    assert!(stdout(&run("AGENT_GUARD_SESSION")).starts_with("OK "));
    let out = case.command(&["--agent", "triage-bot"], &[probe, "env", "AGENT_GUARD_AGENT"]).output().expect("run");
    assert!(stdout(&out).contains("AGENT_GUARD_AGENT=triage-bot"), "{}", stdout(&out));
}

#[test]
fn setsid_double_fork_survivor_dies_with_the_session() {
    let case = Case::new("daemon", &base_profile(""));
    let pidfile = case.work().join("out/pid");
    allowed(&case.probe(&["daemonize", &pidfile.to_string_lossy()]));
    let pid: i32 = std::fs::read_to_string(&pidfile).expect("pidfile").trim().parse().expect("pid");
    // `run` returns only after the session cgroup is empty, so the daemon is gone already.
    // SAFETY: kill with signal 0 only checks for existence.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive, "the double-forked daemon {pid} survived the session");
}

#[test]
fn exit_codes_and_signals_propagate() {
    let case = Case::new("exits", &base_profile(""));
    assert_eq!(case.probe(&["exit", "7"]).status.code(), Some(7));
    assert_eq!(case.probe(&["exit", "0"]).status.code(), Some(0));
    assert_eq!(case.probe(&["kill-self", "15"]).status.code(), Some(128 + 15));
}

#[test]
fn signals_sent_to_run_reach_the_agent() {
    let case = Case::new("fwd", &base_profile(""));
    let mut child = case.command(&[], &[common::probe(), "sleep", "60"]).spawn().expect("spawn");
    let pid = child.id();
    // Wait until the agent has been exec'd: run's child is the probe.
    let children = format!("/proc/{pid}/task/{pid}/children");
    let mut ready = false;
    for _ in 0..500 {
        let kids = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(kid) = kids.split_whitespace().next() {
            if std::fs::read_link(format!("/proc/{kid}/exe")).is_ok_and(|e| e.ends_with("ag-probe")) {
                ready = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ready, "the agent never started");
    // SAFETY: sending SIGTERM to the agent-guard process we spawned.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "the agent died of the forwarded SIGTERM");
}

#[test]
fn wall_time_ends_the_session() {
    let case = Case::new("walltime", &base_profile("").replace("wall_time = \"2m\"", "wall_time = \"1s\""));
    let out = case.probe(&["sleep", "60"]);
    assert_eq!(out.status.code(), Some(128 + libc::SIGKILL), "{}", stderr(&out));
    assert!(stderr(&out).contains("wall_time 1s reached"), "{}", stderr(&out));
    assert!(stderr(&out).contains("role walltime"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("OK sleep"));
}

#[test]
fn memory_limit_is_enforced() {
    let case = Case::new("memory", &base_profile("").replace("wall_time = \"2m\"", "wall_time = \"2m\"\nmemory = \"64MiB\""));
    // Control: well under the limit.
    allowed(&case.probe(&["alloc", "8"]));
    let out = case.probe(&["alloc", "256"]);
    assert_eq!(out.status.code(), Some(128 + libc::SIGKILL), "OOM-killed: {}", stdout(&out));
}

#[test]
fn process_limit_is_enforced() {
    let case = Case::new("pids", &base_profile("").replace("wall_time = \"2m\"", "wall_time = \"2m\"\nprocesses = 4"));
    let out = case.probe(&["forks", "10"]);
    assert_eq!(out.status.code(), Some(2), "fork fails with EAGAIN: {}", stdout(&out));
    assert!(stdout(&out).contains("FORKED 3"), "the probe and 3 children fill the limit of 4: {}", stdout(&out));
    // Control: under the limit.
    allowed(&case.probe(&["forks", "2"]));
}

#[test]
fn session_cgroup_is_removed_at_the_end() {
    let case = Case::new("cgclean", &base_profile(""));
    let out = case.probe(&["env", "AGENT_GUARD_SESSION"]);
    allowed(&out);
    let id = stdout(&out).trim().rsplit('=').next().expect("id").to_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let v2 = mountinfo
        .lines()
        .find_map(|l| l.split_once(" - cgroup2 ").and_then(|(left, _)| left.split(' ').nth(4)))
        .expect("cgroup2 mount");
    let dir = std::path::Path::new(v2).join("agent-guard").join(&id);
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn signals_and_abstract_sockets_outside_the_session_are_scoped() {
    let case = Case::new("scoped", &base_profile(""));
    // The probe's parent is agent-guard, outside the landlock domain.
    refused(&case.probe(&["signal-parent"]));
    let name = format!("agent-guard-test-{}", std::process::id());
    let addr = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name")
    };
    let _listener = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind abstract socket");
    refused(&case.probe(&["abstract", &name]));
    // Control: the same connection from outside any session works.
    std::os::unix::net::UnixStream::connect_addr(&addr).expect("connect from outside");
}

#[test]
fn inherited_file_descriptors_are_closed() {
    use std::os::fd::AsRawFd;
    let case = Case::new("fds", &base_profile(""));
    let leaked = std::fs::File::open("/etc/hostname").expect("open");
    let fd = leaked.as_raw_fd();
    let mut cmd = case.command(&[], &[common::probe(), "fds"]);
    // Hand agent-guard an inheritable fd, as a careless caller would.
    // SAFETY: clearing FD_CLOEXEC on an fd we own, in the child before exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let out = cmd.output().expect("run");
    allowed(&out);
    assert!(stdout(&out).contains("open=0,1,2\n") || stdout(&out).trim_end().ends_with("open=0,1,2"), "{}", stdout(&out));
}

#[test]
fn a_killed_supervisor_takes_its_session_with_it() {
    let case = Case::new(
        "guardian",
        &base_profile("").replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/sh\", \"/usr/bin/dash\"]"),
    );
    let pidfile = case.work().join("out/pid");
    let probe = common::probe();
    // The agent double-forks a daemon, then sleeps; agent-guard itself is SIGKILLed.
    let mut child = case
        .command(&[], &["/bin/sh", "-c", &format!("{probe} daemonize {} && {probe} sleep 60", pidfile.display())])
        .spawn()
        .expect("spawn");
    let mut daemon = None;
    for _ in 0..500 {
        if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            daemon = Some(pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let daemon = daemon.expect("the daemon started");
    let _ = child.kill(); // SIGKILL: no chance to clean up
    let _ = child.wait();
    // The guardian notices and ends the session.
    assert!(common::gone_soon(daemon), "process {daemon} of the session outlived its supervisor");
}
