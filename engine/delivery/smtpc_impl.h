/*
 * smtpc_impl.h - the outbound client's connection object, shared by its
 * files (private to engine/delivery): smtpc.c runs the connection (greeting,
 * EHLO, STARTTLS, QUIT, I/O, timeouts), smtpc_msg.c one message's
 * transaction, smtpc_conn.c the socket under it.
 */
#ifndef VR_SMTPC_IMPL_H
#define VR_SMTPC_IMPL_H

#include "vmrelay/buf.h"
#include "vmrelay/smtpc.h"
#include "smtpc_reply.h"

/* A reply is at most 64 lines of 2 KiB (smtpc_reply.h); one more line's
 * worth so a complete reply and the start of the next fit together. */
#define SMTPC_RX_MAX  ((VR_SMTPC_LINES_MAX + 1) * VR_SMTPC_LINE_MAX)
/* Output ceiling, and the level under which the body is pulled: a few
 * socket buffers' worth keeps the link busy without holding a message. */
#define SMTPC_TX_MAX  (256 * 1024)
#define SMTPC_TX_LOW  (64 * 1024)

enum smtpc_state {
	S_CONNECT,      /* socket driver: TCP connect in progress */
	S_GREETING,     /* waiting for 220 */
	S_EHLO,
	S_HELO,         /* EHLO got 5xx */
	S_STARTTLS,     /* STARTTLS sent */
	S_HANDSHAKE,    /* TLS handshake */
	S_IDLE,         /* ready for a message */
	S_TXN,          /* RSET/MAIL/RCPT/DATA sent (pipelined or not), replies due */
	S_BODY,         /* sending the message */
	S_DOT,          /* end of data sent, its reply due (the message in
			 * dot_msg once it was offered the next one) */
	S_QUIT,
	S_DONE,         /* closed reported */
};

/* Where a transaction stands, on the sending and on the replying side. */
enum smtpc_step { STEP_RSET, STEP_MAIL, STEP_RCPT, STEP_DATA, STEP_END };

struct vr_smtpc {
	const struct vr_smtpc_ops *ops;
	void *owner;
	struct vr_tls_ctx *tls_ctx;
	enum vr_smtpc_tls tls_mode;
	struct vr_smtpc_tlsa *tlsa;     /* copies, data in the same allocation */
	size_t n_tlsa;
	unsigned max_msgs;
	struct vr_smtpc_timeouts to;
	char helo[256];
	char sni[256];                  /* "" when peer_name is absent or an address */
	char peer[300];                 /* "name[ip]:port" for texts and logs */

	enum smtpc_state state;
	uint64_t deadline;
	struct vr_buf rx;               /* plaintext from the server */
	struct vr_buf tx;               /* bytes for the socket (ciphertext under TLS) */
	struct vr_smtpc_rp rp;
	struct vr_tls *tls;
	bool tls_verified;
	unsigned caps;
	uint64_t size_limit;
	bool quit_asked;
	int broken;                     /* errno of a failed emit, reported by tick */
	unsigned msgs;                  /* transactions started (MAIL sent) */

	/* A message whose end of data is out and its reply due, while the
	 * next message's commands are pipelined behind it (RFC 2920 3.1:
	 * message content may start a command group). Its reply comes
	 * before any of the next message's. */
	struct vr_smtpc_msg *dot_msg;
	bool dot_discard;               /* its data_discard */
	uint64_t dot_deadline;          /* its reply's */
	struct vr_smtpc_reply dot_reply; /* its c->reply: what decided it so far */

	/* The message in hand. */
	struct vr_smtpc_msg *msg;
	bool refuse_pending;            /* refused locally; tick reports it */
	bool rset_needed;               /* the last transaction was left open */
	bool pipelining;                /* this transaction is pipelined */
	bool utf8;                      /* it needs SMTPUTF8 */
	enum smtpc_step tx_step, rx_step;
	size_t tx_rcpt, rx_rcpt;        /* recipient cursors of each side */
	unsigned outstanding;           /* commands sent, replies not yet read */
	bool mail_ok;
	size_t accepted;                /* 2xx replies to RCPT */
	bool data_discard;              /* 354 with nobody accepted: send "." only */
	struct vr_smtpc_reply reply;    /* the reply that decided the message */

	/* The body filter's state across chunks. */
	bool body_eof;
	bool at_bol;                    /* next byte starts a line: dot-stuff it */
	bool pending_cr;                /* a CR whose LF may come in the next chunk */
};

/* smtpc.c */
void vr_smtpc_emit(struct vr_smtpc *c, const void *p, size_t n);
void vr_smtpc_emitf(struct vr_smtpc *c, const char *fmt, ...) VR_PRINTF(2, 3);
size_t vr_smtpc_out_len(const struct vr_smtpc *c);
void vr_smtpc_set_timer(struct vr_smtpc *c, uint32_t ms, uint64_t now_ms);
void vr_smtpc_fail(struct vr_smtpc *c, const struct vr_smtpc_reply *r);
void vr_smtpc_local(struct vr_smtpc_reply *r, unsigned code, const char *enh, const char *fmt,
		 ...) VR_PRINTF(4, 5);
void vr_smtpc_idle(struct vr_smtpc *c, uint64_t now_ms);
/* The socket driver's hooks: connect started / completed. */
void vr_smtpc_connecting(struct vr_smtpc *c, uint64_t now_ms);
void vr_smtpc_connected(struct vr_smtpc *c, uint64_t now_ms);

/* smtpc_msg.c */
void vr_smtpc_msg_start(struct vr_smtpc *c, uint64_t now_ms);
void vr_smtpc_msg_refused(struct vr_smtpc *c, uint64_t now_ms);
void vr_smtpc_msg_reply(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now_ms);
void vr_smtpc_msg_pump(struct vr_smtpc *c, uint64_t now_ms);
void vr_smtpc_msg_abort(struct vr_smtpc *c, const struct vr_smtpc_reply *r);
/* Text for "while ..." in the phases of a transaction. */
const char *vr_smtpc_msg_phase(const struct vr_smtpc *c);

#endif
