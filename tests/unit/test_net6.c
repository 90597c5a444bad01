/*
 * test_net6.c - engine/net's IPv6, frames in and frames out: the
 * unsolicited advertisements at start, neighbour solicitations answered
 * byte for byte (to our address, through our solicited-node group's MAC),
 * resolve-on-send through the gateway learned from an advertisement, ping
 * answered, packet-too-big handed to the path-MTU hook, and every bad
 * checksum, extension header and ND message dropped under its own counter.
 * Checksums are checked with an independent RFC 1071 sum over RFC 8200's
 * pseudo-header.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "vmrelay/net.h"
#include "test_bytes.h"
#include "test_net_harness.h"

#define T0 1000000u

static const uint8_t our_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 };
static const uint8_t peer_mac[6] = { 0x02, 0, 0, 0, 0, 0x02 };
static const uint8_t gw_mac[6] = { 0x02, 0, 0, 0, 0, 0xfe };
static const uint8_t our_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0x77, [15] = 1 };
static const uint8_t peer_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0x77, [15] = 2 };
static const uint8_t far_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0x99, [15] = 7 };
static const uint8_t gw_ip6[16] = { 0xfe, 0x80, [15] = 0xfe };
/* fe80:: and the MAC as a modified EUI-64: 02:00:00:00:00:01 -> 0000:00ff:fe00:0001 */
static const uint8_t our_ll[16] = { 0xfe, 0x80, [11] = 0xff, 0xfe, 0, 0, 1 };
static const uint8_t all_nodes[16] = { 0xff, 0x02, [15] = 1 };
static const uint8_t our_group[16] = { 0xff, 0x02, [11] = 1, 0xff, 0, 0, 1 };
static const uint8_t our_group_mac[6] = { 0x33, 0x33, 0xff, 0, 0, 1 };

static struct vr_net_pmtu pmtu_seen;
static uint8_t pmtu_src[16], pmtu_dst[16], pmtu_l4[8];
static int pmtu_calls;

static void pmtu_hook(void *arg, const struct vr_net_pmtu *m, uint64_t now)
{
	pmtu_seen = *m;
	memcpy(pmtu_src, m->src6, 16);
	memcpy(pmtu_dst, m->dst6, 16);
	memcpy(pmtu_l4, m->l4, 8);
	pmtu_calls++;
}

static struct vr_net_conf conf_default(void)
{
	struct vr_net_conf c = {
		.ip = 0x0a000001u, .prefix = 24, .pkts = 64, .arp_entries = 16,
		.tx = tx_capture, .pmtu = pmtu_hook, .prefix6 = 64,
	};
	memcpy(c.mac, our_mac, 6);
	memcpy(c.ip6, our_ip6, 16);
	memcpy(c.gateway6, gw_ip6, 16);
	return c;
}

static int setup(void **state)
{
	char err[128];
	struct vr_net_conf c = conf_default();
	struct vr_net *n = vr_net_new(&c, err, sizeof(err));

	assert_non_null(n);
	vr_net_poll(n, T0);              /* the gratuitous ARP and the advertisements */
	nsent = 0;
	pmtu_calls = 0;
	*state = n;
	return 0;
}

/* RFC 8200 §8.1's pseudo-header, summed as 16-bit words for rfc1071(). */
static uint32_t pseudo6(const uint8_t *src, const uint8_t *dst, uint8_t nh, uint32_t len)
{
	uint32_t sum = 0;

	for (int i = 0; i < 16; i += 2)
		sum += get16(src + i) + get16(dst + i);
	return sum + (len >> 16) + (len & 0xffff) + nh;
}

/*
 * An IPv6 frame to dst_mac: ext (elen bytes of extension headers, first
 * next-header value first_nh) then an upper-layer body of blen bytes with
 * next header nh, its checksum at csum_off filled in (-1: none). Returns
 * the frame length.
 */
