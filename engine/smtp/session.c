/*
 * session.c - an SMTP server session's life: bytes in, bytes out, TLS,
 * time (see vmrelay/smtp.h for the transport's side of the contract).
 *
 * Input is used where it lies when possible: in plaintext, a segment that
 * finds nothing buffered is parsed (and DATA decoded) straight from the
 * transport's memory, and only an unfinished line or input that must wait
 * (a commit in flight, too much unsent output) is copied into rx. Under
 * TLS, plaintext is pulled from OpenSSL into rx only while the session can
 * use it, so a stalled session holds at most rx plus what TLS buffers.
 *
 * The session never reads the clock for protocol decisions; now_ms comes
 * from the caller. Only the Received date and the spool's timestamp use
 * wall time (msg.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/log.h"
#include "vmrelay/tls.h"

#include "session.h"

/* rx: one TLS record's worth, and far more than a command line. */
#define RX_MAX        (16u * 1024)
/* Replies past this much unsent output stop input (rx_space 0). */
#define TX_HIWAT      (64u * 1024)
/* Hard ceilings; what one command or one TLS flush adds past the mark. */
#define OUT_MAX       (TX_HIWAT + 16u * 1024)
#define TX_MAX        (2u * TX_HIWAT + 16u * 1024)
/* Plaintext pulled from TLS per read. */
#define TLS_READ      4096u

static void session_banner(struct vr_session *s)
{
	s->phase = VR_SMTP_CMD;
	s->idle_at = s->now;
	vr_smtp_reply(s, VR_R_BANNER, s->cfg->hostname);
}

static bool tx_high(const struct vr_session *s)
{
	return vr_buf_len(&s->tx) + vr_buf_len(&s->out) >= TX_HIWAT;
}

/* Input cannot be used now: it stays where it is. */
static bool session_blocked(const struct vr_session *s)
{
	return s->phase == VR_SMTP_COMMIT || s->phase == VR_SMTP_RCPT_WAIT ||
	       s->phase == VR_SMTP_CLOSED || tx_high(s);
}

static void session_fail(struct vr_session *s, const char *what)
{
	vr_log_warn("event=session_error client=%s error=%s", s->client, what);
	vr_smtp_close(s);
}

/* TLS broke: nothing more can be said on this connection. */
static void session_tls_failed(struct vr_session *s)
{
	char quoted[256];
	const char *e = vr_tls_error(s->tls);

	vr_log_info("event=tls_error client=%s error=%s", s->client,
		    vr_log_quote(quoted, sizeof(quoted), e, strlen(e)));
	if (s->txn) {
		vr_spool_txn_abort(s->txn);
		s->txn = NULL;
	}
	s->phase = VR_SMTP_CLOSED;
}

static void client_text(struct vr_session *s, const struct sockaddr *sa)
{
	const void *a = NULL;
	int family = sa ? sa->sa_family : AF_UNSPEC;

	if (family == AF_INET) {
		a = &((const struct sockaddr_in *)sa)->sin_addr;
		memcpy(&s->peer, sa, sizeof(struct sockaddr_in));
	} else if (family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		memcpy(&s->peer, sa, sizeof(struct sockaddr_in6));
		a = a6;
		/* IPv4-mapped: log and write it as the IPv4 address it is. */
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			family = AF_INET;
			a = &a6->s6_addr[12];
		}
	}
	if (!a || !inet_ntop(family, a, s->client, sizeof(s->client))) {
		strcpy(s->client, "unknown");
		strcpy(s->client_literal, "[unknown]");
		return;
	}
	snprintf(s->client_literal, sizeof(s->client_literal),
		 family == AF_INET ? "[%s]" : "[IPv6:%s]", s->client);
}

struct vr_session *vr_session_new(const struct vr_session_params *p, uint64_t now_ms)
{
	const struct vr_config *cfg = p->srv->cfg;
	unsigned slots = (cfg->max_recipients ? cfg->max_recipients : 1) + 1;
	struct vr_session *s;

