//! Small control and bridge-redirect values.

/// Mirror of C `struct control_flags`, the single value of `shaper_control`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaperControl {
    pub bypass: u32,
    pub redirect_enabled: u32,
}

/// Mirror of C `struct bridge_target`, the value of `bridge_redirect`
/// (keyed by the ingress ifindex as `u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeTarget {
    pub to_ifindex: u32,
    only_tagged: u32,
}

impl BridgeTarget {
    /// Redirect everything arriving on the key interface to `to_ifindex`,
    /// or only VLAN-tagged packets.
    pub fn new(to_ifindex: u32, only_tagged: bool) -> Self {
        Self {
            to_ifindex,
            only_tagged: u32::from(only_tagged),
        }
    }

    pub fn only_tagged(&self) -> bool {
        self.only_tagged != 0
    }
}

/// Mirror of C `struct vlan_redirect_key`, the key of `bridge_vlan_map`:
/// a frame arriving on `ifindex` tagged `vlan_id` (host order, 1-4094).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VlanRedirectKey {
    pub ifindex: u32,
    pub vlan_id: u32,
}

/// Mirror of C `struct vlan_redirect`, the value of `bridge_vlan_map`:
/// the VLAN id (host order) the bridge redirector sends the frame out with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VlanRedirect {
    pub vlan_id: u32,
}

const _: [(); 8] = [(); std::mem::size_of::<ShaperControl>()];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sizes() {
        assert_eq!(std::mem::size_of::<ShaperControl>(), 8);
        assert_eq!(std::mem::size_of::<BridgeTarget>(), 8);
        assert_eq!(std::mem::size_of::<VlanRedirectKey>(), 8);
        assert_eq!(std::mem::size_of::<VlanRedirect>(), 4);
    }
}
