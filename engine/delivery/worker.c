/*
 * worker.c - one delivery thread: an epoll loop over the inbox eventfd (new
 * mail from the committers), the operator's commands, the resolver, the
 * spool's completions (our DSNs) and the outbound connections (conn.c);
 * the queue (queue.c) says which job goes next, outcome.c what becomes of
 * it. Destinations resolve their MX here and open connections as their
 * ready jobs call for, up to CONN_MAX each.
 *
 * Durability: state records are appended as outcomes arrive and written
 * to the state log once per loop iteration (vr_spool_log_flush); the
 * log's syncer makes them durable in group commits, one fdatasync per
 * 10 ms at most, while the loop goes on: an fdatasync here would hold
 * every connection of the thread for its milliseconds. Operator commands
 * still wait for theirs.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#include "vmrelay/clock.h"
#include "vmrelay/log.h"
#include "worker.h"

/* Per destination and thread, like Postfix's default_destination_
 * concurrency_limit (20) scaled to fewer, busier connections. */
#define CONN_MAX   8u
#define MX_TTL_MS  60000u       /* reuse an MX answer this long */
#define EP_EVENTS  64

/* epoll data for the fixed fds; a connection's is its pointer. */
enum { EP_INBOX = 1, EP_RESOLVER, EP_SPOOL };

/* --- destinations --- */

struct mx_query {
	struct dworker *w;
	struct dq_dest *d;
};

static void mx_answer(void *arg, struct vr_mx_result *res)
{
	struct mx_query *mq = arg;
	struct dworker *w = mq->w;
	struct dq_dest *d = mq->d;

	free(mq);
	d->resolving = false;
	vr_resolve_free(d->mx);
	d->mx = res;
	/* TLSA answers belong to the hosts of one MX answer. */
	vr_dw_dane_free(d->dane);
	d->dane = vr_dw_dane_new(res->n_hosts);
	d->mx_gen++;
	d->mx_expires_ms = vr_clock_ms() + MX_TTL_MS;
	d->next_host = d->next_addr = 0;
	vr_dq_kick(&w->q, d);
}

/* Fails d's jobs the way its MX answer says, or returns false if the
 * answer allows delivery. */
static bool mx_refuses(struct dworker *w, struct dq_dest *d)
{
	const struct vr_mx_result *res = d->mx;
	struct vr_smtpc_reply r;

	switch (res->status) {
	case VR_RESOLVE_OK:
		return false;
	case VR_RESOLVE_NULLMX:
		vr_dw_reply_make(&r, 556, "5.1.10", "%s", "the recipient domain accepts no mail (null MX)");
		break;
	case VR_RESOLVE_NXDOMAIN:
	case VR_RESOLVE_NODATA:
		vr_dw_reply_make(&r, 550, "5.1.2", "%s", res->why[0] ? res->why :
			   "the recipient domain has no mail server");
		break;
	default:
		vr_dw_reply_make(&r, 451, "4.4.3", "%s", res->why[0] ? res->why : "DNS lookup failed");
		/* Ask again at the next try, not in a minute. */
		d->mx_expires_ms = 0;
		break;
	}
	vr_dw_dest_fail(w, d, &r);
	return true;
}

/* Opens what connections d's ready jobs call for. */
static void dest_pump(struct dworker *w, struct dq_dest *d)
{
	if (w->stopping)
		return;
	if (!w->q.smarthost && d->ready) {
		if (d->resolving)
			return;
		if (!d->mx || vr_clock_ms() >= d->mx_expires_ms) {
			struct mx_query *mq = malloc(sizeof(*mq));
			if (mq) {
				*mq = (struct mx_query){ w, d };
				if (vr_resolve_mx(w->res, d->name, mx_answer, mq) == 0) {
					d->resolving = true;
					return;
				}
				free(mq);
			}
			struct vr_smtpc_reply r;
			vr_dw_reply_make(&r, 451, "4.4.3", "cannot look up the MX of %s", d->name);
			vr_dw_dest_fail(w, d, &r);
			return;
		}
		if (mx_refuses(w, d))
			return;
	}
	/* Idle connections first: no handshake needed. */
	for (struct dconn *c = w->conns; c && d->ready; c = c->next)
		if (c->dest == d && c->parked)
			vr_dw_conn_unpark(c);
	while (d->ready > d->idle && d->conns < CONN_MAX) {
		unsigned before = d->conns;
		vr_dw_conn_open(w, d);
		if (d->conns == before)
			break;              /* deferred everything, or out of sockets */
	}
}

