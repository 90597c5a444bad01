/*
 * smtpc.c - the outbound SMTP client's connection (see vmrelay/smtpc.h):
 * greeting, EHLO (HELO when EHLO gets a 5xx), STARTTLS and the EHLO after
 * it, QUIT, timeouts, and the plumbing under them - plaintext or TLS in,
 * replies parsed, output bounded. One message's transaction is smtpc_msg.c.
 *
 * Failures never come back as return values: anything that ends the
 * connection goes through vr_smtpc_fail(), which answers the message in hand
 * (msg_done) and then the owner (closed) with a reply saying what happened,
 * in the words a mail administrator knows from Postfix's logs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vmrelay/log.h"
#include "smtpc_impl.h"

#define TLS_READ_CHUNK 16384

/* RFC 5321 4.5.3.2, and Postfix's smtp_connect_timeout for the connect. */
static const struct vr_smtpc_timeouts rfc_timeouts = {
	.connect = 30000, .greeting = 300000, .helo = 300000, .tls = 300000,
	.mail = 300000, .rcpt = 300000, .data = 120000, .block = 180000, .dot = 600000,
};

/* The caller's timeouts override these field by field; 0 keeps ours. */
static const size_t timeout_fields[] = {
	offsetof(struct vr_smtpc_timeouts, connect), offsetof(struct vr_smtpc_timeouts, greeting),
	offsetof(struct vr_smtpc_timeouts, helo), offsetof(struct vr_smtpc_timeouts, tls),
	offsetof(struct vr_smtpc_timeouts, mail), offsetof(struct vr_smtpc_timeouts, rcpt),
	offsetof(struct vr_smtpc_timeouts, data), offsetof(struct vr_smtpc_timeouts, block),
	offsetof(struct vr_smtpc_timeouts, dot),
};

static void on_greeting(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now);
static void on_ehlo(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now);
static void on_helo(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now);
static void on_starttls(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now);
static void on_unexpected(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now);
static void on_quit(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now);

/* What each state does with a reply, and what we were doing (for texts). */
static const struct {
	void (*reply)(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now);
	const char *phase;
} states[] = {
	[S_CONNECT]   = { on_unexpected, "connecting" },
	[S_GREETING]  = { on_greeting, "receiving the initial server greeting" },
	[S_EHLO]      = { on_ehlo, "performing the EHLO handshake" },
	[S_HELO]      = { on_helo, "performing the HELO handshake" },
	[S_STARTTLS]  = { on_starttls, "sending STARTTLS" },
	[S_HANDSHAKE] = { on_unexpected, "performing the TLS handshake" },
	[S_IDLE]      = { on_unexpected, "idle" },
	[S_TXN]       = { vr_smtpc_msg_reply, NULL },
	[S_BODY]      = { on_unexpected, NULL },
	[S_DOT]       = { vr_smtpc_msg_reply, NULL },
	[S_QUIT]      = { on_quit, "sending QUIT" },
	[S_DONE]      = { NULL, "closed" },
};

/* EHLO keywords we act on (RFC 5321 4.1.1.1: case-insensitive). */
static const struct {
	const char *name;
	unsigned cap;
} ehlo_caps[] = {
	{ "PIPELINING", VR_SMTPC_CAP_PIPELINING },
	{ "SIZE", VR_SMTPC_CAP_SIZE },
	{ "8BITMIME", VR_SMTPC_CAP_8BITMIME },
	{ "SMTPUTF8", VR_SMTPC_CAP_SMTPUTF8 },
	{ "STARTTLS", VR_SMTPC_CAP_STARTTLS },
	{ "ENHANCEDSTATUSCODES", VR_SMTPC_CAP_ENHANCED },
	{ "CHUNKING", VR_SMTPC_CAP_CHUNKING },
};

static const char *phase(const struct vr_smtpc *c)
{
	return states[c->state].phase ? states[c->state].phase : vr_smtpc_msg_phase(c);
}

/* --- replies we make up --- */

