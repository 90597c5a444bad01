/*
 * test_net.c - engine/net's lower half, frames in and frames out: ARP
 * requests answered byte for byte, the gratuitous ARP, ping answered with
 * checksums checked by an independent RFC 1071 sum, every malformed IPv4
 * header dropped under its own counter, resolve-on-send with its pending
 * queue, retries and expiry on a virtual clock, the bounded cache, path-MTU
 * messages handed to the hook, the pool coming back whole, and a double
 * free's log line surviving the abort() it ends in on a worker thread.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "vmrelay/log.h"

#include "vmrelay/net.h"
#include "test_bytes.h"
#include "test_net_harness.h"

#define OUR_IP  0x0a000001u            /* 10.0.0.1/24 */
#define PEER_IP 0x0a000002u
#define GW_IP   0x0a0000feu
#define FAR_IP  0xc6336407u            /* 198.51.100.7 */
#define T0      1000000u

static const uint8_t our_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 };
static const uint8_t peer_mac[6] = { 0x02, 0, 0, 0, 0, 0x02 };
static const uint8_t gw_mac[6] = { 0x02, 0, 0, 0, 0, 0xfe };
static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

/* The path-MTU hook's last call. */
static struct vr_net_pmtu pmtu_seen;
static uint8_t pmtu_l4[8];
static int pmtu_calls;

static void pmtu_hook(void *arg, const struct vr_net_pmtu *m, uint64_t now)
{
	pmtu_seen = *m;
	memcpy(pmtu_l4, m->l4, sizeof(pmtu_l4));
	pmtu_calls++;
}

static struct vr_net_conf conf_default(void)
{
	struct vr_net_conf c = {
		.ip = OUR_IP, .prefix = 24, .gateway = GW_IP, .pkts = 64,
		.arp_entries = 16, .tx = tx_capture, .pmtu = pmtu_hook,
	};
	memcpy(c.mac, our_mac, 6);
	return c;
}

static struct vr_net *net_make(struct vr_net_conf c)
{
	char err[128];
	struct vr_net *n = vr_net_new(&c, err, sizeof(err));

	assert_non_null(n);
	return n;
}

static int setup(void **state)
{
	nsent = 0;
	tx_accept = ~0u;
	pmtu_calls = 0;
	*state = net_make(conf_default());
	return 0;
}

static size_t eth(uint8_t *f, const uint8_t *dst, const uint8_t *src, uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	put16(f + 12, type);
	return 14;
}

static size_t arp_frame(uint8_t *f, uint16_t op, const uint8_t *sha, uint32_t spa,
			const uint8_t *tha, uint32_t tpa, const uint8_t *eth_dst)
{
	size_t o = eth(f, eth_dst, sha, 0x0806);
	put16(f + o, 1);
	put16(f + o + 2, 0x0800);
	f[o + 4] = 6;
	f[o + 5] = 4;
	put16(f + o + 6, op);
	memcpy(f + o + 8, sha, 6);
	put32(f + o + 14, spa);
	memcpy(f + o + 18, tha, 6);
	put32(f + o + 24, tpa);
	return o + 28;
}

/* An IPv4 header at f with a correct checksum; returns its length. */
static size_t ip_hdr(uint8_t *f, uint32_t src, uint32_t dst, uint8_t proto, size_t payload)
{
	memset(f, 0, 20);
	f[0] = 0x45;
	put16(f + 2, (uint16_t)(20 + payload));
	put16(f + 4, 0x1234);
	f[8] = 63;
	f[9] = proto;
	put32(f + 12, src);
	put32(f + 16, dst);
	put16(f + 10, rfc1071(0, f, 20));
	return 20;
}

/* An echo request from the peer: returns the frame length. */
static size_t ping_frame(uint8_t *f, uint16_t seq, size_t datalen)
{
	size_t o = eth(f, our_mac, peer_mac, 0x0800);
	o += ip_hdr(f + o, PEER_IP, OUR_IP, 1, 8 + datalen);
	uint8_t *icmp = f + o;
	icmp[0] = 8;
	icmp[1] = 0;
	put16(icmp + 2, 0);
	put16(icmp + 4, 0xbeef);
	put16(icmp + 6, seq);
	for (size_t i = 0; i < datalen; i++)
		icmp[8 + i] = (uint8_t)(i * 7);
	put16(icmp + 2, rfc1071(0, icmp, 8 + datalen));
	return o + 8 + datalen;
}

