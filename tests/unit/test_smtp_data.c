/*
 * test_smtp_data.c - the DATA/BDAT content decoder (engine/smtp/data.c).
 *
 * Each input is fed whole, byte by byte and split at every point; the
 * stored content, the result, the octets used and the flags must not
 * depend on how the input was cut.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "vmrelay/buf.h"

#include "data.h"

struct sink {
	struct vr_buf out;
	size_t fail_after;     /* octets accepted before the sink fails; 0 = never */
};

static int sink_write(void *arg, const void *p, size_t n)
{
	struct sink *k = arg;

	if (k->fail_after && vr_buf_len(&k->out) + n > k->fail_after)
		return -ENOMEM;
	return vr_buf_append(&k->out, p, n);
}

struct result {
	int rc;                /* of the last call */
	size_t used;           /* total octets used */
	unsigned flags;
	int err;
	char out[4096];
	size_t out_len;
};

struct opts {
	bool dot;
	uint64_t max;
	size_t fail_after;
};

/* Feeds in[] in pieces starting at cuts[] until the decoder stops. */
static void decode(const struct opts *o, const uint8_t *in, size_t n, const size_t *cuts,
		   size_t ncuts, struct result *r)
{
	struct vr_smtp_data d;
	struct sink k = { .fail_after = o->fail_after };
	size_t fed = 0;

	vr_buf_init(&k.out, 0);
	vr_smtp_data_init(&d, o->dot, o->max ? o->max : UINT64_MAX, sink_write, &k);
	memset(r, 0, sizeof(*r));
	r->rc = VR_AGAIN;
	for (size_t c = 0; c <= ncuts && r->rc == VR_AGAIN; c++) {
		size_t end = c < ncuts ? cuts[c] : n, used = 0;
		r->rc = vr_smtp_data_parse(&d, in + fed, end - fed, &used);
		assert_true(used <= end - fed);
		if (r->rc == VR_AGAIN)
			assert_int_equal(used, end - fed);
		fed += used;
	}
	r->used = fed;
	r->flags = d.flags;
	r->err = d.err;
	assert_true(vr_buf_len(&k.out) < sizeof(r->out));
	if (vr_buf_len(&k.out))
		memcpy(r->out, vr_buf_head(&k.out), vr_buf_len(&k.out));
	r->out_len = vr_buf_len(&k.out);
	assert_int_equal(d.size >= r->out_len, true);
	vr_buf_free(&k.out);
}

/* What was stored of a refused message depends on the cuts, and does not
 * matter: it is aborted. */
static void same(const struct result *a, const struct result *b)
{
	assert_int_equal(a->rc, b->rc);
	assert_int_equal(a->used, b->used);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->err, b->err);
	if (a->rc == VR_ERR || a->flags)
		return;
	assert_int_equal(a->out_len, b->out_len);
	assert_memory_equal(a->out, b->out, a->out_len);
}

/* Decodes in every way; returns the (common) result in r. */
static void decode_all(const struct opts *o, const void *in, size_t n, struct result *r)
{
	struct result other;
	size_t *cuts = calloc(n + 1, sizeof(*cuts));

	decode(o, in, n, NULL, 0, r);
	for (size_t i = 0; i + 1 < n; i++)
		cuts[i] = i + 1;
	decode(o, in, n, cuts, n ? n - 1 : 0, &other);
	same(r, &other);
	if (n < 3000)
		for (size_t i = 1; i < n; i++) {
			decode(o, in, n, &i, 1, &other);
			same(r, &other);
		}
	free(cuts);
}

static const struct opts DATA = { .dot = true };
static const struct opts BDAT = { .dot = false };

#define DECODE(o, lit, r) decode_all(o, lit, sizeof(lit) - 1, r)

static void expect_msg(const struct result *r, const char *msg, size_t used)
{
	assert_int_equal(r->rc, VR_OK);
	assert_int_equal(r->flags, 0);
	assert_int_equal(r->used, used);
	assert_int_equal(r->out_len, strlen(msg));
	assert_memory_equal(r->out, msg, r->out_len);
}

