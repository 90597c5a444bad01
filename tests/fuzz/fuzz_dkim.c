/*
 * fuzz_dkim.c - libFuzzer harness for the DKIM signer: the header block
 * splitter, the header and body canonicalisers and the From domain picker
 * see every byte of a customer's message, so no input may crash them, leak
 * or make the result depend on where the chunks were cut.
 *
 * Input: byte 0 picks the canonicalisations, the constructor
 * (vr_dkim_signer_new or _new_for) and whether the chunked run reuses one
 * signer across inputs (vr_dkim_signer_reset), byte 1 seeds the chunk
 * sizes (1..64); the rest is the message. It is signed twice, in those
 * chunks and whole with a new signer: both must give the same result and,
 * when it is a signature, the same
 * bytes (Ed25519 is deterministic), in lines of at most 78 columns ending
 * in CRLF. Any error other than the documented ones aborts.
 *
 * Build: meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 *        with CC=clang; run: build-fuzz/tests/fuzz/fuzz_dkim
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "vmrelay/dkim.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vr_dkim_key key = { .selector = "fz", .alg = VR_DKIM_ED25519_SHA256, .key = "-" };
static struct vr_dkim_domain doms[] = {
	{ .name = "example.com", .keys = &key, .n_keys = 1 },
	{ .name = "a", .keys = &key, .n_keys = 1 },
};
static struct vr_account acct = { .id = "fuzz", .dkim = doms, .n_dkim = 2 };
/* Reset between inputs, whatever state the last one left it in. */
static struct vr_dkim_signer *kept[4];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[256];
	EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (!pkey || vr_dkim_key_adopt(&key, pkey, err, sizeof(err)) < 0)
		abort();
	return 0;
}

static int sign(const uint8_t *p, size_t n, uint8_t flags, uint8_t seed, struct vr_buf *out)
{
	const struct vr_dkim_opts opts = {
		flags & 1 ? VR_DKIM_SIMPLE : VR_DKIM_RELAXED,
		flags & 2 ? VR_DKIM_SIMPLE : VR_DKIM_RELAXED,
	};
	struct vr_dkim_signer **keep = seed && (flags & 8) ? &kept[flags & 3] : NULL, *s;
	uint32_t x = seed | 1u;
	char err[256];

	if (keep && !*keep)
		*keep = vr_dkim_signer_new(&doms[0], 1, &opts);
	if (keep)
		s = *keep && (flags & 4 ? vr_dkim_signer_reset_for(*keep, &acct, 1)
					: vr_dkim_signer_reset(*keep, &doms[0], 1)) == 0 ? *keep : NULL;
	else
		s = flags & 4 ? vr_dkim_signer_new_for(&acct, 1, &opts)
			      : vr_dkim_signer_new(&doms[0], 1, &opts);
	if (!s)
		abort();
	for (size_t i = 0; i < n;) {
		size_t k = n - i;
		if (seed) {
			x ^= x << 13, x ^= x >> 17, x ^= x << 5;   /* xorshift32 */
			k = VR_MIN(k, 1 + x % 64);
		}
		int rc = vr_dkim_signer_feed(s, p + i, k);
		if (rc != 0 && rc != -EMSGSIZE && rc != -EBADMSG)
			abort();
		i += k;
	}
	int rc = vr_dkim_signer_finish(s, out, err, sizeof(err));
	if (!keep)
		vr_dkim_signer_free(s);
	if (rc != 0 && rc != -EMSGSIZE && rc != -EBADMSG && rc != -ENOENT)
		abort();
	if (rc != 0 && (err[0] == '\0' || out->len != 0))
		abort();
	return rc;
}

static void check_shape(const struct vr_buf *out)
{
	const uint8_t *p = vr_buf_head(out), *end = p + out->len;

	if (out->len < 16 || memcmp(p, "DKIM-Signature: ", 16) != 0)
		abort();
	while (p < end) {
		const uint8_t *cr = memchr(p, '\r', (size_t)(end - p));
		if (!cr || cr + 1 >= end || cr[1] != '\n' || cr - p > 78)
			abort();
		p = cr + 2;
		if (p < end && *p != '\t')
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vr_buf a, b;

	if (size < 2)
		return 0;
	vr_buf_init(&a, 0);
	vr_buf_init(&b, 0);
	int ra = sign(data + 2, size - 2, data[0], data[1], &a);
	int rb = sign(data + 2, size - 2, data[0], 0, &b);
	if (ra != rb || a.len != b.len ||
	    (a.len && memcmp(vr_buf_head(&a), vr_buf_head(&b), a.len) != 0))
		abort();
	if (ra == 0)
		check_shape(&a);
	vr_buf_free(&a);
	vr_buf_free(&b);
	return 0;
}
