//! Socket files (`[network] unix`) against the real kernel: the monitor's
//! `cgroup/connect_unix` and `cgroup/sendmsg_unix` hooks let a session
//! connect only to the socket files its profile lists. Every refusal is
//! tried from inside a real session against a server the test runs on
//! the host, beside a control that must work.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::{UnixDatagram, UnixListener},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{allowed, base_profile, refused, stderr, stdout, Case};

/// A stream server on `path` answering each line with "pong", until the
/// test process ends.
fn stream_server(path: &Path) -> PathBuf {
    let l = UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut line = String::new();
                if BufReader::new(&c).read_line(&mut line).is_ok() {
                    let _ = c.write_all(b"pong\n");
                }
            });
        }
    });
    path.to_owned()
}

/// A seqpacket server on `path` that accepts and reads one message per connection.
fn seqpacket_server(path: &Path) -> PathBuf {
    let c = std::ffi::CString::new(path.to_str().expect("utf-8")).expect("no NUL");
    // SAFETY: plain socket calls on a sockaddr_un built here; the fd is
    // owned by the server thread for the rest of the test process.
    let fd = unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut sun: libc::sockaddr_un = std::mem::zeroed();
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, b) in sun.sun_path.iter_mut().zip(c.as_bytes()) {
            *d = *b as libc::c_char;
        }
        let rc = libc::bind(fd, (&sun as *const libc::sockaddr_un).cast(), std::mem::size_of::<libc::sockaddr_un>() as u32);
        assert_eq!(rc, 0, "bind {}: {}", path.display(), std::io::Error::last_os_error());
        assert_eq!(libc::listen(fd, 8), 0);
        fd
    };
    std::thread::spawn(move || loop {
        // SAFETY: accepting on and reading from descriptors this thread owns.
        unsafe {
            let c = libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
            if c < 0 {
                return;
            }
            let mut buf = [0u8; 16];
            libc::recv(c, buf.as_mut_ptr().cast(), buf.len(), 0);
            libc::close(c);
        }
    });
    path.to_owned()
}

fn dgram_server(path: &Path) -> UnixDatagram {
    let u = UnixDatagram::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
    u.set_nonblocking(true).expect("nonblocking");
    u
}

fn datagrams(u: &UnixDatagram) -> usize {
    let mut buf = [0u8; 64];
    std::iter::from_fn(|| u.recv(&mut buf).ok()).count()
}

/// Servers live in a directory of their own beside the case's workdir.
fn sockets_dir(case: &Case) -> PathBuf {
    let d = case.dir.path().join("sockets");
    std::fs::create_dir_all(&d).expect("mkdir sockets");
    d
}

fn with_unix(unix: &[String], shell: bool) -> String {
    let mut p = base_profile(&format!("\n[network]\nunix = {unix:?}\n"));
    if shell {
        p = p.replace("exec = [\"@PROBE@\", \"/usr/bin/true\"]", "exec = [\"@PROBE@\", \"/usr/bin/true\", \"/usr/bin/sh\", \"/usr/bin/dash\"]");
    }
    p
}

