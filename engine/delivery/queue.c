/*
 * queue.c - one delivery thread's queue: messages split into jobs by
 * destination, jobs waiting for their retry time in a timer heap, and for
 * each destination a ring of the VPSes with ready jobs, served in turn.
 *
 * Why a ring per destination: connections to a destination are few, so
 * whoever is first in a FIFO would have them all. A VPS that queues ten
 * thousand messages for gmail.com takes one slot per turn of the ring, and
 * a VPS with one message waits at most one turn. Within a VPS, oldest
 * first.
 *
 * Single-threaded (the owning delivery thread); time is passed in, so the
 * unit tests drive it with a fake clock.
 */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/common.h"
#include "vmrelay/crc32c.h"
#include "vmrelay/delivery.h"
#include "delivery_impl.h"

void vr_dq_init(struct dq *q, const char *smarthost)
{
	memset(q, 0, sizeof(*q));
	vr_timer_heap_init(&q->timers);
	q->smarthost = smarthost && smarthost[0] ? smarthost : NULL;
}

/* --- messages --- */

static size_t str_size(const char *s)
{
	return strlen(s) + 1;
}

static char *str_put(char **p, const char *s)
{
	char *d = *p;
	size_t n = str_size(s);

	memcpy(d, s, n);
	*p += n;
	return d;
}

struct dq_msg *vr_dq_msg_new(const struct vr_spool_msg *m, const struct vr_spool_qstate *st)
{
	size_t text = str_size(m->account) + str_size(m->mail_from) + str_size(m->segment);

	for (unsigned i = 0; i < m->n_rcpts; i++)
		text += str_size(m->rcpts[i]);
	size_t ptrs = m->n_rcpts * sizeof(char *);
	struct dq_msg *d = malloc(sizeof(*d) + ptrs + m->n_rcpts + text);
	if (!d)
		return NULL;
	memset(d, 0, sizeof(*d));
	d->rcpts = (char **)(d + 1);
	d->rcpt_state = (uint8_t *)d->rcpts + ptrs;
	char *p = (char *)d->rcpt_state + m->n_rcpts;
	memcpy(d->qid, m->qid, sizeof(d->qid));
	d->account = str_put(&p, m->account);
	d->mail_from = str_put(&p, m->mail_from);
	d->segment = str_put(&p, m->segment);
	for (unsigned i = 0; i < m->n_rcpts; i++)
		d->rcpts[i] = str_put(&p, m->rcpts[i]);
	d->n_rcpts = m->n_rcpts;
	d->flags = m->flags;
	d->received_us = m->received_us;
	d->size = m->size;
	d->offset = m->offset;
	if (!st) {
		memset(d->rcpt_state, 0, m->n_rcpts);
		d->pending = m->n_rcpts;
		d->held = (m->flags & VR_SPOOL_HOLD) != 0;
		return d;
	}
	memcpy(d->rcpt_state, st->rcpt, m->n_rcpts);
	d->pending = st->pending;
	d->attempts = st->attempts;
	d->next_us = st->next_us;
	d->held = st->held;
	if (st->dkim) {
		if (!(d->dkim = malloc(st->dkim_len + 1))) {
			free(d);
			return NULL;
		}
		memcpy(d->dkim, st->dkim, st->dkim_len);
		d->dkim[st->dkim_len] = '\0';
		d->dkim_len = st->dkim_len;
	}
	return d;
}

static void msg_free(struct dq_msg *m)
{
	free(m->dkim);
	free(m);
}

void vr_dq_msg_release(struct dq *q, struct dq_msg *m)
{
	/* A held message has no job and waits for its release; one whose
	 * DSN could not be queued keeps its recipients for the next start. */
	if (m->jobs || (m->pending && !m->deleted))
		return;
	if (m->prev)
		m->prev->next = m->next;
	else
		q->msgs = m->next;
	if (m->next)
		m->next->prev = m->prev;
	q->n_msgs--;
	if (q->on_done)
		q->on_done(m, q->on_done_arg);
	msg_free(m);
}

/* --- destinations --- */

/* The domain of an address, the part after its last '@' ("" if none:
 * <postmaster> alone, which a relay has nowhere to send). */
static const char *rcpt_domain(const char *rcpt, size_t *len)
{
	const char *at = strrchr(rcpt, '@');
	const char *d = at ? at + 1 : rcpt + strlen(rcpt);

	*len = strlen(d);
	return d;
}

struct dq_dest *vr_dq_dest_get(struct dq *q, const char *rcpt)
{
	char name[256];
	size_t len;
	const char *d = q->smarthost ? q->smarthost : rcpt_domain(rcpt, &len);

