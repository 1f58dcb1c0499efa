/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/* Per-flow statistics, kept by the egress classifier in an LRU table. */
#ifndef SHAPER_FLOWS_H
#define SHAPER_FLOWS_H

#include <linux/types.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include "maximums.h"
#include "shared.h"
#include "ip_hash.h"
#include "parse.h"

#define RATE_WINDOW_NS 1000000000ULL

struct flow_key {
	struct in6_addr local_addr;  /* the customer side */
	struct in6_addr remote_addr;
	__u16 local_port;
	__u16 remote_port;
	__u8 ip_protocol;
	__u8 pad[3];
}; /* 40 bytes, Rust: FlowKey */

/* One direction's rate window: start of the current window, bytes in the
 * current ([0]) and the previous ([1]) window. */
struct rate_window {
	__u64 started_ns;
	__u64 bytes[2];
}; /* 24 bytes, Rust: RateWindow */

/* DownUpOrder<RateWindow> */
struct down_up_window {
	struct rate_window down;
	struct rate_window up;
};

typedef struct {
	__u64 first_seen_ns;
	__u64 last_seen_ns;
	struct down_up_u64 bytes;
	struct down_up_u64 packets;
	struct down_up_u32 rate_bps;
	struct down_up_window windows;
	__u8 ip_protocol;
	__u8 tos;
	__u8 end_reason;   /* reserved for a future FIN/RST tracker */
	__u8 pad[5];
	__u32 tc_handle;
	__u32 cpu;
	__u64 owner_hash[2]; /* [0] circuit id, [1] device id */
} flow_stats_t; /* 136 bytes, Rust: FlowData */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, flow_stats_t);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_table SEC(".maps");

static __always_inline void roll_window(struct rate_window *w, __u32 *rate_bps,
					__u64 now, __u32 len)
{
	if (now - w->started_ns >= RATE_WINDOW_NS) {
		w->bytes[1] = w->bytes[0];
		w->bytes[0] = 0;
		w->started_ns = now;
		*rate_bps = (__u32)(w->bytes[1] * 8);
	}
	w->bytes[0] += len;
}

static __always_inline void track_flow(const struct packet_info *pi, int local_is_src,
				       int is_down, const struct ip_hash_info *target)
{
	struct flow_key key = {};
	flow_stats_t *flow;
	__u64 now = bpf_ktime_get_boot_ns();

	if (local_is_src) {
		key.local_addr = pi->src;
		key.remote_addr = pi->dst;
		key.local_port = pi->src_port;
		key.remote_port = pi->dst_port;
	} else {
		key.local_addr = pi->dst;
		key.remote_addr = pi->src;
		key.local_port = pi->dst_port;
		key.remote_port = pi->src_port;
	}
	key.ip_protocol = pi->ip_protocol;

	flow = bpf_map_lookup_elem(&flow_table, &key);
	if (!flow) {
		flow_stats_t fresh = {};

		fresh.first_seen_ns = now;
		fresh.windows.down.started_ns = now;
		fresh.windows.up.started_ns = now;
		fresh.ip_protocol = pi->ip_protocol;
		bpf_map_update_elem(&flow_table, &key, &fresh, BPF_NOEXIST);
		flow = bpf_map_lookup_elem(&flow_table, &key);
		if (!flow)
			return;
	}

	flow->last_seen_ns = now;
	flow->tos = pi->tos;
	if (is_down) {
		flow->bytes.down += pi->length;
		flow->packets.down += 1;
		roll_window(&flow->windows.down, &flow->rate_bps.down, now, pi->length);
	} else {
		flow->bytes.up += pi->length;
		flow->packets.up += 1;
		roll_window(&flow->windows.up, &flow->rate_bps.up, now, pi->length);
	}
	if (target) {
		flow->tc_handle = target->tc_handle;
		flow->cpu = target->cpu;
		flow->owner_hash[0] = target->circuit_id;
		flow->owner_hash[1] = target->device_id;
	}
}

#endif /* SHAPER_FLOWS_H */
