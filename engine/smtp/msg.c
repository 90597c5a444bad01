/*
 * msg.c - the envelope and the message: recipients kept per transaction,
 * DATA and BDAT content streamed into a spool transaction behind our
 * Received header, the commit and its reply.
 *
 * The content's header section is scanned as it streams past (hdr.c), and
 * access.c judges its From once the section ends; a message refused for
 * it is no longer stored, and its refusal is the reply to the message.
 *
 * A 250 is only ever said from vr_session_commit_done() with status 0, i.e.
 * after the spool made the message durable (RFC 5321 §6.1); every other
 * path ends in a 4xx/5xx and an aborted transaction. The quota
 * reservations follow the same fork: confirmed with the 250, released on
 * every other path.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vmrelay/clock.h"
#include "vmrelay/log.h"

#include "session.h"

void vr_smtp_txn_reset(struct vr_session *s)
{
	if (s->txn) {
		vr_spool_txn_abort(s->txn);
		s->txn = NULL;
	}
	/* RSET, EHLO, STARTTLS, a refused or failed message: nothing sent */
	vr_smtp_quota_end(s, false);
	s->held = false;
	s->hdr_open = false;
	s->denied = false;
	s->in_mail = false;
	s->bdat = false;
	s->smtputf8 = false;
	s->body8 = false;
	s->n_rcpt = 0;
	s->account[0] = '\0';
	vr_buf_reset(&s->env);
}

int vr_smtp_env_add(struct vr_session *s, unsigned slot, const uint8_t *addr, size_t len)
{
	uint32_t off = (uint32_t)vr_buf_len(&s->env);
	static const uint8_t nul;
	int rc = vr_buf_append(&s->env, addr, len);

	if (rc == 0)
		rc = vr_buf_append(&s->env, &nul, 1);
	if (rc < 0)
		return rc;
	s->rcpt_off[slot] = off;
	return 0;
}

static const char *env_addr(const struct vr_session *s, unsigned slot)
{
	return (const char *)vr_buf_head(&s->env) + s->rcpt_off[slot];
}