	if (q->smarthost)
		len = strlen(d);
	len = VR_MIN(len, sizeof(name) - 1);
	for (size_t i = 0; i < len; i++)
		name[i] = (char)tolower((unsigned char)d[i]);
	name[len] = '\0';

	unsigned h = vr_crc32c(0, name, len) % DQ_HASH;
	for (struct dq_dest *x = q->hash[h]; x; x = x->hnext)
		if (strcmp(x->name, name) == 0)
			return x;
	struct dq_dest *x = calloc(1, sizeof(*x) + len + 1);
	if (!x)
		return NULL;
	memcpy(x->name, name, len + 1);
	x->hnext = q->hash[h];
	q->hash[h] = x;
	return x;
}

static struct dq_acct *acct_get(struct dq_dest *d, const char *id)
{
	struct dq_acct *a;

	for (a = d->accts; a; a = a->next)
		if (strcmp(a->id, id) == 0)
			return a;
	size_t n = strlen(id) + 1;
	if (!(a = calloc(1, sizeof(*a) + n)))
		return NULL;
	memcpy(a->id, id, n);
	a->next = d->accts;
	d->accts = a;
	return a;
}

void vr_dq_kick(struct dq *q, struct dq_dest *d)
{
	if (d->kicked)
		return;
	d->kicked = true;
	d->knext = q->kick;
	q->kick = d;
}

struct dq_dest *vr_dq_kicked(struct dq *q)
{
	struct dq_dest *d = q->kick;

	if (d) {
		q->kick = d->knext;
		d->kicked = false;
	}
	return d;
}

/* Puts j at the end of its VPS's FIFO, and the VPS in the ring. */
static int job_ready(struct dq *q, struct dq_job *j)
{
	struct dq_dest *d = j->dest;
	struct dq_acct *a = acct_get(d, j->msg->account);

	if (!a)
		return -ENOMEM;
	j->next = NULL;
	if (a->tail)
		a->tail->next = j;
	else
		a->head = j;
	a->tail = j;
	if (!a->in_ring) {
		a->in_ring = true;
		a->rr_next = NULL;
		if (d->rr_tail)
			d->rr_tail->rr_next = a;
		else
			d->rr_head = a;
		d->rr_tail = a;
	}
	d->ready++;
	vr_dq_kick(q, d);
	return 0;
}

static struct dq_job *job_pop(struct dq_dest *d)
{
	struct dq_acct *a = d->rr_head;

	if (!a)
		return NULL;
	struct dq_job *j = a->head;
	a->head = j->next;
	if (!a->head)
		a->tail = NULL;
	/* This VPS had its turn: to the back of the ring, or out of it. */
	d->rr_head = a->rr_next;
	if (!d->rr_head)
		d->rr_tail = NULL;
	a->rr_next = NULL;
	a->in_ring = false;
	if (a->head) {
		a->in_ring = true;
		if (d->rr_tail)
			d->rr_tail->rr_next = a;
		else
			d->rr_head = a;
		d->rr_tail = a;
	}
	d->ready--;
	j->next = NULL;
	return j;
}

struct dq_job *vr_dq_job_take(struct dq *q, struct dq_dest *d)
{
	struct dq_job *j;

	while ((j = job_pop(d)) != NULL && j->gen != j->msg->gen) {
		struct dq_msg *m = j->msg;
		vr_dq_job_free(q, j);
		vr_dq_msg_release(q, m);
	}
	if (j)
		d->flying++;
	return j;
}

/* --- jobs --- */

static struct dq_job *job_new(struct dq_msg *m, struct dq_dest *d, unsigned cap)
{
	struct dq_job *j = calloc(1, sizeof(*j) + cap * sizeof(j->rcpt[0]));

	if (j) {
		j->msg = m;
		j->dest = d;
		j->gen = m->gen;
		m->jobs++;
	}
	return j;
}

/* A job waits in the heap keyed by wall ms; 0 fits nothing real. */
static int job_arm(struct dq *q, struct dq_job *j, uint64_t at_us)
{
	int rc = vr_timer_set(&q->timers, &j->timer, at_us / 1000u);

	if (rc == 0)
		j->dest->waiting++;
	return rc;
}

/* Schedules a new job: ready now, or waiting for the message's time. */
static int job_place(struct dq *q, struct dq_job *j, uint64_t now_us)
{
	if (j->msg->next_us > now_us && job_arm(q, j, j->msg->next_us) == 0)
		return 0;
	return job_ready(q, j);
}

