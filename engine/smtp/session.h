/*
 * session.h - the SMTP session's state, shared by the files of engine/smtp
 * and by nothing else:
 *
 *   session.c  life cycle, bytes in and out, TLS, time
 *   cmd.c      the command table: check/proceed pairs
 *   msg.c      DATA and BDAT into the spool, the Received header, commit
 *   auth.c     AUTH PLAIN and LOGIN
 *   access.c   who may send what: the one place MAIL, RCPT and header From
 *              policy is decided, and the quota reservations it takes
 *   hdr.c      the header section as it streams past; from.c its From
 *   reply.c    the reply table
 *
 * Threads: a session is touched by its worker thread only.
 */
#ifndef VR_SMTP_SESSION_H
#define VR_SMTP_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "vmrelay/buf.h"
#include "vmrelay/common.h"
#include "vmrelay/policy.h"
#include "vmrelay/ratelimit.h"
#include "vmrelay/smtp.h"
#include "vmrelay/spool.h"

#include "addr.h"
#include "data.h"
#include "hdr.h"
#include "parse.h"
#include "reply.h"

/* Client text (a domain, a header line) quoted in a refusal, NUL incl. */
#define VR_SMTP_DENY_TEXT 200

enum vr_smtp_phase {
	VR_SMTP_GREET,           /* banner not sent yet: input is a pregreet */
	VR_SMTP_TLS,             /* TLS handshake (STARTTLS or implicit) */
	VR_SMTP_CMD,
	VR_SMTP_AUTH,            /* an AUTH continuation line is due */
	VR_SMTP_DATA,
	VR_SMTP_BDAT,            /* bdat_left octets of chunk content are due */
	VR_SMTP_COMMIT,          /* message with the spool: input waits */
	VR_SMTP_RCPT_WAIT,       /* a RCPT's reply waits for the cluster quota
				  * block (access.c): input waits */
	VR_SMTP_CLOSED,
};

enum vr_smtp_auth_step { VR_SMTP_AUTH_PLAIN, VR_SMTP_AUTH_LOGIN_USER, VR_SMTP_AUTH_LOGIN_PASS };

struct vr_session {
	struct vr_smtpd *srv;
	const struct vr_config *cfg;
	struct vr_smtp_stats *stats;       /* this worker's */
	unsigned worker;
	void (*kick)(void *owner);
	void *owner;

	enum vr_smtp_phase phase;
	uint64_t now;                      /* last time passed in */
	uint64_t greet_at;                 /* banner time */
	uint64_t idle_at;                  /* last activity */
	unsigned errors;
	bool eof;                          /* the peer closed its side */
	bool stalled;                      /* input waited for output to drain */
	bool implicit_tls;

	/* bytes: rx holds received plaintext not yet used; replies go to tx
	 * directly, or through out and TLS once TLS is on */
	struct vr_buf rx, out, tx;
	struct vr_tls *tls;
	bool tls_on;                       /* handshake completed */
	struct vr_smtp_line line;          /* command parser state */
	size_t rest;                       /* octets after the current command */

	/* connection */
	char client[VR_ADDRSTRLEN];        /* "192.0.2.1", "2001:db8::1" */
	char client_literal[VR_ADDRSTRLEN + 8];   /* "[192.0.2.1]", "[IPv6:...]" */
	struct sockaddr_storage peer;
	char helo[256];                    /* "" until EHLO/HELO */
	bool esmtp;
	bool authed;
	char auth_id[VR_ACCOUNT_ID_MAX];   /* after AUTH */
	enum vr_smtp_auth_step auth_step;
	char auth_user[VR_ACCOUNT_ID_MAX]; /* AUTH LOGIN, between its two steps */

