/*
 * net_impl.h - the stack instance's insides, shared by the files of
 * engine/net (net.c: pool, Ethernet, tx; arp.c; ipv4.c; icmp.c). Not for
 * other modules: they see include/vmrelay/net.h only.
 *
 * Everything here is touched by the one worker thread that owns the instance.
 */
#ifndef VR_NET_IMPL_H
#define VR_NET_IMPL_H

#include "vmrelay/net.h"

#define ETH_TYPE_IPV4 0x0800
#define ETH_TYPE_ARP  0x0806

enum arp_state { ARP_FREE, ARP_INCOMPLETE, ARP_RESOLVED };

/*
 * One ARP cache slot, in an open-addressed table (linear probing, deletion by
 * backward shift, so there are no tombstones to age out). An incomplete entry
 * holds the frames waiting for the answer; deadline is when the next request
 * goes out (incomplete) or when the entry goes stale (resolved).
 */
struct arp_entry {
	uint32_t ip;
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

	uint16_t ip_id;
	struct vr_net_stats st;
};

static inline void net_drop(struct vr_net *n, struct vr_pkt *p, enum vr_net_drop why)
{
	vr_net_count(&n->st.drop[why], 1);
	vr_net_pkt_free(p);
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

/* ipv4.c: p->data at the IPv4 header; takes p. */
void vr_net_ipv4_rx(struct vr_net *n, struct vr_pkt *p, uint64_t now);

/* icmp.c: p->data at the ICMP header, p->len trimmed; takes p. */
void vr_net_icmp_rx(struct vr_net *n, struct vr_pkt *p, const struct vr_net_ip_info *ip,
		    uint64_t now);

#endif
