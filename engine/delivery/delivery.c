/*
 * delivery.c - the delivery workers' lifecycle: the queue read back from the
 * spool at start, the commit hook that brings new mail in, the threads'
 * start and drained stop, and the counters.
 *
 * A message goes to thread (hash of its queue ID) % workers, at start and
 * when committed alike, so it stays with one thread whatever its
 * destinations and the thread needs no lock for it.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include "vmrelay/clock.h"
#include "vmrelay/crc32c.h"
#include "vmrelay/log.h"
#include "worker.h"

static struct dworker *owner(struct vr_delivery *d, const char *qid)
{
	return &d->w[vr_crc32c(0, qid, strlen(qid)) % d->n];
}

/* --- mail in --- */

/* A committer made m durable: to its thread's inbox. Wait-free for the
 * committer, no lock for the thread; a message we cannot copy now is
 * found again at the next start. */
static void on_commit(const struct vr_spool_msg *m, void *arg)
{
	struct vr_delivery *d = arg;
	/* Counted before anything can fail: a segment holding mail we do not
	 * know about must never be removed. */
	vr_dsegs_add(d->segs, m->segment, m->received_us, true, false);
	struct dq_msg *dm = vr_dq_msg_new(m, NULL);

	if (!dm) {
		vr_log_err("event=queue_failed qid=%s error=\"out of memory\"", m->qid);
		return;
	}
	struct dworker *w = owner(d, m->qid);
	cds_wfcq_node_init(&dm->node);
	/* The enqueue is a full barrier: the thread sees all of dm. Only mail
	 * into an empty inbox wakes the thread (one write per batch, not per
	 * message): a non-empty inbox is still being drained, and the drain
	 * runs until it finds the inbox empty, which includes this message. */
	if (!cds_wfcq_enqueue(&w->inbox_head, &w->inbox_tail, &dm->node))
		vr_dw_wake(w);
}

struct load {
	struct vr_delivery *d;
	uint64_t now, messages, recipients, held;
};

static int load_one(const struct vr_spool_msg *m, const struct vr_spool_qstate *st, void *arg)
{
	struct load *ld = arg;

	bool todo = !st->deleted && st->pending;
	/* A previous run's segment: sealed, nothing more comes into it. */
	if (vr_dsegs_add(ld->d->segs, m->segment, m->received_us, todo, true) < 0)
		return -ENOMEM;
	if (!todo)
		return 0;
	struct dq_msg *dm = vr_dq_msg_new(m, st);
	if (!dm || vr_dq_msg_add(&owner(ld->d, m->qid)->q, dm, ld->now) < 0)
		return -ENOMEM;
	ld->messages++;
	ld->recipients += st->pending;
	ld->held += st->held;
	return 0;
}

/* --- lifecycle --- */

/* Drops finished segments and folds the state logs, so neither grows
 * without bound. A failure costs disk space, not mail: logged only. */
static void compact(const char *dir, uint64_t now)
{
	struct vr_spool_compact_stats cs;
	int rc = vr_spool_compact(dir, now > KEEP_US ? now - KEEP_US : 0, &cs);

	if (rc < 0)
		vr_log_warn("event=spool_compact_failed dir=%s error=\"%s\"", dir, strerror(-rc));
	else
		vr_log_info("event=spool_compacted dir=%s segments_removed=%llu messages_removed=%llu "
			    "logs_folded=%llu events=%llu", dir,
			    (unsigned long long)cs.segments_removed,
			    (unsigned long long)cs.messages_removed,
			    (unsigned long long)cs.logs_replaced, (unsigned long long)cs.events);
}

static int smarthost_parse(struct vr_delivery *d, char *err, size_t errlen)
{
	char host[300];
	const char *hp = d->cfg->smarthost;
	const char *colon = strrchr(hp, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *ai;

	if (!colon || (size_t)(colon - hp) >= sizeof(host)) {
		snprintf(err, errlen, "[delivery] smarthost '%s': not host:port", hp);
		return -EINVAL;
	}
	/* "[v6]:port" or "host:port" */
	bool br = hp[0] == '[' && colon > hp && colon[-1] == ']';
	snprintf(host, sizeof(host), "%.*s", (int)(colon - hp) - (br ? 2 : 0), hp + br);
	int rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "[delivery] smarthost '%s': %s", hp, gai_strerror(rc));
		return -EINVAL;
	}
	memcpy(&d->smarthost, ai->ai_addr, ai->ai_addrlen);
	snprintf(d->smarthost_name, sizeof(d->smarthost_name), "%s", host);
	freeaddrinfo(ai);
	return 0;
}

