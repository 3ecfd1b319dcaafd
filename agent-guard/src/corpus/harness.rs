//! The host side of `agent-guard profile test`: for each technique, a
//! throwaway working directory and whatever the technique aims at on the
//! host, a real session of the profile running it (`agent-guard run
//! --embedded`), and a verdict from what the host sees afterwards.
//!
//! The sessions run the profile as written, with two changes made to a
//! copy of it: this binary is added to `exec` (the corpus is its hidden
//! `__escape` subcommand), and the role is renamed `ROLE-profile-test` so
//! that the sessions, journaled like any other, neither feed nor trip the
//! role's behavioural baseline.
//!
//! Techniques only ever write inside their throwaway working directory;
//! network techniques only reach loopback listeners this harness runs.

use std::{
    io::{BufRead as _, Read as _},
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    os::{
        fd::AsRawFd as _,
        unix::{
            fs::{MetadataExt as _, PermissionsExt as _},
            net::UnixListener,
            process::CommandExt as _,
        },
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{Outcome, Step, Technique, TechniqueResult, TECHNIQUES};
use crate::profile::{self, Context, Destination, HostConfig, Policy};

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    #[error("reading profile {path}: {source}")]
    ReadProfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("profile {path} is not a TOML table: {source}")]
    ParseProfile {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("writing the test copy of profile {path}: {source}")]
    WriteProfile {
        path: PathBuf,
        #[source]
        source: toml::ser::Error,
    },
    #[error("preparing {path}: {source}")]
    Workspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the first session of the profile did not start (`agent-guard run` exited {status}): {stderr}")]
    NoSession { status: String, stderr: String },
    #[error("no technique `{id}` in the corpus")]
    UnknownTechnique { id: String },
}

/// What `profile test` was asked for.
pub struct Options {
    /// This agent-guard binary (canonical): it runs the sessions and the techniques.
    pub agent_guard: PathBuf,
    /// The profile file under test.
    pub profile: PathBuf,
    /// Where the throwaway directories are made (`--workdir`, else the temp dir).
    pub parent: PathBuf,
    /// `--config`, passed on to `run`.
    pub config: Option<PathBuf>,
    pub host: HostConfig,
    pub caller_uid: u32,
    /// Run only these techniques (all when empty).
    pub only: Vec<String>,
}

/// The results of a run.
#[derive(serde::Serialize)]
pub struct Report {
    pub role: String,
    pub profile: PathBuf,
    pub binary: PathBuf,
    pub results: Vec<TechniqueResult>,
}

impl Report {
    pub fn count(&self, word: &str) -> usize {
        self.results.iter().filter(|r| r.outcome.word() == word).count()
    }
}

/// Time a session may take before the harness ends it.
const SESSION_DEADLINE: Duration = Duration::from_secs(120);
/// Name of the variable the harness puts a secret in (env-secret).
pub const SECRET_VAR: &str = "AG_CORPUS_API_TOKEN";

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError + '_ {
    move |source| HarnessError::Workspace { path: path.to_owned(), source }
}

