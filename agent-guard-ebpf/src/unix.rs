//! The unix socket allowlist: `cgroup/connect_unix` (connect on stream,
//! seqpacket and datagram sockets) and `cgroup/sendmsg_unix` (a datagram
//! sent with an address), Linux 6.7+, attached to the cgroup that holds
//! every session like the IP hooks in [`crate::net`]. A session's task
//! may connect only to the socket files its profile lists (`[network]
//! unix`); anything else fails with EPERM, is counted and reported.
//! Abstract sockets (`sun_path[0] == 0`; landlock scopes them) and tasks
//! in no session pass untouched.
//!
//! The context has no field for `sun_path`. What the program's context
//! really points to is the kernel's `struct bpf_sock_addr_kern`, whose
//! `uaddr` and `uaddrlen` (offsets from the kernel's BTF, like every
//! other offset here) give the address the caller passed, already
//! copied into kernel memory; `bpf_probe_read_kernel` reads both.

use agent_guard_common::{
    event::{EventKind, UnixConnectEvent},
    session::{UnixKey, OFF_SOCK_ADDR_UADDR, OFF_SOCK_ADDR_UADDRLEN, UNIX_PATH_LEN},
};
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::map,
    maps::{HashMap, PerCpuArray},
};

use crate::{
    maps::{offset, Session},
    net::{count_connect, ALLOW, DENY},
};

/// The socket files each session may connect to: (cgroup id, whole
/// path, zero-filled) -> 1. One hash lookup per connect, whatever the
/// number of entries.
#[map]
pub static UNIX_ALLOW: HashMap<UnixKey, u8> = HashMap::with_max_entries(65536, 0);

/// Where the event (and in it the lookup key) is built: too large for the stack.
#[map]
static UNIX_SCRATCH: PerCpuArray<UnixConnectEvent> = PerCpuArray::with_max_entries(1, 0);

/// `offsetof(struct sockaddr_un, sun_path)`.
const SUN_PATH: u32 = 2;

/// `struct bpf_sock_addr_kern` is 40 bytes (6.7+); masking the offsets
/// bounds the pointer arithmetic for the verifier.
const KERN_CTX_MASK: usize = 0x3f;

#[unsafe(no_mangle)]
#[unsafe(link_section = "cgroup/connect_unix")]
pub fn connect_unix(ctx: *mut bpf_sock_addr) -> i32 {
    check_unix(ctx as *const u8, false)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "cgroup/sendmsg_unix")]
pub fn sendmsg_unix(ctx: *mut bpf_sock_addr) -> i32 {
    check_unix(ctx as *const u8, true)
}

/// What the address turned out to be.
enum Target {
    /// A pathname socket: decide.
    Path,
    /// Abstract (or, never reaching here, unnamed): not this hook's business.
    Other,
}

#[inline(always)]
fn check_unix(kern: *const u8, via_sendmsg: bool) -> i32 {
    let Some(session) = Session::current() else { return ALLOW };
    let Some(ev) = UNIX_SCRATCH.get_ptr_mut(0) else {
        // Cannot happen (a per-CPU array of one always has its element);
        // fail closed.
        return DENY;
    };
    // SAFETY: the element of our per-CPU scratch map, ours for this program's run.
    let ev = unsafe { &mut *ev };
    ev.allowed = 0;
    ev.via_sendmsg = via_sendmsg as u8;
    ev._pad = [0; 6];
    ev.target.cgroup = session.cgroup;
    ev.target._pad = [0; 4];
    let allowed = match read_path(kern, &mut ev.target.path) {
        Ok(Target::Other) => return ALLOW,
        Ok(Target::Path) => session.unix_any() || UNIX_ALLOW.get_ptr(&ev.target).is_some(),
        // An address that cannot be read is refused (and reported with an empty path).
        Err(()) => {
            ev.target.path = [0; UNIX_PATH_LEN];
            false
        }
    };
    let allowed = count_connect(&session, allowed);
    ev.allowed = allowed as u8;
    ev.header = session.header(EventKind::UnixConnect as u32);
    session.emit_ref(ev);
    if allowed {
        ALLOW
    } else {
        DENY
    }
}

/// Reads `sun_path` into `path`: the bytes up to the first NUL or the end
/// of the address, zero-filled after (as the kernel itself will read it).
#[inline(always)]
fn read_path(kern: *const u8, path: &mut [u8; UNIX_PATH_LEN]) -> Result<Target, ()> {
    let uaddr_at = kern.wrapping_add(offset(OFF_SOCK_ADDR_UADDR) & KERN_CTX_MASK);
    let len_at = kern.wrapping_add(offset(OFF_SOCK_ADDR_UADDRLEN) & KERN_CTX_MASK);
    // SAFETY: reads of the kernel's bpf_sock_addr_kern through the helper,
    // which fails cleanly on a bad address.
    let (uaddr, len) = unsafe {
        (
            bpf_probe_read_kernel(uaddr_at as *const u64).map_err(|_| ())?,
            bpf_probe_read_kernel(len_at as *const u32).map_err(|_| ())?,
        )
    };
    // The kernel checked the address before the hook: AF_UNIX, longer than
    // the family, at most sizeof(struct sockaddr_un).
    let n = len.saturating_sub(SUN_PATH) as usize;
    if n == 0 {
        return Ok(Target::Other);
    }
    // SAFETY: as above; the kernel copy is a sockaddr_storage (128 bytes),
    // so 2 + 108 bytes lie inside it.
    unsafe { bpf_probe_read_kernel_buf((uaddr as usize + SUN_PATH as usize) as *const u8, path).map_err(|_| ())? };
    if path[0] == 0 {
        return Ok(Target::Other);
    }
    let mut end = false;
    let mut i = 0;
    while i < UNIX_PATH_LEN {
        if i >= n || path[i] == 0 {
            end = true;
        }
        if end {
            path[i] = 0;
        }
        i += 1;
    }
    Ok(Target::Path)
}
