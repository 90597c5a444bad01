/*
 * spool.h - the durable queue: per-worker append-only segment files of typed,
 * length-prefixed, CRC32C-checked records, each written by its worker's own
 * committer thread, which group-commits (many sessions' records, one write +
 * one fdatasync) before any session may say 250.
 *
 * Threads: each worker thread owns the transactions it begins and its own
 * submission and completion queues (liburcu wfcqueue: wait-free enqueue, no
 * lock in the worker); each worker's committer thread owns that worker's
 * segment file, so committers never wait for each other. A transaction
 * belongs to its worker until vr_spool_txn_commit(), to the committer until
 * its completion is reaped, and is freed by vr_spool_reap().
 *
 * Records of one message: ENVELOPE (queue ID, account, client, HELO, sender,
 * recipients, flags, time), BODY chunks, END. A message without its END
 * record, or with any record failing its CRC, does not exist after recovery.
 */
#ifndef VR_SPOOL_H
#define VR_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define VR_QID_MAX 24           /* queue ID text incl. NUL */

/* Envelope flags */
#define VR_SPOOL_8BITMIME  0x01u
#define VR_SPOOL_SMTPUTF8  0x02u
#define VR_SPOOL_TLS       0x04u
#define VR_SPOOL_AUTH      0x08u
#define VR_SPOOL_HOLD      0x10u  /* accepted over quota with over_quota=hold */

struct vr_spool;
struct vr_spool_txn;

/* What a session knows when DATA/BDAT starts. Strings are copied. */
struct vr_spool_envelope {
	const char *account;          /* VPS id */
	const char *client;           /* client address, text */
	const char *helo;
	const char *mail_from;        /* without <>, "" for the null sender */
	const char *const *rcpts;
	unsigned n_rcpts;
	uint32_t flags;
	uint64_t received_us;         /* wall clock */
};

struct vr_spool_recovery {
	uint64_t messages;            /* intact messages found */
	uint64_t torn;                /* incomplete or corrupt messages dropped */
	uint64_t segments;
	uint64_t bad_segments;        /* segment files left alone, unreadable */
};

/*
 * Opens (creating if needed) dir, locks it (one relay per spool: DIR/lock),
 * recovers what is there, and prepares one fresh segment per worker (1 to
 * 1024 workers). NULL + err (and errno) on failure. Starts no thread.
 */
struct vr_spool *vr_spool_open(const char *dir, unsigned n_workers, char *err, size_t errlen);
const struct vr_spool_recovery *vr_spool_recovered(const struct vr_spool *sp);
/* Starts the committer threads, one per worker, all or none. 0 or -errno. */
int vr_spool_start(struct vr_spool *sp);
/* Commits what was submitted (in the caller's thread if the committers never
 * started), stops the committers, closes files, frees. Completions not yet
 * reaped are freed without calling back. */
void vr_spool_close(struct vr_spool *sp);

/* What the committers have done, summed; any thread, any time (counters
 * read one by one, so two of them may be a batch apart). */
struct vr_spool_stats {
	uint64_t batches;             /* rounds that found transactions, all
				       * committers together */
	uint64_t fsyncs;              /* fdatasync calls on segments */
	uint64_t committed;           /* transactions made durable */
	uint64_t failed;              /* transactions given an error status */
	uint64_t bytes;               /* record bytes made durable */
	uint64_t segments;            /* segment files created */
	uint64_t abandoned;           /* segments given up after an I/O error */
};
void vr_spool_stats(const struct vr_spool *sp, struct vr_spool_stats *st);

/* --- worker side: every call below is from the worker thread `worker` --- */

/* Starts a message; the queue ID is assigned here (so it can go into the
 * Received header): 13 characters of [0-9A-Z], in time order, unique across
 * workers and restarts. cookie comes back with the completion. NULL and errno:
 * ENOMEM, or EINVAL (worker out of range, or an envelope no record can hold:
 * a string over 65535 bytes, over 1 MiB in all). */
struct vr_spool_txn *vr_spool_txn_begin(struct vr_spool *sp, unsigned worker,
					const struct vr_spool_envelope *env, void *cookie);
