/*
 * log.c - key=value log lines, and each thread's ring of recent events for
 * the control socket (see vmrelay/log.h).
 *
 * Lines. SMTP workers and poll-mode lcores log a line per transaction and
 * must never wait on a disk or a pipe: they call vr_log_thread_async() as
 * they start, and while the logging thread ("vr-log", started by
 * vr_log_open(), stopped by vr_log_close()) runs, vr_log() in them only
 * formats the line into the thread's own ring and returns. The logging
 * thread takes what every ring holds and writes it with one writev(2).
 * Busy, it passes over the rings every NAP_NS and no worker makes a system
 * call for it; once it has found them empty twice it sleeps, and the first
 * line after that wakes it (one eventfd write), so a quiet relay's lines
 * are in the file at once.
 *
 * A full ring drops the line and counts it: a worker never waits for the
 * log, even a stuck one (a full disk, a pipe nobody reads). The next line
 * that finds room is preceded by "event=log_dropped lines=N", in the gap's
 * place; vr_log_close() writes the count no later line carried.
 *
 * Every other thread (main, control, delivery, spool, cluster), and every
 * thread before vr_log_open() (config errors, --check), writes its own
 * lines with one write(2), at once: those threads may wait on a disk, and
 * their lines are in the file when what they did is answered - an operator
 * (or a test) reading the log right after `vmrelayctl reload` finds it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "vmrelay/log.h"

#define LOG_LINE_MAX 2048
#define RING_BYTES (128u * 1024)      /* per thread, a power of two: ~400 lines */
#define RING_BATCH 32                 /* rings per writev */
/* A pass found nothing: look again this soon. Each look is a wake-up that
 * takes a CPU from whatever runs (on a 2-CPU relay, often the next hop's
 * receiver): 1 ms keeps it under 1000 a second, and a ring holds many
 * milliseconds of a worker's lines (at 100,000 lines/s, 30 KB a ms). */
#define NAP_NS 1000000L
#define ASLEEP_MS 100                 /* then sleep until woken, or this long */

static const char *const level_names[] = { "err", "warn", "info", "debug" };

/* Written at start and reload by the main thread; read by all (relaxed:
 * a line logged at the old level during a change is harmless). log_fd is
 * swapped only while the logging thread is stopped. */
static int log_fd = STDERR_FILENO;
static int log_level = VR_LOG_INFO;

/* --- each thread's ring of lines ---
 *
 * Single producer (the owning thread) and single consumer (the logging
 * thread, or vr_log_close() once it has stopped): head is stored by the
 * producer only, tail by the consumer only, and each loads the other's
 * with acquire, so the bytes below a head are in place before the consumer
 * sees it, and the consumer has written bytes out before the producer sees
 * their room given back. Only whole lines are published.
 *
 * A ring is allocated when its thread calls vr_log_thread_async() and is
 * never freed: when the thread exits it is orphaned, and once drained it is
 * free for the next such thread, so the memory follows the most workers
 * that ran at once. */

enum ring_state { RING_FREE, RING_OWNED, RING_ORPHANED };

struct log_ring {
	_Alignas(64) uint64_t head;   /* bytes published */
	uint64_t dropped;             /* lines lost since the last note */
	_Alignas(64) uint64_t tail;   /* bytes written out */
	int state;                    /* enum ring_state; CAS */
	struct log_ring *next;        /* set before the ring is pushed, then fixed */
	char buf[RING_BYTES];
};

static struct log_ring *line_rings;        /* push-only list (CAS) */
static _Thread_local struct log_ring *ring_mine;
static _Thread_local bool ring_wanted;   /* vr_log_thread_async() was called */
static pthread_key_t ring_key;        /* its destructor orphans the ring */
static pthread_once_t ring_once = PTHREAD_ONCE_INIT;

/* 1 while the logging thread runs: lines go to the rings (acquire/release
 * pairs with the thread's start; see log_stop for the end). */
static int log_async;

/* 1 while the logging thread sleeps on log_wake_fd; whoever swaps it to 0
 * wakes it. Sequentially consistent with the head a producer stores and
 * the heads the thread looks at after announcing its sleep, so a line is
 * either seen by that look or wakes the thread. */
static int log_asleep;
static int log_wake_fd = -1;          /* eventfd, non-blocking */

/* The logging thread's controls, under mu. The producers never touch them. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t done;          /* from the thread: a pass ended */
	pthread_t thread;
	int running, stop;
	unsigned waiters;
	uint64_t passes;
} lt = { .mu = PTHREAD_MUTEX_INITIALIZER, .done = PTHREAD_COND_INITIALIZER };

