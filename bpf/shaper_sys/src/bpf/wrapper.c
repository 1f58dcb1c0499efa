/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/* Implementation of wrapper.h. Built for the host, not for BPF. */
#include <errno.h>
#include <unistd.h>
#include "wrapper.h"
#include "common/maximums.h"

static bool is_loaded(struct shaper_kern *skel)
{
	return bpf_program__fd(skel->progs.xdp_shaper) >= 0;
}

struct shaper_kern *shaper_open(void)
{
	return shaper_kern__open();
}

int shaper_fit_cpu_maps(struct shaper_kern *skel)
{
	int possible = libbpf_num_possible_cpus();

	if (possible <= 0)
		return possible < 0 ? possible : -EINVAL;
	if (is_loaded(skel))
		return -EBUSY;
	if ((__u32)possible >= bpf_map__max_entries(skel->maps.cpu_map))
		return 0;
	return bpf_map__set_max_entries(skel->maps.cpu_map, possible);
}

int shaper_set_cpu_count(struct shaper_kern *skel, __u32 cpus)
{
	if (is_loaded(skel))
		return -EBUSY;
	skel->rodata->cpu_count = cpus;
	return 0;
}

int shaper_set_direction(struct shaper_kern *skel, __u32 direction, int ifindex)
{
	if (is_loaded(skel))
		return -EBUSY;
	skel->data->direction = direction;
	skel->data->attach_ifindex = ifindex;
	return 0;
}

int shaper_load(struct shaper_kern *skel)
{
	return shaper_kern__load(skel);
}

static void fill_hook(struct bpf_tc_hook *hook, int ifindex, bool ingress)
{
	hook->sz = sizeof(*hook);
	hook->ifindex = ifindex;
	hook->attach_point = ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
}

int shaper_tc_attach(int ifindex, bool ingress, struct shaper_kern *skel)
{
	struct bpf_tc_hook hook = {0};
	struct bpf_tc_opts opts = {0};
	struct bpf_program *prog;
	int err;

	prog = ingress ? skel->progs.tc_bridge_redirect : skel->progs.tc_classify;
	fill_hook(&hook, ifindex, ingress);
	err = bpf_tc_hook_create(&hook);
	if (err && err != -EEXIST)
		return err;

	opts.sz = sizeof(opts);
	opts.prog_fd = bpf_program__fd(prog);
	opts.handle = SHAPER_TC_HANDLE;
	opts.priority = SHAPER_TC_PRIORITY;
	opts.flags = BPF_TC_F_REPLACE;
	if (opts.prog_fd < 0)
		return -EBADF;
	return bpf_tc_attach(&hook, &opts);
}

int shaper_tc_detach(int ifindex, bool ingress, bool remove_hook)
{
	struct bpf_tc_hook hook = {0};
	struct bpf_tc_opts opts = {0};
	int err;

	fill_hook(&hook, ifindex, ingress);
	opts.sz = sizeof(opts);
	opts.handle = SHAPER_TC_HANDLE;
	opts.priority = SHAPER_TC_PRIORITY;
	err = bpf_tc_detach(&hook, &opts);
	if (err && err != -ENOENT)
		return err;
	if (remove_hook) {
		/* Both sides at once removes the clsact qdisc itself. */
		hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
		err = bpf_tc_hook_destroy(&hook);
		if (err && err != -ENOENT)
			return err;
	}
	return 0;
}

struct bpf_link *shaper_flow_iter(struct shaper_kern *skel)
{
	union bpf_iter_link_info info = {0};
	struct bpf_iter_attach_opts opts = {0};

	info.map.map_fd = bpf_map__fd(skel->maps.flow_table);
	opts.sz = sizeof(opts);
	opts.link_info = &info;
	opts.link_info_len = sizeof(info);
	return bpf_program__attach_iter(skel->progs.flow_reader, &opts);
}

long shaper_iter_read(struct bpf_link *link, void *buf, size_t len)
{
	char *cursor = buf;
	size_t used = 0;
	int fd;

	fd = bpf_iter_create(bpf_link__fd(link));
	if (fd < 0)
		return -errno;
	while (used < len) {
		ssize_t got = read(fd, cursor + used, len - used);

		if (got < 0) {
			int saved = errno;

			close(fd);
			return -saved;
		}
		if (got == 0)
			break;
		used += (size_t)got;
	}
	close(fd);
	return (long)used;
}

void shaper_link_destroy(struct bpf_link *link)
{
	if (link)
		bpf_link__destroy(link);
}

void shaper_destroy(struct shaper_kern *skel)
{
	if (skel)
		shaper_kern__destroy(skel);
}

__u64 max_tracked_ips(void)
{
	return MAX_TRACKED_IPS;
}

__u32 max_cpus(void)
{
	return MAX_CPUS;
}