static size_t ip6_frame(uint8_t *f, const uint8_t *dst_mac, const uint8_t *src_mac,
			const uint8_t *src, const uint8_t *dst, uint8_t hops, const uint8_t *ext,
			size_t elen, uint8_t first_nh, uint8_t nh, const uint8_t *body,
			size_t blen, int csum_off)
{
	memcpy(f, dst_mac, 6);
	memcpy(f + 6, src_mac, 6);
	put16(f + 12, 0x86dd);
	uint8_t *h = f + 14;
	put_ip6(h, (uint16_t)(elen + blen), elen ? first_nh : nh, hops, src, dst);
	if (elen)
		memcpy(h + 40, ext, elen);
	uint8_t *b = h + 40 + elen;
	memcpy(b, body, blen);
	if (csum_off >= 0) {
		put16(b + csum_off, 0);
		put16(b + csum_off, rfc1071(pseudo6(src, dst, nh, (uint32_t)blen), b, blen));
	}
	return 14 + 40 + elen + blen;
}

static size_t icmp6_frame(uint8_t *f, const uint8_t *dst_mac, const uint8_t *src,
			  const uint8_t *dst, uint8_t hops, const uint8_t *body, size_t blen)
{
	return ip6_frame(f, dst_mac, peer_mac, src, dst, hops, NULL, 0, 0, 58, body, blen, 2);
}

static size_t echo_body(uint8_t *b, uint16_t seq)
{
	b[0] = 128;
	b[1] = 0;
	put16(b + 4, 0xbeef);
	put16(b + 6, seq);
	for (int i = 0; i < 24; i++)
		b[8 + i] = (uint8_t)(i * 3);
	return 32;
}

/* An NS (type 135) or NA (136) for target, with a link-layer option carrying mac (NULL: none). */
static size_t nd_body(uint8_t *b, uint8_t type, uint8_t flags, const uint8_t *target,
		      const uint8_t *mac)
{
	memset(b, 0, 32);
	b[0] = type;
	b[4] = flags;
	memcpy(b + 8, target, 16);
	if (!mac)
		return 24;
	b[24] = type == 135 ? 1 : 2;
	b[25] = 1;
	memcpy(b + 26, mac, 6);
	return 32;
}

/* The ICMPv6 message in frame s, checked: hop limit, addresses, checksum. */
static const uint8_t *icmp6_of(const struct frame *s, const uint8_t *dst_mac,
			       const uint8_t *src, const uint8_t *dst, uint8_t hops)
{
	const uint8_t *h = s->b + 14;

	assert_memory_equal(s->b, dst_mac, 6);
	assert_memory_equal(s->b + 6, our_mac, 6);
	assert_int_equal(get16(s->b + 12), 0x86dd);
	assert_int_equal(h[0] >> 4, 6);
	assert_int_equal(h[6], 58);
	assert_int_equal(h[7], hops);
	assert_memory_equal(h + 8, src, 16);
	assert_memory_equal(h + 24, dst, 16);
	size_t plen = get16(h + 4);
	assert_int_equal(s->len, 14 + 40 + plen);
	assert_int_equal(rfc1071(pseudo6(src, dst, 58, (uint32_t)plen), h + 40, plen), 0);
	return h + 40;
}

static void test_advertised_at_start(void **state)
{
	char err[128];
	struct vr_net_conf c = conf_default();
	struct vr_net *n = vr_net_new(&c, err, sizeof(err));

	assert_non_null(n);
	nsent = 0;
	vr_net_poll(n, T0);
	/* The gratuitous ARP, then one advertisement for each of our addresses. */
	assert_int_equal(nsent, 3);
	const uint8_t all_mac[6] = { 0x33, 0x33, 0, 0, 0, 1 };
	const uint8_t *addrs[2] = { our_ip6, our_ll };
	for (int i = 0; i < 2; i++) {
		const uint8_t *m = icmp6_of(&sent[1 + i], all_mac, addrs[i], all_nodes, 255);
		assert_int_equal(m[0], 136);
		assert_int_equal(m[4], 0x20);            /* override, not solicited */
		assert_memory_equal(m + 8, addrs[i], 16);
		assert_int_equal(m[24], 2);
		assert_int_equal(m[25], 1);
		assert_memory_equal(m + 26, our_mac, 6);
	}
	nsent = 0;
	vr_net_poll(n, T0 + 1);
	assert_int_equal(nsent, 0);
	vr_net_free(n);
}

