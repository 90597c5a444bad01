/*
 * ratelimit.c - the table of per-VPS windows (see vmrelay/ratelimit.h): a
 * liburcu lock-free hash table (cds_lfht) of entries keyed by account id,
 * kept in step with the accounts file by one writer, and the flat index of
 * the same entries (index.c) that the workers look accounts up in under
 * rcu_read_lock; the windows themselves are in window.c. Also the refusal
 * text of a 451.
 *
 * Threads: workers (and the control thread's show) are RCU readers of the
 * index and the entries' atomics; the writer alone walks and changes the
 * cds_lfht, publishes a new index whenever the set of accounts changed, and
 * frees the old index and the deleted entries in call_rcu batches queued
 * after that, so after every reader that could still hold one has passed a
 * quiescent state.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <urcu-qsbr.h>     /* before any urcu/ header: it maps call_rcu and cds_lfht to QSBR */

#include "vmrelay/common.h"
#include "vmrelay/policy.h"

#include "rl_impl.h"

#define DAY 86400

struct key {
	const char *id;
	size_t len;
};

static int match_id(struct cds_lfht_node *node, const void *k)
{
	struct vr_rl_entry *e = caa_container_of(node, struct vr_rl_entry, node);
	const struct key *key = k;

	VR_RL_FOUND(e);
	return e->idlen == key->len && memcmp(e->id, key->id, key->len) == 0;
}

static bool key_of(const char *id, struct key *k)
{
	k->id = id;
	k->len = id ? strnlen(id, VR_ACCOUNT_ID_MAX) : 0;
	return k->len > 0 && k->len < VR_ACCOUNT_ID_MAX;
}

/* The writer's lookup, under rcu_read_lock; the entry is valid until the
 * unlock. */
static struct vr_rl_entry *lookup(const struct vr_rl *rl, const char *id)
{
	struct cds_lfht_iter iter;
	struct cds_lfht_node *node;
	struct key k;

	if (!key_of(id, &k))
		return NULL;
	cds_lfht_lookup(rl->ht, vr_rl_hash_id(k.id, k.len), match_id, &k, &iter);
	node = cds_lfht_iter_get_node(&iter);
	return node ? caa_container_of(node, struct vr_rl_entry, node) : NULL;
}

/* The workers' lookup, in the published index, under rcu_read_lock; the
 * entry is valid until the unlock (QSBR: the thread's next quiescent state). */
static struct vr_rl_entry *find(const struct vr_rl *rl, const char *id)
{
	/* Acquire pairs with the release that published the index: its slots
	 * and the entries they name are seen whole. */
	const struct vr_rl_index *ix = atomic_load_explicit(&rl->index, memory_order_acquire);
	struct vr_rl_entry *e;
	struct key k;

	if (!ix || !key_of(id, &k))
		return NULL;
	e = vr_rl_index_find(ix, k.id, k.len);
	VR_RL_IX_DONE(ix);
	if (e)
		VR_RL_FOUND(e);
	return e;
}

/* The end of a lookup's use of e, before rcu_read_unlock. */
static void put(struct vr_rl_entry *e)
{
	if (e)
		VR_RL_DONE(e);
	rcu_read_unlock();
}

static bool time_ok(const struct vr_rl *rl, int64_t t)
{
	return t >= RL_TIME_MIN && t < vr_rl_tz_end(&rl->tz);
}

/* --- the table: writer side --- */

struct vr_rl *vr_rl_new(const struct vr_rl_limits *lim, char *err, size_t errlen)
{
	const char *zone = lim->timezone && *lim->timezone ? lim->timezone : "UTC";
	struct vr_rl *rl;

