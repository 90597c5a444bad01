/*
 * hash.c - per-message digests and their order-free sum (see hash.h).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <xxhash.h>

#include "vmrelay/common.h"
#include "hash.h"

struct vr_bench_hash {
	enum vr_bench_hash_alg alg;
	EVP_MD_CTX *md;
	XXH3_state_t *xxh;
};

static const char *const hash_names[] = {
	[VR_BENCH_HASH_SHA256] = "sha256",
	[VR_BENCH_HASH_XXH3] = "xxh3",
};

int vr_bench_hash_alg_parse(const char *name)
{
	for (size_t i = 1; i < VR_ARRAY_SIZE(hash_names); i++)
		if (strcmp(name, hash_names[i]) == 0)
			return (int)i;
	return -1;
}

const char *vr_bench_hash_alg_name(enum vr_bench_hash_alg alg)
{
	return alg == VR_BENCH_HASH_NONE ? "none" : hash_names[alg];
}

static size_t digest_len(enum vr_bench_hash_alg alg)
{
	return alg == VR_BENCH_HASH_SHA256 ? 32 : 8;
}

struct vr_bench_hash *vr_bench_hash_new(enum vr_bench_hash_alg alg)
{
	struct vr_bench_hash *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->alg = alg;
	if (alg == VR_BENCH_HASH_SHA256)
		h->md = EVP_MD_CTX_new();
	else
		h->xxh = XXH3_createState();
	if (!h->md && !h->xxh) {
		free(h);
		return NULL;
	}
	return h;
}

void vr_bench_hash_free(struct vr_bench_hash *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->md);
	XXH3_freeState(h->xxh);
	free(h);
}

void vr_bench_hash_begin(struct vr_bench_hash *h)
{
	/* Neither can fail with a built-in algorithm and an allocated state. */
	if (h->md)
		EVP_DigestInit_ex(h->md, EVP_sha256(), NULL);
	else
		XXH3_64bits_reset(h->xxh);
}

void vr_bench_hash_update(struct vr_bench_hash *h, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (h->md)
		EVP_DigestUpdate(h->md, p, n);
	else
		XXH3_64bits_update(h->xxh, p, n);
}

void vr_bench_hash_sum_init(struct vr_bench_hash_sum *s, enum vr_bench_hash_alg alg)
{
	memset(s, 0, sizeof(*s));
	s->alg = alg;
}

void vr_bench_hash_end(struct vr_bench_hash *h, struct vr_bench_hash_sum *s)
{
	uint8_t d[VR_BENCH_DIGEST_MAX];
	size_t n = digest_len(h->alg);
	unsigned carry = 0;

	if (h->md) {
		EVP_DigestFinal_ex(h->md, d, NULL);
	} else {
		XXH64_canonical_t c;
		XXH64_canonicalFromHash(&c, XXH3_64bits_digest(h->xxh));
		memcpy(d, c.digest, sizeof(c.digest));
	}
	/* Big-endian addition; the carry out of the top byte is the modulus. */
	for (size_t i = n; i-- > 0;) {
		carry += (unsigned)s->sum[i] + d[i];
		s->sum[i] = (uint8_t)carry;
		carry >>= 8;
	}
	s->messages++;
}

void vr_bench_hash_sum_hex(const struct vr_bench_hash_sum *s, char out[2 * VR_BENCH_DIGEST_MAX + 1])
{
	static const char hex[] = "0123456789abcdef";
	size_t n = s->alg == VR_BENCH_HASH_NONE ? 0 : digest_len(s->alg);

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[s->sum[i] >> 4];
		out[2 * i + 1] = hex[s->sum[i] & 15];
	}
	out[2 * n] = '\0';
}
