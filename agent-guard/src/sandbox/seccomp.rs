//! The seccomp filter: a default deny set of system calls that let an agent
//! escape or blind the other controls, compiled in the parent and installed
//! in the child as the last step before `execve`.
//!
//! Denied calls fail with `EPERM`, except `clone3` and `openat2`, which
//! fail with `ENOSYS` so that libc falls back to `clone` and `openat`,
//! whose flags and mode the filter can inspect. A call from a non-native ABI (i386 `int 0x80`, x32) kills the
//! process: the filter cannot reason about another ABI's numbers.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond,
    SeccompFilter, SeccompRule, TargetArch,
};

use std::collections::BTreeMap;

use crate::profile::NetPolicy;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("this architecture ({0}) has no seccomp deny set yet")]
    UnsupportedArch(&'static str),
    #[error("building the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("installing the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
}

/// When a deny rule applies to its system call.
#[derive(Clone, Copy, Debug)]
enum When {
    Always,
    /// `clone` with any namespace flag.
    NamespaceFlags,
    /// `ioctl` with this request number.
    IoctlRequest(u64),
    /// `personality` with anything but a query or a harmless persona.
    PersonalityChange,
    /// `memfd_create` without `MFD_NOEXEC_SEAL`: an executable memfd
    /// would run code that no exec allowlist names.
    ExecutableMemfd,
    /// The mode in this argument has the setuid or setgid bit.
    SetidMode { mode: u8 },
    /// Creating a file (`O_CREAT` or `O_TMPFILE` in `flags`) with the
    /// setuid or setgid bit in `mode`.
    SetidCreate { flags: u8, mode: u8 },
    /// Always, failing with ENOSYS rather than EPERM, so that libc falls
    /// back to an older call whose arguments the filter can see.
    Enosys,
}

/// One entry of the default deny set. `name` is what `[syscalls] allow`
/// names to opt back in.
#[derive(Clone, Copy, Debug)]
struct DenyRule {
    name: &'static str,
    nr: i64,
    when: When,
}

const fn rule(name: &'static str, nr: i64, when: When) -> DenyRule {
    DenyRule { name, nr, when }
}

const CLONE_NS_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];
const MFD_NOEXEC_SEAL: u64 = 0x0008;
const S_ISUID: u64 = 0o4000;
const S_ISGID: u64 = 0o2000;
const O_CREAT: u64 = libc::O_CREAT as u64;
const O_TMPFILE: u64 = libc::O_TMPFILE as u64;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
/// `personality` values that stay allowed: query, PER_LINUX, PER_LINUX32,
/// UNAME26 and UNAME26|PER_LINUX32 (as container runtimes allow).
const PERSONALITY_OK: [u64; 5] = [0xffff_ffff, 0, 0x8, 0x20000, 0x20008];

