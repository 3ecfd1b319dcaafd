//! The network allowlist: `cgroup/connect4|6` and `cgroup/sendmsg4|6`,
//! attached once to the cgroup that holds every session, allow a
//! session's tasks only its profile's destinations (address prefix, port
//! and protocol, TCP or UDP; IPv4 and IPv6); `bind4|6` only its ports. Returning 0 makes the call fail with
//! EPERM. `cgroup_skb/egress` counts the bytes each session sends and
//! drops packets past its `bytes_out` limit. Tasks in no session pass.

use agent_guard_common::{
    event::{ConnectEvent, EventKind},
    session::Counter,
};
use aya_ebpf::{
    helpers::gen::bpf_skb_cgroup_id,
    macros::{cgroup_skb, cgroup_sock_addr},
    maps::lpm_trie::Key,
    programs::{SkBuffContext, SockAddrContext},
};

use agent_guard_common::session::{net_key, proto_bit, NET_V4_KEY, NET_V6_KEY};

use crate::maps::{Session, NET_V4, NET_V6};

pub(crate) const ALLOW: i32 = 1;
pub(crate) const DENY: i32 = 0;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    check_v4(&ctx, false)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    check_v6(&ctx, false)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    check_v4(&ctx, true)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    check_v6(&ctx, true)
}

#[cgroup_sock_addr(bind4)]
pub fn bind4(ctx: SockAddrContext) -> i32 {
    check_bind(&ctx)
}

#[cgroup_sock_addr(bind6)]
pub fn bind6(ctx: SockAddrContext) -> i32 {
    check_bind(&ctx)
}

// The verifier allows only the fields of the program's own family, so the
// IPv4 and IPv6 paths never touch each other's fields.

#[inline(always)]
fn check_v4(ctx: &SockAddrContext, via_sendmsg: bool) -> i32 {
    let Some(session) = Session::current() else { return ALLOW };
    // SAFETY: the kernel passes a valid bpf_sock_addr for this program type.
    let sa = unsafe { &*ctx.sock_addr };
    let port = u16::from_be(sa.user_port as u16);
    let ip = sa.user_ip4.to_ne_bytes();
    let key = Key::new(64 + 32, net_key::<NET_V4_KEY>(session.cgroup, &ip));
    // The socket's protocol (TCP or UDP; any other matches no rule).
    let allowed = NET_V4.get(&key).is_some_and(|r| r.allows(port, proto_bit(sa.protocol)));
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip);
    decide(&session, allowed, AF_INET as u16, sa.protocol as u16, port, addr, via_sendmsg)
}

#[inline(always)]
fn check_v6(ctx: &SockAddrContext, via_sendmsg: bool) -> i32 {
    let Some(session) = Session::current() else { return ALLOW };
    // SAFETY: as above.
    let sa = unsafe { &*ctx.sock_addr };
    let port = u16::from_be(sa.user_port as u16);
    let mut ip = [0u8; 16];
    ip[..4].copy_from_slice(&sa.user_ip6[0].to_ne_bytes());
    ip[4..8].copy_from_slice(&sa.user_ip6[1].to_ne_bytes());
    ip[8..12].copy_from_slice(&sa.user_ip6[2].to_ne_bytes());
    ip[12..].copy_from_slice(&sa.user_ip6[3].to_ne_bytes());
    let key = Key::new(64 + 128, net_key::<NET_V6_KEY>(session.cgroup, &ip));
    let allowed = NET_V6.get(&key).is_some_and(|r| r.allows(port, proto_bit(sa.protocol)));
    decide(&session, allowed, AF_INET6 as u16, sa.protocol as u16, port, ip, via_sendmsg)
}

/// Counts a connect (or addressed send) attempt, IP or unix, and applies
/// the session's end and its connects limit: whether it stays allowed.
#[inline(always)]
pub(crate) fn count_connect(session: &Session, mut allowed: bool) -> bool {
    // A session a limit has ended sends nothing more.
    if session.ended() {
        allowed = false;
    }
    let attempts = session.add(Counter::Connects, 1);
    // Past the connects limit nothing more goes out, whatever the destination.
    if session.over_limit(Counter::Connects, attempts, 1, false) {
        allowed = false;
    }
    if !allowed {
        session.add(Counter::ConnectsDenied, 1);
    }
    allowed
}

/// Counts the attempt, applies the connects limit, reports, and answers.
#[inline(always)]
fn decide(session: &Session, allowed: bool, family: u16, protocol: u16, port: u16, addr: [u8; 16], via_sendmsg: bool) -> i32 {
    let allowed = count_connect(session, allowed);
    session.emit(ConnectEvent {
        header: session.header(EventKind::Connect as u32),
        family,
        protocol,
        port,
        allowed: allowed as u8,
        via_sendmsg: via_sendmsg as u8,
        addr,
    });
    if allowed {
        ALLOW
    } else {
        DENY
    }
}

#[inline(always)]
fn check_bind(ctx: &SockAddrContext) -> i32 {
    let Some(session) = Session::current() else { return ALLOW };
    // SAFETY: as above.
    let sa = unsafe { &*ctx.sock_addr };
    let port = u16::from_be(sa.user_port as u16);
    // Port 0 asks the kernel for an ephemeral port (UDP clients do this);
    // landlock still decides for TCP.
    if port == 0 {
        return ALLOW;
    }
    if session.bind_allows(port) {
        ALLOW
    } else {
        DENY
    }
}

/// Counts every packet a session sends (IP length, headers included);
/// past the `bytes_out` limit, packets are dropped. The session is the
/// packet's socket's cgroup: egress may run outside the sender's context.
#[cgroup_skb]
pub fn egress(ctx: SkBuffContext) -> i32 {
    // SAFETY: the kernel passes a valid __sk_buff for this program type.
    let Some(session) = Session::of(unsafe { bpf_skb_cgroup_id(ctx.skb.skb) }) else { return ALLOW };
    let len = u64::from(ctx.len());
    let total = session.add(Counter::BytesOut, len);
    if session.over_limit(Counter::BytesOut, total, len, false) {
        DENY
    } else {
        ALLOW
    }
}
