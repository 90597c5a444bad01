/*
 * delivery.h - the delivery workers: committed mail leaves the relay.
 *
 * [delivery] workers threads, each with an epoll loop of its own (kernel
 * sockets): the resolver's fd, the outbound SMTP connections (smtpc.h), an
 * eventfd for new mail and a timer heap of retries. A message belongs to one
 * thread for its whole life (chosen by its queue ID), so its state needs no
 * lock; its recipients are grouped by destination (the smarthost, or the
 * recipient domain and its MX set), and each destination serves the VPSes
 * that have mail for it in turn, so one VPS cannot starve the rest. The
 * limits on connections per destination and messages per connection
 * (worker.c) hold per thread.
 *
 * Mail arrives two ways: at start, what the spool holds and its state logs
 * say is not finished (vr_spool_queue_scan); while running, every message a
 * committer makes durable (vr_spool_on_commit), pushed wait-free to its
 * thread. Every outcome is a spool state record (spool.h), handed at the
 * end of the loop iteration that learned it to the state log's syncer,
 * which makes it durable in a group commit about one fdatasync later
 * while the thread goes on delivering; a restart resumes where it
 * stopped: a recipient goes twice only if the crash fell between the next
 * hop's acceptance and that fdatasync (a window of a few ms of recently
 * delivered mail, as Postfix repeats mail it sent but had not yet removed
 * from its queue). Nothing is lost: a DSN is in the spool before the
 * bounce that caused it is recorded, and operator commands are durable
 * before vr_delivery_command() returns.
 *
 * Retries: 4xx replies and failed connections defer with exponential
 * backoff from retry_first_s, doubling to retry_max_s; 5xx bounces; a
 * message older than max_age_s expires. Bounces and expiries send one RFC
 * 3464 DSN per message and event to the envelope sender (never to <>),
 * itself a message in the spool, from <>, delivered the same way.
 *
 * Threads: vr_delivery_new/start/stop/free from the main thread; the commit
 * hook from the committers; vr_delivery_stats from any thread;
 * vr_delivery_command from one that may block (the control thread).
 */
#ifndef VR_DELIVERY_H
#define VR_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include "vmrelay/config.h"
#include "vmrelay/spool.h"
#include "vmrelay/tls.h"

struct vr_delivery;

struct vr_delivery_conf {
	const struct vr_config *cfg;  /* hostname, spool_dir, [delivery]; outlives us */
	struct vr_spool *spool;       /* opened, not started yet (the hook is set here) */
	/* The delivery threads submit their DSNs as spool workers
	 * spool_worker .. spool_worker + [delivery] workers - 1: the spool
	 * must have been opened with that many more workers than the SMTP
	 * side uses. */
	unsigned spool_worker;
	struct vr_tls_ctx *tls;       /* client context for STARTTLS; NULL: never */
};

/*
 * Reads the queue (every unfinished message in the spool, with its state)
 * and sets the spool's commit hook. Starts no thread. NULL + err on failure.
 */
struct vr_delivery *vr_delivery_new(const struct vr_delivery_conf *conf, char *err,
				    size_t errlen);
/* Starts the threads, all or none. 0 or -errno. */
int vr_delivery_start(struct vr_delivery *d);
/*
 * Stops taking new work, lets attempts in flight finish (at most
 * drain_ms, then drops them: they are tried again after a restart), makes
 * every state record durable, joins the threads. Mail committed after this
 * waits in memory until vr_delivery_free() and in the spool for the next
 * start.
 */
void vr_delivery_stop(struct vr_delivery *d, unsigned drain_ms);
/* After vr_delivery_stop() and after the spool stopped committing. */
void vr_delivery_free(struct vr_delivery *d);

struct vr_delivery_stats {
	uint64_t queued;              /* messages held in memory, waiting or in flight */
	uint64_t sent;                /* recipients delivered */
	uint64_t deferred;            /* recipient attempts deferred */
	uint64_t bounced;             /* recipients bounced or expired */
	uint64_t dsns;                /* DSNs committed to the spool */
	uint64_t in_flight;           /* messages being handed over now */
	uint64_t connections;         /* outbound connections open now */
};
/* Sums the threads' counters (each read alone: two may be a moment apart). */
void vr_delivery_stats(const struct vr_delivery *d, struct vr_delivery_stats *st);

/* Operator commands (vmrelayctl queue ...). */
enum vr_delivery_op {
	VR_DELIVERY_HOLD,             /* deliver qid no more until released */
	VR_DELIVERY_RELEASE,          /* deliver a held qid again, at once */
	VR_DELIVERY_DELETE,           /* drop qid for good, no DSN */
	VR_DELIVERY_FLUSH,            /* try every deferred message now (qid unused) */
};
/*
 * Runs op in the delivery thread that owns qid (every thread for FLUSH) and
 * waits at most timeout_ms for it; 0 means done and recorded durably in
 * the spool. -ENOENT: no message qid waits for delivery (unknown, finished
 * or deleted); -EALREADY: held already (HOLD) or not held (RELEASE);
 * -ETIMEDOUT (it still happens, later); -ESHUTDOWN: the threads are not
 * running; -ENOMEM. Blocks: from a thread that may (the control thread,
 * RCU-offline meanwhile), never from a delivery thread.
 *
 * XXX A message held while an attempt is in flight finishes that attempt;
 * released again before it ends, its in-flight recipients may go twice.
 */
int vr_delivery_command(struct vr_delivery *d, enum vr_delivery_op op, const char *qid,
			unsigned timeout_ms);

/* One VPS's mail waiting for delivery: messages not deleted with a
 * recipient pending, as vr_delivery_walk sees them. */
struct vr_delivery_depth {
	uint64_t messages;
	uint64_t recipients;          /* pending */
	uint64_t held;                /* messages */
};
/*
 * vps's depth (NULL: every VPS's) from counters the threads keep as their
 * queues change, read without asking them (each thread's a moment apart).
 * 0, or -ENOSPC: more VPSes than the counters hold (count with
 * vr_delivery_walk; the totals are always there). Any thread, while d is
 * alive.
 */
int vr_delivery_depth(const struct vr_delivery *d, const char *vps,
		      struct vr_delivery_depth *out);

/*
 * The queue as the delivery threads hold it, for the operator's views
 * (queue list, vps show) without reading the spool: calls fn for every
 * message waiting for delivery (not deleted, a recipient pending), in the
 * thread that owns it, one thread after another, in no set order. m has
 * no client or helo. Both are valid during fn only. The thread delivers nothing meanwhile: fn filters,
 * counts or copies, and is short. fn returning non-zero ends the walk and
 * is returned. Mail committed a moment ago may be in no thread's queue yet.
 * 0, -ETIMEDOUT (fn is not called any more once this returns), -ESHUTDOWN,
 * -ENOMEM. Blocks like vr_delivery_command.
 */
typedef int vr_delivery_walk_fn(const struct vr_spool_msg *m, const struct vr_spool_qstate *st,
				void *arg);
int vr_delivery_walk(struct vr_delivery *d, vr_delivery_walk_fn *fn, void *arg,
		     unsigned timeout_ms);

/* Seconds to wait after the attempts-th failed attempt (1, 2, ...): first_s,
 * doubling, at most max_s. */
uint64_t vr_delivery_backoff_s(unsigned attempts, unsigned first_s, unsigned max_s);

#endif