/// The default deny set, in the order `doctor` and the docs list it.
const DENY_SET: &[DenyRule] = &[
    // io_uring's operations do not pass through the syscall hooks.
    rule("io_uring_setup", libc::SYS_io_uring_setup, When::Always),
    rule("io_uring_enter", libc::SYS_io_uring_enter, When::Always),
    rule("io_uring_register", libc::SYS_io_uring_register, When::Always),
    // Reading or writing other processes.
    rule("ptrace", libc::SYS_ptrace, When::Always),
    rule("process_vm_readv", libc::SYS_process_vm_readv, When::Always),
    rule("process_vm_writev", libc::SYS_process_vm_writev, When::Always),
    // Kernel programmability and observation.
    rule("bpf", libc::SYS_bpf, When::Always),
    rule("perf_event_open", libc::SYS_perf_event_open, When::Always),
    // Kernel keyrings.
    rule("keyctl", libc::SYS_keyctl, When::Always),
    rule("add_key", libc::SYS_add_key, When::Always),
    rule("request_key", libc::SYS_request_key, When::Always),
    // Mounts, old and new API, and root changes.
    rule("mount", libc::SYS_mount, When::Always),
    rule("umount2", libc::SYS_umount2, When::Always),
    rule("fsopen", libc::SYS_fsopen, When::Always),
    rule("fsconfig", libc::SYS_fsconfig, When::Always),
    rule("fsmount", libc::SYS_fsmount, When::Always),
    rule("fspick", libc::SYS_fspick, When::Always),
    rule("move_mount", libc::SYS_move_mount, When::Always),
    rule("open_tree", libc::SYS_open_tree, When::Always),
    rule("mount_setattr", libc::SYS_mount_setattr, When::Always),
    rule("pivot_root", libc::SYS_pivot_root, When::Always),
    rule("chroot", libc::SYS_chroot, When::Always),
    // Namespaces.
    rule("unshare", libc::SYS_unshare, When::Always),
    rule("setns", libc::SYS_setns, When::Always),
    rule("clone", libc::SYS_clone, When::NamespaceFlags),
    rule("clone3", libc::SYS_clone3, When::Enosys),
    // Replacing the kernel or adding to it.
    rule("kexec_load", libc::SYS_kexec_load, When::Always),
    rule("kexec_file_load", libc::SYS_kexec_file_load, When::Always),
    rule("init_module", libc::SYS_init_module, When::Always),
    rule("finit_module", libc::SYS_finit_module, When::Always),
    rule("delete_module", libc::SYS_delete_module, When::Always),
    // Opening files by handle bypasses path-based rules.
    rule("open_by_handle_at", libc::SYS_open_by_handle_at, When::Always),
    rule("name_to_handle_at", libc::SYS_name_to_handle_at, When::Always),
    rule("userfaultfd", libc::SYS_userfaultfd, When::Always),
    rule("personality", libc::SYS_personality, When::PersonalityChange),
    rule("memfd_create", libc::SYS_memfd_create, When::ExecutableMemfd),
    // Typing into, or rewriting, the operator's terminal.
    rule("ioctl:TIOCSTI", libc::SYS_ioctl, When::IoctlRequest(TIOCSTI)),
    rule("ioctl:TIOCLINUX", libc::SYS_ioctl, When::IoctlRequest(TIOCLINUX)),
    // Setuid and setgid files, which would outlive the session on the host.
    rule("setid-files", libc::SYS_chmod, When::SetidMode { mode: 1 }),
    rule("setid-files", libc::SYS_fchmod, When::SetidMode { mode: 1 }),
    rule("setid-files", libc::SYS_fchmodat, When::SetidMode { mode: 2 }),
    rule("setid-files", SYS_FCHMODAT2, When::SetidMode { mode: 2 }),
    rule("setid-files", libc::SYS_mknod, When::SetidMode { mode: 1 }),
    rule("setid-files", libc::SYS_mknodat, When::SetidMode { mode: 2 }),
    rule("setid-files", libc::SYS_creat, When::SetidMode { mode: 1 }),
    rule("setid-files", libc::SYS_open, When::SetidCreate { flags: 1, mode: 2 }),
    rule("setid-files", libc::SYS_openat, When::SetidCreate { flags: 2, mode: 3 }),
    // openat2's mode is in a struct the filter cannot read: ENOSYS, and libc uses openat.
    rule("openat2", libc::SYS_openat2, When::Enosys),
];

/// `fchmodat2` (Linux 6.6), which the libc crate may not name yet.
#[cfg(target_arch = "x86_64")]
const SYS_FCHMODAT2: i64 = 452;
#[cfg(not(target_arch = "x86_64"))]
const SYS_FCHMODAT2: i64 = libc::SYS_fchmodat2;

/// Socket address families beyond `AF_UNIX`, `AF_INET` and `AF_INET6`:
/// denied unless `[syscalls] allow` names them. Any family not listed
/// here is denied whatever the profile says.
const FAMILIES: &[(&str, i32)] = &[
    ("netlink", libc::AF_NETLINK),
    ("packet", libc::AF_PACKET),
    ("vsock", libc::AF_VSOCK),
    ("alg", libc::AF_ALG),
    ("bluetooth", libc::AF_BLUETOOTH),
    ("can", libc::AF_CAN),
    ("xdp", libc::AF_XDP),
    ("tipc", libc::AF_TIPC),
    ("key", libc::AF_KEY),
];

