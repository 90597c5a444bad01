/*
 * log.c - key=value log lines, one write(2) each, and each thread's ring of
 * recent events for the control socket (see vmrelay/log.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "vmrelay/log.h"

static const char *const level_names[] = { "err", "warn", "info", "debug" };

/* Written at start and reload by the main thread; read by all (relaxed:
 * a line logged at the old level during a change is harmless). */
static int log_fd = STDERR_FILENO;
static int log_level = VR_LOG_INFO;

int vr_log_open(const char *path, enum vr_log_level level)
{
	int fd = STDERR_FILENO;

	if (path && *path && strcmp(path, "stderr") != 0) {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd < 0)
			return -errno;
	}
	int old = __atomic_exchange_n(&log_fd, fd, __ATOMIC_RELAXED);
	if (old != STDERR_FILENO && old != fd)
		close(old);
	__atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
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
	/* dup2 swaps the file behind the descriptor in one step: a line
	 * written meanwhile goes whole to the old file or the new one, never
	 * to a closed descriptor or one reused for something else. */
	int rc = dup2(fd, cur) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

void vr_log_close(void)
{
	vr_log_open(NULL, (enum vr_log_level)__atomic_load_n(&log_level, __ATOMIC_RELAXED));
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
	char line[2048];
	struct timeval tv;
	struct tm tm;

	if (!vr_log_enabled(level))
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ",
			      (long)tv.tv_usec / 1000, level_names[level]);

	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += VR_MIN((size_t)m, sizeof(line) - n - 2);
	line[n++] = '\n';
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
