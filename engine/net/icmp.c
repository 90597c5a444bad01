/*
 * icmp.c - ICMP (RFC 792): echo replies, and "fragmentation needed" handed
 * to the path-MTU hook (RFC 1191) for TCP to judge. Everything else ICMP
 * can say is counted and dropped: RFC 5927 advises treating the other
 * unreachables as soft errors, which TCP's own timers already cover.
 */
#include <string.h>

#include "net_impl.h"

#define ICMP_HDR          8
#define ICMP_ECHO_REPLY   0
#define ICMP_UNREACH      3
#define ICMP_UNREACH_FRAG 4
#define ICMP_ECHO         8
#define PMTU_MIN          68          /* RFC 791: every host handles 68 octets */

static void icmp_echo(struct vr_net *n, struct vr_pkt *p, const struct vr_net_ip_info *ip,
		      uint64_t now)
{
	/* The request becomes the reply in place: same id, sequence and data. */
	vr_net_count(&n->st.icmp_echo_rx, 1);
	p->data[0] = ICMP_ECHO_REPLY;
	wr16(p->data + 2, 0);
	wr16(p->data + 2, vr_net_csum_fold(vr_net_csum_add(0, p->data, p->len)));
	if (vr_net_ip_output(n, p, ip->src, VR_NET_IP_PROTO_ICMP, now) == 0)
		vr_net_count(&n->st.icmp_echo_tx, 1);
}

static void icmp_frag_needed(struct vr_net *n, struct vr_pkt *p, uint64_t now)
{
	const uint8_t *q = p->data + ICMP_HDR;         /* the datagram we sent */
	size_t qlen = p->len - ICMP_HDR;
	unsigned qihl = qlen ? (q[0] & 0xfu) * 4 : 0;

	/* RFC 792 quotes the header and 8 bytes: TCP's ports and sequence number. */
	if (qlen < VR_NET_IP_HDR || q[0] >> 4 != 4 || qihl < VR_NET_IP_HDR ||
	    qlen < qihl + 8 || rd32(q + 12) != n->conf.ip || rd16(p->data + 6) < PMTU_MIN) {
		net_drop(n, p, VR_NET_DROP_ICMP_BAD_PMTU);
		return;
	}
	vr_net_count(&n->st.icmp_pmtu_rx, 1);
	struct vr_net_pmtu m = {
		.dst = rd32(q + 16), .proto = q[9], .mtu = rd16(p->data + 6),
		.l4 = q + qihl, .l4_len = qlen - qihl,
	};
	if (n->conf.pmtu)
		n->conf.pmtu(n->conf.pmtu_arg, &m, now);
	vr_net_pkt_free(p);
}

void vr_net_icmp_rx(struct vr_net *n, struct vr_pkt *p, const struct vr_net_ip_info *ip,
		    uint64_t now)
{
	if (p->len < ICMP_HDR) {
		net_drop(n, p, VR_NET_DROP_ICMP_SHORT);
		return;
	}
	if (vr_net_csum_fold(vr_net_csum_add(0, p->data, p->len))) {
		net_drop(n, p, VR_NET_DROP_ICMP_CSUM);
		return;
	}
	uint8_t type = p->data[0], code = p->data[1];
	if (type == ICMP_ECHO && code == 0)
		icmp_echo(n, p, ip, now);
	else if (type == ICMP_UNREACH && code == ICMP_UNREACH_FRAG)
		icmp_frag_needed(n, p, now);
	else
		net_drop(n, p, VR_NET_DROP_ICMP_TYPE);
}