static void test_solicitation_answered(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[256], b[64];
	const uint8_t *targets[2] = { our_ip6, our_ll };

	for (int i = 0; i < 2; i++) {
		nsent = 0;
		size_t blen = nd_body(b, 135, 0, targets[i], peer_mac);
		inject(n, f, icmp6_frame(f, our_group_mac, peer_ip6, our_group, 255, b, blen), T0);
		assert_int_equal(nsent, 1);
		const uint8_t *m = icmp6_of(&sent[0], peer_mac, targets[i], peer_ip6, 255);
		assert_int_equal(m[0], 136);
		assert_int_equal(m[4], 0x60);            /* solicited, override */
		assert_memory_equal(m + 8, targets[i], 16);
		assert_int_equal(m[24], 2);
		assert_memory_equal(m + 26, our_mac, 6);
	}
	assert_int_equal(vr_net_stats(n)->nd_solicits_rx, 2);
	assert_int_equal(vr_net_stats(n)->nd_adverts_tx, 2 + 2);   /* and the two at start */

	/* Someone else's target, a wrong hop limit, a truncated message: no answer. */
	nsent = 0;
	size_t blen = nd_body(b, 135, 0, peer_ip6, peer_mac);
	inject(n, f, icmp6_frame(f, our_group_mac, far_ip6, our_group, 255, b, blen), T0);
	blen = nd_body(b, 135, 0, our_ip6, peer_mac);
	inject(n, f, icmp6_frame(f, our_group_mac, peer_ip6, our_group, 64, b, blen), T0);
	inject(n, f, icmp6_frame(f, our_group_mac, peer_ip6, our_group, 255, b, 20), T0);
	b[25] = 0;                                    /* an option of length 0 */
	inject(n, f, icmp6_frame(f, our_group_mac, peer_ip6, our_group, 255, b, blen), T0);
	assert_int_equal(nsent, 0);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ARP_NOT_OURS], 1);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ND_BAD], 3);
}

static void test_other_groups_not_ours(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[256], b[64];
	const uint8_t other_group[16] = { 0xff, 0x02, [11] = 1, 0xff, 0, 0, 9 };
	const uint8_t other_mac[6] = { 0x33, 0x33, 0xff, 0, 0, 9 };

	size_t blen = nd_body(b, 135, 0, our_ip6, peer_mac);
	inject(n, f, icmp6_frame(f, other_mac, peer_ip6, other_group, 255, b, blen), T0);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ETH_NOT_OURS], 1);
	/* Our group's MAC but another group's address. */
	inject(n, f, icmp6_frame(f, our_group_mac, peer_ip6, other_group, 255, b, blen), T0);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_IP_NOT_OURS], 1);
	/* TCP to a group is not ours either. */
	blen = 20;
	memset(b, 0, blen);
	inject(n, f, ip6_frame(f, our_group_mac, peer_mac, peer_ip6, our_group, 64, NULL, 0, 0,
			       6, b, blen, 16), T0);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_IP_NOT_OURS], 2);
	assert_int_equal(nsent, 0);
}

