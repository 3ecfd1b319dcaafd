//! Checks a parsed profile and resolves it into a [`Policy`], collecting
//! every problem (not only the first) with its line and column.

use std::{
    ops::Range,
    path::{Component, Path, PathBuf},
};

use nix::unistd::{Group, Uid, User};
use toml::Spanned;

use super::{
    diag::{Diagnostic, SourceFile},
    host::HostConfig,
    net::{overlaps, Destination},
    schema::ProfileFile,
    EnvPolicy, FsPolicy, Limits, NetPolicy, Policy, RunAs, SyscallPolicy,
};
use crate::sandbox::seccomp;

/// Environment variable names that usually hold secrets. A name containing
/// any of these (case-insensitively) may not be passed through.
const SECRET_MARKERS: &[&str] = &[
    "SECRET", "TOKEN", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "PRIVATE", "API_KEY",
    "APIKEY", "ACCESS_KEY", "AUTH", "COOKIE", "SESSION", "DATABASE_URL", "DSN", "SIGNING",
];

/// Whether an environment variable name looks like it carries a secret.
/// Variables that make the dynamic loader or a shell run code they name.
pub fn hands_over_code(name: &str) -> bool {
    name.starts_with("LD_") || matches!(name, "BASH_ENV" | "ENV" | "GCONV_PATH" | "LOCPATH" | "HOSTALIASES" | "NLSPATH")
}

pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| upper.contains(m))
        || upper.ends_with("_KEY")
        || upper.ends_with("_PWD")
        || upper.starts_with("AWS_")
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

struct Checker<'a> {
    source: &'a SourceFile,
    problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.problems.push(self.source.diagnostic(Some(span), message));
    }
}

