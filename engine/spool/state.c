/*
 * state.c - queue state: the delivery threads' state logs, and the reader
 * that puts each committed message together with what became of it.
 *
 * Message segments are written by the committers and never touched again;
 * what happens to a message later (delivered, deferred, bounced, held, its
 * DKIM signature) is appended by its delivery thread to a state log of its
 * own, DIR/state/d<thread>-<seq>.log: the same segment header and record
 * codecs (record.c), so damage is found and skipped the same way. A log is
 * never appended to by a later run, as with segments: a crash leaves its
 * end in an unknown state.
 *
 * Writing a log costs an fdatasync (0.2 to several ms on a virtio disk);
 * done in the delivery loop it would stall every connection of the thread
 * behind the disk. So the owner only writes: vr_spool_log_flush puts what
 * was appended into the file (the page cache; readers such as `queue
 * show` see it at once) and keeps it in a buffer until it is synced; the
 * log's own syncer thread only fdatasyncs, SYNC_GAP_MS after the last
 * sync at the earliest, everything written up to then: a busy thread's
 * deliveries would otherwise cost an fdatasync (a journal commit) every
 * few messages, half of the relay's syncs. Waking a thread costs a futex
 * call and context switches on both sides, so the owner wakes the syncer
 * only when it is idle (the first write after a sync); while writes keep
 * coming the syncer goes on by itself, one timed wait and one sync per
 * gap. Nothing waits on a sync: a record is about mail already handed on
 * (a crash within the gap costs a second delivery, as one in flight
 * does), and what must be durable before it is answered (an operator's
 * command) asks with vr_spool_log_sync(), which skips the gap.
 *
 * Only the owner writes to a file or replaces it, and it replaces it only
 * between syncs: for a roll, or when a write or a sync failed (the syncer
 * only records that), the unsynced records go again into a fresh file.
 * A new file costs the owner its header's fdatasync; that is once at the
 * start, once an hour, or after an error.
 *
 * A restart reads every log into one array sorted by queue ID (events of
 * one message in the order they happened), then scans the messages and
 * folds each one's events into its state. A lost or damaged event costs at
 * most a second delivery of a recipient, never a lost one: only DELIVERED,
 * BOUNCED, EXPIRED and DELETED end a recipient.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vmrelay/buf.h"
#include "vmrelay/clock.h"
#include "vmrelay/common.h"
#include "vmrelay/log.h"
#include "scan.h"
#include "segment.h"

#define STATE_DIR "state"
/* The least time between two fdatasyncs of a log. */
#define SYNC_GAP_MS 10u

/* A position in what a log was given: bytes and records since open. */
struct log_pos {
	uint64_t bytes, recs;
};

struct vr_spool_log {
	char *dir;
	int statefd;                  /* DIR/state */
	unsigned id;
	uint64_t seq;                 /* of the next file to create */
	uint32_t salt;
	void (*on_seal)(const char *name, void *arg);
	void *on_seal_arg;

	/* The owner's alone (the thread that appends, flushes and syncs). */
	struct vr_buf buf;            /* appended since the last flush */
	size_t n_pending;             /* ... and how many */
	struct vr_buf sealed;         /* sealed files' names (NUL-ended) for on_seal */
	int broken;                   /* -errno: a write to seg failed, it takes no more */
	bool has_syncer;              /* the thread runs */
	pthread_t syncer;

	/*
	 * Shared with the syncer thread, under mu. seg is the owner's, but it
	 * replaces seg.fd only under mu and with no sync in flight (!syncing),
	 * and writes to it without mu; the syncer reads seg.fd under mu only.
	 */
	pthread_mutex_t mu;
	pthread_cond_t cv;            /* syncer's: armed, urgent or stop */
	pthread_cond_t done_cv;       /* sync()'s: a sync round ended */
	struct vr_seg seg;            /* fd -1: none yet, or given up */
	struct vr_buf wbuf;           /* given, not synced: bytes [synced, added) */
	struct log_pos added;         /* moved from buf to wbuf */
	struct log_pos in_file;       /* of those, in seg's file: up to where a sync covers */
	struct log_pos synced;        /* durable */
	int sync_rc;                  /* -errno: a sync failed, the owner replaces the file */
	int unreported_rc;            /* a failed sync vr_spool_log_flush() has not told */
	bool armed;                   /* the syncer has bytes to sync: it needs no wake */
	bool syncing;                 /* an fdatasync of seg.fd is in flight */
	bool urgent;                  /* a sync() waits: no gap before the sync */
	bool stop;
	unsigned waiters;             /* sync() calls waiting on done_cv */
	uint64_t sync_ms;             /* when the last sync started (monotonic) */
};

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