const char *vr_spool_txn_qid(const struct vr_spool_txn *txn);
/* Appends message bytes (CRLF lines, already dot-unstuffed). 0 or -ENOMEM;
 * after a failure the txn can only be aborted (a commit fails with it). */
int vr_spool_txn_write(struct vr_spool_txn *txn, const void *p, size_t n);
/* Forgets the message; nothing reaches the disk. */
void vr_spool_txn_abort(struct vr_spool_txn *txn);
/* Hands the message to the committer. Its completion arrives via reap. */
void vr_spool_txn_commit(struct vr_spool_txn *txn);
/*
 * The cookie's owner is gone (connection closed while its commit is in
 * flight): the completion will be reaped without calling back. Worker only;
 * the committer never looks at the cookie, so no ordering is needed.
 */
void vr_spool_txn_orphan(struct vr_spool_txn *txn);

/* An eventfd, readable while completions for worker wait to be reaped;
 * vr_spool_reap() reads it, so the transport need not. */
int vr_spool_done_fd(const struct vr_spool *sp, unsigned worker);
/*
 * status 0: durable on disk (fdatasync returned), say 250;
 * -ENOSPC: disk full, say 452 4.3.1; any other -errno: say 451 4.3.0.
 */
typedef void vr_spool_done_fn(void *cookie, int status, const char *qid);
/* True while completions for worker wait to be reaped: two loads, no system
 * call, for a poll loop that would not read the eventfd every round. */
bool vr_spool_done_pending(struct vr_spool *sp, unsigned worker);
/* Calls fn for up to max completed transactions of worker, frees them, and
 * returns how many. */
unsigned vr_spool_reap(struct vr_spool *sp, unsigned worker, vr_spool_done_fn *fn, unsigned max);

/* --- readers: vmrelay-spool, recovery, later the delivery workers --- */

struct vr_spool_msg {
	char qid[VR_QID_MAX];
	char *account, *client, *helo, *mail_from;
	char **rcpts;
	unsigned n_rcpts;
	uint32_t flags;
	uint64_t received_us;
	uint64_t size;                /* body bytes */
	/* where it lives */
	char *segment;                /* file name inside dir */
	uint64_t offset;              /* of its ENVELOPE record */
};

struct vr_spool_scan_stats {
	uint64_t messages;            /* intact messages */
	uint64_t torn;                /* messages dropped: incomplete or damaged */
	uint64_t segments;            /* segment files */
	uint64_t bad_records;         /* damaged places inside segments */
	uint64_t tails;               /* torn messages cut off by the end of their
				       * segment: what a crash mid-write leaves */
	uint64_t bad_segments;        /* files unreadable: damaged header, newer
				       * format version, read error */
};

/*
 * Calls fn for every intact message in dir (each CRC checked), oldest
 * segment first; fn returning non-zero stops the scan and is returned.
 * The msg is valid during fn only. Otherwise 0, or -errno if dir is not a
 * readable spool (-ENOENT: no dir/seg). stats may be NULL.
 */
int vr_spool_scan(const char *dir, int (*fn)(const struct vr_spool_msg *msg, void *arg),
		  void *arg, struct vr_spool_scan_stats *stats);
/* Streams the body of msg to out, checking every CRC. 0, or -EBADMSG/-errno,
 * or out's non-zero return, which stops it. On an error out may have seen
 * part of the body. */
int vr_spool_read_body(const char *dir, const struct vr_spool_msg *msg,
		       int (*out)(const void *p, size_t n, void *arg), void *arg);

/*
 * The same body pulled a piece at a time, for a reader that takes it as it
 * can (the delivery threads' SMTP client, as its output drains): memory is
 * one read buffer, whatever the message's size. Single-threaded.
 */
struct vr_spool_body;
/* NULL + errno (EBADMSG: msg is not at its place; ENOMEM; a read error). */
struct vr_spool_body *vr_spool_body_open(const char *dir, const struct vr_spool_msg *msg);
/* Up to cap next bytes into buf: how many, 0 at the end (once END checked
 * out), or -EBADMSG / -errno. */
