//! The 16-byte address used as a BPF map key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 address laid out exactly like the kernel's
/// `struct in6_addr`: sixteen bytes in network order, IPv4 stored
/// IPv4-mapped (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct XdpIpAddress(pub [u8; 16]);

impl XdpIpAddress {
    /// Builds the map-key form of an address.
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => Self(v6.octets()),
        }
    }

    /// Returns the address, unwrapping IPv4-mapped keys to IPv4.
    pub fn as_ip(&self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }

    /// True for an IPv4-mapped key.
    pub fn is_v4(&self) -> bool {
        self.as_ip().is_ipv4()
    }
}

impl From<Ipv4Addr> for XdpIpAddress {
    fn from(v4: Ipv4Addr) -> Self {
        Self::from_ip(IpAddr::V4(v4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_in6_addr() {
        assert_eq!(std::mem::size_of::<XdpIpAddress>(), 16);
        assert_eq!(std::mem::align_of::<XdpIpAddress>(), 1);
    }

    #[test]
    fn v4_round_trip() {
        let key = XdpIpAddress::from(Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(&key.0[10..], &[0xff, 0xff, 10, 77, 0, 1]);
        assert!(key.is_v4());
        assert_eq!(key.as_ip(), IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)));
    }
}
