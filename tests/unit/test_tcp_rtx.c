/*
 * test_tcp_rtx.c - TCP's sending side under trouble (test_tcp_harness.c):
 * RTO and its exponential backoff until the connection is given up, the
 * RTT estimate from timestamps, fast retransmit and NewReno's partial ACKs,
 * the peer's zero window and our probes, our own window shutting when the
 * owner does not read and reopening when it does, a send buffer that fills
 * up (writable), and path-MTU messages judged by their quoted sequence.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "vmrelay/tcp.h"

#include "test_tcp_harness.h"

static const struct opts mss1000 = { .mss = 1000, .ws = -1 };
static char blk[20000];

static void test_rto_backoff_and_give_up(void **state)
{
	open_passive(&mss1000, 65535);
	assert_int_equal(vr_tcp_send(conn, blk, 100), 100);
	tick(0);
	struct seg *s = one();
	assert_int_equal(s->seq, iss + 1);
	/* The handshake measured ~0 ms: the RTO sits at its 200 ms floor, then doubles. */
	uint32_t gap = 200;
	for (unsigned i = 0; i < 8; i++) {
		tick(gap - 1);
		assert_int_equal(nout, 0);
		tick(1);
		s = one();
		assert_int_equal(s->seq, iss + 1);
		assert_int_equal(s->len, 100);
		gap *= 2;
	}
	assert_int_equal(st()->rto_expired, 8);
	assert_int_equal(errors, 0);
	tick(gap);
	s = one();                                 /* given up: the peer is told */
	assert_int_equal(s->flags, F_RST);
	assert_int_equal(errors, 1);
	assert_int_equal(last_err, -ETIMEDOUT);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
	assert_int_equal(st()->timeouts, 1);
}

static void test_rtt_from_timestamps(void **state)
{
	struct opts o = { .mss = 1000, .ws = -1, .ts = 1, .tsval = 100 };
	struct vr_tcp_info info;

	open_passive(&o, 65535);
	for (unsigned i = 0; i < 30; i++) {
		assert_int_equal(vr_tcp_send(conn, blk, 10), 10);
		tick(0);
		struct seg *s = one();
		now += 300;                            /* a slow path: 300 ms round trips */
		struct opts a = { .mss = -1, .ws = -1, .ts = 1, .tsval = 200 + i,
				  .tsecr = s->o.tsval };
		peer_send(PORT, PISN + 1, s->seq + 10, F_ACK, 65535, NULL, 0, &a);
	}
	vr_tcp_conn_info(conn, &info);
	assert_in_range(info.srtt_ms, 280, 300);
	assert_in_range(info.rto_ms, 300, 400);
}

