/*
 * test_iostack.c - the stack transport: two stack instances wired back to
 * back through queues (the relay at 10.0.0.1, a client at 10.0.0.2 opening
 * connections with vr_tcp_connect), a virtual clock, and the client speaking
 * SMTP: the banner, a dialogue ending in 221 and an orderly close, both
 * connection limits, the idle timeout, pipelined input far beyond what the
 * session holds answered in full once the client reads (backpressure both
 * ways), a message committed to a real spool (the completion's kick), and a
 * stopped transport refusing new connections while a session goes on.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <urcu-qsbr.h>

#include "vmrelay/config.h"
#include "vmrelay/iostack.h"
#include "vmrelay/net.h"
#include "vmrelay/policy.h"
#include "vmrelay/spool.h"
#include "vmrelay/tcp.h"

#define RELAY_IP  0x0a000001u
#define CLIENT_IP 0x0a000002u
#define WIRE_MAX  4096
#define RX_MAX    (1u << 20)
#define CONNS     8

/* Frames one instance sent, waiting for the other's vr_net_rx. */
struct wire {
	struct vr_pkt *q[WIRE_MAX];
	unsigned n;
};

/* A client connection and everything it received. */
struct client {
	struct vr_tcp_conn *tc;
	char rx[RX_MAX];
	size_t len;
	int err;                 /* from the error callback */
	int fin;                 /* the relay's FIN arrived */
	int established;
	int read_paused;         /* leave input unread: the window closes */
};

struct bed {
	struct vr_config cfg;
	struct vr_smtp_stats stats[1];
	struct vr_smtpd srv;
	struct vr_net *rnet, *cnet;
	struct vr_tcp *rtcp, *ctcp;
	struct vr_iostack_shared *sh;
	struct vr_iostack *st;
	struct wire to_client, to_relay;
	struct client c[CONNS];
	uint64_t now;
	char dir[64];
};

