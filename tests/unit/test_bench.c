/*
 * test_bench.c - vmrelay-bench's parts (bench/vmrelay-bench): the reply
 * parser, the EHLO keywords, message sizes and contents, the digests and
 * their sum, the latency histogram and the failure counters.
 *
 * Every reply stream is fed whole (ending against a guard page, so a read
 * past the end faults), byte by byte and split at every point; all ways
 * must give the same transcript. Messages are checked as a server would
 * see them: the wire form, dot-unstuffed, must be the stored form, of the
 * exact size asked for, with no line over 78 characters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "guard.h"

#include "hash.h"
#include "msg.h"
#include "reply.h"
#include "stats.h"

/* --- helpers --- */

/* What the parser said about a stream: "250/3:<text>|" per reply, "ERR n". */
struct transcript {
	char text[65536];
	size_t len;
};

static void tr_add(struct transcript *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(t->text + t->len, sizeof(t->text) - t->len, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(t->text) - t->len);
	t->len += (size_t)n;
}

/*
 * Parses stream the way a connection's receive buffer grows: first `first`
 * octets, then `step` more each time the parser wants more. Octets are
 * presented again after VR_AGAIN and dropped once consumed.
 */
static void parse_stream(const uint8_t *stream, size_t n, size_t first, size_t step,
			 struct transcript *t)
{
	struct vr_bench_reply_parser p = { 0 };
	size_t start = 0, avail = VR_MIN(first, n);

	t->len = 0;
	t->text[0] = '\0';
	for (;;) {
		struct vr_bench_reply r;
		size_t used = 99;
		int rc = vr_bench_reply_parse(&p, stream + start, avail - start, &used, &r);

		if (rc == VR_OK) {
			assert_true(used > 0 && used <= avail - start);
			assert_ptr_equal(r.text, stream + start);
			assert_int_equal(r.len, used);
			tr_add(t, "%u/%u:%.*s|", r.code, r.lines, (int)r.len, (const char *)r.text);
			start += used;
			continue;
		}
		if (rc == VR_ERR) {
			tr_add(t, "ERR %d at %zu", p.err, start + used);
			return;
		}
		assert_int_equal(rc, VR_AGAIN);
		assert_int_equal(used, 0);
		if (avail == n) {
			if (avail > start)
				tr_add(t, "AGAIN %zu", avail - start);
			return;
		}
		avail = VR_MIN(avail + step, n);
	}
}

/* Whole (ending against a guard page), byte by byte and in two pieces cut
 * anywhere: one transcript, returned for the caller to check. */
static const char *parse_all_ways(const char *s)
{
	static struct transcript whole, other;
	size_t n = strlen(s);
	struct guarded g = guard(s, n);

	parse_stream(g.data, n, n, n, &whole);
	parse_stream(g.data, n, 1, 1, &other);
	assert_string_equal(other.text, whole.text);
	for (size_t cut = 1; cut < n; cut++) {
		parse_stream(g.data, n, cut, n, &other);
		assert_string_equal(other.text, whole.text);
	}
	unguard(&g);
	return whole.text;
}

/* --- the reply parser --- */

static void test_reply_single(void **state)
{
	assert_string_equal(parse_all_ways("220 mx.example ESMTP\r\n"),
			    "220/1:220 mx.example ESMTP\r\n|");
	/* a bare code is a complete reply too */
	assert_string_equal(parse_all_ways("250\r\n"), "250/1:250\r\n|");
	assert_string_equal(parse_all_ways("554 \r\n"), "554/1:554 \r\n|");
}

static void test_reply_multiline(void **state)
{
	assert_string_equal(parse_all_ways("250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"),
			    "250/3:250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n|");
	/* the separator decides, not the text: "250-" with text " " continues */
	assert_string_equal(parse_all_ways("250- \r\n250\r\n"), "250/2:250- \r\n250\r\n|");
}

static void test_reply_pipelined_group(void **state)
{
	/* MAIL, two RCPTs and DATA in one segment, then part of the next */
	assert_string_equal(
		parse_all_ways("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no\r\n354 go\r\n250 2.0"),
		"250/1:250 2.1.0 Ok\r\n|250/1:250 2.1.5 Ok\r\n|550/1:550 5.1.1 no\r\n|"
		"354/1:354 go\r\n|AGAIN 7");
}

