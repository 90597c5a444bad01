/*
 * tls.c - OpenSSL 3 over memory BIOs (see vmrelay/tls.h).
 *
 * Each connection has two memory BIOs: rbio holds ciphertext the owner fed
 * us and SSL has not consumed yet, wbio holds ciphertext SSL produced and
 * the owner has not drained yet. Neither ever blocks; an empty rbio reads as
 * "retry", which is how we learn that more bytes from the peer are needed.
 * How much sits in rbio is bounded by the owner (it feeds what it read,
 * within its rx_space), and wbio by what the owner writes.
 *
 * OpenSSL keeps its errors in a per-thread queue. Every operation starts by
 * clearing it and, on failure, keeps the first entry as text in the
 * connection, so vr_tls_error() explains the failure that was reported
 * rather than some stale one from another connection on the same thread.
 *
 * Client contexts serve SMTP delivery (opportunistic, or DANE per
 * connection) and engine/cluster's Redis connection (a CA file, a client
 * certificate, a server named by host name or IP address). Both set up a
 * session's peer in peer_set(); the cluster's blocking socket gets a plain
 * fd-bound SSL from vr_tls_ssl_new() instead of the memory BIOs, which
 * would only add a copy and a poll loop of their own there.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "vmrelay/tls.h"

struct vr_tls_ctx {
	SSL_CTX *ssl;
	bool verify;                 /* client: check the chain and the name (sni) */
};

struct vr_tls {
	SSL *ssl;
	BIO *rbio, *wbio;            /* owned by ssl */
	bool failed;                 /* a fatal error: no more I/O, no close_notify */
	bool peer_closed;            /* close_notify received */
	char err[160];
};

/* --- contexts --- */

/* OpenSSL's first queued error as text in buf, the queue cleared. False
 * (buf untouched) if none was queued. */
static bool first_error(char *buf, size_t len)
{
	unsigned long e = ERR_peek_error();

	if (e)
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return e != 0;
}

static void ctx_error(char *err, size_t errlen, const char *file, const char *what)
{
	char ssl[120] = "";

	first_error(ssl, sizeof(ssl));
	snprintf(err, errlen, "%s%s%s%s%s", file ? file : "", file ? ": " : "", what,
		 *ssl ? ": " : "", ssl);
}

const char *vr_tls_ssl_error(char *buf, size_t len)
{
	if (!first_error(buf, len))
		snprintf(buf, len, "%s", errno ? strerror(errno) : "connection closed");
	return buf;
}

/* A context with the options both sides share. NULL + err. */
static struct vr_tls_ctx *ctx_new(const SSL_METHOD *method, char *err, size_t errlen)
{
	struct vr_tls_ctx *ctx = calloc(1, sizeof(*ctx));