/* RFC 5322 §3.3 date-time in UTC, independent of the locale. */
static void rfc5322_date(char *out, size_t len, uint64_t us)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = (time_t)(us / 1000000u);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(out, len, "%s, %d %s %d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
		 months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* RFC 3848 and RFC 6531 §3.7.3 "with" protocol types, [utf8][tls][auth]. */
static const char *const with_types[2][2][2] = {
	{ { "ESMTP", "ESMTPA" }, { "ESMTPS", "ESMTPSA" } },
	{ { "UTF8SMTP", "UTF8SMTPA" }, { "UTF8SMTPS", "UTF8SMTPSA" } },
};

/*
 * RFC 5321 §4.4, folded as Postfix does:
 *   Received: from HELO ([IP])
 *           by HOST (vmrelay) with ESMTPS id QID
 *           for <RCPT>; DATE
 * "for" only names a single recipient: with several, each copy would
 * show every recipient, Bcc ones included (RFC 5321 §7.2).
 */
static int received_write(struct vr_session *s, uint64_t us)
{
	char hdr[2048], date[64];
	const char *with = s->esmtp ? with_types[s->smtputf8][s->tls_on][s->authed] : "SMTP";
	int n;

	rfc5322_date(date, sizeof(date), us);
	if (s->n_rcpt == 1)
		n = snprintf(hdr, sizeof(hdr), "Received: from %s (%s)\r\n\tby %s (vmrelay) "
			     "with %s id %s\r\n\tfor <%s>; %s\r\n", s->helo, s->client_literal,
			     s->cfg->hostname, with, vr_spool_txn_qid(s->txn), env_addr(s, 1), date);
	else
		n = snprintf(hdr, sizeof(hdr), "Received: from %s (%s)\r\n\tby %s (vmrelay) "
			     "with %s id %s;\r\n\t%s\r\n", s->helo, s->client_literal,
			     s->cfg->hostname, with, vr_spool_txn_qid(s->txn), date);
	if (n < 0 || (size_t)n >= sizeof(hdr))
		return -EINVAL;
	return vr_spool_txn_write(s->txn, hdr, (size_t)n);
}

/* The header section is over (rc from hdr.c): judge its From. */
static void msg_header_end(struct vr_session *s, int rc)
{
	s->hdr_open = false;
	vr_smtp_access_header(s, rc);
}

static int msg_sink(void *arg, const void *p, size_t n)
{
	struct vr_session *s = arg;

	if (s->hdr_open) {
		size_t used;
		int rc = vr_smtp_hdr_parse(&s->hdr, p, n, &used);
		if (rc != VR_AGAIN)
			msg_header_end(s, rc);
	}
	/* A refused message is read to its end, but storing it is wasted. */
	if (s->denied)
		return 0;
	return vr_spool_txn_write(s->txn, p, n);
}

int vr_smtp_msg_begin(struct vr_session *s, bool dot)
{
	uint64_t now_us = vr_clock_wall_us();

	for (unsigned i = 0; i < s->n_rcpt; i++)
		s->rcpt_ptr[i] = env_addr(s, i + 1);
	const struct vr_spool_envelope env = {
		.account = s->account,
		.client = s->client,
		.helo = s->helo,
		.mail_from = env_addr(s, 0),
		.rcpts = s->rcpt_ptr,
		.n_rcpts = s->n_rcpt,
		.flags = (s->body8 ? VR_SPOOL_8BITMIME : 0) | (s->smtputf8 ? VR_SPOOL_SMTPUTF8 : 0) |
			 (s->tls_on ? VR_SPOOL_TLS : 0) | (s->authed ? VR_SPOOL_AUTH : 0) |
			 (s->held ? VR_SPOOL_HOLD : 0),
		.received_us = now_us,
	};
	s->txn = vr_spool_txn_begin(s->srv->spool, s->worker, &env, s);
	if (!s->txn)
		return -ENOMEM;
	int rc = received_write(s, now_us);
	if (rc < 0) {
		vr_spool_txn_abort(s->txn);
		s->txn = NULL;
		return rc;
	}
	vr_smtp_data_init(&s->data, dot, s->cfg->max_message_size, msg_sink, s);
	vr_smtp_hdr_init(&s->hdr);
	s->hdr_open = true;
	s->denied = false;
	return 0;
}

/* The content was refused or could not be stored: say why, forget it. */
static void msg_refuse(struct vr_session *s)
{
	unsigned f = s->data.flags;

	vr_smtp_txn_reset(s);
	s->phase = VR_SMTP_CMD;
	if (f & VR_SMTP_DATA_BIG)
		vr_smtp_reply(s, VR_R_SIZE, s->cfg->max_message_size);
	else if (f & VR_SMTP_DATA_NUL)
		vr_smtp_reply(s, VR_R_MSG_NUL);
	else if (f & VR_SMTP_DATA_LONG)
		vr_smtp_reply(s, VR_R_MSG_LONG_LINE);
	else
		vr_smtp_reply(s, VR_R_QUEUE_ERROR);
}

static void msg_smuggling(struct vr_session *s)
{
	vr_smtp_reply(s, s->data.err == VR_SMTP_DATA_BARE_LF ? VR_R_BARE_LF : VR_R_BARE_CR,
		      s->cfg->hostname);
}

/* End of content: refuse, or hand it to the spool and wait. */
static void msg_end(struct vr_session *s)
{
	if (s->data.flags) {
		msg_refuse(s);
		return;
	}
	/* a message of header fields only, or none */
	if (s->hdr_open)
		msg_header_end(s, vr_smtp_hdr_finish(&s->hdr));
	if (s->denied) {
		/* replied before the reset, which forgets the verdict */
		s->phase = VR_SMTP_CMD;
		vr_smtp_reply(s, s->deny, s->deny_text, s->deny_more);
		vr_smtp_txn_reset(s);
		return;
	}
	s->inflight = s->txn;
	s->txn = NULL;
	s->phase = VR_SMTP_COMMIT;
	vr_spool_txn_commit(s->inflight);
}

size_t vr_smtp_data_input(struct vr_session *s, const uint8_t *p, size_t n)
{
	size_t used;
	int rc = vr_smtp_data_parse(&s->data, p, n, &used);

	if (rc == VR_ERR)
		msg_smuggling(s);
	else if (rc == VR_OK)
		msg_end(s);
	return used;
}

static void bdat_chunk_end(struct vr_session *s)
{
	s->phase = VR_SMTP_CMD;
	if (s->bdat_discard)
		return;        /* the BDAT command was answered already */
	if (s->bdat_last && vr_smtp_data_finish(&s->data) == VR_ERR) {
		msg_smuggling(s);
		return;
	}
	/* RFC 3030 §3: a chunk over the limit fails the transaction now. */
	if (s->data.flags & (VR_SMTP_DATA_BIG | VR_SMTP_DATA_STORE)) {
		msg_refuse(s);
		return;
	}
	if (!s->bdat_last) {
		vr_smtp_reply(s, VR_R_BDAT_OK, s->bdat_size);
		return;
	}
	msg_end(s);
}

void vr_smtp_bdat_chunk(struct vr_session *s, uint64_t n, bool last, bool discard)
{
	s->bdat_size = s->bdat_left = n;
	s->bdat_last = last;
	s->bdat_discard = discard;
	s->phase = VR_SMTP_BDAT;
	if (n == 0)
		bdat_chunk_end(s);
}

size_t vr_smtp_bdat_input(struct vr_session *s, const uint8_t *p, size_t n)
{
	size_t take = (size_t)VR_MIN((uint64_t)n, s->bdat_left), used;

	if (!s->bdat_discard && vr_smtp_data_parse(&s->data, p, take, &used) == VR_ERR) {
		msg_smuggling(s);
		return used;
	}
	s->bdat_left -= take;
	if (s->bdat_left == 0)
		bdat_chunk_end(s);
	return take;
}

static void log_accepted(struct vr_session *s, const char *qid)
{
	char from[2 * VR_SMTP_PATH_MAX + 8];
	const char *sender = env_addr(s, 0);

	vr_log_info("event=accepted qid=%s account=%s client=%s from=%s nrcpt=%u size=%" PRIu64
		    " tls=%s held=%s", qid, s->account, s->client,
		    vr_log_quote(from, sizeof(from), sender, strlen(sender)), s->n_rcpt,
		    s->data.size, s->tls_on ? vr_tls_version(s->tls) : "no", s->held ? "yes" : "no");
}

void vr_session_commit_done(void *cookie, int status, const char *qid)
{
	struct vr_session *s = cookie;

	s->inflight = NULL;
	/* durable: the reservations become sent mail; else they go back */
	vr_smtp_quota_end(s, status == 0);
	s->phase = VR_SMTP_CMD;
	s->idle_at = s->now;   /* the wait was ours, not the client's */
	if (status == 0) {
		vr_smtp_count(&s->stats->messages_accepted, 1);
		if (s->held)
			vr_smtp_count(&s->stats->messages_held, 1);
		vr_smtp_count(&s->stats->recipients_accepted, s->n_rcpt);
		vr_smtp_count(&s->stats->bytes_accepted, s->data.size);
		log_accepted(s, qid);
		vr_smtp_reply(s, VR_R_QUEUED, qid);
	} else {
		vr_smtp_reply(s, status == -ENOSPC ? VR_R_QUEUE_FULL : VR_R_QUEUE_ERROR);
	}
	vr_smtp_txn_reset(s);
	/* Commands pipelined behind the message run now. */
	vr_smtp_run(s);
	if (s->kick)
		s->kick(s->owner);
}
