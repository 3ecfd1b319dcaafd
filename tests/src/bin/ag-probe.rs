//! A probe run inside agent-guard sessions by the integration tests: each
//! subcommand tries one thing and reports what the kernel said.
//!
//! Exit status: 0 the action succeeded; 1 it was refused (EPERM/EACCES);
//! 2 it failed otherwise (the message says how); 3 bad usage.

use std::{
    ffi::CString,
    io::Write as _,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

fn report(what: &str, res: std::io::Result<String>) -> ! {
    match res {
        Ok(detail) => {
            println!("OK {what} {detail}");
            std::process::exit(0)
        }
        Err(e) => {
            // EROFS, EBUSY, EXDEV: a read-only or pinned part of the session's view.
            let refused = matches!(
                e.raw_os_error(),
                Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::EROFS) | Some(libc::EBUSY) | Some(libc::EXDEV)
            );
            println!("{} {what}: {e}", if refused { "REFUSED" } else { "FAILED" });
            std::process::exit(if refused { 1 } else { 2 })
        }
    }
}

fn errno_result(rc: i64) -> std::io::Result<String> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(format!("rc={rc}"))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "read" => report("read", std::fs::read(arg(1)).map(|b| format!("{} bytes", b.len()))),
        "list" => report("list", std::fs::read_dir(arg(1)).map(|d| format!("{} entries", d.count()))),
        "write" => report(
            "write",
            std::fs::File::create(arg(1)).and_then(|mut f| f.write_all(b"probe\n")).map(|()| String::new()),
        ),
        "exec" => {
            let path = CString::new(arg(1)).unwrap_or_default();
            let argv = [path.as_ptr(), std::ptr::null()];
            // SAFETY: execv with a NUL-terminated argv of valid C strings.
            unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
            report("exec", Err(std::io::Error::last_os_error()))
        }
        "memfd-exec" => report("memfd-exec", memfd_exec(arg(1) == "noexec-seal")),
        // `run PATH ARGS...`: execv with arguments (e.g. the dynamic loader on a program).
        "run" => {
            let argv: Vec<CString> = args[1..].iter().map(|a| CString::new(a.as_str()).unwrap_or_default()).collect();
            let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
            ptrs.push(std::ptr::null());
            // SAFETY: execv with a NUL-terminated argv of valid C strings.
            unsafe { libc::execv(argv.first().map_or(std::ptr::null(), |a| a.as_ptr()), ptrs.as_ptr()) };
            report("run", Err(std::io::Error::last_os_error()))
        }
        // `exec-env VAR=VALUE PATH`: runs PATH with only that variable (e.g. LD_PRELOAD) and reports its stderr.
        "exec-env" => {
            let out = std::process::Command::new(arg(2)).env_clear().env(arg(1).split_once('=').map_or("", |(k, _)| k), arg(1).split_once('=').map_or("", |(_, v)| v)).output();
            report("exec-env", out.and_then(|o| {
                let err = String::from_utf8_lossy(&o.stderr).into_owned();
                if err.contains("cannot be preloaded") || err.contains("failed to map segment") {
                    Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, format!("refused by the loader: {}", err.trim())))
                } else if o.status.success() {
                    Ok(format!("ran; stderr: {}", err.trim()))
                } else {
                    Err(std::io::Error::other(format!("{}: {}", o.status, err.trim())))
                }
            }).map_err(|e| if e.kind() == std::io::ErrorKind::PermissionDenied { std::io::Error::from_raw_os_error(libc::EPERM) } else { e }))
        }
        "mmap-exec" => report("mmap-exec", mmap_exec(&arg(1))),
        "dlopen" => report("dlopen", dlopen(&arg(1))),
        "chmod" => report("chmod", {
            let mode = u32::from_str_radix(&arg(2), 8).unwrap_or(0);
            std::fs::set_permissions(arg(1), std::os::unix::fs::PermissionsExt::from_mode(mode)).map(|()| format!("{mode:o}"))
        }),
        "create" => report("create", {
            let path = CString::new(arg(1)).unwrap_or_default();
            let mode = u32::from_str_radix(&arg(2), 8).unwrap_or(0);
            // SAFETY: open with a valid C string; the fd is closed at once.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL | libc::O_CLOEXEC, mode) };
            // SAFETY: closing the fd just opened (when it was).
            errno_result(i64::from(fd)).inspect(|_| unsafe { libc::close(fd); })
        }),
        "mknod" => report("mknod", {
            let path = CString::new(arg(1)).unwrap_or_default();
            let mode = u32::from_str_radix(&arg(2), 8).unwrap_or(0);
            // SAFETY: mknod of a regular file with a valid C string.
            errno_result(i64::from(unsafe { libc::mknod(path.as_ptr(), libc::S_IFREG | mode, 0) }))
        }),
        // Opens for writing without writing anything (safe on kernel settings).
        "open-write" => report("open-write", std::fs::OpenOptions::new().write(true).open(arg(1)).map(|_| "opened for writing".to_owned())),
        "rename" => report("rename", std::fs::rename(arg(1), arg(2)).map(|()| String::new())),
        "mkdir" => report("mkdir", std::fs::create_dir(arg(1)).map(|()| String::new())),
        "rmdir" => report("rmdir", std::fs::remove_dir(arg(1)).map(|()| String::new())),
        "unlink" => report("unlink", std::fs::remove_file(arg(1)).map(|()| String::new())),
        "append" => report(
            "append",
            std::fs::OpenOptions::new().append(true).open(arg(1)).and_then(|mut f| f.write_all(b"appended\n")).map(|()| String::new()),
        ),
        "symlink" => report("symlink", std::os::unix::fs::symlink(arg(1), arg(2)).map(|()| String::new())),
        "socket" => {
            let n = |i: usize| arg(i).parse::<i32>().unwrap_or(-1);
            // SAFETY: socket has no memory arguments; the fd is closed at once.
            let fd = unsafe { libc::socket(n(1), n(2), n(3)) };
            // SAFETY: closing the fd just made (when it was).
            report("socket", errno_result(i64::from(fd)).inspect(|_| unsafe { libc::close(fd); }))
        }
        "proc-pids" => report("proc-pids", std::fs::read_dir("/proc").map(|d| {
            let mut pids: Vec<u32> = d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
            pids.sort_unstable();
            format!("{} {:?}", pids.len(), pids)
        })),
        "proc-mem" => report("proc-mem", proc_mem()),
        "connect" => report("connect", connect(&arg(1))),
        "bind" => report(
            "bind",
            TcpListener::bind(("127.0.0.1", arg(1).parse::<u16>().unwrap_or(0))).map(|l| format!("{:?}", l.local_addr())),
        ),
        "udp" => report("udp", udp(&arg(1))),
        "udp-flood" => report("udp-flood", udp_flood(&arg(1), arg(2).parse().unwrap_or(1))),
        // SAFETY: io_uring_setup with a zeroed params buffer of the right size.
        "io-uring" => report("io_uring_setup", errno_result(unsafe {
            let mut params = [0u8; 120];
            libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr())
        })),
        // SAFETY: PTRACE_ATTACH on our parent; the call only asks the kernel.
        "ptrace-parent" => report("ptrace", errno_result(unsafe {
            libc::ptrace(libc::PTRACE_ATTACH, libc::getppid(), 0, 0)
        })),
        // SAFETY: unshare has no memory arguments.
        "unshare-user" => report("unshare", errno_result(unsafe { libc::unshare(libc::CLONE_NEWUSER) } as i64)),
        // SAFETY: personality with ADDR_NO_RANDOMIZE only changes this process.
        "personality" => report("personality", errno_result(unsafe { libc::personality(0x0040000) } as i64)),
        "tiocsti" => {
            let c = b'x';
            // SAFETY: ioctl TIOCSTI reads one byte from `c`.
            report("tiocsti", errno_result(unsafe { libc::ioctl(0, libc::TIOCSTI, &c) } as i64))
        }
        "int80" => {
            #[cfg(target_arch = "x86_64")]
            {
                let mut ret: i64 = 20; // i386 getpid
                // SAFETY: the i386 getpid system call through int 0x80 touches no memory.
                unsafe { std::arch::asm!("int 0x80", inout("rax") ret, options(nostack)) };
                report("int80", Ok(format!("returned {ret}")))
            }
            #[cfg(not(target_arch = "x86_64"))]
            report("int80", Err(std::io::Error::from_raw_os_error(libc::ENOSYS)))
        }
        "env" => match std::env::var_os(arg(1)) {
            Some(v) => report("env", Ok(format!("{}={}", arg(1), v.to_string_lossy()))),
            None => {
                println!("UNSET {}", arg(1));
                std::process::exit(1)
            }
        },
        "caps" => report("caps", caps()),
        "daemonize" => daemonize(&arg(1)),
        "exit" => std::process::exit(arg(1).parse().unwrap_or(3)),
        "kill-self" => {
            // SAFETY: raising a signal on ourselves.
            unsafe { libc::raise(arg(1).parse().unwrap_or(libc::SIGTERM)) };
            std::process::exit(2)
        }
        "sleep" => {
            std::thread::sleep(Duration::from_secs(arg(1).parse().unwrap_or(1)));
            report("sleep", Ok(String::new()))
        }
        "time" => {
            // `time CMD ARGS...`: runs CMD, prints its wall time in ns (benchmarks).
            let start = std::time::Instant::now();
            let status = std::process::Command::new(arg(1)).args(&args[2..]).stdout(std::process::Stdio::null()).status();
            match status {
                Ok(s) if s.success() => {
                    println!("{}", start.elapsed().as_nanos());
                    std::process::exit(0)
                }
                Ok(s) => report("time", Err(std::io::Error::other(format!("{} exited with {s}", arg(1))))),
                Err(e) => report("time", Err(e)),
            }
        }
        "pid" => report("pid", Ok(std::process::id().to_string())),
        // SAFETY: kill with signal 0 only checks permission; the target is our parent.
        "signal-parent" => report("signal-parent", errno_result(unsafe { libc::kill(libc::getppid(), 0) } as i64)),
        "abstract" => report("abstract-unix", abstract_connect(&arg(1))),
        // `unix-connect PATH`: a stream connect, then "ping" and the answer line.
        "unix-connect" => report("unix-connect", unix_connect(&arg(1))),
        // `unix-seqpacket PATH`: a seqpacket connect, then one message.
        "unix-seqpacket" => report("unix-seqpacket", unix_seqpacket(&arg(1))),
        // `unix-dgram PATH`: one datagram sent with PATH as its address (sendto).
        "unix-dgram" => report("unix-dgram", unix_dgram(&arg(1))),
        // `unix-dgram-connect PATH`: connect a datagram socket to PATH, then send.
        "unix-dgram-connect" => report("unix-dgram-connect", unix_dgram_connect(&arg(1))),
        "unix-hold" => {
            // `unix-hold PATH SECS`: connects and holds the connection idle.
            let res = std::os::unix::net::UnixStream::connect(arg(1)).map(|s| {
                println!("HOLDING");
                std::thread::sleep(Duration::from_secs(arg(2).parse().unwrap_or(5)));
                drop(s);
                String::new()
            });
            report("unix-hold", res)
        }
        "unix-request" => {
            // `unix-request PATH LINE`: sends LINE to the socket, prints the answer.
            let res = std::os::unix::net::UnixStream::connect(arg(1)).and_then(|mut s| {
                s.write_all(format!("{}\n", arg(2)).as_bytes())?;
                let mut answer = String::new();
                std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut answer)?;
                Ok(answer.trim_end().to_owned())
            });
            report("unix-request", res)
        }
        "fds" => {
            // SAFETY: F_GETFD only asks whether the descriptor is open.
            let open: Vec<String> = (0..1024).filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0).map(|fd| fd.to_string()).collect();
            report("fds", Ok(format!("open={}", open.join(","))))
        }
        // SAFETY: getuid/getgid have no preconditions.
        "uid" => report("uid", Ok(unsafe { format!("uid={} gid={}", libc::getuid(), libc::getgid()) })),
        "alloc" => {
            let mib: usize = arg(1).parse().unwrap_or(1);
            // Non-zero bytes, so that every page is really touched.
            let v = vec![1u8; mib << 20];
            report("alloc", Ok(format!("{} MiB", v.len() >> 20)))
        }
        "forks" => report("forks", forks(arg(1).parse().unwrap_or(1))),
        "writes" => {
            // `writes FILE N M`: N writes to the regular FILE, M to /dev/null and M to a pipe.
            let n = |i: usize| arg(i).parse::<usize>().unwrap_or(0);
            report("writes", writes(&arg(1), n(2), n(3)))
        }
        "workload" => {
            let n = |i: usize| arg(i).parse::<usize>().unwrap_or(0);
            report("workload", workload(&arg(1), n(2), n(3), n(4), n(5), n(6)))
        }
        _ => {
            eprintln!("usage: ag-probe read|list|write|exec|memfd-exec|connect|bind|udp|io-uring|ptrace-parent|unshare-user|personality|tiocsti|int80|env|caps|daemonize|exit|kill-self|sleep|pid ...");
            std::process::exit(3)
        }
    }
}

