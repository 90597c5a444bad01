/*
 * test_tcp_close.c - the end of connections (test_tcp_harness.c): closes
 * started by either side or both at once, TIME_WAIT (its compact entry,
 * the FIN answered again, RST ignored, expiry, reuse by a newer SYN per RFC
 * 6191), a RST in every state judged per RFC 5961 (exact: reset; in window:
 * challenge ACK; outside: ignored), challenge ACKs for SYNs and ACKs of the
 * distant past, PAWS, and what close and abort do to unread data, orphans
 * and refused connections.
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

static const char *state_of(struct vr_tcp_conn *c)
{
	static struct vr_tcp_info info;

	vr_tcp_conn_info(c, &info);
	return info.state;
}

static void test_peer_closes_first(void **state)
{
	open_plain();
	peer_send(PORT, PISN + 1, iss + 1, F_ACK | F_FIN, 65535, "QUIT\r\n", 6, NULL);
	assert_int_equal(peer_closed, 1);
	assert_int_equal(readable, 1);
	struct seg *a = one();                     /* a FIN is ACKed at once */
	assert_int_equal(a->ack, PISN + 8);
	assert_string_equal(state_of(conn), "CLOSE_WAIT");
	assert_int_equal(vr_tcp_readable(conn), 6);
	vr_tcp_consume(conn, 6);
	assert_int_equal(vr_tcp_send(conn, "221 bye\r\n", 9), 9);
	vr_tcp_close(conn);
	tick(0);
	struct seg *f = one();                     /* the reply and the FIN together */
	assert_int_equal(f->flags, F_ACK | F_PSH | F_FIN);
	assert_int_equal(f->len, 9);
	peer_send(PORT, PISN + 8, iss + 1 + 10, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
	assert_int_equal(vr_tcp_timewait_count(tcp), 0);   /* the passive closer has none */
	assert_int_equal(errors, 0);
}

/* Our FIN out and ACKed, the peer's FIN in: returns in TIME_WAIT, owner still holding. */
static void close_to_timewait(const struct opts *o)
{
	open_passive(o, 65535);
	assert_int_equal(vr_tcp_shutdown(conn), 0);
	assert_int_equal(vr_tcp_send(conn, "x", 1), -EPIPE);
	assert_string_equal(state_of(conn), "FIN_WAIT_1");
	tick(0);
	struct seg *f = one();
	assert_int_equal(f->flags, F_ACK | F_FIN);
	assert_int_equal(f->seq, iss + 1);
	struct opts a = { .mss = -1, .ws = -1 };
	if (o && o->ts) {
		a.ts = 1;
		a.tsval = o->tsval + 10;
		a.tsecr = f->o.tsval;
	}
	peer_send(PORT, PISN + 1, iss + 2, F_ACK, 65535, NULL, 0, &a);
	assert_string_equal(state_of(conn), "FIN_WAIT_2");
	peer_send(PORT, PISN + 1, iss + 2, F_ACK | F_PSH, 65535, "250 ok", 6, &a);
	assert_int_equal(vr_tcp_readable(conn), 6);   /* half-closed: still receiving */
	peer_send(PORT, PISN + 7, iss + 2, F_ACK | F_FIN, 65535, NULL, 0, &a);
	assert_int_equal(peer_closed, 1);
	assert_string_equal(state_of(conn), "TIME_WAIT");
	struct seg *k = one();
	assert_int_equal(k->ack, PISN + 8);
}

static void test_we_close_first_timewait(void **state)
{
	close_to_timewait(NULL);
	vr_tcp_consume(conn, 6);
	vr_tcp_close(conn);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
	assert_int_equal(vr_tcp_timewait_count(tcp), 1);
	/* The peer did not hear our ACK: its FIN again gets it again. */
	peer_send(PORT, PISN + 7, iss + 2, F_ACK | F_FIN, 65535, NULL, 0, NULL);
	tick(0);
	struct seg *k = one();
	assert_int_equal(k->flags, F_ACK);
	assert_int_equal(k->seq, iss + 2);
	assert_int_equal(k->ack, PISN + 8);
	/* RFC 1337: a RST does not end TIME_WAIT. */
	peer_send(PORT, PISN + 8, 0, F_RST, 0, NULL, 0, NULL);
	assert_int_equal(vr_tcp_timewait_count(tcp), 1);
	assert_int_equal(nout, 0);
	tick(59999);
	assert_int_equal(vr_tcp_timewait_count(tcp), 1);
	tick(1);
	assert_int_equal(vr_tcp_timewait_count(tcp), 0);
	/* Gone: the port answers as closed now. */
	nout = 0;
	peer_send(PORT, PISN + 7, iss + 2, F_ACK | F_FIN, 65535, NULL, 0, NULL);
	tick(0);
	assert_int_equal(one()->flags, F_RST);
}

