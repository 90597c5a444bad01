/*
 * smtpc.h - the outbound SMTP client the delivery workers hand messages to
 * the next hop with (an MX, or the configured smarthost).
 *
 * Two layers, like the server side:
 *  - struct vr_smtpc is the protocol alone, fed bytes and emitting bytes
 *    (greeting, EHLO/HELO, STARTTLS opportunistic or DANE-required, EHLO
 *    again, MAIL/RCPT/DATA pipelined per RFC 2920 when offered, RSET only
 *    when a transaction was left open, QUIT). TLS runs inside it, time is
 *    passed in, so unit tests drive it against scripted peers in memory.
 *  - struct vr_smtpc_conn puts one on a non-blocking socket, driven by the
 *    owner's epoll loop: register vr_smtpc_conn_fd() for
 *    vr_smtpc_conn_events(), call vr_smtpc_conn_io() with what epoll
 *    reported (or 0 at the deadline), re-arm with the events it now wants.
 *
 * A connection carries one transaction at a time, up to max_msgs of them.
 * The owner calls vr_smtpc_send() whenever the connection can take a
 * message (at once after creating it, or from the ready callback): when it
 * is idle, and, with PIPELINING, as soon as a message's end of data is out,
 * so that the next message's MAIL, RCPT and DATA go behind it before its
 * reply (one round trip per message, not two). So up to two messages are
 * out at once, each with its own vr_smtpc_msg; results come back through
 * callbacks, in the order the messages were handed over: each recipient's
 * reply in the caller's own vr_smtpc_rcpt array, then msg_done, and closed
 * once when the connection is over. The body is
 * pulled through msg->body in chunks, only while the output buffer has room:
 * the client never holds the whole message.
 *
 * Replies the client makes up itself (timeouts, lost connections, TLS
 * failures, a server lacking SMTPUTF8) carry local = true and say what
 * happened in text, Postfix-style, so the log line explains the deferral.
 *
 * Threads: a vr_smtpc belongs to the thread that created it; callbacks run
 * on that thread, inside the vr_smtpc_* call that caused them. Callbacks may
 * call vr_smtpc_send() and vr_smtpc_quit(), never *_free().
 */
#ifndef VR_SMTPC_H
#define VR_SMTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "vmrelay/tls.h"

/* Reply text kept per recipient and message: lines joined by one space,
 * cut (with "...") to fit. Enough for any log line worth reading. */
#define VR_SMTPC_TEXT_MAX 512

struct vr_smtpc_reply {
	unsigned code;                   /* 250, 451, 550 ...; 0 before any reply */
	char enh[12];                    /* "5.1.1" (RFC 3463), "" when none */
	bool local;                      /* made up by the client, not the server */
	char text[VR_SMTPC_TEXT_MAX];    /* NUL-terminated, control bytes as '?' */
};

static inline bool vr_smtpc_reply_ok(const struct vr_smtpc_reply *r)
{
	return r->code >= 200 && r->code < 300;
}
static inline bool vr_smtpc_reply_temp(const struct vr_smtpc_reply *r)
{
	return r->code >= 400 && r->code < 500;
}

/* --- messages --- */

struct vr_smtpc_rcpt {
	const char *addr;                /* "user@example.com", no brackets */
	struct vr_smtpc_reply reply;     /* filled by the client: the final word
					  * on this recipient (the RCPT reply if
					  * refused, else the end-of-data one) */
};

/*
 * Pulls the next bytes of the message (header fields and body as stored:
 * CRLF lines; bare LF or CR are sent as CRLF) into buf. Returns >0 bytes,
 * 0 at the end of the message, or -1 when it cannot be read (the message
 * then fails with a temporary error and the connection is dropped, since
 * DATA cannot be cancelled).
 */
typedef ssize_t vr_smtpc_body_fn(void *cookie, uint8_t *buf, size_t cap);

#define VR_SMTPC_8BIT     0x1u       /* body has 8-bit bytes: BODY=8BITMIME */
#define VR_SMTPC_SMTPUTF8 0x2u       /* needs SMTPUTF8 (RFC 6531) */

struct vr_smtpc_msg {
	const char *from;                /* "" for the null sender (DSNs) */
	struct vr_smtpc_rcpt *rcpts;     /* the caller's; replies written here */
	size_t n_rcpts;                  /* >= 1 */
	uint64_t size;                   /* bytes body_fn will return; 0 = unknown
					  * (then no SIZE= parameter) */
	unsigned flags;                  /* VR_SMTPC_8BIT | VR_SMTPC_SMTPUTF8 */
	vr_smtpc_body_fn *body;
	void *cookie;                    /* for body and the caller's callbacks */
};

enum vr_smtpc_status {
	VR_SMTPC_SENT,      /* the end-of-data reply was 2xx: every recipient
			     * whose reply is 2xx is delivered */
	VR_SMTPC_DEFER,     /* nothing delivered; the 4xx recipients retry */
	VR_SMTPC_BOUNCE,    /* nothing delivered and no recipient can be
			     * retried (all 5xx) */
};

