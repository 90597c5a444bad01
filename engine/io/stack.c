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
#include "vmrelay/log.h"
#include "connlimit.h"
#include "io_impl.h"
#include "timer.h"

#define REAP_BATCH 256

enum stack_conn_state {
	SC_OPEN,                  /* session running */
	SC_LINGER,                /* session done, FIN sent, dropping input */
	SC_DEAD,                  /* gone; memory reused after this poll */
};

struct stack_conn {
	struct vr_iostack *st;
	struct vr_tcp_conn *tc;   /* NULL once the stack has it (closed, reset) */
	struct vr_session *s;     /* NULL once finished */
	enum stack_conn_state state;
	bool peer_fin;            /* the client's FIN arrived (after its data) */
	bool eof_given;           /* ... and the session was told */
	bool rx_failed;           /* the session refused input: close after flush */
	bool kicked;
	uint64_t *ip_slot;        /* held in the per-client table, or NULL */
	uint64_t drain_until;     /* closing: give up on the client reading by then */
	struct vr_timer timer;
	LIST_ENTRY(stack_conn) link;
	struct stack_conn *next;  /* kicked list, graveyard or free list */
	struct sockaddr_in peer, local;
};

struct stack_listener {
	struct vr_iostack *st;
	unsigned idx;             /* into cfg->listen */
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
	struct vr_timer_heap timers;
	LIST_HEAD(, stack_conn) conns;
	unsigned n_conns;
	struct stack_conn *kicked, *dead, *pool;
	struct stack_listener lst[VR_CONFIG_MAX_LISTEN];
};

static void conn_service(struct stack_conn *c, uint64_t now);

static uint16_t listen_port(const struct vr_listen *l)
{
	return ntohs(((const struct sockaddr_in *)&l->addr)->sin_port);
}

static void addr_text(const struct sockaddr_in *sin, char *out, size_t len)
{
	if (!inet_ntop(AF_INET, &sin->sin_addr, out, (socklen_t)len))
		snprintf(out, len, "?");
}

/* --- connections --- */

static struct stack_conn *conn_alloc(struct vr_iostack *st)
{
	struct stack_conn *c = st->pool;

	if (c)
		st->pool = c->next;
	else if (!(c = malloc(sizeof(*c))))
		return NULL;
	memset(c, 0, sizeof(*c));
	c->st = st;
	return c;
}

/* Ends c on our side: the session is freed (orphaning a commit in flight),
 * the TCP connection reset if we still hold it. */
static void conn_kill(struct stack_conn *c)
{
	struct vr_iostack *st = c->st;

	if (c->state == SC_DEAD)
		return;
	if (c->s)
		vr_session_free(c->s);
	c->s = NULL;
	if (c->tc)
		vr_tcp_abort(c->tc);
	c->tc = NULL;
	vr_timer_cancel(&st->timers, &c->timer);
	if (c->ip_slot)
		vr_connlimit_release(st->sh->cl, c->ip_slot);
	c->ip_slot = NULL;
	LIST_REMOVE(c, link);
	st->n_conns--;
	/* It may sit on the kicked list: reused only after this poll. */
	c->state = SC_DEAD;
	c->next = st->dead;
	st->dead = c;
}

static void conn_bury(struct vr_iostack *st)
{
	while (st->dead) {
		struct stack_conn *c = st->dead;
		st->dead = c->next;
		c->next = st->pool;
		st->pool = c;
	}
}

/* The session's kick: a spool completion gave it output. */
static void conn_kick(void *owner)
{
	struct stack_conn *c = owner;

	if (c->kicked)
		return;
	c->kicked = true;
	c->next = c->st->kicked;
	c->st->kicked = c;
}

static bool conn_closing(const struct stack_conn *c)
{
	return c->rx_failed || vr_session_closing(c->s);
}

