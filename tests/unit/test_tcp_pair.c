/*
 * test_tcp_pair.c - two stacks back to back, one connecting and one
 * listening, their frames passing through the seeded fault layer both ways
 * (loss, reordering, duplication, corruption): megabytes must arrive byte
 * for byte in both directions, the close must complete on both sides, and
 * every packet and connection must come back. Variants: without timestamps
 * and SACK, and with a reader so slow the window keeps shutting; and over
 * IPv6, where the first SYN waits for Neighbor Discovery to resolve the peer,
 * clean, lossy, and answered with SYN cookies.
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

#include "vmrelay/netfault.h"
#include "vmrelay/tcp.h"

#define A_IP 0x0a000001u
#define B_IP 0x0a000002u
#define PORT 2525
#define QMAX 4096

/* Frames in flight towards one side. */
struct wire {
	struct vr_pkt *q[QMAX];
	unsigned n;
};

/* One side: its stack, the fault layer on its tx, and its application's progress. */
struct side {
	struct vr_net *net;
	struct vr_tcp *tcp;
	struct vr_fault *fault;
	struct wire in;                /* what the other side sent it */
	struct vr_tcp_conn *c;
	uint64_t to_send, sent, to_recv, recvd;
	uint32_t seed_tx, seed_rx;     /* the byte streams, each a function of its offset */
	size_t read_max;               /* bytes read per chance; 0: all there is */
	int peer_closed, closed, error;
};

static struct side A, B;
static uint64_t now;
static int v6;                     /* the pair talks over IPv6 (2001:db8::1 and ::2) */

static uint8_t stream_byte(uint32_t seed, uint64_t off)
{
	uint64_t x = (off >> 3) * 0x9e3779b97f4a7c15ull + seed;

	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 32;
	return (uint8_t)(x >> (8 * (off & 7)));
}

static unsigned wire_put(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t t)
{
	struct wire *w = arg;
	unsigned take = VR_MIN(n, QMAX - w->n);

	memcpy(w->q + w->n, pkts, take * sizeof(*pkts));
	w->n += take;
	return take;
}

static void pump(struct side *s)
{
	while (s->c && s->sent < s->to_send) {
		uint8_t buf[4096];
		size_t n = (size_t)VR_MIN(s->to_send - s->sent, (uint64_t)sizeof(buf));
		for (size_t i = 0; i < n; i++)
			buf[i] = stream_byte(s->seed_tx, s->sent + i);
		ssize_t took = vr_tcp_send(s->c, buf, n);
		assert_true(took >= 0);
		s->sent += (uint64_t)took;
		if ((size_t)took < n)
			break;
	}
	if (s->c && s->sent == s->to_send && s->to_send)
		assert_int_equal(vr_tcp_shutdown(s->c), 0);
}

static void drain(struct side *s)
{
	size_t budget = s->read_max ? s->read_max : SIZE_MAX;

	while (s->c && budget) {
		const uint8_t *p;
		size_t n = VR_MIN(vr_tcp_peek(s->c, &p), budget);
		if (!n)
			break;
		for (size_t i = 0; i < n; i++)
			if (p[i] != stream_byte(s->seed_rx, s->recvd + i))
				fail_msg("byte %llu differs", (unsigned long long)(s->recvd + i));
		s->recvd += n;
		budget -= n;
		vr_tcp_consume(s->c, n);
	}
	assert_true(s->recvd <= s->to_recv);
	if (s->c && s->peer_closed && s->recvd == s->to_recv && s->sent == s->to_send) {
		vr_tcp_close(s->c);
		s->c = NULL;
		s->closed = 1;
	}
}

static void on_readable(struct vr_tcp_conn *c, void *u, uint64_t t) { drain(u); }
static void on_writable(struct vr_tcp_conn *c, void *u, uint64_t t) { pump(u); }
static void on_established(struct vr_tcp_conn *c, void *u, uint64_t t) { pump(u); }
static void on_peer_closed(struct vr_tcp_conn *c, void *u, uint64_t t)
{
	struct side *s = u;
	s->peer_closed = 1;
	drain(s);
}
static void on_error(struct vr_tcp_conn *c, void *u, int err, uint64_t t)
{
	struct side *s = u;
	s->error = err;
	s->c = NULL;
}

static const struct vr_tcp_cb cbs = {
	.established = on_established, .readable = on_readable, .writable = on_writable,
	.peer_closed = on_peer_closed, .error = on_error,
};

static int on_accept(void *arg, struct vr_tcp_conn *c, uint64_t t)
{
	B.c = c;
	vr_tcp_set_user(c, &B);
	pump(&B);
	return 0;
}

