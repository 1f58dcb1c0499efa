/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * shaperd: the reference pipeline's own daemon, a stand-in for LibreQoS'
 * lqosd in tests (docs/standin-daemon.md). It links the wrapper archive the
 * pipeline builds, so the BPF object it runs is the one embedded in its
 * binary by the skeleton.
 */
#ifndef SHAPERD_H
#define SHAPERD_H

#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>

#define SHAPERD_PATH_MAX 4096

enum shaperd_mode { MODE_UNSET = 0, MODE_BRIDGE, MODE_STICK };

struct shaperd_config {
	enum shaperd_mode mode;
	char to_internet[IF_NAMESIZE];  /* bridge */
	char to_network[IF_NAMESIZE];   /* bridge */
	bool use_xdp_bridge;            /* bridge: TC ingress redirector too */
	char interface[IF_NAMESIZE];    /* stick */
	unsigned internet_vlan;         /* stick, 1-4094 */
	unsigned network_vlan;          /* stick, 1-4094 */
	unsigned stick_offset;          /* stick: .bss upload_cpu_offset */
	char netns[SHAPERD_PATH_MAX];   /* "" = the daemon's own */
	char pin_root[SHAPERD_PATH_MAX];
	char write_log[SHAPERD_PATH_MAX];
	unsigned write_interval_ms;
	unsigned long write_limit;      /* writes per log, across restarts */
	bool log_fsync;
};

/* Reads `path` into cfg (defaults first); 0, or -1 after one message on stderr. */
int shaperd_read_config(const char *path, struct shaperd_config *cfg);

/* Messages on stderr, prefixed with "shaperd: " (journald keeps them). */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* SHAPERD_H */