/* --- the connection --- */

enum vr_smtpc_tls {
	VR_SMTPC_TLS_NONE,          /* never STARTTLS (tests, local hops) */
	VR_SMTPC_TLS_MAY,           /* STARTTLS when offered, unauthenticated;
				     * a failed handshake is a temporary
				     * failure of this connection */
	VR_SMTPC_TLS_DANE,          /* RFC 7672: STARTTLS must be offered and
				     * the certificate match a TLSA record;
				     * anything else is a temporary failure */
};

/* One TLSA record (RFC 6698), as the resolver returned it, DNSSEC-secure. */
struct vr_smtpc_tlsa {
	uint8_t usage;              /* 2 DANE-TA, 3 DANE-EE; 0/1 are ignored
				     * (RFC 7672 3.1.3) */
	uint8_t selector;           /* 0 full certificate, 1 SubjectPublicKeyInfo */
	uint8_t mtype;              /* 0 full, 1 SHA-256, 2 SHA-512 */
	const uint8_t *data;
	size_t len;
};

/* RFC 5321 4.5.3.2 timeouts, in ms; 0 in a field takes the RFC's value. */
struct vr_smtpc_timeouts {
	uint32_t connect;           /* default 30 s (Postfix's smtp_connect_timeout) */
	uint32_t greeting;          /* 220 banner: 5 min */
	uint32_t helo;              /* EHLO, HELO, STARTTLS, RSET, QUIT: 5 min */
	uint32_t tls;               /* the handshake: 5 min */
	uint32_t mail;              /* 5 min */
	uint32_t rcpt;              /* 5 min */
	uint32_t data;              /* DATA initiation (354): 2 min */
	uint32_t block;             /* no progress sending the body: 3 min */
	uint32_t dot;               /* DATA termination reply: 10 min */
};

/* Capabilities the server offered in its last EHLO reply. */
#define VR_SMTPC_CAP_PIPELINING 0x01u
#define VR_SMTPC_CAP_SIZE       0x02u
#define VR_SMTPC_CAP_8BITMIME   0x04u
#define VR_SMTPC_CAP_SMTPUTF8   0x08u
#define VR_SMTPC_CAP_STARTTLS   0x10u
#define VR_SMTPC_CAP_ENHANCED   0x20u    /* ENHANCEDSTATUSCODES */
#define VR_SMTPC_CAP_CHUNKING   0x40u
#define VR_SMTPC_CAP_ESMTP      0x80u    /* EHLO worked (else HELO) */

struct vr_smtpc;
struct vr_smtpc_conn;

struct vr_smtpc_ops {
	/* The connection can take a message (idle, or behind an end of data
	 * whose reply is due): call vr_smtpc_send() or vr_smtpc_quit() (now
	 * or later). Not called once max_msgs went. */
	void (*ready)(void *owner);
	/* A message is finished; msg->rcpts[i].reply hold each recipient's
	 * outcome, reply the message's (the end-of-data reply, or what ended
	 * it). The msg and its arrays are the caller's again. */
	void (*msg_done)(void *owner, struct vr_smtpc_msg *msg, enum vr_smtpc_status st,
			 const struct vr_smtpc_reply *reply);
	/* The connection is over, once: after QUIT (reply 221, or the QUIT's
	 * timeout), or on a failure, then reply says why: a local 4xx, or the
	 * server's own 421 (RFC 5321 3.8: it is closing the channel). A
	 * message in flight got msg_done first. Free it from the owner's loop
	 * afterwards, not from here. */
	void (*closed)(void *owner, const struct vr_smtpc_reply *reply);
};

struct vr_smtpc_params {
	const char *helo_name;           /* our name in EHLO/HELO */
	const char *peer_name;           /* the MX host (SNI, DANE base domain,
					  * texts); NULL: the peer address */
	const struct sockaddr *peer;     /* where to connect (conn) / for texts */
	struct vr_tls_ctx *tls;          /* client context; needed unless TLS_NONE */
	enum vr_smtpc_tls tls_mode;
	const struct vr_smtpc_tlsa *tlsa; /* TLS_DANE: the records; copied */
	size_t n_tlsa;
	unsigned max_msgs;               /* per connection; 0 = no limit */
	const struct vr_smtpc_timeouts *timeouts; /* NULL: RFC 5321 values */
	const struct vr_smtpc_ops *ops;
	void *owner;
};

/*
 * The protocol state machine, without a socket: the caller feeds what the
 * server sent (vr_smtpc_rx), sends what vr_smtpc_tx_peek() shows, and calls
 * vr_smtpc_tick() at vr_smtpc_deadline(). now_ms is when the TCP connection
 * came up (the greeting timeout starts there). NULL with errno EINVAL (bad
 * params: no helo_name, no ops, TLS without a context, DANE without
 * records) or ENOMEM.
 */
struct vr_smtpc *vr_smtpc_new(const struct vr_smtpc_params *p, uint64_t now_ms);
void vr_smtpc_free(struct vr_smtpc *c);