static void side_make(struct side *s, struct side *peer, uint32_t ip, uint8_t mac_last,
		      const struct vr_fault_conf *fc, const struct vr_tcp_conf *tc)
{
	char err[128];
	struct vr_net_conf c = {
		.mac = { 0x02, 0, 0, 0, 0, mac_last }, .ip = ip, .prefix = 24, .pkts = 8192,
		.tx = vr_fault_burst,
	};

	if (v6) {
		const uint8_t ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = mac_last };
		memcpy(c.ip6, ip6, 16);
		c.prefix6 = 64;
	}
	s->fault = vr_fault_new(fc, wire_put, &peer->in, err, sizeof(err));
	assert_non_null(s->fault);
	c.tx_arg = s->fault;
	s->net = vr_net_new(&c, err, sizeof(err));
	assert_non_null(s->net);
	s->tcp = vr_tcp_new(s->net, tc, now, err, sizeof(err));
	assert_non_null(s->tcp);
}

static void deliver(struct side *s)
{
	unsigned n = s->in.n;

	s->in.n = 0;
	for (unsigned i = 0; i < n; i += VR_NET_BURST)
		vr_net_rx(s->net, s->in.q + i, VR_MIN(VR_NET_BURST, n - i), now);
}

/*
 * Runs a transfer of a_bytes from A to B and b_bytes back, both closing when
 * done, through faults fc on both directions; returns the virtual ms taken.
 */
static uint64_t transfer(const struct vr_fault_conf *fc, const struct vr_tcp_conf *tc,
			 uint64_t a_bytes, uint64_t b_bytes, size_t b_read_max)
{
	struct vr_fault_conf fb = *fc;

	memset(&A, 0, sizeof(A));
	memset(&B, 0, sizeof(B));
	now = 1000000;
	fb.seed = fc->seed + 1;
	side_make(&A, &B, A_IP, 1, fc, tc);
	side_make(&B, &A, B_IP, 2, &fb, tc);
	A.to_send = B.to_recv = a_bytes;
	B.to_send = A.to_recv = b_bytes;
	A.seed_tx = B.seed_rx = 11;
	B.seed_tx = A.seed_rx = 22;
	B.read_max = b_read_max;
	assert_int_equal(vr_tcp_listen(B.tcp, PORT, &cbs, on_accept, NULL), 0);
	int err;
	const uint8_t b_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };
	A.c = v6 ? vr_tcp_connect6(A.tcp, b_ip6, PORT, &cbs, &A, now, &err)
		 : vr_tcp_connect(A.tcp, B_IP, PORT, &cbs, &A, now, &err);
	assert_non_null(A.c);
	struct vr_tcp_info info;
	vr_tcp_conn_info(A.c, &info);
	assert_int_equal(info.v6, v6);
	/* Ethernet 1500 less IPv4's 40 bytes of headers, or IPv6's 60. */
	assert_int_equal(info.mss, v6 ? 1440 : 1460);
	if (v6)
		assert_memory_equal(info.raddr6, b_ip6, 16);

	uint64_t start = now, limit = now + 900 * 1000;
	while (now < limit && !(A.closed && B.closed && !vr_tcp_conn_count(A.tcp) &&
				!vr_tcp_conn_count(B.tcp))) {
		now++;
		vr_fault_poll(A.fault, now);
		vr_fault_poll(B.fault, now);
		deliver(&A);
		deliver(&B);
		pump(&A);
		pump(&B);
		drain(&A);
		drain(&B);
		vr_tcp_poll(A.tcp, now);
		vr_tcp_poll(B.tcp, now);
		assert_int_equal(A.error, 0);
		assert_int_equal(B.error, 0);
	}
	uint64_t took = now - start;
	assert_true(now < limit);
	assert_int_equal(B.recvd, a_bytes);
	assert_int_equal(A.recvd, b_bytes);
	/* The side that closed first holds the TIME_WAIT entry. */
	assert_int_equal(vr_tcp_timewait_count(A.tcp) + vr_tcp_timewait_count(B.tcp), 1);
	return took;
}

static void pair_free(void)
{
	struct side *s[2] = { &A, &B };

	for (unsigned i = 0; i < 2; i++) {
		vr_tcp_free(s[i]->tcp);
		vr_fault_free(s[i]->fault);
	}
	/* Frames still on the wires belong to either pool: free them before the pools go. */
	for (unsigned i = 0; i < 2; i++) {
		for (unsigned k = 0; k < s[i]->in.n; k++)
			vr_net_pkt_free(s[i]->in.q[k]);
		s[i]->in.n = 0;
	}
	for (unsigned i = 0; i < 2; i++) {
		assert_int_equal(vr_net_pkt_in_use(s[i]->net), 0);
		vr_net_free(s[i]->net);
	}
}

