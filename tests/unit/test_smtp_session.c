/*
 * test_smtp_session.c - SMTP sessions end to end inside one process: what
 * reaches the spool (byte-exact), TLS (STARTTLS, implicit, AUTH), the
 * commit hand-off and backpressure, the accounts table changing under a
 * session, logs and counters. Transcript-shaped behaviour lives in the
 * golden tests (test_smtp_golden.c).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/evp.h>
#include <urcu-qsbr.h>
#include <cmocka.h>

#include "vmrelay/policy.h"
#include "vmrelay/ratelimit.h"

#include "test_smtp_driver.h"

static int reset(void **state)
{
	drv_config_reset();
	return 0;
}

static void expect(struct conv *c, const char *text)
{
	assert_string_equal(conv_said(c), text);
}

#define EHLO_HEAD \
	"250-" DRV_HOSTNAME "\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n" \
	"250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n"
#define EHLO_PLAIN   EHLO_HEAD "250-CHUNKING\r\n250 STARTTLS\r\n"
#define EHLO_TLS     EHLO_HEAD "250-CHUNKING\r\n250 AUTH PLAIN LOGIN\r\n"
#define EHLO_AUTHED  EHLO_HEAD "250 CHUNKING\r\n"
#define BANNER       "220 " DRV_HOSTNAME " ESMTP vmrelay\r\n"
/* The header section of a small message from vps1 (the From rule). */
#define FROM_HDR     "From: <s@example.com>\r\n\r\n"

static const char *queued(struct conv *c, char *qid, size_t len)
{
	const char *said = conv_said(c);
	assert_non_null(drv_qid(said, qid, len));
	return qid;
}

/* The Received header the session must have written, from the spool's
 * record of the message. */
static void received(char *out, size_t len, const struct drv_msg *m, const char *helo,
		     const char *with, const char *qid)
{
	time_t t = (time_t)(m->received_us / 1000000);
	struct tm tm;
	char day[8], rest[64], date[96];

	gmtime_r(&t, &tm);
	strftime(day, sizeof(day), "%a", &tm);
	strftime(rest, sizeof(rest), "%b %Y %H:%M:%S", &tm);
	snprintf(date, sizeof(date), "%s, %d %s +0000", day, tm.tm_mday, rest);
	/* the client as an RFC 5321 address literal */
	char literal[80];
	snprintf(literal, sizeof(literal), strchr(m->client, ':') ? "[IPv6:%s]" : "[%s]", m->client);
	if (m->n_rcpts == 1)
		snprintf(out, len, "Received: from %s (%s)\r\n\tby " DRV_HOSTNAME " (vmrelay) with %s "
			 "id %s\r\n\tfor <%s>; %s\r\n", helo, literal, with, qid, m->rcpt[0], date);
	else
		snprintf(out, len, "Received: from %s (%s)\r\n\tby " DRV_HOSTNAME " (vmrelay) with %s "
			 "id %s;\r\n\t%s\r\n", helo, literal, with, qid, date);
}

static void expect_body(const struct drv_msg *m, const char *hdr, const char *body, size_t n)
{
	size_t h = strlen(hdr);

	assert_int_equal(m->body_len, h + n);
	assert_memory_equal(m->body, hdr, h);
	assert_memory_equal(m->body + h, body, n);
}

/* --- what reaches the spool --- */

/* A message of many lines, some needing dot-stuffing, some 8-bit, longer
 * than every buffer on the way. Returns the wire form; *plain the content. */
static char *big_message(size_t lines, char **plain, size_t *plain_len, size_t *wire_len)
{
	static const char head[] = "From: Sender <sender@example.com>\r\nSubject: big\r\n\r\n";
	char *wire = malloc(lines * 80 + sizeof(head) + 8), *p = malloc(lines * 80 + sizeof(head));
	size_t w = sizeof(head) - 1, o = sizeof(head) - 1;

	memcpy(wire, head, w);
	memcpy(p, head, o);

	for (size_t i = 0; i < lines; i++) {
		char line[80];
		int n = snprintf(line, sizeof(line), "%s%zu line \xc3\xa9t\xc3\xa9 %s\r\n",
				 i % 7 == 0 ? "." : "", i, i % 3 ? "text" : "..");
		if (line[0] == '.')
			wire[w++] = '.';
		memcpy(wire + w, line, (size_t)n);
		memcpy(p + o, line, (size_t)n);
		w += (size_t)n;
		o += (size_t)n;
	}
	memcpy(wire + w, ".\r\n", 3);
	*plain = p;
	*plain_len = o;
	*wire_len = w + 3;
	return wire;
}

static void test_spool_data_exact(void **state)
{
	size_t steps[] = { SIZE_MAX, 1, 7 };

	for (size_t k = 0; k < 3; k++) {
		struct conv c;
		struct drv_msg m;
		char qid[VR_QID_MAX], hdr[1024], *plain;
		size_t plain_len, wire_len;
		char *wire = big_message(k == 1 ? 500 : 5000, &plain, &plain_len, &wire_len);

		conv_open(&c, DRV_VPS1_ADDR, false);
		conv_sendf(&c, "EHLO client.example.com\r\nMAIL FROM:<sender@example.com> "
			   "BODY=8BITMIME\r\nRCPT TO:<alice@example.net>\r\nDATA\r\n");
		conv_said(&c);
		conv_send(&c, wire, wire_len, steps[k]);
		queued(&c, qid, sizeof(qid));
		assert_true(drv_spool_find(qid, &m));
		assert_string_equal(m.account, "vps1");
		assert_string_equal(m.client, DRV_VPS1_ADDR);
		assert_string_equal(m.helo, "client.example.com");
		assert_string_equal(m.from, "sender@example.com");
		assert_int_equal(m.n_rcpts, 1);
		assert_string_equal(m.rcpt[0], "alice@example.net");
		assert_int_equal(m.flags, VR_SPOOL_8BITMIME);
		received(hdr, sizeof(hdr), &m, "client.example.com", "ESMTP", qid);
		expect_body(&m, hdr, plain, plain_len);
		drv_msg_free(&m);
		conv_close(&c);
		free(wire);
		free(plain);
	}
}

