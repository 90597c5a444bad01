/*
 * net_impl.h - the stack instance's insides, shared by the files of
 * engine/net (net.c: pool, Ethernet, tx; arp.c: the neighbour cache of
 * both families; ipv4.c; icmp.c; ipv6.c; icmp6.c: ICMPv6 and ND). Not for
 * other modules: they see include/vmrelay/net.h only.
 *
 * Everything here is touched by the one worker thread that owns the instance.
 */
#ifndef VR_NET_IMPL_H
#define VR_NET_IMPL_H

#include <string.h>

#include "vmrelay/net.h"

#define ETH_TYPE_IPV4 0x0800
#define ETH_TYPE_ARP  0x0806
#define ETH_TYPE_IPV6 0x86DD

enum arp_state { ARP_FREE, ARP_INCOMPLETE, ARP_RESOLVED };

/*
 * One neighbour cache slot (ARP's, and Neighbor Discovery's for IPv6), in an
 * open-addressed table (linear probing, deletion by backward shift, so there
 * are no tombstones to age out). An incomplete entry holds the frames
 * waiting for the answer; deadline is when the next request (ARP request or
 * neighbour solicitation) goes out (incomplete) or when the entry goes stale
 * (resolved). An IPv6 neighbour has v6 set, its address in ip6 and in ip a
 * 32-bit fold of it, which is what the table hashes.
 */
struct arp_entry {
	uint32_t ip;
	uint8_t v6;
	uint8_t ip6[VR_NET_IP6_LEN];
	uint8_t state;
	uint8_t tries;
	uint8_t mac[VR_NET_MAC_LEN];
	uint8_t npending;
	uint64_t deadline;
	struct vr_pkt *pending[VR_NET_ARP_PENDING_MAX];
};

struct vr_net {
	struct vr_net_conf conf;
	uint32_t netmask;

	/* Packet pool: descriptors, their storage and a stack of free slots. */
	struct vr_pkt *pkt;
	uint8_t *storage;
	uint32_t *free_slot;
	unsigned nfree, npkts;

	/* Frames ready for the tx callback, flushed when full and after each burst. */
	struct vr_pkt *txq[VR_NET_BURST];
	unsigned ntx;

	struct arp_entry *arp;
	unsigned arp_mask;           /* table size - 1 (a power of two) */
	unsigned arp_count;
	unsigned arp_incomplete;     /* entries with a retry deadline */
	uint64_t arp_sweep_at;       /* next scan for stale entries */
	int garp_due;                /* the gratuitous ARP is yet to go */

	/* IPv6 (has_ip6): our link-local address (EUI-64 from the MAC) beside conf.ip6. */
	int has_ip6;
	uint8_t lladdr[VR_NET_IP6_LEN];
	int na_due;                  /* the unsolicited advertisements are yet to go */

	uint16_t ip_id;
	struct vr_net_stats st;
};

static inline void net_drop(struct vr_net *n, struct vr_pkt *p, enum vr_net_drop why)
{
	vr_net_count(&n->st.drop[why], 1);
	vr_net_pkt_free(p);
}

/* Steps past a header of hdr bytes read at p->data; bytes from end on
 * (Ethernet padding after an IP datagram) go back to the tailroom. */
static inline void pkt_pull(struct vr_pkt *p, unsigned hdr, unsigned end)
{
	p->data += hdr;
	p->headroom = (uint16_t)(p->headroom + hdr);
	p->tailroom = (uint16_t)(p->tailroom + (p->len - end));
	p->len = (uint16_t)(end - hdr);
}

/* Makes room for a header of hdr bytes before p->data (the caller checked the headroom). */
static inline uint8_t *pkt_push(struct vr_pkt *p, unsigned hdr)
{
	p->data -= hdr;
	p->headroom = (uint16_t)(p->headroom - hdr);
	p->len = (uint16_t)(p->len + hdr);
	return p->data;
}