struct vr_delivery *vr_delivery_new(const struct vr_delivery_conf *conf, char *err,
				    size_t errlen)
{
	const struct vr_config *cfg = conf->cfg;
	struct vr_delivery *d = calloc(1, sizeof(*d));
	int rc = 0;

	if (!d) {
		snprintf(err, errlen, "delivery: out of memory");
		return NULL;
	}
	d->cfg = cfg;
	d->spool = conf->spool;
	d->tls = conf->tls;
	d->n = cfg->delivery_workers;
	d->w = aligned_alloc(VR_CACHE_LINE, d->n * sizeof(*d->w));
	if (!d->w) {
		free(d);
		snprintf(err, errlen, "delivery: out of memory");
		return NULL;
	}
	memset(d->w, 0, d->n * sizeof(*d->w));
	if (!(d->segs = vr_dsegs_new())) {
		snprintf(err, errlen, "delivery: out of memory");
		rc = -ENOMEM;
	}
	if (rc == 0 && cfg->smarthost[0])
		rc = smarthost_parse(d, err, errlen);
	for (unsigned i = 0; rc == 0 && i < d->n; i++) {
		d->w[i].spool_worker = conf->spool_worker + i;
		rc = vr_dw_init(&d->w[i], d, i, err, errlen);
	}
	struct load ld = { .d = d, .now = vr_clock_wall_us() };
	if (rc == 0)
		compact(cfg->spool_dir, ld.now);
	if (rc == 0 && (rc = vr_spool_queue_scan(cfg->spool_dir, load_one, &ld)) < 0)
		snprintf(err, errlen, "spool %s: reading the queue: %s", cfg->spool_dir,
			 strerror(-rc));
	if (rc < 0) {
		for (unsigned i = 0; i < d->n; i++)
			if (d->w[i].d)
				vr_dw_fini(&d->w[i]);
		vr_dsegs_free(d->segs);
		free(d->w);
		free(d);
		return NULL;
	}
	vr_log_info("event=queue_loaded messages=%llu recipients=%llu held=%llu workers=%u "
		    "route=%s", (unsigned long long)ld.messages, (unsigned long long)ld.recipients,
		    (unsigned long long)ld.held, d->n, cfg->smarthost[0] ? cfg->smarthost : "mx");
	vr_spool_on_commit(d->spool, on_commit, d);
	return d;
}

int vr_delivery_start(struct vr_delivery *d)
{
	char name[16];

	for (unsigned i = 0; i < d->n; i++) {
		int rc = pthread_create(&d->w[i].thread, NULL, vr_dw_main, &d->w[i]);
		if (rc != 0) {
			/* All or none: stop the ones started. */
			d->started = i;
			d->running = true;
			vr_delivery_stop(d, 0);
			return -rc;
		}
		snprintf(name, sizeof(name), "vr-deliver-%u", i % 1000);
		pthread_setname_np(d->w[i].thread, name);
	}
	d->started = d->n;
	d->running = true;
	return 0;
}

void vr_delivery_stop(struct vr_delivery *d, unsigned drain_ms)
{
	if (!d || !d->running)
		return;
	d->drain_ms = drain_ms;
	/* Release: the threads' acquire load sees drain_ms. */
	__atomic_store_n(&d->stop, 1, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < d->started; i++)
		vr_dw_wake(&d->w[i]);
	for (unsigned i = 0; i < d->started; i++)
		pthread_join(d->w[i].thread, NULL);
	d->started = 0;
	d->running = false;
}

void vr_delivery_free(struct vr_delivery *d)
{
	if (!d)
		return;
	vr_delivery_stop(d, 0);
	for (unsigned i = 0; i < d->n; i++)
		vr_dw_fini(&d->w[i]);
	vr_dsegs_free(d->segs);
	free(d->w);
	free(d);
}

/* Hands one command to w and waits for it until deadline (monotonic ms). */
static int command_one(struct dworker *w, enum vr_delivery_op op, const char *qid,
		       uint64_t deadline)
{
	struct dcmd *c = calloc(1, sizeof(*c));

	if (!c || (c->done_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
		free(c);
		return -ENOMEM;
	}
	c->op = op;
	snprintf(c->qid, sizeof(c->qid), "%s", qid ? qid : "");
	c->refs = 2;
	cds_wfcq_node_init(&c->node);
	cds_wfcq_enqueue(&w->cmd_head, &w->cmd_tail, &c->node);
	vr_dw_wake(w);

	struct pollfd pfd = { .fd = c->done_fd, .events = POLLIN };
	uint64_t now;
	int rc = -ETIMEDOUT;
	while ((now = vr_clock_ms()) < deadline) {
		int n = poll(&pfd, 1, (int)VR_MIN(deadline - now, 1000u));
		if (n == 1) {
			rc = __atomic_load_n(&c->result, __ATOMIC_ACQUIRE);
			break;
		}
	}
	vr_dcmd_put(c);
	return rc;
}

int vr_delivery_command(struct vr_delivery *d, enum vr_delivery_op op, const char *qid,
			unsigned timeout_ms)
{
	uint64_t deadline = vr_clock_ms() + timeout_ms;

	if (!d->running)
		return -ESHUTDOWN;
	if (op != VR_DELIVERY_FLUSH)
		return qid && strlen(qid) < VR_QID_MAX ? command_one(owner(d, qid), op, qid, deadline)
						      : -ENOENT;
	for (unsigned i = 0; i < d->n; i++) {
		int rc = command_one(&d->w[i], op, NULL, deadline);
		if (rc < 0)
			return rc;
	}
	return 0;
}

void vr_delivery_stats(const struct vr_delivery *d, struct vr_delivery_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (unsigned i = 0; i < d->n; i++) {
		const struct vr_delivery_stats *s = &d->w[i].stats;
		st->queued += __atomic_load_n(&s->queued, __ATOMIC_RELAXED);
		st->sent += __atomic_load_n(&s->sent, __ATOMIC_RELAXED);
		st->deferred += __atomic_load_n(&s->deferred, __ATOMIC_RELAXED);
		st->bounced += __atomic_load_n(&s->bounced, __ATOMIC_RELAXED);
		st->dsns += __atomic_load_n(&s->dsns, __ATOMIC_RELAXED);
		st->in_flight += __atomic_load_n(&s->in_flight, __ATOMIC_RELAXED);
		st->connections += __atomic_load_n(&s->connections, __ATOMIC_RELAXED);
	}
}
