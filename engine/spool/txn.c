/*
 * txn.c - the worker side of the spool: a transaction builds its message's
 * records in memory (ENVELOPE at begin, BODY records as bytes arrive, END at
 * commit), then goes to the worker's own committer thread through the
 * worker's submit queue and comes back through its done queue.
 *
 * Nothing here blocks or takes a lock: enqueueing is wait-free, dequeueing
 * the done queue never waits for a committer caught mid-enqueue (it stops
 * and the committer's eventfd write brings the worker back), and the only
 * system calls are the eventfd read in vr_spool_reap() (and a write when it
 * stops at max with more waiting) and, when the committer sleeps, one futex
 * wake per batch. Nor does it allocate in steady state: small transactions
 * and first BODY chunks come back to a per-worker cache when reaped and
 * serve the next messages; only large envelopes and bodies past 8 KiB take
 * fresh memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmrelay/clock.h"
#include "vmrelay/common.h"
#include "spool_impl.h"

/* BODY records start small, for the common small message, and double up to
 * the record limit; bytes are never copied twice. */
#define BODY_FIRST (8u << 10)
/* A transaction whose envelope fits here takes one block of this size, so
 * freed ones serve any later small message (a few recipients). */
#define TXN_SMALL  4096u
/* Blocks each worker keeps for reuse: a burst of sessions' worth. */
#define CACHE_MAX  256u

static void *cache_take(struct spool_free **list, unsigned *n, size_t size)
{
	struct spool_free *f = *list;

	if (!f)
		return malloc(size);
	*list = f->next;
	(*n)--;
	return f;
}

static void cache_give(struct spool_free **list, unsigned *n, void *p)
{
	struct spool_free *f = p;

	if (*n >= CACHE_MAX) {
		free(p);
		return;
	}
	f->next = *list;
	*list = f;
	(*n)++;
}

void vr_spool_cache_free(struct spool_worker *w)
{
	struct spool_free *f, *next;

	for (f = w->txn_cache; f; f = next) {
		next = f->next;
		free(f);
	}
	for (f = w->body_cache; f; f = next) {
		next = f->next;
		free(f);
	}
	w->txn_cache = w->body_cache = NULL;
	w->n_txn_cache = w->n_body_cache = 0;
}

struct vr_spool_txn *vr_spool_txn_begin(struct vr_spool *sp, unsigned worker,
					const struct vr_spool_envelope *env, void *cookie)
{
	char qid[VR_QID_MAX];

	if (worker >= sp->n_workers)
		return errno = EINVAL, NULL;
	struct spool_worker *w = &sp->w[worker];
	/* Strictly increasing per worker, so (time, worker) never repeats, even
	 * when the clock stands still or steps back; recovery started it past
	 * every queue ID already in the spool. */
	uint64_t now = vr_clock_wall_us();
	w->qid_last_us = now > w->qid_last_us ? now : w->qid_last_us + 1;
	vr_qid_format(qid, w->qid_last_us, worker);

	size_t env_len = vr_rec_env_size(env, qid);
	if (!env_len)
		return errno = EINVAL, NULL;
	bool small = sizeof(struct vr_spool_txn) + env_len <= TXN_SMALL;
	struct vr_spool_txn *txn = small ? cache_take(&w->txn_cache, &w->n_txn_cache, TXN_SMALL)
					 : malloc(sizeof(*txn) + env_len);
	if (!txn)
		return errno = ENOMEM, NULL;
	memset(txn, 0, sizeof(*txn));
	txn->small = small;
	txn->sp = sp;
	txn->worker = worker;
	txn->cookie = cookie;
	memcpy(txn->qid, qid, sizeof(qid));
	txn->env_len = (uint32_t)env_len;
	vr_rec_env_encode(txn->env, env, qid, w->salt);
	return txn;
}

const char *vr_spool_txn_qid(const struct vr_spool_txn *txn)
{
	return txn->qid;
}

static void body_seal(struct vr_spool_txn *txn, struct spool_body *b)
{
	vr_rec_seal(b->rec, VR_REC_BODY, b->len, txn->sp->w[txn->worker].salt);
	txn->n_body++;
}

