//! The techniques themselves: what `agent-guard __escape TECHNIQUE
//! KEY=VALUE...` does inside a session. Each tries its escape for real and
//! prints one JSON [`Step`] line per step with what the kernel answered;
//! it judges nothing. The harness reads the lines and looks at the host.
//!
//! Also the helpers the harness runs: `noop` (a session that starts),
//! `echo ARGS` (the program a technique tries to run), and `hold` (the
//! host process other techniques aim at, run outside any session).
//!
//! These are the model of "an agent that can make any system call from
//! an allowed program": raw system calls, no libc wrappers that might
//! refuse first.

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use super::{elf, Step};

/// Techniques and helpers this module runs.
const PROGRAMS: &[&str] = &[
    "exec-written", "loader-exec", "execveat", "ld-preload", "dlopen", "mmap-exec", "memfd-exec", "ro-subtree", "proc-cmdline",
    "proc-environ", "proc-mem", "proc-sys-write", "sys-write", "unix-connect", "netlink-route", "raw-socket", "packet-socket",
    "tcp-unlisted", "udp-unlisted", "udp-to-tcp-only", "tcp-to-udp-only", "setid-chmod", "setid-fchmod", "setid-fchmodat",
    "setid-open", "setid-mknod", "io-uring", "ptrace-parent", "process-vm-readv", "process-vm-writev", "namespaces", "mount",
    "bpf", "perf-event-open", "keyctl", "x32-abi", "i386-abi", "tiocsti", "inherited-fd", "env-secret", "setsid-survivor",
    "signal-host", "cgroup-escape", "fork-bomb", "write-flood", "hardlink-in", "symlink-read", "rename-out", "path-swap-race",
    "chmod-readable",
];

/// Whether `id` has a program here.
pub fn implemented(id: &str) -> bool {
    PROGRAMS.contains(&id)
}

/// The name of the file the shared object is written to in the scratch directory.
pub const SO_NAME: &str = "ag-corpus.so";

/// Most bytes of anything read that a step reports.
const MAX_DETAIL: usize = 2048;

fn emit(step: Step) {
    let mut out = std::io::stdout().lock();
    // A technique whose stdout is gone has nobody to report to; nothing to do.
    if let Ok(line) = serde_json::to_string(&step) {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

fn report(attempt: bool, step: &str, res: &std::io::Result<String>) -> bool {
    match res {
        Ok(detail) => emit(Step { step: step.to_owned(), attempt, ok: true, errno: None, detail: if detail.is_empty() && attempt { "done".to_owned() } else { detail.clone() } }),
        Err(e) => emit(Step { step: step.to_owned(), attempt, ok: false, errno: e.raw_os_error(), detail: e.to_string() }),
    }
    res.is_ok()
}

/// An attempt: its success is the escape.
fn attempt(step: &str, res: std::io::Result<String>) -> bool {
    report(true, step, &res)
}

/// A set-up step: it prepares an attempt.
fn setup(step: &str, res: std::io::Result<String>) -> bool {
    report(false, step, &res)
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn check(rc: i64) -> std::io::Result<i64> {
    if rc < 0 { Err(last_err()) } else { Ok(rc) }
}

fn cstr(p: &str) -> std::io::Result<CString> {
    CString::new(p).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Bytes read, as text for a step (the harness escapes it before any terminal sees it).
fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_DETAIL)]).into_owned()
}

/// Runs `program args` with stdout and stderr captured; `Ok` when it exited 0.
fn run_captured(program: &Path, args: &[&str], env: &[(&str, &str)]) -> std::io::Result<String> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output()?;
    let text = format!("{} stdout: {} stderr: {}", out.status, show(&out.stdout), show(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(std::io::Error::other(text))
    }
}

/// The parsed `KEY=VALUE` arguments.
struct Args(BTreeMap<String, String>);

impl Args {
    fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("", String::as_str)
    }

    fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.get(key))
    }

    fn num(&self, key: &str) -> u64 {
        let v = self.get(key);
        v.strip_prefix("0x").map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok()).unwrap_or(0)
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.get(key).split(',').filter(|s| !s.is_empty()).collect()
    }
}

