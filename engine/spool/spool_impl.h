/*
 * spool_impl.h - the spool's shared state, private to engine/spool: the
 * worker side (txn.c), the committer thread (committer.c) and open/close
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
struct spool_body {
	struct spool_body *next;
	uint32_t len;                 /* payload bytes so far */
	uint32_t cap;                 /* payload room */
	uint8_t rec[];                /* header, then payload */
};

/*
 * A message on its way to disk. Belongs to its worker until commit, then to
 * the committer until it is posted on the worker's done queue, then to the
 * worker again, which frees it in vr_spool_reap(). The queues hand it over:
 * everything written before an enqueue is visible after the dequeue.
 */
struct vr_spool_txn {
	struct cds_wfcq_node node;    /* submit queue, then done queue */
	struct vr_spool *sp;
	unsigned worker;
	int err;                      /* worker: first failed write, reported as status */
	int status;                   /* committer: the outcome */
	bool orphan;                  /* worker: nobody to call back */
	void *cookie;
	char qid[VR_QID_MAX];
	uint64_t body_size;
	uint32_t n_body;              /* BODY records */
	struct spool_body *body, *body_last;
	uint8_t end[VR_REC_END_SIZE]; /* the END record, written at commit */
	uint32_t env_len;
	uint8_t env[];                /* the ENVELOPE record */
};

/*
 * Per worker. Fields are grouped by the thread that writes them, each group
 * on its own cache line so the worker and the committer never false-share.
 */
struct spool_worker {
	/* Worker thread only (salt and done_fd: set at open, then read-only). */
	uint64_t qid_last_us;         /* time part of the last queue ID */
	uint32_t salt;                /* seeds this worker's record CRCs */
	int done_fd;                  /* eventfd: completions wait */

	/* Submit queue: the worker enqueues (wait-free), the committer splices. */
	struct __cds_wfcq_head sub_head __attribute__((aligned(VR_CACHE_LINE)));
	struct cds_wfcq_tail sub_tail;

	/* Done queue: the committer enqueues, the worker dequeues. */
	struct __cds_wfcq_head done_head __attribute__((aligned(VR_CACHE_LINE)));
	struct cds_wfcq_tail done_tail;

	/* Committer only: the segment appended to (fd -1: none, open one at
	 * the next batch) and this worker's share of the batch in hand. */
	struct vr_seg seg __attribute__((aligned(VR_CACHE_LINE)));
	struct __cds_wfcq_head batch_head;
	struct cds_wfcq_tail batch_tail;
	uint64_t batch_len;           /* segment length once the batch is durable */
	int batch_status;
	bool batch_written;
};

struct vr_spool {
	char *dir;
	int dirfd, segdirfd, lockfd;
	unsigned n_workers;
	struct spool_worker *w;       /* [n_workers] */
	struct vr_spool_recovery recovered;

	/* Committer only (open and close before and after it runs). */
	uint64_t next_seq;            /* of the next segment created */
	struct iovec *iov;            /* scratch for one segment's writev */
	unsigned iov_cap;

	/* Written by the committer with relaxed atomic stores, read by anyone
	 * (vr_spool_stats): counters need no ordering with anything else. */
	struct vr_spool_stats stats __attribute__((aligned(VR_CACHE_LINE)));

	/* Committer sleep and wake-up; the protocol is in committer.c. Every
	 * commit reads idle: its own cache line, away from the counters. */
	int idle __attribute__((aligned(VR_CACHE_LINE)));  /* futex word */
	int stop;
	pthread_t thread;
	bool running;
};

/* committer.c */
void *vr_spool_committer(void *sp);
/* Commits everything submitted so far in one batch; how many txns. */
unsigned vr_spool_batch(struct vr_spool *sp);
/* Wakes the committer if it sleeps; after a submission or setting stop. */
void vr_spool_kick(struct vr_spool *sp);

/* txn.c */
void vr_spool_txn_free(struct vr_spool_txn *txn);

#endif