static inline uint16_t rd16(const uint8_t *b) { return (uint16_t)(b[0] << 8 | b[1]); }
static inline uint32_t rd32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}
static inline void wr16(uint8_t *b, uint16_t v) { b[0] = (uint8_t)(v >> 8); b[1] = (uint8_t)v; }
static inline void wr32(uint8_t *b, uint32_t v)
{
	b[0] = (uint8_t)(v >> 24); b[1] = (uint8_t)(v >> 16); b[2] = (uint8_t)(v >> 8);
	b[3] = (uint8_t)v;
}

/* net.c: prepends Ethernet to p (data at the L3 header) and queues it for tx. */
void vr_net_eth_output(struct vr_net *n, struct vr_pkt *p, const uint8_t *dst_mac,
		       uint16_t type, uint64_t now);

/* arp.c */
int vr_net_arp_init(struct vr_net *n);
void vr_net_arp_fini(struct vr_net *n);
/* p->data at the ARP header; takes p. */
void vr_net_arp_rx(struct vr_net *n, struct vr_pkt *p, uint64_t now);
/* p->data at the IPv4 header; sends it to next hop nh or queues it. Takes p. */
int vr_net_arp_output(struct vr_net *n, struct vr_pkt *p, uint32_t nh, uint64_t now);
void vr_net_arp_poll(struct vr_net *n, uint64_t now);

/* arp.c, for IPv6: p->data at the IPv6 header; sends it to nh or queues it. Takes p. */
int vr_net_nd_output(struct vr_net *n, struct vr_pkt *p, const uint8_t nh[VR_NET_IP6_LEN],
		     uint64_t now);
/*
 * What an advertisement (or a solicitation's source link-layer option)
 * says: ip6 is at mac. A neighbour already in the cache is updated; a new
 * one is added only when create is set (a solicitation aimed at us, as ARP
 * learns from requests for us).
 */
void vr_net_nd_learn(struct vr_net *n, const uint8_t ip6[VR_NET_IP6_LEN], const uint8_t *mac,
		     int create, uint64_t now);

/* ipv4.c: p->data at the IPv4 header; takes p. */
void vr_net_ipv4_rx(struct vr_net *n, struct vr_pkt *p, uint64_t now);

/* icmp.c: p->data at the ICMP header, p->len trimmed; takes p. */
void vr_net_icmp_rx(struct vr_net *n, struct vr_pkt *p, const struct vr_net_ip_info *ip,
		    uint64_t now);

/* ipv6.c: p->data at the IPv6 header; takes p. */
void vr_net_ipv6_rx(struct vr_net *n, struct vr_pkt *p, uint64_t now);
/* Whether a is one of our unicast addresses. */
int vr_net_ip6_ours(const struct vr_net *n, const uint8_t a[VR_NET_IP6_LEN]);
/* Whether a is the solicited-node multicast group (ff02::1:ffXX:XXXX) of one of ours. */
int vr_net_ip6_our_solicited(const struct vr_net *n, const uint8_t a[VR_NET_IP6_LEN]);

/* icmp6.c: p->data at the ICMPv6 header, p->len trimmed; takes p. */
void vr_net_icmp6_rx(struct vr_net *n, struct vr_pkt *p, const struct vr_net_ip_info *ip,
		     uint64_t now);
/* A neighbour solicitation for target (to its solicited-node group, RFC 4861 §7.2.2). */
void vr_net_nd_solicit(struct vr_net *n, const uint8_t target[VR_NET_IP6_LEN], uint64_t now);
/* An unsolicited advertisement of addr to all nodes (RFC 4861 §7.2.6). */
void vr_net_nd_announce(struct vr_net *n, const uint8_t addr[VR_NET_IP6_LEN], uint64_t now);

static inline int ip6_zero(const uint8_t a[VR_NET_IP6_LEN])
{
	static const uint8_t zero[VR_NET_IP6_LEN];

	return !memcmp(a, zero, VR_NET_IP6_LEN);
}
static inline int ip6_loopback(const uint8_t a[VR_NET_IP6_LEN])
{
	static const uint8_t one[VR_NET_IP6_LEN] = { [15] = 1 };

	return !memcmp(a, one, VR_NET_IP6_LEN);
}
static inline int ip6_link_local(const uint8_t a[VR_NET_IP6_LEN])
{
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

#endif
