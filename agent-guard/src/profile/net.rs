//! Network destinations (`"10.20.0.0/16:443"`) and port ranges as written
//! in `[network]`.

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// An inclusive range of TCP/UDP ports; a single port is `lo == hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn single(port: u16) -> PortRange {
        PortRange { lo: port, hi: port }
    }

    pub fn ports(self) -> impl Iterator<Item = u16> {
        self.lo..=self.hi
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<PortRange, String> {
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("`{p}` is not a port: expected a number from 1 to 65535")),
                Ok(n) => Ok(n),
            }
        };
        let range = match text.split_once('-') {
            Some((lo, hi)) => PortRange { lo: port(lo)?, hi: port(hi)? },
            None => PortRange::single(port(text)?),
        };
        if range.lo > range.hi {
            return Err(format!("port range `{text}` is empty: its low end is above its high end"));
        }
        Ok(range)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (1-65535) or a range such as \"8000-8100\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(PortRange::single(p)),
                    _ => Err(E::custom(format!("`{v}` is not a port: expected a number from 1 to 65535"))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The transport protocol a destination allows: written as a `/tcp` or
/// `/udp` suffix; without one, both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// No suffix: TCP and UDP (what every destination meant before suffixes).
    #[default]
    Both,
    Tcp,
    Udp,
}

impl Protocol {
    pub fn includes_tcp(self) -> bool {
        matches!(self, Protocol::Both | Protocol::Tcp)
    }

    pub fn includes_udp(self) -> bool {
        matches!(self, Protocol::Both | Protocol::Udp)
    }

    /// The kernel side's `PROTO_*` bits.
    pub fn mask(self) -> u8 {
        use agent_guard_common::session::{PROTO_ANY, PROTO_TCP, PROTO_UDP};
        match self {
            Protocol::Both => PROTO_ANY,
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }

    /// The suffix as written, `""` for both.
    pub fn suffix(self) -> &'static str {
        match self {
            Protocol::Both => "",
            Protocol::Tcp => "/tcp",
            Protocol::Udp => "/udp",
        }
    }

    /// From the text after a destination's last `/`. Lowercase only: one
    /// spelling everywhere (events, baselines and suggestions print it so).
    fn parse_suffix(text: &str, whole: &str) -> Result<Protocol, String> {
        match text {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "" => Err(format!("`{whole}` ends in `/` without a protocol: write `/tcp` or `/udp`, or no suffix for both")),
            t if t.eq_ignore_ascii_case("tcp") || t.eq_ignore_ascii_case("udp") => {
                Err(format!("`{whole}`: write the protocol in lowercase, `/{}`", t.to_ascii_lowercase()))
            }
            t => Err(format!(
                "`{whole}`: `{t}` is not a protocol a destination can name: expected `/tcp` or `/udp`, or no suffix for both"
            )),
        }
    }
}

/// Where an agent may connect: an address or CIDR, a port range and the
/// protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub net: IpNet,
    pub ports: PortRange,
    pub protocol: Protocol,
}

impl FromStr for Destination {
    type Err = String;

