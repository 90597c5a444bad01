/*
 * test_smtpc.c - the outbound SMTP client against scripted servers in
 * memory: the replies real servers send (multi-line, pipelined, 4xx/5xx at
 * each step), STARTTLS with a real vr_tls server and DANE, response
 * injection, SMTPUTF8 refusal, the body filter (dot-stuffing, line ends, the
 * final CRLF), backpressure, connection reuse and timeouts on a virtual
 * clock. The reply parser is fed whole, byte by byte and against a guard
 * page.
 *
 * The server side is a script: the test reads what the client wrote
 * (expect_out) and answers (srv). The certificate is made here with
 * OpenSSL's API, as in test_tls.c.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "vmrelay/smtpc.h"
#include "smtpc_reply.h"
#include "guard.h"

static char dir[] = "/tmp/vr_test_smtpc.XXXXXX";
/* cert.pem: a self-signed mx.test; chain.pem: mx.test issued by a test CA,
 * then the CA, for DANE-TA. */
static char cert_path[64], key_path[64], chain_path[64], chain_key_path[64];
static uint8_t spki_sha256[32];          /* TLSA 3 1 1 of cert.pem */
static uint8_t leaf_sha512[64];          /* TLSA 3 0 2 of cert.pem */
static uint8_t ca_sha256[32];            /* TLSA 2 0 1 of the CA */

/* --- certificates --- */

static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
		       bool ca)
{
	X509 *x = X509_new();
	X509V3_CTX v3;

	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), ca ? 1 : 2);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
	X509_set_pubkey(x, key);
	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	X509_EXTENSION *e = ca
		? X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE")
		: X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:mx.test");
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static void write_pem(const char *path, EVP_PKEY *key, X509 *x, X509 *x2)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	if (key)
		PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	if (x)
		PEM_write_X509(f, x);
	if (x2)
		PEM_write_X509(f, x2);
	fclose(f);
}

static void cert_digest(X509 *x, const EVP_MD *md, uint8_t *out)
{
	unsigned char *der = NULL;
	int n = i2d_X509(x, &der);
	unsigned int len = 0;

	EVP_Digest(der, (size_t)n, out, &len, md, NULL);
	OPENSSL_free(der);
}

static int setup(void **state)
{
	if (!mkdtemp(dir))
		return -1;
	snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
	snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
	snprintf(chain_path, sizeof(chain_path), "%s/chain.pem", dir);
	snprintf(chain_key_path, sizeof(chain_key_path), "%s/chain-key.pem", dir);

	/* Self-signed mx.test: DANE-EE by key (3 1 1) and by certificate. */
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = make_cert("mx.test", key, NULL, NULL, false);
	write_pem(key_path, key, NULL, NULL);
	write_pem(cert_path, NULL, x, NULL);
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(key, &der);
	unsigned int len = 0;
	EVP_Digest(der, (size_t)n, spki_sha256, &len, EVP_sha256(), NULL);
	OPENSSL_free(der);
	cert_digest(x, EVP_sha512(), leaf_sha512);
	X509_free(x);
	EVP_PKEY_free(key);

	/* A CA and a leaf it issued; the server sends both. */
	EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *leaf_key = EVP_EC_gen("P-256");
	X509 *ca = make_cert("vmrelay test CA", ca_key, NULL, NULL, true);
	X509 *leaf = make_cert("mx.test", leaf_key, ca, ca_key, false);
	write_pem(chain_key_path, leaf_key, NULL, NULL);
	write_pem(chain_path, NULL, leaf, ca);
	cert_digest(ca, EVP_sha256(), ca_sha256);
	X509_free(ca);
	X509_free(leaf);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(leaf_key);
	return 0;
}

static int teardown(void **state)
{
	unlink(cert_path);
	unlink(key_path);
	unlink(chain_path);
	unlink(chain_key_path);
	return rmdir(dir);
}

/* --- reply parser --- */

static int parse_all(const char *s, struct vr_smtpc_rp *p, bool enhanced, size_t *used)
{
	vr_smtpc_rp_init(p, enhanced);
	return vr_smtpc_rp_parse(p, (const uint8_t *)s, strlen(s), used);
}

static void test_reply_multiline(void **state)
{
	const char *s = "250-mx.test greets you\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
			"250 ENHANCEDSTATUSCODES\r\n550 next";
	struct vr_smtpc_rp p;
	struct vr_smtpc_reply r;
	size_t used;

	assert_int_equal(parse_all(s, &p, false, &used), VR_OK);
	assert_int_equal(p.code, 250);
	assert_int_equal(p.n_lines, 4);
	assert_int_equal(used, strlen(s) - strlen("550 next"));
	assert_memory_equal(s + p.line[1].off, "PIPELINING", p.line[1].len);
	vr_smtpc_rp_copy(&p, (const uint8_t *)s, &r);
	assert_string_equal(r.text, "mx.test greets you PIPELINING SIZE 1000 ENHANCEDSTATUSCODES");
	assert_false(r.local);

	/* Byte by byte, each prefix presented again with one more byte. */
	vr_smtpc_rp_init(&p, false);
	for (size_t n = 1; n < used; n++)
		assert_int_equal(vr_smtpc_rp_parse(&p, (const uint8_t *)s, n, &used), VR_AGAIN);
	assert_int_equal(vr_smtpc_rp_parse(&p, (const uint8_t *)s, strlen(s), &used), VR_OK);
	assert_int_equal(p.n_lines, 4);

	/* A bare code, a lone LF, a code with nothing after it. */
	assert_int_equal(parse_all("221\n", &p, false, &used), VR_OK);
	assert_int_equal(p.code, 221);
	assert_int_equal(used, 4);
	assert_int_equal(p.line[0].len, 0);
}

static void test_reply_enhanced(void **state)
{
	const char *s = "550-5.1.1 no such user\r\n550 5.1.1 here\r\n";
	struct vr_smtpc_rp p;
	struct vr_smtpc_reply r;
	size_t used;

	assert_int_equal(parse_all(s, &p, true, &used), VR_OK);
	vr_smtpc_rp_copy(&p, (const uint8_t *)s, &r);
	assert_string_equal(r.enh, "5.1.1");
	assert_string_equal(r.text, "no such user here");
	/* Not advertised: the code is text. */
	assert_int_equal(parse_all(s, &p, false, &used), VR_OK);
	vr_smtpc_rp_copy(&p, (const uint8_t *)s, &r);
	assert_string_equal(r.enh, "");
	assert_string_equal(r.text, "5.1.1 no such user 5.1.1 here");
	/* A class that contradicts the code, or a malformed one, stays text. */
	assert_int_equal(parse_all("250 5.0.0 odd\r\n", &p, true, &used), VR_OK);
	assert_string_equal(p.enh, "");
	assert_int_equal(parse_all("451 4.7.1234 x\r\n", &p, true, &used), VR_OK);
	assert_string_equal(p.enh, "");
	assert_int_equal(parse_all("451 4.7.12\r\n", &p, true, &used), VR_OK);
	assert_string_equal(p.enh, "4.7.12");
	assert_int_equal(p.line[0].len, 0);
}

