/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * shaperd [CONFIG]: the stand-in for lqosd (docs/standin-daemon.md).
 *
 * Start: remove the pins whose key or value size differs from the embedded
 * object's (size only, as lqosd compares its Rust mirrors), then per
 * interface load and attach (hooks.c). Run: write sequence-numbered entries
 * into ip_to_shaper through its pin path, opening the pin for each write,
 * and append every write to the write log. SIGTERM/SIGINT: detach XDP only,
 * exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "wrapper.h"
#include "hooks.h"

#define DEFAULT_CONFIG "/etc/shaperd.conf"
#define WRITE_MAP "ip_to_shaper"

/* The daemon's own mirrors of the map it writes (lqosd: IpHashKey, IpHashData). */
struct ip_key {
	__u32 prefixlen;
	__u8 address[16];
};
struct ip_value {
	__u32 cpu;
	__u32 tc_handle;
	__u64 circuit_id;
	__u64 device_id;
};
_Static_assert(sizeof(struct ip_key) == 20, "ip_prefix_key is 20 bytes");
_Static_assert(sizeof(struct ip_value) == 24, "ip_hash_info is 24 bytes");

/* The maps whose stale pins are removed at start (lqosd checks six of its own). */
static const char *const checked_maps[] = {
	"ip_to_shaper", "shaper_hotcache", "host_traffic", "flow_table",
	"shaper_control", "bridge_redirect", "bridge_vlan_map",
};

struct bridge_target_v {
	__u32 to_ifindex;
	__u32 only_tagged;
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static void pin_path(char *out, const struct shaperd_config *cfg, const char *name)
{
	snprintf(out, SHAPERD_PATH_MAX, "%s/%s", cfg->pin_root, name);
}

/* Size-only check of each pin against the embedded object's map: a pin of another key or value
 * size is unlinked (no backup, as lqosd); one of the same sizes is kept, whatever its layout. */
static void remove_stale_pins(const struct shaperd_config *cfg, struct shaper_kern *skel)
{
	size_t i;

	for (i = 0; i < sizeof(checked_maps) / sizeof(checked_maps[0]); i++) {
		struct bpf_map *map = bpf_object__find_map_by_name(skel->obj, checked_maps[i]);
		struct bpf_map_info info;
		__u32 len = sizeof(info);
		char path[SHAPERD_PATH_MAX];
		int fd;

		if (!map)
			continue;
		pin_path(path, cfg, checked_maps[i]);
		fd = bpf_obj_get(path);
		if (fd < 0) {
			if (errno != ENOENT)
				say("pin %s: cannot open it: %s (left alone)", path, strerror(errno));
			continue;
		}
		memset(&info, 0, sizeof(info));
		if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
			say("pin %s: not a map or unreadable: %s (left alone)", path, strerror(errno));
		} else if (info.key_size != bpf_map__key_size(map) || info.value_size != bpf_map__value_size(map)) {
			if (unlink(path))
				say("pin %s: removing it failed: %s", path, strerror(errno));
			else
				say("pin %s: removed (key %u value %u bytes, this build expects %u and %u)", path,
				    info.key_size, info.value_size, bpf_map__key_size(map), bpf_map__value_size(map));
		}
		close(fd);
	}
}

/* Every write has its own key: more writes than the map holds would fail for want of room. */
static int check_write_limit(const struct shaperd_config *cfg, struct shaper_kern *skel)
{
	struct bpf_map *map = bpf_object__find_map_by_name(skel->obj, WRITE_MAP);

	if (!map || bpf_map__key_size(map) != sizeof(struct ip_key) ||
	    bpf_map__value_size(map) != sizeof(struct ip_value)) {
		say("the embedded object has no %s of key %zu and value %zu bytes: this daemon cannot write it",
		    WRITE_MAP, sizeof(struct ip_key), sizeof(struct ip_value));
		return -1;
	}
	if (cfg->write_limit > bpf_map__max_entries(map)) {
		say("write_limit = %lu is more than %s holds (%u entries): lower it", cfg->write_limit, WRITE_MAP,
		    bpf_map__max_entries(map));
		return -1;
	}
	return 0;
}

static int write_pinned(const struct shaperd_config *cfg, const char *name, const void *key, const void *value)
{
	char path[SHAPERD_PATH_MAX];
	int fd, err = 0;

	pin_path(path, cfg, name);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return -errno;
	if (bpf_map_update_elem(fd, key, value, BPF_ANY))
		err = -errno;
	close(fd);
	return err;
}

/* Bridge: each port redirects to the other. On a stick the reference redirector has no
 * same-port redirect, so it is attached with no entry and passes traffic. */
static int fill_bridge(const struct shaperd_config *cfg, struct iface *ifs, int n)
{
	int i;

	if (cfg->mode != MODE_BRIDGE || n != 2)
		return 0;
	for (i = 0; i < 2; i++) {
		struct bridge_target_v to = { .to_ifindex = (__u32)ifs[1 - i].ifindex, .only_tagged = 0 };
		__u32 key = (__u32)ifs[i].ifindex;
		int err = write_pinned(cfg, "bridge_redirect", &key, &to);

		if (err) {
			say("writing bridge_redirect for %s failed: %s", ifs[i].name, strerror(-err));
			return err;
		}
	}
	return 0;
}

