/*
 * fuzz_bench_reply.c - libFuzzer harness for vmrelay-bench's SMTP reply
 * parser and its EHLO keyword scan (bench/vmrelay-bench/reply.c): what a
 * server under test sends back.
 *
 * The input is a server's reply stream. It is parsed twice, whole and in
 * pieces whose sizes come from the input itself, and both must give the
 * same sequence of replies and faults: the parser may not depend on where
 * segments end. Every reply must lie inside the buffer, be at most the
 * reply limit, have a code from 200 to 599 and lines that each hold one
 * CRLF; its lines and EHLO keywords are walked too.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 * Run:   build-fuzz/tests/fuzz/fuzz_bench_reply -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static uint64_t mix(uint64_t h, uint64_t v)
{
	return (h ^ v) * 0x100000001b3ull;
}

static uint64_t check_reply(const struct vr_bench_reply *r, const uint8_t *buf, size_t have,
			    uint64_t h)
{
	const uint8_t *t;
	size_t len, total = 0;
	unsigned i;
	struct vr_bench_ehlo e;

	CHECK(r->text == buf && r->len <= have && r->len <= VR_BENCH_REPLY_MAX);
	CHECK(r->code >= 200 && r->code <= 599 && r->lines >= 1);
	CHECK(r->text[r->len - 2] == '\r' && r->text[r->len - 1] == '\n');
	for (i = 0; vr_bench_reply_line(r, i, &t, &len); i++) {
		CHECK(t >= r->text && t + len <= r->text + r->len);
		CHECK(!memchr(t, '\r', len) && !memchr(t, '\n', len));
		total += len;
	}
	CHECK(i == r->lines && total < r->len);
	vr_bench_ehlo_parse(r, &e);
	return mix(mix(mix(h, r->code), r->len), e.ext);
}

static uint64_t run(const uint8_t *data, size_t size, const uint8_t *cuts, size_t ncuts)
{
	struct vr_bench_reply_parser p = { 0 };
	uint8_t *kept = malloc(size + 1);
	size_t have = 0, fed = 0, c = 0;
	uint64_t h = 0xcbf29ce484222325ull;

	while (fed < size) {
		size_t k = c < ncuts ? (size_t)cuts[c++] % 64 + 1 : size - fed;
		k = k < size - fed ? k : size - fed;
		memcpy(kept + have, data + fed, k);
		have += k;
		fed += k;
		for (;;) {
			struct vr_bench_reply r;
			size_t used;
			int rc = vr_bench_reply_parse(&p, kept, have, &used, &r);
			CHECK(used <= have);
			if (rc == VR_AGAIN) {
				CHECK(used == 0);
				break;
			}
			if (rc == VR_ERR) {
				/* the client closes the connection here */
				CHECK(p.err >= VR_BENCH_REPLY_BAD_CODE && p.err <= VR_BENCH_REPLY_BARE_CR);
				free(kept);
				return mix(mix(h, p.err), fed - have + used);
			}
			h = check_reply(&r, kept, have, h);
			memmove(kept, kept + used, have - used);
			have -= used;
		}
		/* the parser never needs more than one reply's worth kept */
		CHECK(have <= VR_BENCH_REPLY_MAX);
	}
	free(kept);
	return mix(h, have);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The split sizes are the input's own octets, as in fuzz_smtp_parse. */
	CHECK(run(data, size, NULL, 0) == run(data, size, data, size));
	return 0;
}
