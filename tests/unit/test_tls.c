/*
 * test_tls.c - a server and a client vr_tls talking to each other in memory.
 *
 * The certificates are made here with OpenSSL's API (a P-256 key, a
 * self-signed certificate for relay.test and 127.0.0.1) in a private temp
 * directory, so the test needs no fixture and no openssl binary. A second
 * key gives the "key does not match the certificate" case. The client
 * certificate and vr_tls_ssl_new() are tried over a socket pair against a
 * plain OpenSSL server that asks for a client certificate, as Redis does.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "vmrelay/tls.h"

static char dir[] = "/tmp/vr_test_tls.XXXXXX";
static char cert_path[64], key_path[64], other_key_path[64], junk_path[64];

/* --- fixtures --- */

static EVP_PKEY *write_key(const char *path)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	FILE *f = fopen(path, "w");

	assert_non_null(key);
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	return key;
}

static void write_cert(const char *path, EVP_PKEY *key)
{
	X509 *x = X509_new();
	X509V3_CTX v3;

	assert_non_null(x);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"relay.test",
				   -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509_set_pubkey(x, key);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
						  "DNS:relay.test, IP:127.0.0.1");
	assert_non_null(san);
	X509_add_ext(x, san, -1);
	X509_EXTENSION_free(san);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	PEM_write_X509(f, x);
	fclose(f);
	X509_free(x);
}

static int setup(void **state)
{
	if (!mkdtemp(dir))
		return -1;
	snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
	snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
	snprintf(other_key_path, sizeof(other_key_path), "%s/other.pem", dir);
	snprintf(junk_path, sizeof(junk_path), "%s/junk.pem", dir);
	EVP_PKEY *key = write_key(key_path);
	write_cert(cert_path, key);
	EVP_PKEY_free(key);
	EVP_PKEY_free(write_key(other_key_path));
	FILE *f = fopen(junk_path, "w");
	fputs("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n", f);
	fclose(f);
	return 0;
}

static int teardown(void **state)
{
	unlink(cert_path);
	unlink(key_path);
	unlink(other_key_path);
	unlink(junk_path);
	return rmdir(dir);
}

/* --- a pair of endpoints and the wire between them --- */

struct pair {
	struct vr_tls_ctx *sctx, *cctx;
	struct vr_tls *srv, *cli;
};

static struct vr_tls_ctx *server_ctx(void)
{
	char err[512];
	struct vr_tls_ctx *ctx = vr_tls_server_ctx_new(cert_path, key_path, err, sizeof(err));

	if (!ctx)
		fail_msg("server ctx: %s", err);
	return ctx;
}

static void pair_open(struct pair *p, const char *sni)
{
	char err[512];

	p->sctx = server_ctx();
	p->cctx = vr_tls_client_ctx_new(err, sizeof(err));
	assert_non_null(p->cctx);
	p->srv = vr_tls_new(p->sctx, true, NULL);
	p->cli = vr_tls_new(p->cctx, false, sni);
	assert_non_null(p->srv);
	assert_non_null(p->cli);
}

static void pair_close(struct pair *p)
{
	vr_tls_free(p->srv);
	vr_tls_free(p->cli);
	vr_tls_ctx_free(p->sctx);
	vr_tls_ctx_free(p->cctx);
}

/* Moves everything from's output into to's input, `chunk` bytes a feed.
 * Returns the number of bytes moved. */
static size_t wire(struct vr_tls *from, struct vr_tls *to, size_t chunk)
{
	struct vr_buf b;
	size_t moved = 0;

	vr_buf_init(&b, 0);
	assert_true(vr_tls_drain(from, &b) >= 0);
	assert_int_equal(vr_tls_pending(from), 0);
	for (size_t off = 0; off < vr_buf_len(&b); off += chunk) {
		size_t n = VR_MIN(chunk, vr_buf_len(&b) - off);
		assert_int_equal(vr_tls_feed(to, vr_buf_head(&b) + off, n), 0);
		moved += n;
	}
	vr_buf_free(&b);
	return moved;
}

/* Runs both handshakes to the end; the server side progresses through
 * vr_tls_read(), as a session does. Returns the client's last result. */
static int handshake(struct pair *p, size_t chunk)
{
	int crc = -EAGAIN;
	uint8_t scratch[16];

	for (int round = 0; round < 20; round++) {
		crc = vr_tls_handshake(p->cli);
		size_t m = wire(p->cli, p->srv, chunk);
		ssize_t r = vr_tls_read(p->srv, scratch, sizeof(scratch));
		if (r != 0)
			return r < 0 ? (int)r : -EINVAL;
		m += wire(p->srv, p->cli, chunk);
		if (crc != -EAGAIN && m == 0)
			break;
	}
	return crc;
}

