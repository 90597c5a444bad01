/*
 * netwheel.h - a hashed timing wheel for the stack's timers (issue 3):
 * retransmission, delayed ACK, persist, keepalive and TIME_WAIT, thousands
 * per core, armed and cancelled far more often than they fire.
 *
 * Arming and cancelling are O(1); advancing costs one slot per tick passed
 * plus the timers found there. A timer fires at the first tick at or after
 * its deadline, never early; timers due at the same tick fire in no
 * particular order, as do all those overdue when the clock jumps by more
 * than a revolution. Deadlines further away than a revolution stay in their
 * slot and are skipped until their turn. The caller embeds a struct
 * vr_wheel_timer in its object. Single-threaded; allocates only in init.
 */
#ifndef VR_NETWHEEL_H
#define VR_NETWHEEL_H

#include <stdint.h>

struct vr_wheel_timer {
	struct vr_wheel_timer *next, **pprev;   /* pprev NULL: not armed */
	uint64_t tick;                          /* the tick it fires at */
};

struct vr_wheel {
	struct vr_wheel_timer **slot;
	unsigned mask;
	uint32_t tick_ms;
	uint64_t tick;               /* the last tick processed */
	unsigned armed;
};

typedef void (*vr_wheel_fire_fn)(struct vr_wheel_timer *t, void *arg, uint64_t now);

/* slots: a power of two, 2..1<<20; tick_ms at least 1. 0, -EINVAL or -ENOMEM. */
int vr_wheel_init(struct vr_wheel *w, unsigned slots, uint32_t tick_ms, uint64_t now);
void vr_wheel_fini(struct vr_wheel *w);
/* Arms t for deadline (monotonic ms), moving it if armed. */
void vr_wheel_arm(struct vr_wheel *w, struct vr_wheel_timer *t, uint64_t deadline);
void vr_wheel_cancel(struct vr_wheel *w, struct vr_wheel_timer *t);
static inline int vr_wheel_armed(const struct vr_wheel_timer *t) { return t->pprev != 0; }
/*
 * Fires every timer due by now, each disarmed before fire is called (which
 * may arm or cancel any timer, this one included). Returns how many fired.
 */
unsigned vr_wheel_advance(struct vr_wheel *w, uint64_t now, vr_wheel_fire_fn fire, void *arg);

#endif