static void test_fast_retransmit_newreno(void **state)
{
	open_passive(&mss1000, 65535);
	assert_int_equal(vr_tcp_send(conn, blk, 10000), 10000);
	tick(0);
	assert_int_equal(nout, 10);                /* initial window: 10 segments (RFC 6928) */
	nout = 0;
	uint32_t a1 = iss + 1 + 1000;
	peer_send(PORT, PISN + 1, a1, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(nout, 0);                 /* nothing more to send */
	peer_send(PORT, PISN + 1, a1, F_ACK, 65535, NULL, 0, NULL);
	peer_send(PORT, PISN + 1, a1, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(nout, 0);
	peer_send(PORT, PISN + 1, a1, F_ACK, 65535, NULL, 0, NULL);
	struct seg *s = one();                     /* the third duplicate */
	assert_int_equal(s->seq, a1);
	assert_int_equal(s->len, 1000);
	assert_int_equal(st()->fast_retransmits, 1);
	assert_int_equal(st()->dup_acks_in, 3);
	/* A partial ACK (RFC 6582): the next hole goes at once, no new three duplicates. */
	peer_send(PORT, PISN + 1, iss + 1 + 4000, F_ACK, 65535, NULL, 0, NULL);
	s = one();
	assert_int_equal(s->seq, iss + 1 + 4000);
	/* The full ACK ends recovery; nothing is left to send. */
	peer_send(PORT, PISN + 1, iss + 1 + 10000, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(nout, 0);
	assert_int_equal(st()->retransmits, 2);
	struct vr_tcp_info info;
	vr_tcp_conn_info(conn, &info);
	assert_int_equal(info.unacked, 0);
	assert_in_range(info.cwnd, 2000, 6000);    /* ssthresh: half the flight */
	tick(1000);
	assert_int_equal(nout, 0);                 /* no RTO left armed */
}

static void test_limited_transmit(void **state)
{
	open_passive(&mss1000, 65535);
	assert_int_equal(vr_tcp_send(conn, blk, 14000), 14000);
	tick(0);
	assert_int_equal(nout, 10);
	nout = 0;
	/* The first segment was lost: each of the first two duplicates lets one new one out. */
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(one()->seq, iss + 1 + 10000);
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(one()->seq, iss + 1 + 11000);
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, NULL, 0, NULL);
	struct seg *s = one();
	assert_int_equal(s->seq, iss + 1);         /* the third: fast retransmit */
	assert_int_equal(st()->fast_retransmits, 1);
	assert_int_equal(st()->rto_expired, 0);
}

static const struct opts sack1000 = { .mss = 1000, .ws = -1, .sack_ok = 1 };

/* A duplicate ACK at the first hole, SACKing n ranges given relative to iss. */
static void dupack_sack(unsigned n, const uint32_t (*blocks)[2])
{
	struct opts o = { .mss = -1, .ws = -1, .nsack = n };

	for (unsigned i = 0; i < n; i++) {
		o.sack[i][0] = iss + blocks[i][0];
		o.sack[i][1] = iss + blocks[i][1];
	}
	peer_send(PORT, PISN + 1, iss + 1001, F_ACK, 65535, NULL, 0, &o);
}

static void test_sack_recovery(void **state)
{
	open_passive(&sack1000, 65535);
	assert_int_equal(vr_tcp_send(conn, blk, 10000), 10000);
	tick(0);
	assert_int_equal(nout, 10);
	nout = 0;
	/* Segments 2 and 5 (of 1..10) are lost; the peer SACKs around them. */
	peer_send(PORT, PISN + 1, iss + 1001, F_ACK, 65535, NULL, 0, NULL);
	dupack_sack(1, (const uint32_t[][2]){ { 2001, 3001 } });
	dupack_sack(1, (const uint32_t[][2]){ { 2001, 4001 } });
	nout = 0;                                  /* (limited transmit had nothing new) */
	dupack_sack(2, (const uint32_t[][2]){ { 5001, 6001 }, { 2001, 4001 } });
	struct seg *s = one();                     /* the third: the first hole */
	assert_int_equal(s->seq, iss + 1001);
	/* The next duplicate fills the next hole SACK shows, not another RTT later (RFC 6675). */
	dupack_sack(2, (const uint32_t[][2]){ { 5001, 7001 }, { 2001, 4001 } });
	s = one();
	assert_int_equal(s->seq, iss + 4001);
	assert_int_equal(s->len, 1000);
	/* Nothing else is known lost: later duplicates only inflate the window. */
	dupack_sack(2, (const uint32_t[][2]){ { 5001, 8001 }, { 2001, 4001 } });
	assert_int_equal(nout, 0);
	peer_send(PORT, PISN + 1, iss + 10001, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(st()->retransmits, 2);
	assert_int_equal(st()->rto_expired, 0);
}

static void test_tail_loss_probe(void **state)
{
	open_passive(&sack1000, 65535);
	assert_int_equal(vr_tcp_send(conn, blk, 5000), 5000);
	tick(0);
	assert_int_equal(nout, 5);
	nout = 0;
	peer_send(PORT, PISN + 1, iss + 2001, F_ACK, 65535, NULL, 0, NULL);
	/* Segments 3 to 5 are lost: no duplicate will come. Two RTTs (10 ms at least) later: */
	tick(9);
	assert_int_equal(nout, 0);
	tick(1);
	struct seg *s = one();                     /* the last segment again */
	assert_int_equal(s->seq, iss + 4001);
	assert_int_equal(st()->tlp_probes, 1);
	/* Its SACK shows the hole below it: recovery starts at once, no third duplicate. */
	struct opts o = { .mss = -1, .ws = -1, .nsack = 1, .sack = { { iss + 4001, iss + 5001 } } };
	peer_send(PORT, PISN + 1, iss + 2001, F_ACK, 65535, NULL, 0, &o);
	s = one();
	assert_int_equal(s->seq, iss + 2001);
	assert_int_equal(st()->tlp_recoveries, 1);
	assert_int_equal(st()->rto_expired, 0);
}

static void test_no_probe_for_one_segment(void **state)
{
	open_passive(&sack1000, 65535);
	assert_int_equal(vr_tcp_send(conn, blk, 500), 500);
	tick(0);
	assert_int_equal(nout, 1);
	nout = 0;
	tick(199);
	assert_int_equal(nout, 0);                 /* the probe would wait 210 ms: the RTO first */
	tick(1);
	assert_int_equal(one()->seq, iss + 1);
	assert_int_equal(st()->tlp_probes, 0);
}

/*
 * RFC 8985 §7.2: with one segment out the probe allows for the peer's
 * delayed ACK (2 RTTs, 10 ms at least, plus 200 ms), so it only comes
 * before an RTO longer than that (here a 1 s floor); with more out it
 * comes after 2 RTTs (test_tail_loss_probe).
 */
static void test_one_segment_probe_waits_for_delayed_ack(void **state)
{
	tconf.rto_min_ms = 1000;
	fixture_remake();
	open_passive(&sack1000, 65535);
	assert_int_equal(vr_tcp_send(conn, blk, 500), 500);
	tick(0);
	assert_int_equal(nout, 1);
	nout = 0;
	tick(209);
	assert_int_equal(nout, 0);
	tick(1);
	struct seg *s = one();
	assert_int_equal(s->seq, iss + 1);
	assert_int_equal(s->len, 500);
	assert_int_equal(st()->tlp_probes, 1);
	assert_int_equal(st()->rto_expired, 0);
}

static void test_peer_zero_window_probes(void **state)
{
	open_passive(&mss1000, 0);
	assert_int_equal(vr_tcp_send(conn, "DATA", 4), 4);
	tick(0);
	assert_int_equal(nout, 0);                 /* the window is shut */
	tick(200);
	struct seg *s = one();                     /* a probe: one byte past the window */
	assert_int_equal(s->seq, iss + 1);
	assert_int_equal(s->len, 1);
	assert_int_equal(s->data[0], 'D');
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 0, NULL, 0, NULL);   /* still shut */
	tick(399);
	assert_int_equal(nout, 0);
	tick(1);
	s = one();                                 /* backed off to 400 ms */
	assert_int_equal(s->len, 1);
	/* The answers keep the probing alive far past max_retries. */
	for (unsigned i = 0; i < 12; i++) {
		peer_send(PORT, PISN + 1, iss + 1, F_ACK, 0, NULL, 0, NULL);
		tick(60000);
		nout = 0;
	}
	assert_int_equal(errors, 0);
	assert_true(st()->zero_window_probes >= 14);
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 1000, NULL, 0, NULL);  /* open */
	s = one();
	assert_int_equal(s->seq, iss + 1);
	assert_int_equal(s->len, 4);
	assert_memory_equal(s->data, "DATA", 4);
}

static void test_own_window_shuts_and_reopens(void **state)
{
	char buf[4096];

	tconf.rcvbuf = 4096;
	fixture_remake();
	open_passive(&mss1000, 65535);
	for (unsigned i = 0; i < 4; i++)
		peer_send(PORT, PISN + 1 + 1000 * i, iss + 1, F_ACK, 65535, blk, 1000, NULL);
	nout = 0;
	peer_send(PORT, PISN + 4001, iss + 1, F_ACK, 65535, blk, 96, NULL);
	tick(40);
	struct seg *s = one();
	assert_int_equal(s->ack, PISN + 4097);
	assert_int_equal(s->win, 0);
	/* More is not taken; a probe gets the same answer. */
	peer_send(PORT, PISN + 4097, iss + 1, F_ACK, 65535, "x", 1, NULL);
	s = one();
	assert_int_equal(s->ack, PISN + 4097);
	assert_int_equal(s->win, 0);
	assert_int_equal(vr_tcp_readable(conn), 4096);
	/* Reading a little does not reopen it (receiver SWS avoidance) ... */
	assert_int_equal(vr_tcp_read(conn, buf, 100), 100);
	tick(0);
	assert_int_equal(nout, 0);
	/* ... half the buffer does, at once. */
	assert_int_equal(vr_tcp_read(conn, buf, 2000), 2000);
	tick(0);
	s = one();
	assert_int_equal(s->win, 2100);
	assert_int_equal(st()->window_updates, 1);
}

static void test_send_buffer_full_writable(void **state)
{
	open_passive(&mss1000, 65535);
	assert_int_equal(vr_tcp_sendable(conn), 16384);
	assert_int_equal(vr_tcp_send(conn, blk, 20000), 16384);
	assert_int_equal(vr_tcp_send(conn, blk, 1), 0);
	tick(0);
	assert_int_equal(nout, 10);
	nout = 0;
	assert_int_equal(writable, 0);
	peer_send(PORT, PISN + 1, iss + 1 + 2000, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(writable, 1);
	assert_int_equal(vr_tcp_sendable(conn), 2000);
}

/* ICMP fragmentation-needed quoting one of our segments with sequence seq. */
static void icmp_frag_needed(uint16_t mtu, uint32_t seq)
{
	uint8_t f[128] = { 0 };
	uint8_t *ip = f + 14, *ic = ip + 20, *q = ic + 8;

	memcpy(f, (const uint8_t[6]){ 0x02, 0, 0, 0, 0, 0x01 }, 6);
	memcpy(f + 6, (const uint8_t[6]){ 0x02, 0, 0, 0, 0, 0x02 }, 6);
	put16(f + 12, 0x0800);
	q[0] = 0x45;
	put16(q + 2, 1500);
	q[8] = 64;
	q[9] = 6;
	put32(q + 12, OUR_IP);
	put32(q + 16, PEER_IP);
	put16(q + 10, rfc1071(0, q, 20));
	put16(q + 20, PORT);
	put16(q + 22, PPORT);
	put32(q + 24, seq);
	ic[0] = 3;
	ic[1] = 4;
	put16(ic + 6, mtu);
	put16(ic + 2, rfc1071(0, ic, 8 + 28));
	ip[0] = 0x45;
	put16(ip + 2, 20 + 8 + 28);
	ip[8] = 64;
	ip[9] = 1;
	put32(ip + 12, PEER_IP);
	put32(ip + 16, OUR_IP);
	put16(ip + 10, rfc1071(0, ip, 20));
	inject(f, 14 + 20 + 8 + 28);
}

static void test_pmtu(void **state)
{
	open_passive(&(struct opts){ .mss = 1460, .ws = -1 }, 65535);
	assert_int_equal(vr_tcp_send(conn, blk, 3000), 3000);
	tick(0);
	assert_int_equal(nout, 3);
	assert_int_equal(out[0].len, 1460);
	nout = 0;
	/* A quoted sequence we never sent is not believed (RFC 5927 §4.1). */
	icmp_frag_needed(1000, iss + 5000);
	assert_int_equal(st()->drop[VR_TCP_DROP_PMTU], 1);
	icmp_frag_needed(1000, iss + 1);
	assert_int_equal(st()->pmtu_updates, 1);
	tick(0);
	assert_int_equal(nout, 4);                 /* everything again, at 960 bytes */
	assert_int_equal(out[0].seq, iss + 1);
	assert_int_equal(out[0].len, 960);
	struct vr_tcp_info info;
	vr_tcp_conn_info(conn, &info);
	assert_int_equal(info.mss, 960);
	/* Never below the floor, however small the MTU it claims. */
	nout = 0;
	icmp_frag_needed(68, iss + 1);
	vr_tcp_conn_info(conn, &info);
	assert_int_equal(info.mss, 552 - 40);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rto_backoff_and_give_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rtt_from_timestamps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fast_retransmit_newreno, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limited_transmit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sack_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tail_loss_probe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_probe_for_one_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_segment_probe_waits_for_delayed_ack, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_peer_zero_window_probes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_own_window_shuts_and_reopens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_buffer_full_writable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pmtu, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
