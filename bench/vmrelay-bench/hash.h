/*
 * hash.h - what vmrelay-bench hashes of each message, and how the hashes of
 * many messages add up (private to vmrelay-bench).
 *
 * The digest of a message covers its content as the server stores it: the
 * header and body after dot-unstuffing, CRLFs included, without the final
 * ".CRLF" (for BDAT, the chunk octets). Messages of concurrent sessions
 * arrive in any order, so a run's figure must not depend on order: it is
 * the sum of the messages' digests, read as big-endian integers, modulo
 * 2^256 (SHA-256) or 2^64 (XXH3-64). Client and sink compute the same
 * figure for the same set of messages, and so can anyone else, e.g.
 *   sum(int.from_bytes(hashlib.sha256(m).digest(), "big")) % 2**256
 */
#ifndef VR_BENCH_HASH_H
#define VR_BENCH_HASH_H

#include <stddef.h>
#include <stdint.h>

enum vr_bench_hash_alg {
	VR_BENCH_HASH_NONE = 0,
	VR_BENCH_HASH_SHA256,        /* OpenSSL's, with the CPU's SHA instructions */
	VR_BENCH_HASH_XXH3,          /* XXH3-64 (libxxhash): cheaper, not cryptographic */
};

#define VR_BENCH_DIGEST_MAX 32

/* One message's running digest; allocated once per session and reused. */
struct vr_bench_hash;

/* "sha256" or "xxh3"; -1 if neither. */
int vr_bench_hash_alg_parse(const char *name);
const char *vr_bench_hash_alg_name(enum vr_bench_hash_alg alg);

/* NULL on ENOMEM. */
struct vr_bench_hash *vr_bench_hash_new(enum vr_bench_hash_alg alg);
void vr_bench_hash_free(struct vr_bench_hash *h);
void vr_bench_hash_begin(struct vr_bench_hash *h);
void vr_bench_hash_update(struct vr_bench_hash *h, const void *p, size_t n);

/* The order-free sum over a set of messages. */
struct vr_bench_hash_sum {
	enum vr_bench_hash_alg alg;
	uint64_t messages;
	uint8_t sum[VR_BENCH_DIGEST_MAX];   /* big-endian; digest-sized prefix used */
};

void vr_bench_hash_sum_init(struct vr_bench_hash_sum *s, enum vr_bench_hash_alg alg);
/* Ends h's message and adds its digest to s. */
void vr_bench_hash_end(struct vr_bench_hash *h, struct vr_bench_hash_sum *s);
/* The sum in lowercase hex: 64 or 16 digits and a NUL in out. */
void vr_bench_hash_sum_hex(const struct vr_bench_hash_sum *s, char out[2 * VR_BENCH_DIGEST_MAX + 1]);

#endif
