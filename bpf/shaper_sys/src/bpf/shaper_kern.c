/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * shaper_kern: the single BPF translation unit of the lqos.bpf reference
 * pipeline. It is shaped like LibreQoS' lqos_sys object (one XDP program,
 * an egress TC classifier, an ingress TC bridge redirector and a map
 * iterator, all sharing pinned maps) but is written independently and kept
 * deliberately small. Every program lets traffic through unchanged unless
 * userspace has filled the mapping/redirect maps and switched redirection on.
 *
 * Hooks and what they do:
 *   xdp_shaper         ingress, counts per customer address, optional
 *                      steering to a shaping CPU through cpu_map
 *   tc_classify        TC egress, tags skb->priority with the customer's
 *                      HTB class and keeps per-flow statistics
 *   tc_bridge_redirect TC ingress, short-circuits a two-port bridge
 *   flow_reader        bpf_map_elem iterator that dumps flow_table records
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common/maximums.h"
#include "common/shared.h"
#include "common/parse.h"
#include "common/control.h"
#include "common/ip_hash.h"
#include "common/cpu_map.h"
#include "common/throughput.h"
#include "common/flows.h"
#include "common/bridge.h"

/* Load-time configuration; see common/shared.h. */
const volatile __u32 cpu_count = 1;
__u32 direction = DIR_UNSET;
__s32 attach_ifindex = -1;
__u32 upload_cpu_offset;
__be16 stick_vlan_internet;
__be16 stick_vlan_lan;

/*
 * The side a packet belongs to: the interface's direction, or on a stick
 * the side its VLAN tag names (0: neither, not counted).
 */
static __always_inline __u32 side_of(__u16 vlan_id)
{
	if (direction == DIR_FACES_INTERNET || direction == DIR_FACES_LAN)
		return direction;
	if (direction != DIR_ON_STICK || !vlan_id)
		return 0;
	if (bpf_htons(vlan_id) == stick_vlan_internet)
		return DIR_FACES_INTERNET;
	if (bpf_htons(vlan_id) == stick_vlan_lan)
		return DIR_FACES_LAN;
	return 0;
}

/*
 * Which address of the packet belongs to the customer, and whether the
 * packet travels towards the customer ("down").
 */
static __always_inline int customer_is_src(__u32 side, int ingress)
{
	/* Ingress on an Internet-facing port, or egress on a LAN-facing
	 * port, carries traffic towards customers: the customer is dst. */
	if (side == DIR_FACES_INTERNET)
		return !ingress;
	return ingress;
}

SEC("xdp")
int xdp_shaper(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct packet_info pi = {};
	struct control_flags *ctl;
	struct ip_hash_info *target;
	const struct in6_addr *customer;
	int is_down;
	__u32 cpu, side;

	if (direction != DIR_FACES_INTERNET && direction != DIR_FACES_LAN && direction != DIR_ON_STICK)
		return XDP_PASS;
	if (attach_ifindex > 0 && ctx->ingress_ifindex != (__u32)attach_ifindex)
		return XDP_PASS;
	if (!parse_packet(data, data_end, &pi))
		return XDP_PASS;
	pi.length = data_end - data;
	side = side_of(pi.vlan_id);
	if (!side)
		return XDP_PASS;

	is_down = !customer_is_src(side, 1);
	customer = is_down ? &pi.dst : &pi.src;
	target = find_shaper_target(customer);
	count_host(customer, pi.length, pi.ip_protocol, is_down, target);

	ctl = control_get();
	if (!ctl || ctl->bypass || !ctl->redirect_enabled || !target)
		return XDP_PASS;

	cpu = target->cpu;
	if (!is_down)
		cpu += upload_cpu_offset;
	if (!cpu_is_available(cpu))
		return XDP_PASS;
	/* Lower flag bits are the action used when the slot is empty. */
	return bpf_redirect_map(&cpu_map, cpu, XDP_PASS);
}

SEC("tc")
int tc_classify(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct packet_info pi = {};
	struct control_flags *ctl;
	struct ip_hash_info *target;
	int local_is_src, is_down;
	__u32 side;

	if (direction != DIR_FACES_INTERNET && direction != DIR_FACES_LAN && direction != DIR_ON_STICK)
		return TC_ACT_OK;
	if (!parse_packet(data, data_end, &pi))
		return TC_ACT_OK;
	pi.length = skb->len;
	/* A tag the stack has not pushed into the packet yet sits in the skb. */
	if (skb->vlan_present)
		pi.vlan_id = skb->vlan_tci & 0x0fff;
	side = side_of(pi.vlan_id);
	if (!side)
		return TC_ACT_OK;

	local_is_src = customer_is_src(side, 0);
	is_down = !local_is_src;
	target = find_shaper_target(local_is_src ? &pi.src : &pi.dst);
	track_flow(&pi, local_is_src, is_down, target);

	ctl = control_get();
	if (ctl && !ctl->bypass && target && target->tc_handle)
		skb->priority = target->tc_handle;
	return TC_ACT_OK;
}

/*
 * The stack has moved the 802.1Q tag of an arriving frame into the skb
 * (skb->vlan_tci) before TC ingress: replace it when bridge_vlan_map
 * names this (interface, VLAN). Non-zero when the skb could not be changed.
 */
static __always_inline int retag_vlan(struct __sk_buff *skb, __u32 ifindex)
{
	struct vlan_redirect_key key = { .ifindex = ifindex, .vlan_id = skb->vlan_tci & 0x0fff };
	struct vlan_redirect *to = bpf_map_lookup_elem(&bridge_vlan_map, &key);
	__be16 proto = skb->vlan_proto;
	__u16 tci;

	if (!to || !to->vlan_id || to->vlan_id > 4094 || to->vlan_id == key.vlan_id)
		return 0;
	tci = (skb->vlan_tci & 0xf000) | (to->vlan_id & 0x0fff);
	if (bpf_skb_vlan_pop(skb))
		return -1;
	return bpf_skb_vlan_push(skb, proto, tci) ? -1 : 0;
}

SEC("tc")
int tc_bridge_redirect(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct bridge_target *to;
	struct control_flags *ctl;

	ctl = control_get();
	if (ctl && ctl->bypass)
		return TC_ACT_OK;
	to = bpf_map_lookup_elem(&bridge_redirect, &ifindex);
	if (!to || !to->to_ifindex || to->to_ifindex == ifindex)
		return TC_ACT_OK;
	if (to->only_tagged && !skb->vlan_present)
		return TC_ACT_OK;
	if (skb->vlan_present && retag_vlan(skb, ifindex))
		return TC_ACT_SHOT;
	return bpf_redirect(to->to_ifindex, 0);
}

/*
 * Iterator context, declared locally with CO-RE relocations instead of
 * pulling in vmlinux.h.
 */
struct seq_file;
struct bpf_map;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct bpf_iter__bpf_map_elem {
	struct bpf_iter_meta *meta;
	struct bpf_map *map;
	void *key;
	void *value;
} __attribute__((preserve_access_index));

/* Streams "key, value" records of the map the link is bound to (flow_table). */
SEC("iter/bpf_map_elem")
int flow_reader(struct bpf_iter__bpf_map_elem *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct flow_key *key = ctx->key;
	flow_stats_t *value = ctx->value;

	if (!key || !value)
		return 0;
	bpf_seq_write(seq, key, sizeof(*key));
	bpf_seq_write(seq, value, sizeof(*value));
	return 0;
}

char _license[] SEC("license") = "GPL";

/* The optional kprobe on the transmit path (attached only when asked). */
#include "common/xmit.h"