static void test_spool_bdat_exact(void **state)
{
	static const char chunk1[] = "From: <postmaster@example.com>\r\nSubject: chunks\r\n\r\n"
				     ".leading dot stays\r\n";
	static const char chunk2[] = "bin\x01\x02\0ary\r\n.\r\n";
	struct conv c;
	struct drv_msg m;
	char qid[VR_QID_MAX], hdr[1024], all[256];

	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO client.example.com\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.net>\r\n"
		   "RCPT TO:<b@example.net>\r\nBDAT %zu\r\n", sizeof(chunk1) - 1);
	conv_send(&c, chunk1, sizeof(chunk1) - 1, SIZE_MAX);
	conv_sendf(&c, "BDAT %zu LAST\r\n", sizeof(chunk2) - 1);
	conv_said(&c);
	conv_send(&c, chunk2, sizeof(chunk2) - 1, 3);
	queued(&c, qid, sizeof(qid));
	assert_true(drv_spool_find(qid, &m));
	assert_string_equal(m.from, "");
	assert_int_equal(m.n_rcpts, 2);
	assert_string_equal(m.rcpt[1], "b@example.net");
	received(hdr, sizeof(hdr), &m, "client.example.com", "ESMTP", qid);
	/* for two recipients the header names neither */
	assert_null(strstr(hdr, "for <"));
	memcpy(all, chunk1, sizeof(chunk1) - 1);
	memcpy(all + sizeof(chunk1) - 1, chunk2, sizeof(chunk2) - 1);
	expect_body(&m, hdr, all, sizeof(chunk1) + sizeof(chunk2) - 2);
	drv_msg_free(&m);
	conv_close(&c);
}

/* The Received header names the protocol (RFC 3848, RFC 6531 §3.7.3). */
static void test_received_protocols(void **state)
{
	static const struct {
		bool tls;
		const char *dialogue, *helo, *with;
		uint32_t flags;
	} cases[] = {
		{ false, "HELO old.example\r\nMAIL FROM:<s@example.com>\r\n", "old.example", "SMTP", 0 },
		{ false, "EHLO new.example\r\nMAIL FROM:<j\xc3\xb6@example.com> SMTPUTF8\r\n",
		  "new.example", "UTF8SMTP", VR_SPOOL_SMTPUTF8 },
		{ true, "EHLO tls.example\r\nMAIL FROM:<s@example.com>\r\n", "tls.example", "ESMTPS",
		  VR_SPOOL_TLS },
		{ true, "EHLO tls.example\r\nMAIL FROM:<s@example.com> SMTPUTF8 BODY=8BITMIME\r\n",
		  "tls.example", "UTF8SMTPS", VR_SPOOL_TLS | VR_SPOOL_SMTPUTF8 | VR_SPOOL_8BITMIME },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct conv c;
		struct drv_msg m;
		char qid[VR_QID_MAX], hdr[1024];

		conv_open(&c, DRV_VPS1_ADDR6, cases[i].tls);
		conv_sendf(&c, "%sRCPT TO:<r@example.net>\r\nDATA\r\n" FROM_HDR "x\r\n.\r\n",
			   cases[i].dialogue);
		queued(&c, qid, sizeof(qid));
		assert_true(drv_spool_find(qid, &m));
		assert_int_equal(m.flags, cases[i].flags);
		assert_string_equal(m.client, DRV_VPS1_ADDR6);
		received(hdr, sizeof(hdr), &m, cases[i].helo, cases[i].with, qid);
		assert_non_null(strstr(hdr, "([IPv6:" DRV_VPS1_ADDR6 "])"));
		expect_body(&m, hdr, FROM_HDR "x\r\n", sizeof(FROM_HDR) + 2);
		drv_msg_free(&m);
		conv_close(&c);
	}
}

/* Whatever was refused never reaches the spool. */
static void test_spool_nothing_refused(void **state)
{
	struct conv c;
	unsigned before = drv_spool_count();

	drv.cfg.max_message_size = 50;
	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.net>\r\n"
		   "DATA\r\n%s\r\n.\r\n", "too long for fifty octets, surely, with this much text");
	static const char nul[] = "MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.net>\r\n"
				  "DATA\r\nnul\0 inside\r\n.\r\n";
	conv_send(&c, nul, sizeof(nul) - 1, SIZE_MAX);
	conv_sendf(&c, "MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\nx\n.\n");
	assert_true(conv_closed(&c));
	conv_close(&c);
	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.net>\r\n"
		   "DATA\r\nunfinished\r\n");
	vr_session_rx_eof(c.s, c.now);
	conv_settle(&c);
	assert_true(conv_closed(&c));
	conv_close(&c);
	assert_int_equal(drv_spool_count(), before);
}

/* --- TLS and AUTH --- */

static void b64(const char *in, size_t n, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n);
}

