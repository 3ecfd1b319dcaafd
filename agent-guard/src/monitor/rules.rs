//! Turns `[network]` into the kernel's maps: LPM-trie entries whose values
//! carry the port ranges of their own rule and of every wider rule that
//! contains them (an LPM lookup returns only the longest match), and the
//! bind port ranges; and the socket files of `[network] unix`, each in
//! every spelling that reaches it.

use std::{
    net::IpAddr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use agent_guard_common::session::{PortRangeRaw, PortRanges, MAX_PORT_RANGES, PROTO_ANY, UNIX_PATH_LEN};
use ipnet::IpNet;

use crate::profile::{Destination, Policy, PortRange};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{what} needs {count} port ranges, more than the {MAX_PORT_RANGES} the kernel side holds per network; merge ports into ranges")]
    TooManyRanges { what: String, count: usize },
}

/// The maps' contents.
#[derive(Debug, Default)]
pub struct Rules {
    pub v4: Vec<(u32, [u8; 4], PortRanges)>,
    pub v6: Vec<(u32, [u8; 16], PortRanges)>,
    pub bind: PortRanges,
    /// `UNIX_ALLOW` paths: every spelling of every `[network] unix` entry
    /// (see [`unix_spellings`]), each at most 108 bytes.
    pub unix: Vec<Vec<u8>>,
}

/// The spellings of the socket file `path` that the kernel side accepts:
/// the path as the profile names it (placeholders expanded), the same
/// with its parent directory resolved (`/var/run/x.sock` is
/// `/run/x.sock` where `/var/run` links to `/run`), and the socket's own
/// canonical path when it exists (a socket file that is itself a
/// symlink). Spellings longer than a `sun_path` are left out. A relative
/// path never matches any of them.
pub fn unix_spellings(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_owned()];
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        if let Ok(parent) = parent.canonicalize() {
            out.push(parent.join(name));
        }
    }
    if let Ok(real) = path.canonicalize() {
        out.push(real);
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| p.as_os_str().len() <= UNIX_PATH_LEN && seen.insert(p.clone()));
    out
}

/// IPv4 addresses as they appear through an IPv6 socket: `::ffff:a.b.c.d`.
fn mapped(net: &ipnet::Ipv4Net) -> ipnet::Ipv6Net {
    let v6 = net.addr().to_ipv6_mapped();
    ipnet::Ipv6Net::new(v6, 96 + net.prefix_len()).unwrap_or_else(|_| unreachable!("96 + at most 32 is a valid IPv6 prefix"))
}

