/*
 * key.c - DKIM private keys: loading a PEM file for a struct vr_dkim_key
 * (checked against its algorithm and size), the public half as the DNS
 * wizard prints it, and which of an account's domains signs a message.
 *
 * Keys are loaded with the accounts table, on the thread loading it, so a
 * bad key file fails the load (and the reload keeps the old table) rather
 * than the first delivery. A loaded EVP_PKEY is only read afterwards, which
 * OpenSSL allows from any number of threads.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "vmrelay/log.h"
#include "dkim_impl.h"

static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const EVP_MD *vr_dkim_sha256(void)
{
	pthread_once(&sha256_once, sha256_fetch);
	return sha256;
}

/* An encrypted key would make OpenSSL prompt on the terminal: refuse. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

static const struct {
	const char *name;            /* a= */
	const char *type;            /* EVP_PKEY_is_a() name */
	const char *dns;             /* k= of the DNS record */
} algs[] = {
	[VR_DKIM_RSA_SHA256] = { "rsa-sha256", "RSA", "rsa" },
	[VR_DKIM_ED25519_SHA256] = { "ed25519-sha256", "ED25519", "ed25519" },
};

int vr_dkim_key_load(struct vr_dkim_key *k, char *err, size_t errlen)
{
	FILE *fp = fopen(k->key, "re");

	if (!fp) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", k->key, strerror(e));
		return -e;
	}
	EVP_PKEY *pkey = PEM_read_PrivateKey(fp, NULL, no_passphrase, NULL);
	fclose(fp);
	ERR_clear_error();
	if (!pkey) {
		snprintf(err, errlen, "%s: not a PEM private key (or one with a passphrase)",
			 k->key);
		return -EINVAL;
	}
	if (!EVP_PKEY_is_a(pkey, algs[k->alg].type)) {
		snprintf(err, errlen, "%s: key type %s, but %s needs %s", k->key,
			 EVP_PKEY_get0_type_name(pkey), algs[k->alg].name, algs[k->alg].type);
		EVP_PKEY_free(pkey);
		return -EINVAL;
	}
	int bits = EVP_PKEY_get_bits(pkey);
	if (k->alg == VR_DKIM_RSA_SHA256 && bits < VR_DKIM_RSA_MIN_BITS) {
		snprintf(err, errlen, "%s: RSA key of %d bits, at least %u needed (RFC 8301)",
			 k->key, bits, VR_DKIM_RSA_MIN_BITS);
		EVP_PKEY_free(pkey);
		return -EKEYREJECTED;
	}
	/* RFC 8301 3.2: signers SHOULD use 2048 bits; 1024 still verifies. */
	if (k->alg == VR_DKIM_RSA_SHA256 && bits < 2048)
		vr_log_warn("event=dkim_weak_key file=%s bits=%d selector=%s", k->key, bits,
			    k->selector);
	EVP_PKEY_free(k->pkey);
	k->pkey = pkey;
	return 0;
}

void vr_dkim_key_unload(struct vr_dkim_key *k)
{
	EVP_PKEY_free(k->pkey);
	k->pkey = NULL;
}

/* Base64 of n bytes, appended to out. */
static int b64_append(struct vr_buf *out, const uint8_t *p, size_t n)
{
	size_t len = 4 * ((n + 2) / 3);
	uint8_t *w = vr_buf_reserve(out, len + 1);

	if (!w)
		return -ENOBUFS;
	vr_buf_commit(out, (size_t)EVP_EncodeBlock(w, p, (int)n));
	return 0;
}

int vr_dkim_key_public_b64(const struct vr_dkim_key *k, struct vr_buf *out)
{
	uint8_t raw[32], *der = NULL;
	size_t rawlen = sizeof(raw);
	int rc;

	if (!k->pkey)
		return -EINVAL;
	/* RFC 8463 3: the bare 32-byte key; RSA: SubjectPublicKeyInfo, what
	 * every verifier and opendkim-genkey use. */
	if (k->alg == VR_DKIM_ED25519_SHA256) {
		if (EVP_PKEY_get_raw_public_key(k->pkey, raw, &rawlen) != 1)
			return -EINVAL;
		return b64_append(out, raw, rawlen);
	}
	int len = i2d_PUBKEY(k->pkey, &der);
	if (len <= 0)
		return -ENOMEM;
	rc = b64_append(out, der, (size_t)len);
	OPENSSL_free(der);
	return rc;
}

int vr_dkim_key_txt(const struct vr_dkim_key *k, struct vr_buf *out)
{
	size_t len = out->len;
	int rc;

	if (!k->pkey)
		return -EINVAL;
	rc = vr_buf_printf(out, "v=DKIM1; k=%s; p=", algs[k->alg].dns);
	if (rc == 0)
		rc = vr_dkim_key_public_b64(k, out);
	if (rc < 0)
		out->len = len;
	return rc;
}

const struct vr_dkim_domain *vr_dkim_domain_find(const struct vr_account *acct,
						  const char *domain, size_t len)
{
	for (unsigned i = 0; i < acct->n_dkim; i++) {
		const struct vr_dkim_domain *d = &acct->dkim[i];
		if (strlen(d->name) == len && strncasecmp(d->name, domain, len) == 0)
			return d;
	}
	return NULL;
}