/* Reads exactly n bytes from t (feeding nothing: all must be buffered). */
static void read_all(struct vr_tls *t, uint8_t *out, size_t n, size_t cap)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = vr_tls_read(t, out + got, VR_MIN(cap, n - got));
		if (r <= 0)
			fail_msg("read returned %zd after %zu of %zu bytes: %s", r, got, n,
				 vr_tls_error(t));
		got += (size_t)r;
	}
	assert_int_equal(vr_tls_read(t, out, cap), 0);
}

/* --- tests --- */

static void test_handshake(void **state)
{
	struct pair p;

	pair_open(&p, "relay.test");
	assert_false(vr_tls_established(p.cli));
	assert_int_equal(vr_tls_write(p.cli, "x", 1), -EAGAIN);
	assert_int_equal(handshake(&p, 1), 0);
	assert_true(vr_tls_established(p.cli));
	assert_true(vr_tls_established(p.srv));
	assert_string_equal(vr_tls_version(p.srv), "TLSv1.3");
	assert_string_equal(vr_tls_version(p.cli), "TLSv1.3");
	assert_string_equal(vr_tls_cipher(p.srv), vr_tls_cipher(p.cli));
	assert_string_equal(vr_tls_error(p.srv), "no error");
	pair_close(&p);
}

static void test_data_both_ways(void **state)
{
	enum { BIG = 100000 };   /* several 16 KiB records */
	uint8_t *out = malloc(BIG), *in = malloc(BIG);
	struct pair p;

	for (size_t i = 0; i < BIG; i++)
		out[i] = (uint8_t)(i * 131 + i / 251);
	pair_open(&p, NULL);
	assert_int_equal(handshake(&p, 4096), 0);

	assert_int_equal(vr_tls_write(p.srv, "220 relay.test ESMTP\r\n", 22), 0);
	wire(p.srv, p.cli, 100);
	read_all(p.cli, in, 22, 1024);
	assert_memory_equal(in, "220 relay.test ESMTP\r\n", 22);

	assert_int_equal(vr_tls_write(p.cli, out, BIG), 0);
	assert_true(wire(p.cli, p.srv, 1460) > BIG);
	read_all(p.srv, in, BIG, 3000);
	assert_memory_equal(in, out, BIG);

	memset(in, 0, BIG);
	assert_int_equal(vr_tls_write(p.srv, out, BIG), 0);
	wire(p.srv, p.cli, 65536);
	read_all(p.cli, in, BIG, BIG);
	assert_memory_equal(in, out, BIG);
	pair_close(&p);
	free(out);
	free(in);
}

static void test_drain_respects_ceiling(void **state)
{
	uint8_t data[5000] = { 0 }, in[5000];
	struct vr_buf b;
	struct pair p;

	pair_open(&p, NULL);
	assert_int_equal(handshake(&p, 512), 0);
	assert_int_equal(vr_tls_write(p.srv, data, sizeof(data)), 0);
	size_t pending = vr_tls_pending(p.srv);
	assert_true(pending > sizeof(data));
	vr_buf_init(&b, 1000);
	assert_int_equal(vr_tls_drain(p.srv, &b), 1000);
	assert_int_equal(vr_tls_pending(p.srv), pending - 1000);
	assert_int_equal(vr_tls_drain(p.srv, &b), -ENOBUFS);
	assert_int_equal(vr_tls_feed(p.cli, vr_buf_head(&b), vr_buf_len(&b)), 0);
	vr_buf_free(&b);
	wire(p.srv, p.cli, 333);
	read_all(p.cli, in, sizeof(in), sizeof(in));
	assert_memory_equal(in, data, sizeof(data));
	pair_close(&p);
}

static void test_close_notify(void **state)
{
	struct pair p;
	uint8_t in[64];

	pair_open(&p, NULL);
	assert_int_equal(handshake(&p, 4096), 0);
	assert_int_equal(vr_tls_write(p.cli, "QUIT\r\n", 6), 0);
	vr_tls_shutdown(p.cli);
	wire(p.cli, p.srv, 4096);
	/* Data before the close_notify still arrives, then the close. */
	assert_int_equal(vr_tls_read(p.srv, in, sizeof(in)), 6);
	assert_memory_equal(in, "QUIT\r\n", 6);
	assert_int_equal(vr_tls_read(p.srv, in, sizeof(in)), -EPIPE);
	assert_int_equal(vr_tls_read(p.srv, in, sizeof(in)), -EPIPE);
	/* The server answers with its own close_notify. */
	vr_tls_shutdown(p.srv);
	assert_true(wire(p.srv, p.cli, 4096) > 0);
	assert_int_equal(vr_tls_read(p.cli, in, sizeof(in)), -EPIPE);
	pair_close(&p);
}

