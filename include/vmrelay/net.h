/*
 * net.h - the per-core userspace stack's lower half: packet buffers,
 * Ethernet, ARP, IPv4 and ICMP (issue 3). TCP sits on top, through the
 * l4 hooks below.
 *
 * One struct vr_net per worker core, shared with nothing but its counters
 * (read by the control thread, see vr_net_count): no lock, no atomic
 * read-modify-write, no malloc after vr_net_new (every packet, ARP entry and queue slot is
 * allocated at creation). Frames come in through vr_net_rx and leave through
 * the conf's tx callback in bursts; time is always passed in ("now", in
 * monotonic milliseconds), so tests drive the clock.
 *
 * IPv4 addresses in this API are in host byte order, IPv6 addresses 16
 * bytes in wire order; MACs are 6 bytes in wire order. IPv6 (RFC 8200, ICMPv6
 * RFC 4443, Neighbor Discovery RFC 4861) runs beside IPv4 when the conf
 * gives an ip6; without one the instance is IPv4 only, as it always was.
 */
#ifndef VR_NET_H
#define VR_NET_H

#include <stddef.h>
#include <stdint.h>
#include "vmrelay/common.h"

#define VR_NET_MAC_LEN      6
#define VR_NET_ETH_HDR      14
#define VR_NET_IP_HDR       20           /* without options; what we send */
#define VR_NET_IP6_HDR      40
#define VR_NET_IP6_LEN      16
#define VR_NET_IP6_MTU_MIN  1280         /* RFC 8200 §5: every link carries this */
/*
 * Room in front of what an upper layer writes: Ethernet + IPv4 or IPv6,
 * rounded up to 64 so the transport header of a pool packet starts on a cache line.
 */
#define VR_NET_HEADROOM     64
#define VR_NET_PKT_DATA     2048         /* storage of one pool packet */
#define VR_NET_ARP_PENDING_MAX 8         /* frames held per unresolved next hop */
#define VR_NET_BURST        32           /* most frames handed to tx at once */

#define VR_NET_IP_PROTO_ICMP 1
#define VR_NET_IP_PROTO_TCP  6
#define VR_NET_IP_PROTO_ICMP6 58

/*
 * A packet: bytes data[0 .. len) with headroom bytes free before data (for
 * prepending headers without a copy) and tailroom after. The struct is public
 * because every layer moves data/len on the hot path. A packet belongs to the
 * instance whose pool it came from and goes back there with vr_net_pkt_free.
 * ext is the owner's handle when the bytes are someone else's (a DPDK mbuf
 * wrapped with vr_net_pkt_wrap); it is NULL for pool storage.
 */
struct vr_pkt {
	uint8_t *data;
	uint16_t len;
	uint16_t headroom;
	uint16_t tailroom;
	uint16_t flags;              /* VR_PKT_* */
	void *ext;
	struct vr_net *net;          /* the instance whose pool owns this */
	uint32_t idx;                /* slot in that pool */
};

/* The port verified the IPv4 header checksum (an rx offload). */
#define VR_PKT_RX_IP_CSUM_OK  0x1
/* The port verified the TCP checksum (an rx offload): TCP does not sum it again. */
#define VR_PKT_RX_L4_CSUM_OK  0x2

/*
 * Burst callback: takes pkts[0 .. n) and returns how many it took, from the
 * front; the caller frees the rest. A taker owns what it took and frees each
 * with vr_net_pkt_free when done with it. As conf.tx it must not call back
 * into the same instance: a test that wires two instances back to back
 * queues the frames and feeds them to the peer's vr_net_rx afterwards.
 */
typedef unsigned (*vr_net_burst_fn)(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now);

/*
 * What IP input tells an upper layer about a datagram it hands up. For IPv6
 * (v6 set) src and dst are 0 and src6/dst6 point at the addresses in the
 * packet's own header, valid as long as the packet; ttl is the hop limit.
 */
struct vr_net_ip_info {
	uint32_t src, dst;
	uint8_t proto, ttl, tos;
	uint8_t v6;
	const uint8_t *src6, *dst6;
};

/*
 * An upper-layer protocol's input: p->data is at the transport header,
 * p->len the transport length (padding trimmed). The callee owns p.
 */
typedef void (*vr_net_l4_rx_fn)(void *arg, struct vr_pkt *p, const struct vr_net_ip_info *ip,
				uint64_t now);

/*
 * ICMP "fragmentation needed and DF set" (RFC 792, RFC 1191) or ICMPv6
 * "packet too big" (RFC 4443 §3.2, RFC 8201), checked for shape only: the
 * quoted datagram was sent by us, mtu is at least 68 (IPv6: 1280). TCP
 * decides whether to believe it (the quoted sequence number must be in
 * window, issue 3), so the quoted transport bytes are passed as they came.
 */
