//! agent-guard's eBPF programs.
//!
//! One module per kind of hook: [`net`] (the network allowlist, cgroup
//! hooks), [`unix`] (the unix socket allowlist, cgroup hooks) and [`tracing`] (counters from system-wide tracepoints). [`maps`]
//! holds the maps, globals and counting helpers; [`probe`] the trivial
//! programs `agent-guard doctor` loads to learn what the kernel accepts.
//! One instance of this object, loaded once and pinned, serves every
//! session (see [`maps`]).
#![no_std]
#![no_main]
// Atomic fetch-add and compare-exchange: the BPF target has no atomic CAS in `core::sync`.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod maps;
mod net;
mod tracing;
mod probe;
mod unix;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this point;
    // it exists only to satisfy `no_std`.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
