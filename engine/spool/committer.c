/*
 * committer.c - the committer threads: group commit of one worker's
 * submitted transactions each.
 *
 * Every worker has a committer of its own, which alone owns the worker's
 * segment: committers share nothing but the segment directory, the stop
 * flag and the sequence counter that names new segments, so the fdatasyncs of
 * different workers run in parallel, and a slow or failing disk write under
 * one segment delays no other worker's 250s (DESIGN.md: shared nothing).
 *
 * One batch: splice the worker's submit queue empty; write its records to
 * the segment with one pwritev; one fdatasync; then post each transaction
 * to the worker's done queue and write the worker's eventfd once.
 * Submissions arriving during the fdatasync pile up and form the next batch,
 * so the fsync rate stays flat while the message rate grows.
 *
 * Failures stay small (DESIGN.md "Durability"): a failed write fails the
 * batch with its errno and cuts the segment back to its durable length, so
 * the next batch appends to a clean file; if the cut or the fdatasync fails,
 * the file's state is unknown, so the segment is abandoned (what it holds
 * durably stays valid) and a fresh one is created at the next batch. Disk
 * full therefore costs the transactions in flight and nothing else: when
 * space returns the next batch just works. A file that hit a size limit
 * (EFBIG) is closed after the cut, so the next batch starts a new one.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vmrelay/clock.h"
#include "vmrelay/log.h"
#include "spool_impl.h"

static void stat_add(uint64_t *counter, uint64_t n)
{
	/* Single writer (this worker's committer): a relaxed load and store
	 * make a race-free add that vr_spool_stats() may read at any time. */
	__atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* --- sleeping and waking --- */

/*
 * A committer sleeps on its futex word w->idle. It stores idle = 1, then
 * looks at its submit queue once more, then sleeps while idle is still 1.
 * The worker enqueues, then reads idle, and if it is 1 swaps it to 0 and
 * wakes the futex. Both sides put a full fence between their store and their
 * load (Dekker), so at least one sees the other: either the committer finds
 * the new transaction, or the worker finds it asleep (or about to be:
 * FUTEX_WAIT then sees 0 and returns). While the committer is busy idle is
 * 0 and submitting costs no system call. vr_spool_close() sets stop and
 * kicks the same way.
 */
