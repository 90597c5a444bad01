/*
 * fuzz_ctl_http.c - libFuzzer harness for the metrics endpoint's HTTP
 * request parser (engine/ctl/http.c), which reads whatever the network
 * sends.
 *
 * The input is a request head. It is parsed whole and in pieces whose sizes
 * come from the input itself, and both must give the same result, status
 * and request: the parser may not depend on where segments end. It may
 * never claim more octets than it was given, finish without a status, or
 * report a target longer than the request line allows.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 * Run:   build-fuzz/tests/fuzz/fuzz_ctl_http -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "vmrelay/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static int feed(struct vr_http_req *r, const uint8_t *p, size_t n, const uint8_t *steps,
		size_t nsteps)
{
	size_t off = 0, used, k = 0;
	int rc = VR_AGAIN;

	vr_http_init(r);
	while (off < n && rc == VR_AGAIN) {
		size_t step = nsteps ? (size_t)steps[k++ % nsteps] % 17 + 1 : n - off;
		if (step > n - off)
			step = n - off;
		rc = vr_http_parse(r, p + off, step, &used);
		CHECK(used <= step);
		CHECK(rc != VR_AGAIN || used == step);
		off += used;
	}
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vr_http_req whole, split;
	/* the first octets choose the piece sizes; the rest is the request */
	size_t nsteps = size ? data[0] % 8 : 0;

	if (size < 1 + nsteps)
		return 0;
	const uint8_t *steps = data + 1, *req = data + 1 + nsteps;
	size_t n = size - 1 - nsteps;

	int a = feed(&whole, req, n, NULL, 0);
	int b = feed(&split, req, n, steps, nsteps ? nsteps : 1);
	CHECK(a == b);
	CHECK(whole.status == split.status);
	CHECK(a == VR_AGAIN ? whole.status == 0 : whole.status >= 200);
	CHECK(whole.tlen < VR_HTTP_LINE_MAX && whole.tlen == split.tlen);
	CHECK(memcmp(whole.target, split.target, whole.tlen) == 0);
	if (a == VR_OK) {
		CHECK(whole.status == 200 && whole.tlen > 0 && whole.target[0] == '/');
		CHECK(whole.head_only == split.head_only);
	}
	return 0;
}