/// Port ranges, each with the `PROTO_*` bits it allows, as few as
/// possible: the ports are cut where any range starts or ends, each piece
/// allows the protocols of every range covering it, and neighbouring
/// pieces allowing the same protocols join. So `80/tcp` and `80/udp` are
/// one range allowing both, and `80-90` with `85/udp` is three.
fn merge(ranges: &[(PortRange, u8)]) -> Vec<(PortRange, u8)> {
    let mut cuts: Vec<u32> = ranges.iter().flat_map(|(r, _)| [u32::from(r.lo), u32::from(r.hi) + 1]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<(PortRange, u8)> = Vec::new();
    for w in cuts.windows(2) {
        let (lo, hi) = (w[0], w[1] - 1);
        let mask = ranges.iter().filter(|(r, _)| u32::from(r.lo) <= lo && hi <= u32::from(r.hi)).fold(0, |m, (_, p)| m | p);
        if mask == 0 {
            continue;
        }
        // Pieces lie within 1..=65535: every cut but the last is a port.
        let (lo, hi) = (lo as u16, hi as u16);
        match out.last_mut() {
            Some((last, m)) if *m == mask && u32::from(last.hi) + 1 == u32::from(lo) => last.hi = hi,
            _ => out.push((PortRange { lo, hi }, mask)),
        }
    }
    out
}

fn to_raw(what: &str, ranges: &[(PortRange, u8)]) -> Result<PortRanges, RulesError> {
    let ranges = merge(ranges);
    if ranges.len() > MAX_PORT_RANGES {
        return Err(RulesError::TooManyRanges { what: what.to_owned(), count: ranges.len() });
    }
    let mut raw = PortRanges::EMPTY;
    for (i, (r, protocols)) in ranges.iter().enumerate() {
        raw.ranges[i] = PortRangeRaw { lo: r.lo, hi: r.hi, protocols: *protocols, _pad: [0; 3] };
    }
    raw.count = ranges.len() as u32;
    Ok(raw)
}

impl Rules {
    pub fn from_policy(policy: &Policy) -> Result<Rules, RulesError> {
        // Every rule as an IPv6 network too (IPv4 ones mapped), for the v6 trie.
        let as_v6 = |d: &Destination| -> (IpNet, (PortRange, u8)) {
            match d.net {
                IpNet::V4(n) => (IpNet::V6(mapped(&n)), (d.ports, d.protocol.mask())),
                v6 => (v6, (d.ports, d.protocol.mask())),
            }
        };
        let v4_rules: Vec<(IpNet, (PortRange, u8))> = policy
            .network
            .connect
            .iter()
            .filter(|d| matches!(d.net, IpNet::V4(_)))
            .map(|d| (d.net, (d.ports, d.protocol.mask())))
            .collect();
        let v6_rules: Vec<(IpNet, (PortRange, u8))> = policy.network.connect.iter().map(as_v6).collect();

        let entries = |rules: &[(IpNet, (PortRange, u8))]| -> Result<Vec<(IpNet, PortRanges)>, RulesError> {
            let mut prefixes: Vec<IpNet> = rules.iter().map(|(n, _)| *n).collect();
            prefixes.sort();
            prefixes.dedup();
            prefixes
                .into_iter()
                .map(|p| {
                    // Rules whose network contains p apply to every address under p.
                    let ranges: Vec<(PortRange, u8)> = rules.iter().filter(|(n, _)| n.contains(&p) || *n == p).map(|(_, r)| *r).collect();
                    Ok((p, to_raw(&format!("network {p}"), &ranges)?))
                })
                .collect()
        };
        let mut rules = Rules::default();
        for (net, ranges) in entries(&v4_rules)? {
            if let (IpNet::V4(n), IpAddr::V4(a)) = (net, net.addr()) {
                rules.v4.push((u32::from(n.prefix_len()), a.octets(), ranges));
            }
        }
        for (net, ranges) in entries(&v6_rules)? {
            if let (IpNet::V6(n), IpAddr::V6(a)) = (net, net.addr()) {
                rules.v6.push((u32::from(n.prefix_len()), a.octets(), ranges));
            }
        }
        // Bind ports hold for TCP and UDP alike.
        let bind: Vec<(PortRange, u8)> = policy.network.bind.iter().map(|r| (*r, PROTO_ANY)).collect();
        rules.bind = to_raw("[network] bind", &bind)?;
        rules.unix = policy.network.unix.iter().flat_map(|p| unix_spellings(p)).map(|p| p.as_os_str().as_bytes().to_vec()).collect();
        rules.unix.sort();
        rules.unix.dedup();
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use agent_guard_common::session::{PROTO_TCP, PROTO_UDP};

    use super::*;

    fn policy(connect: &[&str], bind: &[&str]) -> Policy {
        let text = format!(
            "[role]\nname = \"r\"\nenvironment = \"e\"\n[network]\nconnect = {:?}\nbind = {:?}\n",
            connect, bind
        );
        let src = crate::profile::SourceFile { path: "/p/r.toml".into(), text };
        let ctx = crate::profile::Context { workdir: "/w".into(), caller_uid: 0 };
        crate::profile::from_source(&src, &ctx, &Default::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn nested_prefixes_inherit_wider_ranges() {
        let r = Rules::from_policy(&policy(&["10.0.0.0/8:443", "10.1.0.0/16:80", "127.0.0.1:8080"], &["9000-9001"])).unwrap();
        let get = |p: u32, a: [u8; 4]| r.v4.iter().find(|(pp, aa, _)| *pp == p && *aa == a).map(|(_, _, v)| *v).unwrap();
        let narrow = get(16, [10, 1, 0, 0]);
        assert!(narrow.allows(80, PROTO_TCP) && narrow.allows(443, PROTO_UDP) && !narrow.allows(22, PROTO_TCP));
        let wide = get(8, [10, 0, 0, 0]);
        assert!(wide.allows(443, PROTO_TCP) && !wide.allows(80, PROTO_TCP));
        // IPv4 rules also reach IPv6 sockets through mapped addresses.
        let mapped = r.v6.iter().find(|(p, _, _)| *p == 128).unwrap();
        assert_eq!(&mapped.1[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert!(mapped.2.allows(8080, PROTO_UDP));
        assert!(r.bind.allows(9000, PROTO_TCP) && r.bind.allows(9001, PROTO_UDP) && !r.bind.allows(9002, PROTO_ANY));
    }

    #[test]
    fn ranges_merge_and_overflow_is_an_error() {
        let r = Rules::from_policy(&policy(&["[::1]:80", "[::1]:81", "[::1]:82-90"], &[])).unwrap();
        assert_eq!(r.v6[0].2.count, 1);
        let many: Vec<String> = (0..20).map(|i| format!("10.0.0.1:{}", 1000 + 2 * i)).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(Rules::from_policy(&policy(&many, &[])).is_err());
    }

    #[test]
    fn protocols_per_range() {
        let r = Rules::from_policy(&policy(
            &["127.0.0.1:8080/tcp", "127.0.0.1:53/udp", "127.0.0.1:9000", "10.0.0.0/8:443-444/tcp", "10.1.0.0/16:443/udp"],
            &[],
        ))
        .unwrap();
        let get = |p: u32, a: [u8; 4]| r.v4.iter().find(|(pp, aa, _)| *pp == p && *aa == a).map(|(_, _, v)| *v).unwrap();
        let host = get(32, [127, 0, 0, 1]);
        assert!(host.allows(8080, PROTO_TCP) && !host.allows(8080, PROTO_UDP));
        assert!(host.allows(53, PROTO_UDP) && !host.allows(53, PROTO_TCP));
        assert!(host.allows(9000, PROTO_TCP) && host.allows(9000, PROTO_UDP));
        // The narrower prefix inherits the wider one's TCP range and adds UDP on 443 only.
        let narrow = get(16, [10, 1, 0, 0]);
        assert!(narrow.allows(443, PROTO_TCP) && narrow.allows(443, PROTO_UDP));
        assert!(narrow.allows(444, PROTO_TCP) && !narrow.allows(444, PROTO_UDP));
        let wide = get(8, [10, 0, 0, 0]);
        assert!(wide.allows(443, PROTO_TCP) && !wide.allows(443, PROTO_UDP));
        // The same through IPv6 sockets (mapped addresses).
        let mapped = r.v6.iter().find(|(p, a, _)| *p == 128 && a[12..] == [127, 0, 0, 1]).unwrap().2;
        assert!(mapped.allows(8080, PROTO_TCP) && !mapped.allows(8080, PROTO_UDP));
    }

    #[test]
    fn unix_paths_in_every_spelling() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        // The socket file itself need not exist yet (a service may start later).
        let spellings = unix_spellings(&link.join("app.sock"));
        let real = real.canonicalize().expect("canonical");
        assert_eq!(spellings, [link.join("app.sock"), real.join("app.sock")]);
        // A socket file that is a symlink: its target too.
        std::fs::write(real.join("target.sock"), "").expect("file");
        std::os::unix::fs::symlink(real.join("target.sock"), real.join("alias.sock")).expect("symlink");
        assert_eq!(unix_spellings(&real.join("alias.sock")), [real.join("alias.sock"), real.join("target.sock")]);
        // No duplicates for a canonical path; nothing longer than sun_path.
        assert_eq!(unix_spellings(Path::new("/nonexistent/x.sock")), [PathBuf::from("/nonexistent/x.sock")]);
        let long = PathBuf::from(format!("/{}", "x".repeat(UNIX_PATH_LEN)));
        assert!(unix_spellings(&long).is_empty());
    }

    #[test]
    fn unix_rules_come_from_the_profile() {
        let text = "[role]\nname = \"r\"\nenvironment = \"e\"\n[network]\nunix = [\"{workdir}/app.sock\", \"/nonexistent/b.sock\", \"/nonexistent/b.sock\"]\n";
        let src = crate::profile::SourceFile { path: "/p/r.toml".into(), text: text.to_owned() };
        let ctx = crate::profile::Context { workdir: "/nonexistent-w".into(), caller_uid: 0 };
        let p = crate::profile::from_source(&src, &ctx, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.network.unix, [PathBuf::from("/nonexistent-w/app.sock"), PathBuf::from("/nonexistent/b.sock"), PathBuf::from("/nonexistent/b.sock")]);
        let r = Rules::from_policy(&p).unwrap();
        assert_eq!(r.unix, [b"/nonexistent-w/app.sock".to_vec(), b"/nonexistent/b.sock".to_vec()]);
        // No entry: nothing allowed.
        assert!(Rules::from_policy(&policy(&[], &[])).unwrap().unix.is_empty());
    }

    #[test]
    fn merging_keeps_protocols_apart() {
        let m = |rs: &[(u16, u16, u8)]| -> Vec<(u16, u16, u8)> {
            let rs: Vec<(PortRange, u8)> = rs.iter().map(|&(lo, hi, p)| (PortRange { lo, hi }, p)).collect();
            merge(&rs).into_iter().map(|(r, p)| (r.lo, r.hi, p)).collect()
        };
        // TCP and UDP on one port join into one range allowing both.
        assert_eq!(m(&[(80, 80, PROTO_TCP), (80, 80, PROTO_UDP)]), [(80, 80, PROTO_ANY)]);
        // Adjacent ranges of one protocol join; of different protocols, they stay apart.
        assert_eq!(m(&[(80, 81, PROTO_TCP), (82, 90, PROTO_TCP)]), [(80, 90, PROTO_TCP)]);
        assert_eq!(m(&[(80, 81, PROTO_TCP), (82, 90, PROTO_UDP)]), [(80, 81, PROTO_TCP), (82, 90, PROTO_UDP)]);
        // A UDP port inside a TCP range cuts it in three.
        assert_eq!(m(&[(80, 90, PROTO_TCP), (85, 85, PROTO_UDP)]), [(80, 84, PROTO_TCP), (85, 85, PROTO_ANY), (86, 90, PROTO_TCP)]);
        // Overlaps and the top port.
        assert_eq!(m(&[(1, 65535, PROTO_ANY), (443, 443, PROTO_TCP)]), [(1, 65535, PROTO_ANY)]);
        assert_eq!(m(&[(65535, 65535, PROTO_UDP)]), [(65535, 65535, PROTO_UDP)]);
        assert_eq!(m(&[(10, 20, PROTO_TCP), (30, 40, PROTO_TCP)]), [(10, 20, PROTO_TCP), (30, 40, PROTO_TCP)]);
    }
}
