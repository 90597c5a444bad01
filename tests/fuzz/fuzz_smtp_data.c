/*
 * fuzz_smtp_data.c - libFuzzer harness for the DATA/BDAT content decoder
 * (engine/smtp/data.c).
 *
 * The first octet picks the mode and a size limit; the rest is content.
 * Decoding whole and in input-sized pieces must agree (on the flags too,
 * unless a bare CR/LF ended it). For a DATA message that ended cleanly,
 * the output must be exactly the octets the decoder used less one leading
 * dot on some lines and the final ".CRLF": nothing else is removed, added
 * or changed.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 * Run:   build-fuzz/tests/fuzz/fuzz_smtp_data -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/buf.h"

#include "data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

struct result {
	int rc;
	size_t used;
	unsigned flags;
	int err;
	struct vr_buf out;
};

static int sink(void *arg, const void *p, size_t n)
{
	return vr_buf_append(arg, p, n);
}

static void run(bool dot, uint64_t max, const uint8_t *in, size_t n, const uint8_t *cuts,
		size_t ncuts, struct result *r)
{
	struct vr_smtp_data d;
	size_t fed = 0, c = 0;

	vr_buf_init(&r->out, 0);
	vr_smtp_data_init(&d, dot, max, sink, &r->out);
	r->rc = VR_AGAIN;
	while (fed < n && r->rc == VR_AGAIN) {
		size_t k = c < ncuts ? (size_t)cuts[c++] % 97 + 1 : n - fed, used;
		k = k < n - fed ? k : n - fed;
		r->rc = vr_smtp_data_parse(&d, in + fed, k, &used);
		CHECK(used <= k);
		CHECK(r->rc != VR_AGAIN || used == k);
		fed += used;
	}
	if (!dot && r->rc == VR_AGAIN && vr_smtp_data_finish(&d) == VR_ERR)
		r->rc = VR_ERR;
	r->used = fed;
	r->flags = d.flags;
	r->err = d.err;
	CHECK(d.size >= vr_buf_len(&r->out));
	CHECK((d.flags & VR_SMTP_DATA_BIG) == (d.size > max ? VR_SMTP_DATA_BIG : 0));
}

/* Walks the input along the output: they differ only by one dot at the
 * start of some lines (RFC 5321 §4.5.2 drops it whatever follows), and the
 * final ".CRLF". */
static void check_inverse(const struct result *r, const uint8_t *in)
{
	size_t n = vr_buf_len(&r->out), w = 0;
	const uint8_t *p = n ? vr_buf_head(&r->out) : NULL;
	bool bol = true;

	for (size_t i = 0; i < n; i++) {
		if (bol && in[w] == '.')
			w++;
		CHECK(in[w++] == p[i]);
		bol = p[i] == '\n';
	}
	CHECK(bol);
	CHECK(w + 3 == r->used && memcmp(in + w, ".\r\n", 3) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct result a, b;

	if (size < 1)
		return 0;
	bool dot = data[0] & 1;
	uint64_t max = data[0] & 2 ? (uint64_t)(data[0] >> 2) * 16 : UINT64_MAX;
	const uint8_t *in = data + 1;
	size_t n = size - 1;

	run(dot, max, in, n, NULL, 0, &a);
	run(dot, max, in, n, in, n, &b);
	CHECK(a.rc == b.rc && a.used == b.used && a.err == b.err);
	/* after a fatal error, what was counted depends on the cuts */
	CHECK(a.rc == VR_ERR || a.flags == b.flags);
	if (a.rc != VR_ERR && !a.flags) {
		size_t len = vr_buf_len(&a.out);
		CHECK(len == vr_buf_len(&b.out));
		/* (an empty vr_buf may have no memory to point at) */
		CHECK(!len || memcmp(vr_buf_head(&a.out), vr_buf_head(&b.out), len) == 0);
		if (dot && a.rc == VR_OK)
			check_inverse(&a, in);
		if (!dot)
			CHECK(len == n && (!n || memcmp(vr_buf_head(&a.out), in, n) == 0));
	}
	vr_buf_free(&a.out);
	vr_buf_free(&b.out);
	return 0;
}
