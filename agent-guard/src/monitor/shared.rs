//! The one shared instance of agent-guard's eBPF object: loaded once (by
//! the daemon when it starts, or by the first `run` on a host without
//! one), attached once, and pinned under bpffs so that counting and
//! enforcement outlive the process that loaded it: a daemon restart or a
//! supervisor crash leaves every session watched.
//!
//! Layout: `/sys/fs/bpf/agent-guard/<version>/` holds the maps
//! (`SESSIONS`, `RINGS`, `NET_V4`, `NET_V6`, `UNIX_ALLOW`, and `RING_SLOTS`, user
//! space's record of which session uses which ring buffer) and one pinned
//! link per cgroup attachment (`link_*`). The system-wide tracepoints
//! (every syscall entry, the syscall exits counted, process exec and
//! exit) are pinned as programs (`prog_*`) and attached only while a
//! session is registered: their links live in `hooks/`, which exists only
//! complete (built as `hooks_new`, renamed into place: bpffs refuses dots) and is removed when
//! the last session goes, so that a host with no session running pays
//! nothing on its system calls. The version is a digest of the object, so an
//! upgraded binary loads its own instance beside the old one, which stays
//! until its last session ends. Loading, registering a session and
//! sweeping stale entries happen under an exclusive `flock` of
//! `/sys/fs/bpf/agent-guard`.

use std::{
    fs,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use agent_guard_common::session::{PortRanges, RingSlot, SessionState, UnixKey, COUNTERS, MAX_SESSIONS, NET_V4_KEY, NET_V6_KEY};
use aya::{
    maps::{lpm_trie::Key, Array, ArrayOfMaps, HashMap, LpmTrie, Map, MapData, RingBuf},
    programs::{links::CgroupAttachMode, links::FdLink, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, TracePoint},
    EbpfLoader,
};
use sha2::Digest;

use super::{btf, map_err, prog_err, MonitorError};
use agent_guard_common::session::{OFF_SOCK_ADDR_UADDR, OFF_SOCK_ADDR_UADDRLEN};

/// `bpf_map_update_elem` flag: only insert.
const BPF_NOEXIST: u64 = 1;

/// bpffs, where the instance is pinned.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Everything agent-guard pins lives here.
pub fn pin_root() -> PathBuf {
    Path::new(BPFFS).join("agent-guard")
}

/// How an instance's directory is laid out; part of [`version`], so that
/// a binary never adopts an instance pinned in another layout.
const PIN_LAYOUT: u32 = 2;

/// The version of the embedded object and pin layout: the first 16 hex
/// digits of their SHA-256.
pub fn version() -> String {
    let mut digest = sha2::Sha256::new();
    digest.update(PIN_LAYOUT.to_le_bytes());
    digest.update(crate::doctor::EBPF_OBJECT);
    let digest = digest.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// System-wide tracepoints: (program, category, tracepoint).
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("tp_enter_clone", "syscalls", "sys_enter_clone"),
    ("tp_enter_clone3", "syscalls", "sys_enter_clone3"),
    ("tp_exit_clone", "syscalls", "sys_exit_clone"),
    ("tp_exit_clone", "syscalls", "sys_exit_clone3"),
    ("tp_exit_fork", "syscalls", "sys_exit_fork"),
    ("tp_exit_fork", "syscalls", "sys_exit_vfork"),
    ("tp_process_exit", "sched", "sched_process_exit"),
    ("tp_process_exec", "sched", "sched_process_exec"),
    ("tp_enter_execve", "syscalls", "sys_enter_execve"),
    ("tp_enter_execveat", "syscalls", "sys_enter_execveat"),
    ("tp_exit_exec", "syscalls", "sys_exit_execve"),
    ("tp_exit_exec", "syscalls", "sys_exit_execveat"),
    ("tp_enter_openat", "syscalls", "sys_enter_openat"),
    ("tp_enter_open", "syscalls", "sys_enter_open"),
    ("tp_enter_creat", "syscalls", "sys_enter_creat"),
    ("tp_enter_openat2", "syscalls", "sys_enter_openat2"),
    ("tp_exit_open", "syscalls", "sys_exit_openat"),
    ("tp_exit_open", "syscalls", "sys_exit_open"),
    ("tp_exit_open", "syscalls", "sys_exit_creat"),
    ("tp_exit_open", "syscalls", "sys_exit_openat2"),
    ("tp_exit_destructive", "syscalls", "sys_exit_unlink"),
    ("tp_exit_destructive", "syscalls", "sys_exit_unlinkat"),
    ("tp_exit_destructive", "syscalls", "sys_exit_rename"),
    ("tp_exit_destructive", "syscalls", "sys_exit_renameat"),
    ("tp_exit_destructive", "syscalls", "sys_exit_renameat2"),
    ("tp_exit_destructive", "syscalls", "sys_exit_truncate"),
    ("tp_exit_destructive", "syscalls", "sys_exit_ftruncate"),
    ("tp_enter_connect", "syscalls", "sys_enter_connect"),
    ("tp_exit_connect", "syscalls", "sys_exit_connect"),
    ("tp_enter_write", "syscalls", "sys_enter_write"),
    ("tp_enter_write", "syscalls", "sys_enter_writev"),
    ("tp_enter_write", "syscalls", "sys_enter_pwrite64"),
    ("tp_enter_write", "syscalls", "sys_enter_pwritev"),
    ("tp_enter_write", "syscalls", "sys_enter_pwritev2"),
];

/// Programs attached to the cgroup that holds every session.
const SOCK_ADDR_PROGRAMS: [&str; 6] = ["connect4", "connect6", "sendmsg4", "sendmsg6", "bind4", "bind6"];

/// The unix socket hooks (Linux 6.7+), attached beside them when the
/// kernel has them; an instance without them serves sessions with a gap
/// (see [`Shared::unix_hooks`]).
const UNIX_PROGRAMS: [&str; 2] = ["connect_unix", "sendmsg_unix"];

/// The maps of the object, pinned by these names; `SESSIONS` is pinned
/// last and so marks a complete instance.
const MAPS: [&str; 5] = ["RINGS", "NET_V4", "NET_V6", "UNIX_ALLOW", "SESSIONS"];

/// An exclusive `flock` on the pin root, released on drop.
pub struct PinLock {
    _dir: fs::File,
}

impl PinLock {
    pub fn take(root: &Path) -> Result<PinLock, MonitorError> {
        let dir = fs::File::open(root).map_err(|source| MonitorError::Pin { path: root.to_owned(), source })?;
        // SAFETY: flock on an fd we own; blocks until the lock is ours.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(MonitorError::Pin { path: root.to_owned(), source: std::io::Error::last_os_error() });
        }
        Ok(PinLock { _dir: dir })
    }
}

