/*
 * fuzz_smtp_parse.c - libFuzzer harness for the SMTP command line parser
 * and the envelope syntax (engine/smtp/parse.c, addr.c).
 *
 * The input is a client's command stream. It is parsed twice, whole and in
 * pieces whose sizes come from the input itself, and both must give the
 * same sequence of results: the incremental parser may not depend on where
 * segments end. Every complete line's argument also goes through the MAIL,
 * RCPT and EHLO parsers, whose results must point inside the argument.
 * The caller never keeps more than one line's worth of octets.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 * Run:   build-fuzz/tests/fuzz/fuzz_smtp_parse -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static void check_slice(const uint8_t *p, size_t n, const uint8_t *q, size_t m)
{
	CHECK(m == 0 || (q >= p && q + m <= p + n));
}

static void check_args(const uint8_t *arg, size_t n)
{
	struct vr_smtp_envcmd e;

	if (vr_smtp_mail_parse(arg, n, &e) == VR_SMTP_ADDR_OK) {
		check_slice(arg, n, e.addr, e.addr_len);
		CHECK(e.addr_len + 2 <= VR_SMTP_PATH_MAX);
		CHECK(!e.utf8 || e.smtputf8);
	} else if (e.bad_len) {
		check_slice(arg, n, e.bad, e.bad_len);
	}
	for (int u = 0; u < 2; u++)
		if (vr_smtp_rcpt_parse(arg, n, u, &e) == VR_SMTP_ADDR_OK) {
			check_slice(arg, n, e.addr, e.addr_len);
			CHECK(e.addr_len > 0 && memchr(e.addr, '@', e.addr_len));
			CHECK(u || !e.utf8);
		}
	(void)vr_smtp_helo_valid(arg, n);
}

/* A running digest of the results, to compare two runs. */
static uint64_t mix(uint64_t h, uint64_t v)
{
	return (h ^ v) * 0x100000001b3ull;
}

static uint64_t run(const uint8_t *data, size_t size, const uint8_t *cuts, size_t ncuts,
		    bool args)
{
	struct vr_smtp_line l = { 0 };
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
			struct vr_smtp_cmdline cl;
			size_t used;
			int rc = vr_smtp_line_parse(&l, kept, have, &used, &cl);
			CHECK(used <= have);
			/* how often VR_AGAIN comes depends on the cuts: not mixed in */
			if (rc != VR_AGAIN)
				h = mix(h, (uint64_t)(rc + 2));
			if (rc == VR_OK) {
				check_slice(kept, have, cl.verb, cl.verb_len);
				check_slice(kept, have, cl.arg, cl.arg_len);
				CHECK(cl.text_len + 2 == used && cl.text_len < VR_SMTP_LINE_MAX);
				CHECK(!memchr(cl.text, '\r', cl.text_len) && !memchr(cl.text, '\n', cl.text_len));
				for (size_t i = 0; i < cl.verb_len; i++)
					h = mix(h, cl.verb[i]);
				for (size_t i = 0; i < cl.arg_len; i++)
					h = mix(h, cl.arg[i]);
				if (args)
					check_args(cl.arg, cl.arg_len);
			} else if (rc == VR_ERR) {
				h = mix(h, l.err);
			}
			memmove(kept, kept + used, have - used);
			have -= used;
			if (rc == VR_AGAIN)
				break;
			if (rc == VR_ERR && l.err >= VR_SMTP_LINE_BARE_LF) {
				free(kept);
				return h;
			}
		}
		CHECK(have <= VR_SMTP_LINE_MAX);
	}
	free(kept);
	return mix(h, have);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The split sizes are the input's own octets: any position can be a
	 * cut without a separate fuzzer dimension. */
	uint64_t whole = run(data, size, NULL, 0, true);
	uint64_t split = run(data, size, data, size, false);

	CHECK(whole == split);
	return 0;
}
