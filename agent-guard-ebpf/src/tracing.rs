//! System-wide tracepoints that count what the sessions' processes do.
//! Each returns at once for tasks outside every session: one hash lookup
//! of the current cgroup id.
//!
//! Calls whose outcome matters are paired: the enter hook records the
//! arguments under the thread's id, the exit hook counts on success.

use agent_guard_common::{
    event::{EventKind, ExecEvent, ExitEvent, FileOpenEvent, EXEC_ARGS, EXEC_ARG_LEN, EXEC_PATH_LEN, FILE_PATH_LEN},
    session::Counter,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
    EbpfContext,
};

use agent_guard_common::session::{
    OFF_FDTABLE_FD, OFF_FDTABLE_MAX_FDS, OFF_FILES_FDT, OFF_FILE_INODE, OFF_INODE_MODE, OFF_TASK_EXIT_CODE, OFF_TASK_FILES,
    OFF_TASK_REAL_PARENT, OFF_TASK_TGID,
};
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

use crate::maps::{offset, Session};

/// Arguments recorded at a syscall's entry, by thread (`pid_tgid`).
#[map]
static PENDING: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// Opens for writing in flight: the event, filled at entry (path) and
/// completed at exit (descriptor, header), by thread.
#[map]
static PENDING_OPEN: LruHashMap<u64, FileOpenEvent> = LruHashMap::with_max_entries(4096, 0);

/// Scratch space for building a file event (too large for the stack).
#[map]
static OPEN_SCRATCH: PerCpuArray<FileOpenEvent> = PerCpuArray::with_max_entries(1, 0);

/// A connect's destination, read at its entry, by thread.
#[derive(Clone, Copy)]
#[repr(C)]
struct Dest {
    family: u16,
    port: u16,
    _pad: u32,
    addr: [u8; 16],
}

#[map]
static PENDING_CONNECT: LruHashMap<u64, Dest> = LruHashMap::with_max_entries(4096, 0);

/// Scratch space for building an exec event (too large for the stack).
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

/// Execs in flight: the event, filled at entry and sent at exit with the
/// result, by thread-group id (a successful exec by a secondary thread
/// returns in the group leader's place).
#[map]
static PENDING_EXEC: LruHashMap<u32, ExecEvent> = LruHashMap::with_max_entries(4096, 0);

const CLONE_THREAD: u64 = 0x0001_0000;
const O_ACCMODE: u64 = 0o3;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const O_WRONLY_CREAT_TRUNC: u64 = 0o1 | O_CREAT | O_TRUNC;

/// Offset of the return value in the `syscalls/sys_exit_*` records.
const RET: usize = 16;

/// The current task's session, if it is in one. A task of a session a
/// limit has ended is killed here, at its first hooked call, so the
/// session stops at once even before user space reacts.
#[inline(always)]
fn in_session() -> Option<Session> {
    let session = Session::current()?;
    if session.ended() {
        // SAFETY: SIGKILL to the current task, delivered on return to user space.
        unsafe { aya_ebpf::helpers::bpf_send_signal(9) };
    }
    Some(session)
}

/// A field of a tracepoint's record, by its offset in the tracepoint's
/// format: a plain load from the context, which the verifier bounds-checks
/// (no helper call).
#[inline(always)]
fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: the offset and type come from the tracepoint's format; the
    // verifier refuses a load outside the record.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).wrapping_add(offset) as *const T) }
}

/// A `syscalls/sys_exit_*` record's return value.
#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    field(ctx, RET)
}

/// The arguments in a `syscalls/sys_enter_*` record: argument `n` at 16 + 8n.
#[derive(Clone, Copy)]
struct Args<'a>(&'a TracePointContext);

impl Args<'_> {
    #[inline(always)]
    fn get(self, n: usize) -> u64 {
        field(self.0, 16 + 8 * (n % 6))
    }
}

// One program per kind of call: a per-call tracepoint costs a task only
// when it makes that call (a raw `sys_enter` program would run for every
// system call on the host; measured in docs/benchmarks.md).

