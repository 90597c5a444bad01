/*
 * worker.h - the delivery threads and what they share, private to
 * engine/delivery (delivery.c starts and stops them, worker.c runs them).
 */
#ifndef VR_DELIVERY_WORKER_H
#define VR_DELIVERY_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "vmrelay/clock.h"
#include "vmrelay/common.h"

#include "vmrelay/config.h"
#include "vmrelay/delivery.h"
#include "vmrelay/resolve.h"
#include "vmrelay/smtpc.h"
#include "delivery_impl.h"

#define VR_CACHE_LINE 64

struct dconn;
struct vr_resolver;

/* One delivery thread. The inbox is the only part another thread touches
 * (committers enqueue, wait-free); stats are written by this thread alone
 * and read by any. Everything else is this thread's. */
struct dworker {
	struct __cds_wfcq_head inbox_head __attribute__((aligned(VR_CACHE_LINE)));
	struct cds_wfcq_tail inbox_tail;
	int inbox_fd;                 /* eventfd: the inbox has mail, or stop */
	/* Operator commands: the control thread enqueues, this thread runs. */
	struct __cds_wfcq_head cmd_head __attribute__((aligned(VR_CACHE_LINE)));
	struct cds_wfcq_tail cmd_tail;

	struct vr_delivery_stats stats __attribute__((aligned(VR_CACHE_LINE)));

	struct vr_delivery *d __attribute__((aligned(VR_CACHE_LINE)));
	unsigned id;
	unsigned spool_worker;        /* our slot for submitting DSNs */
	pthread_t thread;
	int epfd;
	struct dq q;
	struct vr_resolver *res;      /* NULL with a smarthost */
	struct vr_spool_log *log;
	struct vr_spool_segcache *segfiles;   /* open segments the bodies are read from */
	struct dconn *conns;
	bool stopping;
	uint64_t drain_until_ms;
	unsigned dsn_inflight;
	uint64_t next_sweep_ms;       /* when to look for segments and logs to remove */
	struct sealed_log *sealed;    /* our state logs done with, oldest last */
};

/* A state log file of the thread's that nothing is appended to any more,
 * and the highest segment number when it was sealed: it goes once every
 * segment up to that one is gone. */
struct sealed_log {
	struct sealed_log *next;
	unsigned long long max_seq;
	char name[48];
};

/* An operator command on its way to a thread and back. Two owners, the
 * caller and the thread: the last to let go frees it, so a caller that
 * timed out leaves nothing dangling. */
struct dcmd {
	struct cds_wfcq_node node;
	enum vr_delivery_op op;
	char qid[VR_QID_MAX];
	int done_fd;                  /* eventfd the thread writes when done */
	int result;                   /* 0 or -errno, set before done_fd is written */
	int refs;
	/* A walk of the queue (snapshot.c) instead of op: run(w, c) answers
	 * and lets go of c itself. claim: whether the thread or a caller that
	 * gave up was first (snapshot.c). */
	void (*run)(struct dworker *w, struct dcmd *c);
	void *arg;
	int claim;
};

struct vr_delivery {
	const struct vr_config *cfg;
	struct vr_spool *spool;
	struct vr_tls_ctx *tls;
	struct sockaddr_storage smarthost;
	char smarthost_name[sizeof(((struct vr_config *)0)->smarthost)];  /* host, no port */
	unsigned n;
	struct dworker *w;            /* [n] */
	struct dsegs *segs;           /* segments with mail to deliver (segs.c) */
	unsigned started;             /* threads running */
	bool running;
	int stop;                     /* set once by vr_delivery_stop */
	unsigned drain_ms;
};

#define SMTP_PORT 25
/* The quota replay at start counts the last day of mail from the spool:
 * segments whose mail is all done go once they are this much older. */
#define KEEP_US ((24 + 1) * 3600ull * 1000000u)

/* A message being handed over on a connection. */
struct attempt {
	struct attempt *next;         /* the connection's other one, if any */
	struct dq_job *job;
	struct vr_smtpc_msg m;
	struct vr_smtpc_rcpt *rcpts;  /* [job->n] */
	struct vr_spool_body *body;   /* pulled as the client's output drains */
	size_t pos;                   /* bytes of the signature handed out */
	uint64_t start_us;
};

