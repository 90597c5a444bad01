/*
 * spool.c - opening and closing the spool: the directory and its lock,
 * recovery of what a previous run left, one fresh segment per worker, the
 * committer threads' start (one per worker) and orderly stop.
 *
 * Layout of the directory:
 *   DIR/lock            flock()ed while a relay has the spool open
 *   DIR/seg/w<worker>-<seq>.seg   segment files (format in record.c)
 * A run never appends to a segment an earlier run wrote: after a crash the
 * end of that file is in an unknown state, so new records go to new files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrelay/log.h"
#include "scan.h"
#include "spool_impl.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...) VR_PRINTF(3, 4);
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* --- recovery --- */

struct recovery {
	struct vr_spool *sp;
	uint64_t qid_floor;           /* latest queue-ID time seen */
	uint64_t max_seq;
};

static int recover_message(const struct vr_spool_msg *msg, void *arg)
{
	struct recovery *rv = arg;
	uint64_t t;

	if (vr_qid_time(msg->qid, &t) && t > rv->qid_floor)
		rv->qid_floor = t;
	return 0;
}

static void recover_damage(const struct vr_spool_seg_info *seg, uint64_t off, uint64_t len,
			   bool tail, const char *what, void *arg)
{
	struct recovery *rv = arg;

	vr_log(tail ? VR_LOG_INFO : VR_LOG_WARN,
	       "event=spool_%s dir=%s segment=%s offset=%llu bytes=%llu what=\"%s\"",
	       tail ? "torn_tail" : "damage", rv->sp->dir, seg->name, (unsigned long long)off,
	       (unsigned long long)len, what);
}

/*
 * Segments that hold no record at all (a run that accepted nothing, or a
 * crash while creating one) are removed; everything else stays for the
 * readers, damaged files included.
 */
static void recover_segment(const struct vr_spool_seg_info *seg, void *arg)
{
	struct recovery *rv = arg;

	if (seg->seq > rv->max_seq)
		rv->max_seq = seg->seq;
	if (seg->error < 0 && seg->error != -ENODATA) {
		vr_log_err("event=spool_bad_segment dir=%s segment=%s error=\"%s\"", rv->sp->dir,
			   seg->name, seg->error == -EBADMSG ? "damaged header" : strerror(-seg->error));
		return;
	}
	if ((seg->error == -ENODATA || (seg->records == 0 && seg->size == VR_SEG_HDR_SIZE)) &&
	    unlinkat(rv->sp->dirfd, seg->name, 0) < 0)
		vr_log_warn("event=spool_unlink_error dir=%s segment=%s error=\"%s\"", rv->sp->dir,
			    seg->name, strerror(errno));
}

static int recover(struct vr_spool *sp, char *err, size_t errlen)
{
	struct recovery rv = { .sp = sp };
	const struct vr_spool_scan_ops ops = {
		.message = recover_message, .damage = recover_damage,
		.segment = recover_segment, .arg = &rv,
	};
	struct vr_spool_scan_stats st;

	int rc = vr_spool_scan_ops(sp->dir, &ops, &st);
	if (rc < 0) {
		set_err(err, errlen, "spool %s: recovery failed: %s", sp->dir, strerror(-rc));
		return rc;
	}
	sp->recovered = (struct vr_spool_recovery){
		.messages = st.messages, .torn = st.torn, .segments = st.segments,
		.bad_segments = st.bad_segments,
	};
	sp->next_seq = rv.max_seq + 1;
	for (unsigned i = 0; i < sp->n_workers; i++)
		sp->w[i].qid_last_us = rv.qid_floor;
	return 0;
}

/* --- open and close --- */