static void vlocal(struct vr_smtpc_reply *r, unsigned code, const char *enh, const char *fmt,
		   va_list ap)
{
	r->code = code;
	r->local = true;
	snprintf(r->enh, sizeof(r->enh), "%s", enh);
	vsnprintf(r->text, sizeof(r->text), fmt, ap);
}

void vr_smtpc_local(struct vr_smtpc_reply *r, unsigned code, const char *enh, const char *fmt,
		    ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlocal(r, code, enh, fmt, ap);
	va_end(ap);
}

void vr_smtpc_fail(struct vr_smtpc *c, const struct vr_smtpc_reply *r)
{
	if (c->state == S_DONE)
		return;
	/* Done first: the callbacks below may call send/quit, which must
	 * see a closed connection. */
	c->state = S_DONE;
	c->deadline = UINT64_MAX;
	c->refuse_pending = false;
	if (c->msg || c->dot_msg)
		vr_smtpc_msg_abort(c, r);
	c->ops->closed(c->owner, r);
}

static void fail_local(struct vr_smtpc *c, unsigned code, const char *enh, const char *fmt, ...)
	VR_PRINTF(4, 5);
static void fail_local(struct vr_smtpc *c, unsigned code, const char *enh, const char *fmt, ...)
{
	struct vr_smtpc_reply r;
	va_list ap;

	va_start(ap, fmt);
	vlocal(&r, code, enh, fmt, ap);
	va_end(ap);
	vr_smtpc_fail(c, &r);
}

/* A server reply that ends the connection, quoted in a local 4xx: another
 * MX, or a later try, may do better (Postfix's smtp_skip_5xx_greeting). */
static void fail_reply(struct vr_smtpc *c, const char *what, const struct vr_smtpc_reply *r)
{
	fail_local(c, 421, vr_smtpc_reply_temp(r) && r->enh[0] ? r->enh : "4.4.2",
		   "host %s %s: %u%s%s %s", c->peer, what, r->code, r->enh[0] ? " " : "", r->enh,
		   r->text);
}

/* --- output --- */

/* Moves ciphertext SSL produced into tx, as far as tx's ceiling allows. */
static void tls_pump(struct vr_smtpc *c)
{
	while (c->tls && vr_tls_pending(c->tls) > 0 && vr_tls_drain(c->tls, &c->tx) > 0)
		;
}

/*
 * Queues bytes for the server. A failure here (no memory, a TLS stream
 * that broke) is reported from the next tick, so that callers mid-way
 * through a state change never see the connection vanish under them.
 */
void vr_smtpc_emit(struct vr_smtpc *c, const void *p, size_t n)
{
	int rc;

	if (c->broken)
		return;
	if (c->tls) {
		rc = vr_tls_write(c->tls, p, n);
		tls_pump(c);
	} else {
		rc = vr_buf_append(&c->tx, p, n);
	}
	if (rc < 0) {
		c->broken = -rc;
		c->deadline = 0;
	}
}

void vr_smtpc_emitf(struct vr_smtpc *c, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* Commands are built from checked addresses and names; a line this
	 * long cannot happen, and must not go out cut. */
	if (n < 0 || (size_t)n >= sizeof(line)) {
		c->broken = EMSGSIZE;
		c->deadline = 0;
		return;
	}
	vr_smtpc_emit(c, line, (size_t)n);
}

size_t vr_smtpc_out_len(const struct vr_smtpc *c)
{
	return c->tx.len + (c->tls ? vr_tls_pending(c->tls) : 0);
}

void vr_smtpc_set_timer(struct vr_smtpc *c, uint32_t ms, uint64_t now_ms)
{
	if (!c->broken)
		c->deadline = now_ms + ms;
}

/* --- the conversation --- */

static void send_ehlo(struct vr_smtpc *c, uint64_t now)
{
	c->caps = 0;
	c->size_limit = 0;
	c->state = S_EHLO;
	vr_smtpc_set_timer(c, c->to.helo, now);
	vr_smtpc_emitf(c, "EHLO %s\r\n", c->helo);
}