fn token() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Only uniqueness matters here, not secrecy: the time will do.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        bytes = (t ^ u64::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The most specific `read`/`write`/`exec` entry covering `path`, unless a
/// `deny` entry covers it more specifically (or as specifically).
fn covering<'p>(policy: &'p Policy, path: &Path) -> Option<(&'static str, &'p Path)> {
    let fs = &policy.filesystem;
    let mut best: Option<(&'static str, &Path)> = None;
    for (kind, list) in [("read", &fs.read), ("write", &fs.write), ("exec", &fs.exec)] {
        for entry in list.iter().filter(|e| path.starts_with(e)) {
            let deeper = best.is_none_or(|(k, b)| entry.components().count() > b.components().count() || (entry.as_path() == b && k == "read"));
            if deeper {
                best = Some((kind, entry));
            }
        }
    }
    let (_, b) = best?;
    if fs.deny.iter().any(|d| path.starts_with(d) && d.components().count() >= b.components().count()) {
        return None;
    }
    best
}

/// A path as the profile writes it: `{workdir}/...` inside the workdir.
fn shown(policy: &Policy, path: &Path) -> String {
    match path.strip_prefix(&policy.workdir) {
        Ok(rest) if rest.as_os_str().is_empty() => "{workdir}".to_owned(),
        Ok(rest) => format!("{{workdir}}/{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

fn rule_of(policy: &Policy, kind: &str, entry: &Path) -> String {
    format!("{kind}: {}", shown(policy, entry))
}

/// `exec: ENTRY` when the most specific entry covering `path` is an exec entry.
fn exec_rule(policy: &Policy, path: &Path) -> Option<String> {
    match covering(policy, path) {
        Some(("exec", e)) => Some(rule_of(policy, "exec", e)),
        _ => None,
    }
}

/// The entry that lets the agent read `path`, if any.
fn read_rule(policy: &Policy, path: &Path) -> Option<String> {
    covering(policy, path).map(|(k, e)| rule_of(policy, k, e))
}

fn write_rule(policy: &Policy, path: &Path) -> Option<String> {
    match covering(policy, path) {
        Some(("write", e)) => Some(rule_of(policy, "write", e)),
        _ => None,
    }
}

fn syscall_rule(policy: &Policy, names: &[&str]) -> Option<String> {
    policy.syscalls.allow.iter().find(|a| names.contains(&a.as_str())).map(|a| format!("syscalls: {a}"))
}

/// `[network] connect` entries as written, with the protocol suffix split
/// off (`/tcp`, `/udp`; `None` for both). Read from the profile's text, so
/// that the suffix is seen whether or not this build's schema knows it.
fn raw_destinations(text: &str) -> Vec<(String, Destination, Option<&'static str>)> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else { return Vec::new() };
    let list = table.get("network").and_then(|n| n.get("connect")).and_then(|c| c.as_array()).cloned().unwrap_or_default();
    list.iter()
        .filter_map(|v| v.as_str())
        .filter_map(|s| {
            let (base, proto) = match s.rsplit_once('/') {
                Some((b, "tcp")) => (b, Some("tcp")),
                Some((b, "udp")) => (b, Some("udp")),
                _ => (s, None),
            };
            Some((s.to_owned(), base.parse::<Destination>().ok()?, proto))
        })
        .collect()
}

/// The destination rule allowing `proto` to `addr`, if any.
fn network_rule(raw: &[(String, Destination, Option<&'static str>)], addr: SocketAddr, proto: &str) -> Option<String> {
    raw.iter()
        .find(|(_, d, p)| d.net.contains(&addr.ip()) && (d.ports.lo..=d.ports.hi).contains(&addr.port()) && p.is_none_or(|p| p == proto))
        .map(|(s, _, _)| format!("network: {s}"))
}

/// One technique's throwaway tree: `ROOT/ID/{work,host,outside}`.
struct Tree {
    work: PathBuf,
    host: PathBuf,
    outside: PathBuf,
}

impl Tree {
    fn new(root: &Path, id: &str) -> Result<Tree, HarnessError> {
        let base = root.join(id);
        let tree = Tree { work: base.join("work"), host: base.join("host"), outside: base.join("outside") };
        for (dir, mode) in [(&base, 0o755), (&tree.work, 0o755), (&tree.host, 0o755), (&tree.outside, 0o777)] {
            std::fs::create_dir(dir).map_err(io_at(dir))?;
            // Only the sandbox should stand between the agent and these: no help from permission bits.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io_at(dir))?;
        }
        Ok(tree)
    }
}

/// The host process techniques aim at: a secret in its argv, its
/// environment and its memory; it notes the signals it gets.
struct Holder {
    child: Child,
    pid: i32,
    addr: u64,
    len: usize,
}

impl Holder {
    fn spawn(bin: &Path, secrets: &Secrets) -> Result<Holder, HarnessError> {
        let mut child = Command::new(bin)
            .args(["__escape", "hold", &format!("token={}", secrets.argv), &secrets.memory])
            .env("AG_CORPUS_HOST_SECRET", &secrets.environ)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_at(bin))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.as_mut() {
            let mut r = std::io::BufReader::new(out);
            r.read_line(&mut line).map_err(io_at(bin))?;
        }
        let mut parts = line.split_whitespace().skip(1);
        let addr = parts.next().and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok()).unwrap_or(0);
        let len = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let pid = child.id() as i32;
        Ok(Holder { child, pid, addr, len })
    }

    /// What happened to it: evidence lines (empty when nothing did).
    fn finish(mut self) -> Vec<String> {
        let mut evidence = Vec::new();
        let state = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok().and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()));
        if matches!(state, Some('T' | 't')) {
            evidence.push(format!("host process {} was stopped ({})", self.pid, if state == Some('t') { "traced" } else { "signalled" }));
        }
        // SAFETY: kill of our own child; SIGCONT lets a stopped one report.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
        drop(self.child.stdin.take());
        let out = self.child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut out) = out {
                let _ = out.read_to_string(&mut text);
            }
            let _ = tx.send(text);
        });
        let text = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let _ = self.child.kill();
        let status = self.child.wait();
        match serde_json::from_str::<serde_json::Value>(text.trim()) {
            Ok(report) => {
                let signals: Vec<u64> = report["signals"].as_array().map(|a| a.iter().filter_map(|s| s.as_u64()).collect()).unwrap_or_default();
                if !signals.is_empty() {
                    evidence.push(format!("host process {} received signals {signals:?}", self.pid));
                }
                if report["secret_intact"] == false {
                    evidence.push(format!("host process {}'s memory was overwritten", self.pid));
                }
            }
            Err(_) => evidence.push(format!("host process {} did not report (it ended: {status:?})", self.pid)),
        }
        evidence
    }
}

/// The secrets of one technique's run, each unique to it.
struct Secrets {
    argv: String,
    environ: String,
    memory: String,
    env_var: String,
    file: String,
    fd: String,
    ran: String,
}

impl Secrets {
    fn new(token: &str) -> Secrets {
        let s = |what: &str| format!("AGCORPUS-{what}-{token}");
        Secrets { argv: s("ARGV"), environ: s("HOSTENV"), memory: s("MEM"), env_var: s("ENV"), file: s("FILE"), fd: s("FD"), ran: s("RAN") }
    }
}

/// What a technique's run needs from the host, and what to look at after.
#[derive(Default)]
struct Prepared {
    args: Vec<String>,
    /// Markers whose appearance in the agent's output is the escape.
    markers: Vec<String>,
    /// Whether an attempt that succeeded is itself the escape.
    attempts_count: bool,
    /// The rule that allows the effect, if the profile has one.
    rule: Option<String>,
    holder: Option<Holder>,
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    unix: Option<UnixListener>,
    /// Directories to search for set-id files afterwards.
    setid_dirs: Vec<PathBuf>,
    /// Read-only subtrees: (file planted, its content, its inode, the subtree's inode, its parent's inode).
    subtrees: Vec<(PathBuf, PathBuf, u64, u64)>,
    /// Files that must not exist afterwards.
    must_not_exist: Vec<PathBuf>,
    /// A file whose content must not change (path, content).
    unchanged: Vec<(PathBuf, Vec<u8>)>,
    /// A hard link whose inode must not equal the secret's.
    hardlink: Option<(PathBuf, u64)>,
    /// `fork-bomb`: the limit; `write-flood`: the file and the limit.
    fork_limit: Option<u64>,
    flood: Option<(PathBuf, u64)>,
    pty: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
    inherit: Option<std::fs::File>,
    env: Vec<(String, String)>,
    /// Files whose mode and owner must not change: (path, mode, uid, gid).
    modes: Vec<(PathBuf, u32, u32, u32)>,
}

