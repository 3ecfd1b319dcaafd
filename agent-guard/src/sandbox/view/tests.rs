//! Unit tests of the view's plan: no root, no mounts (the child's side is
//! tested against the kernel in tests/tests/view.rs).

use std::path::{Path, PathBuf};

use super::*;

fn policy(work: &Path, read: &[&str], write: &[&str], exec: &[&str]) -> Policy {
    let expand = |l: &[&str]| l.iter().map(|p| PathBuf::from(p.replace("{workdir}", &work.to_string_lossy()))).collect();
    let mut p = Policy::probe_only(work);
    p.filesystem.read = expand(read);
    p.filesystem.write = expand(write);
    p.filesystem.exec = expand(exec);
    p
}

fn host() -> HostMounts {
    HostMounts::parse(
        "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw\n\
         23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw\n\
         24 1 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw\n\
         25 24 0:23 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw\n\
         1 0 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
         30 1 0:30 / /mnt/no\\040exec rw,noexec,relatime - tmpfs tmpfs rw\n",
    )
}

fn steps(plan: &Plan) -> Vec<(Op, String, u64, u64)> {
    plan.steps.iter().map(|s| (s.op, s.target.to_string_lossy().into_owned(), s.set, s.clr)).collect()
}

fn confine() -> Options {
    Options { confine: true }
}

#[test]
fn mountinfo_flags_and_escapes() {
    let h = host();
    assert_eq!(h.flags_at(Path::new("/proc/self")), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    assert_eq!(h.flags_at(Path::new("/dev/null")), MOUNT_ATTR_NOSUID);
    assert_eq!(h.flags_at(Path::new("/dev/shm/x")), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    assert_eq!(h.flags_at(Path::new("/usr/bin")), 0);
    assert_eq!(h.flags_at(Path::new("/mnt/no exec/a")), MOUNT_ATTR_NOEXEC);
    assert!(h.is_mount_point(Path::new("/dev")) && !h.is_mount_point(Path::new("/usr")));
}

#[test]
fn most_specific_entry_wins_and_its_ancestors_are_pinned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().canonicalize().expect("canonical");
    for d in ["bin", "a/.git", "a/src"] {
        std::fs::create_dir_all(work.join(d)).expect("mkdir");
    }
    let p = policy(&work, &["{workdir}", "{workdir}/a/.git"], &["{workdir}"], &["{workdir}/bin", "/usr/bin"]);
    let plan = plan(&p, &[], &[], &host(), confine()).expect("plan");
    let s = steps(&plan);
    let w = |rel: &str| work.join(rel).to_string_lossy().into_owned();
    // Everything nosuid, nodev, noexec first; /dev keeps devices (but /dev/shm, nodev on the host).
    assert_eq!(s[0], (Op::Setattr, "/".to_owned(), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_RDONLY, 0));
    assert_eq!(s[1], (Op::Setattr, "/dev".to_owned(), 0, MOUNT_ATTR_NODEV));
    assert_eq!(s[2], (Op::Setattr, "/dev/shm".to_owned(), MOUNT_ATTR_NODEV, 0));
    // Executable and read-only: the exec entry in the workdir, /usr/bin, the library directories.
    // The writable tree gets its writability back.
    assert!(s.contains(&(Op::Bind, w(""), 0, MOUNT_ATTR_RDONLY)) || s.contains(&(Op::Bind, work.to_string_lossy().into_owned(), 0, MOUNT_ATTR_RDONLY)), "{s:?}");
    assert!(s.contains(&(Op::Bind, w("bin"), MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOEXEC)), "{s:?}");
    assert!(s.contains(&(Op::Bind, "/usr/bin".to_owned(), 0, MOUNT_ATTR_NOEXEC)), "{s:?}");
    assert!(s.contains(&(Op::Bind, "/usr/lib".to_owned(), 0, MOUNT_ATTR_NOEXEC)), "{s:?}");
    // The read entry beneath the write entry: read-only; its parent pinned (no flags), before it.
    let git = s.iter().position(|x| *x == (Op::Bind, w("a/.git"), MOUNT_ATTR_RDONLY, 0)).expect("read-only .git");
    let a = s.iter().position(|x| *x == (Op::Bind, w("a"), 0, 0)).expect("pinned a");
    assert!(a < git);
    // Nothing for its plain subdirectories.
    assert!(!s.iter().any(|x| x.1 == w("a/src")), "{s:?}");
    // The session's /proc, its read-only parts, read-only /sys, after the entries.
    let proc_ = s.iter().position(|x| x.0 == Op::Proc).expect("proc");
    assert!(proc_ > git);
    assert!(s.contains(&(Op::Bind, "/proc/sys".to_owned(), MOUNT_ATTR_RDONLY, 0)));
    assert!(s.contains(&(Op::Setattr, "/sys".to_owned(), MOUNT_ATTR_RDONLY, 0)));
    let show: Vec<(String, &str)> = plan.entries.iter().map(|e| (e.path.to_string_lossy().into_owned(), e.access.as_str())).collect();
    assert!(show.contains(&(w("a/.git"), "read-only, not executable")), "{show:?}");
    assert!(show.contains(&(w("bin"), "read-only, executable")), "{show:?}");
    assert!(show.iter().any(|(p, a)| *p == w("a") && a.starts_with("pinned")), "{show:?}");
}

#[test]
fn write_beneath_exec_is_writable_and_not_executable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().canonicalize().expect("canonical");
    std::fs::create_dir_all(work.join("tools/cache")).expect("mkdir");
    let p = policy(&work, &[], &["{workdir}/tools/cache"], &["{workdir}/tools"]);
    let s = steps(&plan(&p, &[], &[], &host(), confine()).expect("plan"));
    let w = |rel: &str| work.join(rel).to_string_lossy().into_owned();
    assert!(s.contains(&(Op::Bind, w("tools"), 0, MOUNT_ATTR_NOEXEC)), "{s:?}");
    assert!(s.contains(&(Op::Bind, w("tools/cache"), MOUNT_ATTR_NOEXEC, MOUNT_ATTR_RDONLY)), "{s:?}");
}

