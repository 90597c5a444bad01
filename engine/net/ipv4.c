/*
 * ipv4.c - IPv4 input and output (RFC 791, RFC 1122 §3.2.1), and the
 * Internet checksum (RFC 1071) that IPv4, ICMP and TCP share.
 *
 * Input is strict: version, header length, total length against the frame,
 * header checksum (skipped when the port verified it), our address as the
 * destination and a believable source. Fragments are counted and dropped:
 * we send with DF and advertise an MSS that fits, so a peer that fragments
 * anyway is misbehaving, and reassembly is memory an attacker could pin.
 * Options are skipped, not interpreted.
 */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "net_impl.h"

#define IP_DF      0x4000
#define IP_MF      0x2000
#define IP_OFFSET  0x1fff
#define IP_TTL     64

/*
 * Summed in 32-bit words of the host's byte order, then swapped once: the
 * one's-complement sum does not care which byte of a word is which, as long
 * as all are read alike (RFC 1071 §2(B)). The main loop takes 16 bytes a
 * step into two independent sums of the 32-bit halves of 64-bit loads (a
 * 64-bit sum of 32-bit values cannot carry out below 4 GiB). It was the
 * stack's costliest function, at 2 bytes a step.
 */
uint32_t vr_net_csum_add(uint32_t sum, const void *data, size_t len)
{
	const uint8_t *b = data;
	uint64_t a0 = 0, a1 = 0, acc;
	uint32_t w;
	uint16_t h;

	for (; len >= 16; b += 16, len -= 16) {
		uint64_t q0, q1;
		memcpy(&q0, b, 8);
		memcpy(&q1, b + 8, 8);
		a0 += (q0 & 0xffffffffu) + (q0 >> 32);
		a1 += (q1 & 0xffffffffu) + (q1 >> 32);
	}
	acc = a0 + a1;
	for (; len >= 4; b += 4, len -= 4) {
		memcpy(&w, b, 4);
		acc += w;
	}
	if (len >= 2) {
		memcpy(&h, b, 2);
		acc += h;
		b += 2;
		len -= 2;
	}
	if (len) {
		const uint8_t last[2] = { b[0], 0 };    /* the high byte of a last word */
		memcpy(&h, last, 2);
		acc += h;
	}
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	/* Partial sums stay exact up to folding, which is all a caller does. */
	acc = (uint64_t)sum + htobe16((uint16_t)acc);
	while (acc >> 32)
		acc = (acc & 0xffffffffu) + (acc >> 32);
	return (uint32_t)acc;
}

uint16_t vr_net_csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

uint32_t vr_net_csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len)
{
	return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + len;
}

/* RFC 1122 §3.2.1.3: sources a datagram must never carry. */
static int ip_martian(const struct vr_net *n, uint32_t src)
{
	uint32_t bcast = n->conf.ip | ~n->netmask;

	return src == 0 || (src >> 24) == 127 || (src >> 28) >= 14 || src == n->conf.ip ||
	       (n->conf.prefix < 31 && src == bcast);
}

void vr_net_ipv4_rx(struct vr_net *n, struct vr_pkt *p, uint64_t now)
{
	const uint8_t *d = p->data;

	if (p->len < VR_NET_IP_HDR) {
		net_drop(n, p, VR_NET_DROP_IP_SHORT);
		return;
	}
	if (d[0] >> 4 != 4) {
		net_drop(n, p, VR_NET_DROP_IP_VERSION);
		return;
	}
	unsigned ihl = (d[0] & 0xfu) * 4;
	if (ihl < VR_NET_IP_HDR || ihl > p->len) {
		net_drop(n, p, VR_NET_DROP_IP_HDR_LEN);
		return;
	}
	unsigned total = rd16(d + 2);
	if (total < ihl || total > p->len) {
		net_drop(n, p, VR_NET_DROP_IP_TOTAL_LEN);
		return;
	}
	if (!(p->flags & VR_PKT_RX_IP_CSUM_OK) && vr_net_csum_fold(vr_net_csum_add(0, d, ihl))) {
		net_drop(n, p, VR_NET_DROP_IP_CSUM);
		return;
	}
	if (rd16(d + 6) & (IP_MF | IP_OFFSET)) {
		net_drop(n, p, VR_NET_DROP_IP_FRAG);
		return;
	}
	struct vr_net_ip_info ip = {
		.src = rd32(d + 12), .dst = rd32(d + 16), .proto = d[9], .ttl = d[8], .tos = d[1],
	};
	if (ip.dst != n->conf.ip) {
		net_drop(n, p, VR_NET_DROP_IP_NOT_OURS);
		return;
	}
	if (ip_martian(n, ip.src)) {
		net_drop(n, p, VR_NET_DROP_IP_MARTIAN);
		return;
	}
	/*
	 * XXX RFC 791 TTL: not checked on input. We are the destination, and
	 * RFC 1122 §3.2.1.7 forbids a host to discard a datagram for a low TTL.
	 */
	pkt_pull(p, ihl, total);
	if (ip.proto == VR_NET_IP_PROTO_ICMP)
		vr_net_icmp_rx(n, p, &ip, now);
	else if (ip.proto == VR_NET_IP_PROTO_TCP && n->conf.tcp_rx)
		n->conf.tcp_rx(n->conf.tcp_arg, p, &ip, now);
	else
		net_drop(n, p, VR_NET_DROP_IP_PROTO);
}

int vr_net_ip_output(struct vr_net *n, struct vr_pkt *p, uint32_t dst, uint8_t proto,
		     uint64_t now)
{
	uint32_t nh;

	if ((uint32_t)p->len + VR_NET_IP_HDR > n->conf.mtu ||
	    p->headroom < VR_NET_IP_HDR + VR_NET_ETH_HDR) {
		net_drop(n, p, VR_NET_DROP_TOO_BIG);
		return -EMSGSIZE;
	}
	if ((dst & n->netmask) == (n->conf.ip & n->netmask))
		nh = dst;
	else
		nh = n->conf.gateway;
	/* Never a broadcast, a multicast or ourselves: this stack sends unicast only. */
	if (!nh || ip_martian(n, dst) || ip_martian(n, nh)) {
		net_drop(n, p, VR_NET_DROP_NO_ROUTE);
		return -EHOSTUNREACH;
	}
	uint8_t *h = pkt_push(p, VR_NET_IP_HDR);
	h[0] = 0x45;
	h[1] = 0;
	wr16(h + 2, p->len);
	/* RFC 6864 §4.1: with DF set the ID identifies nothing; a counter is enough. */
	wr16(h + 4, n->ip_id++);
	wr16(h + 6, IP_DF);
	h[8] = IP_TTL;
	h[9] = proto;
	wr16(h + 10, 0);
	wr32(h + 12, n->conf.ip);
	wr32(h + 16, dst);
	if (!n->conf.tx_csum_offload) {
		wr16(h + 10, vr_net_csum_fold(vr_net_csum_add(0, h, VR_NET_IP_HDR)));
	}
	return vr_net_arp_output(n, p, nh, now);
}
