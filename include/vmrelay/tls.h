/*
 * tls.h - OpenSSL 3 over memory BIOs, so the same TLS code runs over kernel
 * sockets, the userspace TCP stack and in unit tests with no socket at all.
 *
 * The owner moves ciphertext: vr_tls_feed() what arrived from the network,
 * vr_tls_read() plaintext out, vr_tls_write() plaintext in, and send whatever
 * vr_tls_drain() appends to its output buffer. A vr_tls belongs to one thread.
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
 * and its certificate must name the sni given to vr_tls_new() (a connection
 * without sni cannot be created then). A failed check fails the handshake
 * (-EPROTO, vr_tls_error() says why). 0 or -1 + err.
 */
int vr_tls_client_ctx_verify(struct vr_tls_ctx *ctx, const char *ca_file, char *err,
			     size_t errlen);
void vr_tls_ctx_free(struct vr_tls_ctx *ctx);

/* sni may be NULL; only used by client connections. NULL on -ENOMEM. */
struct vr_tls *vr_tls_new(struct vr_tls_ctx *ctx, bool server, const char *sni);
void vr_tls_free(struct vr_tls *t);

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
