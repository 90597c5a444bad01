/*
 * stack.c - the stack transport (see vmrelay/iostack.h): one vr_session per
 * connection of the userspace stack's TCP, for one worker core.
 *
 * The stack calls us back (accept, readable, writable, peer_closed, error)
 * from inside vr_net_rx and vr_tcp_poll; the worker's poll loop calls
 * vr_iostack_poll for what the stack does not know about: session
 * deadlines (engine/io's timer heap) and spool completions. Every path ends
 * in conn_service, which moves bytes both ways until nothing more moves,
 * then decides whether to close and when to wake up next.
 *
 * Input is read in place (vr_tcp_peek) and copied once, by the session. It
 * is taken only as far as the session has room: what is left closes the
 * window, and service picks it up again when room comes back (after output
 * drains or a commit completes), since no callback says so.
 *
 * Closing mirrors conn.c: once the session is finished and all its output
 * is in TCP's send buffer, FIN; then input is read and dropped until the
 * client's FIN or a short linger, and only then is the connection handed
 * to the stack to finish; closing with unread input would be a reset, which
 * can destroy our last reply (a 221 or a 421) before the client reads it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "vmrelay/iostack.h"
#include "connlimit.h"
#include "io_impl.h"
#include "timer.h"

#define REAP_BATCH 256

struct stack_conn {
	struct io_sess ss;        /* first: io_sess_set hands these out */
	struct vr_tcp_conn *tc;   /* NULL once the stack has it (closed, reset) */
	bool peer_fin;            /* the client's FIN arrived (after its data) */
	bool eof_given;           /* ... and the session was told */
	struct sockaddr_storage peer, local;   /* sockaddr_in or sockaddr_in6 */
};

/*
 * One TCP listener per port, serving the listen lines with that port: the
 * stack's listeners take either family, and a line's family says which
 * connections it accepts, as IPV6_V6ONLY sockets do in kernel mode
 * (0.0.0.0:25 and [::]:25 together are the dual-stack form).
 */
struct stack_listener {
	struct vr_iostack *st;
	int idx[2];               /* into cfg->listen, for IPv4 and IPv6 peers; -1: none */
};

struct vr_iostack_shared {
	struct vr_connlimit *cl;
};

struct vr_iostack {
	struct vr_smtpd *srv;
	const struct vr_config *cfg;
	struct vr_iostack_shared *sh;
	struct vr_tcp *tcp;
	unsigned worker;
	bool listening;
	struct io_sess_set set;   /* its connections */
	struct stack_listener lst[VR_CONFIG_MAX_LISTEN];
	unsigned nlst;
};

static void conn_service(struct stack_conn *c, uint64_t now);

/* sin_port and sin6_port sit at the same offset. */
static uint16_t listen_port(const struct vr_listen *l)
{
	return ntohs(((const struct sockaddr_in *)&l->addr)->sin_port);
}

/* A listen line of listener i (both of its lines have its port). */
static const struct vr_listen *lst_line(const struct vr_iostack *st, unsigned i)
{
	const struct stack_listener *sl = &st->lst[i];

	return &st->cfg->listen[sl->idx[0] >= 0 ? sl->idx[0] : sl->idx[1]];
}

/* --- connections --- */

/* Ends c on our side: the session is freed (orphaning a commit in flight),
 * the TCP connection reset if we still hold it. */
static void conn_kill(struct stack_conn *c)
{
	if (c->ss.state == IO_SESS_DEAD)
		return;
	vr_io_sess_end(&c->ss);
	if (c->tc)
		vr_tcp_abort(c->tc);
	c->tc = NULL;
}

/* Hands the session what it has room for; true if it took anything. */
static bool conn_feed(struct stack_conn *c, uint64_t now)
{
	bool took = false;

	while (!vr_io_sess_closing(&c->ss)) {
		size_t space = vr_session_rx_space(c->ss.s);
		const uint8_t *p;
		size_t n = space ? vr_tcp_peek(c->tc, &p) : 0;
		if (n == 0)
			break;
		n = VR_MIN(n, space);
		if (vr_session_rx(c->ss.s, p, n, now) != VR_OK)
			c->ss.rx_failed = true;
		vr_tcp_consume(c->tc, n);
		took = true;
	}
	return took;
}