static void test_starttls_auth_plain(void **state)
{
	static const char plain[] = "\0vps2\0" DRV_VPS2_TOKEN;
	struct conv c;
	struct drv_msg m;
	char resp[128], qid[VR_QID_MAX], hdr[1024];
	uint64_t handshakes = drv.stats[0].tls_handshakes;

	conv_open(&c, DRV_STRANGER, false);
	conv_sendf(&c, "EHLO client.example.com\r\n");
	expect(&c, BANNER EHLO_PLAIN);
	conv_starttls(&c);
	assert_int_equal(drv.stats[0].tls_handshakes, handshakes + 1);
	/* RFC 3207 §4.2: EHLO is forgotten */
	conv_sendf(&c, "MAIL FROM:<s@example.org>\r\n");
	expect(&c, "503 5.5.1 send EHLO or HELO first\r\n");
	conv_sendf(&c, "EHLO client.example.com\r\n");
	expect(&c, EHLO_TLS);
	conv_sendf(&c, "STARTTLS\r\n");
	expect(&c, "503 5.5.1 TLS already active\r\n");
	/* unregistered and not yet authenticated */
	conv_sendf(&c, "MAIL FROM:<s@example.org>\r\n");
	expect(&c, "550 5.7.1 relay access denied: " DRV_STRANGER " is not a registered VPS "
		   "(use SMTP AUTH over TLS)\r\n");
	b64(plain, sizeof(plain) - 1, resp);
	conv_sendf(&c, "AUTH PLAIN %s\r\n", resp);
	expect(&c, "235 2.7.0 authentication successful\r\n");
	conv_sendf(&c, "AUTH PLAIN %s\r\n", resp);
	expect(&c, "503 5.5.1 already authenticated\r\n");
	conv_sendf(&c, "EHLO client.example.com\r\n");
	expect(&c, EHLO_AUTHED);
	conv_sendf(&c, "MAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n"
		   "From: <s@example.org>\r\nSubject: over TLS\r\n\r\nbody\r\n.\r\nQUIT\r\n");
	const char *said = conv_said(&c);
	assert_non_null(drv_qid(said, qid, sizeof(qid)));
	assert_non_null(strstr(said, "221 2.0.0 " DRV_HOSTNAME " closing connection\r\n"));
	assert_true(conv_closed(&c));
	assert_true(drv_spool_find(qid, &m));
	assert_string_equal(m.account, "vps2");
	assert_string_equal(m.client, DRV_STRANGER);
	assert_int_equal(m.flags, VR_SPOOL_TLS | VR_SPOOL_AUTH);
	received(hdr, sizeof(hdr), &m, "client.example.com", "ESMTPSA", qid);
	static const char body[] = "From: <s@example.org>\r\nSubject: over TLS\r\n\r\nbody\r\n";
	expect_body(&m, hdr, body, sizeof(body) - 1);
	drv_msg_free(&m);
	conv_close(&c);
}

/* AUTH PLAIN via a 334 continuation, LOGIN, and every way to fail. */
static void test_auth_variants(void **state)
{
	static const char wrong[] = "\0vps1\0not-the-token";
	static const char other[] = "vps2\0vps1\0" DRV_VPS1_TOKEN;   /* authzid != authcid */
	static const char good[] = "vps1\0vps1\0" DRV_VPS1_TOKEN;
	struct conv c;
	char r1[128], r2[128], r3[128], user[32], pass[64];
	uint64_t refused = drv.stats[0].refused_auth;

	conv_open(&c, DRV_STRANGER, false);
	conv_sendf(&c, "EHLO c.example\r\n");
	conv_said(&c);
	conv_starttls(&c);
	conv_sendf(&c, "AUTH PLAIN\r\n");
	expect(&c, "503 5.5.1 send EHLO or HELO first\r\n");
	conv_sendf(&c, "EHLO c.example\r\n");
	conv_said(&c);

	b64(wrong, sizeof(wrong) - 1, r1);
	b64(other, sizeof(other) - 1, r2);
	b64(good, sizeof(good) - 1, r3);
	conv_sendf(&c, "AUTH PLAIN\r\n");
	expect(&c, "334 \r\n");
	conv_sendf(&c, "%s\r\n", r1);
	expect(&c, "535 5.7.8 authentication credentials invalid\r\n");
	conv_sendf(&c, "AUTH PLAIN %s\r\n", r2);
	expect(&c, "535 5.7.8 authentication credentials invalid\r\n");
	conv_sendf(&c, "AUTH PLAIN\r\n*\r\n");
	expect(&c, "334 \r\n501 5.0.0 authentication cancelled\r\n");
	conv_sendf(&c, "AUTH PLAIN !!!!\r\nAUTH PLAIN AAA\r\nAUTH PLAIN =\r\n");
	expect(&c, "501 5.5.2 cannot decode response\r\n501 5.5.2 cannot decode response\r\n"
		   "501 5.5.2 cannot decode response\r\n");
	conv_sendf(&c, "AUTH CRAM-MD5\r\n");
	expect(&c, "504 5.5.4 unrecognized authentication mechanism\r\n");
	assert_int_equal(drv.stats[0].refused_auth, refused + 2);

	/* LOGIN: a wrong user name gets as far as a wrong password */
	b64("nobody", 6, user);
	b64(DRV_VPS1_TOKEN, strlen(DRV_VPS1_TOKEN), pass);
	conv_sendf(&c, "AUTH LOGIN\r\n");
	expect(&c, "334 VXNlcm5hbWU6\r\n");
	conv_sendf(&c, "%s\r\n", user);
	expect(&c, "334 UGFzc3dvcmQ6\r\n");
	conv_sendf(&c, "%s\r\n", pass);
	expect(&c, "535 5.7.8 authentication credentials invalid\r\n");
	b64("vps1", 4, user);
	conv_sendf(&c, "AUTH LOGIN %s\r\n", user);
	expect(&c, "334 UGFzc3dvcmQ6\r\n");
	conv_sendf(&c, "%s\r\n", pass);
	expect(&c, "235 2.7.0 authentication successful\r\n");
	conv_sendf(&c, "MAIL FROM:<root@host1.example.com>\r\n");
	expect(&c, "250 2.1.0 Ok\r\n");
	conv_sendf(&c, "QUIT\r\n");
	conv_close(&c);

	/* AUTH inside a mail transaction is refused (RFC 4954 §4) */
	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\n");
	conv_said(&c);
	conv_starttls(&c);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nAUTH PLAIN %s\r\n", r3);
	expect(&c, EHLO_TLS "250 2.1.0 Ok\r\n503 5.5.1 AUTH not permitted during a mail "
		   "transaction\r\n");
	conv_close(&c);
}

/* The token never reaches the log, in any form. */
static void test_auth_token_not_logged(void **state)
{
	FILE *f = fopen(drv.log, "r");
	char line[4096], b64tok[128];
	bool auth_logged = false;

	b64(DRV_VPS1_TOKEN, strlen(DRV_VPS1_TOKEN), b64tok);
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		assert_null(strstr(line, DRV_VPS1_TOKEN));
		assert_null(strstr(line, DRV_VPS2_TOKEN));
		assert_null(strstr(line, b64tok));
		assert_null(strstr(line, "dnBzMS1zZWNyZXQtdG9rZW4"));
		auth_logged |= strstr(line, "event=auth client=" DRV_STRANGER " account=vps1") != NULL;
	}
	fclose(f);
	assert_true(auth_logged);
}

