/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * One interface's programs, in lqosd's order: open the skeleton, set the
 * load-time variables, load (maps pinned by name under pin_root), take
 * every XDP program off the interface, attach ours hw -> drv -> skb, then
 * TC. At exit only XDP comes off.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <linux/if_link.h>
#include "wrapper.h"
#include "hooks.h"

static const struct {
	__u32 flag;
	const char *name;
} xdp_modes[] = {
	{ XDP_FLAGS_HW_MODE, "hw" },
	{ XDP_FLAGS_DRV_MODE, "drv" },
	{ XDP_FLAGS_SKB_MODE, "skb" },
};

/* Tracing programs (iterators, kprobes, LSM) are optional: a kernel may refuse them before
 * verification (EPERM), and lqosd runs without them. Only XDP and TC programs are loaded. */
static void skip_optional_programs(struct shaper_kern *skel)
{
	struct bpf_program *prog;

	bpf_object__for_each_program(prog, skel->obj) {
		enum bpf_prog_type type = bpf_program__type(prog);

		if (type != BPF_PROG_TYPE_XDP && type != BPF_PROG_TYPE_SCHED_CLS) {
			bpf_program__set_autoload(prog, false);
			say("not loading optional program %s (%s)", bpf_program__name(prog),
			    libbpf_bpf_prog_type_str(type) ? libbpf_bpf_prog_type_str(type) : "unknown type");
		}
	}
}

/* Pins under another root than libbpf's /sys/fs/bpf (tests): every map pinned by name moves there. */
static int move_pins(struct shaper_kern *skel, const char *pin_root)
{
	struct bpf_map *map;

	bpf_object__for_each_map(map, skel->obj) {
		char path[SHAPERD_PATH_MAX];
		int err;

		if (!bpf_map__pin_path(map))
			continue;
		snprintf(path, sizeof(path), "%s/%s", pin_root, bpf_map__name(map));
		err = bpf_map__set_pin_path(map, path);
		if (err)
			return err;
	}
	return 0;
}

struct shaper_kern *open_skeleton(const char *pin_root)
{
	/* Through the wrapper only, as lqosd: the binary then embeds the object once (wrapper.o). */
	struct shaper_kern *skel = shaper_open();
	int err;

	if (!skel) {
		say("opening the embedded BPF object failed: %s", strerror(errno));
		return NULL;
	}
	err = strcmp(pin_root, "/sys/fs/bpf") ? move_pins(skel, pin_root) : 0;
	if (err) {
		say("setting the pin root %s failed: %s", pin_root, strerror(-err));
		shaper_destroy(skel);
		errno = -err;
		return NULL;
	}
	skip_optional_programs(skel);
	return skel;
}

static int load_one(struct iface *ifc, const struct shaperd_config *cfg)
{
	struct shaper_kern *skel = open_skeleton(cfg->pin_root);
	int err, cpus = libbpf_num_possible_cpus();

	if (!skel)
		return -errno;
	ifc->skel = skel;
	if (cpus <= 0) {
		say("%s: cannot count the possible CPUs: %s", ifc->name, strerror(-cpus));
		return cpus ? cpus : -EINVAL;
	}
	err = shaper_fit_cpu_maps(skel);
	if (!err)
		err = shaper_set_cpu_count(skel, (__u32)cpus);
	if (!err)
		err = shaper_set_direction(skel, ifc->direction, ifc->ifindex);
	if (err) {
		say("%s: setting the load-time variables failed: %s", ifc->name, strerror(-err));
		return err;
	}
	if (cfg->mode == MODE_STICK) {
		skel->bss->stick_vlan_internet = htons((__u16)cfg->internet_vlan);
		skel->bss->stick_vlan_lan = htons((__u16)cfg->network_vlan);
		skel->bss->upload_cpu_offset = cfg->stick_offset;
	}
	err = shaper_load(skel);
	if (err) {
		say("%s: loading the BPF object failed: %s%s%s%s", ifc->name, strerror(-err),
		    err == -EINVAL ? " (a pin under " : "", err == -EINVAL ? cfg->pin_root : "",
		    err == -EINVAL ? " that differs from the object in type, flags or max_entries makes "
				     "libbpf refuse it: remove that pin)" : "");
		return err;
	}
	return 0;
}

