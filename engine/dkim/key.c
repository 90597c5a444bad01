/*
 * key.c - DKIM private keys: loading a PEM file for a struct vr_dkim_key
 * (checked against its algorithm and size), the public half as the DNS
 * wizard prints it, and which of an account's domains signs a message.
 *
 * Keys are loaded with the accounts table, on the thread loading it, so a
 * bad key file fails the load (and the reload keeps the old table) rather
 * than the first delivery. A loaded EVP_PKEY is only read afterwards, which
 * OpenSSL allows from any number of threads.
 *
 * Ed25519 signs with libsodium (2-2.7x faster than OpenSSL 3.0 here, same
 * bytes: RFC 8032 signatures are deterministic). Its 64-byte secret key is
 * made from the seed OpenSSL read and hangs off the EVP_PKEY as ex_data, so
 * it lives and dies with that refcounted key however the accounts table
 * shares it, and is wiped when the key is freed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>

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

/* sodium_init() and the ex_data slot, once, on whichever thread loads the
 * first key; both are read-only afterwards. */
static int ed25519_idx = -1;
static pthread_once_t ed25519_once = PTHREAD_ONCE_INIT;

/* The key's own copy goes with it: a duplicate gets none rather than a
 * second owner of the same buffer. */
static int ed25519_dup(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d,
		       int idx, long argl, void *argp)
{
	*from_d = NULL;
	return 1;
}

/* Plain malloc, wiped on free: sodium_malloc's guard pages would cost a
 * few mappings and locked pages per key, and a table has thousands. */
static void ed25519_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			 void *argp)
{
	if (ptr) {
		sodium_memzero(ptr, crypto_sign_SECRETKEYBYTES);
		free(ptr);
	}
}

static void ed25519_setup(void)
{
	if (sodium_init() >= 0)
		ed25519_idx = EVP_PKEY_get_ex_new_index(0, NULL, NULL, ed25519_dup,
							 ed25519_free);
}

const uint8_t *vr_dkim_ed25519_sk(const EVP_PKEY *pkey)
{
	return ed25519_idx < 0 ? NULL : EVP_PKEY_get_ex_data(pkey, ed25519_idx);
}

/* Makes libsodium's secret key from the seed and attaches it to pkey,
 * refusing a key whose public half libsodium derives otherwise than
 * OpenSSL (a seed both should expand alike: RFC 8032 5.1.5). */
static int ed25519_attach(EVP_PKEY *pkey, const char *path, char *err, size_t errlen)
{
	uint8_t seed[crypto_sign_SEEDBYTES], pk[crypto_sign_PUBLICKEYBYTES], ossl_pk[32];
	size_t seedlen = sizeof(seed), pklen = sizeof(ossl_pk);
	uint8_t *sk = NULL;
	int rc = -EINVAL;

	pthread_once(&ed25519_once, ed25519_setup);
	if (ed25519_idx < 0) {
		snprintf(err, errlen, "%s: libsodium failed to initialise", path);
		return -EIO;
	}
	if (EVP_PKEY_get_raw_private_key(pkey, seed, &seedlen) != 1 || seedlen != sizeof(seed) ||
	    EVP_PKEY_get_raw_public_key(pkey, ossl_pk, &pklen) != 1 || pklen != sizeof(ossl_pk))
		snprintf(err, errlen, "%s: OpenSSL gives no raw Ed25519 key", path);
	else if (!(sk = malloc(crypto_sign_SECRETKEYBYTES)))
		rc = -ENOMEM, snprintf(err, errlen, "%s: out of memory", path);
	else if (crypto_sign_seed_keypair(pk, sk, seed) != 0 ||
		 sodium_memcmp(pk, ossl_pk, sizeof(pk)) != 0)
		snprintf(err, errlen, "%s: libsodium derives another Ed25519 public key from it "
			 "than OpenSSL does: refused", path);
	else if (EVP_PKEY_set_ex_data(pkey, ed25519_idx, sk) != 1)
		rc = -ENOMEM, snprintf(err, errlen, "%s: out of memory", path);
	else
		rc = 0;
	sodium_memzero(seed, sizeof(seed));
	if (rc < 0 && sk) {
		sodium_memzero(sk, crypto_sign_SECRETKEYBYTES);
		free(sk);
	}
	ERR_clear_error();
	return rc;
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
	return vr_dkim_key_adopt(k, pkey, err, errlen);
}

int vr_dkim_key_adopt(struct vr_dkim_key *k, EVP_PKEY *pkey, char *err, size_t errlen)
{
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
	int rc;
	if (k->alg == VR_DKIM_ED25519_SHA256 && (rc = ed25519_attach(pkey, k->key, err, errlen)) < 0) {
		EVP_PKEY_free(pkey);
		return rc;
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