static void test_garbage_before_handshake(void **state)
{
	struct vr_tls_ctx *ctx = server_ctx();
	struct vr_tls *t = vr_tls_new(ctx, true, NULL);
	static const char junk[] = "EHLO client.example\r\nMAIL FROM:<a@b>\r\n";
	uint8_t in[64];
	struct vr_buf alert;

	assert_int_equal(vr_tls_feed(t, junk, sizeof(junk) - 1), 0);
	assert_int_equal(vr_tls_read(t, in, sizeof(in)), -EPROTO);
	assert_non_null(strstr(vr_tls_error(t), "wrong version number"));
	assert_false(vr_tls_established(t));
	/* Stays failed; writing and shutting down are refused quietly. */
	assert_int_equal(vr_tls_read(t, in, sizeof(in)), -EPROTO);
	assert_int_equal(vr_tls_write(t, "x", 1), -EPROTO);
	assert_int_equal(vr_tls_handshake(t), -EPROTO);
	vr_tls_shutdown(t);
	vr_buf_init(&alert, 0);
	assert_true(vr_tls_drain(t, &alert) >= 0);
	vr_buf_free(&alert);
	vr_tls_free(t);
	vr_tls_ctx_free(ctx);
}

static void test_garbage_record_after_handshake(void **state)
{
	struct pair p;
	uint8_t rec[5 + 64], in[64];

	pair_open(&p, NULL);
	assert_int_equal(handshake(&p, 4096), 0);
	/* A well-formed application_data header around bytes that do not
	 * decrypt: the record layer must refuse it, not crash. */
	rec[0] = 0x17;
	rec[1] = 0x03;
	rec[2] = 0x03;
	rec[3] = 0;
	rec[4] = 64;
	for (size_t i = 5; i < sizeof(rec); i++)
		rec[i] = (uint8_t)(i * 37);
	assert_int_equal(vr_tls_feed(p.srv, rec, sizeof(rec)), 0);
	assert_int_equal(vr_tls_read(p.srv, in, sizeof(in)), -EPROTO);
	assert_non_null(strstr(vr_tls_error(p.srv), "bad record mac"));
	pair_close(&p);
}

/* An OpenSSL client that offers at most `max_version`, to check our floor.
 * Says what the server negotiated, or why it refused. */
static int raw_client_handshake(int max_version, char *version, char *why, size_t len)
{
	struct vr_tls_ctx *sctx = server_ctx();
	struct vr_tls *srv = vr_tls_new(sctx, true, NULL);
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	BIO *crbio = BIO_new(BIO_s_mem()), *cwbio = BIO_new(BIO_s_mem());
	uint8_t buf[16384];
	int rc = -EAGAIN;

	/* Level 0 lets OpenSSL itself speak TLS 1.1 for this test. */
	SSL_CTX_set_security_level(cctx, 0);
	SSL_CTX_set_min_proto_version(cctx, TLS1_VERSION);
	SSL_CTX_set_max_proto_version(cctx, max_version);
	SSL *cli = SSL_new(cctx);
	BIO_set_mem_eof_return(crbio, -1);
	SSL_set_bio(cli, crbio, cwbio);
	SSL_set_connect_state(cli);
	for (int round = 0; round < 10 && rc == -EAGAIN; round++) {
		int c = SSL_do_handshake(cli);
		int n;
		while ((n = BIO_read(cwbio, buf, sizeof(buf))) > 0)
			assert_int_equal(vr_tls_feed(srv, buf, (size_t)n), 0);
		ssize_t r = vr_tls_read(srv, buf, sizeof(buf));
		struct vr_buf b;
		vr_buf_init(&b, 0);
		vr_tls_drain(srv, &b);
		BIO_write(crbio, vr_buf_head(&b), (int)vr_buf_len(&b));
		vr_buf_free(&b);
		if (r < 0)
			rc = (int)r;
		else if (c == 1 && vr_tls_established(srv))
			rc = 0;
	}
	snprintf(version, len, "%s", vr_tls_version(srv));
	snprintf(why, len, "%s", vr_tls_error(srv));
	SSL_free(cli);
	SSL_CTX_free(cctx);
	vr_tls_free(srv);
	vr_tls_ctx_free(sctx);
	ERR_clear_error();
	return rc;
}

