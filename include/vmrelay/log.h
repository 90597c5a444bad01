/*
 * log.h - one-line, key=value log records to stderr or a file.
 *
 * Every line reads "TIMESTAMP LEVEL event=NAME key=value ...", so mail
 * administrators can grep them the way they grep Postfix logs; the queue ID
 * (qid=) ties an SMTP transaction to its later delivery attempts. Values with
 * spaces are quoted by the caller with vr_log_quote().
 *
 * Thread-safe. A thread that must never block (an SMTP worker, a DPDK
 * lcore) calls vr_log_thread_async() as it starts: while the logging
 * thread runs (vr_log_open() to vr_log_close()), its lines are formatted
 * into a stack buffer and appended to its own ring (no lock, no
 * allocation), and the logging thread writes the rings out in batches,
 * within microseconds on a quiet relay. A full ring drops the line,
 * counted, and an "event=log_dropped lines=N" line takes the gap's place:
 * a worker never waits for the log. Every other thread writes each line
 * itself with one write(2), so its lines are in the file when it returns.
 * Lines from one thread keep their order; lines never interleave.
 * vr_log_close() and exit() write out what the rings hold; a crash loses
 * what the logging thread had not yet written.
 */
#ifndef VR_LOG_H
#define VR_LOG_H

#include <stddef.h>
#include <stdint.h>
#include "vmrelay/common.h"

enum vr_log_level { VR_LOG_ERR, VR_LOG_WARN, VR_LOG_INFO, VR_LOG_DEBUG };

/* path NULL or "" or "stderr" logs to stderr, and the logging thread starts
 * (it takes no signal). Returns 0 or -errno. */
int vr_log_open(const char *path, enum vr_log_level level);
/* Opens path again for the lines from now on (after logrotate moved it;
 * SIGHUP and reload call it), from any thread while others log; lines
 * logged before the call go to the old file, so it waits for the logging
 * thread (not from a worker). Nothing to do when logging to stderr. 0, or
 * -errno with the old file kept. */
int vr_log_reopen(const char *path);
/* Writes out every ring, stops the logging thread and logs to stderr again,
 * at once. Call it after the threads that log have stopped. */
void vr_log_close(void);
/* The calling thread must never block: its lines go through a ring of its
 * own (allocated now, reused by a later thread after it exits). */
void vr_log_thread_async(void);
/* "err", "warn", "info", "debug" -> level; -1 if unknown. */
int vr_log_level_parse(const char *name);
int vr_log_enabled(enum vr_log_level level);

void vr_log(enum vr_log_level level, const char *fmt, ...) VR_PRINTF(2, 3);

#define vr_log_err(...)   vr_log(VR_LOG_ERR, __VA_ARGS__)
#define vr_log_warn(...)  vr_log(VR_LOG_WARN, __VA_ARGS__)
#define vr_log_info(...)  vr_log(VR_LOG_INFO, __VA_ARGS__)
#define vr_log_debug(...) \
	do { if (vr_log_enabled(VR_LOG_DEBUG)) vr_log(VR_LOG_DEBUG, __VA_ARGS__); } while (0)

/*
 * Copies s (at most len bytes) into out as a log value: printable ASCII is
 * kept, quotes and backslashes are escaped, anything else becomes \xNN, the
 * whole in double quotes. Returns out (always NUL-terminated).
 */
char *vr_log_quote(char *out, size_t outlen, const char *s, size_t len);

/*
 * Recent events, for the control socket's `vps show`: each thread that
 * records keeps its last VR_LOG_EVENTS notable events (an SMTP refusal, a
 * remote server's deferral or bounce) in a fixed ring of its own, claimed
 * on its first record (up to VR_LOG_EVENT_THREADS threads; later ones
 * record nothing). Recording takes no lock and allocates nothing: one
 * writer per ring, and each slot carries a sequence number (a seqlock)
 * that a reader checks around its copy, so a slot being rewritten is
 * skipped, never read torn. Any thread may read, at any time.
 */
#define VR_LOG_EVENTS 128
#define VR_LOG_EVENT_THREADS 64
#define VR_LOG_EVENT_TEXT 176

enum vr_log_event_kind {
	VR_LOG_EVENT_REFUSAL = 1,     /* the relay refused the VPS (SMTP reply) */
	VR_LOG_EVENT_REMOTE = 2,      /* a remote server deferred or bounced its mail */
};

struct vr_log_event {
	uint64_t at_us;               /* wall clock, microseconds */
	uint16_t code;                /* the reply code; 0: none (no connection) */
	uint8_t kind;                 /* enum vr_log_event_kind */
	char account[64];             /* VR_ACCOUNT_ID_MAX (policy.h) */
	char qid[24];                 /* VR_QID_MAX (spool.h); "" for a refusal */
	char text[VR_LOG_EVENT_TEXT]; /* the reply, truncated */
};

/* Records one event in the calling thread's ring (strings truncated). */
void vr_log_event(enum vr_log_event_kind kind, const char *account, const char *qid,
		  unsigned code, const char *text);
/* Copies account's recorded events of the given kind, newest first, into
 * out (at most max). Returns how many. */
unsigned vr_log_events_of(const char *account, enum vr_log_event_kind kind,
			  struct vr_log_event *out, unsigned max);

#endif