/* "d<id>-<seq>.log" -> id, seq; false for any other name. */
static bool log_name_parse(const char *base, unsigned *id, uint64_t *seq)
{
	unsigned long long s;
	unsigned i;
	int end = 0;

	if (sscanf(base, "d%u-%llu.log%n", &i, &s, &end) != 2 || base[end] != '\0' ||
	    base[1] < '0' || base[1] > '9')
		return false;
	*id = i;
	*seq = s;
	return true;
}

static void log_name(char out[VR_SEG_NAME_MAX], unsigned id, uint64_t seq)
{
	snprintf(out, VR_SEG_NAME_MAX, STATE_DIR "/d%u-%010" PRIu64 ".log", id, seq);
}

/* Opens DIR/state, creating it durably if needed. fd or -errno. */
static int state_dir_open(const char *dir, bool create)
{
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	if (create && mkdirat(dirfd, STATE_DIR, 0700) == 0 && fsync(dirfd) < 0) {
		int e = errno;
		close(dirfd);
		return -e;
	}
	int fd = openat(dirfd, STATE_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = fd < 0 ? -errno : fd;
	close(dirfd);
	return rc;
}

/* The log files in statefd, in directory order (caller frees *names and
 * each); *max_seq the highest number among them. */
static int log_list(int statefd, char ***names, size_t *n, uint64_t *max_seq)
{
	int fd = dup(statefd);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	struct dirent *de;
	char **v = NULL;
	size_t cap = 0;
	int rc = 0;

	*n = 0;
	*max_seq = 0;
	if (!d) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	while ((de = readdir(d)) != NULL) {
		unsigned id;
		uint64_t seq;
		if (!log_name_parse(de->d_name, &id, &seq))
			continue;
		if (seq > *max_seq)
			*max_seq = seq;
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			char **nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
		}
		if (!(v[*n] = strdup(de->d_name))) {
			rc = -ENOMEM;
			break;
		}
		(*n)++;
	}
	closedir(d);
	if (rc < 0) {
		while (*n)
			free(v[--*n]);
		free(v);
		return rc;
	}
	*names = v;
	return 0;
}

static void names_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* --- writing --- */

struct vr_spool_log *vr_spool_log_open(const char *dir, unsigned id, char *err, size_t errlen)
{
	struct vr_spool_log *log = calloc(1, sizeof(*log));
	char **names = NULL;
	size_t n = 0;
	int rc = -ENOMEM;

	if (!log)
		goto fail;
	pthread_mutex_init(&log->mu, NULL);
	pthread_condattr_t ca;
	/* Timed waits (the gap between syncs) on the clock vr_clock_ms reads. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&log->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&log->done_cv, NULL);
	if (!(log->dir = strdup(dir)))
		goto fail;
	log->id = id;
	log->seg.fd = -1;
	vr_buf_init(&log->buf, 0);
	vr_buf_init(&log->wbuf, 0);
	vr_buf_init(&log->sealed, 0);
	log->statefd = state_dir_open(dir, true);
	if ((rc = log->statefd) < 0)
		goto fail;
	/* Numbers above every file there: each run and thread writes new files. */
	if ((rc = log_list(log->statefd, &names, &n, &log->seq)) < 0)
		goto fail;
	names_free(names, n);
	log->seq++;
	if (getrandom(&log->salt, sizeof(log->salt), 0) != sizeof(log->salt)) {
		rc = -errno;
		goto fail;
	}
	return log;
fail:
	set_err(err, errlen, "spool %s: state log: %s", dir, strerror(-rc));
	if (log && log->statefd > 0)
		close(log->statefd);
	if (log) {
		free(log->dir);
		pthread_mutex_destroy(&log->mu);
		pthread_cond_destroy(&log->cv);
		pthread_cond_destroy(&log->done_cv);
	}
	free(log);
	errno = -rc;
	return NULL;
}

