/*
 * window.c - one account's minute, hour and day windows, shared by every
 * worker thread without a lock: reserve, release, show, restore, reset.
 *
 * What is guaranteed, in the whole seconds callers pass (now = the wall
 * clock truncated), with t = the account's effective time max(now, newest
 * second already counted), so an account's time never runs backwards:
 *
 *  - minute: a reservation of n at t is granted only if the mails counted at
 *    seconds t-60 .. t (61 seconds), plus n, are at most per_minute, and it
 *    is refused only if they are more. A real 60-second span touches at
 *    most 61 whole seconds, so it never holds more than per_minute; and a
 *    VPS is refused only after sending per_minute within the last 61
 *    seconds: 1 s granularity.
 *  - hour: the same over the calendar minutes m-60 .. m (m = t / 60, 61
 *    minutes): a real hour touches at most 61 of them; 1 min granularity.
 *  - day: the mails counted in t's calendar day (configured zone) plus n
 *    are at most the account's quota.
 *
 * Granted means counted at once (the reservation is the count), so
 * sessions on several threads cannot over-admit; a release takes the count
 * back out of the second and minute it went into while those are still in
 * the rings. With threads racing at a second boundary a reservation may be
 * refused that a serial order would have granted (never the reverse).
 *
 * Layout. Seconds and minutes are each kept in a ring (rl_impl.h): blocks
 * of 7 units, one 64-bit word per block holding seven one-byte counts and a
 * tag byte = (block + salt) mod 256. A word whose tag is not the one its
 * block should have right now is stale: it counts as zero and whoever
 * notices replaces it (so no one ever has to clear a ring ahead of time,
 * which is what would race with the writers). The head word holds t and
 * the rings' salts. A word is only ever written for a block at or before
 * the head, so "not my tag" means older unless the head moved; whoever
 * moves the head sweeps the stale words out afterwards (a reservation
 * while summing its windows, granted or not), so a live word is never
 * more than a few laps old and the 8-bit tag is unambiguous; when the
 * head jumps ten blocks or more (a quiet account), the ring's salt changes
 * to a value that no word in it can match, so even a word left from hours
 * ago cannot pass for a current one.
 *
 * The day. The head word also holds the count of its second's calendar
 * day, so one CAS takes a reservation's day slot and moves the clock (the
 * common case: a VPS's next mail comes in a later second than its last).
 * A day counts at most 1476 x 255 mails (no 61 seconds hold more than 255),
 * well inside its 19 bits; restore saturates. A reset gives both rings new
 * salts, the day a zero count and the reset generation (3 bits) a step in
 * one CAS; a ticket carries the salts and generation it was counted under,
 * so one from before a reset gives nothing back (one from before the
 * eighth reset before it would).
 *
 * Orderings. Every access to the head and the ring words is sequentially
 * consistent (on x86 a plain load, and the locked RMW we need anyway). A
 * reservation takes its day slot and moves the head to its second (or
 * finds it there) in one CAS, counts into its unit's word (RMW), then sums
 * the window, reading
 * the newest word whole, later slots included. Take two granted
 * reservations A at unit a and B at unit b > a in one window (a == b is
 * the same word: each sum reads it after its own RMW). If a and b share a
 * block, they counted into one word and the later RMW's sum saw both. If
 * not, B's word sits where A's window expects an older block: had A's sum
 * read it after B's count landed, it would have found a foreign tag with a
 * count and, checking the head, seen it moved and started over; so A read
 * it before, hence A's count < A's read < B's count < B's sum in the
 * single total order, and B's sum saw A. The day window is the head's
 * check-and-add CAS. The head's checks ask whether the head moved (its
 * second and salts), not whether its day count changed.
 */
#include <errno.h>
#include <string.h>

#include "vmrelay/common.h"

#include "rl_impl.h"

#define COUNT_MASK UINT64_C(0x00ffffffffffffff)
#define TAG_SHIFT 56
#define BIG_JUMP ((int64_t)RL_WORDS)    /* blocks: every word of the ring is stale */

/* The head word: second (bits 0-31), salts (32-36 seconds ring, 37-41
 * minutes ring), reset generation (42-44), day count (45-63). */