/* The session's output into the send buffer (vr_io_send_fn); when it is
 * full, writable follows. */
static ssize_t conn_send(void *arg, const uint8_t *p, size_t n)
{
	const struct stack_conn *c = arg;

	return vr_tcp_send(c->tc, p, n);
}

/* Drops what the client still sends while we linger. */
static void conn_discard(struct stack_conn *c)
{
	size_t n = vr_tcp_readable(c->tc);

	if (n)
		vr_tcp_consume(c->tc, n);
}

/* Linger over (the client's FIN, or time): the stack finishes alone. */
static void conn_release(struct stack_conn *c)
{
	conn_discard(c);
	vr_tcp_set_user(c->tc, NULL);
	vr_tcp_close(c->tc);
	c->tc = NULL;
	conn_kill(c);
}

/* The session is finished and its output is in the send buffer: FIN. */
static void conn_finish(struct stack_conn *c, uint64_t now)
{
	vr_io_sess_finish(&c->ss);
	if (vr_tcp_shutdown(c->tc) < 0 || c->peer_fin) {
		conn_release(c);
		return;
	}
	conn_discard(c);
	if (vr_timer_set(&c->ss.set->timers, &c->ss.timer, now + IO_LINGER_MS) < 0)
		conn_release(c);
}

/*
 * After anything happened to c: output into the send buffer, input into
 * the session while it has room (which may make more output), the client's
 * FIN once its data is in; then close if the session is done and arm the
 * timer for its next deadline.
 */
static void conn_service(struct stack_conn *c, uint64_t now)
{
	int rc;

	for (;;) {
		if ((rc = vr_io_session_flush(c->ss.s, conn_send, c)) < 0) {
			conn_kill(c);
			return;
		}
		if (vr_io_sess_closing(&c->ss))
			break;
		if (conn_feed(c, now))
			continue;
		if (c->peer_fin && !c->eof_given && vr_tcp_readable(c->tc) == 0) {
			c->eof_given = true;
			vr_session_rx_eof(c->ss.s, now);
			continue;
		}
		break;
	}
	bool closing = vr_io_sess_closing(&c->ss);
	if (closing && rc == 0) {
		conn_finish(c, now);
		return;
	}
	uint64_t deadline = vr_io_session_deadline(c->ss.s, closing, &c->ss.drain_until, now);
	if (vr_timer_set(&c->ss.set->timers, &c->ss.timer, deadline) < 0)
		conn_kill(c);
}

/* --- the stack's callbacks --- */

static void on_readable(struct vr_tcp_conn *tc, void *user, uint64_t now)
{
	struct stack_conn *c = user;

	if (!c)
		return;
	if (c->ss.state == IO_SESS_LINGER)
		conn_discard(c);
	else
		conn_service(c, now);
}

static void on_writable(struct vr_tcp_conn *tc, void *user, uint64_t now)
{
	struct stack_conn *c = user;

	if (c && c->ss.state == IO_SESS_OPEN)
		conn_service(c, now);
}

static void on_peer_closed(struct vr_tcp_conn *tc, void *user, uint64_t now)
{
	struct stack_conn *c = user;

	if (!c)
		return;
	c->peer_fin = true;
	if (c->ss.state == IO_SESS_LINGER)
		conn_release(c);
	else
		conn_service(c, now);
}

static void on_error(struct vr_tcp_conn *tc, void *user, int err, uint64_t now)
{
	struct stack_conn *c = user;

	if (!c)
		return;
	c->tc = NULL;               /* gone with this callback */
	conn_kill(c);
}

static const struct vr_tcp_cb conn_cb = {
	.readable = on_readable,
	.writable = on_writable,
	.peer_closed = on_peer_closed,
	.error = on_error,
};

