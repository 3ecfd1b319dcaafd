//! The escape corpus: techniques a determined agent would try, run inside
//! real sessions of a profile by `agent-guard profile test`, and by the
//! integration tests through the same command.
//!
//! Each technique is a small program of this binary (`agent-guard
//! __escape TECHNIQUE ARGS`, [`inside`]) that tries one escape for real and
//! reports, one JSON line per step, what the kernel answered. The harness
//! ([`harness`]) prepares what the technique aims at on the host (a secret
//! file, a process with a secret in its argv, a loopback listener, a unix
//! socket server...), runs the session, and judges from the host wherever
//! the effect shows there: a file that changed, a setuid file left in the
//! workdir, a process that outlived the session, a signal that arrived, a
//! datagram that reached the listener, a secret that reached the agent's
//! output.

pub mod elf;
pub mod harness;
pub mod inside;

use serde::{Deserialize, Serialize};

/// One technique of the corpus.
#[derive(Clone, Copy, Debug)]
pub struct Technique {
    /// The name `profile test` prints and `__escape` takes.
    pub id: &'static str,
    /// The class of escape (docs/sandbox.md's table).
    pub class: &'static str,
    /// What it tries, in a line.
    pub what: &'static str,
}

const fn t(id: &'static str, class: &'static str, what: &'static str) -> Technique {
    Technique { id, class, what }
}

/// The corpus, in the order it runs and prints.
pub const TECHNIQUES: &[Technique] = &[
    t("exec-written", "exec", "execve a copy of a program the agent wrote into a writable directory"),
    t("loader-exec", "exec", "the dynamic loader runs a readable ELF that `exec` does not list"),
    t("execveat", "exec", "execveat(AT_EMPTY_PATH) of an O_PATH fd of a readable ELF that `exec` does not list"),
    t("ld-preload", "exec", "LD_PRELOAD of a shared object the agent wrote, into an allowed program"),
    t("dlopen", "exec", "dlopen of a shared object the agent wrote"),
    t("mmap-exec", "exec", "mmap(PROT_EXEC) of a file the agent wrote, and a call into it"),
    t("memfd-exec", "exec", "fexecve of an executable memfd holding a copy of an allowed program"),
    t("ro-subtree", "subtree", "add, modify, chmod, rename, remove under a read/exec entry beneath a write entry, and rename it or its parent"),
    t("proc-cmdline", "proc", "read a host process's command line through /proc"),
    t("proc-environ", "proc", "read a host process's environment through /proc"),
    t("proc-mem", "proc", "read a host process's memory through /proc/PID/mem"),
    t("proc-sys-write", "proc", "write /proc/sys/kernel/hostname (the value it holds, so the host never changes)"),
    t("sys-write", "proc", "open a file under /sys for writing"),
    t("unix-connect", "unix", "connect to a host unix socket server at a path `[network] unix` does not list, and send to it"),
    t("netlink-route", "families", "open a netlink route socket and dump the host's interfaces"),
    t("raw-socket", "families", "open raw IP and ICMP sockets"),
    t("packet-socket", "families", "open an AF_PACKET socket"),
    t("tcp-unlisted", "network", "TCP to a loopback listener on a port the profile does not allow"),
    t("udp-unlisted", "network", "UDP to a loopback listener on a port the profile does not allow"),
    t("udp-to-tcp-only", "network", "UDP to a loopback destination the profile allows for TCP only"),
    t("tcp-to-udp-only", "network", "TCP to a loopback destination the profile allows for UDP only"),
    t("setid-chmod", "setid", "chmod 4755 a file the agent created"),
    t("setid-fchmod", "setid", "fchmod 2755 a file the agent created"),
    t("setid-fchmodat", "setid", "fchmodat 6755 a file, and g+s on a directory"),
    t("setid-open", "setid", "open(O_CREAT) and creat with mode 04755"),
    t("setid-mknod", "setid", "mknod a regular file with mode 04755"),
    t("io-uring", "syscalls", "io_uring_setup"),
    t("ptrace-parent", "syscalls", "PTRACE_ATTACH to the session's parent (the supervisor) and to a host process"),
    t("process-vm-readv", "syscalls", "process_vm_readv a secret from a host process's memory"),
    t("process-vm-writev", "syscalls", "process_vm_writev into a host process's memory"),
    t("namespaces", "syscalls", "unshare and clone into new user, mount and network namespaces; clone3"),
    t("mount", "syscalls", "mount a tmpfs over the workdir; fsopen"),
    t("bpf", "syscalls", "create a BPF map"),
    t("perf-event-open", "syscalls", "open a perf event on itself"),
    t("keyctl", "syscalls", "look up the user keyring (shared beyond the session)"),
    t("x32-abi", "syscalls", "getpid through the x32 ABI"),
    t("i386-abi", "syscalls", "getpid through int 0x80 (the i386 ABI)"),
    t("tiocsti", "syscalls", "push a character into its controlling terminal's input (TIOCSTI)"),
    t("inherited-fd", "session", "find and read a descriptor its caller left open without close-on-exec"),
    t("env-secret", "session", "find a secret-looking variable of its caller's environment"),
    t("setsid-survivor", "session", "setsid and double-fork a process that outlives the session"),
    t("signal-host", "session", "signal a host process outside the session"),
    t("cgroup-escape", "session", "move itself out of the session cgroup (its parent, the root, v1 hierarchies)"),
    t("fork-bomb", "limits", "fork past the profile's `processes` limit"),
    t("write-flood", "limits", "write past the profile's `file_writes` limit"),
    t("hardlink-in", "boundary", "hard-link a file outside the readable paths into the workdir, and read it"),
    t("symlink-read", "boundary", "symlink from the workdir to a file outside the readable paths, and read it"),
    t("rename-out", "boundary", "rename a file from the workdir to a directory outside the writable paths"),
    t("path-swap-race", "boundary", "swap a symlink between an allowed and a forbidden file while another thread opens it"),
    t("chmod-readable", "boundary", "chmod and chown a file it may only read (to its own mode and owner)"),
];

