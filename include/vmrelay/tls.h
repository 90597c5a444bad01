/*
 * tls.h - OpenSSL 3 over memory BIOs, so the same TLS code runs over kernel
 * sockets, the userspace TCP stack and in unit tests with no socket at all.
 *
 * The owner moves ciphertext: vr_tls_feed() what arrived from the network,
 * vr_tls_read() plaintext out, vr_tls_write() plaintext in, and send whatever
 * vr_tls_drain() appends to its output buffer. A vr_tls belongs to one thread.
 *
 * A client that moves bytes over a blocking socket of its own (engine/cluster's
 * Redis connection) shares the contexts and the peer checks but not the
 * memory BIOs: vr_tls_ssl_new() gives it a plain OpenSSL session on its fd.
 */
#ifndef VR_TLS_H
#define VR_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "vmrelay/buf.h"

struct vr_tls_ctx;   /* shared, read-only after creation: cert, key, protocol floor */
struct vr_tls;       /* one connection */

/* TLS 1.2+ server context; key read once here. NULL + err on failure. */
struct vr_tls_ctx *vr_tls_server_ctx_new(const char *cert_file, const char *key_file,
					 char *err, size_t errlen);
/* Client context for outbound delivery and tests; verify off (opportunistic). */
struct vr_tls_ctx *vr_tls_client_ctx_new(char *err, size_t errlen);
/*
 * Turns verification on for a client context, before its first connection:
 * the server's chain must lead to a CA in ca_file (NULL: the system store)
 * and its certificate must carry the peer given to vr_tls_new() or
 * vr_tls_ssl_new(): a host name as a DNS name, an IP address as an IP SAN
 * (a connection without a peer cannot be created then). A failed check
 * fails the handshake (-EPROTO, vr_tls_error() says why). 0 or -1 + err
 * ("FILE: ...").
 */
int vr_tls_client_ctx_verify(struct vr_tls_ctx *ctx, const char *ca_file, char *err,
			     size_t errlen);
/*
 * A client certificate for servers that ask for one (Redis with
 * tls-auth-clients), before the context's first connection: first its
 * chain, then its private key, which must match it. Two calls so that the
 * caller can name the setting at fault. 0 or -1 + err ("FILE: ...").
 */
int vr_tls_client_ctx_cert(struct vr_tls_ctx *ctx, const char *cert_file, char *err,
			   size_t errlen);
int vr_tls_client_ctx_key(struct vr_tls_ctx *ctx, const char *key_file, char *err,
			  size_t errlen);
void vr_tls_ctx_free(struct vr_tls_ctx *ctx);

/*
 * peer: a client's server, a host name or an IP address, or NULL; a name
 * goes out as SNI (never an address, RFC 6066 3), and a verifying context
 * checks the certificate against either. Servers pass NULL. NULL on -ENOMEM
 * (or a verifying client without a peer).
 */
struct vr_tls *vr_tls_new(struct vr_tls_ctx *ctx, bool server, const char *peer);
void vr_tls_free(struct vr_tls *t);

/*
 * A client session for the caller's own connected socket fd, set up as
 * vr_tls_new() sets up a client (SNI, peer checks). The caller owns it
 * (SSL_free) and drives it with SSL_connect/SSL_read/SSL_write. NULL + err.
 */
struct ssl_st;
struct ssl_st *vr_tls_ssl_new(struct vr_tls_ctx *ctx, int fd, const char *peer, char *err,
			      size_t errlen);
/* For the owner of such a session: the calling thread's first queued
 * OpenSSL error as text in buf, the queue cleared; with none queued,
 * errno's text, or "connection closed" when errno is 0. Returns buf. */
const char *vr_tls_ssl_error(char *buf, size_t len);

/*
 * DANE (RFC 7672) on a client connection, before its handshake. Enable it
 * with the TLSA base domain (the MX host: the name a DANE-TA(2) chain must
 * carry; DANE-EE(3) matches the key alone, without name checks), then add
 * the records. Once one record was added, a certificate matching none of
 * them fails the handshake (-EPROTO, vr_tls_error() says so); with none
 * added the connection stays unauthenticated. enable: 0 or -ENOMEM;
 * tlsa_add: 0, or -EINVAL for a record OpenSSL cannot use (a usage or
 * matching type it does not know, a digest of the wrong length) - RFC 7672
 * calls those unusable: skip them.
 */
int vr_tls_dane_enable(struct vr_tls *t, const char *basedomain);
int vr_tls_dane_tlsa_add(struct vr_tls *t, uint8_t usage, uint8_t selector, uint8_t mtype,
			 const uint8_t *data, size_t len);
/* True once established when a TLSA record authenticated the server. */
bool vr_tls_dane_verified(const struct vr_tls *t);

/* Ciphertext from the peer. Returns 0 or -ENOMEM. */
int vr_tls_feed(struct vr_tls *t, const void *p, size_t n);
/*
 * Plaintext for us: >0 bytes, 0 when more ciphertext is needed (the handshake
 * may have produced output: drain it), -EPIPE when the peer closed TLS,
 * -EPROTO on a TLS error (vr_tls_error() says which).
 */
ssize_t vr_tls_read(struct vr_tls *t, void *out, size_t cap);
/* Encrypts all n bytes (or fails). Returns 0, -EAGAIN before the handshake
 * completed, or -EPROTO. */
int vr_tls_write(struct vr_tls *t, const void *p, size_t n);
/* Moves pending ciphertext into out, as much as out's ceiling allows (the
 * rest stays pending). Returns bytes moved, or -ENOBUFS when none fit. */
ssize_t vr_tls_drain(struct vr_tls *t, struct vr_buf *out);
/* Ciphertext waiting to be drained. */
size_t vr_tls_pending(const struct vr_tls *t);
/* Progresses the handshake without reading application data (client start).
 * Returns 0 once established, -EAGAIN while it waits for the peer (drain
 * first), -EPROTO on failure. */
int vr_tls_handshake(struct vr_tls *t);
bool vr_tls_established(const struct vr_tls *t);
/* Sends close_notify (drain afterwards). */
void vr_tls_shutdown(struct vr_tls *t);

/* "TLSv1.3", cipher name; valid once established. */
const char *vr_tls_version(const struct vr_tls *t);
const char *vr_tls_cipher(const struct vr_tls *t);
/* Last error as text, for replies and logs ("no error" if none). */
const char *vr_tls_error(const struct vr_tls *t);

#endif
