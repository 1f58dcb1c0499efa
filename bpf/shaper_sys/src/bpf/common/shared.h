/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * Small building blocks shared by the other headers: the down/up pair
 * structs (the C side of the Rust generic DownUpOrder<T>) and the
 * load-time variables the loader fills in through the skeleton.
 */
#ifndef SHAPER_SHARED_H
#define SHAPER_SHARED_H

#include <linux/types.h>

/* Values of `direction` (set by the loader before load). */
#define DIR_FACES_INTERNET 1 /* ingress traffic comes from the Internet */
#define DIR_FACES_LAN 2      /* ingress traffic comes from customers */
#define DIR_ON_STICK 3       /* one interface, two VLANs: the tag says the side */
#define DIR_UNSET 255        /* loader forgot to configure: count nothing */

/* DownUpOrder<u64> */
struct down_up_u64 {
	__u64 down;
	__u64 up;
};

/* DownUpOrder<u32> */
struct down_up_u32 {
	__u32 down;
	__u32 up;
};

/* .rodata: number of possible CPUs; bounds CPU indexes taken from maps. */
extern const volatile __u32 cpu_count;

/* .data: which way the interface this object serves is facing. */
extern __u32 direction;

/* .data: ifindex the loader meant this object for (-1 = any). */
extern __s32 attach_ifindex;

/* .bss: added to the CPU index of upload traffic (single-NIC setups). */
extern __u32 upload_cpu_offset;

/* .bss, on a stick only: the VLAN ids (network byte order) of the
 * Internet side and of the customer side. */
extern __be16 stick_vlan_internet;
extern __be16 stick_vlan_lan;

#endif /* SHAPER_SHARED_H */