ssize_t vr_spool_body_read(struct vr_spool_body *b, void *buf, size_t cap);
/* Back to the body's first byte, for a second pass (the delivery threads
 * sign a message, then send it, from one open file). */
void vr_spool_body_rewind(struct vr_spool_body *b);
void vr_spool_body_close(struct vr_spool_body *b);

/*
 * A thread's open segments, so that reading a message does not open its
 * segment, stat it and check its header every time (the delivery threads
 * read one message after another from the same few). Single-threaded.
 * Entries idle for a minute are closed by vr_spool_segcache_trim(), so a
 * removed segment's space comes back. NULL + errno.
 */
struct vr_spool_segcache;
struct vr_spool_segcache *vr_spool_segcache_new(const char *dir);
void vr_spool_segcache_free(struct vr_spool_segcache *sc);
void vr_spool_segcache_trim(struct vr_spool_segcache *sc, uint64_t now_ms);
/* As vr_spool_body_open(), through sc. */
struct vr_spool_body *vr_spool_body_open_in(struct vr_spool_segcache *sc,
					    const struct vr_spool_msg *msg);

/* --- committed mail, as it is committed --- */

/*
 * fn is called by a committer thread, after the fdatasync, for every message
 * it made durable (msg valid during the call only; segment and offset say
 * where it lives). It must not block: the next batch waits for it. Set it
 * before vr_spool_start(); it stays set until vr_spool_close().
 */
typedef void vr_spool_commit_fn(const struct vr_spool_msg *msg, void *arg);
void vr_spool_on_commit(struct vr_spool *sp, vr_spool_commit_fn *fn, void *arg);

/* --- queue state: what became of committed messages --- */

/* Record types (record.c): per recipient, then per message, then the
 * annotation that keeps a message's DKIM signature. */
enum vr_spool_state {
	VR_STATE_DELIVERED = 0x20,    /* the next hop took the recipient */
	VR_STATE_DEFERRED  = 0x21,    /* temporary failure; next_us is the next try */
	VR_STATE_BOUNCED   = 0x22,    /* permanent failure (a DSN went, unless from <>) */
	VR_STATE_EXPIRED   = 0x23,    /* given up at max age (a DSN went, unless from <>) */
	VR_STATE_HELD      = 0x30,    /* the message waits for the operator */
	VR_STATE_RELEASED  = 0x31,    /* the operator let it go */
	VR_STATE_DELETED   = 0x32,    /* the operator deleted it: final */
	VR_SPOOL_DKIM      = 0x40,    /* text: the DKIM-Signature fields, CRLF lines */
};
#define VR_SPOOL_ALL 0xffffffffu  /* rcpt of a message-wide record */

struct vr_spool_event {
	uint8_t type;                 /* enum vr_spool_state */
	char qid[VR_QID_MAX];
	uint32_t rcpt;                /* recipient index, or VR_SPOOL_ALL */
	uint32_t attempts;            /* delivery attempts so far */
	uint64_t at_us;               /* when, wall clock */
	uint64_t next_us;             /* DEFERRED: the next attempt, wall clock */
	const char *text;             /* the remote reply or the signature; may be "" */
	size_t text_len;              /* at most 65535 */
};

/*
 * A state log: the delivery thread `id`'s own append-only file of events,
 * DIR/state/d<id>-<seq>.log (a segment header and records, as record.c
 * says), one per run and thread. One owner thread appends events to a
 * buffer; vr_spool_log_flush() writes them to the file (not synced:
 * readers see them at once) and leaves the fdatasync to the log's own
 * syncer thread, which syncs whatever was written since its last sync,
 * at most once per 10 ms, so the owner never waits on the disk and a
 * flush per loop round costs no wake of the syncer;
 * vr_spool_log_sync() waits until everything appended is durable.
 *
 * The promise: an event is durable once a sync returned 0, or about 10 ms
 * plus one fdatasync after a flush; a crash loses at most the events of
 * that window. For a delivery thread that means a recipient accepted by
 * the next hop in the last few ms before a crash may be delivered again
 * after the restart (as Postfix repeats mail it sent but had not yet
 * removed from its queue); nothing is lost, since only a durable
 * DELIVERED, BOUNCED, EXPIRED or DELETED ends a recipient. All the calls
 * are the owner's.
 */
