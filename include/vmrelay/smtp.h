/*
 * smtp.h - the SMTP server session, independent of any transport.
 *
 * A transport (engine/io over epoll, later the userspace TCP stack) creates a
 * session per connection, hands it the bytes it received, sends the bytes it
 * produces, and closes when it asks. TLS (STARTTLS, implicit TLS) happens
 * inside the session, so every transport gets it. Time is passed in, never
 * read, so tests drive it.
 *
 * Backpressure: the transport reads at most vr_session_rx_space() bytes; it
 * is 0 while the session waits for the spool or has too much unsent output,
 * which bounds a session's memory whatever the client pipelines.
 *
 * Threads: a session belongs to the worker thread that created it. The
 * vr_smtpd context is shared read-only; its counters are per worker.
 */
#ifndef VR_SMTP_H
#define VR_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "vmrelay/config.h"
#include "vmrelay/spool.h"
#include "vmrelay/tls.h"

/* Counters of one worker; written by that worker only, read by anyone
 * (relaxed loads: figures for stats, not for decisions). */
struct vr_smtp_stats {
	uint64_t connections;
	uint64_t sessions_active;
	uint64_t messages_accepted;
	uint64_t recipients_accepted;
	uint64_t bytes_accepted;
	uint64_t refused_relay;       /* unknown client at MAIL */
	uint64_t refused_sender;      /* envelope or header From domain not the VPS's,
				       * or no usable From */
	uint64_t refused_quota;       /* 451 at RCPT: a sending window is full */
	uint64_t messages_held;       /* accepted over quota for the operator (hold) */
	uint64_t refused_syntax;      /* 500/501/503 */
	uint64_t refused_size;
	uint64_t refused_smuggling;   /* bare CR/LF */
	uint64_t refused_pregreet;
	uint64_t refused_starttls_injection;
	uint64_t refused_auth;
	uint64_t refused_spool;       /* 451/452 from the spool */
	uint64_t refused_content;     /* NUL or over-long line in DATA */
	uint64_t timeouts;
	uint64_t tls_handshakes;
};

struct vr_rl;
struct vr_cluster;

struct vr_smtpd {
	const struct vr_config *cfg;
	struct vr_tls_ctx *tls;       /* NULL: no STARTTLS, no implicit TLS */
	struct vr_spool *spool;
	struct vr_rl *rl;             /* the sending windows; NULL: no limits (unit tests) */
	struct vr_cluster *cluster;   /* cluster-wide quotas; NULL: this node alone */
	struct vr_smtp_stats *stats;  /* one per worker, indexed by worker */
	unsigned n_workers;
};

struct vr_session;

struct vr_session_params {
	struct vr_smtpd *srv;
	unsigned worker;
	const struct sockaddr *peer;
	const struct sockaddr *local;
	bool implicit_tls;
	/* Called when the session has new output or state outside of an rx/tick
	 * call (a spool completion); the transport then flushes it. */
	void (*kick)(void *owner);
	void *owner;
};

/* NULL with errno ENOMEM, or EINVAL for implicit TLS without srv->tls.
 * Produces no output until the first vr_session_tick(). */
struct vr_session *vr_session_new(const struct vr_session_params *p, uint64_t now_ms);
/*
 * Frees the session. If a commit is in flight the transaction is orphaned
 * (the message stays committed; nobody is told).
 */
void vr_session_free(struct vr_session *s);

/* How many received bytes the session accepts now; 0 = stop reading. */
size_t vr_session_rx_space(const struct vr_session *s);
/* Received bytes (n <= rx_space). Returns VR_OK, or VR_ERR when the session
 * must close (flush the output first). */
int vr_session_rx(struct vr_session *s, const void *p, size_t n, uint64_t now_ms);
/* The peer closed its sending side. */
void vr_session_rx_eof(struct vr_session *s, uint64_t now_ms);
/* Lets time pass: greeting, idle timeout. Call on every deadline. */
void vr_session_tick(struct vr_session *s, uint64_t now_ms);
/* The next time tick must be called (monotonic ms), UINT64_MAX for never. */
uint64_t vr_session_deadline(const struct vr_session *s);

/* Bytes to send (already encrypted under TLS). */
size_t vr_session_tx_peek(const struct vr_session *s, const uint8_t **p);
void vr_session_tx_consume(struct vr_session *s, size_t n);
/* True once the session is finished: close after sending what is pending. */
bool vr_session_closing(const struct vr_session *s);

/* The spool's completion callback (vr_spool_done_fn); the transport passes it
 * to vr_spool_reap(). cookie is the session. */
void vr_session_commit_done(void *cookie, int status, const char *qid);

#endif
