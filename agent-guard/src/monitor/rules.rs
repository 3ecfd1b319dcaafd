//! Turns `[network]` into the kernel's maps: LPM-trie entries whose values
//! carry the port ranges of their own rule and of every wider rule that
//! contains them (an LPM lookup returns only the longest match), and the
//! bind port ranges.

use std::net::IpAddr;

use agent_guard_common::session::{PortRangeRaw, PortRanges, MAX_PORT_RANGES};
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
}

/// IPv4 addresses as they appear through an IPv6 socket: `::ffff:a.b.c.d`.
fn mapped(net: &ipnet::Ipv4Net) -> ipnet::Ipv6Net {
    let v6 = net.addr().to_ipv6_mapped();
    ipnet::Ipv6Net::new(v6, 96 + net.prefix_len()).unwrap_or_else(|_| unreachable!("96 + at most 32 is a valid IPv6 prefix"))
}

/// Sorted, merged ranges.
fn merge(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

fn to_raw(what: &str, ranges: Vec<PortRange>) -> Result<PortRanges, RulesError> {
    let ranges = merge(ranges);
    if ranges.len() > MAX_PORT_RANGES {
        return Err(RulesError::TooManyRanges { what: what.to_owned(), count: ranges.len() });
    }
    let mut raw = PortRanges::EMPTY;
    for (i, r) in ranges.iter().enumerate() {
        raw.ranges[i] = PortRangeRaw { lo: r.lo, hi: r.hi };
    }
    raw.count = ranges.len() as u32;
    Ok(raw)
}

impl Rules {
    pub fn from_policy(policy: &Policy) -> Result<Rules, RulesError> {
        // Every rule as an IPv6 network too (IPv4 ones mapped), for the v6 trie.
        let as_v6 = |d: &Destination| -> (IpNet, PortRange) {
            match d.net {
                IpNet::V4(n) => (IpNet::V6(mapped(&n)), d.ports),
                v6 => (v6, d.ports),
            }
        };
        let v4_rules: Vec<(IpNet, PortRange)> =
            policy.network.connect.iter().filter(|d| matches!(d.net, IpNet::V4(_))).map(|d| (d.net, d.ports)).collect();
        let v6_rules: Vec<(IpNet, PortRange)> = policy.network.connect.iter().map(as_v6).collect();

        let entries = |rules: &[(IpNet, PortRange)]| -> Result<Vec<(IpNet, PortRanges)>, RulesError> {
            let mut prefixes: Vec<IpNet> = rules.iter().map(|(n, _)| *n).collect();
            prefixes.sort();
            prefixes.dedup();
            prefixes
                .into_iter()
                .map(|p| {
                    // Rules whose network contains p apply to every address under p.
                    let ranges = rules.iter().filter(|(n, _)| n.contains(&p) || *n == p).map(|(_, r)| *r).collect();
                    Ok((p, to_raw(&format!("network {p}"), ranges)?))
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
        rules.bind = to_raw("[network] bind", policy.network.bind.clone())?;
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
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
        assert!(narrow.allows(80) && narrow.allows(443) && !narrow.allows(22));
        let wide = get(8, [10, 0, 0, 0]);
        assert!(wide.allows(443) && !wide.allows(80));
        // IPv4 rules also reach IPv6 sockets through mapped addresses.
        let mapped = r.v6.iter().find(|(p, _, _)| *p == 128).unwrap();
        assert_eq!(&mapped.1[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert!(mapped.2.allows(8080));
        assert!(r.bind.allows(9000) && r.bind.allows(9001) && !r.bind.allows(9002));
    }

    #[test]
    fn ranges_merge_and_overflow_is_an_error() {
        let r = Rules::from_policy(&policy(&["[::1]:80", "[::1]:81", "[::1]:82-90"], &[])).unwrap();
        assert_eq!(r.v6[0].2.count, 1);
        let many: Vec<String> = (0..20).map(|i| format!("10.0.0.1:{}", 1000 + 2 * i)).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(Rules::from_policy(&policy(&many, &[])).is_err());
    }
}