/* The next sequence number: one past the highest in the write log (writes continue across restarts). */
static unsigned long next_seq(const char *log_path)
{
	unsigned long next = 0;
	char line[256];
	FILE *fh = fopen(log_path, "r");

	if (!fh)
		return 0;
	while (fgets(line, sizeof(line), fh)) {
		char *end;
		unsigned long seq = strtoul(line, &end, 10);

		if (end != line && *end == ' ' && seq + 1 > next)
			next = seq + 1;
	}
	fclose(fh);
	return next;
}

static void hex(char *out, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < len; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
}

/* One write: key ::ffff:100.64.0.0 + seq /128, value {cpu, tc_handle, circuit_id = seq,
 * device_id = pid}; log line "SEQ KEYHEX VALUEHEX ok|errno=N", written after the update. */
static int write_one(const struct shaperd_config *cfg, int log_fd, unsigned long seq, int cpus)
{
	struct ip_key key = { .prefixlen = 128 };
	struct ip_value value = { 0 };
	__u32 v4 = 0x64400000u + (__u32)seq;
	char line[160], khex[2 * sizeof(key) + 1], vhex[2 * sizeof(value) + 1];
	int err, len;

	key.address[10] = key.address[11] = 0xff;
	key.address[12] = v4 >> 24;
	key.address[13] = (v4 >> 16) & 0xff;
	key.address[14] = (v4 >> 8) & 0xff;
	key.address[15] = v4 & 0xff;
	value.cpu = (__u32)(seq % (unsigned long)cpus);
	value.tc_handle = 0x10000u | (__u32)((seq % 0xfffe) + 1);
	value.circuit_id = seq;
	value.device_id = (__u64)getpid();
	err = write_pinned(cfg, WRITE_MAP, &key, &value);
	hex(khex, &key, sizeof(key));
	hex(vhex, &value, sizeof(value));
	if (err)
		len = snprintf(line, sizeof(line), "%lu %s %s errno=%d\n", seq, khex, vhex, -err);
	else
		len = snprintf(line, sizeof(line), "%lu %s %s ok\n", seq, khex, vhex);
	if (write(log_fd, line, (size_t)len) != len || (cfg->log_fsync && fdatasync(log_fd))) {
		say("appending to the write log failed: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static int enter_netns(const char *netns)
{
	char path[SHAPERD_PATH_MAX];
	int fd;

	if (!netns[0])
		return 0;
	if (strchr(netns, '/'))
		snprintf(path, sizeof(path), "%s", netns);
	else
		snprintf(path, sizeof(path), "/run/netns/%s", netns);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET)) {
		say("entering network namespace %s failed: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int setup_ifaces(const struct shaperd_config *cfg, struct iface *ifs)
{
	const char *names[2] = { cfg->to_internet, cfg->to_network };
	unsigned dirs[2] = { 1, 2 };
	int i, n = 2;

	if (cfg->mode == MODE_STICK) {
		names[0] = cfg->interface;
		dirs[0] = 3;
		n = 1;
	}
	for (i = 0; i < n; i++) {
		snprintf(ifs[i].name, sizeof(ifs[i].name), "%s", names[i]);
		ifs[i].direction = dirs[i];
		ifs[i].ifindex = (int)if_nametoindex(names[i]);
		if (!ifs[i].ifindex) {
			say("interface %s: %s: fix the configuration or create the interface", names[i], strerror(errno));
			return -1;
		}
	}
	return n;
}

int main(int argc, char **argv)
{
	const char *config = argc > 1 ? argv[1] : DEFAULT_CONFIG;
	struct sigaction sa = { .sa_handler = on_signal };
	struct shaperd_config cfg;
	struct iface ifs[2] = { 0 };
	struct shaper_kern *probe;
	struct timespec pause;
	unsigned long seq;
	int i, n, log_fd, cpus, status = 0;
	bool redirector;

	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		fprintf(stderr, "usage: shaperd [CONFIG]   (default %s)\n", DEFAULT_CONFIG);
		return 2;
	}
	if (shaperd_read_config(config, &cfg))
		return 2;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (enter_netns(cfg.netns))
		return 1;
	n = setup_ifaces(&cfg, ifs);
	if (n < 0)
		return 1;
	log_fd = open(cfg.write_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (log_fd < 0) {
		say("opening the write log %s failed: %s", cfg.write_log, strerror(errno));
		return 1;
	}
	probe = open_skeleton(cfg.pin_root);
	if (!probe)
		return 1;
	if (check_write_limit(&cfg, probe)) {
		shaper_destroy(probe);
		return 2;
	}
	remove_stale_pins(&cfg, probe);
	shaper_destroy(probe);
	redirector = cfg.mode == MODE_STICK || cfg.use_xdp_bridge;
	for (i = 0; i < n; i++)
		if (iface_start(&ifs[i], &cfg, redirector))
			goto failed;
	if (redirector && fill_bridge(&cfg, ifs, n))
		goto failed;
	cpus = libbpf_num_possible_cpus();
	seq = next_seq(cfg.write_log);
	say("ready: pid %d, %d interface(s), writes from seq %lu to %lu into %s/%s", (int)getpid(), n, seq,
	    cfg.write_limit, cfg.pin_root, WRITE_MAP);
	pause.tv_sec = cfg.write_interval_ms / 1000;
	pause.tv_nsec = (long)(cfg.write_interval_ms % 1000) * 1000000L;
	while (!stopping) {
		if (seq < cfg.write_limit && !write_one(&cfg, log_fd, seq, cpus))
			seq++;
		nanosleep(&pause, NULL);
	}
	say("stopping: %lu writes logged", seq);
	goto out;
failed:
	status = 1;
out:
	for (i = 0; i < n; i++)
		iface_stop(&ifs[i]);
	close(log_fd);
	return status;
}