/// Mounts bpffs at [`BPFFS`] unless it is mounted there, and creates the pin root.
fn ensure_bpffs() -> Result<PathBuf, MonitorError> {
    let mounted = fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|t| t.lines().any(|l| l.split(' ').nth(4) == Some(BPFFS) && l.contains(" - bpf ")));
    if !mounted {
        nix::mount::mount(Some("bpf"), BPFFS, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|e| MonitorError::Pin { path: BPFFS.into(), source: e.into() })?;
    }
    let root = pin_root();
    match fs::create_dir(&root) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(MonitorError::Pin { path: root, source: e }),
        _ => Ok(root),
    }
}

/// Handles on the pinned maps of one instance.
pub struct Shared {
    pub dir: PathBuf,
    sessions: HashMap<MapData, u64, SessionState>,
    rings: ArrayOfMaps<MapData, RingBuf<MapData>>,
    slots: Array<MapData, RingSlot>,
    v4: LpmTrie<MapData, [u8; NET_V4_KEY], PortRanges>,
    v6: LpmTrie<MapData, [u8; NET_V6_KEY], PortRanges>,
    unix: HashMap<MapData, UnixKey, u8>,
    /// Whether the unix socket hooks are attached (their links pinned).
    pub unix_hooks: bool,
}

fn open_map(dir: &Path, name: &'static str) -> Result<MapData, MonitorError> {
    MapData::from_pin(dir.join(name)).map_err(map_err(name))
}

/// How [`Shared::ensure`] found the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// It was pinned already.
    Reused,
    /// This call loaded and pinned it, in this long.
    Now(std::time::Duration),
}