/* --- operator commands --- */

void vr_dcmd_put(struct dcmd *c)
{
	/* acq_rel: the last owner sees everything the other wrote. */
	if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		close(c->done_fd);
		free(c);
	}
}

static int cmd_apply(struct dworker *w, const struct dcmd *c)
{
	struct dq_msg *m = c->op == VR_DELIVERY_FLUSH ? NULL : vr_dq_msg_find(&w->q, c->qid);

	if (c->op != VR_DELIVERY_FLUSH && (!m || !m->pending))
		return -ENOENT;
	switch (c->op) {
	case VR_DELIVERY_HOLD:
		if (m->held)
			return -EALREADY;
		vr_dq_depth_count(&w->q, m, -1);
		m->held = true;
		vr_dq_depth_count(&w->q, m, 1);
		m->gen++;               /* its jobs are dropped as they come up */
		vr_dw_record(w, m, VR_STATE_HELD, VR_SPOOL_ALL, 0, "");
		break;
	case VR_DELIVERY_RELEASE:
		if (!m->held)
			return -EALREADY;
		vr_dq_depth_count(&w->q, m, -1);
		m->held = false;
		vr_dq_depth_count(&w->q, m, 1);
		m->next_us = 0;
		vr_dw_record(w, m, VR_STATE_RELEASED, VR_SPOOL_ALL, 0, "");
		return vr_dq_msg_jobs(&w->q, m, wall_us());
	case VR_DELIVERY_DELETE:
		vr_dq_depth_count(&w->q, m, -1);
		m->deleted = true;
		m->gen++;
		vr_dw_record(w, m, VR_STATE_DELETED, VR_SPOOL_ALL, 0, "");
		vr_dq_msg_release(&w->q, m);
		break;
	case VR_DELIVERY_FLUSH:
		vr_dq_due(&w->q, UINT64_MAX);
		break;
	}
	return 0;
}

static const char *const op_names[] = {
	[VR_DELIVERY_HOLD] = "hold", [VR_DELIVERY_RELEASE] = "release",
	[VR_DELIVERY_DELETE] = "delete", [VR_DELIVERY_FLUSH] = "flush",
};

/* Runs the queued commands; each is durable before its caller hears. */
static void cmds_run(struct dworker *w)
{
	struct cds_wfcq_node *node;
	uint64_t one = 1;

	while ((node = __cds_wfcq_dequeue_blocking(&w->cmd_head, &w->cmd_tail)) != NULL) {
		struct dcmd *c = caa_container_of(node, struct dcmd, node);
		if (c->run) {
			c->run(w, c);
			continue;
		}
		int rc = cmd_apply(w, c);
		if (rc == 0 && vr_spool_log_sync(w->log) < 0)
			rc = -EIO;
		vr_log_info("event=queue_command op=%s qid=%s worker=%u result=\"%s\"",
			    op_names[c->op], c->op == VR_DELIVERY_FLUSH ? "-" : c->qid, w->id,
			    rc ? strerror(-rc) : "done");
		/* Release, paired with the caller's acquire after the eventfd. */
		__atomic_store_n(&c->result, rc, __ATOMIC_RELEASE);
		ssize_t r = write(c->done_fd, &one, sizeof(one));
		(void)r;                /* an eventfd write only fails when full */
		vr_dcmd_put(c);
	}
}

/* --- spool segments done with --- */

