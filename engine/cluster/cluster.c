/*
 * cluster.c - quota leases (see vmrelay/cluster.h): the table of VPSes
 * active on this node, the workers' lock-free side, and the cluster thread
 * that keeps each one's block filled from Redis.
 *
 * An entry's block is a count of slots (avail) the workers take with a CAS
 * and never push below zero. The thread fills it (a lease from Redis, or
 * the fail-safe share while Redis is away), and ends it by taking avail to
 * zero; a block changes its source only once no taken slot is still in
 * flight, so every confirmed slot is settled as what it was taken from.
 *
 * Threads: workers (QSBR readers, vmrelay/ratelimit.h) look entries up and
 * touch only the atomics marked (W); they may add an entry
 * (cds_lfht_add_unique). Only the cluster thread removes entries (freed
 * after a grace period, call_rcu) and writes the fields marked (T), so it
 * may keep an entry pointer while offline, talking to Redis: it is online
 * only to list the table.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <urcu-qsbr.h>     /* before any urcu/ header: cds_lfht and call_rcu to QSBR */
#include <urcu/rculfhash.h>

#include "vmrelay/clock.h"
#include "vmrelay/common.h"
#include "vmrelay/log.h"
#include "vmrelay/policy.h"
#include "vmrelay/tls.h"

#include "cluster_impl.h"

#define TICK_MS        100
#define RECONNECT_MS   1000
/* Retire a block this long before Redis's expiry: the node's clock started
 * counting before Redis's did, this covers the rest (a slow reply). */
#define MARGIN_MS      1000
/* A VPS that sent nothing for this long (or a lease's life, if shorter)
 * gives its block back: more than the gaps of a steadily sending VPS. */
#define IDLE_MS        15000
/* While Redis says a window is spent, ask again no sooner than this. */
#define SPENT_RETRY_MS 2000
/* Sent mails per second, a ring the workers add to and the thread drains;
 * a power of two, far more seconds than the thread ever lags. */
#define USES_RING      64

enum source { SRC_NONE, SRC_LEASE, SRC_FAILSAFE };

struct entry {
	struct cds_lfht_node node;
	struct rcu_head rcu;
	char id[VR_ACCOUNT_ID_MAX];

	/* (W) workers, with atomics; the thread too */
	int32_t avail;                /* slots of the block not taken */
	int32_t inflight;             /* taken, not yet confirmed or released */
	struct {
		int64_t sec;          /* the second counted (node's clock) */
		uint32_t n;           /* confirmed then, not yet drained */
	} uses[USES_RING];
	uint64_t taken;               /* ever, for the rate */
	uint32_t daily;               /* the account's quota, from touch */
	bool demand;                  /* a worker found the block short */
	/* (T) written by the thread, read by workers: a spent window */
	int64_t spent_until;          /* epoch s; 0 = not spent */
	uint32_t spent_window, spent_used, spent_limit;
	int32_t low;                  /* below this a worker asks for more */

	/* (T) the thread only */
	enum source src;
	uint32_t lease;               /* our lease in Redis, as last told */
	uint64_t deadline_ms;         /* the block ends by then */
	uint64_t next_call_ms;
	uint64_t taken_seen, rate_at_ms, last_use_ms;
	double rate;
	struct vr_cl_use pend_uses[VR_CL_USES_MAX];   /* lease mails to settle */
	unsigned n_pend_uses;
	uint32_t pend_extra, pend_returned;
	uint32_t headroom;            /* what every window had besides our lease, last call */
	int conn;
	struct vr_cl_failsafe fs;
};

struct vr_cluster {
	struct vr_cluster_params p;
	char prefix[64], node[128];
	char where[200];              /* for logs: the Redis address or the sentinels' master */
	struct vr_cl_sizing sz;
	struct cds_lfht *ht;
	int efd;
	bool kicked;                  /* (W) an eventfd write is pending */
	bool stopping;
	pthread_t thread;
	bool started;

	/* the thread's */
	struct vr_cl_redis redis;
	struct entry **list;          /* the table, listed each pass */
	size_t n_list, cap_list;
	bool up;                      /* (T) read by stats */
	int64_t skew;                 /* Redis's clock minus ours, s, at the last reply */
	bool down_logged;
	uint64_t retry_ms;

	/* statistics: workers' with relaxed atomics, the thread's likewise */
	struct vr_cluster_stats st;
};

static void count(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

/* FNV-1a: ids come from the operator's accounts file, not from clients. */
static unsigned long hash_id(const char *id)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (; *id; id++)
		h = (h ^ (uint8_t)*id) * UINT64_C(0x100000001b3);
	return (unsigned long)(h ^ (h >> 32));
}

static int match(struct cds_lfht_node *node, const void *key)
{
	return strcmp(caa_container_of(node, struct entry, node)->id, key) == 0;
}

/* Under rcu_read_lock. */
static struct entry *lookup(const struct vr_cluster *c, const char *id, unsigned long h)
{
	struct cds_lfht_iter it;