/// Socket types of IP sockets: stream and datagram, with or without
/// `SOCK_NONBLOCK`/`SOCK_CLOEXEC` (raw and packet sockets are denied).
const IP_TYPES: [u64; 8] = {
    let (s, d, nb, ce) = (libc::SOCK_STREAM as u64, libc::SOCK_DGRAM as u64, libc::SOCK_NONBLOCK as u64, libc::SOCK_CLOEXEC as u64);
    [s, s | nb, s | ce, s | nb | ce, d, d | nb, d | ce, d | nb | ce]
};
/// Protocols of IP sockets: the default for the type, TCP and UDP; the
/// monitor's hooks see these (ICMP, SCTP, MPTCP, UDP-Lite are denied).
const IP_PROTOCOLS: [u64; 3] = [0, libc::IPPROTO_TCP as u64, libc::IPPROTO_UDP as u64];

/// Names of the default deny set, as `[syscalls] allow` spells them: the
/// rules of system calls, then the socket families.
pub fn deny_rule_names() -> impl Iterator<Item = &'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    DENY_SET.iter().map(|r| r.name).chain(FAMILIES.iter().map(|(n, _)| *n)).filter(move |n| {
        let new = !seen.contains(n);
        seen.push(n);
        new
    })
}

fn conditions(when: When) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let cond = |arg: u8, len: Len, op: Op, value: u64| Cond::new(arg, len, op, value);
    Ok(match when {
        When::Always => Vec::new(),
        When::NamespaceFlags => CLONE_NS_FLAGS
            .iter()
            .map(|&flag| SeccompRule::new(vec![cond(0, Len::Qword, Op::MaskedEq(flag), flag)?]))
            .collect::<Result<_, _>>()?,
        When::IoctlRequest(request) => vec![SeccompRule::new(vec![cond(1, Len::Dword, Op::Eq, request)?])?],
        When::PersonalityChange => vec![SeccompRule::new(
            PERSONALITY_OK.iter().map(|&ok| cond(0, Len::Dword, Op::Ne, ok)).collect::<Result<_, _>>()?,
        )?],
        When::ExecutableMemfd => {
            vec![SeccompRule::new(vec![cond(1, Len::Dword, Op::MaskedEq(MFD_NOEXEC_SEAL), 0)?])?]
        }
        When::SetidMode { mode } => [S_ISUID, S_ISGID]
            .iter()
            .map(|&bit| SeccompRule::new(vec![cond(mode, Len::Dword, Op::MaskedEq(bit), bit)?]))
            .collect::<Result<_, _>>()?,
        When::SetidCreate { flags, mode } => {
            let mut rules = Vec::new();
            for create in [O_CREAT, O_TMPFILE] {
                for bit in [S_ISUID, S_ISGID] {
                    rules.push(SeccompRule::new(vec![
                        cond(flags, Len::Dword, Op::MaskedEq(create), create)?,
                        cond(mode, Len::Dword, Op::MaskedEq(bit), bit)?,
                    ])?);
                }
            }
            rules
        }
        When::Enosys => Vec::new(),
    })
}

