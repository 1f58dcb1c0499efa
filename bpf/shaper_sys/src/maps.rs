//! Typed handles to the maps the BPF object pins under the bpffs.
//!
//! Each handle names its pin path and the key and value types the Rust side
//! reads and writes there, the way lqos_sys opens its maps. lqos.bpf's
//! `abi_check` pairs these types with the object's BTF by map name (spec
//! `derive`), so `bpf/specs/reference.yml` needs no list of mirror pairs.

use core::marker::PhantomData;

use shaper_utils::XdpIpAddress;

use crate::{
    BridgeTarget, FlowData, FlowKey, HostCounter, IpHashData, IpHashKey, ShaperControl, VlanRedirect,
    VlanRedirectKey,
};

/// A pinned map with key `K` and value `V` (per CPU for per-CPU maps).
pub struct PinnedMap<K, V> {
    path: &'static str,
    _types: PhantomData<(K, V)>,
}

impl<K, V> PinnedMap<K, V> {
    pub const fn from_path(path: &'static str) -> Self {
        Self { path, _types: PhantomData }
    }

    pub fn path(&self) -> &'static str {
        self.path
    }

    /// Bytes of one key and one value, as the kernel map must have them.
    pub const fn sizes() -> (usize, usize) {
        (core::mem::size_of::<K>(), core::mem::size_of::<V>())
    }
}

const HOST_TRAFFIC: &str = "/sys/fs/bpf/host_traffic";

pub fn ip_to_shaper() -> PinnedMap<IpHashKey, IpHashData> {
    PinnedMap::<IpHashKey, IpHashData>::from_path("/sys/fs/bpf/ip_to_shaper")
}

pub fn shaper_hotcache() -> PinnedMap<XdpIpAddress, IpHashData> {
    PinnedMap::<XdpIpAddress, IpHashData>::from_path("/sys/fs/bpf/shaper_hotcache")
}

pub fn host_traffic() -> PinnedMap<XdpIpAddress, HostCounter> {
    PinnedMap::<XdpIpAddress, HostCounter>::from_path(HOST_TRAFFIC)
}

pub fn flow_table() -> PinnedMap<FlowKey, FlowData> {
    PinnedMap::<FlowKey, FlowData>::from_path("/sys/fs/bpf/flow_table")
}

pub fn shaper_control() -> PinnedMap<u32, ShaperControl> {
    PinnedMap::<u32, ShaperControl>::from_path("/sys/fs/bpf/shaper_control")
}

pub fn bridge_redirect() -> PinnedMap<u32, BridgeTarget> {
    PinnedMap::<u32, BridgeTarget>::from_path("/sys/fs/bpf/bridge_redirect")
}

pub fn bridge_vlan_map() -> PinnedMap<VlanRedirectKey, VlanRedirect> {
    PinnedMap::<VlanRedirectKey, VlanRedirect>::from_path("/sys/fs/bpf/bridge_vlan_map")
}