	if (p->implicit_tls && !p->srv->tls)
		return errno = EINVAL, NULL;
	/* One block: the session, then its per-recipient arrays, widest
	 * alignment first, so a session is one allocation and one free. */
	s = calloc(1, sizeof(*s) + slots * (sizeof(*s->tickets) + sizeof(*s->rcpt_ptr) +
					    sizeof(*s->rcpt_off)));
	if (!s)
		return errno = ENOMEM, NULL;
	s->tickets = (struct vr_rl_ticket *)(s + 1);
	s->rcpt_ptr = (const char **)(s->tickets + slots);
	s->rcpt_off = (uint32_t *)(s->rcpt_ptr + slots);
	s->srv = p->srv;
	s->cfg = cfg;
	s->stats = &p->srv->stats[p->worker];
	s->worker = p->worker;
	s->kick = p->kick;
	s->owner = p->owner;
	s->now = s->idle_at = now_ms;
	s->greet_at = now_ms + cfg->greet_pause_ms;
	s->phase = VR_SMTP_GREET;
	client_text(s, p->peer);
	vr_buf_init(&s->rx, RX_MAX);
	vr_buf_init(&s->out, OUT_MAX);
	vr_buf_init(&s->tx, TX_MAX);
	/* Every envelope address fits: the path limit bounds each of them. */
	vr_buf_init(&s->env, (size_t)slots * (VR_SMTP_PATH_MAX + 1));
	if (p->implicit_tls) {
		s->tls = vr_tls_new(p->srv->tls, true, NULL);
		if (!s->tls) {
			free(s);
			return errno = ENOMEM, NULL;
		}
		s->implicit_tls = true;
		s->phase = VR_SMTP_TLS;
	}
	vr_smtp_count(&s->stats->connections, 1);
	vr_smtp_count(&s->stats->sessions_active, 1);
	vr_log_debug("event=connect client=%s tls=%s", s->client, p->implicit_tls ? "implicit" : "no");
	return s;
}

void vr_session_free(struct vr_session *s)
{
	if (!s)
		return;
	/* The message stays committed; its completion finds nobody to tell,
	 * so its reservations count as sent now. Nothing else was sent. */
	if (s->inflight)
		vr_spool_txn_orphan(s->inflight);
	vr_smtp_quota_end(s, s->inflight != NULL);
	if (s->txn)
		vr_spool_txn_abort(s->txn);
	vr_log_debug("event=disconnect client=%s", s->client);
	vr_tls_free(s->tls);
	vr_buf_free(&s->rx);
	vr_buf_free(&s->out);
	vr_buf_free(&s->tx);
	vr_buf_free(&s->env);
	vr_smtp_count(&s->stats->sessions_active, (uint64_t)-1);
	free(s);
}

void vr_smtp_write(struct vr_session *s, const char *line, size_t n)
{
	/* Once TLS is on, replies wait in out for one encryption per flush,
	 * so a pipelined group's replies share TLS records. */
	struct vr_buf *b = s->tls_on ? &s->out : &s->tx;
	uint8_t *w = vr_buf_reserve(b, n + 2);

	if (!w) {
		session_fail(s, "output_overflow");
		return;
	}
	memcpy(w, line, n);
	w[n] = '\r';
	w[n + 1] = '\n';
	vr_buf_commit(b, n + 2);
}

void vr_smtp_printf(struct vr_session *s, const char *fmt, ...)
{
	char line[VR_SMTP_LINE_MAX];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n >= 0)
		vr_smtp_write(s, line, VR_MIN((size_t)n, sizeof(line) - 3));
}

/* Moves replies through TLS and TLS output into tx. */
static void session_flush(struct vr_session *s)
{
	if (!s->tls)
		return;
	if (s->tls_on && vr_buf_len(&s->out)) {
		int rc = vr_tls_write(s->tls, vr_buf_head(&s->out), vr_buf_len(&s->out));
		vr_buf_reset(&s->out);
		if (rc < 0)
			session_tls_failed(s);
	}
	/* tx has room for all TLS makes of what out may hold (TX_MAX). */
	if (vr_tls_drain(s->tls, &s->tx) < 0)
		session_tls_failed(s);
}

void vr_smtp_close(struct vr_session *s)
{
	if (s->phase == VR_SMTP_CLOSED)
		return;
	if (s->txn) {
		vr_spool_txn_abort(s->txn);
		s->txn = NULL;
	}
	/* Slots go back now, not when the transport frees us; a message with
	 * the spool keeps its own until the spool answers. */
	if (!s->inflight)
		vr_smtp_quota_end(s, false);
	if (s->tls_on) {
		/* The last reply is encrypted before close_notify follows it. */
		session_flush(s);
		vr_tls_shutdown(s->tls);
	}
	s->phase = VR_SMTP_CLOSED;
	session_flush(s);
}

