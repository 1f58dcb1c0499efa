/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * Customer address -> shaping target mapping: an LPM trie of prefixes,
 * fronted by an exact-address LRU cache.
 */
#ifndef SHAPER_IP_HASH_H
#define SHAPER_IP_HASH_H

#include <linux/types.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include "maximums.h"

/* LPM trie key; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d, prefix + 96). */
struct ip_prefix_key {
	__u32 prefixlen;
	struct in6_addr address;
}; /* 20 bytes, Rust: IpHashKey */

/* Where a customer's traffic goes. */
struct ip_hash_info {
	__u32 cpu;        /* cpumap slot that shapes this customer */
	__u32 tc_handle;  /* major:minor of the HTB class */
	__u64 circuit_id; /* hash of the circuit name, 0 = unknown */
	__u64 device_id;  /* hash of the device name, 0 = unknown */
}; /* 24 bytes, Rust: IpHashData */

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_TRACKED_IPS);
	__type(key, struct ip_prefix_key);
	__type(value, struct ip_hash_info);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ip_to_shaper SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HOT_CACHE_SIZE);
	__type(key, struct in6_addr);
	__type(value, struct ip_hash_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shaper_hotcache SEC(".maps");

/*
 * Find the shaping target of one address: the cache first, then a
 * full-length LPM lookup whose result is copied into the cache.
 */
static __always_inline struct ip_hash_info *
find_shaper_target(const struct in6_addr *addr)
{
	struct ip_prefix_key key = {};
	struct ip_hash_info *hit;

	hit = bpf_map_lookup_elem(&shaper_hotcache, addr);
	if (hit)
		return hit;

	key.prefixlen = 128;
	key.address = *addr;
	hit = bpf_map_lookup_elem(&ip_to_shaper, &key);
	if (hit)
		bpf_map_update_elem(&shaper_hotcache, addr, hit, BPF_ANY);
	return hit;
}

#endif /* SHAPER_IP_HASH_H */