/*
 * Turns a connection away before any session exists: the reply goes into the
 * new connection's empty send buffer, then FIN. Not on an implicit-TLS port,
 * where plaintext would only be a TLS protocol error.
 */
static int refuse(struct vr_tcp_conn *tc, const struct vr_listen *l, const char *reply)
{
	if (!l->implicit_tls) {
		ssize_t n = vr_tcp_send(tc, reply, strlen(reply));
		(void)n;
	}
	vr_tcp_close(tc);
	return 0;
}

static int on_accept(void *arg, struct vr_tcp_conn *tc, uint64_t now)
{
	struct stack_listener *sl = arg;
	struct vr_iostack *st = sl->st;
	const struct vr_config *cfg = st->cfg;
	struct vr_tcp_info info;
	char ip[VR_ADDRSTRLEN], reply[512];
	uint64_t *slot;

	vr_tcp_conn_info(tc, &info);
	if (sl->idx[info.v6] < 0)
		return -ECONNREFUSED;   /* the port is listened on for the other family only */
	const struct vr_listen *l = &cfg->listen[sl->idx[info.v6]];
	/* The peer as policy and the session see it: its /64 for an IPv6 one. */
	struct sockaddr_storage peer = { 0 }, local = { 0 };
	if (info.v6) {
		struct sockaddr_in6 *p6 = (struct sockaddr_in6 *)&peer, *l6 = (struct sockaddr_in6 *)&local;
		p6->sin6_family = l6->sin6_family = AF_INET6;
		p6->sin6_port = htons(info.rport);
		l6->sin6_port = htons(info.lport);
		memcpy(&p6->sin6_addr, info.raddr6, 16);
		memcpy(&l6->sin6_addr, info.laddr6, 16);
	} else {
		struct sockaddr_in *p4 = (struct sockaddr_in *)&peer, *l4 = (struct sockaddr_in *)&local;
		p4->sin_family = l4->sin_family = AF_INET;
		p4->sin_port = htons(info.rport);
		l4->sin_port = htons(info.lport);
		p4->sin_addr.s_addr = htonl(info.raddr);
		l4->sin_addr.s_addr = htonl(info.laddr);
	}
	vr_io_addr_text((const struct sockaddr *)&peer, ip, sizeof(ip));
	if (!st->listening)
		return -ECONNREFUSED;   /* stopped: a SYN already in the queue */
	if (vr_io_admit(cfg, &st->set, (const struct sockaddr *)&peer, ip, &slot,
			reply, sizeof(reply)))
		return refuse(tc, l, reply);

	struct stack_conn *c = vr_io_sess_alloc(&st->set, slot, ip);
	if (!c)
		return -ENOMEM;
	c->tc = tc;
	c->peer = peer;
	c->local = local;
	struct vr_session_params p = {
		.srv = st->srv,
		.worker = st->worker,
		.peer = (const struct sockaddr *)&c->peer,
		.local = (const struct sockaddr *)&c->local,
		.implicit_tls = l->implicit_tls,
		.kick = vr_io_sess_kick,
		.owner = &c->ss,
	};
	int rc = vr_io_sess_start(&c->ss, &p, ip, now);
	if (rc < 0)
		return rc;
	vr_io_sess_open(&c->ss);
	vr_tcp_set_user(tc, c);
	/* Bytes that came with the handshake reach the session before its first
	 * tick greets the client, so a client talking first is seen to. */
	conn_feed(c, now);
	vr_session_tick(c->ss.s, now);
	conn_service(c, now);
	return 0;
}

/* --- the instance --- */

struct vr_iostack_shared *vr_iostack_shared_new(const struct vr_config *cfg, unsigned n_workers,
						char *err, size_t errlen)
{
	struct vr_iostack_shared *sh = calloc(1, sizeof(*sh));

	if (sh)
		sh->cl = vr_io_connlimit_new(cfg, n_workers);
	if (!sh || !sh->cl) {
		snprintf(err, errlen, "connection table: %s", strerror(errno));
		free(sh);
		return NULL;
	}
	return sh;
}

