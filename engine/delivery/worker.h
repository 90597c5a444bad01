/*
 * worker.h - the delivery threads and what they share, private to
 * engine/delivery (delivery.c starts and stops them, worker.c runs them).
 */
#ifndef VR_DELIVERY_WORKER_H
#define VR_DELIVERY_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>

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
	struct dconn *conns;
	bool stopping;
	uint64_t drain_until_ms;
	unsigned dsn_inflight;
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
};

struct vr_delivery {
	const struct vr_config *cfg;
	struct vr_spool *spool;
	struct vr_tls_ctx *tls;
	struct sockaddr_storage smarthost;
	char smarthost_name[sizeof(((struct vr_config *)0)->smarthost)];  /* host, no port */
	unsigned n;
	struct dworker *w;            /* [n] */
	unsigned started;             /* threads running */
	bool running;
	int stop;                     /* set once by vr_delivery_stop */
	unsigned drain_ms;
};

/* 0, or -errno with err saying why; dw_fini undoes a partial init. */
int dw_init(struct dworker *w, struct vr_delivery *d, unsigned id, char *err, size_t errlen);
void dw_fini(struct dworker *w);
void *dw_main(void *w);
/* Wakes the thread (new mail, a command, or stop). */
void dw_wake(struct dworker *w);
/* Lets go of c; the last owner frees it. */
void dcmd_put(struct dcmd *c);

#endif