static void test_reply_garbage(void **state)
{
	static const struct {
		const char *in;
		const char *why;
	} bad[] = {
		{ "HTTP/1.1 400 Bad Request\r\n", "3-digit" },
		{ "25\r\n", "3-digit" },
		{ "199 hm\r\n", "out of range" },
		{ "620 hm\r\n", "out of range" },
		{ "260 hm\r\n", "out of range" },
		{ "250x\r\n", "not followed" },
		{ "250-a\r\n550 b\r\n", "different codes" },
	};
	struct vr_smtpc_rp p;
	size_t used;

	for (size_t i = 0; i < VR_ARRAY_SIZE(bad); i++) {
		assert_int_equal(parse_all(bad[i].in, &p, true, &used), VR_ERR);
		assert_non_null(strstr(p.err, bad[i].why));
	}

	/* A line over the limit fails once the limit is reached, LF or not. */
	char *longl = malloc(VR_SMTPC_LINE_MAX + 8);
	memset(longl, 'a', VR_SMTPC_LINE_MAX + 7);
	memcpy(longl, "250 ", 4);
	longl[VR_SMTPC_LINE_MAX + 7] = '\0';
	assert_int_equal(parse_all(longl, &p, false, &used), VR_ERR);
	assert_non_null(strstr(p.err, "longer than"));
	/* One byte short of the limit with its LF is fine. */
	longl[VR_SMTPC_LINE_MAX - 1] = '\n';
	longl[VR_SMTPC_LINE_MAX] = '\0';
	assert_int_equal(parse_all(longl, &p, false, &used), VR_OK);
	free(longl);

	/* Endless continuation lines. */
	char many[VR_SMTPC_LINES_MAX * 8 + 16] = "";
	for (int i = 0; i < VR_SMTPC_LINES_MAX; i++)
		strcat(many, "250-x\r\n");
	assert_int_equal(parse_all(many, &p, false, &used), VR_ERR);
	assert_non_null(strstr(p.err, "too many lines"));
	/* One fewer, and a last line, is accepted. */
	strcpy(many + (VR_SMTPC_LINES_MAX - 1) * 7, "250 x\r\n");
	assert_int_equal(parse_all(many, &p, false, &used), VR_OK);
	assert_int_equal(p.n_lines, VR_SMTPC_LINES_MAX);
}

static void test_reply_guard(void **state)
{
	static const char *const in[] = {
		"250-a\r\n250 b\r\n", "250", "250-", "550 5.1.1", "550-5.1.", "2", "250 x\r",
	};
	struct vr_smtpc_rp p;
	size_t used;

	for (size_t i = 0; i < VR_ARRAY_SIZE(in); i++) {
		size_t n = strlen(in[i]);
		struct guarded g = guard(in[i], n);
		vr_smtpc_rp_init(&p, true);
		int rc = vr_smtpc_rp_parse(&p, g.data, n, &used);
		assert_true(rc == VR_OK || rc == VR_AGAIN);
		unguard(&g);
	}
}

static void test_reply_truncated_text(void **state)
{
	char s[3 * VR_SMTPC_TEXT_MAX];
	struct vr_smtpc_rp p;
	struct vr_smtpc_reply r;
	size_t used;

	memset(s, 'x', sizeof(s));
	memcpy(s, "451 ", 4);
	s[10] = '\001';
	memcpy(s + sizeof(s) - 3, "\r\n", 3);
	assert_int_equal(parse_all(s, &p, false, &used), VR_OK);
	vr_smtpc_rp_copy(&p, (const uint8_t *)s, &r);
	assert_int_equal(strlen(r.text), VR_SMTPC_TEXT_MAX - 1);
	assert_string_equal(r.text + VR_SMTPC_TEXT_MAX - 4, "...");
	assert_int_equal(r.text[6], '?');
}

/* --- a scripted server --- */

struct body {
	const char *data;
	size_t len, off, chunk;
	unsigned pulls;
	bool fail;
};

static ssize_t body_read(void *cookie, uint8_t *buf, size_t cap)
{
	struct body *b = cookie;
	size_t n = VR_MIN(VR_MIN(cap, b->chunk), b->len - b->off);

	b->pulls++;
	if (b->fail && b->off > 0)
		return -1;
	memcpy(buf, b->data + b->off, n);
	b->off += n;
	return (ssize_t)n;
}

struct h {
	struct vr_smtpc *c;
	uint64_t now;
	unsigned ready, msg_done, closed;
	enum vr_smtpc_status st;
	struct vr_smtpc_reply msg_reply, closed_reply;
	char out[1 << 16];          /* what the client wrote, not yet checked */
	size_t out_len;
	/* Under TLS: the server's end. */
	struct vr_tls_ctx *sctx;
	struct vr_tls *srv;
	bool srv_tls;
	struct vr_buf srv_out;
	/* A message to send from the ready callback. */
	struct vr_smtpc_msg *next;
	bool hold_output;           /* don't collect client output (backpressure) */
};

static void on_ready(void *owner)
{
	struct h *h = owner;

	h->ready++;
	if (h->next) {
		struct vr_smtpc_msg *m = h->next;
		h->next = NULL;
		assert_int_equal(vr_smtpc_send(h->c, m, h->now), 0);
	}
}

static void on_msg_done(void *owner, struct vr_smtpc_msg *msg, enum vr_smtpc_status st,
			const struct vr_smtpc_reply *r)
{
	struct h *h = owner;

	h->msg_done++;
	h->st = st;
	h->msg_reply = *r;
}

static void on_closed(void *owner, const struct vr_smtpc_reply *r)
{
	struct h *h = owner;

	h->closed++;
	h->closed_reply = *r;
}

static const struct vr_smtpc_ops ops = { on_ready, on_msg_done, on_closed };

static struct sockaddr_in peer_addr(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(25) };

	inet_pton(AF_INET, "192.0.2.25", &sin.sin_addr);
	return sin;
}

/* Moves client output to where the test reads it, through TLS if on. */
static void collect(struct h *h)
{
	const uint8_t *p;
	size_t n;

	if (h->hold_output)
		return;
	while ((n = vr_smtpc_tx_peek(h->c, &p)) > 0) {
		if (h->srv_tls) {
			assert_int_equal(vr_tls_feed(h->srv, p, n), 0);
		} else {
			assert_true(h->out_len + n < sizeof(h->out));
			memcpy(h->out + h->out_len, p, n);
			h->out_len += n;
		}
		vr_smtpc_tx_consume(h->c, n, h->now);
	}
	if (!h->srv_tls)
		return;
	/* The server side: run its handshake, take the plaintext. */
	for (;;) {
		ssize_t r = vr_tls_read(h->srv, h->out + h->out_len, sizeof(h->out) - h->out_len - 1);
		if (r <= 0)
			break;
		h->out_len += (size_t)r;
	}
	vr_buf_reset(&h->srv_out);
	vr_tls_drain(h->srv, &h->srv_out);
	if (h->srv_out.len) {
		size_t len = h->srv_out.len;
		uint8_t *copy = malloc(len);
		memcpy(copy, vr_buf_head(&h->srv_out), len);
		vr_smtpc_rx(h->c, copy, len, h->now);
		free(copy);
		collect(h);
	}
}

