/*
 * net.c - the stack instance: creation and its checks, the packet pool,
 * Ethernet input and output, the tx burst queue, counters.
 *
 * Ethernet input keeps frames addressed to our MAC or to broadcast and hands
 * them to ARP, IPv4 or IPv6 by EtherType; everything else is counted and
 * dropped. The only multicast that is ours is IPv6's solicited-node group of
 * each of our addresses (33:33:ff + their last 3 bytes, RFC 2464 §7), which
 * Neighbor Discovery needs; the relay joins no other group.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/log.h"

#include "net_impl.h"

static const uint8_t eth_broadcast[VR_NET_MAC_LEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

static const char *const drop_names[VR_NET_DROP_MAX] = {
	[VR_NET_DROP_ETH_SHORT] = "eth_short",
	[VR_NET_DROP_ETH_NOT_OURS] = "eth_not_ours",
	[VR_NET_DROP_ETH_TYPE] = "eth_type",
	[VR_NET_DROP_ARP_BAD] = "arp_bad",
	[VR_NET_DROP_ARP_NOT_OURS] = "arp_not_ours",
	[VR_NET_DROP_IP_SHORT] = "ip_short",
	[VR_NET_DROP_IP_VERSION] = "ip_version",
	[VR_NET_DROP_IP_HDR_LEN] = "ip_hdr_len",
	[VR_NET_DROP_IP_TOTAL_LEN] = "ip_total_len",
	[VR_NET_DROP_IP_CSUM] = "ip_csum",
	[VR_NET_DROP_IP_FRAG] = "ip_frag",
	[VR_NET_DROP_IP_NOT_OURS] = "ip_not_ours",
	[VR_NET_DROP_IP_MARTIAN] = "ip_martian",
	[VR_NET_DROP_IP_PROTO] = "ip_proto",
	[VR_NET_DROP_ICMP_SHORT] = "icmp_short",
	[VR_NET_DROP_ICMP_CSUM] = "icmp_csum",
	[VR_NET_DROP_ICMP_TYPE] = "icmp_type",
	[VR_NET_DROP_ICMP_BAD_PMTU] = "icmp_bad_pmtu",
	[VR_NET_DROP_NO_ROUTE] = "no_route",
	[VR_NET_DROP_ARP_PENDING_FULL] = "arp_pending_full",
	[VR_NET_DROP_ARP_UNRESOLVED] = "arp_unresolved",
	[VR_NET_DROP_TOO_BIG] = "too_big",
	[VR_NET_DROP_NO_PKT] = "no_pkt",
	[VR_NET_DROP_TX_FULL] = "tx_full",
	[VR_NET_DROP_IP6_EXT] = "ip6_ext",
	[VR_NET_DROP_ND_BAD] = "nd_bad",
};

const char *vr_net_drop_name(enum vr_net_drop d)
{
	return (unsigned)d < VR_NET_DROP_MAX ? drop_names[d] : "unknown";
}

/* Fills in the defaults (documented in net.h) and says what is wrong, if anything. */
static int conf_check(struct vr_net_conf *c, char *err, size_t errlen)
{
	static const uint8_t zero[VR_NET_MAC_LEN];

	if (!c->mtu)
		c->mtu = 1500;
	if (!c->pkts)
		c->pkts = 1024;
	if (!c->arp_entries)
		c->arp_entries = 256;
	if (!c->arp_pending)
		c->arp_pending = 4;
	if (!c->arp_ttl_ms)
		c->arp_ttl_ms = 60000;
	if (!c->arp_retry_ms)
		c->arp_retry_ms = 1000;
	if (!c->arp_tries)
		c->arp_tries = 3;

	const char *why = NULL;
	if (!c->tx)
		why = "no tx callback";
	else if (!memcmp(c->mac, zero, sizeof(zero)) || (c->mac[0] & 1))
		why = "MAC address is zero or multicast";
	else if (c->prefix < 1 || c->prefix > 32)
		why = "prefix length is not 1..32";
	else if (!c->ip || (c->ip >> 24) == 127 || (c->ip >> 28) >= 14)
		why = "IP address is zero, loopback, multicast or reserved";
	else if (c->mtu < 576 || c->mtu > VR_NET_PKT_DATA - VR_NET_HEADROOM - VR_NET_ETH_HDR)
		why = "MTU is outside 576..1970";
	else if (c->arp_pending > VR_NET_ARP_PENDING_MAX)
		why = "arp_pending is over 8";
	else if (c->pkts > 1u << 20 || c->arp_entries > 1u << 16)
		why = "pool or ARP cache larger than 1M packets / 64K entries";
	else if (c->arp_tries > 255)
		why = "arp_tries is over 255";
	else if (!ip6_zero(c->ip6) && (c->prefix6 < 1 || c->prefix6 > 128))
		why = "IPv6 prefix length is not 1..128";
	else if (!ip6_zero(c->ip6) && (c->ip6[0] == 0xff || ip6_link_local(c->ip6) ||
				       ip6_loopback(c->ip6)))
		why = "IPv6 address is multicast, link-local or loopback";
	else if (!ip6_zero(c->gateway6) && c->gateway6[0] == 0xff)
		why = "IPv6 gateway is multicast";
	else if (!ip6_zero(c->ip6) && c->mtu < VR_NET_IP6_MTU_MIN)
		why = "MTU is under IPv6's 1280";
	if (why) {
		snprintf(err, errlen, "net: %s", why);
		return -EINVAL;
	}
	return 0;
}