static void test_reply_incomplete(void **state)
{
	assert_string_equal(parse_all_ways(""), "");
	assert_string_equal(parse_all_ways("25"), "AGAIN 2");
	assert_string_equal(parse_all_ways("250-a\r\n"), "AGAIN 7");
	assert_string_equal(parse_all_ways("250 ok\r"), "AGAIN 7");
}

static void test_reply_bad_code(void **state)
{
	char want[32];

	snprintf(want, sizeof(want), "ERR %d at 1", VR_BENCH_REPLY_BAD_CODE);
	assert_string_equal(parse_all_ways("600 no\r\n"), want);
	assert_string_equal(parse_all_ways("199 no\r\n"), "ERR 1 at 1");
	assert_string_equal(parse_all_ways("2x0 no\r\n"), "ERR 1 at 2");
	assert_string_equal(parse_all_ways("25\r\n"), "ERR 1 at 3");
	assert_string_equal(parse_all_ways("HTTP/1.1 400\r\n"), "ERR 1 at 1");
	/* a fault in the second reply leaves the first one parsed */
	assert_string_equal(parse_all_ways("250 ok\r\nx\r\n"), "250/1:250 ok\r\n|ERR 1 at 9");
}

static void test_reply_bad_separator(void **state)
{
	char want[32];

	snprintf(want, sizeof(want), "ERR %d at 4", VR_BENCH_REPLY_BAD_SEP);
	assert_string_equal(parse_all_ways("250x\r\n"), want);
	assert_string_equal(parse_all_ways("250\tok\r\n"), want);
}

static void test_reply_mismatch(void **state)
{
	char want[32];

	snprintf(want, sizeof(want), "ERR %d at 10", VR_BENCH_REPLY_MISMATCH);
	assert_string_equal(parse_all_ways("250-a\r\n251 b\r\n"), want);
}

static void test_reply_line_ends(void **state)
{
	char want[32];

	snprintf(want, sizeof(want), "ERR %d at 7", VR_BENCH_REPLY_BARE_LF);
	assert_string_equal(parse_all_ways("250 ok\n"), want);
	snprintf(want, sizeof(want), "ERR %d at 4", VR_BENCH_REPLY_BARE_LF);
	assert_string_equal(parse_all_ways("250\n"), want);
	snprintf(want, sizeof(want), "ERR %d at 8", VR_BENCH_REPLY_BARE_CR);
	assert_string_equal(parse_all_ways("250 ok\rx\n"), want);
}

static void test_reply_long_line(void **state)
{
	char line[VR_BENCH_REPLY_LINE_MAX + 8];

	/* 512 octets with CRLF: the longest line allowed */
	memset(line, 'a', sizeof(line));
	memcpy(line, "250 ", 4);
	memcpy(line + VR_BENCH_REPLY_LINE_MAX - 2, "\r\n", 3);
	assert_int_equal(strncmp(parse_all_ways(line), "250/1:", 6), 0);
	/* one more octet: refused at octet 513, before the line ends */
	memset(line, 'a', sizeof(line));
	memcpy(line, "250 ", 4);
	memcpy(line + VR_BENCH_REPLY_LINE_MAX - 1, "\r\n", 3);
	char want[32];
	snprintf(want, sizeof(want), "ERR %d at %d", VR_BENCH_REPLY_LONG_LINE,
		 VR_BENCH_REPLY_LINE_MAX + 1);
	assert_string_equal(parse_all_ways(line), want);
}

static void test_reply_long_reply(void **state)
{
	/* continuation lines without end: refused at octet 16385 */
	size_t n = (VR_BENCH_REPLY_MAX / 10 + 10) * 10;
	char *s = malloc(n + 1);
	struct transcript *t = malloc(sizeof(*t));
	assert_non_null(s);
	assert_non_null(t);
	for (size_t i = 0; i < n; i += 10)
		memcpy(s + i, "250-abcd\r\n", 10);
	s[n] = '\0';
	parse_stream((const uint8_t *)s, n, n, n, t);
	char want[32];
	snprintf(want, sizeof(want), "ERR %d at %d", VR_BENCH_REPLY_LONG, VR_BENCH_REPLY_MAX + 1);
	assert_string_equal(t->text, want);
	parse_stream((const uint8_t *)s, n, 1000, 1000, t);
	assert_string_equal(t->text, want);
	free(s);
	free(t);
}