/// Finds a technique by id.
pub fn technique(id: &str) -> Option<&'static Technique> {
    TECHNIQUES.iter().find(|t| t.id == id)
}

/// One line a technique prints: a step and what the kernel answered.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Step {
    /// What was tried, e.g. `connect 127.0.0.1:4000`.
    pub step: String,
    /// Whether this step's success is itself the escape (an attempt), or
    /// only prepares one (set-up: writing the shared object first).
    pub attempt: bool,
    /// Whether the kernel let it happen.
    pub ok: bool,
    /// The errno, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// What came back: a message, bytes read (escaped), a pid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The verdict on one technique.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// The escape did not happen; `how` says what the kernel answered.
    Blocked { how: String },
    /// It happened, and the profile allows it: `rule` names the rule
    /// (`exec: /usr/bin`, `network: 127.0.0.1:8080/tcp`, `syscalls: ptrace`).
    AllowedByProfile { rule: String, evidence: String },
    /// It happened, and nothing in the profile allows it.
    Escaped { evidence: String },
    /// The profile has nothing this technique could aim at (no `processes`
    /// limit, no read-only subtree inside a writable tree, ...).
    NotApplicable { why: String },
    /// The technique could not be run or judged (the session did not
    /// start, say): neither blocked nor escaped.
    Error { why: String },
}

impl Outcome {
    /// The word `profile test` prints.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Blocked { .. } => "blocked",
            Outcome::AllowedByProfile { .. } => "allowed by the profile",
            Outcome::Escaped { .. } => "ESCAPED",
            Outcome::NotApplicable { .. } => "not applicable",
            Outcome::Error { .. } => "ERROR",
        }
    }

    /// The detail printed after the word.
    pub fn detail(&self) -> String {
        match self {
            Outcome::Blocked { how } => how.clone(),
            Outcome::AllowedByProfile { rule, evidence } => format!("{rule} ({evidence})"),
            Outcome::Escaped { evidence } => evidence.clone(),
            Outcome::NotApplicable { why } => why.clone(),
            Outcome::Error { why } => why.clone(),
        }
    }
}

/// A technique's result, as `--json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct TechniqueResult {
    pub technique: &'static str,
    pub class: &'static str,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The steps the technique reported (empty when it did not run).
    pub steps: Vec<Step>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_named_in_the_corpus() {
        let mut ids: Vec<&str> = TECHNIQUES.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
        for t in TECHNIQUES {
            assert!(inside::implemented(t.id), "{} has no program in corpus::inside", t.id);
        }
    }

    #[test]
    fn step_lines_round_trip() {
        let s = Step { step: "x".into(), attempt: true, ok: false, errno: Some(1), detail: String::new() };
        let line = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Step>(&line).unwrap(), s);
    }
}