int vr_spool_log_append(struct vr_spool_log *log, const struct vr_spool_event *ev)
{
	size_t size = vr_rec_event_size(ev);

	if (!size)
		return -EINVAL;
	uint8_t *p = vr_buf_reserve(&log->buf, size);
	if (!p)
		return -ENOMEM;
	vr_rec_event_encode(p, ev, log->salt);
	vr_buf_commit(&log->buf, size);
	log->n_pending++;
	return 0;
}

size_t vr_spool_log_pending(const struct vr_spool_log *log)
{
	struct vr_spool_log *l = (struct vr_spool_log *)log;   /* the mutex only */

	pthread_mutex_lock(&l->mu);
	size_t n = l->n_pending + (size_t)(l->added.recs - l->synced.recs);
	pthread_mutex_unlock(&l->mu);
	return n;
}

void vr_spool_log_on_seal(struct vr_spool_log *log, void (*fn)(const char *name, void *arg),
			  void *arg)
{
	log->on_seal = fn;
	log->on_seal_arg = arg;
}

/* Done with the current file: nothing more goes into it. Its name waits
 * in sealed for seal_notify, which calls on_seal outside mu. */
static void log_seal(struct vr_spool_log *log)
{
	vr_seg_close(&log->seg);
	vr_buf_append(&log->sealed, log->seg.name, strlen(log->seg.name) + 1);
}

/* Tells on_seal of the files sealed since. */
static void seal_notify(struct vr_spool_log *log)
{
	const char *p = (const char *)vr_buf_head(&log->sealed);
	const char *end = p + vr_buf_len(&log->sealed);

	for (; p < end; p += strlen(p) + 1)
		if (log->on_seal)
			log->on_seal(p, log->on_seal_arg);
	vr_buf_reset(&log->sealed);
}

static void log_abandon(struct vr_spool_log *log, const char *what, int err)
{
	vr_log_err("event=state_log_abandoned dir=%s log=%s failed=%s error=\"%s\"", log->dir,
		   log->seg.name, what, strerror(err));
	log_seal(log);
}

/* Rolled like segments, so that a log can go with the mail it is about. */
static bool roll_due(const struct vr_spool_log *log)
{
	return log->seg.len >= VR_SEG_ROLL_BYTES ||
	       vr_clock_wall_us() - log->seg.created_us >= VR_SEG_ROLL_US;
}

/*
 * Seals the current file, if any, and writes every unsynced byte (wbuf)
 * to a new one: after a failed write or fdatasync (the file is never
 * trusted again, as with segments) or for a roll. Those bytes may be in
 * the old file too; an event applied twice changes nothing. Owner, mu
 * held, no sync in flight: the syncer takes seg.fd under mu only.
 */
static int log_reopen(struct vr_spool_log *log)
{
	int rc;

	if (log->seg.fd >= 0) {
		if (log->sync_rc)
			log_abandon(log, "fdatasync", -log->sync_rc);
		else if (log->broken)
			log_abandon(log, "write", -log->broken);
		else
			log_seal(log);
	}
	log->sync_rc = log->broken = 0;
	log->in_file = log->synced;   /* nothing unsynced is in the new file yet */
	while (log->seg.fd < 0) {
		log_name(log->seg.name, log->id, log->seq++);
		rc = vr_seg_create_named(&log->seg, log->statefd, log->id, log->seq - 1, log->salt);
		if (rc == -EEXIST)
			continue;           /* a file of a run that used our number: skip it */
		if (rc < 0) {
			vr_log_err("event=state_log_error dir=%s log=%s error=\"%s\"", log->dir,
				   log->seg.name, strerror(-rc));
			return rc;
		}
	}
	struct iovec iov = { (void *)vr_buf_head(&log->wbuf), vr_buf_len(&log->wbuf) };
	if ((rc = vr_seg_write(&log->seg, &iov, 1)) < 0) {
		log->broken = rc;
		return rc;
	}
	log->seg.len += vr_buf_len(&log->wbuf);
	log->in_file = log->added;
	return 0;
}

