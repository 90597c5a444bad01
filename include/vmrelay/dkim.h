/*
 * dkim.h - DKIM signing (RFC 6376) with rsa-sha256 and ed25519-sha256
 * (RFC 8463), several keys in one pass.
 *
 * A message is signed once, when a delivery worker first picks it up; the
 * header fields produced here are stored in the spool and prepended to the
 * message on every attempt, so retries never re-sign.
 *
 * The signer is fed the message as the spool hands it out: CRLF lines in
 * chunks cut anywhere. It keeps the header block (at most
 * VR_DKIM_HEADER_MAX bytes) and hashes the body as it passes, never holding
 * it. A message whose last line lacks its CRLF (BDAT) is signed as if it
 * had one: the SMTP client adds it. Signed header fields: From (listed once
 * more than it occurs, so nobody can add one), To, Cc, Subject, Date,
 * Message-ID, MIME-Version, Content-Type, Reply-To, each listed as often as
 * it occurs; no l= (a signature must cover the whole body).
 *
 * Keys: vr_accounts_load() calls vr_dkim_key_load() on every key it lists,
 * so a table in use holds loaded keys only. A loaded key is read-only and
 * may be used by any number of threads at once; each signer belongs to one
 * thread.
 */
#ifndef VR_DKIM_H
#define VR_DKIM_H

#include <stddef.h>
#include <stdint.h>

#include "vmrelay/buf.h"
#include "vmrelay/policy.h"

/* Most header bytes a signer holds; a larger header block is an error. */
#define VR_DKIM_HEADER_MAX (1u << 20)
/* RSA keys below this are refused at load (RFC 8301 3.2). */
#define VR_DKIM_RSA_MIN_BITS 1024

enum vr_dkim_canon { VR_DKIM_RELAXED, VR_DKIM_SIMPLE };

struct vr_dkim_opts {
	enum vr_dkim_canon header;
	enum vr_dkim_canon body;
};

/* --- keys --- */

/*
 * Reads k->key (a PEM private key) into k->pkey. The key must match k->alg
 * (RSA for rsa-sha256, Ed25519 for ed25519-sha256) and an RSA key must have
 * at least VR_DKIM_RSA_MIN_BITS (one under 2048 loads, with a warning
 * logged: RFC 8301 asks signers for 2048). 0, or -errno with err saying
 * "/path/key.pem: what is wrong" (-ENOENT/-EACCES: unreadable; -EINVAL: not
 * an unencrypted PEM key of that type; -EKEYREJECTED: too small).
 */
int vr_dkim_key_load(struct vr_dkim_key *k, char *err, size_t errlen);
/* Frees k->pkey and sets it to NULL; k may be unloaded. */
void vr_dkim_key_unload(struct vr_dkim_key *k);
/*
 * Appends the base64 public key of a loaded key (the p= value of its DNS
 * record) to out. 0, or -ENOBUFS/-ENOMEM from out, -EINVAL if not loaded.
 */
int vr_dkim_key_public_b64(const struct vr_dkim_key *k, struct vr_buf *out);
/* Appends the whole TXT record text for selector._domainkey.<domain>:
 * "v=DKIM1; k=ed25519; p=..." (k=rsa for RSA). Same returns. */
int vr_dkim_key_txt(const struct vr_dkim_key *k, struct vr_buf *out);

/*
 * The account's signing domain for a header From domain (ASCII case
 * ignored, exact match: a listed domain does not cover its subdomains, as
 * in vr_account_may_send()). NULL if the account signs nothing for it.
 */
const struct vr_dkim_domain *vr_dkim_domain_find(const struct vr_account *acct,
						  const char *domain, size_t len);

/* --- signing --- */

struct vr_dkim_signer;

/*
 * A signer for one message with every key of d (all loaded), in d's order.
 * now_s is the signing time (t=), seconds since the epoch. opts NULL means
 * relaxed/relaxed. d must outlive the signer (callers inside an RCU read
 * section keep it for the message). NULL with errno ENOMEM, or EINVAL if d
 * has no keys or one not loaded.
 */
struct vr_dkim_signer *vr_dkim_signer_new(const struct vr_dkim_domain *d, uint64_t now_s,
					  const struct vr_dkim_opts *opts);
/*
 * The same when the domain is not known yet: it is chosen at the end of the
 * header block, as vr_dkim_domain_find(acct, header From's domain). acct
 * must outlive the signer. vr_dkim_signer_finish() says -ENOENT if the
 * account has no key for that domain (send the message unsigned).
 */
struct vr_dkim_signer *vr_dkim_signer_new_for(const struct vr_account *acct, uint64_t now_s,
					      const struct vr_dkim_opts *opts);
/*
 * Feeds the next n bytes of the message. 0, or -errno; the first error
 * sticks and vr_dkim_signer_finish() explains it: -EMSGSIZE (header block
 * over VR_DKIM_HEADER_MAX), -EBADMSG (a header line with no colon, or a
 * continuation line first), -ENOMEM.
 */
int vr_dkim_signer_feed(struct vr_dkim_signer *s, const void *p, size_t n);
/*
 * Ends the message and appends one "DKIM-Signature:" header field per key
 * to out, in key order, each folded at 78 columns and ending in CRLF, ready
 * to be prepended to the message. 0, or -errno with err saying why: the
 * feed errors above, -EBADMSG for a message without a From field (or,
 * for vr_dkim_signer_new_for(), a From without one address to take the
 * domain from), -ENOENT (see vr_dkim_signer_new_for()), -EIO (OpenSSL
 * failed; err has its reason), -ENOBUFS/-ENOMEM from out. On error out is
 * left as it was. Once per message: after it, feed and finish say -EINVAL
 * until the signer is reset.
 */
int vr_dkim_signer_finish(struct vr_dkim_signer *s, struct vr_buf *out, char *err,
			  size_t errlen);
/*
 * Starts the next message on s, as vr_dkim_signer_new(d, now_s, same
 * options) / vr_dkim_signer_new_for(acct, ...) would, but keeping s's
 * memory and the signing contexts of the last keys it used: a delivery
 * thread that keeps one signer allocates nothing per message and skips
 * OpenSSL's per-key setup (some 5% of an Ed25519 signature). Any state,
 * finished or not. The contexts hold references to their keys, so a key
 * dropped by a table reload is freed when the signer moves on to other
 * keys or is destroyed (see vr_dkim_signer_free()). 0, or -EINVAL (a key
 * of d not loaded), -EIO.
 */
int vr_dkim_signer_reset(struct vr_dkim_signer *s, const struct vr_dkim_domain *d,
			 uint64_t now_s);
int vr_dkim_signer_reset_for(struct vr_dkim_signer *s, const struct vr_account *acct,
			     uint64_t now_s);
/*
 * Ends s. The calling thread keeps one freed signer as its spare, memory
 * and signing contexts, and the next vr_dkim_signer_new*() on that thread
 * is that spare reset: a signer per message costs what a reset does. The
 * spare is destroyed when its thread exits.
 */
void vr_dkim_signer_free(struct vr_dkim_signer *s);

#endif