static void test_implicit_tls(void **state)
{
	struct conv c;

	conv_open(&c, DRV_VPS1_ADDR, true);
	assert_true(vr_tls_established(c.tls));
	expect(&c, BANNER);
	conv_sendf(&c, "EHLO c.example\r\n");
	expect(&c, EHLO_TLS);
	conv_sendf(&c, "STARTTLS\r\n");
	expect(&c, "503 5.5.1 TLS already active\r\n");
	conv_sendf(&c, "QUIT\r\n");
	expect(&c, "221 2.0.0 " DRV_HOSTNAME " closing connection\r\n");
	assert_true(conv_closed(&c));
	conv_close(&c);

	/* RFC 8314: handshake first, then the banner, after the pause */
	drv.cfg.greet_pause_ms = 200;
	conv_open(&c, DRV_VPS1_ADDR, true);
	assert_true(vr_tls_established(c.tls));
	expect(&c, "");
	assert_int_equal(vr_session_deadline(c.s), 200);
	conv_wait(&c, 200);
	expect(&c, BANNER);
	conv_close(&c);

	/* talking (encrypted) before that banner is still talking first */
	conv_open(&c, DRV_VPS1_ADDR, true);
	conv_sendf(&c, "EHLO eager.example\r\n");
	expect(&c, "554 5.5.1 " DRV_HOSTNAME " protocol error: talked before the greeting\r\n");
	assert_true(conv_closed(&c));
	conv_close(&c);
}

/* A client speaking plaintext on the implicit-TLS port gets no SMTP. */
static void test_implicit_tls_plaintext_client(void **state)
{
	struct conv c;

	conv_open_mode(&c, DRV_VPS1_ADDR, true, false);
	conv_sendf(&c, "EHLO plain.example\r\n");
	assert_true(conv_closed(&c));
	assert_null(strstr(conv_said(&c), "220 "));
	conv_close(&c);
}

/* CVE-2011-0411: the injected command never runs. */
static void test_starttls_injection(void **state)
{
	struct conv c;
	uint64_t before = drv.stats[0].refused_starttls_injection;
	unsigned messages = drv_spool_count();

	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nSTARTTLS\r\nMAIL FROM:<x@example.com>\r\n"
		   "RCPT TO:<y@example.net>\r\nDATA\r\ninjected\r\n.\r\n");
	expect(&c, BANNER EHLO_PLAIN "554 5.5.1 " DRV_HOSTNAME " protocol error: commands pipelined "
		   "after STARTTLS\r\n");
	assert_true(conv_closed(&c));
	assert_int_equal(drv.stats[0].refused_starttls_injection, before + 1);
	assert_int_equal(drv_spool_count(), messages);
	conv_close(&c);
}
/* --- the commit hand-off --- */

static void rx(struct conv *c, const char *text)
{
	assert_true(vr_session_rx_space(c->s) >= strlen(text));
	assert_int_equal(vr_session_rx(c->s, text, strlen(text), c->now), VR_OK);
}

/* Output without settling (the driver would reap the spool). */
static const char *peek(struct conv *c)
{
	static char buf[8192];
	const uint8_t *p;
	size_t n = vr_session_tx_peek(c->s, &p);

	assert_true(n < sizeof(buf));
	if (n)
		memcpy(buf, p, n);
	buf[n] = '\0';
	vr_session_tx_consume(c->s, n);
	return buf;
}

static void wait_reap(void (*done)(void *, int, const char *))
{
	for (int i = 0; i < 1000; i++) {
		if (vr_spool_reap(drv.spool, 0, done, 16))
			return;
		struct timespec ts = { 0, 5000000 };
		nanosleep(&ts, NULL);
	}
	fail_msg("the spool completed nothing in 5 s");
}

static void done_as_spool_says(void *cookie, int status, const char *qid)
{
	vr_session_commit_done(cookie, status, qid);
}

/* While the spool works, the session takes nothing and says nothing; the
 * commands pipelined behind the message run after the 250. */
static void test_commit_waits(void **state)
{
	struct conv c;

	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_said(&c);
	rx(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.net>\r\n"
	       "DATA\r\n" FROM_HDR "hi\r\n.\r\nNOOP\r\nQUIT\r\n");
	assert_string_equal(peek(&c), EHLO_PLAIN "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
			    "354 End data with <CR><LF>.<CR><LF>\r\n");
	assert_int_equal(vr_session_rx_space(c.s), 0);
	assert_int_equal(vr_session_deadline(c.s), UINT64_MAX);
	assert_false(vr_session_closing(c.s));
	/* time passing is no timeout while the spool has the message */
	vr_session_tick(c.s, 10u * 1000 * 1000);
	assert_string_equal(peek(&c), "");
	assert_int_equal(c.kicks, 0);
	wait_reap(done_as_spool_says);
	assert_int_equal(c.kicks, 1);
	const char *said = peek(&c);
	assert_memory_equal(said, "250 2.0.0 Ok: queued as ", 24);
	assert_non_null(strstr(said, "\r\n250 2.0.0 Ok\r\n221 2.0.0 " DRV_HOSTNAME
			       " closing connection\r\n"));
	assert_true(vr_session_closing(c.s));
	conv_close(&c);
}

/* The connection goes away while its message is being committed: the
 * message stays, nobody is called back (ASan watches the freed session). */
static void test_free_during_commit(void **state)
{
	struct conv c;
	unsigned before = drv_spool_count();

	conv_open(&c, DRV_VPS1_ADDR, false);
	rx(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.net>\r\n"
	       "DATA\r\n" FROM_HDR "orphan\r\n.\r\n");
	assert_int_equal(vr_session_rx_space(c.s), 0);
	conv_close(&c);
	for (int i = 0; i < 200 && drv_spool_count() == before; i++) {
		struct timespec ts = { 0, 5000000 };
		nanosleep(&ts, NULL);
		vr_spool_reap(drv.spool, 0, done_as_spool_says, 16);
	}
	assert_int_equal(drv_spool_count(), before + 1);
}

