/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * CPU steering. cpu_map is declared with MAX_CPUS slots; the kernel caps a
 * cpumap at its build-time NR_CPUS, so the loader resizes it to the
 * possible-CPU count before load.
 */
#ifndef SHAPER_CPU_MAP_H
#define SHAPER_CPU_MAP_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include "maximums.h"

struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, MAX_CPUS);
	__type(key, __u32);
	__type(value, __u32); /* queue size of the CPU's kthread */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cpu_map SEC(".maps");

/* Non-zero value: userspace has set up this CPU for shaping. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CPUS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cpus_available SEC(".maps");

static __always_inline int cpu_is_available(__u32 cpu)
{
	__u32 *ready;

	if (cpu >= cpu_count)
		return 0;
	ready = bpf_map_lookup_elem(&cpus_available, &cpu);
	return ready && *ready;
}

#endif /* SHAPER_CPU_MAP_H */