#define SWEEP_MS 5000u          /* how often: a short walk under a mutex */

static void msg_done(const struct dq_msg *m, void *arg)
{
	struct dworker *w = arg;

	vr_dsegs_done(w->d->segs, m->segment);
}

/* Removes a spool file: a segment or a state log, by its name inside dir. */
static void segment_remove(const char *name, void *arg)
{
	struct dworker *w = arg;
	char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", w->d->cfg->spool_dir, name);
	if (unlink(path) < 0 && errno != ENOENT)
		vr_log_warn("event=spool_remove_failed file=%s error=\"%s\"", name, strerror(errno));
	else
		vr_log_info("event=spool_removed file=%s", name);
}

static void log_sealed(const char *name, void *arg)
{
	struct dworker *w = arg;
	struct sealed_log *s = calloc(1, sizeof(*s));

	/* Not remembered (no memory): it stays until the next start's
	 * compaction folds it. */
	if (!s || strlen(name) >= sizeof(s->name)) {
		free(s);
		return;
	}
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->max_seq = vr_dsegs_max_seq(w->d->segs);
	s->next = w->sealed;
	w->sealed = s;
}

/* Once a minute: thread 0 removes the sealed segments whose mail is all
 * done and older than the quota replay's day; every thread removes its
 * sealed state logs that speak of no segment left. */
static void segments_sweep(struct dworker *w)
{
	uint64_t now = vr_clock_ms(), wall = wall_us();

	if (now < w->next_sweep_ms)
		return;
	w->next_sweep_ms = now + SWEEP_MS;
	/* Segments no longer read from: closed, so a removed one's space
	 * comes back. */
	vr_spool_segcache_trim(w->segfiles, now);
	if (w->id == 0)
		vr_dsegs_sweep(w->d->segs, wall > KEEP_US ? wall - KEEP_US : 0, segment_remove, w);
	for (struct sealed_log **pp = &w->sealed; *pp;) {
		struct sealed_log *s = *pp;
		if (!vr_dsegs_gone_upto(w->d->segs, s->max_seq)) {
			pp = &s->next;
			continue;
		}
		*pp = s->next;
		segment_remove(s->name, w);
		free(s);
	}
}

/* --- the loop --- */

static void inbox_drain(struct dworker *w)
{
	struct cds_wfcq_node *node;
	uint64_t now = wall_us();

	while ((node = __cds_wfcq_dequeue_blocking(&w->inbox_head, &w->inbox_tail)) != NULL) {
		struct dq_msg *m = caa_container_of(node, struct dq_msg, node);
		if (vr_dq_msg_add(&w->q, m, now) < 0)
			vr_log_err("event=queue_failed qid=%s error=\"out of memory\"", m->qid);
	}
}

/* Re-arms each connection's epoll interest and frees the finished ones. */
static void conns_sweep(struct dworker *w, uint64_t *deadline)
{
	struct dconn *c = w->conns, *next;
	uint64_t now = vr_clock_ms();

	for (; c; c = next) {
		next = c->next;
		if (c->parked && (now >= c->park_until || w->stopping))
			vr_dw_conn_park_end(c);
		if (c->parked)
			*deadline = VR_MIN(*deadline, c->park_until);
		vr_smtpc_conn_flush(c->k, now);
		if (vr_smtpc_conn_done(c->k)) {
			vr_dw_conn_free(w, c);
			continue;
		}
		uint32_t ev = vr_smtpc_conn_events(c->k);
		if (ev != c->events) {
			struct epoll_event e = { .events = ev, .data.ptr = c };
			epoll_ctl(w->epfd, EPOLL_CTL_MOD, vr_smtpc_conn_fd(c->k), &e);
			c->events = ev;
		}
		*deadline = VR_MIN(*deadline, vr_smtpc_conn_deadline(c->k));
	}
}

static void conns_tick(struct dworker *w, uint64_t now_ms)
{
	for (struct dconn *c = w->conns; c; c = c->next)
		if (vr_smtpc_conn_deadline(c->k) <= now_ms)
			vr_smtpc_conn_io(c->k, 0, now_ms);
}