/// What the techniques look at in the profile's text.
struct Subject {
    raw_net: Vec<(String, Destination, Option<&'static str>)>,
}

fn na(why: impl Into<String>) -> Outcome {
    Outcome::NotApplicable { why: why.into() }
}

/// Where a technique may write in its throwaway workdir: a `write` entry
/// inside it (created), else `None`. With `Err`, the technique does not
/// apply: the profile writes only outside the workdir, where the
/// corpus never writes.
fn scratch(policy: &Policy) -> Result<Option<PathBuf>, Outcome> {
    let inside: Vec<&PathBuf> = policy.filesystem.write.iter().filter(|w| w.starts_with(&policy.workdir) && covering(policy, w).is_some_and(|(k, _)| k == "write")).collect();
    if let Some(w) = inside.iter().min_by_key(|w| w.components().count()) {
        return Ok(Some((*w).clone()));
    }
    let outside: Vec<String> = policy.filesystem.write.iter().filter(|w| w.is_dir()).map(|w| w.display().to_string()).collect();
    if outside.is_empty() {
        Ok(None)
    } else {
        Err(na(format!("the profile writes only outside the workdir ({}), where the corpus does not write", outside.join(", "))))
    }
}

/// The scratch directory, or the workdir when the profile writes nowhere
/// (the technique then tries there and is refused).
fn scratch_or_work(policy: &Policy) -> Result<PathBuf, Outcome> {
    Ok(scratch(policy)?.unwrap_or_else(|| policy.workdir.clone()))
}

/// A readable ELF that `exec` does not list, outside the library
/// directories, that prints its arguments; else a copy of `echo` planted in
/// the workdir; else `echo` with the rule that allows it.
fn loader_target(policy: &Policy) -> Result<(PathBuf, Option<String>), HarnessError> {
    let libdirs: Vec<PathBuf> = crate::sandbox::view::LIBRARY_DIRS.iter().filter_map(|d| Path::new(d).canonicalize().ok()).collect();
    let candidates = ["/usr/bin/echo", "/bin/echo", "/usr/bin/printf", "/bin/printf", "/usr/bin/basename"];
    for c in candidates {
        let Ok(p) = Path::new(c).canonicalize() else { continue };
        if libdirs.iter().any(|l| p.starts_with(l)) {
            continue;
        }
        // Landlock checks the path as given and the view mounts as resolved: both must be readable and not executable.
        let readable = covering(policy, Path::new(c)).is_some() && covering(policy, &p).is_some();
        if readable && exec_rule(policy, Path::new(c)).is_none() && exec_rule(policy, &p).is_none() {
            return Ok((PathBuf::from(c), None));
        }
    }
    if covering(policy, &policy.workdir).is_some() && exec_rule(policy, &policy.workdir).is_none() {
        let planted = policy.workdir.join("ag-corpus-echo");
        if let Ok(echo) = Path::new("/usr/bin/echo").canonicalize() {
            std::fs::copy(&echo, &planted).map_err(io_at(&planted))?;
            std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).map_err(io_at(&planted))?;
            return Ok((planted, None));
        }
    }
    let echo = PathBuf::from("/usr/bin/echo");
    let rule = exec_rule(policy, &echo);
    Ok((echo, rule))
}

/// Nested `read`/`exec` entries beneath `write` entries, inside the workdir.
fn nested_read_only(policy: &Policy) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let fs = &policy.filesystem;
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for e in fs.read.iter().chain(&fs.exec) {
        let beneath = fs.write.iter().any(|w| e.starts_with(w) && e != w);
        if !beneath || fs.write.contains(e) {
            continue;
        }
        if e.starts_with(&policy.workdir) {
            inside.push(e.clone());
        } else {
            outside.push(e.clone());
        }
    }
    (inside, outside)
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).map_or(0, |m| m.ino())
}