#[tracepoint]
pub fn tp_enter_clone(ctx: TracePointContext) -> u32 {
    if in_session().is_some() {
        enter_clone(Args(&ctx));
    }
    0
}

#[tracepoint]
pub fn tp_enter_clone3(ctx: TracePointContext) -> u32 {
    if in_session().is_some() {
        enter_clone3(Args(&ctx));
    }
    0
}

#[tracepoint]
pub fn tp_enter_execve(ctx: TracePointContext) -> u32 {
    if in_session().is_some() {
        enter_exec(Args(&ctx), 0);
    }
    0
}

#[tracepoint]
pub fn tp_enter_execveat(ctx: TracePointContext) -> u32 {
    if in_session().is_some() {
        enter_exec(Args(&ctx), 1);
    }
    0
}

/// `openat` (path at arg 1, flags at arg 2).
#[tracepoint]
pub fn tp_enter_openat(ctx: TracePointContext) -> u32 {
    if let Some(s) = in_session() {
        let args = Args(&ctx);
        enter_open(&s, args, args.get(2), 1);
    }
    0
}

/// `open` (path at arg 0, flags at arg 1).
#[tracepoint]
pub fn tp_enter_open(ctx: TracePointContext) -> u32 {
    if let Some(s) = in_session() {
        let args = Args(&ctx);
        enter_open(&s, args, args.get(1), 0);
    }
    0
}

/// `creat` (path at arg 0).
#[tracepoint]
pub fn tp_enter_creat(ctx: TracePointContext) -> u32 {
    if let Some(s) = in_session() {
        enter_open(&s, Args(&ctx), O_WRONLY_CREAT_TRUNC, 0);
    }
    0
}

#[tracepoint]
pub fn tp_enter_openat2(ctx: TracePointContext) -> u32 {
    if let Some(s) = in_session() {
        enter_openat2(&s, Args(&ctx));
    }
    0
}

/// `write`, `writev`, `pwrite64`, `pwritev`, `pwritev2`.
#[tracepoint]
pub fn tp_enter_write(ctx: TracePointContext) -> u32 {
    if let Some(s) = in_session() {
        enter_write(&s, Args(&ctx));
    }
    0
}

#[tracepoint]
pub fn tp_enter_connect(ctx: TracePointContext) -> u32 {
    if in_session().is_some() {
        enter_connect(Args(&ctx));
    }
    0
}

fn remember(value: u64) {
    let _ = PENDING.insert(&bpf_get_current_pid_tgid(), &value, 0);
}

fn recall() -> Option<u64> {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let v = unsafe { PENDING.get(&key) }.copied();
    if v.is_some() {
        let _ = PENDING.remove(&key);
    }
    v
}

// ---- processes ----

fn process_started(s: &Session) {
    s.add(Counter::Processes, 1);
    let alive = s.add(Counter::ProcessesAlive, 1);
    s.raise_to(Counter::ProcessesPeak, alive);
}

/// `clone` (flags at arg 0): remembers a clone that makes a process.
#[inline(always)]
fn enter_clone(args: Args<'_>) {
    if args.get(0) & CLONE_THREAD == 0 {
        remember(1);
    }
}

/// `clone3`: the flags are the first field of the caller's `clone_args`.
#[inline(always)]
fn enter_clone3(args: Args<'_>) {
    // SAFETY: reading 8 bytes of the caller's memory through the helper.
    if let Ok(flags) = unsafe { bpf_probe_read_user(args.get(0) as *const u64) } {
        if flags & CLONE_THREAD == 0 {
            remember(1);
        }
    }
}

/// `sys_exit_clone`/`clone3`: a new process when the parent sees a pid and
/// the entry recorded a non-thread clone.
#[tracepoint]
pub fn tp_exit_clone(ctx: TracePointContext) -> u32 {
    if let Some(s) = in_session() {
        let pending = recall();
        if ret(&ctx) > 0 && pending.is_some() {
            process_started(&s);
        }
    }
    0
}

/// `sys_exit_fork`/`vfork`: always a new process.
#[tracepoint]
pub fn tp_exit_fork(ctx: TracePointContext) -> u32 {
    if let Some(s) = in_session() {
        if ret(&ctx) > 0 {
            process_started(&s);
        }
    }
    0
}

