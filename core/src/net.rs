//! IP networks (CIDR) for agents' allowed source addresses.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network such as `127.0.0.1/32` or `::1/128`; a bare address is a host network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside the network. IPv4-mapped IPv6 addresses match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = (prefix / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rem = prefix % 8;
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    a[full] & mask == b[full] & mask
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("invalid address in network {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid prefix in {s:?}"))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `ip` is allowed by a list of networks (an empty list allows everything; entries
/// that do not parse allow nothing).
pub fn allowed(networks: &[String], ip: IpAddr) -> bool {
    networks.is_empty()
        || networks
            .iter()
            .any(|n| n.parse::<IpNet>().map(|n| n.contains(ip)).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let n: IpNet = "10.1.0.0/16".parse().expect("valid");
        assert!(n.contains("10.1.200.3".parse().expect("ip")));
        assert!(!n.contains("10.2.0.1".parse().expect("ip")));
        let h: IpNet = "127.0.0.1".parse().expect("valid");
        assert!(h.contains("::ffff:127.0.0.1".parse().expect("ip")));
        let v6: IpNet = "::1/128".parse().expect("valid");
        assert!(v6.contains("::1".parse().expect("ip")));
        assert!(!v6.contains("127.0.0.1".parse().expect("ip")));
        let odd: IpNet = "192.168.0.0/23".parse().expect("valid");
        assert!(odd.contains("192.168.1.9".parse().expect("ip")));
        assert!(!odd.contains("192.168.2.1".parse().expect("ip")));
        assert!("1.2.3.4/33".parse::<IpNet>().is_err());
        assert!(allowed(&[], "8.8.8.8".parse().expect("ip")));
        assert!(!allowed(
            &["garbage".into()],
            "8.8.8.8".parse().expect("ip")
        ));
    }
}
