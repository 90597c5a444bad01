/*
 * delivery_impl.h - the delivery workers' shared structures, private to
 * engine/delivery (the scheduler's files: queue.c, dsn.c, worker.c,
 * delivery.c): messages, their jobs (the recipients of one message for one
 * destination), destinations, and the per-thread queue that orders them.
 *
 * Everything here belongs to one delivery thread, except a message on its
 * way in (the inbox: a committer enqueues, the thread dequeues).
 */
#ifndef VR_DELIVERY_IMPL_H
#define VR_DELIVERY_IMPL_H

#include <stdbool.h>
#include <stdint.h>
#include <urcu/wfcqueue.h>

#include "vmrelay/buf.h"
#include "vmrelay/delivery.h"
#include "vmrelay/spool.h"
#include "../io/timer.h"

/* A message the thread owns: its envelope, where its body lives, and the
 * state of each recipient. One allocation (dkim apart). */
struct dq_msg {
	struct cds_wfcq_node node;    /* the inbox */
	struct dq_msg *prev, *next;   /* the queue's list of every message */
	char qid[VR_QID_MAX];
	char *account, *mail_from, *segment;
	char **rcpts;
	uint8_t *rcpt_state;          /* [n_rcpts]: 0 pending, else enum vr_spool_state */
	unsigned n_rcpts, pending;    /* recipients, and those not final */
	unsigned jobs;                /* jobs alive */
	uint32_t flags, attempts;
	uint32_t gen;                 /* bumped by hold and delete: older jobs are void */
	uint64_t received_us, size, offset;
	uint64_t next_us;             /* the next attempt (wall); 0 = now */
	bool held;
	bool deleted;                 /* by the operator: freed once no job refers to it */
	char *dkim;                   /* the stored signature; NULL: not decided yet */
	size_t dkim_len;
};

struct dq_dest;

/* The pending recipients of one message for one destination. */
struct dq_job {
	struct dq_job *next;          /* its account's FIFO */
	struct dq_msg *msg;
	struct dq_dest *dest;
	struct vr_timer timer;        /* armed while it waits for its time (wall ms) */
	uint32_t gen;                 /* msg->gen when made; another: dropped when taken */
	unsigned n;
	unsigned rcpt[];              /* indexes into msg->rcpts */
};

/* A VPS with mail for a destination. */
struct dq_acct {
	struct dq_acct *next;         /* the destination's accounts */
	struct dq_acct *rr_next;      /* the ring of accounts with ready jobs */
	bool in_ring;
	struct dq_job *head, *tail;   /* ready jobs, oldest first */
	char id[];
};

/* Where recipients go: the smarthost, or one recipient domain. The worker's
 * fields (connections, MX answer) live here too: one lookup finds both. */
struct dq_dest {
	struct dq_dest *hnext;        /* hash chain */
	struct dq_dest *knext;        /* the queue's kick list */
	bool kicked;
	struct dq_acct *accts;
	struct dq_acct *rr_head, *rr_tail;
	unsigned ready, waiting, flying;  /* jobs in each state */
	/* worker.c */
	unsigned conns;               /* connections open or opening */
	unsigned idle;                /* of those, without a message */
	bool resolving;
	void *mx;                     /* struct vr_mx_result, NULL if none */
	void *dane;                   /* TLSA answers per MX host (worker.c) */
	uint32_t mx_gen;              /* counts MX answers: a TLSA answer for an older one is void */
	uint64_t mx_expires_ms;       /* monotonic */
	unsigned next_host, next_addr;    /* where the next connection tries */
	char last_fail[400];          /* why the last connection failed, for the deferral */
	char name[];                  /* lower case */
};

#define DQ_HASH 1024u

/* One VPS's mail in a thread's queue (depth.c): one writer, any reader. */
struct dq_depth {
	uint64_t messages, recipients, held;
	char id[];
};

#define DQ_DEPTH_SLOTS 4096u            /* a power of two */

struct dq_depths {
	struct dq_depth *slot[DQ_DEPTH_SLOTS];  /* written once, never emptied */
	unsigned used;
	bool incomplete;              /* a VPS found no room: readers count otherwise */
	uint64_t messages, recipients, held;    /* every VPS's, complete */
};

struct dq {
	struct dq_dest *hash[DQ_HASH];
	struct dq_dest *kick;         /* destinations that got ready jobs */
	struct vr_timer_heap timers;  /* waiting jobs by next attempt (wall ms) */
	struct dq_msg *msgs;          /* every message */
	const char *smarthost;        /* non-NULL: the one destination's name */
	unsigned n_msgs;
	/* Called when a message is done (every recipient final, or deleted)
	 * and leaves the queue; not at vr_dq_free. Optional. */
	void (*on_done)(const struct dq_msg *m, void *arg);
	void *on_done_arg;
	struct dq_depths depths;      /* per VPS, for vps show (depth.c) */
};

void vr_dq_init(struct dq *q, const char *smarthost);
/* Frees every message, and every job and destination not in flight; the
 * worker frees the jobs it holds and each destination's mx first. */
void vr_dq_free(struct dq *q);

/* A message from the spool's view of it (st NULL: just committed, nothing
 * happened yet). NULL on ENOMEM. */
