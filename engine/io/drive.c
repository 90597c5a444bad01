/*
 * drive.c - what both transports do the same way around a vr_session:
 * conn.c over kernel sockets and stack.c over the userspace TCP differ in
 * how bytes move, not in who is admitted, how a connection's struct is
 * pooled, opened, kicked, ended and reused, how output is handed on, or when
 * a session is woken next. Keeping that here keeps the two in step.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/log.h"
#include "io_impl.h"

struct vr_connlimit *vr_io_connlimit_new(const struct vr_config *cfg, unsigned n_workers)
{
	unsigned limit = cfg->max_conn_per_ip;

	if (limit > VR_CONNLIMIT_MAX) {
		vr_log_warn("event=config key=max_conn_per_ip value=%u using=%u", limit,
			    VR_CONNLIMIT_MAX);
		limit = VR_CONNLIMIT_MAX;
	}
	uint64_t clients = (uint64_t)cfg->max_connections * n_workers;
	return vr_connlimit_new(limit, (unsigned)VR_MIN(clients, (uint64_t)UINT32_MAX));
}

const char *vr_io_admit(const struct vr_config *cfg, const struct io_sess_set *set,
			const struct sockaddr *peer, const char *ip,
			uint64_t **slot, char *reply, size_t len)
{
	struct vr_connlimit *cl = set->cl;
	const char *reason = NULL;
	char q[256];

	*slot = NULL;
	if (set->n >= cfg->max_connections) {
		snprintf(reply, len, "421 4.7.0 %s too many connections\r\n", cfg->hostname);
		reason = "max_connections";
	} else if (cl) {
		int rc = vr_connlimit_acquire(cl, vr_connlimit_key(peer), slot);
		if (rc == 0)
			return NULL;
		snprintf(reply, len, "421 4.7.0 %s too many connections from %s\r\n",
			 cfg->hostname, ip);
		reason = rc == -EUSERS ? "max_conn_per_ip" : "connlimit_table";
		if (rc != -EUSERS)
			vr_log_warn("event=connlimit_table client=%s error=%s", ip, strerror(-rc));
	} else {
		return NULL;
	}
	vr_log_info("event=refused client=%s reason=%s reply=%s", ip, reason,
		    vr_log_quote(q, sizeof(q), reply, strcspn(reply, "\r")));
	return reason;
}

int vr_io_session_flush(struct vr_session *s, vr_io_send_fn *send_fn, void *arg)
{
	const uint8_t *p;
	size_t n;

	while ((n = vr_session_tx_peek(s, &p)) > 0) {
		ssize_t w = send_fn(arg, p, n);
		if (w < 0)
			return -1;
		if (w == 0)
			return 1;
		vr_session_tx_consume(s, (size_t)w);
	}
	return 0;
}

uint64_t vr_io_session_deadline(const struct vr_session *s, bool closing,
				uint64_t *drain_until, uint64_t now)
{
	uint64_t deadline = vr_session_deadline(s);

	if (closing) {
		/* A client that stops reading must not hold a finished session. */
		if (*drain_until == 0)
			*drain_until = now + IO_DRAIN_MS;
		deadline = VR_MIN(deadline, *drain_until);
	}
	return deadline <= now ? now + 1 : deadline;    /* tick next round, never spin */
}

void vr_io_set_init(struct io_sess_set *set, size_t size, struct vr_connlimit *cl)
{
	memset(set, 0, sizeof(*set));
	set->cl = cl;
	set->size = size;
	vr_timer_heap_init(&set->timers);
	LIST_INIT(&set->conns);
}

void vr_io_set_free(struct io_sess_set *set)
{
	set->kicked = NULL;
	vr_io_set_bury(set);
	while (set->pool) {
		struct io_sess *x = set->pool;
		set->pool = x->next;
		free(x);
	}
	vr_timer_heap_free(&set->timers);
}