/*
 * Owner, mu held: a new file if this one is due for a roll or given up
 * (never while a sync of it is in flight: then at a later call), and the
 * syncer armed if the file has bytes to sync. Waking the syncer is the
 * costly part (a futex call and two context switches), so only an idle
 * one is woken: an armed one looks again after its gap by itself.
 */
static int log_settle(struct vr_spool_log *log)
{
	int rc = 0;

	if (!log->syncing && log->added.bytes > log->synced.bytes &&
	    (log->seg.fd < 0 || log->broken || log->sync_rc || roll_due(log)))
		rc = log_reopen(log);
	if (!log->armed && log->seg.fd >= 0 && !log->sync_rc &&
	    log->in_file.bytes > log->synced.bytes) {
		log->armed = true;
		if (log->has_syncer)
			pthread_cond_signal(&log->cv);
	}
	return rc;
}

/*
 * Owner: writes what was appended since the last call to the file (the
 * page cache: readers see it at once, nothing waits on the disk) and
 * moves it to wbuf, where it stays until synced. The write is done
 * without mu; only the owner writes to or replaces seg. Returns with mu
 * held: 0, or the -errno of this call's write or new file (the events
 * stay buffered and go to a new file at a later call).
 */
static int log_push(struct vr_spool_log *log)
{
	size_t n = vr_buf_len(&log->buf);
	bool wrote = false;
	int rc = 0;

	if (n && log->seg.fd >= 0 && !log->broken) {
		struct iovec iov = { (void *)vr_buf_head(&log->buf), n };
		if ((rc = vr_seg_write(&log->seg, &iov, 1)) < 0) {
			log->broken = rc;
		} else {
			log->seg.len += n;
			wrote = true;
		}
	}
	pthread_mutex_lock(&log->mu);
	if (n && vr_buf_append(&log->wbuf, vr_buf_head(&log->buf), n) < 0) {
		/* Kept in buf for the next call; not in wbuf, so not in this
		 * file either, or a failed sync could lose them. */
		if (wrote)
			log->broken = -ENOMEM;
		rc = -ENOMEM;
	} else if (n) {
		log->added.bytes += n;
		log->added.recs += log->n_pending;
		if (wrote)
			log->in_file = log->added;
		vr_buf_reset(&log->buf);
		log->n_pending = 0;
	}
	int src = log_settle(log);
	return rc ? rc : src;
}

/*
 * One fdatasync of what is in the file, mu released meanwhile; what the
 * owner writes during it goes in the next one. A failure only marks the
 * file given up: the owner replaces it (log_reopen), since it is the one
 * that writes to it. Called with mu held; returns with it held.
 */
static int log_sync_round(struct vr_spool_log *log)
{
	struct log_pos mark = log->in_file;
	int fd = log->seg.fd, rc = 0;

	if (fd < 0 || log->sync_rc || mark.bytes <= log->synced.bytes) {
		log->armed = false;
		goto done;
	}
	log->syncing = true;
	log->urgent = false;
	log->sync_ms = vr_clock_ms();
	pthread_mutex_unlock(&log->mu);
	if (fdatasync(fd) < 0)
		rc = -errno;
	pthread_mutex_lock(&log->mu);
	log->syncing = false;
	if (rc == 0) {
		vr_buf_consume(&log->wbuf, (size_t)(mark.bytes - log->synced.bytes));
		log->synced = mark;
	} else {
		log->sync_rc = log->unreported_rc = rc;
	}
	log->armed = rc == 0 && log->in_file.bytes > log->synced.bytes;
done:
	if (log->waiters)
		pthread_cond_broadcast(&log->done_cv);
	return rc;
}

/* Waits, mu held, until the gap since the last sync is over, or a sync()
 * or close asks; false on stop. */
static bool syncer_gap(struct vr_spool_log *log)
{
	for (;;) {
		if (log->stop)
			return false;
		uint64_t due = log->sync_ms + SYNC_GAP_MS, now = vr_clock_ms();
		if (log->urgent || now >= due)
			return true;
		struct timespec ts;
		uint64_t left = due - now;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t ns = (uint64_t)ts.tv_nsec + left * 1000000u;
		ts.tv_sec += (time_t)(ns / 1000000000u);
		ts.tv_nsec = (long)(ns % 1000000000u);
		pthread_cond_timedwait(&log->cv, &log->mu, &ts);
	}
}