/* An outbound connection of a thread (conn.c), in its list. */
struct dconn {
	struct dconn *prev, *next;
	struct dworker *w;
	struct dq_dest *dest;
	struct vr_smtpc_conn *k;
	uint32_t events;              /* registered with epoll */
	/* The messages on it, newest first: two while the next one is
	 * pipelined behind the end of data of the one before (smtpc.h). */
	struct attempt *att;
	bool carried;                 /* a message went over it */
	bool closed;
	bool parked;                  /* idle, waiting for a job until park_until */
	uint64_t park_until;          /* monotonic ms */
	char mx[sizeof(((struct vr_config *)0)->smarthost)];  /* MX name or smarthost */
	char ip[VR_ADDRSTRLEN];
};

static inline uint64_t wall_us(void)
{
	return vr_clock_wall_us();
}

static inline void stat_add(uint64_t *c, int64_t n)
{
	/* One writer (its thread); vr_delivery_stats reads any time. */
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + (uint64_t)n, __ATOMIC_RELAXED);
}

/* --- outcome.c --- */

/* Appends a state record about m (attempts: m's count so far). */
void vr_dw_record(struct dworker *w, struct dq_msg *m, uint8_t type, uint32_t rcpt,
		  uint64_t next_us, const char *text);
/* Ends j's attempt with replies[i] for its i-th recipient (c may be NULL):
 * delivered, deferred with backoff, bounced or expired with a DSN. */
void vr_dw_job_finish(struct dworker *w, struct dconn *c, struct dq_job *j,
		      const struct vr_smtpc_reply *const *replies);
/* The same reply for every recipient of j. */
void vr_dw_job_fail(struct dworker *w, struct dconn *c, struct dq_job *j,
		    const struct vr_smtpc_reply *r);
/* Fails every ready job of d with r. */
void vr_dw_dest_fail(struct dworker *w, struct dq_dest *d, const struct vr_smtpc_reply *r);
/* A reply of our own: code, enhanced code, text from fmt and one string. */
void vr_dw_reply_make(struct vr_smtpc_reply *r, unsigned code, const char *enh,
		      const char *fmt, const char *arg);
bool vr_dw_expired(const struct dworker *w, const struct dq_msg *m, uint64_t now);
/* Where m lives, as the spool's readers want it. */
void vr_dw_spool_msg_of(const struct dq_msg *m, struct vr_spool_msg *sm);
/* The spool's completion of a DSN (vr_spool_reap's callback). */
void vr_dw_dsn_done(void *cookie, int status, const char *qid);

/* --- conn.c --- */

/* Opens a connection to d's next address, if any is left (else defers d's
 * ready jobs) and no TLSA lookup is to be waited for. */
void vr_dw_conn_open(struct dworker *w, struct dq_dest *d);
/* A parked connection takes its destination's next job (or parks again). */
void vr_dw_conn_unpark(struct dconn *c);
/* A parked connection waited long enough, or the thread stops: QUIT. */
void vr_dw_conn_park_end(struct dconn *c);
/* Unregisters and frees c; an attempt still on it is dropped (stopping). */
void vr_dw_conn_free(struct dworker *w, struct dconn *c);
/* Room for the TLSA answers of an MX answer's hosts (dq_dest.dane), none
 * asked yet; NULL on ENOMEM (then DANE is not tried). */
void *vr_dw_dane_new(unsigned n_hosts);
void vr_dw_dane_free(void *dane);

/* 0, or -errno with err saying why; vr_dw_fini undoes a partial init. */
int vr_dw_init(struct dworker *w, struct vr_delivery *d, unsigned id, char *err, size_t errlen);
void vr_dw_fini(struct dworker *w);
void *vr_dw_main(void *w);
/* Wakes the thread (new mail, a command, or stop). */
void vr_dw_wake(struct dworker *w);
/* Lets go of c; the last owner frees it. */
void vr_dcmd_put(struct dcmd *c);

#endif