static void test_data_end(void **state)
{
	struct result r;

	DECODE(&DATA, "Subject: hi\r\n\r\nHello\r\n.\r\n", &r);
	expect_msg(&r, "Subject: hi\r\n\r\nHello\r\n", 25);
	DECODE(&DATA, ".\r\n", &r);
	expect_msg(&r, "", 3);
	/* what follows the end is not used */
	DECODE(&DATA, "a\r\n.\r\nQUIT\r\n", &r);
	expect_msg(&r, "a\r\n", 6);
	/* not at the start of a line: content */
	DECODE(&DATA, "a.\r\n.\r\n", &r);
	expect_msg(&r, "a.\r\n", 7);
	DECODE(&DATA, "a\r\n .\r\n.\r\n", &r);
	expect_msg(&r, "a\r\n .\r\n", 10);
}

static void test_data_unstuffing(void **state)
{
	struct result r;

	DECODE(&DATA, "..\r\n.\r\n", &r);
	expect_msg(&r, ".\r\n", 7);
	DECODE(&DATA, "..leading\r\n...two\r\nmid.dle\r\n.\r\n", &r);
	expect_msg(&r, ".leading\r\n..two\r\nmid.dle\r\n", 31);
	/* RFC 5321 §4.5.2: a dot before other text is dropped, stuffed or not */
	DECODE(&DATA, ".x\r\n.\r\n", &r);
	expect_msg(&r, "x\r\n", 7);
	DECODE(&DATA, "\r\n..\r\n\r\n.\r\n", &r);
	expect_msg(&r, "\r\n.\r\n\r\n", 11);
}

/* CVE-2023-51764 and relatives: none of these ends DATA. */
static void test_data_smuggling(void **state)
{
	static const struct {
		const char *in;
		int err;
		size_t used;            /* through the offending octet */
	} cases[] = {
		{ "a\n.\nMAIL FROM:<x@y>\r\n", VR_SMTP_DATA_BARE_LF, 2 },
		{ "a\n.\r\nMAIL FROM:<x@y>\r\n", VR_SMTP_DATA_BARE_LF, 2 },
		{ "a\r.\r\nMAIL FROM:<x@y>\r\n", VR_SMTP_DATA_BARE_CR, 3 },
		{ "a\r\n.\nMAIL FROM:<x@y>\r\n", VR_SMTP_DATA_BARE_LF, 5 },
		{ "a\r\n.\rMAIL FROM:<x@y>\r\n", VR_SMTP_DATA_BARE_CR, 6 },
		{ ".\n", VR_SMTP_DATA_BARE_LF, 2 },
		{ "a\r\n.\r\r\n", VR_SMTP_DATA_BARE_CR, 6 },
		{ "a\r\r\n.\r\n", VR_SMTP_DATA_BARE_CR, 3 },
		{ "\n", VR_SMTP_DATA_BARE_LF, 1 },
		{ "text\rmore\r\n.\r\n", VR_SMTP_DATA_BARE_CR, 6 },
		{ "..\n", VR_SMTP_DATA_BARE_LF, 3 },
	};
	struct result r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		decode_all(&DATA, cases[i].in, strlen(cases[i].in), &r);
		if (r.rc != VR_ERR || r.err != cases[i].err || r.used != cases[i].used)
			fail_msg("case %zu: rc %d err %d used %zu", i, r.rc, r.err, r.used);
	}
}

static void test_data_nul(void **state)
{
	struct result r;

	/* "\r\n\0.\r\n" is no end: the real end comes later, and the
	 * message is spoilt */
	DECODE(&DATA, "a\r\n\0.\r\nb\r\n.\r\n", &r);
	assert_int_equal(r.rc, VR_OK);
	assert_int_equal(r.used, 13);
	assert_int_equal(r.flags, VR_SMTP_DATA_NUL);
	DECODE(&DATA, ".\0\r\n.\r\n", &r);
	assert_int_equal(r.flags, VR_SMTP_DATA_NUL);
	assert_int_equal(r.used, 7);
	/* BDAT content is binary-safe but for CR and LF */
	DECODE(&BDAT, "a\0b\r\n", &r);
	assert_int_equal(r.rc, VR_AGAIN);
	assert_int_equal(r.flags, 0);
	assert_int_equal(r.out_len, 5);
}