/* Forgets EHLO/HELO, AUTH and the transaction (after STARTTLS). */
static void session_forget(struct vr_session *s)
{
	vr_smtp_txn_reset(s);
	s->helo[0] = '\0';
	s->esmtp = false;
	s->authed = false;
	s->auth_id[0] = '\0';
}

void vr_smtp_starttls(struct vr_session *s)
{
	s->tls = vr_tls_new(s->srv->tls, true, NULL);
	if (!s->tls) {
		vr_smtp_reply(s, VR_R_TLS_TEMP);
		return;
	}
	/* Still plaintext: tls_on is false until the handshake completes. */
	vr_smtp_reply(s, VR_R_TLS_GO);
	s->phase = VR_SMTP_TLS;
}

/* The handshake completed. */
static void tls_ready(struct vr_session *s)
{
	s->tls_on = true;
	vr_smtp_count(&s->stats->tls_handshakes, 1);
	vr_log_debug("event=tls client=%s version=%s cipher=%s", s->client,
		     vr_tls_version(s->tls), vr_tls_cipher(s->tls));
	if (s->implicit_tls) {
		/* RFC 8314 §3.3: the banner comes encrypted, after the pause. */
		s->phase = VR_SMTP_GREET;
		if (s->now >= s->greet_at)
			session_banner(s);
		return;
	}
	/* RFC 3207 §4.2: nothing learnt before TLS survives it. */
	session_forget(s);
	s->phase = VR_SMTP_CMD;
	s->idle_at = s->now;
}

/* Pulls plaintext from TLS into rx while the session can use it. Returns
 * true if anything moved. */
static bool tls_pull(struct vr_session *s)
{
	bool progress = false;

	while (!session_blocked(s) && vr_buf_len(&s->rx) < RX_MAX) {
		size_t room = VR_MIN(RX_MAX - vr_buf_len(&s->rx), TLS_READ);
		uint8_t *w = vr_buf_reserve(&s->rx, room);
		if (!w) {
			session_fail(s, "out_of_memory");
			break;
		}
		ssize_t r = vr_tls_read(s->tls, w, room);
		if (r > 0) {
			vr_buf_commit(&s->rx, (size_t)r);
			progress = true;
		}
		if (s->phase == VR_SMTP_TLS && vr_tls_established(s->tls)) {
			tls_ready(s);
			progress = true;
		}
		if (r > 0)
			continue;
		if (r == -EPIPE)
			s->eof = true;         /* close_notify: like a TCP FIN */
		else if (r < 0)
			session_tls_failed(s);
		break;
	}
	session_flush(s);
	return progress;
}

static const enum vr_smtp_reply line_errors[] = {
	[VR_SMTP_LINE_LONG] = VR_R_LINE_TOO_LONG,
	[VR_SMTP_LINE_NUL] = VR_R_NUL,
	[VR_SMTP_LINE_BARE_LF] = VR_R_BARE_LF,
	[VR_SMTP_LINE_BARE_CR] = VR_R_BARE_CR,
};

/* One command line, or an AUTH continuation line. Returns octets used. */
static size_t session_line(struct vr_session *s, const uint8_t *p, size_t n)
{
	struct vr_smtp_cmdline cl;
	size_t used;
	int rc = vr_smtp_line_parse(&s->line, p, n, &used, &cl);

	if (rc == VR_AGAIN)
		return used;
	s->rest = n - used;
	if (rc == VR_ERR) {
		if (s->phase == VR_SMTP_AUTH)
			s->phase = VR_SMTP_CMD;
		vr_smtp_reply(s, line_errors[s->line.err], s->cfg->hostname);
		return used;
	}
	if (s->phase == VR_SMTP_AUTH)
		vr_smtp_auth_line(s, cl.text, cl.text_len);
	else
		vr_smtp_cmd(s, &cl);
	return used;
}

/* Uses as much of (p, n) as the session can now. Returns octets used. */
static size_t session_process(struct vr_session *s, const uint8_t *p, size_t n)
{
	size_t off = 0, used;

	while (off < n && !session_blocked(s)) {
		switch (s->phase) {
		case VR_SMTP_GREET:
			vr_smtp_reply(s, VR_R_PREGREET, s->cfg->hostname);
			return n;
		case VR_SMTP_CMD:
		case VR_SMTP_AUTH:
			used = session_line(s, p + off, n - off);
			break;
		case VR_SMTP_DATA:
			used = vr_smtp_data_input(s, p + off, n - off);
			break;
		case VR_SMTP_BDAT:
			used = vr_smtp_bdat_input(s, p + off, n - off);
			break;
		default:
			return off;
		}
		if (used == 0)
			break;
		off += used;
	}
	return off;
}