#define SALT_BITS 5u
#define SALT_MASK ((1u << SALT_BITS) - 1)
#define SALT_SHIFT(r) (32u + SALT_BITS * (unsigned)(r))
#define GEN_SHIFT 42u
#define GEN_MASK 7u
#define DAY_SHIFT 45u
#define DAY_MAX ((UINT32_C(1) << (64 - DAY_SHIFT)) - 1)

#define HEAD_T(h) ((uint32_t)(h))
#define HEAD_SALT(h, r) ((uint8_t)(((h) >> SALT_SHIFT(r)) & SALT_MASK))
#define HEAD_GEN(h) ((unsigned)((h) >> GEN_SHIFT) & GEN_MASK)
/* Where the head is (its second and salts), whatever its day count. */
#define HEAD_POS(h) ((h) & ((UINT64_C(1) << GEN_SHIFT) - 1))
#define HEAD_DAY(h) ((uint32_t)((h) >> DAY_SHIFT))
#define HEAD_WITH_DAY(h, c) (((h) & ((UINT64_C(1) << DAY_SHIFT) - 1)) | (uint64_t)(c) << DAY_SHIFT)
/* A ticket's gen: the salts and the reset generation it was counted under. */
#define GEN_OF(h) ((uint16_t)(((h) >> 32) & ((1u << (DAY_SHIFT - 32)) - 1)))
#define GEN_SALT(g, r) ((uint8_t)(((g) >> (SALT_BITS * (unsigned)(r))) & SALT_MASK))
#define GEN_RESET(g) ((unsigned)(g) >> (GEN_SHIFT - 32))

enum ring_id { RING_SEC, RING_MIN };
enum step { STEP_OK, STEP_FULL, STEP_RETRY };

static inline struct vr_rl_ring *ring_of(struct vr_rl_entry *e, enum ring_id r)
{
	return r == RING_SEC ? &e->sec : &e->min;
}

/* The ring's unit at second t. */
static inline int64_t unit(enum ring_id r, uint32_t t)
{
	return r == RING_SEC ? t : t / 60;
}

static inline uint8_t tag_of(int64_t blk, uint8_t salt)
{
	return (uint8_t)(blk + salt);
}

/* The block word p holds when the newest block is hb. */
static inline int64_t expected_blk(int64_t hb, unsigned p)
{
	return hb - (int64_t)((uint64_t)(hb % RL_WORDS + RL_WORDS - p) % RL_WORDS);
}

/* Seven count bytes into four 16-bit lanes; ten words stay under 2^16. */
static inline uint64_t lanes_of(uint64_t m)
{
	return (m & UINT64_C(0x00ff00ff00ff00ff)) + ((m >> 8) & UINT64_C(0x00ff00ff00ff00ff));
}

/* The sum of the lanes. */
static inline uint32_t lanes_sum(uint64_t lanes)
{
	return (uint32_t)((lanes * UINT64_C(0x0001000100010001)) >> 48);
}

/* --- the head: t and the salts --- */

/*
 * A salt for ring r after the head jumps from unit ou to nu (ten blocks or
 * more): no word may carry the new tag of its position, whether it holds a
 * count now or a writer still at the old head puts one there.
 */
static uint8_t fresh_salt(struct vr_rl_ring *ring, uint64_t h, enum ring_id r, int64_t ou,
			  int64_t nu)
{
	uint64_t ban[4] = { 0 };
	uint8_t old = HEAD_SALT(h, r), s = old;
	int64_t ohb = ou / RL_SLOTS, nhb = nu / RL_SLOTS;

	for (unsigned p = 0; p < RL_WORDS; p++) {
		int64_t nb = expected_blk(nhb, p), ob = expected_blk(ohb, p);
		uint64_t w = atomic_load(&ring->w[p]);
		uint8_t bad;

		if (w & COUNT_MASK) {
			bad = (uint8_t)((w >> TAG_SHIFT) - (uint64_t)nb);
			ban[bad >> 6] |= UINT64_C(1) << (bad & 63);
		}
		bad = (uint8_t)(tag_of(ob, old) - (uint64_t)nb);
		ban[bad >> 6] |= UINT64_C(1) << (bad & 63);
	}
	/* At most 20 values are banned out of 32. */
	do
		s = (uint8_t)((s + 1) & SALT_MASK);
	while (ban[s >> 6] & (UINT64_C(1) << (s & 63)));
	return s;
}