static void send_quit(struct vr_smtpc *c, uint64_t now)
{
	c->state = S_QUIT;
	vr_smtpc_set_timer(c, c->to.helo, now);
	vr_smtpc_emit(c, "QUIT\r\n", 6);
}

void vr_smtpc_idle(struct vr_smtpc *c, uint64_t now_ms)
{
	c->state = S_IDLE;
	c->deadline = c->broken ? 0 : UINT64_MAX;
	if (c->msg) {
		vr_smtpc_msg_start(c, now_ms);
		return;
	}
	if (c->quit_asked || (c->max_msgs && c->msgs >= c->max_msgs)) {
		send_quit(c, now_ms);
		return;
	}
	c->ops->ready(c->owner);
}

static void on_greeting(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now)
{
	if (r->code != 220) {
		fail_reply(c, "refused to talk to me", r);
		return;
	}
	send_ehlo(c, now);
}

/* After EHLO or HELO: STARTTLS if we should, else ready for mail. */
static void helo_done(struct vr_smtpc *c, uint64_t now)
{
	if (c->tls || c->tls_mode == VR_SMTPC_TLS_NONE) {
		vr_smtpc_idle(c, now);
		return;
	}
	if (c->caps & VR_SMTPC_CAP_STARTTLS) {
		c->state = S_STARTTLS;
		vr_smtpc_set_timer(c, c->to.helo, now);
		vr_smtpc_emit(c, "STARTTLS\r\n", 10);
		return;
	}
	if (c->tls_mode == VR_SMTPC_TLS_DANE) {
		fail_local(c, 421, "4.7.10",
			   "TLS is required (DANE TLSA records), but was not offered by host %s",
			   c->peer);
		return;
	}
	vr_smtpc_idle(c, now);
}

static void on_ehlo(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now)
{
	if (r->code >= 500 && r->code < 600) {
		/* RFC 5321 3.2: a server that does not know EHLO gets HELO. */
		c->state = S_HELO;
		vr_smtpc_set_timer(c, c->to.helo, now);
		vr_smtpc_emitf(c, "HELO %s\r\n", c->helo);
		return;
	}
	if (!vr_smtpc_reply_ok(r)) {
		fail_reply(c, "refused EHLO", r);
		return;
	}
	c->caps |= VR_SMTPC_CAP_ESMTP;
	helo_done(c, now);
}

static void on_helo(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now)
{
	if (!vr_smtpc_reply_ok(r)) {
		fail_reply(c, "refused HELO", r);
		return;
	}
	c->caps = 0;
	helo_done(c, now);
}

/* Reads "SIZE n" and the other keywords off an EHLO reply's lines. */
static void caps_parse(struct vr_smtpc *c, const struct vr_smtpc_rp *p, const uint8_t *buf)
{
	for (unsigned i = 1; i < p->n_lines; i++) {
		const char *s = (const char *)buf + p->line[i].off;
		size_t n = p->line[i].len, kw = 0;

		while (kw < n && s[kw] != ' ')
			kw++;
		for (size_t k = 0; k < VR_ARRAY_SIZE(ehlo_caps); k++) {
			if (strlen(ehlo_caps[k].name) != kw || strncasecmp(s, ehlo_caps[k].name, kw))
				continue;
			c->caps |= ehlo_caps[k].cap;
			if (ehlo_caps[k].cap != VR_SMTPC_CAP_SIZE)
				break;
			/* "SIZE" alone or "SIZE 0": no fixed limit (RFC 1870). */
			uint64_t v = 0;
			for (size_t d = kw + 1; d < n && s[d] >= '0' && s[d] <= '9'; d++)
				v = v > (UINT64_MAX - 9) / 10 ? UINT64_MAX
							      : v * 10 + (uint64_t)(s[d] - '0');
			c->size_limit = v;
			break;
		}
	}
}

static void tls_established(struct vr_smtpc *c, uint64_t now)
{
	c->tls_verified = vr_tls_dane_verified(c->tls);
	/* RFC 3207 4.2: forget everything learnt before TLS. */
	send_ehlo(c, now);
}