	cds_lfht_lookup(c->ht, h, match, id, &it);
	struct cds_lfht_node *n = cds_lfht_iter_get_node(&it);
	return n ? caa_container_of(n, struct entry, node) : NULL;
}

static void kick(struct vr_cluster *c)
{
	uint64_t one = 1;

	/* One write wakes the thread; it clears kicked before it scans, so a
	 * demand raised after its scan began gets a write of its own. */
	if (!__atomic_exchange_n(&c->kicked, true, __ATOMIC_ACQ_REL))
		(void)!write(c->efd, &one, sizeof(one));
}

/* --- the workers' side --- */

void vr_cluster_touch(struct vr_cluster *c, const char *id, uint32_t daily)
{
	size_t len = strnlen(id, VR_ACCOUNT_ID_MAX);
	unsigned long h = hash_id(id);
	struct entry *e, *fresh = NULL;

	if (len == 0 || len >= VR_ACCOUNT_ID_MAX)
		return;
	rcu_read_lock();
	e = lookup(c, id, h);
	if (!e) {
		/* A VPS's first mail on this node: one allocation, not per mail. */
		fresh = calloc(1, sizeof(*fresh));
		if (!fresh) {
			rcu_read_unlock();
			return;
		}
		memcpy(fresh->id, id, len + 1);
		fresh->conn = -1;
		fresh->headroom = UINT32_MAX;
		cds_lfht_node_init(&fresh->node);
		struct cds_lfht_node *n = cds_lfht_add_unique(c->ht, h, match, id, &fresh->node);
		e = caa_container_of(n, struct entry, node);
		if (e != fresh)
			free(fresh);        /* another worker was first; never published */
	}
	__atomic_store_n(&e->daily, daily, __ATOMIC_RELAXED);
	bool ask = __atomic_load_n(&e->avail, __ATOMIC_RELAXED) <= 0 &&
		   !__atomic_load_n(&e->demand, __ATOMIC_RELAXED);
	if (ask)
		__atomic_store_n(&e->demand, true, __ATOMIC_RELEASE);
	rcu_read_unlock();
	if (ask)
		kick(c);
}

static void verdict_pending(const struct vr_cluster *c, struct vr_cluster_verdict *v)
{
	if (v)
		*v = (struct vr_cluster_verdict){
			.pending = true, .redis_away = !__atomic_load_n(&c->up, __ATOMIC_RELAXED),
		};
}

/* vr_cluster_take; a poll (a RCPT waiting) counts only its end in a spent
 * allowance, and wakes the thread only if it has not been asked since its
 * last look. */
static int take(struct vr_cluster *c, const char *id, uint32_t n, struct vr_cluster_verdict *v,
		bool poll)
{
	int32_t want = (int32_t)n;
	int rc = -EAGAIN;

	rcu_read_lock();
	struct entry *e = lookup(c, id, hash_id(id));
	if (!e) {
		rcu_read_unlock();
		if (!poll)
			count(&c->st.pending, 1);
		verdict_pending(c, v);
		return -EAGAIN;
	}
	/* inflight first: once the thread has taken avail to zero and then
	 * reads inflight 0, no slot of the old block can still be confirmed. */
	__atomic_fetch_add(&e->inflight, want, __ATOMIC_SEQ_CST);
	int32_t a = __atomic_load_n(&e->avail, __ATOMIC_SEQ_CST);
	while (a >= want) {
		if (__atomic_compare_exchange_n(&e->avail, &a, a - want, false, __ATOMIC_SEQ_CST,
						__ATOMIC_SEQ_CST)) {
			rc = 0;
			break;
		}
	}
	if (rc == 0) {
		__atomic_fetch_add(&e->taken, n, __ATOMIC_RELAXED);
		bool low = a - want < __atomic_load_n(&e->low, __ATOMIC_RELAXED) &&
			   !__atomic_load_n(&e->demand, __ATOMIC_RELAXED);
		if (low)
			__atomic_store_n(&e->demand, true, __ATOMIC_RELEASE);
		rcu_read_unlock();
		count(&c->st.taken, n);
		if (low)
			kick(c);
		return 0;
	}
	__atomic_fetch_sub(&e->inflight, want, __ATOMIC_SEQ_CST);
	int64_t now = (int64_t)(vr_clock_wall_us() / 1000000u);
	int64_t until = __atomic_load_n(&e->spent_until, __ATOMIC_ACQUIRE);
	if (until > now) {
		if (v)
			*v = (struct vr_cluster_verdict){
				.window = (enum vr_rl_window)__atomic_load_n(
					&e->spent_window, __ATOMIC_RELAXED),
				.used = __atomic_load_n(&e->spent_used, __ATOMIC_RELAXED),
				.limit = __atomic_load_n(&e->spent_limit, __ATOMIC_RELAXED),
				.resets_at = until,
			};
		rc = -EDQUOT;
	} else {
		verdict_pending(c, v);
	}
	/* spent too: the thread asks Redis again now and then, as other nodes
	 * may give slots back */
	bool asked = __atomic_exchange_n(&e->demand, true, __ATOMIC_ACQ_REL);
	rcu_read_unlock();
	if (rc == -EDQUOT)
		count(&c->st.spent, 1);
	else if (!poll)
		count(&c->st.pending, 1);
	if (!poll || !asked)
		kick(c);
	return rc;
}