int vr_dq_msg_add(struct dq *q, struct dq_msg *m, uint64_t now_us)
{
	m->prev = NULL;
	m->next = q->msgs;
	if (q->msgs)
		q->msgs->prev = m;
	q->msgs = m;
	q->n_msgs++;
	vr_dq_depth_count(q, m, 1);
	return m->held ? 0 : vr_dq_msg_jobs(q, m, now_us);
}

struct dq_msg *vr_dq_msg_find(struct dq *q, const char *qid)
{
	for (struct dq_msg *m = q->msgs; m; m = m->next)
		if (!m->deleted && strcmp(m->qid, qid) == 0)
			return m;
	return NULL;
}

int vr_dq_msg_jobs(struct dq *q, struct dq_msg *m, uint64_t now_us)
{
	/* One job per destination, recipients in envelope order. */
	uint8_t *taken = calloc(m->n_rcpts ? m->n_rcpts : 1, 1);
	if (!taken)
		return -ENOMEM;
	int rc = 0;
	for (unsigned i = 0; rc == 0 && i < m->n_rcpts; i++) {
		if (m->rcpt_state[i] || taken[i])
			continue;
		struct dq_dest *d = vr_dq_dest_get(q, m->rcpts[i]);
		struct dq_job *j = d ? job_new(m, d, m->n_rcpts - i) : NULL;
		if (!j) {
			rc = -ENOMEM;
			break;
		}
		for (unsigned k = i; k < m->n_rcpts; k++) {
			if (m->rcpt_state[k] || taken[k] || (k > i && vr_dq_dest_get(q, m->rcpts[k]) != d))
				continue;
			taken[k] = 1;
			j->rcpt[j->n++] = k;
		}
		if ((rc = job_place(q, j, now_us)) < 0)
			vr_dq_job_free(q, j);
	}
	free(taken);
	return rc;
}

int vr_dq_job_wait(struct dq *q, struct dq_job *j, uint64_t at_us)
{
	j->dest->flying--;
	int rc = job_arm(q, j, at_us);
	if (rc < 0)
		job_ready(q, j);
	return rc;
}

void vr_dq_job_free(struct dq *q, struct dq_job *j)
{
	if (j->timer.pos) {
		vr_timer_cancel(&q->timers, &j->timer);
		j->dest->waiting--;
	}
	j->msg->jobs--;
	free(j);
}

unsigned vr_dq_due(struct dq *q, uint64_t now_us)
{
	struct vr_timer *t;
	unsigned n = 0;

	while ((t = vr_timer_first(&q->timers)) != NULL && t->deadline <= now_us / 1000u) {
		struct dq_job *j = (struct dq_job *)((char *)t - offsetof(struct dq_job, timer));
		vr_timer_cancel(&q->timers, t);
		j->dest->waiting--;
		if (job_ready(q, j) < 0) {
			/* No memory for its VPS: try it again in a second. */
			job_arm(q, j, now_us + 1000000u);
			break;
		}
		n++;
	}
	return n;
}

uint64_t vr_dq_next_due_ms(const struct dq *q)
{
	const struct vr_timer *t = vr_timer_first(&q->timers);

	return t ? t->deadline : UINT64_MAX;
}

void vr_dq_free(struct dq *q)
{
	for (unsigned h = 0; h < DQ_HASH; h++) {
		struct dq_dest *d = q->hash[h], *dn;
		for (; d; d = dn) {
			dn = d->hnext;
			struct dq_acct *a = d->accts, *an;
			for (; a; a = an) {
				an = a->next;
				struct dq_job *j = a->head, *jn;
				for (; j; j = jn) {
					jn = j->next;
					free(j);
				}
				free(a);
			}
			free(d);
		}
	}
	/* Waiting jobs live only in the heap: take its array, then free them. */
	struct vr_timer **v = q->timers.v;
	unsigned n = q->timers.n;
	vr_timer_heap_init(&q->timers);
	for (unsigned i = 0; i < n; i++)
		free((char *)v[i] - offsetof(struct dq_job, timer));
	free(v);
	struct dq_msg *m = q->msgs, *mn;
	for (; m; m = mn) {
		mn = m->next;
		msg_free(m);
	}
	vr_dq_depths_free(&q->depths);
	memset(q, 0, sizeof(*q));
}

uint64_t vr_delivery_backoff_s(unsigned attempts, unsigned first_s, unsigned max_s)
{
	uint64_t s = first_s;

	for (unsigned i = 1; i < attempts && s < max_s; i++)
		s *= 2;
	return VR_MIN(s, (uint64_t)max_s);
}
