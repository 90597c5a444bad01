/*
 * io_impl.h - what io.c (setup, threads), worker.c (the epoll loop) and
 * conn.c (one TCP connection driving one vr_session) share, and drive.c,
 * what conn.c and stack.c (the userspace stack's transport) do alike: the
 * per-connection bookkeeping (struct io_sess, first in each transport's
 * connection) and a worker's set of them (struct io_sess_set). Private to
 * engine/io.
 *
 * Threads: a struct io_worker and every io_conn in it belong to that
 * worker's thread, from vr_io_run() until it returns; struct vr_io is
 * read-only while the workers run, except stop_fd (written by vr_io_stop
 * from any thread or signal handler) and the connlimit table (its own rules).
 * An io_sess_set and its connections belong to one thread likewise.
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

enum io_sess_state {
	IO_SESS_OPEN,             /* session running */
	IO_SESS_LINGER,           /* session done, FIN sent, dropping input */
	IO_SESS_DEAD,             /* closed; memory returns to the pool at loop end */
};

struct io_sess_set;

/* What either transport keeps for one connection's session; the first member
 * of struct io_conn and struct stack_conn, so each casts back. */
struct io_sess {
	struct io_sess_set *set;
	struct vr_session *s;     /* NULL once lingering */
	enum io_sess_state state;
	bool rx_failed;           /* session refused input: close after flush */
	bool kicked;              /* on the set's kicked list */
	uint64_t *ip_slot;        /* held in the per-client table, or NULL */
	uint64_t drain_until;     /* closing: give up on the client reading by then */
	struct vr_timer timer;
	LIST_ENTRY(io_sess) link; /* the set's connections */
	struct io_sess *kick_next;
	struct io_sess *next;     /* graveyard or pool */
};

/* One worker's connections, in either transport. */
struct io_sess_set {
	struct vr_connlimit *cl;  /* NULL: no per-client limit */
	size_t size;              /* of the transport's connection struct */
	struct vr_timer_heap timers;
	LIST_HEAD(, io_sess) conns;
	unsigned n;
	struct io_sess *kicked;   /* sessions with output from a spool completion */
	struct io_sess *dead;     /* closed this iteration */
	struct io_sess *pool;     /* free structs for reuse */
};

struct io_worker;

struct io_conn {
	struct io_sess ss;        /* first: io_sess_set hands these out */
	struct io_handle h;
	struct io_worker *w;
	int fd;
	uint32_t events;          /* interest registered with epoll */
	bool rd_eof;              /* peer's FIN seen */
	bool rx_stalled;          /* input waited while the session had no room */
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
	struct io_sess_set set;   /* its connections */
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
void vr_io_conn_service(struct io_conn *c, uint64_t now);
void vr_io_conn_close(struct io_conn *c);

/*
 * drive.c: what follows runs on a set's own thread, on its connections,
 * except vr_io_connlimit_new (setup, before the workers run).
 *
 * The per-client connection table every worker of a transport shares, sized
 * for n_workers * cfg->max_connections clients (max_conn_per_ip capped at
 * VR_CONNLIMIT_MAX, with a warning). NULL with errno.
 */
struct vr_connlimit *vr_io_connlimit_new(const struct vr_config *cfg, unsigned n_workers);

/*
 * Admits a new connection against max_connections (the set's count) and,
 * when the set has a connlimit table, the per-client limit. NULL: admitted,
 * with *slot held (or NULL without one). Otherwise the refusal is logged and
 * the reason returned, with the 421 to send in reply.
 */
const char *vr_io_admit(const struct vr_config *cfg, const struct io_sess_set *set,
			const struct sockaddr *peer, const char *ip,
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

/*
 * set_init starts an empty set of connection structs of size bytes (an
 * io_sess first); set_free frees them once every one has ended.
 */
void vr_io_set_init(struct io_sess_set *set, size_t size, struct vr_connlimit *cl);
void vr_io_set_free(struct io_sess_set *set);
/*
 * A zeroed connection struct for an admitted client (ip), from the pool or
 * the heap, holding slot (vr_io_admit's). NULL when out of memory: logged,
 * and slot given back.
 */
void *vr_io_sess_alloc(struct io_sess_set *set, uint64_t *slot, const char *ip);
/* Starts the connection's session (p->owner: x). 0, or -errno when it could
 * not, abandoned as below. */
int vr_io_sess_start(struct io_sess *x, const struct vr_session_params *p,
		     const char *ip, uint64_t now);
/* Gives up on a connection not yet open, logging why (err: an errno): its
 * session (if any) is freed, its slot and its struct given back. */
void vr_io_sess_abandon(struct io_sess *x, const char *ip, int err);
/* The struct goes on the set's list, its session running. */
void vr_io_sess_open(struct io_sess *x);
/* The session refused input or is ending. */
bool vr_io_sess_closing(const struct io_sess *x);
/* The session is finished, its output sent: it is freed, the connection
 * lingers (the transport sends FIN and arms the timer). */
void vr_io_sess_finish(struct io_sess *x);
/* Closing has gone on past the drain limit: the client stopped reading. */
bool vr_io_sess_drained(const struct io_sess *x, uint64_t now);
/* Ends the bookkeeping of a connection the transport has closed (a no-op on a
 * dead one): the session is freed (orphaning a commit in flight), the timer
 * and the client's slot given back; the memory waits for vr_io_set_bury,
 * since this round's events or the kicked list may still name it. */
void vr_io_sess_end(struct io_sess *x);
/* The session's kick (vr_session_params.kick, owner: the io_sess): a spool
 * completion gave it output; queued for vr_io_set_next_kicked. */
void vr_io_sess_kick(void *owner);
/* The next kicked connection, taken off the list, or NULL. */
struct io_sess *vr_io_set_next_kicked(struct io_sess_set *set);
/* The next connection whose timer is due by now, its timer disarmed, or NULL.
 * The caller re-arms a live one strictly after now. */
struct io_sess *vr_io_set_next_expired(struct io_sess_set *set, uint64_t now);
/* Returns this iteration's closed connections to the pool. */
void vr_io_set_bury(struct io_sess_set *set);

/* An address as text ("192.0.2.1", "2001:db8::1"; "?" if it has none). */
void vr_io_addr_text(const struct sockaddr *sa, char *out, size_t len);

#endif
