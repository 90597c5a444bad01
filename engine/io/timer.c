/*
 * timer.c - binary min-heap of connection deadlines (see timer.h).
 *
 * Each timer knows its slot, so moving or removing one is a sift from where
 * it stands instead of a search.
 */
#include <errno.h>
#include <stdlib.h>

#include "timer.h"

void vr_timer_heap_init(struct vr_timer_heap *h)
{
	h->v = NULL;
	h->n = h->cap = 0;
}

void vr_timer_heap_free(struct vr_timer_heap *h)
{
	for (unsigned i = 0; i < h->n; i++)
		h->v[i]->pos = 0;
	free(h->v);
	vr_timer_heap_init(h);
}

static void place(struct vr_timer_heap *h, unsigned i, struct vr_timer *t)
{
	h->v[i] = t;
	t->pos = i + 1;
}

static void sift_up(struct vr_timer_heap *h, unsigned i)
{
	struct vr_timer *t = h->v[i];

	while (i > 0) {
		unsigned parent = (i - 1) / 2;
		if (h->v[parent]->deadline <= t->deadline)
			break;
		place(h, i, h->v[parent]);
		i = parent;
	}
	place(h, i, t);
}

static void sift_down(struct vr_timer_heap *h, unsigned i)
{
	struct vr_timer *t = h->v[i];

	for (;;) {
		unsigned c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->v[c + 1]->deadline < h->v[c]->deadline)
			c++;
		if (t->deadline <= h->v[c]->deadline)
			break;
		place(h, i, h->v[c]);
		i = c;
	}
	place(h, i, t);
}

void vr_timer_cancel(struct vr_timer_heap *h, struct vr_timer *t)
{
	if (t->pos == 0)
		return;
	unsigned i = t->pos - 1;
	struct vr_timer *last = h->v[--h->n];

	t->pos = 0;
	if (last == t)
		return;
	place(h, i, last);
	sift_up(h, i);
	sift_down(h, last->pos - 1);
}

int vr_timer_set(struct vr_timer_heap *h, struct vr_timer *t, uint64_t deadline)
{
	if (deadline == UINT64_MAX) {
		vr_timer_cancel(h, t);
		return 0;
	}
	if (t->pos) {
		uint64_t old = t->deadline;
		t->deadline = deadline;
		if (deadline < old)
			sift_up(h, t->pos - 1);
		else if (deadline > old)
			sift_down(h, t->pos - 1);
		return 0;
	}
	if (h->n == h->cap) {
		/* Grows only at a new high-water mark of connections. */
		unsigned cap = h->cap ? h->cap * 2 : 256;
		struct vr_timer **v = realloc(h->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	t->deadline = deadline;
	place(h, h->n++, t);
	sift_up(h, h->n - 1);
	return 0;
}
