/*
 * dkim_impl.h - what the dkim module's files share: the canonicalisers
 * (canon.c) the signer (sign.c) feeds, and the SHA-256 they hash with.
 */
#ifndef VR_DKIM_IMPL_H
#define VR_DKIM_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "vmrelay/buf.h"
#include "vmrelay/dkim.h"

/* SHA-256, fetched once: an implicit fetch on every digest init costs a
 * lock and a provider lookup per message. NULL if OpenSSL has none. */
const EVP_MD *vr_dkim_sha256(void);

/* libsodium's 64-byte Ed25519 secret key made for pkey when it loaded
 * (key.c), or NULL: not an Ed25519 key loaded by vr_dkim_key_load(). */
const uint8_t *vr_dkim_ed25519_sk(const EVP_PKEY *pkey);

#define VR_DKIM_STAGE 8192

/*
 * The body canonicaliser (RFC 6376 3.4.3, 3.4.4) streaming into a SHA-256
 * context. Lines end in CRLF; a lone CR or LF is an ordinary byte. Empty
 * lines are counted, not hashed, until a non-empty line follows, so the
 * ones at the end are dropped without holding them.
 */
struct vr_dkim_body {
	EVP_MD_CTX *md;
	enum vr_dkim_canon canon;
	bool cr;                     /* the last byte was a CR, its line end unknown */
	bool wsp;                    /* relaxed: a WSP run is pending in the line */
	bool text;                   /* the line has bytes that will be hashed */
	bool hashed;                 /* anything hashed yet */
	uint64_t blank;              /* empty lines held back */
	size_t n;                    /* bytes staged in out */
	/* Staging: the canonical body goes to the digest VR_DKIM_STAGE bytes
	 * at a time (a 6 KB message in one update); the slack takes the
	 * stores of the scan (up to 64 bytes) past the staging limit. */
	uint8_t out[VR_DKIM_STAGE + 64];
};

/* 0 or -ENOMEM. */
int vr_dkim_body_init(struct vr_dkim_body *b, enum vr_dkim_canon canon);
/* Ready for the next body, keeping the digest context. 0 or -EIO. */
int vr_dkim_body_reset(struct vr_dkim_body *b);
/* 0, or -EIO if the digest fails. */
int vr_dkim_body_feed(struct vr_dkim_body *b, const uint8_t *p, size_t n);
/* Ends the body (adding the CRLF a last line lacks) and writes its hash. */
int vr_dkim_body_final(struct vr_dkim_body *b, uint8_t hash[32]);
void vr_dkim_body_free(struct vr_dkim_body *b);

/*
 * Appends one header field (its name through the CRLF that ends it,
 * continuation lines included; without that CRLF if it is the signature
 * field being signed) in canonical form (RFC 6376 3.4.1, 3.4.2) to out.
 * Neither form adds a CRLF the input lacks. 0 or -ENOBUFS/-ENOMEM.
 */
int vr_dkim_header_canon(enum vr_dkim_canon canon, const uint8_t *p, size_t n,
			 struct vr_buf *out);

#endif
