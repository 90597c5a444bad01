/*
 * committer.c - the committer thread: group commit of every worker's
 * submitted transactions.
 *
 * One batch: splice every worker's submit queue empty; write each worker's
 * records to its segment with one pwritev; then one fdatasync per segment
 * written; then post each transaction to its worker's done queue and write
 * the worker's eventfd once. Submissions arriving during the fdatasync pile
 * up and form the next batch, so the fsync rate stays flat while the
 * message rate grows.
 *
 * Failures stay small (DESIGN.md "Durability"): a failed write fails that
 * segment's share of the batch with its errno and cuts the segment back to
 * its durable length, so the next batch appends to a clean file; if the cut
 * or the fdatasync fails, the file's state is unknown, so the segment is
 * abandoned (what it holds durably stays valid) and a fresh one is created
 * at the next batch. Disk full therefore costs the transactions in flight
 * and nothing else: when space returns the next batch just works. A file
 * that hit a size limit (EFBIG) is closed after the cut, so the next batch
 * starts a new one.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vmrelay/log.h"
#include "spool_impl.h"

static void stat_add(uint64_t *counter, uint64_t n)
{
	/* Single writer: a relaxed load and store make a race-free add. */
	__atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* --- sleeping and waking --- */

/*
 * The committer sleeps on the futex word idle. It stores idle = 1, then
 * looks at the submit queues once more, then sleeps while idle is still 1.
 * A submitter enqueues, then reads idle, and if it is 1 swaps it to 0 and
 * wakes the futex. Both sides put a full fence between their store and their
 * load (Dekker), so at least one sees the other: either the committer finds
 * the new transaction, or the submitter finds it asleep (or about to be:
 * FUTEX_WAIT then sees 0 and returns). While the committer is busy idle is
 * 0 and submitting costs no system call.
 */