static void test_data_line_length(void **state)
{
	static char in[3000];
	struct result r;

	/* 1000 octets with CRLF is the most */
	memset(in, 'x', 998);
	memcpy(in + 998, "\r\n.\r\n", 5);
	decode_all(&DATA, in, 1003, &r);
	assert_int_equal(r.rc, VR_OK);
	assert_int_equal(r.flags, 0);
	assert_int_equal(r.out_len, 1000);

	memset(in, 'x', 999);
	memcpy(in + 999, "\r\nnext\r\n.\r\n", 11);
	decode_all(&DATA, in, 1010, &r);
	assert_int_equal(r.rc, VR_OK);
	assert_int_equal(r.used, 1010);
	assert_int_equal(r.flags, VR_SMTP_DATA_LONG);

	/* the stuffing dot is on the wire, so it counts */
	in[0] = '.';
	memset(in + 1, 'x', 998);
	memcpy(in + 999, "\r\n.\r\n", 5);
	decode_all(&DATA, in, 1004, &r);
	assert_int_equal(r.flags, VR_SMTP_DATA_LONG);
}

static void test_data_size(void **state)
{
	struct opts o = { .dot = true, .max = 10 };
	struct result r;

	DECODE(&o, "123456789\r\n.\r\n", &r);        /* 11 > 10 */
	assert_int_equal(r.rc, VR_OK);
	assert_int_equal(r.used, 14);
	assert_int_equal(r.flags, VR_SMTP_DATA_BIG);
	DECODE(&o, "12345678\r\n.\r\n", &r);         /* 10 */
	expect_msg(&r, "12345678\r\n", 13);
	/* the limit is on the unstuffed size */
	DECODE(&o, "..34567\r\n.\r\n", &r);          /* 9 after unstuffing */
	expect_msg(&r, ".34567\r\n", 12);
	DECODE(&o, "1234\r\n...\r\n.\r\n", &r);
	expect_msg(&r, "1234\r\n..\r\n", 14);

	o.dot = false;
	DECODE(&o, "12345678901", &r);
	assert_int_equal(r.flags, VR_SMTP_DATA_BIG);
}

static void test_data_sink_error(void **state)
{
	struct opts o = { .dot = true, .fail_after = 4 };
	struct result r;

	DECODE(&o, "line1\r\nline2\r\n.\r\n", &r);
	assert_int_equal(r.rc, VR_OK);
	assert_int_equal(r.used, 17);
	assert_int_equal(r.flags, VR_SMTP_DATA_STORE);
}

/* Once spoilt, nothing more is stored. */
static void test_data_stops_storing(void **state)
{
	struct result r;

	DECODE(&DATA, "ab\0cd\r\nmore\r\n.\r\n", &r);
	assert_int_equal(r.flags, VR_SMTP_DATA_NUL);
	assert_true(r.out_len <= 2);
}

static void test_bdat(void **state)
{
	struct result r;
	struct vr_smtp_data d;
	struct sink k = { 0 };
	size_t used;

	/* raw: dots and "CRLF.CRLF" are content, nothing ends it */
	DECODE(&BDAT, "a\r\n.\r\n..\r\n", &r);
	assert_int_equal(r.rc, VR_AGAIN);
	assert_int_equal(r.out_len, 10);
	assert_memory_equal(r.out, "a\r\n.\r\n..\r\n", 10);
	DECODE(&BDAT, "a\nb", &r);
	assert_int_equal(r.rc, VR_ERR);
	assert_int_equal(r.err, VR_SMTP_DATA_BARE_LF);
	DECODE(&BDAT, "a\rb", &r);
	assert_int_equal(r.err, VR_SMTP_DATA_BARE_CR);

	/* CRLF split across chunks is fine; a CR at the very end is not */
	vr_buf_init(&k.out, 0);
	vr_smtp_data_init(&d, false, UINT64_MAX, sink_write, &k);
	assert_int_equal(vr_smtp_data_parse(&d, (const uint8_t *)"x\r", 2, &used), VR_AGAIN);
	assert_int_equal(vr_smtp_data_parse(&d, (const uint8_t *)"\ny\r", 3, &used), VR_AGAIN);
	assert_int_equal(vr_smtp_data_finish(&d), VR_ERR);
	assert_int_equal(d.err, VR_SMTP_DATA_BARE_CR);
	assert_int_equal(vr_smtp_data_parse(&d, (const uint8_t *)"\n", 1, &used), VR_AGAIN);
	assert_int_equal(vr_smtp_data_finish(&d), VR_OK);
	vr_buf_free(&k.out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_data_end),
		cmocka_unit_test(test_data_unstuffing),
		cmocka_unit_test(test_data_smuggling),
		cmocka_unit_test(test_data_nul),
		cmocka_unit_test(test_data_line_length),
		cmocka_unit_test(test_data_size),
		cmocka_unit_test(test_data_sink_error),
		cmocka_unit_test(test_data_stops_storing),
		cmocka_unit_test(test_bdat),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