/* Never a 250 unless the spool said 0. */
static void test_commit_failures(void **state)
{
	static const struct { int status; const char *reply; } cases[] = {
		{ -ENOSPC, "452 4.3.1 insufficient system storage\r\n" },
		{ -EIO, "451 4.3.0 queue write error\r\n" },
		{ -ENOMEM, "451 4.3.0 queue write error\r\n" },
	};
	uint64_t refused = drv.stats[0].refused_spool;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct conv c;
		drv.force_status = cases[i].status;
		conv_open(&c, DRV_VPS1_ADDR, false);
		conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\n"
			   "RCPT TO:<r@example.net>\r\nDATA\r\n");
		conv_said(&c);
		conv_sendf(&c, FROM_HDR "x\r\n.\r\n");
		expect(&c, cases[i].reply);
		/* the transaction is over: a new one may start */
		conv_sendf(&c, "RCPT TO:<r@example.net>\r\nMAIL FROM:<s@example.com>\r\n");
		expect(&c, "503 5.5.1 need MAIL command\r\n250 2.1.0 Ok\r\n");
		conv_close(&c);
	}
	assert_int_equal(drv.stats[0].refused_spool, refused + 3);
}

/* --- output backpressure --- */

static size_t count(const uint8_t *p, size_t n, const char *what)
{
	size_t k = 0, len = strlen(what);

	for (const uint8_t *q = p; (q = memmem(q, n - (size_t)(q - p), what, len)); q += len)
		k++;
	return k;
}

/* A client pipelining far more than it reads: the session stops taking
 * input while 64 KiB of replies are unsent, and resumes once they leave. */
static void test_output_backpressure(void **state)
{
	enum { N = 40000 };
	static const char ok[] = "250 2.0.0 Ok\r\n";
	struct conv c;
	size_t sent = 0, replies = 0, max_tx = 0, stops = 0;

	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_said(&c);
	while (sent < N) {
		size_t space = vr_session_rx_space(c.s);
		const uint8_t *p;
		size_t tx = vr_session_tx_peek(c.s, &p);
		max_tx = VR_MAX(max_tx, tx);
		if (space == 0) {
			stops++;
			/* the client reads it all; the session resumes on a tick */
			replies += count(p, tx, ok);
			vr_session_tx_consume(c.s, tx);
			assert_int_equal(vr_session_deadline(c.s), 0);
			vr_session_tick(c.s, c.now);
			continue;
		}
		char buf[6 * 512];
		size_t k = VR_MIN(VR_MIN(space / 6, (size_t)512), (size_t)(N - sent));
		assert_true(k > 0);
		for (size_t i = 0; i < k; i++)
			memcpy(buf + 6 * i, "NOOP\r\n", 6);
		assert_int_equal(vr_session_rx(c.s, buf, 6 * k, c.now), VR_OK);
		sent += k;
	}
	conv_settle(&c);
	const char *rest = conv_said(&c);
	replies += count((const uint8_t *)rest, strlen(rest), ok);
	assert_true(stops > 0);
	assert_true(max_tx < 80 * 1024);
	assert_int_equal(replies, N);
	conv_close(&c);
}

/* --- policy, time, logs, counters --- */

static void test_accounts_reload(void **state)
{
	char err[256];
	struct conv c;
	FILE *f;
	char path[160];

	snprintf(path, sizeof(path), "%s/other.jsonl", drv.dir);
	assert_non_null(f = fopen(path, "w"));
	fputs("{\"id\":\"vps9\",\"ips\":[\"192.0.2.99\"]}\n", f);
	fclose(f);

	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRSET\r\n");
	conv_said(&c);
	/* the operator removes vps1: its next transaction is refused */
	struct vr_accounts *t = vr_accounts_load(path, 1000, err, sizeof(err));
	assert_non_null(t);
	vr_policy_publish(t);
	conv_sendf(&c, "MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.net>\r\n");
	expect(&c, "550 5.7.1 relay access denied: " DRV_VPS1_ADDR " is not a registered VPS "
		   "(use SMTP AUTH over TLS)\r\n503 5.5.1 need MAIL command\r\n");
	assert_non_null(t = vr_accounts_load(drv.accounts, 1000, err, sizeof(err)));
	vr_policy_publish(t);
	conv_sendf(&c, "MAIL FROM:<s@example.com>\r\n");
	expect(&c, "250 2.1.0 Ok\r\n");
	conv_close(&c);
}

static void test_greet_pause_and_idle(void **state)
{
	struct conv c;

	drv.cfg.greet_pause_ms = 300;
	drv.cfg.idle_timeout_ms = 5000;
	conv_open(&c, DRV_VPS1_ADDR, false);
	assert_int_equal(vr_session_deadline(c.s), 300);
	conv_wait(&c, 299);
	expect(&c, "");
	conv_wait(&c, 1);
	expect(&c, BANNER);
	/* idle from the banner on */
	assert_int_equal(vr_session_deadline(c.s), 300 + 5000);
	conv_wait(&c, 1000);
	conv_sendf(&c, "NOOP\r\n");
	assert_int_equal(vr_session_deadline(c.s), 1300 + 5000);
	conv_wait(&c, 4999);
	expect(&c, "250 2.0.0 Ok\r\n");
	conv_wait(&c, 1);
	expect(&c, "421 4.4.2 " DRV_HOSTNAME " timeout exceeded\r\n");
	assert_true(conv_closed(&c));
	assert_int_equal(vr_session_deadline(c.s), UINT64_MAX);
	conv_close(&c);
}