/// Sets up what technique `t` needs. `Err` is the outcome when it does not run.
fn prepare(t: &Technique, policy: &Policy, subject: &Subject, tree: &Tree, secrets: &Secrets, bin: &Path) -> Result<Prepared, Result<Outcome, HarnessError>> {
    let mut p = Prepared { attempts_count: true, ..Prepared::default() };
    let secret_file = tree.host.join("secret.txt");
    let arg = |k: &str, v: &dyn std::fmt::Display| format!("{k}={v}");
    let holder = |p: &mut Prepared| -> Result<(), Result<Outcome, HarnessError>> {
        let h = Holder::spawn(bin, secrets).map_err(Err)?;
        p.args.extend([arg("pid", &h.pid), arg("addr", &format!("{:#x}", h.addr)), arg("len", &h.len)]);
        p.holder = Some(h);
        Ok(())
    };
    let scratch_dir = || scratch_or_work(policy).map_err(Ok);
    match t.id {
        "exec-written" | "ld-preload" | "dlopen" | "mmap-exec" => {
            let s = scratch_dir()?;
            p.rule = exec_rule(policy, &s);
            p.args.extend([arg("scratch", &s.display()), arg("marker", &secrets.ran)]);
            p.markers.push(secrets.ran.clone());
            if t.id != "exec-written" {
                p.markers.push(super::elf::SO_MARKER.to_owned());
            }
            // The marker of a run that did happen shows in the output; an attempt that "worked" without it did not run.
            p.attempts_count = t.id != "exec-written";
        }
        "loader-exec" | "execveat" => {
            let (target, rule) = loader_target(policy).map_err(Err)?;
            let loaders = crate::sandbox::landlock::interpreters(policy, bin);
            let loader = loaders.first().cloned().unwrap_or_else(|| PathBuf::from("/lib64/ld-linux-x86-64.so.2"));
            p.rule = rule;
            p.args.extend([arg("loader", &loader.display()), arg("target", &target.display()), arg("marker", &secrets.ran)]);
            p.markers.push(secrets.ran.clone());
            p.attempts_count = false;
        }
        "memfd-exec" => {
            p.rule = syscall_rule(policy, &["memfd_create"]);
            p.args.push(arg("marker", &secrets.ran));
            p.markers.push(secrets.ran.clone());
            p.attempts_count = false;
        }
        "ro-subtree" => {
            let (inside, outside) = nested_read_only(policy);
            if inside.is_empty() {
                return Err(Ok(na(if outside.is_empty() {
                    "the profile has no read or exec entry beneath a write entry".to_owned()
                } else {
                    format!("its read-only subtrees ({}) are outside the workdir: the corpus does not touch the host's own files", outside.iter().map(|o| o.display().to_string()).collect::<Vec<_>>().join(", "))
                })));
            }
            let mut subs = Vec::new();
            for sub in inside {
                std::fs::create_dir_all(&sub).map_err(|e| Err(io_at(&sub)(e)))?;
                let file = sub.join("ag-corpus-ro.txt");
                std::fs::write(&file, b"original\n").map_err(|e| Err(io_at(&file)(e)))?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).map_err(|e| Err(io_at(&file)(e)))?;
                let parent = sub.parent().map(Path::to_owned).unwrap_or_default();
                p.subtrees.push((sub.clone(), file.clone(), inode(&sub), inode(&parent)));
                p.unchanged.push((file, b"original\n".to_vec()));
                subs.push(sub.display().to_string());
            }
            p.args.extend([arg("sub", &subs.join(",")), arg("file", &"ag-corpus-ro.txt")]);
        }
        "proc-cmdline" | "proc-environ" | "proc-mem" => {
            holder(&mut p)?;
            p.markers.push(match t.id {
                "proc-cmdline" => secrets.argv.clone(),
                "proc-environ" => secrets.environ.clone(),
                _ => secrets.memory.clone(),
            });
            p.attempts_count = false;
        }
        "ptrace-parent" | "process-vm-readv" | "process-vm-writev" | "signal-host" => {
            holder(&mut p)?;
            if t.id == "process-vm-readv" {
                p.markers.push(secrets.memory.clone());
                p.attempts_count = false;
            }
        }
        "proc-sys-write" => {
            let path = PathBuf::from("/proc/sys/kernel/hostname");
            let now = std::fs::read(&path).map_err(|e| Err(io_at(&path)(e)))?;
            p.args.extend([arg("path", &path.display()), arg("value", &String::from_utf8_lossy(&now).trim_end())]);
            p.unchanged.push((path, now));
        }
        "sys-write" => {
            let candidates = ["/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/uevent_helper", "/sys/kernel/profiling", "/sys/power/state"];
            let Some(path) = candidates.iter().find(|c| Path::new(c).exists()) else {
                return Err(Ok(na("none of the /sys files it opens exists on this host")));
            };
            p.args.push(arg("path", path));
        }
        "unix-connect" => {
            let path = tree.host.join("ag-corpus.sock");
            let l = UnixListener::bind(&path).map_err(|e| Err(io_at(&path)(e)))?;
            l.set_nonblocking(true).map_err(|e| Err(io_at(&path)(e)))?;
            p.unix = Some(l);
            p.args.extend([arg("path", &path.display()), arg("marker", &secrets.ran)]);
            p.attempts_count = false;
        }
        "netlink-route" => p.rule = syscall_rule(policy, &["netlink"]),
        "packet-socket" => p.rule = syscall_rule(policy, &["packet"]),
        "raw-socket" => {}
        "tcp-unlisted" | "udp-unlisted" => {
            let tcp = t.id == "tcp-unlisted";
            let addr = if tcp {
                let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Err(io_at(Path::new("127.0.0.1"))(e)))?;
                let a = l.local_addr().map_err(|e| Err(io_at(Path::new("127.0.0.1"))(e)))?;
                let _ = l.set_nonblocking(true);
                p.tcp = Some(l);
                a
            } else {
                let u = UdpSocket::bind("127.0.0.1:0").map_err(|e| Err(io_at(Path::new("127.0.0.1"))(e)))?;
                let a = u.local_addr().map_err(|e| Err(io_at(Path::new("127.0.0.1"))(e)))?;
                let _ = u.set_nonblocking(true);
                p.udp = Some(u);
                a
            };
            p.rule = network_rule(&subject.raw_net, addr, if tcp { "tcp" } else { "udp" });
            p.args.extend([arg("addr", &addr), arg("marker", &secrets.ran)]);
            p.attempts_count = false;
        }
        "udp-to-tcp-only" | "tcp-to-udp-only" => {
            let (only, other) = if t.id == "udp-to-tcp-only" { ("tcp", "udp") } else { ("udp", "tcp") };
            let dests: Vec<_> = subject.raw_net.iter().filter(|(_, _, p)| *p == Some(only)).collect();
            let Some((text, d, _)) = dests.iter().find(|(_, d, _)| d.net.addr().is_loopback()) else {
                return Err(Ok(na(if dests.is_empty() {
                    format!("the profile has no destination for {} only", only.to_uppercase())
                } else {
                    format!("its {}-only destinations are not on loopback: the corpus sends only to loopback", only.to_uppercase())
                })));
            };
            let ip: IpAddr = match d.net.addr() {
                IpAddr::V4(a) if d.net.prefix_len() < 32 => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) + 1)),
                a => a,
            };
            let addr = SocketAddr::new(ip, d.ports.lo);
            let bound = if other == "udp" {
                UdpSocket::bind(addr).and_then(|u| u.set_nonblocking(true).map(|()| p.udp = Some(u)))
            } else {
                TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| p.tcp = Some(l)))
            };
            bound.map_err(|e| Err(HarnessError::Workspace { path: PathBuf::from(format!("{addr} ({other} listener for {text})")), source: e }))?;
            p.rule = network_rule(&subject.raw_net, addr, other);
            p.args.extend([arg("addr", &addr), arg("marker", &secrets.ran)]);
            p.attempts_count = false;
        }
        "setid-chmod" | "setid-fchmod" | "setid-fchmodat" | "setid-open" | "setid-mknod" => {
            let s = scratch_dir()?;
            p.rule = syscall_rule(policy, &["setid-files"]);
            p.setid_dirs.push(policy.workdir.clone());
            p.args.push(arg("scratch", &s.display()));
        }
        "io-uring" => p.rule = syscall_rule(policy, &["io_uring_setup"]),
        "namespaces" => p.rule = syscall_rule(policy, &["unshare", "clone", "clone3"]),
        "mount" => {
            p.rule = syscall_rule(policy, &["mount", "fsopen"]);
            p.args.push(arg("target", &policy.workdir.display()));
        }
        "bpf" => p.rule = syscall_rule(policy, &["bpf"]),
        "perf-event-open" => p.rule = syscall_rule(policy, &["perf_event_open"]),
        "keyctl" => p.rule = syscall_rule(policy, &["keyctl"]),
        "x32-abi" | "i386-abi" => {}
        "tiocsti" => {
            p.rule = syscall_rule(policy, &["ioctl:TIOCSTI"]);
            let pty = nix::pty::openpty(None, None).map_err(|e| Err(io_at(Path::new("/dev/ptmx"))(e.into())))?;
            p.pty = Some((pty.master, pty.slave));
        }
        "inherited-fd" => {
            let path = tree.host.join("inherited.txt");
            std::fs::write(&path, format!("{}\n", secrets.fd)).map_err(|e| Err(io_at(&path)(e)))?;
            p.inherit = Some(std::fs::File::open(&path).map_err(|e| Err(io_at(&path)(e)))?);
            p.markers.push(secrets.fd.clone());
            p.attempts_count = false;
        }
        "env-secret" => {
            p.env.push((SECRET_VAR.to_owned(), secrets.env_var.clone()));
            p.args.push(arg("name", &SECRET_VAR));
            p.markers.push(secrets.env_var.clone());
            p.attempts_count = false;
        }
        "setsid-survivor" => p.attempts_count = false,
        "cgroup-escape" => {
            let roots = crate::sandbox::cgroup::CgroupRoots::discover(Path::new("/proc/self/mountinfo")).unwrap_or(crate::sandbox::cgroup::CgroupRoots { v2: None, v1_memory: None, v1_pids: None });
            let mut procs = Vec::new();
            if let Some(v2) = &roots.v2 {
                procs.push(v2.join(crate::sandbox::cgroup::SUBTREE).join("cgroup.procs"));
                procs.push(v2.join("cgroup.procs"));
            }
            for v1 in [&roots.v1_pids, &roots.v1_memory].into_iter().flatten() {
                procs.push(v1.join(crate::sandbox::cgroup::SUBTREE).join("cgroup.procs"));
                procs.push(v1.join("cgroup.procs"));
            }
            p.args.push(arg("procs", &procs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")));
        }
        "fork-bomb" => {
            let Some(limit) = policy.limits.processes else { return Err(Ok(na("the profile sets no `processes` limit"))) };
            p.fork_limit = Some(u64::from(limit));
            p.args.push(arg("limit", &limit));
            p.attempts_count = false;
        }
        "write-flood" => {
            let Some(limit) = policy.limits.file_writes else { return Err(Ok(na("the profile sets no `file_writes` limit"))) };
            let Some(s) = scratch(policy).map_err(Ok)? else { return Err(Ok(na("the profile writes no file the corpus could flood"))) };
            p.flood = Some((s.join("ag-corpus-flood"), limit));
            p.args.extend([arg("scratch", &s.display()), arg("limit", &limit)]);
            p.attempts_count = false;
        }
        "hardlink-in" | "symlink-read" | "rename-out" | "path-swap-race" => {
            let s = scratch_dir()?;
            std::fs::write(&secret_file, format!("{}\n", secrets.file)).map_err(|e| Err(io_at(&secret_file)(e)))?;
            std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).map_err(|e| Err(io_at(&secret_file)(e)))?;
            p.args.extend([arg("scratch", &s.display()), arg("secret", &secret_file.display()), arg("outside", &tree.outside.display())]);
            p.markers.push(secrets.file.clone());
            match t.id {
                "hardlink-in" => {
                    p.rule = read_rule(policy, &secret_file);
                    p.hardlink = Some((s.join("ag-corpus-hardlink"), inode(&secret_file)));
                    p.attempts_count = false;
                }
                "rename-out" => {
                    p.rule = write_rule(policy, &tree.outside).or_else(|| write_rule(policy, &tree.host));
                    p.must_not_exist.push(tree.outside.join("ag-corpus-moved"));
                    p.unchanged.push((secret_file.clone(), format!("{}\n", secrets.file).into_bytes()));
                    p.markers.clear();
                }
                _ => {
                    p.rule = read_rule(policy, &secret_file);
                    p.attempts_count = false;
                }
            }
        }
        "chmod-readable" => {
            let planted = policy.workdir.join("ag-corpus-readable.txt");
            let target = if matches!(covering(policy, &planted), Some(("read" | "exec", _))) {
                std::fs::write(&planted, b"readable\n").map_err(|e| Err(io_at(&planted)(e)))?;
                planted
            } else {
                let Some(c) = ["/etc/hostname", "/etc/passwd", "/usr/bin/echo", "/bin/echo"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|c| c.is_file() && matches!(covering(policy, c), Some(("read" | "exec", _))) && std::fs::metadata(c).is_ok_and(|m| m.mode() & 0o6000 == 0))
                else {
                    return Err(Ok(na("the profile reads none of the files it would chmod without writing them")));
                };
                c
            };
            let meta = std::fs::metadata(&target).map_err(|e| Err(io_at(&target)(e)))?;
            p.modes.push((target.clone(), meta.mode(), meta.uid(), meta.gid()));
            p.args.push(arg("target", &target.display()));
        }
        _ => {}
    }
    Ok(p)
}