/* Hands the session what it has room for; true if it took anything. */
static bool conn_feed(struct stack_conn *c, uint64_t now)
{
	bool took = false;

	while (!conn_closing(c)) {
		size_t space = vr_session_rx_space(c->s);
		const uint8_t *p;
		size_t n = space ? vr_tcp_peek(c->tc, &p) : 0;
		if (n == 0)
			break;
		n = VR_MIN(n, space);
		if (vr_session_rx(c->s, p, n, now) != VR_OK)
			c->rx_failed = true;
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
	vr_session_free(c->s);
	c->s = NULL;
	c->state = SC_LINGER;
	if (vr_tcp_shutdown(c->tc) < 0 || c->peer_fin) {
		conn_release(c);
		return;
	}
	conn_discard(c);
	if (vr_timer_set(&c->st->timers, &c->timer, now + IO_LINGER_MS) < 0)
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
		if ((rc = vr_io_session_flush(c->s, conn_send, c)) < 0) {
			conn_kill(c);
			return;
		}
		if (conn_closing(c))
			break;
		if (conn_feed(c, now))
			continue;
		if (c->peer_fin && !c->eof_given && vr_tcp_readable(c->tc) == 0) {
			c->eof_given = true;
			vr_session_rx_eof(c->s, now);
			continue;
		}
		break;
	}
	bool closing = conn_closing(c);
	if (closing && rc == 0) {
		conn_finish(c, now);
		return;
	}
	uint64_t deadline = vr_io_session_deadline(c->s, closing, &c->drain_until, now);
	if (vr_timer_set(&c->st->timers, &c->timer, deadline) < 0)
		conn_kill(c);
}

/* --- the stack's callbacks --- */

static void on_readable(struct vr_tcp_conn *tc, void *user, uint64_t now)
{
	struct stack_conn *c = user;

	if (!c)
		return;
	if (c->state == SC_LINGER)
		conn_discard(c);
	else
		conn_service(c, now);
}

static void on_writable(struct vr_tcp_conn *tc, void *user, uint64_t now)
{
	struct stack_conn *c = user;

	if (c && c->state == SC_OPEN)
		conn_service(c, now);
}

static void on_peer_closed(struct vr_tcp_conn *tc, void *user, uint64_t now)
{
	struct stack_conn *c = user;

	if (!c)
		return;
	c->peer_fin = true;
	if (c->state == SC_LINGER)
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
	const struct vr_listen *l = &cfg->listen[sl->idx];
	struct vr_tcp_info info;
	char ip[VR_ADDRSTRLEN], reply[512];
	uint64_t *slot;

	vr_tcp_conn_info(tc, &info);
	struct sockaddr_in peer = {
		.sin_family = AF_INET, .sin_port = htons(info.rport),
		.sin_addr.s_addr = htonl(info.raddr),
	};
	struct sockaddr_in local = {
		.sin_family = AF_INET, .sin_port = htons(info.lport),
		.sin_addr.s_addr = htonl(info.laddr),
	};
	addr_text(&peer, ip, sizeof(ip));
	if (!st->listening)
		return -ECONNREFUSED;   /* stopped: a SYN already in the queue */
	if (vr_io_admit(cfg, st->sh->cl, st->n_conns, (const struct sockaddr *)&peer, ip, &slot,
			reply, sizeof(reply)))
		return refuse(tc, l, reply);

	struct stack_conn *c = conn_alloc(st);
	if (!c) {
		vr_log_err("event=accept_failed client=%s error=%s", ip, strerror(ENOMEM));
		vr_connlimit_release(st->sh->cl, slot);
		return -ENOMEM;
	}
	c->tc = tc;
	c->ip_slot = slot;
	c->peer = peer;
	c->local = local;
	struct vr_session_params p = {
		.srv = st->srv,
		.worker = st->worker,
		.peer = (const struct sockaddr *)&c->peer,
		.local = (const struct sockaddr *)&c->local,
		.implicit_tls = l->implicit_tls,
		.kick = conn_kick,
		.owner = c,
	};
	c->s = vr_session_new(&p, now);
	if (!c->s) {
		int e = errno;
		c->next = st->pool;
		st->pool = c;
		vr_log_err("event=accept_failed client=%s error=%s", ip, strerror(e));
		vr_connlimit_release(st->sh->cl, slot);
		return -e;
	}
	c->state = SC_OPEN;
	LIST_INSERT_HEAD(&st->conns, c, link);
	st->n_conns++;
	vr_tcp_set_user(tc, c);
	/* Bytes that came with the handshake reach the session before its first
	 * tick greets the client, so a client talking first is seen to. */
	conn_feed(c, now);
	vr_session_tick(c->s, now);
	conn_service(c, now);
	return 0;
}

