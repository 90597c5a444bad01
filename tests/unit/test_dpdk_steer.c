/*
 * test_dpdk_steer.c - which worker owns a frame (dpdk-app/steer.c): the
 * software Toeplitz hash against the RSS specification's verification
 * vectors (so it agrees with a NIC's), and for random flows over 2 to 4
 * workers an ICMP fragmentation-needed or ICMPv6 packet-too-big quoting a
 * segment we sent goes to the worker the flow's own frames go to, whatever
 * the port's hash of the ICMP packet; what any worker answers stays put.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "steer.h"

/* The RSS specification's key and verification vectors (also DPDK's test_thash.c). */
static const uint8_t key[40] = {
	0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
	0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
	0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
};

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)), put16(p + 2, (uint16_t)v); }

/* Ethernet + IPv4 + the first 8 bytes of a TCP header: what steering reads. */
static unsigned tcp4(uint8_t *f, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport)
{
	memset(f, 0, 14 + 20 + 20);
	put16(f + 12, 0x0800);
	uint8_t *ip = f + 14;
	ip[0] = 0x45, ip[6] = 0x40, ip[9] = 6;
	put16(ip + 2, 40);
	put32(ip + 12, src);
	put32(ip + 16, dst);
	put16(ip + 20, sport);
	put16(ip + 22, dport);
	return 14 + 20 + 20;
}

/* A frag-needed from router to the quoted packet's source, quoting q (IPv4, qlen bytes). */
static unsigned frag_needed(uint8_t *f, uint32_t router, const uint8_t *q, unsigned qlen)
{
	memset(f, 0, 14 + 28);
	put16(f + 12, 0x0800);
	uint8_t *ip = f + 14;
	ip[0] = 0x45, ip[9] = 1;
	put32(ip + 12, router);
	memcpy(ip + 16, q + 12, 4);
	ip[20] = 3, ip[21] = 4;
	put16(ip + 26, 1400);
	memcpy(ip + 28, q, qlen);
	return 14 + 28 + qlen;
}

static unsigned tcp6(uint8_t *f, const uint8_t *src, const uint8_t *dst, uint16_t sport,
		     uint16_t dport)
{
	memset(f, 0, 14 + 40 + 20);
	put16(f + 12, 0x86dd);
	uint8_t *ip = f + 14;
	ip[0] = 0x60, ip[6] = 6, ip[7] = 64;
	put16(ip + 4, 20);
	memcpy(ip + 8, src, 16);
	memcpy(ip + 24, dst, 16);
	put16(ip + 40, sport);
	put16(ip + 42, dport);
	return 14 + 40 + 20;
}

static unsigned too_big(uint8_t *f, const uint8_t *router, const uint8_t *q, unsigned qlen)
{
	memset(f, 0, 14 + 48);
	put16(f + 12, 0x86dd);
	uint8_t *ip = f + 14;
	ip[0] = 0x60, ip[6] = 58, ip[7] = 64;
	memcpy(ip + 8, router, 16);
	memcpy(ip + 24, q + 8, 16);
	ip[40] = 2;
	put32(ip + 44, 1280);
	memcpy(ip + 48, q, qlen);
	return 14 + 48 + qlen;
}

static unsigned owner(const struct vr_dpdk_steer *s, const uint8_t *f, unsigned len,
		      const uint32_t *rss, bool *share)
{
	return vr_dpdk_frame_owner(s, f, len, rss, 7, share);
}

static void test_rss_spec_vectors(void **state)
{
	/* reta_size and n_workers of 2^32 - 1 leave the hash itself. */
	struct vr_dpdk_steer s = { .n_workers = UINT32_MAX, .reta_size = UINT32_MAX, .rss_key = key };
	uint8_t f[128];
	bool share;

	/* 66.9.149.187:2794 -> 161.142.100.80:1766 */
	assert_int_equal(owner(&s, f, tcp4(f, 0x420995bbu, 0xa18e6450u, 2794, 1766), NULL, &share),
			 0x51ccc178u);
	static const uint8_t src6[16] = { 0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x1f, 0xff,
					  [15] = 7 };
	static const uint8_t dst6[16] = { 0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x00, 0x03,
					  [15] = 1 };
	assert_int_equal(owner(&s, f, tcp6(f, src6, dst6, 2794, 1766), NULL, &share), 0x40207d3du);
	/* the port's own hash, when it gives one, is taken as it is */
	uint32_t rss = 0x12345678;
	assert_int_equal(owner(&s, f, tcp4(f, 1, 2, 3, 4), &rss, &share), 0x12345678u);
}