static void stop_begin(struct dworker *w)
{
	w->stopping = true;
	w->drain_until_ms = vr_clock_ms() + w->d->drain_ms;
	for (struct dconn *c = w->conns; c; c = c->next)
		if (!c->att)
			vr_dw_conn_park_end(c);
}

/* The epoll timeout: the earliest of the connections, the retries, the
 * resolver and the drain. */
static int wait_ms(struct dworker *w, uint64_t conn_deadline)
{
	uint64_t now = vr_clock_ms(), due = vr_dq_next_due_ms(&w->q);
	uint64_t t = conn_deadline;

	if (w->q.kick)
		return 0;               /* a destination freed up while we swept */

	if (due != UINT64_MAX) {
		uint64_t wall = wall_us() / 1000u;
		t = VR_MIN(t, now + (due > wall ? due - wall : 0));
	}
	if (w->stopping)
		t = VR_MIN(t, w->drain_until_ms);
	int rt = w->res ? vr_resolver_timeout_ms(w->res) : -1;
	if (rt >= 0)
		t = VR_MIN(t, now + (uint64_t)rt);
	if (t == UINT64_MAX)
		return -1;
	return t > now ? (int)VR_MIN(t - now, 60000u) : 0;
}

void *vr_dw_main(void *arg)
{
	struct dworker *w = arg;
	struct epoll_event ev[EP_EVENTS];

	rcu_register_thread();
	rcu_thread_offline();
	for (;;) {
		if (!w->stopping && __atomic_load_n(&w->d->stop, __ATOMIC_ACQUIRE))
			stop_begin(w);
		inbox_drain(w);
		cmds_run(w);
		segments_sweep(w);
		vr_dq_due(&w->q, wall_us());
		struct dq_dest *d;
		while ((d = vr_dq_kicked(&w->q)) != NULL)
			dest_pump(w, d);
		uint64_t deadline = UINT64_MAX;
		conns_sweep(w, &deadline);
		/* Everything this round decided, durable within an fdatasync. */
		if (vr_spool_log_flush(w->log) < 0)
			vr_log_err("event=state_sync_failed worker=%u", w->id);
		__atomic_store_n(&w->stats.queued, w->q.n_msgs, __ATOMIC_RELAXED);
		if (w->stopping && ((!w->conns && !w->dsn_inflight) ||
				    vr_clock_ms() >= w->drain_until_ms))
			break;

		int n = epoll_wait(w->epfd, ev, EP_EVENTS, wait_ms(w, deadline));
		uint64_t now = vr_clock_ms();
		for (int i = 0; i < n; i++) {
			uint64_t tag = ev[i].data.u64;
			if (tag == EP_INBOX) {
				uint64_t v;
				ssize_t r = read(w->inbox_fd, &v, sizeof(v));
				(void)r;    /* EAGAIN: a racing wake already read it */
			} else if (tag == EP_RESOLVER) {
				vr_resolver_process(w->res);
			} else if (tag == EP_SPOOL) {
				vr_spool_reap(w->d->spool, w->spool_worker, vr_dw_dsn_done, 256);
			} else {
				struct dconn *c = ev[i].data.ptr;
				vr_smtpc_conn_io(c->k, ev[i].events, now);
			}
		}
		if (w->res && vr_resolver_timeout_ms(w->res) == 0)
			vr_resolver_process(w->res);
		conns_tick(w, now);
	}
	/* Dropped in flight: tried again after the restart. */
	while (w->conns)
		vr_dw_conn_free(w, w->conns);
	if (vr_spool_log_sync(w->log) < 0)
		vr_log_err("event=state_sync_failed worker=%u", w->id);
	rcu_thread_online();
	rcu_unregister_thread();
	return NULL;
}

void vr_dw_wake(struct dworker *w)
{
	uint64_t one = 1;
	ssize_t r = write(w->inbox_fd, &one, sizeof(one));

	(void)r;                      /* fails only when already readable */
}