static void learn_peer(struct vr_net *n, uint64_t now)
{
	uint8_t f[64];
	size_t len = arp_frame(f, 1, peer_mac, PEER_IP, (const uint8_t[6]){ 0 }, OUR_IP, bcast);

	inject(n, f, len, now);
	nsent = 0;
}

static void test_csum_rfc1071(void **state)
{
	/* RFC 1071 §3's worked example: the sum of these words is ddf2. */
	static const uint8_t ex[] = { 0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7 };

	assert_int_equal(vr_net_csum_fold(vr_net_csum_add(0, ex, sizeof(ex))), 0xffff ^ 0xddf2);
	/* Random buffers, odd lengths and split sums against the independent version. */
	uint8_t b[1501];
	srand(7);
	for (int round = 0; round < 200; round++) {
		size_t len = (size_t)rand() % sizeof(b);
		for (size_t i = 0; i < len; i++)
			b[i] = (uint8_t)rand();
		assert_int_equal(vr_net_csum_fold(vr_net_csum_add(0, b, len)), rfc1071(0, b, len));
		size_t cut = len / 2 & ~(size_t)1;
		uint32_t s = vr_net_csum_add(vr_net_csum_add(0, b, cut), b + cut, len - cut);
		assert_int_equal(vr_net_csum_fold(s), rfc1071(0, b, len));
		/* from an odd address, as a header inside a frame may be */
		if (len)
			assert_int_equal(vr_net_csum_fold(vr_net_csum_add(0, b + 1, len - 1)),
					 rfc1071(0, b + 1, len - 1));
	}
	/* Sums that fold to 0 or to all ones (one's complement's two zeros). */
	memset(b, 0, sizeof(b));
	assert_int_equal(vr_net_csum_fold(vr_net_csum_add(0, b, 1500)), rfc1071(0, b, 1500));
	memset(b, 0xff, sizeof(b));
	assert_int_equal(vr_net_csum_fold(vr_net_csum_add(0, b, 1501)), rfc1071(0, b, 1501));
	assert_int_equal(vr_net_csum_fold(vr_net_csum_add(0xffff, b, 2)), rfc1071(0, b, 4));
}

static void test_arp_request_answered_exactly(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[64], want[64];
	size_t len = arp_frame(f, 1, peer_mac, PEER_IP, (const uint8_t[6]){ 0 }, OUR_IP, bcast);

	inject(n, f, len, T0);
	assert_int_equal(nsent, 1);
	size_t wlen = arp_frame(want, 2, our_mac, OUR_IP, peer_mac, PEER_IP, peer_mac);
	assert_int_equal(sent[0].len, wlen);
	assert_memory_equal(sent[0].b, want, wlen);
	assert_int_equal(vr_net_stats(n)->arp_requests_rx, 1);
	assert_int_equal(vr_net_stats(n)->arp_replies_tx, 1);

	/* A request for someone else's address is not answered. */
	len = arp_frame(f, 1, peer_mac, PEER_IP, (const uint8_t[6]){ 0 }, 0x0a000009u, bcast);
	inject(n, f, len, T0);
	assert_int_equal(nsent, 1);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ARP_NOT_OURS], 1);

	/* Malformed: a protocol length of 6, a multicast sender MAC. */
	len = arp_frame(f, 1, peer_mac, PEER_IP, (const uint8_t[6]){ 0 }, OUR_IP, bcast);
	f[14 + 5] = 6;
	inject(n, f, len, T0);
	uint8_t mcast[6] = { 0x01, 0, 0x5e, 0, 0, 1 };
	len = arp_frame(f, 1, mcast, PEER_IP, (const uint8_t[6]){ 0 }, OUR_IP, bcast);
	inject(n, f, len, T0);
	inject(n, f, 14 + 27, T0);        /* one byte short */
	assert_int_equal(nsent, 1);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ARP_BAD], 3);
}

