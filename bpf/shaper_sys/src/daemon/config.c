/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * shaperd's configuration file: one `key = value` per line, `#` starts a
 * comment, values may be double-quoted (a TOML subset without tables).
 * Keys: see shaperd.conf.example.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shaperd.h"

void say(const char *fmt, ...)
{
	va_list ap;

	fputs("shaperd: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

static int copy_str(char *dst, size_t size, const char *value)
{
	if (strlen(value) >= size)
		return -1;
	strcpy(dst, value);
	return 0;
}

static int parse_bool(bool *dst, const char *value)
{
	if (!strcmp(value, "true") || !strcmp(value, "yes") || !strcmp(value, "1"))
		*dst = true;
	else if (!strcmp(value, "false") || !strcmp(value, "no") || !strcmp(value, "0"))
		*dst = false;
	else
		return -1;
	return 0;
}

static int parse_ulong(unsigned long *dst, const char *value, unsigned long min, unsigned long max)
{
	char *end;
	unsigned long v;

	if (!isdigit((unsigned char)*value))
		return -1;
	errno = 0;
	v = strtoul(value, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*dst = v;
	return 0;
}

static int parse_uint(unsigned *dst, const char *value, unsigned min, unsigned max)
{
	unsigned long v;

	if (parse_ulong(&v, value, min, max))
		return -1;
	*dst = (unsigned)v;
	return 0;
}

/* 0 = set, -1 = bad value (message names the expected form), -2 = unknown key. */
static int set_key(struct shaperd_config *cfg, const char *key, const char *value, const char **want)
{
	if (!strcmp(key, "mode")) {
		*want = "bridge or stick";
		if (!strcmp(value, "bridge"))
			cfg->mode = MODE_BRIDGE;
		else if (!strcmp(value, "stick"))
			cfg->mode = MODE_STICK;
		else
			return -1;
		return 0;
	}
	*want = "an interface name shorter than 16 bytes";
	if (!strcmp(key, "to_internet"))
		return copy_str(cfg->to_internet, sizeof(cfg->to_internet), value);
	if (!strcmp(key, "to_network"))
		return copy_str(cfg->to_network, sizeof(cfg->to_network), value);
	if (!strcmp(key, "interface"))
		return copy_str(cfg->interface, sizeof(cfg->interface), value);
	*want = "true or false";
	if (!strcmp(key, "use_xdp_bridge"))
		return parse_bool(&cfg->use_xdp_bridge, value);
	if (!strcmp(key, "log_fsync"))
		return parse_bool(&cfg->log_fsync, value);
	*want = "a VLAN id, 1-4094";
	if (!strcmp(key, "internet_vlan"))
		return parse_uint(&cfg->internet_vlan, value, 1, 4094);
	if (!strcmp(key, "network_vlan"))
		return parse_uint(&cfg->network_vlan, value, 1, 4094);
	*want = "a number, 0-4294967295";
	if (!strcmp(key, "stick_offset"))
		return parse_uint(&cfg->stick_offset, value, 0, 0xFFFFFFFFu);
	*want = "milliseconds, 1-3600000";
	if (!strcmp(key, "write_interval_ms"))
		return parse_uint(&cfg->write_interval_ms, value, 1, 3600000);
	*want = "a count, 0-4194304 and at most the entries of ip_to_shaper";
	if (!strcmp(key, "write_limit"))
		return parse_ulong(&cfg->write_limit, value, 0, 4194304);
	*want = "a path shorter than 4096 bytes";
	if (!strcmp(key, "netns"))
		return copy_str(cfg->netns, sizeof(cfg->netns), value);
	*want = "an absolute path shorter than 4096 bytes";
	if (!strcmp(key, "pin_root"))
		return value[0] == '/' ? copy_str(cfg->pin_root, sizeof(cfg->pin_root), value) : -1;
	if (!strcmp(key, "write_log"))
		return value[0] == '/' ? copy_str(cfg->write_log, sizeof(cfg->write_log), value) : -1;
	return -2;
}

static int check(const char *path, const struct shaperd_config *cfg)
{
	switch (cfg->mode) {
	case MODE_BRIDGE:
		if (!cfg->to_internet[0] || !cfg->to_network[0]) {
			say("%s: mode bridge needs to_internet and to_network: add both interface names", path);
			return -1;
		}
		if (!strcmp(cfg->to_internet, cfg->to_network)) {
			say("%s: to_internet and to_network are both %s: give two interfaces, or use mode stick",
			    path, cfg->to_internet);
			return -1;
		}
		return 0;
	case MODE_STICK:
		if (!cfg->interface[0] || !cfg->internet_vlan || !cfg->network_vlan) {
			say("%s: mode stick needs interface, internet_vlan and network_vlan: add all three", path);
			return -1;
		}
		if (cfg->internet_vlan == cfg->network_vlan) {
			say("%s: internet_vlan and network_vlan are both %u: give two VLAN ids", path, cfg->network_vlan);
			return -1;
		}
		return 0;
	default:
		say("%s: no mode: add `mode = bridge` or `mode = stick`", path);
		return -1;
	}
}

int shaperd_read_config(const char *path, struct shaperd_config *cfg)
{
	char line[8192];
	unsigned lineno = 0;
	FILE *fh;

	memset(cfg, 0, sizeof(*cfg));
	cfg->use_xdp_bridge = true;
	strcpy(cfg->pin_root, "/sys/fs/bpf");
	strcpy(cfg->write_log, "/var/lib/shaperd/writes.log");
	cfg->write_interval_ms = 10;
	cfg->write_limit = 50000;

	fh = fopen(path, "r");
	if (!fh) {
		say("cannot read configuration %s: %s: create it (see shaperd.conf.example) or pass its path",
		    path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), fh)) {
		char *key, *value, *eq, *hash;
		const char *want = "";
		size_t len;
		int ret;

		lineno++;
		if (!strchr(line, '\n') && !feof(fh)) {
			say("%s:%u: line longer than %zu bytes", path, lineno, sizeof(line) - 1);
			goto fail;
		}
		key = trim(line);
		if (!*key || *key == '#')
			continue;
		eq = strchr(key, '=');
		if (!eq) {
			say("%s:%u: expected `key = value`, got %s", path, lineno, key);
			goto fail;
		}
		*eq = '\0';
		value = trim(eq + 1);
		key = trim(key);
		if (*value == '"') {
			char *close = strchr(value + 1, '"');

			if (!close) {
				say("%s:%u: unterminated quoted value", path, lineno);
				goto fail;
			}
			*close = '\0';
			hash = trim(close + 1);
			if (*hash && *hash != '#') {
				say("%s:%u: text after the quoted value of %s", path, lineno, key);
				goto fail;
			}
			value++;
		} else if ((hash = strchr(value, '#'))) {
			*hash = '\0';
			value = trim(value);
		}
		len = strlen(value);
		if (!len) {
			say("%s:%u: %s has no value", path, lineno, key);
			goto fail;
		}
		ret = set_key(cfg, key, value, &want);
		if (ret == -2) {
			say("%s:%u: unknown key %s (see shaperd.conf.example for the keys)", path, lineno, key);
			goto fail;
		}
		if (ret) {
			say("%s:%u: %s = %s is invalid: give %s", path, lineno, key, value, want);
			goto fail;
		}
	}
	if (ferror(fh)) {
		say("reading %s failed: %s", path, strerror(errno));
		goto fail;
	}
	fclose(fh);
	return check(path, cfg);
fail:
	fclose(fh);
	return -1;
}
