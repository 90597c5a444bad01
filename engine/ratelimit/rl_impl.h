/*
 * rl_impl.h - what the ratelimit module's files share and nobody else sees:
 * the calendar days of the configured time zone (tz.c), one account's
 * windows and the lock-free operations on them (window.c), the flat index
 * the workers find accounts in (index.c), and the table that holds the
 * accounts (ratelimit.c).
 */
#ifndef VR_RL_IMPL_H
#define VR_RL_IMPL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <urcu-qsbr.h>
#include <urcu/rculfhash.h>

#include "vmrelay/ratelimit.h"

/*
 * ThreadSanitizer does not see liburcu's orderings (its atomics are inline
 * assembly and its grace periods futexes), so these state them: an entry's
 * contents are ordered before any reader finds it (cds_lfht_add publishes
 * with a full barrier), and every reader's use of an entry before its free
 * after a grace period (of an index too: the IX pair). They compile to
 * nothing in other builds.
 */
#if defined(__SANITIZE_THREAD__)
#define VR_RL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VR_RL_TSAN 1
#endif
#endif
#ifdef VR_RL_TSAN
#include <sanitizer/tsan_interface.h>
#define VR_RL_PUBLISH(e) __tsan_release(e)
#define VR_RL_FOUND(e) __tsan_acquire(e)
#define VR_RL_DONE(e) __tsan_release(&(e)->quota)
#define VR_RL_RECLAIM(e) __tsan_acquire(&(e)->quota)
#define VR_RL_IX_DONE(ix) __tsan_release((void *)&(ix)->mask)
#define VR_RL_IX_RECLAIM(ix) __tsan_acquire(&(ix)->mask)
#else
#define VR_RL_PUBLISH(e) ((void)(e))
#define VR_RL_FOUND(e) ((void)(e))
#define VR_RL_DONE(e) ((void)(e))
#define VR_RL_RECLAIM(e) ((void)(e))
#define VR_RL_IX_DONE(ix) ((void)(ix))
#define VR_RL_IX_RECLAIM(ix) ((void)(ix))
#endif

/* --- tz.c --- */

/*
 * The days of one time zone from 1970 to 2106 (every second a uint32
 * holds), as the second each day starts: built once from the tz database,
 * read by any thread without a libc call. Days are numbered from 0 in
 * order; the number only tells days apart (a day a zone skipped, like
 * Samoa's 2011-12-30, has none).
 */
struct vr_rl_tz {
	char name[64];
	uint32_t *start;            /* start[i]: first second of day i; start[0] = 0 */
	uint32_t ndays;             /* start has ndays + 1 entries */
	int64_t guess_base;         /* for the index guess: day i is near (t + off) / 86400 - base */
	int32_t guess_off;
	uint32_t ntrans;            /* UTC offset changes: off[i] holds from at[i] (at[0] = INT64_MIN) */
	int64_t *trans_at;
	int32_t *trans_off;
};

/* Loads name ("UTC", or a tz database name such as "Europe/Berlin", read
 * from $TZDIR or /usr/share/zoneinfo). 0, or -1 with err saying why. */
int vr_rl_tz_load(struct vr_rl_tz *tz, const char *name, char *err, size_t errlen);
void vr_rl_tz_free(struct vr_rl_tz *tz);

/* The first second the table does not cover (early 2106). */
static inline int64_t vr_rl_tz_end(const struct vr_rl_tz *tz)
{
	return tz->start[tz->ndays];
}

/* The day t (< vr_rl_tz_end) falls in: an index and two comparisons. */
static inline uint32_t vr_rl_tz_day(const struct vr_rl_tz *tz, uint32_t t)
{
	int64_t g = ((int64_t)t + tz->guess_off) / 86400 - tz->guess_base;
	uint32_t i = g < 0 ? 0 : g >= tz->ndays ? tz->ndays - 1 : (uint32_t)g;

	while (tz->start[i + 1] <= t)
		i++;
	while (tz->start[i] > t)
		i--;
	return i;
}

/* The UTC offset in force at t (for printing a local time). */
int32_t vr_rl_tz_offset(const struct vr_rl_tz *tz, int64_t t);

/* --- window.c --- */

/*
 * A ring counts mails in units (seconds for the minute window, minutes for
 * the hour window) over the last RL_SPAN units. Units are grouped in blocks
 * of RL_SLOTS; a ring word holds one block: RL_SLOTS one-byte counts and,
 * in its top byte, a tag naming the block, so a word from an older lap of
 * the ring is known stale without anyone clearing it first.
 */
