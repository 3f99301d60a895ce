//! Client address conditions: an IP network (`10.0.0.0/8`, `fd00::/8`), one address, or `unix`.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::fmt;

/// An IP network: an address and how many leading bits of it must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr` or `addr/prefix`. Bits set past the prefix are refused (`10.0.0.1/8`): they
    /// suggest a typo, and a security rule should not guess what was meant.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or network"))?;
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: prefix length must be 0 to {max}"))?,
        };
        let cidr = Self { addr, prefix };
        let network = cidr.network();
        if network != addr {
            return Err(format!(
                "`{text}` has bits set past the /{prefix} prefix (the network is {network}/{prefix})"
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` is in this network. IPv4 addresses and their IPv4-mapped IPv6 forms
    /// (`::ffff:10.1.2.3`, what a dual-stack socket reports) are treated as the same address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.to_ipv6_mapped().octets(), self.prefix)
            }
            (IpAddr::V4(net), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|ip| prefix_eq(&net.octets(), &ip.octets(), self.prefix)),
        }
    }

    /// The address with every bit past the prefix cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask(a.octets(), self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask(a.octets(), self.prefix))),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `bytes` with every bit from position `prefix` on cleared.
fn mask<const N: usize>(mut bytes: [u8; N], prefix: u8) -> [u8; N] {
    for (i, byte) in bytes.iter_mut().enumerate() {
        let start = i * 8;
        let keep = usize::from(prefix).saturating_sub(start).min(8);
        *byte &= match keep {
            0 => 0,
            n => 0xffu8 << (8 - n),
        };
    }
    bytes
}

/// Whether the first `prefix` bits of `a` and `b` are equal.
fn prefix_eq<const N: usize>(a: &[u8; N], b: &[u8; N], prefix: u8) -> bool {
    mask(*a, prefix) == mask(*b, prefix)
}

/// One alternative of a `client=` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMatch {
    /// A Unix-socket client.
    Unix,
    /// A TCP client from this network.
    Net(Cidr),
}

impl ClientMatch {
    /// Parses `unix` (any case) or a network.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("unix") {
            Ok(Self::Unix)
        } else {
            Cidr::parse(text).map(Self::Net)
        }
    }

    /// Whether a client with this `client_ip` ("" for a Unix socket, per the WIT) matches. An
    /// address pgwarden sent that does not parse matches no network.
    pub fn matches(&self, client_ip: &str) -> bool {
        match self {
            Self::Unix => client_ip.is_empty(),
            Self::Net(cidr) => client_ip
                .parse::<IpAddr>()
                .is_ok_and(|ip| cidr.contains(ip)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn v4_networks() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.0.0.1")));
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("11.0.0.0")));
        let net = Cidr::parse("192.168.1.128/25").unwrap();
        assert!(net.contains(ip("192.168.1.200")));
        assert!(!net.contains(ip("192.168.1.127")));
        let any = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(any.contains(ip("8.8.8.8")));
        assert!(!any.contains(ip("::1")));
        let odd = Cidr::parse("172.16.0.0/12").unwrap();
        assert!(odd.contains(ip("172.31.255.1")));
        assert!(!odd.contains(ip("172.32.0.1")));
    }

    #[test]
    fn single_addresses() {
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        let six = Cidr::parse("::1").unwrap();
        assert_eq!(six.to_string(), "::1/128");
        assert!(six.contains(ip("::1")));
        assert!(!six.contains(ip("::2")));
    }

    #[test]
    fn v6_networks() {
        let net = Cidr::parse("fd00::/8").unwrap();
        assert!(net.contains(ip("fd12:3456::1")));
        assert!(!net.contains(ip("fe80::1")));
        let net = Cidr::parse("2001:db8:abcd:12::/63").unwrap();
        assert!(net.contains(ip("2001:db8:abcd:13::1")));
        assert!(!net.contains(ip("2001:db8:abcd:14::1")));
        assert!(!net.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    }

    #[test]
    fn v4_mapped_addresses_match_both_ways() {
        let v4 = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(v4.contains(ip("::ffff:10.1.2.3")));
        assert!(!v4.contains(ip("::ffff:11.1.2.3")));
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains(ip("10.1.2.3")));
        assert!(!mapped.contains(ip("11.1.2.3")));
    }

    #[test]
    fn bad_networks() {
        for text in [
            "",
            "10.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/x",
            "host",
        ] {
            assert!(Cidr::parse(text).is_err(), "{text}");
        }
        let err = Cidr::parse("10.0.0.1/8").unwrap_err();
        assert!(err.contains("10.0.0.0/8"), "{err}");
        let err = Cidr::parse("fe80::1/10").unwrap_err();
        assert!(err.contains("fe80::/10"), "{err}");
    }

    #[test]
    fn client_matches() {
        let unix = ClientMatch::parse("UNIX").unwrap();
        assert!(unix.matches(""));
        assert!(!unix.matches("127.0.0.1"));
        let local = ClientMatch::parse("127.0.0.0/8").unwrap();
        assert!(local.matches("127.0.0.1"));
        assert!(!local.matches(""));
        assert!(!local.matches("not an ip"));
        assert!(!local.matches("127.0.0.1:5432"));
    }
}