/* The head word for time t (> the head's), with new salts where a ring
 * jumped; the day count is the caller's to set. */
static uint64_t head_advance(struct vr_rl_entry *e, uint64_t h, uint32_t t)
{
	uint64_t nh = (h & ~(uint64_t)UINT32_MAX) | t;

	for (enum ring_id r = RING_SEC; r <= RING_MIN; r++) {
		int64_t ou = unit(r, HEAD_T(h)), nu = unit(r, t);
		if (nu / RL_SLOTS - ou / RL_SLOTS >= BIG_JUMP)
			nh = (nh & ~((uint64_t)SALT_MASK << SALT_SHIFT(r))) |
			     (uint64_t)fresh_salt(ring_of(e, r), h, r, ou, nu) << SALT_SHIFT(r);
	}
	return nh;
}

/* --- ring operations --- */

/*
 * Adds n to unit u of ring r (u within the ring at head hn). A stale word
 * is replaced, after checking the head has not moved (else it might be
 * newer, and the caller starts over). FULL when the byte would overflow:
 * more than 255 in one second or minute is over any minute limit we accept.
 * saturate (restore) clamps at 255 instead.
 */
static enum step ring_add(struct vr_rl_entry *e, enum ring_id r, uint64_t hn, int64_t u,
			  uint32_t n, bool saturate)
{
	_Atomic uint64_t *wp = &ring_of(e, r)->w[(u / RL_SLOTS) % RL_WORDS];
	uint8_t tag = tag_of(u / RL_SLOTS, HEAD_SALT(hn, r));
	unsigned shift = 8 * (unsigned)(u % RL_SLOTS);
	uint64_t w = atomic_load(wp), nw;

	do {
		uint32_t c = 0;

		if ((uint8_t)(w >> TAG_SHIFT) == tag) {
			c = (uint32_t)(w >> shift) & 0xff;
			nw = w & ~((uint64_t)0xff << shift);
		} else {
			if (HEAD_POS(atomic_load(&e->head)) != HEAD_POS(hn))
				return STEP_RETRY;
			nw = (uint64_t)tag << TAG_SHIFT;
		}
		if (c + n > RL_COUNT_MAX && !saturate)
			return STEP_FULL;
		nw |= (uint64_t)VR_MIN(c + n, RL_COUNT_MAX) << shift;
	} while (!atomic_compare_exchange_weak(wp, &w, nw));
	return STEP_OK;
}

/* Takes up to n back out of unit u, if its word still holds that block. */
static void ring_sub(struct vr_rl_ring *ring, uint8_t salt, int64_t u, uint32_t n)
{
	_Atomic uint64_t *wp = &ring->w[(u / RL_SLOTS) % RL_WORDS];
	uint8_t tag = tag_of(u / RL_SLOTS, salt);
	unsigned shift = 8 * (unsigned)(u % RL_SLOTS);
	uint64_t w = atomic_load(wp), nw;

	do {
		if ((uint8_t)(w >> TAG_SHIFT) != tag)
			return;
		uint32_t c = (uint32_t)(w >> shift) & 0xff;
		nw = (w & ~((uint64_t)0xff << shift)) | (uint64_t)(c - VR_MIN(c, n)) << shift;
	} while (!atomic_compare_exchange_weak(wp, &w, nw));
}

/*
 * The ten blocks a ring holds at unit u, oldest first: block hb-9 .. hb
 * (hb = u / 7), the oldest in word p, tags counting up from tag. The window
 * u-60 .. u starts u%7 + 3 slots into the oldest block, so that block
 * counts from that slot (nothing if it is 7 or more, and then the next one
 * counts from slot u%7 - 4); the newest word counts whole: a slot after u
 * holds a racing reservation's count, which must be seen (see the top).
 * Times start a day after the epoch, so every block number is positive.
 */
struct ring_walk {
	unsigned p;
	uint8_t tag;
	uint64_t mask[2];               /* of the two oldest words */
	int64_t b;                      /* the oldest block */
};

static inline void ring_walk_init(struct ring_walk *k, int64_t u, uint8_t salt)
{
	unsigned skip = (unsigned)(u % RL_SLOTS) + 3;

	k->b = u / RL_SLOTS - (RL_WORDS - 1);
	k->p = (unsigned)(k->b % RL_WORDS);
	k->tag = tag_of(k->b, salt);
	k->mask[0] = skip < RL_SLOTS ? (COUNT_MASK << (8 * skip)) & COUNT_MASK : 0;
	k->mask[1] = skip < RL_SLOTS ? COUNT_MASK
				     : (COUNT_MASK << (8 * (skip - RL_SLOTS))) & COUNT_MASK;
}