	/* transaction: the envelope lives in env (NUL-terminated strings,
	 * reset per transaction, so no allocation per command once grown) */
	bool in_mail;
	bool bdat;                         /* BDAT used in this transaction */
	bool smtputf8, body8;
	char account[VR_ACCOUNT_ID_MAX];   /* who sends this transaction */
	struct vr_buf env;
	uint32_t *rcpt_off;                /* offsets in env; [0] is the sender */
	const char **rcpt_ptr;             /* built when the message starts */
	unsigned n_rcpt;
	struct vr_spool_txn *txn;          /* the message being received */
	struct vr_spool_txn *inflight;     /* the message being committed */
	struct vr_smtp_data data;
	/* quota: one reservation per accepted recipient, all confirmed or
	 * all released (access.c); a held transaction holds none */
	struct vr_rl_ticket *tickets;
	unsigned n_tickets;
	unsigned n_cluster;                /* of them, holding a cluster slot too */
	uint64_t rcpt_wait_until;          /* VR_SMTP_RCPT_WAIT gives up then */
	bool hold_over_quota;              /* the account's over_quota = hold */
	bool unlimited;                    /* the account is exempt from the windows */
	bool held;                         /* over quota, accepted for the operator */
	/* the header section, scanned as the content passes (msg.c) */
	bool hdr_open;
	struct vr_smtp_hdr hdr;
	/* the message is refused for its header: the reply and its two
	 * arguments (some replies use fewer) */
	bool denied;
	enum vr_smtp_reply deny;
	char deny_text[VR_SMTP_DENY_TEXT];
	const char *deny_more;
	uint64_t bdat_size;                /* of the current chunk */
	uint64_t bdat_left;
	bool bdat_last;
	bool bdat_discard;                 /* chunk of a failed transaction */
};

/* Bumps one of this worker's counters. One writer (this thread); others
 * read with relaxed loads, so a relaxed store of the new value suffices. */
static inline void vr_smtp_count(uint64_t *counter, uint64_t n)
{
	__atomic_store_n(counter, *counter + n, __ATOMIC_RELAXED);
}

/* session.c */
/* Appends a reply line (CRLF added) to the output. */
void vr_smtp_write(struct vr_session *s, const char *line, size_t n);
void vr_smtp_printf(struct vr_session *s, const char *fmt, ...) VR_PRINTF(2, 3);
/* Ends the session: aborts a transaction, closes TLS politely. */
void vr_smtp_close(struct vr_session *s);
/* STARTTLS accepted: says 220 in plaintext, then the handshake starts. */
void vr_smtp_starttls(struct vr_session *s);
/* Processes buffered input and flushes output (after a spool completion). */
void vr_smtp_run(struct vr_session *s);

/* cmd.c */
void vr_smtp_cmd(struct vr_session *s, const struct vr_smtp_cmdline *cl);

/* msg.c */
void vr_smtp_txn_reset(struct vr_session *s);
/* Stores an envelope address: slot 0 is the sender, 1.. the recipients.
 * 0 or -ENOBUFS/-ENOMEM. */
int vr_smtp_env_add(struct vr_session *s, unsigned slot, const uint8_t *addr, size_t len);
/* Begins the spool transaction, writes the Received header and readies the
 * decoder (dot: DATA, else BDAT). 0 or -ENOMEM. */
int vr_smtp_msg_begin(struct vr_session *s, bool dot);
/* Content for DATA / BDAT; return octets used. */
size_t vr_smtp_data_input(struct vr_session *s, const uint8_t *p, size_t n);
size_t vr_smtp_bdat_input(struct vr_session *s, const uint8_t *p, size_t n);
/* A BDAT chunk of n octets is due (after a "BDAT n [LAST]" that passed). */
void vr_smtp_bdat_chunk(struct vr_session *s, uint64_t n, bool last, bool discard);

/* auth.c */
void vr_smtp_auth_start(struct vr_session *s, const uint8_t *arg, size_t len);
void vr_smtp_auth_line(struct vr_session *s, const uint8_t *p, size_t n);

/* access.c */
enum vr_smtp_access_stage { VR_SMTP_ACCESS_MAIL, VR_SMTP_ACCESS_RCPT };
/* 0, or -1 after replying with the refusal. MAIL sets s->account; RCPT
 * reserves the recipient's slot (or marks the transaction held). */
int vr_smtp_access(struct vr_session *s, enum vr_smtp_access_stage stage,
		   const struct vr_smtp_envcmd *cmd);
/* The header scan ended with rc (VR_OK: s->hdr holds From): checks the
 * From rule and, if the message must be refused, sets s->denied. */
void vr_smtp_access_header(struct vr_session *s, int rc);
/* The transaction's reservations: confirmed (its message is committed) or
 * released (it ended any other way), each exactly once. */
void vr_smtp_quota_end(struct vr_session *s, bool sent);
/* VR_SMTP_RCPT_WAIT: looks for the cluster block again; replies to the
 * RCPT and returns to VR_SMTP_CMD once it is there, spent, or too late. */
void vr_smtp_rcpt_wait(struct vr_session *s);
/* When vr_smtp_rcpt_wait wants to be called next (monotonic ms). */
uint64_t vr_smtp_rcpt_wait_deadline(const struct vr_session *s);

#endif