/// The output of one session.
struct SessionOutput {
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    timed_out: bool,
    /// Processes of the technique alive after `run` returned that held its
    /// output open (killed, so that the output could be read to its end).
    survivors: Vec<i32>,
}

fn read_all(r: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            // At most 4 MiB of what an agent prints is kept.
            let _ = r.by_ref().take(4 << 20).read_to_end(&mut buf);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        }
        buf
    })
}

/// `agent-guard run --embedded` of `argv` as a session of `profile` in `workdir`.
fn session(opts: &Options, profile: &Path, workdir: &Path, argv: &[String], p: &mut Prepared, token: &str) -> Result<SessionOutput, HarnessError> {
    let mut cmd = Command::new(&opts.agent_guard);
    if let Some(c) = &opts.config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(["run", "--embedded", "--quiet", "--freeze-grace", "2s", "--profile"]).arg(profile).arg("--workdir").arg(workdir).arg("--");
    cmd.arg(&opts.agent_guard).args(argv);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in &p.env {
        cmd.env(k, v);
    }
    match &p.pty {
        Some((_, slave)) => {
            let slave = slave.try_clone().map_err(io_at(Path::new("/dev/pts")))?;
            cmd.stdin(Stdio::from(slave));
            // SAFETY: between fork and exec, only async-signal-safe calls: the terminal becomes the controlling one of a new session.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        None => {
            cmd.stdin(Stdio::null());
        }
    }
    if let Some(f) = &p.inherit {
        let fd = f.as_raw_fd();
        // SAFETY: between fork and exec, dup2 only: fd 10 is left open without close-on-exec, as a careless caller would.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 10) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(io_at(&opts.agent_guard))?;
    let out = read_all(child.stdout.take());
    let err = read_all(child.stderr.take());
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > SESSION_DEADLINE && !timed_out => {
                timed_out = true;
                // SAFETY: signalling our own child; `run` forwards SIGTERM to the agent and ends the session.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
            Ok(None) if start.elapsed() > SESSION_DEADLINE + Duration::from_secs(30) => {
                let _ = child.kill();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(io_at(&opts.agent_guard)(e)),
        }
    };
    // A process that outlived the session may hold the output open: give it
    // a moment, then kill what is left of the technique.
    let mut left = Vec::new();
    let since = Instant::now();
    while !(out.is_finished() && err.is_finished()) {
        if since.elapsed() > Duration::from_secs(2) {
            for pid in survivors(token) {
                // SAFETY: killing what a technique left behind, identified by this run's token in its argv.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                left.push(pid);
            }
            if since.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let join = |h: std::thread::JoinHandle<Vec<u8>>| if h.is_finished() { h.join().unwrap_or_default() } else { Vec::new() };
    left.sort_unstable();
    left.dedup();
    Ok(SessionOutput { status: status.code(), stdout: join(out), stderr: join(err), timed_out, survivors: left })
}

/// Processes of a technique whose argv holds `token` (`agent-guard
/// __escape TECHNIQUE run=TOKEN ...`): what is left of a session. `run`'s
/// own processes carry the token further on in their argv (after `run`)
/// and are not counted: its guardian may outlive it for a moment.
fn survivors(token: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let needle = format!("run={token}");
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let argv: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                argv.get(1) == Some(&&b"__escape"[..]) && argv.get(3) == Some(&needle.as_bytes())
            })
        })
        .collect()
}