/*
 * *w, a word with a count and not the tag of its block: stale if the head
 * is still hn (every word is at or before the head), so it is replaced by
 * an empty word of that block. *w is left as the word now is; false if the
 * head moved (the word may be newer than we are).
 */
static __attribute__((noinline)) bool ring_clean(struct vr_rl_entry *e, _Atomic uint64_t *wp,
						 uint64_t *w, uint8_t tag, uint64_t hn)
{
	while ((uint8_t)(*w >> TAG_SHIFT) != tag && (*w & COUNT_MASK)) {
		if (HEAD_POS(atomic_load(&e->head)) != HEAD_POS(hn))
			return false;
		if (atomic_compare_exchange_strong(wp, w, (uint64_t)tag << TAG_SHIFT))
			*w = (uint64_t)tag << TAG_SHIFT;
	}
	return true;
}

/*
 * The count of ring r's window at unit u under head hn, sweeping stale
 * words on the way; -1 if the head moved meanwhile (the caller starts over).
 */
static int64_t ring_count(struct vr_rl_entry *e, enum ring_id r, uint64_t hn, int64_t u)
{
	static const uint8_t next[2 * RL_WORDS] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
						    0, 1, 2, 3, 4, 5, 6, 7, 8, 9 };
	struct vr_rl_ring *ring = ring_of(e, r);
	struct ring_walk k;
	uint64_t lanes = 0;

	ring_walk_init(&k, u, HEAD_SALT(hn, r));
	for (unsigned i = 0; i < RL_WORDS; i++) {
		_Atomic uint64_t *wp = &ring->w[next[k.p + i]];
		uint8_t tag = (uint8_t)(k.tag + i);
		uint64_t w = atomic_load(wp);

		if (VR_UNLIKELY((uint8_t)(w >> TAG_SHIFT) != tag)) {
			if (!(w & COUNT_MASK))
				continue;
			if (!ring_clean(e, wp, &w, tag, hn))
				return -1;
			if ((uint8_t)(w >> TAG_SHIFT) != tag)
				continue;
		}
		lanes += lanes_of(w & (i < 2 ? k.mask[i] : COUNT_MASK));
	}
	return lanes_sum(lanes);
}

/*
 * The same, read only, for show and refusals: the count, and the first unit
 * counted (-1 if none), whose mail leaves the window first. A ring the head
 * is ten blocks past counts nothing.
 */
static uint32_t ring_state(struct vr_rl_entry *e, enum ring_id r, uint64_t h, int64_t u,
			   int64_t *oldest)
{
	struct vr_rl_ring *ring = ring_of(e, r);
	struct ring_walk k;
	uint32_t sum = 0;

	*oldest = -1;
	if (u / RL_SLOTS - unit(r, HEAD_T(h)) / RL_SLOTS >= BIG_JUMP)
		return 0;
	ring_walk_init(&k, u, HEAD_SALT(h, r));
	for (unsigned i = 0; i < RL_WORDS; i++) {
		uint64_t w = atomic_load(&ring->w[(k.p + i) % RL_WORDS]);
		uint64_t m = w & (i < 2 ? k.mask[i] : COUNT_MASK);

		if ((uint8_t)(w >> TAG_SHIFT) != (uint8_t)(k.tag + i) || !m)
			continue;
		sum += lanes_sum(lanes_of(m));
		if (*oldest < 0)
			*oldest = (k.b + i) * RL_SLOTS + __builtin_ctzll(m) / 8;
	}
	return sum;
}

/* Whoever moves the head sweeps both rings afterwards (see the top); a
 * reservation does it while summing, the paths that refuse before summing
 * call this. If the head moves on meanwhile, its mover sweeps instead. */
static void sweep(struct vr_rl_entry *e, uint64_t hn, uint32_t t)
{
	if (ring_count(e, RING_SEC, hn, unit(RING_SEC, t)) >= 0)
		ring_count(e, RING_MIN, hn, unit(RING_MIN, t));
}

/* --- the day count, in the head word --- */