fn events(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("events file");
    text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn only_listed_socket_files_connect_counted_and_reported() {
    // Placeholder: a case to know the paths before writing the profile.
    let scratch = Case::new("unixpaths", &base_profile(""));
    let d = sockets_dir(&scratch);
    let listed = stream_server(&d.join("listed.sock"));
    let other = stream_server(&d.join("other.sock"));
    let listed_seq = seqpacket_server(&d.join("listed-seq.sock"));
    let other_seq = seqpacket_server(&d.join("other-seq.sock"));
    let listed_dgram = dgram_server(&d.join("listed-dgram.sock"));
    let other_dgram = dgram_server(&d.join("other-dgram.sock"));
    let case = Case::new(
        "unixonly",
        &with_unix(&[s(&listed), s(&listed_seq), s(&d.join("listed-dgram.sock"))], true),
    );
    let probe = common::probe();
    let tries = [
        (format!("unix-connect {}", s(&other)), "REFUSED unix-connect: Operation not permitted"),
        (format!("unix-connect {}", s(&listed)), "OK unix-connect connected"),
        (format!("unix-seqpacket {}", s(&other_seq)), "REFUSED unix-seqpacket: Operation not permitted"),
        (format!("unix-seqpacket {}", s(&listed_seq)), "OK unix-seqpacket"),
        (format!("unix-dgram {}", s(&d.join("other-dgram.sock"))), "REFUSED unix-dgram: Operation not permitted"),
        (format!("unix-dgram {}", s(&d.join("listed-dgram.sock"))), "OK unix-dgram 4 bytes"),
        // connect(2) on a datagram socket goes through connect_unix too.
        (format!("unix-dgram-connect {}", s(&d.join("other-dgram.sock"))), "REFUSED unix-dgram-connect: Operation not permitted"),
        (format!("unix-dgram-connect {}", s(&d.join("listed-dgram.sock"))), "OK unix-dgram-connect"),
        // A socket file that does not exist: refused before the kernel looks it up.
        (format!("unix-connect {}", s(&d.join("missing.sock"))), "REFUSED unix-connect: Operation not permitted"),
    ];
    let script: Vec<String> = tries.iter().map(|(args, _)| format!("{probe} {args}")).collect();
    let ev = case.dir.path().join("events.jsonl");
    let (out, sum) = case.summary(&["--events-json", &s(&ev)], &["/bin/sh", "-c", &script.join("; ")]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), tries.len(), "{lines:?}");
    for ((args, expect), line) in tries.iter().zip(&lines) {
        assert!(line.starts_with(expect), "{args}: expected {expect}, got {line}");
    }
    assert!(lines[1].ends_with("answer pong"), "the listed socket exchanged data: {}", lines[1]);
    // Exact counts: every pathname attempt, five refused.
    assert_eq!(sum["counters"]["connects"], tries.len() as u64, "{sum}");
    assert_eq!(sum["counters"]["connects_denied"], 5, "{sum}");
    // The listed datagram socket got its two datagrams, the other none.
    assert_eq!((datagrams(&listed_dgram), datagrams(&other_dgram)), (2, 0));
    // Each attempt is reported with its path and how it was made.
    let records = events(&ev);
    let of = |ty: &str| -> Vec<(String, String)> {
        records
            .iter()
            .filter(|r| r["type"] == ty)
            .map(|r| (r["path"].as_str().unwrap_or_default().to_owned(), r["via"].as_str().unwrap_or_default().to_owned()))
            .collect()
    };
    let pair = |p: PathBuf, via: &str| (s(&p), via.to_owned());
    assert_eq!(
        of("connect_denied"),
        [
            pair(other, "connect"),
            pair(other_seq, "connect"),
            pair(d.join("other-dgram.sock"), "sendmsg"),
            pair(d.join("other-dgram.sock"), "connect"),
            pair(d.join("missing.sock"), "connect"),
        ]
    );
    assert_eq!(
        of("unix_connect"),
        [pair(listed, "connect"), pair(listed_seq, "connect"), pair(d.join("listed-dgram.sock"), "sendmsg"), pair(d.join("listed-dgram.sock"), "connect")]
    );
}

#[test]
fn no_list_means_no_socket_file_and_outside_sessions_are_untouched() {
    let scratch = Case::new("unixnone-paths", &base_profile(""));
    let sock = stream_server(&sockets_dir(&scratch).join("host.sock"));
    let case = Case::new("unixnone", &base_profile(""));
    refused(&case.probe(&["unix-connect", &s(&sock)]));
    // The same connect from outside any session, while none runs and while one does.
    let out = Command::new(common::probe()).args(["unix-connect", &s(&sock)]).output().expect("probe");
    allowed(&out);
    let mut running = case.command(&[], &[common::probe(), "sleep", "30"]).spawn().expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new(common::probe()).args(["unix-connect", &s(&sock)]).output().expect("probe");
    let _ = running.kill();
    let _ = running.wait();
    allowed(&out);
}

#[test]
fn abstract_sockets_are_not_the_hooks_business() {
    // Landlock scopes abstract sockets: one the host made stays out of reach,
    // refused by landlock (EPERM) and not counted by the unix hooks.
    let name = format!("agent-guard-unix-test-{}", std::process::id());
    let addr = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name")
    };
    let _listener = UnixListener::bind_addr(&addr).expect("bind abstract socket");
    let case = Case::new("unixabstract", &base_profile(""));
    let ev = case.dir.path().join("events.jsonl");
    let (out, sum) = case.summary(&["--events-json", &s(&ev)], &[common::probe(), "abstract", &name]);
    refused(&out);
    assert_eq!(sum["counters"]["connects"], 0, "{sum}");
    assert!(!events(&ev).iter().any(|r| r["type"] == "connect_denied" || r["type"] == "unix_connect"));
    // Control: from outside it connects.
    std::os::unix::net::UnixStream::connect_addr(&addr).expect("connect from outside");
}

#[test]
fn relative_paths_never_match_and_symlinked_parents_do() {
    let case0 = Case::new("unixrel-paths", &base_profile(""));
    let d = sockets_dir(&case0);
    let real = d.join("real");
    std::fs::create_dir(&real).expect("mkdir");
    std::os::unix::fs::symlink(&real, d.join("alias")).expect("symlink");
    let sock = stream_server(&real.join("app.sock"));
    // Listed through the symlinked directory; and the workdir's own socket, by placeholder.
    let case = Case::new("unixrel", &with_unix(&[s(&d.join("alias/app.sock")), "{workdir}/local.sock".to_owned()], false));
    let local = stream_server(&case.work().join("local.sock"));
    // Either spelling of the listed one connects.
    allowed(&case.probe(&["unix-connect", &s(&d.join("alias/app.sock"))]));
    allowed(&case.probe(&["unix-connect", &s(&sock)]));
    allowed(&case.probe(&["unix-connect", &s(&local)]));
    // A relative path to the very same socket does not (the session's cwd is the workdir).
    let out = case.probe(&["unix-connect", "local.sock"]);
    refused(&out);
    assert!(stdout(&out).contains("Operation not permitted"), "{}", stdout(&out));
    // Nor does another spelling the profile does not name (`..`, a doubled slash).
    refused(&case.probe(&["unix-connect", &format!("{}/../real/app.sock", s(&d.join("alias")))]));
    refused(&case.probe(&["unix-connect", &format!("{}//app.sock", s(&real))]));
}