/* The syncer: sleeps until the owner arms it (the first write after a
 * sync), then syncs once the gap is over, and again while the owner wrote
 * meanwhile, with no word from it. Stops at once on stop: close syncs
 * what is left itself. */
static void *syncer_main(void *arg)
{
	struct vr_spool_log *log = arg;

	pthread_mutex_lock(&log->mu);
	for (;;) {
		while (!log->armed && !log->stop)
			pthread_cond_wait(&log->cv, &log->mu);
		if (!syncer_gap(log))
			break;
		log_sync_round(log);
	}
	pthread_mutex_unlock(&log->mu);
	return NULL;
}

int vr_spool_log_flush(struct vr_spool_log *log)
{
	int rc;

	if (!log->has_syncer) {
		rc = pthread_create(&log->syncer, NULL, syncer_main, log);
		if (rc) {
			/* No thread: the caller waits on the disk, as before. */
			vr_log_warn("event=state_syncer_failed dir=%s error=\"%s\"", log->dir,
				    strerror(rc));
			return vr_spool_log_sync(log);
		}
		log->has_syncer = true;
		char name[16];
		snprintf(name, sizeof(name), "vr-statelog-%u", log->id % 100);
		pthread_setname_np(log->syncer, name);
	}
	rc = log_push(log);
	if (log->unreported_rc)
		rc = log->unreported_rc;
	log->unreported_rc = 0;
	pthread_mutex_unlock(&log->mu);
	seal_notify(log);
	return rc;
}

int vr_spool_log_sync(struct vr_spool_log *log)
{
	int rc = log_push(log);
	uint64_t target = log->added.bytes;

	while (rc == 0 && log->synced.bytes < target) {
		if (log->syncing) {
			log->waiters++;
			pthread_cond_wait(&log->done_cv, &log->mu);
			log->waiters--;
		} else if (log->sync_rc) {
			rc = log->sync_rc;          /* replaced at the next call */
		} else if (log->in_file.bytes < log->added.bytes) {
			rc = log_reopen(log);       /* put off while a sync was in flight */
		} else if (!log->has_syncer) {
			rc = log_sync_round(log);
		} else {
			/* No gap: someone waits. */
			log->urgent = log->armed = true;
			pthread_cond_signal(&log->cv);
			log->waiters++;
			pthread_cond_wait(&log->done_cv, &log->mu);
			log->waiters--;
		}
	}
	log->unreported_rc = 0;
	pthread_mutex_unlock(&log->mu);
	seal_notify(log);
	return rc;
}

void vr_spool_log_close(struct vr_spool_log *log)
{
	if (!log)
		return;
	if (log->has_syncer) {
		pthread_mutex_lock(&log->mu);
		log->stop = true;
		pthread_cond_signal(&log->cv);
		pthread_mutex_unlock(&log->mu);
		pthread_join(log->syncer, NULL);
		log->has_syncer = false;
	}
	vr_spool_log_sync(log);
	vr_seg_close(&log->seg);
	vr_buf_free(&log->buf);
	vr_buf_free(&log->wbuf);
	vr_buf_free(&log->sealed);
	pthread_mutex_destroy(&log->mu);
	pthread_cond_destroy(&log->cv);
	pthread_cond_destroy(&log->done_cv);
	close(log->statefd);
	free(log->dir);
	free(log);
}

/* --- reading --- */

/* One event as read back; text only kept for the signature. */
struct ev_entry {
	char qid[VR_QID_LEN + 1];
	uint8_t type;
	uint32_t rcpt, attempts;
	uint64_t at_us, next_us;
	uint64_t order;               /* file, then position: ties on at_us */
	char *text;
	size_t text_len;
};

struct ev_table {
	struct ev_entry *v;
	size_t n, cap;
};