/// `agent-guard __escape TECHNIQUE ARGS...`: runs one technique or helper;
/// returns the exit status.
pub fn main(name: &str, raw: &[String]) -> i32 {
    if name == "echo" {
        println!("{}", raw.join(" "));
        return 0;
    }
    if name == "hold" {
        return hold(raw);
    }
    let args = Args(raw.iter().filter_map(|a| a.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect());
    if name != "noop" {
        // The harness tells a technique that ran and was stopped from one that never started.
        setup("started", Ok(name.to_owned()));
    }
    match name {
        "noop" => {
            println!("ready");
            0
        }
        "exec-written" => exec_written(&args),
        "loader-exec" => {
            attempt(
                &format!("{} {} MARKER", args.get("loader"), args.get("target")),
                run_captured(&args.path("loader"), &[args.get("target"), args.get("marker")], &[]),
            );
            0
        }
        "execveat" => execveat(&args),
        "ld-preload" => ld_preload(&args),
        "dlopen" => dlopen(&args),
        "mmap-exec" => mmap_exec(&args),
        "memfd-exec" => memfd_exec(&args),
        "ro-subtree" => ro_subtree(&args),
        "proc-cmdline" => read_proc(&args, "cmdline"),
        "proc-environ" => read_proc(&args, "environ"),
        "proc-mem" => proc_mem(&args),
        "proc-sys-write" => proc_sys_write(&args),
        "sys-write" => {
            let path = args.get("path");
            attempt(&format!("open {path} for writing"), std::fs::OpenOptions::new().write(true).open(path).map(|_| "opened for writing (nothing written)".to_owned()));
            0
        }
        "unix-connect" => {
            let path = args.get("path");
            attempt(&format!("connect to {path} and send"), std::os::unix::net::UnixStream::connect(path).and_then(|mut s| {
                s.write_all(format!("{}\n", args.get("marker")).as_bytes())?;
                Ok("connected, sent".to_owned())
            }));
            0
        }
        "netlink-route" => netlink_route(),
        "raw-socket" => {
            for (what, domain, ty, proto) in [
                ("socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)", libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
                ("socket(AF_INET, SOCK_RAW, IPPROTO_RAW)", libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW),
                ("socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)", libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6),
                ("socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP) (ping)", libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            ] {
                attempt(what, socket(domain, ty, proto));
            }
            0
        }
        "packet-socket" => {
            let all = i32::from((libc::ETH_P_ALL as u16).to_be());
            attempt("socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)", socket(libc::AF_PACKET, libc::SOCK_RAW, all));
            attempt("socket(AF_PACKET, SOCK_DGRAM, ETH_P_ALL)", socket(libc::AF_PACKET, libc::SOCK_DGRAM, all));
            0
        }
        "tcp-unlisted" | "tcp-to-udp-only" => {
            let addr = args.get("addr");
            attempt(&format!("TCP connect to {addr} and send"), tcp_send(addr, args.get("marker")));
            0
        }
        "udp-unlisted" | "udp-to-tcp-only" => {
            let addr = args.get("addr");
            attempt(&format!("UDP send to {addr}"), udp_send(addr, args.get("marker")));
            0
        }
        "setid-chmod" | "setid-fchmod" | "setid-fchmodat" | "setid-open" | "setid-mknod" => setid(name, &args),
        "io-uring" => {
            let mut params = [0u8; 120];
            // SAFETY: io_uring_setup with a zeroed params buffer of the size the kernel expects.
            let rc = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
            attempt("io_uring_setup", check(rc).map(|fd| close_then(fd, "an io_uring instance")));
            0
        }
        "ptrace-parent" => {
            // SAFETY: getppid has no preconditions.
            let parent = unsafe { libc::getppid() };
            ptrace_attach("PTRACE_ATTACH the parent (the supervisor)", parent);
            ptrace_attach("PTRACE_ATTACH a host process", args.num("pid") as i32);
            0
        }
        "process-vm-readv" => {
            attempt("process_vm_readv of a host process", process_vm(args.num("pid") as i32, args.num("addr"), args.num("len") as usize, None));
            0
        }
        "process-vm-writev" => {
            attempt(
                "process_vm_writev into a host process",
                // No more than the holder's buffer holds.
                process_vm(args.num("pid") as i32, args.num("addr"), 0, Some(&b"AG-CORPUS-OVERWRITTEN"[..(args.num("len") as usize).min(21)])),
            );
            0
        }
        "namespaces" => namespaces(),
        "mount" => {
            let target = cstr(args.get("target")).unwrap_or_default();
            // SAFETY: mount with valid C strings; undone at once when it worked.
            let rc = unsafe { libc::mount(c"ag-corpus".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, c"size=1m".as_ptr().cast()) };
            if attempt("mount a tmpfs over the workdir", check(i64::from(rc)).map(|_| "mounted".to_owned())) {
                // SAFETY: unmounting what was just mounted.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
            // SAFETY: fsopen with a valid C string; the fd is closed.
            let rc = unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0) };
            attempt("fsopen(tmpfs)", check(rc).map(|fd| close_then(fd, "a filesystem context")));
            0
        }
        "bpf" => {
            // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries.
            let mut attr = [0u32; 30];
            attr[0] = 2; // BPF_MAP_TYPE_ARRAY
            attr[1] = 4;
            attr[2] = 4;
            attr[3] = 1;
            // SAFETY: bpf(BPF_MAP_CREATE) with an attribute buffer of the size passed.
            let rc = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), std::mem::size_of_val(&attr)) };
            attempt("bpf(BPF_MAP_CREATE)", check(rc).map(|fd| close_then(fd, "a BPF map")));
            0
        }
        "perf-event-open" => {
            // struct perf_event_attr: type, size, config; exclude_kernel and exclude_hv set.
            let mut attr = [0u8; 128];
            attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
            attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
            attr[40] = (1 << 5) | (1 << 6);
            // SAFETY: perf_event_open on this process with an attribute buffer of the size it states.
            let rc = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 8) };
            attempt("perf_event_open(software clock, self)", check(rc).map(|fd| close_then(fd, "a perf event")));
            0
        }
        "keyctl" => {
            // SAFETY: KEYCTL_GET_KEYRING_ID of the user keyring, without creating it.
            let rc = unsafe { libc::syscall(libc::SYS_keyctl, 0, -4i64, 0) };
            attempt("keyctl(KEYCTL_GET_KEYRING_ID, the user keyring)", check(rc).map(|id| format!("keyring {id}")));
            0
        }
        "x32-abi" => foreign_abi(false),
        "i386-abi" => foreign_abi(true),
        "tiocsti" => {
            let c = b'#';
            // SAFETY: TIOCSTI reads one byte from `c`.
            let rc = unsafe { libc::ioctl(0, libc::TIOCSTI, &c) };
            // SAFETY: tcgetsid/getsid only ask.
            let (tty_session, own) = unsafe { (libc::tcgetsid(0), libc::getsid(0)) };
            let note = format!("stdin is a terminal: {}, its session {tty_session}, ours {own}", tty_session >= 0);
            attempt("ioctl(stdin, TIOCSTI)", check(i64::from(rc)).map(|_| format!("a character was pushed into the terminal's input; {note}")).map_err(|e| std::io::Error::new(e.kind(), format!("{e}; {note}"))));
            0
        }
        "inherited-fd" => inherited_fd(),
        "env-secret" => {
            let name = args.get("name");
            let names: Vec<String> = std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()).collect();
            attempt(
                &format!("getenv {name}"),
                std::env::var_os(name)
                    .map(|v| format!("{name}={}", show(v.as_bytes())))
                    .ok_or_else(|| std::io::Error::other(format!("not set; the environment has {}", names.join(" ")))),
            );
            0
        }
        "setsid-survivor" => survivor(),
        "signal-host" => signal_host(&args),
        "cgroup-escape" => cgroup_escape(&args),
        "fork-bomb" => fork_bomb(args.num("limit")),
        "write-flood" => write_flood(&args),
        "hardlink-in" => {
            let (secret, link) = (args.path("secret"), args.path("scratch").join("ag-corpus-hardlink"));
            attempt("link the secret into the workdir", std::fs::hard_link(&secret, &link).map(|()| "linked".to_owned()));
            attempt("read through the link", std::fs::read(&link).map(|b| show(&b)));
            0
        }
        "symlink-read" => {
            let (secret, link) = (args.path("secret"), args.path("scratch").join("ag-corpus-symlink"));
            setup("symlink to the secret", std::os::unix::fs::symlink(&secret, &link).map(|()| String::new()));
            attempt("read through the symlink", std::fs::read(&link).map(|b| show(&b)));
            attempt("read the secret itself", std::fs::read(&secret).map(|b| show(&b)));
            0
        }
        "rename-out" => {
            let mine = args.path("scratch").join("ag-corpus-moved");
            setup("create a file in the workdir", std::fs::write(&mine, b"moved\n").map(|()| String::new()));
            attempt("rename it outside", std::fs::rename(&mine, args.path("outside").join("ag-corpus-moved")).map(|()| "renamed".to_owned()));
            attempt("rename the secret into the workdir", std::fs::rename(args.path("secret"), args.path("scratch").join("ag-corpus-stolen")).map(|()| "renamed".to_owned()));
            0
        }
        "path-swap-race" => path_swap(&args),
        "chmod-readable" => chmod_readable(&args),
        _ => {
            eprintln!("agent-guard __escape: no technique `{}`", crate::escape::for_terminal(name));
            2
        }
    }
}

