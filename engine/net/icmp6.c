/*
 * icmp6.c - ICMPv6 (RFC 4443): echo replies, "packet too big" handed to the
 * path-MTU hook (RFC 8201) for TCP to judge as IPv4's fragmentation-needed
 * is; and Neighbor Discovery (RFC 4861 §7): answering solicitations for our
 * addresses, soliciting the neighbours we send to (the cache is arp.c's),
 * learning from advertisements, and announcing our addresses at start.
 * Router discovery, redirects and everything else are counted and dropped:
 * the next hop off-link is the configured gateway6.
 */
#include <string.h>

#include "net_impl.h"

#define ICMP6_HDR          8
#define ICMP6_TOO_BIG      2
#define ICMP6_ECHO         128
#define ICMP6_ECHO_REPLY   129
#define ND_NS              135
#define ND_NA              136
#define ND_LEN             24          /* header, reserved/flags, target */
#define ND_OPT_SLLA        1
#define ND_OPT_TLLA        2
#define NA_SOLICITED       0x40
#define NA_OVERRIDE        0x20

/* Checksums p (data at the ICMPv6 header) and sends it from src to dst. */
static int icmp6_send(struct vr_net *n, struct vr_pkt *p, const uint8_t *src, const uint8_t *dst,
		      uint64_t now)
{
	wr16(p->data + 2, 0);
	wr16(p->data + 2, vr_net_csum_fold(vr_net_csum_add(
		vr_net_csum_pseudo6(src, dst, VR_NET_IP_PROTO_ICMP6, p->len), p->data, p->len)));
	return vr_net_ip6_output(n, p, src, dst, VR_NET_IP_PROTO_ICMP6, now);
}

/* An NS or NA about target, with our MAC as its link-layer option. */
static void nd_send(struct vr_net *n, uint8_t type, uint8_t flags,
		    const uint8_t target[VR_NET_IP6_LEN], const uint8_t *src, const uint8_t *dst,
		    uint64_t now)
{
	struct vr_pkt *p = vr_net_pkt_alloc(n);

	if (!p)
		return;
	uint8_t *d = p->data;
	memset(d, 0, ND_LEN + 8);
	d[0] = type;
	d[4] = flags;
	memcpy(d + 8, target, VR_NET_IP6_LEN);
	d[ND_LEN] = type == ND_NS ? ND_OPT_SLLA : ND_OPT_TLLA;
	d[ND_LEN + 1] = 1;                       /* in units of 8 bytes */
	memcpy(d + ND_LEN + 2, n->conf.mac, VR_NET_MAC_LEN);
	p->len = ND_LEN + 8;
	if (icmp6_send(n, p, src, dst, now) == 0)
		vr_net_count(type == ND_NS ? &n->st.nd_solicits_tx : &n->st.nd_adverts_tx, 1);
}

void vr_net_nd_solicit(struct vr_net *n, const uint8_t target[VR_NET_IP6_LEN], uint64_t now)
{
	uint8_t src[VR_NET_IP6_LEN];
	const uint8_t group[VR_NET_IP6_LEN] = { 0xff, 0x02, [11] = 1, 0xff,
		target[13], target[14], target[15] };

	vr_net_ip6_src(n, target, src);
	nd_send(n, ND_NS, 0, target, src, group, now);
}

void vr_net_nd_announce(struct vr_net *n, const uint8_t addr[VR_NET_IP6_LEN], uint64_t now)
{
	static const uint8_t all_nodes[VR_NET_IP6_LEN] = { 0xff, 0x02, [15] = 1 };

	nd_send(n, ND_NA, NA_OVERRIDE, addr, addr, all_nodes, now);
}

/*
 * The link-layer address option of type want in an ND message's options, in
 * *mac (NULL when absent); -1 when the options are malformed (RFC 4861
 * §7.1.1: every length non-zero, none past the end).
 */
static int nd_lladdr(const uint8_t *o, size_t len, uint8_t want, const uint8_t **mac)
{
	*mac = NULL;
	while (len) {
		if (len < 2 || !o[1] || o[1] * 8u > len)
			return -1;
		if (o[0] == want && o[1] == 1)
			*mac = o + 2;
		len -= o[1] * 8u;
		o += o[1] * 8u;
	}
	return 0;
}

