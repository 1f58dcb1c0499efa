//! Rust side of the reference BPF pipeline.
//!
//! The `#[repr(C)]` structs in this crate mirror, byte for byte, the C key
//! and value structs of `src/bpf/shaper_kern.c` (see `bpf/specs/reference.yml`
//! for the pairing). The real crate this imitates also links the bindgen
//! output of `src/bpf/wrapper.h`; this one leaves that out so it builds with
//! no build script.

pub mod control;
pub mod flow_data;
pub mod ip_mapping;
pub mod maps;
pub mod throughput;

pub use control::{BridgeTarget, ShaperControl, VlanRedirect, VlanRedirectKey};
pub use flow_data::{FlowData, FlowKey, RateWindow};
pub use ip_mapping::{IpHashData, IpHashKey};
pub use throughput::HostCounter;

/// Same value as `MAX_TRACKED_IPS` in `src/bpf/common/maximums.h`.
pub const MAX_TRACKED_IPS: usize = 65536;

/// Same value as `MAX_CPUS` in `src/bpf/common/maximums.h`: the declared
/// size of `cpu_map` before the loader shrinks it to the possible CPUs.
pub const MAX_CPUS: u32 = 1024;

/// Same value as `HOT_CACHE_SIZE` in `src/bpf/common/maximums.h`.
pub const HOT_CACHE_SIZE: usize = 16384;

/// Names of the maps the object pins under the bpffs, in no special order.
pub const PINNED_MAPS: [&str; 9] = [
    "ip_to_shaper",
    "shaper_hotcache",
    "host_traffic",
    "flow_table",
    "cpu_map",
    "cpus_available",
    "shaper_control",
    "bridge_redirect",
    "bridge_vlan_map",
];