/// Rules denying `socket()` (and `socketpair()`) outside what the profile
/// allows: `AF_UNIX` always, `AF_INET`/`AF_INET6` only when it lists
/// network destinations, other families only when `[syscalls] allow`
/// names them; IP sockets only of stream or datagram type with the
/// default protocol, TCP or UDP.
fn socket_rules(allow: &[String], net: &NetPolicy) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let mut families = vec![libc::AF_UNIX];
    if !net.is_none() {
        families.extend([libc::AF_INET, libc::AF_INET6]);
    }
    families.extend(FAMILIES.iter().filter(|(name, _)| allow.iter().any(|a| a == name)).map(|(_, f)| *f));
    let mut rules = vec![SeccompRule::new(
        families.into_iter().map(|family| Cond::new(0, Len::Dword, Op::Ne, family as u64)).collect::<Result<_, _>>()?,
    )?];
    if !net.is_none() {
        for family in [libc::AF_INET, libc::AF_INET6] {
            let is_ip = || Cond::new(0, Len::Dword, Op::Eq, family as u64);
            let mut other_type = vec![is_ip()?];
            other_type.extend(IP_TYPES.iter().map(|&t| Cond::new(1, Len::Dword, Op::Ne, t)).collect::<Result<Vec<_>, _>>()?);
            rules.push(SeccompRule::new(other_type)?);
            let mut other_protocol = vec![is_ip()?];
            other_protocol.extend(IP_PROTOCOLS.iter().map(|&p| Cond::new(2, Len::Dword, Op::Ne, p)).collect::<Result<Vec<_>, _>>()?);
            rules.push(SeccompRule::new(other_protocol)?);
        }
    }
    Ok(rules)
}

/// The compiled filters, ready to install in the child.
#[derive(Debug)]
pub struct CompiledFilters {
    /// Installed first: ABI check, then the EPERM rules.
    pub deny: BpfProgram,
    /// Installed second: `clone3` -> ENOSYS (empty when allowed).
    pub enosys: Option<BpfProgram>,
}

/// Compiles the default deny set minus `allow`, plus the socket family rule.
pub fn compile(allow: &[String], net: &NetPolicy) -> Result<CompiledFilters, SeccompError> {
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| SeccompError::UnsupportedArch(std::env::consts::ARCH))?;
    // `None`: the call is denied whatever its arguments.
    let mut by_call: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    let mut enosys = BTreeMap::new();
    for r in DENY_SET.iter().filter(|r| !allow.iter().any(|a| a == r.name)) {
        if matches!(r.when, When::Enosys) {
            enosys.insert(r.nr, Vec::new());
            continue;
        }
        let rules = conditions(r.when)?;
        match by_call.entry(r.nr).or_insert_with(|| Some(Vec::new())) {
            slot if rules.is_empty() => *slot = None,
            Some(existing) => existing.extend(rules),
            None => {}
        }
    }
    if let Some(existing) = by_call.entry(libc::SYS_socket).or_insert_with(|| Some(Vec::new())) {
        existing.extend(socket_rules(allow, net)?);
    }
    // socketpair makes only unix sockets on Linux (and TIPC, denied).
    if let Some(existing) = by_call.entry(libc::SYS_socketpair).or_insert_with(|| Some(Vec::new())) {
        existing.push(SeccompRule::new(vec![Cond::new(0, Len::Dword, Op::Ne, libc::AF_UNIX as u64)?])?);
    }
    let eperm: BTreeMap<i64, Vec<SeccompRule>> =
        by_call.into_iter().map(|(nr, rules)| (nr, rules.unwrap_or_default())).collect();

    let eperm_errno = SeccompAction::Errno(libc::EPERM as u32);
    let mut deny = abi_prefix();
    let ruled: Vec<u32> = eperm.keys().map(|&nr| nr as u32).collect();
    deny.extend(fast_allow(&ruled));
    deny.extend(BpfProgram::try_from(SeccompFilter::new(eperm, SeccompAction::Allow, eperm_errno, arch)?)?);
    let enosys = if enosys.is_empty() {
        None
    } else {
        let errno = SeccompAction::Errno(libc::ENOSYS as u32);
        Some(BpfProgram::try_from(SeccompFilter::new(enosys, SeccompAction::Allow, errno, arch)?)?)
    };
    Ok(CompiledFilters { deny, enosys })
}