static void log_kick(void)
{
	uint64_t one = 1;
	/* non-blocking: a counter too full to add to has a wake-up pending */
	ssize_t w = write(log_wake_fd, &one, sizeof(one));
	(void)w;
}

/* "2026-12-04T21:20:18.123Z info " into out; returns its length. */
static size_t log_stamp(char *out, size_t outlen, enum vr_log_level level)
{
	struct timeval tv;
	struct tm tm;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(out + n, outlen - n, ".%03ldZ %s ", (long)tv.tv_usec / 1000,
			      level_names[level]);
	return n;
}

static void ring_orphan(void *arg)
{
	struct log_ring *r = arg;

	ring_mine = NULL;
	/* release: the thread's last head is visible to whoever sees it orphaned */
	__atomic_store_n(&r->state, RING_ORPHANED, __ATOMIC_RELEASE);
}

static void ring_key_create(void)
{
	pthread_key_create(&ring_key, ring_orphan);
}

/* The calling thread's ring: a free one, or a new one. NULL if out of memory. */
static struct log_ring *ring_claim(void)
{
	struct log_ring *r;

	pthread_once(&ring_once, ring_key_create);
	for (r = __atomic_load_n(&line_rings, __ATOMIC_ACQUIRE); r; r = r->next) {
		int s = RING_FREE;
		/* acquire: pairs with the logging thread freeing it after its last write */
		if (__atomic_compare_exchange_n(&r->state, &s, RING_OWNED, 0, __ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			break;
	}
	if (!r) {
		r = aligned_alloc(64, sizeof(*r));
		if (!r)
			return NULL;
		r->head = r->tail = r->dropped = 0;
		r->state = RING_OWNED;
		r->next = __atomic_load_n(&line_rings, __ATOMIC_RELAXED);
		/* release: the ring's fields are set before anyone finds it */
		while (!__atomic_compare_exchange_n(&line_rings, &r->next, r, 1, __ATOMIC_RELEASE,
						    __ATOMIC_RELAXED))
			;
	}
	pthread_setspecific(ring_key, r);
	ring_mine = r;
	return r;
}

static void ring_copy(struct log_ring *r, uint64_t at, const char *s, size_t len)
{
	size_t off = (size_t)(at & (RING_BYTES - 1));
	size_t first = VR_MIN(len, RING_BYTES - off);

	memcpy(r->buf + off, s, first);
	memcpy(r->buf, s + first, len - first);
}

/* Appends one line, after the note of the lines lost before it, or drops it. */
static void ring_put(struct log_ring *r, const char *line, size_t len)
{
	char note[96];
	size_t nlen = 0;
	uint64_t head = __atomic_load_n(&r->head, __ATOMIC_RELAXED);     /* ours */
	uint64_t lost = __atomic_load_n(&r->dropped, __ATOMIC_RELAXED);

	if (VR_UNLIKELY(lost)) {
		nlen = log_stamp(note, sizeof(note), VR_LOG_WARN);
		nlen += (size_t)snprintf(note + nlen, sizeof(note) - nlen,
					 "event=log_dropped lines=%llu\n", (unsigned long long)lost);
	}
	/* acquire: the bytes below tail are written out before we reuse them */
	uint64_t room = RING_BYTES - (head - __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE));
	if (len + nlen > room) {
		__atomic_fetch_add(&r->dropped, 1, __ATOMIC_RELAXED);
		return;
	}
	/* vr_log_close() may have taken the count for its own note meanwhile */
	if (lost && __atomic_compare_exchange_n(&r->dropped, &lost, 0, 0, __ATOMIC_RELAXED,
						__ATOMIC_RELAXED)) {
		ring_copy(r, head, note, nlen);
		head += nlen;
	}
	ring_copy(r, head, line, len);
	/* seq_cst: the line's bytes are in place before the consumer sees head,
	 * and head is stored before log_asleep is read (see log_asleep) */
	__atomic_store_n(&r->head, head + len, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&log_asleep, __ATOMIC_SEQ_CST) &&
	    __atomic_exchange_n(&log_asleep, 0, __ATOMIC_SEQ_CST))
		log_kick();
}

/* Writes all of iov to fd; lines that cannot be written (an error other
 * than a full pipe) are lost, as a failed write(2) lost them before. */
static void write_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = writev(fd, iov, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {  /* a non-blocking stderr: wait, we may */
				struct pollfd p = { .fd = fd, .events = POLLOUT };
				poll(&p, 1, 1000);
				continue;
			}
			return;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
}