void vr_smtp_run(struct vr_session *s)
{
	for (;;) {
		bool progress = s->tls && s->phase != VR_SMTP_CLOSED && tls_pull(s);

		if (vr_buf_len(&s->rx) && !session_blocked(s)) {
			size_t used = session_process(s, vr_buf_head(&s->rx), vr_buf_len(&s->rx));
			vr_buf_consume(&s->rx, used);
			progress |= used > 0;
		}
		if (!progress)
			break;
	}
	session_flush(s);
	s->stalled = tx_high(s);
	/* The peer is gone and nothing it sent can run: an unfinished line or
	 * message is dropped (its transaction aborted). */
	if (s->eof && s->phase != VR_SMTP_COMMIT && !tx_high(s))
		vr_smtp_close(s);
}

int vr_session_rx(struct vr_session *s, const void *p, size_t n, uint64_t now_ms)
{
	s->now = now_ms;
	if (s->phase == VR_SMTP_CLOSED)
		return VR_ERR;
	if (n)
		s->idle_at = now_ms;
	if (s->tls) {
		if (vr_tls_feed(s->tls, p, n) < 0)
			session_fail(s, "out_of_memory");
	} else if (vr_buf_len(&s->rx) == 0) {
		size_t used = session_process(s, p, n);
		if (used < n && s->phase != VR_SMTP_CLOSED &&
		    vr_buf_append(&s->rx, (const uint8_t *)p + used, n - used) < 0)
			session_fail(s, "rx_overflow");
	} else if (vr_buf_append(&s->rx, p, n) < 0) {
		session_fail(s, "rx_overflow");
	}
	vr_smtp_run(s);
	return s->phase == VR_SMTP_CLOSED ? VR_ERR : VR_OK;
}

void vr_session_rx_eof(struct vr_session *s, uint64_t now_ms)
{
	s->now = now_ms;
	s->eof = true;
	vr_smtp_run(s);
}

void vr_session_tick(struct vr_session *s, uint64_t now_ms)
{
	uint64_t idle = s->cfg->idle_timeout_ms;

	s->now = now_ms;
	switch (s->phase) {
	case VR_SMTP_CLOSED:
	case VR_SMTP_COMMIT:
		return;
	case VR_SMTP_GREET:
		if (now_ms >= s->greet_at)
			session_banner(s);
		break;
	case VR_SMTP_RCPT_WAIT:
		vr_smtp_rcpt_wait(s);
		break;
	case VR_SMTP_TLS:
		if (idle && now_ms >= s->idle_at + idle) {
			/* Mid-handshake there is no channel for a 421. */
			vr_smtp_count(&s->stats->timeouts, 1);
			vr_smtp_close(s);
			return;
		}
		break;
	default:
		if (idle && now_ms >= s->idle_at + idle) {
			vr_smtp_reply(s, VR_R_TIMEOUT, s->cfg->hostname);
			return;
		}
		break;
	}
	vr_smtp_run(s);
}

uint64_t vr_session_deadline(const struct vr_session *s)
{
	uint64_t idle = s->cfg->idle_timeout_ms;

	switch (s->phase) {
	case VR_SMTP_CLOSED:
	case VR_SMTP_COMMIT:
		return UINT64_MAX;
	case VR_SMTP_GREET:
		return s->greet_at;
	case VR_SMTP_RCPT_WAIT:
		return vr_smtp_rcpt_wait_deadline(s);
	default:
		break;
	}
	/* Input waited for output to drain: once it has, run at once. */
	if (s->stalled && !tx_high(s))
		return 0;
	return idle ? s->idle_at + idle : UINT64_MAX;
}

size_t vr_session_rx_space(const struct vr_session *s)
{
	if (session_blocked(s))
		return 0;
	return RX_MAX - vr_buf_len(&s->rx);
}

size_t vr_session_tx_peek(const struct vr_session *s, const uint8_t **p)
{
	/* An empty vr_buf may have no memory at all: no pointer to offer. */
	*p = vr_buf_len(&s->tx) ? vr_buf_head(&s->tx) : NULL;
	return vr_buf_len(&s->tx);
}

void vr_session_tx_consume(struct vr_session *s, size_t n)
{
	vr_buf_consume(&s->tx, n);
}

bool vr_session_closing(const struct vr_session *s)
{
	return s->phase == VR_SMTP_CLOSED;
}