static bool log_has(const char *needle)
{
	FILE *f = fopen(drv.log, "r");
	char line[4096];
	bool found = false;

	assert_non_null(f);
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

static void test_log_lines(void **state)
{
	struct conv c;
	char qid[VR_QID_MAX], want[256];

	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<log@example.com>\r\nRCPT TO:<r@example.net>"
		   "\r\nRCPT TO:<q@example.net>\r\nDATA\r\n" FROM_HDR "12345\r\n.\r\n");
	queued(&c, qid, sizeof(qid));
	snprintf(want, sizeof(want), " info event=accepted qid=%s account=vps1 client=" DRV_VPS1_ADDR
		 " from=\"log@example.com\" nrcpt=2 size=%zu tls=no", qid, sizeof(FROM_HDR) + 6);
	assert_true(log_has(want));
	conv_close(&c);

	conv_open(&c, DRV_STRANGER, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<log@example.com>\r\n");
	assert_true(log_has(" info event=refused client=" DRV_STRANGER " reason=relay reply=\"550 "
			    "5.7.1 relay access denied: " DRV_STRANGER " is not a registered VPS (use "
			    "SMTP AUTH over TLS)\""));
	assert_true(log_has(" debug event=connect client=" DRV_STRANGER));
	conv_close(&c);
	assert_true(log_has(" debug event=disconnect client=" DRV_STRANGER));
}

static void test_counters(void **state)
{
	struct vr_smtp_stats before = drv.stats[0];
	struct conv c;

	conv_open(&c, DRV_VPS1_ADDR, false);
	assert_int_equal(drv.stats[0].connections, before.connections + 1);
	assert_int_equal(drv.stats[0].sessions_active, before.sessions_active + 1);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com> SIZE=999999999\r\n"
		   "MAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\n"
		   "DATA\r\n" FROM_HDR "123\r\n.\r\nXYZ\r\nDATA\r\n");
	assert_int_equal(drv.stats[0].messages_accepted, before.messages_accepted + 1);
	assert_int_equal(drv.stats[0].recipients_accepted, before.recipients_accepted + 2);
	assert_int_equal(drv.stats[0].bytes_accepted, before.bytes_accepted + sizeof(FROM_HDR) + 4);
	assert_int_equal(drv.stats[0].refused_size, before.refused_size + 1);
	assert_int_equal(drv.stats[0].refused_syntax, before.refused_syntax + 2);
	conv_sendf(&c, "NOOP\n");
	assert_int_equal(drv.stats[0].refused_smuggling, before.refused_smuggling + 1);
	conv_close(&c);
	assert_int_equal(drv.stats[0].sessions_active, before.sessions_active);

	drv.cfg.greet_pause_ms = 100;
	conv_open(&c, DRV_STRANGER, false);
	conv_sendf(&c, "EHLO early\r\n");
	assert_int_equal(drv.stats[0].refused_pregreet, before.refused_pregreet + 1);
	conv_close(&c);
}

/* The sender rules: refusals name the domain and the VPS, count, log,
 * and leave nothing in the spool; commands behind a refused message run. */
static void test_sender_rules(void **state)
{
	struct conv c;
	unsigned messages = drv_spool_count();
	uint64_t refused = drv.stats[0].refused_sender;

	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.org>\r\nMAIL FROM:<s@example.com>\r\n"
		   "RCPT TO:<r@example.net>\r\nDATA\r\nFrom: s@example.org\r\n\r\nx\r\n.\r\nNOOP\r\n");
	expect(&c, BANNER EHLO_PLAIN
	       "550 5.7.1 sender domain example.org is not registered for VPS vps1\r\n"
	       "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
	       "550 5.7.1 message refused: header From domain example.org is not registered for "
	       "VPS vps1\r\n250 2.0.0 Ok\r\n");
	assert_int_equal(drv.stats[0].refused_sender, refused + 2);
	assert_int_equal(drv_spool_count(), messages);
	assert_true(log_has(" info event=refused client=" DRV_VPS1_ADDR " reason=from reply=\"550 "
			    "5.7.1 message refused: header From domain example.org is not registered "
			    "for VPS vps1\""));
	conv_close(&c);
}

/* An authenticated VPS is held to its own domains, not the address's. */
static void test_sender_rules_auth(void **state)
{
	static const char plain[] = "\0vps2\0" DRV_VPS2_TOKEN;
	struct conv c;
	char resp[128], qid[VR_QID_MAX];
	struct drv_msg m;

	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\n");
	conv_said(&c);
	conv_starttls(&c);
	b64(plain, sizeof(plain) - 1, resp);
	conv_sendf(&c, "EHLO c.example\r\nAUTH PLAIN %s\r\n", resp);
	conv_said(&c);
	conv_sendf(&c, "MAIL FROM:<s@example.com>\r\n");
	expect(&c, "550 5.7.1 sender domain example.com is not registered for VPS vps2\r\n");
	conv_sendf(&c, "MAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n"
		   "From: s@example.com\r\n\r\n.\r\n");
	expect(&c, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
	       "550 5.7.1 message refused: header From domain example.com is not registered for "
	       "VPS vps2\r\n");
	conv_sendf(&c, "MAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n"
		   "From: VPS two <s@example.org>\r\n\r\n.\r\n");
	queued(&c, qid, sizeof(qid));
	assert_true(drv_spool_find(qid, &m));
	assert_string_equal(m.account, "vps2");
	drv_msg_free(&m);
	conv_close(&c);
}

/* The header rule asks the table in force when the header ends: an
 * account removed meanwhile sends nothing more. */
static void test_sender_rules_reload(void **state)
{
	char err[256], path[160];
	struct conv c;
	FILE *f;

	snprintf(path, sizeof(path), "%s/other.jsonl", drv.dir);
	assert_non_null(f = fopen(path, "w"));
	fputs("{\"id\":\"vps9\",\"ips\":[\"192.0.2.99\"]}\n", f);
	fclose(f);
	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.net>\r\n"
		   "DATA\r\n");
	conv_said(&c);
	struct vr_accounts *t = vr_accounts_load(path, 1000, err, sizeof(err));
	assert_non_null(t);
	vr_policy_publish(t);
	conv_sendf(&c, FROM_HDR "x\r\n.\r\n");
	expect(&c, "550 5.7.1 relay access denied: " DRV_VPS1_ADDR " is not a registered VPS "
	       "(use SMTP AUTH over TLS)\r\n");
	assert_non_null(t = vr_accounts_load(drv.accounts, 1000, err, sizeof(err)));
	vr_policy_publish(t);
	conv_close(&c);
}