/// `sched_process_exit`: counts a process gone when its last thread exits.
#[tracepoint]
pub fn tp_process_exit(ctx: TracePointContext) -> u32 {
    const GROUP_DEAD: usize = 32;
    let Some(s) = in_session() else { return 0 };
    if field::<u8>(&ctx, GROUP_DEAD) != 0 {
        s.add(Counter::ProcessesAlive, u64::MAX); // wrapping: minus one
        // SAFETY: the current task is valid; the read goes through the helper.
        let status = unsafe {
            let task = bpf_get_current_task() as *const u8;
            bpf_probe_read_kernel(task.wrapping_add(offset(OFF_TASK_EXIT_CODE)) as *const u32).unwrap_or(0)
        };
        s.emit(ExitEvent { header: s.header(EventKind::Exit as u32), status, _pad: 0 });
    }
    0
}

// ---- exec ----

/// `sched_process_exec`: a successful exec. Past the `execs` limit the
/// task is killed before it runs a single instruction of the new program.
#[tracepoint]
pub fn tp_process_exec(_ctx: TracePointContext) -> u32 {
    if let Some(s) = in_session() {
        let n = s.add(Counter::Execs, 1);
        s.over_limit(Counter::Execs, n, 1, true);
    }
    0
}

/// `execve` (path at arg 0, argv at arg 1) and `execveat` (path at arg
/// 1, argv at arg 2): begins the exec event, sent at the call's exit.
#[inline(always)]
fn enter_exec(args: Args<'_>, path_arg: usize) {
    let Some(ev) = EXEC_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let ev = unsafe { &mut *ev };
    // The header (pid, sequence, time) is set at the exec's exit.
    ev.uid = bpf_get_current_uid_gid() as u32;
    ev.argc = 0;
    // SAFETY: current->real_parent->tgid, each read through the helper, which fails cleanly.
    ev.ppid = unsafe {
        let task = bpf_get_current_task() as *const u8;
        match bpf_probe_read_kernel(task.wrapping_add(offset(OFF_TASK_REAL_PARENT)) as *const *const u8) {
            Ok(parent) => bpf_probe_read_kernel(parent.wrapping_add(offset(OFF_TASK_TGID)) as *const u32).unwrap_or(0),
            Err(_) => 0,
        }
    };
    ev.result = 0;
    ev.path = [0; EXEC_PATH_LEN];
    ev.args = [[0; EXEC_ARG_LEN]; EXEC_ARGS];
    // SAFETY: reading a user string into a fixed buffer through the helper.
    let _ = unsafe { bpf_probe_read_user_str_bytes(args.get(path_arg) as *const u8, &mut ev.path) };
    let argv = args.get(path_arg + 1) as *const u64;
    for i in 0..EXEC_ARGS {
        // SAFETY: reading argv[i] (a user pointer) through the helper.
        let Ok(a) = (unsafe { bpf_probe_read_user(argv.wrapping_add(i)) }) else { break };
        if a == 0 {
            break;
        }
        // SAFETY: as above, into the fixed slot.
        let _ = unsafe { bpf_probe_read_user_str_bytes(a as *const u8, &mut ev.args[i]) };
        ev.argc = i as u32 + 1;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = PENDING_EXEC.insert(&tgid, ev, 0);
}

/// `sys_exit_execve`/`execveat`: sends the exec event begun at entry with
/// its result (a successful exec returns here in the new program).
#[tracepoint]
pub fn tp_exit_exec(ctx: TracePointContext) -> u32 {
    let Some(s) = in_session() else { return 0 };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match PENDING_EXEC.get_ptr_mut(&tgid) {
        Some(ev) => {
            // SAFETY: the entry is ours (keyed by this process) until removed below.
            let ev = unsafe { &mut *ev };
            ev.result = ret(&ctx) as i32;
            // The header as of now: the pid is the group's after a successful exec.
            ev.header = s.header(EventKind::Exec as u32);
            s.emit_ref(ev);
        }
        // Evicted (over 4096 execs in flight): the event is lost, and counted so.
        None => {
            s.add(Counter::EventsLost, 1);
        }
    }
    let _ = PENDING_EXEC.remove(&tgid);
    0
}

// ---- files ----

#[inline(always)]
fn writes(flags: u64) -> bool {
    flags & O_ACCMODE != 0 || flags & (O_CREAT | O_TRUNC) != 0
}

/// Records an open's flags, and for an open for writing its path too
/// (for reading too, when the session records reads).
#[inline(always)]
fn enter_open(s: &Session, args: Args<'_>, flags: u64, path_arg: usize) {
    remember(flags);
    if !writes(flags) && !s.records_reads() {
        return;
    }
    let Some(ev) = OPEN_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let ev = unsafe { &mut *ev };
    ev.flags = flags as u32;
    ev.fd = -1;
    ev.path = [0; FILE_PATH_LEN];
    // SAFETY: reading a user string into a fixed buffer through the helper.
    let _ = unsafe { bpf_probe_read_user_str_bytes(args.get(path_arg) as *const u8, &mut ev.path) };
    let _ = PENDING_OPEN.insert(&bpf_get_current_pid_tgid(), ev, 0);
}

/// `openat2` (path at arg 1): the flags are the first field of the caller's `open_how`.
#[inline(always)]
fn enter_openat2(s: &Session, args: Args<'_>) {
    // SAFETY: reading 8 bytes of the caller's memory through the helper.
    let flags = unsafe { bpf_probe_read_user(args.get(2) as *const u64) }.unwrap_or(0);
    enter_open(s, args, flags, 1);
}

/// Completes the file event an open's entry began (path, flags) with its
/// descriptor and sends it, when the open succeeded; an entry the LRU map
/// evicted (over 4096 opens in flight) is an event lost, and counted so.
#[inline(always)]
fn finish_open(s: &Session, kind: EventKind, ret: i64) {
    let key = bpf_get_current_pid_tgid();
    match PENDING_OPEN.get_ptr_mut(&key) {
        Some(ev) if ret >= 0 => {
            // SAFETY: the entry is ours (keyed by this thread) until removed below.
            let ev = unsafe { &mut *ev };
            ev.header = s.header(kind as u32);
            ev.fd = ret as i32;
            s.emit_ref(ev);
        }
        None if ret >= 0 => {
            s.add(Counter::EventsLost, 1);
        }
        _ => {}
    }
    let _ = PENDING_OPEN.remove(&key);
}

/// Exit of every open: counts a file opened for writing (by its flags) or
/// for reading, when the call returned a descriptor, and reports it (reads
/// only for sessions that record them). The count never depends on the
/// event's bookkeeping.
#[tracepoint]
pub fn tp_exit_open(ctx: TracePointContext) -> u32 {
    if let Some(s) = in_session() {
        let flags = recall();
        if let Some(flags) = flags {
            let ret = ret(&ctx);
            if writes(flags) {
                if ret >= 0 {
                    s.add(Counter::FilesWritten, 1);
                }
                finish_open(&s, EventKind::FileOpenWrite, ret);
            } else {
                if ret >= 0 {
                    s.add(Counter::FilesRead, 1);
                }
                if s.records_reads() {
                    finish_open(&s, EventKind::FileOpenRead, ret);
                }
            }
        }
    }
    0
}

/// Exit of unlink/unlinkat/rename/renameat/renameat2/truncate/ftruncate:
/// a destructive operation when it succeeded.
#[tracepoint]
pub fn tp_exit_destructive(ctx: TracePointContext) -> u32 {
    if let Some(s) = in_session() {
        if ret(&ctx) == 0 {
            s.add(Counter::DestructiveOps, 1);
        }
    }
    0
}

// ---- file writes ----

/// Whether `fd` of the current task is a regular file:
/// task->files->fdt->fd[fd]->f_inode->i_mode, read through the helper
/// (a fault or a closed fd reads as "no").
#[inline(always)]
fn is_regular_file(fd: u64) -> bool {
    const S_IFMT: u16 = 0o170000;
    const S_IFREG: u16 = 0o100000;
    // SAFETY: the task pointer is a BTF pointer: the verifier checks each
    // load against the kernel's types and turns it into a faulting-safe load
    // (no helper call); the rest goes through bpf_probe_read_kernel.
    unsafe {
        let task = aya_ebpf::helpers::gen::bpf_get_current_task_btf() as *const u8;
        let files = core::ptr::read_volatile(task.wrapping_add(offset(OFF_TASK_FILES)) as *const *const u8);
        let fdt = core::ptr::read_volatile(files.wrapping_add(offset(OFF_FILES_FDT)) as *const *const u8);
        let max = core::ptr::read_volatile(fdt.wrapping_add(offset(OFF_FDTABLE_MAX_FDS)) as *const u32);
        if fd >= u64::from(max) {
            return false;
        }
        let array = core::ptr::read_volatile(fdt.wrapping_add(offset(OFF_FDTABLE_FD)) as *const u64) as *const *const u8;
        let Ok(file) = bpf_probe_read_kernel(array.wrapping_add(fd as usize)) else { return false };
        if file.is_null() {
            return false;
        }
        let Ok(inode) = bpf_probe_read_kernel(file.wrapping_add(offset(OFF_FILE_INODE)) as *const *const u8) else { return false };
        let Ok(mode) = bpf_probe_read_kernel(inode.wrapping_add(offset(OFF_INODE_MODE)) as *const u16) else { return false };
        mode & S_IFMT == S_IFREG
    }
}

/// A write-family call (fd at arg 0): a write operation on a regular
/// file. Past the `file_writes` limit the task is killed; that write
/// itself still completes (the signal lands on the way back to user space).
#[inline(always)]
fn enter_write(s: &Session, args: Args<'_>) {
    if is_regular_file(args.get(0)) {
        let n = s.add(Counter::FileWrites, 1);
        s.over_limit(Counter::FileWrites, n, 1, true);
    }
}

// ---- connects refused before the cgroup hook ----

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EACCES: i64 = 13;

/// `connect` (fd, address, length): remembers an IP destination.
#[inline(always)]
fn enter_connect(args: Args<'_>) {
    let base = args.get(1) as *const u8;
    // SAFETY: reads of the caller's sockaddr through the helper, which fails cleanly.
    unsafe {
        let Ok(family) = bpf_probe_read_user(base as *const u16) else { return };
        let Ok(port) = bpf_probe_read_user(base.wrapping_add(2) as *const u16) else { return };
        let mut dest = Dest { family, port: u16::from_be(port), _pad: 0, addr: [0; 16] };
        if family == AF_INET {
            let Ok(a) = bpf_probe_read_user(base.wrapping_add(4) as *const [u8; 4]) else { return };
            dest.addr[..4].copy_from_slice(&a);
        } else if family == AF_INET6 {
            let Ok(a) = bpf_probe_read_user(base.wrapping_add(8) as *const [u8; 16]) else { return };
            dest.addr = a;
        } else {
            return;
        }
        let _ = PENDING_CONNECT.insert(&bpf_get_current_pid_tgid(), &dest, 0);
    }
}

/// `sys_exit_connect`: a connect refused with EACCES never reached the
/// cgroup hook (landlock refused its port first). Count and report it
/// here, so that `connects` and `connects_denied` hold every attempt.
#[tracepoint]
pub fn tp_exit_connect(ctx: TracePointContext) -> u32 {
    let Some(s) = in_session() else { return 0 };
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let dest = unsafe { PENDING_CONNECT.get(&key) }.copied();
    let _ = PENDING_CONNECT.remove(&key);
    let Some(dest) = dest else { return 0 };
    let ret = ret(&ctx);
    if ret != -EACCES {
        return 0;
    }
    let n = s.add(Counter::Connects, 1);
    s.over_limit(Counter::Connects, n, 1, false);
    s.add(Counter::ConnectsDenied, 1);
    s.emit(agent_guard_common::event::ConnectEvent {
        header: s.header(EventKind::Connect as u32),
        family: dest.family,
        protocol: 0,
        port: dest.port,
        allowed: 0,
        via_sendmsg: 0,
        addr: dest.addr,
    });
    0
}