impl Shared {
    /// Opens the instance pinned in `dir`.
    pub fn open(dir: &Path) -> Result<Shared, MonitorError> {
        Ok(Shared {
            dir: dir.to_owned(),
            sessions: HashMap::try_from(Map::HashMap(open_map(dir, "SESSIONS")?)).map_err(map_err("SESSIONS"))?,
            rings: ArrayOfMaps::try_from(Map::ArrayOfMaps(open_map(dir, "RINGS")?)).map_err(map_err("RINGS"))?,
            slots: Array::try_from(Map::Array(open_map(dir, "RING_SLOTS")?)).map_err(map_err("RING_SLOTS"))?,
            v4: LpmTrie::try_from(Map::LpmTrie(open_map(dir, "NET_V4")?)).map_err(map_err("NET_V4"))?,
            v6: LpmTrie::try_from(Map::LpmTrie(open_map(dir, "NET_V6")?)).map_err(map_err("NET_V6"))?,
            unix: HashMap::try_from(Map::HashMap(open_map(dir, "UNIX_ALLOW")?)).map_err(map_err("UNIX_ALLOW"))?,
            unix_hooks: UNIX_PROGRAMS.iter().all(|name| dir.join(format!("link_{name}")).exists()),
        })
    }

    /// The instance of this binary's object, loaded, attached to
    /// `subtree` (the cgroup holding every session) and pinned if it was
    /// not already. Returns with the pin lock held, for the caller to
    /// register its session under it.
    pub fn ensure(subtree: &Path) -> Result<(Shared, Loaded, PinLock), MonitorError> {
        let root = ensure_bpffs()?;
        let lock = PinLock::take(&root)?;
        let dir = root.join(version());
        let subtree_id = fs::metadata(subtree).map_err(|source| MonitorError::Cgroup { path: subtree.display().to_string(), source })?.ino();
        if dir.join("SESSIONS").exists() {
            if attached_to(&dir) == Some(subtree_id) {
                let shared = Shared::open(&dir)?;
                return Ok((shared, Loaded::Reused, lock));
            }
            // Its cgroup hooks hang on a sessions cgroup that was removed (and
            // so served no session any more) and recreated since: the new one
            // has none. Start over rather than leave sessions unenforced.
            tracing::debug!("the instance in {} is attached to a removed cgroup; reloading", dir.display());
        }
        let started = std::time::Instant::now();
        // A partial instance (a loader that died half-way): start over.
        if dir.exists() {
            let _ = fs::remove_dir_all(&dir);
        }
        fs::create_dir(&dir).map_err(|source| MonitorError::Pin { path: dir.clone(), source })?;
        if let Err(e) = load_and_pin(&dir, subtree) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        let mut shared = Shared::open(&dir)?;
        // Loaded is not enforcing: try a forbidden send from a probe session
        // and refuse the instance unless the kernel refused it and counted it.
        if let Err(e) = shared.self_test(subtree) {
            drop(shared);
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        retire_idle_versions(&root, &dir);
        Ok((shared, Loaded::Now(started.elapsed()), lock))
    }

    /// Registers a session: its network rules, a ring buffer of `ring_bytes`
    /// bytes, and its state (`state.ring` is set here). Call with the pin
    /// lock held. Fails if the cgroup id is registered already. Returns
    /// the session's ring buffer.
    pub fn register(&mut self, cgroup: u64, mut state: SessionState, ring_bytes: u32, rules: &super::rules::Rules) -> Result<RingBuf<MapData>, MonitorError> {
        // Rules and ring first: the session entry is what makes the hooks act.
        for (prefix, addr, ranges) in &rules.v4 {
            let key = Key::new(64 + prefix, agent_guard_common::session::net_key::<NET_V4_KEY>(cgroup, addr));
            self.v4.insert(&key, ranges, 0).map_err(map_err("NET_V4"))?;
        }
        for (prefix, addr, ranges) in &rules.v6 {
            let key = Key::new(64 + prefix, agent_guard_common::session::net_key::<NET_V6_KEY>(cgroup, addr));
            self.v6.insert(&key, ranges, 0).map_err(map_err("NET_V6"))?;
        }
        for path in &rules.unix {
            if let Some(key) = UnixKey::new(cgroup, path) {
                self.unix.insert(key, 1, 0).map_err(map_err("UNIX_ALLOW"))?;
            }
        }
        let (slot, ring) = self.take_ring(cgroup, ring_bytes)?;
        state.ring = slot;
        self.sessions.insert(cgroup, state, BPF_NOEXIST).map_err(map_err("SESSIONS"))?;
        Ok(ring)
    }

    /// A ring buffer of `bytes` for the session `cgroup`: a free one of
    /// that size if there is one (its owner gone), else a new one in the
    /// first never-used slot. Slots are used densely from 0, so this reads
    /// as many slots as the most sessions that ever ran at once.
    fn take_ring(&mut self, cgroup: u64, bytes: u32) -> Result<(u32, RingBuf<MapData>), MonitorError> {
        let live: std::collections::HashSet<u64> = self.sessions().into_iter().collect();
        let mut unused = None;
        for slot in 0..MAX_SESSIONS {
            let s = self.slots.get(&slot, 0).map_err(map_err("RING_SLOTS"))?;
            if s.bytes == 0 {
                unused = Some(slot);
                break;
            }
            if s.bytes == bytes && (s.owner == 0 || !live.contains(&s.owner)) {
                if let Ok(ring) = self.rings.get(&slot, 0) {
                    self.slots.set(slot, RingSlot { owner: cgroup, bytes, _pad: 0 }, 0).map_err(map_err("RING_SLOTS"))?;
                    return Ok((slot, ring));
                }
            }
        }
        let slot = unused.ok_or(MonitorError::NoRingSlot(MAX_SESSIONS))?;
        const BPF_MAP_TYPE_RINGBUF: u32 = 27;
        let def = aya_obj::Map::new_from_params(BPF_MAP_TYPE_RINGBUF, 0, 0, bytes, 0);
        let data = MapData::create(def, "ag_events", None).map_err(map_err("RINGS"))?;
        let ring = RingBuf::try_from(Map::RingBuf(data)).map_err(map_err("RINGS"))?;
        // The one costly step (the kernel waits for an RCU grace period), paid once per slot.
        self.rings.set(slot, &ring, 0).map_err(map_err("RINGS"))?;
        self.slots.set(slot, RingSlot { owner: cgroup, bytes, _pad: 0 }, 0).map_err(map_err("RING_SLOTS"))?;
        Ok((slot, ring))
    }

    /// Registers a probe session in a cgroup of its own, with no allowed
    /// destination, forks a child into it that sends a UDP datagram to
    /// 127.0.0.1:9 and (when the unix hooks are attached) connects to a
    /// socket file, and checks that both were refused (EPERM) and
    /// counted. The socket file does not exist: without the hook the
    /// connect fails with ENOENT, the hook refuses it before the lookup.
    /// Call with the pin lock held.
    fn self_test(&mut self, subtree: &Path) -> Result<(), MonitorError> {
        use agent_guard_common::session::{Counter, ON_LIMIT_KILL};
        let dir = subtree.join(format!("selftest-{}", std::process::id()));
        let failed = |why: String| MonitorError::SelfTest(why);
        fs::create_dir(&dir).map_err(|source| MonitorError::Cgroup { path: dir.display().to_string(), source })?;
        let result = (|| {
            let id = fs::metadata(&dir).map_err(|source| MonitorError::Cgroup { path: dir.display().to_string(), source })?.ino();
            let state = SessionState::new([u64::MAX; COUNTERS], ON_LIMIT_KILL, PortRanges::EMPTY, 0);
            let _ring = self.register(id, state, 4096, &super::rules::Rules::default())?;
            let procs = std::ffi::CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes())
                .map_err(|_| failed("the probe cgroup's path holds a NUL".to_owned()))?;
            let unix = self.unix_hooks;
            // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
            let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, s) in sun.sun_path.iter_mut().zip(SELF_TEST_SOCKET.as_bytes()) {
                *d = *s as libc::c_char;
            }
            // SAFETY: the child makes only async-signal-safe system calls on
            // data prepared before the fork, then _exits.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(failed(format!("fork: {}", std::io::Error::last_os_error())));
            }
            if pid == 0 {
                // SAFETY: as above; the exit code reports what happened (0 refused, 1 sent, 2 set-up failed).
                unsafe {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        libc::_exit(2);
                    }
                    let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                    if s < 0 {
                        libc::_exit(2);
                    }
                    let mut addr: libc::sockaddr_in = std::mem::zeroed();
                    addr.sin_family = libc::AF_INET as libc::sa_family_t;
                    addr.sin_port = 9u16.to_be();
                    addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
                    let r = libc::sendto(s, b"x".as_ptr().cast(), 1, 0, (&addr as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32);
                    let refused = r < 0 && *libc::__errno_location() == libc::EPERM;
                    if !refused {
                        libc::_exit(1);
                    }
                    if unix {
                        let u = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                        if u < 0 {
                            libc::_exit(2);
                        }
                        let r = libc::connect(u, (&sun as *const libc::sockaddr_un).cast(), std::mem::size_of::<libc::sockaddr_un>() as u32);
                        if !(r < 0 && *libc::__errno_location() == libc::EPERM) {
                            libc::_exit(3);
                        }
                    }
                    libc::_exit(0);
                }
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
            let counters = self.counters(id).unwrap_or([0; COUNTERS]);
            self.forget(id);
            let tries = if unix { 2 } else { 1 };
            match code {
                0 if counters[Counter::Connects as usize] == tries && counters[Counter::ConnectsDenied as usize] == tries => Ok(()),
                0 => Err(failed(format!(
                    "the probe's connects were refused but not counted ({tries} expected; connects {}, denied {})",
                    counters[Counter::Connects as usize],
                    counters[Counter::ConnectsDenied as usize]
                ))),
                1 => Err(failed("a probe session sent a datagram its rules forbid: the cgroup hooks do not act on the sessions' cgroup".to_owned())),
                3 => Err(failed(format!("a probe session's connect to the socket file {SELF_TEST_SOCKET} was not refused: the connect_unix hook does not act on the sessions' cgroup"))),
                _ => Err(failed(format!("the probe could not be set up (exit status {status:#x})"))),
            }
        })();
        let _ = fs::remove_dir(&dir);
        result
    }

    /// Attaches the system-wide hooks unless they are: call before
    /// registering a session, with the pin lock held. Built in a scratch
    /// directory and renamed into place, so `hooks/` never exists half
    /// attached; a failure leaves them detached and refuses the session.
    pub fn hooks_on(&self, _held: &PinLock) -> Result<(), MonitorError> {
        if self.dir.join(HOOKS).is_dir() {
            return Ok(());
        }
        let scratch = self.dir.join(format!("{HOOKS}_new"));
        let _ = fs::remove_dir_all(&scratch);
        fs::create_dir(&scratch).map_err(|source| MonitorError::Pin { path: scratch.clone(), source })?;
        let done = attach_hooks(&self.dir, &scratch)
            .and_then(|()| fs::rename(&scratch, self.dir.join(HOOKS)).map_err(|source| MonitorError::Pin { path: scratch.clone(), source }));
        if done.is_err() {
            // Unpinning the links that were made detaches them.
            let _ = fs::remove_dir_all(&scratch);
        }
        done
    }

    /// Detaches the system-wide hooks if no session is registered, under
    /// the pin lock (a session registering meanwhile would find them gone).
    /// A session map that cannot be read counts as busy.
    pub fn hooks_off_if_idle(&self, _held: &PinLock) {
        let idle = self.sessions.keys().next().is_none();
        if !idle || !self.dir.join(HOOKS).is_dir() {
            return;
        }
        let old = self.dir.join(format!("{HOOKS}_old"));
        let _ = fs::remove_dir_all(&old);
        if fs::rename(self.dir.join(HOOKS), &old).is_ok() {
            tracing::debug!("no session left: detaching the system-wide hooks of {}", self.dir.display());
            let _ = fs::remove_dir_all(&old);
        }
    }

    /// The session's state as it stands now (counters exact).
    pub fn state(&self, cgroup: u64) -> Option<SessionState> {
        self.sessions.get(&cgroup, 0).ok()
    }

    /// The session's counters as they stand now.
    pub fn counters(&self, cgroup: u64) -> Option<[u64; COUNTERS]> {
        self.state(cgroup).map(|s| s.counters)
    }

    /// Removes every entry of the session `cgroup`.
    pub fn forget(&mut self, cgroup: u64) {
        if let Ok(state) = self.sessions.get(&cgroup, 0) {
            if let Ok(slot) = self.slots.get(&state.ring, 0) {
                if slot.owner == cgroup {
                    let _ = self.slots.set(state.ring, RingSlot { owner: 0, ..slot }, 0);
                }
            }
        }
        let _ = self.sessions.remove(&cgroup);
        let prefix = cgroup.to_be_bytes();
        let v4: Vec<_> = self.v4.keys().filter_map(Result::ok).filter(|k| k.data()[..8] == prefix).collect();
        for k in v4 {
            let _ = self.v4.remove(&k);
        }
        let v6: Vec<_> = self.v6.keys().filter_map(Result::ok).filter(|k| k.data()[..8] == prefix).collect();
        for k in v6 {
            let _ = self.v6.remove(&k);
        }
        let unix: Vec<UnixKey> = self.unix.keys().filter_map(Result::ok).filter(|k| k.cgroup == cgroup).collect();
        for k in unix {
            let _ = self.unix.remove(&k);
        }
    }

    /// The cgroup ids of every registered session.
    pub fn sessions(&self) -> Vec<u64> {
        self.sessions.keys().filter_map(Result::ok).collect()
    }

    /// Forgets sessions whose cgroup no longer exists under `subtree`
    /// (their supervisor and guardian both died). Call with the pin lock
    /// held, so that no session is half-registered meanwhile.
    pub fn sweep(&mut self, subtree: &Path) -> usize {
        let alive: std::collections::HashSet<u64> = match fs::read_dir(subtree) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_dir())
                .map(|m| m.ino())
                .collect(),
            Err(_) => return 0,
        };
        let stale: Vec<u64> = self.sessions().into_iter().filter(|c| !alive.contains(c)).collect();
        for &c in &stale {
            tracing::debug!("forgetting session cgroup {c}: its cgroup is gone");
            self.forget(c);
        }
        stale.len()
    }
}