/* Writes what took[0..n) held up to upto[], then gives their room back. */
static void batch_write(int fd, struct iovec *iov, int niov, struct log_ring **took,
			const uint64_t *upto, int n)
{
	write_all(fd, iov, niov);
	for (int i = 0; i < n; i++)
		/* release: our reads of the bytes are done before the room is reused */
		__atomic_store_n(&took[i]->tail, upto[i], __ATOMIC_RELEASE);
}

/* The consumer's pass over every ring. Returns the bytes written. */
static size_t drain_pass(void)
{
	int fd = __atomic_load_n(&log_fd, __ATOMIC_RELAXED);
	struct iovec iov[2 * RING_BATCH];
	struct log_ring *took[RING_BATCH];
	uint64_t upto[RING_BATCH];
	int n = 0, niov = 0;
	size_t bytes = 0;

	for (struct log_ring *r = __atomic_load_n(&line_rings, __ATOMIC_ACQUIRE); r; r = r->next) {
		/* acquire: an orphan's last head is visible below */
		int state = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE);
		if (state == RING_FREE)
			continue;
		uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);  /* ours */
		/* seq_cst: after an announced sleep, this look is ordered after
		 * log_asleep's store (acquire: the line's bytes are in place) */
		uint64_t head = __atomic_load_n(&r->head, __ATOMIC_SEQ_CST);
		if (head == tail) {
			if (state == RING_ORPHANED)
				/* release: pairs with ring_claim's acquire */
				__atomic_compare_exchange_n(&r->state, &state, RING_FREE, 0,
							    __ATOMIC_RELEASE, __ATOMIC_RELAXED);
			continue;
		}
		size_t off = (size_t)(tail & (RING_BYTES - 1));
		size_t len = (size_t)(head - tail);
		size_t first = VR_MIN(len, RING_BYTES - off);
		iov[niov++] = (struct iovec){ r->buf + off, first };
		if (len > first)
			iov[niov++] = (struct iovec){ r->buf, len - first };
		took[n] = r;
		upto[n++] = head;
		bytes += len;
		if (n == RING_BATCH) {
			batch_write(fd, iov, niov, took, upto, n);
			n = niov = 0;
		}
	}
	if (n)
		batch_write(fd, iov, niov, took, upto, n);
	return bytes;
}

static void *log_main(void *arg)
{
	pthread_mutex_lock(&lt.mu);
	for (;;) {
		int stop = lt.stop;
		pthread_mutex_unlock(&lt.mu);
		size_t n = drain_pass();
		pthread_mutex_lock(&lt.mu);
		lt.passes++;
		pthread_cond_broadcast(&lt.done);
		/* a pass that began after the stop and found nothing: all written */
		if (stop && n == 0)
			break;
		if (n || lt.stop || lt.waiters)
			continue;
		pthread_mutex_unlock(&lt.mu);
		struct timespec nap = { 0, NAP_NS };
		nanosleep(&nap, NULL);
		if (drain_pass() == 0) {
			__atomic_store_n(&log_asleep, 1, __ATOMIC_SEQ_CST);
			/* the look after the announcement: a line stored before it
			 * is found here, any later one sees log_asleep and wakes us */
			if (drain_pass() == 0) {
				struct pollfd p = { .fd = log_wake_fd, .events = POLLIN };
				poll(&p, 1, ASLEEP_MS);
			}
			__atomic_store_n(&log_asleep, 0, __ATOMIC_SEQ_CST);
			uint64_t v;
			ssize_t r = read(log_wake_fd, &v, sizeof(v));
			(void)r;
		}
		pthread_mutex_lock(&lt.mu);
	}
	pthread_mutex_unlock(&lt.mu);
	return NULL;
}

/* Returns once every line logged before the call is written out. */
static void log_wait_written(void)
{
	pthread_mutex_lock(&lt.mu);
	/* the pass under way may have passed some rings before our call */
	uint64_t target = lt.passes + 2;
	lt.waiters++;
	log_kick();
	while (lt.running && lt.passes < target)
		pthread_cond_wait(&lt.done, &lt.mu);
	lt.waiters--;
	pthread_mutex_unlock(&lt.mu);
}

static void log_start(void)
{
	sigset_t all, old;

	pthread_mutex_lock(&lt.mu);
	if (log_wake_fd < 0)
		log_wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!lt.running && log_wake_fd >= 0) {
		/* the thread takes no signal: they belong to the main thread */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		lt.running = pthread_create(&lt.thread, NULL, log_main, NULL) == 0;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (lt.running)
			pthread_setname_np(lt.thread, "vr-log");
		/* release: pairs with vr_log's acquire (the rings' list is set up) */
		__atomic_store_n(&log_async, lt.running, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&lt.mu);
}