#[test]
fn write_and_exec_of_one_real_path_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().canonicalize().expect("canonical");
    std::fs::create_dir(work.join("real")).expect("mkdir");
    std::os::unix::fs::symlink(work.join("real"), work.join("link")).expect("symlink");
    let p = policy(&work, &[], &["{workdir}/real"], &["{workdir}/link"]);
    match plan(&p, &[], &[], &host(), confine()) {
        Err(ViewError::WriteAndExec { path }) => assert_eq!(path, work.join("real")),
        other => panic!("expected WriteAndExec, got {other:?}"),
    }
}

#[test]
fn nothing_more_than_the_host_gives() {
    // An exec entry on a noexec mount of the host stays non-executable (and says so).
    let h = HostMounts::parse(&format!("1 0 254:0 / / rw - ext4 /dev/vda rw\n2 1 0:30 / {} ro,noexec - tmpfs t rw\n", std::env::temp_dir().display()));
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().canonicalize().expect("canonical");
    if !work.starts_with(std::env::temp_dir().canonicalize().expect("tmp")) {
        panic!("tempdir {} is not under {}", work.display(), std::env::temp_dir().display());
    }
    let p = policy(&work, &[], &[], &["{workdir}"]);
    let plan = plan(&p, &[], &[], &h, confine()).expect("plan");
    assert!(!plan.steps.iter().any(|s| s.target.to_string_lossy() == work.to_string_lossy()), "no change to make: {:?}", steps(&plan));
    assert!(plan.notes.iter().any(|n| n.contains("noexec mount")), "{:?}", plan.notes);
}

#[test]
fn observing_keeps_execution_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().canonicalize().expect("canonical");
    let p = policy(&work, &["{workdir}"], &["{workdir}"], &["/usr/bin"]);
    let s = steps(&plan(&p, &[], &[], &host(), Options { confine: false }).expect("plan"));
    assert_eq!(s[0], (Op::Setattr, "/".to_owned(), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0));
    assert!(!s.iter().any(|x| x.1 == "/usr/bin" || x.1 == "/usr/lib"), "{s:?}");
    assert!(s.iter().any(|x| x.0 == Op::Proc) && s.contains(&(Op::Setattr, "/sys".to_owned(), MOUNT_ATTR_RDONLY, 0)));
}

#[test]
fn unix_sockets_in_writable_trees_are_pinned_or_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().canonicalize().expect("canonical");
    std::fs::create_dir_all(work.join("run")).expect("mkdir");
    let sock = work.join("run/app.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let p = policy(&work, &[], &["{workdir}"], &[]);
    let s = steps(&plan(&p, &[], &[sock.clone()], &host(), confine()).expect("plan"));
    assert!(s.contains(&(Op::Bind, sock.to_string_lossy().into_owned(), 0, 0)), "{s:?}");
    assert!(s.contains(&(Op::Bind, work.join("run").to_string_lossy().into_owned(), 0, 0)), "{s:?}");
    // Absent in a writable directory: the agent could plant a link there.
    let absent = work.join("run/other.sock");
    assert!(matches!(plan(&p, &[], &[absent], &host(), confine()), Err(ViewError::UnpinnableSocket { .. })));
    // Named through a link the session may replace.
    std::os::unix::fs::symlink(work.join("run"), work.join("link")).expect("symlink");
    assert!(matches!(plan(&p, &[], &[work.join("link/app.sock")], &host(), confine()), Err(ViewError::SocketThroughLink { .. })));
}