pub(super) fn resolve(
    source: &SourceFile,
    file: ProfileFile,
    ctx: &super::Context,
    host: &HostConfig,
) -> Result<Policy, Vec<Diagnostic>> {
    let mut ck = Checker { source, problems: Vec::new() };
    let role = &file.role;

    let stem = source.path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if !super::valid_role_name(role.name.get_ref()) {
        ck.error(role.name.span(), format!("role name `{}` may use only lowercase letters, digits, `-` and `_`", role.name.get_ref()));
    } else if role.name.get_ref() != stem {
        ck.error(role.name.span(), format!("role name `{}` must equal the file name `{stem}.toml`", role.name.get_ref()));
    }

    if !host.environments.is_empty() && !host.environments.contains_key(role.environment.get_ref()) {
        let known: Vec<&str> = host.environments.keys().map(String::as_str).collect();
        ck.error(
            role.environment.span(),
            format!("environment `{}` is not defined in the host config; known: {}", role.environment.get_ref(), known.join(", ")),
        );
    }

    let run_as = resolve_user(&mut ck, role.user.as_ref(), role.group.as_ref());
    let home = match &run_as {
        Some(r) => User::from_uid(Uid::from_raw(r.uid)).ok().flatten().map(|u| u.dir),
        None => User::from_uid(Uid::from_raw(ctx.caller_uid)).ok().flatten().map(|u| u.dir),
    }
    .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
    .unwrap_or_else(|| PathBuf::from("/nonexistent"));

    let fs = &file.filesystem;
    let expand_all = |ck: &mut Checker<'_>, list: &[Spanned<String>]| -> Vec<PathBuf> {
        list.iter().filter_map(|p| expand_path(ck, p, &ctx.workdir, &home)).collect()
    };
    let filesystem = FsPolicy {
        read: expand_all(&mut ck, &fs.read),
        write: expand_all(&mut ck, &fs.write),
        exec: expand_all(&mut ck, &fs.exec),
        deny: expand_all(&mut ck, &fs.deny),
    };

    let mut connect = Vec::new();
    for entry in &file.network.connect {
        match entry.get_ref().parse::<Destination>() {
            Ok(d) => connect.push(d),
            Err(e) => ck.error(entry.span(), e),
        }
    }
    let mut unix = Vec::new();
    for entry in &file.network.unix {
        let Some(path) = expand_path(&mut ck, entry, &ctx.workdir, &home) else { continue };
        let len = path.as_os_str().len();
        if len > agent_guard_common::session::UNIX_PATH_LEN {
            ck.error(
                entry.span(),
                format!("`{}` is {len} bytes long: a unix socket's path holds at most {} bytes", path.display(), agent_guard_common::session::UNIX_PATH_LEN),
            );
            continue;
        }
        unix.push(path);
    }
    let network = NetPolicy { connect, bind: file.network.bind.iter().map(|b| *b.get_ref()).collect(), unix };

    let lim = &file.limits;
    if let Some(p) = &lim.processes {
        if *p.get_ref() == 0 {
            ck.error(p.span(), "`processes` must be at least 1 (the agent itself)");
        }
    }
    if let Some(m) = &lim.memory {
        if m.get_ref().0 < 1 << 20 {
            ck.error(m.span(), "`memory` below 1MiB cannot run any program; expected e.g. \"512MiB\"");
        }
    }
    if let Some(w) = &lim.wall_time {
        if w.get_ref().0.is_zero() {
            ck.error(w.span(), "`wall_time` must be longer than zero");
        }
    }
    let limits = Limits {
        processes: lim.processes.as_ref().map(|v| *v.get_ref()),
        memory: lim.memory.as_ref().map(|v| *v.get_ref()),
        wall_time: lim.wall_time.as_ref().map(|v| *v.get_ref()),
        execs: lim.execs.as_ref().map(|v| *v.get_ref()),
        file_writes: lim.file_writes.as_ref().map(|v| *v.get_ref()),
        connects: lim.connects.as_ref().map(|v| *v.get_ref()),
        bytes_out: lim.bytes_out.as_ref().map(|v| *v.get_ref()),
        on_limit: lim.on_limit,
    };

    let mut env = EnvPolicy::default();
    for name in &file.env.pass {
        let n = name.get_ref();
        if !valid_env_name(n) {
            ck.error(name.span(), format!("`{n}` is not an environment variable name"));
        } else if hands_over_code(n) {
            ck.error(
                name.span(),
                format!("`{n}` would let whoever starts the session choose code the agent loads (through the daemon: any granted user); set a fixed value with `set` instead"),
            );
        } else if looks_secret(n) {
            ck.error(
                name.span(),
                format!("`{n}` looks like a secret; secrets stay out of the agent's environment (hand the agent a short-lived credential through a file or a broker instead)"),
            );
        } else {
            env.pass.push(n.clone());
        }
    }
    for (name, value) in &file.env.set {
        if valid_env_name(name.get_ref()) {
            let value = value.replace("{workdir}", &ctx.workdir.to_string_lossy()).replace("{home}", &home.to_string_lossy());
            env.set.insert(name.get_ref().clone(), value);
        } else {
            ck.error(name.span(), format!("`{}` is not an environment variable name", name.get_ref()));
        }
    }

    let mut syscalls = SyscallPolicy::default();
    for call in &file.syscalls.allow {
        if seccomp::deny_rule_names().any(|n| n == call.get_ref()) {
            syscalls.allow.push(call.get_ref().clone());
        } else {
            let known: Vec<&str> = seccomp::deny_rule_names().collect();
            ck.error(
                call.span(),
                format!("`{}` is not in the default deny set, so there is nothing to allow; the set is: {}", call.get_ref(), known.join(", ")),
            );
        }
    }

    syscalls.denied = seccomp::deny_rule_names().filter(|n| !syscalls.allow.iter().any(|a| a == n)).map(str::to_owned).collect();

    check_environments(&mut ck, &file, &filesystem, &network, host);
    check_view(&mut ck, &file, &filesystem);

    let mut baseline = super::BaselinePolicy::default();
    if let Some(b) = &file.baseline {
        if let Some(s) = &b.sensitivity {
            let v = *s.get_ref();
            if v.is_finite() && v > 0.0 {
                baseline.sensitivity = v;
            } else {
                ck.error(s.span(), "`sensitivity` must be a positive number, e.g. 4.0");
            }
        }
        if let Some(m) = &b.min_sessions {
            if *m.get_ref() == 0 {
                ck.error(m.span(), "`min_sessions` must be at least 1");
            }
            baseline.min_sessions = *m.get_ref();
        }
        baseline.on_deviation = b.on_deviation;
        baseline.record_reads = b.record_reads.unwrap_or(true);
    }

    if !ck.problems.is_empty() {
        return Err(ck.problems);
    }
    Ok(Policy {
        role: role.name.get_ref().clone(),
        description: role.description.clone(),
        environment: role.environment.get_ref().clone(),
        source: source.path.clone(),
        sha256: {
            use sha2::Digest;
            sha2::Sha256::digest(source.text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
        },
        run_as,
        workdir: ctx.workdir.clone(),
        home,
        filesystem,
        network,
        limits,
        env,
        syscalls,
        baseline,
    })
}

fn resolve_user(ck: &mut Checker<'_>, user: Option<&Spanned<String>>, group: Option<&Spanned<String>>) -> Option<RunAs> {
    let Some(user) = user else {
        if let Some(g) = group {
            ck.error(g.span(), "`group` needs `user`: name the user the agent runs as");
        }
        return None;
    };
    let found = match User::from_name(user.get_ref()) {
        Ok(Some(u)) => u,
        Ok(None) => {
            ck.error(user.span(), format!("user `{}` does not exist on this host", user.get_ref()));
            return None;
        }
        Err(e) => {
            ck.error(user.span(), format!("looking up user `{}`: {e}", user.get_ref()));
            return None;
        }
    };
    let (group_name, gid) = match group {
        None => {
            let name = Group::from_gid(found.gid).ok().flatten().map_or_else(|| found.gid.to_string(), |g| g.name);
            (name, found.gid.as_raw())
        }
        Some(g) => match Group::from_name(g.get_ref()) {
            Ok(Some(gr)) => (gr.name, gr.gid.as_raw()),
            _ => {
                ck.error(g.span(), format!("group `{}` does not exist on this host", g.get_ref()));
                return None;
            }
        },
    };
    Some(RunAs { user: found.name, uid: found.uid.as_raw(), group: group_name, gid })
}

