/*
 * test_tcp_syn.c - passive open under pressure (test_tcp_harness.c): the
 * SYN queue's bound, SYN cookies past it (RFC 4987) with and without
 * timestamps (MSS, window scale and SACK-permitted recovered from the
 * cookie), forged and stale cookies refused, a lost SYN-ACK sent again and
 * a half-open connection given up; and the API's refusals: listeners,
 * configuration, sends on closed connections.
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

static void test_syn_queue_overflow_cookies(void **state)
{
	tconf.syn_queue = 2;
	fixture_remake();
	for (unsigned i = 0; i < 2; i++) {
		pport = (uint16_t)(PPORT + i);
		peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
		assert_int_equal(one()->flags, F_SYN | F_ACK);
	}
	assert_int_equal(vr_tcp_conn_count(tcp), 2);
	pport = PPORT + 2;
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, &(struct opts){ .mss = 1300, .ws = -1 });
	struct seg *c = one();
	assert_int_equal(c->flags, F_SYN | F_ACK);
	assert_int_equal(vr_tcp_conn_count(tcp), 2);       /* nothing kept for it */
	assert_int_equal(st()->cookies_sent, 1);
	assert_int_equal(st()->syn_queue_full, 1);
	uint32_t cookie = c->seq;
	/* A forged cookie: a RST, nothing made. */
	peer_send(PORT, PISN + 1, cookie + 2, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(one()->flags, F_RST);
	assert_int_equal(st()->drop[VR_TCP_DROP_BAD_COOKIE], 1);
	/* The real one, with data riding on it. */
	peer_send(PORT, PISN + 1, cookie + 1, F_ACK, 65535, "EHLO", 4, NULL);
	assert_int_equal(accepted, 1);
	assert_int_equal(st()->cookies_accepted, 1);
	assert_int_equal(vr_tcp_readable(conn), 4);
	struct vr_tcp_info info;
	vr_tcp_conn_info(conn, &info);
	assert_string_equal(info.state, "ESTABLISHED");
	assert_int_equal(info.mss, 1300);          /* the table's entry at or below 1300 */
	assert_false(info.wscale || info.sack || info.timestamps);
	assert_int_equal(vr_tcp_send(conn, "250", 3), 3);
	tick(0);
	struct seg *d = one();
	assert_int_equal(d->seq, cookie + 1);
	assert_int_equal(d->ack, PISN + 5);
}

static void test_cookie_timestamps_carry_options(void **state)
{
	tconf.always_cookies = 1;
	fixture_remake();
	struct opts o = { .mss = 1460, .ws = 9, .sack_ok = 1, .ts = 1, .tsval = 777 };
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, &o);
	struct seg c = *one();
	assert_true(c.o.ts && c.o.sack_ok);
	assert_int_equal(c.o.ws, 1);
	assert_int_equal(c.o.tsecr, 777);
	assert_int_equal(c.o.tsval & 0xff, 7 | 1 << 3 | 9 << 4);   /* MSS index, SACK, wscale */
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
	/* The options byte changed by the peer: refused. */
	struct opts a = { .mss = -1, .ws = -1, .ts = 1, .tsval = 778, .tsecr = c.o.tsval ^ 0x30 };
	peer_send(PORT, PISN + 1, c.seq + 1, F_ACK, 100, NULL, 0, &a);
	assert_int_equal(one()->flags, F_RST);
	a.tsecr = c.o.tsval;
	peer_send(PORT, PISN + 1, c.seq + 1, F_ACK, 100, NULL, 0, &a);
	assert_int_equal(accepted, 1);
	struct vr_tcp_info info;
	vr_tcp_conn_info(conn, &info);
	assert_true(info.wscale && info.sack && info.timestamps);
	assert_int_equal(info.mss, 1460);
	assert_int_equal(info.snd_wnd, 100 << 9);
}

static void test_syn_flood_legit_connects(void **state)
{
	/* 20000 spoofed SYNs: the queue holds its 128, the rest get cookies, nothing grows. */
	for (unsigned i = 0; i < 20000; i++) {
		pport = (uint16_t)(1024 + i);
		peer_send(PORT, PISN + i, 0, F_SYN, 65535, NULL, 0, NULL);
		nout = 0;
		if (i % 1000 == 0)
			tick(1);
	}
	assert_int_equal(vr_tcp_conn_count(tcp), 128);
	assert_int_equal(st()->cookies_sent, 20000 - 128);
	assert_int_equal(vr_net_pkt_in_use(net), 0);
	/* A real client in the middle of it completes through its cookie. */
	pport = PPORT;
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	uint32_t cookie = one()->seq;
	peer_send(PORT, PISN + 1, cookie + 1, F_ACK, 65535, "EHLO", 4, NULL);
	assert_int_equal(accepted, 1);
	assert_int_equal(vr_tcp_readable(conn), 4);
	/* The spoofed half-open ones are given up on; the queue empties. */
	for (unsigned i = 0; i < 70; i++) {
		tick(1000);
		nout = 0;
	}
	assert_int_equal(vr_tcp_conn_count(tcp), 1);
}

static void test_cookie_expires(void **state)
{
	tconf.always_cookies = 1;
	fixture_remake();
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	uint32_t cookie = one()->seq;
	/* Two 8 s periods later the cookie's counter is stale. */
	now += 16001;
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);   /* keeps cookies on */
	nout = 0;
	peer_send(PORT, PISN + 1, cookie + 1, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(one()->flags, F_RST);
	assert_int_equal(accepted, 0);
	assert_int_equal(st()->drop[VR_TCP_DROP_BAD_COOKIE], 1);
}