/// Set-id files under `dir`.
fn setid_files(dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(m) = e.path().symlink_metadata() else { continue };
        if m.mode() & 0o6000 != 0 && !m.file_type().is_symlink() {
            found.push(format!("{} (mode {:o})", e.path().display(), m.mode() & 0o7777));
        }
        if m.is_dir() {
            setid_files(&e.path(), found);
        }
    }
}

/// The verdict, from the steps, the output and the host.
fn judge(p: Prepared, out: &SessionOutput, token: &str, steps: &[Step]) -> Outcome {
    let mut evidence: Vec<String> = Vec::new();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for m in &p.markers {
        if stdout.contains(m.as_str()) {
            evidence.push(format!("{} reached the agent's output", if m.starts_with("AGCORPUS-RAN") || m == super::elf::SO_MARKER { "the code it ran" } else { "the secret" }));
        }
    }
    if p.attempts_count {
        evidence.extend(steps.iter().filter(|s| s.attempt && s.ok).map(|s| format!("{}: {}", s.step, s.detail)));
    }
    if let Some(h) = p.holder {
        evidence.extend(h.finish());
    }
    if let Some(l) = &p.tcp {
        if let Ok((mut conn, from)) = l.accept() {
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 128];
            let n = conn.read(&mut buf).unwrap_or(0);
            evidence.push(format!("the loopback listener accepted a TCP connection from {from} ({n} bytes)"));
        }
    }
    if let Some(u) = &p.udp {
        let mut buf = [0u8; 128];
        if let Ok((n, from)) = u.recv_from(&mut buf) {
            evidence.push(format!("the loopback listener received a {n}-byte datagram from {from}"));
        }
    }
    if let Some(l) = &p.unix {
        if let Ok((mut conn, _)) = l.accept() {
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 128];
            let n = conn.read(&mut buf).unwrap_or(0);
            evidence.push(format!("the host's unix socket server accepted a connection ({n} bytes received)"));
        }
    }
    for d in &p.setid_dirs {
        let mut found = Vec::new();
        setid_files(d, &mut found);
        if !found.is_empty() {
            evidence.push(format!("set-id files left on the host: {}", found.join(", ")));
        }
    }
    for (sub, file, sub_ino, parent_ino) in &p.subtrees {
        let parent = sub.parent().map(Path::to_owned).unwrap_or_default();
        if inode(sub) != *sub_ino || inode(&parent) != *parent_ino {
            evidence.push(format!("{} or its parent was swapped away", sub.display()));
        }
        match std::fs::symlink_metadata(file) {
            Ok(m) if m.mode() & 0o7777 != 0o644 => evidence.push(format!("{} was chmodded to {:o}", file.display(), m.mode() & 0o7777)),
            Ok(_) => {}
            Err(_) => evidence.push(format!("{} was removed or renamed", file.display())),
        }
        let extra: Vec<String> = std::fs::read_dir(sub)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n != "ag-corpus-ro.txt").collect())
            .unwrap_or_default();
        if !extra.is_empty() {
            evidence.push(format!("added to {}: {}", sub.display(), extra.join(", ")));
        }
    }
    for (path, before) in &p.unchanged {
        match std::fs::read(path) {
            Ok(now) if &now == before => {}
            Ok(_) => {
                evidence.push(format!("{} changed", path.display()));
                if path.starts_with("/proc/sys") {
                    // Put the host back as it was.
                    let _ = std::fs::write(path, before);
                }
            }
            Err(_) => evidence.push(format!("{} is gone", path.display())),
        }
    }
    for (path, mode, uid, gid) in &p.modes {
        match std::fs::metadata(path) {
            Ok(m) if (m.mode(), m.uid(), m.gid()) == (*mode, *uid, *gid) => {}
            Ok(m) => {
                evidence.push(format!("{} now has mode {:o}, owner {}:{}", path.display(), m.mode() & 0o7777, m.uid(), m.gid()));
                // Put the host back as it was.
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode & 0o7777));
                let _ = std::os::unix::fs::chown(path, Some(*uid), Some(*gid));
            }
            Err(_) => evidence.push(format!("{} is gone", path.display())),
        }
    }
    for path in &p.must_not_exist {
        if path.symlink_metadata().is_ok() {
            evidence.push(format!("{} exists on the host", path.display()));
        }
    }
    if let Some((link, secret_ino)) = &p.hardlink {
        if *secret_ino != 0 && inode(link) == *secret_ino {
            evidence.push(format!("{} is a hard link to the secret", link.display()));
        }
    }
    if let Some(limit) = p.fork_limit {
        let made = steps.iter().find_map(|s| s.detail.split_whitespace().find_map(|w| w.strip_prefix("forked=")?.trim_end_matches(',').parse::<u64>().ok()));
        if let Some(made) = made {
            if made + 1 > limit {
                evidence.push(format!("{} processes alive at once, past the limit of {limit}", made + 1));
            }
        }
    }
    let mut notes = Vec::new();
    if let Some((file, limit)) = &p.flood {
        let size = std::fs::metadata(file).map_or(0, |m| m.len());
        if size > *limit {
            evidence.push(format!("{size} one-byte writes reached the file, past the limit of {limit}"));
        } else {
            notes.push(format!("{size} of its writes reached the file (limit {limit})"));
        }
    }
    let mut left = survivors(token);
    left.extend(&out.survivors);
    if !left.is_empty() {
        evidence.push(format!("processes outlived the session: {left:?}"));
        for pid in left {
            // SAFETY: killing what a technique left behind, identified by this run's token in its argv.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if !evidence.is_empty() {
        let evidence = evidence.join("; ");
        return match p.rule {
            Some(rule) => Outcome::AllowedByProfile { rule, evidence },
            None => Outcome::Escaped { evidence },
        };
    }
    let refused: Vec<String> = steps.iter().filter(|s| s.attempt && !s.ok).map(|s| format!("{}: {}", s.step, s.detail)).collect();
    let setup_failed: Vec<String> = steps.iter().filter(|s| !s.attempt && !s.ok).map(|s| format!("{}: {}", s.step, s.detail)).collect();
    let ended: Vec<String> = steps.iter().filter(|s| !s.attempt && s.ok && s.step == "how the child ended").map(|s| s.detail.clone()).collect();
    let worked: Vec<String> = steps.iter().filter(|s| s.attempt && s.ok).map(|s| format!("{}: {}", s.step, s.detail)).collect();
    let mut how = if !refused.is_empty() {
        refused
    } else if !setup_failed.is_empty() {
        setup_failed
    } else if !worked.is_empty() {
        vec![format!("no effect outside the session: {}", worked.join("; "))]
    } else {
        Vec::new()
    };
    how.extend(ended);
    if how.is_empty() || !notes.is_empty() {
        how.push(match out.status {
            Some(0) => "nothing it tried took effect".to_owned(),
            Some(code) => format!("the session ended with status {code} before any effect"),
            None => "the session was killed before any effect".to_owned(),
        });
    }
    how.extend(notes);
    Outcome::Blocked { how: how.join("; ") }
}

