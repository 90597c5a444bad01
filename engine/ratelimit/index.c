/*
 * index.c - the flat index the workers find an account's windows in (see
 * rl_impl.h): the id's hash picks a slot, 16 more bits of it are kept in
 * the slot beside the entry's address, so a probe compares an id only when
 * those bits match (one in 65536 otherwise). Built whole by the writer,
 * read by any number of workers, never changed in between.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rl_impl.h"

#define ADDR_BITS 48
#define ADDR_MASK ((UINT64_C(1) << ADDR_BITS) - 1)
#define MIN_SLOTS 64u

/* Eight bytes a step, then MurmurHash3's finaliser: ids differ in their
 * last digits, and both tables index by the hash's low bits. (Ids come
 * from the operator's file, not from clients.) */
unsigned long vr_rl_hash_id(const char *id, size_t len)
{
	uint64_t h = len * UINT64_C(0x9e3779b97f4a7c15), w;

	for (; len >= 8; id += 8, len -= 8) {
		memcpy(&w, id, 8);
		h = (h ^ w) * UINT64_C(0xff51afd7ed558ccd);
		h ^= h >> 29;
	}
	w = 0;
	for (size_t i = 0; i < len; i++)
		w |= (uint64_t)(uint8_t)id[i] << (8 * i);
	h = (h ^ w) * UINT64_C(0xc4ceb9fe1a85ec53);
	h ^= h >> 33;
	h *= UINT64_C(0xff51afd7ed558ccd);
	h ^= h >> 33;
	return (unsigned long)h;
}

/* The bits of the hash a slot keeps: the top ones, which the position
 * (the low ones) does not use. */
static inline uint64_t tag_of(uint64_t h)
{
	return h >> ADDR_BITS;
}

struct vr_rl_index *vr_rl_index_new(size_t n)
{
	size_t slots = MIN_SLOTS;
	struct vr_rl_index *ix;

	while (slots < 2 * n)
		slots <<= 1;
	ix = calloc(1, sizeof(*ix) + slots * sizeof(ix->slot[0]));
	if (ix) {
		ix->mask = slots - 1;
		ix->room = n;
	}
	return ix;
}

int vr_rl_index_add(struct vr_rl_index *ix, struct vr_rl_entry *e)
{
	uint64_t h = vr_rl_hash_id(e->id, e->idlen), addr = (uintptr_t)e;
	size_t i = h & ix->mask;

	if (addr & ~ADDR_MASK)
		return -EOVERFLOW;
	if (ix->room == 0)
		return -ENOSPC;
	while (ix->slot[i])
		i = (i + 1) & ix->mask;
	ix->slot[i] = tag_of(h) << ADDR_BITS | addr;
	ix->room--;
	return 0;
}

struct vr_rl_entry *vr_rl_index_find(const struct vr_rl_index *ix, const char *id, size_t len)
{
	uint64_t h = vr_rl_hash_id(id, len), tag = tag_of(h);

	for (size_t i = h & ix->mask;; i = (i + 1) & ix->mask) {
		uint64_t s = ix->slot[i];
		struct vr_rl_entry *e = (struct vr_rl_entry *)(uintptr_t)(s & ADDR_MASK);

		if (!s)
			return NULL;
		if (s >> ADDR_BITS != tag)
			continue;
		/* The windows are read next and the id is at the entry's end:
		 * ask for all its lines at once rather than one miss after
		 * another. */
		for (size_t off = 64; off < sizeof(*e) + len; off += 64)
			__builtin_prefetch((const char *)e + off, 1);
		if (e->idlen == len && memcmp(e->id, id, len) == 0)
			return e;
	}
}

void vr_rl_index_free(struct vr_rl_index *ix)
{
	free(ix);
}