void vr_spool_kick(struct vr_spool *sp)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&sp->idle, __ATOMIC_RELAXED) &&
	    __atomic_exchange_n(&sp->idle, 0, __ATOMIC_RELAXED))
		syscall(SYS_futex, &sp->idle, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static bool submitted(struct vr_spool *sp)
{
	for (unsigned i = 0; i < sp->n_workers; i++)
		if (!cds_wfcq_empty(&sp->w[i].sub_head, &sp->w[i].sub_tail))
			return true;
	return false;
}

static void committer_sleep(struct vr_spool *sp)
{
	__atomic_store_n(&sp->idle, 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!submitted(sp) && !__atomic_load_n(&sp->stop, __ATOMIC_RELAXED))
		syscall(SYS_futex, &sp->idle, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
	__atomic_store_n(&sp->idle, 0, __ATOMIC_RELAXED);
}

void *vr_spool_committer(void *arg)
{
	struct vr_spool *sp = arg;

	for (;;) {
		/* Read stop first (acquire, pairs with vr_spool_close): a batch
		 * that then finds nothing has everything submitted before it. */
		bool stopping = __atomic_load_n(&sp->stop, __ATOMIC_ACQUIRE);
		if (vr_spool_batch(sp))
			continue;
		if (stopping)
			return NULL;
		committer_sleep(sp);
	}
}

/* --- one batch --- */

static int segment_new(struct vr_spool *sp, unsigned worker)
{
	struct spool_worker *w = &sp->w[worker];
	int rc = vr_seg_create(&w->seg, sp->segdirfd, worker, sp->next_seq++, w->salt);

	if (rc < 0) {
		vr_log_err("event=spool_segment_error dir=%s worker=%u error=\"%s\"",
			   sp->dir, worker, strerror(-rc));
		return rc;
	}
	stat_add(&sp->stats.segments, 1);
	vr_log_info("event=spool_segment_new segment=%s", w->seg.name);
	return 0;
}

static void segment_abandon(struct vr_spool *sp, struct spool_worker *w, const char *what, int err)
{
	vr_log_err("event=spool_segment_abandoned segment=%s failed=%s error=\"%s\"",
		   w->seg.name, what, strerror(err));
	vr_seg_close(&w->seg);
	stat_add(&sp->stats.abandoned, 1);
}

/* Makes room for n more iovecs in the scratch array. */
static int iov_reserve(struct vr_spool *sp, unsigned used, uint64_t n)
{
	if (used + n <= sp->iov_cap)
		return 0;
	if (used + n > UINT_MAX / 2)
		return -ENOMEM;
	unsigned cap = sp->iov_cap ? sp->iov_cap : 256;
	while (cap < used + n)
		cap *= 2;
	struct iovec *iov = realloc(sp->iov, cap * sizeof(*iov));
	if (!iov)
		return -ENOMEM;
	sp->iov = iov;
	sp->iov_cap = cap;
	return 0;
}

/* Writes worker's share of the batch to its segment; not yet durable. */
static int batch_write(struct vr_spool *sp, unsigned worker)
{
	struct spool_worker *w = &sp->w[worker];
	struct cds_wfcq_node *node;
	unsigned n = 0;
	uint64_t total = 0;
	int rc;

	__cds_wfcq_for_each_blocking(&w->batch_head, &w->batch_tail, node) {
		struct vr_spool_txn *txn = caa_container_of(node, struct vr_spool_txn, node);
		if (txn->err)
			continue;
		if ((rc = iov_reserve(sp, n, (uint64_t)txn->n_body + 2)) < 0)
			return rc;
		sp->iov[n++] = (struct iovec){ txn->env, txn->env_len };
		total += txn->env_len;
		for (struct spool_body *b = txn->body; b; b = b->next) {
			sp->iov[n++] = (struct iovec){ b->rec, VR_REC_HDR_SIZE + b->len };
			total += VR_REC_HDR_SIZE + b->len;
		}
		sp->iov[n++] = (struct iovec){ txn->end, sizeof(txn->end) };
		total += sizeof(txn->end);
	}
	if (n == 0)
		return 0;
	if (w->seg.fd < 0 && (rc = segment_new(sp, worker)) < 0)
		return rc;
	rc = vr_seg_write(&w->seg, sp->iov, n);
	if (rc < 0) {
		vr_log_err("event=spool_write_error segment=%s error=\"%s\"", w->seg.name, strerror(-rc));
		if (ftruncate(w->seg.fd, (off_t)w->seg.len) < 0)
			segment_abandon(sp, w, "ftruncate", errno);
		else if (rc == -EFBIG)
			vr_seg_close(&w->seg);  /* this file can grow no more: next batch, a new one */
		return rc;
	}
	w->batch_len = w->seg.len + total;
	w->batch_written = true;
	return 0;
}

static int batch_sync(struct vr_spool *sp, struct spool_worker *w)
{
	stat_add(&sp->stats.fsyncs, 1);
	if (fdatasync(w->seg.fd) == 0) {
		stat_add(&sp->stats.bytes, w->batch_len - w->seg.len);
		w->seg.len = w->batch_len;
		return 0;
	}
	int err = errno;
	/* After a failed fdatasync the kernel may have dropped the dirty
	 * pages, and a retry would report success: never trust this file
	 * again. Cutting off the batch is only a courtesy to readers. */
	if (ftruncate(w->seg.fd, (off_t)w->seg.len) < 0)
		vr_log_warn("event=spool_truncate_error segment=%s error=\"%s\"", w->seg.name,
			    strerror(errno));
	segment_abandon(sp, w, "fdatasync", err);
	return -EIO;
}

/* Hands worker's share of the batch back with its status. */
static void batch_post(struct vr_spool *sp, unsigned worker)
{
	struct spool_worker *w = &sp->w[worker];
	struct cds_wfcq_node *node;
	uint64_t ok = 0, failed = 0, one = 1;

	while ((node = __cds_wfcq_dequeue_blocking(&w->batch_head, &w->batch_tail)) != NULL) {
		struct vr_spool_txn *txn = caa_container_of(node, struct vr_spool_txn, node);
		txn->status = txn->err ? txn->err : w->batch_status;
		if (txn->status == 0)
			ok++;
		else
			failed++;
		cds_wfcq_node_init(&txn->node);
		/* Full barrier before the enqueue: the worker sees status. */
		cds_wfcq_enqueue(&w->done_head, &w->done_tail, &txn->node);
	}
	stat_add(&sp->stats.committed, ok);
	stat_add(&sp->stats.failed, failed);
	ssize_t r = write(w->done_fd, &one, sizeof(one));
	(void)r;                      /* fails only when already readable */
}

unsigned vr_spool_batch(struct vr_spool *sp)
{
	unsigned n = 0;

	for (unsigned i = 0; i < sp->n_workers; i++) {
		struct spool_worker *w = &sp->w[i];
		struct cds_wfcq_node *node;
		__cds_wfcq_init(&w->batch_head, &w->batch_tail);
		w->batch_written = false;
		w->batch_status = 0;
		if (__cds_wfcq_splice_blocking(&w->batch_head, &w->batch_tail, &w->sub_head,
					       &w->sub_tail) == CDS_WFCQ_RET_SRC_EMPTY)
			continue;
		__cds_wfcq_for_each_blocking(&w->batch_head, &w->batch_tail, node)
			n++;
	}
	if (n == 0)
		return 0;
	stat_add(&sp->stats.batches, 1);
	/* All writes first, then the syncs: the kernel can start writing one
	 * segment back while we fill the next. */
	for (unsigned i = 0; i < sp->n_workers; i++)
		if (!cds_wfcq_empty(&sp->w[i].batch_head, &sp->w[i].batch_tail))
			sp->w[i].batch_status = batch_write(sp, i);
	for (unsigned i = 0; i < sp->n_workers; i++)
		if (sp->w[i].batch_written)
			sp->w[i].batch_status = batch_sync(sp, &sp->w[i]);
	for (unsigned i = 0; i < sp->n_workers; i++)
		if (!cds_wfcq_empty(&sp->w[i].batch_head, &sp->w[i].batch_tail))
			batch_post(sp, i);
	return n;
}
