//! agent-guard's eBPF programs.
//!
//! For now this object carries the feature probes `agent-guard doctor` loads
//! (one trivial program per program type, see [`probe`]); the monitor adds
//! one module per kernel hook beside it.
#![no_std]
#![no_main]

mod probe;

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