struct vr_net *vr_net_new(const struct vr_net_conf *conf, char *err, size_t errlen)
{
	struct vr_net *n = calloc(1, sizeof(*n));

	if (!n) {
		snprintf(err, errlen, "net: out of memory");
		return NULL;
	}
	n->conf = *conf;
	if (conf_check(&n->conf, err, errlen) < 0) {
		free(n);
		return NULL;
	}
	n->netmask = n->conf.prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> n->conf.prefix);
	n->npkts = n->conf.pkts;
	n->pkt = calloc(n->npkts, sizeof(*n->pkt));
	n->storage = malloc((size_t)n->npkts * VR_NET_PKT_DATA);
	n->free_slot = malloc(n->npkts * sizeof(*n->free_slot));
	if (!n->pkt || !n->storage || !n->free_slot || vr_net_arp_init(n) < 0) {
		snprintf(err, errlen, "net: out of memory for %u packets", n->npkts);
		vr_net_free(n);
		return NULL;
	}
	/* Slots are handed out lowest first: a test reading the pool sees order. */
	for (unsigned i = 0; i < n->npkts; i++) {
		n->pkt[i].net = n;
		n->pkt[i].idx = i;
		n->free_slot[i] = n->npkts - 1 - i;
	}
	n->nfree = n->npkts;
	n->garp_due = 1;
	if (!ip6_zero(n->conf.ip6)) {
		/* RFC 4291 §2.5.1 / RFC 2464 §5: fe80::/64 with the MAC as a modified EUI-64. */
		const uint8_t *m = n->conf.mac;
		const uint8_t ll[VR_NET_IP6_LEN] = { 0xfe, 0x80, 0, 0, 0, 0, 0, 0,
			(uint8_t)(m[0] ^ 2), m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5] };
		memcpy(n->lladdr, ll, sizeof(ll));
		n->has_ip6 = 1;
		n->na_due = 1;
	}
	return n;
}

void vr_net_free(struct vr_net *n)
{
	if (!n)
		return;
	if (n->arp)
		vr_net_arp_fini(n);
	for (unsigned i = 0; i < n->ntx; i++)
		vr_net_pkt_free(n->txq[i]);
	free(n->pkt);
	free(n->storage);
	free(n->free_slot);
	free(n);
}

static struct vr_pkt *pkt_take(struct vr_net *n)
{
	if (!n->nfree) {
		vr_net_count(&n->st.drop[VR_NET_DROP_NO_PKT], 1);
		return NULL;
	}
	return &n->pkt[n->free_slot[--n->nfree]];
}

struct vr_pkt *vr_net_pkt_alloc(struct vr_net *n)
{
	struct vr_pkt *p = pkt_take(n);

	if (!p)
		return NULL;
	p->data = n->storage + (size_t)p->idx * VR_NET_PKT_DATA + VR_NET_HEADROOM;
	p->len = 0;
	p->headroom = VR_NET_HEADROOM;
	p->tailroom = VR_NET_PKT_DATA - VR_NET_HEADROOM;
	p->flags = 0;
	p->ext = NULL;
	return p;
}

struct vr_pkt *vr_net_pkt_wrap(struct vr_net *n, uint8_t *data, uint16_t len,
			       uint16_t headroom, uint16_t tailroom, void *ext)
{
	struct vr_pkt *p = pkt_take(n);

	if (!p)
		return NULL;
	p->data = data;
	p->len = len;
	p->headroom = headroom;
	p->tailroom = tailroom;
	p->flags = 0;
	p->ext = ext;
	return p;
}

struct vr_pkt *vr_net_pkt_clone(const struct vr_pkt *p)
{
	if (p->len > VR_NET_PKT_DATA - VR_NET_HEADROOM)
		return NULL;
	struct vr_pkt *c = vr_net_pkt_alloc(p->net);
	if (!c)
		return NULL;
	memcpy(c->data, p->data, p->len);
	c->len = p->len;
	c->tailroom = (uint16_t)(c->tailroom - p->len);
	c->flags = p->flags;
	return c;
}

void vr_net_pkt_free(struct vr_pkt *p)
{
	struct vr_net *n = p->net;

	/* A second free would hand the slot out twice: fail loudly, here. On a
	 * worker the line goes to its thread's log ring, which abort() would
	 * lose: vr_log_close() writes the rings out first. */
	if (VR_UNLIKELY(!p->data)) {
		vr_log_err("event=net_pkt_double_free slot=%u", p->idx);
		vr_log_close();
		abort();
	}
	if (p->ext && n->conf.ext_free)
		n->conf.ext_free(n->conf.ext_arg, p->ext);
	p->ext = NULL;
	p->data = NULL;
	n->free_slot[n->nfree++] = p->idx;
}