static void test_gratuitous_arp_at_start(void **state)
{
	struct vr_net *n = *state;
	uint8_t want[64];

	vr_net_poll(n, T0);
	assert_int_equal(nsent, 1);
	size_t wlen = arp_frame(want, 1, our_mac, OUR_IP, (const uint8_t[6]){ 0 }, OUR_IP, bcast);
	assert_int_equal(sent[0].len, wlen);
	assert_memory_equal(sent[0].b, want, wlen);
	vr_net_poll(n, T0 + 5000);
	assert_int_equal(nsent, 1);
}

static void check_echo_reply(const struct frame *r, const uint8_t *req, size_t reqlen)
{
	const uint8_t *ip = r->b + 14, *icmp = ip + 20;

	assert_int_equal(r->len, reqlen);
	assert_memory_equal(r->b, peer_mac, 6);
	assert_memory_equal(r->b + 6, our_mac, 6);
	assert_int_equal(get16(r->b + 12), 0x0800);
	assert_int_equal(ip[0], 0x45);
	assert_int_equal(get16(ip + 2), reqlen - 14);
	assert_int_equal(get16(ip + 6), 0x4000);               /* DF, no fragment */
	assert_int_equal(ip[8], 64);
	assert_int_equal(ip[9], 1);
	assert_int_equal(get32(ip + 12), OUR_IP);
	assert_int_equal(get32(ip + 16), PEER_IP);
	assert_int_equal(rfc1071(0, ip, 20), 0);
	assert_int_equal(icmp[0], 0);
	assert_int_equal(icmp[1], 0);
	assert_int_equal(rfc1071(0, icmp, reqlen - 34), 0);
	/* Identifier, sequence and data echoed unchanged. */
	assert_memory_equal(icmp + 4, req + 34 + 4, reqlen - 34 - 4);
}

static void test_ping_answered(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[1600], req[1600];

	learn_peer(n, T0);
	size_t len = ping_frame(f, 1, 56);
	memcpy(req, f, len);
	inject(n, f, len, T0);
	assert_int_equal(nsent, 1);
	check_echo_reply(&sent[0], req, len);

	/* A full-MTU ping, and one padded to the Ethernet minimum (padding trimmed). */
	len = ping_frame(f, 2, 1500 - 28);
	memcpy(req, f, len);
	inject(n, f, len, T0);
	assert_int_equal(nsent, 2);
	check_echo_reply(&sent[1], req, len);
	len = ping_frame(f, 3, 0);
	memcpy(req, f, len);
	memset(f + len, 0xaa, 60 - len);
	inject(n, f, 60, T0);
	assert_int_equal(nsent, 3);
	check_echo_reply(&sent[2], req, len);
	assert_int_equal(vr_net_stats(n)->icmp_echo_tx, 3);

	/* A bad ICMP checksum gets no answer. */
	len = ping_frame(f, 4, 8);
	f[34 + 9] ^= 1;
	inject(n, f, len, T0);
	assert_int_equal(nsent, 3);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ICMP_CSUM], 1);
}

/* A ping mangled by fix (header re-checksummed when resum) is dropped as why. */
static void expect_drop(struct vr_net *n, void (*fix)(uint8_t *f, size_t *len), int resum,
			enum vr_net_drop why)
{
	uint8_t f[256];
	size_t len = ping_frame(f, 9, 16);
	uint64_t before = vr_net_stats(n)->drop[why];

	fix(f, &len);
	if (resum) {
		put16(f + 24, 0);
		put16(f + 24, rfc1071(0, f + 14, (f[14] & 0xfu) * 4u > len - 14 ? 20 : (f[14] & 0xfu) * 4u));
	}
	inject(n, f, len, T0);
	assert_int_equal(nsent, 0);
	if (vr_net_stats(n)->drop[why] != before + 1)
		fail_msg("expected a drop counted as %s", vr_net_drop_name(why));
}

