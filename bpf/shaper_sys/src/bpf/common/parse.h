/* lqos.bpf reference pipeline: written for this project (see bpf/README.md). */
/*
 * Minimal header walker used by both the XDP and the TC programs:
 * Ethernet, at most one 802.1Q/802.1ad tag, IPv4 or IPv6 (no extension
 * headers), and TCP/UDP ports. Addresses come out as 16-byte in6_addr,
 * IPv4 mapped into ::ffff:0:0/96.
 */
#ifndef SHAPER_PARSE_H
#define SHAPER_PARSE_H

#include <linux/types.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

struct vlan_tag {
	__be16 tci;
	__be16 inner_proto;
};

struct packet_info {
	struct in6_addr src;
	struct in6_addr dst;
	__u16 src_port;  /* host byte order, 0 if not TCP/UDP */
	__u16 dst_port;
	__u8 ip_protocol;
	__u8 tos;
	__u16 vlan_id;   /* 0 if untagged */
	__u32 length;    /* bytes on the wire as seen by the hook */
};

static __always_inline void map_v4(struct in6_addr *out, __be32 v4)
{
	out->in6_u.u6_addr32[0] = 0;
	out->in6_u.u6_addr32[1] = 0;
	out->in6_u.u6_addr32[2] = bpf_htonl(0x0000ffff);
	out->in6_u.u6_addr32[3] = v4;
}

static __always_inline void read_ports(void *l4, void *end, struct packet_info *pi)
{
	if (pi->ip_protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > end)
			return;
		pi->src_port = bpf_ntohs(tcp->source);
		pi->dst_port = bpf_ntohs(tcp->dest);
	} else if (pi->ip_protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > end)
			return;
		pi->src_port = bpf_ntohs(udp->source);
		pi->dst_port = bpf_ntohs(udp->dest);
	}
}

/* Returns 1 when an IP packet was recognised, 0 otherwise. */
static __always_inline int parse_packet(void *start, void *end, struct packet_info *pi)
{
	struct ethhdr *eth = start;
	void *cursor;
	__u16 proto;

	if ((void *)(eth + 1) > end)
		return 0;
	proto = bpf_ntohs(eth->h_proto);
	cursor = eth + 1;

	if (proto == ETH_P_8021Q || proto == ETH_P_8021AD) {
		struct vlan_tag *tag = cursor;

		if ((void *)(tag + 1) > end)
			return 0;
		pi->vlan_id = bpf_ntohs(tag->tci) & 0x0fff;
		proto = bpf_ntohs(tag->inner_proto);
		cursor = tag + 1;
	}

	if (proto == ETH_P_IP) {
		struct iphdr *ip4 = cursor;
		__u32 hdr_len;

		if ((void *)(ip4 + 1) > end)
			return 0;
		hdr_len = ip4->ihl * 4;
		if (hdr_len < sizeof(*ip4))
			return 0;
		map_v4(&pi->src, ip4->saddr);
		map_v4(&pi->dst, ip4->daddr);
		pi->ip_protocol = ip4->protocol;
		pi->tos = ip4->tos;
		read_ports(cursor + hdr_len, end, pi);
		return 1;
	}

	if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = cursor;

		if ((void *)(ip6 + 1) > end)
			return 0;
		pi->src = ip6->saddr;
		pi->dst = ip6->daddr;
		pi->ip_protocol = ip6->nexthdr;
		pi->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		read_ports(ip6 + 1, end, pi);
		return 1;
	}

	return 0;
}

#endif /* SHAPER_PARSE_H */