	ERR_clear_error();
	if (!ctx) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ctx->ssl = SSL_CTX_new(method);
	if (!ctx->ssl) {
		ctx_error(err, errlen, NULL, "cannot create TLS context");
		free(ctx);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx->ssl, TLS1_2_VERSION);
	/* Client-initiated TLS 1.2 renegotiation only costs us CPU. */
	SSL_CTX_set_options(ctx->ssl, SSL_OP_NO_RENEGOTIATION);
	/* An idle session keeps ~34 KiB of record buffers otherwise; with
	 * thousands of mostly idle SMTP sessions per worker that adds up. */
	SSL_CTX_set_mode(ctx->ssl, SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

/* Plain access() first: "No such file or directory" beats OpenSSL's
 * "system library" chain for the commonest mistake. */
static int check_readable(const char *file, char *err, size_t errlen)
{
	if (access(file, R_OK) == 0)
		return 0;
	snprintf(err, errlen, "%s: %s", file, strerror(errno));
	return -1;
}

static int load_chain(SSL_CTX *ssl, const char *cert_file, char *err, size_t errlen)
{
	ERR_clear_error();
	if (check_readable(cert_file, err, errlen) < 0)
		return -1;
	if (SSL_CTX_use_certificate_chain_file(ssl, cert_file) != 1) {
		ctx_error(err, errlen, cert_file, "cannot load certificate chain");
		return -1;
	}
	return 0;
}

/* The key of the chain loaded before; cert_file, if known, is named when
 * they do not match. */
static int load_key(SSL_CTX *ssl, const char *key_file, const char *cert_file, char *err,
		    size_t errlen)
{
	ERR_clear_error();
	if (check_readable(key_file, err, errlen) < 0)
		return -1;
	/* Loading the key already compares it with the certificate of its
	 * type; the final check catches a key of another type. */
	if (SSL_CTX_use_PrivateKey_file(ssl, key_file, SSL_FILETYPE_PEM) != 1) {
		unsigned long e = ERR_peek_error();
		if (ERR_GET_LIB(e) != ERR_LIB_X509 ||
		    ERR_GET_REASON(e) != X509_R_KEY_VALUES_MISMATCH) {
			ctx_error(err, errlen, key_file, "cannot load private key");
			return -1;
		}
	} else if (SSL_CTX_check_private_key(ssl) == 1) {
		return 0;
	}
	ERR_clear_error();
	snprintf(err, errlen, "%s: private key does not match the certificate%s%s", key_file,
		 cert_file ? " in " : "", cert_file ? cert_file : "");
	return -1;
}

struct vr_tls_ctx *vr_tls_server_ctx_new(const char *cert_file, const char *key_file,
					 char *err, size_t errlen)
{
	struct vr_tls_ctx *ctx = ctx_new(TLS_server_method(), err, errlen);

	if (!ctx)
		return NULL;
	SSL_CTX_set_options(ctx->ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Stateless tickets resume sessions without the shared session cache,
	 * whose lock every worker thread would otherwise contend on. */
	SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_OFF);
	if (load_chain(ctx->ssl, cert_file, err, errlen) < 0 ||
	    load_key(ctx->ssl, key_file, cert_file, err, errlen) < 0) {
		vr_tls_ctx_free(ctx);
		return NULL;
	}
	return ctx;
}

struct vr_tls_ctx *vr_tls_client_ctx_new(char *err, size_t errlen)
{
	struct vr_tls_ctx *ctx = ctx_new(TLS_client_method(), err, errlen);

	if (!ctx)
		return NULL;
	/* RFC 7435 opportunistic security: encrypt even when we cannot
	 * authenticate the server. */
	SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_NONE, NULL);
	/* DANE's digest table lives in the context, which is read-only once
	 * shared; connections opt in with vr_tls_dane_enable(). */
	if (SSL_CTX_dane_enable(ctx->ssl) <= 0) {
		ctx_error(err, errlen, NULL, "cannot enable DANE");
		vr_tls_ctx_free(ctx);
		return NULL;
	}
	return ctx;
}

int vr_tls_client_ctx_verify(struct vr_tls_ctx *ctx, const char *ca_file, char *err,
			     size_t errlen)
{
	ERR_clear_error();
	if (ca_file) {
		if (check_readable(ca_file, err, errlen) < 0)
			return -1;
		if (SSL_CTX_load_verify_locations(ctx->ssl, ca_file, NULL) != 1) {
			ctx_error(err, errlen, ca_file, "cannot load CA certificates");
			return -1;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx->ssl) != 1) {
		ctx_error(err, errlen, NULL, "cannot load the system CA store");
		return -1;
	}
	SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_PEER, NULL);
	ctx->verify = true;
	return 0;
}

int vr_tls_client_ctx_cert(struct vr_tls_ctx *ctx, const char *cert_file, char *err,
			   size_t errlen)
{
	return load_chain(ctx->ssl, cert_file, err, errlen);
}

int vr_tls_client_ctx_key(struct vr_tls_ctx *ctx, const char *key_file, char *err,
			  size_t errlen)
{
	return load_key(ctx->ssl, key_file, NULL, err, errlen);
}

void vr_tls_ctx_free(struct vr_tls_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl);
	free(ctx);
}

/* --- connections --- */