static void fix_csum(uint8_t *f, size_t *len) { f[24] ^= 0x40; }
static void fix_truncated(uint8_t *f, size_t *len) { *len -= 1; }
static void fix_short(uint8_t *f, size_t *len) { *len = 14 + 19; }
static void fix_version(uint8_t *f, size_t *len) { f[14] = 0x65; }
static void fix_ihl_small(uint8_t *f, size_t *len) { f[14] = 0x44; }
static void fix_ihl_big(uint8_t *f, size_t *len) { f[14] = 0x4f; *len = 14 + 40; put16(f + 16, 40); }
static void fix_total_small(uint8_t *f, size_t *len) { put16(f + 16, 19); }
static void fix_mf(uint8_t *f, size_t *len) { put16(f + 20, 0x2000); }
static void fix_offset(uint8_t *f, size_t *len) { put16(f + 20, 0x0010); }
static void fix_not_ours(uint8_t *f, size_t *len) { put32(f + 30, 0x0a000003u); }
static void fix_martian(uint8_t *f, size_t *len) { put32(f + 26, 0x7f000001u); }
static void fix_bcast_src(uint8_t *f, size_t *len) { put32(f + 26, 0x0a0000ffu); }
static void fix_proto(uint8_t *f, size_t *len) { f[23] = 17; }
static void fix_eth_dst(uint8_t *f, size_t *len) { f[5] = 0x07; }
static void fix_eth_mcast(uint8_t *f, size_t *len) { memcpy(f, (uint8_t[6]){ 1, 0, 0x5e, 0, 0, 1 }, 6); }
static void fix_eth_short(uint8_t *f, size_t *len) { *len = 13; }
static void fix_eth_type(uint8_t *f, size_t *len) { put16(f + 12, 0x86dd); }
static void fix_icmp_short(uint8_t *f, size_t *len) { put16(f + 16, 27); *len = 14 + 27; }
static void fix_icmp_type(uint8_t *f, size_t *len)
{
	f[34] = 13;                          /* timestamp request */
	put16(f + 36, 0);
	put16(f + 36, rfc1071(0, f + 34, *len - 34));
}

static void test_bad_frames_dropped_and_counted(void **state)
{
	struct vr_net *n = *state;

	learn_peer(n, T0);
	expect_drop(n, fix_csum, 0, VR_NET_DROP_IP_CSUM);
	expect_drop(n, fix_truncated, 0, VR_NET_DROP_IP_TOTAL_LEN);
	expect_drop(n, fix_short, 0, VR_NET_DROP_IP_SHORT);
	expect_drop(n, fix_version, 1, VR_NET_DROP_IP_VERSION);
	expect_drop(n, fix_ihl_small, 0, VR_NET_DROP_IP_HDR_LEN);
	expect_drop(n, fix_ihl_big, 0, VR_NET_DROP_IP_HDR_LEN);
	expect_drop(n, fix_total_small, 1, VR_NET_DROP_IP_TOTAL_LEN);
	expect_drop(n, fix_mf, 1, VR_NET_DROP_IP_FRAG);
	expect_drop(n, fix_offset, 1, VR_NET_DROP_IP_FRAG);
	expect_drop(n, fix_not_ours, 1, VR_NET_DROP_IP_NOT_OURS);
	expect_drop(n, fix_martian, 1, VR_NET_DROP_IP_MARTIAN);
	expect_drop(n, fix_bcast_src, 1, VR_NET_DROP_IP_MARTIAN);
	expect_drop(n, fix_proto, 1, VR_NET_DROP_IP_PROTO);
	expect_drop(n, fix_eth_dst, 0, VR_NET_DROP_ETH_NOT_OURS);
	expect_drop(n, fix_eth_mcast, 0, VR_NET_DROP_ETH_NOT_OURS);
	expect_drop(n, fix_eth_short, 0, VR_NET_DROP_ETH_SHORT);
	expect_drop(n, fix_eth_type, 0, VR_NET_DROP_ETH_TYPE);
	expect_drop(n, fix_icmp_short, 1, VR_NET_DROP_ICMP_SHORT);
	expect_drop(n, fix_icmp_type, 0, VR_NET_DROP_ICMP_TYPE);
	/* The port's checksum verdict is trusted when it gives one. */
	uint8_t f[256];
	size_t len = ping_frame(f, 9, 16);
	f[24] ^= 0x40;
	struct vr_pkt *p = vr_net_pkt_alloc(n);
	memcpy(p->data, f, len);
	p->len = (uint16_t)len;
	p->flags = VR_PKT_RX_IP_CSUM_OK;
	vr_net_rx(n, &p, 1, T0);
	assert_int_equal(nsent, 1);
}