int vr_cluster_take(struct vr_cluster *c, const char *id, uint32_t n,
		    struct vr_cluster_verdict *v)
{
	return take(c, id, n, v, false);
}

int vr_cluster_poll(struct vr_cluster *c, const char *id, uint32_t n,
		    struct vr_cluster_verdict *v)
{
	return take(c, id, n, v, true);
}

/* Ends n in-flight slots: sent (used) or back into the block. */
static void settle(struct vr_cluster *c, const char *id, uint32_t n, bool sent)
{
	rcu_read_lock();
	struct entry *e = lookup(c, id, hash_id(id));
	/* The entry outlives its in-flight slots: the thread removes none
	 * with inflight != 0. */
	if (e && sent) {
		int64_t sec = (int64_t)(vr_clock_wall_us() / 1000000u);
		unsigned i = (unsigned)sec & (USES_RING - 1);
		/* The slot's last second was drained long ago (the thread keeps
		 * up within a second or two): its tag moves on, then the count
		 * is added, so a drain that sees the count sees the tag. */
		if (__atomic_load_n(&e->uses[i].sec, __ATOMIC_RELAXED) != sec)
			__atomic_store_n(&e->uses[i].sec, sec, __ATOMIC_RELEASE);
		__atomic_fetch_add(&e->uses[i].n, n, __ATOMIC_SEQ_CST);
	} else if (e) {
		__atomic_fetch_add(&e->avail, (int32_t)n, __ATOMIC_SEQ_CST);
	}
	if (e) {
		/* after uses/avail: inflight 0 means both are visible */
		__atomic_fetch_sub(&e->inflight, (int32_t)n, __ATOMIC_SEQ_CST);
	}
	rcu_read_unlock();
}

void vr_cluster_confirm(struct vr_cluster *c, const char *id, uint32_t n)
{
	settle(c, id, n, true);
}

void vr_cluster_release(struct vr_cluster *c, const char *id, uint32_t n)
{
	settle(c, id, n, false);
}

