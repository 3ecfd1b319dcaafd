//! The session's filesystem view against the real kernel: nothing but
//! allowed programs and system libraries is mapped executable, read-only
//! subtrees inside writable trees hold, /proc shows only the session,
//! kernel settings stay read-only, socket families and setuid files are
//! refused. Each escape is tried from inside a real session and checked
//! from the host, beside a control that must still work.

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use common::{allowed, base_profile, refused, stderr, stdout, Case};

const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
const SYSTEM_LIB: &str = "/usr/lib/x86_64-linux-gnu/libz.so.1";

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn the_loader_maps_only_allowed_programs() {
    let case = Case::new("loader", &base_profile(""));
    // /usr/bin/id is readable (read /usr) but not in `exec`: the loader cannot map it.
    let out = case.probe(&["run", LOADER, "/usr/bin/id"]);
    assert_eq!(out.status.code(), Some(127), "the loader must fail: {}", stderr(&out));
    assert!(stderr(&out).contains("failed to map segment"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("uid="), "id ran: {}", stdout(&out));
    // Control: the loader on an allowed program runs it, with its libraries.
    let out = case.probe(&["run", LOADER, "/usr/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn code_the_agent_wrote_cannot_be_mapped_executable() {
    let case = Case::new("agentcode", &base_profile(""));
    let lib = case.work().join("out/lib.so");
    std::fs::copy(SYSTEM_LIB, &lib).expect("copy a shared object into the workdir");
    // dlopen, LD_PRELOAD and a plain PROT_EXEC mapping of it are all refused.
    refused(&case.probe(&["dlopen", &s(&lib)]));
    refused(&case.probe(&["exec-env", &format!("LD_PRELOAD={}", s(&lib)), "/usr/bin/true"]));
    refused(&case.probe(&["mmap-exec", &s(&lib)]));
    // Controls: the same library from the system library directory.
    allowed(&case.probe(&["dlopen", SYSTEM_LIB]));
    let out = case.probe(&["exec-env", &format!("LD_PRELOAD={SYSTEM_LIB}"), "/usr/bin/true"]);
    allowed(&out);
    assert!(!stdout(&out).contains("cannot be preloaded"), "{}", stdout(&out));
    allowed(&case.probe(&["mmap-exec", SYSTEM_LIB]));
}

#[test]
fn python_imports_compiled_extensions_from_usr_lib() {
    let case = Case::new(
        "python",
        &base_profile("").replace(r#"exec = ["@PROBE@", "/usr/bin/true"]"#, r#"exec = ["/usr/bin/python3", "/usr/bin/python3.11"]"#),
    );
    let out = case.run_with(&[], &["/usr/bin/python3", "-c", "import _ssl, _ctypes, _decimal, zlib; print('imported', _ssl.__file__)"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("imported /usr/lib/python3"), "{}", stdout(&out));
}

fn nested_profile() -> String {
    r#"[role]
name = "@NAME@"
environment = "test"

[filesystem]
read = ["/usr", "/lib", "/lib64", "/etc", "/dev/urandom", "{workdir}", "{workdir}/sub/.git"]
write = ["{workdir}", "/dev/null"]
exec = ["@PROBE@", "{workdir}/bin", "/usr/bin/git", "/usr/lib/git-core", "/bin/sh", "/usr/bin/sh", "/usr/bin/dash"]

[limits]
wall_time = "2m"
"#
    .to_owned()
}

#[test]
fn read_only_subtrees_inside_a_writable_tree_hold() {
    let case = Case::new("nested", &nested_profile());
    let w = case.work();
    std::fs::create_dir_all(w.join("bin")).expect("mkdir bin");
    std::fs::copy("/usr/bin/true", w.join("bin/tool")).expect("copy tool");
    std::fs::set_permissions(w.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir_all(w.join("sub/.git/hooks")).expect("mkdir .git");
    std::fs::write(w.join("sub/.git/config"), "[core]\n").expect("config");
    let p = |rel: &str| s(&w.join(rel));

    // The exec entry beneath the write entry: nothing added, changed, renamed, removed or chmodded.
    for attempt in [
        vec!["create", &p("bin/new") as &str, "755"],
        vec!["append", &p("bin/tool")],
        vec!["chmod", &p("bin/tool"), "700"],
        vec!["unlink", &p("bin/tool")],
        vec!["rename", &p("bin/tool"), &p("tool")],
        vec!["rename", &p("bin"), &p("bin2")],
        vec!["rmdir", &p("bin")],
        // The read entry beneath it, and the directory holding it.
        vec!["create", &p("sub/.git/hooks/pre-commit"), "755"],
        vec!["append", &p("sub/.git/config")],
        vec!["rename", &p("sub/.git"), &p("sub/git")],
        vec!["rename", &p("sub"), &p("sub2")],
        vec!["symlink", "/tmp", &p("sub/.git/evil")],
    ] {
        refused(&case.probe(&attempt));
    }
    // Controls: the rest of the workdir is writable, and the exec entry runs.
    allowed(&case.probe(&["create", &p("new.txt"), "644"]));
    allowed(&case.probe(&["chmod", &p("new.txt"), "755"]));
    allowed(&case.probe(&["rename", &p("new.txt"), &p("new2.txt")]));
    allowed(&case.probe(&["mkdir", &p("sub/other")]));
    allowed(&case.probe(&["create", &p("sub/other/x"), "644"]));
    // `sub` holds a read-only entry, so it is a mount point: renaming into it crosses mounts (mv copies instead).
    let out = case.probe(&["rename", &p("new2.txt"), &p("sub/new.txt")]);
    assert!(stdout(&out).contains("Invalid cross-device link"), "{}", stdout(&out));
    let out = case.probe(&["exec", &p("bin/tool")]);
    assert_eq!(out.status.code(), Some(0), "the tool in the exec entry runs: {}", stderr(&out));
    // Checked from the host.
    assert_eq!(std::fs::read(w.join("bin/tool")).expect("tool"), std::fs::read("/usr/bin/true").expect("true"));
    assert_eq!(std::fs::metadata(w.join("bin/tool")).expect("tool").permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::read_to_string(w.join("sub/.git/config")).expect("config"), "[core]\n");
    assert!(!w.join("bin/new").exists() && !w.join("sub2").exists() && !w.join("sub/.git/hooks/pre-commit").exists());
    assert!(w.join("new2.txt").is_file() && w.join("sub/other/x").is_file());
}

#[test]
fn git_commits_in_the_workdir() {
    let case = Case::new("git", &nested_profile().replace(r#", "{workdir}/sub/.git""#, ""));
    let script = "git init -q . && echo hello > a.txt && git add a.txt && git -c user.name=agent -c user.email=agent@example.invalid commit -q -m first && echo committed";
    let out = case.run_with(&[], &["/bin/sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("committed"));
    let log = Command::new("git").args(["-C", &s(&case.work()), "log", "--format=%s"]).output().expect("git log");
    assert_eq!(String::from_utf8_lossy(&log.stdout).trim(), "first", "{}", String::from_utf8_lossy(&log.stderr));
}

#[test]
fn proc_shows_only_the_session() {
    let case = Case::new("proc", &base_profile("").replace(r#""{workdir}"]"#, r#""{workdir}", "/proc"]"#));
    // A host process with a secret on its command line.
    let mut host = Command::new("/bin/sh").args(["-c", "sleep 60", "ag-secret-token-3f9e"]).spawn().expect("host process");
    let pid = host.id().to_string();
    let out = case.probe(&["read", &format!("/proc/{pid}/cmdline")]);
    assert_ne!(out.status.code(), Some(0), "another process's command line was read: {}", stdout(&out));
    assert!(stdout(&out).contains("No such file"), "it is not even listed: {}", stdout(&out));
    let out = case.probe(&["read", "/proc/1/environ"]);
    assert!(stdout(&out).contains("No such file"), "{}", stdout(&out));
    let out = case.probe(&["proc-pids"]);
    allowed(&out);
    let listed = stdout(&out);
    assert!(!listed.contains(&format!(" {pid},")) && !listed.contains(&format!(" {pid}]")) && !listed.contains("[1,"), "{listed}");
    assert!(listed.starts_with("OK proc-pids 1 "), "only the probe itself: {listed}");
    let _ = host.kill();
    let _ = host.wait();
    // Controls: its own entries, and the host-wide files programs need.
    for file in ["/proc/self/status", "/proc/self/maps", "/proc/meminfo", "/proc/cpuinfo", "/proc/stat"] {
        allowed(&case.probe(&["read", file]));
    }
    allowed(&case.probe(&["proc-mem"]));
}

#[test]
fn kernel_settings_stay_read_only_even_for_a_profile_writing_everything() {
    // Landlock lets this profile write anywhere; the view still keeps
    // /proc/sys, /proc/sysrq-trigger and /sys read-only (only opened, never written).
    let case = Case::new("kernel", &base_profile("").replace(r#"write = ["{workdir}/out", "/dev/null"]"#, r#"write = ["/"]"#).replace(r#""{workdir}"]"#, r#""{workdir}", "/proc"]"#));
    // (This kernel has no /proc/sysrq-trigger; where it exists the view binds it read-only too.)
    for file in ["/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches", "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/fs/cgroup/unified/cgroup.procs"] {
        let out = case.probe(&["open-write", file]);
        refused(&out);
        assert!(stdout(&out).contains("Read-only file system"), "{file}: {}", stdout(&out));
    }
    // Control: the rest of what it may write (not the workdir: a `read` entry beneath `write` is read-only).
    allowed(&case.probe(&["write", &s(&case.dir.path().join("free.txt"))]));
    refused(&case.probe(&["write", &s(&case.work().join("out/x"))]));
}

#[test]
fn only_unix_and_ip_sockets_by_default() {
    let net = "\n[network]\nconnect = [\"127.0.0.1:1\"]\n";
    let case = Case::new("families", &base_profile(net));
    const AF_UNIX: &str = "1";
    const AF_INET: &str = "2";
    const AF_INET6: &str = "10";
    const AF_NETLINK: &str = "16";
    const AF_PACKET: &str = "17";
    for (family, ty, proto) in [
        (AF_NETLINK, "3", "0"), // a route socket, to dump the host's addresses
        (AF_PACKET, "3", "0"),
        (AF_INET, "3", "1"), // raw ICMP
        (AF_INET6, "3", "58"),
        (AF_INET, "2", "1"), // ICMP "ping" socket
        (AF_INET, "1", "132"), // SCTP
        ("40", "1", "0"), // vsock
    ] {
        refused(&case.probe(&["socket", family, ty, proto]));
    }
    for (family, ty, proto) in [(AF_UNIX, "1", "0"), (AF_INET, "1", "0"), (AF_INET6, "2", "17"), (AF_INET, "524289", "6")] {
        allowed(&case.probe(&["socket", family, ty, proto]));
    }
    // Opting netlink back in.
    let case = Case::new("netlink", &base_profile(&format!("{net}\n[syscalls]\nallow = [\"netlink\"]\n")));
    allowed(&case.probe(&["socket", AF_NETLINK, "3", "0"]));
    refused(&case.probe(&["socket", AF_PACKET, "3", "0"]));
}

#[test]
fn no_setuid_or_setgid_file_is_left_behind() {
    let case = Case::new("setid", &base_profile(""));
    let out = |rel: &str| s(&case.work().join("out").join(rel));
    allowed(&case.probe(&["create", &out("plain"), "755"]));
    for attempt in [
        vec!["chmod", &out("plain") as &str, "4755"],
        vec!["chmod", &out("plain"), "2755"],
        vec!["chmod", &out("plain"), "6711"],
        vec!["create", &out("suid"), "4755"],
        vec!["create", &out("sgid"), "2755"],
        vec!["mknod", &out("node"), "4755"],
    ] {
        refused(&case.probe(&attempt));
    }
    // Control: an ordinary mode change.
    allowed(&case.probe(&["chmod", &out("plain"), "750"]));
    // From the host: nothing in the workdir carries either bit.
    let mut stack = vec![case.work()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            assert_eq!(meta.permissions().mode() & 0o6000, 0, "{} has a set-id bit", entry.path().display());
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    assert_eq!(std::fs::metadata(out("plain")).expect("plain").permissions().mode() & 0o7777, 0o750);
}
