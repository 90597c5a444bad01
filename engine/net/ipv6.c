/*
 * ipv6.c - IPv6 input and output (RFC 8200) for an instance given an ip6.
 *
 * Input checks the fixed header (version, payload length against the frame),
 * a believable source, and a destination that is ours: ip6, our link-local
 * address, their solicited-node groups or all-nodes (ff02::1), the groups
 * taken for ICMPv6 only. Extension headers are walked: hop-by-hop and
 * destination options are skipped when every option in them may be (RFC
 * 8200 §4.2: an unknown one whose action bits say "discard" is not), a
 * routing header only with segments left 0 (§4.4: we are its final
 * destination). Fragments are counted and dropped as IPv4's are, for the
 * same reasons; anything else (ESP, AH, no next header, unknown) too.
 * XXX RFC 8200 §4: no ICMPv6 parameter problem is sent for what we drop.
 */
#include <errno.h>
#include <string.h>

#include "net_impl.h"

#define NH_HOP      0
#define NH_ROUTING  43
#define NH_FRAG     44
#define NH_DEST     60
#define IP6_HOPS    64

uint32_t vr_net_csum_pseudo6(const uint8_t src[VR_NET_IP6_LEN], const uint8_t dst[VR_NET_IP6_LEN],
			     uint8_t proto, uint32_t len)
{
	uint64_t sum = vr_net_csum_add(vr_net_csum_add(0, src, VR_NET_IP6_LEN), dst, VR_NET_IP6_LEN);

	sum += (len >> 16) + (len & 0xffff) + proto;
	while (sum >> 32)
		sum = (sum & 0xffffffffu) + (sum >> 32);
	return (uint32_t)sum;
}

int vr_net_ip6_ours(const struct vr_net *n, const uint8_t a[VR_NET_IP6_LEN])
{
	return !memcmp(a, n->conf.ip6, VR_NET_IP6_LEN) || !memcmp(a, n->lladdr, VR_NET_IP6_LEN);
}

int vr_net_ip6_our_solicited(const struct vr_net *n, const uint8_t a[VR_NET_IP6_LEN])
{
	static const uint8_t prefix[13] = { 0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff };

	return !memcmp(a, prefix, sizeof(prefix)) &&
	       (!memcmp(a + 13, n->conf.ip6 + 13, 3) || !memcmp(a + 13, n->lladdr + 13, 3));
}

static int ip6_all_nodes(const uint8_t a[VR_NET_IP6_LEN])
{
	static const uint8_t all[VR_NET_IP6_LEN] = { 0xff, 0x02, [15] = 1 };

	return !memcmp(a, all, VR_NET_IP6_LEN);
}

/* Sources a datagram must never carry: multicast, loopback, ours (:: is ND's DAD). */
static int ip6_martian(const struct vr_net *n, const uint8_t a[VR_NET_IP6_LEN])
{
	return a[0] == 0xff || ip6_loopback(a) || vr_net_ip6_ours(n, a);
}

/* Whether every option of a hop-by-hop or destination options header may be skipped. */
static int opts_skippable(const uint8_t *o, size_t len)
{
	for (size_t i = 2; i < len;) {
		if (o[i] == 0) {                     /* Pad1 */
			i++;
			continue;
		}
		if (i + 2 > len || i + 2 + o[i + 1] > len)
			return 0;
		if (o[i] != 1 && (o[i] >> 6))        /* PadN, or "skip" in the action bits */
			return 0;
		i += 2u + o[i + 1];
	}
	return 1;
}

