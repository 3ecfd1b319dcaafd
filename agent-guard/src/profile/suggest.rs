//! `profile suggest`: a least-privilege profile that would have allowed
//! exactly what some recorded sessions did, written as commented TOML.
//!
//! Paths are collapsed the way people write profiles: the working
//! directory as `{workdir}`, system trees whole, other files one by one
//! (their directory once three or more of its files were read). Limits are
//! the observed peaks plus a margin. Every rule says where it came from.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::Path,
};

use crate::{
    baseline::{under, SYSTEM_TREES},
    history::SessionHistory,
};

/// Device files a program opens in passing.
const DEVICES: [&str; 5] = ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/tty"];

/// Files read in one directory before the directory is suggested instead.
const DIR_AFTER: usize = 3;

/// `path` as the session saw it, absolute (relative paths are the working directory's).
fn absolute(path: &str, workdir: Option<&str>) -> String {
    match (path.starts_with('/'), workdir) {
        (false, Some(w)) => format!("{}/{}", w.trim_end_matches('/'), path.trim_start_matches("./")),
        _ => path.to_owned(),
    }
}

/// `path` with the working directory written as `{workdir}`.
fn placeholder(path: &str, workdir: Option<&str>) -> String {
    match workdir {
        Some(w) if under(path, w) => format!("{{workdir}}{}", &path[w.len()..]),
        _ => path.to_owned(),
    }
}

/// Rules with the paths that justify them (a few named, the rest counted).
#[derive(Default)]
struct Rules(BTreeMap<String, BTreeSet<String>>);

impl Rules {
    fn add(&mut self, rule: String, because: &str) {
        self.0.entry(rule).or_default().insert(because.to_owned());
    }

    fn toml_list(&self, key: &str, out: &mut String) {
        let _ = writeln!(out, "{key} = [");
        for (rule, why) in &self.0 {
            let mut shown: Vec<&str> = why.iter().filter(|w| *w != rule).take(2).map(String::as_str).collect();
            let more = why.len().saturating_sub(shown.len() + usize::from(why.contains(rule)));
            let mut comment = String::new();
            if !shown.is_empty() {
                shown.iter_mut().for_each(|s| *s = s.trim());
                comment = format!("  # {}{}", shown.join(", "), if more > 0 { format!(" and {more} more") } else { String::new() });
            }
            let _ = writeln!(out, "    {},{}", toml_str(rule), crate::escape::for_terminal(&comment));
        }
        let _ = writeln!(out, "]");
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Rounds up to a number people write.
fn roomy(peak: u64) -> u64 {
    let want = peak + (peak / 2).max(10);
    let step = match want {
        0..=100 => 10,
        101..=1000 => 50,
        1001..=10_000 => 500,
        _ => 10u64.pow(want.ilog10() - 1),
    };
    want.div_ceil(step) * step
}

/// Sizes as a profile writes them.
fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{}MiB", n.div_ceil(1 << 20))
    } else {
        format!("{}KiB", n.div_ceil(1 << 10).max(1))
    }
}

/// Reads: the working directory, system trees, devices, `/proc`, else
/// files (or their directory once it holds three read files).
fn read_rules(sessions: &[SessionHistory], out: &mut Rules) {
    let mut files_by_dir: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for h in sessions {
        let w = h.workdir();
        let w = w.as_deref();
        for p in h.reads() {
            let abs = absolute(&p, w);
            if w.is_some_and(|w| under(&abs, w)) {
                out.add("{workdir}".to_owned(), &placeholder(&abs, w));
            } else if let Some(tree) = SYSTEM_TREES.iter().find(|t| under(&abs, t)) {
                out.add((*tree).to_owned(), &abs);
            } else if DEVICES.contains(&abs.as_str()) {
                out.add(abs.clone(), &abs);
            } else if under(&abs, "/proc") {
                out.add("/proc".to_owned(), &abs);
            } else {
                let dir = Path::new(&abs).parent().map_or_else(|| "/".to_owned(), |d| d.to_string_lossy().into_owned());
                files_by_dir.entry(dir).or_default().insert(abs);
            }
        }
    }
    for (dir, files) in files_by_dir {
        if files.len() >= DIR_AFTER {
            for f in &files {
                out.add(dir.clone(), f);
            }
        } else {
            for f in files {
                out.add(f.clone(), &f);
            }
        }
    }
}