static void handshake_step(struct vr_smtpc *c, uint64_t now)
{
	int rc = vr_tls_handshake(c->tls);

	tls_pump(c);
	if (rc == -EAGAIN)
		return;
	if (rc < 0) {
		fail_local(c, 421, "4.7.5", "TLS handshake with %s failed: %s", c->peer,
			   vr_tls_error(c->tls));
		return;
	}
	tls_established(c, now);
}

static int dane_setup(struct vr_smtpc *c)
{
	int rc = vr_tls_dane_enable(c->tls, c->sni[0] ? c->sni : c->peer);

	if (rc < 0)
		return rc;
	/* Unusable records (PKIX usages, unknown types) are skipped: with
	 * none left, RFC 7672 2.2 still wants TLS, unauthenticated. */
	for (size_t i = 0; i < c->n_tlsa; i++) {
		const struct vr_smtpc_tlsa *t = &c->tlsa[i];
		if (t->usage != 2 && t->usage != 3)
			continue;
		rc = vr_tls_dane_tlsa_add(c->tls, t->usage, t->selector, t->mtype, t->data, t->len);
		if (rc == -ENOMEM)
			return rc;
	}
	return 0;
}

static void on_starttls(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now)
{
	if (r->code != 220) {
		if (c->tls_mode == VR_SMTPC_TLS_DANE) {
			fail_reply(c, "refused STARTTLS, which DANE requires", r);
			return;
		}
		/* Opportunistic: carry on in plaintext, as Postfix does. */
		vr_smtpc_idle(c, now);
		return;
	}
	/*
	 * CVE-2011-0411, client side: whatever arrived behind the 220 was
	 * not protected by TLS, yet would be read as answers to the commands
	 * we send under it. A man in the middle put it there.
	 */
	if (c->rx.len > 0) {
		fail_local(c, 421, "4.7.0",
			   "host %s sent %zu bytes after its STARTTLS reply, before the TLS "
			   "handshake: plaintext response injection (CVE-2011-0411 class); "
			   "connection dropped", c->peer, c->rx.len);
		return;
	}
	c->tls = vr_tls_new(c->tls_ctx, false, c->sni[0] ? c->sni : NULL);
	if (!c->tls || (c->tls_mode == VR_SMTPC_TLS_DANE && dane_setup(c) < 0)) {
		fail_local(c, 451, "4.3.0", "local error: cannot start TLS: out of memory");
		return;
	}
	c->state = S_HANDSHAKE;
	vr_smtpc_set_timer(c, c->to.tls, now);
	handshake_step(c, now);
}

static void on_unexpected(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now)
{
	char what[128];

	snprintf(what, sizeof(what), "sent a reply while we were %s", phase(c));
	fail_reply(c, what, r);
}

static void on_quit(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now)
{
	c->state = S_DONE;
	c->deadline = UINT64_MAX;
	if (c->tls) {
		vr_tls_shutdown(c->tls);
		tls_pump(c);
	}
	c->ops->closed(c->owner, r);
}

/* --- input --- */

/* Parses and dispatches every complete reply in rx. */
static void process(struct vr_smtpc *c, uint64_t now)
{
	while (c->state != S_DONE && c->rx.len > 0 && !c->broken) {
		const uint8_t *buf = vr_buf_head(&c->rx);
		struct vr_smtpc_reply r;
		size_t used;
		int rc = vr_smtpc_rp_parse(&c->rp, buf, c->rx.len, &used);

		if (rc == VR_AGAIN)
			return;
		if (rc == VR_ERR) {
			char q[96];
			size_t ln = strcspn((const char *)buf + c->rp.line_start, "\r\n");
			vr_log_quote(q, sizeof(q), (const char *)buf + c->rp.line_start,
				     VR_MIN(ln, c->rx.len - c->rp.line_start));
			fail_local(c, 421, "4.5.0", "malformed reply from %s while %s: %s: %s",
				   c->peer, phase(c), c->rp.err, q);
			return;
		}
		vr_smtpc_rp_copy(&c->rp, buf, &r);
		if (c->state == S_EHLO && vr_smtpc_reply_ok(&r))
			caps_parse(c, &c->rp, buf);
		vr_buf_consume(&c->rx, used);
		vr_smtpc_rp_init(&c->rp, c->caps & VR_SMTPC_CAP_ENHANCED);
		states[c->state].reply(c, &r, now);
	}
}