/*
 * Hands the connection a message (idle, or told ready behind an end of
 * data); msg and everything it points to must stay valid until msg_done.
 * 0, -EBUSY (a message is in its transaction), -EPIPE
 * (closing or closed), -EINVAL. Before the greeting/EHLO are through it
 * waits for them. A message refused without a word to the server (SMTPUTF8
 * not offered, over the server's SIZE, no sendable address) is reported
 * from the next tick - the deadline becomes 0 - never from inside this call.
 */
int vr_smtpc_send(struct vr_smtpc *c, struct vr_smtpc_msg *msg, uint64_t now_ms);
/* Ends the connection politely once idle (QUIT, wait for 221). */
void vr_smtpc_quit(struct vr_smtpc *c, uint64_t now_ms);

/* How many received bytes the client takes now (0 while its output is
 * full, e.g. during a TLS handshake the peer floods). */
size_t vr_smtpc_rx_space(const struct vr_smtpc *c);
/* Bytes from the server (n <= rx_space). */
void vr_smtpc_rx(struct vr_smtpc *c, const void *p, size_t n, uint64_t now_ms);
/* The server closed its side, or the socket failed (err: errno, 0 = EOF). */
void vr_smtpc_rx_eof(struct vr_smtpc *c, int err, uint64_t now_ms);
/* Lets time pass; call at every deadline. */
void vr_smtpc_tick(struct vr_smtpc *c, uint64_t now_ms);
/* Next time tick must be called (monotonic ms), UINT64_MAX for never. */
uint64_t vr_smtpc_deadline(const struct vr_smtpc *c);

/* Bytes to send (ciphertext under TLS); consume what was sent. Sending
 * makes room, so the client may pull more body: peek again. */
size_t vr_smtpc_tx_peek(const struct vr_smtpc *c, const uint8_t **p);
void vr_smtpc_tx_consume(struct vr_smtpc *c, size_t n, uint64_t now_ms);
/* True once closed was reported: drop the transport after sending what is
 * pending (a QUIT may still be queued). */
bool vr_smtpc_done(const struct vr_smtpc *c);

/* For log lines; valid for the connection's life. */
unsigned vr_smtpc_caps(const struct vr_smtpc *c);      /* VR_SMTPC_CAP_* */
uint64_t vr_smtpc_size_limit(const struct vr_smtpc *c); /* SIZE n; 0 = none */
const char *vr_smtpc_peer_text(const struct vr_smtpc *c); /* "mx.example[192.0.2.1]:25" */
/* "TLSv1.3" / cipher once STARTTLS is through, else NULL. */
const char *vr_smtpc_tls_version(const struct vr_smtpc *c);
const char *vr_smtpc_tls_cipher(const struct vr_smtpc *c);
/* True when DANE authenticated the server (TLS_DANE with usable records). */
bool vr_smtpc_tls_verified(const struct vr_smtpc *c);
unsigned vr_smtpc_msgs_sent(const struct vr_smtpc *c); /* messages handed over */

/* --- the socket driver --- */

/*
 * Starts a non-blocking connect to p->peer (IPv4 or IPv6; port included)
 * from source (NULL: any). Failures to connect come back through closed (a
 * local 4xx naming the error), never from here, except: NULL with errno
 * EINVAL / ENOMEM / EMFILE and the like when no socket could be made.
 */
struct vr_smtpc_conn *vr_smtpc_conn_new(const struct vr_smtpc_params *p,
					const struct sockaddr *source, uint64_t now_ms);
/* Closes the socket (unregister it from epoll first) and frees. */
void vr_smtpc_conn_free(struct vr_smtpc_conn *k);
int vr_smtpc_conn_fd(const struct vr_smtpc_conn *k);
/* EPOLLIN / EPOLLOUT the connection waits for now; 0 once it is done. */
uint32_t vr_smtpc_conn_events(const struct vr_smtpc_conn *k);
/* What epoll reported (EPOLLIN/OUT/ERR/HUP), or 0 when only the deadline
 * passed. Reads, writes and runs timeouts as far as it can without blocking. */
void vr_smtpc_conn_io(struct vr_smtpc_conn *k, uint32_t events, uint64_t now_ms);
uint64_t vr_smtpc_conn_deadline(const struct vr_smtpc_conn *k);
/* Writes what the client queued outside vr_smtpc_conn_io() (a message
 * handed over from the owner's loop), as far as the socket takes it, once
 * connected: the socket is nearly always writable, and waiting for epoll
 * to say so costs a wakeup. May run callbacks, as vr_smtpc_conn_io(). */
void vr_smtpc_conn_flush(struct vr_smtpc_conn *k, uint64_t now_ms);
/* The protocol object, for send/quit and the log accessors above. */
struct vr_smtpc *vr_smtpc_conn_smtpc(struct vr_smtpc_conn *k);
/* True once the connection is finished and its last bytes went out (or
 * could not): unregister and free it. */
bool vr_smtpc_conn_done(const struct vr_smtpc_conn *k);

#endif