static void test_reply_strerror(void **state)
{
	assert_string_equal(vr_bench_reply_strerror(VR_BENCH_REPLY_MISMATCH),
			    "reply lines with different codes");
	assert_string_equal(vr_bench_reply_strerror(0), "no error");
	assert_string_equal(vr_bench_reply_strerror(99), "no error");
}

static struct vr_bench_reply parse_one(const char *s)
{
	struct vr_bench_reply_parser p = { 0 };
	struct vr_bench_reply r;
	size_t used;

	assert_int_equal(vr_bench_reply_parse(&p, (const uint8_t *)s, strlen(s), &used, &r), VR_OK);
	return r;
}

static void test_reply_lines(void **state)
{
	struct vr_bench_reply r = parse_one("250-first line\r\n250-\r\n250\r\n");
	const uint8_t *t;
	size_t len;

	assert_true(vr_bench_reply_line(&r, 0, &t, &len));
	assert_int_equal(len, 10);
	assert_memory_equal(t, "first line", 10);
	assert_true(vr_bench_reply_line(&r, 1, &t, &len));
	assert_int_equal(len, 0);
	assert_true(vr_bench_reply_line(&r, 2, &t, &len));
	assert_int_equal(len, 0);
	assert_false(vr_bench_reply_line(&r, 3, &t, &len));
}

static void ehlo_of(const char *s, struct vr_bench_ehlo *e)
{
	struct vr_bench_reply r = parse_one(s);
	vr_bench_ehlo_parse(&r, e);
}

static void test_ehlo_keywords(void **state)
{
	struct vr_bench_ehlo e;

	ehlo_of("250-mx.example greets you\r\n250-pipelining\r\n250-SIZE 10240000\r\n"
		"250-Chunking\r\n250-AUTH PLAIN\r\n250-PIPELININGX\r\n250 8BITMIME\r\n", &e);
	assert_int_equal(e.ext, VR_BENCH_EXT_PIPELINING | VR_BENCH_EXT_SIZE |
			 VR_BENCH_EXT_CHUNKING | VR_BENCH_EXT_8BITMIME);
	assert_int_equal(e.size, 10240000);

	/* the greeting line is no keyword; SIZE alone means no stated limit */
	ehlo_of("250-STARTTLS\r\n250 SIZE\r\n", &e);
	assert_int_equal(e.ext, VR_BENCH_EXT_SIZE);
	assert_int_equal(e.size, 0);

	/* a limit past 2^64 saturates instead of wrapping */
	ehlo_of("250-x\r\n250 SIZE 99999999999999999999999\r\n", &e);
	assert_true(e.size == UINT64_MAX);

	ehlo_of("250 mx.example\r\n", &e);
	assert_int_equal(e.ext, 0);
}

/* --- sizes --- */

static void sizes_ok(const char *spec, struct vr_bench_sizes *s)
{
	char err[256] = "";
	int rc = vr_bench_sizes_parse(s, spec, err, sizeof(err));
	if (rc != 0)
		fail_msg("'%s': %s", spec, err);
}

static void sizes_bad(const char *spec, const char *why)
{
	struct vr_bench_sizes s;
	char err[256] = "";

	assert_int_equal(vr_bench_sizes_parse(&s, spec, err, sizeof(err)), -1);
	if (!strstr(err, why))
		fail_msg("'%s': error '%s' does not say '%s'", spec, err, why);
	assert_non_null(strstr(err, spec));
}

