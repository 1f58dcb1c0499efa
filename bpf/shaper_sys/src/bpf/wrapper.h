/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * C API over the generated skeleton (shaper_kern_skel.h), compiled into
 * libshaperwrap.a and turned into Rust declarations by bindgen. The
 * skeleton is generated into the build folder next to this file, so the
 * quoted include below resolves without extra -I flags.
 */
#ifndef SHAPER_WRAPPER_H
#define SHAPER_WRAPPER_H

#include "shaper_kern_skel.h"
#include <stdbool.h>
#include <stddef.h>
#include <linux/bpf.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>

/* TC filter identity used for both hooks. */
#define SHAPER_TC_HANDLE 0x1
#define SHAPER_TC_PRIORITY 0xC02F

/* Open the embedded object; NULL on failure (errno set). */
struct shaper_kern *shaper_open(void);

/* Shrink cpu_map to the possible-CPU count (call between open and load). */
int shaper_fit_cpu_maps(struct shaper_kern *skel);

/* Load-time variables; -EBUSY once the object is loaded. */
int shaper_set_cpu_count(struct shaper_kern *skel, __u32 cpus);
int shaper_set_direction(struct shaper_kern *skel, __u32 direction, int ifindex);

/* Verify and create everything; pins maps by name. 0 or -errno. */
int shaper_load(struct shaper_kern *skel);

/* TC: ingress=false attaches tc_classify on egress, ingress=true attaches
 * tc_bridge_redirect on ingress. remove_hook also deletes the clsact
 * qdisc (and with it any filter on either side). 0 or -errno. */
int shaper_tc_attach(int ifindex, bool ingress, struct shaper_kern *skel);
int shaper_tc_detach(int ifindex, bool ingress, bool remove_hook);

/* Iterator over flow_table; read the records with shaper_iter_read. */
struct bpf_link *shaper_flow_iter(struct shaper_kern *skel);
/* Fills buf with up to len bytes of one full pass; bytes read or -errno. */
long shaper_iter_read(struct bpf_link *link, void *buf, size_t len);

void shaper_link_destroy(struct bpf_link *link);
void shaper_destroy(struct shaper_kern *skel);

/* Compile-time maxima from common/maximums.h. */
__u64 max_tracked_ips(void);
__u32 max_cpus(void);

#endif /* SHAPER_WRAPPER_H */