/// The socket file the self-test connects to (it does not exist).
const SELF_TEST_SOCKET: &str = "/nonexistent/agent-guard-self-test.sock";

/// Loads the object, attaches every program, and pins maps and links in `dir`.
fn load_and_pin(dir: &Path, subtree: &Path) -> Result<(), MonitorError> {
    let offsets = btf::field_offsets(Path::new("/sys/kernel/btf/vmlinux"), Path::new(btf::CACHE_DIR))?;
    // No program here needs kernel BTF (no tp_btf, no CO-RE).
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    let mut ebpf = loader.override_global("KERNEL_OFFSETS", &offsets, true).load(crate::doctor::EBPF_OBJECT)?;
    let cgroup = fs::File::open(subtree).map_err(|source| MonitorError::Cgroup { path: subtree.display().to_string(), source })?;
    for name in SOCK_ADDR_PROGRAMS {
        attach_sock_addr(&mut ebpf, name, &cgroup, dir)?;
    }
    // The unix socket hooks, where the kernel has them (6.7+): without
    // them the instance still serves, and every session reports the gap.
    let unix_offsets = [OFF_SOCK_ADDR_UADDR, OFF_SOCK_ADDR_UADDRLEN].iter().all(|&i| offsets[i] != btf::ABSENT);
    if unix_offsets {
        for name in UNIX_PROGRAMS {
            if let Err(e) = attach_sock_addr(&mut ebpf, name, &cgroup, dir) {
                tracing::debug!("the unix socket hooks did not load: {}", crate::cli::render_error(&anyhow::Error::from(e)));
                for name in UNIX_PROGRAMS {
                    let _ = fs::remove_file(dir.join(format!("link_{name}")));
                }
                break;
            }
        }
    } else {
        tracing::debug!("kernel BTF has no bpf_sock_addr_kern.uaddrlen (before Linux 6.7): no unix socket hooks");
    }
    let egress: &mut CgroupSkb = ebpf
        .program_mut("egress")
        .ok_or(MonitorError::Program { name: "egress", source: aya::programs::ProgramError::NotLoaded })?
        .try_into()
        .map_err(prog_err("egress"))?;
    egress.load().map_err(prog_err("egress"))?;
    let id = egress.attach(&cgroup, CgroupSkbAttachType::Egress, CgroupAttachMode::Single).map_err(prog_err("egress"))?;
    let link = FdLink::try_from(egress.take_link(id).map_err(prog_err("egress"))?).map_err(|e| MonitorError::Link { name: "egress", source: e })?;
    pin_link(link, dir.join("link_egress"))?;

    // The system-wide programs: loaded and pinned, attached per use (`Shared::hooks_on`).
    for &(name, _, _) in TRACEPOINTS {
        let prog: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or(MonitorError::Program { name, source: aya::programs::ProgramError::NotLoaded })?
            .try_into()
            .map_err(prog_err(name))?;
        // A program serving several tracepoints is loaded once.
        if prog.fd().is_err() {
            prog.load().map_err(prog_err(name))?;
            let path = prog_pin(dir, name);
            prog.pin(&path).map_err(pin_failed(path))?;
        }
    }
    // Which cgroup the hooks hang on (its inode), to notice its being recreated.
    let mut attached: Array<MapData, u64> = Array::create(1, 0).map_err(map_err("ATTACHED_TO"))?;
    let subtree_id = cgroup.metadata().map_err(|source| MonitorError::Cgroup { path: subtree.display().to_string(), source })?.ino();
    attached.set(0, subtree_id, 0).map_err(map_err("ATTACHED_TO"))?;
    let path = dir.join("ATTACHED_TO");
    attached.pin(&path).map_err(pin_failed(path))?;
    let slots: Array<MapData, RingSlot> = Array::create(MAX_SESSIONS, 0).map_err(map_err("RING_SLOTS"))?;
    let path = dir.join("RING_SLOTS");
    slots.pin(&path).map_err(pin_failed(path))?;
    for name in MAPS {
        let map = ebpf.map(name).ok_or(MonitorError::MissingMap(name))?;
        let path = dir.join(name);
        map.pin(&path).map_err(pin_failed(path))?;
    }
    Ok(())
}

