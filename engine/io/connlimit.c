/*
 * connlimit.c - concurrent connections per client, shared by every worker
 * thread, exact per client and without a lock.
 *
 * Threads: every worker calls acquire when it accepts and release when it
 * closes; nothing else touches the table after vr_connlimit_new(). All slot
 * accesses are sequentially consistent atomics (see acquire for why).
 *
 * Layout: the client key (64 bits, see vr_connlimit_key) goes through a
 * keyed bijective mix; the low bits of the result pick a bucket of eight
 * slots (one cache line), the high bits are the remainder kept in the slot.
 * Because the mix is a bijection, (bucket, remainder) names exactly one
 * client: two clients never share a counter. A slot is one 64-bit word,
 *
 *	remainder:48 | pending:1 | count:15
 *
 * so a client's identity and its count change together in one CAS. A slot
 * whose count is 0 is free, whatever remainder it still holds. A client lives
 * only in its own bucket, never anywhere else.
 *
 * The one hard case is the first connection of a client from two workers at
 * once: each could claim a different free slot. So a claim is made "pending"
 * (nobody joins a pending slot), then the claimer looks at the other seven
 * slots; if the client appears in any of them, live or pending, it gives its
 * slot back and starts over. Of two racing claims at least one sees the other
 * (store, then load, both seq_cst: the Dekker pattern), so at most one slot
 * per client ever becomes established, and counts are exact.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "vmrelay/common.h"
#include "connlimit.h"

#define SLOTS_PER_BUCKET 8
#define MIN_BUCKET_BITS  16      /* remainder fits 48 bits */
#define MAX_BUCKET_BITS  20      /* 64 MiB */
#define CLAIM_TRIES      64

#define COUNT_MASK   0x7fffull
#define PENDING      0x8000ull
#define REM_SHIFT    16

struct bucket {
	uint64_t slot[SLOTS_PER_BUCKET];
} __attribute__((aligned(64)));

struct vr_connlimit {
	struct bucket *buckets;
	uint64_t mask;            /* buckets - 1 */
	unsigned bits;
	unsigned limit;
	uint64_t seed;            /* so clients cannot aim at one bucket */
};