static void test_timewait_owner_keeps_handle(void **state)
{
	close_to_timewait(NULL);
	tick(60000);
	assert_string_equal(state_of(conn), "CLOSED");
	assert_int_equal(errors, 0);
	vr_tcp_consume(conn, 6);
	vr_tcp_close(conn);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
	assert_int_equal(vr_tcp_timewait_count(tcp), 0);
}

static void test_timewait_reuse_timestamps(void **state)
{
	struct opts o = { .mss = -1, .ws = -1, .ts = 1, .tsval = 1000 };

	close_to_timewait(&o);
	vr_tcp_consume(conn, 6);
	vr_tcp_close(conn);
	assert_int_equal(vr_tcp_timewait_count(tcp), 1);
	/* An older timestamp: not a new incarnation, the old state is repeated. */
	struct opts syn = { .mss = -1, .ws = -1, .ts = 1, .tsval = 900 };
	peer_send(PORT, PISN + 100000, 0, F_SYN, 65535, NULL, 0, &syn);
	tick(0);
	struct seg *s = one();
	assert_int_equal(s->flags, F_ACK);
	assert_int_equal(st()->timewait_reused, 0);
	/* A newer one (RFC 6191): the tuple is reused at once, even with an older ISN. */
	syn.tsval = 2000;
	peer_send(PORT, PISN - 100000, 0, F_SYN, 65535, NULL, 0, &syn);
	s = one();
	assert_int_equal(s->flags, F_SYN | F_ACK);
	assert_int_equal(s->ack, PISN - 100000 + 1);
	assert_int_equal(st()->timewait_reused, 1);
	assert_int_equal(vr_tcp_timewait_count(tcp), 0);
	assert_int_equal(vr_tcp_conn_count(tcp), 1);
}

static void test_timewait_reuse_sequence(void **state)
{
	close_to_timewait(NULL);
	vr_tcp_consume(conn, 6);
	vr_tcp_close(conn);
	/* Without timestamps, RFC 1122 §4.2.2.13: only a SYN above the old sequence space. */
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	tick(0);
	assert_int_equal(one()->flags, F_ACK);
	peer_send(PORT, PISN + 100000, 0, F_SYN, 65535, NULL, 0, NULL);
	assert_int_equal(one()->flags, F_SYN | F_ACK);
	assert_int_equal(st()->timewait_reused, 1);
}

static void test_timewait_bounded(void **state)
{
	tconf.timewait_max = 2;
	fixture_remake();
	for (unsigned i = 0; i < 3; i++) {
		pport = (uint16_t)(PPORT + i);
		accepted = peer_closed = 0;
		close_to_timewait(NULL);
		vr_tcp_consume(conn, 6);
		vr_tcp_close(conn);
	}
	assert_int_equal(vr_tcp_timewait_count(tcp), 2);
	assert_int_equal(st()->timewait_recycled, 1);
}

static void test_simultaneous_close(void **state)
{
	open_plain();
	vr_tcp_shutdown(conn);
	tick(0);
	struct seg *f = one();
	assert_int_equal(f->flags, F_ACK | F_FIN);
	/* The peer's FIN crossed ours: it does not ACK our FIN yet. */
	peer_send(PORT, PISN + 1, iss + 1, F_ACK | F_FIN, 65535, NULL, 0, NULL);
	assert_string_equal(state_of(conn), "CLOSING");
	assert_int_equal(one()->ack, PISN + 2);
	peer_send(PORT, PISN + 2, iss + 2, F_ACK, 65535, NULL, 0, NULL);
	assert_string_equal(state_of(conn), "TIME_WAIT");
	vr_tcp_close(conn);
	assert_int_equal(vr_tcp_timewait_count(tcp), 1);
}

