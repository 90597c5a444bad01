/*
 * snapshot.c - the operator's read-only look at the delivery queue
 * (vr_delivery_walk): what `queue list` and `vps show` count and list,
 * taken from the delivery threads' memory.
 *
 * Why not the spool: reading it back means reading every segment and state
 * log; with 20,000 messages queued that took the control thread 40-120 ms
 * a command and cost the SMTP side its disk (issue 6). The threads hold
 * the same queue in memory, and walking a list of a few thousand messages
 * costs one of them well under a millisecond.
 *
 * How: like vr_delivery_command, a dcmd in each thread's command queue in
 * turn. The caller's fn runs in the delivery thread and writes the
 * caller's memory, so a caller that gives up must know fn will not run
 * after it returned: the thread claims the walk (QUEUED -> RUNNING) before
 * it starts, a caller that times out abandons it (QUEUED -> ABANDONED);
 * whoever loses gives way, and a caller that lost waits for the walk to
 * end (it is short).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "worker.h"

enum { WALK_QUEUED, WALK_RUNNING, WALK_ABANDONED };

struct walk {
	vr_delivery_walk_fn *fn;
	void *arg;
};

static bool claim(struct dcmd *c, int to)
{
	int expect = WALK_QUEUED;

	return __atomic_compare_exchange_n(&c->claim, &expect, to, false, __ATOMIC_ACQ_REL,
					   __ATOMIC_ACQUIRE);
}

/* The thread's messages as the spool's reader would give them. */
static int walk_msgs(struct dworker *w, const struct walk *k)
{
	for (struct dq_msg *m = w->q.msgs; m; m = m->next) {
		if (m->deleted || !m->pending)
			continue;
		struct vr_spool_msg sm = {
			.account = m->account, .mail_from = m->mail_from, .rcpts = m->rcpts,
			.n_rcpts = m->n_rcpts, .flags = m->flags, .received_us = m->received_us,
			.size = m->size, .segment = m->segment, .offset = m->offset,
		};
		struct vr_spool_qstate st = {
			.rcpt = m->rcpt_state, .pending = m->pending, .attempts = m->attempts,
			.next_us = m->next_us, .held = m->held, .dkim = m->dkim,
			.dkim_len = m->dkim_len,
		};
		memcpy(sm.qid, m->qid, sizeof(sm.qid));
		int rc = k->fn(&sm, &st, k->arg);
		if (rc)
			return rc;
	}
	return 0;
}

/* In the delivery thread (cmds_run). */
static void walk_run(struct dworker *w, struct dcmd *c)
{
	uint64_t one = 1;
	int rc = claim(c, WALK_RUNNING) ? walk_msgs(w, c->arg) : -ETIMEDOUT;

	/* Release, paired with the caller's acquire after the eventfd. */
	__atomic_store_n(&c->result, rc, __ATOMIC_RELEASE);
	ssize_t r = write(c->done_fd, &one, sizeof(one));
	(void)r;                        /* an eventfd write only fails when full */
	vr_dcmd_put(c);
}

/* c's answer, or -ETIMEDOUT at deadline (monotonic ms). */
static int wait_done(struct dcmd *c, uint64_t deadline)
{
	struct pollfd pfd = { .fd = c->done_fd, .events = POLLIN };
	uint64_t now;

	while ((now = vr_clock_ms()) < deadline)
		if (poll(&pfd, 1, (int)VR_MIN(deadline - now, 1000u)) == 1)
			return __atomic_load_n(&c->result, __ATOMIC_ACQUIRE);
	return -ETIMEDOUT;
}

static int walk_one(struct dworker *w, struct walk *k, uint64_t deadline)
{
	struct dcmd *c = calloc(1, sizeof(*c));

	if (!c || (c->done_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
		free(c);
		return -ENOMEM;
	}
	c->run = walk_run;
	c->arg = k;
	c->refs = 2;
	cds_wfcq_node_init(&c->node);
	cds_wfcq_enqueue(&w->cmd_head, &w->cmd_tail, &c->node);
	vr_dw_wake(w);
	int rc = wait_done(c, deadline);
	if (rc == -ETIMEDOUT && !claim(c, WALK_ABANDONED))
		rc = wait_done(c, UINT64_MAX);  /* walking: fn uses k until it ends */
	vr_dcmd_put(c);
	return rc;
}

int vr_delivery_walk(struct vr_delivery *d, vr_delivery_walk_fn *fn, void *arg,
		     unsigned timeout_ms)
{
	uint64_t deadline = vr_clock_ms() + timeout_ms;
	struct walk k = { .fn = fn, .arg = arg };

	if (!d->running)
		return -ESHUTDOWN;
	for (unsigned i = 0; i < d->n; i++) {
		int rc = walk_one(&d->w[i], &k, deadline);
		if (rc)
			return rc;
	}
	return 0;
}
