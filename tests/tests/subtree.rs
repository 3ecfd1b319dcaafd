//! What happens to the shared monitor between sessions, which needs the
//! host to itself: alone in its test binary (no other session may be
//! running), its tests one at a time.
//!
//! - The cgroup holding every session may be removed while no session runs
//!   (by an operator, or a host's cgroup cleanup) and recreated by the next
//!   session: the monitor's cgroup hooks hung on the old one, so it must be
//!   attached again, or the new sessions would run without their network
//!   rules.
//! - The system-wide tracepoints are attached only while a session runs
//!   (through the daemon, until `[monitor] hooks_linger` after the last).

mod common;

use std::{net::TcpListener, sync::Mutex};

use common::{allowed, base_profile, refused, Case};

/// Held by each test: they must not see each other's sessions.
static ALONE: Mutex<()> = Mutex::new(());

/// The cgroup v2 mount, from /proc/self/mountinfo.
fn cgroup2() -> std::path::PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let line = info.lines().find(|l| l.contains(" - cgroup2 ")).expect("a cgroup2 mount");
    std::path::PathBuf::from(line.split(' ').nth(4).expect("mount point"))
}

#[test]
fn a_recreated_sessions_cgroup_gets_the_network_rules_again() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let _other = TcpListener::bind(("127.0.0.2", port)).expect("bind 127.0.0.2");
    let case = Case::new("subtree", &base_profile(&format!("\n[network]\nconnect = [\"127.0.0.1:{port}\"]\n")));
    // A session loads (or reuses) the monitor and its hooks on the sessions' cgroup.
    refused(&case.probe(&["connect", &format!("127.0.0.2:{port}")]));
    let subtree = cgroup2().join("agent-guard");
    let mut removed = false;
    for _ in 0..250 {
        match std::fs::remove_dir(&subtree) {
            Ok(()) => {
                removed = true;
                break;
            }
            // A session of an earlier test still being torn down.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => panic!("removing {}: {e}", subtree.display()),
        }
    }
    assert!(removed, "{} stayed busy: sessions are running", subtree.display());
    // The next session recreates it; the rules hold there too, and the allowed destination works.
    refused(&case.probe(&["connect", &format!("127.0.0.2:{port}")]));
    allowed(&case.probe(&["connect", &format!("127.0.0.1:{port}")]));
    refused(&case.probe(&["udp", &format!("127.0.0.2:{port}")]));
}

/// How many BPF links the kernel holds for the current instance's
/// write-family program (asked of the kernel, not of agent-guard's link
/// pins; the program is found by its pin).
fn write_hook_links(case: &Case) -> usize {
    let pin = current_instance(case).join("prog_tp_enter_write");
    let id = aya::programs::ProgramInfo::from_pin(&pin).unwrap_or_else(|e| panic!("{}: {e}", pin.display())).id();
    aya::programs::loaded_links().filter_map(Result::ok).filter(|l| l.program_id() == id).count()
}

/// This binary's instance in `monitor status --json`.
fn current_status(case: &Case) -> serde_json::Value {
    case.monitor_status().into_iter().find(|i| i["current"] == true).expect("this binary's instance")
}

/// Where this binary's instance is pinned.
fn current_instance(case: &Case) -> std::path::PathBuf {
    std::path::PathBuf::from(current_status(case)["path"].as_str().expect("path"))
}

/// Whether this binary's instance has its system-wide hooks attached.
fn system_hooks(case: &Case) -> bool {
    current_status(case)["system_hooks"].as_bool().expect("system_hooks")
}

