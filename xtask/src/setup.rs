//! `cargo xtask setup`: installs what building and testing need, and only
//! what is missing. Says what it installs; quiet and quick otherwise.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::run;

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn say(what: &str) {
    eprintln!("xtask setup: {what}");
}

/// Debian packages not yet installed, of `wanted`.
fn missing_packages(wanted: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p.as_str()]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .cloned()
        .collect()
}

fn apt_install(packages: &[String]) -> Result<()> {
    let missing = missing_packages(packages);
    if missing.is_empty() {
        return Ok(());
    }
    say(&format!("installing Debian packages: {}", missing.join(" ")));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The LLVM major version of the nightly toolchain.
fn nightly_llvm_major() -> Result<u32> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"])).context("running `rustc +nightly -vV`")?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` printed no LLVM version")?;
    version.split('.').next().unwrap_or("").parse().with_context(|| format!("LLVM version `{version}`"))
}

fn bpf_linker_llvm_major() -> Option<u32> {
    let path = output(Command::new("sh").args(["-c", "command -v bpf-linker"]))?;
    let ldd = output(Command::new("ldd").arg(path.trim()))?;
    let lib = ldd.split_whitespace().find(|w| w.starts_with("libLLVM"))?;
    // libLLVM.so.22.1 or libLLVM-22.so
    lib.trim_start_matches("libLLVM").trim_start_matches(['.', '-']).trim_start_matches("so.").split(['.', '-']).next()?.parse().ok()
}

pub fn setup() -> Result<()> {
    // 1. nightly with rust-src, for the eBPF crate. Prefer the nightly already here:
    // a newer one may need an LLVM Debian does not offer.
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).context("rustup is required")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        say("installing the nightly toolchain with rust-src");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal", "--component", "rust-src"]))?;
    }
    let components = output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"])).unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        say("adding rust-src to nightly");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }

    // 2. LLVM of the same major as nightly's, for bpf-linker; tools for tests and benchmarks.
    let llvm = nightly_llvm_major()?;
    let mut packages: Vec<String> = [format!("llvm-{llvm}-dev"), format!("libpolly-{llvm}-dev")].into();
    packages.extend(["libzstd-dev", "zlib1g-dev", "bubblewrap", "python3"].map(String::from));
    if let Err(e) = apt_install(&packages) {
        bail!("{e:#}\nbpf-linker needs Debian's llvm-{llvm}-dev to match nightly's LLVM {llvm}; see ../shared/KERNEL.md");
    }

    // 3. bpf-linker built against that LLVM.
    match bpf_linker_llvm_major() {
        Some(v) if v == llvm => {}
        found => {
            say(&format!(
                "installing bpf-linker against LLVM {llvm}{} (takes a few minutes)",
                found.map(|v| format!(" (the installed one uses LLVM {v})")).unwrap_or_default()
            ));
            run(Command::new("cargo")
                .args(["+nightly", "install", "--force", "bpf-linker", "--no-default-features", "--features"])
                .arg(format!("llvm-{llvm}"))
                .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm}")))?;
        }
    }
    Ok(())
}
