//! Key and value types of the `flow_table` LRU map.

use shaper_utils::units::DownUpOrder;
use shaper_utils::XdpIpAddress;

/// Mirror of C `struct flow_key`. The local side is the customer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub local_addr: XdpIpAddress,
    pub remote_addr: XdpIpAddress,
    pub local_port: u16,
    pub remote_port: u16,
    pub ip_protocol: u8,
    pad: [u8; 3],
}

impl FlowKey {
    /// Builds a key; the trailing padding is always zero, as the BPF side
    /// writes it.
    pub fn new(
        local_addr: XdpIpAddress,
        remote_addr: XdpIpAddress,
        local_port: u16,
        remote_port: u16,
        ip_protocol: u8,
    ) -> Self {
        Self {
            local_addr,
            remote_addr,
            local_port,
            remote_port,
            ip_protocol,
            pad: [0; 3],
        }
    }
}

/// Mirror of C `struct rate_window`: start of the current window and the
/// bytes of the current (`[0]`) and previous (`[1]`) window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateWindow {
    pub started_ns: u64,
    pub bytes: [u64; 2],
}

/// Mirror of the C typedef `flow_stats_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowData {
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub bytes: DownUpOrder<u64>,
    pub packets: DownUpOrder<u64>,
    pub rate_bps: DownUpOrder<u32>,
    pub windows: DownUpOrder<RateWindow>,
    pub ip_protocol: u8,
    pub tos: u8,
    pub end_reason: u8,
    pad: [u8; 5],
    pub tc_handle: u32,
    pub cpu: u32,
    /// `[0]` circuit id, `[1]` device id.
    pub owner_hash: [u64; 2],
}

impl FlowData {
    /// Nanoseconds between the first and the last packet.
    pub fn duration_ns(&self) -> u64 {
        self.last_seen_ns.saturating_sub(self.first_seen_ns)
    }
}

const _: [(); 40] = [(); std::mem::size_of::<FlowKey>()];
const _: [(); 24] = [(); std::mem::size_of::<RateWindow>()];
const _: [(); 48] = [(); std::mem::size_of::<DownUpOrder<RateWindow>>()];
const _: [(); 136] = [(); std::mem::size_of::<FlowData>()];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_sizes() {
        assert_eq!(std::mem::size_of::<FlowKey>(), 40);
        assert_eq!(std::mem::size_of::<FlowData>(), 136);
    }

    #[test]
    fn field_offsets_match_c() {
        let d = FlowData::default();
        let base = &d as *const FlowData as usize;
        assert_eq!(&d.windows as *const _ as usize - base, 56);
        assert_eq!(&d.ip_protocol as *const _ as usize - base, 104);
        assert_eq!(&d.tc_handle as *const _ as usize - base, 112);
        assert_eq!(&d.owner_hash as *const _ as usize - base, 120);
        let k = FlowKey::default();
        let kbase = &k as *const FlowKey as usize;
        assert_eq!(&k.local_port as *const _ as usize - kbase, 32);
        assert_eq!(&k.ip_protocol as *const _ as usize - kbase, 36);
    }
}
