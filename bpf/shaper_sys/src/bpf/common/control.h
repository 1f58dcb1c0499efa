/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/* Run-time switches, written by userspace into a one-slot array. */
#ifndef SHAPER_CONTROL_H
#define SHAPER_CONTROL_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

struct control_flags {
	__u32 bypass;           /* non-zero: never classify or redirect */
	__u32 redirect_enabled; /* non-zero: XDP may redirect to cpu_map */
}; /* 8 bytes, Rust: ShaperControl */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct control_flags);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shaper_control SEC(".maps");

static __always_inline struct control_flags *control_get(void)
{
	__u32 slot = 0;

	return bpf_map_lookup_elem(&shaper_control, &slot);
}

#endif /* SHAPER_CONTROL_H */
