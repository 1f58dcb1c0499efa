//! Value type of the per-CPU `host_traffic` map.

use shaper_utils::units::DownUpOrder;
use shaper_utils::XdpIpAddress;

/// Mirror of C `struct host_counter` (one copy per CPU, keyed by
/// [`XdpIpAddress`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCounter {
    pub bytes: DownUpOrder<u64>,
    pub packets: DownUpOrder<u64>,
    pub tcp_packets: DownUpOrder<u64>,
    pub udp_packets: DownUpOrder<u64>,
    pub icmp_packets: DownUpOrder<u64>,
    pub tc_handle: u32,
    pad0: u32,
    pub circuit_id: u64,
    pub device_id: u64,
    last_seen: u64,
}

impl HostCounter {
    /// Boot-clock nanoseconds of the last packet counted on this CPU.
    pub fn last_seen_ns(&self) -> u64 {
        self.last_seen
    }

    /// Folds the per-CPU copies of one key into a single total.
    pub fn sum(per_cpu: &[HostCounter]) -> HostCounter {
        let mut total = HostCounter::default();
        for c in per_cpu {
            total.bytes.add(&c.bytes);
            total.packets.add(&c.packets);
            total.tcp_packets.add(&c.tcp_packets);
            total.udp_packets.add(&c.udp_packets);
            total.icmp_packets.add(&c.icmp_packets);
            if c.last_seen >= total.last_seen {
                total.last_seen = c.last_seen;
                total.tc_handle = c.tc_handle;
                total.circuit_id = c.circuit_id;
                total.device_id = c.device_id;
            }
        }
        total
    }
}

/// A key of `host_traffic` with its per-CPU values, as an iterator yields it.
pub type TrafficEntry<'a> = (&'a XdpIpAddress, &'a [HostCounter]);

#[cfg(test)]
mod tests {
    use super::HostCounter;
    use shaper_utils::units::DownUpOrder;

    #[test]
    fn host_counter_size() {
        assert_eq!(std::mem::size_of::<HostCounter>(), 112);
    }

    #[test]
    fn sum_keeps_newest_mapping() {
        let a = HostCounter {
            bytes: DownUpOrder::new(100, 1),
            tc_handle: 7,
            last_seen: 5,
            ..Default::default()
        };
        let b = HostCounter {
            bytes: DownUpOrder::new(50, 2),
            tc_handle: 9,
            last_seen: 6,
            ..Default::default()
        };
        let t = HostCounter::sum(&[a, b]);
        assert_eq!(t.bytes, DownUpOrder::new(150, 3));
        assert_eq!(t.tc_handle, 9);
        assert_eq!(t.last_seen_ns(), 6);
    }
}