	if (lim->per_minute < 1 || lim->per_minute > RL_COUNT_MAX) {
		snprintf(err, errlen, "per_minute %u: must be 1 to %u", lim->per_minute,
			 RL_COUNT_MAX);
		return NULL;
	}
	if (lim->per_hour < 1 || lim->per_day_max < 1) {
		snprintf(err, errlen, "%s 0: must be at least 1",
			 lim->per_hour < 1 ? "per_hour" : "per_day_max");
		return NULL;
	}
	rl = calloc(1, sizeof(*rl));
	if (!rl) {
		snprintf(err, errlen, "%s", strerror(ENOMEM));
		return NULL;
	}
	rl->per_minute = lim->per_minute;
	rl->per_hour = lim->per_hour;
	rl->per_day_max = lim->per_day_max;
	if (vr_rl_tz_load(&rl->tz, zone, err, errlen) < 0) {
		free(rl);
		return NULL;
	}
	/* Sized by each sync (table_fit), not by cds_lfht's lazy resize worker:
	 * on busy cores that lags by seconds, with lookups walking long chains
	 * meanwhile. */
	rl->buckets = RL_MIN_BUCKETS;
	rl->ht = cds_lfht_new(rl->buckets, RL_MIN_BUCKETS, 0, 0, NULL);
	if (!rl->ht) {
		vr_rl_tz_free(&rl->tz);
		free(rl);
		snprintf(err, errlen, "%s", strerror(ENOMEM));
		return NULL;
	}
	return rl;
}

void vr_rl_free(struct vr_rl *rl)
{
	struct cds_lfht_iter iter;
	struct vr_rl_entry *e;

	if (!rl)
		return;
	rcu_read_lock();
	cds_lfht_for_each_entry(rl->ht, &iter, e, node) {
		cds_lfht_del(rl->ht, &e->node);
		free(e);                /* no reader is left (the caller says) */
	}
	rcu_read_unlock();
	cds_lfht_destroy(rl->ht, NULL);
	/* Entries and indexes replaced by earlier syncs are freed before we
	 * return. */
	rcu_barrier();
	vr_rl_index_free(atomic_load_explicit(&rl->index, memory_order_relaxed));
	vr_rl_tz_free(&rl->tz);
	free(rl);
}

/* The entries one sync removed, freed together after a grace period. */
struct grave {
	struct rcu_head rcu;
	size_t n;
	struct vr_rl_entry *e[];
};

static void grave_free(struct rcu_head *head)
{
	struct grave *g = caa_container_of(head, struct grave, rcu);

	VR_RL_FOUND(g);
	for (size_t i = 0; i < g->n; i++) {
		VR_RL_RECLAIM(g->e[i]);
		free(g->e[i]);
	}
	free(g);
}

static struct vr_rl_entry *entry_new(const char *id, uint32_t quota)
{
	size_t len = strlen(id);
	struct vr_rl_entry *e = malloc(sizeof(*e) + len + 1);

	if (!e)
		return NULL;
	cds_lfht_node_init(&e->node);
	vr_rl_entry_init(e, quota);
	e->idlen = (uint8_t)len;
	memcpy(e->id, id, len + 1);
	return e;
}

/* Adds the accounts not in the table yet and sets every quota. */
static int sync_add(struct vr_rl *rl, const struct vr_accounts *accounts)
{
	for (unsigned i = 0, n = vr_accounts_count(accounts); i < n; i++) {
		const struct vr_account *a = vr_accounts_at(accounts, i);
		struct vr_rl_entry *e = lookup(rl, a->id);

		if (e) {
			atomic_store_explicit(&e->quota, a->daily_quota, memory_order_relaxed);
			continue;
		}
		e = entry_new(a->id, a->daily_quota);
		if (!e)
			return -ENOMEM;
		/* Publishes the initialised entry (cds_lfht orders the node's
		 * contents before the store that links it). */
		VR_RL_PUBLISH(e);
		cds_lfht_add(rl->ht, vr_rl_hash_id(e->id, e->idlen), &e->node);
		rl->n_entries++;
	}
	return 0;
}

/* A bucket per four accounts, rounded up to a power of two: the workers
 * look accounts up in the index, so only the writer walks these chains.
 * Resizing is safe alongside readers (outside a read-side critical
 * section, from a registered thread). */
static void table_fit(struct vr_rl *rl, unsigned long n)
{
	unsigned long want = RL_MIN_BUCKETS;

	while (want < n / 4)
		want <<= 1;
	if (want != rl->buckets) {
		cds_lfht_resize(rl->ht, want);
		rl->buckets = want;
	}
}

