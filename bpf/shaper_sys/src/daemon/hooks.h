/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
#ifndef SHAPERD_HOOKS_H
#define SHAPERD_HOOKS_H

#include "shaperd.h"

struct shaper_kern;

struct iface {
	char name[IF_NAMESIZE];
	int ifindex;
	unsigned direction;     /* 1 Internet-facing, 2 network-facing, 3 on a stick */
	struct shaper_kern *skel;
	unsigned xdp_flag;      /* XDP_FLAGS_*_MODE it is attached with, 0 = none */
	const char *xdp_mode;
};

/* The embedded object opened (optional tracing programs off), maps pinned under pin_root. */
struct shaper_kern *open_skeleton(const char *pin_root);

/* Load, detach any XDP program (hw, drv, skb), attach ours hw -> drv -> skb, TC egress, and
 * the bridge redirector on TC ingress when `redirector`. 0 or -errno (message on stderr). */
int iface_start(struct iface *ifc, const struct shaperd_config *cfg, bool redirector);

/* Detach our XDP program only (TC stays), then close the skeleton. */
void iface_stop(struct iface *ifc);

#endif /* SHAPERD_HOOKS_H */