void vr_net_ipv6_rx(struct vr_net *n, struct vr_pkt *p, uint64_t now)
{
	const uint8_t *d = p->data;

	if (p->len < VR_NET_IP6_HDR) {
		net_drop(n, p, VR_NET_DROP_IP_SHORT);
		return;
	}
	if (d[0] >> 4 != 6) {
		net_drop(n, p, VR_NET_DROP_IP_VERSION);
		return;
	}
	unsigned total = VR_NET_IP6_HDR + rd16(d + 4);
	if (total > p->len) {
		net_drop(n, p, VR_NET_DROP_IP_TOTAL_LEN);
		return;
	}
	struct vr_net_ip_info ip = {
		.v6 = 1, .src6 = d + 8, .dst6 = d + 24, .ttl = d[7],
		.tos = (uint8_t)((d[0] << 4) | (d[1] >> 4)),
	};
	int group = vr_net_ip6_our_solicited(n, ip.dst6) || ip6_all_nodes(ip.dst6);
	if (!vr_net_ip6_ours(n, ip.dst6) && !group) {
		net_drop(n, p, VR_NET_DROP_IP_NOT_OURS);
		return;
	}
	if (ip6_martian(n, ip.src6)) {
		net_drop(n, p, VR_NET_DROP_IP_MARTIAN);
		return;
	}
	unsigned off = VR_NET_IP6_HDR;
	uint8_t nh = d[6];
	for (;;) {
		if (nh == VR_NET_IP_PROTO_TCP || nh == VR_NET_IP_PROTO_ICMP6)
			break;
		if (nh == NH_FRAG) {
			net_drop(n, p, VR_NET_DROP_IP_FRAG);
			return;
		}
		if (nh != NH_HOP && nh != NH_DEST && nh != NH_ROUTING) {
			net_drop(n, p, VR_NET_DROP_IP_PROTO);
			return;
		}
		const uint8_t *e = d + off;
		if (off + 8 > total || off + (e[1] + 1u) * 8 > total) {
			net_drop(n, p, VR_NET_DROP_IP_TOTAL_LEN);
			return;
		}
		unsigned elen = (e[1] + 1u) * 8;
		/* RFC 8200 §4.3: hop-by-hop only right after the fixed header. */
		if ((nh == NH_HOP && off != VR_NET_IP6_HDR) ||
		    (nh == NH_ROUTING && e[3] != 0) ||
		    (nh != NH_ROUTING && !opts_skippable(e, elen))) {
			net_drop(n, p, VR_NET_DROP_IP6_EXT);
			return;
		}
		nh = e[0];
		off += elen;
	}
	if (group && nh != VR_NET_IP_PROTO_ICMP6) {
		net_drop(n, p, VR_NET_DROP_IP_NOT_OURS);
		return;
	}
	if (ip6_zero(ip.src6) && nh != VR_NET_IP_PROTO_ICMP6) {
		net_drop(n, p, VR_NET_DROP_IP_MARTIAN);   /* only ND's probes come from :: */
		return;
	}
	ip.proto = nh;
	pkt_pull(p, off, total);
	if (nh == VR_NET_IP_PROTO_ICMP6)
		vr_net_icmp6_rx(n, p, &ip, now);
	else if (n->conf.tcp_rx)
		n->conf.tcp_rx(n->conf.tcp_arg, p, &ip, now);
	else
		net_drop(n, p, VR_NET_DROP_IP_PROTO);
}

/* Whether a lies inside ip6/prefix6. */
static int ip6_on_link(const struct vr_net *n, const uint8_t a[VR_NET_IP6_LEN])
{
	unsigned bits = n->conf.prefix6, bytes = bits / 8;

	if (memcmp(a, n->conf.ip6, bytes))
		return 0;
	if (bits % 8 == 0)
		return 1;
	uint8_t mask = (uint8_t)(0xff00 >> (bits % 8));
	return (a[bytes] & mask) == (n->conf.ip6[bytes] & mask);
}

int vr_net_ip6_output(struct vr_net *n, struct vr_pkt *p, const uint8_t *src,
		      const uint8_t dst[VR_NET_IP6_LEN], uint8_t proto, uint64_t now)
{
	uint8_t hops = IP6_HOPS;

	if (!n->has_ip6) {
		net_drop(n, p, VR_NET_DROP_NO_ROUTE);
		return -EHOSTUNREACH;
	}
	if ((uint32_t)p->len + VR_NET_IP6_HDR > n->conf.mtu ||
	    p->headroom < VR_NET_IP6_HDR + VR_NET_ETH_HDR) {
		net_drop(n, p, VR_NET_DROP_TOO_BIG);
		return -EMSGSIZE;
	}
	const uint8_t *nh;
	if (dst[0] == 0xff) {
		/* Only ICMPv6 (Neighbor Discovery) goes to a group; RFC 4861 §7.1 wants 255. */
		if (proto != VR_NET_IP_PROTO_ICMP6) {
			net_drop(n, p, VR_NET_DROP_NO_ROUTE);
			return -EHOSTUNREACH;
		}
		hops = 255;
		nh = NULL;
	} else if (ip6_link_local(dst) || ip6_on_link(n, dst)) {
		nh = dst;
	} else {
		nh = n->conf.gateway6;
	}
	if (nh && (ip6_zero(nh) || ip6_zero(dst) || ip6_martian(n, dst))) {
		net_drop(n, p, VR_NET_DROP_NO_ROUTE);
		return -EHOSTUNREACH;
	}
	if (proto == VR_NET_IP_PROTO_ICMP6 && p->len && p->data[0] >= 133 && p->data[0] <= 137)
		hops = 255;                  /* every ND message, unicast ones too */
	uint16_t plen = p->len;
	uint8_t *h = pkt_push(p, VR_NET_IP6_HDR);
	wr32(h, 0x60000000u);                /* version 6, class 0, no flow label */
	wr16(h + 4, plen);
	h[6] = proto;
	h[7] = hops;
	if (src)
		memcpy(h + 8, src, VR_NET_IP6_LEN);
	else
		vr_net_ip6_src(n, dst, h + 8);
	memcpy(h + 24, dst, VR_NET_IP6_LEN);
	if (!nh) {
		const uint8_t mac[VR_NET_MAC_LEN] = { 0x33, 0x33, dst[12], dst[13], dst[14], dst[15] };
		vr_net_eth_output(n, p, mac, ETH_TYPE_IPV6, now);
		return 0;
	}
	return vr_net_nd_output(n, p, nh, now);
}