static void report(const char *what, uint64_t ms)
{
	const struct vr_tcp_stats *a = vr_tcp_stats(A.tcp), *b = vr_tcp_stats(B.tcp);

	printf("# %s: %llu ms virtual; A: %llu segs out, %llu retransmits (%llu fast, %llu RTO); "
	       "B: %llu segs out, %llu retransmits, %llu ooo, %llu SACK blocks, %llu probes\n",
	       what, (unsigned long long)ms, (unsigned long long)a->segs_out,
	       (unsigned long long)a->retransmits, (unsigned long long)a->fast_retransmits,
	       (unsigned long long)a->rto_expired, (unsigned long long)b->segs_out,
	       (unsigned long long)b->retransmits, (unsigned long long)b->ooo_segs,
	       (unsigned long long)b->sack_blocks_sent,
	       (unsigned long long)b->zero_window_probes + a->zero_window_probes);
}

static void test_clean_path(void **state)
{
	struct vr_fault_conf fc = { .seed = 1 };
	struct vr_tcp_conf tc = { 0 };

	uint64_t ms = transfer(&fc, &tc, 4u << 20, 256u << 10, 0);
	report("clean", ms);
	assert_int_equal(vr_tcp_stats(A.tcp)->retransmits, 0);
	assert_int_equal(vr_tcp_stats(B.tcp)->retransmits, 0);
	pair_free();
}

static void test_lossy_path(void **state)
{
	struct vr_fault_conf fc = { .drop_pct = 3, .reorder_pct = 1, .dup_pct = 1,
				    .corrupt_pct = 1, .reorder_ms = 2, .seed = 42 };
	struct vr_tcp_conf tc = { 0 };

	uint64_t ms = transfer(&fc, &tc, 4u << 20, 512u << 10, 0);
	report("3% loss, 1% reorder/dup/corrupt", ms);
	assert_true(vr_tcp_stats(A.tcp)->fast_retransmits > 0);
	assert_true(vr_tcp_stats(B.tcp)->ooo_segs > 0);
	assert_true(vr_tcp_stats(B.tcp)->drop[VR_TCP_DROP_CSUM] > 0);
	pair_free();
}

static void test_lossy_path_bare(void **state)
{
	struct vr_fault_conf fc = { .drop_pct = 3, .reorder_pct = 1, .dup_pct = 1,
				    .corrupt_pct = 1, .reorder_ms = 2, .seed = 7 };
	struct vr_tcp_conf tc = { .no_timestamps = 1, .no_sack = 1, .no_wscale = 1 };

	uint64_t ms = transfer(&fc, &tc, 2u << 20, 128u << 10, 0);
	report("lossy, no options", ms);
	pair_free();
}

static void test_slow_reader(void **state)
{
	struct vr_fault_conf fc = { .drop_pct = 1, .seed = 3 };
	struct vr_tcp_conf tc = { .rcvbuf = 4096, .sndbuf = 8192 };

	/* B reads 100 bytes a millisecond: A's window keeps shutting and reopening. */
	uint64_t ms = transfer(&fc, &tc, 256u << 10, 1000, 100);
	report("slow reader", ms);
	assert_true(vr_tcp_stats(B.tcp)->window_updates > 0);
	pair_free();
}

static void test_v6_clean_path(void **state)
{
	struct vr_fault_conf fc = { .seed = 1 };
	struct vr_tcp_conf tc = { 0 };

	v6 = 1;
	uint64_t ms = transfer(&fc, &tc, 1u << 20, 64u << 10, 0);
	v6 = 0;
	report("IPv6 clean", ms);
	assert_int_equal(vr_tcp_stats(A.tcp)->retransmits, 0);
	/* A asked for B by Neighbor Discovery and learned it from the answer. */
	assert_true(vr_net_stats(A.net)->nd_solicits_tx >= 1);
	assert_true(vr_net_stats(B.net)->nd_solicits_rx >= 1);
	assert_true(vr_net_stats(A.net)->nd_adverts_rx >= 1);
	assert_int_equal(vr_net_stats(A.net)->drop[VR_NET_DROP_ARP_UNRESOLVED], 0);
	pair_free();
}

static void test_v6_lossy_path(void **state)
{
	struct vr_fault_conf fc = { .drop_pct = 3, .reorder_pct = 1, .dup_pct = 1,
				    .corrupt_pct = 1, .reorder_ms = 2, .seed = 42 };
	struct vr_tcp_conf tc = { 0 };

	v6 = 1;
	uint64_t ms = transfer(&fc, &tc, 2u << 20, 256u << 10, 0);
	v6 = 0;
	report("IPv6, 3% loss, 1% reorder/dup/corrupt", ms);
	assert_true(vr_tcp_stats(A.tcp)->fast_retransmits > 0);
	/* A corrupted segment fails the IPv6 pseudo-header checksum. */
	assert_true(vr_tcp_stats(B.tcp)->drop[VR_TCP_DROP_CSUM] > 0);
	pair_free();
}