/// Loads the cgroup sock_addr program `name`, attaches it to `cgroup` and
/// pins the link in `dir` as `link_NAME`.
fn attach_sock_addr(ebpf: &mut aya::Ebpf, name: &'static str, cgroup: &fs::File, dir: &Path) -> Result<(), MonitorError> {
    let prog: &mut CgroupSockAddr = ebpf
        .program_mut(name)
        .ok_or(MonitorError::Program { name, source: aya::programs::ProgramError::NotLoaded })?
        .try_into()
        .map_err(prog_err(name))?;
    prog.load().map_err(prog_err(name))?;
    // A bpf_link attachment: always shares the hook with others (another
    // tool's programs, an older agent-guard's still serving its last
    // sessions); "Single" only means no legacy flags.
    let id = prog.attach(cgroup, CgroupAttachMode::Single).map_err(prog_err(name))?;
    let link = FdLink::try_from(prog.take_link(id).map_err(prog_err(name))?).map_err(|e| MonitorError::Link { name, source: e })?;
    pin_link(link, dir.join(format!("link_{name}")))
}

/// Maps a failure to pin something at `path`.
fn pin_failed(path: PathBuf) -> impl FnOnce(aya::pin::PinError) -> MonitorError {
    move |e| MonitorError::Pin { path, source: std::io::Error::other(e) }
}