/// Known numbers of each counted action, in directory `dir` (which holds
/// `public.txt` and a writable `out/`): `reads` opens for reading, `writes`
/// files created, `unlinks` of them removed, `forks` children that exit at
/// once, `execs` runs of /usr/bin/true.
fn workload(dir: &str, reads: usize, writes: usize, unlinks: usize, forks: usize, execs: usize) -> std::io::Result<String> {
    let dir = std::path::Path::new(dir);
    for _ in 0..reads {
        drop(std::fs::File::open(dir.join("public.txt"))?);
    }
    for i in 0..writes {
        drop(std::fs::File::create(dir.join(format!("out/w{i}")))?);
    }
    for i in 0..unlinks {
        std::fs::remove_file(dir.join(format!("out/w{i}")))?;
    }
    let true_path = c"/usr/bin/true";
    for i in 0..forks + execs {
        // SAFETY: the child either exits at once or execs; neither touches the parent's state.
        unsafe {
            let pid = libc::fork();
            if pid < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if pid == 0 {
                if i >= forks {
                    let argv = [true_path.as_ptr(), std::ptr::null()];
                    libc::execv(true_path.as_ptr(), argv.as_ptr());
                }
                libc::_exit(0);
            }
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
        }
    }
    Ok(format!("{reads} {writes} {unlinks} {forks} {execs}"))
}

