/*
 * msg.h - the messages vmrelay-bench sends, and their sizes (private to
 * vmrelay-bench).
 *
 * A message is a header block of its own (From, To, Subject, Date,
 * Message-ID) followed by a body cut from one padding text shared by every
 * message: lines of 72 characters, some starting with "." so that
 * dot-stuffing is exercised, and a last line that starts with "." and makes
 * the size exact. The padding exists twice, as stored (raw, for BDAT and for
 * the hash) and dot-stuffed (for DATA), so a message goes out as a few
 * iovecs into shared memory and costs no copy, however large.
 */
#ifndef VR_BENCH_MSG_H
#define VR_BENCH_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vmrelay/buf.h"
#include "hash.h"

#define VR_BENCH_SIZE_MIN 256                    /* the headers take about 200 */
#define VR_BENCH_SIZE_MAX (256ull << 20)
#define VR_BENCH_SIZE_TABLE_MAX 32

/* --- sizes: fixed, a range with a distribution, or a weighted list --- */

enum vr_bench_size_kind {
	VR_BENCH_SIZE_FIXED,
	VR_BENCH_SIZE_UNIFORM,       /* lo..hi, every size alike */
	VR_BENCH_SIZE_LOGNORMAL,     /* lo..hi, median sqrt(lo*hi), lo and hi at -/+3 sigma */
	VR_BENCH_SIZE_TABLE,         /* size:weight,... */
};

struct vr_bench_sizes {
	enum vr_bench_size_kind kind;
	uint64_t lo, hi;                                 /* every draw is within */
	double mu, sigma;                                /* lognormal, of ln(size) */
	unsigned n;                                      /* table entries */
	uint64_t size[VR_BENCH_SIZE_TABLE_MAX];
	double cum[VR_BENCH_SIZE_TABLE_MAX];             /* cumulative weights, last = 1 */
};

/*
 * "6000", "10k", "1m" (k = 1024, m = 1024 * 1024), "1k..1m" (uniform),
 * "1k..1m:lognormal", "4k:70,64k:25,1m:5" (size:weight). 0, or -1 with a
 * message in err.
 */
int vr_bench_sizes_parse(struct vr_bench_sizes *s, const char *spec, char *err, size_t errlen);
uint64_t vr_bench_sizes_draw(const struct vr_bench_sizes *s, uint64_t *rng);

/* splitmix64: small, fast, and good enough to pick sizes and failures. */
uint64_t vr_bench_rand(uint64_t *state);
/* Uniform in [0, 1). */
double vr_bench_rand_unit(uint64_t *state);

/* --- the shared padding --- */

struct vr_bench_pad {
	uint8_t *raw, *wire;
	size_t lines;
};

/* Padding for bodies up to max_body octets. 0 or -ENOMEM. */
int vr_bench_pad_init(struct vr_bench_pad *pad, uint64_t max_body);
void vr_bench_pad_free(struct vr_bench_pad *pad);

/* --- one message --- */

/* What every message of a run shares. */
struct vr_bench_msg_params {
	const char *from;
	const char *const *rcpts;
	unsigned nrcpts;
	const char *run_id;          /* in every Message-ID, so runs never collide */
};

struct vr_bench_msg {
	struct vr_buf head;          /* the header block and the empty line after it */
	size_t lines;                /* full padding lines in the body */
	char tail[2 + 76];           /* "." (the stuffing) + the raw last line */
	size_t tail_len;             /* of the raw last line; 0 for none */
	uint64_t size;               /* octets as stored: head + lines + tail */
};

void vr_bench_msg_init(struct vr_bench_msg *m);
void vr_bench_msg_free(struct vr_bench_msg *m);
/* Builds message seq of size octets (more if its headers are longer).
 * 0 or -ENOMEM. */
int vr_bench_msg_make(struct vr_bench_msg *m, const struct vr_bench_msg_params *p, uint64_t seq,
		      uint64_t size);
/*
 * The message as iovecs into m and pad: dot-stuffed and ended by ".CRLF"
 * for DATA (dot), raw for BDAT. Returns the number used, at most
 * VR_BENCH_MSG_IOV.
 */
#define VR_BENCH_MSG_IOV 4
unsigned vr_bench_msg_iov(const struct vr_bench_msg *m, const struct vr_bench_pad *pad, bool dot,
			  struct iovec iov[VR_BENCH_MSG_IOV]);
/* Feeds the message as stored to h (begin/end are the caller's). */
void vr_bench_msg_hash(const struct vr_bench_msg *m, const struct vr_bench_pad *pad,
		       struct vr_bench_hash *h);

#endif