static int ep_add(struct dworker *w, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	return epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int vr_dw_init(struct dworker *w, struct vr_delivery *d, unsigned id, char *err, size_t errlen)
{
	const struct vr_config *cfg = d->cfg;
	int rc;

	w->d = d;
	w->id = id;
	w->inbox_fd = w->epfd = -1;
	__cds_wfcq_init(&w->inbox_head, &w->inbox_tail);
	__cds_wfcq_init(&w->cmd_head, &w->cmd_tail);
	vr_dq_init(&w->q, cfg->smarthost);
	w->q.on_done = msg_done;
	w->q.on_done_arg = w;
	if (!(w->log = vr_spool_log_open(cfg->spool_dir, id, err, errlen)))
		return -errno;
	if (!(w->segfiles = vr_spool_segcache_new(cfg->spool_dir))) {
		rc = -errno;
		snprintf(err, errlen, "delivery thread %u: spool %s: %s", id, cfg->spool_dir,
			 strerror(-rc));
		return rc;
	}
	vr_spool_log_on_seal(w->log, log_sealed, w);
	w->inbox_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->inbox_fd < 0 || w->epfd < 0) {
		rc = -errno;
		snprintf(err, errlen, "delivery thread %u: %s", id, strerror(-rc));
		return rc;
	}
	if (!cfg->smarthost[0]) {
		const struct vr_resolver_conf rconf = {
			.server = cfg->resolver, .trust_anchor = cfg->trust_anchor,
			.timeout_ms = cfg->dns_timeout_ms,
		};
		if (!(w->res = vr_resolver_new(&rconf, err, errlen)))
			return -EINVAL;
	}
	if ((rc = ep_add(w, w->inbox_fd, EP_INBOX)) < 0 ||
	    (w->res && (rc = ep_add(w, vr_resolver_fd(w->res), EP_RESOLVER)) < 0) ||
	    (rc = ep_add(w, vr_spool_done_fd(d->spool, w->spool_worker), EP_SPOOL)) < 0) {
		snprintf(err, errlen, "delivery thread %u: epoll: %s", id, strerror(-rc));
		return rc;
	}
	return 0;
}

void vr_dw_fini(struct dworker *w)
{
	struct cds_wfcq_node *node;

	/* Commands that came too late: their callers hear -ESHUTDOWN. */
	while ((node = __cds_wfcq_dequeue_blocking(&w->cmd_head, &w->cmd_tail)) != NULL) {
		struct dcmd *c = caa_container_of(node, struct dcmd, node);
		uint64_t one = 1;
		c->result = -ESHUTDOWN;
		ssize_t r = write(c->done_fd, &one, sizeof(one));
		(void)r;
		vr_dcmd_put(c);
	}
	/* Mail that came in after the thread stopped: the spool has it. */
	while ((node = __cds_wfcq_dequeue_blocking(&w->inbox_head, &w->inbox_tail)) != NULL) {
		struct dq_msg *m = caa_container_of(node, struct dq_msg, node);
		free(m->dkim);
		free(m);
	}
	for (unsigned h = 0; h < DQ_HASH; h++)
		for (struct dq_dest *d = w->q.hash[h]; d; d = d->hnext) {
			vr_resolve_free(d->mx);
			vr_dw_dane_free(d->dane);
			d->mx = d->dane = NULL;
		}
	vr_dq_free(&w->q);
	if (w->log)
		vr_spool_log_on_seal(w->log, NULL, NULL);   /* closing may roll it: no more notes */
	for (struct sealed_log *s = w->sealed, *n; s; s = n) {
		n = s->next;
		free(s);
	}
	vr_resolver_free(w->res);
	vr_spool_segcache_free(w->segfiles);
	vr_spool_log_close(w->log);
	if (w->inbox_fd >= 0)
		close(w->inbox_fd);
	if (w->epfd >= 0)
		close(w->epfd);
}
