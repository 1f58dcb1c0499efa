/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * xmit_counter: an optional kprobe on the kernel's transmit path. Every call
 * of dev_hard_start_xmit() hands a packet (or a list of them) to a driver;
 * the program counts those calls per CPU, next to the CPU map the XDP
 * program steers to, in the one-slot per-CPU array xmit_calls. The map is
 * not pinned: it lives as long as the program, which is held by its kprobe
 * link (lqos.bpf.attach, option kprobes). Nothing attaches it by default.
 */
#ifndef SHAPER_XMIT_H
#define SHAPER_XMIT_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} xmit_calls SEC(".maps");

SEC("kprobe/dev_hard_start_xmit")
int xmit_counter(void *ctx)
{
	__u32 slot = 0;
	__u64 *calls = bpf_map_lookup_elem(&xmit_calls, &slot);

	if (calls)
		*calls += 1;   /* per-CPU slot: no other CPU writes it */
	return 0;
}

#endif /* SHAPER_XMIT_H */