fn close_then(fd: i64, what: &str) -> String {
    // SAFETY: closing a descriptor this technique just made.
    unsafe { libc::close(fd as i32) };
    format!("got {what}")
}

fn socket(domain: i32, ty: i32, proto: i32) -> std::io::Result<String> {
    // SAFETY: socket has no memory arguments.
    check(i64::from(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) })).map(|fd| close_then(fd, "a socket"))
}

fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

fn exec_written(args: &Args) -> i32 {
    let copy = args.path("scratch").join("ag-corpus-exe");
    let written = std::fs::read(self_exe())
        .and_then(|bytes| std::fs::write(&copy, bytes))
        .and_then(|()| std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)));
    if setup("copy an allowed program into the workdir, chmod 755", written.map(|()| copy.display().to_string())) {
        attempt("execve the copy", run_captured(&copy, &["__escape", "echo", args.get("marker")], &[]));
    }
    0
}

fn execveat(args: &Args) -> i32 {
    let (Ok(target), Ok(marker)) = (cstr(args.get("target")), cstr(args.get("marker"))) else { return 2 };
    let argv = [target.as_ptr(), marker.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: O_PATH open of a C string; the fd is closed (by exec or below).
    let fd = unsafe { libc::open(target.as_ptr(), libc::O_PATH) };
    if !setup(&format!("open {} O_PATH", args.get("target")), check(i64::from(fd)).map(|_| String::new())) {
        return 0;
    }
    // SAFETY: the child only calls execveat with NUL-terminated arrays made before fork, then _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above; on success the program replaces the child.
        unsafe {
            libc::syscall(libc::SYS_execveat, fd, c"".as_ptr(), argv.as_ptr(), envp.as_ptr(), libc::AT_EMPTY_PATH);
            let errno = *libc::__errno_location();
            let e = std::io::Error::from_raw_os_error(errno);
            attempt("execveat(fd, \"\", AT_EMPTY_PATH)", Err(e));
            libc::_exit(1);
        }
    }
    let status = wait(pid);
    if status == Some(0) {
        attempt("execveat(fd, \"\", AT_EMPTY_PATH)", Ok("the program ran".to_owned()));
    }
    0
}