static void h_open(struct h *h, const struct vr_smtpc_params *extra)
{
	struct sockaddr_in sin = peer_addr();
	struct vr_smtpc_params p = {
		.helo_name = "relay.test", .peer_name = "mx.test",
		.peer = (struct sockaddr *)&sin, .ops = &ops,
	};

	memset(h, 0, sizeof(*h));
	if (extra) {
		p.tls = extra->tls;
		p.tls_mode = extra->tls_mode;
		p.tlsa = extra->tlsa;
		p.n_tlsa = extra->n_tlsa;
		p.max_msgs = extra->max_msgs;
		p.timeouts = extra->timeouts;
		if (extra->peer_name)
			p.peer_name = extra->peer_name;
	}
	p.owner = h;
	h->now = 1000;
	vr_buf_init(&h->srv_out, 1 << 20);
	h->c = vr_smtpc_new(&p, h->now);
	assert_non_null(h->c);
}

static void h_close(struct h *h)
{
	vr_smtpc_free(h->c);
	vr_tls_free(h->srv);
	vr_tls_ctx_free(h->sctx);
	vr_buf_free(&h->srv_out);
}

/* The server says s (plaintext, or through its TLS once that is up). */
static void srv(struct h *h, const char *s)
{
	if (h->srv_tls) {
		assert_int_equal(vr_tls_write(h->srv, s, strlen(s)), 0);
		collect(h);
		return;
	}
	vr_smtpc_rx(h->c, s, strlen(s), h->now);
	collect(h);
}

/* The client must have written exactly s since the last check. */
static void expect_out(struct h *h, const char *s)
{
	collect(h);
	h->out[h->out_len] = '\0';
	assert_string_equal(h->out, s);
	h->out_len = 0;
}

static void tick(struct h *h, uint64_t now)
{
	h->now = now;
	vr_smtpc_tick(h->c, now);
	collect(h);
}

/* Greeting and EHLO; caps are the reply's lines after the first. */
static void h_greet(struct h *h, const char *caps)
{
	char r[512];

	srv(h, "220 mx.test ESMTP\r\n");
	expect_out(h, "EHLO relay.test\r\n");
	snprintf(r, sizeof(r), "250%smx.test\r\n%s", *caps ? "-" : " ", caps);
	srv(h, r);
}

#define MSG(name, body_text, ...)                                                      \
	struct vr_smtpc_rcpt name##_rcpts[] = { __VA_ARGS__ };                         \
	struct body name##_body = { body_text, strlen(body_text), 0, 4096, 0, false }; \
	struct vr_smtpc_msg name = { "alice@example.com", name##_rcpts,                \
		VR_ARRAY_SIZE(name##_rcpts), 0, 0, body_read, &name##_body }

/* --- conversations --- */

static void test_plain_transaction(void **state)
{
	struct h h;
	MSG(m, "Subject: hi\r\n\r\nhello\r\n", { .addr = "bob@example.net" });

	h_open(&h, NULL);
	assert_int_equal(vr_smtpc_send(h.c, &m, h.now), 0);   /* queued before EHLO */
	h_greet(&h, "");
	assert_int_equal(vr_smtpc_caps(h.c), VR_SMTPC_CAP_ESMTP);
	/* No PIPELINING: one command at a time. */
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\n");
	srv(&h, "250 ok\r\n");
	expect_out(&h, "RCPT TO:<bob@example.net>\r\n");
	srv(&h, "250 ok\r\n");
	expect_out(&h, "DATA\r\n");
	srv(&h, "354 go\r\n");
	expect_out(&h, "Subject: hi\r\n\r\nhello\r\n.\r\n");
	assert_int_equal(h.msg_done, 0);
	srv(&h, "250 2.0.0 queued as X\r\n");
	assert_int_equal(h.msg_done, 1);
	assert_int_equal(h.st, VR_SMTPC_SENT);
	assert_int_equal(m_rcpts[0].reply.code, 250);
	assert_string_equal(m_rcpts[0].reply.text, "2.0.0 queued as X");
	assert_int_equal(h.ready, 1);                        /* idle again */
	vr_smtpc_quit(h.c, h.now);
	expect_out(&h, "QUIT\r\n");
	srv(&h, "221 bye\r\n");
	assert_int_equal(h.closed, 1);
	assert_true(vr_smtpc_done(h.c));
	assert_int_equal(vr_smtpc_send(h.c, &m, h.now), -EPIPE);
	assert_null(vr_smtpc_tls_version(h.c));
	h_close(&h);
}

static void test_pipelined(void **state)
{
	struct h h;
	MSG(m, "x\r\n", { .addr = "a@b.test" }, { .addr = "c@d.test" }, { .addr = "e@f.test" });

	m.size = 3;
	m.flags = VR_SMTPC_8BIT;
	h_open(&h, NULL);
	h_greet(&h, "250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n"
		    "250 ENHANCEDSTATUSCODES\r\n");
	assert_int_equal(h.ready, 1);
	assert_int_equal(vr_smtpc_size_limit(h.c), 1000000);
	assert_int_equal(vr_smtpc_send(h.c, &m, h.now), 0);
	assert_int_equal(vr_smtpc_send(h.c, &m, h.now), -EBUSY);
	/* RFC 2920: the whole group in one write, before any reply. */
	expect_out(&h, "MAIL FROM:<alice@example.com> SIZE=3 BODY=8BITMIME\r\n"
		       "RCPT TO:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test>\r\n"
		       "DATA\r\n");
	/* Replies in one segment, one of them multi-line. */
	srv(&h, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n"
		"451 4.7.1 later\r\n354 go\r\n");
	expect_out(&h, "x\r\n.\r\n");
	srv(&h, "250 2.0.0 ok\r\n");
	assert_int_equal(h.st, VR_SMTPC_SENT);
	assert_int_equal(m_rcpts[0].reply.code, 250);
	assert_string_equal(m_rcpts[0].reply.enh, "2.0.0");
	assert_int_equal(m_rcpts[1].reply.code, 550);
	assert_string_equal(m_rcpts[1].reply.enh, "5.1.1");
	assert_string_equal(m_rcpts[1].reply.text, "no such user");
	assert_int_equal(m_rcpts[2].reply.code, 451);
	vr_smtpc_quit(h.c, h.now);
	expect_out(&h, "QUIT\r\n");
	h_close(&h);
}

/* With PIPELINING the next message's commands go out behind the end of
 * data, before its reply (one round trip a message): each message keeps
 * its own outcome, and a connection lost with both out fails both. */
static void test_pipelined_behind_dot(void **state)
{
	struct h h;
	MSG(m1, "one\r\n", { .addr = "a@b.test" });
	MSG(m2, "two\r\n", { .addr = "c@d.test" });
	MSG(m3, "three\r\n", { .addr = "e@f.test" });

	h_open(&h, NULL);
	h_greet(&h, "250 PIPELINING\r\n");
	assert_int_equal(vr_smtpc_send(h.c, &m1, h.now), 0);
	h.next = &m2;               /* sent from ready once m1's dot is out */
	srv(&h, "250 ok\r\n250 ok\r\n354 go\r\n");
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\nDATA\r\n"
		       "one\r\n.\r\n"
		       "MAIL FROM:<alice@example.com>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
	assert_int_equal(h.ready, 2);
	assert_int_equal(h.msg_done, 0);
	/* m1's end of data refused: m1 alone is deferred. */
	srv(&h, "452 4.3.1 no room\r\n");
	assert_int_equal(h.msg_done, 1);
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_int_equal(m1_rcpts[0].reply.code, 452);
	assert_int_equal(m2_rcpts[0].reply.code, 0);
	h.next = &m3;
	srv(&h, "250 ok\r\n250 ok\r\n354 go\r\n");
	expect_out(&h, "two\r\n.\r\n"
		       "MAIL FROM:<alice@example.com>\r\nRCPT TO:<e@f.test>\r\nDATA\r\n");
	assert_int_equal(h.msg_done, 1);
	/* Lost before m2's reply: m2 may have gone through, and says so;
	 * m3 fails with it. Both are retried. */
	vr_smtpc_rx_eof(h.c, 0, h.now);
	assert_int_equal(h.msg_done, 3);
	assert_int_equal(h.closed, 1);
	assert_int_equal(m2_rcpts[0].reply.code, 421);
	assert_non_null(strstr(m2_rcpts[0].reply.text, "may be sent more than once"));
	assert_int_equal(m3_rcpts[0].reply.code, 421);
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	h_close(&h);

	/* Both accepted; nothing pipelined behind the last (max_msgs). */
	struct vr_smtpc_params p = { .max_msgs = 2 };
	h_open(&h, &p);
	h_greet(&h, "250 PIPELINING\r\n");
	m1_body.off = m2_body.off = 0;
	vr_smtpc_send(h.c, &m1, h.now);
	h.next = &m2;
	srv(&h, "250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 first\r\n250 ok\r\n250 ok\r\n"
		"354 go\r\n");
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\nDATA\r\n"
		       "one\r\n.\r\n"
		       "MAIL FROM:<alice@example.com>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"
		       "two\r\n.\r\n");
	assert_int_equal(h.msg_done, 1);
	assert_string_equal(m1_rcpts[0].reply.text, "2.0.0 first");
	srv(&h, "250 2.0.0 second\r\n");
	expect_out(&h, "QUIT\r\n");
	assert_int_equal(h.msg_done, 2);
	assert_int_equal(h.st, VR_SMTPC_SENT);
	assert_string_equal(m2_rcpts[0].reply.text, "2.0.0 second");
	h_close(&h);
}

/* The server's bytes one at a time: every reply split everywhere. */
static void srv_bytes(struct h *h, const char *s)
{
	for (; *s; s++) {
		vr_smtpc_rx(h->c, s, 1, h->now);
		collect(h);
	}
}

static void test_byte_by_byte(void **state)
{
	struct h h;
	MSG(m, "x\r\n", { .addr = "a@b.test" }, { .addr = "c@d.test" });

	h_open(&h, NULL);
	srv_bytes(&h, "220-mx.test\r\n220 ESMTP\r\n");
	expect_out(&h, "EHLO relay.test\r\n");
	srv_bytes(&h, "250-mx.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n");
	assert_int_equal(h.ready, 1);
	vr_smtpc_send(h.c, &m, h.now);
	srv_bytes(&h, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n452-4.5.3 too\r\n452 4.5.3 many\r\n"
		      "354 go\r\n");
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\n"
		       "RCPT TO:<c@d.test>\r\nDATA\r\nx\r\n.\r\n");
	srv_bytes(&h, "250 2.0.0 ok\r\n");
	assert_int_equal(h.st, VR_SMTPC_SENT);
	assert_string_equal(m_rcpts[0].reply.text, "ok");
	assert_int_equal(m_rcpts[1].reply.code, 452);
	assert_string_equal(m_rcpts[1].reply.enh, "4.5.3");
	assert_string_equal(m_rcpts[1].reply.text, "too many");
	h_close(&h);
}