static void test_cookie_ack_without_flood(void **state)
{
	/* No cookie went out recently: an unknown ACK is not even checked, just reset. */
	peer_send(PORT, PISN + 1, 12345, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(one()->flags, F_RST);
	assert_int_equal(st()->drop[VR_TCP_DROP_BAD_COOKIE], 0);
}

static void test_synack_retransmitted_and_given_up(void **state)
{
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	uint32_t s = one()->seq;
	/* The peer's SYN again (our SYN-ACK lost): the same SYN-ACK at once. */
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	struct seg *a = one();
	assert_int_equal(a->seq, s);
	assert_int_equal(a->flags, F_SYN | F_ACK);
	/* Five more, 1 s apart and doubling, then the half-open connection is dropped. */
	for (uint32_t gap = 1000; gap <= 16000; gap *= 2) {
		tick(gap);
		assert_int_equal(one()->seq, s);
	}
	tick(32000);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
	assert_int_equal(accepted, 0);
	assert_int_equal(errors, 0);
}

static void test_handshake_rtt_after_retransmission(void **state)
{
	struct opts o = { .mss = -1, .ws = -1, .ts = 1, .tsval = 10 };
	struct vr_tcp_info info;

	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, &o);
	nout = 0;
	tick(1000);
	struct seg sa = *one();                    /* the SYN-ACK again, RTO now 2 s */
	now += 5;
	/* Its echoed timestamp times the retransmission: 5 ms, so the RTO falls to the floor. */
	struct opts a = { .mss = -1, .ws = -1, .ts = 1, .tsval = 11, .tsecr = sa.o.tsval };
	peer_send(PORT, PISN + 1, sa.seq + 1, F_ACK, 65535, NULL, 0, &a);
	assert_non_null(conn);
	vr_tcp_conn_info(conn, &info);
	assert_int_equal(info.srtt_ms, 5);
	assert_int_equal(info.rto_ms, 200);
}

static void test_handshake_no_rtt_after_retransmission(void **state)
{
	struct vr_tcp_info info;

	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	nout = 0;
	tick(1000);
	uint32_t s = one()->seq;
	now += 5;
	/* Without timestamps the ACK could answer either SYN-ACK (Karn): no sample, RTO kept. */
	peer_send(PORT, PISN + 1, s + 1, F_ACK, 65535, NULL, 0, NULL);
	vr_tcp_conn_info(conn, &info);
	assert_int_equal(info.srtt_ms, 0);
	assert_int_equal(info.rto_ms, 2000);
}

static int accept_any(void *arg, struct vr_tcp_conn *c, uint64_t t) { return 0; }

static void test_listen_api(void **state)
{
	assert_int_equal(vr_tcp_listen(tcp, PORT, &cbs, NULL, NULL), -EINVAL);
	assert_int_equal(vr_tcp_listen(tcp, PORT, &cbs, accept_any, NULL), -EADDRINUSE);
	for (uint16_t p = 1; p < VR_TCP_LISTEN_MAX; p++)
		assert_int_equal(vr_tcp_listen(tcp, (uint16_t)(1000 + p), &cbs, accept_any, NULL), 0);
	assert_int_equal(vr_tcp_listen(tcp, 999, &cbs, accept_any, NULL), -ENOSPC);
	assert_int_equal(vr_tcp_unlisten(tcp, 9999), -ENOENT);
	/* A handshake half done when the port closes is reset, not accepted. */
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	uint32_t s = one()->seq;
	assert_int_equal(vr_tcp_unlisten(tcp, PORT), 0);
	assert_int_equal(vr_tcp_listen(tcp, 2000, &cbs, accept_any, NULL), 0);  /* its slot */
	peer_send(PORT, PISN + 1, s + 1, F_ACK, 65535, NULL, 0, NULL);
	tick(0);
	assert_int_equal(one()->flags, F_RST);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
	pport = PPORT + 1;
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	assert_int_equal(one()->flags, F_RST | F_ACK);
}

static void test_conf_refused(void **state)
{
	static const struct { struct vr_tcp_conf c; const char *why; } bad[] = {
		{ { .sndbuf = 1000 }, "sndbuf or rcvbuf" },
		{ { .rcvbuf = 32u << 20 }, "sndbuf or rcvbuf" },
		{ { .rto_min_ms = 2000 }, "RTO bounds" },
		{ { .delack_ms = 600 }, "delack_ms" },
		{ { .max_retries = 31 }, "max_retries" },
		{ { .max_conns = 1u << 23 }, "max_conns" },
	};
	char err[128];

	for (unsigned i = 0; i < VR_ARRAY_SIZE(bad); i++) {
		err[0] = 0;
		assert_null(vr_tcp_new(net, &bad[i].c, now, err, sizeof(err)));
		assert_non_null(strstr(err, bad[i].why));
	}
}

static void test_calls_on_dead_states(void **state)
{
	struct seg syn;
	struct vr_tcp_conn *c = connect_peer(&syn);

	assert_int_equal(vr_tcp_shutdown(c), -ENOTCONN);
	vr_tcp_close(c);                           /* SYN_SENT: just gone */
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
	int err = 0;
	assert_null(vr_tcp_connect(tcp, 0, 25, &cbs, NULL, now, &err));
	assert_int_equal(err, -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_syn_queue_overflow_cookies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cookie_timestamps_carry_options, setup, teardown),
		cmocka_unit_test_setup_teardown(test_syn_flood_legit_connects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cookie_expires, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cookie_ack_without_flood, setup, teardown),
		cmocka_unit_test_setup_teardown(test_synack_retransmitted_and_given_up, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_handshake_rtt_after_retransmission, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_handshake_no_rtt_after_retransmission, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_listen_api, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conf_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_calls_on_dead_states, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