struct vr_spool_log;
/* NULL + err (and errno) on failure. The file is created at the first
 * flush or sync. */
struct vr_spool_log *vr_spool_log_open(const char *dir, unsigned id, char *err, size_t errlen);
/* Buffers ev. 0, -EINVAL (not a state record: type, qid or text too long)
 * or -ENOMEM. */
int vr_spool_log_append(struct vr_spool_log *log, const struct vr_spool_event *ev);
/* Events buffered and not yet durable. */
size_t vr_spool_log_pending(const struct vr_spool_log *log);
/*
 * Writes what was appended and fdatasyncs it: 0 (nothing buffered is 0 at
 * once) or -errno. On failure the events stay buffered and the file is
 * given up: the next sync writes them to a new file, so nothing
 * acknowledged is lost and nothing is half-trusted.
 */
int vr_spool_log_sync(struct vr_spool_log *log);
/*
 * Writes what was appended to the file and returns: the log's syncer
 * thread (started at the first call) makes it durable within about 10 ms.
 * The owner's on_seal hears of sealed files here. 0, or the -errno of a
 * write or background sync that failed since the last call (its events
 * stay buffered and go to a new file, at this call or a later one, as
 * with vr_spool_log_sync).
 */
int vr_spool_log_flush(struct vr_spool_log *log);
/* Stops the syncer, syncs what is buffered (errors logged), closes, frees. */
void vr_spool_log_close(struct vr_spool_log *log);
/*
 * A log moves to a new file after 64 MiB or an hour (and after an error);
 * fn then hears the old file's name ("state/d<id>-<seq>.log", inside dir),
 * called from vr_spool_log_sync() or _flush(), in the owner's thread. Nothing is appended to that file again:
 * its owner may remove it once no message it speaks of is in the spool.
 */
void vr_spool_log_on_seal(struct vr_spool_log *log, void (*fn)(const char *name, void *arg),
			  void *arg);

/* A message's state, every event about it applied in order. */
struct vr_spool_qstate {
	uint8_t *rcpt;                /* [n_rcpts]: 0 pending, else the final state */
	unsigned pending;             /* recipients still to deliver */
	uint32_t attempts;
	uint64_t next_us;             /* the next attempt; 0: at once */
	bool held;                    /* envelope HOLD or HELD, and no RELEASED since */
	bool deleted;
	const char *dkim;             /* the stored signature, NULL if not signed yet */
	size_t dkim_len;
};

/*
 * Reads every state log of dir and calls fn for every intact message with
 * its state (both valid during fn only), oldest first; fn returning
 * non-zero stops and is returned. 0, or -errno (-ENOENT: no spool).
 * Damaged events are skipped: at worst a recipient is tried again.
 */
int vr_spool_queue_scan(const char *dir,
			int (*fn)(const struct vr_spool_msg *msg,
				  const struct vr_spool_qstate *st, void *arg),
			void *arg);

struct vr_spool_compact_stats {
	uint64_t segments_removed;    /* message segments whose mail was all done */
	uint64_t messages_removed;
	uint64_t logs_replaced;       /* state logs folded into one */
	uint64_t events;              /* events the folded log holds */
};

/*
 * Start-of-run housekeeping, before anything appends (no committer or
 * delivery thread running): removes the message segments whose every
 * message is final (each recipient delivered, bounced or expired, or the
 * message deleted) and whose newest message arrived before before_us (the
 * quota replay reads the last day of mail: pass now - 25 h), then folds
 * every state log into one holding only what the remaining messages need.
 * Crash-safe at every step: segments go first, the folded log is durable
 * before the old logs go. 0 or -errno (files left as they were).
 */
int vr_spool_compact(const char *dir, uint64_t before_us, struct vr_spool_compact_stats *st);

#endif