static void test_helo_fallback(void **state)
{
	struct h h;
	MSG(m, "\xe9t\xe9\r\n", { .addr = "a@b.test" });

	m.flags = VR_SMTPC_8BIT;
	h_open(&h, NULL);
	srv(&h, "220 old\r\n");
	expect_out(&h, "EHLO relay.test\r\n");
	srv(&h, "500 what?\r\n");
	expect_out(&h, "HELO relay.test\r\n");
	srv(&h, "250 hi\r\n");
	assert_int_equal(vr_smtpc_caps(h.c), 0);
	vr_smtpc_send(h.c, &m, h.now);
	/* 8-bit to a server without 8BITMIME: sent, unlabelled. */
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\n");
	srv(&h, "250 ok\r\n");
	srv(&h, "250 ok\r\n");
	srv(&h, "354 go\r\n");
	expect_out(&h, "RCPT TO:<a@b.test>\r\nDATA\r\n\xe9t\xe9\r\n.\r\n");
	h_close(&h);
}

static void test_greeting_refused(void **state)
{
	struct h h;
	MSG(m, "x", { .addr = "a@b.test" });

	h_open(&h, NULL);
	/* Left over from an earlier attempt: must not survive this one. */
	m_rcpts[0].reply.code = 550;
	vr_smtpc_send(h.c, &m, h.now);
	srv(&h, "554 5.7.1 go away\r\n");
	/* Another MX, or later, may work: a temporary failure for the mail. */
	assert_int_equal(h.msg_done, 1);
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_int_equal(h.closed, 1);
	assert_true(h.closed_reply.local);
	assert_int_equal(h.closed_reply.code, 421);
	assert_string_equal(h.closed_reply.text,
			    "host mx.test[192.0.2.25]:25 refused to talk to me: 554 5.7.1 go away");
	assert_int_equal(m_rcpts[0].reply.code, 421);
	assert_int_equal(h.ready, 0);
	expect_out(&h, "");
	h_close(&h);
}

/* EHLO 4xx, HELO refused, RSET refused: each ends the connection, and the
 * message in hand is deferred with the server's words quoted. */
static void test_session_refusals(void **state)
{
	struct h h;
	MSG(m, "x", { .addr = "a@b.test" });

	h_open(&h, NULL);
	vr_smtpc_send(h.c, &m, h.now);
	srv(&h, "220 hi\r\n421 4.3.2 busy\r\n");
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_string_equal(h.closed_reply.text,
			    "host mx.test[192.0.2.25]:25 refused EHLO: 421 4.3.2 busy");
	h_close(&h);

	h_open(&h, NULL);
	vr_smtpc_send(h.c, &m, h.now);
	srv(&h, "220 hi\r\n502 no\r\n");
	expect_out(&h, "EHLO relay.test\r\nHELO relay.test\r\n");
	srv(&h, "550 not you either\r\n");
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_int_equal(m_rcpts[0].reply.code, 421);
	assert_non_null(strstr(m_rcpts[0].reply.text, "refused HELO: 550 not you either"));
	h_close(&h);

	/* All recipients refused leaves MAIL open; the RSET before the next
	 * message is refused too. */
	h_open(&h, NULL);
	h_greet(&h, "");
	vr_smtpc_send(h.c, &m, h.now);
	srv(&h, "250 ok\r\n550 no\r\n");
	assert_int_equal(h.st, VR_SMTPC_BOUNCE);
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\n");
	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "RSET\r\n");
	srv(&h, "500 what\r\n");
	assert_int_equal(h.msg_done, 2);
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_string_equal(m_rcpts[0].reply.text,
			    "host mx.test[192.0.2.25]:25 refused RSET: 500 what");
	assert_int_equal(h.closed, 1);
	h_close(&h);
}

/* 421 in the middle of a pipelined group: the server is going away, so
 * the rest of the group is never answered and nothing more is sent. */