static struct spool_body *body_add(struct vr_spool_txn *txn)
{
	struct spool_worker *w = &txn->sp->w[txn->worker];
	struct spool_body *last = txn->body_last;
	uint32_t cap = last ? VR_MIN(last->cap * 2, VR_REC_PAYLOAD_MAX) : BODY_FIRST;
	size_t size = sizeof(struct spool_body) + VR_REC_HDR_SIZE + cap;
	struct spool_body *b = cap == BODY_FIRST
		? cache_take(&w->body_cache, &w->n_body_cache, size) : malloc(size);

	if (!b)
		return NULL;
	b->next = NULL;
	b->len = 0;
	b->cap = cap;
	if (last) {
		body_seal(txn, last);
		last->next = b;
	} else {
		txn->body = b;
	}
	txn->body_last = b;
	return b;
}

int vr_spool_txn_write(struct vr_spool_txn *txn, const void *p, size_t n)
{
	const uint8_t *s = p;

	if (txn->err)
		return txn->err;
	while (n) {
		struct spool_body *b = txn->body_last;
		if (!b || b->len == b->cap) {
			b = body_add(txn);
			if (!b)
				return txn->err = -ENOMEM;
		}
		size_t k = VR_MIN(n, (size_t)(b->cap - b->len));
		memcpy(b->rec + VR_REC_HDR_SIZE + b->len, s, k);
		b->len += (uint32_t)k;
		txn->body_size += k;
		s += k;
		n -= k;
	}
	return 0;
}

/* Worker thread, or close once every committer has stopped. */
void vr_spool_txn_free(struct vr_spool_txn *txn)
{
	struct spool_worker *w = &txn->sp->w[txn->worker];
	struct spool_body *b = txn->body, *next;

	for (; b; b = next) {
		next = b->next;
		if (b->cap == BODY_FIRST)
			cache_give(&w->body_cache, &w->n_body_cache, b);
		else
			free(b);
	}
	if (txn->small)
		cache_give(&w->txn_cache, &w->n_txn_cache, txn);
	else
		free(txn);
}

void vr_spool_txn_abort(struct vr_spool_txn *txn)
{
	vr_spool_txn_free(txn);
}

void vr_spool_txn_commit(struct vr_spool_txn *txn)
{
	struct spool_worker *w = &txn->sp->w[txn->worker];

	if (txn->body_last)
		body_seal(txn, txn->body_last);
	vr_rec_end_encode(txn->end, txn->body_size, txn->n_body, w->salt);
	cds_wfcq_node_init(&txn->node);
	/* Full barrier before the enqueue: the committer sees the records. */
	cds_wfcq_enqueue(&w->sub_head, &w->sub_tail, &txn->node);
	vr_spool_kick(w);
}

void vr_spool_txn_orphan(struct vr_spool_txn *txn)
{
	txn->orphan = true;
}

int vr_spool_done_fd(const struct vr_spool *sp, unsigned worker)
{
	return sp->w[worker].done_fd;
}

bool vr_spool_done_pending(struct vr_spool *sp, unsigned worker)
{
	struct spool_worker *w = &sp->w[worker];

	return !cds_wfcq_empty(&w->done_head, &w->done_tail);
}

unsigned vr_spool_reap(struct vr_spool *sp, unsigned worker, vr_spool_done_fn *fn, unsigned max)
{
	struct spool_worker *w = &sp->w[worker];
	uint64_t v;
	unsigned n = 0;

	/* Drain the eventfd first: a completion posted after this read writes
	 * it again, so none is left waiting unseen. (The only possible error
	 * is EAGAIN: nothing to drain.) */
	ssize_t r = read(w->done_fd, &v, sizeof(v));
	(void)r;
	while (n < max) {
		struct cds_wfcq_node *node = __cds_wfcq_dequeue_nonblocking(&w->done_head, &w->done_tail);
		/* WOULDBLOCK: the committer is between its two enqueue steps;
		 * its eventfd write follows and brings us back. */
		if (!node || node == CDS_WFCQ_WOULDBLOCK)
			break;
		struct vr_spool_txn *txn = caa_container_of(node, struct vr_spool_txn, node);
		if (!txn->orphan)
			fn(txn->cookie, txn->status, txn->qid);
		vr_spool_txn_free(txn);
		n++;
	}
	/* Stopped by max: keep the eventfd readable for the rest. */
	if (n == max && !cds_wfcq_empty(&w->done_head, &w->done_tail)) {
		v = 1;
		/* Can only fail with the counter at its maximum: readable. */
		r = write(w->done_fd, &v, sizeof(v));
		(void)r;
	}
	return n;
}