fn writes(path: &str, file_writes: usize, other: usize) -> std::io::Result<String> {
    let mut f = std::fs::File::create(path)?;
    for _ in 0..file_writes {
        f.write_all(b"x")?;
    }
    let mut null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let (mut rd, mut wr) = std::io::pipe()?;
    for _ in 0..other {
        null.write_all(b"x")?;
        wr.write_all(b"x")?;
        let mut b = [0u8; 1];
        std::io::Read::read_exact(&mut rd, &mut b)?;
    }
    Ok(format!("{file_writes} {other}"))
}

/// Forks up to `n` children that wait; reports how many were created.
fn forks(n: usize) -> std::io::Result<String> {
    for i in 0..n {
        // SAFETY: the child only pauses until the session ends.
        match unsafe { libc::fork() } {
            0 => loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            },
            pid if pid < 0 => {
                let e = std::io::Error::last_os_error();
                println!("FORKED {i}");
                return Err(e);
            }
            _ => {}
        }
    }
    Ok(format!("{n} forked"))
}

fn memfd_exec(noexec_seal: bool) -> std::io::Result<String> {
    let name = c"probe";
    let flags = if noexec_seal { 0x0008 } else { 0 }; // MFD_NOEXEC_SEAL
    // SAFETY: memfd_create with a valid C string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let exe = std::fs::read("/proc/self/exe").or_else(|_| std::fs::read(std::env::current_exe()?))?;
    // SAFETY: writing our own buffer to the memfd we created.
    let n = unsafe { libc::write(fd, exe.as_ptr().cast(), exe.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let argv = [c"ag-probe".as_ptr(), c"pid".as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: fexecve with NUL-terminated argv/envp arrays.
    unsafe { libc::fexecve(fd, argv.as_ptr(), envp.as_ptr()) };
    Err(std::io::Error::last_os_error())
}

fn mmap_exec(path: &str) -> std::io::Result<String> {
    let f = std::fs::File::open(path)?;
    use std::os::fd::AsRawFd;
    // SAFETY: a private read+exec mapping of one page of an open file; unmapped at once, never called.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_PRIVATE, f.as_raw_fd(), 0);
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        libc::munmap(p, 4096);
    }
    Ok("mapped executable".to_owned())
}

fn dlopen(path: &str) -> std::io::Result<String> {
    let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: dlopen with a valid C string; dlerror's message is copied at once.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            let msg = std::ffi::CStr::from_ptr(libc::dlerror()).to_string_lossy().into_owned();
            let errno = if msg.contains("failed to map segment") || msg.contains("not permitted") { libc::EPERM } else { libc::ENOENT };
            println!("dlerror: {msg}");
            return Err(std::io::Error::from_raw_os_error(errno));
        }
    }
    Ok("loaded".to_owned())
}