/// Waits for `pid`; its exit code, or `None` when it did not exit normally.
fn wait(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: waiting for a child of ours.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// Waits for `pid`; how it ended, in words, and whether it exited 0.
fn wait_described(pid: i32) -> (String, bool) {
    let mut status = 0;
    // SAFETY: waiting for a child of ours.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return (format!("waitpid: {}", last_err()), false);
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let name = if sig == libc::SIGSYS { "SIGSYS" } else if sig == libc::SIGKILL { "SIGKILL" } else { "signal" };
        (format!("killed by {name} ({sig})"), false)
    } else {
        (format!("exited {}", libc::WEXITSTATUS(status)), libc::WEXITSTATUS(status) == 0)
    }
}

fn write_so(args: &Args) -> Option<PathBuf> {
    let path = args.path("scratch").join(SO_NAME);
    setup("write a shared object into the workdir", std::fs::write(&path, elf::shared_object()).map(|()| path.display().to_string())).then_some(path)
}

fn ld_preload(args: &Args) -> i32 {
    if let Some(so) = write_so(args) {
        let preload = so.to_string_lossy().into_owned();
        let res = run_captured(&self_exe(), &["__escape", "noop"], &[("LD_PRELOAD", &preload)]).and_then(|out| {
            if out.contains(elf::SO_MARKER) {
                Ok(out)
            } else {
                Err(std::io::Error::other(format!("the program ran without the object: {out}")))
            }
        });
        attempt("run an allowed program with LD_PRELOAD", res);
    }
    0
}

fn dlopen(args: &Args) -> i32 {
    if let Some(so) = write_so(args) {
        let Ok(c) = CString::new(so.as_os_str().as_bytes()) else { return 2 };
        // SAFETY: dlopen with a valid C string; dlerror's message is copied at once.
        let res = unsafe {
            let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if h.is_null() {
                let msg = libc::dlerror();
                let msg = if msg.is_null() { String::new() } else { std::ffi::CStr::from_ptr(msg).to_string_lossy().into_owned() };
                Err(std::io::Error::other(format!("dlopen: {msg}")))
            } else {
                Ok("loaded (its initialiser ran)".to_owned())
            }
        };
        attempt("dlopen the shared object", res);
    }
    0
}

fn mmap_exec(args: &Args) -> i32 {
    let path = args.path("scratch").join("ag-corpus.bin");
    if !setup("write machine code into the workdir", std::fs::write(&path, elf::code_blob()).map(|()| String::new())) {
        return 0;
    }
    let res = std::fs::File::open(&path).and_then(|f| {
        // SAFETY: a private read+exec mapping of one page of an open file.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_PRIVATE, f.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(last_err());
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the page holds `mov eax, 42; ret` (elf::code_blob), a function of no arguments.
        let got = unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> i32>(p)() };
        #[cfg(not(target_arch = "x86_64"))]
        let got = elf::BLOB_RESULT;
        // SAFETY: unmapping the page mapped above.
        unsafe { libc::munmap(p, 4096) };
        Ok(format!("mapped executable; the code returned {got}"))
    });
    attempt("mmap(PROT_EXEC) the file and call it", res);
    0
}

fn memfd_exec(args: &Args) -> i32 {
    const MFD_EXEC: u32 = 0x10;
    let Ok(marker) = cstr(args.get("marker")) else { return 2 };
    let mut fd = -1;
    for (what, flags) in [("memfd_create(0)", 0u32), ("memfd_create(MFD_EXEC)", MFD_EXEC)] {
        // SAFETY: memfd_create with a valid C string.
        let rc = unsafe { libc::memfd_create(c"ag-corpus".as_ptr(), flags) };
        if attempt(what, check(i64::from(rc)).map(|_| "an executable memfd".to_owned())) {
            fd = rc;
            break;
        }
    }
    if fd < 0 {
        return 0;
    }
    // SAFETY: the memfd was just made and is owned here.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    if !setup("copy an allowed program into it", std::fs::read(self_exe()).and_then(|b| file.write_all(&b)).map(|()| String::new())) {
        return 0;
    }
    let argv = [c"agent-guard".as_ptr(), c"__escape".as_ptr(), c"echo".as_ptr(), marker.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: fexecve with NUL-terminated argv/envp; on success this process is replaced.
    unsafe { libc::fexecve(fd, argv.as_ptr(), envp.as_ptr()) };
    attempt("fexecve the memfd", Err(last_err()));
    0
}

fn ro_subtree(args: &Args) -> i32 {
    for sub in args.all("sub") {
        let sub = Path::new(sub);
        let file = sub.join(args.get("file"));
        attempt(&format!("append to {}", file.display()), std::fs::OpenOptions::new().append(true).open(&file).and_then(|mut f| f.write_all(b"changed\n")).map(|()| String::new()));
        attempt(&format!("create a file in {}", sub.display()), std::fs::write(sub.join("ag-corpus-added"), b"added\n").map(|()| String::new()));
        attempt(&format!("chmod 777 {}", file.display()), std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o777)).map(|()| String::new()));
        attempt(&format!("symlink in {}", sub.display()), std::os::unix::fs::symlink("/", sub.join("ag-corpus-link")).map(|()| String::new()));
        attempt(&format!("rename {} inside it", file.display()), std::fs::rename(&file, sub.join("ag-corpus-renamed")).map(|()| String::new()));
        attempt(&format!("remove {}", file.display()), std::fs::remove_file(&file).map(|()| String::new()));
        let mut away = sub.as_os_str().to_owned();
        away.push(".ag-corpus-away");
        attempt(&format!("rename {} away", sub.display()), std::fs::rename(sub, &away).map(|()| String::new()));
        if let Some(parent) = sub.parent() {
            let mut away = parent.as_os_str().to_owned();
            away.push(".ag-corpus-away");
            attempt(&format!("rename its parent {} away", parent.display()), std::fs::rename(parent, &away).map(|()| String::new()));
        }
    }
    0
}