static void test_pending_flushed_on_arp_reply(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[256], req[256];
	size_t len = 0;

	/* The peer pings before we know its MAC: the reply waits for ARP. */
	for (uint16_t seq = 1; seq <= 6; seq++) {
		len = ping_frame(f, seq, 8);
		if (seq == 1)
			memcpy(req, f, len);
		inject(n, f, len, T0);
	}
	assert_int_equal(nsent, 1);                            /* one request only */
	uint8_t want[64];
	size_t wlen = arp_frame(want, 1, our_mac, OUR_IP, (const uint8_t[6]){ 0 }, PEER_IP, bcast);
	assert_memory_equal(sent[0].b, want, wlen);
	/* Four fit in the default queue, two did not. */
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ARP_PENDING_FULL], 2);
	assert_int_equal(vr_net_pkt_in_use(n), 4);

	len = arp_frame(f, 2, peer_mac, PEER_IP, our_mac, OUR_IP, our_mac);
	inject(n, f, len, T0 + 3);
	assert_int_equal(nsent, 5);
	check_echo_reply(&sent[1], req, 14 + 20 + 16);
	for (unsigned i = 2; i < 5; i++)
		assert_int_equal(get16(sent[i].b + 34 + 6), i);     /* in order */
}

static void test_arp_retries_then_gives_up(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[256];
	size_t len = ping_frame(f, 1, 8);

	inject(n, f, len, T0);
	assert_int_equal(nsent, 1);
	vr_net_poll(n, T0 + 999);                              /* (and the gratuitous ARP) */
	assert_int_equal(nsent, 2);
	vr_net_poll(n, T0 + 1000);
	assert_int_equal(nsent, 3);
	assert_int_equal(get32(sent[2].b + 14 + 24), PEER_IP);
	vr_net_poll(n, T0 + 1999);
	assert_int_equal(nsent, 3);
	vr_net_poll(n, T0 + 2000);
	assert_int_equal(nsent, 4);
	assert_int_equal(vr_net_stats(n)->arp_requests_tx, 4);   /* 3 tries + gratuitous */
	assert_int_equal(vr_net_pkt_in_use(n), 1);
	vr_net_poll(n, T0 + 3000);
	assert_int_equal(nsent, 4);
	assert_int_equal(vr_net_pkt_in_use(n), 0);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ARP_UNRESOLVED], 1);
}

static void test_arp_cache_expires(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[256];
	size_t len;

	learn_peer(n, T0);
	len = ping_frame(f, 1, 8);
	inject(n, f, len, T0 + 59999);
	assert_int_equal(nsent, 1);
	assert_int_equal(get16(sent[0].b + 12), 0x0800);        /* straight out */
	len = ping_frame(f, 2, 8);
	inject(n, f, len, T0 + 60000);
	assert_int_equal(nsent, 2);
	assert_int_equal(get16(sent[1].b + 12), 0x0806);        /* asks again */
	assert_memory_equal(sent[1].b, bcast, 6);
	len = arp_frame(f, 2, peer_mac, PEER_IP, our_mac, OUR_IP, our_mac);
	inject(n, f, len, T0 + 60001);
	assert_int_equal(nsent, 3);
	assert_int_equal(get16(sent[2].b + 34 + 6), 2);
}

static void test_arp_cache_bounded(void **state)
{
	struct vr_net_conf c = conf_default();
	c.arp_entries = 4;
	struct vr_net *n = net_make(c);
	uint8_t f[64];

	for (uint32_t i = 0; i < 10; i++) {
		uint8_t mac[6] = { 0x02, 0, 0, 0, 1, (uint8_t)i };
		size_t len = arp_frame(f, 1, mac, PEER_IP + 10 + i, (const uint8_t[6]){ 0 },
				       OUR_IP, bcast);
		inject(n, f, len, T0 + i);
	}
	assert_int_equal(vr_net_stats(n)->arp_cache_evicted, 6);
	/* The newest neighbour is still known: a packet to it goes straight out. */
	nsent = 0;
	struct vr_pkt *p = vr_net_pkt_alloc(n);
	p->len = 8;
	memset(p->data, 0, 8);
	assert_int_equal(vr_net_ip_output(n, p, PEER_IP + 19, 253, T0 + 20), 0);
	vr_net_flush(n, T0 + 20);
	assert_int_equal(nsent, 1);
	assert_int_equal(sent[0].b[5], 9);
	/* The oldest is gone: sending to it asks ARP. */
	p = vr_net_pkt_alloc(n);
	p->len = 8;
	memset(p->data, 0, 8);
	assert_int_equal(vr_net_ip_output(n, p, PEER_IP + 10, 253, T0 + 20), 0);
	vr_net_flush(n, T0 + 20);
	assert_int_equal(nsent, 2);
	assert_int_equal(get16(sent[1].b + 12), 0x0806);
	vr_net_free(n);
}

