use shaper_utils::XdpIpAddress;

/// Mirror of C `struct ip_prefix_key`, the LPM-trie key. `prefixlen`
/// counts bits of the 128-bit form, so an IPv4 /24 is stored as /120.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpHashKey {
    pub prefixlen: u32,
    pub address: [u8; 16],
}

impl IpHashKey {
    /// Key for `addr/prefix`, where an IPv4 prefix is given in IPv4 bits.
    pub fn new(addr: XdpIpAddress, prefix: u32) -> Self {
        let prefixlen = if addr.is_v4() {
            prefix.min(32) + 96
        } else {
            prefix.min(128)
        };
        Self {
            prefixlen,
            address: addr.0,
        }
    }
}

impl Default for IpHashKey {
    fn default() -> Self {
        Self {
            prefixlen: 128,
            address: [0; 16],
        }
    }
}

const _: [(); 20] = [(); core::mem::size_of::<IpHashKey>()];