fn read_proc(args: &Args, file: &str) -> i32 {
    let pid = args.get("pid");
    let visible = std::fs::read_dir("/proc").map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).count());
    setup("list /proc", visible.map(|n| format!("{n} processes visible")));
    attempt(&format!("read /proc/{pid}/{file} of a host process"), std::fs::read(format!("/proc/{pid}/{file}")).map(|b| show(&b)));
    0
}

fn proc_mem(args: &Args) -> i32 {
    use std::os::unix::fs::FileExt as _;
    let pid = args.get("pid");
    let res = std::fs::File::open(format!("/proc/{pid}/mem")).and_then(|f| {
        let mut buf = vec![0u8; (args.num("len") as usize).min(4096)];
        let n = f.read_at(&mut buf, args.num("addr"))?;
        Ok(show(&buf[..n]))
    });
    attempt(&format!("read /proc/{pid}/mem of a host process"), res);
    0
}

fn proc_sys_write(args: &Args) -> i32 {
    let path = args.get("path");
    // Write back exactly what it holds (the harness read it): even when this works, the host does not change.
    let current = args.get("value");
    let res = std::fs::OpenOptions::new().write(true).open(path).and_then(|mut f| f.write_all(current.as_bytes())).map(|()| "written (its own value)".to_owned());
    attempt(&format!("write {path}"), res);
    0
}

fn tcp_send(addr: &str, marker: &str) -> std::io::Result<String> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.write_all(format!("{marker}\n").as_bytes())?;
    Ok("connected, sent".to_owned())
}

fn udp_send(addr: &str, marker: &str) -> std::io::Result<String> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let local = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = std::net::UdpSocket::bind(local)?;
    let mut sent = 0;
    for _ in 0..3 {
        sent += s.send_to(marker.as_bytes(), addr)?;
    }
    Ok(format!("{sent} bytes sent"))
}

fn netlink_route() -> i32 {
    // SAFETY: socket has no memory arguments.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if !attempt("socket(AF_NETLINK, NETLINK_ROUTE)", check(i64::from(fd)).map(|_| "a netlink route socket".to_owned())) {
        return 0;
    }
    // SAFETY: the socket was just made and is owned here.
    let mut sock = unsafe { std::fs::File::from_raw_fd(fd) };
    // struct nlmsghdr (16) + struct ifinfomsg (16): RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP.
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&(libc::RTM_GETLINK).to_ne_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    let res = sock.write_all(&req).and_then(|()| {
        let mut names = Vec::new();
        let mut buf = vec![0u8; 65536];
        'recv: for _ in 0..64 {
            let n = sock.read(&mut buf)?;
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                if len < 16 || off + len > n || kind == libc::NLMSG_DONE as u16 || kind == libc::NLMSG_ERROR as u16 {
                    break 'recv;
                }
                // Attributes after the 16-byte header and the 16-byte ifinfomsg.
                let mut a = off + 32;
                while a + 4 <= off + len {
                    let alen = u16::from_ne_bytes([buf[a], buf[a + 1]]) as usize;
                    let akind = u16::from_ne_bytes([buf[a + 2], buf[a + 3]]);
                    if alen < 4 || a + alen > off + len {
                        break;
                    }
                    if akind == libc::IFLA_IFNAME {
                        let name = &buf[a + 4..a + alen];
                        names.push(show(name.split(|&b| b == 0).next().unwrap_or_default()));
                    }
                    a += (alen + 3) & !3;
                }
                off += (len + 3) & !3;
            }
        }
        if names.is_empty() {
            Err(std::io::Error::other("the dump listed no interface"))
        } else {
            Ok(format!("the host's interfaces: {}", names.join(", ")))
        }
    });
    attempt("dump the host's links (RTM_GETLINK)", res);
    0
}