static void nd_rx(struct vr_net *n, struct vr_pkt *p, const struct vr_net_ip_info *ip,
		  uint64_t now)
{
	const uint8_t *d = p->data, *target = d + 8, *mac;
	uint8_t type = d[0];

	if (ip->ttl != 255 || d[1] != 0 || p->len < ND_LEN || target[0] == 0xff ||
	    nd_lladdr(d + ND_LEN, p->len - ND_LEN, type == ND_NS ? ND_OPT_SLLA : ND_OPT_TLLA,
		      &mac) < 0 ||
	    (mac && ((mac[0] & 1) || !memcmp(mac, n->conf.mac, VR_NET_MAC_LEN)))) {
		net_drop(n, p, VR_NET_DROP_ND_BAD);
		return;
	}
	int unspecified = ip6_zero(ip->src6);
	if (type == ND_NA) {
		vr_net_count(&n->st.nd_adverts_rx, 1);
		/* §7.1.2: a solicited advertisement is never sent to a group. */
		if (unspecified || (ip->dst6[0] == 0xff && (d[4] & NA_SOLICITED))) {
			net_drop(n, p, VR_NET_DROP_ND_BAD);
			return;
		}
		if (vr_net_ip6_ours(n, target))
			vr_net_count(&n->st.arp_conflicts, 1);
		else if (mac)
			vr_net_nd_learn(n, target, mac, 0, now);
		vr_net_pkt_free(p);
		return;
	}
	vr_net_count(&n->st.nd_solicits_rx, 1);
	/* §7.1.1: duplicate address detection's probe comes from :: to the group, bare. */
	if (unspecified && (mac || !vr_net_ip6_our_solicited(n, ip->dst6))) {
		net_drop(n, p, VR_NET_DROP_ND_BAD);
		return;
	}
	if (!vr_net_ip6_ours(n, target)) {
		net_drop(n, p, VR_NET_DROP_ARP_NOT_OURS);
		return;
	}
	if (unspecified) {
		/* Someone probing for our address: it is ours, and they learn so. */
		vr_net_count(&n->st.arp_conflicts, 1);
		vr_net_nd_announce(n, target, now);
		vr_net_pkt_free(p);
		return;
	}
	/* §7.2.3: the source's link-layer address goes in the cache, then the answer. */
	if (mac)
		vr_net_nd_learn(n, ip->src6, mac, 1, now);
	uint8_t to[VR_NET_IP6_LEN], tgt[VR_NET_IP6_LEN];
	memcpy(to, ip->src6, VR_NET_IP6_LEN);
	memcpy(tgt, target, VR_NET_IP6_LEN);
	vr_net_pkt_free(p);
	nd_send(n, ND_NA, NA_SOLICITED | NA_OVERRIDE, tgt, tgt, to, now);
}

static void icmp6_echo(struct vr_net *n, struct vr_pkt *p, const struct vr_net_ip_info *ip,
		       uint64_t now)
{
	uint8_t src[VR_NET_IP6_LEN], dst[VR_NET_IP6_LEN];

	/* The reply leaves from the address asked, so only a unicast one is answered. */
	if (!vr_net_ip6_ours(n, ip->dst6)) {
		net_drop(n, p, VR_NET_DROP_ICMP_TYPE);
		return;
	}
	vr_net_count(&n->st.icmp_echo_rx, 1);
	memcpy(src, ip->dst6, VR_NET_IP6_LEN);
	memcpy(dst, ip->src6, VR_NET_IP6_LEN);
	p->data[0] = ICMP6_ECHO_REPLY;
	if (icmp6_send(n, p, src, dst, now) == 0)
		vr_net_count(&n->st.icmp_echo_tx, 1);
}

static void icmp6_too_big(struct vr_net *n, struct vr_pkt *p, uint64_t now)
{
	const uint8_t *q = p->data + ICMP6_HDR;         /* the datagram we sent */
	size_t qlen = p->len - ICMP6_HDR;
	uint32_t mtu = rd32(p->data + 4);

	/* The quote holds our header and TCP's ports and sequence number (no extensions: we send none). */
	if (p->data[1] != 0 || qlen < VR_NET_IP6_HDR + 8 || q[0] >> 4 != 6 ||
	    !vr_net_ip6_ours(n, q + 8) || mtu < 68) {
		net_drop(n, p, VR_NET_DROP_ICMP_BAD_PMTU);
		return;
	}
	vr_net_count(&n->st.icmp_pmtu_rx, 1);
	struct vr_net_pmtu m = {
		.v6 = 1, .src6 = q + 8, .dst6 = q + 24, .proto = q[6],
		.mtu = (uint16_t)(mtu > 0xffff ? 0xffff : mtu),
		.l4 = q + VR_NET_IP6_HDR, .l4_len = qlen - VR_NET_IP6_HDR,
	};
	if (n->conf.pmtu)
		n->conf.pmtu(n->conf.pmtu_arg, &m, now);
	vr_net_pkt_free(p);
}

void vr_net_icmp6_rx(struct vr_net *n, struct vr_pkt *p, const struct vr_net_ip_info *ip,
		     uint64_t now)
{
	if (p->len < ICMP6_HDR) {
		net_drop(n, p, VR_NET_DROP_ICMP_SHORT);
		return;
	}
	/* RFC 4443 §2.3: the checksum covers the pseudo-header, and is never optional. */
	if (vr_net_csum_fold(vr_net_csum_add(
		    vr_net_csum_pseudo6(ip->src6, ip->dst6, VR_NET_IP_PROTO_ICMP6, p->len),
		    p->data, p->len))) {
		net_drop(n, p, VR_NET_DROP_ICMP_CSUM);
		return;
	}
	uint8_t type = p->data[0];
	if (type == ND_NS || type == ND_NA)
		nd_rx(n, p, ip, now);
	else if (ip6_zero(ip->src6))
		net_drop(n, p, VR_NET_DROP_IP_MARTIAN);
	else if (type == ICMP6_ECHO && p->data[1] == 0)
		icmp6_echo(n, p, ip, now);
	else if (type == ICMP6_TOO_BIG)
		icmp6_too_big(n, p, now);
	else
		net_drop(n, p, VR_NET_DROP_ICMP_TYPE);
}