struct vr_net_pmtu {
	uint32_t dst;                /* the quoted datagram's destination (IPv4) */
	uint8_t proto;
	uint8_t v6;                  /* IPv6: src6/dst6 point at the quoted addresses */
	const uint8_t *src6, *dst6;
	uint16_t mtu;
	const uint8_t *l4;           /* quoted transport header bytes */
	size_t l4_len;               /* at least 8 */
};
typedef void (*vr_net_pmtu_fn)(void *arg, const struct vr_net_pmtu *m, uint64_t now);

/* Called when an ext packet is freed, to give the bytes back (rte_pktmbuf_free). */
typedef void (*vr_net_ext_free_fn)(void *arg, void *ext);

struct vr_net_conf {
	uint8_t mac[VR_NET_MAC_LEN];
	uint32_t ip;
	uint8_t prefix;              /* 1..32 */
	uint32_t gateway;            /* 0: none, off-link destinations unreachable */
	uint16_t mtu;                /* 0 means 1500; 576..1970 (a pool buffer less headroom) */
	unsigned pkts;               /* pool size; 0 means 1024 */
	unsigned arp_entries;        /* ARP cache bound; 0 means 256 */
	unsigned arp_pending;        /* frames held per unresolved next hop, 1..8; 0 means 4 */
	uint32_t arp_ttl_ms;         /* 0 means 60 s */
	uint32_t arp_retry_ms;       /* between requests; 0 means 1 s */
	unsigned arp_tries;          /* requests before giving up; 0 means 3 */
	unsigned tx_csum_offload : 1;/* the port fills in the IPv4 header checksum */
	uint8_t ip6[VR_NET_IP6_LEN]; /* all zero: no IPv6 */
	uint8_t prefix6;             /* 1..128 when ip6 is set */
	uint8_t gateway6[VR_NET_IP6_LEN];  /* all zero: none (usually a router's fe80::) */

	vr_net_burst_fn tx;          /* required */
	void *tx_arg;
	vr_net_l4_rx_fn tcp_rx;      /* NULL: TCP dropped as no_proto */
	void *tcp_arg;
	vr_net_pmtu_fn pmtu;         /* NULL: fragmentation-needed ignored (counted) */
	void *pmtu_arg;
	vr_net_ext_free_fn ext_free;
	void *ext_arg;
};

/* Drop reasons, counted per instance; vr_net_drop_name gives each a name. */
enum vr_net_drop {
	VR_NET_DROP_ETH_SHORT, VR_NET_DROP_ETH_NOT_OURS, VR_NET_DROP_ETH_TYPE,
	VR_NET_DROP_ARP_BAD, VR_NET_DROP_ARP_NOT_OURS,
	VR_NET_DROP_IP_SHORT, VR_NET_DROP_IP_VERSION, VR_NET_DROP_IP_HDR_LEN,
	VR_NET_DROP_IP_TOTAL_LEN, VR_NET_DROP_IP_CSUM, VR_NET_DROP_IP_FRAG,
	VR_NET_DROP_IP_NOT_OURS, VR_NET_DROP_IP_MARTIAN, VR_NET_DROP_IP_PROTO,
	VR_NET_DROP_ICMP_SHORT, VR_NET_DROP_ICMP_CSUM, VR_NET_DROP_ICMP_TYPE,
	VR_NET_DROP_ICMP_BAD_PMTU,
	VR_NET_DROP_NO_ROUTE, VR_NET_DROP_ARP_PENDING_FULL, VR_NET_DROP_ARP_UNRESOLVED,
	VR_NET_DROP_TOO_BIG, VR_NET_DROP_NO_PKT, VR_NET_DROP_TX_FULL,
	VR_NET_DROP_IP6_EXT,         /* an extension header or option we must not skip */
	VR_NET_DROP_ND_BAD,          /* Neighbor Discovery failing RFC 4861 §7.1 */
	VR_NET_DROP_MAX
};

struct vr_net_stats {
	uint64_t rx_frames, rx_bytes, tx_frames, tx_bytes;
	uint64_t arp_requests_rx, arp_replies_tx, arp_requests_tx, arp_replies_rx;
	uint64_t icmp_echo_rx, icmp_echo_tx, icmp_pmtu_rx;
	uint64_t arp_cache_evicted;
	uint64_t arp_conflicts;      /* ARP from another host claiming our address */
	uint64_t nd_solicits_rx, nd_adverts_tx, nd_solicits_tx, nd_adverts_rx;
	uint64_t drop[VR_NET_DROP_MAX];
};

struct vr_net;

/*
 * Adds v to one of an instance's counters (struct vr_net_stats,
 * vr_tcp_stats). The worker that owns the instance is each counter's only
 * writer, so a plain load and add suffice; the relaxed atomic load and store
 * (the same add on x86) make the control thread's concurrent relaxed read
 * (engine/ctl through dpdk-app/lcore.c) well defined by C11 and never torn.
 */
static inline void vr_net_count(uint64_t *c, uint64_t v)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

/*
 * Creates an instance: checks conf (a bad one sets *err to a sentence and
 * returns NULL), allocates every pool, and queues a gratuitous ARP for our
 * address (with IPv6, unsolicited neighbour advertisements of ip6 and the
 * link-local address), sent by the first vr_net_poll.
 */