static uint16_t day_no(const struct vr_rl *rl, uint32_t t)
{
	return (uint16_t)(vr_rl_tz_day(&rl->tz, t) + 1);
}

/* What head h counted in t's day (t at or after the head's second). */
static uint32_t day_used(const struct vr_rl *rl, uint64_t h, uint32_t t)
{
	return HEAD_T(h) >= rl->tz.start[vr_rl_tz_day(&rl->tz, t)] ? HEAD_DAY(h) : 0;
}

/* Takes up to n back out of the day at (at or before the head's second),
 * while the head still counts that day in reset generation gen. */
static void day_sub(const struct vr_rl *rl, struct vr_rl_entry *e, unsigned gen, uint32_t at,
		    uint32_t n)
{
	uint32_t next = rl->tz.start[day_no(rl, at)];
	uint64_t h = atomic_load(&e->head), nh;

	do {
		if (HEAD_GEN(h) != gen || HEAD_T(h) >= next)
			return;
		nh = HEAD_WITH_DAY(h, HEAD_DAY(h) - VR_MIN(HEAD_DAY(h), n));
	} while (!atomic_compare_exchange_weak(&e->head, &h, nh));
}

/* --- what the windows hold --- */

/*
 * Every window at t under head h, read only: the count, the limit, and
 * when the oldest counted mail leaves it (0 if none is counted), which is
 * when its next slot frees.
 */
static void state(const struct vr_rl *rl, struct vr_rl_entry *e, uint64_t h, uint32_t t,
		  struct vr_rl_verdict *v)
{
	int64_t o;

	v->w[VR_RL_MINUTE].used = ring_state(e, RING_SEC, h, unit(RING_SEC, t), &o);
	v->w[VR_RL_MINUTE].resets_at = o < 0 ? 0 : o + RL_SPAN;
	v->w[VR_RL_MINUTE].limit = rl->per_minute;
	v->w[VR_RL_HOUR].used = ring_state(e, RING_MIN, h, unit(RING_MIN, t), &o);
	v->w[VR_RL_HOUR].resets_at = o < 0 ? 0 : (o + RL_SPAN) * 60;
	v->w[VR_RL_HOUR].limit = rl->per_hour;
	v->w[VR_RL_DAY].used = day_used(rl, h, t);
	/* day_no is the day's index + 1: start[no] is when the next day starts. */
	v->w[VR_RL_DAY].resets_at = v->w[VR_RL_DAY].used ? rl->tz.start[day_no(rl, t)] : 0;
	v->w[VR_RL_DAY].limit = atomic_load_explicit(&e->quota, memory_order_relaxed);
}

/* Only a full window says when it frees. */
static void state_clear_free(struct vr_rl_verdict *v)
{
	for (int i = 0; i < VR_RL_NWINDOWS; i++)
		if (v->w[i].used < v->w[i].limit)
			v->w[i].resets_at = 0;
}

/* Fills v for a refusal by win; used is the count that decided (< 0: the
 * count now). The refusing window says when its next slot frees even when
 * a request for several slots found it not quite full. */
static void refuse(const struct vr_rl *rl, struct vr_rl_entry *e, uint32_t t,
		   enum vr_rl_window win, int64_t used, struct vr_rl_verdict *v)
{
	int64_t frees;

	if (!v)
		return;
	state(rl, e, atomic_load(&e->head), t, v);
	frees = win == VR_RL_DAY ? rl->tz.start[day_no(rl, t)] : v->w[win].resets_at;
	state_clear_free(v);
	v->ok = false;
	v->window = win;
	if (used >= 0)
		v->w[win].used = (uint32_t)used;
	v->w[win].resets_at = frees;
}

/* --- the operations --- */

void vr_rl_entry_init(struct vr_rl_entry *e, uint32_t quota)
{
	atomic_init(&e->head, 0);
	atomic_init(&e->quota, quota);
	for (unsigned p = 0; p < RL_WORDS; p++) {
		atomic_init(&e->sec.w[p], 0);
		atomic_init(&e->min.w[p], 0);
	}
}

/* One try at a reservation: the head it found and left, where it counts. */
struct attempt {
	uint64_t h, hn;
	uint32_t t, n, used_day;
	int64_t us, um;                 /* its second and minute */
	int rings;                      /* rings counted into so far */
};

