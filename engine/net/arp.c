/*
 * arp.c - ARP (RFC 826): answering requests for our address, the neighbour
 * cache, resolve-on-send with a short queue per unresolved next hop, and the
 * gratuitous ARP that announces us at start (RFC 5227 §3).
 *
 * The cache is bounded (conf.arp_entries) and lives in an open-addressed
 * table allocated at creation. Following RFC 826's merge rule, a sender we
 * already know is refreshed by any ARP packet, but a new one is learned only
 * from packets aimed at us, and only when it is on our subnet: a flood of
 * ARP traffic for other hosts cannot fill the table.
 *
 * IPv6 neighbours (RFC 4861) live in the same table under the same rules:
 * resolve-on-send with the same queue, retries and bound, learned from
 * solicitations aimed at us and refreshed by advertisements. icmp6.c speaks
 * the protocol; this file only keeps the cache.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "net_impl.h"

#define ARP_LEN       28
#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY   2

static const uint8_t mac_broadcast[VR_NET_MAC_LEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const uint8_t mac_zero[VR_NET_MAC_LEN];

/* The 32 bits of an IPv6 neighbour the table hashes: its interface ID's fold. */
static uint32_t ip6_fold(const uint8_t a[VR_NET_IP6_LEN])
{
	uint32_t w[4];

	memcpy(w, a, sizeof(w));
	return w[0] ^ w[1] ^ w[2] ^ w[3];
}

static unsigned arp_hash(const struct vr_net *n, uint32_t ip)
{
	/* Fibonacci hashing: neighbours are consecutive addresses, which it spreads. */
	return (unsigned)((ip * 0x9E3779B1u) >> 7) & n->arp_mask;
}

int vr_net_arp_init(struct vr_net *n)
{
	unsigned size = 2;

	/* At most half full, so probe runs stay short. */
	while (size < 2 * n->conf.arp_entries)
		size <<= 1;
	n->arp = calloc(size, sizeof(*n->arp));
	if (!n->arp)
		return -ENOMEM;
	n->arp_mask = size - 1;
	return 0;
}

static void entry_drop_pending(struct vr_net *n, struct arp_entry *e)
{
	for (unsigned i = 0; i < e->npending; i++)
		net_drop(n, e->pending[i], VR_NET_DROP_ARP_UNRESOLVED);
	e->npending = 0;
}

void vr_net_arp_fini(struct vr_net *n)
{
	for (unsigned i = 0; i <= n->arp_mask; i++)
		entry_drop_pending(n, &n->arp[i]);
	free(n->arp);
	n->arp = NULL;
}

/* The entry of IPv4 ip, or with ip6 (not NULL) of that IPv6 neighbour (ip its fold). */
static struct arp_entry *arp_find(struct vr_net *n, uint32_t ip, const uint8_t *ip6)
{
	for (unsigned i = arp_hash(n, ip);; i = (i + 1) & n->arp_mask) {
		struct arp_entry *e = &n->arp[i];
		if (e->state == ARP_FREE)
			return NULL;
		if (e->ip == ip && e->v6 == !!ip6 && (!ip6 || !memcmp(e->ip6, ip6, VR_NET_IP6_LEN)))
			return e;
	}
}

