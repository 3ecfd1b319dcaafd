//! The cgroup holding every session may be removed while no session runs
//! (by an operator, or a host's cgroup cleanup) and recreated by the next
//! session: the monitor's cgroup hooks hung on the old one, so it must be
//! attached again, or the new sessions would run without their network
//! rules. Alone in its test binary: no other session may be running.

mod common;

use std::net::TcpListener;

use common::{allowed, base_profile, refused, Case};

/// The cgroup v2 mount, from /proc/self/mountinfo.
fn cgroup2() -> std::path::PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let line = info.lines().find(|l| l.contains(" - cgroup2 ")).expect("a cgroup2 mount");
    std::path::PathBuf::from(line.split(' ').nth(4).expect("mount point"))
}

#[test]
fn a_recreated_sessions_cgroup_gets_the_network_rules_again() {
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