/* --- quotas --- */

/* Every slot reserved is confirmed or released, exactly once. */
static void slots_settled(uint32_t confirmed, uint32_t released)
{
	assert_int_equal(drv.rl_confirmed, confirmed);
	assert_int_equal(drv.rl_released, released);
	assert_int_equal(drv.rl_reserved, confirmed + released);
}

#define DEFER_2 "451 4.7.1 2 mails per minute reached (2/2), next slot in "

/* A recipient over the limit is deferred with the window's text; the
 * message of those that fit is sent and counts. */
static void test_quota_defer(void **state)
{
	struct conv c;
	char qid[VR_QID_MAX];
	uint64_t refused = drv.stats[0].refused_quota;

	drv_limits(2, 100);
	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.net>\r\n"
		   "RCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\n");
	const char *said = conv_said(&c);
	assert_non_null(strstr(said, "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n" DEFER_2));
	assert_int_equal(drv.stats[0].refused_quota, refused + 1);
	assert_int_equal(drv_used("vps1"), 2);
	conv_sendf(&c, "DATA\r\n" FROM_HDR ".\r\n");
	queued(&c, qid, sizeof(qid));
	slots_settled(2, 0);
	assert_int_equal(drv_used("vps1"), 2);
	/* sent mail stays counted: the next transaction finds the window full */
	conv_sendf(&c, "MAIL FROM:<s@example.com>\r\nRCPT TO:<d@example.net>\r\n");
	said = conv_said(&c);
	assert_non_null(strstr(said, "250 2.1.0 Ok\r\n" DEFER_2));
	assert_true(log_has(" reason=quota reply=\"" DEFER_2));
	conv_close(&c);
	slots_settled(2, 0);
}

/* Every way a transaction ends without its message being committed gives
 * the slots back; the ones that end with a commit confirm them. */
static void test_quota_release_paths(void **state)
{
	static const struct {
		const char *name, *after;      /* sent after MAIL, RCPT (a slot) */
		bool closes;
	} cases[] = {
		{ "RSET", "RSET\r\n", false },
		{ "EHLO", "EHLO again.example\r\n", false },
		{ "refused From", "DATA\r\nFrom: x@evil.example\r\n\r\n.\r\n", false },
		{ "no From", "DATA\r\n\r\n.\r\n", false },
		{ "too big", "DATA\r\n" FROM_HDR "0123456789012345678901234567890123456789\r\n.\r\n",
		  false },
		{ "NUL", "DATA\r\n" FROM_HDR "a\0b\r\n.\r\n", false },
		{ "smuggling", "DATA\r\n" FROM_HDR "x\n.\n", true },
		{ "QUIT", "QUIT\r\n", true },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct conv c;
		char wire[256];
		int n = snprintf(wire, sizeof(wire), "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\n"
				 "RCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\n");

		drv_limits(5, 100);
		drv.cfg.max_message_size = 60;
		/* the NUL case needs its length from sizeof, not strlen */
		size_t k = strlen(cases[i].after);
		if (strcmp(cases[i].name, "NUL") == 0)
			k = sizeof("DATA\r\n" FROM_HDR "a\0b\r\n.\r\n") - 1;
		memcpy(wire + n, cases[i].after, k);
		conv_open(&c, DRV_VPS1_ADDR, false);
		conv_send(&c, wire, (size_t)n + k, SIZE_MAX);
		if (cases[i].closes != conv_closed(&c))
			fail_msg("%s: closed %d", cases[i].name, conv_closed(&c));
		/* given back at once, not when the connection goes */
		if (drv.rl_released != 2 || drv_used("vps1") != 0)
			fail_msg("%s: %u released, %u used", cases[i].name, drv.rl_released,
				 drv_used("vps1"));
		conv_close(&c);
		slots_settled(0, 2);
	}
}

/* The connection goes while a slot is held: released when it is freed
 * (a transport frees the session of a dropped or timed-out client). */
static void test_quota_release_on_drop(void **state)
{
	struct conv c;

	drv_limits(5, 100);
	drv.cfg.idle_timeout_ms = 1000;
	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.net>\r\n"
		   "DATA\r\n" FROM_HDR "half a message\r\n");
	conv_wait(&c, 1000);
	assert_true(conv_closed(&c));
	conv_close(&c);
	slots_settled(0, 1);

	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.net>\r\n");
	vr_session_rx_eof(c.s, c.now);
	conv_settle(&c);
	conv_close(&c);
	slots_settled(0, 2);
	assert_int_equal(drv_used("vps1"), 0);
}

/* The spool's answer decides: 250 confirms, 451/452 release. */
static void test_quota_commit_outcomes(void **state)
{
	static const int status[] = { -ENOSPC, -EIO, 1 };
	struct conv c;

	drv_limits(5, 100);
	for (size_t i = 0; i < sizeof(status) / sizeof(status[0]); i++) {
		drv.force_status = status[i];
		conv_open(&c, DRV_VPS1_ADDR, false);
		conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\n"
			   "RCPT TO:<a@example.net>\r\nDATA\r\n" FROM_HDR ".\r\n");
		conv_close(&c);
	}
	slots_settled(1, 2);
	assert_int_equal(drv_used("vps1"), 1);
}

/* Freed while its message is with the spool: the message is committed
 * all the same, so its slots count as sent. */
static void test_quota_orphan(void **state)
{
	struct conv c;

	drv_limits(5, 100);
	conv_open(&c, DRV_VPS1_ADDR, false);
	rx(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.net>\r\n"
	       "RCPT TO:<b@example.net>\r\nDATA\r\n" FROM_HDR "orphan\r\n.\r\n");
	assert_int_equal(vr_session_rx_space(c.s), 0);
	conv_close(&c);
	slots_settled(2, 0);
	wait_reap(done_as_spool_says);
	slots_settled(2, 0);
	assert_int_equal(drv_used("vps1"), 2);
}

