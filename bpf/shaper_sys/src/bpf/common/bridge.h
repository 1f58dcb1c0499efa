/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * Bridge bypass: a TC ingress program can hand a packet straight to the
 * other port of a two-port bridge instead of letting the bridge forward it.
 */
#ifndef SHAPER_BRIDGE_H
#define SHAPER_BRIDGE_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include "maximums.h"

struct bridge_target {
	__u32 to_ifindex;  /* where packets arriving on the key ifindex go */
	__u32 only_tagged; /* non-zero: redirect VLAN-tagged packets only */
}; /* 8 bytes, Rust: BridgeTarget */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BRIDGE_PORTS);
	__type(key, __u32); /* ingress ifindex */
	__type(value, struct bridge_target);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bridge_redirect SEC(".maps");

/*
 * VLAN rewrite on the way across: a frame arriving on `ifindex` tagged with
 * VLAN `vlan_id` leaves the other port tagged with the value's `vlan_id`
 * (priority bits kept). VLAN ids are plain host-order integers, 1-4094,
 * compared with the id bits of skb->vlan_tci.
 */
struct vlan_redirect_key {
	__u32 ifindex; /* ingress interface */
	__u32 vlan_id; /* the tag it arrives with */
}; /* 8 bytes, Rust: VlanRedirectKey */

struct vlan_redirect {
	__u32 vlan_id; /* the tag it leaves with */
}; /* 4 bytes, Rust: VlanRedirect */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BRIDGE_VLANS);
	__type(key, struct vlan_redirect_key);
	__type(value, struct vlan_redirect);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bridge_vlan_map SEC(".maps");

#endif /* SHAPER_BRIDGE_H */