/* The echo reply to far_ip6 goes to the gateway, resolved by ND first. */
static void test_ping_through_gateway(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[256], b[64];
	size_t blen = echo_body(b, 1);

	inject(n, f, icmp6_frame(f, our_mac, far_ip6, our_ip6, 60, b, blen), T0);
	/* The reply waits; a solicitation for the gateway went to its group. */
	assert_int_equal(nsent, 1);
	const uint8_t gw_group[16] = { 0xff, 0x02, [11] = 1, 0xff, 0, 0, 0xfe };
	const uint8_t gw_group_mac[6] = { 0x33, 0x33, 0xff, 0, 0, 0xfe };
	const uint8_t *m = icmp6_of(&sent[0], gw_group_mac, our_ll, gw_group, 255);
	assert_int_equal(m[0], 135);
	assert_memory_equal(m + 8, gw_ip6, 16);
	assert_int_equal(m[24], 1);
	assert_memory_equal(m + 26, our_mac, 6);
	assert_int_equal(vr_net_pkt_in_use(n), 1);

	nsent = 0;
	blen = nd_body(b, 136, 0x60, gw_ip6, gw_mac);
	inject(n, f, ip6_frame(f, our_mac, gw_mac, gw_ip6, our_ll, 255, NULL, 0, 0, 58, b, blen, 2),
	       T0 + 5);
	assert_int_equal(nsent, 1);
	m = icmp6_of(&sent[0], gw_mac, our_ip6, far_ip6, 64);
	assert_int_equal(m[0], 129);
	assert_int_equal(get16(m + 4), 0xbeef);
	assert_int_equal(get16(m + 6), 1);
	assert_int_equal(sent[0].len, 14 + 40 + 32);
	assert_int_equal(vr_net_stats(n)->icmp_echo_tx, 1);

	/* The next one leaves at once. */
	nsent = 0;
	blen = echo_body(b, 2);
	inject(n, f, icmp6_frame(f, our_mac, far_ip6, our_ip6, 60, b, blen), T0 + 6);
	assert_int_equal(nsent, 1);
	icmp6_of(&sent[0], gw_mac, our_ip6, far_ip6, 64);
}

static void test_unresolved_gives_up(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[256], b[64];
	size_t blen = echo_body(b, 1);

	inject(n, f, icmp6_frame(f, our_mac, far_ip6, our_ip6, 60, b, blen), T0);
	for (uint64_t t = T0; t < T0 + 5000; t += 100)
		vr_net_poll(n, t);
	assert_int_equal(vr_net_stats(n)->nd_solicits_tx, 3);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ARP_UNRESOLVED], 1);
	/* An unsolicited advertisement for a neighbour we never asked about adds nothing. */
	blen = nd_body(b, 136, 0x20, peer_ip6, peer_mac);
	inject(n, f, icmp6_frame(f, our_mac, peer_ip6, our_ip6, 255, b, blen), T0 + 6000);
	nsent = 0;
	blen = echo_body(b, 2);
	inject(n, f, icmp6_frame(f, our_mac, peer_ip6, our_ip6, 60, b, blen), T0 + 6001);
	assert_int_equal(nsent, 1);
	assert_int_equal(sent[0].b[14 + 40], 135);     /* asked, not answered blind */
	for (uint64_t t = T0 + 6001; t < T0 + 11000; t += 100)
		vr_net_poll(n, t);
}

static size_t ping_with_ext(uint8_t *f, const uint8_t *ext, size_t elen, uint8_t first)
{
	uint8_t b[64];
	size_t blen = echo_body(b, 9);

	return ip6_frame(f, our_mac, peer_mac, peer_ip6, our_ip6, 64, ext, elen, first, 58, b,
			 blen, 2);
}