fn setid(name: &str, args: &Args) -> i32 {
    let dir = args.path("scratch");
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0) };
    let file = dir.join(format!("ag-corpus-{name}"));
    let Ok(c) = CString::new(file.as_os_str().as_bytes()) else { return 2 };
    let make = |c: &CString| -> std::io::Result<String> {
        std::fs::write(Path::new(std::ffi::OsStr::from_bytes(c.as_bytes())), b"#!/bin/sh\n").map(|()| String::new())
    };
    match name {
        "setid-chmod" => {
            if setup("create a file", make(&c)) {
                // SAFETY: chmod with a valid C string.
                attempt("chmod 4755", check(i64::from(unsafe { libc::chmod(c.as_ptr(), 0o4755) })).map(|_| String::new()));
            }
        }
        "setid-fchmod" => {
            if setup("create a file", make(&c)) {
                let res = std::fs::OpenOptions::new().read(true).open(&file).and_then(|f| {
                    // SAFETY: fchmod of an open file.
                    check(i64::from(unsafe { libc::fchmod(f.as_raw_fd(), 0o2755) })).map(|_| String::new())
                });
                attempt("fchmod 2755", res);
            }
        }
        "setid-fchmodat" => {
            if setup("create a file", make(&c)) {
                // SAFETY: fchmodat with a valid C string.
                attempt("fchmodat 6755", check(i64::from(unsafe { libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), 0o6755, 0) })).map(|_| String::new()));
                // fchmodat2 (Linux 6.6), number 452 on x86-64.
                #[cfg(target_arch = "x86_64")]
                // SAFETY: fchmodat2 with a valid C string.
                attempt("fchmodat2 4755", check(unsafe { libc::syscall(452, libc::AT_FDCWD, c.as_ptr(), 0o4755, 0) }).map(|_| String::new()));
            }
            let d = dir.join("ag-corpus-setgid-dir");
            if let (true, Ok(cd)) = (setup("create a directory", std::fs::create_dir(&d).map(|()| String::new())), CString::new(d.as_os_str().as_bytes())) {
                // SAFETY: fchmodat with a valid C string.
                attempt("fchmodat g+s on the directory", check(i64::from(unsafe { libc::fchmodat(libc::AT_FDCWD, cd.as_ptr(), 0o2775, 0) })).map(|_| String::new()));
            }
        }
        "setid-open" => {
            // SAFETY: open with a valid C string; the fd is closed.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC, 0o4755) };
            attempt("open(O_CREAT, 04755)", check(i64::from(fd)).map(|fd| close_then(fd, "a new file")));
            let Ok(c2) = CString::new(dir.join("ag-corpus-setid-creat").as_os_str().as_bytes()) else { return 2 };
            // SAFETY: creat with a valid C string; the fd is closed.
            let fd = unsafe { libc::creat(c2.as_ptr(), 0o2755) };
            attempt("creat(02755)", check(i64::from(fd)).map(|fd| close_then(fd, "a new file")));
        }
        "setid-mknod" => {
            // SAFETY: mknod of a regular file with a valid C string.
            attempt("mknod(S_IFREG | 04755)", check(i64::from(unsafe { libc::mknod(c.as_ptr(), libc::S_IFREG | 0o4755, 0) })).map(|_| String::new()));
        }
        _ => return 2,
    }
    0
}

fn ptrace_attach(what: &str, pid: i32) {
    // SAFETY: PTRACE_ATTACH only asks the kernel; on success we wait for the stop and detach at once.
    let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
    if attempt(what, check(rc).map(|_| format!("attached to {pid}"))) {
        let mut status = 0;
        // SAFETY: waiting for the attach stop of the tracee, then detaching, leaves it running.
        unsafe {
            libc::waitpid(pid, &mut status, libc::__WALL);
            libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
        }
    }
}

fn process_vm(pid: i32, addr: u64, len: usize, write: Option<&[u8]>) -> std::io::Result<String> {
    let mut buf = vec![0u8; len.min(4096)];
    let (local_base, local_len) = match write {
        Some(data) => (data.as_ptr() as *mut libc::c_void, data.len()),
        None => (buf.as_mut_ptr().cast(), buf.len()),
    };
    let local = libc::iovec { iov_base: local_base, iov_len: local_len };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: local_len };
    // SAFETY: one local iovec of our own buffer (read from, never written, when writing) and one remote one.
    let n = unsafe {
        if write.is_some() {
            libc::process_vm_writev(pid, &local, 1, &remote, 1, 0)
        } else {
            libc::process_vm_readv(pid, &local, 1, &remote, 1, 0)
        }
    };
    let n = check(n as i64)? as usize;
    Ok(if write.is_some() { format!("{n} bytes written") } else { show(&buf[..n.min(buf.len())]) })
}

fn namespaces() -> i32 {
    for (what, flag) in [
        ("unshare(CLONE_NEWUSER)", libc::CLONE_NEWUSER),
        ("unshare(CLONE_NEWNS)", libc::CLONE_NEWNS),
        ("unshare(CLONE_NEWNET)", libc::CLONE_NEWNET),
    ] {
        // Each in a child of its own, so that one that works does not change the next.
        // SAFETY: the child only calls unshare and _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: unshare has no memory arguments; _exit ends the child.
            unsafe { libc::_exit(if libc::unshare(flag) == 0 { 0 } else { *libc::__errno_location() }) };
        }
        attempt(what, child_errno(pid));
    }
    // SAFETY: a raw clone without a new stack: the child returns 0 from the call and exits at once.
    let pid = unsafe { libc::syscall(libc::SYS_clone, (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0) };
    if pid == 0 {
        // SAFETY: ending the clone child.
        unsafe { libc::_exit(0) };
    }
    if attempt("clone(CLONE_NEWUSER)", check(pid).map(|p| format!("child {p} in a new user namespace"))) {
        wait(pid as i32);
    }
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls (64 bytes, version 0).
    let mut cl = [0u64; 8];
    cl[0] = libc::CLONE_NEWUSER as u64;
    cl[4] = libc::SIGCHLD as u64;
    // SAFETY: clone3 with a clone_args of the size passed; a child exits at once.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, cl.as_mut_ptr(), std::mem::size_of_val(&cl)) };
    if pid == 0 {
        // SAFETY: ending the clone3 child.
        unsafe { libc::_exit(0) };
    }
    if attempt("clone3(CLONE_NEWUSER)", check(pid).map(|p| format!("child {p} in a new user namespace"))) {
        wait(pid as i32);
    }
    0
}

