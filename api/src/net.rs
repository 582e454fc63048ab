//! IPv4 ranges (`127.240.0.0/16`): the Service range the API server allocates from and
//! the pod range each node agent assigns from.

use std::net::Ipv4Addr;

/// An IPv4 network: its address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (e.g. 10.244.1.0/24)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("{s:?}: the prefix length must be 8 to 30"));
        }
        Ok(Cidr::new(ip, prefix))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Cidr {
    /// The network of `ip`/`prefix` (host bits cleared).
    pub fn new(ip: Ipv4Addr, prefix: u8) -> Cidr {
        Cidr {
            base: Ipv4Addr::from(u32::from(ip) & Self::mask_of(prefix)),
            prefix,
        }
    }

    fn mask_of(prefix: u8) -> u32 {
        u32::MAX << (32 - prefix)
    }

    /// Usable addresses: all but the network and broadcast addresses.
    pub fn size(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    /// The `i`-th usable address (0-based), `i < size()`.
    pub fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1 + i)
    }

    /// Whether `ip` is a usable address of the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = Self::mask_of(self.prefix);
        u32::from(ip) & mask == u32::from(self.base)
            && ip != self.base
            && u32::from(ip) != u32::from(self.base) | !mask
    }

    /// Inside 127.0.0.0/8: local on any Linux host with no setup.
    pub fn is_loopback(&self) -> bool {
        self.base.is_loopback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let c: Cidr = "10.96.3.7/12".parse().unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert_eq!(c.nth(0), Ipv4Addr::new(10, 96, 0, 1));
        assert!(c.contains(Ipv4Addr::new(10, 100, 0, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 96, 0, 0)), "network address");
        assert!(!c.contains(Ipv4Addr::new(10, 111, 255, 255)), "broadcast");
        assert!(!c.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert_eq!("127.240.0.0/16".parse::<Cidr>().unwrap().size(), 65534);
        assert!("127.64.0.0/16".parse::<Cidr>().unwrap().is_loopback());
        assert!(!"10.244.1.0/24".parse::<Cidr>().unwrap().is_loopback());
    }
}
