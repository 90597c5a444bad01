/*
 * wheel.c - the hashed timing wheel (see vmrelay/netwheel.h; Varghese and
 * Lauck's scheme 4): slot = tick mod slots, one intrusive list per slot.
 */
#include <errno.h>
#include <stdlib.h>

#include "vmrelay/netwheel.h"

int vr_wheel_init(struct vr_wheel *w, unsigned slots, uint32_t tick_ms, uint64_t now)
{
	if (slots < 2 || slots > 1u << 20 || (slots & (slots - 1)) || !tick_ms)
		return -EINVAL;
	w->slot = calloc(slots, sizeof(*w->slot));
	if (!w->slot)
		return -ENOMEM;
	w->mask = slots - 1;
	w->tick_ms = tick_ms;
	w->tick = now / tick_ms;
	w->armed = 0;
	return 0;
}

void vr_wheel_fini(struct vr_wheel *w)
{
	free(w->slot);
	w->slot = NULL;
}

static void unlink_timer(struct vr_wheel_timer *t)
{
	*t->pprev = t->next;
	if (t->next)
		t->next->pprev = t->pprev;
	t->next = NULL;
	t->pprev = NULL;
}

static void link_timer(struct vr_wheel_timer **head, struct vr_wheel_timer *t)
{
	t->next = *head;
	if (t->next)
		t->next->pprev = &t->next;
	*head = t;
	t->pprev = head;
}

void vr_wheel_cancel(struct vr_wheel *w, struct vr_wheel_timer *t)
{
	if (!t->pprev)
		return;
	unlink_timer(t);
	w->armed--;
}

void vr_wheel_arm(struct vr_wheel *w, struct vr_wheel_timer *t, uint64_t deadline)
{
	vr_wheel_cancel(w, t);
	/* Rounded up, so never early; and never at a tick already processed. */
	uint64_t tick = deadline / w->tick_ms + (deadline % w->tick_ms != 0);
	t->tick = tick > w->tick ? tick : w->tick + 1;
	link_timer(&w->slot[t->tick & w->mask], t);
	w->armed++;
}

unsigned vr_wheel_advance(struct vr_wheel *w, uint64_t now, vr_wheel_fire_fn fire, void *arg)
{
	uint64_t target = now / w->tick_ms;
	unsigned fired = 0;

	if (target <= w->tick)
		return 0;
	/* Past a whole revolution every slot is visited once, as at the last tick. */
	uint64_t first = target - w->tick > w->mask ? target - w->mask : w->tick + 1;
	for (uint64_t tick = first; tick <= target && w->armed; tick++) {
		/*
		 * The slot's list moves to a local head first: timers armed by
		 * fire() for a later revolution then land in the emptied slot,
		 * not in the list being walked, and a cancel of a timer still on
		 * the local list unlinks it from there.
		 */
		struct vr_wheel_timer *todo = NULL, **head = &w->slot[tick & w->mask];
		w->tick = tick;              /* what fire() arms goes to a later tick */
		if (*head) {
			todo = *head;
			todo->pprev = &todo;
			*head = NULL;
		}
		while (todo) {
			struct vr_wheel_timer *t = todo;
			unlink_timer(t);
			if (t->tick > target) {
				link_timer(head, t);
				continue;
			}
			w->armed--;
			fired++;
			fire(t, arg, now);
		}
	}
	w->tick = target;
	return fired;
}