/* over_quota = hold: accepted, held in the spool, counted as held; the
 * slots the transaction had go back, since held mail is not sent. */
static void test_quota_hold(void **state)
{
	struct conv c;
	struct drv_msg m;
	char qid[VR_QID_MAX];
	uint64_t held = drv.stats[0].messages_held;

	drv_limits(2, 100);
	conv_open(&c, DRV_VPS3_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@hold.example>\r\nRCPT TO:<a@example.net>\r\n"
		   "DATA\r\nFrom: s@hold.example\r\n\r\n.\r\n");
	queued(&c, qid, sizeof(qid));
	assert_true(drv_spool_find(qid, &m));
	assert_int_equal(m.flags & VR_SPOOL_HOLD, 0);
	drv_msg_free(&m);
	assert_int_equal(drv_used("vps3"), 1);

	/* the second recipient finds the window full: the message is held */
	conv_sendf(&c, "MAIL FROM:<s@hold.example>\r\nRCPT TO:<a@example.net>\r\n"
		   "RCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"
		   "From: s@hold.example\r\n\r\n.\r\n");
	static const char accepted[] = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
		"250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as ";
	const char *said = conv_said(&c);
	assert_memory_equal(said, accepted, sizeof(accepted) - 1);
	assert_non_null(drv_qid(said, qid, sizeof(qid)));
	assert_true(drv_spool_find(qid, &m));
	assert_int_equal(m.flags & VR_SPOOL_HOLD, VR_SPOOL_HOLD);
	assert_int_equal(m.n_rcpts, 3);
	drv_msg_free(&m);
	assert_int_equal(drv.stats[0].messages_held, held + 1);
	assert_true(log_has(" info event=hold client=" DRV_VPS3_ADDR " account=vps3"));
	char want[128];
	snprintf(want, sizeof(want), "event=accepted qid=%s account=vps3", qid);
	assert_true(log_has(want));
	assert_int_equal(drv_used("vps3"), 1);
	slots_settled(1, 1);

	/* a new transaction is not held until it meets the limit */
	conv_sendf(&c, "MAIL FROM:<s@hold.example>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n"
		   "From: s@hold.example\r\n\r\n.\r\n");
	queued(&c, qid, sizeof(qid));
	assert_true(drv_spool_find(qid, &m));
	assert_int_equal(m.flags & VR_SPOOL_HOLD, 0);
	drv_msg_free(&m);
	assert_int_equal(drv_used("vps3"), 2);
	conv_close(&c);
	slots_settled(2, 1);
}

/* An account the windows do not know (a reload between the two tables)
 * is told to come back, never let through unlimited. */
static void test_quota_unknown_account(void **state)
{
	char err[256], path[160];
	struct conv c;
	FILE *f;

	snprintf(path, sizeof(path), "%s/other.jsonl", drv.dir);
	assert_non_null(f = fopen(path, "w"));
	fputs("{\"id\":\"vps9\",\"ips\":[\"192.0.2.99\"]}\n", f);
	fclose(f);
	struct vr_accounts *t = vr_accounts_load(path, 1000, err, sizeof(err));
	assert_non_null(t);
	drv_limits(5, 100);
	assert_int_equal(vr_rl_sync(drv.srv.rl, t), 0);
	vr_accounts_free(t);
	conv_open(&c, DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.net>\r\n");
	assert_non_null(strstr(conv_said(&c), "250 2.1.0 Ok\r\n451 4.3.0 no sending quota known for "
			       "VPS vps1 yet, try again later\r\n"));
	conv_close(&c);
	slots_settled(0, 0);
}

/* Sessions from an IPv4-mapped IPv6 address are the IPv4 client. */
static void test_v4_mapped_client(void **state)
{
	struct conv c;

	conv_open(&c, "::ffff:" DRV_VPS1_ADDR, false);
	conv_sendf(&c, "EHLO c.example\r\nMAIL FROM:<s@example.com>\r\n");
	expect(&c, BANNER EHLO_PLAIN "250 2.1.0 Ok\r\n");
	conv_close(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_spool_data_exact, reset),
		cmocka_unit_test_setup(test_spool_bdat_exact, reset),
		cmocka_unit_test_setup(test_received_protocols, reset),
		cmocka_unit_test_setup(test_spool_nothing_refused, reset),
		cmocka_unit_test_setup(test_starttls_auth_plain, reset),
		cmocka_unit_test_setup(test_auth_variants, reset),
		cmocka_unit_test_setup(test_auth_token_not_logged, reset),
		cmocka_unit_test_setup(test_implicit_tls, reset),
		cmocka_unit_test_setup(test_implicit_tls_plaintext_client, reset),
		cmocka_unit_test_setup(test_starttls_injection, reset),
		cmocka_unit_test_setup(test_commit_waits, reset),
		cmocka_unit_test_setup(test_free_during_commit, reset),
		cmocka_unit_test_setup(test_commit_failures, reset),
		cmocka_unit_test_setup(test_output_backpressure, reset),
		cmocka_unit_test_setup(test_accounts_reload, reset),
		cmocka_unit_test_setup(test_greet_pause_and_idle, reset),
		cmocka_unit_test_setup(test_log_lines, reset),
		cmocka_unit_test_setup(test_counters, reset),
		cmocka_unit_test_setup(test_sender_rules, reset),
		cmocka_unit_test_setup(test_sender_rules_auth, reset),
		cmocka_unit_test_setup(test_sender_rules_reload, reset),
		cmocka_unit_test_setup(test_quota_defer, reset),
		cmocka_unit_test_setup(test_quota_release_paths, reset),
		cmocka_unit_test_setup(test_quota_release_on_drop, reset),
		cmocka_unit_test_setup(test_quota_commit_outcomes, reset),
		cmocka_unit_test_setup(test_quota_orphan, reset),
		cmocka_unit_test_setup(test_quota_hold, reset),
		cmocka_unit_test_setup(test_quota_unknown_account, reset),
		cmocka_unit_test_setup(test_v4_mapped_client, reset),
	};
	return cmocka_run_group_tests(tests, drv_setup, drv_teardown);
}