static void test_extension_headers(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[256];
	/* Hop-by-hop with PadN and a skippable unknown option, then ICMPv6. */
	const uint8_t hbh[8] = { 58, 0, 1, 0, 0x1e, 2, 0, 0 };
	/* Destination options with an option whose action is "discard" (10xxxxxx). */
	const uint8_t dst_bad[8] = { 58, 0, 0x81, 4, 0, 0, 0, 0 };
	/* Routing, segments left 0 then 1. */
	const uint8_t rt0[8] = { 58, 0, 4, 0, 0, 0, 0, 0 };
	const uint8_t rt1[8] = { 58, 0, 4, 1, 0, 0, 0, 0 };
	const uint8_t frag[8] = { 58, 0, 0, 1, 0, 0, 0, 1 };
	/* A destination options header, then hop-by-hop out of place. */
	const uint8_t dst_then_hbh[16] = { 0, 0, 1, 4, 0, 0, 0, 0, 58, 0, 1, 4, 0, 0, 0, 0 };
	/* A length running past the datagram. */
	const uint8_t long_ext[8] = { 58, 5, 1, 4, 0, 0, 0, 0 };

	/* The peer is learned, so an answer goes straight out. */
	uint8_t b[64];
	size_t blen = nd_body(b, 135, 0, our_ip6, peer_mac);
	inject(n, f, icmp6_frame(f, our_group_mac, peer_ip6, our_group, 255, b, blen), T0);
	nsent = 0;

	inject(n, f, ping_with_ext(f, hbh, 8, 0), T0);
	inject(n, f, ping_with_ext(f, rt0, 8, 43), T0);
	assert_int_equal(nsent, 2);
	icmp6_of(&sent[0], peer_mac, our_ip6, peer_ip6, 64);
	inject(n, f, ping_with_ext(f, dst_bad, 8, 60), T0);
	inject(n, f, ping_with_ext(f, rt1, 8, 43), T0);
	inject(n, f, ping_with_ext(f, dst_then_hbh, 16, 60), T0);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_IP6_EXT], 3);
	inject(n, f, ping_with_ext(f, frag, 8, 44), T0);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_IP_FRAG], 1);
	inject(n, f, ping_with_ext(f, long_ext, 8, 0), T0);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_IP_TOTAL_LEN], 1);
	/* ESP: a protocol we do not speak. */
	inject(n, f, ping_with_ext(f, hbh, 8, 50), T0);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_IP_PROTO], 1);
	assert_int_equal(nsent, 2);
}

static void test_bad_datagrams(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[256], b[64];
	size_t blen = echo_body(b, 1);
	size_t len = icmp6_frame(f, our_mac, peer_ip6, our_ip6, 64, b, blen);
	const struct vr_net_stats *st = vr_net_stats(n);

	f[14 + 40 + 10] ^= 1;                          /* a data byte: the checksum fails */
	inject(n, f, len, T0);
	assert_int_equal(st->drop[VR_NET_DROP_ICMP_CSUM], 1);
	len = icmp6_frame(f, our_mac, peer_ip6, our_ip6, 64, b, blen);
	inject(n, f, len - 1, T0);                     /* payload length past the frame */
	assert_int_equal(st->drop[VR_NET_DROP_IP_TOTAL_LEN], 1);
	inject(n, f, 14 + 39, T0);
	assert_int_equal(st->drop[VR_NET_DROP_IP_SHORT], 1);
	f[14] = 0x40;
	inject(n, f, len, T0);
	assert_int_equal(st->drop[VR_NET_DROP_IP_VERSION], 1);
	len = icmp6_frame(f, our_mac, peer_ip6, far_ip6, 64, b, blen);
	inject(n, f, len, T0);
	assert_int_equal(st->drop[VR_NET_DROP_IP_NOT_OURS], 1);
	len = icmp6_frame(f, our_mac, all_nodes, our_ip6, 64, b, blen);
	inject(n, f, len, T0);
	len = icmp6_frame(f, our_mac, our_ip6, our_ip6, 64, b, blen);
	inject(n, f, len, T0);
	assert_int_equal(st->drop[VR_NET_DROP_IP_MARTIAN], 2);
	assert_int_equal(nsent, 0);
}

