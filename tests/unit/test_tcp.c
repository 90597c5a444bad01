/*
 * test_tcp.c - TCP in the packetdrill style (test_tcp_harness.c): the
 * handshakes and their options, ISNs, RSTs for closed ports, malformed
 * segments, data both ways with delayed ACKs, a reader's ACK every second
 * segment at any MSS, more than a segment's worth ACKed at once, out-of-order reassembly with
 * SACK blocks, active open, refusal and SYN retries.
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

static void test_handshake_passive(void **state)
{
	struct opts o = { .mss = 1460, .ws = 7, .sack_ok = 1, .ts = 1, .tsval = 5000 };

	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, &o);
	struct seg *sa = one();
	assert_int_equal(sa->flags, F_SYN | F_ACK);
	assert_int_equal(sa->ack, PISN + 1);
	assert_int_equal(sa->o.mss, 1460);
	assert_int_equal(sa->o.ws, 1);             /* 64 KiB is one bit past 16 */
	assert_true(sa->o.sack_ok);
	assert_true(sa->o.ts);
	assert_int_equal(sa->o.tsecr, 5000);
	assert_int_equal(vr_tcp_conn_count(tcp), 1);
	assert_int_equal(accepted, 0);
	struct opts a = { .mss = -1, .ws = -1, .ts = 1, .tsval = 5001, .tsecr = sa->o.tsval };
	peer_send(PORT, PISN + 1, sa->seq + 1, F_ACK, 512, NULL, 0, &a);
	assert_int_equal(accepted, 1);
	struct vr_tcp_info info;
	vr_tcp_conn_info(conn, &info);
	assert_string_equal(info.state, "ESTABLISHED");
	assert_int_equal(info.snd_wnd, 512 << 7);
	/* Our window scaled by 1, theirs by 7 (RFC 7323 §2.3). */
	peer_send(PORT, PISN + 1, sa->seq + 1, F_ACK, 512, "hi", 2, &a);
	tick(40);
	assert_int_equal(one()->win, 32767);
	assert_true(info.timestamps && info.sack && info.wscale);
	assert_int_equal(info.rport, PPORT);
	assert_int_equal(st()->passive_opens, 1);
}

static void test_isn_keyed(void **state)
{
	/* RFC 6528: the same tuple later gets a later ISN; another key, another ISN. */
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	uint32_t a = one()->seq;
	vr_tcp_free(tcp);
	vr_net_free(net);
	tconf.key[0] = 9;
	fixture_make();
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	uint32_t b = one()->seq;
	assert_int_not_equal(a, b);
	vr_tcp_free(tcp);
	vr_net_free(net);
	tconf.key[0] = 1;
	fixture_make();
	now += 1000;
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	uint32_t c = one()->seq;
	assert_int_equal(c - a, 1000 * 250);
}

static void test_no_listener_rst(void **state)
{
	peer_send(26, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	struct seg *r = one();
	assert_int_equal(r->flags, F_RST | F_ACK);
	assert_int_equal(r->seq, 0);
	assert_int_equal(r->ack, PISN + 1);
	peer_send(26, PISN, 777, F_ACK, 65535, "x", 1, NULL);
	r = one();
	assert_int_equal(r->flags, F_RST);
	assert_int_equal(r->seq, 777);
	peer_send(26, PISN, 777, F_RST, 65535, NULL, 0, NULL);
	assert_int_equal(nout, 0);                 /* never a RST for a RST */
	assert_int_equal(st()->drop[VR_TCP_DROP_NO_LISTENER], 3);
}

static void test_bad_segments(void **state)
{
	open_plain();
	corrupt = 1;
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, "abc", 3, NULL);
	corrupt = 0;
	assert_int_equal(st()->drop[VR_TCP_DROP_CSUM], 1);
	assert_int_equal(vr_tcp_readable(conn), 0);
	/* A port that verified the checksum itself says so, and is believed. */
	corrupt = 1;
	rx_flags = VR_PKT_RX_L4_CSUM_OK;
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, "abc", 3, NULL);
	corrupt = 0;
	rx_flags = 0;
	assert_int_equal(vr_tcp_readable(conn), 3);
	assert_int_equal(st()->drop[VR_TCP_DROP_CSUM], 1);
	peer_send(PORT, PISN + 1, iss + 1, F_SYN | F_FIN, 65535, NULL, 0, NULL);
	assert_int_equal(st()->drop[VR_TCP_DROP_BAD_FLAGS], 1);
	/* An option running past the header: dropped before it is looked at. */
	struct opts o = { .mss = -1, .ws = -1, .truncated = 1 };
	peer_send(PORT, PISN + 4, iss + 1, F_ACK, 65535, "def", 3, &o);
	assert_int_equal(st()->drop[VR_TCP_DROP_BAD_OPT], 1);
	assert_int_equal(vr_tcp_readable(conn), 3);
	assert_non_null(conn);
}

