/*
 * dsn.c - delivery status notifications (RFC 3464): the bounce a mail
 * administrator recognises, multipart/report with report-type=
 * delivery-status: a text part for people, the machine-readable
 * message/delivery-status part (one per-recipient block each), and the
 * original message's header (text/rfc822-headers, RFC 6522), never its
 * body: a bounce should not carry the mail back in full.
 *
 * Texts from outside (the remote reply, addresses) are made 7-bit and
 * single-line before they go into a header-like field, so a hostile reply
 * cannot add fields or break the structure.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vmrelay/utf8.h"
#include "delivery_impl.h"

/* RFC 5322 date, UTC. */
static void date_fmt(char *out, size_t len, uint64_t us)
{
	time_t t = (time_t)(us / 1000000u);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* s made printable 7-bit on one line: anything else becomes '?'. */
static int put_clean(struct vr_buf *out, const char *s)
{
	for (; *s; s++) {
		char c = *s >= 0x20 && *s < 0x7f ? *s : '?';
		int rc = vr_buf_append(out, &c, 1);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/*
 * A recipient for Final-Recipient: "rfc822; addr" when it is printable
 * ASCII, else RFC 6533's "utf-8; " with the 7-bit utf-8-addr-xtext form
 * (each non-ASCII character, and '\', '+', '=', as \x{HEX}), so an
 * SMTPUTF8 address reads back exactly. Bytes that are not UTF-8 become
 * U+FFFD.
 */
static int put_final_rcpt(struct vr_buf *out, const char *addr)
{
	const uint8_t *p = (const uint8_t *)addr;
	size_t n = strlen(addr);
	bool ascii = true;
	int rc;

	for (size_t i = 0; i < n; i++)
		ascii &= p[i] > 0x20 && p[i] < 0x7f;
	if (ascii)
		return vr_buf_printf(out, "Final-Recipient: rfc822; %s\r\n", addr);
	rc = vr_buf_printf(out, "Final-Recipient: utf-8; ");
	for (size_t i = 0; rc == 0 && i < n;) {
		size_t len = vr_utf8_seq(p + i, n - i);
		uint32_t cp;
		if (len == 0) {
			cp = 0xfffd;
			len = 1;
		} else if (len == 1) {
			cp = p[i];
		} else {
			static const uint8_t lead_mask[] = { 0, 0, 0x1f, 0x0f, 0x07 };
			cp = p[i] & lead_mask[len];
			for (size_t k = 1; k < len; k++)
				cp = cp << 6 | (p[i + k] & 0x3f);
		}
		i += len;
		if (cp > 0x20 && cp < 0x7f && cp != '\\' && cp != '+' && cp != '=')
			rc = vr_buf_printf(out, "%c", (char)cp);
		else
			rc = vr_buf_printf(out, "\\x{%X}", cp);
	}
	return rc ? rc : vr_buf_append(out, "\r\n", 2);
}

/* pre, a cleaned text, then post (which ends the line). */
static int field(struct vr_buf *out, const char *pre, const char *text, const char *post)
{
	int rc = vr_buf_append(out, pre, strlen(pre));

	if (rc == 0)
		rc = put_clean(out, text);
	if (rc == 0)
		rc = vr_buf_append(out, post, strlen(post));
	return rc;
}

static int head(struct vr_buf *out, const char *hostname, const char *qid, const char *to,
		uint64_t now_us, const char *boundary)
{
	char date[64];
	int rc;

	date_fmt(date, sizeof(date), now_us);
	rc = vr_buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", hostname);
	if (rc == 0)
		rc = field(out, "To: <", to, ">\r\n");
	if (rc == 0)
		rc = vr_buf_printf(out, "Subject: Undelivered Mail Returned to Sender\r\n"
				   "Date: %s\r\n"
				   "Message-ID: <%s.%llu@%s>\r\n"
				   "Auto-Submitted: auto-replied\r\n"
				   "MIME-Version: 1.0\r\n"
				   "Content-Type: multipart/report; report-type=delivery-status;\r\n"
				   "\tboundary=\"%s\"\r\n"
				   "\r\n"
				   "This is a MIME-encapsulated message.\r\n"
				   "\r\n", date, qid, (unsigned long long)now_us, hostname, boundary);
	return rc;
}

static int human(struct vr_buf *out, const char *hostname, const char *boundary, bool expired,
		 const struct dsn_rcpt *rcpts, unsigned n)
{
	int rc = vr_buf_printf(out, "--%s\r\n"
			       "Content-Description: Notification\r\n"
			       "Content-Type: text/plain; charset=us-ascii\r\n"
			       "\r\n"
			       "This is the mail system at host %s.\r\n"
			       "\r\n"
			       "I'm sorry to have to inform you that your message could not\r\n"
			       "be delivered to one or more recipients. %s\r\n"
			       "\r\n", boundary, hostname,
			       expired ? "It stayed in the queue\r\nfor too long without "
					 "being accepted, so it was given up." :
					 "The receiving\r\nserver refused it; its reply is "
					 "below.");

	for (unsigned i = 0; rc == 0 && i < n; i++) {
		rc = field(out, "<", rcpts[i].addr, ">: ");
		if (rc == 0)
			rc = field(out, "", rcpts[i].diag[0] ? rcpts[i].diag :
				   expired ? "delivery time expired" : "refused", "\r\n");
	}
	return rc ? rc : vr_buf_append(out, "\r\n", 2);
}

static int report(struct vr_buf *out, const char *hostname, const char *qid, const char *boundary,
		  uint64_t arrival_us, bool expired, const struct dsn_rcpt *rcpts, unsigned n)
{
	char date[64];

	date_fmt(date, sizeof(date), arrival_us);
	int rc = vr_buf_printf(out, "--%s\r\n"
			       "Content-Description: Delivery report\r\n"
			       "Content-Type: message/delivery-status\r\n"
			       "\r\n"
			       "Reporting-MTA: dns; %s\r\n"
			       "X-Vmrelay-Queue-ID: %s\r\n"
			       "Arrival-Date: %s\r\n", boundary, hostname, qid, date);

	for (unsigned i = 0; rc == 0 && i < n; i++) {
		const struct dsn_rcpt *r = &rcpts[i];
		rc = vr_buf_append(out, "\r\n", 2);
		if (rc == 0)
			rc = put_final_rcpt(out, r->addr);
		if (rc == 0)
			rc = vr_buf_printf(out, "Action: failed\r\n");
		if (rc == 0)
			rc = field(out, "Status: ", r->status, "\r\n");
		if (rc == 0 && r->mta[0])
			rc = field(out, "Remote-MTA: dns; ", r->mta, "\r\n");
		if (rc == 0 && r->diag[0])
			rc = field(out, "Diagnostic-Code: smtp; ", r->diag, "\r\n");
		else if (rc == 0 && expired)
			rc = field(out, "Diagnostic-Code: X-Vmrelay; ", "delivery time expired",
				   "\r\n");
	}
	return rc ? rc : vr_buf_append(out, "\r\n", 2);
}

int vr_dsn_build(struct vr_buf *out, const char *hostname, const char *qid, const char *mail_from,
		 uint64_t arrival_us, uint64_t now_us, bool expired, const struct dsn_rcpt *rcpts,
		 unsigned n, const uint8_t *orig_hdr, size_t orig_len)
{
	char boundary[VR_QID_MAX + 300];
	int rc;

	/* The queue ID and our name never occur in a header we quote. */
	snprintf(boundary, sizeof(boundary), "%s.%llu/%s", qid, (unsigned long long)now_us,
		 hostname);
	rc = head(out, hostname, qid, mail_from, now_us, boundary);
	if (rc == 0)
		rc = human(out, hostname, boundary, expired, rcpts, n);
	if (rc == 0)
		rc = report(out, hostname, qid, boundary, arrival_us, expired, rcpts, n);
	if (rc == 0)
		rc = vr_buf_printf(out, "--%s\r\n"
				   "Content-Description: Undelivered Message Headers\r\n"
				   "Content-Type: text/rfc822-headers\r\n"
				   "\r\n", boundary);
	if (rc == 0 && orig_len)
		rc = vr_buf_append(out, orig_hdr, orig_len);
	if (rc == 0 && orig_len >= 2 && memcmp(orig_hdr + orig_len - 2, "\r\n", 2) != 0)
		rc = vr_buf_append(out, "\r\n", 2);
	if (rc == 0)
		rc = vr_buf_printf(out, "\r\n--%s--\r\n", boundary);
	return rc;
}

size_t vr_dsn_header_len(const uint8_t *body, size_t n)
{
	if (n < 2 || (body[0] == '\r' && body[1] == '\n'))
		return 0;
	const uint8_t *p = memmem(body, n, "\r\n\r\n", 4);
	return p ? (size_t)(p - body) + 2 : n;
}