/// Writes: the directory of each file written (in `{workdir}` terms), devices as themselves.
fn write_rules(sessions: &[SessionHistory], out: &mut Rules) {
    for h in sessions {
        let w = h.workdir();
        let w = w.as_deref();
        for p in h.writes() {
            let abs = absolute(&p, w);
            if DEVICES.contains(&abs.as_str()) {
                out.add(abs.clone(), &abs);
                continue;
            }
            let dir = Path::new(&abs).parent().map_or_else(|| "/".to_owned(), |d| d.to_string_lossy().into_owned());
            out.add(placeholder(&dir, w), &placeholder(&abs, w));
        }
    }
}

/// The original profile's table `key`, if its file is still readable.
fn original_table(sessions: &[SessionHistory], key: &str) -> Option<toml::Value> {
    let path = sessions.iter().find_map(|h| h.start_data()?["profile"].as_str().map(str::to_owned))?;
    let text = std::fs::read_to_string(path).ok()?;
    let v: toml::Value = toml::from_str(&text).ok()?;
    v.get(key).cloned()
}

/// The suggested profile for role `name`, learned from `sessions`.
pub fn suggest(name: &str, sessions: &[SessionHistory]) -> String {
    let mut out = String::new();
    let ids: Vec<&str> = sessions.iter().map(|h| h.session.as_str()).collect();
    let observed = sessions.iter().filter(|h| h.start_data().is_some_and(|d| d["observe"] == true)).count();
    let _ = writeln!(out, "# Suggested by `agent-guard profile suggest` from {} session(s): {}.", sessions.len(), ids.join(", "));
    let _ = writeln!(out, "# It allows what those sessions did and nothing else; review it before use.");
    if observed < sessions.len() {
        let _ = writeln!(out, "# {} of them ran confined (not --observe): what their profile refused is not in here.", sessions.len() - observed);
    }
    if sessions.iter().any(|h| !h.recorded_reads()) {
        let _ = writeln!(out, "# Some sessions did not record their reads (no --observe, no [baseline]): the read list may be short.");
    }
    let environment = sessions.iter().find_map(|h| h.start_data()?["environment"].as_str().map(str::to_owned)).unwrap_or_else(|| "staging".to_owned());
    let _ = writeln!(out, "\n[role]\nname = {}", toml_str(name));
    let _ = writeln!(out, "description = {}", toml_str(&format!("learned from sessions {}", ids.join(", "))));
    let _ = writeln!(out, "environment = {}", toml_str(&environment));

    let mut read = Rules::default();
    read_rules(sessions, &mut read);
    let mut write = Rules::default();
    write_rules(sessions, &mut write);
    let mut exec = Rules::default();
    for h in sessions {
        let w = h.workdir();
        for e in h.programs() {
            let abs = absolute(&e.path, w.as_deref());
            exec.add(placeholder(&abs, w.as_deref()), &e.argv.join(" "));
        }
    }
    let _ = writeln!(out, "\n[filesystem]");
    read.toml_list("read", &mut out);
    write.toml_list("write", &mut out);
    exec.toml_list("exec", &mut out);
    if let Some(deny) = original_table(sessions, "filesystem").and_then(|f| f.get("deny").cloned()) {
        let _ = writeln!(out, "# Kept from the sessions' profile.\ndeny = {deny}");
    }

    let _ = writeln!(out, "\n[network]\nconnect = [");
    for (dest, n) in suggested_destinations(sessions.iter().flat_map(SessionHistory::connects)) {
        let _ = writeln!(out, "    {},  # {n} connect(s)", toml_str(&dest));
    }
    let _ = writeln!(out, "]");
    // Socket files connected to (an observed session may connect to any);
    // relative spellings can never be listed, so they are left out.
    let mut unix: BTreeMap<String, usize> = BTreeMap::new();
    for h in sessions {
        let w = h.workdir();
        for path in h.unix_connects().into_iter().filter(|p| p.starts_with('/')) {
            *unix.entry(placeholder(&path, w.as_deref())).or_default() += 1;
        }
    }
    let _ = writeln!(out, "unix = [");
    for (path, n) in &unix {
        let _ = writeln!(out, "    {},  # {n} connect(s)", toml_str(path));
    }
    let _ = writeln!(out, "]");

    let peak = |name: &str| sessions.iter().map(|h| h.counters().get(name).copied().unwrap_or(0)).max().unwrap_or(0);
    let longest_ms = sessions.iter().filter_map(SessionHistory::duration_ms).max().unwrap_or(0);
    let _ = writeln!(out, "\n# Peaks observed plus a margin.\n[limits]");
    let _ = writeln!(out, "processes = {}  # peak {} at once", roomy(peak("processes_peak")), peak("processes_peak"));
    let _ = writeln!(out, "execs = {}  # peak {}", roomy(peak("execs")), peak("execs"));
    let _ = writeln!(out, "file_writes = {}  # peak {}", roomy(peak("file_writes")), peak("file_writes"));
    let _ = writeln!(out, "connects = {}  # peak {}", roomy(peak("connects")), peak("connects"));
    let _ = writeln!(out, "bytes_out = {}  # peak {} bytes", toml_str(&bytes(roomy(peak("bytes_out")).max(4096))), peak("bytes_out"));
    let minutes = (longest_ms * 3).div_ceil(60_000).max(1);
    let _ = writeln!(out, "wall_time = {}  # longest session {} ms", toml_str(&format!("{minutes}m")), longest_ms);
    if let Some(memory) = original_table(sessions, "limits").and_then(|l| l.get("memory").cloned()) {
        let _ = writeln!(out, "memory = {memory}  # kept from the sessions' profile");
    }
    if let Some(env) = original_table(sessions, "env") {
        let mut t = toml::map::Map::new();
        t.insert("env".to_owned(), env);
        let _ = write!(out, "\n# Kept from the sessions' profile.\n{}", toml::to_string(&toml::Value::Table(t)).unwrap_or_default());
    }
    out
}