static int table_add(struct ev_table *t, const struct vr_spool_event *ev, uint64_t order)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 256;
		struct ev_entry *nv = realloc(t->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		t->v = nv;
		t->cap = cap;
	}
	struct ev_entry *e = &t->v[t->n];
	memcpy(e->qid, ev->qid, sizeof(e->qid));
	e->type = ev->type;
	e->rcpt = ev->rcpt;
	e->attempts = ev->attempts;
	e->at_us = ev->at_us;
	e->next_us = ev->next_us;
	e->order = order;
	e->text = NULL;
	e->text_len = 0;
	if (ev->type == VR_SPOOL_DKIM) {
		if (!(e->text = malloc(ev->text_len + 1)))
			return -ENOMEM;
		memcpy(e->text, ev->text, ev->text_len);
		e->text[ev->text_len] = '\0';
		e->text_len = ev->text_len;
	}
	t->n++;
	return 0;
}

static void table_free(struct ev_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i].text);
	free(t->v);
}

/* Reads one log's intact events into t. */
static int log_read(int statefd, const char *name, uint64_t file_no, struct ev_table *t)
{
	struct vr_seg_reader r;
	struct vr_rec rec;
	struct vr_spool_event ev;
	uint64_t off;
	int ev_kind, rc = vr_seg_reader_open(&r, statefd, name);

	if (rc < 0) {
		/* Created and never written, or damaged: nothing to apply. */
		if (rc != -ENODATA)
			vr_log_warn("event=state_log_unreadable log=%s error=\"%s\"", name,
				    strerror(-rc));
		return rc == -ENOMEM ? rc : 0;
	}
	while ((ev_kind = vr_seg_reader_next(&r, &rec, &off)) != VR_SEG_EOF) {
		if (ev_kind < 0) {
			rc = ev_kind;
			break;
		}
		/* A torn tail is what a crash leaves, or a record still being
		 * written when the log is read live (queue list): not worth a
		 * warning. */
		if (ev_kind == VR_SEG_DAMAGE)
			vr_log_warn("event=state_log_damage log=%s offset=%" PRIu64 " bytes=%" PRIu64,
				    name, r.bad_off, r.bad_len);
		if (ev_kind != VR_SEG_RECORD)
			continue;
		if (vr_rec_event_decode(rec.type, rec.payload, rec.len, &ev) < 0)
			continue;
		if ((rc = table_add(t, &ev, file_no << 40 | off)) < 0)
			break;
	}
	vr_seg_reader_close(&r);
	return rc;
}

static int entry_cmp(const void *x, const void *y)
{
	const struct ev_entry *a = x, *b = y;
	int c = strcmp(a->qid, b->qid);

	if (c)
		return c;
	if (a->at_us != b->at_us)
		return a->at_us < b->at_us ? -1 : 1;
	return a->order < b->order ? -1 : a->order > b->order;
}

/* The events of qid: [*first, *first + return). */
static size_t table_find(const struct ev_table *t, const char *qid, size_t *first)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(t->v[mid].qid, qid) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*first = lo;
	while (hi < t->n && strcmp(t->v[hi].qid, qid) == 0)
		hi++;
	return hi - lo;
}

struct queue_scan {
	struct ev_table t;
	int (*fn)(const struct vr_spool_msg *, const struct vr_spool_qstate *, void *);
	void *arg;
	uint8_t *rcpt;
	unsigned rcpt_cap;
};

/* Applies one event to st (n recipients). */
static void apply(struct vr_spool_qstate *st, unsigned n, const struct ev_entry *e)
{
	switch (e->type) {
	case VR_STATE_DELIVERED:
	case VR_STATE_BOUNCED:
	case VR_STATE_EXPIRED:
		if (e->rcpt < n && !st->rcpt[e->rcpt]) {
			st->rcpt[e->rcpt] = e->type;
			st->pending--;
		}
		break;
	case VR_STATE_DEFERRED:
		st->next_us = e->next_us;
		break;
	case VR_STATE_HELD:
		st->held = true;
		break;
	case VR_STATE_RELEASED:
		st->held = false;
		break;
	case VR_STATE_DELETED:
		st->deleted = true;
		break;
	case VR_SPOOL_DKIM:
		st->dkim = e->text;
		st->dkim_len = e->text_len;
		break;
	}
	if (e->attempts > st->attempts)
		st->attempts = e->attempts;
}