/* Ways to bring the connection into a state; each returns with conn in it. */
static void to_established(void) { open_plain(); }
static void to_close_wait(void)
{
	open_plain();
	peer_send(PORT, PISN + 1, iss + 1, F_ACK | F_FIN, 65535, NULL, 0, NULL);
}
static void to_fin_wait_1(void)
{
	open_plain();
	vr_tcp_shutdown(conn);
	tick(0);
}
static void to_fin_wait_2(void)
{
	to_fin_wait_1();
	peer_send(PORT, PISN + 1, iss + 2, F_ACK, 65535, NULL, 0, NULL);
}
static void to_closing(void)
{
	to_fin_wait_1();
	peer_send(PORT, PISN + 1, iss + 1, F_ACK | F_FIN, 65535, NULL, 0, NULL);
}
static void to_last_ack(void)
{
	to_close_wait();
	vr_tcp_shutdown(conn);
	tick(0);
}

static const struct {
	const char *state;
	void (*reach)(void);
	uint32_t rcv_nxt_off;          /* rcv_nxt - PISN in that state */
} states[] = {
	{ "ESTABLISHED", to_established, 1 }, { "CLOSE_WAIT", to_close_wait, 2 },
	{ "FIN_WAIT_1", to_fin_wait_1, 1 }, { "FIN_WAIT_2", to_fin_wait_2, 1 },
	{ "CLOSING", to_closing, 2 }, { "LAST_ACK", to_last_ack, 2 },
};

static void test_rst_every_state(void **state)
{
	for (unsigned i = 0; i < VR_ARRAY_SIZE(states); i++) {
		fixture_remake();
		states[i].reach();
		assert_string_equal(state_of(conn), states[i].state);
		uint32_t rcv_nxt = PISN + states[i].rcv_nxt_off;
		nout = 0;
		/* Outside the window: nothing. */
		peer_send(PORT, rcv_nxt + 100000, 0, F_RST, 0, NULL, 0, NULL);
		assert_int_equal(nout, 0);
		assert_string_equal(state_of(conn), states[i].state);
		/* In the window, not exact: a challenge ACK, the connection lives (RFC 5961 §3.2). */
		peer_send(PORT, rcv_nxt + 100, 0, F_RST, 0, NULL, 0, NULL);
		struct seg *c = one();
		assert_int_equal(c->flags, F_ACK);
		assert_int_equal(c->ack, rcv_nxt);
		assert_string_equal(state_of(conn), states[i].state);
		assert_int_equal(st()->challenge_acks, 1);
		/* Exact: reset. */
		peer_send(PORT, rcv_nxt, 0, F_RST, 0, NULL, 0, NULL);
		assert_int_equal(errors, 1);
		assert_int_equal(last_err, -ECONNRESET);
		assert_int_equal(vr_tcp_conn_count(tcp), 0);
		assert_int_equal(nout, 0);
	}
}

static void test_rst_syn_rcvd(void **state)
{
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	nout = 0;
	peer_send(PORT, PISN + 1, 0, F_RST, 0, NULL, 0, NULL);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
	assert_int_equal(accepted, 0);             /* the owner never heard of it */
	assert_int_equal(errors, 0);
}

static void test_challenge_ack_syn(void **state)
{
	open_plain();
	/* RFC 5961 §4: a SYN on a synchronized connection, whatever its sequence. */
	peer_send(PORT, PISN + 5, 0, F_SYN, 65535, NULL, 0, NULL);
	struct seg *c = one();
	assert_int_equal(c->flags, F_ACK);
	assert_int_equal(c->seq, iss + 1);
	assert_int_equal(c->ack, PISN + 1);
	assert_int_equal(st()->challenge_acks, 1);
	assert_string_equal(state_of(conn), "ESTABLISHED");
	/* A blind attacker's stream: ten challenges a second, the rest counted and dropped. */
	for (unsigned i = 0; i < 50; i++)
		peer_send(PORT, PISN + 5 + i, 0, F_SYN, 65535, NULL, 0, NULL);
	assert_int_equal(nout, 9);
	assert_int_equal(st()->drop[VR_TCP_DROP_CHALLENGE_LIMIT], 41);
	nout = 0;
	now += 1000;
	peer_send(PORT, PISN + 5, 0, F_SYN, 65535, NULL, 0, NULL);
	assert_int_equal(one()->flags, F_ACK);
}