static void tls_input(struct vr_smtpc *c, uint64_t now)
{
	if (c->state == S_HANDSHAKE) {
		handshake_step(c, now);
		if (c->state == S_HANDSHAKE || c->state == S_DONE)
			return;
	}
	while (c->state != S_DONE && !c->broken) {
		size_t room = SMTPC_RX_MAX - c->rx.len;
		uint8_t *w = vr_buf_reserve(&c->rx, VR_MIN(room, (size_t)TLS_READ_CHUNK));
		if (!w || room == 0) {
			fail_local(c, 451, "4.3.0", "local error: no room for the reply of %s",
				   c->peer);
			return;
		}
		ssize_t n = vr_tls_read(c->tls, w, VR_MIN(room, (size_t)TLS_READ_CHUNK));
		tls_pump(c);
		if (n == 0)
			return;
		if (n == -EPIPE) {
			vr_smtpc_rx_eof(c, 0, now);
			return;
		}
		if (n < 0) {
			fail_local(c, 421, "4.7.5", "TLS failure with %s while %s: %s", c->peer,
				   phase(c), vr_tls_error(c->tls));
			return;
		}
		vr_buf_commit(&c->rx, (size_t)n);
		process(c, now);
	}
}

size_t vr_smtpc_rx_space(const struct vr_smtpc *c)
{
	if (c->state == S_DONE || c->state == S_CONNECT || c->broken)
		return 0;
	if (c->tls)
		return vr_smtpc_out_len(c) >= SMTPC_TX_MAX ? 0 : TLS_READ_CHUNK;
	return SMTPC_RX_MAX - c->rx.len;
}

void vr_smtpc_rx(struct vr_smtpc *c, const void *p, size_t n, uint64_t now_ms)
{
	if (c->state == S_DONE || n == 0)
		return;
	if (c->tls) {
		if (vr_tls_feed(c->tls, p, n) < 0) {
			fail_local(c, 451, "4.3.0", "local error: out of memory");
			return;
		}
		tls_input(c, now_ms);
		return;
	}
	if (vr_buf_append(&c->rx, p, n) < 0) {
		fail_local(c, 451, "4.3.0", "local error: no room for the reply of %s", c->peer);
		return;
	}
	process(c, now_ms);
}

void vr_smtpc_rx_eof(struct vr_smtpc *c, int err, uint64_t now_ms)
{
	struct vr_smtpc_reply r;

	switch (c->state) {
	case S_DONE:
		return;
	case S_QUIT:
		/* Some servers close without answering QUIT: nothing is lost. */
		vr_smtpc_local(&r, 221, "2.0.0", "%s closed the connection after QUIT", c->peer);
		on_quit(c, &r, now_ms);
		return;
	case S_CONNECT:
		fail_local(c, 421, "4.4.1", "connect to %s: %s", c->peer,
			   strerror(err ? err : ECONNREFUSED));
		return;
	default:
		fail_local(c, 421, "4.4.2", "lost connection with %s while %s%s%s", c->peer, phase(c),
			   err ? ": " : "", err ? strerror(err) : "");
		return;
	}
}

/* --- time --- */

