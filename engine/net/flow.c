/*
 * flow.c - the connection table (see vmrelay/netflow.h): linear probing at
 * most half full, each key's hash kept in its slot (the high half so a
 * probe compares tuples only when it matches, the low half so deletion need
 * not hash again), and deletion by backward shift, so no tombstones build up
 * under connection churn.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/netflow.h"

struct slot {
	struct vr_flow_key key;
	uint32_t tag;                /* hash >> 32, for a cheap first compare */
	uint32_t home;               /* the low hash bits: the slot the run starts at */
	uint32_t val;
	uint8_t used;
};

struct vr_flow_table {
	struct slot *slot;
	unsigned mask, count, max;
	uint8_t key[VR_SIPHASH_KEY_LEN];
};

uint64_t vr_flow_key_hash(const uint8_t key[VR_SIPHASH_KEY_LEN], const struct vr_flow_key *k)
{
	/* Packed by hand: the struct's padding must not reach the hash. */
	uint8_t b[36];

	if (k->v6) {
		memcpy(b, k->laddr6, 16);
		memcpy(b + 16, k->raddr6, 16);
		memcpy(b + 32, &k->lport, 2);
		memcpy(b + 34, &k->rport, 2);
		return vr_siphash24(key, b, 36);
	}
	memcpy(b, &k->laddr, 4);
	memcpy(b + 4, &k->raddr, 4);
	memcpy(b + 8, &k->lport, 2);
	memcpy(b + 10, &k->rport, 2);
	return vr_siphash24(key, b, 12);
}

uint64_t vr_flow_hash(const struct vr_flow_table *t, const struct vr_flow_key *k)
{
	return vr_flow_key_hash(t->key, k);
}

static int key_eq(const struct vr_flow_key *a, const struct vr_flow_key *b)
{
	if (a->laddr != b->laddr || a->raddr != b->raddr || a->lport != b->lport ||
	    a->rport != b->rport || a->v6 != b->v6)
		return 0;
	return !a->v6 || (!memcmp(a->laddr6, b->laddr6, 16) && !memcmp(a->raddr6, b->raddr6, 16));
}

struct vr_flow_table *vr_flow_table_new(unsigned max, const uint8_t key[VR_SIPHASH_KEY_LEN],
					char *err, size_t errlen)
{
	if (max < 1 || max > 1u << 24) {
		snprintf(err, errlen, "flow: table size %u is not 1..16777216", max);
		return NULL;
	}
	struct vr_flow_table *t = calloc(1, sizeof(*t));
	unsigned size = 2;
	while (size < 2 * max)
		size <<= 1;
	if (t)
		t->slot = calloc(size, sizeof(*t->slot));
	if (!t || !t->slot) {
		snprintf(err, errlen, "flow: out of memory for %u flows", max);
		free(t);
		return NULL;
	}
	t->mask = size - 1;
	t->max = max;
	memcpy(t->key, key, VR_SIPHASH_KEY_LEN);
	return t;
}

void vr_flow_table_free(struct vr_flow_table *t)
{
	if (!t)
		return;
	free(t->slot);
	free(t);
}

/* The slot holding k, or the empty slot ending its probe run. */
static unsigned probe(const struct vr_flow_table *t, const struct vr_flow_key *k, uint64_t h)
{
	uint32_t tag = (uint32_t)(h >> 32);
	unsigned i = (unsigned)h & t->mask;

	while (t->slot[i].used && !(t->slot[i].tag == tag && key_eq(&t->slot[i].key, k)))
		i = (i + 1) & t->mask;
	return i;
}

int vr_flow_insert(struct vr_flow_table *t, const struct vr_flow_key *k, uint32_t val)
{
	uint64_t h = vr_flow_hash(t, k);
	unsigned i = probe(t, k, h);

	if (t->slot[i].used)
		return -EEXIST;
	if (t->count == t->max)
		return -ENOSPC;
	t->slot[i] = (struct slot){ *k, (uint32_t)(h >> 32), (uint32_t)h, val, 1 };
	t->count++;
	return 0;
}

int vr_flow_lookup(const struct vr_flow_table *t, const struct vr_flow_key *k, uint32_t *val)
{
	unsigned i = probe(t, k, vr_flow_hash(t, k));

	if (!t->slot[i].used)
		return -ENOENT;
	*val = t->slot[i].val;
	return 0;
}

int vr_flow_remove(struct vr_flow_table *t, const struct vr_flow_key *k)
{
	unsigned i = probe(t, k, vr_flow_hash(t, k));

	if (!t->slot[i].used)
		return -ENOENT;
	t->count--;
	/* Knuth 6.4 algorithm R: pull later members of the run back over the gap. */
	for (unsigned j = i;;) {
		j = (j + 1) & t->mask;
		if (!t->slot[j].used)
			break;
		unsigned home = t->slot[j].home & t->mask;
		if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
			continue;
		t->slot[i] = t->slot[j];
		i = j;
	}
	t->slot[i].used = 0;
	return 0;
}

unsigned vr_flow_count(const struct vr_flow_table *t)
{
	return t->count;
}