static void test_ack_checks(void **state)
{
	open_plain();
	/* RFC 5961 §5.2: an ACK from the distant past gets a challenge, its data nowhere. */
	peer_send(PORT, PISN + 1, iss - 200000, F_ACK, 65535, "blind", 5, NULL);
	assert_int_equal(one()->flags, F_ACK);
	assert_int_equal(st()->challenge_acks, 1);
	assert_int_equal(vr_tcp_readable(conn), 0);
	/* An ACK of what we never sent: an ACK back, the segment dropped. */
	peer_send(PORT, PISN + 1, iss + 5000, F_ACK, 65535, "ahead", 5, NULL);
	assert_int_equal(one()->flags, F_ACK);
	assert_int_equal(st()->drop[VR_TCP_DROP_BAD_ACK], 1);
	assert_int_equal(vr_tcp_readable(conn), 0);
	/* Data far outside the window: an ACK saying where we are. */
	peer_send(PORT, PISN + 1 + 500000, iss + 1, F_ACK, 65535, "far", 3, NULL);
	assert_int_equal(one()->ack, PISN + 1);
	assert_int_equal(st()->drop[VR_TCP_DROP_UNACCEPTABLE], 1);
	/* A segment without ACK on a synchronized connection is dropped. */
	peer_send(PORT, PISN + 1, 0, 0, 65535, "noack", 5, NULL);
	assert_int_equal(st()->drop[VR_TCP_DROP_BAD_FLAGS], 1);
	assert_int_equal(vr_tcp_readable(conn), 0);
}

static void test_paws(void **state)
{
	struct opts o = { .mss = -1, .ws = -1, .ts = 1, .tsval = 5000 };

	open_passive(&o, 65535);
	struct opts a = { .mss = -1, .ws = -1, .ts = 1, .tsval = 5010 };
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, "new", 3, &a);
	assert_int_equal(vr_tcp_readable(conn), 3);
	/* RFC 7323 §5: a segment with an older timestamp is an old duplicate, wrapped or not. */
	a.tsval = 4000;
	peer_send(PORT, PISN + 4, iss + 1, F_ACK, 65535, "old", 3, &a);
	assert_int_equal(vr_tcp_readable(conn), 3);
	assert_int_equal(st()->drop[VR_TCP_DROP_PAWS], 1);
	struct seg *k = one();
	assert_int_equal(k->ack, PISN + 4);
	assert_int_equal(k->o.tsecr, 5010);
	/* A RST is exempt from PAWS (RFC 7323 §5.3). */
	peer_send(PORT, PISN + 4, 0, F_RST, 0, NULL, 0, &a);
	assert_int_equal(last_err, -ECONNRESET);
}

static void test_close_with_unread_data_resets(void **state)
{
	open_plain();
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, "DATA", 4, NULL);
	vr_tcp_close(conn);
	tick(0);
	struct seg *r = one();
	assert_int_equal(r->flags, F_RST);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
}

static void test_orphan_gets_data_resets(void **state)
{
	char buf[8];

	open_plain();
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, "read", 4, NULL);
	assert_int_equal(vr_tcp_read(conn, buf, sizeof(buf)), 4);
	vr_tcp_close(conn);
	tick(0);
	assert_int_equal(one()->flags, F_ACK | F_FIN);
	/* Its retransmission is not new: an ACK, no reset. */
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, "read", 4, NULL);
	assert_int_equal(one()->flags, F_ACK);
	peer_send(PORT, PISN + 5, iss + 2, F_ACK, 65535, "late", 4, NULL);
	assert_int_equal(one()->flags, F_RST);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
	assert_int_equal(errors, 0);               /* the owner is gone: no callback */
}

static void test_orphan_fin_wait_2_times_out(void **state)
{
	open_plain();
	vr_tcp_close(conn);
	tick(0);
	nout = 0;
	peer_send(PORT, PISN + 1, iss + 2, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(vr_tcp_conn_count(tcp), 1);
	tick(60000);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
}

static void test_refused_accept(void **state)
{
	refuse = 1;
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	uint32_t s = one()->seq;
	peer_send(PORT, PISN + 1, s + 1, F_ACK, 65535, NULL, 0, NULL);
	assert_int_equal(accepted, 1);
	tick(0);
	assert_int_equal(one()->flags, F_RST);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
}

static void test_abort(void **state)
{
	open_plain();
	vr_tcp_abort(conn);
	tick(0);
	struct seg *r = one();
	assert_int_equal(r->flags, F_RST);
	assert_int_equal(r->seq, iss + 1);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
	assert_int_equal(st()->resets_out, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_peer_closes_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_we_close_first_timewait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timewait_owner_keeps_handle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timewait_reuse_timestamps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timewait_reuse_sequence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timewait_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_simultaneous_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rst_every_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rst_syn_rcvd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_challenge_ack_syn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ack_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_paws, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_with_unread_data_resets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_orphan_gets_data_resets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_orphan_fin_wait_2_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_accept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