static void test_421_mid_transaction(void **state)
{
	struct h h;
	MSG(m, "x", { .addr = "a@b.test" }, { .addr = "c@d.test" });

	h_open(&h, NULL);
	h_greet(&h, "250 PIPELINING\r\n");
	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\n"
		       "RCPT TO:<c@d.test>\r\nDATA\r\n");
	srv(&h, "250 ok\r\n550 no\r\n421 4.3.2 shutting down\r\n");
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_int_equal(m_rcpts[0].reply.code, 550);
	assert_int_equal(m_rcpts[1].reply.code, 421);
	assert_false(m_rcpts[1].reply.local);
	assert_int_equal(h.closed, 1);
	assert_int_equal(h.closed_reply.code, 421);
	assert_int_equal(h.ready, 1);
	expect_out(&h, "");
	h_close(&h);
}

/* MAIL refused: 4xx defers, 5xx bounces; the next message needs no RSET. */
static void test_mail_refused(void **state)
{
	struct h h;
	MSG(m, "x", { .addr = "a@b.test" }, { .addr = "c@d.test" });

	h_open(&h, NULL);
	h_greet(&h, "250 ENHANCEDSTATUSCODES\r\n");
	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\n");
	srv(&h, "451 4.3.0 try later\r\n");
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_string_equal(h.msg_reply.text, "try later");
	assert_int_equal(m_rcpts[1].reply.code, 451);

	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\n");
	srv(&h, "553 5.7.1 not you\r\n");
	assert_int_equal(h.st, VR_SMTPC_BOUNCE);
	assert_string_equal(m_rcpts[0].reply.enh, "5.7.1");
	assert_int_equal(h.msg_done, 2);
	h_close(&h);
}

/* Every RCPT refused: the message bounces, and MAIL left a transaction
 * open, so the next message starts with RSET (pipelined with it). */
static void test_rcpts_refused_then_rset(void **state)
{
	struct h h;
	MSG(m, "x", { .addr = "a@b.test" });
	MSG(m2, "y", { .addr = "c@d.test" });

	h_open(&h, NULL);
	h_greet(&h, "250 PIPELINING\r\n");
	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\nDATA\r\n");
	h.next = &m2;
	srv(&h, "250 ok\r\n550 no\r\n554 no valid recipients\r\n");
	assert_int_equal(h.msg_done, 1);
	assert_int_equal(h.st, VR_SMTPC_BOUNCE);
	assert_int_equal(h.msg_reply.code, 550);
	expect_out(&h, "RSET\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
	srv(&h, "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
	expect_out(&h, "y\r\n.\r\n");
	srv(&h, "250 ok\r\n");
	assert_int_equal(h.st, VR_SMTPC_SENT);
	assert_int_equal(vr_smtpc_msgs_sent(h.c), 2);
	h_close(&h);
}

/* Some servers answer 354 though no recipient was accepted: the client
 * ends the empty message at once and reports the recipients' refusals. */
static void test_data_354_without_rcpts(void **state)
{
	struct h h;
	MSG(m, "secret", { .addr = "a@b.test" });

	h_open(&h, NULL);
	h_greet(&h, "250 PIPELINING\r\n");
	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\nDATA\r\n");
	srv(&h, "250 ok\r\n450 busy\r\n354 go\r\n");
	expect_out(&h, ".\r\n");
	assert_int_equal(m_body.pulls, 0);
	srv(&h, "250 ok\r\n");
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_int_equal(m_rcpts[0].reply.code, 450);
	h_close(&h);
}

static void test_data_and_dot_refused(void **state)
{
	struct h h;
	MSG(m, "x\r\n", { .addr = "a@b.test" }, { .addr = "c@d.test" });

	h_open(&h, NULL);
	h_greet(&h, "250 PIPELINING\r\n");
	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\n"
		       "RCPT TO:<c@d.test>\r\nDATA\r\n");
	srv(&h, "250 ok\r\n250 ok\r\n550 no\r\n451 not now\r\n");
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_int_equal(m_rcpts[0].reply.code, 451);
	assert_int_equal(m_rcpts[1].reply.code, 550);

	/* DATA refused with MAIL accepted: RSET first. Then the dot refused. */
	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "RSET\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\n"
		       "RCPT TO:<c@d.test>\r\nDATA\r\n");
	m_body.off = 0;
	srv(&h, "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
	expect_out(&h, "x\r\n.\r\n");
	srv(&h, "554 5.7.1 spam\r\n");
	assert_int_equal(h.st, VR_SMTPC_BOUNCE);
	assert_int_equal(m_rcpts[0].reply.code, 554);
	assert_int_equal(m_rcpts[1].reply.code, 554);

	/* A 2xx to DATA is not a go-ahead, nor a delivery. */
	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\n"
		       "RCPT TO:<c@d.test>\r\nDATA\r\n");
	srv(&h, "250 ok\r\n250 ok\r\n250 ok\r\n250 sure\r\n");
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_true(m_rcpts[0].reply.local);
	assert_non_null(strstr(m_rcpts[0].reply.text, "unexpected reply"));
	h_close(&h);
}

static void test_drop_mid_data(void **state)
{
	struct h h;
	char big[200000];
	MSG(m, "", { .addr = "a@b.test" });

	memset(big, 'a', sizeof(big));
	for (size_t i = 70; i < sizeof(big); i += 72)
		big[i] = '\n';
	m_body.data = big;
	m_body.len = sizeof(big);
	h_open(&h, NULL);
	h_greet(&h, "250 PIPELINING\r\n");
	vr_smtpc_send(h.c, &m, h.now);
	srv(&h, "250 ok\r\n250 ok\r\n");
	h.hold_output = true;
	srv(&h, "354 go\r\n");
	vr_smtpc_rx_eof(h.c, ECONNRESET, h.now);
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_int_equal(h.closed, 1);
	assert_string_equal(m_rcpts[0].reply.text,
			    "lost connection with mx.test[192.0.2.25]:25 while sending message "
			    "body: Connection reset by peer");
	assert_int_equal(vr_smtpc_rx_space(h.c), 0);
	h_close(&h);
}

static void test_body_read_error(void **state)
{
	struct h h;
	MSG(m, "line one\r\nline two\r\n", { .addr = "a@b.test" });

	m_body.chunk = 5;
	m_body.fail = true;
	h_open(&h, NULL);
	h_greet(&h, "250 PIPELINING\r\n");
	vr_smtpc_send(h.c, &m, h.now);
	srv(&h, "250 ok\r\n250 ok\r\n354 go\r\n");
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_int_equal(h.closed, 1);
	assert_non_null(strstr(h.closed_reply.text, "cannot read the message body"));
	h_close(&h);
}

/* The body filter, with every chunking: 1 byte at a time catches state
 * kept across chunks (a CR LF split, a dot after a split line end). */
static void test_body_filter(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ ".hidden\r\n..two\r\nmid.dle\r\n.\r\n", "..hidden\r\n...two\r\nmid.dle\r\n..\r\n" },
		{ "no final line end", "no final line end\r\n" },
		{ "ends in CR\r", "ends in CR\r\n" },
		{ "", "" },
		{ "bare\nLF\n.dot\rCR\r\n", "bare\r\nLF\r\n..dot\r\nCR\r\n" },
		{ "\r\n", "\r\n" },
	};

	for (size_t i = 0; i < VR_ARRAY_SIZE(cases); i++) {
		for (size_t chunk = 1; chunk <= 4096; chunk *= 64) {
			struct h h;
			char want[256];
			MSG(m, cases[i].in, { .addr = "a@b.test" });
			m_body.chunk = chunk;
			h_open(&h, NULL);
			h_greet(&h, "250 PIPELINING\r\n");
			vr_smtpc_send(h.c, &m, h.now);
			srv(&h, "250 ok\r\n250 ok\r\n");
			expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\n"
				       "DATA\r\n");
			srv(&h, "354 go\r\n");
			snprintf(want, sizeof(want), "%s.\r\n", cases[i].out);
			expect_out(&h, want);
			h_close(&h);
		}
	}
}