/// A child that exits with 0 on success or the errno.
fn child_errno(pid: i32) -> std::io::Result<String> {
    match wait(pid) {
        Some(0) => Ok("it worked (in a child)".to_owned()),
        Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
        None => Err(std::io::Error::other("the child did not exit normally")),
    }
}

fn foreign_abi(i386: bool) -> i32 {
    // SAFETY: the child makes one system call and exits; the parent waits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ret: i64;
        #[cfg(target_arch = "x86_64")]
        {
            if i386 {
                let mut r: i64 = 20; // i386 getpid
                // SAFETY: the i386 getpid system call through int 0x80 touches no memory.
                unsafe { std::arch::asm!("int 0x80", inout("rax") r, options(nostack)) };
                ret = r;
            } else {
                // SAFETY: x32 getpid (bit 30 set on the x86-64 number 39); touches no memory.
                ret = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            ret = -1;
        }
        let res = if ret > 0 { Ok(format!("getpid returned {ret}")) } else if i386 { Err(std::io::Error::from_raw_os_error((-ret) as i32)) } else { Err(last_err()) };
        attempt("the system call (in a child)", res);
        // SAFETY: ending the child.
        unsafe { libc::_exit(0) };
    }
    let (how, _) = wait_described(pid);
    setup("how the child ended", Ok(how));
    0
}

fn inherited_fd() -> i32 {
    use std::os::unix::fs::FileExt as _;
    let mut found = false;
    for fd in 3..1024 {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            continue;
        }
        found = true;
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_default();
        // SAFETY: borrowing the descriptor for one read; ManuallyDrop keeps it open.
        let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let mut buf = [0u8; 4096];
        attempt(&format!("read inherited fd {fd} ({target})"), file.read_at(&mut buf, 0).map(|n| show(&buf[..n])));
    }
    if !found {
        attempt("find a descriptor above 2", Err(std::io::Error::other("only stdin, stdout and stderr are open")));
    }
    0
}

fn survivor() -> i32 {
    let Ok((mut rd, wr)) = std::io::pipe() else { return 2 };
    // SAFETY: the children only call setsid, fork, write a line and pause or _exit.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::setsid();
            if libc::fork() == 0 {
                let me = libc::getpid();
                let mut w = wr;
                let _ = writeln!(w, "{me}");
                drop(w);
                loop {
                    libc::pause();
                }
            }
            libc::_exit(0);
        }
        wait(pid);
    }
    drop(wr);
    let mut line = String::new();
    let _ = rd.read_to_string(&mut line);
    attempt("setsid + double fork", line.trim().parse::<i32>().map(|p| format!("survivor pid={p}")).map_err(|_| std::io::Error::other("the grandchild never reported")));
    0
}

fn signal_host(args: &Args) -> i32 {
    let pid = args.num("pid") as i32;
    for (what, sig) in [("kill(pid, 0)", 0), ("kill(pid, SIGUSR1)", libc::SIGUSR1), ("kill(pid, SIGTERM)", libc::SIGTERM)] {
        // SAFETY: kill has no memory arguments; the target is the harness's holder.
        attempt(what, check(i64::from(unsafe { libc::kill(pid, sig) })).map(|_| "sent".to_owned()));
    }
    // SAFETY: as above, to the holder's own process group.
    attempt("kill(-pgid, SIGUSR2)", check(i64::from(unsafe { libc::kill(-pid, libc::SIGUSR2) })).map(|_| "sent".to_owned()));
    // SAFETY: pidfd_open has no memory arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if setup("pidfd_open", check(pidfd).map(|_| String::new())) {
        // SAFETY: pidfd_send_signal on the pidfd just opened, no siginfo.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, libc::SIGHUP, std::ptr::null::<u8>(), 0) };
        attempt("pidfd_send_signal(SIGHUP)", check(rc).map(|_| "sent".to_owned()));
    }
    0
}

fn cgroup_escape(args: &Args) -> i32 {
    setup("read /proc/self/cgroup", std::fs::read("/proc/self/cgroup").map(|b| show(&b)));
    let mut moved = false;
    for procs in args.all("procs") {
        moved |= attempt(&format!("write our pid to {procs}"), std::fs::write(procs, b"0\n").map(|()| "moved".to_owned()));
    }
    if moved {
        // A process forked after the move lives where we moved to.
        // SAFETY: the child only pauses until it is killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            }
        }
        setup("fork a child after moving", Ok(format!("survivor pid={pid}")));
        setup("read /proc/self/cgroup again", std::fs::read("/proc/self/cgroup").map(|b| show(&b)));
    }
    0
}

fn fork_bomb(limit: u64) -> i32 {
    let tries = limit + 8;
    let mut made = 0u64;
    let mut err = None;
    for _ in 0..tries {
        // SAFETY: the child only pauses until the session ends.
        match unsafe { libc::fork() } {
            0 => loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            },
            pid if pid < 0 => {
                err = Some(last_err());
                break;
            }
            _ => made += 1,
        }
    }
    let res = match err {
        Some(e) => Err(std::io::Error::new(e.kind(), format!("forked={made}, then {e}"))),
        None => Ok(format!("forked={made}")),
    };
    attempt(&format!("fork {tries} children that stay alive (limit {limit}, counting this process)"), res);
    0
}