struct dq_msg *vr_dq_msg_new(const struct vr_spool_msg *m, const struct vr_spool_qstate *st);
/* Takes m in and makes jobs of its pending recipients, ready at once or
 * when m->next_us comes (held: none until released). 0 or -ENOMEM. */
int vr_dq_msg_add(struct dq *q, struct dq_msg *m, uint64_t now_us);
/* Makes jobs of m's pending recipients (a release). 0 or -ENOMEM. */
int vr_dq_msg_jobs(struct dq *q, struct dq_msg *m, uint64_t now_us);
/* The message qid, NULL if none (or deleted). Linear: for operators. */
struct dq_msg *vr_dq_msg_find(struct dq *q, const char *qid);
/* Drops m once nothing refers to it (no job alive) and nothing is left to
 * do (every recipient final, or deleted). */
void vr_dq_msg_release(struct dq *q, struct dq_msg *m);

/* The destination of a recipient address: the smarthost, or its domain. */
struct dq_dest *vr_dq_dest_get(struct dq *q, const char *rcpt);
/* The next job of d, taking the VPSes in turn; NULL if none is ready. The
 * job is in flight until vr_dq_job_wait() or vr_dq_job_free(). Jobs voided by a
 * hold or delete are dropped on the way (and their message with them if
 * nothing else refers to it). */
struct dq_job *vr_dq_job_take(struct dq *q, struct dq_dest *d);
/* Back to waiting until at_us (wall); 0 or -ENOMEM (then it is ready). */
int vr_dq_job_wait(struct dq *q, struct dq_job *j, uint64_t at_us);
/* The job is over (every recipient final, or handed to another job). */
void vr_dq_job_free(struct dq *q, struct dq_job *j);
/* Makes jobs due by now_us ready; how many. */
unsigned vr_dq_due(struct dq *q, uint64_t now_us);
/* Wall ms of the earliest waiting job, UINT64_MAX if none. */
uint64_t vr_dq_next_due_ms(const struct dq *q);
/* Marks d as having something to do (ready jobs, a new MX answer). */
void vr_dq_kick(struct dq *q, struct dq_dest *d);
/* Pops a destination kicked since the last call, or NULL. */
struct dq_dest *vr_dq_kicked(struct dq *q);

/* --- queue depth per VPS (depth.c) --- */

/* Adds sign (+1/-1) times m's weight to its VPS's counters, if m counts
 * (not deleted, a recipient pending): -1 before m changes, +1 after. */
void vr_dq_depth_count(struct dq *q, const struct dq_msg *m, int sign);
/* Any thread: adds id's counters (id NULL: every VPS's) to out. 0, or
 * -ENOSPC: incomplete. */
int vr_dq_depth_read(const struct dq_depths *t, const char *id, struct vr_delivery_depth *out);
void vr_dq_depths_free(struct dq_depths *t);

/* --- spool segments still holding mail to deliver (segs.c) --- */

struct dsegs;
struct dsegs *vr_dsegs_new(void);
void vr_dsegs_free(struct dsegs *s);
/* A message of segment name (todo: not done yet) that arrived at
 * received_us; sealed says no more mail will be appended to name (a
 * previous run's). A newer segment of the same worker seals older ones.
 * 0, or -ENOMEM: then no segment is ever removed. */
int vr_dsegs_add(struct dsegs *s, const char *name, uint64_t received_us, bool todo,
		 bool sealed);
/* One message of name is done. */
void vr_dsegs_done(struct dsegs *s, const char *name);
/* The highest segment number added so far. */
unsigned long long vr_dsegs_max_seq(struct dsegs *s);
/* True when no segment numbered seq or lower holds mail any more (and
 * nothing went uncounted): a state log sealed when seq was the highest
 * speaks of none of the mail left. */
bool vr_dsegs_gone_upto(struct dsegs *s, unsigned long long seq);
/* Forgets each segment that is sealed, done, and whose newest mail
 * arrived before before_us, and calls fn with its name; how many. */
unsigned vr_dsegs_sweep(struct dsegs *s, uint64_t before_us,
			void (*fn)(const char *name, void *arg), void *arg);

/* --- DSN (dsn.c) --- */

struct dsn_rcpt {
	const char *addr;
	const char *status;           /* "5.1.1" */
	const char *diag;             /* the remote reply, "" if none */
	const char *mta;              /* remote MTA name, "" if none */
};

/*
 * Appends an RFC 3464 delivery status notification for the message qid
 * (from mail_from, arrived at arrival_us) about rcpts to out: header,
 * a text part for people, the message/delivery-status part, and the
 * original header block (orig_hdr, n bytes; may be 0). expired says why.
 * 0, or -ENOBUFS/-ENOMEM from out.
 */
int vr_dsn_build(struct vr_buf *out, const char *hostname, const char *qid, const char *mail_from,
		 uint64_t arrival_us, uint64_t now_us, bool expired, const struct dsn_rcpt *rcpts,
		 unsigned n, const uint8_t *orig_hdr, size_t orig_len);
/* The header block of a message body (up to and including the blank line,
 * or all of it): its length. */
size_t vr_dsn_header_len(const uint8_t *body, size_t n);

#endif