/* The client pulls the body only while its output is low: with nothing
 * sent, a 2 MB body stays mostly with the caller. */
static void test_backpressure(void **state)
{
	struct h h;
	size_t len = 2u << 20;
	char *big = malloc(len);
	MSG(m, "", { .addr = "a@b.test" });

	memset(big, 'b', len);
	for (size_t i = 998; i < len; i += 1000)
		big[i] = '\n';
	m_body.data = big;
	m_body.len = len;
	h_open(&h, NULL);
	h_greet(&h, "250 PIPELINING\r\n");
	vr_smtpc_send(h.c, &m, h.now);
	srv(&h, "250 ok\r\n250 ok\r\n");
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\nDATA\r\n");
	h.hold_output = true;
	srv(&h, "354 go\r\n");
	const uint8_t *p;
	size_t held = vr_smtpc_tx_peek(h.c, &p);
	assert_true(held >= 64 * 1024 && held < 128 * 1024);
	assert_true(m_body.off < 128 * 1024);
	/* Draining lets it go on, to the end. */
	size_t total = 0;
	while ((held = vr_smtpc_tx_peek(h.c, &p)) > 0) {
		total += held;
		vr_smtpc_tx_consume(h.c, held, h.now);
	}
	assert_int_equal(m_body.off, len);
	/* A CR per LF, the missing final CR LF, ".\r\n". */
	assert_int_equal(total, len + len / 1000 + 2 + 3);
	free(big);
	h_close(&h);
}

static void test_smtputf8(void **state)
{
	struct h h;
	MSG(m, "x", { .addr = "jos\xc3\xa9@b.test" });
	MSG(m2, "x", { .addr = "a@b.test" });

	h_open(&h, NULL);
	h_greet(&h, "250 ENHANCEDSTATUSCODES\r\n");
	assert_int_equal(h.ready, 1);
	vr_smtpc_send(h.c, &m, h.now);
	/* Reported from the tick, not from inside send(). */
	assert_int_equal(h.msg_done, 0);
	assert_int_equal(vr_smtpc_deadline(h.c), 0);
	tick(&h, h.now);
	assert_int_equal(h.msg_done, 1);
	assert_int_equal(h.st, VR_SMTPC_BOUNCE);
	assert_int_equal(m_rcpts[0].reply.code, 550);
	assert_string_equal(m_rcpts[0].reply.enh, "5.6.7");
	assert_string_equal(m_rcpts[0].reply.text,
			    "SMTPUTF8 is required, but was not offered by host "
			    "mx.test[192.0.2.25]:25");
	expect_out(&h, "");
	assert_int_equal(h.ready, 2);
	assert_int_equal(vr_smtpc_msgs_sent(h.c), 0);
	/* The connection is still good for ASCII mail; the flag alone also
	 * asks for SMTPUTF8. */
	m2.flags = VR_SMTPC_SMTPUTF8;
	vr_smtpc_send(h.c, &m2, h.now);
	tick(&h, h.now);
	assert_int_equal(h.st, VR_SMTPC_BOUNCE);
	h_close(&h);

	h_open(&h, NULL);
	h_greet(&h, "250 SMTPUTF8\r\n");
	m_body.off = 0;
	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "MAIL FROM:<alice@example.com> SMTPUTF8\r\n");
	h_close(&h);
}

static void test_bad_addresses_and_size(void **state)
{
	struct h h;
	MSG(m, "x", { .addr = "a@b.test\r\nRSET" }, { .addr = "ok@b.test" }, { .addr = "" },
	    { .addr = "\xc3(@b.test" });

	m.size = 5000;
	h_open(&h, NULL);
	h_greet(&h, "250 SIZE 4000\r\n");
	vr_smtpc_send(h.c, &m, h.now);
	tick(&h, h.now);
	assert_int_equal(h.st, VR_SMTPC_BOUNCE);
	assert_int_equal(m_rcpts[0].reply.code, 553);
	assert_int_equal(m_rcpts[1].reply.code, 552);
	assert_string_equal(m_rcpts[1].reply.enh, "5.3.4");
	assert_string_equal(m_rcpts[1].reply.text, "message size 5000 exceeds size limit 4000 of "
			    "server mx.test[192.0.2.25]:25");
	assert_int_equal(m_rcpts[2].reply.code, 553);
	assert_int_equal(m_rcpts[3].reply.code, 553);
	expect_out(&h, "");

	/* Within the limit: only the sendable recipient goes out. */
	m.size = 3000;
	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "MAIL FROM:<alice@example.com> SIZE=3000\r\n");
	srv(&h, "250 ok\r\n");
	expect_out(&h, "RCPT TO:<ok@b.test>\r\n");
	srv(&h, "250 ok\r\n");
	expect_out(&h, "DATA\r\n");
	h_close(&h);

	/* A sender we cannot put on the wire. */
	h_open(&h, NULL);
	h_greet(&h, "");
	m.from = "x>@y";
	vr_smtpc_send(h.c, &m, h.now);
	tick(&h, h.now);
	assert_int_equal(m_rcpts[1].reply.code, 553);
	assert_string_equal(m_rcpts[1].reply.enh, "5.1.7");
	h_close(&h);
}

static void test_max_msgs(void **state)
{
	struct h h;
	struct vr_smtpc_params p = { .max_msgs = 2 };
	MSG(m, "x\r\n", { .addr = "a@b.test" });

	h_open(&h, &p);
	h_greet(&h, "250 PIPELINING\r\n");
	for (int i = 0; i < 2; i++) {
		/* After the first: offered once behind its end of data, once idle. */
		assert_int_equal(h.ready, i == 0 ? 1u : 3u);
		m_body.off = 0;
		vr_smtpc_send(h.c, &m, h.now);
		srv(&h, "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n");
		/* The second is the last: QUIT without asking the owner. */
		expect_out(&h, i == 0
			   ? "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\nDATA\r\n"
			     "x\r\n.\r\n"
			   : "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\nDATA\r\n"
			     "x\r\n.\r\nQUIT\r\n");
	}
	assert_int_equal(h.ready, 3);
	assert_int_equal(vr_smtpc_send(h.c, &m, h.now), -EPIPE);
	srv(&h, "221 bye\r\n");
	assert_int_equal(h.closed, 1);
	assert_int_equal(h.closed_reply.code, 221);
	h_close(&h);
}