void vr_cluster_stats(const struct vr_cluster *c, struct vr_cluster_stats *st)
{
	const uint64_t *src = (const uint64_t *)&c->st.redis_ops;
	uint64_t *dst = &st->redis_ops;

	/* every field after redis_up is a uint64_t counter */
	for (size_t i = 0; i < (sizeof(*st) - offsetof(struct vr_cluster_stats, redis_ops)) /
				       sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	st->redis_up = __atomic_load_n(&c->up, __ATOMIC_RELAXED);
}

static const char *const window_names[] = {
	[VR_RL_MINUTE] = "per-minute limit",
	[VR_RL_HOUR] = "hourly limit",
	[VR_RL_DAY] = "daily quota",
};

char *vr_cluster_explain(const struct vr_cluster_verdict *v, const char *id, int64_t now,
			 char *out, size_t outlen)
{
	if (v->pending && v->redis_away) {
		snprintf(out, outlen, "cluster quota store unreachable and this node's share "
			 "for VPS %s used, try again later", id);
		return out;
	}
	if (v->pending) {
		snprintf(out, outlen, "cluster quota for VPS %s not ready on this node, "
			 "try again shortly", id);
		return out;
	}
	int64_t in = v->resets_at > now ? v->resets_at - now : 0;
	char when[32];
	if (in >= 3600)
		snprintf(when, sizeof(when), "%lldh%02lldm", (long long)(in / 3600),
			 (long long)(in % 3600 / 60));
	else if (in >= 60)
		snprintf(when, sizeof(when), "%lldm%02llds", (long long)(in / 60),
			 (long long)(in % 60));
	else
		snprintf(when, sizeof(when), "%llds", (long long)in);
	snprintf(out, outlen, "cluster-wide %s %u/%u reached, next slot in %s",
		 window_names[v->window], v->used, v->limit, when);
	return out;
}

/* --- the cluster thread --- */

static void redis_down(struct vr_cluster *c, const char *err)
{
	char q[600];

	vr_cl_redis_close(&c->redis);
	c->retry_ms = vr_clock_ms() + RECONNECT_MS;
	__atomic_store_n(&c->up, false, __ATOMIC_RELAXED);
	if (!c->down_logged) {
		c->down_logged = true;
		vr_log_err("event=cluster_redis_down redis=%s failsafe_percent=%u error=%s",
			   c->where, c->p.failsafe_percent,
			   vr_log_quote(q, sizeof(q), err, strlen(err)));
	}
}

void vr_cl_admin_limits(const struct vr_cluster *c, uint32_t daily,
			uint32_t limit[VR_RL_NWINDOWS])
{
	limit[VR_RL_MINUTE] = c->p.per_minute;
	limit[VR_RL_HOUR] = c->p.per_hour;
	limit[VR_RL_DAY] = daily;
}

const char *vr_cl_admin_open(const struct vr_cluster *c, struct vr_cl_redis *r)
{
	/* field by field: the cluster thread writes the rest of c->redis */
	memset(r, 0, sizeof(*r));
	memcpy(r->seed, c->redis.seed, sizeof(r->seed));
	memcpy(r->sentinels, c->redis.sentinels, sizeof(r->sentinels));
	r->n_sentinels = c->redis.n_sentinels;
	memcpy(r->master_name, c->redis.master_name, sizeof(r->master_name));
	r->tls = c->redis.tls;
	memcpy(r->tls_name, c->redis.tls_name, sizeof(r->tls_name));
	memcpy(r->password, c->redis.password, sizeof(r->password));
	r->timeout_ms = c->redis.timeout_ms;
	return c->prefix;
}

static void limits_of(const struct vr_cluster *c, const struct entry *e,
		      uint32_t lim[VR_RL_NWINDOWS])
{
	vr_cl_admin_limits(c, __atomic_load_n(&e->daily, __ATOMIC_RELAXED), lim);
}

/* Confirmed slots, to the settlement of the block they came from: the
 * seconds before the last two (workers may still add to those), or all of
 * them when the block has ended. A lease's are kept by second, in Redis's
 * clock (c->skew); the fail-safe share's are charged when settled. */
static void fold_used(struct vr_cluster *c, struct entry *e, bool all)
{
	int64_t now = (int64_t)(vr_clock_wall_us() / 1000000u);

	for (unsigned i = 0; i < USES_RING; i++) {
		if (!__atomic_load_n(&e->uses[i].n, __ATOMIC_RELAXED) ||
		    (!all && __atomic_load_n(&e->uses[i].sec, __ATOMIC_RELAXED) > now - 2))
			continue;
		uint32_t n = __atomic_exchange_n(&e->uses[i].n, 0, __ATOMIC_SEQ_CST);
		/* read after: a count a worker added came with its tag */
		int64_t sec = __atomic_load_n(&e->uses[i].sec, __ATOMIC_ACQUIRE);
		if (e->src == SRC_FAILSAFE) {
			e->pend_extra += n;
			count(&c->st.failsafe_taken, n);
		} else {
			vr_cl_uses_add(e->pend_uses, &e->n_pend_uses, sec + c->skew, n);
		}
	}
}

/* Takes the block to zero, what was left going back where it came from
 * (the lease's next settlement, or the fail-safe share); true once no slot
 * of it is in flight, its confirmed slots then folded in. Until then it
 * is called again: slots released meanwhile go back the same way. */
static bool block_end(struct vr_cluster *c, struct entry *e)
{
	uint32_t left = (uint32_t)__atomic_exchange_n(&e->avail, 0, __ATOMIC_SEQ_CST);

	if (e->src == SRC_FAILSAFE)
		vr_cl_failsafe_return(&e->fs, (int64_t)(vr_clock_wall_us() / 1000000u), left);
	else
		e->pend_returned += left;
	if (__atomic_load_n(&e->inflight, __ATOMIC_SEQ_CST) != 0)
		return false;
	fold_used(c, e, true);
	return true;
}

/* One script call for e; false if Redis failed. */
static bool lease_call(struct vr_cluster *c, struct entry *e, uint32_t want, uint64_t now_ms)
{
	char err[512];
	struct vr_cl_grant g;
	int64_t sent_at = (int64_t)(vr_clock_wall_us() / 1000000u);
	struct vr_cl_call call = {
		.node = c->node, .want = want, .uses = e->pend_uses, .n_uses = e->n_pend_uses,
		.extra_used = e->pend_extra, .returned = e->pend_returned,
		.ttl_s = c->p.lease_ttl_s,
	};

	limits_of(c, e, call.limit);
	if (vr_cl_redis_eval(&c->redis, &e->conn, e->id, c->prefix, &call, &g, err,
			     sizeof(err)) < 0) {
		redis_down(c, err);
		return false;
	}
	/* Redis's clock against ours, in whole seconds of which either may be
	 * partly gone: one more, so a second we report is never earlier on
	 * Redis's clock than the one the mail was sent in */
	c->skew = g.now - sent_at + 1;
	e->n_pend_uses = 0;
	e->pend_extra = 0;
	e->pend_returned = 0;
	count(&c->st.slots_returned, call.returned);
	if (!g.lease_known && e->src == SRC_LEASE) {
		/* Redis no longer has our lease (it lost its data, which the
		 * guarantees assume it does not): what is left of the block is
		 * backed by nothing. */
		block_end(c, e);
		e->pend_returned = 0;
	}
	if (g.granted) {
		__atomic_fetch_add(&e->avail, (int32_t)g.granted, __ATOMIC_SEQ_CST);
		count(&c->st.leases, 1);
		count(&c->st.slots_leased, g.granted);
	}
	e->lease = g.lease;
	e->src = g.lease ? SRC_LEASE : SRC_NONE;
	e->headroom = UINT32_MAX;
	call.limit[VR_RL_DAY] = g.day_limit;
	/* what the windows have besides our own lease (used counts it): a
	 * block we hold is ours to spend or give back, and counting it
	 * against ourselves would shrink a steady VPS's block below a lease's
	 * life of mail, a call more per life */
	for (int w = 0; w < VR_RL_NWINDOWS; w++) {
		uint32_t others = g.used[w] - VR_MIN(g.used[w], g.lease);
		e->headroom = VR_MIN(e->headroom, call.limit[w] > others ?
					       call.limit[w] - others : 0);
	}
	e->deadline_ms = now_ms + (uint64_t)c->p.lease_ttl_s * 1000u - MARGIN_MS;
	if (g.refused && g.granted < want) {
		int w = g.refused - 1;
		__atomic_store_n(&e->spent_window, (uint32_t)w, __ATOMIC_RELAXED);
		__atomic_store_n(&e->spent_used, g.used[w], __ATOMIC_RELAXED);
		__atomic_store_n(&e->spent_limit, w == VR_RL_DAY ? g.day_limit : call.limit[w],
				 __ATOMIC_RELAXED);
		__atomic_store_n(&e->spent_until, VR_MAX(g.resets_at, g.now + 1), __ATOMIC_RELEASE);
		e->next_call_ms = now_ms + SPENT_RETRY_MS;
	} else {
		__atomic_store_n(&e->spent_until, 0, __ATOMIC_RELEASE);
		e->next_call_ms = 0;
	}
	return true;
}

/* Redis away: the block comes from this node's share of each limit. */
static void failsafe_fill(struct vr_cluster *c, struct entry *e, uint32_t want)
{
	uint32_t lim[VR_RL_NWINDOWS];
	int64_t now = (int64_t)(vr_clock_wall_us() / 1000000u);

	limits_of(c, e, lim);
	if (e->src != SRC_FAILSAFE) {
		e->src = SRC_FAILSAFE;
		vr_log_warn("event=cluster_failsafe account=%s percent=%u", e->id,
			    c->p.failsafe_percent);
	}
	uint32_t g = vr_cl_failsafe_grant(&e->fs, lim, c->p.failsafe_percent, now, want);
	if (g)
		__atomic_fetch_add(&e->avail, (int32_t)g, __ATOMIC_SEQ_CST);
}

static void entry_free(struct rcu_head *h)
{
	free(caa_container_of(h, struct entry, rcu));
}

/* One look at one entry. Returns false if Redis failed on it. */
static bool entry_pass(struct vr_cluster *c, struct entry *e, uint64_t now_ms, bool stopping)
{
	uint64_t taken = __atomic_load_n(&e->taken, __ATOMIC_RELAXED);
	uint32_t want;
	bool demand = __atomic_exchange_n(&e->demand, false, __ATOMIC_ACQ_REL);
	bool up = __atomic_load_n(&c->up, __ATOMIC_RELAXED);

	if (e->rate_at_ms == 0)
		e->rate_at_ms = e->last_use_ms = now_ms;
	if (taken != e->taken_seen || demand)
		e->last_use_ms = now_ms;
	e->rate = vr_cl_rate_update(e->rate, taken - e->taken_seen, now_ms - e->rate_at_ms);
	e->rate_at_ms = now_ms;
	e->taken_seen = taken;
	want = vr_cl_lease_fit(&c->sz, vr_cl_lease_want(&c->sz, e->rate), e->headroom);
	int32_t low = (int32_t)vr_cl_lease_low(want);
	__atomic_store_n(&e->low, low, __ATOMIC_RELAXED);
	fold_used(c, e, false);

	int32_t avail = __atomic_load_n(&e->avail, __ATOMIC_RELAXED);
	uint32_t ask = avail < (int32_t)want ? want - (uint32_t)VR_MAX(avail, 0) : 0;
	/* a VPS quiet for a lease's life (IDLE_MS at most) gives its block
	 * back: held slots count as used on every node */
	bool idle = now_ms - e->last_use_ms >
		    VR_MIN((uint64_t)c->p.lease_ttl_s * 1000u, IDLE_MS);

	if (stopping || (e->src != SRC_NONE && idle)) {
		/* The block aged out (or we stop): what is left goes back. */
		if (!block_end(c, e) && !stopping)
			return true;
		if (e->src == SRC_FAILSAFE)
			e->src = SRC_NONE;
		if (!up || (e->lease == 0 && !e->n_pend_uses && !e->pend_extra &&
			    !e->pend_returned))
			return true;
		return lease_call(c, e, 0, now_ms);
	}
	if (e->src == SRC_LEASE && now_ms >= e->deadline_ms) {
		/* Not renewed in time (Redis away): spend no more of it; it is
		 * settled exactly when Redis is back, unless another node's call
		 * found it expired first and charged all of it. */
		if (!block_end(c, e))
			return true;
		e->src = SRC_NONE;
	}
	if (!up) {
		if (e->src == SRC_LEASE)
			return true;            /* still good until its deadline */
		if (e->src == SRC_NONE && !demand)
			return true;
		if (avail < low || demand)
			failsafe_fill(c, e, ask);
		return true;
	}
	if (e->src == SRC_FAILSAFE) {
		/* Redis is back: finish the share's block, then lease again. */
		if (!block_end(c, e))
			return true;
		e->src = SRC_NONE;
		demand = true;
		avail = 0;
		ask = want;
	}
	if (now_ms < e->next_call_ms)
		return true;
	bool refill = avail < low && (demand || e->src == SRC_LEASE);
	/* renewed a slow reply's time before its deadline (two timeouts, a
	 * second at least, at most half its life): a block lasts past that
	 * (vr_cl_lease_want), so a steady VPS calls once per lease life, the
	 * fewest calls that keep a lease alive */
	uint64_t life = (uint64_t)c->p.lease_ttl_s * 1000u - MARGIN_MS;
	uint64_t lead = VR_MIN(VR_MAX(2u * (uint64_t)c->p.timeout_ms, 1000u), life / 2);
	bool renew = e->src == SRC_LEASE && e->deadline_ms - now_ms < lead;
	/* Sent lease slots wait for the next call: Redis counts them in the
	 * lease meanwhile, which is never less. Mail sent on the fail-safe
	 * share, and what is left of a block that ended without a call (Redis
	 * was away), are settled at once. */
	if (!refill && !renew && !e->pend_extra && !e->pend_returned &&
	    !(e->n_pend_uses && e->src == SRC_NONE))
		return true;
	return lease_call(c, e, ask, now_ms);
}

/* The entries of the table now, into c->list. Online, briefly. */
static void snapshot(struct vr_cluster *c)
{
	struct cds_lfht_iter it;
	struct entry *e;

	c->n_list = 0;
	rcu_thread_online();
	rcu_read_lock();
	cds_lfht_for_each_entry(c->ht, &it, e, node) {
		if (c->n_list == c->cap_list) {
			size_t cap = c->cap_list ? 2 * c->cap_list : 64;
			struct entry **l = realloc(c->list, cap * sizeof(*l));
			if (!l)
				break;          /* the rest waits for the next pass */
			c->list = l;
			c->cap_list = cap;
		}
		c->list[c->n_list++] = e;
	}
	rcu_read_unlock();
	rcu_thread_offline();
}

/* Only this thread removes entries, so the listed ones stay valid. */
static void retire(struct vr_cluster *c, struct entry *e)
{
	rcu_thread_online();
	if (cds_lfht_del(c->ht, &e->node) == 0)
		call_rcu(&e->rcu, entry_free);
	rcu_thread_offline();
}

/* One pass over every entry; entries long idle with nothing held leave. */
static void pass(struct vr_cluster *c, bool stopping)
{
	uint64_t now_ms = vr_clock_ms(), active = 0;
	char err[512];

	if (!__atomic_load_n(&c->up, __ATOMIC_RELAXED) && now_ms >= c->retry_ms) {
		if (vr_cl_redis_conn(&c->redis, NULL, err, sizeof(err)) >= 0) {
			__atomic_store_n(&c->up, true, __ATOMIC_RELAXED);
			c->down_logged = false;
			if (c->redis.n_sentinels)
				vr_log_info("event=cluster_redis_up redis=%s master=%s", c->where,
					    c->redis.master);
			else
				vr_log_info("event=cluster_redis_up redis=%s", c->where);
		} else {
			redis_down(c, err);
		}
	}
	snapshot(c);
	for (size_t i = 0; i < c->n_list; i++) {
		struct entry *e = c->list[i];
		entry_pass(c, e, now_ms, stopping);
		bool empty = e->src == SRC_NONE && e->lease == 0 && !e->pend_extra &&
			     !e->pend_returned && !e->n_pend_uses &&
			     __atomic_load_n(&e->avail, __ATOMIC_SEQ_CST) == 0 &&
			     __atomic_load_n(&e->inflight, __ATOMIC_SEQ_CST) == 0 &&
			     !__atomic_load_n(&e->demand, __ATOMIC_SEQ_CST);
		if (empty && now_ms - e->last_use_ms > 4u * c->p.lease_ttl_s * 1000u)
			retire(c, e);
		else
			active++;
	}
	__atomic_store_n(&c->st.active, active, __ATOMIC_RELAXED);
	__atomic_store_n(&c->st.redis_ops, c->redis.ops, __ATOMIC_RELAXED);
	__atomic_store_n(&c->st.redis_errors, c->redis.errors, __ATOMIC_RELAXED);
	__atomic_store_n(&c->st.redirects, c->redis.redirects, __ATOMIC_RELAXED);
}

static void *cluster_main(void *arg)
{
	struct vr_cluster *c = arg;
	struct pollfd pfd = { .fd = c->efd, .events = POLLIN };
	uint64_t v;

	/* Registered for the table; offline (a quiescent state) except while
	 * snapshot() lists it, since poll and Redis may block. */
	rcu_register_thread();
	rcu_thread_offline();
	while (!__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) {
		if (poll(&pfd, 1, TICK_MS) > 0)
			(void)!read(c->efd, &v, sizeof(v));
		__atomic_store_n(&c->kicked, false, __ATOMIC_RELEASE);
		pass(c, false);
	}
	pass(c, true);
	vr_cl_redis_close(&c->redis);
	rcu_thread_online();
	rcu_unregister_thread();
	return NULL;
}

/* --- life cycle --- */

static int read_password(const char *path, char *out, size_t outlen, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "re");

	if (!fp) {
		snprintf(err, errlen, "password_file %s: %s", path, strerror(errno));
		return -1;
	}
	bool ok = fgets(out, (int)outlen, fp) != NULL;
	fclose(fp);
	out[strcspn(out, "\r\n")] = '\0';
	if (!ok || !out[0]) {
		snprintf(err, errlen, "password_file %s: no password on its first line", path);
		return -1;
	}
	return 0;
}