    /// `127.0.0.1:8080`, `10.20.0.0/16:443`, `10.0.0.1:8000-8100`,
    /// `[::1]:5432`, `[fd00::/8]:443`, each optionally followed by `/tcp`
    /// or `/udp`: `10.0.0.0/8:443-444/tcp`.
    fn from_str(text: &str) -> Result<Destination, String> {
        let expected = "expected ADDRESS:PORT[/tcp|/udp] with an IPv4 or IPv6 address or CIDR and a port or range, e.g. \"10.20.0.0/16:443/tcp\" or \"[::1]:5432\"";
        let (host, ports) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{text}` has no closing `]`: {expected}"))?;
            let ports = after
                .strip_prefix(':')
                .ok_or_else(|| format!("`{text}` has no port: {expected}"))?;
            (host, ports)
        } else {
            text.rsplit_once(':')
                .ok_or_else(|| format!("`{text}` has no port: {expected}"))?
        };
        if !text.starts_with('[') && host.contains(':') {
            return Err(format!("`{text}`: write IPv6 addresses in brackets: {expected}"));
        }
        let net = match host.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => net,
            Ok(net) => {
                return Err(format!(
                    "`{host}` has host bits set below its prefix; did you mean `{}`?",
                    net.trunc()
                ))
            }
            Err(_) => match host.parse::<IpAddr>() {
                Ok(addr) => IpNet::from(addr),
                Err(_) => return Err(format!("`{host}` is not an IP address or CIDR (host names are not resolved): {expected}")),
            },
        };
        // The protocol follows the ports (a CIDR's `/` is before the port's `:`).
        let (ports, protocol) = match ports.split_once('/') {
            Some((ports, proto)) => (ports, Protocol::parse_suffix(proto, text)?),
            None => (ports, Protocol::Both),
        };
        let ports = ports.parse::<PortRange>()?;
        Ok(Destination { net, ports, protocol })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.net.prefix_len() == self.net.max_prefix_len() {
            self.net.addr().to_string()
        } else {
            self.net.to_string()
        };
        let proto = self.protocol.suffix();
        match self.net {
            IpNet::V4(_) => write!(f, "{host}:{}{proto}", self.ports),
            IpNet::V6(_) => write!(f, "[{host}]:{}{proto}", self.ports),
        }
    }
}

impl Serialize for Destination {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Whether two networks share at least one address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(text: &str) -> Destination {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn destinations() {
        assert_eq!(dest("127.0.0.1:8080").to_string(), "127.0.0.1:8080");
        assert_eq!(dest("10.20.0.0/16:443").to_string(), "10.20.0.0/16:443");
        assert_eq!(dest("[::1]:5432").to_string(), "[::1]:5432");
        assert_eq!(dest("[fd00::/8]:443").to_string(), "[fd00::/8]:443");
        let range = dest("10.0.0.1:8000-8100");
        assert_eq!(range.ports, PortRange { lo: 8000, hi: 8100 });
        assert_eq!(range.ports.ports().count(), 101);
        assert_eq!(range.protocol, Protocol::Both);
    }

    #[test]
    fn protocol_suffixes() {
        let d = dest("127.0.0.1:8080/tcp");
        assert_eq!((d.protocol, d.ports), (Protocol::Tcp, PortRange::single(8080)));
        assert_eq!(d.to_string(), "127.0.0.1:8080/tcp");
        let d = dest("[::1]:53/udp");
        assert_eq!((d.protocol, d.net.to_string().as_str()), (Protocol::Udp, "::1/128"));
        assert_eq!(d.to_string(), "[::1]:53/udp");
        let d = dest("10.0.0.0/8:443-444/tcp");
        assert_eq!((d.protocol, d.ports, d.net.to_string().as_str()), (Protocol::Tcp, PortRange { lo: 443, hi: 444 }, "10.0.0.0/8"));
        assert_eq!(d.to_string(), "10.0.0.0/8:443-444/tcp");
        assert_eq!(dest("[fd00::/8]:8000-8100/udp").to_string(), "[fd00::/8]:8000-8100/udp");
        // No suffix: both, printed without one.
        assert_eq!(dest("10.0.0.0/8:443").to_string(), "10.0.0.0/8:443");
        assert!(Protocol::Both.includes_tcp() && Protocol::Both.includes_udp());
        assert!(Protocol::Tcp.includes_tcp() && !Protocol::Tcp.includes_udp());
        assert!(!Protocol::Udp.includes_tcp() && Protocol::Udp.includes_udp());
        assert_eq!(Protocol::Both.mask(), Protocol::Tcp.mask() | Protocol::Udp.mask());
    }

    #[test]
    fn bad_protocol_suffixes() {
        let err = |text: &str| text.parse::<Destination>().expect_err(text);
        assert!(err("127.0.0.1:80/sctp").contains("`sctp` is not a protocol"), "{}", err("127.0.0.1:80/sctp"));
        assert!(err("127.0.0.1:80/TCP").contains("lowercase, `/tcp`"), "{}", err("127.0.0.1:80/TCP"));
        assert!(err("[::1]:53/Udp").contains("lowercase, `/udp`"));
        assert!(err("127.0.0.1:80/").contains("without a protocol"));
        assert!(err("127.0.0.1:80/tcp/udp").contains("not a protocol"));
        assert!(err("127.0.0.1:80/both").contains("not a protocol"));
        assert!(err("127.0.0.1:80/ tcp").contains("not a protocol"));
        // A CIDR without a port is still "no port", not a protocol.
        assert!(err("10.0.0.0/8").contains("no port"));
        assert!(err("[::1]/tcp").contains("no port"));
    }

    #[test]
    fn bad_destinations() {
        for bad in [
            "127.0.0.1",
            "localhost:80",
            "::1:80",
            "[::1]",
            "[::1:80",
            "10.0.0.1:0",
            "10.0.0.1:70000",
            "10.0.0.1:90-80",
            "10.0.0.1/16:80",
            "10.0.0.0/33:80",
        ] {
            assert!(bad.parse::<Destination>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn overlap() {
        let n = |s: &str| s.parse::<IpNet>().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert!(overlaps(&n("10.20.0.0/16"), &n("10.20.3.0/24")));
        assert!(overlaps(&n("10.20.3.0/24"), &n("10.0.0.0/8")));
        assert!(!overlaps(&n("10.20.0.0/16"), &n("10.30.0.0/16")));
        assert!(!overlaps(&n("10.0.0.0/8"), &n("::/0")));
    }
}