void vr_smtpc_tick(struct vr_smtpc *c, uint64_t now_ms)
{
	struct vr_smtpc_reply r;

	if (c->state == S_DONE)
		return;
	if (c->broken) {
		fail_local(c, 451, "4.3.0", "local error talking to %s: %s", c->peer,
			   strerror(c->broken));
		return;
	}
	if (c->refuse_pending) {
		vr_smtpc_msg_refused(c, now_ms);
		return;
	}
	if (now_ms < c->deadline)
		return;
	switch (c->state) {
	case S_QUIT:
		vr_smtpc_local(&r, 221, "2.0.0", "%s did not answer QUIT in time", c->peer);
		on_quit(c, &r, now_ms);
		return;
	case S_CONNECT:
		fail_local(c, 421, "4.4.1", "connect to %s: %s", c->peer, strerror(ETIMEDOUT));
		return;
	default:
		fail_local(c, 421, "4.4.2", "conversation with %s timed out while %s", c->peer,
			   phase(c));
		return;
	}
}

uint64_t vr_smtpc_deadline(const struct vr_smtpc *c)
{
	if (c->state != S_DONE && (c->broken || c->refuse_pending))
		return 0;
	return c->deadline;
}

size_t vr_smtpc_tx_peek(const struct vr_smtpc *c, const uint8_t **p)
{
	*p = vr_buf_head(&c->tx);
	return c->tx.len;
}

void vr_smtpc_tx_consume(struct vr_smtpc *c, size_t n, uint64_t now_ms)
{
	vr_buf_consume(&c->tx, n);
	tls_pump(c);
	if (c->state == S_TXN || c->state == S_BODY)
		vr_smtpc_msg_pump(c, now_ms);
}

bool vr_smtpc_done(const struct vr_smtpc *c)
{
	return c->state == S_DONE;
}

/* --- the owner's side --- */

int vr_smtpc_send(struct vr_smtpc *c, struct vr_smtpc_msg *msg, uint64_t now_ms)
{
	if (c->state == S_DONE || c->state == S_QUIT || c->quit_asked)
		return -EPIPE;
	if (c->msg)
		return -EBUSY;
	if (!msg || !msg->from || !msg->rcpts || msg->n_rcpts == 0 || !msg->body)
		return -EINVAL;
	/* Whatever ends the message, from now on, writes each reply anew. */
	for (size_t i = 0; i < msg->n_rcpts; i++)
		memset(&msg->rcpts[i].reply, 0, sizeof(msg->rcpts[i].reply));
	c->msg = msg;
	/* Behind an end of data whose reply is due: pipelined after it. */
	if (c->state == S_IDLE || (c->state == S_DOT && c->dot_msg))
		vr_smtpc_msg_start(c, now_ms);
	return 0;
}

void vr_smtpc_quit(struct vr_smtpc *c, uint64_t now_ms)
{
	c->quit_asked = true;
	if (c->state == S_IDLE && !c->msg)
		send_quit(c, now_ms);
}

void vr_smtpc_connecting(struct vr_smtpc *c, uint64_t now_ms)
{
	c->state = S_CONNECT;
	vr_smtpc_set_timer(c, c->to.connect, now_ms);
}

void vr_smtpc_connected(struct vr_smtpc *c, uint64_t now_ms)
{
	c->state = S_GREETING;
	vr_smtpc_set_timer(c, c->to.greeting, now_ms);
}

/* --- life cycle --- */

static void peer_text(struct vr_smtpc *c, const char *name, const struct sockaddr *sa)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		port = ntohs(in->sin_port);
	} else if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		port = ntohs(in6->sin6_port);
	}
	snprintf(c->peer, sizeof(c->peer), "%s[%s]:%u", name ? name : "", ip, port);
}

/* A name we may put on the wire: printable ASCII, no blanks. */
static bool word_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n >= max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] >= 0x7f)
			return false;
	return true;
}

static int copy_tlsa(struct vr_smtpc *c, const struct vr_smtpc_tlsa *t, size_t n)
{
	size_t bytes = n * sizeof(*t);

	for (size_t i = 0; i < n; i++)
		bytes += t[i].len;
	c->tlsa = malloc(bytes);
	if (!c->tlsa)
		return -ENOMEM;
	uint8_t *data = (uint8_t *)(c->tlsa + n);
	for (size_t i = 0; i < n; i++) {
		c->tlsa[i] = t[i];
		c->tlsa[i].data = data;
		memcpy(data, t[i].data, t[i].len);
		data += t[i].len;
	}
	c->n_tlsa = n;
	return 0;
}