struct vr_net *vr_net_new(const struct vr_net_conf *conf, char *err, size_t errlen);
/* Frees the instance; every packet it lent out must be back. */
void vr_net_free(struct vr_net *n);

/* Frames in: the stack takes all n and returns n (a vr_net_burst_fn). */
unsigned vr_net_rx(struct vr_net *n, struct vr_pkt **pkts, unsigned count, uint64_t now);
/* Adapter for the fault layer: arg is the struct vr_net. */
unsigned vr_net_rx_burst(void *arg, struct vr_pkt **pkts, unsigned count, uint64_t now);
/*
 * Timers (ARP retries and expiry, the gratuitous ARP) and a tx flush; call
 * once per poll loop. Output queued by rx or by upper layers is flushed here
 * and at the end of vr_net_rx.
 */
void vr_net_poll(struct vr_net *n, uint64_t now);
void vr_net_flush(struct vr_net *n, uint64_t now);

/*
 * IPv4 output for upper layers: p->data at the transport header, at least
 * VR_NET_HEADROOM free in front. Prepends IPv4 (DF, TTL 64, checksum) and
 * Ethernet, chooses the next hop (on-link or the gateway) and resolves it,
 * queueing p while ARP asks. Takes p in every case; returns 0 or a negative
 * errno: -EHOSTUNREACH (no route or ARP pending full), -EMSGSIZE (over
 * the MTU, or less than 34 bytes of headroom).
 */
int vr_net_ip_output(struct vr_net *n, struct vr_pkt *p, uint32_t dst, uint8_t proto,
		     uint64_t now);

/*
 * IPv6 output, as vr_net_ip_output: prepends IPv6 (hop limit 64) and
 * Ethernet, the next hop on-link (link-local, or inside ip6/prefix6) or
 * gateway6, resolved by Neighbor Discovery. src is one of our addresses, or
 * NULL to pick by dst's scope (vr_net_ip6_src).
 */
int vr_net_ip6_output(struct vr_net *n, struct vr_pkt *p, const uint8_t *src,
		      const uint8_t dst[VR_NET_IP6_LEN], uint8_t proto, uint64_t now);
/*
 * The source for dst (our link-local address for a link-local dst, else
 * ip6), copied to src; -EAFNOSUPPORT without IPv6.
 */
int vr_net_ip6_src(const struct vr_net *n, const uint8_t dst[VR_NET_IP6_LEN],
		   uint8_t src[VR_NET_IP6_LEN]);

/* Packets: from the pool (NULL when empty), data at VR_NET_HEADROOM, len 0. */
struct vr_pkt *vr_net_pkt_alloc(struct vr_net *n);
/* A descriptor for bytes the caller owns (ext is given back through ext_free). */
struct vr_pkt *vr_net_pkt_wrap(struct vr_net *n, uint8_t *data, uint16_t len,
			       uint16_t headroom, uint16_t tailroom, void *ext);
/* A pool copy of p (NULL when the pool is empty), same headroom. */
struct vr_pkt *vr_net_pkt_clone(const struct vr_pkt *p);
void vr_net_pkt_free(struct vr_pkt *p);
/* Pool packets not in the pool: lent out, queued or held. */
unsigned vr_net_pkt_in_use(const struct vr_net *n);

const struct vr_net_stats *vr_net_stats(const struct vr_net *n);
const char *vr_net_drop_name(enum vr_net_drop d);
uint16_t vr_net_mtu(const struct vr_net *n);
/* Our address (host order). */
uint32_t vr_net_ip(const struct vr_net *n);
/*
 * Replaces the conf's tcp_rx and pmtu hooks (NULL removes one): TCP is
 * created on an existing instance and installs itself (vmrelay/tcp.h).
 */
void vr_net_set_tcp(struct vr_net *n, vr_net_l4_rx_fn tcp_rx, void *tcp_arg,
		    vr_net_pmtu_fn pmtu, void *pmtu_arg);

/*
 * The Internet checksum (RFC 1071): the one's-complement sum of len bytes
 * added to sum (a previous partial sum, or 0; every piece but the last of
 * even length), the bytes read as big-endian 16-bit words. vr_net_csum_fold
 * folds and inverts it into the checksum field's value, to be written
 * big-endian; over data that holds a correct checksum it yields 0. TCP adds
 * its pseudo-header with vr_net_csum_pseudo.
 */
uint32_t vr_net_csum_add(uint32_t sum, const void *data, size_t len);
uint16_t vr_net_csum_fold(uint32_t sum);
uint32_t vr_net_csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len);
/* The IPv6 pseudo-header's sum (RFC 8200 §8.1). */
uint32_t vr_net_csum_pseudo6(const uint8_t src[VR_NET_IP6_LEN], const uint8_t dst[VR_NET_IP6_LEN],
			     uint8_t proto, uint32_t len);

#endif
