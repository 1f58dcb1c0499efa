/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/* Per-customer-address byte and packet counters, one copy per CPU. */
#ifndef SHAPER_THROUGHPUT_H
#define SHAPER_THROUGHPUT_H

#include <linux/types.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include "maximums.h"
#include "shared.h"
#include "ip_hash.h"

struct host_counter {
	struct down_up_u64 bytes;
	struct down_up_u64 packets;
	struct down_up_u64 tcp_packets;
	struct down_up_u64 udp_packets;
	struct down_up_u64 icmp_packets;
	__u32 tc_handle;   /* copied from the mapping, 0 = unshaped */
	__u32 pad0;        /* explicit: keeps the u64s below aligned */
	__u64 circuit_id;
	__u64 device_id;
	__u64 last_seen;   /* bpf_ktime_get_boot_ns() */
}; /* 112 bytes, Rust: HostCounter */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_TRACKED_IPS);
	__type(key, struct in6_addr);
	__type(value, struct host_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} host_traffic SEC(".maps");

static __always_inline void bump(struct down_up_u64 *pair, int is_down, __u64 by)
{
	if (is_down)
		pair->down += by;
	else
		pair->up += by;
}

static __always_inline void count_host(const struct in6_addr *addr, __u32 len,
				       __u8 ip_protocol, int is_down,
				       const struct ip_hash_info *target)
{
	struct host_counter *c = bpf_map_lookup_elem(&host_traffic, addr);

	if (!c) {
		struct host_counter fresh = {};

		bpf_map_update_elem(&host_traffic, addr, &fresh, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&host_traffic, addr);
		if (!c)
			return;
	}

	bump(&c->bytes, is_down, len);
	bump(&c->packets, is_down, 1);
	if (ip_protocol == IPPROTO_TCP)
		bump(&c->tcp_packets, is_down, 1);
	else if (ip_protocol == IPPROTO_UDP)
		bump(&c->udp_packets, is_down, 1);
	else if (ip_protocol == IPPROTO_ICMP || ip_protocol == IPPROTO_ICMPV6)
		bump(&c->icmp_packets, is_down, 1);

	if (target) {
		c->tc_handle = target->tc_handle;
		c->circuit_id = target->circuit_id;
		c->device_id = target->device_id;
	}
	c->last_seen = bpf_ktime_get_boot_ns();
}

#endif /* SHAPER_THROUGHPUT_H */