void vr_spool_kick(struct spool_worker *w)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&w->idle, __ATOMIC_RELAXED) &&
	    __atomic_exchange_n(&w->idle, 0, __ATOMIC_RELAXED))
		syscall(SYS_futex, &w->idle, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void committer_sleep(struct spool_worker *w)
{
	__atomic_store_n(&w->idle, 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (cds_wfcq_empty(&w->sub_head, &w->sub_tail) &&
	    !__atomic_load_n(&w->sp->stop, __ATOMIC_RELAXED))
		syscall(SYS_futex, &w->idle, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
	__atomic_store_n(&w->idle, 0, __ATOMIC_RELAXED);
}

void *vr_spool_committer(void *arg)
{
	struct spool_worker *w = arg;

	for (;;) {
		/* Read stop first (acquire, pairs with vr_spool_close): a batch
		 * that then finds nothing has everything submitted before it. */
		bool stopping = __atomic_load_n(&w->sp->stop, __ATOMIC_ACQUIRE);
		if (vr_spool_batch(w))
			continue;
		if (stopping)
			return NULL;
		committer_sleep(w);
	}
}

/* --- one batch --- */

static int segment_new(struct spool_worker *w)
{
	struct vr_spool *sp = w->sp;
	/* Relaxed: the number only has to be unique; the directory fsync in
	 * vr_seg_create() orders the file itself. */
	uint64_t seq = __atomic_fetch_add(&sp->next_seq, 1, __ATOMIC_RELAXED);
	int rc = vr_seg_create(&w->seg, sp->segdirfd, w->id, seq, w->salt);

	if (rc < 0) {
		vr_log_err("event=spool_segment_error dir=%s worker=%u error=\"%s\"",
			   sp->dir, w->id, strerror(-rc));
		return rc;
	}
	stat_add(&w->stats.segments, 1);
	vr_log_info("event=spool_segment_new segment=%s", w->seg.name);
	return 0;
}

static void segment_abandon(struct spool_worker *w, const char *what, int err)
{
	vr_log_err("event=spool_segment_abandoned segment=%s failed=%s error=\"%s\"",
		   w->seg.name, what, strerror(err));
	vr_seg_close(&w->seg);
	stat_add(&w->stats.abandoned, 1);
}

/* Makes room for n more iovecs in the scratch array. */
static int iov_reserve(struct spool_worker *w, unsigned used, uint64_t n)
{
	if (used + n <= w->iov_cap)
		return 0;
	if (used + n > UINT_MAX / 2)
		return -ENOMEM;
	unsigned cap = w->iov_cap ? w->iov_cap : 256;
	while (cap < used + n)
		cap *= 2;
	struct iovec *iov = realloc(w->iov, cap * sizeof(*iov));
	if (!iov)
		return -ENOMEM;
	w->iov = iov;
	w->iov_cap = cap;
	return 0;
}

/*
 * Writes the batch to the segment, not yet durable: 0 with *len the
 * segment's length once it is (seg.len if there was nothing to write), or
 * -errno.
 */
static int batch_write(struct spool_worker *w, uint64_t *len)
{
	struct cds_wfcq_node *node;
	unsigned n = 0;
	uint64_t total = 0;
	int rc;

	*len = w->seg.len;
	__cds_wfcq_for_each_blocking(&w->batch_head, &w->batch_tail, node) {
		struct vr_spool_txn *txn = caa_container_of(node, struct vr_spool_txn, node);
		if (txn->err)
			continue;
		if ((rc = iov_reserve(w, n, (uint64_t)txn->n_body + 2)) < 0)
			return rc;
		txn->off = total;
		w->iov[n++] = (struct iovec){ txn->env, txn->env_len };
		total += txn->env_len;
		for (struct spool_body *b = txn->body; b; b = b->next) {
			w->iov[n++] = (struct iovec){ b->rec, VR_REC_HDR_SIZE + b->len };
			total += VR_REC_HDR_SIZE + b->len;
		}
		w->iov[n++] = (struct iovec){ txn->end, sizeof(txn->end) };
		total += sizeof(txn->end);
	}
	if (n == 0)
		return 0;
	/* Seal a full or old segment: the next one starts with this batch. */
	if (w->seg.fd >= 0 && (w->seg.len >= VR_SEG_ROLL_BYTES ||
			       vr_clock_wall_us() - w->seg.created_us >= VR_SEG_ROLL_US))
		vr_seg_close(&w->seg);
	if (w->seg.fd < 0 && (rc = segment_new(w)) < 0)
		return rc;
	w->batch_base = w->seg.len;
	rc = vr_seg_write(&w->seg, w->iov, n);
	if (rc < 0) {
		vr_log_err("event=spool_write_error segment=%s error=\"%s\"", w->seg.name, strerror(-rc));
		if (ftruncate(w->seg.fd, (off_t)w->seg.len) < 0)
			segment_abandon(w, "ftruncate", errno);
		else if (rc == -EFBIG)
			vr_seg_close(&w->seg);  /* this file can grow no more: next batch, a new one */
		return rc;
	}
	*len = w->seg.len + total;
	return 0;
}

/* Makes the segment durable up to len. */
static int batch_sync(struct spool_worker *w, uint64_t len)
{
	stat_add(&w->stats.fsyncs, 1);
	if (fdatasync(w->seg.fd) == 0) {
		stat_add(&w->stats.bytes, len - w->seg.len);
		w->seg.len = len;
		return 0;
	}
	int err = errno;
	/* After a failed fdatasync the kernel may have dropped the dirty
	 * pages, and a retry would report success: never trust this file
	 * again. Cutting off the batch is only a courtesy to readers. */
	if (ftruncate(w->seg.fd, (off_t)w->seg.len) < 0)
		vr_log_warn("event=spool_truncate_error segment=%s error=\"%s\"", w->seg.name,
			    strerror(errno));
	segment_abandon(w, "fdatasync", err);
	return -EIO;
}

/* Tells the spool's commit hook about a message now durable. The
 * hook's reader (delivery) may allocate; the worker never runs this. */
static void commit_announce(struct spool_worker *w, const struct vr_spool_txn *txn)
{
	struct vr_spool_msg msg = { 0 };
	void *mem;

	if (vr_rec_env_decode(txn->env + VR_REC_HDR_SIZE, txn->env_len - VR_REC_HDR_SIZE, &msg,
			      &mem) < 0) {
		/* Durable all the same: the next start's recovery finds it. */
		vr_log_err("event=spool_announce_failed qid=%s error=\"out of memory\"", txn->qid);
		return;
	}
	msg.size = txn->body_size;
	msg.segment = w->seg.name;
	msg.offset = w->batch_base + txn->off;
	w->sp->on_commit(&msg, w->sp->on_commit_arg);
	free(mem);
}

/* Hands the batch back to the worker with its status. */
static void batch_post(struct spool_worker *w, int status)
{
	struct cds_wfcq_node *node;
	uint64_t ok = 0, failed = 0, one = 1;

	while ((node = __cds_wfcq_dequeue_blocking(&w->batch_head, &w->batch_tail)) != NULL) {
		struct vr_spool_txn *txn = caa_container_of(node, struct vr_spool_txn, node);
		txn->status = txn->err ? txn->err : status;
		if (txn->status == 0 && w->sp->on_commit)
			commit_announce(w, txn);
		if (txn->status == 0)
			ok++;
		else
			failed++;
		cds_wfcq_node_init(&txn->node);
		/* Full barrier before the enqueue: the worker sees status. */
		cds_wfcq_enqueue(&w->done_head, &w->done_tail, &txn->node);
	}
	stat_add(&w->stats.committed, ok);
	stat_add(&w->stats.failed, failed);
	ssize_t r = write(w->done_fd, &one, sizeof(one));
	(void)r;                      /* fails only when already readable */
}

unsigned vr_spool_batch(struct spool_worker *w)
{
	struct cds_wfcq_node *node;
	unsigned n = 0;
	uint64_t len;

	__cds_wfcq_init(&w->batch_head, &w->batch_tail);
	if (__cds_wfcq_splice_blocking(&w->batch_head, &w->batch_tail, &w->sub_head,
				       &w->sub_tail) == CDS_WFCQ_RET_SRC_EMPTY)
		return 0;
	__cds_wfcq_for_each_blocking(&w->batch_head, &w->batch_tail, node)
		n++;
	stat_add(&w->stats.batches, 1);
	int status = batch_write(w, &len);
	if (status == 0 && len > w->seg.len)
		status = batch_sync(w, len);
	batch_post(w, status);
	return n;
}
