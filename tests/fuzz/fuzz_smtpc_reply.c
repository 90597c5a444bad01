/*
 * fuzz_smtpc_reply.c - libFuzzer harness for the outbound client's reply
 * parser (engine/delivery/smtpc_reply.c): what a remote MX sends us.
 *
 * The first byte says whether ENHANCEDSTATUSCODES is on; the rest is the
 * server's stream. It is parsed twice, whole and in pieces whose sizes come
 * from the input itself, the way vr_smtpc keeps a buffer and presents it
 * again with more bytes, and both runs must see the same replies and the
 * same fault: the parser may not depend on where segments end. Every reply
 * must have a code of 200-599 on every line, slices inside the reply, an
 * enhanced code of the reply's class, and a copied text within bounds.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 * Run:   build-fuzz/tests/fuzz/fuzz_smtpc_reply -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpc_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static uint64_t mix(uint64_t h, uint64_t v)
{
	return (h ^ v) * 0x100000001b3ull;
}

static uint64_t check_reply(const struct vr_smtpc_rp *p, const uint8_t *buf, size_t used,
			    uint64_t h)
{
	struct vr_smtpc_reply r;

	CHECK(p->code >= 200 && p->code <= 599 && p->n_lines >= 1);
	CHECK(p->n_lines <= VR_SMTPC_LINES_MAX && used >= 4);
	for (unsigned i = 0; i < p->n_lines; i++) {
		CHECK(p->line[i].off + p->line[i].len < used);
		CHECK(!memchr(buf + p->line[i].off, '\n', p->line[i].len));
		h = mix(h, p->line[i].len);
	}
	CHECK(buf[used - 1] == '\n');
	if (p->enh[0])
		CHECK(p->enhanced && p->enh[0] == (char)('0' + p->code / 100));
	vr_smtpc_rp_copy(p, buf, &r);
	CHECK(strlen(r.text) < sizeof(r.text) && r.code == p->code && !r.local);
	for (const char *t = r.text; *t; t++)
		CHECK((unsigned char)*t >= 0x20 && *t != 0x7f);
	return mix(mix(h, p->code), used);
}

/* Runs the stream; chunk sizes from sizes[] (cycled), or all at once. */
static uint64_t run(const uint8_t *in, size_t n, bool enhanced, const uint8_t *sizes,
		    size_t n_sizes)
{
	struct vr_smtpc_rp p;
	size_t start = 0, have = 0, k = 0, used;
	uint64_t h = 0;

	vr_smtpc_rp_init(&p, enhanced);
	while (start < n) {
		size_t step = n_sizes ? (size_t)sizes[k++ % n_sizes] + 1 : n;
		have = VR_MIN(n - start, have + step);
		int rc = vr_smtpc_rp_parse(&p, in + start, have, &used);
		if (rc == VR_ERR)
			return mix(h, 0xbad);
		if (rc == VR_AGAIN) {
			CHECK(used == 0);
			if (have == n - start)
				return mix(h, 0xa9a1);
			continue;
		}
		CHECK(used <= have);
		h = check_reply(&p, in + start, used, h);
		start += used;
		have -= used;
		vr_smtpc_rp_init(&p, enhanced);
	}
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool enhanced = data[0] & 1;
	/* The chunk sizes are the stream's own first bytes: cheap, and the
	 * fuzzer learns to vary them. */
	size_t n_sizes = VR_MIN(size - 1, (size_t)8);

	CHECK(run(data + 1, size - 1, enhanced, NULL, 0) ==
	      run(data + 1, size - 1, enhanced, data + 1, n_sizes));
	return 0;
}