/// Pins `link` at `path` (unpinning it detaches it, once no one else holds it).
fn pin_link(link: FdLink, path: PathBuf) -> Result<(), MonitorError> {
    link.pin(&path).map(drop).map_err(pin_failed(path))
}

/// Where the system-wide program `name` of the instance in `dir` is pinned.
fn prog_pin(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("prog_{name}"))
}

/// How long attaching waits for the kernel to finish detaching the same
/// program from the same tracepoint (normally milliseconds).
const DETACH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Where an instance's system-wide links live while attached.
const HOOKS: &str = "hooks";

/// Whether the system-wide hooks of the instance in `dir` are attached
/// (an instance of an earlier layout pinned them beside its maps, always).
pub fn hooks_attached(dir: &Path) -> bool {
    dir.join(HOOKS).is_dir() || dir.join("link_sched_process_exec").exists()
}

/// Attaches every system-wide program pinned in `dir` and pins the links
/// in `into`.
fn attach_hooks(dir: &Path, into: &Path) -> Result<(), MonitorError> {
    crate::doctor::ensure_tracefs(Path::new(crate::doctor::TRACEFS)).map_err(|e| MonitorError::Cgroup {
        path: crate::doctor::TRACEFS.to_owned(),
        source: std::io::Error::from(e),
    })?;
    let started = std::time::Instant::now();
    let mut waited = false;
    for &(name, category, tracepoint) in TRACEPOINTS {
        let mut prog = TracePoint::from_pin(prog_pin(dir, name)).map_err(prog_err(name))?;
        // Right after the last session detached them, the kernel may still
        // hold the previous attachment (a link's release waits for an RCU
        // grace period and a workqueue), and refuses the same program on
        // the same tracepoint again with EEXIST until it lets go.
        let id = loop {
            match prog.attach(category, tracepoint) {
                Err(aya::programs::ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) && started.elapsed() < DETACH_PATIENCE =>
                {
                    if !waited {
                        tracing::debug!("{tracepoint}: the previous attachment is still being released; waiting");
                        waited = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                result => break result.map_err(prog_err(name))?,
            }
        };
        let link = FdLink::try_from(prog.take_link(id).map_err(prog_err(name))?).map_err(|e| MonitorError::Link { name, source: e })?;
        pin_link(link, into.join(format!("link_{tracepoint}")))?;
    }
    Ok(())
}

/// The inode of the cgroup the instance in `dir` is attached to.
fn attached_to(dir: &Path) -> Option<u64> {
    let data = MapData::from_pin(dir.join("ATTACHED_TO")).ok()?;
    let map: Array<MapData, u64> = Array::try_from(Map::Array(data)).ok()?;
    map.get(&0, 0).ok()
}

/// Every pinned instance: (version directory, whether it is this binary's).
pub fn instances() -> Vec<(PathBuf, bool)> {
    let mine = version();
    let Ok(entries) = fs::read_dir(pin_root()) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let is_mine = e.file_name().to_str() == Some(mine.as_str());
            (e.path(), is_mine)
        })
        .collect()
}