/// Writes to this process's own memory through /proc/self/mem and reads it back.
fn proc_mem() -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let target = Box::new([0u8; 8]);
    let addr = target.as_ptr() as u64;
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/proc/self/mem")?;
    f.write_all_at(b"written!", addr)?;
    // SAFETY: a volatile read of our own live buffer, changed behind the compiler's back.
    let now = unsafe { std::ptr::read_volatile(target.as_ptr().cast::<[u8; 8]>()) };
    if &now == b"written!" {
        Ok("own memory written".to_owned())
    } else {
        Err(std::io::Error::other("the write did not reach our memory"))
    }
}

fn abstract_connect(name: &str) -> std::io::Result<String> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    std::os::unix::net::UnixStream::connect_addr(&addr).map(|_| format!("connected to @{name}"))
}

fn unix_connect(path: &str) -> std::io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"ping\n")?;
    let mut answer = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut answer)?;
    Ok(format!("connected to {path}, answer {}", answer.trim_end()))
}

fn unix_seqpacket(path: &str) -> std::io::Result<String> {
    let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: plain socket calls on a sockaddr_un built here.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut sun: libc::sockaddr_un = std::mem::zeroed();
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, b) in sun.sun_path.iter_mut().zip(c.as_bytes()) {
            *d = *b as libc::c_char;
        }
        let len = (2 + c.as_bytes().len()) as libc::socklen_t;
        let rc = libc::connect(fd, (&sun as *const libc::sockaddr_un).cast(), len);
        let res = if rc < 0 || libc::send(fd, b"ping".as_ptr().cast(), 4, 0) != 4 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(format!("connected to {path}"))
        };
        libc::close(fd);
        res
    }
}

