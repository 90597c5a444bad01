/*
 * depth.c - one delivery thread's queue depth per VPS (messages, pending
 * recipients, held messages), kept as the queue changes so that `vps show`
 * reads it from any thread without asking the delivery thread anything
 * (issue 6: counting by reading the spool back took 40-60 ms a command
 * with 20,000 messages queued, and a walk of the thread's queue stalls its
 * deliveries for as long as the walk takes).
 *
 * A message counts while it is not deleted and has a recipient pending, as
 * queue list shows it. The owning thread takes a message's weight out
 * before it changes (a recipient final, a hold, a release, a delete) and
 * puts it back after (vr_dq_depth_count).
 *
 * The table: open addressing with linear probing, a slot written once by
 * the owning thread (release) and never emptied, so a reader (acquire)
 * that meets an empty slot knows the VPS is not there, without a lock. The
 * counters have one writer each and are read a moment apart from each
 * other. The totals over every VPS are kept beside them. A VPS that finds
 * no room (more of them than DQ_DEPTH_SLOTS / 2,
 * or no memory) makes the table incomplete for good: readers then count
 * another way (vr_delivery_walk).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/crc32c.h"
#include "worker.h"

#define MAX_USED (DQ_DEPTH_SLOTS / 2)   /* probes stay short */

static unsigned slot_of(const char *id, size_t len)
{
	return vr_crc32c(0, id, len) & (DQ_DEPTH_SLOTS - 1);
}

/* The owning thread: id's counters, made if new; NULL when full. */
static struct dq_depth *depth_get(struct dq_depths *t, const char *id)
{
	size_t len = strlen(id);
	unsigned i = slot_of(id, len);
	struct dq_depth *x;

	for (; (x = t->slot[i]) != NULL; i = (i + 1) & (DQ_DEPTH_SLOTS - 1))
		if (strcmp(x->id, id) == 0)
			return x;
	if (t->used >= MAX_USED || !(x = calloc(1, sizeof(*x) + len + 1))) {
		__atomic_store_n(&t->incomplete, true, __ATOMIC_RELAXED);
		return NULL;
	}
	memcpy(x->id, id, len + 1);
	t->used++;
	/* Release: a reader that sees the slot sees its id. */
	__atomic_store_n(&t->slot[i], x, __ATOMIC_RELEASE);
	return x;
}

static void add(uint64_t *c, int64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + (uint64_t)n, __ATOMIC_RELAXED);
}

static void read_into(const uint64_t *messages, const uint64_t *recipients, const uint64_t *held,
		      struct vr_delivery_depth *out)
{
	out->messages += __atomic_load_n(messages, __ATOMIC_RELAXED);
	out->recipients += __atomic_load_n(recipients, __ATOMIC_RELAXED);
	out->held += __atomic_load_n(held, __ATOMIC_RELAXED);
}

static void count(uint64_t *messages, uint64_t *recipients, uint64_t *held,
		  const struct dq_msg *m, int sign)
{
	add(messages, sign);
	add(recipients, (int64_t)sign * m->pending);
	add(held, m->held ? sign : 0);
}

void vr_dq_depth_count(struct dq *q, const struct dq_msg *m, int sign)
{
	struct dq_depths *t = &q->depths;

	if (m->deleted || !m->pending)
		return;
	count(&t->messages, &t->recipients, &t->held, m, sign);
	struct dq_depth *x = depth_get(t, m->account);
	if (x)
		count(&x->messages, &x->recipients, &x->held, m, sign);
}

int vr_dq_depth_read(const struct dq_depths *t, const char *id, struct vr_delivery_depth *out)
{
	const struct dq_depth *x;

	if (!id) {
		read_into(&t->messages, &t->recipients, &t->held, out);
		return 0;
	}
	if (__atomic_load_n(&t->incomplete, __ATOMIC_RELAXED))
		return -ENOSPC;
	size_t len = strlen(id);
	for (unsigned i = slot_of(id, len);
	     (x = __atomic_load_n(&t->slot[i], __ATOMIC_ACQUIRE)) != NULL;
	     i = (i + 1) & (DQ_DEPTH_SLOTS - 1)) {
		if (strcmp(x->id, id) == 0) {
			read_into(&x->messages, &x->recipients, &x->held, out);
			break;
		}
	}
	return 0;
}

void vr_dq_depths_free(struct dq_depths *t)
{
	for (unsigned i = 0; i < DQ_DEPTH_SLOTS; i++)
		free(t->slot[i]);
	memset(t, 0, sizeof(*t));
}

int vr_delivery_depth(const struct vr_delivery *d, const char *vps,
		      struct vr_delivery_depth *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < d->n; i++)
		if (vr_dq_depth_read(&d->w[i].q.depths, vps, out) < 0)
			return -ENOSPC;
	return 0;
}