/* --- the instance --- */

struct vr_iostack_shared *vr_iostack_shared_new(const struct vr_config *cfg, unsigned n_workers,
						char *err, size_t errlen)
{
	struct vr_iostack_shared *sh = calloc(1, sizeof(*sh));
	unsigned limit = VR_MIN(cfg->max_conn_per_ip, VR_CONNLIMIT_MAX);
	uint64_t clients = (uint64_t)cfg->max_connections * n_workers;

	if (sh)
		sh->cl = vr_connlimit_new(limit, (unsigned)VR_MIN(clients, (uint64_t)UINT32_MAX));
	if (!sh || !sh->cl) {
		snprintf(err, errlen, "connection table: %s", strerror(errno));
		free(sh);
		return NULL;
	}
	if (limit < cfg->max_conn_per_ip)
		vr_log_warn("event=config key=max_conn_per_ip value=%u using=%u",
			    cfg->max_conn_per_ip, limit);
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
	vr_timer_heap_init(&st->timers);
	LIST_INIT(&st->conns);
	for (unsigned i = 0; i < st->cfg->n_listen; i++) {
		const struct vr_listen *l = &st->cfg->listen[i];
		st->lst[i] = (struct stack_listener){ .st = st, .idx = i };
		int rc = vr_tcp_listen(tcp, listen_port(l), &conn_cb, on_accept, &st->lst[i]);
		if (rc < 0) {
			snprintf(err, errlen, "listen %s: %s", l->text, strerror(-rc));
			for (unsigned j = 0; j < i; j++)
				vr_tcp_unlisten(tcp, listen_port(&st->cfg->listen[j]));
			free(st);
			return NULL;
		}
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
	while (st->kicked) {
		struct stack_conn *c = st->kicked;
		st->kicked = c->next;
		c->kicked = false;
		if (c->state == SC_OPEN)
			conn_service(c, now);
	}
}

static void expire(struct vr_iostack *st, uint64_t now)
{
	struct vr_timer *t;

	/* Expiring re-arms a live connection strictly after now. */
	while ((t = vr_timer_first(&st->timers)) && t->deadline <= now) {
		struct stack_conn *c =
			(struct stack_conn *)((char *)t - offsetof(struct stack_conn, timer));
		vr_timer_cancel(&st->timers, t);
		if (c->state == SC_LINGER) {
			conn_release(c);
		} else if (c->drain_until && now >= c->drain_until) {
			conn_kill(c);
		} else {
			vr_session_tick(c->s, now);
			conn_service(c, now);
		}
	}
}

void vr_iostack_poll(struct vr_iostack *st, uint64_t now)
{
	reap(st, now);
	expire(st, now);
	conn_bury(st);
}

void vr_iostack_stop(struct vr_iostack *st)
{
	if (!st->listening)
		return;
	for (unsigned i = 0; i < st->cfg->n_listen; i++)
		vr_tcp_unlisten(st->tcp, listen_port(&st->cfg->listen[i]));
	st->listening = false;
}

unsigned vr_iostack_conns(const struct vr_iostack *st)
{
	return st->n_conns;
}

void vr_iostack_free(struct vr_iostack *st)
{
	if (!st)
		return;
	vr_iostack_stop(st);
	while (!LIST_EMPTY(&st->conns))
		conn_kill(LIST_FIRST(&st->conns));
	st->kicked = NULL;
	conn_bury(st);
	while (st->pool) {
		struct stack_conn *c = st->pool;
		st->pool = c->next;
		free(c);
	}
	vr_timer_heap_free(&st->timers);
	free(st);
}