/* Takes back what the attempt counted. */
static void attempt_undo(const struct vr_rl *rl, struct vr_rl_entry *e, const struct attempt *a)
{
	if (a->rings > 1)
		ring_sub(&e->min, HEAD_SALT(a->hn, RING_MIN), a->um, a->n);
	if (a->rings > 0)
		ring_sub(&e->sec, HEAD_SALT(a->hn, RING_SEC), a->us, a->n);
	day_sub(rl, e, HEAD_GEN(a->hn), a->t, a->n);
}

/* Refused before summing: the sweep the head's mover owes, and the verdict. */
static int attempt_refuse(const struct vr_rl *rl, struct vr_rl_entry *e,
			  const struct attempt *a, enum vr_rl_window win, int64_t used,
			  struct vr_rl_verdict *v)
{
	if (HEAD_POS(a->hn) != HEAD_POS(a->h))
		sweep(e, a->hn, a->t);
	refuse(rl, e, a->t, win, used, v);
	return -EDQUOT;
}

int vr_rl_entry_reserve(const struct vr_rl *rl, struct vr_rl_entry *e, uint32_t n, uint32_t now,
			struct vr_rl_ticket *ticket, struct vr_rl_verdict *v)
{
	/* The quota may change under us (operator): any recent value will do.
	 * Above DAY_MAX it never binds (see the top). */
	uint32_t quota = VR_MIN(atomic_load_explicit(&e->quota, memory_order_relaxed), DAY_MAX);
	struct attempt a = { .n = n };
	int64_t sec, min;
	enum step s;

	/* More than a whole window: no wait makes it fit. */
	if (n > rl->per_minute || n > rl->per_hour) {
		refuse(rl, e, VR_MAX(now, HEAD_T(atomic_load(&e->head))),
		       n > rl->per_minute ? VR_RL_MINUTE : VR_RL_HOUR, -1, v);
		return -EDQUOT;
	}
	for (;;) {
		a.h = a.hn = atomic_load(&e->head);
		a.t = VR_MAX(now, HEAD_T(a.h));
		a.us = unit(RING_SEC, a.t);
		a.um = unit(RING_MIN, a.t);
		a.rings = 0;
		/* The day slot and the clock in one CAS (a full day moves the
		 * clock all the same: a refusal is a second the account saw). */
		a.used_day = day_used(rl, a.h, a.t);
		bool full = n > quota || a.used_day > quota - n;
		if (a.t != HEAD_T(a.h))
			a.hn = head_advance(e, a.h, a.t);
		a.hn = HEAD_WITH_DAY(a.hn, a.used_day + (full ? 0 : n));
		if (a.hn != a.h && !atomic_compare_exchange_strong(&e->head, &a.h, a.hn))
			continue;
		if (full)
			return attempt_refuse(rl, e, &a, VR_RL_DAY, a.used_day, v);
		/* A byte overflowing in either ring means the minute is over. */
		s = ring_add(e, RING_SEC, a.hn, a.us, n, false);
		if (s == STEP_OK) {
			a.rings++;
			s = ring_add(e, RING_MIN, a.hn, a.um, n, false);
		}
		if (s != STEP_OK) {
			attempt_undo(rl, e, &a);
			if (s == STEP_RETRY)
				continue;
			return attempt_refuse(rl, e, &a, VR_RL_MINUTE, -1, v);
		}
		a.rings++;
		sec = ring_count(e, RING_SEC, a.hn, a.us);
		min = sec < 0 ? -1 : ring_count(e, RING_MIN, a.hn, a.um);
		if (min < 0 || sec > rl->per_minute || min > rl->per_hour)
			attempt_undo(rl, e, &a);
		if (min < 0)
			continue;
		if (sec > rl->per_minute || min > rl->per_hour) {
			enum vr_rl_window win = sec > rl->per_minute ? VR_RL_MINUTE : VR_RL_HOUR;
			refuse(rl, e, a.t, win, (win == VR_RL_MINUTE ? sec : min) - n, v);
			return -EDQUOT;
		}
		break;
	}
	*ticket = (struct vr_rl_ticket){ .at = a.t, .n = n, .gen = GEN_OF(a.hn) };
	if (v) {
		v->ok = true;
		v->w[VR_RL_MINUTE] = (struct vr_rl_window_state){ (uint32_t)sec, rl->per_minute, 0 };
		v->w[VR_RL_HOUR] = (struct vr_rl_window_state){ (uint32_t)min, rl->per_hour, 0 };
		v->w[VR_RL_DAY] = (struct vr_rl_window_state){ a.used_day + n, quota, 0 };
	}
	return 0;
}