static int queue_message(const struct vr_spool_msg *msg, void *arg)
{
	struct queue_scan *qs = arg;
	size_t first, n;

	if (msg->n_rcpts > qs->rcpt_cap) {
		uint8_t *v = realloc(qs->rcpt, msg->n_rcpts);
		if (!v)
			return -ENOMEM;
		qs->rcpt = v;
		qs->rcpt_cap = msg->n_rcpts;
	}
	struct vr_spool_qstate st = {
		.rcpt = qs->rcpt, .pending = msg->n_rcpts,
		.held = (msg->flags & VR_SPOOL_HOLD) != 0,
	};
	memset(qs->rcpt, 0, msg->n_rcpts);
	n = table_find(&qs->t, msg->qid, &first);
	for (size_t i = first; i < first + n; i++)
		apply(&st, msg->n_rcpts, &qs->t.v[i]);
	return qs->fn(msg, &st, qs->arg);
}

/* Reads every state log of dir into qs->t, sorted; their names stay in
 * *names (caller frees) for compaction. */
static int table_load(const char *dir, struct queue_scan *qs, char ***names, size_t *n)
{
	uint64_t max_seq;
	int rc = 0;

	*names = NULL;
	*n = 0;
	int statefd = state_dir_open(dir, false);
	if (statefd >= 0) {
		rc = log_list(statefd, names, n, &max_seq);
		for (size_t i = 0; rc == 0 && i < *n; i++)
			rc = log_read(statefd, (*names)[i], i, &qs->t);
		close(statefd);
	} else if (statefd != -ENOENT) {
		rc = statefd;           /* no state/ yet is a spool nothing was delivered from */
	}
	if (rc == 0 && qs->t.n)
		qsort(qs->t.v, qs->t.n, sizeof(*qs->t.v), entry_cmp);
	return rc;
}

static void queue_scan_free(struct queue_scan *qs)
{
	table_free(&qs->t);
	free(qs->rcpt);
}

int vr_spool_queue_scan(const char *dir,
			int (*fn)(const struct vr_spool_msg *msg,
				  const struct vr_spool_qstate *st, void *arg),
			void *arg)
{
	struct queue_scan qs = { .fn = fn, .arg = arg };
	char **names;
	size_t n;

	int rc = table_load(dir, &qs, &names, &n);
	names_free(names, n);
	if (rc == 0)
		rc = vr_spool_scan(dir, queue_message, &qs, NULL);
	queue_scan_free(&qs);
	return rc;
}

/* --- compaction --- */

struct compact {
	uint64_t before_us;
	/* the segment being read: are all its messages done, and how new? */
	bool all_final;
	uint64_t newest_us, messages;
	char **victims;
	size_t n_victims;
	struct vr_spool_log *log;
	struct vr_spool_compact_stats *st;
	int err;
};

static int gc_message(const struct vr_spool_msg *msg, const struct vr_spool_qstate *st,
		      void *arg)
{
	struct compact *c = arg;

	c->all_final &= st->deleted || st->pending == 0;
	c->newest_us = VR_MAX(c->newest_us, msg->received_us);
	c->messages++;
	return 0;
}

/* Damaged segments stay, for the operator's tools; so does a segment the
 * quota replay still counts. */
static void gc_segment(const struct vr_spool_seg_info *seg, void *arg)
{
	struct queue_scan *qs = arg;      /* the scan's argument: messages go through it */
	struct compact *c = qs->arg;

	if (seg->error == 0 && seg->damaged == 0 && c->messages && c->all_final &&
	    c->newest_us < c->before_us) {
		char **v = realloc(c->victims, (c->n_victims + 1) * sizeof(*v));
		if (v && (v[c->n_victims] = strdup(seg->name)) != NULL) {
			c->victims = v;
			c->n_victims++;
			c->st->messages_removed += c->messages;
		} else {
			c->victims = v ? v : c->victims;
			c->err = -ENOMEM;
		}
	}
	c->all_final = true;
	c->newest_us = c->messages = 0;
}

static void fold_event(struct compact *c, const struct vr_spool_msg *msg, uint8_t type,
		       uint32_t rcpt, const struct vr_spool_qstate *st, const char *text,
		       size_t len)
{
	struct vr_spool_event ev = {
		.type = type, .rcpt = rcpt, .attempts = st->attempts, .at_us = msg->received_us,
		.next_us = st->next_us, .text = text, .text_len = len,
	};
	memcpy(ev.qid, msg->qid, sizeof(ev.qid));
	int rc = vr_spool_log_append(c->log, &ev);
	if (rc < 0 && !c->err)
		c->err = rc;
	c->st->events++;
}