void vr_iostack_shared_free(struct vr_iostack_shared *sh)
{
	if (!sh)
		return;
	vr_connlimit_free(sh->cl);
	free(sh);
}

struct vr_iostack *vr_iostack_new(struct vr_smtpd *srv, struct vr_iostack_shared *sh,
				  unsigned worker, struct vr_tcp *tcp, char *err, size_t errlen)
{
	struct vr_iostack *st = calloc(1, sizeof(*st));

	if (!st) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	st->srv = srv;
	st->cfg = srv->cfg;
	st->sh = sh;
	st->tcp = tcp;
	st->worker = worker;
	vr_io_set_init(&st->set, sizeof(struct stack_conn), sh->cl);
	for (unsigned i = 0; i < st->cfg->n_listen; i++) {
		const struct vr_listen *l = &st->cfg->listen[i];
		int v6 = l->addr.ss_family == AF_INET6;
		unsigned j = 0;
		while (j < st->nlst && listen_port(lst_line(st, j)) != listen_port(l))
			j++;
		if (j < st->nlst) {
			if (st->lst[j].idx[v6] < 0)
				st->lst[j].idx[v6] = (int)i;
			continue;
		}
		st->lst[j] = (struct stack_listener){ .st = st, .idx = { -1, -1 } };
		st->lst[j].idx[v6] = (int)i;
		int rc = vr_tcp_listen(tcp, listen_port(l), &conn_cb, on_accept, &st->lst[j]);
		if (rc < 0) {
			snprintf(err, errlen, "listen %s: %s", l->text, strerror(-rc));
			for (unsigned k = 0; k < st->nlst; k++)
				vr_tcp_unlisten(tcp, listen_port(lst_line(st, k)));
			vr_io_set_free(&st->set);
			free(st);
			return NULL;
		}
		st->nlst++;
	}
	st->listening = true;
	return st;
}

static void reap(struct vr_iostack *st, uint64_t now)
{
	struct vr_spool *sp = st->srv->spool;

	if (!sp || !vr_spool_done_pending(sp, st->worker))
		return;
	while (vr_spool_reap(sp, st->worker, vr_session_commit_done, REAP_BATCH) == REAP_BATCH)
		;
	struct io_sess *x;
	while ((x = vr_io_set_next_kicked(&st->set)))
		if (x->state == IO_SESS_OPEN)
			conn_service((struct stack_conn *)x, now);
}

static void expire(struct vr_iostack *st, uint64_t now)
{
	struct io_sess *x;

	/* Expiring re-arms a live connection strictly after now. */
	while ((x = vr_io_set_next_expired(&st->set, now))) {
		struct stack_conn *c = (struct stack_conn *)x;
		if (x->state == IO_SESS_LINGER) {
			conn_release(c);
		} else if (vr_io_sess_drained(x, now)) {
			conn_kill(c);
		} else {
			vr_session_tick(c->ss.s, now);
			conn_service(c, now);
		}
	}
}

void vr_iostack_poll(struct vr_iostack *st, uint64_t now)
{
	reap(st, now);
	expire(st, now);
	vr_io_set_bury(&st->set);
}

void vr_iostack_stop(struct vr_iostack *st)
{
	if (!st->listening)
		return;
	for (unsigned i = 0; i < st->nlst; i++)
		vr_tcp_unlisten(st->tcp, listen_port(lst_line(st, i)));
	st->listening = false;
}

unsigned vr_iostack_conns(const struct vr_iostack *st)
{
	return st->set.n;
}

void vr_iostack_free(struct vr_iostack *st)
{
	if (!st)
		return;
	vr_iostack_stop(st);
	while (!LIST_EMPTY(&st->set.conns))
		conn_kill((struct stack_conn *)LIST_FIRST(&st->set.conns));
	vr_io_set_free(&st->set);
	free(st);
}