/*
 * A client session's peer: a host name goes out as SNI (RFC 6066 3: never
 * an address); a verifying context checks the server's certificate for it,
 * an address against the IP SANs. 0, or -1 (no peer to verify, or ENOMEM).
 */
static int peer_set(SSL *ssl, bool verify, const char *peer)
{
	unsigned char addr[sizeof(struct in6_addr)];
	bool ip = peer && (inet_pton(AF_INET, peer, addr) == 1 ||
			   inet_pton(AF_INET6, peer, addr) == 1);

	if (peer && !ip && SSL_set_tlsext_host_name(ssl, peer) != 1)
		return -1;
	if (!verify)
		return 0;
	if (!peer)
		return -1;
	if (ip)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), peer) == 1 ? 0 : -1;
	return SSL_set1_host(ssl, peer) == 1 ? 0 : -1;
}

struct vr_tls *vr_tls_new(struct vr_tls_ctx *ctx, bool server, const char *peer)
{
	struct vr_tls *t = calloc(1, sizeof(*t));

	ERR_clear_error();
	if (!t)
		return NULL;
	t->ssl = SSL_new(ctx->ssl);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (!t->ssl || !t->rbio || !t->wbio)
		goto fail;
	/* An empty rbio means "wait for the peer", not end of file. */
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	if (server) {
		SSL_set_accept_state(t->ssl);
		return t;
	}
	SSL_set_connect_state(t->ssl);
	if (peer_set(t->ssl, ctx->verify, peer) < 0)
		goto fail_ssl;
	return t;
fail:
	BIO_free(t->rbio);
	BIO_free(t->wbio);
fail_ssl:
	SSL_free(t->ssl);
	free(t);
	ERR_clear_error();
	return NULL;
}

SSL *vr_tls_ssl_new(struct vr_tls_ctx *ctx, int fd, const char *peer, char *err,
		    size_t errlen)
{
	ERR_clear_error();
	SSL *ssl = SSL_new(ctx->ssl);

	if (ssl && SSL_set_fd(ssl, fd) == 1 && peer_set(ssl, ctx->verify, peer) == 0) {
		SSL_set_connect_state(ssl);
		return ssl;
	}
	ctx_error(err, errlen, NULL, "cannot create TLS session");
	SSL_free(ssl);
	return NULL;
}

void vr_tls_free(struct vr_tls *t)
{
	if (!t)
		return;
	SSL_free(t->ssl);
	free(t);
}

int vr_tls_dane_enable(struct vr_tls *t, const char *basedomain)
{
	ERR_clear_error();
	if (SSL_dane_enable(t->ssl, basedomain) <= 0) {
		ERR_clear_error();
		return -ENOMEM;
	}
	/* RFC 7672 3.1.1: a DANE-EE(3) record binds the key to the service
	 * itself; the names in the certificate do not matter. */
	SSL_dane_set_flags(t->ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	return 0;
}

int vr_tls_dane_tlsa_add(struct vr_tls *t, uint8_t usage, uint8_t selector, uint8_t mtype,
			 const uint8_t *data, size_t len)
{
	ERR_clear_error();
	int rc = SSL_dane_tlsa_add(t->ssl, usage, selector, mtype, data, len);
	ERR_clear_error();
	if (rc <= 0)
		return -EINVAL;
	/* Only now: verification with DANE on but no usable record would
	 * fall back to the (empty) PKIX trust store and always fail. */
	SSL_set_verify(t->ssl, SSL_VERIFY_PEER, NULL);
	return 0;
}

bool vr_tls_dane_verified(const struct vr_tls *t)
{
	return vr_tls_established(t) && SSL_get0_dane_authority(t->ssl, NULL, NULL) >= 0;
}

int vr_tls_feed(struct vr_tls *t, const void *p, size_t n)
{
	size_t written;

	if (n == 0)
		return 0;
	if (BIO_write_ex(t->rbio, p, n, &written) != 1 || written != n) {
		ERR_clear_error();
		return -ENOMEM;
	}
	return 0;
}

/*
 * Turns the result of an SSL call into our convention: 0 = needs the peer,
 * -EPIPE = the peer's close_notify, -EPROTO = fatal (text kept in t->err).
 */
static int io_result(struct vr_tls *t, int ret)
{
	int e = SSL_get_error(t->ssl, ret);

	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:   /* wbio is memory: only in theory */
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		t->peer_closed = true;
		return -EPIPE;
	default:
		break;
	}
	t->failed = true;
	if (!first_error(t->err, sizeof(t->err))) {
		/* SSL_ERROR_SYSCALL with an empty queue: a memory BIO cannot
		 * fail, so OpenSSL gave up on the stream itself. */
		snprintf(t->err, sizeof(t->err), "TLS failure (SSL_get_error %d)", e);
	}
	long verify = SSL_get_verify_result(t->ssl);
	if (verify != X509_V_OK) {
		size_t len = strlen(t->err);
		snprintf(t->err + len, sizeof(t->err) - len, " (%s)",
			 X509_verify_cert_error_string(verify));
	}
	return -EPROTO;
}

