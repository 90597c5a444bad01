/*
 * spool_impl.h - the spool's shared state, private to engine/spool: the
 * worker side (txn.c), the committer threads (committer.c) and open/close
 * (spool.c).
 */
#ifndef VR_SPOOL_IMPL_H
#define VR_SPOOL_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <urcu/wfcqueue.h>

#include "vmrelay/spool.h"
#include "record.h"
#include "segment.h"

#define VR_CACHE_LINE 64

/* One BODY record: filled by the worker, sealed when full or at commit. */
/* A cached block: its first bytes link it while it waits for reuse. */
struct spool_free {
	struct spool_free *next;
};

struct spool_body {
	struct spool_body *next;
	uint32_t len;                 /* payload bytes so far */
	uint32_t cap;                 /* payload room */
	uint8_t rec[];                /* header, then payload */
};

/*
 * A message on its way to disk. Belongs to its worker until commit, then to
 * the worker's committer until it is posted on the worker's done queue, then
 * to the worker again, which frees it in vr_spool_reap(). The queues hand it
 * over: everything written before an enqueue is visible after the dequeue.
 */
struct vr_spool_txn {
	struct cds_wfcq_node node;    /* submit queue, then done queue */
	struct vr_spool *sp;
	unsigned worker;
	int err;                      /* worker: first failed write, reported as status */
	int status;                   /* committer: the outcome */
	bool orphan;                  /* worker: nobody to call back */
	bool small;                   /* allocated at TXN_SMALL: may be cached */
	void *cookie;
	char qid[VR_QID_MAX];
	uint64_t body_size;
	uint64_t off;                 /* committer: of the ENVELOPE, from the batch's start */
	uint32_t n_body;              /* BODY records */
	struct spool_body *body, *body_last;
	uint8_t end[VR_REC_END_SIZE]; /* the END record, written at commit */
	uint32_t env_len;
	uint8_t env[];                /* the ENVELOPE record */
};

/*
 * Per worker: its queues, and the committer thread that owns its segment
 * (one each, so the fdatasyncs of different workers run in parallel and a
 * slow disk under one segment holds up no other worker). Fields are grouped
 * by the thread that writes them, each group on its own cache line so the
 * worker and its committer never false-share.
 */
struct spool_worker {
	/* Set at open, then read-only. */
	struct vr_spool *sp;
	unsigned id;
	uint32_t salt;                /* seeds this worker's record CRCs */
	int done_fd;                  /* eventfd: completions wait */
	pthread_t thread;             /* the committer, if the spool was started */
	/* Worker thread only. */
	uint64_t qid_last_us;         /* time part of the last queue ID */
	/* Freed small transactions and first BODY chunks, kept for the next
	 * message so the worker's steady state allocates nothing (txn.c);
	 * taken and given back on the worker alone, so a plain list. */
	struct spool_free *txn_cache, *body_cache;
	unsigned n_txn_cache, n_body_cache;

	/* Submit queue: the worker enqueues (wait-free), the committer
	 * splices. idle is the committer's futex word (committer.c), read at
	 * every commit: it sits on the line a commit touches anyway. */
	struct __cds_wfcq_head sub_head __attribute__((aligned(VR_CACHE_LINE)));
	struct cds_wfcq_tail sub_tail;
	int idle;

	/* Done queue: the committer enqueues, the worker dequeues. */
	struct __cds_wfcq_head done_head __attribute__((aligned(VR_CACHE_LINE)));
	struct cds_wfcq_tail done_tail;

	/* Committer only: the segment appended to (fd -1: none, open one at
	 * the next batch), the batch in hand and scratch for its writev. */
	struct vr_seg seg __attribute__((aligned(VR_CACHE_LINE)));
	struct __cds_wfcq_head batch_head;
	struct cds_wfcq_tail batch_tail;
	struct iovec *iov;
	unsigned iov_cap;
	uint64_t batch_base;          /* where the batch starts in seg */
	/* Written by the committer alone with relaxed atomic stores, summed by
	 * vr_spool_stats() in any thread: counters need no ordering with
	 * anything else, and no line is written by two committers. */
	struct vr_spool_stats stats;
};

struct vr_spool {
	char *dir;
	int dirfd, segdirfd, lockfd;
	unsigned n_workers;
	struct spool_worker *w;       /* [n_workers] */
	struct vr_spool_recovery recovered;
	bool running;                 /* committers started; open and close only */

	/* Taken by any committer with an atomic add: names never repeat. */
	uint64_t next_seq __attribute__((aligned(VR_CACHE_LINE)));
	/* Set once by vr_spool_close, read by every committer. */
	int stop;
	/* Set before the committers start, then read-only. */
	vr_spool_commit_fn *on_commit;
	void *on_commit_arg;
};

/* committer.c */
void *vr_spool_committer(void *w);
/* Commits everything w's worker submitted so far in one batch, in the
 * calling thread (w's committer, or close before any started); how many. */
unsigned vr_spool_batch(struct spool_worker *w);
/* Wakes w's committer if it sleeps; after a submission or setting stop. */
void vr_spool_kick(struct spool_worker *w);

/* txn.c */
void vr_spool_txn_free(struct vr_spool_txn *txn);
/* Frees the blocks w keeps for reuse (close). */
void vr_spool_cache_free(struct spool_worker *w);

#endif