void vr_rl_entry_release(const struct vr_rl *rl, struct vr_rl_entry *e,
			 const struct vr_rl_ticket *ticket)
{
	uint64_t h = atomic_load(&e->head);
	uint32_t at = (uint32_t)ticket->at;
	unsigned gen = GEN_RESET(ticket->gen);

	/* Counted before an operator's reset: those counts are gone already. */
	if (HEAD_GEN(h) != gen)
		return;
	/* A unit older than the window is out of every future window too; a
	 * unit still in it was counted under the salt the ticket carries (a
	 * salt changes only when the head jumps further than a window). */
	for (enum ring_id r = RING_SEC; r <= RING_MIN; r++)
		if (unit(r, HEAD_T(h)) - unit(r, at) < (int64_t)RL_SPAN)
			ring_sub(ring_of(e, r), GEN_SALT(ticket->gen, r), unit(r, at), ticket->n);
	day_sub(rl, e, gen, at, ticket->n);
}

void vr_rl_entry_show(const struct vr_rl *rl, struct vr_rl_entry *e, uint32_t now,
		      struct vr_rl_verdict *v)
{
	uint64_t h = atomic_load(&e->head);
	uint32_t t = VR_MAX(now, HEAD_T(h));

	v->ok = true;
	state(rl, e, h, t, v);
	state_clear_free(v);
	for (int i = 0; i < VR_RL_NWINDOWS; i++) {
		if (v->w[i].used >= v->w[i].limit && v->ok) {
			v->ok = false;
			v->window = (enum vr_rl_window)i;
		}
	}
}

void vr_rl_entry_restore(const struct vr_rl *rl, struct vr_rl_entry *e, uint32_t n, uint32_t at)
{
	uint32_t next = rl->tz.start[day_no(rl, at)];
	uint64_t h, nh;

	/* The head first: a word is never written ahead of it. */
	h = atomic_load(&e->head);
	while (at > HEAD_T(h)) {
		nh = HEAD_WITH_DAY(head_advance(e, h, at), day_used(rl, h, at));
		if (atomic_compare_exchange_weak(&e->head, &h, nh)) {
			sweep(e, nh, at);
			break;
		}
	}
	for (enum ring_id r = RING_SEC; r <= RING_MIN; r++) {
		for (;;) {
			h = atomic_load(&e->head);
			int64_t hu = unit(r, HEAD_T(h)), u = unit(r, at);
			if (hu / RL_SLOTS - u / RL_SLOTS >= BIG_JUMP ||
			    ring_add(e, r, h, u, n, true) == STEP_OK)
				break;
		}
	}
	h = atomic_load(&e->head);
	do {
		if (HEAD_T(h) >= next)
			return;                 /* an older day than the one counting now */
		nh = HEAD_WITH_DAY(h, HEAD_DAY(h) + VR_MIN(n, DAY_MAX - HEAD_DAY(h)));
	} while (!atomic_compare_exchange_weak(&e->head, &h, nh));
}

void vr_rl_entry_reset(struct vr_rl_entry *e)
{
	uint64_t h = atomic_load(&e->head), nh;

	/* New salts: every word counted so far is stale at once; a new
	 * generation: tickets taken before release nothing. */
	do {
		nh = HEAD_T(h) | (uint64_t)((HEAD_GEN(h) + 1) & GEN_MASK) << GEN_SHIFT;
		for (enum ring_id r = RING_SEC; r <= RING_MIN; r++) {
			int64_t u = unit(r, HEAD_T(h));
			nh |= (uint64_t)fresh_salt(ring_of(e, r), h, r, u, u) << SALT_SHIFT(r);
		}
	} while (!atomic_compare_exchange_weak(&e->head, &h, nh));
	/* Out with the old words now: a later lap under the new salt must not
	 * take one for its own (the sweep a head's mover owes). An entry that
	 * never counted has none. */
	if (HEAD_T(nh) >= RL_TIME_MIN)
		sweep(e, nh, HEAD_T(nh));
}