static void test_drop_names(void **state)
{
	for (unsigned d = 0; d < VR_TCP_DROP_MAX; d++) {
		assert_non_null(vr_tcp_drop_name(d));
		for (unsigned e = 0; e < d; e++)
			assert_string_not_equal(vr_tcp_drop_name(d), vr_tcp_drop_name(e));
	}
	assert_string_equal(vr_tcp_drop_name(VR_TCP_DROP_MAX), "unknown");
}

static void test_data_and_delayed_ack(void **state)
{
	char buf[64];

	open_plain();
	peer_send(PORT, PISN + 1, iss + 1, F_ACK | F_PSH, 65535, "EHLO x\r\n", 8, NULL);
	assert_int_equal(readable, 1);
	assert_int_equal(vr_tcp_readable(conn), 8);
	assert_int_equal(nout, 0);                 /* the ACK waits */
	tick(39);
	assert_int_equal(nout, 0);
	tick(1);
	struct seg *a = one();
	assert_int_equal(a->flags, F_ACK);
	assert_int_equal(a->ack, PISN + 9);
	assert_int_equal(a->seq, iss + 1);
	assert_int_equal(st()->delayed_acks, 1);
	assert_int_equal(vr_tcp_read(conn, buf, sizeof(buf)), 8);
	assert_memory_equal(buf, "EHLO x\r\n", 8);

	/* A reply carries the ACK. */
	peer_send(PORT, PISN + 9, iss + 1, F_ACK | F_PSH, 65535, "NOOP\r\n", 6, NULL);
	assert_int_equal(vr_tcp_send(conn, "250 ok\r\n", 8), 8);
	tick(1);
	a = one();
	assert_int_equal(a->flags, F_ACK | F_PSH);
	assert_int_equal(a->ack, PISN + 15);
	assert_int_equal(a->len, 8);
	assert_memory_equal(a->data, "250 ok\r\n", 8);
	tick(100);
	assert_int_equal(nout, 0);                 /* no ACK owed any more */
}

static void test_every_second_segment_acked(void **state)
{
	static char blk[1460];

	open_passive(&(struct opts){ .mss = 1460, .ws = -1 }, 65535);
	memset(blk, 'a', sizeof(blk));
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, blk, 1460, NULL);
	assert_int_equal(nout, 0);
	peer_send(PORT, PISN + 1 + 1460, iss + 1, F_ACK, 65535, blk, 1460, NULL);
	struct seg *a = one();
	assert_int_equal(a->ack, PISN + 1 + 2920);
}

/*
 * A bulk receiver that reads each segment as it comes ACKs every second
 * one (RFC 1122 4.2.3.2), whatever the payload's relation to the MSS and to
 * the window scale's rounding: the window the read opens is not worth an
 * update of its own while the peer was told of more than half the buffer
 * (RFC 9293 3.8.6.2.2; test_tcp_rtx's zero window has the update it needs).
 * 1428 bytes is IPv6's payload at MTU 1500 beside timestamps, 1448 IPv4's.
 */