/// A test copy of the profile: this binary in `exec`, the role renamed.
fn test_copy(opts: &Options, text: &str, dir: &Path) -> Result<(PathBuf, String), HarnessError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|source| HarnessError::ParseProfile { path: opts.profile.clone(), source })?;
    let role = table.get("role").and_then(|r| r.get("name")).and_then(|n| n.as_str()).unwrap_or("profile").to_owned();
    let mut name: String = role.chars().take(64 - "-profile-test".len()).collect();
    name.push_str("-profile-test");
    if let Some(toml::Value::Table(r)) = table.get_mut("role") {
        r.insert("name".to_owned(), toml::Value::String(name.clone()));
    }
    let fs = table.entry("filesystem").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(fs) = fs {
        let exec = fs.entry("exec").or_insert_with(|| toml::Value::Array(Vec::new()));
        if let toml::Value::Array(list) = exec {
            list.push(toml::Value::String(opts.agent_guard.display().to_string()));
        }
    }
    let path = dir.join(format!("{name}.toml"));
    let out = toml::to_string(&table).map_err(|source| HarnessError::WriteProfile { path: path.clone(), source })?;
    std::fs::write(&path, out).map_err(io_at(&path))?;
    Ok((path, role))
}

/// A throwaway directory, removed when dropped.
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn make_root(parent: &Path) -> Result<Root, HarnessError> {
    let parent = parent.canonicalize().map_err(io_at(parent))?;
    for _ in 0..16 {
        let dir = parent.join(format!("ag-profile-test-{}", token()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(io_at(&dir))?;
                return Ok(Root(dir));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_at(&dir)(e)),
        }
    }
    Err(io_at(&parent)(std::io::Error::from(std::io::ErrorKind::AlreadyExists)))
}

/// Runs the corpus against the profile; `each` is called with every result as it comes.
pub fn run(opts: &Options, mut each: impl FnMut(&TechniqueResult)) -> Result<Report, HarnessError> {
    for id in &opts.only {
        if super::technique(id).is_none() {
            return Err(HarnessError::UnknownTechnique { id: id.clone() });
        }
    }
    let text = std::fs::read_to_string(&opts.profile).map_err(|source| HarnessError::ReadProfile { path: opts.profile.clone(), source })?;
    let root = make_root(&opts.parent)?;
    let (copy, role) = test_copy(opts, &text, &root.0)?;
    let subject = Subject { raw_net: raw_destinations(&text) };
    // The profile as written, checked against this host, before anything runs.
    let ctx = |work: &Path| Context { workdir: work.to_owned(), caller_uid: opts.caller_uid };
    {
        let probe = root.0.join("check");
        std::fs::create_dir(&probe).map_err(io_at(&probe))?;
        profile::load(&opts.profile, &ctx(&probe), &opts.host)?;
        profile::load(&copy, &ctx(&probe), &opts.host)?;
        let mut none = Prepared::default();
        let out = session(opts, &copy, &probe, &["__escape".to_owned(), "noop".to_owned()], &mut none, "")?;
        if out.status != Some(0) || !String::from_utf8_lossy(&out.stdout).contains("ready") {
            return Err(HarnessError::NoSession {
                status: out.status.map_or_else(|| "on a signal".to_owned(), |c| c.to_string()),
                stderr: crate::escape::bytes_for_terminal(out.stderr.trim_ascii()),
            });
        }
    }
    let mut results = Vec::new();
    for t in TECHNIQUES.iter().filter(|t| opts.only.is_empty() || opts.only.iter().any(|o| o == t.id)) {
        let result = one(opts, t, &root.0, &copy, &subject);
        each(&result);
        results.push(result);
    }
    Ok(Report { role, profile: opts.profile.clone(), binary: opts.agent_guard.clone(), results })
}