/// A host with the monitor loaded and no session running pays nothing on
/// its system calls: the tracepoints are attached by the first session
/// and detached when the last one ends, and a later session is counted
/// exactly again.
#[test]
fn system_wide_hooks_are_attached_only_while_a_session_runs() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new("hooks", &base_profile(""));
    let written = case.work().join("out/written.txt");
    let counted = |case: &Case| {
        let summary = case.dir.path().join("summary.json");
        let out = case.run_with(&["--summary-json", summary.to_str().expect("utf-8")], &[common::probe(), "write", written.to_str().expect("utf-8")]);
        allowed(&out);
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("JSON");
        json["counters"]["file_writes"].as_u64().expect("file_writes")
    };
    // A session loads the instance; once it has ended, nothing is attached system-wide.
    assert_eq!(counted(&case), 1, "the probe's one write to a regular file");
    assert!(!system_hooks(&case), "no session runs, yet the system-wide hooks are attached");
    // The kernel releases an unpinned link after an RCU grace period.
    let released = common::eventually(500, std::time::Duration::from_millis(10), || write_hook_links(&case) == 0);
    assert!(released, "the kernel still holds a link of tp_enter_write with no session running");

    // While a session runs they are attached, once: one link per write-family call.
    let mut running = case.command(&[], &[common::probe(), "sleep", "30"]).spawn().expect("spawn");
    case.wait_for_sessions(1);
    assert!(system_hooks(&case), "a session runs without the system-wide hooks");
    assert_eq!(write_hook_links(&case), 5, "write, writev, pwrite64, pwritev, pwritev2: one link of tp_enter_write each");
    let _ = running.kill();
    let _ = running.wait();
    let detached = common::eventually(500, std::time::Duration::from_millis(10), || !system_hooks(&case) && write_hook_links(&case) == 0);
    assert!(detached, "the last session ended but the system-wide hooks stayed");

    // Attached again for the next session, which is counted exactly.
    assert_eq!(counted(&case), 1, "a session after a detach is counted again");
}

/// Through the daemon, the last session to end leaves the hooks attached
/// (back-to-back sessions need not attach them again); the daemon detaches
/// them once no session has run for `[monitor] hooks_linger`.
#[test]
fn the_daemon_detaches_the_hooks_after_hooks_linger() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new("linger", &base_profile(""));
    let base_config = std::fs::read_to_string(case.config()).expect("config");
    let with_linger = |linger: &str| {
        std::fs::write(case.config(), format!("{base_config}[monitor]\nhooks_linger = {linger:?}\n")).expect("config");
        common::spawn_daemon(&case)
    };
    let written = case.work().join("out/linger.txt");
    let detached = |case: &Case| common::eventually(1000, std::time::Duration::from_millis(10), || !system_hooks(case) && write_hook_links(case) == 0);
    // A long linger: after a session through the daemon, the hooks stay...
    let mut daemon = with_linger("1h");
    allowed(&case.probe(&["write", written.to_str().expect("utf-8")]));
    assert!(system_hooks(&case), "the daemon's last session detached the hooks despite hooks_linger");
    assert_eq!(write_hook_links(&case), 5);
    // ...until the daemon is stopped, which detaches them as it goes.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    assert_eq!(daemon.child.wait().expect("wait").code(), Some(0), "the daemon should exit cleanly on SIGTERM");
    assert!(detached(&case), "the stopped daemon left the idle hooks attached");
    // A short linger: the daemon detaches them by itself (it checks twice a second).
    let _daemon = with_linger("1s");
    allowed(&case.probe(&["write", written.to_str().expect("utf-8")]));
    assert!(detached(&case), "the daemon never detached the idle hooks");
}

/// Sessions starting and ending at once, so that the hooks are attached
/// and detached over and over while others register: every session is
/// counted (a session registered while the hooks were being detached
/// would count no write).
#[test]
fn concurrent_sessions_are_always_counted_across_attach_and_detach() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new("churn", &base_profile(""));
    // Two at a time: often both between sessions, so the hooks come and go
    // (measured by hand: ~17 detaches in 40 sessions).
    let threads: Vec<_> = (0..2)
        .map(|t| (t, case.work().join(format!("out/churn-{t}.txt")), case.dir.path().join(format!("summary-{t}.json"))))
        .collect();
    std::thread::scope(|scope| {
        for (t, written, summary) in &threads {
            let case = &case;
            scope.spawn(move || {
                for round in 0..20 {
                    let out = case
                        .command(&["--quiet", "--summary-json", summary.to_str().expect("utf-8")], &[common::probe(), "write", written.to_str().expect("utf-8")])
                        .output()
                        .expect("run");
                    assert_eq!(out.status.code(), Some(0), "thread {t} round {round}: {}", common::stderr(&out));
                    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(summary).expect("summary")).expect("JSON");
                    assert_eq!(json["counters"]["file_writes"], 1, "thread {t} round {round}: {json}");
                }
            });
        }
    });
}
