//! Types and names shared between the eBPF programs (`agent-guard-ebpf`) and
//! the user-space loader (`agent-guard`).
//!
//! Everything here is `#![no_std]` so that the kernel side can use it. Types
//! that cross the kernel/user boundary are `#[repr(C)]` with explicit padding
//! and a compile-time size assertion; tags are numeric with checked
//! conversion on the user side.
#![no_std]

pub mod probe;
pub mod session;
pub mod event;