struct vr_smtpc *vr_smtpc_new(const struct vr_smtpc_params *p, uint64_t now_ms)
{
	struct in6_addr a6;
	struct in_addr a4;

	if (!p->helo_name || !word_ok(p->helo_name, sizeof(((struct vr_smtpc *)0)->helo)) ||
	    !p->ops || !p->ops->ready || !p->ops->msg_done || !p->ops->closed ||
	    (p->tls_mode != VR_SMTPC_TLS_NONE && !p->tls) ||
	    (p->tls_mode == VR_SMTPC_TLS_DANE && (!p->tlsa || p->n_tlsa == 0)) ||
	    (p->peer_name && !word_ok(p->peer_name, sizeof(((struct vr_smtpc *)0)->sni)))) {
		errno = EINVAL;
		return NULL;
	}
	struct vr_smtpc *c = calloc(1, sizeof(*c));
	if (!c) {
		errno = ENOMEM;
		return NULL;
	}
	if (p->tls_mode == VR_SMTPC_TLS_DANE && copy_tlsa(c, p->tlsa, p->n_tlsa) < 0) {
		free(c);
		errno = ENOMEM;
		return NULL;
	}
	c->ops = p->ops;
	c->owner = p->owner;
	c->tls_ctx = p->tls;
	c->tls_mode = p->tls_mode;
	c->max_msgs = p->max_msgs;
	c->to = rfc_timeouts;
	for (size_t i = 0; p->timeouts && i < VR_ARRAY_SIZE(timeout_fields); i++) {
		uint32_t v;
		memcpy(&v, (const char *)p->timeouts + timeout_fields[i], sizeof(v));
		if (v)
			memcpy((char *)&c->to + timeout_fields[i], &v, sizeof(v));
	}
	snprintf(c->helo, sizeof(c->helo), "%s", p->helo_name);
	/* SNI carries host names only (RFC 6066 3), never an address. */
	if (p->peer_name && inet_pton(AF_INET, p->peer_name, &a4) != 1 &&
	    inet_pton(AF_INET6, p->peer_name, &a6) != 1)
		snprintf(c->sni, sizeof(c->sni), "%s", p->peer_name);
	peer_text(c, p->peer_name, p->peer);
	vr_buf_init(&c->rx, SMTPC_RX_MAX);
	vr_buf_init(&c->tx, SMTPC_TX_MAX);
	vr_smtpc_rp_init(&c->rp, false);
	c->deadline = UINT64_MAX;
	vr_smtpc_connected(c, now_ms);
	return c;
}

void vr_smtpc_free(struct vr_smtpc *c)
{
	if (!c)
		return;
	vr_tls_free(c->tls);
	vr_buf_free(&c->rx);
	vr_buf_free(&c->tx);
	free(c->tlsa);
	free(c);
}

/* --- for log lines --- */

unsigned vr_smtpc_caps(const struct vr_smtpc *c)
{
	return c->caps;
}

uint64_t vr_smtpc_size_limit(const struct vr_smtpc *c)
{
	return c->size_limit;
}

const char *vr_smtpc_peer_text(const struct vr_smtpc *c)
{
	return c->peer;
}

const char *vr_smtpc_tls_version(const struct vr_smtpc *c)
{
	return c->tls && vr_tls_established(c->tls) ? vr_tls_version(c->tls) : NULL;
}

const char *vr_smtpc_tls_cipher(const struct vr_smtpc *c)
{
	return c->tls && vr_tls_established(c->tls) ? vr_tls_cipher(c->tls) : NULL;
}

bool vr_smtpc_tls_verified(const struct vr_smtpc *c)
{
	return c->tls_verified;
}

unsigned vr_smtpc_msgs_sent(const struct vr_smtpc *c)
{
	return c->msgs;
}