/* Removes slot i, shifting later members of its probe run back (Knuth 6.4 R). */
static void arp_remove(struct vr_net *n, unsigned i)
{
	struct arp_entry *a = n->arp;

	entry_drop_pending(n, &a[i]);
	if (a[i].state == ARP_INCOMPLETE)
		n->arp_incomplete--;
	n->arp_count--;
	for (unsigned j = i;;) {
		j = (j + 1) & n->arp_mask;
		if (a[j].state == ARP_FREE)
			break;
		unsigned k = arp_hash(n, a[j].ip);
		/* An entry whose home k lies cyclically in (i, j] stays put. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		a[i] = a[j];
		i = j;
	}
	memset(&a[i], 0, sizeof(a[i]));
}

/*
 * A full cache gives up, in this order, an entry gone stale, the oldest
 * unanswered request, or the resolved entry closest to going stale: a burst
 * of traffic from spoofed on-link sources then churns only the requests it
 * caused, not the neighbours (the gateway) we are talking to. The scan is
 * O(size), but only a cache at its bound pays it, once per new neighbour.
 */
static unsigned victim_rank(const struct arp_entry *e, uint64_t now)
{
	if (e->state == ARP_RESOLVED && e->deadline <= now)
		return 0;
	return e->state == ARP_INCOMPLETE ? 1 : 2;
}

static void arp_evict(struct vr_net *n, uint64_t now)
{
	unsigned victim = 0, best_rank = 3;
	uint64_t best_deadline = UINT64_MAX;

	for (unsigned i = 0; i <= n->arp_mask; i++) {
		const struct arp_entry *e = &n->arp[i];
		if (e->state == ARP_FREE)
			continue;
		unsigned r = victim_rank(e, now);
		if (r < best_rank || (r == best_rank && e->deadline < best_deadline)) {
			victim = i;
			best_rank = r;
			best_deadline = e->deadline;
		}
	}
	vr_net_count(&n->st.arp_cache_evicted, 1);
	arp_remove(n, victim);
}

static struct arp_entry *arp_insert(struct vr_net *n, uint32_t ip, const uint8_t *ip6,
				    uint64_t now)
{
	if (n->arp_count >= n->conf.arp_entries)
		arp_evict(n, now);
	unsigned i = arp_hash(n, ip);
	while (n->arp[i].state != ARP_FREE)
		i = (i + 1) & n->arp_mask;
	n->arp_count++;
	struct arp_entry *e = &n->arp[i];
	e->ip = ip;
	e->v6 = !!ip6;
	if (ip6)
		memcpy(e->ip6, ip6, VR_NET_IP6_LEN);
	return e;
}

static void arp_send(struct vr_net *n, uint16_t op, const uint8_t *eth_dst,
		     const uint8_t *tha, uint32_t tpa, uint64_t now)
{
	struct vr_pkt *p = vr_net_pkt_alloc(n);

	if (!p)
		return;
	uint8_t *a = p->data;
	wr16(a, 1);                          /* Ethernet */
	wr16(a + 2, ETH_TYPE_IPV4);
	a[4] = VR_NET_MAC_LEN;
	a[5] = 4;
	wr16(a + 6, op);
	memcpy(a + 8, n->conf.mac, VR_NET_MAC_LEN);
	wr32(a + 14, n->conf.ip);
	memcpy(a + 18, tha, VR_NET_MAC_LEN);
	wr32(a + 24, tpa);
	p->len = ARP_LEN;
	if (op == ARP_OP_REQUEST)
		vr_net_count(&n->st.arp_requests_tx, 1);
	else
		vr_net_count(&n->st.arp_replies_tx, 1);
	vr_net_eth_output(n, p, eth_dst, ETH_TYPE_ARP, now);
}

static void arp_request(struct vr_net *n, const struct arp_entry *e, uint64_t now)
{
	if (e->v6)
		vr_net_nd_solicit(n, e->ip6, now);
	else
		arp_send(n, ARP_OP_REQUEST, mac_broadcast, mac_zero, e->ip, now);
}

static void arp_resolved(struct vr_net *n, struct arp_entry *e, const uint8_t *mac,
			 uint64_t now)
{
	if (e->state == ARP_INCOMPLETE)
		n->arp_incomplete--;
	e->state = ARP_RESOLVED;
	memcpy(e->mac, mac, VR_NET_MAC_LEN);
	e->deadline = now + n->conf.arp_ttl_ms;
	e->tries = 0;
	for (unsigned i = 0; i < e->npending; i++)
		vr_net_eth_output(n, e->pending[i], e->mac, e->v6 ? ETH_TYPE_IPV6 : ETH_TYPE_IPV4, now);
	e->npending = 0;
}

void vr_net_arp_rx(struct vr_net *n, struct vr_pkt *p, uint64_t now)
{
	const uint8_t *a = p->data;

	if (p->len < ARP_LEN || rd16(a) != 1 || rd16(a + 2) != ETH_TYPE_IPV4 ||
	    a[4] != VR_NET_MAC_LEN || a[5] != 4) {
		net_drop(n, p, VR_NET_DROP_ARP_BAD);
		return;
	}
	uint16_t op = rd16(a + 6);
	const uint8_t *sha = a + 8;
	uint32_t spa = rd32(a + 14), tpa = rd32(a + 24);
	/* A multicast sender hardware address would make us a reflector. */
	if ((op != ARP_OP_REQUEST && op != ARP_OP_REPLY) || (sha[0] & 1) ||
	    !memcmp(sha, mac_zero, VR_NET_MAC_LEN)) {
		net_drop(n, p, VR_NET_DROP_ARP_BAD);
		return;
	}
	if (op == ARP_OP_REQUEST)
		vr_net_count(&n->st.arp_requests_rx, 1);
	else
		vr_net_count(&n->st.arp_replies_rx, 1);

	/* spa 0 is an RFC 5227 probe, ours is a conflict: neither is a neighbour. */
	if (spa == n->conf.ip)
		vr_net_count(&n->st.arp_conflicts, 1);
	int learnable = spa && spa != n->conf.ip &&
			(spa & n->netmask) == (n->conf.ip & n->netmask);
	struct arp_entry *e = learnable ? arp_find(n, spa, NULL) : NULL;
	if (e)
		arp_resolved(n, e, sha, now);
	if (tpa != n->conf.ip) {
		net_drop(n, p, VR_NET_DROP_ARP_NOT_OURS);
		return;
	}
	if (learnable && !e)
		arp_resolved(n, arp_insert(n, spa, NULL, now), sha, now);
	if (op == ARP_OP_REQUEST)
		arp_send(n, ARP_OP_REPLY, sha, sha, spa, now);
	vr_net_pkt_free(p);
}

void vr_net_nd_learn(struct vr_net *n, const uint8_t ip6[VR_NET_IP6_LEN], const uint8_t *mac,
		     int create, uint64_t now)
{
	uint32_t fold = ip6_fold(ip6);
	struct arp_entry *e = arp_find(n, fold, ip6);

	if (!e && !create)
		return;
	arp_resolved(n, e ? e : arp_insert(n, fold, ip6, now), mac, now);
}

/* Sends p to next hop nh (IPv4 ip, or IPv6 ip6 folded to ip), or asks and holds it. */
static int neigh_output(struct vr_net *n, struct vr_pkt *p, uint32_t nh, const uint8_t *nh6,
			uint64_t now)
{
	struct arp_entry *e = arp_find(n, nh, nh6);

	if (e && e->state == ARP_RESOLVED && now < e->deadline) {
		vr_net_eth_output(n, p, e->mac, nh6 ? ETH_TYPE_IPV6 : ETH_TYPE_IPV4, now);
		return 0;
	}
	if (!e) {
		e = arp_insert(n, nh, nh6, now);
	} else if (e->state == ARP_INCOMPLETE) {
		if (e->npending >= n->conf.arp_pending) {
			net_drop(n, p, VR_NET_DROP_ARP_PENDING_FULL);
			return -EHOSTUNREACH;
		}
		e->pending[e->npending++] = p;
		return 0;
	}
	/* New or stale: ask (again), holding p until the answer or the last try. */
	e->state = ARP_INCOMPLETE;
	n->arp_incomplete++;
	e->tries = 1;
	e->deadline = now + n->conf.arp_retry_ms;
	e->pending[0] = p;
	e->npending = 1;
	if (e->deadline < n->arp_sweep_at || n->arp_incomplete == 1)
		n->arp_sweep_at = e->deadline;
	arp_request(n, e, now);
	return 0;
}

int vr_net_arp_output(struct vr_net *n, struct vr_pkt *p, uint32_t nh, uint64_t now)
{
	return neigh_output(n, p, nh, NULL, now);
}

int vr_net_nd_output(struct vr_net *n, struct vr_pkt *p, const uint8_t nh[VR_NET_IP6_LEN],
		     uint64_t now)
{
	return neigh_output(n, p, ip6_fold(nh), nh, now);
}

void vr_net_arp_poll(struct vr_net *n, uint64_t now)
{
	if (n->garp_due) {
		/* An announcement: a request with our address as sender and target. */
		arp_send(n, ARP_OP_REQUEST, mac_broadcast, mac_zero, n->conf.ip, now);
		n->garp_due = 0;
	}
	if (n->na_due) {
		vr_net_nd_announce(n, n->conf.ip6, now);
		vr_net_nd_announce(n, n->lladdr, now);
		n->na_due = 0;
	}
	/* Only incomplete entries have timers: a stale resolved one is asked for
	 * again on its next use, and is the first to go when the cache is full. */
	if (!n->arp_incomplete || now < n->arp_sweep_at)
		return;
	uint64_t next = UINT64_MAX;
	for (unsigned i = 0; i <= n->arp_mask;) {
		struct arp_entry *e = &n->arp[i];
		if (e->state != ARP_INCOMPLETE || e->deadline > now) {
			if (e->state == ARP_INCOMPLETE && e->deadline < next)
				next = e->deadline;
			i++;
			continue;
		}
		if (e->tries >= n->conf.arp_tries) {
			arp_remove(n, i);        /* slot i now holds a shifted entry: look again */
			continue;
		}
		e->tries++;
		e->deadline = now + n->conf.arp_retry_ms;
		if (e->deadline < next)
			next = e->deadline;
		arp_request(n, e, now);
		i++;
	}
	n->arp_sweep_at = next;
}