static void test_sizes_fixed(void **state)
{
	struct vr_bench_sizes s;
	uint64_t rng = 1;

	sizes_ok("6000", &s);
	assert_int_equal(s.kind, VR_BENCH_SIZE_FIXED);
	assert_int_equal(vr_bench_sizes_draw(&s, &rng), 6000);
	sizes_ok("10k", &s);
	assert_int_equal(vr_bench_sizes_draw(&s, &rng), 10240);
	sizes_ok("1M", &s);
	assert_int_equal(vr_bench_sizes_draw(&s, &rng), 1048576);
	sizes_ok("256", &s);
	sizes_ok("256m", &s);
}

static void test_sizes_errors(void **state)
{
	sizes_bad("", "no size");
	sizes_bad("abc", "no size");
	sizes_bad("6000x", "no size");
	sizes_bad("-5", "no size");
	sizes_bad("255", "from 256 to");
	sizes_bad("257m", "from 256 to");
	sizes_bad("99999999999999999999999", "no size");
	sizes_bad("1m..1k", "ends below");
	sizes_bad("1k..", "LO..HI");
	sizes_bad("1k..1m:normal", "uniform or lognormal");
	sizes_bad("1k..100", "from 256 to");
	sizes_bad("4k:0", "weights above 0");
	sizes_bad("4k:70,", "SIZE:WEIGHT");
	sizes_bad("4k:x", "SIZE:WEIGHT");
	sizes_bad("4k:70,1m", "SIZE:WEIGHT");
	sizes_bad("4k:nan", "SIZE:WEIGHT");
	sizes_bad("4k:70,10:30", "from 256 to");
}