static void test_reader_acks_every_second_segment(void **state)
{
	static const struct { uint16_t mss, len; uint32_t rcvbuf; } cases[] = {
		{ 1460, 1448, 0 }, { 1440, 1428, 0 }, { 1460, 1460, 0 }, { 1220, 1208, 0 },
		{ 1460, 1448, 256 * 1024 }, { 1440, 1428, 256 * 1024 }, { 1440, 1428, 100000 },
	};
	static char blk[1460], buf[2048];

	memset(blk, 'a', sizeof(blk));
	for (unsigned k = 0; k < VR_ARRAY_SIZE(cases); k++) {
		tconf.rcvbuf = cases[k].rcvbuf;
		fixture_remake();
		open_passive(&(struct opts){ .mss = cases[k].mss, .ws = 7 }, 65535);
		uint32_t seq = PISN + 1;
		unsigned acks = 0;
		for (unsigned i = 0; i < 16; i++) {
			peer_send(PORT, seq, iss + 1, F_ACK, 65535, blk, cases[k].len, NULL);
			seq += cases[k].len;
			assert_int_equal(vr_tcp_read(conn, buf, sizeof(buf)), cases[k].len);
			tick(0);
			for (unsigned j = 0; j < nout; j++)
				assert_int_equal(out[j].ack, seq);
			acks += nout;
			nout = 0;
		}
		assert_int_equal(acks, 8);
		/* A buffer over twice the SYN's unscaled 64 KB opens past it once. */
		assert_int_equal(st()->window_updates, cases[k].rcvbuf / 2 > 0xffff);
	}
}

/*
 * More than a full segment unacknowledged is ACKed at once, as Linux does,
 * even when the second segment is not full: a message's tail of a full
 * segment and a short one would otherwise wait for the reply behind it
 * (the relay's 250 after fsync) while the sender, two segments out, sends
 * a tail loss probe after two RTTs. A short one alone still waits.
 */
static void test_full_and_short_segment_acked_at_once(void **state)
{
	static char blk[1460];

	open_passive(&(struct opts){ .mss = 1460, .ws = -1 }, 65535);
	memset(blk, 'a', sizeof(blk));
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, blk, 1460, NULL);
	assert_int_equal(nout, 0);
	peer_send(PORT, PISN + 1461, iss + 1, F_ACK | F_PSH, 65535, ".\r\n", 3, NULL);
	assert_int_equal(one()->ack, PISN + 1464);
	peer_send(PORT, PISN + 1464, iss + 1, F_ACK | F_PSH, 65535, "QUIT\r\n", 6, NULL);
	assert_int_equal(nout, 0);
	tick(40);
	assert_int_equal(one()->ack, PISN + 1470);
	assert_int_equal(st()->delayed_acks, 1);
}

static void test_ooo_reassembly_sack(void **state)
{
	char buf[32];

	open_passive(&(struct opts){ .mss = 1460, .ws = -1, .sack_ok = 1 }, 65535);
	peer_send(PORT, PISN + 1 + 10, iss + 1, F_ACK, 65535, "KLMNO", 5, NULL);
	struct seg *a = one();                     /* a duplicate ACK at once, with SACK */
	assert_int_equal(a->ack, PISN + 1);
	assert_int_equal(a->o.nsack, 1);
	assert_int_equal(a->o.sack[0][0], PISN + 11);
	assert_int_equal(a->o.sack[0][1], PISN + 16);
	peer_send(PORT, PISN + 1 + 20, iss + 1, F_ACK, 65535, "UVWXY", 5, NULL);
	a = one();
	assert_int_equal(a->o.nsack, 2);
	assert_int_equal(a->o.sack[0][0], PISN + 21);      /* the latest first */
	assert_int_equal(a->o.sack[1][0], PISN + 11);
	assert_int_equal(vr_tcp_readable(conn), 0);
	assert_int_equal(readable, 0);
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, "ABCDEFGHIJ", 10, NULL);
	a = one();                                 /* the hole filled: ACKed at once */
	assert_int_equal(a->ack, PISN + 16);
	assert_int_equal(a->o.nsack, 1);
	assert_int_equal(vr_tcp_readable(conn), 15);
	peer_send(PORT, PISN + 1 + 12, iss + 1, F_ACK, 65535, "MNOPQRST", 8, NULL);
	a = one();
	assert_int_equal(a->ack, PISN + 26);
	assert_int_equal(a->o.nsack, 0);
	assert_int_equal(vr_tcp_read(conn, buf, sizeof(buf)), 25);
	assert_memory_equal(buf, "ABCDEFGHIJKLMNOPQRSTUVWXY", 25);
	assert_int_equal(st()->ooo_segs, 2);
}

