//! Builds the eBPF object (`agent-guard-ebpf`) with the nightly toolchain
//! and `bpf-linker`, so that `aya::include_bytes_aligned!` can embed it.
//!
//! The eBPF crate is its own workspace (it targets `bpfel-unknown-none`);
//! it is built into `target/bpf` so that builds stay incremental. Run
//! `cargo xtask setup` once to install nightly, `rust-src` and bpf-linker.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("agent-guard lives inside the workspace");
    let ebpf_dir = workspace.join("agent-guard-ebpf");
    let common_dir = workspace.join("agent-guard-common");
    for dir in [&ebpf_dir.join("src"), &common_dir.join("src")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    for file in ["Cargo.toml", ".cargo/config.toml", "rust-toolchain.toml"] {
        println!("cargo:rerun-if-changed={}", ebpf_dir.join(file).display());
    }

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("bpf");
    build_ebpf(&ebpf_dir, &target_dir);

    let object = target_dir.join("bpfel-unknown-none/release/agent-guard");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("agent-guard.bpf.o");
    std::fs::copy(&object, &out).unwrap_or_else(|err| panic!("copying {} to {}: {err}", object.display(), out.display()));
}

fn build_ebpf(ebpf_dir: &Path, target_dir: &Path) {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--release", "--target-dir"])
        .arg(target_dir)
        .current_dir(ebpf_dir);
    // The outer (stable) build's settings must not leak into the nightly BPF build.
    for key in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "CARGO",
    ] {
        cmd.env_remove(key);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|err| panic!("running {cmd:?}: {err}; run `cargo xtask setup` first"));
    if !status.success() {
        panic!("building the eBPF programs failed ({status}); `cargo xtask setup` installs nightly, rust-src and bpf-linker");
    }
}