static void test_protocol_floor(void **state)
{
	char version[160], why[160];

	assert_int_equal(raw_client_handshake(TLS1_2_VERSION, version, why, sizeof(why)), 0);
	assert_string_equal(version, "TLSv1.2");
	assert_int_equal(raw_client_handshake(TLS1_1_VERSION, version, why, sizeof(why)), -EPROTO);
	assert_non_null(strstr(why, "unsupported protocol"));
}

static void test_ctx_errors(void **state)
{
	char err[512], want[512];

	assert_null(vr_tls_server_ctx_new(cert_path, other_key_path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: private key does not match the certificate in %s",
		 other_key_path, cert_path);
	assert_string_equal(err, want);

	assert_null(vr_tls_server_ctx_new("/nonexistent/tls.crt", key_path, err, sizeof(err)));
	assert_string_equal(err, "/nonexistent/tls.crt: No such file or directory");
	assert_null(vr_tls_server_ctx_new(cert_path, "/nonexistent/tls.key", err, sizeof(err)));
	assert_string_equal(err, "/nonexistent/tls.key: No such file or directory");

	assert_null(vr_tls_server_ctx_new(cert_path, junk_path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: cannot load private key: error:", junk_path);
	assert_memory_equal(err, want, strlen(want));
	/* A key is not a certificate. */
	assert_null(vr_tls_server_ctx_new(key_path, key_path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: cannot load certificate chain: error:", key_path);
	assert_memory_equal(err, want, strlen(want));
}

static void test_verify(void **state)
{
	char err[512];
	struct pair p;
	uint8_t in[16];

	pair_open(&p, "relay.test");
	vr_tls_free(p.cli);
	assert_int_equal(vr_tls_client_ctx_verify(p.cctx, cert_path, err, sizeof(err)), 0);
	assert_null(vr_tls_new(p.cctx, false, NULL));

	p.cli = vr_tls_new(p.cctx, false, "relay.test");
	assert_int_equal(handshake(&p, 4096), 0);
	vr_tls_free(p.cli);
	vr_tls_free(p.srv);

	/* The name does not match: both ends fail the handshake. */
	p.cli = vr_tls_new(p.cctx, false, "other.test");
	p.srv = vr_tls_new(p.sctx, true, NULL);
	assert_int_equal(handshake(&p, 4096), -EPROTO);
	assert_non_null(strstr(vr_tls_error(p.cli), "certificate verify failed"));
	assert_non_null(strstr(vr_tls_error(p.cli), "hostname mismatch"));
	assert_int_equal(vr_tls_read(p.srv, in, sizeof(in)), -EPROTO);
	pair_close(&p);

	pair_open(&p, "relay.test");
	assert_int_equal(vr_tls_client_ctx_verify(p.cctx, "/nonexistent/ca.pem", err, sizeof(err)),
			 -1);
	assert_string_equal(err, "/nonexistent/ca.pem: No such file or directory");
	pair_close(&p);
}

/* A name or an address, each checked against the certificate's own kind. */
static void test_verify_ip(void **state)
{
	static const struct {
		const char *peer;
		int rc;
		const char *why;
	} cases[] = {
		{ "127.0.0.1", 0, NULL },
		{ "127.0.0.2", -EPROTO, "IP address mismatch" },
		{ "::1", -EPROTO, "IP address mismatch" },
		{ "relay.test", 0, NULL },
		{ "127.0.0.1.example", -EPROTO, "hostname mismatch" },
	};
	char err[512];

	for (size_t i = 0; i < VR_ARRAY_SIZE(cases); i++) {
		struct pair p;
		pair_open(&p, NULL);
		vr_tls_free(p.cli);
		assert_int_equal(vr_tls_client_ctx_verify(p.cctx, cert_path, err, sizeof(err)), 0);
		assert_non_null(p.cli = vr_tls_new(p.cctx, false, cases[i].peer));
		assert_int_equal(handshake(&p, 4096), cases[i].rc);
		if (cases[i].why)
			assert_non_null(strstr(vr_tls_error(p.cli), cases[i].why));
		pair_close(&p);
	}
}

/* What the raw server saw of the client in socket_handshake(). */
struct seen {
	char sni[64];                /* "" when none was sent */
	bool client_cert;
	char why[256];               /* the client's failure */
};

/*
 * A vr_tls_ssl_new() client for peer on one end of a socket pair, a plain
 * OpenSSL server with cert_path on the other that requires a client
 * certificate signed by cert_path (ours is self-signed: itself). Both
 * handshakes run turn by turn over non-blocking sockets. Returns the
 * client's 0, or -EPROTO with seen->why.
 */
static int socket_handshake(struct vr_tls_ctx *cctx, const char *peer, struct seen *seen)
{
	SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
	char err[512];
	int fd[2], rc = -EAGAIN;
	bool srv_done = false;

	memset(seen, 0, sizeof(*seen));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
	assert_int_equal(SSL_CTX_use_certificate_chain_file(sctx, cert_path), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(sctx, key_path, SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_load_verify_locations(sctx, cert_path, NULL), 1);
	SSL_CTX_set_verify(sctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL *srv = SSL_new(sctx);
	SSL_set_fd(srv, fd[1]);
	SSL_set_accept_state(srv);
	SSL *cli = vr_tls_ssl_new(cctx, fd[0], peer, err, sizeof(err));
	if (!cli)
		fail_msg("vr_tls_ssl_new: %s", err);
	for (int round = 0; round < 20 && rc == -EAGAIN; round++) {
		int c = SSL_do_handshake(cli);
		if (c != 1 && SSL_get_error(cli, c) != SSL_ERROR_WANT_READ) {
			rc = -EPROTO;
			vr_tls_ssl_error(seen->why, sizeof(seen->why));
		}
		if (!srv_done) {
			int s = SSL_do_handshake(srv);
			srv_done = s == 1 || SSL_get_error(srv, s) != SSL_ERROR_WANT_READ;
		}
		/* TLS 1.3: the server checks the client's certificate after
		 * the client has finished; wait for its verdict too */
		if (c == 1 && srv_done)
			rc = SSL_is_init_finished(srv) ? 0 : -EPROTO;
	}
	const char *sni = SSL_get_servername(srv, TLSEXT_NAMETYPE_host_name);
	snprintf(seen->sni, sizeof(seen->sni), "%s", sni ? sni : "");
	seen->client_cert = SSL_get0_peer_certificate(srv) != NULL;
	SSL_free(cli);
	SSL_free(srv);
	SSL_CTX_free(sctx);
	close(fd[0]);
	close(fd[1]);
	ERR_clear_error();
	return rc;
}

/* The Redis client's set-up: CA file, client certificate, and a server
 * given by address (no SNI, IP SAN checked) or by name (SNI). */
static void test_client_cert(void **state)
{
	char err[512], want[512];
	struct seen seen;
	struct vr_tls_ctx *cctx = vr_tls_client_ctx_new(err, sizeof(err));

	assert_non_null(cctx);
	assert_int_equal(vr_tls_client_ctx_verify(cctx, cert_path, err, sizeof(err)), 0);
	/* without a certificate of its own the server turns it away */
	assert_int_equal(socket_handshake(cctx, "127.0.0.1", &seen), -EPROTO);
	assert_false(seen.client_cert);

	assert_int_equal(vr_tls_client_ctx_cert(cctx, cert_path, err, sizeof(err)), 0);
	assert_int_equal(vr_tls_client_ctx_key(cctx, key_path, err, sizeof(err)), 0);
	assert_int_equal(socket_handshake(cctx, "127.0.0.1", &seen), 0);
	assert_true(seen.client_cert);
	assert_string_equal(seen.sni, "");
	assert_int_equal(socket_handshake(cctx, "relay.test", &seen), 0);
	assert_string_equal(seen.sni, "relay.test");
	assert_int_equal(socket_handshake(cctx, "127.0.0.9", &seen), -EPROTO);
	assert_non_null(strstr(seen.why, "certificate verify failed"));
	vr_tls_ctx_free(cctx);

	/* the file at fault, named for the caller to put its setting before */
	cctx = vr_tls_client_ctx_new(err, sizeof(err));
	assert_int_equal(vr_tls_client_ctx_cert(cctx, "/nonexistent/c.pem", err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent/c.pem: No such file or directory");
	assert_int_equal(vr_tls_client_ctx_cert(cctx, key_path, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: cannot load certificate chain: error:", key_path);
	assert_memory_equal(err, want, strlen(want));
	assert_int_equal(vr_tls_client_ctx_cert(cctx, cert_path, err, sizeof(err)), 0);
	assert_int_equal(vr_tls_client_ctx_key(cctx, other_key_path, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: private key does not match the certificate",
		 other_key_path);
	assert_string_equal(err, want);
	vr_tls_ctx_free(cctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake),
		cmocka_unit_test(test_data_both_ways),
		cmocka_unit_test(test_drain_respects_ceiling),
		cmocka_unit_test(test_close_notify),
		cmocka_unit_test(test_garbage_before_handshake),
		cmocka_unit_test(test_garbage_record_after_handshake),
		cmocka_unit_test(test_protocol_floor),
		cmocka_unit_test(test_ctx_errors),
		cmocka_unit_test(test_verify),
		cmocka_unit_test(test_verify_ip),
		cmocka_unit_test(test_client_cert),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
