/*
 * io_impl.h - what io.c (setup, threads), worker.c (the epoll loop) and
 * conn.c (one TCP connection driving one vr_session) share, and drive.c,
 * what conn.c and stack.c (the userspace stack's transport) do alike.
 * Private to engine/io.
 *
 * Threads: a struct io_worker and every io_conn in it belong to that
 * worker's thread, from vr_io_run() until it returns; struct vr_io is
 * read-only while the workers run, except stop_fd (written by vr_io_stop
 * from any thread or signal handler) and the connlimit table (its own rules).
 */
#ifndef VR_IO_IMPL_H
#define VR_IO_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "vmrelay/config.h"
#include "vmrelay/io.h"
#include "vmrelay/smtp.h"
#include "connlimit.h"
#include "timer.h"

#define IO_READ_MAX   65536     /* one recv() at most; the session copies it */
#define IO_GRACE_MS   5000      /* sessions in flight may finish after stop */
#define IO_LINGER_MS  2000      /* reading and dropping input after our FIN */
#define IO_DRAIN_MS   10000     /* a closing session's last output must leave by then */
#define IO_ACCEPT_PAUSE_MS 100  /* out of descriptors: stop accepting briefly */

/* What an epoll event points at; the first member of each owner. */
enum io_kind { IO_LISTENER, IO_CONN, IO_STOP, IO_SPOOL };

struct io_handle {
	enum io_kind kind;
	unsigned idx;             /* listener: index into cfg->listen */
};

enum io_conn_state {
	CONN_OPEN,                /* session running */
	CONN_LINGER,              /* session done, FIN sent, draining input */
	CONN_DEAD,                /* closed; memory returns to the pool at loop end */
};

struct io_worker;

struct io_conn {
	struct io_handle h;
	struct io_worker *w;
	struct vr_session *s;     /* NULL once lingering */
	int fd;
	enum io_conn_state state;
	uint32_t events;          /* interest registered with epoll */
	bool rd_eof;              /* peer's FIN seen */
	bool rx_failed;           /* session refused input: close after flush */
	bool kicked;              /* on the worker's kicked list */
	uint64_t *ip_slot;        /* held in the per-client table, or NULL */
	uint64_t drain_until;     /* closing: give up on the client reading by then */
	struct vr_timer timer;
	LIST_ENTRY(io_conn) link; /* worker's connections */
	struct io_conn *kick_next;
	struct io_conn *next;     /* graveyard or pool */
	struct sockaddr_storage peer, local;
};

struct io_worker {
	struct vr_io *io;
	unsigned id;
	pthread_t thread;
	int ep;
	int lfd[VR_CONFIG_MAX_LISTEN];
	struct io_handle lh[VR_CONFIG_MAX_LISTEN];
	struct io_handle stop_h, spool_h;
	bool stopping;
	bool accept_paused;
	uint64_t grace_until;     /* stopping: close what is left at this time */
	uint64_t accept_resume;   /* accept_paused: listen again at this time */
	unsigned accept_failures; /* accept errors since the last success */
	struct vr_timer_heap timers;
	LIST_HEAD(, io_conn) conns;
	unsigned n_conns;
	struct io_conn *kicked;   /* sessions with output from a spool completion */
	struct io_conn *dead;     /* closed this iteration */
	struct io_conn *pool;     /* free io_conn structs for reuse */
	int rc;
	uint8_t rbuf[IO_READ_MAX];
};

struct vr_io {
	struct vr_smtpd *srv;
	const struct vr_config *cfg;
	struct vr_connlimit *cl;  /* NULL: no per-client limit */
	int stop_fd;              /* eventfd in every worker's epoll set */
	unsigned n_workers;
	unsigned n_ready;         /* workers set up (all of them once new returns) */
	uint16_t port[VR_CONFIG_MAX_LISTEN];
	struct io_worker *w;
};

/* worker.c */
void *vr_io_worker_main(void *arg);

/* conn.c: every call from the connection's worker thread */
void vr_io_conn_accept(struct io_worker *w, unsigned listen_idx, int fd,
		       const struct sockaddr_storage *peer, uint64_t now);
void vr_io_conn_event(struct io_conn *c, uint32_t events, uint64_t now);
void vr_io_conn_expire(struct io_conn *c, uint64_t now);
void vr_io_conn_kicked(struct io_conn *c, uint64_t now);
void vr_io_conn_close(struct io_conn *c);
/* Returns this iteration's closed connections to the pool. */
void vr_io_conn_bury(struct io_worker *w);
void vr_io_conn_pool_free(struct io_worker *w);

/*
 * drive.c: any thread, on its own connection's data.
 *
 * Admits a new connection against max_connections (n_conns: the caller's
 * count) and, when cl is not NULL, the per-client limit. NULL: admitted, with
 * *slot held (or NULL without cl). Otherwise the refusal is logged and the
 * reason returned, with the 421 to send in reply.
 */
const char *vr_io_admit(const struct vr_config *cfg, struct vr_connlimit *cl,
			unsigned n_conns, const struct sockaddr *peer, const char *ip,
			uint64_t **slot, char *reply, size_t len);

/* A transport's send: bytes taken (> 0), 0 when it has no room now, -1 when
 * the connection cannot send. */
typedef ssize_t vr_io_send_fn(void *arg, const uint8_t *p, size_t n);

/* Hands the session's output to send_fn: 0 all of it, 1 no room (wait to be
 * writable), -1 failed. */
int vr_io_session_flush(struct vr_session *s, vr_io_send_fn *send_fn, void *arg);

/* When to wake s next: its own deadline or, once closing, the end of the
 * drain (started at the first call, kept in *drain_until); never <= now. */
uint64_t vr_io_session_deadline(const struct vr_session *s, bool closing,
				uint64_t *drain_until, uint64_t now);

#endif