static void sess_recycle(struct io_sess *x)
{
	x->next = x->set->pool;
	x->set->pool = x;
}

void *vr_io_sess_alloc(struct io_sess_set *set, uint64_t *slot, const char *ip)
{
	struct io_sess *x = set->pool;

	if (x)
		set->pool = x->next;
	else if (!(x = malloc(set->size))) {
		vr_log_err("event=accept_failed client=%s error=%s", ip, strerror(ENOMEM));
		if (slot)
			vr_connlimit_release(set->cl, slot);
		return NULL;
	}
	memset(x, 0, set->size);
	x->set = set;
	x->ip_slot = slot;
	return x;
}

int vr_io_sess_start(struct io_sess *x, const struct vr_session_params *p,
		     const char *ip, uint64_t now)
{
	if ((x->s = vr_session_new(p, now)))
		return 0;
	int e = errno;
	vr_io_sess_abandon(x, ip, e);
	return -e;
}

void vr_io_sess_abandon(struct io_sess *x, const char *ip, int err)
{
	vr_log_err("event=accept_failed client=%s error=%s", ip, strerror(err));
	if (x->s)
		vr_session_free(x->s);
	x->s = NULL;
	if (x->ip_slot)
		vr_connlimit_release(x->set->cl, x->ip_slot);
	x->ip_slot = NULL;
	sess_recycle(x);
}

void vr_io_sess_open(struct io_sess *x)
{
	x->state = IO_SESS_OPEN;
	LIST_INSERT_HEAD(&x->set->conns, x, link);
	x->set->n++;
}

bool vr_io_sess_closing(const struct io_sess *x)
{
	return x->rx_failed || vr_session_closing(x->s);
}

void vr_io_sess_finish(struct io_sess *x)
{
	vr_session_free(x->s);
	x->s = NULL;
	x->state = IO_SESS_LINGER;
}

bool vr_io_sess_drained(const struct io_sess *x, uint64_t now)
{
	return x->drain_until && now >= x->drain_until;
}

void vr_io_sess_end(struct io_sess *x)
{
	struct io_sess_set *set = x->set;

	if (x->state == IO_SESS_DEAD)
		return;
	if (x->s)
		vr_session_free(x->s);  /* orphans a commit in flight */
	x->s = NULL;
	vr_timer_cancel(&set->timers, &x->timer);
	if (x->ip_slot)
		vr_connlimit_release(set->cl, x->ip_slot);
	x->ip_slot = NULL;
	LIST_REMOVE(x, link);
	set->n--;
	x->state = IO_SESS_DEAD;
	x->next = set->dead;
	set->dead = x;
}

void vr_io_sess_kick(void *owner)
{
	struct io_sess *x = owner;

	if (x->kicked)
		return;
	x->kicked = true;
	x->kick_next = x->set->kicked;
	x->set->kicked = x;
}

struct io_sess *vr_io_set_next_kicked(struct io_sess_set *set)
{
	struct io_sess *x = set->kicked;

	if (x) {
		set->kicked = x->kick_next;
		x->kicked = false;
	}
	return x;
}

struct io_sess *vr_io_set_next_expired(struct io_sess_set *set, uint64_t now)
{
	struct vr_timer *t = vr_timer_first(&set->timers);

	if (!t || t->deadline > now)
		return NULL;
	vr_timer_cancel(&set->timers, t);
	return (struct io_sess *)((char *)t - offsetof(struct io_sess, timer));
}

void vr_io_set_bury(struct io_sess_set *set)
{
	while (set->dead) {
		struct io_sess *x = set->dead;
		set->dead = x->next;
		sess_recycle(x);
	}
}

void vr_io_addr_text(const struct sockaddr *sa, char *out, size_t len)
{
	const void *a = sa->sa_family == AF_INET
		? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
		: (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (!inet_ntop(sa->sa_family, a, out, (socklen_t)len))
		snprintf(out, len, "?");
}