#[test]
fn profile_errors_name_their_position() {
    let case = Case::new(
        "unixbad",
        &base_profile(&format!("\n[network]\nunix = [\"run/app.sock\", \"{{nowhere}}/x\", \"/{}\"]\n", "x".repeat(120))),
    );
    let out = case.ag(&["profile", "check", &s(&case.profile)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out) + &stdout(&out);
    let file = s(&case.profile);
    assert!(err.contains(&format!("{file}:16:9: ")) && err.contains("`run/app.sock` must be an absolute path"), "{err}");
    assert!(err.contains("unknown placeholder `{nowhere}`"), "{err}");
    assert!(err.contains("is 121 bytes long: a unix socket's path holds at most 108 bytes"), "{err}");
}

#[test]
fn programs_that_reach_for_system_sockets_still_work() {
    // glibc asks nscd on user lookups, syslog(3) writes to /dev/log, and
    // neither is listed: refused, and the programs carry on.
    let profile = base_profile("").replace(
        "exec = [\"@PROBE@\", \"/usr/bin/true\"]",
        "exec = [\"@PROBE@\", \"/usr/bin/true\", \"/usr/bin/python3\", \"/usr/bin/python3.11\", \"/usr/bin/sh\", \"/usr/bin/dash\", \"/usr/bin/git\", \"/usr/lib/git-core\", \"/usr/bin/id\"]",
    )
    .replace("read = [\"/usr\", \"/lib\", \"/lib64\", \"/etc/ld.so.cache\", \"{workdir}\"]", "read = [\"/usr\", \"/lib\", \"/lib64\", \"/etc\", \"/dev/urandom\", \"{workdir}\"]")
;
    let case = Case::new("unixsys", &profile);
    let ev = case.dir.path().join("events.jsonl");
    let py = "import pwd, grp, syslog; pwd.getpwuid(0); grp.getgrgid(0); syslog.syslog('agent-guard test'); print('python ok')";
    let script = format!(
        "id -un && python3 -c \"{py}\" && cd out && git init -q . && echo hi > a && git add a && \
         git -c user.name=agent -c user.email=agent@example.invalid commit -q -m first && echo git ok"
    );
    let (out, sum) = case.summary(&["--events-json", &s(&ev)], &["/bin/sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("root\n") && text.contains("python ok") && text.contains("git ok"), "{text}");
    let denied: Vec<String> =
        events(&ev).iter().filter(|r| r["type"] == "connect_denied").filter_map(|r| r["path"].as_str().map(str::to_owned)).collect();
    eprintln!("refused socket files: {denied:?}; counters {}", sum["counters"]);
    assert_eq!(sum["counters"]["connects_denied"], denied.len() as u64, "{sum}");
    // This host runs neither nscd nor a syslog daemon; the kernel refused the attempts before any lookup.
    assert!(denied.iter().any(|p| p == "/var/run/nscd/socket") && denied.iter().any(|p| p == "/dev/log"), "{denied:?}");
}

#[test]
fn observed_sessions_connect_anywhere_and_suggest_what_they_used() {
    let scratch = Case::new("unixobs-paths", &base_profile(""));
    let d = sockets_dir(&scratch);
    let used = stream_server(&d.join("used.sock"));
    let other = stream_server(&d.join("other.sock"));
    let case = Case::new("unixobs", &base_profile(""));
    let sum_path = case.dir.path().join("s.json");
    let out = case.run_with(&["--observe", "--quiet", "--summary-json", &s(&sum_path)], &[common::probe(), "unix-connect", &s(&used)]);
    allowed(&out);
    let sum: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sum_path).expect("summary")).expect("JSON");
    let id = sum["session"].as_str().expect("id").to_owned();
    let suggested = case.dir.path().join("suggested.toml");
    let out = case.ag(&["profile", "suggest", "--from-session", &id, "--name", "suggested", "--out", &s(&suggested)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&suggested).expect("suggested");
    assert!(text.contains(&format!("unix = [\n    \"{}\",  # 1 connect(s)\n]", s(&used))), "{text}");
    // Under the suggested profile the same socket connects, another does not.
    let run = |path: &Path| {
        let out = Command::new(common::agent_guard())
            .env("AGENT_GUARD_CONFIG", case.config())
            .args(["run", "--quiet", "--profile"])
            .arg(&suggested)
            .arg("--workdir")
            .arg(case.work())
            .args(["--", common::probe(), "unix-connect"])
            .arg(path)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run");
        eprintln!("{}{}", stdout(&out), stderr(&out));
        out
    };
    allowed(&run(&used));
    refused(&run(&other));
}
