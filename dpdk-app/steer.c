/*
 * steer.c - which poll-mode worker owns a received frame (see steer.h).
 *
 * A flow's frames are dealt to the queue its Toeplitz hash picks: the
 * port's RSS hash where it gives one, the same hash in software (same key)
 * where it does not. An ICMP error about a flow quotes a header we sent,
 * from us to the peer, so the tuple is turned round before hashing; the
 * port's hash of the ICMP packet is of other addresses and is not used.
 */
#include <string.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_thash.h>

#include "steer.h"

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static unsigned hash_owner(const struct vr_dpdk_steer *s, uint32_t h)
{
	return (h % s->reta_size) % s->n_workers;
}

/* The owner of an IPv4 TCP flow (addresses in host order), seen from the peer's side. */
static unsigned tuple_owner4(const struct vr_dpdk_steer *s, uint32_t src, uint32_t dst,
			     uint16_t sport, uint16_t dport)
{
	struct rte_ipv4_tuple t = { .src_addr = src, .dst_addr = dst, .sport = sport, .dport = dport };

	return hash_owner(s, rte_softrss((uint32_t *)&t, RTE_THASH_V4_L4_LEN, s->rss_key));
}

/* The same for IPv6: src and dst as they sit in a header (network order). */
static unsigned tuple_owner6(const struct vr_dpdk_steer *s, const uint8_t *src,
			     const uint8_t *dst, uint16_t sport, uint16_t dport)
{
	struct rte_ipv6_hdr ip;
	union rte_thash_tuple t;

	memcpy(ip.src_addr, src, 16);
	memcpy(ip.dst_addr, dst, 16);
	rte_thash_load_v6_addrs(&ip, &t);
	t.v6.sport = sport;
	t.v6.dport = dport;
	return hash_owner(s, rte_softrss((uint32_t *)&t, RTE_THASH_V6_L4_LEN, s->rss_key));
}

/* The owner of the TCP flow an ICMP fragmentation-needed quotes (icmp: len bytes), or self. */
static unsigned quoted_owner4(const struct vr_dpdk_steer *s, const uint8_t *icmp, unsigned len,
			      unsigned self)
{
	const uint8_t *q = icmp + 8;
	unsigned ihl = len >= 8 + 20 ? (q[0] & 0xf) * 4u : 0;

	if (len < 8 + 20 + 4 || icmp[0] != 3 || icmp[1] != 4 || (q[0] >> 4) != 4 || ihl < 20 ||
	    q[9] != IPPROTO_TCP || len < 8 + ihl + 4)
		return self;
	return tuple_owner4(s, rd32(q + 16), rd32(q + 12), rd16(q + ihl + 2), rd16(q + ihl));
}

/* The same for an ICMPv6 packet-too-big quoting TCP without extension headers. */
static unsigned quoted_owner6(const struct vr_dpdk_steer *s, const uint8_t *icmp, unsigned len,
			      unsigned self)
{
	const struct rte_ipv6_hdr *q = (const struct rte_ipv6_hdr *)(icmp + 8);
	const uint8_t *l4 = icmp + 8 + sizeof(*q);

	if (len < 8 + sizeof(*q) + 4 || icmp[0] != 2 || q->proto != IPPROTO_TCP)
		return self;
	return tuple_owner6(s, q->dst_addr, q->src_addr, rd16(l4 + 2), rd16(l4));
}

/* vr_dpdk_frame_owner for an IPv6 frame (len at least Ethernet + 8). */
static unsigned frame_owner6(const struct vr_dpdk_steer *s, const uint8_t *f, unsigned len,
			     const uint32_t *rss, unsigned self, bool *share)
{
	const struct rte_ipv6_hdr *ip = (const struct rte_ipv6_hdr *)(f + RTE_ETHER_HDR_LEN);
	const uint8_t *l4 = f + RTE_ETHER_HDR_LEN + sizeof(*ip);

	if (len < RTE_ETHER_HDR_LEN + sizeof(*ip) + 4)
		return self;
	if (ip->proto == IPPROTO_ICMPV6) {
		*share = l4[0] == 136;           /* ND_NEIGHBOR_ADVERT */
		if (s->n_workers == 1)
			return self;
		return quoted_owner6(s, l4, len - RTE_ETHER_HDR_LEN - sizeof(*ip), self);
	}
	if (ip->proto != IPPROTO_TCP || s->n_workers == 1)
		return self;
	if (rss)
		return hash_owner(s, *rss);
	return tuple_owner6(s, ip->src_addr, ip->dst_addr, rd16(l4), rd16(l4 + 2));
}

unsigned vr_dpdk_frame_owner(const struct vr_dpdk_steer *s, const uint8_t *f, unsigned len,
			     const uint32_t *rss, unsigned self, bool *share)
{
	*share = false;
	if (len < RTE_ETHER_HDR_LEN + 8)
		return self;
	uint16_t type = rd16(f + 12);
	if (type == RTE_ETHER_TYPE_ARP) {
		*share = rd16(f + RTE_ETHER_HDR_LEN + 6) == 2;
		return self;
	}
	if (type == RTE_ETHER_TYPE_IPV6)
		return frame_owner6(s, f, len, rss, self, share);
	if (type != RTE_ETHER_TYPE_IPV4 || s->n_workers == 1)
		return self;
	const uint8_t *ip = f + RTE_ETHER_HDR_LEN;
	unsigned ihl = (ip[0] & 0xf) * 4u;
	if (len < RTE_ETHER_HDR_LEN + 20 || (ip[0] >> 4) != 4 || ihl < 20 ||
	    (ip[9] != IPPROTO_TCP && ip[9] != IPPROTO_ICMP) || ((ip[6] & 0x3f) | ip[7]) ||
	    len < RTE_ETHER_HDR_LEN + ihl + 4)
		return self;
	if (ip[9] == IPPROTO_ICMP)
		return quoted_owner4(s, ip + ihl, len - RTE_ETHER_HDR_LEN - ihl, self);
	if (rss)
		return hash_owner(s, *rss);
	return tuple_owner4(s, rd32(ip + 12), rd32(ip + 16), rd16(ip + ihl), rd16(ip + ihl + 2));
}