/* The events that give msg its state back, and nothing more. */
static int fold_message(const struct vr_spool_msg *msg, const struct vr_spool_qstate *st,
			void *arg)
{
	struct compact *c = arg;
	bool hold_flag = (msg->flags & VR_SPOOL_HOLD) != 0;

	for (unsigned i = 0; i < msg->n_rcpts; i++)
		if (st->rcpt[i])
			fold_event(c, msg, st->rcpt[i], i, st, "", 0);
	if (st->pending && (st->attempts || st->next_us))
		fold_event(c, msg, VR_STATE_DEFERRED, VR_SPOOL_ALL, st, "", 0);
	if (st->held != hold_flag)
		fold_event(c, msg, st->held ? VR_STATE_HELD : VR_STATE_RELEASED, VR_SPOOL_ALL, st,
			   "", 0);
	if (st->deleted)
		fold_event(c, msg, VR_STATE_DELETED, VR_SPOOL_ALL, st, "", 0);
	if (st->dkim)
		fold_event(c, msg, VR_SPOOL_DKIM, VR_SPOOL_ALL, st, st->dkim, st->dkim_len);
	return c->err;
}

/* Removes dir/name for each name, then makes that durable in sub. */
static int unlink_all(const char *dir, const char *sub, char **names, size_t n)
{
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = dirfd < 0 ? -errno : 0;

	for (size_t i = 0; rc == 0 && i < n; i++)
		if (unlinkat(dirfd, names[i], 0) < 0 && errno != ENOENT)
			rc = -errno;
	int subfd = dirfd < 0 ? -1 : openat(dirfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rc == 0 && (subfd < 0 || fsync(subfd) < 0))
		rc = -errno;
	if (subfd >= 0)
		close(subfd);
	if (dirfd >= 0)
		close(dirfd);
	return rc;
}

int vr_spool_compact(const char *dir, uint64_t before_us, struct vr_spool_compact_stats *st)
{
	struct vr_spool_compact_stats dummy;
	struct queue_scan qs = { 0 };
	struct compact c = { .before_us = before_us, .all_final = true, .st = st ? st : &dummy };
	char **logs, err[256];
	size_t n_logs;

	memset(c.st, 0, sizeof(*c.st));
	int rc = table_load(dir, &qs, &logs, &n_logs);
	/* Which segments are done: a scan with the segment callback. */
	qs.fn = gc_message;
	qs.arg = &c;
	const struct vr_spool_scan_ops ops = {
		.message = queue_message, .segment = gc_segment, .arg = &qs,
	};
	if (rc == 0)
		rc = vr_spool_scan_ops(dir, &ops, NULL);
	if (rc == 0)
		rc = c.err;
	/* Segments first: their messages' state may go only after them. */
	if (rc == 0 && c.n_victims)
		rc = unlink_all(dir, VR_SEG_DIR, c.victims, c.n_victims);
	if (rc == 0) {
		c.st->segments_removed = c.n_victims;
		c.log = vr_spool_log_open(dir, 0, err, sizeof(err));
		rc = c.log ? 0 : -errno;
	}
	if (rc == 0) {
		qs.fn = fold_message;
		rc = vr_spool_scan(dir, queue_message, &qs, NULL);
	}
	if (rc == 0)
		rc = c.err ? c.err : vr_spool_log_sync(c.log);
	/* The folded log is durable: the old ones may go. */
	for (size_t i = 0; rc == 0 && i < n_logs; i++) {
		char *name = malloc(strlen(STATE_DIR) + strlen(logs[i]) + 2);
		if (!name) {
			rc = -ENOMEM;
			break;
		}
		sprintf(name, "%s/%s", STATE_DIR, logs[i]);
		free(logs[i]);
		logs[i] = name;
	}
	if (rc == 0 && n_logs)
		rc = unlink_all(dir, STATE_DIR, logs, n_logs);
	if (rc == 0)
		c.st->logs_replaced = n_logs;
	vr_spool_log_close(c.log);
	names_free(logs, n_logs);
	names_free(c.victims, c.n_victims);
	queue_scan_free(&qs);
	return rc;
}