/*
 * Stops the logging thread once it has written everything, then writes
 * the count of lines any ring dropped without a later line to carry it.
 * Lines from threads still logging meanwhile go straight to the fd; a line
 * put into a ring after the thread's last pass would stay there, which is
 * why vr_log_close() comes after the other threads have stopped.
 */
static void log_stop(void)
{
	pthread_mutex_lock(&lt.mu);
	if (!lt.running) {
		pthread_mutex_unlock(&lt.mu);
		return;
	}
	__atomic_store_n(&log_async, 0, __ATOMIC_RELEASE);
	lt.stop = 1;
	log_kick();
	pthread_mutex_unlock(&lt.mu);
	pthread_join(lt.thread, NULL);
	pthread_mutex_lock(&lt.mu);
	lt.running = lt.stop = 0;
	pthread_cond_broadcast(&lt.done);
	pthread_mutex_unlock(&lt.mu);

	drain_pass();
	for (struct log_ring *r = __atomic_load_n(&line_rings, __ATOMIC_ACQUIRE); r; r = r->next) {
		uint64_t lost = __atomic_exchange_n(&r->dropped, 0, __ATOMIC_RELAXED);
		if (lost)
			vr_log(VR_LOG_WARN, "event=log_dropped lines=%llu", (unsigned long long)lost);
	}
}

/* exit() from anywhere still writes what the rings hold */
static void log_at_exit(void)
{
	log_stop();
}

static void log_register_exit(void)
{
	atexit(log_at_exit);
}

static int log_set_fd(const char *path)
{
	int fd = STDERR_FILENO;

	if (path && *path && strcmp(path, "stderr") != 0) {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd < 0)
			return -errno;
	}
	log_stop();
	int old = __atomic_exchange_n(&log_fd, fd, __ATOMIC_RELAXED);
	if (old != STDERR_FILENO && old != fd)
		close(old);
	return 0;
}

int vr_log_open(const char *path, enum vr_log_level level)
{
	static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

	int rc = log_set_fd(path);
	if (rc < 0)
		return rc;
	__atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
	pthread_once(&exit_once, log_register_exit);
	log_start();
	return 0;
}