static void send_to(struct vr_net *n, uint32_t dst, uint64_t now)
{
	struct vr_pkt *p = vr_net_pkt_alloc(n);

	assert_non_null(p);
	p->len = 8;
	memset(p->data, 0, 8);
	vr_net_ip_output(n, p, dst, 253, now);
	vr_net_flush(n, now);
}

static void test_arp_requests_do_not_evict_neighbours(void **state)
{
	struct vr_net_conf c = conf_default();
	c.arp_entries = 4;
	struct vr_net *n = net_make(c);
	uint8_t f[64];

	inject(n, f, arp_frame(f, 2, gw_mac, GW_IP, our_mac, OUR_IP, our_mac), T0);
	/* Traffic to twenty unknown on-link hosts (as spoofed pings would cause). */
	for (uint32_t i = 0; i < 20; i++)
		send_to(n, PEER_IP + 20 + i, T0 + 1);
	assert_int_equal(vr_net_stats(n)->arp_cache_evicted, 17);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ARP_UNRESOLVED], 17);
	nsent = 0;
	send_to(n, FAR_IP, T0 + 2);
	assert_int_equal(nsent, 1);
	assert_memory_equal(sent[0].b, gw_mac, 6);
	vr_net_free(n);
}

static void test_arp_conflict_counted(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[64];
	size_t len = arp_frame(f, 1, peer_mac, OUR_IP, (const uint8_t[6]){ 0 }, OUR_IP, bcast);

	inject(n, f, len, T0);
	assert_int_equal(vr_net_stats(n)->arp_conflicts, 1);
	/* The claim is not learned: our own address never resolves to a neighbour. */
	assert_int_equal(nsent, 1);
	assert_int_equal(get16(sent[0].b + 14 + 6), 2);      /* we defend it */
	nsent = 0;
	send_to(n, PEER_IP, T0);
	assert_int_equal(get16(sent[0].b + 12), 0x0806);
	inject(n, f, arp_frame(f, 2, peer_mac, PEER_IP, our_mac, OUR_IP, our_mac), T0);
	assert_int_equal(nsent, 2);
}

static void test_ip_output_routes(void **state)
{
	struct vr_net *n = *state;
	struct vr_pkt *p = vr_net_pkt_alloc(n);

	/* Off-link goes to the gateway: ARP asks for the gateway, not the far host. */
	p->len = 100;
	memset(p->data, 0x5a, 100);
	assert_int_equal(vr_net_ip_output(n, p, FAR_IP, 6, T0), 0);
	vr_net_flush(n, T0);
	assert_int_equal(nsent, 1);
	assert_int_equal(get32(sent[0].b + 14 + 24), GW_IP);
	uint8_t f[64];
	size_t len = arp_frame(f, 2, gw_mac, GW_IP, our_mac, OUR_IP, our_mac);
	inject(n, f, len, T0);
	assert_int_equal(nsent, 2);
	assert_memory_equal(sent[1].b, gw_mac, 6);
	assert_int_equal(get32(sent[1].b + 14 + 16), FAR_IP);
	assert_int_equal(rfc1071(0, sent[1].b + 14, 20), 0);

	/* Over the MTU, to a broadcast: refused and counted. */
	p = vr_net_pkt_alloc(n);
	p->len = 1481;
	assert_int_equal(vr_net_ip_output(n, p, FAR_IP, 6, T0), -EMSGSIZE);
	p = vr_net_pkt_alloc(n);
	p->len = 10;
	assert_int_equal(vr_net_ip_output(n, p, 0xffffffffu, 6, T0), -EHOSTUNREACH);

	/* No gateway: off-link is unreachable. */
	struct vr_net_conf c = conf_default();
	c.gateway = 0;
	struct vr_net *m = net_make(c);
	p = vr_net_pkt_alloc(m);
	p->len = 10;
	assert_int_equal(vr_net_ip_output(m, p, FAR_IP, 6, T0), -EHOSTUNREACH);
	assert_int_equal(vr_net_stats(m)->drop[VR_NET_DROP_NO_ROUTE], 1);
	vr_net_free(m);
}

