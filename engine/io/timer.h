/*
 * timer.h - a binary min-heap of deadlines, one per worker thread, so the
 * epoll loop learns its earliest deadline in O(1) and re-arms a connection's
 * timer in O(log n), with no scan over all connections.
 *
 * The caller embeds a struct vr_timer in each object and recovers the object
 * with container_of-style arithmetic. Single-threaded.
 */
#ifndef VR_IO_TIMER_H
#define VR_IO_TIMER_H

#include <stdint.h>

struct vr_timer {
	uint64_t deadline;        /* monotonic ms */
	unsigned pos;             /* 1-based index in the heap; 0 = not armed */
};

struct vr_timer_heap {
	struct vr_timer **v;
	unsigned n, cap;
};

void vr_timer_heap_init(struct vr_timer_heap *h);
void vr_timer_heap_free(struct vr_timer_heap *h);
/* Arms or moves t; UINT64_MAX disarms. 0 or -ENOMEM (t left as it was). */
int vr_timer_set(struct vr_timer_heap *h, struct vr_timer *t, uint64_t deadline);
void vr_timer_cancel(struct vr_timer_heap *h, struct vr_timer *t);
/* The earliest armed timer, or NULL. */
static inline struct vr_timer *vr_timer_first(const struct vr_timer_heap *h)
{
	return h->n ? h->v[0] : NULL;
}

#endif
