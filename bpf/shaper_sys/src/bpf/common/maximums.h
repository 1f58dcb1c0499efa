/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * Sizing constants for the shaper_kern maps.
 *
 * The Rust side restates MAX_TRACKED_IPS, MAX_CPUS and HOT_CACHE_SIZE in
 * src/lib.rs; keep both places in step (the lqos.bpf spec checks them).
 */
#ifndef SHAPER_MAXIMUMS_H
#define SHAPER_MAXIMUMS_H

/* Number of customer addresses / prefixes the shaper can hold. */
#define MAX_TRACKED_IPS 65536

/*
 * Upper bound on CPUs the cpumap is declared with. Deliberately larger than
 * most kernels' NR_CPUS: the loader shrinks cpu_map to the possible-CPU
 * count before load, otherwise the kernel refuses the map with E2BIG.
 */
#define MAX_CPUS 1024

/* Entries in the exact-address cache in front of the LPM trie. */
#define HOT_CACHE_SIZE 16384

/* Flow table size, derived from the address maximum. */
#define MAX_FLOWS (MAX_TRACKED_IPS)

/* Interfaces the bridge redirector can map. */
#define MAX_BRIDGE_PORTS 64

/* (interface, VLAN) pairs whose tag the bridge redirector rewrites. */
#define MAX_BRIDGE_VLANS 256

#endif /* SHAPER_MAXIMUMS_H */
