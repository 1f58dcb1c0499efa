/// Mirror of C `struct ip_hash_info`: where a customer's packets go.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpHashData {
    pub cpu: u32,
    pub tc_handle: u32,
    pub circuit_id: u64,
    pub device_id: u64,
}

impl IpHashData {
    /// Packs an HTB `major:minor` pair the way the classifier expects it.
    pub fn handle(major: u16, minor: u16) -> u32 {
        (u32::from(major) << 16) | u32::from(minor)
    }
}

#[cfg(test)]
mod tests {
    use super::IpHashData;

    #[test]
    fn ip_hash_data_size() {
        assert_eq!(std::mem::size_of::<IpHashData>(), 24);
    }

    #[test]
    fn handle_packing() {
        assert_eq!(IpHashData::handle(1, 0x2a), 0x0001_002a);
    }
}