#define RL_SPAN   61u                   /* units a window covers: now and the 60 before */
#define RL_SLOTS  7u                    /* counts per word */
#define RL_WORDS  10u                   /* 61 units touch at most 10 blocks of 7 */
#define RL_COUNT_MAX 255u               /* a count is one byte */
#define RL_TIME_MIN 86400               /* the rings' oldest blocks exist from then on */

struct vr_rl_ring {
	_Atomic uint64_t w[RL_WORDS];
};

/*
 * One account. Threads: reserve/release/show run on any worker (RCU
 * readers) and touch only the atomics; vr_rl_sync adds and removes entries
 * and stores quota; reset and restore come from the writer too. The memory
 * is freed after a grace period once the entry is out of the table.
 */
struct vr_rl_entry {
	struct cds_lfht_node node;
	/* Newest second counted (low 32 bits), the two rings' tag salts, the
	 * reset generation and the count of that second's calendar day: one
	 * word, so a reservation takes its day slot and moves the clock in
	 * one CAS. See window.c. */
	_Atomic uint64_t head;
	_Atomic uint32_t quota;
	uint8_t idlen;
	struct vr_rl_ring sec;             /* 1-second units: the minute window */
	struct vr_rl_ring min;             /* 1-minute units: the hour window */
	char id[];                      /* idlen bytes and a NUL */
};

#define RL_MIN_BUCKETS 1024ul

/* --- index.c --- */

/*
 * The workers' way to an entry: open addressing over 8-byte slots, each an
 * entry's address (48 bits) under 16 bits of its id's hash, so a lookup
 * reads one slot line and then the entry, where cds_lfht's split-ordered
 * list reads a bucket, then one node after another (a cache miss each, with
 * a million accounts). Immutable once published: the writer builds a new
 * one whenever the set of accounts changes and frees the old one after a
 * grace period. At most half full.
 */
struct vr_rl_index {
	struct rcu_head rcu;
	size_t mask;
	size_t room;                    /* entries it may still take */
	uint64_t slot[];                /* 0: empty */
};

/* The id's hash: the index's and the cds_lfht's. */
unsigned long vr_rl_hash_id(const char *id, size_t len);
/* An empty index for up to n entries (NULL: ENOMEM), and an entry added to
 * it before it is published: 0, -ENOSPC past n, -EOVERFLOW for an address
 * above 48 bits (none on Linux x86-64 or arm64). */
struct vr_rl_index *vr_rl_index_new(size_t n);
int vr_rl_index_add(struct vr_rl_index *ix, struct vr_rl_entry *e);
/* The entry with this id (len bytes), or NULL. */
struct vr_rl_entry *vr_rl_index_find(const struct vr_rl_index *ix, const char *id, size_t len);
void vr_rl_index_free(struct vr_rl_index *ix);

struct vr_rl {
	/* The workers' index (RCU: published with release, read with acquire). */
	_Atomic(struct vr_rl_index *) index;
	struct cds_lfht *ht;
	uint32_t per_minute, per_hour, per_day_max;
	unsigned long n_entries;        /* the writer's own: entries, and buckets */
	unsigned long buckets;
	struct vr_rl_tz tz;
};

/* What the windows of an entry hold at a time: used counts, and when the
 * oldest counted mail of each leaves its window (0 if none counted). */
struct vr_rl_state {
	uint32_t used[VR_RL_NWINDOWS];
	int64_t frees_at[VR_RL_NWINDOWS];
};

void vr_rl_entry_init(struct vr_rl_entry *e, uint32_t quota);
/* The window operations behind vr_rl_reserve/release/show/restore/reset;
 * t and at are valid times (< vr_rl_tz_end). */
int vr_rl_entry_reserve(const struct vr_rl *rl, struct vr_rl_entry *e, uint32_t n, uint32_t now,
			struct vr_rl_ticket *ticket, struct vr_rl_verdict *v);
void vr_rl_entry_release(const struct vr_rl *rl, struct vr_rl_entry *e,
			 const struct vr_rl_ticket *ticket);
void vr_rl_entry_show(const struct vr_rl *rl, struct vr_rl_entry *e, uint32_t now,
		      struct vr_rl_verdict *v);
void vr_rl_entry_restore(const struct vr_rl *rl, struct vr_rl_entry *e, uint32_t n, uint32_t at);
void vr_rl_entry_reset(struct vr_rl_entry *e);

#endif