static void test_v6_cookies(void **state)
{
	struct vr_fault_conf fc = { .seed = 5 };
	struct vr_tcp_conf tc = { .always_cookies = 1 };

	v6 = 1;
	uint64_t ms = transfer(&fc, &tc, 256u << 10, 1000, 0);
	v6 = 0;
	report("IPv6 SYN cookie", ms);
	assert_int_equal(vr_tcp_stats(B.tcp)->cookies_sent, 1);
	assert_int_equal(vr_tcp_stats(B.tcp)->cookies_accepted, 1);
	assert_int_equal(vr_tcp_stats(B.tcp)->drop[VR_TCP_DROP_BAD_COOKIE], 0);
	pair_free();
}

/*
 * Packet too big over IPv6 (RFC 8201), judged as IPv4's fragmentation-needed
 * is: believed only for a sequence number in flight, and never taking the
 * MSS below IPv6's 1280-byte minimum MTU's 1220.
 */
static void test_v6_too_big(void **state)
{
	struct vr_fault_conf fc = { .seed = 1 };
	struct vr_tcp_conf tc = { 0 };
	const uint8_t a_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
	const uint8_t b_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };
	struct vr_tcp_info info;
	int err;

	memset(&A, 0, sizeof(A));
	memset(&B, 0, sizeof(B));
	now = 1000000;
	v6 = 1;
	side_make(&A, &B, A_IP, 1, &fc, &tc);
	side_make(&B, &A, B_IP, 2, &fc, &tc);
	v6 = 0;
	B.to_recv = 1u << 20;
	assert_int_equal(vr_tcp_listen(B.tcp, PORT, &cbs, on_accept, NULL), 0);
	A.c = vr_tcp_connect6(A.tcp, b_ip6, PORT, &cbs, &A, now, &err);
	assert_non_null(A.c);
	for (int i = 0; i < 50 && !B.c; i++) {
		now++;
		deliver(&A);
		deliver(&B);
		vr_tcp_poll(A.tcp, now);
		vr_tcp_poll(B.tcp, now);
	}
	assert_non_null(B.c);
	deliver(&A);
	/* A's first data segment, as it would come back quoted. */
	static uint8_t data[4000];
	assert_int_equal(vr_tcp_send(A.c, data, sizeof(data)), (ssize_t)sizeof(data));
	vr_tcp_poll(A.tcp, now);
	assert_true(B.in.n >= 2);
	const uint8_t *f = B.in.q[0]->data;
	assert_int_equal(f[14 + 6], 6);
	assert_int_equal((f[14 + 4] << 8 | f[14 + 5]) - 20 - 12, 1440 - 12);  /* timestamps */
	uint8_t l4[8];
	memcpy(l4, f + 14 + 40, 8);
	struct vr_net_pmtu m = { .v6 = 1, .src6 = a_ip6, .dst6 = b_ip6, .proto = 6,
				 .mtu = 1400, .l4 = l4, .l4_len = 8 };
	uint32_t seq = (uint32_t)l4[4] << 24 | l4[5] << 16 | l4[6] << 8 | l4[7];
	seq += 100000;                                 /* never sent */
	for (int i = 0; i < 4; i++)
		l4[4 + i] = (uint8_t)(seq >> (24 - 8 * i));
	vr_tcp_pmtu(A.tcp, &m, now);
	assert_int_equal(vr_tcp_stats(A.tcp)->drop[VR_TCP_DROP_PMTU], 1);
	vr_tcp_conn_info(A.c, &info);
	assert_int_equal(info.mss, 1440);
	memcpy(l4, f + 14 + 40, 8);
	vr_tcp_pmtu(A.tcp, &m, now);
	assert_int_equal(vr_tcp_stats(A.tcp)->pmtu_updates, 1);
	vr_tcp_conn_info(A.c, &info);
	assert_int_equal(info.mss, 1400 - 60);
	m.mtu = 600;                                   /* below IPv6's minimum */
	vr_tcp_pmtu(A.tcp, &m, now);
	vr_tcp_conn_info(A.c, &info);
	assert_int_equal(info.mss, 1220);
	vr_tcp_abort(A.c);
	A.c = NULL;
	vr_tcp_abort(B.c);
	B.c = NULL;
	vr_net_flush(A.net, now);                      /* the resets, onto the wires */
	vr_net_flush(B.net, now);
	pair_free();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean_path),
		cmocka_unit_test(test_lossy_path),
		cmocka_unit_test(test_lossy_path_bare),
		cmocka_unit_test(test_slow_reader),
		cmocka_unit_test(test_v6_clean_path),
		cmocka_unit_test(test_v6_lossy_path),
		cmocka_unit_test(test_v6_cookies),
		cmocka_unit_test(test_v6_too_big),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