/// Kills any call from another ABI: the wrong `arch` (i386 via `int 0x80`),
/// or x32 numbers (bit 30 set) under the native arch. seccompiler checks
/// `arch` but not x32, so this runs first.
#[cfg(target_arch = "x86_64")]
fn abi_prefix() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x05 | 0x10;
    const JGE_K: u16 = 0x05 | 0x30;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        insn(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        insn(JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

#[cfg(not(target_arch = "x86_64"))]
fn abi_prefix() -> BpfProgram {
    Vec::new()
}

const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;

/// A fast path in front of seccompiler's program, which tests the call
/// number against each ruled call in turn (~40 comparisons for every
/// allowed call, ~50 ns on every system call the agent makes). This binary
/// search over the sorted numbers of `ruled` returns ALLOW at once for any
/// other call (~7 comparisons) and falls through to the full program for
/// a ruled one. Expects the call number in the accumulator (as
/// `abi_prefix` leaves it) and leaves it there.
fn fast_allow(ruled: &[u32]) -> BpfProgram {
    #[derive(Clone, Copy)]
    enum Op {
        /// `nr == k`: on to the full program.
        EqRuled(u32),
        /// `nr >= k`: to the instruction at this index, else the next.
        GeTo(u32, usize),
        Allow,
    }
    fn emit(values: &[u32], ops: &mut Vec<Op>) {
        if values.len() <= 3 {
            ops.extend(values.iter().map(|&v| Op::EqRuled(v)));
            ops.push(Op::Allow);
            return;
        }
        let mid = values.len() / 2;
        let at = ops.len();
        ops.push(Op::GeTo(values[mid], 0));
        emit(&values[..mid], ops);
        let right = ops.len();
        ops[at] = Op::GeTo(values[mid], right);
        emit(&values[mid..], ops);
    }
    let mut sorted = ruled.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ops = Vec::new();
    emit(&sorted, &mut ops);
    let end = ops.len(); // where the full program starts
    let insn = |code, jt: usize, jf: usize, k| seccompiler::sock_filter {
        code,
        jt: u8::try_from(jt).unwrap_or_else(|_| unreachable!("the fast path is far shorter than 255 instructions")),
        jf: u8::try_from(jf).unwrap_or_else(|_| unreachable!("as above")),
        k,
    };
    ops.iter()
        .enumerate()
        .map(|(i, op)| match *op {
            Op::EqRuled(v) => insn(BPF_JEQ_K, end - i - 1, 0, v),
            Op::GeTo(v, to) => insn(BPF_JGE_K, to - i - 1, 0, v),
            Op::Allow => insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_with_and_without_allowances() {
        let none = NetPolicy::default();
        let all = compile(&[], &none).unwrap_or_else(|e| panic!("{e}"));
        assert!(all.enosys.is_some());
        let allow: Vec<String> = ["ptrace", "clone3", "openat2", "ioctl:TIOCSTI"].map(String::from).to_vec();
        let fewer = compile(&allow, &none).unwrap_or_else(|e| panic!("{e}"));
        assert!(fewer.enosys.is_none());
        assert!(fewer.deny.len() < all.deny.len());
    }

    /// Runs a classic BPF program of the kinds of instructions this module
    /// emits (loads of `seccomp_data`, JEQ/JGE on constants, RET) for one
    /// call; `None` when it ran off the end.
    fn run(prog: &[seccompiler::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> Option<u32> {
        let mut a: u32 = 0;
        let mut pc = 0;
        while pc < prog.len() {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                0x20 => {
                    a = match i.k {
                        0 => nr,
                        4 => arch,
                        k @ 16..=63 => {
                            let arg = args[(k as usize - 16) / 8];
                            if (k - 16) % 8 == 0 { arg as u32 } else { (arg >> 32) as u32 }
                        }
                        _ => 0,
                    }
                }
                0x15 => pc += if a == i.k { i.jt as usize } else { i.jf as usize },
                0x35 => pc += if a >= i.k { i.jt as usize } else { i.jf as usize },
                0x25 => pc += if a > i.k { i.jt as usize } else { i.jf as usize },
                0x45 => pc += if a & i.k != 0 { i.jt as usize } else { i.jf as usize },
                0x54 => a &= i.k,
                0x05 => pc += i.k as usize,
                0x06 => return Some(i.k),
                other => panic!("unexpected opcode {other:#x} at {}", pc - 1),
            }
        }
        None
    }

    #[test]
    fn fast_path_allows_exactly_the_unruled_calls() {
        let ruled = [16, 41, 56, 101, 135, 155, 161, 165, 166, 175, 176, 246, 248, 249, 250, 272, 298, 303, 304, 308, 310, 311, 313, 319, 320, 321, 323, 425, 426, 427, 428, 429, 430, 431, 432, 433, 435, 442];
        // The fast path expects the call number loaded.
        let mut prog = vec![seccompiler::sock_filter { code: 0x20, jt: 0, jf: 0, k: 0 }];
        prog.extend(fast_allow(&ruled));
        assert!(prog.len() < 120, "{} instructions", prog.len());
        for nr in 0..1024u32 {
            let out = run(&prog, 0, nr, [0; 6]);
            if ruled.contains(&nr) {
                assert_eq!(out, None, "{nr} must reach the full program");
            } else {
                assert_eq!(out, Some(libc::SECCOMP_RET_ALLOW), "{nr} must be allowed at once");
            }
        }
    }

    #[test]
    fn whole_filter_decides_like_the_deny_set() {
        let f = compile(&[], &NetPolicy::default()).unwrap_or_else(|e| panic!("{e}"));
        const X86_64: u32 = 0xC000_003E;
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let deny = |nr: i64, args: [u64; 6]| run(&f.deny, X86_64, nr as u32, args);
        assert_eq!(deny(libc::SYS_read, [0; 6]), Some(libc::SECCOMP_RET_ALLOW));
        assert_eq!(deny(libc::SYS_openat, [0; 6]), Some(libc::SECCOMP_RET_ALLOW));
        assert_eq!(deny(libc::SYS_ptrace, [0; 6]), Some(eperm));
        assert_eq!(deny(libc::SYS_io_uring_setup, [0; 6]), Some(eperm));
        assert_eq!(deny(libc::SYS_ioctl, [0, TIOCSTI, 0, 0, 0, 0]), Some(eperm));
        assert_eq!(deny(libc::SYS_ioctl, [0, 0x5401, 0, 0, 0, 0]), Some(libc::SECCOMP_RET_ALLOW));
        assert_eq!(deny(libc::SYS_clone, [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]), Some(eperm));
        assert_eq!(deny(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), Some(libc::SECCOMP_RET_ALLOW));
        assert_eq!(deny(libc::SYS_socket, [libc::AF_INET as u64, 0, 0, 0, 0, 0]), Some(eperm));
        assert_eq!(deny(libc::SYS_socket, [libc::AF_UNIX as u64, 0, 0, 0, 0, 0]), Some(libc::SECCOMP_RET_ALLOW));
        // Another ABI, or an x32 number, is killed.
        assert_eq!(run(&f.deny, 0x4000_0003, 20, [0; 6]), Some(libc::SECCOMP_RET_KILL_PROCESS));
        assert_eq!(deny(0x4000_0000 | libc::SYS_read, [0; 6]), Some(libc::SECCOMP_RET_KILL_PROCESS));
        let enosys = f.enosys.as_ref().map(|p| run(p, X86_64, libc::SYS_clone3 as u32, [0; 6]));
        assert_eq!(enosys, Some(Some(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32)));
    }

    #[test]
    fn setid_files_socket_families_and_types() {
        const X86_64: u32 = 0xC000_003E;
        let eperm = Some(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        let allow = Some(libc::SECCOMP_RET_ALLOW);
        let net = NetPolicy { connect: vec!["127.0.0.1:80".parse().unwrap_or_else(|e| panic!("{e}"))], ..NetPolicy::default() };
        let f = compile(&[], &net).unwrap_or_else(|e| panic!("{e}"));
        let call = |nr: i64, args: [u64; 6]| run(&f.deny, X86_64, nr as u32, args);
        // chmod family: the setuid or setgid bit is refused, other modes pass.
        assert_eq!(call(libc::SYS_chmod, [0, 0o4755, 0, 0, 0, 0]), eperm);
        assert_eq!(call(libc::SYS_fchmod, [3, 0o2755, 0, 0, 0, 0]), eperm);
        assert_eq!(call(libc::SYS_fchmodat, [3, 0, 0o6755, 0, 0, 0]), eperm);
        assert_eq!(call(SYS_FCHMODAT2, [3, 0, 0o4700, 0, 0, 0]), eperm);
        assert_eq!(call(libc::SYS_chmod, [0, 0o1777, 0, 0, 0, 0]), allow);
        assert_eq!(call(libc::SYS_fchmodat, [3, 0, 0o755, 0, 0, 0]), allow);
        // Creation with the bits, by open, openat, creat, mknod.
        let creat = libc::O_CREAT as u64 | libc::O_WRONLY as u64;
        assert_eq!(call(libc::SYS_openat, [3, 0, creat, 0o4755, 0, 0]), eperm);
        assert_eq!(call(libc::SYS_openat, [3, 0, libc::O_TMPFILE as u64 | 2, 0o2755, 0, 0]), eperm);
        assert_eq!(call(libc::SYS_open, [0, creat, 0o4755, 0, 0, 0]), eperm);
        assert_eq!(call(libc::SYS_creat, [0, 0o4755, 0, 0, 0, 0]), eperm);
        assert_eq!(call(libc::SYS_mknodat, [3, 0, libc::S_IFREG as u64 | 0o4755, 0, 0, 0]), eperm);
        assert_eq!(call(libc::SYS_openat, [3, 0, creat, 0o644, 0, 0]), allow);
        // Without O_CREAT the mode argument means nothing: not refused.
        assert_eq!(call(libc::SYS_openat, [3, 0, libc::O_RDONLY as u64, 0o4755, 0, 0]), allow);
        let enosys = f.enosys.as_ref().map(|p| run(p, X86_64, libc::SYS_openat2 as u32, [0; 6]));
        assert_eq!(enosys, Some(Some(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32)));
        // Families: unix and IP only; netlink, packet and unknown ones refused.
        let sock = |family: i32, ty: i32, proto: i32| call(libc::SYS_socket, [family as u64, ty as u64, proto as u64, 0, 0, 0]);
        assert_eq!(sock(libc::AF_UNIX, libc::SOCK_STREAM, 0), allow);
        assert_eq!(sock(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0), allow);
        assert_eq!(sock(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, libc::IPPROTO_UDP), allow);
        assert_eq!(sock(libc::AF_NETLINK, libc::SOCK_RAW, 0), eperm);
        assert_eq!(sock(libc::AF_PACKET, libc::SOCK_RAW, 0), eperm);
        assert_eq!(sock(42, libc::SOCK_STREAM, 0), eperm);
        // Raw IP sockets, and protocols the monitor does not see.
        assert_eq!(sock(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP), eperm);
        assert_eq!(sock(libc::AF_INET6, libc::SOCK_RAW, 0), eperm);
        assert_eq!(sock(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP), eperm);
        assert_eq!(sock(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP), eperm);
        assert_eq!(call(libc::SYS_socketpair, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]), allow);
        assert_eq!(call(libc::SYS_socketpair, [libc::AF_INET as u64, 1, 0, 0, 0, 0]), eperm);
        // A profile may opt a family back in by name.
        let g = compile(&["netlink".to_owned()], &NetPolicy::default()).unwrap_or_else(|e| panic!("{e}"));
        let sock = |family: i32| run(&g.deny, X86_64, libc::SYS_socket as u32, [family as u64, 3, 0, 0, 0, 0]);
        assert_eq!(sock(libc::AF_NETLINK), allow);
        assert_eq!(sock(libc::AF_PACKET), eperm);
        assert_eq!(sock(libc::AF_INET), eperm);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = deny_rule_names().collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