static void index_free_rcu(struct rcu_head *head)
{
	struct vr_rl_index *ix = caa_container_of(head, struct vr_rl_index, rcu);

	VR_RL_IX_RECLAIM(ix);
	vr_rl_index_free(ix);
}

/* Makes ix the workers' index; the one it replaces is freed after a grace
 * period, as is g (queued after the swap, so no worker can still find its
 * entries once the grace period ends). */
static void index_publish(struct vr_rl *rl, struct vr_rl_index *ix, struct grave *g)
{
	struct vr_rl_index *old = atomic_load_explicit(&rl->index, memory_order_relaxed);

	/* Release: the slots and the entries they name before the pointer. */
	atomic_store_explicit(&rl->index, ix, memory_order_release);
	if (old)
		call_rcu(&old->rcu, index_free_rcu);
	if (g) {
		VR_RL_PUBLISH(g);
		call_rcu(&g->rcu, grave_free);
	}
}

int vr_rl_sync(struct vr_rl *rl, const struct vr_accounts *accounts)
{
	struct cds_lfht_iter iter;
	struct vr_rl_entry *e;
	struct vr_rl_index *ix;
	struct grave *g = NULL;
	size_t gone = 0;
	int rc;

	for (unsigned i = 0, n = vr_accounts_count(accounts); i < n; i++) {
		uint32_t q = vr_accounts_at(accounts, i)->daily_quota;
		if (q < 1 || q > rl->per_day_max)
			return -ERANGE;
	}
	rcu_read_lock();
	cds_lfht_for_each_entry(rl->ht, &iter, e, node)
		gone += !vr_accounts_by_id(accounts, e->id);
	rcu_read_unlock();
	if (gone) {
		g = malloc(sizeof(*g) + gone * sizeof(g->e[0]));
		if (!g)
			return -ENOMEM;
		g->n = 0;
	}
	/* Grown first: adding a million accounts to a small table would make
	 * every lookup before an add walk a long chain. */
	table_fit(rl, VR_MAX(rl->n_entries, vr_accounts_count(accounts)));
	rcu_read_lock();
	rc = sync_add(rl, accounts);
	/* The new index holds what stays; what goes leaves the table only once
	 * the index without it is built, so a failure leaves both as they were. */
	ix = vr_rl_index_new(rl->n_entries - gone);
	cds_lfht_for_each_entry(rl->ht, &iter, e, node) {
		/* The only writer: the entries counted above are the ones found here. */
		if (!vr_accounts_by_id(accounts, e->id)) {
			if (g && g->n < gone)
				g->e[g->n++] = e;
		} else if (ix && vr_rl_index_add(ix, e) < 0) {
			vr_rl_index_free(ix);
			ix = NULL;
		}
	}
	for (size_t i = 0; ix && g && i < g->n; i++)
		if (cds_lfht_del(rl->ht, &g->e[i]->node) == 0)
			rl->n_entries--;
	rcu_read_unlock();
	if (!ix) {
		free(g);
		return -ENOMEM;
	}
	index_publish(rl, ix, g);
	table_fit(rl, rl->n_entries);
	return rc;
}

int vr_rl_set_daily(struct vr_rl *rl, const char *id, uint32_t quota)
{
	struct vr_rl_entry *e;

	if (quota < 1 || quota > rl->per_day_max)
		return -ERANGE;
	rcu_read_lock();
	e = lookup(rl, id);
	if (e)
		atomic_store_explicit(&e->quota, quota, memory_order_relaxed);
	put(e);
	return e ? 0 : -ENOENT;
}

int vr_rl_reset(struct vr_rl *rl, const char *id)
{
	struct vr_rl_entry *e;

	rcu_read_lock();
	e = lookup(rl, id);
	if (e)
		vr_rl_entry_reset(e);
	put(e);
	return e ? 0 : -ENOENT;
}

int vr_rl_restore(struct vr_rl *rl, const char *id, uint32_t n, int64_t at)
{
	struct vr_rl_entry *e;

	if (n == 0 || !time_ok(rl, at))
		return -EINVAL;
	rcu_read_lock();
	e = lookup(rl, id);
	if (e)
		vr_rl_entry_restore(rl, e, n, (uint32_t)at);
	put(e);
	return e ? 0 : -ENOENT;
}