/// Expands `{workdir}` and `{home}`, and checks the result is an absolute
/// path without `..`.
fn expand_path(ck: &mut Checker<'_>, raw: &Spanned<String>, workdir: &Path, home: &Path) -> Option<PathBuf> {
    let text = raw.get_ref();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            ck.error(raw.span(), format!("`{text}` has an unclosed `{{`"));
            return None;
        };
        match &rest[open + 1..open + close] {
            "workdir" => out.push_str(&workdir.to_string_lossy()),
            "home" => out.push_str(&home.to_string_lossy()),
            other => {
                ck.error(raw.span(), format!("unknown placeholder `{{{other}}}` in `{text}`; expected {{workdir}} or {{home}}"));
                return None;
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    let path = PathBuf::from(out);
    if !path.is_absolute() {
        ck.error(raw.span(), format!("`{text}` must be an absolute path (or start with {{workdir}} or {{home}})"));
        return None;
    }
    if path.components().any(|c| c == Component::ParentDir) {
        ck.error(raw.span(), format!("`{text}` may not contain `..`"));
        return None;
    }
    Some(path.components().collect())
}

/// What the session's filesystem view cannot give (docs/profiles.md,
/// "the most specific path wins"): one path both writable and
/// executable, and writes to kernel settings.
fn check_view(ck: &mut Checker<'_>, file: &ProfileFile, fs: &FsPolicy) {
    let raw = &file.filesystem;
    if raw.exec.len() == fs.exec.len() {
        for (span, path) in raw.exec.iter().zip(&fs.exec) {
            if fs.write.contains(path) {
                ck.error(
                    span.span(),
                    format!("`{}` is in both `write` and `exec`: what the agent writes there it could run; keep them apart (an `exec` entry beneath a `write` entry is read-only for the session)", path.display()),
                );
            }
        }
    }
    if raw.write.len() == fs.write.len() {
        for (span, path) in raw.write.iter().zip(&fs.write) {
            if path.starts_with("/sys") || path.starts_with("/proc/sys") || path.starts_with("/proc/sysrq-trigger") {
                ck.error(span.span(), format!("`{}`: /sys and /proc/sys are read-only in every session, even for an agent running as root", path.display()));
            }
        }
    }
}

/// A `[filesystem]` key, its entries as written, and as expanded.
type PathList<'a> = (&'a str, &'a [Spanned<String>], &'a [PathBuf]);

/// A profile of one environment may not reach another environment's
/// networks or paths. A path that merely contains another environment's
/// path is accepted when `deny` masks that path.
fn check_environments(ck: &mut Checker<'_>, file: &ProfileFile, fs: &FsPolicy, net: &NetPolicy, host: &HostConfig) {
    let own = file.role.environment.get_ref();
    let raw = &file.filesystem;
    // `fs.*` hold only the entries that expanded, so match them back to spans by position
    // only when nothing was dropped; otherwise errors above already stop the profile.
    let lists: [PathList<'_>; 4] = [
        ("read", &raw.read, &fs.read),
        ("write", &raw.write, &fs.write),
        ("exec", &raw.exec, &fs.exec),
        ("unix", &file.network.unix, &net.unix),
    ];
    for (other, def) in host.environments.iter().filter(|(name, _)| *name != own) {
        for (key, spans, paths) in lists {
            if spans.len() != paths.len() {
                continue;
            }
            for (span, path) in spans.iter().zip(paths) {
                for theirs in &def.paths {
                    if path.starts_with(theirs) {
                        ck.error(span.span(), format!("`{}` ({key}) lies in {} of environment `{other}`; a `{own}` role may not reach it", path.display(), theirs.display()));
                    } else if theirs.starts_with(path) && !fs.deny.iter().any(|d| theirs.starts_with(d)) {
                        ck.error(span.span(), format!("`{}` ({key}) contains {} of environment `{other}`; add it to `deny` or narrow the path", path.display(), theirs.display()));
                    }
                }
            }
        }
        if file.network.connect.len() == net.connect.len() {
            for (span, dest) in file.network.connect.iter().zip(&net.connect) {
                if let Some(theirs) = def.cidrs.iter().find(|c| overlaps(c, &dest.net)) {
                    ck.error(span.span(), format!("`{dest}` reaches {theirs} of environment `{other}`; a `{own}` role may not connect there"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