/* "host:port, host:port" into r->sentinels. 0 or -1 with err. */
static int parse_sentinels(struct vr_cl_redis *r, const char *list, char *err, size_t errlen)
{
	const char *p = list;

	while (*p) {
		char host[256];
		int port;
		size_t n = strcspn(p, ", ");
		if (n == 0) {
			p++;
			continue;
		}
		if (r->n_sentinels == VR_CL_SENTINELS || n >= VR_CL_ADDR_MAX) {
			snprintf(err, errlen, "sentinels: at most %d, each under %d bytes",
				 VR_CL_SENTINELS, VR_CL_ADDR_MAX);
			return -1;
		}
		char *s = r->sentinels[r->n_sentinels];
		memcpy(s, p, n);
		s[n] = '\0';
		if (vr_cl_split_addr(s, host, sizeof(host), &port) < 0) {
			snprintf(err, errlen, "sentinels: '%s' is not host:port", s);
			return -1;
		}
		r->n_sentinels++;
		p += n;
	}
	return 0;
}

static bool given(const char *s)
{
	return s && s[0];
}

/* Where Redis is: the seed, or the sentinels and their master's name. */
static int where_of(struct vr_cluster *c, const struct vr_cluster_params *p, char *err,
		    size_t errlen)
{
	char host[256];
	int port;

	if (given(p->redis) == given(p->sentinels)) {
		snprintf(err, errlen, "give either redis or sentinels (with master_name)");
		return -1;
	}
	if (given(p->redis)) {
		if (strlen(p->redis) >= VR_CL_ADDR_MAX ||
		    vr_cl_split_addr(p->redis, host, sizeof(host), &port) < 0) {
			snprintf(err, errlen, "redis: '%.80s' is not host:port", p->redis);
			return -1;
		}
		snprintf(c->redis.seed, sizeof(c->redis.seed), "%s", p->redis);
		snprintf(c->where, sizeof(c->where), "%s", p->redis);
		return 0;
	}
	if (!given(p->master_name) || strlen(p->master_name) >= sizeof(c->redis.master_name)) {
		snprintf(err, errlen, "sentinels need master_name (1 to %zu bytes)",
			 sizeof(c->redis.master_name) - 1);
		return -1;
	}
	if (parse_sentinels(&c->redis, p->sentinels, err, errlen) < 0)
		return -1;
	if (c->redis.n_sentinels == 0) {
		snprintf(err, errlen, "sentinels: none given");
		return -1;
	}
	snprintf(c->redis.master_name, sizeof(c->redis.master_name), "%s", p->master_name);
	snprintf(c->where, sizeof(c->where), "sentinels:%s", p->master_name);
	return 0;
}