static unsigned wire_tx(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
{
	struct wire *w = arg;
	unsigned took = 0;

	while (took < n && w->n < WIRE_MAX)
		w->q[w->n++] = pkts[took++];
	return took;
}

/* Delivers the frames in flight to the other side, as a copy from its pool
 * (the sender's packets go back to the sender). */
static unsigned wire_deliver(struct wire *w, struct vr_net *to, uint64_t now)
{
	unsigned n = w->n;

	for (unsigned i = 0; i < n; i++) {
		struct vr_pkt *p = vr_net_pkt_alloc(to);
		assert_non_null(p);
		memcpy(p->data, w->q[i]->data, w->q[i]->len);
		p->len = w->q[i]->len;
		vr_net_pkt_free(w->q[i]);
		vr_net_rx(to, &p, 1, now);
	}
	w->n = 0;
	return n;
}

/* --- the client's callbacks --- */

static void cl_read(struct client *c)
{
	if (c->read_paused)
		return;
	size_t n = vr_tcp_read(c->tc, c->rx + c->len, RX_MAX - 1 - c->len);
	c->len += n;
	c->rx[c->len] = '\0';
}

static void cl_established(struct vr_tcp_conn *tc, void *user, uint64_t now)
{
	((struct client *)user)->established = 1;
}

static void cl_readable(struct vr_tcp_conn *tc, void *user, uint64_t now)
{
	cl_read(user);
}

static void cl_peer_closed(struct vr_tcp_conn *tc, void *user, uint64_t now)
{
	struct client *c = user;

	cl_read(c);
	c->fin = 1;
}

static void cl_error(struct vr_tcp_conn *tc, void *user, int err, uint64_t now)
{
	struct client *c = user;

	c->err = err;
	c->tc = NULL;
}

static const struct vr_tcp_cb client_cb = {
	.established = cl_established, .readable = cl_readable,
	.peer_closed = cl_peer_closed, .error = cl_error,
};

/* --- the bed --- */

/* One round: frames both ways, the relay's transport, both stacks' timers. */
static void step(struct bed *b)
{
	wire_deliver(&b->to_relay, b->rnet, b->now);
	wire_deliver(&b->to_client, b->cnet, b->now);
	for (unsigned i = 0; i < CONNS; i++)
		if (b->c[i].tc && !b->c[i].read_paused)
			cl_read(&b->c[i]);
	if (b->st)
		vr_iostack_poll(b->st, b->now);
	vr_tcp_poll(b->rtcp, b->now);
	vr_tcp_poll(b->ctcp, b->now);
	rcu_quiescent_state();
}

/* Runs rounds, the clock moving 1 ms each, for up to ms of virtual time or
 * until done(b, arg). Returns whether done was reached. A spool commit takes
 * real time: rounds then also sleep a little. */
static int run_until(struct bed *b, uint64_t ms, int (*done)(struct bed *, const void *),
		     const void *arg)
{
	for (uint64_t end = b->now + ms; b->now < end; b->now++) {
		step(b);
		if (done && done(b, arg))
			return 1;
		if (b->srv.spool && b->now % 16 == 0)
			usleep(200);
	}
	return 0;
}

static struct bed *bed_new(void)
{
	struct bed *b = calloc(1, sizeof(*b));
	char err[256];

	assert_non_null(b);
	vr_config_defaults(&b->cfg);
	snprintf(b->cfg.hostname, sizeof(b->cfg.hostname), "relay.test");
	assert_int_equal(vr_config_parse_listen("0.0.0.0:25", &b->cfg.listen[0], err,
						sizeof(err)), 0);
	b->cfg.n_listen = 1;
	b->cfg.workers = 1;
	b->now = 1000;
	return b;
}

static struct vr_net *net_new(uint32_t ip, uint8_t last, struct wire *out)
{
	struct vr_net_conf nc = {
		.mac = { 0x02, 0, 0, 0, 0, last }, .ip = ip, .prefix = 24, .pkts = 4096,
		.tx = wire_tx, .tx_arg = out,
	};
	char err[256];
	struct vr_net *n = vr_net_new(&nc, err, sizeof(err));

	if (!n)
		fail_msg("vr_net_new: %s", err);
	return n;
}

/* cfg changes go in before bed_start. */
static void bed_start(struct bed *b, int with_spool)
{
	char err[256];
	struct vr_tcp_conf tc = { .max_conns = 64, .rcvbuf = 16384, .sndbuf = 16384 };

	b->srv.cfg = &b->cfg;
	b->srv.stats = b->stats;
	b->srv.n_workers = 1;
	if (with_spool) {
		strcpy(b->dir, "/tmp/vr_test_iostack.XXXXXX");
		assert_non_null(mkdtemp(b->dir));
		b->srv.spool = vr_spool_open(b->dir, 1, err, sizeof(err));
		assert_non_null(b->srv.spool);
		assert_int_equal(vr_spool_start(b->srv.spool), 0);
	}
	b->rnet = net_new(RELAY_IP, 1, &b->to_client);
	b->cnet = net_new(CLIENT_IP, 2, &b->to_relay);
	b->rtcp = vr_tcp_new(b->rnet, &tc, b->now, err, sizeof(err));
	if (!b->rtcp)
		fail_msg("vr_tcp_new: %s", err);
	b->ctcp = vr_tcp_new(b->cnet, &tc, b->now, err, sizeof(err));
	assert_non_null(b->ctcp);
	b->sh = vr_iostack_shared_new(&b->cfg, 1, err, sizeof(err));
	assert_non_null(b->sh);
	b->st = vr_iostack_new(&b->srv, b->sh, 0, b->rtcp, err, sizeof(err));
	if (!b->st)
		fail_msg("vr_iostack_new: %s", err);
	/* Both gratuitous ARPs: each side knows the other's MAC from here on. */
	run_until(b, 5, NULL, NULL);
}

static void bed_free(struct bed *b)
{
	char cmd[128];

	/* What is still open is reset; the resets reach the client. */
	vr_iostack_free(b->st);
	b->st = NULL;
	for (int i = 0; i < 3; i++) {
		wire_deliver(&b->to_relay, b->rnet, b->now);
		wire_deliver(&b->to_client, b->cnet, b->now);
		vr_tcp_poll(b->rtcp, b->now);
		vr_tcp_poll(b->ctcp, b->now);
	}
	vr_iostack_shared_free(b->sh);
	vr_tcp_free(b->rtcp);
	vr_tcp_free(b->ctcp);
	for (unsigned i = 0; i < b->to_relay.n; i++)
		vr_net_pkt_free(b->to_relay.q[i]);
	for (unsigned i = 0; i < b->to_client.n; i++)
		vr_net_pkt_free(b->to_client.q[i]);
	/* No packet of the relay's pool is left anywhere: nothing leaked. */
	assert_int_equal(vr_net_pkt_in_use(b->rnet), 0);
	vr_net_free(b->rnet);
	vr_net_free(b->cnet);
	if (b->srv.spool) {
		vr_spool_close(b->srv.spool);
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", b->dir);
		assert_int_equal(system(cmd), 0);
	}
	free(b);
}

/* --- the client's side of the dialogue --- */

static struct client *dial(struct bed *b, unsigned i)
{
	struct client *c = &b->c[i];
	int err = 0;

	memset(c, 0, sizeof(*c));
	c->tc = vr_tcp_connect(b->ctcp, RELAY_IP, 25, &client_cb, c, b->now, &err);
	assert_non_null(c->tc);
	return c;
}

static void say(struct bed *b, struct client *c, const char *text)
{
	size_t n = strlen(text);

	assert_int_equal(vr_tcp_send(c->tc, text, n), (ssize_t)n);
}

struct wait_text {
	const struct client *c;
	const char *text;
};

static int has_text(struct bed *b, const void *arg)
{
	const struct wait_text *w = arg;

	return strstr(w->c->rx, w->text) != NULL;
}

/* Runs until the client has received text (within ms of virtual time). */
static void expect(struct bed *b, struct client *c, const char *text, uint64_t ms)
{
	struct wait_text w = { c, text };

	if (!run_until(b, ms, has_text, &w))
		fail_msg("waited %llu ms for \"%s\"; got \"%s\"", (unsigned long long)ms, text,
			 c->rx);
}

static int is_closed(struct bed *b, const void *arg)
{
	const struct client *c = arg;

	return c->fin || c->err;
}

static int relay_empty(struct bed *b, const void *arg)
{
	return vr_iostack_conns(b->st) == 0;
}

static int one_left(struct bed *b, const void *arg)
{
	return vr_iostack_conns(b->st) == 1;
}

/* --- tests --- */

static void test_dialogue(void **state)
{
	struct bed *b = bed_new();

	bed_start(b, 0);
	struct client *c = dial(b, 0);
	expect(b, c, "220 relay.test ESMTP", 200);
	assert_int_equal(vr_iostack_conns(b->st), 1);
	say(b, c, "EHLO client.test\r\n");
	expect(b, c, "250 ", 200);
	assert_non_null(strstr(c->rx, "250-PIPELINING"));
	say(b, c, "QUIT\r\n");
	expect(b, c, "221 ", 200);
	/* The relay's FIN follows its 221; the client closes, the relay's
	 * connection ends well before the linger would end it. */
	assert_true(run_until(b, 100, is_closed, c));
	assert_int_equal(c->fin, 1);
	assert_int_equal(c->err, 0);
	vr_tcp_close(c->tc);
	c->tc = NULL;
	assert_true(run_until(b, 100, relay_empty, NULL));
	assert_int_equal(b->stats[0].connections, 1);
	assert_int_equal(vr_tcp_stats(b->rtcp)->resets_out, 0);
	bed_free(b);
}

static void test_per_ip_limit(void **state)
{
	struct bed *b = bed_new();

	b->cfg.max_conn_per_ip = 2;
	bed_start(b, 0);
	struct client *c0 = dial(b, 0), *c1 = dial(b, 1);
	expect(b, c0, "220 ", 200);
	expect(b, c1, "220 ", 200);
	struct client *c2 = dial(b, 2);
	expect(b, c2, "421 4.7.0 relay.test too many connections from 10.0.0.2\r\n", 200);
	assert_true(run_until(b, 100, is_closed, c2));
	assert_int_equal(vr_iostack_conns(b->st), 2);
	/* One leaves: once it is gone the client may connect again. */
	say(b, c0, "QUIT\r\n");
	expect(b, c0, "221 ", 200);
	assert_true(run_until(b, 100, is_closed, c0));
	vr_tcp_close(c0->tc);
	c0->tc = NULL;
	assert_true(run_until(b, 100, one_left, NULL));
	struct client *c3 = dial(b, 3);
	expect(b, c3, "220 ", 200);
	bed_free(b);
}

static void test_worker_limit(void **state)
{
	struct bed *b = bed_new();

	b->cfg.max_connections = 1;
	bed_start(b, 0);
	struct client *c0 = dial(b, 0);
	expect(b, c0, "220 ", 200);
	struct client *c1 = dial(b, 1);
	expect(b, c1, "421 4.7.0 relay.test too many connections\r\n", 200);
	assert_null(strstr(c1->rx, " from "));
	bed_free(b);
}

static void test_idle_timeout(void **state)
{
	struct bed *b = bed_new();

	b->cfg.idle_timeout_ms = 3000;
	bed_start(b, 0);
	struct client *c = dial(b, 0);
	expect(b, c, "220 ", 200);
	/* Nothing before the deadline, the 421 at it, then the close. */
	run_until(b, 2900, NULL, NULL);
	assert_null(strstr(c->rx, "421"));
	expect(b, c, "421 4.4.2 relay.test timeout exceeded", 300);
	assert_true(run_until(b, 100, is_closed, c));
	assert_int_equal(b->stats[0].timeouts, 1);
	bed_free(b);
}

/* More pipelined commands than the session, TCP's buffers and the window
 * hold, the client not reading: the relay stops taking input instead of
 * growing, then answers every command once the client reads. */
static void test_backpressure(void **state)
{
	enum { N = 20000 };
	struct bed *b = bed_new();

	bed_start(b, 0);
	struct client *c = dial(b, 0);
	expect(b, c, "220 ", 200);
	c->read_paused = 1;
	static char cmds[N * 6 + 1];
	for (unsigned i = 0; i < N; i++)
		memcpy(cmds + 6 * i, "NOOP\r\n", 6);
	size_t sent = 0;
	for (int round = 0; round < 2000 && sent < sizeof(cmds) - 1; round++) {
		ssize_t n = vr_tcp_send(c->tc, cmds + sent, sizeof(cmds) - 1 - sent);
		assert_true(n >= 0);
		sent += (size_t)n;
		run_until(b, 1, NULL, NULL);
	}
	/* N * "250 2.0.0 OK\r\n" does not fit the client's window and the
	 * relay's send buffer: the rest of the commands wait unread. */
	assert_true(sent < sizeof(cmds) - 1);
	assert_int_equal(vr_iostack_conns(b->st), 1);
	c->read_paused = 0;
	for (int round = 0; round < 100000 && sent < sizeof(cmds) - 1; round++) {
		ssize_t n = vr_tcp_send(c->tc, cmds + sent, sizeof(cmds) - 1 - sent);
		assert_true(n >= 0);
		sent += (size_t)n;
		run_until(b, 1, NULL, NULL);
	}
	assert_int_equal(sent, sizeof(cmds) - 1);
	run_until(b, 2000, NULL, NULL);
	unsigned ok = 0;
	for (const char *p = c->rx; (p = strstr(p, "\r\n250 ")); p++)
		ok++;
	assert_int_equal(ok, N);
	bed_free(b);
}

static int has_queued(struct bed *b, const void *arg)
{
	return strstr(((const struct client *)arg)->rx, "250 2.0.0 ") &&
	       strstr(((const struct client *)arg)->rx, "queued as") != NULL;
}

/* A message to the spool: its 250 comes from the committer's completion,
 * reaped by the transport, which kicks the session to send it. */
static void test_message(void **state)
{
	struct bed *b = bed_new();
	char path[] = "/tmp/vr_test_iostack_acct.XXXXXX", err[256];
	int fd = mkstemp(path);
	const char *acct = "{\"id\":\"vps1\",\"ips\":[\"10.0.0.2\"],\"hostname\":\"h.example.com\","
			   "\"domains\":[\"example.com\"]}\n";

	assert_true(fd >= 0);
	assert_int_equal(write(fd, acct, strlen(acct)), (ssize_t)strlen(acct));
	close(fd);
	struct vr_accounts *t = vr_accounts_load_max(path, 1000, 10000, err, sizeof(err));
	unlink(path);
	if (!t)
		fail_msg("accounts: %s", err);
	vr_policy_publish(t);
	bed_start(b, 1);
	struct client *c = dial(b, 0);
	expect(b, c, "220 ", 200);
	say(b, c, "EHLO h.example.com\r\nMAIL FROM:<a@example.com>\r\n"
		  "RCPT TO:<b@example.net>\r\nDATA\r\n");
	expect(b, c, "354 ", 500);
	say(b, c, "From: <a@example.com>\r\nTo: <b@example.net>\r\nSubject: t\r\n\r\nHi.\r\n.\r\n");
	if (!run_until(b, 20000, has_queued, c))
		fail_msg("no 250 for the message; got \"%s\"", c->rx);
	assert_int_equal(b->stats[0].messages_accepted, 1);
	say(b, c, "QUIT\r\n");
	expect(b, c, "221 ", 200);
	bed_free(b);
	vr_policy_publish(NULL);
}

static int is_refused(struct bed *b, const void *arg)
{
	return ((const struct client *)arg)->err != 0;
}

static void test_stop(void **state)
{
	struct bed *b = bed_new();

	bed_start(b, 0);
	struct client *c0 = dial(b, 0);
	expect(b, c0, "220 ", 200);
	vr_iostack_stop(b->st);
	struct client *c1 = dial(b, 1);
	assert_true(run_until(b, 200, is_refused, c1));
	assert_int_equal(c1->err, -ECONNREFUSED);
	/* The session in flight goes on. */
	say(b, c0, "NOOP\r\n");
	expect(b, c0, "250 ", 200);
	bed_free(b);
}

static int setup(void **state)
{
	rcu_register_thread();
	return 0;
}

static int teardown(void **state)
{
	rcu_unregister_thread();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dialogue),
		cmocka_unit_test(test_per_ip_limit),
		cmocka_unit_test(test_worker_limit),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_backpressure),
		cmocka_unit_test(test_message),
		cmocka_unit_test(test_stop),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