/* --- readers --- */

int vr_rl_reserve(struct vr_rl *rl, const char *id, uint32_t n, int64_t now,
		  struct vr_rl_ticket *ticket, struct vr_rl_verdict *v)
{
	struct vr_rl_entry *e;
	int rc = -ENOENT;

	if (n == 0 || !time_ok(rl, now))
		return -EINVAL;
	rcu_read_lock();
	e = find(rl, id);
	if (e)
		rc = vr_rl_entry_reserve(rl, e, n, (uint32_t)now, ticket, v);
	put(e);
	return rc;
}

void vr_rl_confirm(struct vr_rl *rl, const char *id, const struct vr_rl_ticket *ticket)
{
	/* Counted at reserve; a confirmed ticket simply is not released. */
}

void vr_rl_release(struct vr_rl *rl, const char *id, const struct vr_rl_ticket *ticket)
{
	struct vr_rl_entry *e;

	if (ticket->n == 0 || !time_ok(rl, ticket->at))
		return;
	rcu_read_lock();
	e = find(rl, id);
	if (e)
		vr_rl_entry_release(rl, e, ticket);
	put(e);
}

int vr_rl_show(struct vr_rl *rl, const char *id, int64_t now, struct vr_rl_verdict *v)
{
	struct vr_rl_entry *e;

	if (!time_ok(rl, now))
		return -EINVAL;
	rcu_read_lock();
	e = find(rl, id);
	if (e)
		vr_rl_entry_show(rl, e, (uint32_t)now, v);
	put(e);
	return e ? 0 : -ENOENT;
}

/* --- the refusal text --- */

/* "14s", "12m05s", "3h12m" (rounded up: never sooner than the truth). */
static void fmt_wait(char *out, size_t len, int64_t s)
{
	if (s < 60)
		snprintf(out, len, "%llds", (long long)VR_MAX(s, 0));
	else if (s < 3600)
		snprintf(out, len, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
	else
		snprintf(out, len, "%lldh%02lldm", (long long)((s + 59) / 60 / 60),
			 (long long)((s + 59) / 60 % 60));
}

static const char *const window_unit[] = {
	[VR_RL_MINUTE] = "minute",
	[VR_RL_HOUR] = "hour",
};

char *vr_rl_explain(const struct vr_rl *rl, const struct vr_rl_verdict *v, int64_t now,
		    char *out, size_t outlen)
{
	const struct vr_rl_window_state *w = &v->w[v->window];
	char wait[32];

	if (v->ok) {
		snprintf(out, outlen, "within limits (minute %u/%u, hour %u/%u, day %u/%u)",
			 v->w[VR_RL_MINUTE].used, v->w[VR_RL_MINUTE].limit, v->w[VR_RL_HOUR].used,
			 v->w[VR_RL_HOUR].limit, v->w[VR_RL_DAY].used, v->w[VR_RL_DAY].limit);
		return out;
	}
	fmt_wait(wait, sizeof(wait), w->resets_at - now);
	if (v->window == VR_RL_DAY) {
		/* The local time the next day starts: midnight, unless the zone
		 * jumps over it that day. */
		int64_t local = w->resets_at + vr_rl_tz_offset(&rl->tz, w->resets_at);
		int64_t tod = (local % DAY + DAY) % DAY;
		snprintf(out, outlen, "daily quota %u/%u reached, resets %02d:%02d %s in %s", w->used,
			 w->limit, (int)(tod / 3600), (int)(tod % 3600 / 60), rl->tz.name, wait);
	} else if (w->resets_at) {
		snprintf(out, outlen, "%u mails per %s reached (%u/%u), next slot in %s", w->limit,
			 window_unit[v->window], w->used, w->limit, wait);
	} else {
		/* Refused while empty: asked for more than the whole window. */
		snprintf(out, outlen, "%u mails per %s reached (%u/%u)", w->limit,
			 window_unit[v->window], w->used, w->limit);
	}
	return out;
}