static void test_timeouts(void **state)
{
	struct vr_smtpc_timeouts to = { .greeting = 500, .rcpt = 700 };
	struct vr_smtpc_params p = { .timeouts = &to };
	struct h h;
	MSG(m, "x", { .addr = "a@b.test" });

	h_open(&h, &p);
	assert_int_equal(vr_smtpc_deadline(h.c), 1500);
	tick(&h, 1499);
	assert_int_equal(h.closed, 0);
	tick(&h, 1500);
	assert_int_equal(h.closed, 1);
	assert_string_equal(h.closed_reply.text, "conversation with mx.test[192.0.2.25]:25 "
			    "timed out while receiving the initial server greeting");
	assert_string_equal(h.closed_reply.enh, "4.4.2");
	h_close(&h);

	/* RFC values where the caller gave none (EHLO: 5 minutes), the
	 * caller's where given (RCPT). */
	h_open(&h, &p);
	srv(&h, "220 hi\r\n");
	assert_int_equal(vr_smtpc_deadline(h.c), 1000 + 300000);
	srv(&h, "250 hi\r\n");
	assert_int_equal(vr_smtpc_deadline(h.c), UINT64_MAX);   /* idle: the owner's call */
	vr_smtpc_send(h.c, &m, h.now);
	h.now = 2000;
	srv(&h, "250 ok\r\n");
	assert_int_equal(vr_smtpc_deadline(h.c), 2700);
	tick(&h, 2700);
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_string_equal(m_rcpts[0].reply.text, "conversation with mx.test[192.0.2.25]:25 "
			    "timed out while sending RCPT TO");
	h_close(&h);

	/* QUIT unanswered: closed all the same, nothing lost. */
	h_open(&h, &p);
	h_greet(&h, "");
	vr_smtpc_quit(h.c, h.now);
	tick(&h, h.now + 300000);
	assert_int_equal(h.closed, 1);
	assert_int_equal(h.closed_reply.code, 221);
	h_close(&h);
}

static void test_garbage_reply(void **state)
{
	struct h h;
	MSG(m, "x", { .addr = "a@b.test" });

	h_open(&h, NULL);
	h_greet(&h, "");
	vr_smtpc_send(h.c, &m, h.now);
	srv(&h, "HTTP/1.0 200 OK\r\n");
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_string_equal(h.closed_reply.text,
			    "malformed reply from mx.test[192.0.2.25]:25 while sending MAIL FROM: "
			    "reply line does not start with a 3-digit code: \"HTTP/1.0 200 OK\"");
	h_close(&h);

	/* A reply nobody asked for while idle (a server's 421 shutdown). */
	h_open(&h, NULL);
	h_greet(&h, "");
	srv(&h, "421 4.3.2 shutting down\r\n");
	assert_int_equal(h.closed, 1);
	assert_non_null(strstr(h.closed_reply.text, "while we were idle: 421 4.3.2 shutting down"));
	h_close(&h);
}

/* --- STARTTLS --- */

/* Greets, offers STARTTLS, and switches the script to TLS on the 220,
 * the server showing cert (its chain) with key. */
static void tls_start_with(struct h *h, const char *caps_before, const char *cert,
			   const char *key)
{
	char err[256];

	h->sctx = vr_tls_server_ctx_new(cert, key, err, sizeof(err));
	assert_non_null(h->sctx);
	h->srv = vr_tls_new(h->sctx, true, NULL);
	h_greet(h, caps_before);
	expect_out(h, "STARTTLS\r\n");
	/* The 220 in plaintext; what the client sends after it is TLS. */
	vr_smtpc_rx(h->c, "220 2.0.0 go ahead\r\n", 20, h->now);
	h->srv_tls = true;
	collect(h);
}

static void tls_start(struct h *h, const char *caps_before)
{
	tls_start_with(h, caps_before, cert_path, key_path);
}

static struct vr_tls_ctx *client_ctx(void)
{
	char err[256];
	struct vr_tls_ctx *ctx = vr_tls_client_ctx_new(err, sizeof(err));

	assert_non_null(ctx);
	return ctx;
}

static void test_starttls(void **state)
{
	struct vr_tls_ctx *cctx = client_ctx();
	struct vr_smtpc_params p = { .tls = cctx, .tls_mode = VR_SMTPC_TLS_MAY };
	struct h h;
	MSG(m, "secret\r\n", { .addr = "a@b.test" });

	h_open(&h, &p);
	tls_start(&h, "250-PIPELINING\r\n250 STARTTLS\r\n");
	/* RFC 3207 4.2: EHLO again, under TLS; earlier capabilities forgotten. */
	expect_out(&h, "EHLO relay.test\r\n");
	assert_int_equal(vr_smtpc_caps(h.c), 0);
	assert_string_equal(vr_smtpc_tls_version(h.c), "TLSv1.3");
	assert_non_null(vr_smtpc_tls_cipher(h.c));
	assert_false(vr_smtpc_tls_verified(h.c));
	srv(&h, "250-mx.test\r\n250 PIPELINING\r\n");
	assert_int_equal(h.ready, 1);
	vr_smtpc_send(h.c, &m, h.now);
	expect_out(&h, "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@b.test>\r\nDATA\r\n");
	srv(&h, "250 ok\r\n250 ok\r\n354 go\r\n");
	expect_out(&h, "secret\r\n.\r\n");
	srv(&h, "250 ok\r\n");
	assert_int_equal(h.st, VR_SMTPC_SENT);
	h_close(&h);
	vr_tls_ctx_free(cctx);
}

static void test_starttls_refused_or_absent(void **state)
{
	struct vr_tls_ctx *cctx = client_ctx();
	struct vr_smtpc_params p = { .tls = cctx, .tls_mode = VR_SMTPC_TLS_MAY };
	struct h h;

	/* Opportunistic: a 454 to STARTTLS means plaintext. */
	h_open(&h, &p);
	h_greet(&h, "250 STARTTLS\r\n");
	expect_out(&h, "STARTTLS\r\n");
	srv(&h, "454 4.7.0 TLS not available\r\n");
	assert_int_equal(h.ready, 1);
	assert_null(vr_smtpc_tls_version(h.c));
	h_close(&h);

	/* Not offered: plaintext too. */
	h_open(&h, &p);
	h_greet(&h, "");
	assert_int_equal(h.ready, 1);
	expect_out(&h, "");
	h_close(&h);
	vr_tls_ctx_free(cctx);
}

/* CVE-2011-0411, client side: a reply pipelined behind the STARTTLS 220. */
static void test_starttls_injection(void **state)
{
	struct vr_tls_ctx *cctx = client_ctx();
	struct vr_smtpc_params p = { .tls = cctx, .tls_mode = VR_SMTPC_TLS_MAY };
	struct h h;
	MSG(m, "x", { .addr = "a@b.test" });

	h_open(&h, &p);
	vr_smtpc_send(h.c, &m, h.now);
	h_greet(&h, "250 STARTTLS\r\n");
	expect_out(&h, "STARTTLS\r\n");
	srv(&h, "220 go ahead\r\n250-injected\r\n250 PIPELINING\r\n");
	assert_int_equal(h.closed, 1);
	assert_int_equal(h.closed_reply.code, 421);
	assert_string_equal(h.closed_reply.enh, "4.7.0");
	assert_non_null(strstr(h.closed_reply.text, "CVE-2011-0411"));
	assert_int_equal(h.st, VR_SMTPC_DEFER);
	assert_non_null(strstr(m_rcpts[0].reply.text, "response injection"));
	/* Not a byte of TLS was started. */
	expect_out(&h, "");
	h_close(&h);
	vr_tls_ctx_free(cctx);
}