/* [cluster] tls: the client context every connection shares. */
static int tls_of(struct vr_cluster *c, const struct vr_cluster_params *p, char *err,
		  size_t errlen)
{
	if (!p->tls) {
		if (given(p->tls_ca) || given(p->tls_cert) || given(p->tls_key) ||
		    given(p->tls_server_name)) {
			snprintf(err, errlen, "tls_ca, tls_cert, tls_key, tls_server_name "
				 "need tls = yes");
			return -1;
		}
		return 0;
	}
	if (!given(p->tls_ca)) {
		snprintf(err, errlen, "tls = yes needs tls_ca (the CA of Redis's certificate)");
		return -1;
	}
	if (given(p->tls_cert) != given(p->tls_key)) {
		snprintf(err, errlen, "tls_cert and tls_key go together");
		return -1;
	}
	if (given(p->tls_server_name) && strlen(p->tls_server_name) >= sizeof(c->redis.tls_name)) {
		snprintf(err, errlen, "tls_server_name too long");
		return -1;
	}
	c->redis.tls = vr_cl_tls_ctx_new(p->tls_ca, given(p->tls_cert) ? p->tls_cert : NULL,
					 given(p->tls_key) ? p->tls_key : NULL, err, errlen);
	if (!c->redis.tls)
		return -1;
	snprintf(c->redis.tls_name, sizeof(c->redis.tls_name), "%s",
		 given(p->tls_server_name) ? p->tls_server_name : "");
	return 0;
}