fn one(opts: &Options, t: &'static Technique, root: &Path, copy: &Path, subject: &Subject) -> TechniqueResult {
    let result = |outcome: Outcome, steps: Vec<Step>| TechniqueResult { technique: t.id, class: t.class, outcome, steps };
    let error = |e: HarnessError| result(Outcome::Error { why: crate::escape::for_terminal(&e.to_string()) }, Vec::new());
    let tree = match Tree::new(root, t.id) {
        Ok(tree) => tree,
        Err(e) => return error(e),
    };
    let ctx = Context { workdir: tree.work.clone(), caller_uid: opts.caller_uid };
    let policy = match profile::load(&opts.profile, &ctx, &opts.host) {
        Ok(p) => p,
        Err(e) => return error(e.into()),
    };
    if let Err(e) = make_entries(&policy) {
        return error(e);
    }
    let run_token = token();
    let secrets = Secrets::new(&run_token);
    let mut prepared = match prepare(t, &policy, subject, &tree, &secrets, &opts.agent_guard) {
        Ok(p) => p,
        Err(Ok(outcome)) => return result(outcome, Vec::new()),
        Err(Err(e)) => return error(e),
    };
    if let Some(run_as) = &policy.run_as {
        chown_tree(&tree.work, run_as.uid, run_as.gid);
    }
    let mut argv = vec!["__escape".to_owned(), t.id.to_owned(), format!("run={run_token}")];
    argv.append(&mut prepared.args);
    let out = match session(opts, copy, &tree.work, &argv, &mut prepared, &run_token) {
        Ok(out) => out,
        Err(e) => return error(e),
    };
    let steps: Vec<Step> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let started = steps.iter().any(|s| s.step == "started");
    if !started {
        let outcome = Outcome::Error {
            why: format!(
                "the technique did not start (`agent-guard run` exited {}{}): {}",
                out.status.map_or_else(|| "on a signal".to_owned(), |c| c.to_string()),
                if out.timed_out { ", timed out" } else { "" },
                crate::escape::bytes_for_terminal(out.stderr.trim_ascii())
            ),
        };
        // Whatever it was, nothing of it may outlive the session.
        for pid in survivors(&run_token) {
            // SAFETY: killing what this run left behind, identified by its token.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        return result(outcome, steps);
    }
    let outcome = judge(prepared, &out, &run_token, &steps);
    let steps = steps.into_iter().filter(|s| s.step != "started").collect();
    result(outcome, steps)
}

/// Creates the profile's `read`, `write` and `exec` directories inside the
/// throwaway workdir (a path that does not exist gets no rule).
fn make_entries(policy: &Policy) -> Result<(), HarnessError> {
    let fs = &policy.filesystem;
    for e in fs.read.iter().chain(&fs.write).chain(&fs.exec) {
        if e.starts_with(&policy.workdir) && e != &policy.workdir && !fs.deny.iter().any(|d| e.starts_with(d)) {
            std::fs::create_dir_all(e).map_err(io_at(e))?;
        }
    }
    Ok(())
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    let _ = std::os::unix::fs::lchown(dir, Some(uid), Some(gid));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                chown_tree(&p, uid, gid);
            } else {
                let _ = std::os::unix::fs::lchown(&p, Some(uid), Some(gid));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_keep_their_protocol() {
        let text = "[network]\nconnect = [\"127.0.0.1:8080/tcp\", \"[::1]:53/udp\", \"10.0.0.0/8:443\"]\n";
        let raw = raw_destinations(text);
        assert_eq!(raw.len(), 3);
        assert_eq!(raw[0].2, Some("tcp"));
        assert_eq!(raw[1].2, Some("udp"));
        assert_eq!(raw[2].2, None);
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(network_rule(&raw, a, "tcp").as_deref(), Some("network: 127.0.0.1:8080/tcp"));
        assert_eq!(network_rule(&raw, a, "udp"), None);
        let b: SocketAddr = "10.1.2.3:443".parse().unwrap();
        assert_eq!(network_rule(&raw, b, "udp").as_deref(), Some("network: 10.0.0.0/8:443"));
    }

    #[test]
    fn the_most_specific_entry_decides() {
        let mut p = Policy::probe_only(Path::new("/w"));
        p.filesystem.read = vec!["/usr".into(), "/w".into(), "/w/.git".into()];
        p.filesystem.write = vec!["/w".into()];
        p.filesystem.exec = vec!["/usr/bin".into(), "/w/bin".into()];
        p.filesystem.deny = vec!["/w/.env".into()];
        assert_eq!(covering(&p, Path::new("/usr/bin/echo")), Some(("exec", Path::new("/usr/bin"))));
        assert_eq!(covering(&p, Path::new("/usr/lib/x")), Some(("read", Path::new("/usr"))));
        assert_eq!(covering(&p, Path::new("/w/src")), Some(("write", Path::new("/w"))));
        assert_eq!(covering(&p, Path::new("/w/.git/config")), Some(("read", Path::new("/w/.git"))));
        assert_eq!(covering(&p, Path::new("/w/.env")), None);
        assert_eq!(covering(&p, Path::new("/etc/passwd")), None);
        assert_eq!(exec_rule(&p, Path::new("/w/bin/tool")).as_deref(), Some("exec: {workdir}/bin"));
        assert_eq!(nested_read_only(&p).0, vec![PathBuf::from("/w/.git"), PathBuf::from("/w/bin")]);
        assert_eq!(scratch(&p).unwrap(), Some(PathBuf::from("/w")));
    }
}