static void test_ooo_bounded(void **state)
{
	open_plain();
	/* Five disjoint islands: the fifth has no slot and is dropped, not stored. */
	for (unsigned i = 0; i < 5; i++)
		peer_send(PORT, PISN + 1 + 10 + 10 * i, iss + 1, F_ACK, 65535, "x", 1, NULL);
	assert_int_equal(st()->drop[VR_TCP_DROP_OOO_FULL], 1);
	assert_int_equal(st()->ooo_segs, 4);
}

static void test_active_open(void **state)
{
	struct seg syn;
	struct vr_tcp_conn *c = connect_peer(&syn);

	assert_int_equal(syn.flags, F_SYN);
	assert_int_equal(syn.dport, 2525);
	assert_true(syn.sport >= 49152);
	assert_int_equal(syn.o.mss, 1460);
	assert_true(syn.o.ts && syn.o.sack_ok && syn.o.ws == 1);
	struct vr_tcp_info info;
	vr_tcp_conn_info(c, &info);
	assert_string_equal(info.state, "SYN_SENT");
	assert_int_equal(vr_tcp_send(c, "HELO", 4), 4);   /* queued until established */
	now += 3;
	struct opts o = { .mss = 1400, .ws = 2, .sack_ok = 1, .ts = 1, .tsval = 77,
			  .tsecr = syn.o.tsval };
	peer_send(syn.sport, 5000, syn.seq + 1, F_SYN | F_ACK, 1000, NULL, 0, &o);
	assert_int_equal(established, 1);
	struct seg *a = one();                     /* the ACK carries the queued bytes */
	assert_int_equal(a->flags & (F_ACK | F_SYN), F_ACK);
	assert_int_equal(a->ack, 5001);
	assert_int_equal(a->seq, syn.seq + 1);
	assert_int_equal(a->len, 4);
	assert_int_equal(a->o.tsecr, 77);
	vr_tcp_conn_info(c, &info);
	assert_string_equal(info.state, "ESTABLISHED");
	assert_int_equal(info.mss, 1400);
	assert_int_equal(info.snd_wnd, 1000);      /* a SYN's window is not scaled */
	assert_int_equal(info.srtt_ms, 3);
	vr_tcp_abort(c);
	tick(0);
	struct seg *r = one();
	assert_int_equal(r->flags, F_RST);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
}

static void test_active_refused(void **state)
{
	struct seg syn;
	connect_peer(&syn);
	/* A RST whose ACK is not for our SYN is ignored; the right one refuses. */
	peer_send(syn.sport, 0, syn.seq + 5, F_RST | F_ACK, 0, NULL, 0, NULL);
	assert_int_equal(errors, 0);
	peer_send(syn.sport, 0, syn.seq + 1, F_RST | F_ACK, 0, NULL, 0, NULL);
	assert_int_equal(errors, 1);
	assert_int_equal(last_err, -ECONNREFUSED);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
}

static void test_syn_retries(void **state)
{
	struct seg syn;
	connect_peer(&syn);
	/* 1 s, then doubling (RFC 6298 §5.5); five retries, then -ETIMEDOUT. */
	uint32_t gap = 1000;
	for (unsigned i = 0; i < 5; i++) {
		tick(gap - 1);
		assert_int_equal(nout, 0);
		tick(1);
		struct seg *s = one();
		assert_int_equal(s->flags, F_SYN);
		assert_int_equal(s->seq, syn.seq);
		gap *= 2;
	}
	tick(gap);
	assert_int_equal(errors, 1);
	assert_int_equal(last_err, -ETIMEDOUT);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_handshake_passive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_isn_keyed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_listener_rst, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_segments, setup, teardown),
		cmocka_unit_test(test_drop_names),
		cmocka_unit_test_setup_teardown(test_data_and_delayed_ack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_second_segment_acked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_acks_every_second_segment, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_full_and_short_segment_acked_at_once, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_ooo_reassembly_sack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ooo_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_active_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_active_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_syn_retries, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