unsigned vr_net_pkt_in_use(const struct vr_net *n)
{
	return n->npkts - n->nfree;
}

const struct vr_net_stats *vr_net_stats(const struct vr_net *n)
{
	return &n->st;
}

uint16_t vr_net_mtu(const struct vr_net *n)
{
	return n->conf.mtu;
}

uint32_t vr_net_ip(const struct vr_net *n)
{
	return n->conf.ip;
}

int vr_net_ip6_src(const struct vr_net *n, const uint8_t dst[VR_NET_IP6_LEN],
		   uint8_t src[VR_NET_IP6_LEN])
{
	if (!n->has_ip6)
		return -EAFNOSUPPORT;
	memcpy(src, ip6_link_local(dst) ? n->lladdr : n->conf.ip6, VR_NET_IP6_LEN);
	return 0;
}

void vr_net_set_tcp(struct vr_net *n, vr_net_l4_rx_fn tcp_rx, void *tcp_arg,
		    vr_net_pmtu_fn pmtu, void *pmtu_arg)
{
	n->conf.tcp_rx = tcp_rx;
	n->conf.tcp_arg = tcp_arg;
	n->conf.pmtu = pmtu;
	n->conf.pmtu_arg = pmtu_arg;
}

void vr_net_flush(struct vr_net *n, uint64_t now)
{
	if (!n->ntx)
		return;
	unsigned want = n->ntx;
	unsigned took = n->conf.tx(n->conf.tx_arg, n->txq, want, now);
	if (took > want)
		took = want;
	uint64_t bytes = 0;
	for (unsigned i = 0; i < took; i++)
		bytes += n->txq[i]->len;
	vr_net_count(&n->st.tx_bytes, bytes);
	vr_net_count(&n->st.tx_frames, took);
	for (unsigned i = took; i < want; i++)
		net_drop(n, n->txq[i], VR_NET_DROP_TX_FULL);
	n->ntx = 0;
}

void vr_net_eth_output(struct vr_net *n, struct vr_pkt *p, const uint8_t *dst_mac,
		       uint16_t type, uint64_t now)
{
	/* Room is certain: every caller's packet gave up or was made with more. */
	pkt_push(p, VR_NET_ETH_HDR);
	memcpy(p->data, dst_mac, VR_NET_MAC_LEN);
	memcpy(p->data + 6, n->conf.mac, VR_NET_MAC_LEN);
	wr16(p->data + 12, type);
	/* Frames shorter than the Ethernet minimum are padded by the port. */
	n->txq[n->ntx++] = p;
	if (n->ntx == VR_NET_BURST)
		vr_net_flush(n, now);
}

/* A solicited-node group's MAC (33:33:ff:xx:xx:xx) of one of our IPv6 addresses. */
static int eth_our_group(const struct vr_net *n, const uint8_t *mac)
{
	if (!n->has_ip6 || mac[0] != 0x33 || mac[1] != 0x33 || mac[2] != 0xff)
		return 0;
	return !memcmp(mac + 3, n->conf.ip6 + 13, 3) || !memcmp(mac + 3, n->lladdr + 13, 3);
}

static void eth_rx(struct vr_net *n, struct vr_pkt *p, uint64_t now)
{
	vr_net_count(&n->st.rx_frames, 1);
	vr_net_count(&n->st.rx_bytes, p->len);
	if (p->len < VR_NET_ETH_HDR) {
		net_drop(n, p, VR_NET_DROP_ETH_SHORT);
		return;
	}
	if (memcmp(p->data, n->conf.mac, VR_NET_MAC_LEN) != 0 &&
	    memcmp(p->data, eth_broadcast, VR_NET_MAC_LEN) != 0 && !eth_our_group(n, p->data)) {
		net_drop(n, p, VR_NET_DROP_ETH_NOT_OURS);
		return;
	}
	uint16_t type = rd16(p->data + 12);
	pkt_pull(p, VR_NET_ETH_HDR, p->len);
	if (type == ETH_TYPE_IPV4)
		vr_net_ipv4_rx(n, p, now);
	else if (type == ETH_TYPE_ARP)
		vr_net_arp_rx(n, p, now);
	else if (type == ETH_TYPE_IPV6 && n->has_ip6)
		vr_net_ipv6_rx(n, p, now);
	else
		net_drop(n, p, VR_NET_DROP_ETH_TYPE);
}

unsigned vr_net_rx(struct vr_net *n, struct vr_pkt **pkts, unsigned count, uint64_t now)
{
	for (unsigned i = 0; i < count; i++)
		eth_rx(n, pkts[i], now);
	vr_net_flush(n, now);
	return count;
}

unsigned vr_net_rx_burst(void *arg, struct vr_pkt **pkts, unsigned count, uint64_t now)
{
	return vr_net_rx(arg, pkts, count, now);
}

void vr_net_poll(struct vr_net *n, uint64_t now)
{
	vr_net_arp_poll(n, now);
	vr_net_flush(n, now);
}