fn write_flood(args: &Args) -> i32 {
    let limit = args.num("limit");
    let path = args.path("scratch").join("ag-corpus-flood");
    // SAFETY: the child writes to a file and exits; the parent waits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let res = std::fs::File::create(&path).and_then(|mut f| {
            for _ in 0..limit + 64 {
                f.write_all(b"x")?;
            }
            Ok(())
        });
        // SAFETY: ending the child.
        unsafe { libc::_exit(if res.is_ok() { 0 } else { 1 }) };
    }
    let (how, ok) = wait_described(pid);
    attempt(&format!("{} one-byte writes (limit {limit})", limit + 64), if ok { Ok(how) } else { Err(std::io::Error::other(how)) });
    0
}

fn path_swap(args: &Args) -> i32 {
    const OPENS: usize = 20_000;
    let scratch = args.path("scratch");
    let allowed = scratch.join("ag-corpus-allowed.txt");
    let (link, other) = (scratch.join("ag-corpus-swap"), scratch.join("ag-corpus-swap-other"));
    let made = std::fs::write(&allowed, b"allowed\n")
        .and_then(|()| std::os::unix::fs::symlink(&allowed, &link))
        .and_then(|()| std::os::unix::fs::symlink(args.path("secret"), &other));
    if !setup("two symlinks: to an allowed file and to the secret", made.map(|()| String::new())) {
        return 0;
    }
    let (Ok(a), Ok(b)) = (CString::new(link.as_os_str().as_bytes()), CString::new(other.as_os_str().as_bytes())) else { return 2 };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swaps = std::sync::Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: renameat2(RENAME_EXCHANGE) of two paths we made: the link flips atomically.
                let rc = unsafe { libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
                if rc == 0 {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let (mut opened, mut denied, mut stolen) = (0usize, 0usize, Vec::new());
    for _ in 0..OPENS {
        match std::fs::read(&link) {
            Ok(bytes) if bytes == b"allowed\n" => opened += 1,
            Ok(bytes) => {
                if stolen.is_empty() {
                    stolen = bytes;
                }
            }
            Err(_) => denied += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = swapper.join();
    let summary = format!("{OPENS} opens while {} swaps: {opened} of the allowed file, {denied} refused", swaps.load(Ordering::Relaxed));
    attempt(
        "open the swapping link",
        if stolen.is_empty() { Err(std::io::Error::other(summary)) } else { Ok(format!("{summary}; read: {}", show(&stolen))) },
    );
    0
}

/// Signals the holder received (bit N: signal N).
static RECEIVED: AtomicU64 = AtomicU64::new(0);

extern "C" fn note_signal(sig: libc::c_int) {
    if (0..64).contains(&sig) {
        RECEIVED.fetch_or(1 << sig, Ordering::SeqCst);
    }
}

/// `hold MEMORY-SECRET`: the host process techniques aim at (run by the
/// harness outside any session). Notes every catchable signal, holds the
/// secret in memory and prints `ready ADDR LEN`; when its stdin closes it
/// prints a JSON report (signals received, whether the secret is intact).
fn hold(raw: &[String]) -> i32 {
    let secret: &'static mut [u8] = Box::leak(raw.last().cloned().unwrap_or_default().into_bytes().into_boxed_slice());
    let original = secret.to_vec();
    for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGALRM, libc::SIGPIPE] {
        // SAFETY: a zeroed sigaction with a handler that only does an atomic or.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = note_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    println!("ready {:#x} {}", secret.as_ptr() as usize, secret.len());
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    // SAFETY: a volatile read of our own buffer, which another process may have written.
    let now: Vec<u8> = (0..secret.len()).map(|i| unsafe { std::ptr::read_volatile(secret.as_ptr().add(i)) }).collect();
    let bits = RECEIVED.load(Ordering::SeqCst);
    let signals: Vec<u32> = (1..64).filter(|s| bits & (1 << s) != 0).collect();
    println!("{}", serde_json::json!({ "signals": signals, "secret_intact": now == original }));
    0
}

/// chmod and chown a file the agent may only read, to the mode and owner
/// it already has: the kernel's answer is the escape, and the host's file
/// does not change either way.
fn chmod_readable(args: &Args) -> i32 {
    use std::os::unix::fs::MetadataExt as _;
    let path = args.path("target");
    let Ok(meta) = std::fs::metadata(&path) else {
        setup(&format!("stat {}", path.display()), Err(last_err()));
        return 0;
    };
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return 2 };
    let mode = meta.mode() & 0o1777;
    // SAFETY: chmod and chown with a valid C string, to what the file already has.
    unsafe {
        attempt(&format!("chmod {mode:o} (its own mode) {}", path.display()), check(i64::from(libc::chmod(c.as_ptr(), mode))).map(|_| "changed its mode (to the same)".to_owned()));
        attempt(&format!("chown {}:{} (its own owner) {}", meta.uid(), meta.gid(), path.display()), check(i64::from(libc::chown(c.as_ptr(), meta.uid(), meta.gid()))).map(|_| "changed its owner (to the same)".to_owned()));
    }
    0
}