static void test_quoted_flow_steered_to_owner(void **state)
{
	uint8_t f[256], q[128], g[256];
	unsigned seen[4][4] = { { 0 } };
	bool share;

	srandom(11);
	for (unsigned n = 2; n <= 4; n++) {
		struct vr_dpdk_steer s = { .n_workers = n, .reta_size = 128, .rss_key = key };
		for (unsigned i = 0; i < 400; i++) {
			uint32_t us = 0x0a000001u, peer = (uint32_t)random(), router = (uint32_t)random();
			uint16_t pport = (uint16_t)random(), rss = (uint16_t)random();
			unsigned want = owner(&s, f, tcp4(f, peer, us, pport, 25), NULL, &share);
			assert_true(want < n);
			seen[n - 1][want]++;
			/* our segment, quoted in full and as RFC 792's header + 8 bytes */
			tcp4(q, us, peer, 25, pport);
			uint32_t h = rss;
			assert_int_equal(owner(&s, g, frag_needed(g, router, q + 14, 40), &h, &share),
					 want);
			assert_int_equal(owner(&s, g, frag_needed(g, router, q + 14, 28), NULL, &share),
					 want);

			uint8_t us6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 }, peer6[16], r6[16];
			for (unsigned b = 0; b < 16; b++)
				peer6[b] = (uint8_t)random(), r6[b] = (uint8_t)random();
			want = owner(&s, f, tcp6(f, peer6, us6, pport, 25), NULL, &share);
			tcp6(q, us6, peer6, 25, pport);
			assert_int_equal(owner(&s, g, too_big(g, r6, q + 14, 48), &h, &share), want);
			assert_false(share);
		}
		for (unsigned w = 0; w < n; w++)
			assert_true(seen[n - 1][w] > 400 / n / 2);
	}
}

static void test_rest_stays_put(void **state)
{
	struct vr_dpdk_steer s = { .n_workers = 4, .reta_size = 128, .rss_key = key };
	uint8_t f[256], q[128];
	bool share;

	tcp4(q, 0x0a000001u, 0x0a000002u, 25, 40000);
	/* a quote too short for the ports, of UDP, or another ICMP type */
	assert_int_equal(owner(&s, f, frag_needed(f, 0x0a0000feu, q + 14, 20), NULL, &share), 7);
	q[14 + 9] = 17;
	assert_int_equal(owner(&s, f, frag_needed(f, 0x0a0000feu, q + 14, 28), NULL, &share), 7);
	q[14 + 9] = 6;
	unsigned len = frag_needed(f, 0x0a0000feu, q + 14, 28);
	f[14 + 20] = 8;                           /* an echo request */
	assert_int_equal(owner(&s, f, len, NULL, &share), 7);
	/* a frame cut short inside the ICMP header */
	assert_int_equal(owner(&s, f, 14 + 20 + 4, NULL, &share), 7);
	/* an ARP reply and a neighbour advertisement: ours and everyone's */
	memset(f, 0, 64);
	put16(f + 12, 0x0806);
	put16(f + 14 + 6, 2);
	assert_int_equal(owner(&s, f, 60, NULL, &share), 7);
	assert_true(share);
	uint8_t a[16] = { 0xfe, 0x80, [15] = 1 }, b[16] = { 0xfe, 0x80, [15] = 2 };
	len = tcp6(f, a, b, 0, 0);
	f[14 + 6] = 58;
	f[14 + 40] = 136;
	assert_int_equal(owner(&s, f, len, NULL, &share), 7);
	assert_true(share);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rss_spec_vectors),
		cmocka_unit_test(test_quoted_flow_steered_to_owner),
		cmocka_unit_test(test_rest_stays_put),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