static void test_too_big_to_hook(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[256], b[128];

	/* What we sent: IPv6 from our address with TCP's first 8 bytes. */
	memset(b, 0, sizeof(b));
	b[0] = 2;
	put32(b + 4, 1400);
	uint8_t *q = b + 8;
	put_ip6(q, 1440, 6, 64, our_ip6, far_ip6);
	put16(q + 40, 25);
	put16(q + 42, 40000);
	put32(q + 44, 0x01020304);
	inject(n, f, ip6_frame(f, our_mac, gw_mac, far_ip6, our_ip6, 60, NULL, 0, 0, 58, b, 56, 2),
	       T0);
	assert_int_equal(pmtu_calls, 1);
	assert_true(pmtu_seen.v6);
	assert_int_equal(pmtu_seen.mtu, 1400);
	assert_int_equal(pmtu_seen.proto, 6);
	assert_memory_equal(pmtu_src, our_ip6, 16);
	assert_memory_equal(pmtu_dst, far_ip6, 16);
	assert_int_equal(get32(pmtu_l4 + 4), 0x01020304);
	assert_int_equal(vr_net_stats(n)->icmp_pmtu_rx, 1);

	/* Quoting a datagram that was not ours, or too short a quote: not believed. */
	memcpy(q + 8, peer_ip6, 16);
	inject(n, f, ip6_frame(f, our_mac, gw_mac, far_ip6, our_ip6, 60, NULL, 0, 0, 58, b, 56, 2),
	       T0);
	memcpy(q + 8, our_ip6, 16);
	inject(n, f, ip6_frame(f, our_mac, gw_mac, far_ip6, our_ip6, 60, NULL, 0, 0, 58, b, 52, 2),
	       T0);
	assert_int_equal(pmtu_calls, 1);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ICMP_BAD_PMTU], 2);
}

static void test_ip6_output_routes(void **state)
{
	struct vr_net *n = *state;
	uint8_t src[16];

	assert_int_equal(vr_net_ip6_src(n, far_ip6, src), 0);
	assert_memory_equal(src, our_ip6, 16);
	assert_int_equal(vr_net_ip6_src(n, gw_ip6, src), 0);
	assert_memory_equal(src, our_ll, 16);
	/* To ourselves, to a group (TCP), to ::: no route. */
	const uint8_t *bad[3] = { our_ip6, all_nodes, (const uint8_t[16]){ 0 } };
	for (int i = 0; i < 3; i++) {
		struct vr_pkt *p = vr_net_pkt_alloc(n);
		p->len = 20;
		assert_int_equal(vr_net_ip6_output(n, p, NULL, bad[i], 6, T0), -EHOSTUNREACH);
	}
	struct vr_pkt *p = vr_net_pkt_alloc(n);
	p->len = 1500 - 40 + 1;
	assert_int_equal(vr_net_ip6_output(n, p, NULL, peer_ip6, 6, T0), -EMSGSIZE);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_NO_ROUTE], 3);
	assert_int_equal(nsent, 0);
}

static void test_conf_errors_named(void **state)
{
	char err[128];
	struct vr_net_conf c = conf_default();
	c.prefix6 = 0;
	assert_null(vr_net_new(&c, err, sizeof(err)));
	assert_non_null(strstr(err, "IPv6 prefix length"));
	c = conf_default();
	memcpy(c.ip6, our_ll, 16);
	assert_null(vr_net_new(&c, err, sizeof(err)));
	assert_non_null(strstr(err, "link-local"));
	c = conf_default();
	c.mtu = 1000;
	assert_null(vr_net_new(&c, err, sizeof(err)));
	assert_non_null(strstr(err, "1280"));
	/* Without ip6 the instance sends nothing of IPv6 and drops its frames. */
	c = conf_default();
	memset(c.ip6, 0, 16);
	struct vr_net *n = vr_net_new(&c, err, sizeof(err));
	assert_non_null(n);
	nsent = 0;
	vr_net_poll(n, T0);
	assert_int_equal(nsent, 1);                    /* the gratuitous ARP alone */
	assert_int_equal(vr_net_ip6_src(n, far_ip6, (uint8_t[16]){ 0 }), -EAFNOSUPPORT);
	uint8_t f[256], b[64];
	size_t blen = echo_body(b, 1);
	inject(n, f, icmp6_frame(f, our_mac, peer_ip6, our_ip6, 64, b, blen), T0);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ETH_TYPE], 1);
	vr_net_free(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_advertised_at_start),
		cmocka_unit_test_setup_teardown(test_solicitation_answered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_groups_not_ours, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_through_gateway, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unresolved_gives_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_extension_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_datagrams, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_big_to_hook, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ip6_output_routes, setup, teardown),
		cmocka_unit_test(test_conf_errors_named),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