fn unix_dgram(path: &str) -> std::io::Result<String> {
    let s = std::os::unix::net::UnixDatagram::unbound()?;
    s.send_to(b"ping", path).map(|n| format!("{n} bytes sent to {path}"))
}

fn unix_dgram_connect(path: &str) -> std::io::Result<String> {
    let s = std::os::unix::net::UnixDatagram::unbound()?;
    s.connect(path)?;
    s.send(b"ping").map(|n| format!("{n} bytes sent to {path}"))
}

fn connect(addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.write_all(b"ping\n")?;
    Ok(format!("connected to {addr}"))
}

fn udp(addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let local: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let s = UdpSocket::bind(local)?;
    s.send_to(b"ping", addr).map(|n| format!("{n} bytes sent"))
}

/// Sends `n` datagrams to `addr` as fast as it can; each is one connect
/// attempt for the monitor.
fn udp_flood(addr: &str, n: usize) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let s = UdpSocket::bind("127.0.0.1:0")?;
    for _ in 0..n {
        s.send_to(b"x", addr)?;
    }
    Ok(format!("{n} sent"))
}

fn caps() -> std::io::Result<String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    let header = Header { version: 0x2008_0522, pid: 0 };
    let mut data = [[0u32; 3]; 2];
    // SAFETY: capget fills two capability data structs.
    if unsafe { libc::syscall(libc::SYS_capget, &header, data.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut bounding = 0u64;
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_READ only reads.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } == 1 {
            bounding |= 1 << cap;
        }
    }
    // SAFETY: PR_CAP_AMBIENT_IS_SET for CAP_CHOWN (0): nonzero means some ambient set.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    let join = |i: usize| u64::from(data[0][i]) | u64::from(data[1][i]) << 32;
    Ok(format!("eff={:x} prm={:x} inh={:x} bnd={bounding:x} nnp={nnp}", join(0), join(1), join(2)))
}

/// Double-forks a `setsid` grandchild that writes its pid to `pidfile` and
/// sleeps; the probe itself exits at once.
fn daemonize(pidfile: &str) -> ! {
    // SAFETY: fork in a single-threaded program; the children only make system calls and sleep.
    unsafe {
        if libc::fork() == 0 {
            libc::setsid();
            if libc::fork() == 0 {
                let pid = std::process::id().to_string();
                let _ = std::fs::write(pidfile, pid);
                loop {
                    libc::pause();
                }
            }
            libc::_exit(0);
        }
        let mut st = 0;
        libc::wait(&mut st);
    }
    // Wait until the grandchild recorded itself.
    for _ in 0..500 {
        if std::fs::metadata(pidfile).is_ok_and(|m| m.len() > 0) {
            report("daemonize", Ok(String::new()))
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    report("daemonize", Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT)))
}
