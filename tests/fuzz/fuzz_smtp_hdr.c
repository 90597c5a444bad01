/*
 * fuzz_smtp_hdr.c - libFuzzer harness for the header section scanner and
 * the From address list parser (engine/smtp/hdr.c, from.c).
 *
 * The first octet picks the mode. Even: the rest is message content for
 * the scanner, fed whole and in input-sized pieces, which must agree on
 * the result, the octets used, the From body and the quoted line; a From
 * body it keeps then goes to the parser. Odd: the rest is a From body for
 * the parser directly. Every domain the parser hands out must be a slice
 * of its input shaped like a dot-atom or a domain literal, and parsing
 * twice must give the same answer.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 * Run:   build-fuzz/tests/fuzz/fuzz_smtp_hdr -max_total_time=60 -dict=tests/fuzz/smtp.dict
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hdr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

struct from_seen {
	const uint8_t *p;
	size_t n;
	unsigned count;
	uint32_t digest;     /* of the domains' positions, to compare two runs */
};

static void domain_seen(void *arg, const uint8_t *d, size_t len)
{
	struct from_seen *f = arg;

	CHECK(len > 0 && d >= f->p && d + len <= f->p + f->n);
	if (d[0] == '[') {
		CHECK(len >= 2 && d[len - 1] == ']');
	} else {
		CHECK(d[0] != '.' && d[len - 1] != '.');
		for (size_t i = 0; i < len; i++)
			CHECK(d[i] > ' ' && d[i] != '@' && d[i] != '<' && d[i] != '>' &&
			      d[i] != ',' && d[i] != '(' && d[i] != '"' &&
			      (d[i] != '.' || d[i + 1] != '.'));
	}
	f->count++;
	f->digest = f->digest * 31 + (uint32_t)(d - f->p) * 7 + (uint32_t)len;
}

static void parse_from(const uint8_t *p, size_t n)
{
	struct from_seen a = { .p = p, .n = n }, b = { .p = p, .n = n };
	const char *why_a = NULL, *why_b = NULL;
	int rc_a = vr_smtp_from_parse(p, n, domain_seen, &a, &why_a);
	int rc_b = vr_smtp_from_parse(p, n, domain_seen, &b, &why_b);

	CHECK(rc_a == rc_b && a.count == b.count && a.digest == b.digest);
	CHECK(rc_a == VR_OK ? a.count > 0 : why_a != NULL && why_a == why_b);
}

struct scan {
	int rc;
	size_t used;
	struct vr_smtp_hdr h;
};

static void scan(const uint8_t *in, size_t n, const uint8_t *cuts, size_t ncuts, struct scan *r)
{
	size_t fed = 0, c = 0;

	vr_smtp_hdr_init(&r->h);
	r->rc = VR_AGAIN;
	while (fed < n && r->rc == VR_AGAIN) {
		size_t k = c < ncuts ? (size_t)cuts[c++] % 61 + 1 : n - fed, used;
		k = k < n - fed ? k : n - fed;
		r->rc = vr_smtp_hdr_parse(&r->h, in + fed, k, &used);
		CHECK(used <= k);
		CHECK(r->rc != VR_AGAIN || used == k);
		fed += used;
	}
	if (r->rc == VR_AGAIN)
		r->rc = vr_smtp_hdr_finish(&r->h);
	r->used = fed;
	CHECK(r->h.from_len <= sizeof(r->h.from) && r->h.show_len <= sizeof(r->h.show));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct scan a, b;

	if (size < 1)
		return 0;
	const uint8_t *in = data + 1;
	size_t n = size - 1;

	if (data[0] & 1) {
		parse_from(in, n);
		return 0;
	}
	scan(in, n, NULL, 0, &a);
	scan(in, n, in, n, &b);
	CHECK(a.rc == b.rc && a.used == b.used && a.h.err == b.h.err);
	CHECK(a.rc != VR_AGAIN);
	CHECK(a.rc == VR_OK ? a.h.err == 0 && a.h.n_from == 1 : a.h.err != 0);
	CHECK(a.h.from_len == b.h.from_len && !memcmp(a.h.from, b.h.from, a.h.from_len));
	if (a.h.err == VR_SMTP_HDR_BAD_LINE)
		CHECK(a.h.show_len == b.h.show_len && !memcmp(a.h.show, b.h.show, a.h.show_len));
	if (a.rc == VR_OK)
		parse_from(a.h.from, a.h.from_len);
	return 0;
}