/* An ICMP "fragmentation needed" from the gateway quoting a TCP segment of ours. */
static size_t frag_needed(uint8_t *f, uint16_t mtu, uint32_t quoted_src)
{
	size_t o = eth(f, our_mac, gw_mac, 0x0800);
	o += ip_hdr(f + o, GW_IP, OUR_IP, 1, 8 + 28);
	uint8_t *icmp = f + o;
	memset(icmp, 0, 8);
	icmp[0] = 3;
	icmp[1] = 4;
	put16(icmp + 6, mtu);
	ip_hdr(icmp + 8, quoted_src, FAR_IP, 6, 1000);
	static const uint8_t tcp8[8] = { 0x00, 0x19, 0xc3, 0x50, 0x11, 0x22, 0x33, 0x44 };
	memcpy(icmp + 28, tcp8, 8);
	put16(icmp + 2, rfc1071(0, icmp, 36));
	return o + 36;
}

static void test_frag_needed_to_hook(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[128];

	inject(n, f, frag_needed(f, 1400, OUR_IP), T0);
	assert_int_equal(pmtu_calls, 1);
	assert_int_equal(pmtu_seen.mtu, 1400);
	assert_int_equal(pmtu_seen.dst, FAR_IP);
	assert_int_equal(pmtu_seen.proto, 6);
	assert_int_equal(pmtu_seen.l4_len, 8);
	assert_memory_equal(pmtu_l4, ((uint8_t[]){ 0x00, 0x19, 0xc3, 0x50, 0x11, 0x22, 0x33, 0x44 }), 8);
	/* Not about a datagram of ours, an MTU below 68, a quote cut short. */
	inject(n, f, frag_needed(f, 1400, PEER_IP), T0);
	inject(n, f, frag_needed(f, 67, OUR_IP), T0);
	size_t len = frag_needed(f, 1400, OUR_IP);
	put16(f + 16, (uint16_t)(get16(f + 16) - 1));
	put16(f + 24, 0);
	put16(f + 24, rfc1071(0, f + 14, 20));
	f[34 + 2] = 0;
	f[34 + 3] = 0;
	put16(f + 34 + 2, rfc1071(0, f + 34, 35));
	inject(n, f, len - 1, T0);
	assert_int_equal(pmtu_calls, 1);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_ICMP_BAD_PMTU], 3);
	assert_int_equal(nsent, 0);
}

static void test_tx_refused_is_freed(void **state)
{
	struct vr_net *n = *state;
	uint8_t f[256];

	learn_peer(n, T0);
	tx_accept = 0;
	inject(n, f, ping_frame(f, 1, 8), T0);
	assert_int_equal(nsent, 0);
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_TX_FULL], 1);
	assert_int_equal(vr_net_stats(n)->tx_frames, 1);   /* learn_peer's ARP reply only */
}

static void test_pool_exhaustion(void **state)
{
	struct vr_net *n = *state;
	struct vr_pkt *held[64];

	for (unsigned i = 0; i < 64; i++)
		assert_non_null(held[i] = vr_net_pkt_alloc(n));
	assert_null(vr_net_pkt_alloc(n));
	assert_int_equal(vr_net_stats(n)->drop[VR_NET_DROP_NO_PKT], 1);
	assert_int_equal(vr_net_pkt_in_use(n), 64);
	for (unsigned i = 0; i < 64; i++)
		vr_net_pkt_free(held[i]);
}

/*
 * A worker's log lines go to its thread's ring (vr_log_thread_async) and
 * the logging thread writes them out later: the double free's line must be
 * written out before abort() ends the process, or the one line that says
 * why is lost. The child runs on one cpu so that the logging thread,
 * woken by the line, does not get to write it first by running beside us.
 */