static void test_sizes_uniform(void **state)
{
	struct vr_bench_sizes s;
	uint64_t rng = 7, lo = UINT64_MAX, hi = 0;

	sizes_ok("1k..2k", &s);
	assert_int_equal(s.kind, VR_BENCH_SIZE_UNIFORM);
	for (int i = 0; i < 100000; i++) {
		uint64_t v = vr_bench_sizes_draw(&s, &rng);
		lo = VR_MIN(lo, v);
		hi = VR_MAX(hi, v);
	}
	/* both ends are reached, nothing beyond */
	assert_int_equal(lo, 1024);
	assert_int_equal(hi, 2048);
	sizes_ok("1k..2k:uniform", &s);
	assert_int_equal(s.kind, VR_BENCH_SIZE_UNIFORM);
	sizes_ok("4k..4k", &s);
	assert_int_equal(vr_bench_sizes_draw(&s, &rng), 4096);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void test_sizes_lognormal(void **state)
{
	enum { N = 20001 };
	struct vr_bench_sizes s;
	uint64_t rng = 3, *v = malloc(N * sizeof(*v));

	assert_non_null(v);
	sizes_ok("1k..1m:lognormal", &s);
	assert_int_equal(s.kind, VR_BENCH_SIZE_LOGNORMAL);
	for (int i = 0; i < N; i++) {
		v[i] = vr_bench_sizes_draw(&s, &rng);
		assert_true(v[i] >= 1024 && v[i] <= 1048576);
	}
	qsort(v, N, sizeof(*v), cmp_u64);
	/* median sqrt(1k * 1m) = 32 KiB; the quartiles at -/+0.674 sigma,
	 * sigma = ln(1024) / 6: 14.7 KiB and 69.7 KiB */
	assert_in_range(v[N / 2], 31000, 34500);
	assert_in_range(v[N / 4], 14300, 15800);
	assert_in_range(v[3 * N / 4], 67500, 75000);
	free(v);
}

static void test_sizes_table(void **state)
{
	struct vr_bench_sizes s;
	uint64_t rng = 5;
	unsigned n4 = 0, n64 = 0, n1m = 0;

	sizes_ok("4k:70,64k:25,1m:5", &s);
	assert_int_equal(s.kind, VR_BENCH_SIZE_TABLE);
	assert_int_equal(s.lo, 4096);
	assert_int_equal(s.hi, 1048576);
	for (int i = 0; i < 100000; i++) {
		uint64_t v = vr_bench_sizes_draw(&s, &rng);
		n4 += v == 4096;
		n64 += v == 65536;
		n1m += v == 1048576;
	}
	assert_int_equal(n4 + n64 + n1m, 100000);
	assert_in_range(n4, 69000, 71000);
	assert_in_range(n64, 24200, 25800);
	assert_in_range(n1m, 4600, 5400);
	/* one entry; fractional weights */
	sizes_ok("8k:1", &s);
	assert_int_equal(vr_bench_sizes_draw(&s, &rng), 8192);
	sizes_ok("1k:0.5,2k:1.5", &s);
	assert_true(s.cum[0] > 0.24 && s.cum[0] < 0.26);
}

/* --- messages --- */

/* Concatenates iovecs. */
static size_t flatten(const struct iovec *iov, unsigned n, uint8_t *out, size_t cap)
{
	size_t len = 0;
	for (unsigned i = 0; i < n; i++) {
		assert_true(len + iov[i].iov_len <= cap);
		memcpy(out + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	return len;
}

/* DATA's content as a server stores it: dot-unstuffed, without ".CRLF";
 * fails the test if the end marker is missing or not at the end. */
static size_t unstuff(const uint8_t *w, size_t n, uint8_t *out)
{
	size_t i = 0, o = 0;

	while (i < n) {
		const uint8_t *lf = memchr(w + i, '\n', n - i);
		assert_non_null(lf);
		size_t end = (size_t)(lf - w) + 1;
		assert_true(end - i >= 2 && w[end - 2] == '\r');
		if (end - i == 3 && w[i] == '.') {
			assert_int_equal(end, n);   /* ".CRLF" ends it, and nothing follows */
			return o;
		}
		size_t skip = w[i] == '.';
		memcpy(out + o, w + i + skip, end - i - skip);
		o += end - i - skip;
		i = end;
	}
	fail_msg("no .CRLF at the end of the message");
	return 0;
}

static void test_msg_exact_and_stuffed(void **state)
{
	static const char *rcpts[] = { "a@example.net", "b+2@example.net" };
	struct vr_bench_msg_params p = { "bench@bench.example", rcpts, 2, "run1" };
	struct vr_bench_pad pad;
	struct vr_bench_msg m;
	size_t cap = 3 << 20;
	uint8_t *wire = malloc(cap), *raw = malloc(cap), *un = malloc(cap);
	static const uint64_t big[] = { 1024, 1025, 1026, 10240, 102400, 1048576, 1048576 + 1 };

	assert_non_null(wire);
	assert_non_null(raw);
	assert_non_null(un);
	assert_int_equal(vr_bench_pad_init(&pad, 1048576 + 1), 0);
	vr_bench_msg_init(&m);
	for (size_t k = 0; k < 500 + VR_ARRAY_SIZE(big); k++) {
		uint64_t size = k < 500 ? 256 + k : big[k - 500];
		struct iovec iov[VR_BENCH_MSG_IOV];

		assert_int_equal(vr_bench_msg_make(&m, &p, k + 1, size), 0);
		size_t hl = vr_buf_len(&m.head);
		/* exact unless the headers alone are longer; 1 more only when the
		 * body would have to end in a lone octet */
		if (size >= hl + 2 || size == hl)
			assert_int_equal(m.size, VR_MAX(size, hl));
		else
			assert_int_equal(m.size, size > hl ? size + 1 : hl);

		unsigned n = vr_bench_msg_iov(&m, &pad, false, iov);
		size_t rl = flatten(iov, n, raw, cap);
		assert_int_equal(rl, m.size);
		n = vr_bench_msg_iov(&m, &pad, true, iov);
		size_t wl = flatten(iov, n, wire, cap);
		size_t ul = unstuff(wire, wl, un);
		assert_int_equal(ul, rl);
		assert_memory_equal(un, raw, rl);

		/* every line ends in CRLF, none is over 78 characters, and the body
		 * of a message of 1 KiB or more has lines starting with "." */
		bool dot = false, body = false;
		for (size_t i = 0; i < rl;) {
			const uint8_t *lf = memchr(raw + i, '\n', rl - i);
			assert_non_null(lf);
			size_t end = (size_t)(lf - raw) + 1;
			assert_true(end - i >= 2 && raw[end - 2] == '\r');
			assert_true(end - i - 2 <= 78);
			assert_null(memchr(raw + i, '\r', end - i - 2));
			dot |= body && raw[i] == '.';
			body |= end - i == 2;
			i = end;
		}
		if (size >= 1024)
			assert_true(dot);
		assert_true(body);
	}
	/* the headers name both recipients and carry the sequence number */
	assert_int_equal(vr_bench_msg_make(&m, &p, 42, 6000), 0);
	char *h = strndup((const char *)vr_buf_head(&m.head), vr_buf_len(&m.head));
	assert_non_null(strstr(h, "From: <bench@bench.example>\r\n"));
	assert_non_null(strstr(h, "To: <a@example.net>,\r\n <b+2@example.net>\r\n"));
	assert_non_null(strstr(h, "Subject: vmrelay-bench message 42\r\n"));
	assert_non_null(strstr(h, "Message-ID: <42.run1@bench.example>\r\n"));
	assert_non_null(strstr(h, "\r\nDate: "));
	assert_int_equal(strcmp(h + strlen(h) - 4, "\r\n\r\n"), 0);
	free(h);
	vr_bench_msg_free(&m);
	vr_bench_pad_free(&pad);
	free(wire);
	free(raw);
	free(un);
}

/* --- digests --- */

static void sum_of(enum vr_bench_hash_alg alg, const char *const *msgs, size_t n, char *hex)
{
	struct vr_bench_hash *h = vr_bench_hash_new(alg);
	struct vr_bench_hash_sum s;

	assert_non_null(h);
	vr_bench_hash_sum_init(&s, alg);
	for (size_t i = 0; i < n; i++) {
		vr_bench_hash_begin(h);
		/* in two updates: the digest is of the whole, however fed */
		size_t len = strlen(msgs[i]);
		vr_bench_hash_update(h, msgs[i], len / 2);
		vr_bench_hash_update(h, msgs[i] + len / 2, len - len / 2);
		vr_bench_hash_end(h, &s);
	}
	assert_int_equal(s.messages, n);
	vr_bench_hash_sum_hex(&s, hex);
	vr_bench_hash_free(h);
}

static void test_hash_sums(void **state)
{
	static const char *abc[] = { "abc" }, *two[] = { "abc", "" }, *owt[] = { "", "abc" };
	char hex[2 * VR_BENCH_DIGEST_MAX + 1];

	/* values from Python's hashlib and xxhash */
	sum_of(VR_BENCH_HASH_SHA256, abc, 1, hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	/* the sum carries across bytes and wraps at 2^256; order does not matter */
	sum_of(VR_BENCH_HASH_SHA256, two, 2, hex);
	assert_string_equal(hex, "9e28db0227fdebfedc3d35a6f71ddb47d7b1a387fab30de958a6987d6a52ce02");
	sum_of(VR_BENCH_HASH_SHA256, owt, 2, hex);
	assert_string_equal(hex, "9e28db0227fdebfedc3d35a6f71ddb47d7b1a387fab30de958a6987d6a52ce02");
	sum_of(VR_BENCH_HASH_XXH3, abc, 1, hex);
	assert_string_equal(hex, "78af5f94892f3950");
	sum_of(VR_BENCH_HASH_XXH3, owt, 2, hex);
	assert_string_equal(hex, "a5b5df99c202ce12");
	sum_of(VR_BENCH_HASH_XXH3, abc, 0, hex);
	assert_string_equal(hex, "0000000000000000");

	assert_int_equal(vr_bench_hash_alg_parse("sha256"), VR_BENCH_HASH_SHA256);
	assert_int_equal(vr_bench_hash_alg_parse("xxh3"), VR_BENCH_HASH_XXH3);
	assert_int_equal(vr_bench_hash_alg_parse("md5"), -1);
	assert_string_equal(vr_bench_hash_alg_name(VR_BENCH_HASH_NONE), "none");
}

/* --- histogram, counters --- */

static void test_hist_quantiles(void **state)
{
	static struct vr_bench_hist h;

	memset(&h, 0, sizeof(h));
	assert_int_equal(vr_bench_hist_quantile(&h, 0.5), 0);
	/* exact below 128 */
	for (uint64_t v = 1; v <= 100; v++)
		vr_bench_hist_add(&h, v);
	assert_int_equal(vr_bench_hist_quantile(&h, 0.5), 50);
	assert_int_equal(vr_bench_hist_quantile(&h, 0.99), 99);
	assert_int_equal(vr_bench_hist_quantile(&h, 1.0), 100);
	assert_int_equal(vr_bench_hist_quantile(&h, 0.0), 1);

	/* 1 us .. 1 s in 1 us steps: within 1.6% above the true value */
	memset(&h, 0, sizeof(h));
	for (uint64_t v = 1000; v <= 1000000000; v += 1000)
		vr_bench_hist_add(&h, v);
	uint64_t p50 = vr_bench_hist_quantile(&h, 0.5), p99 = vr_bench_hist_quantile(&h, 0.99);
	uint64_t p999 = vr_bench_hist_quantile(&h, 0.999);
	assert_in_range(p50, 500000000, 508000000);
	assert_in_range(p99, 990000000, 1000000000);
	assert_in_range(p999, 999000000, 1000000000);
	/* never above the largest sample */
	assert_int_equal(vr_bench_hist_quantile(&h, 1.0), 1000000000);
	assert_int_equal(h.max, 1000000000);
	assert_int_equal(h.count, 1000000);

	/* one slow outlier in a thousand shows at p99.9, not at p99 */
	memset(&h, 0, sizeof(h));
	for (int i = 0; i < 999; i++)
		vr_bench_hist_add(&h, 1000000);
	vr_bench_hist_add(&h, 2000000000);
	assert_in_range(vr_bench_hist_quantile(&h, 0.99), 1000000, 1016000);
	assert_in_range(vr_bench_hist_quantile(&h, 0.9999), 1960000000, 2000000000);

	/* the largest values land in the last bucket */
	vr_bench_hist_add(&h, UINT64_MAX);
	assert_true(vr_bench_hist_quantile(&h, 1.0) == UINT64_MAX);
}

static void test_counts(void **state)
{
	static struct vr_bench_counts c;

	memset(&c, 0, sizeof(c));
	vr_bench_count(&c, "DATA 451");
	vr_bench_countf(&c, "RCPT %u", 550);
	vr_bench_count(&c, "DATA 451");
	assert_int_equal(c.n, 2);
	assert_string_equal(c.e[0].key, "DATA 451");
	assert_int_equal(c.e[0].n, 2);
	assert_string_equal(c.e[1].key, "RCPT 550");
	assert_int_equal(c.total, 3);

	/* past the table's size, new keys go to "other"; known ones still count */
	for (int i = 0; i < 100; i++)
		vr_bench_countf(&c, "key %d", i);
	vr_bench_count(&c, "RCPT 550");
	assert_int_equal(c.n, VR_BENCH_KEYS);
	assert_string_equal(c.e[VR_BENCH_KEYS - 1].key, "other");
	assert_int_equal(c.e[VR_BENCH_KEYS - 1].n, 100 - (VR_BENCH_KEYS - 3));
	assert_int_equal(c.e[1].n, 2);
	assert_int_equal(c.total, 104);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_single),
		cmocka_unit_test(test_reply_multiline),
		cmocka_unit_test(test_reply_pipelined_group),
		cmocka_unit_test(test_reply_incomplete),
		cmocka_unit_test(test_reply_bad_code),
		cmocka_unit_test(test_reply_bad_separator),
		cmocka_unit_test(test_reply_mismatch),
		cmocka_unit_test(test_reply_line_ends),
		cmocka_unit_test(test_reply_long_line),
		cmocka_unit_test(test_reply_long_reply),
		cmocka_unit_test(test_reply_strerror),
		cmocka_unit_test(test_reply_lines),
		cmocka_unit_test(test_ehlo_keywords),
		cmocka_unit_test(test_sizes_fixed),
		cmocka_unit_test(test_sizes_errors),
		cmocka_unit_test(test_sizes_uniform),
		cmocka_unit_test(test_sizes_lognormal),
		cmocka_unit_test(test_sizes_table),
		cmocka_unit_test(test_msg_exact_and_stuffed),
		cmocka_unit_test(test_hash_sums),
		cmocka_unit_test(test_hist_quantiles),
		cmocka_unit_test(test_counts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