static int xdp_attach(struct iface *ifc)
{
	int fd = bpf_program__fd(ifc->skel->progs.xdp_shaper);
	int err = -ENODEV;
	size_t m;

	/* Whatever was there goes first, in every mode (lqosd does the same). */
	for (m = 0; m < sizeof(xdp_modes) / sizeof(xdp_modes[0]); m++)
		bpf_xdp_detach(ifc->ifindex, xdp_modes[m].flag, NULL);
	for (m = 0; m < sizeof(xdp_modes) / sizeof(xdp_modes[0]); m++) {
		__u32 flags = xdp_modes[m].flag | XDP_FLAGS_UPDATE_IF_NOEXIST;

		err = bpf_xdp_attach(ifc->ifindex, fd, flags, NULL);
		if (err == -EBUSY || err == -EEXIST) {
			bpf_xdp_detach(ifc->ifindex, xdp_modes[m].flag, NULL);
			err = bpf_xdp_attach(ifc->ifindex, fd, flags, NULL);
		}
		if (!err) {
			ifc->xdp_flag = xdp_modes[m].flag;
			ifc->xdp_mode = xdp_modes[m].name;
			if (xdp_modes[m].flag == XDP_FLAGS_SKB_MODE)
				say("%s: fell back to generic XDP (skb mode): slower than the driver's", ifc->name);
			return 0;
		}
		say("%s: XDP %s mode refused: %s", ifc->name, xdp_modes[m].name, strerror(-err));
	}
	return err;
}

static int tc_attach(struct iface *ifc, bool ingress)
{
	int err;

	if (!ingress) {
		/* lqosd removes and re-adds the clsact qdisc before the egress classifier. */
		err = shaper_tc_detach(ifc->ifindex, false, true);
		if (err)
			say("%s: removing the clsact qdisc failed: %s", ifc->name, strerror(-err));
	}
	err = shaper_tc_attach(ifc->ifindex, ingress, ifc->skel);
	if (err)
		say("%s: TC %s attach failed: %s", ifc->name, ingress ? "ingress" : "egress", strerror(-err));
	return err;
}

int iface_start(struct iface *ifc, const struct shaperd_config *cfg, bool redirector)
{
	int err = load_one(ifc, cfg);

	if (!err)
		err = xdp_attach(ifc);
	if (err)
		return err;
	err = tc_attach(ifc, false);
	if (!err && redirector)
		err = tc_attach(ifc, true);
	if (!err)
		say("%s: ifindex %d, direction %u: XDP %s mode, TC egress%s", ifc->name, ifc->ifindex,
		    ifc->direction, ifc->xdp_mode, redirector ? " and ingress" : "");
	return err;
}

void iface_stop(struct iface *ifc)
{
	if (ifc->skel && ifc->xdp_flag) {
		LIBBPF_OPTS(bpf_xdp_attach_opts, opts,
			    .old_prog_fd = bpf_program__fd(ifc->skel->progs.xdp_shaper));
		/* Only our own program: XDP_FLAGS_REPLACE fails if another one took the hook. */
		int err = bpf_xdp_detach(ifc->ifindex, ifc->xdp_flag | XDP_FLAGS_REPLACE, &opts);

		if (err)
			say("%s: XDP detach failed: %s", ifc->name, strerror(-err));
		else
			say("%s: XDP detached (TC stays attached)", ifc->name);
		ifc->xdp_flag = 0;
	}
	shaper_destroy(ifc->skel);
	ifc->skel = NULL;
}