static void test_double_free_logged_before_abort(void **state)
{
	struct vr_net *n = *state;
	char dir[] = "/tmp/test_net.XXXXXX", path[64];
	int status;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/log", dir);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		cpu_set_t one;
		CPU_ZERO(&one);
		CPU_SET(sched_getcpu(), &one);
		sched_setaffinity(0, sizeof(one), &one);
		if (vr_log_open(path, VR_LOG_INFO) < 0)
			_exit(99);
		vr_log_thread_async();
		struct vr_pkt *p = vr_net_pkt_alloc(n);
		vr_net_pkt_free(p);
		vr_net_pkt_free(p);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	char text[4096] = "";
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	text[fread(text, 1, sizeof(text) - 1, f)] = 0;
	fclose(f);
	assert_non_null(strstr(text, " err event=net_pkt_double_free slot="));
	unlink(path);
	rmdir(dir);
}

static int ext_freed;
static void ext_free(void *arg, void *ext)
{
	assert_ptr_equal(ext, arg);
	ext_freed++;
}

static void test_wrapped_bytes_given_back(void **state)
{
	struct vr_net_conf c = conf_default();
	uint8_t owner[256], f[256];
	c.ext_free = ext_free;
	c.ext_arg = owner;
	struct vr_net *n = net_make(c);

	size_t len = arp_frame(f, 1, peer_mac, PEER_IP, (const uint8_t[6]){ 0 }, OUR_IP, bcast);
	memcpy(owner + 128, f, len);
	struct vr_pkt *p = vr_net_pkt_wrap(n, owner + 128, (uint16_t)len, 128, 128, owner);
	vr_net_rx(n, &p, 1, T0);
	assert_int_equal(ext_freed, 1);
	assert_int_equal(nsent, 1);
	assert_int_equal(vr_net_pkt_in_use(n), 0);
	vr_net_free(n);
}

static void no_tx(struct vr_net_conf *c) { c->tx = NULL; }
static void prefix_33(struct vr_net_conf *c) { c->prefix = 33; }
static void ip_multicast(struct vr_net_conf *c) { c->ip = 0xe0000001u; }
static void mac_multicast(struct vr_net_conf *c) { c->mac[0] = 1; }
static void mtu_jumbo(struct vr_net_conf *c) { c->mtu = 9000; }
static void pending_9(struct vr_net_conf *c) { c->arp_pending = 9; }

static void test_conf_errors_named(void **state)
{
	static const struct {
		void (*set)(struct vr_net_conf *c);
		const char *msg;
	} cases[] = {
		{ no_tx, "net: no tx callback" },
		{ prefix_33, "net: prefix length is not 1..32" },
		{ ip_multicast, "net: IP address is zero, loopback, multicast or reserved" },
		{ mac_multicast, "net: MAC address is zero or multicast" },
		{ mtu_jumbo, "net: MTU is outside 576..1970" },
		{ pending_9, "net: arp_pending is over 8" },
	};
	for (unsigned i = 0; i < VR_ARRAY_SIZE(cases); i++) {
		struct vr_net_conf c = conf_default();
		char err[128] = "";
		cases[i].set(&c);
		assert_null(vr_net_new(&c, err, sizeof(err)));
		assert_string_equal(err, cases[i].msg);
	}
	/* The largest MTU a pool buffer holds is accepted. */
	struct vr_net_conf c = conf_default();
	c.mtu = 1970;
	vr_net_free(net_make(c));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_csum_rfc1071),
		cmocka_unit_test_setup_teardown(test_arp_request_answered_exactly, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gratuitous_arp_at_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_answered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_frames_dropped_and_counted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pending_flushed_on_arp_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_arp_retries_then_gives_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_arp_cache_expires, setup, teardown),
		cmocka_unit_test_setup_teardown(test_arp_cache_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_arp_requests_do_not_evict_neighbours, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_arp_conflict_counted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ip_output_routes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_frag_needed_to_hook, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_refused_is_freed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pool_exhaustion, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrapped_bytes_given_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_double_free_logged_before_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conf_errors_named, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