struct vr_cluster *vr_cluster_new(const struct vr_cluster_params *p, char *err, size_t errlen)
{
	struct vr_cluster *c;

	if (p->lease_min < 1 || p->lease_min > p->lease_max || p->lease_max > 1000000) {
		snprintf(err, errlen, "lease_min %u, lease_max %u: need 1 <= min <= max <= 1000000",
			 p->lease_min, p->lease_max);
		return NULL;
	}
	if (p->lease_ttl_s < 2 || p->lease_ttl_s > 3600 || p->failsafe_percent > 100 ||
	    p->timeout_ms < 1) {
		snprintf(err, errlen, "lease_ttl_s %u (2..3600), failsafe_percent %u (0..100), "
			 "timeout_ms %u (>= 1)", p->lease_ttl_s, p->failsafe_percent,
			 p->timeout_ms);
		return NULL;
	}
	/* a block is renewed a reply's time before its deadline: a timeout
	 * near the lease's life would leave it no life to spend */
	if ((uint64_t)p->timeout_ms * 4 > (uint64_t)p->lease_ttl_s * 1000u) {
		snprintf(err, errlen, "timeout_ms %u is over a quarter of lease_ttl_s %u",
			 p->timeout_ms, p->lease_ttl_s);
		return NULL;
	}
	if ((p->prefix && strlen(p->prefix) >= sizeof(c->prefix)) || !p->node ||
	    strlen(p->node) >= sizeof(c->node)) {
		snprintf(err, errlen, "key prefix (at most %zu bytes) or node name (1 to %zu) "
			 "too long", sizeof(c->prefix) - 1, sizeof(c->node) - 1);
		return NULL;
	}
	if (p->timezone && p->timezone[0] && strcmp(p->timezone, "UTC") != 0) {
		snprintf(err, errlen, "the cluster counts calendar days in UTC only; [limits] "
			 "timezone is %s", p->timezone);
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "%s", strerror(ENOMEM));
		return NULL;
	}
	c->p = *p;
	c->efd = -1;
	snprintf(c->prefix, sizeof(c->prefix), "%s", p->prefix ? p->prefix : "");
	snprintf(c->node, sizeof(c->node), "%s", p->node ? p->node : "");
	/* the caller's strings are not kept: ours are in c */
	c->p.redis = c->p.sentinels = c->p.master_name = NULL;
	c->p.tls_ca = c->p.tls_cert = c->p.tls_key = c->p.tls_server_name = NULL;
	c->p.prefix = c->prefix;
	c->p.node = c->node;
	c->p.password_file = NULL;
	c->p.timezone = NULL;
	c->redis.timeout_ms = p->timeout_ms;
	c->sz = (struct vr_cl_sizing){ p->lease_min, p->lease_max, p->lease_ttl_s };
	if (!c->node[0]) {
		snprintf(err, errlen, "no node name");
		goto fail;
	}
	if (where_of(c, p, err, errlen) < 0 || tls_of(c, p, err, errlen) < 0)
		goto fail;
	if (p->password_file && p->password_file[0] &&
	    read_password(p->password_file, c->redis.password, sizeof(c->redis.password), err,
			  errlen) < 0)
		goto fail;
	c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->ht = cds_lfht_new(64, 64, 0, CDS_LFHT_AUTO_RESIZE, NULL);
	if (c->efd < 0 || !c->ht) {
		snprintf(err, errlen, "%s", strerror(c->efd < 0 ? errno : ENOMEM));
		goto fail;
	}
	return c;
fail:
	vr_cluster_free(c);
	return NULL;
}

int vr_cluster_start(struct vr_cluster *c)
{
	int rc = pthread_create(&c->thread, NULL, cluster_main, c);

	if (rc != 0)
		return -rc;
	c->started = true;
	return 0;
}

void vr_cluster_stop(struct vr_cluster *c)
{
	if (!c || !c->started)
		return;
	__atomic_store_n(&c->stopping, true, __ATOMIC_RELEASE);
	kick(c);
	pthread_join(c->thread, NULL);
	c->started = false;
}

void vr_cluster_free(struct vr_cluster *c)
{
	struct cds_lfht_iter it;
	struct entry *e;

	if (!c)
		return;
	vr_cluster_stop(c);
	if (c->ht) {
		rcu_read_lock();
		cds_lfht_for_each_entry(c->ht, &it, e, node) {
			cds_lfht_del(c->ht, &e->node);
			call_rcu(&e->rcu, entry_free);
		}
		rcu_read_unlock();
		rcu_barrier();
		cds_lfht_destroy(c->ht, NULL);
	}
	if (c->efd >= 0)
		close(c->efd);
	vr_tls_ctx_free(c->redis.tls);
	free(c->list);
	free(c);
}