int vr_log_reopen(const char *path)
{
	int cur = __atomic_load_n(&log_fd, __ATOMIC_RELAXED);

	if (!path || !*path || strcmp(path, "stderr") == 0 || cur == STDERR_FILENO)
		return 0;
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	/* What was logged before the reopen (logrotate's move) goes to the old
	 * file: the rings are written out first. */
	log_wait_written();
	/* dup2 swaps the file behind the descriptor in one step: a line
	 * written meanwhile goes whole to the old file or the new one, never
	 * to a closed descriptor or one reused for something else. */
	int rc = dup2(fd, cur) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

void vr_log_close(void)
{
	log_set_fd(NULL);
}

void vr_log_thread_async(void)
{
	ring_wanted = true;
	/* the ring's memory now, not at the first line in the loop */
	if (!ring_mine)
		ring_claim();
}

int vr_log_level_parse(const char *name)
{
	for (size_t i = 0; i < VR_ARRAY_SIZE(level_names); i++)
		if (strcmp(name, level_names[i]) == 0)
			return (int)i;
	return -1;
}

int vr_log_enabled(enum vr_log_level level)
{
	return (int)level <= __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

void vr_log(enum vr_log_level level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];

	if (!vr_log_enabled(level))
		return;
	size_t n = log_stamp(line, sizeof(line), level);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += VR_MIN((size_t)m, sizeof(line) - n - 2);
	line[n++] = '\n';
	/* acquire: pairs with log_start's release */
	if (ring_wanted && __atomic_load_n(&log_async, __ATOMIC_ACQUIRE)) {
		struct log_ring *r = ring_mine ? ring_mine : ring_claim();
		if (VR_LIKELY(r)) {
			ring_put(r, line, n);
			return;
		}
	}
	/* One write per line: atomic for O_APPEND files and for pipes up to
	 * PIPE_BUF, so concurrent threads never interleave within a line. */
	ssize_t w = write(__atomic_load_n(&log_fd, __ATOMIC_RELAXED), line, n);
	(void)w;
}

char *vr_log_quote(char *out, size_t outlen, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (outlen < 3) {
		if (outlen)
			out[0] = '\0';
		return out;
	}
	out[o++] = '"';
	for (size_t i = 0; i < len && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c >= 0x20 && c < 0x7f) {
			out[o++] = (char)c;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}

/* --- recent events (vr_log_event) ---
 *
 * A slot is written by its ring's thread only and read by any: seq is odd
 * while the writer is in it; the payload is copied word by word with
 * relaxed atomics, so a reader racing the writer reads stale or new words,
 * never undefined behaviour, and seq tells it to drop that copy. */

union event_words {
	struct vr_log_event ev;
	uint64_t w[(sizeof(struct vr_log_event) + 7) / 8];
};

struct event_slot {
	uint64_t seq;                 /* even: stable; odd: being written */
	union event_words u;
};

struct event_ring {
	uint64_t next;                /* slots written; the writer's alone */
	uint64_t last_us;             /* its newest event's at_us, also the writer's */
	struct event_slot slot[VR_LOG_EVENTS];
};

/* Zero pages until a thread claims its ring: only rings in use cost memory. */
static struct event_ring event_rings[VR_LOG_EVENT_THREADS];
static unsigned event_rings_used;     /* claimed, fetch-and-add */
static _Thread_local struct event_ring *event_mine;
static _Thread_local int event_none;  /* every ring was taken */

static void event_copy_in(struct event_slot *sl, const union event_words *src)
{
	uint64_t s = sl->seq;         /* ours: no other writer */

	__atomic_store_n(&sl->seq, s + 1, __ATOMIC_RELAXED);
	/* the odd seq is visible before any word of the new payload */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	for (size_t i = 0; i < VR_ARRAY_SIZE(src->w); i++)
		__atomic_store_n(&sl->u.w[i], src->w[i], __ATOMIC_RELAXED);
	/* the payload is visible before the even seq that vouches for it */
	__atomic_store_n(&sl->seq, s + 2, __ATOMIC_RELEASE);
}

/* 0 and a consistent copy in dst, or -1: the slot was empty or rewritten. */
static int event_copy_out(const struct event_slot *sl, union event_words *dst)
{
	uint64_t s1 = __atomic_load_n(&sl->seq, __ATOMIC_ACQUIRE);

	if (s1 == 0 || (s1 & 1))
		return -1;
	for (size_t i = 0; i < VR_ARRAY_SIZE(dst->w); i++)
		dst->w[i] = __atomic_load_n(&sl->u.w[i], __ATOMIC_RELAXED);
	/* the words are read before seq is looked at again */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return __atomic_load_n(&sl->seq, __ATOMIC_RELAXED) == s1 ? 0 : -1;
}

void vr_log_event(enum vr_log_event_kind kind, const char *account, const char *qid,
		  unsigned code, const char *text)
{
	union event_words u = { 0 };
	struct timeval tv;

	if (!event_mine) {
		if (event_none)
			return;
		unsigned i = __atomic_fetch_add(&event_rings_used, 1, __ATOMIC_RELAXED);
		if (i >= VR_LOG_EVENT_THREADS) {
			event_none = 1;
			return;
		}
		event_mine = &event_rings[i];
	}
	struct event_ring *r = event_mine;
	gettimeofday(&tv, NULL);
	/* strictly increasing within a ring, so newest first is exact there */
	u.ev.at_us = VR_MAX((uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec,
			    r->last_us + 1);
	r->last_us = u.ev.at_us;
	u.ev.code = (uint16_t)VR_MIN(code, 999u);
	u.ev.kind = (uint8_t)kind;
	snprintf(u.ev.account, sizeof(u.ev.account), "%s", account ? account : "");
	snprintf(u.ev.qid, sizeof(u.ev.qid), "%s", qid ? qid : "");
	snprintf(u.ev.text, sizeof(u.ev.text), "%s", text ? text : "");
	event_copy_in(&r->slot[r->next++ % VR_LOG_EVENTS], &u);
}

unsigned vr_log_events_of(const char *account, enum vr_log_event_kind kind,
			  struct vr_log_event *out, unsigned max)
{
	unsigned rings = VR_MIN(__atomic_load_n(&event_rings_used, __ATOMIC_ACQUIRE),
				(unsigned)VR_LOG_EVENT_THREADS);
	unsigned n = 0;

	for (unsigned r = 0; r < rings; r++) {
		for (unsigned i = 0; i < VR_LOG_EVENTS; i++) {
			union event_words u;

			if (event_copy_out(&event_rings[r].slot[i], &u) < 0 ||
			    u.ev.kind != kind || strcmp(u.ev.account, account) != 0)
				continue;
			/* keep the newest max, newest first: insertion into out */
			unsigned j = n < max ? n++ : max;
			while (j > 0 && out[j - 1].at_us < u.ev.at_us) {
				if (j < max)
					out[j] = out[j - 1];
				j--;
			}
			if (j < max)
				out[j] = u.ev;
		}
	}
	return n;
}
