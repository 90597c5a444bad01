/*
 * reply.c - the reply table and what each reply entails (see reply.h).
 *
 * Texts carry RFC 3463 enhanced status codes (RFC 2034: every 2xx/4xx/5xx
 * reply but the greeting and the EHLO/HELO answer) and say why: which
 * limit, which address. A reply's printf arguments are listed beside it.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/log.h"

#include "session.h"

#define R_ERROR  0x01u    /* a protocol error: counts towards max_errors */
#define R_CLOSE  0x02u    /* the session ends after it */

/* A number in a reply's text, as the compiler has it. */
#define STR(n) STR_(n)
#define STR_(n) #n

/* A counter in struct vr_smtp_stats, as offset + 1 so 0 means none. */
#define STAT(field) (offsetof(struct vr_smtp_stats, field) + 1)

struct reply_def {
	const char *text;      /* printf format, without CRLF */
	unsigned flags;
	const char *reason;    /* non-NULL: log "event=refused reason=..." */
	size_t stat;
};

static const struct reply_def replies[VR_R__COUNT] = {
	/* hostname */
	[VR_R_BANNER] = { .text = "220 %s ESMTP vmrelay" },
	[VR_R_PREGREET] = { .text = "554 5.5.1 %s protocol error: talked before the greeting",
		.flags = R_CLOSE, .reason = "pregreet", .stat = STAT(refused_pregreet) },
	[VR_R_TIMEOUT] = { .text = "421 4.4.2 %s timeout exceeded",
		.flags = R_CLOSE, .stat = STAT(timeouts) },
	[VR_R_TOO_MANY_ERRORS] = { .text = "421 4.7.0 %s too many errors",
		.flags = R_CLOSE, .reason = "errors" },
	[VR_R_BARE_LF] = { .text = "521 5.5.2 %s bare <LF> received: refused "
		"(SMTP smuggling protection)",
		.flags = R_CLOSE, .reason = "bare_lf", .stat = STAT(refused_smuggling) },
	[VR_R_BARE_CR] = { .text = "521 5.5.2 %s bare <CR> received: refused "
		"(SMTP smuggling protection)",
		.flags = R_CLOSE, .reason = "bare_cr", .stat = STAT(refused_smuggling) },
	[VR_R_BYE] = { .text = "221 2.0.0 %s closing connection",
		.flags = R_CLOSE },
	[VR_R_NOMEM] = { .text = "421 4.3.0 %s out of memory, closing connection",
		.flags = R_CLOSE, .reason = "memory" },

	[VR_R_OK] = { .text = "250 2.0.0 Ok" },
	[VR_R_LINE_TOO_LONG] = { .text = "500 5.5.2 line too long",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_NUL] = { .text = "500 5.5.2 NUL character in command",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_UNKNOWN] = { .text = "500 5.5.1 command unrecognized",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	/* usage */
	[VR_R_SYNTAX] = { .text = "501 5.5.4 syntax: %s",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_NEED_HELO] = { .text = "503 5.5.1 send EHLO or HELO first",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_HELO_BAD] = { .text = "501 5.5.4 invalid domain name in EHLO/HELO",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_HELP] = { .text = "214 2.0.0 commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY "
		"HELP STARTTLS AUTH" },
	[VR_R_VRFY] = { .text = "252 2.1.5 cannot VRFY user, but will accept message and "
		"attempt delivery" },
	[VR_R_EXPN] = { .text = "502 5.5.1 EXPN not supported",
		.flags = R_ERROR },

	[VR_R_TLS_GO] = { .text = "220 2.0.0 ready to start TLS" },
	[VR_R_TLS_UNAVAILABLE] = { .text = "502 5.5.1 STARTTLS not available",
		.flags = R_ERROR },
	[VR_R_TLS_ACTIVE] = { .text = "503 5.5.1 TLS already active",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_TLS_TEMP] = { .text = "454 4.7.0 TLS not available due to local problem" },
	/* hostname */
	[VR_R_TLS_INJECTION] = { .text = "554 5.5.1 %s protocol error: commands pipelined "
		"after STARTTLS", .flags = R_CLOSE, .reason = "starttls_injection",
		.stat = STAT(refused_starttls_injection) },

	[VR_R_AUTH_OK] = { .text = "235 2.7.0 authentication successful" },
	[VR_R_AUTH_FAILED] = { .text = "535 5.7.8 authentication credentials invalid",
		.flags = R_ERROR, .reason = "auth", .stat = STAT(refused_auth) },
	[VR_R_AUTH_CANCELLED] = { .text = "501 5.0.0 authentication cancelled",
		.flags = R_ERROR },
	[VR_R_AUTH_BASE64] = { .text = "501 5.5.2 cannot decode response",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_AUTH_TWICE] = { .text = "503 5.5.1 already authenticated",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_AUTH_IN_MAIL] = { .text = "503 5.5.1 AUTH not permitted during a mail transaction",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_AUTH_MECH] = { .text = "504 5.5.4 unrecognized authentication mechanism",
		.flags = R_ERROR },
	[VR_R_AUTH_NEED_TLS] = { .text = "538 5.7.11 encryption required for requested authentication "
		"mechanism",
		.flags = R_ERROR, .reason = "auth_plaintext", .stat = STAT(refused_auth) },

	[VR_R_MAIL_OK] = { .text = "250 2.1.0 Ok" },
	[VR_R_MAIL_NESTED] = { .text = "503 5.5.1 nested MAIL command",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_MAIL_BAD] = { .text = "501 5.1.7 bad sender address syntax",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_MAIL_TOO_LONG] = { .text = "501 5.1.7 sender address too long",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_MAIL_NO_DOMAIN] = { .text = "501 5.1.7 sender address must include a domain",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	/* client address */
	[VR_R_RELAY_DENIED] = { .text = "550 5.7.1 relay access denied: %s is not a registered VPS "
		"(use SMTP AUTH over TLS)",
		.flags = R_ERROR, .reason = "relay", .stat = STAT(refused_relay) },
	/* domain, account id */
	[VR_R_SENDER_DENIED] = { .text = "550 5.7.1 sender domain %s is not registered for VPS %s",
		.reason = "sender", .stat = STAT(refused_sender) },
	[VR_R_SENDER_PENDING] = { .text = "550 5.7.1 sender domain %s of VPS %s is pending "
		"verification: its DNS records have not checked out yet",
		.reason = "sender_pending", .stat = STAT(refused_sender) },
	[VR_R_RCPT_OK] = { .text = "250 2.1.5 Ok" },
	[VR_R_NEED_MAIL] = { .text = "503 5.5.1 need MAIL command",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_RCPT_BAD] = { .text = "501 5.1.3 bad recipient address syntax",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_RCPT_TOO_LONG] = { .text = "501 5.1.3 recipient address too long",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	[VR_R_RCPT_NO_DOMAIN] = { .text = "550 5.1.1 recipient address must include a domain "
		"(this server only relays)",
		.flags = R_ERROR },
	/* RFC 5321 §4.5.3.1.10: clients send the rest in a later transaction,
	 * so this is no protocol error. */
	[VR_R_RCPT_TOO_MANY] = { .text = "452 4.5.3 too many recipients" },
	[VR_R_UTF8] = { .text = "553 5.6.7 non-ASCII address requires SMTPUTF8",
		.flags = R_ERROR },
	/* keyword length, keyword */
	[VR_R_PARAM_UNKNOWN] = { .text = "555 5.5.4 unsupported parameter %.*s",
		.flags = R_ERROR },
	[VR_R_PARAM_BAD] = { .text = "501 5.5.4 invalid or repeated parameter %.*s",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	/* the limit (uint64_t) */
	[VR_R_SIZE] = { .text = "552 5.3.4 message size exceeds fixed limit of %" PRIu64 " octets",
		.reason = "size", .stat = STAT(refused_size) },
	/* which window, its count and limit, when a slot frees (vr_rl_explain).
	 * No protocol error: the client retries later, it did nothing wrong. */
	[VR_R_QUOTA] = { .text = "451 4.7.1 %s",
		.reason = "quota", .stat = STAT(refused_quota) },
	/* account id */
	[VR_R_QUOTA_UNKNOWN] = { .text = "451 4.3.0 no sending quota known for VPS %s yet, "
		"try again later", .reason = "quota_unknown", .stat = STAT(refused_quota) },

	[VR_R_DATA_GO] = { .text = "354 End data with <CR><LF>.<CR><LF>" },
	[VR_R_NO_RCPTS] = { .text = "554 5.5.1 no valid recipients",
		.flags = R_ERROR },
	[VR_R_DATA_AFTER_BDAT] = { .text = "503 5.5.1 DATA and BDAT cannot be mixed in one transaction",
		.flags = R_ERROR, .stat = STAT(refused_syntax) },
	/* XXX RFC 5321 §3.8: we close after a 5xx, not a 421: without a valid
	 * count (RFC 3030 §3) the next command cannot be found, and guessing
	 * would let chunk content run as commands. */
	[VR_R_BDAT_SYNTAX] = { .text = "501 5.5.4 syntax: BDAT octets [LAST]; closing connection",
		.flags = R_ERROR | R_CLOSE, .stat = STAT(refused_syntax) },
	/* chunk size (uint64_t) */
	[VR_R_BDAT_OK] = { .text = "250 2.0.0 %" PRIu64 " octets received" },
	[VR_R_MSG_NUL] = { .text = "554 5.6.0 message refused: it contains a NUL character",
		.reason = "nul", .stat = STAT(refused_content) },
	[VR_R_MSG_LONG_LINE] = { .text = "554 5.6.0 message refused: a line is longer than 1000 octets",
		.reason = "long_line", .stat = STAT(refused_content) },
	/* The header From rule (access.c), said at the end of the message.
	 * Each takes two string arguments, using the ones its text names. */
	[VR_R_FROM_MISSING] = { .text = "550 5.7.1 message refused: it has no From header field",
		.reason = "from_missing", .stat = STAT(refused_sender) },
	[VR_R_FROM_TWICE] = { .text = "550 5.7.1 message refused: it has more than one From "
		"header field", .reason = "from_twice", .stat = STAT(refused_sender) },
	[VR_R_FROM_LONG] = { .text = "550 5.7.1 message refused: its From header field is longer "
		"than " STR(VR_SMTP_FROM_MAX) " octets", .reason = "from_long",
		.stat = STAT(refused_sender) },
	/* the From body, what is wrong with it */
	[VR_R_FROM_INVALID] = { .text = "550 5.7.1 message refused: header From \"%s\" is not a valid "
		"address list (%s)", .reason = "from_invalid", .stat = STAT(refused_sender) },
	/* the line */
	[VR_R_HEADER_BAD_LINE] = { .text = "550 5.7.1 message refused: \"%s\" in its header "
		"section is not a header field", .reason = "header_line",
		.stat = STAT(refused_sender) },
	/* domain, account id */
	[VR_R_FROM_DENIED] = { .text = "550 5.7.1 message refused: header From domain %s is not "
		"registered for VPS %s", .reason = "from", .stat = STAT(refused_sender) },
	[VR_R_FROM_PENDING] = { .text = "550 5.7.1 message refused: header From domain %s of VPS %s is "
		"pending verification: its DNS records have not checked out yet",
		.reason = "from_pending", .stat = STAT(refused_sender) },
	/* queue ID */
	[VR_R_QUEUED] = { .text = "250 2.0.0 Ok: queued as %s" },
	[VR_R_QUEUE_ERROR] = { .text = "451 4.3.0 queue write error",
		.reason = "spool", .stat = STAT(refused_spool) },
	[VR_R_QUEUE_FULL] = { .text = "452 4.3.1 insufficient system storage",
		.reason = "spool_full", .stat = STAT(refused_spool) },
};

void vr_smtp_reply(struct vr_session *s, enum vr_smtp_reply r, ...)
{
	const struct reply_def *d = &replies[r];
	char text[VR_SMTP_LINE_MAX];
	va_list ap;

	if (s->phase == VR_SMTP_CLOSED)
		return;
	va_start(ap, r);
	int n = vsnprintf(text, sizeof(text) - 2, d->text, ap);
	va_end(ap);
	if (n < 0)
		return;
	vr_smtp_write(s, text, VR_MIN((size_t)n, sizeof(text) - 3));

	if (d->stat)
		vr_smtp_count((uint64_t *)((char *)s->stats + d->stat - 1), 1);
	if (d->reason) {
		char quoted[2 * VR_SMTP_LINE_MAX];
		vr_log_info("event=refused client=%s reason=%s reply=%s", s->client, d->reason,
			    vr_log_quote(quoted, sizeof(quoted), text, strlen(text)));
		/* for `vps show`: the last refusals of each VPS we know */
		if (s->account[0])
			vr_log_event(VR_LOG_EVENT_REFUSAL, s->account, NULL,
				     (unsigned)strtoul(text, NULL, 10), text);
	}
	if (d->flags & R_CLOSE) {
		vr_smtp_close(s);
		return;
	}
	if ((d->flags & R_ERROR) && s->cfg->max_errors && ++s->errors >= s->cfg->max_errors)
		vr_smtp_reply(s, VR_R_TOO_MANY_ERRORS, s->cfg->hostname);
}