/// `[network] connect` entries for what the sessions connected to, with
/// how often: `ADDR:PORT/tcp` or `/udp` for the protocol seen, no suffix
/// when both were (or when the protocol was not known: a connect landlock
/// refused before the monitor saw its socket).
fn suggested_destinations(connects: impl IntoIterator<Item = crate::history::Connect>) -> Vec<(String, usize)> {
    let mut seen: BTreeMap<String, (usize, bool, bool, bool)> = BTreeMap::new();
    for c in connects {
        let e = seen.entry(c.addr_port()).or_default();
        e.0 += 1;
        match c.protocol.as_str() {
            "tcp" => e.1 = true,
            "udp" => e.2 = true,
            _ => e.3 = true,
        }
    }
    seen.into_iter()
        .map(|(dest, (n, tcp, udp, unknown))| {
            let suffix = match (tcp, udp, unknown) {
                (true, false, false) => "/tcp",
                (false, true, false) => "/udp",
                _ => "",
            };
            (format!("{dest}{suffix}"), n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roomy_numbers() {
        assert_eq!(roomy(0), 10);
        assert_eq!(roomy(3), 20);
        assert_eq!(roomy(95), 150);
        assert_eq!(roomy(3000), 4500);
        assert_eq!(roomy(90_000), 140_000);
    }

    #[test]
    fn destinations_keep_their_protocol() {
        let c = |addr: &str, port, protocol: &str| crate::history::Connect { addr: addr.to_owned(), port, protocol: protocol.to_owned(), allowed: true };
        let got = suggested_destinations([
            c("127.0.0.1", 8080, "tcp"),
            c("127.0.0.1", 8080, "tcp"),
            c("::1", 53, "udp"),
            c("10.0.0.1", 443, "tcp"),
            c("10.0.0.1", 443, "udp"),
            c("10.0.0.2", 22, "0"),
        ]);
        assert_eq!(
            got,
            [
                ("10.0.0.1:443".to_owned(), 2),
                ("10.0.0.2:22".to_owned(), 1),
                ("127.0.0.1:8080/tcp".to_owned(), 2),
                ("[::1]:53/udp".to_owned(), 1),
            ]
        );
        // Each parses back as the destination it names.
        for (d, _) in &got {
            let parsed: crate::profile::Destination = d.parse().unwrap_or_else(|e| panic!("{d}: {e}"));
            assert_eq!(&parsed.to_string(), d);
        }
    }

    #[test]
    fn paths() {
        assert_eq!(absolute("out/x", Some("/w")), "/w/out/x");
        assert_eq!(absolute("./x", Some("/w/")), "/w/x");
        assert_eq!(placeholder("/w/out", Some("/w")), "{workdir}/out");
        assert_eq!(placeholder("/wx/out", Some("/w")), "/wx/out");
        assert_eq!(bytes(100), "1KiB");
        assert_eq!(bytes(3 << 20), "3MiB");
    }
}