static inline uint64_t load(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline bool cas(uint64_t *p, uint64_t *expect, uint64_t want)
{
	return __atomic_compare_exchange_n(p, expect, want, false, __ATOMIC_SEQ_CST,
					   __ATOMIC_SEQ_CST);
}

/* Each step is invertible (xor with a constant, multiply by an odd number,
 * xor-shift), so the whole is a bijection on 64 bits. */
static uint64_t mix(uint64_t x, uint64_t seed)
{
	x ^= seed;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 29;
	return x;
}

struct vr_connlimit *vr_connlimit_new(unsigned limit, unsigned clients)
{
	if (limit == 0 || limit > VR_CONNLIMIT_MAX)
		return errno = EINVAL, NULL;
	struct vr_connlimit *cl = calloc(1, sizeof(*cl));
	if (!cl)
		return NULL;
	/* About one bucket per possible client keeps the chance that nine of
	 * them meet in one bucket negligible (Poisson, mean <= 1). */
	unsigned bits = MIN_BUCKET_BITS;
	while (bits < MAX_BUCKET_BITS && (1ull << bits) < clients)
		bits++;
	cl->bits = bits;
	cl->mask = (1ull << bits) - 1;
	cl->limit = limit;
	cl->buckets = aligned_alloc(64, sizeof(struct bucket) << bits);
	if (!cl->buckets || getrandom(&cl->seed, sizeof(cl->seed), 0) != sizeof(cl->seed)) {
		free(cl->buckets);
		free(cl);
		return errno = ENOMEM, NULL;
	}
	memset(cl->buckets, 0, sizeof(struct bucket) << bits);
	return cl;
}

void vr_connlimit_free(struct vr_connlimit *cl)
{
	if (!cl)
		return;
	free(cl->buckets);
	free(cl);
}

/*
 * IPv4 keys live in ff00:0:XXXX:XXXX::/64, a multicast prefix, which is never
 * the source of a TCP connection; so no IPv4 key equals an IPv6 /64 key.
 */
uint64_t vr_connlimit_key(const struct sockaddr *sa)
{
	const uint8_t *b;
	uint64_t k = 0;

	if (sa->sa_family == AF_INET) {
		b = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
	} else {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (!IN6_IS_ADDR_V4MAPPED(a)) {
			for (int i = 0; i < 8; i++)
				k = k << 8 | a->s6_addr[i];
			return k;
		}
		b = &a->s6_addr[12];
	}
	return 0xff00000000000000ull | (uint64_t)b[0] << 24 | (uint64_t)b[1] << 16 |
	       (uint64_t)b[2] << 8 | b[3];
}

static inline uint64_t slot_count(uint64_t v) { return v & COUNT_MASK; }
static inline uint64_t slot_rem(uint64_t v) { return v >> REM_SHIFT; }

/* True if a slot other than skip holds rem with a count (live or pending). */
static bool bucket_has(struct bucket *b, uint64_t rem, int skip)
{
	for (int i = 0; i < SLOTS_PER_BUCKET; i++) {
		uint64_t v = load(&b->slot[i]);
		if (i != skip && slot_count(v) && slot_rem(v) == rem)
			return true;
	}
	return false;
}

int vr_connlimit_acquire(struct vr_connlimit *cl, uint64_t key, uint64_t **slot)
{
	uint64_t h = mix(key, cl->seed);
	struct bucket *b = &cl->buckets[h & cl->mask];
	uint64_t rem = h >> cl->bits;

	for (int tries = 0; tries < CLAIM_TRIES; tries++) {
		int mine = -1, free_at = -1;
		uint64_t v = 0, fv = 0;

		for (int i = 0; i < SLOTS_PER_BUCKET; i++) {
			uint64_t x = load(&b->slot[i]);
			if (slot_count(x) == 0) {
				if (free_at < 0)
					free_at = i, fv = x;
			} else if (slot_rem(x) == rem) {
				mine = i, v = x;
				break;
			}
		}
		if (mine >= 0) {
			if (v & PENDING)
				continue;       /* another worker is settling its claim */
			if (slot_count(v) >= cl->limit)
				return -EUSERS;
			if (cas(&b->slot[mine], &v, v + 1)) {
				*slot = &b->slot[mine];
				return 0;
			}
			continue;
		}
		if (free_at < 0)
			return -ENOSPC;
		if (!cas(&b->slot[free_at], &fv, rem << REM_SHIFT | PENDING | 1))
			continue;
		/* Our claim is published (seq_cst store); now look for a racing
		 * one. Only we write a pending slot, so plain stores settle it. */
		if (bucket_has(b, rem, free_at)) {
			__atomic_store_n(&b->slot[free_at], 0, __ATOMIC_SEQ_CST);
			continue;
		}
		__atomic_store_n(&b->slot[free_at], rem << REM_SHIFT | 1, __ATOMIC_SEQ_CST);
		*slot = &b->slot[free_at];
		return 0;
	}
	return -EBUSY;
}

void vr_connlimit_release(struct vr_connlimit *cl, uint64_t *slot)
{
	/* The count is the low field and we hold one of it, so this never
	 * borrows from the remainder; at zero the slot is free again. */
	__atomic_fetch_sub(slot, 1, __ATOMIC_SEQ_CST);
}

unsigned vr_connlimit_count(const struct vr_connlimit *cl, uint64_t key)
{
	uint64_t h = mix(key, cl->seed);
	struct bucket *b = &cl->buckets[h & cl->mask];
	uint64_t rem = h >> cl->bits;

	for (int i = 0; i < SLOTS_PER_BUCKET; i++) {
		uint64_t v = load(&b->slot[i]);
		if (slot_count(v) && slot_rem(v) == rem && !(v & PENDING))
			return (unsigned)slot_count(v);
	}
	return 0;
}

uint64_t vr_connlimit_bucket(const struct vr_connlimit *cl, uint64_t key)
{
	return mix(key, cl->seed) & cl->mask;
}