ssize_t vr_tls_read(struct vr_tls *t, void *out, size_t cap)
{
	size_t n;

	if (t->peer_closed)
		return -EPIPE;
	if (t->failed)
		return -EPROTO;
	if (cap == 0)
		return 0;
	ERR_clear_error();
	int ret = SSL_read_ex(t->ssl, out, cap, &n);
	if (ret == 1)
		return (ssize_t)n;
	return io_result(t, ret);
}

int vr_tls_write(struct vr_tls *t, const void *p, size_t n)
{
	size_t done;

	if (t->failed)
		return -EPROTO;
	if (!SSL_is_init_finished(t->ssl))
		return -EAGAIN;
	if (n == 0)
		return 0;
	ERR_clear_error();
	/* Without SSL_MODE_ENABLE_PARTIAL_WRITE this writes all n bytes (as
	 * many records as needed) or fails; a memory wbio never says retry. */
	int ret = SSL_write_ex(t->ssl, p, n, &done);
	if (ret == 1)
		return 0;
	int rc = io_result(t, ret);
	return rc == 0 ? -EAGAIN : -EPROTO;
}

size_t vr_tls_pending(const struct vr_tls *t)
{
	return BIO_ctrl_pending(t->wbio);
}

ssize_t vr_tls_drain(struct vr_tls *t, struct vr_buf *out)
{
	size_t pending = BIO_ctrl_pending(t->wbio), room = out->max - out->len;
	size_t n = VR_MIN(pending, room), got;

	if (pending == 0)
		return 0;
	if (n == 0)
		return -ENOBUFS;
	uint8_t *w = vr_buf_reserve(out, n);
	if (!w)
		return -ENOBUFS;
	if (BIO_read_ex(t->wbio, w, n, &got) != 1) {
		ERR_clear_error();
		return 0;
	}
	vr_buf_commit(out, got);
	return (ssize_t)got;
}

int vr_tls_handshake(struct vr_tls *t)
{
	if (t->failed)
		return -EPROTO;
	if (SSL_is_init_finished(t->ssl))
		return 0;
	ERR_clear_error();
	int ret = SSL_do_handshake(t->ssl);
	if (ret == 1)
		return 0;
	int rc = io_result(t, ret);
	return rc == 0 ? -EAGAIN : -EPROTO;
}

bool vr_tls_established(const struct vr_tls *t)
{
	return !t->failed && SSL_is_init_finished(t->ssl);
}

void vr_tls_shutdown(struct vr_tls *t)
{
	/* After a fatal error OpenSSL has already sent its alert, and during
	 * the handshake there is no session to close. */
	if (t->failed || !SSL_is_init_finished(t->ssl))
		return;
	ERR_clear_error();
	SSL_shutdown(t->ssl);
	ERR_clear_error();
}

const char *vr_tls_version(const struct vr_tls *t)
{
	return SSL_get_version(t->ssl);
}

const char *vr_tls_cipher(const struct vr_tls *t)
{
	return SSL_get_cipher_name(t->ssl);
}

const char *vr_tls_error(const struct vr_tls *t)
{
	return t->err[0] ? t->err : "no error";
}