/* Makes a directory just created durable in its parent. */
static int fsync_parent(int dirfd)
{
	int fd = openat(dirfd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = fd < 0 || fsync(fd) < 0 ? -errno : 0;

	if (fd >= 0)
		close(fd);
	return rc;
}

static int dir_open(struct vr_spool *sp, const char *dir, char *err, size_t errlen)
{
	bool created = mkdir(dir, 0700) == 0;

	if (!created && errno != EEXIST) {
		set_err(err, errlen, "spool %s: cannot create: %s", dir, strerror(errno));
		return -errno;
	}
	sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->dirfd < 0) {
		set_err(err, errlen, "spool %s: %s", dir, strerror(errno));
		return -errno;
	}
	if (created && fsync_parent(sp->dirfd) < 0) {
		set_err(err, errlen, "spool %s: fsync of its parent: %s", dir, strerror(errno));
		return -errno;
	}
	sp->lockfd = openat(sp->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (sp->lockfd < 0 || flock(sp->lockfd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		set_err(err, errlen, e == EWOULDBLOCK ? "spool %s: in use by another process" :
			"spool %s: cannot lock: %s", dir, strerror(e));
		return -e;
	}
	if (mkdirat(sp->dirfd, VR_SEG_DIR, 0700) == 0) {
		if (fsync(sp->dirfd) < 0) {
			set_err(err, errlen, "spool %s: fsync: %s", dir, strerror(errno));
			return -errno;
		}
	} else if (errno != EEXIST) {
		set_err(err, errlen, "spool %s: cannot create %s/: %s", dir, VR_SEG_DIR, strerror(errno));
		return -errno;
	}
	sp->segdirfd = openat(sp->dirfd, VR_SEG_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->segdirfd < 0) {
		set_err(err, errlen, "spool %s: %s/: %s", dir, VR_SEG_DIR, strerror(errno));
		return -errno;
	}
	return 0;
}

static int workers_init(struct vr_spool *sp, char *err, size_t errlen)
{
	size_t size = (sp->n_workers * sizeof(*sp->w) + VR_CACHE_LINE - 1) & ~(size_t)(VR_CACHE_LINE - 1);

	sp->w = aligned_alloc(VR_CACHE_LINE, size);
	if (!sp->w) {
		set_err(err, errlen, "spool %s: out of memory", sp->dir);
		return -ENOMEM;
	}
	memset(sp->w, 0, size);
	for (unsigned i = 0; i < sp->n_workers; i++) {
		struct spool_worker *w = &sp->w[i];
		w->sp = sp;
		w->id = i;
		w->done_fd = -1;
		w->seg.fd = -1;
		__cds_wfcq_init(&w->sub_head, &w->sub_tail);
		__cds_wfcq_init(&w->done_head, &w->done_tail);
		__cds_wfcq_init(&w->batch_head, &w->batch_tail);
	}
	for (unsigned i = 0; i < sp->n_workers; i++) {
		struct spool_worker *w = &sp->w[i];
		w->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->done_fd < 0 || getrandom(&w->salt, sizeof(w->salt), 0) != sizeof(w->salt)) {
			set_err(err, errlen, "spool %s: %s", sp->dir, strerror(errno));
			return -errno;
		}
	}
	return 0;
}

static int segments_create(struct vr_spool *sp, char *err, size_t errlen)
{
	for (unsigned i = 0; i < sp->n_workers; i++) {
		struct spool_worker *w = &sp->w[i];
		int rc = vr_seg_create(&w->seg, sp->segdirfd, i, sp->next_seq++, w->salt);
		if (rc < 0) {
			set_err(err, errlen, "spool %s: cannot create segment %s: %s", sp->dir,
				w->seg.name, strerror(-rc));
			return rc;
		}
		w->stats.segments++;    /* before any committer runs */
	}
	return 0;
}

static void spool_free(struct vr_spool *sp)
{
	for (unsigned i = 0; sp->w && i < sp->n_workers; i++) {
		struct spool_worker *w = &sp->w[i];
		struct cds_wfcq_node *node;
		while ((node = __cds_wfcq_dequeue_blocking(&w->done_head, &w->done_tail)) != NULL)
			vr_spool_txn_free(caa_container_of(node, struct vr_spool_txn, node));
		vr_spool_cache_free(w);
		vr_seg_close(&w->seg);
		if (w->done_fd >= 0)
			close(w->done_fd);
		free(w->iov);
	}
	free(sp->w);
	if (sp->segdirfd >= 0)
		close(sp->segdirfd);
	if (sp->lockfd >= 0)
		close(sp->lockfd);      /* releases the flock */
	if (sp->dirfd >= 0)
		close(sp->dirfd);
	free(sp->dir);
	free(sp);
}

struct vr_spool *vr_spool_open(const char *dir, unsigned n_workers, char *err, size_t errlen)
{
	if (n_workers == 0 || n_workers > VR_QID_WORKERS_MAX) {
		set_err(err, errlen, "spool %s: %u workers: must be 1 to %u", dir, n_workers,
			VR_QID_WORKERS_MAX);
		errno = EINVAL;
		return NULL;
	}
	struct vr_spool *sp = aligned_alloc(VR_CACHE_LINE, sizeof(*sp));
	if (sp)
		memset(sp, 0, sizeof(*sp));
	if (!sp || !(sp->dir = strdup(dir))) {
		set_err(err, errlen, "spool %s: out of memory", dir);
		free(sp);
		errno = ENOMEM;
		return NULL;
	}
	sp->n_workers = n_workers;
	sp->dirfd = sp->segdirfd = sp->lockfd = -1;

	int rc = dir_open(sp, dir, err, errlen);
	if (rc == 0)
		rc = workers_init(sp, err, errlen);
	if (rc == 0)
		rc = recover(sp, err, errlen);
	if (rc == 0)
		rc = segments_create(sp, err, errlen);
	if (rc < 0) {
		spool_free(sp);
		errno = -rc;
		return NULL;
	}
	return sp;
}

void vr_spool_on_commit(struct vr_spool *sp, vr_spool_commit_fn *fn, void *arg)
{
	sp->on_commit = fn;
	sp->on_commit_arg = arg;
}

const struct vr_spool_recovery *vr_spool_recovered(const struct vr_spool *sp)
{
	return &sp->recovered;
}

/* Stops the first n committers: each commits what was submitted first. */
static void committers_stop(struct vr_spool *sp, unsigned n)
{
	/* Release: a committer's acquire load of stop sees every submission
	 * made before this call. */
	__atomic_store_n(&sp->stop, 1, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < n; i++)
		vr_spool_kick(&sp->w[i]);
	for (unsigned i = 0; i < n; i++)
		pthread_join(sp->w[i].thread, NULL);
}

int vr_spool_start(struct vr_spool *sp)
{
	char name[32];                /* "vr-spool-1023" at most: fits the kernel's 16 */

	if (sp->running)
		return -EALREADY;
	for (unsigned i = 0; i < sp->n_workers; i++) {
		int rc = pthread_create(&sp->w[i].thread, NULL, vr_spool_committer, &sp->w[i]);
		if (rc != 0) {
			/* All or none: the ones started commit what they
			 * hold and stop; a later start or close takes the
			 * rest. No committer is left to read stop. */
			committers_stop(sp, i);
			sp->stop = 0;
			return -rc;
		}
		snprintf(name, sizeof(name), "vr-spool-%u", i);
		pthread_setname_np(sp->w[i].thread, name);
	}
	sp->running = true;
	return 0;
}

void vr_spool_close(struct vr_spool *sp)
{
	if (!sp)
		return;
	if (sp->running) {
		committers_stop(sp, sp->n_workers);
	} else {
		for (unsigned i = 0; i < sp->n_workers; i++)
			while (vr_spool_batch(&sp->w[i]))
				;
	}
	spool_free(sp);
}

void vr_spool_stats(const struct vr_spool *sp, struct vr_spool_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (unsigned i = 0; i < sp->n_workers; i++) {
		const struct vr_spool_stats *s = &sp->w[i].stats;
		st->batches += __atomic_load_n(&s->batches, __ATOMIC_RELAXED);
		st->fsyncs += __atomic_load_n(&s->fsyncs, __ATOMIC_RELAXED);
		st->committed += __atomic_load_n(&s->committed, __ATOMIC_RELAXED);
		st->failed += __atomic_load_n(&s->failed, __ATOMIC_RELAXED);
		st->bytes += __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
		st->segments += __atomic_load_n(&s->segments, __ATOMIC_RELAXED);
		st->abandoned += __atomic_load_n(&s->abandoned, __ATOMIC_RELAXED);
	}
}
