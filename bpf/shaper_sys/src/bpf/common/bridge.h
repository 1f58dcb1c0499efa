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

#endif /* SHAPER_BRIDGE_H */