static void test_dane(void **state)
{
	struct vr_tls_ctx *cctx = client_ctx();
	uint8_t wrong[32];
	struct vr_smtpc_tlsa good[] = {
		{ 1, 1, 1, spki_sha256, 32 },             /* PKIX-EE: unusable, skipped */
		{ 3, 1, 1, spki_sha256, 32 },
	};
	struct vr_smtpc_tlsa bad[] = { { 3, 1, 1, wrong, 32 } };
	struct vr_smtpc_params p = { .tls = cctx, .tls_mode = VR_SMTPC_TLS_DANE,
				     .tlsa = good, .n_tlsa = 2 };
	struct h h;

	/* A matching DANE-EE record: authenticated, whatever the names say. */
	h_open(&h, &p);
	tls_start(&h, "250 STARTTLS\r\n");
	expect_out(&h, "EHLO relay.test\r\n");
	assert_true(vr_smtpc_tls_verified(h.c));
	assert_int_equal(h.closed, 0);
	h_close(&h);

	/* No match: the handshake fails, a temporary failure. */
	memcpy(wrong, spki_sha256, 32);
	wrong[0] ^= 1;
	p.tlsa = bad;
	p.n_tlsa = 1;
	h_open(&h, &p);
	tls_start(&h, "250 STARTTLS\r\n");
	assert_int_equal(h.closed, 1);
	assert_int_equal(h.closed_reply.code, 421);
	assert_string_equal(h.closed_reply.enh, "4.7.5");
	assert_non_null(strstr(h.closed_reply.text, "TLS handshake with mx.test[192.0.2.25]:25"));
	assert_non_null(strstr(h.closed_reply.text, "TLSA"));
	h_close(&h);

	/* DANE and no STARTTLS: no plaintext fallback. */
	h_open(&h, &p);
	h_greet(&h, "250 PIPELINING\r\n");
	assert_int_equal(h.closed, 1);
	assert_string_equal(h.closed_reply.enh, "4.7.10");
	assert_int_equal(h.ready, 0);
	h_close(&h);

	/* DANE and STARTTLS refused. */
	h_open(&h, &p);
	h_greet(&h, "250 STARTTLS\r\n");
	srv(&h, "454 no\r\n");
	assert_int_equal(h.closed, 1);
	assert_non_null(strstr(h.closed_reply.text, "DANE"));
	h_close(&h);
	vr_tls_ctx_free(cctx);
}

/* The other record shapes RFC 7672 allows, each against a server that
 * matches it and, for DANE-TA, the name check it brings. */
static void test_dane_records(void **state)
{
	struct vr_tls_ctx *cctx = client_ctx();
	struct vr_smtpc_tlsa ee_sha512[] = { { 3, 0, 2, leaf_sha512, 64 } };
	struct vr_smtpc_tlsa ta[] = { { 2, 0, 1, ca_sha256, 32 } };
	struct vr_smtpc_tlsa unusable[] = { { 0, 0, 1, ca_sha256, 32 } };
	struct vr_smtpc_params p = { .tls = cctx, .tls_mode = VR_SMTPC_TLS_DANE };
	struct h h;

	/* DANE-EE, full certificate, SHA-512. */
	p.tlsa = ee_sha512;
	p.n_tlsa = 1;
	h_open(&h, &p);
	tls_start(&h, "250 STARTTLS\r\n");
	expect_out(&h, "EHLO relay.test\r\n");
	assert_true(vr_smtpc_tls_verified(h.c));
	h_close(&h);

	/* DANE-TA: the chain leads to the CA in the record, and the leaf
	 * names the MX host. */
	p.tlsa = ta;
	h_open(&h, &p);
	tls_start_with(&h, "250 STARTTLS\r\n", chain_path, chain_key_path);
	expect_out(&h, "EHLO relay.test\r\n");
	assert_true(vr_smtpc_tls_verified(h.c));
	h_close(&h);

	/* DANE-TA and a leaf for another name: refused. */
	p.peer_name = "mx.other.test";
	h_open(&h, &p);
	tls_start_with(&h, "250 STARTTLS\r\n", chain_path, chain_key_path);
	assert_int_equal(h.closed, 1);
	assert_string_equal(h.closed_reply.enh, "4.7.5");
	assert_non_null(strstr(h.closed_reply.text, "hostname mismatch"));
	h_close(&h);

	/* DANE-TA with a server sending only its leaf: no way to the anchor. */
	p.peer_name = NULL;
	h_open(&h, &p);
	tls_start(&h, "250 STARTTLS\r\n");
	assert_int_equal(h.closed, 1);
	h_close(&h);

	/* Only PKIX records (unusable for SMTP, RFC 7672 3.1.3): TLS is still
	 * required, but unauthenticated. */
	p.tlsa = unusable;
	h_open(&h, &p);
	tls_start(&h, "250 STARTTLS\r\n");
	expect_out(&h, "EHLO relay.test\r\n");
	assert_false(vr_smtpc_tls_verified(h.c));
	assert_non_null(vr_smtpc_tls_version(h.c));
	assert_int_equal(h.closed, 0);
	h_close(&h);
	vr_tls_ctx_free(cctx);
}

static void test_params(void **state)
{
	struct vr_smtpc_params p = { .helo_name = "relay.test", .ops = &ops };
	struct vr_smtpc *c = vr_smtpc_new(&p, 0);

	assert_non_null(c);
	vr_smtpc_free(c);
	p.helo_name = "bad name";
	assert_null(vr_smtpc_new(&p, 0));
	assert_int_equal(errno, EINVAL);
	p.helo_name = "relay.test";
	p.tls_mode = VR_SMTPC_TLS_MAY;
	assert_null(vr_smtpc_new(&p, 0));
	p.tls_mode = VR_SMTPC_TLS_DANE;
	p.tls = client_ctx();
	assert_null(vr_smtpc_new(&p, 0));           /* DANE without records */
	vr_tls_ctx_free(p.tls);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_multiline),
		cmocka_unit_test(test_reply_enhanced),
		cmocka_unit_test(test_reply_garbage),
		cmocka_unit_test(test_reply_guard),
		cmocka_unit_test(test_reply_truncated_text),
		cmocka_unit_test(test_plain_transaction),
		cmocka_unit_test(test_pipelined),
		cmocka_unit_test(test_pipelined_behind_dot),
		cmocka_unit_test(test_byte_by_byte),
		cmocka_unit_test(test_helo_fallback),
		cmocka_unit_test(test_greeting_refused),
		cmocka_unit_test(test_session_refusals),
		cmocka_unit_test(test_mail_refused),
		cmocka_unit_test(test_421_mid_transaction),
		cmocka_unit_test(test_rcpts_refused_then_rset),
		cmocka_unit_test(test_data_354_without_rcpts),
		cmocka_unit_test(test_data_and_dot_refused),
		cmocka_unit_test(test_drop_mid_data),
		cmocka_unit_test(test_body_read_error),
		cmocka_unit_test(test_body_filter),
		cmocka_unit_test(test_backpressure),
		cmocka_unit_test(test_smtputf8),
		cmocka_unit_test(test_bad_addresses_and_size),
		cmocka_unit_test(test_max_msgs),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_garbage_reply),
		cmocka_unit_test(test_starttls),
		cmocka_unit_test(test_starttls_refused_or_absent),
		cmocka_unit_test(test_starttls_injection),
		cmocka_unit_test(test_dane),
		cmocka_unit_test(test_dane_records),
		cmocka_unit_test(test_params),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