/// Removes instances of other versions that serve no session any more
/// (unpinning their links detaches them), and pins older agent-guard
/// releases left at the top of the pin root. Call with the pin lock held.
fn retire_idle_versions(root: &Path, current: &Path) {
    let Ok(entries) = fs::read_dir(root) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path == current {
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            // A per-session map pin from before the shared instance.
            let _ = fs::remove_file(&path);
            continue;
        }
        let idle = match Shared::open(&path) {
            Ok(mut old) => {
                if let Some(subtree) = sessions_subtree() {
                    old.sweep(&subtree);
                }
                old.sessions().is_empty()
            }
            Err(_) => true,
        };
        if idle {
            tracing::debug!("retiring the idle eBPF instance {}", path.display());
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// What [`unload`] did.
#[derive(Debug, Default)]
pub struct Unloaded {
    pub removed: Vec<PathBuf>,
    /// Instances kept because sessions still use them, with how many.
    pub kept: Vec<(PathBuf, usize)>,
}

/// Unpins every instance that serves no session (all of them with
/// `force`), detaching its programs.
pub fn unload(force: bool) -> Result<Unloaded, MonitorError> {
    let root = pin_root();
    if !root.exists() {
        return Ok(Unloaded::default());
    }
    let _lock = PinLock::take(&root)?;
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    let subtree = sessions_subtree();
    for (dir, _) in instances() {
        let live = Shared::open(&dir)
            .map(|mut s| {
                // Entries of sessions whose cgroup is gone (supervisor and guardian both killed) do not count.
                if let Some(t) = &subtree {
                    s.sweep(t);
                }
                s.sessions().len()
            })
            .unwrap_or(0);
        if live > 0 && !force {
            kept.push((dir, live));
            continue;
        }
        fs::remove_dir_all(&dir).map_err(|source| MonitorError::Pin { path: dir.clone(), source })?;
        removed.push(dir);
    }
    Ok(Unloaded { removed, kept })
}

/// Forgets the session `cgroup` in every pinned instance (for whoever
/// cleans up after a supervisor that could not).
pub fn forget_everywhere(cgroup: u64) {
    let lock = PinLock::take(&pin_root());
    let mut all = open_all();
    for shared in &mut all {
        shared.forget(cgroup);
    }
    if let Ok(lock) = &lock {
        hooks_off_where_idle(&all, lock);
    }
}

/// Detaches the system-wide hooks of each of `instances` that serves no
/// session, under the pin lock.
pub fn hooks_off_where_idle(instances: &[Shared], held: &PinLock) {
    for instance in instances {
        instance.hooks_off_if_idle(held);
    }
}

/// Every pinned instance that opens.
pub fn open_all() -> Vec<Shared> {
    instances().into_iter().filter_map(|(dir, _)| Shared::open(&dir).ok()).collect()
}

/// The cgroup v2 directory that holds every session, on this host.
pub fn sessions_subtree() -> Option<PathBuf> {
    let roots = crate::sandbox::cgroup::CgroupRoots::discover(Path::new("/proc/self/mountinfo")).ok()?;
    Some(roots.v2?.join(crate::sandbox::cgroup::SUBTREE))
}
