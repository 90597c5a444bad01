/*
 * test_smtp_parse.c - the SMTP command line parser and the envelope syntax
 * (engine/smtp/parse.c, addr.c).
 *
 * Every parser input is fed whole (ending against a guard page, so a read
 * past the end faults), byte by byte, and split at every point; all ways
 * must give the same transcript of results.
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

#include "addr.h"
#include "parse.h"

/* --- helpers --- */

struct transcript {
	char text[8192];
	size_t len;
	size_t max_kept;      /* most octets the caller ever had to keep */
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
 * Feeds in[0..n) to the parser in the pieces listed by cuts (ascending
 * offsets where a new piece starts; none = whole). Keeps unconsumed octets
 * like a session does and records each result.
 */
static void run_lines(const uint8_t *in, size_t n, const size_t *cuts, size_t ncuts,
		      struct transcript *t)
{
	struct vr_smtp_line l = { 0 };
	uint8_t *kept = malloc(n + 1);
	size_t have = 0, fed = 0;

	memset(t, 0, sizeof(*t));
	for (size_t c = 0; c <= ncuts; c++) {
		size_t end = c < ncuts ? cuts[c] : n;
		memcpy(kept + have, in + fed, end - fed);
		have += end - fed;
		fed = end;
		for (;;) {
			struct vr_smtp_cmdline cl;
			size_t used = 12345;
			int rc = vr_smtp_line_parse(&l, kept, have, &used, &cl);
			assert_true(used <= have);
			if (rc == VR_OK)
				tr_add(t, "[%.*s|%.*s]", (int)cl.verb_len, cl.verb, (int)cl.arg_len,
				       cl.arg);
			else if (rc == VR_ERR)
				tr_add(t, "[err %d]", l.err);
			memmove(kept, kept + used, have - used);
			have -= used;
			if (rc == VR_AGAIN)
				break;
			if (rc == VR_ERR && l.err >= VR_SMTP_LINE_BARE_LF) {
				free(kept);
				return;      /* the session closes here */
			}
		}
		if (have > t->max_kept)
			t->max_kept = have;
	}
	tr_add(t, "+%zu", have);
	free(kept);
}

/* Whole (guarded), byte by byte and at every split point: all agree with
 * expect. */
static void check_lines(const void *in, size_t n, const char *expect)
{
	struct transcript t;
	struct guarded g = guard(in, n);
	size_t *cuts = malloc((n + 1) * sizeof(*cuts));

	run_lines(g.data, n, NULL, 0, &t);
	assert_string_equal(t.text, expect);
	for (size_t i = 0; i + 1 < n; i++)
		cuts[i] = i + 1;
	run_lines(g.data, n, cuts, n ? n - 1 : 0, &t);
	assert_string_equal(t.text, expect);
	assert_true(t.max_kept <= VR_SMTP_LINE_MAX);
	if (n < 2000) {
		for (size_t i = 1; i < n; i++) {
			run_lines(g.data, n, &i, 1, &t);
			assert_string_equal(t.text, expect);
		}
	}
	free(cuts);
	unguard(&g);
}

#define CHECK_LINES(lit, expect) check_lines(lit, sizeof(lit) - 1, expect)

/* A line of exactly total octets incl. CRLF: "NOOP xxx...\r\n". */
static char *noop_line(size_t total, const char *ending)
{
	char *s = malloc(total + 16);
	memcpy(s, "NOOP ", 5);
	memset(s + 5, 'x', total - 7);
	strcpy(s + total - 2, ending);
	return s;
}

/* --- command lines --- */

static void test_line_basic(void **state)
{
	CHECK_LINES("EHLO client.example.com\r\n", "[EHLO|client.example.com]+0");
	CHECK_LINES("QUIT\r\n", "[QUIT|]+0");
	CHECK_LINES("\r\n", "[|]+0");
	CHECK_LINES("MAIL FROM:<a@b.example>  \t \r\n", "[MAIL|FROM:<a@b.example>]+0");
	CHECK_LINES("NOOP    x  y \r\n", "[NOOP|x  y]+0");
	CHECK_LINES("RSET ", "+5");
}

static void test_line_pipelined(void **state)
{
	CHECK_LINES("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nRC",
		    "[MAIL|FROM:<a@b.example>][RCPT|TO:<c@d.example>][DATA|]+2");
}

static void test_line_limit(void **state)
{
	char *ok = noop_line(512, "\r\n"), *over = noop_line(513, "\r\n");
	char expect[600];
	char *both;

	snprintf(expect, sizeof(expect), "[NOOP|%.*s]+0", 505, ok + 5);
	check_lines(ok, 512, expect);
	check_lines(over, 513, "[err 1]+0");
	/* after the over-long line, parsing goes on */
	both = malloc(600);
	snprintf(both, 600, "%sQUIT\r\n", over);
	check_lines(both, 519, "[err 1][QUIT|]+0");
	free(both);
	/* CR as octet 512: the LF would be octet 513 */
	free(over);
	over = noop_line(513, "\r\n");
	check_lines(over, 513, "[err 1]+0");
	free(ok);
	free(over);
}

static void test_line_huge_is_bounded(void **state)
{
	size_t n = 100000;
	char *big = malloc(n + 8);

	memset(big, 'A', n);
	memcpy(big + n, "\r\nQUIT\r\n", 8);
	/* run_lines asserts the kept octets stay under the line limit */
	check_lines(big, n + 8, "[err 1][QUIT|]+0");
	free(big);
}

static void test_line_smuggling(void **state)
{
	CHECK_LINES("NOOP\n", "[err 3]");
	CHECK_LINES("NO\nOP\r\nQUIT\r\n", "[err 3]");
	CHECK_LINES("NOOP\rQUIT\r\n", "[err 4]");
	CHECK_LINES("NOOP x\ry\r\n", "[err 4]");
	CHECK_LINES("NOOP\r\r\n", "[err 4]");
	CHECK_LINES("NOOP\r\nQUIT\n", "[NOOP|][err 3]");
	CHECK_LINES("MAIL  \n", "[err 3]");

	/* inside an over-long line too */
	char *s = noop_line(600, "\n\0");
	check_lines(s, 599, "[err 3]");
	free(s);
	s = noop_line(600, "\rX");
	check_lines(s, 600, "[err 4]");
	free(s);
}

static void test_line_nul(void **state)
{
	CHECK_LINES("NO\0OP\r\nQUIT\r\n", "[err 2][QUIT|]+0");
	CHECK_LINES("MAIL FROM:<a\0@b>\r\n", "[err 2]+0");
	CHECK_LINES("MAIL \0\r\n", "[err 2]+0");
}

/* --- MAIL / RCPT --- */

struct addr_case {
	const char *in;
	enum vr_smtp_addr_status st;
	const char *addr;         /* expected mailbox when OK */
};

static void check_mail(const char *in, size_t n, enum vr_smtp_addr_status st, const char *addr)
{
	struct vr_smtp_envcmd e;
	struct guarded g = guard(in, n);
	enum vr_smtp_addr_status got = vr_smtp_mail_parse(g.data, n, &e);

	if (got != st)
		fail_msg("MAIL %s: status %d, expected %d", in, got, st);
	if (st == VR_SMTP_ADDR_OK && addr) {
		assert_int_equal(e.addr_len, strlen(addr));
		assert_memory_equal(e.addr, addr, e.addr_len);
	}
	unguard(&g);
}

static void test_mail_paths(void **state)
{
	static const struct addr_case cases[] = {
		{ "FROM:<user@example.com>", VR_SMTP_ADDR_OK, "user@example.com" },
		{ "from:<User@Example.COM>", VR_SMTP_ADDR_OK, "User@Example.COM" },
		{ "FROM:<>", VR_SMTP_ADDR_OK, "" },
		{ "FROM: <a@b.example>", VR_SMTP_ADDR_OK, "a@b.example" },
		{ "FROM:<@r1.example,@r2.example:user@example.com>", VR_SMTP_ADDR_OK,
		  "user@example.com" },
		{ "FROM:<\"john doe\"@example.com>", VR_SMTP_ADDR_OK, "\"john doe\"@example.com" },
		{ "FROM:<\"a\\\"b>\"@example.com>", VR_SMTP_ADDR_OK, "\"a\\\"b>\"@example.com" },
		{ "FROM:<\"\"@example.com>", VR_SMTP_ADDR_OK, "\"\"@example.com" },
		{ "FROM:<a.b+tag@sub.example.com>", VR_SMTP_ADDR_OK, "a.b+tag@sub.example.com" },
		{ "FROM:<!#$%&'*+-/=?^_`{|}~@example.com>", VR_SMTP_ADDR_OK, NULL },
		{ "FROM:<john@[192.0.2.1]>", VR_SMTP_ADDR_OK, "john@[192.0.2.1]" },
		{ "FROM:<john@[IPv6:2001:db8::1]>", VR_SMTP_ADDR_OK, NULL },
		{ "FROM:<john@[ipv6:::1]>", VR_SMTP_ADDR_OK, NULL },
		{ "FROM:<j@xn--bcher-kva.example>", VR_SMTP_ADDR_OK, NULL },
		{ "FROM:<j@1.2.3.example>", VR_SMTP_ADDR_OK, NULL },

		{ "FROM:user@example.com", VR_SMTP_ADDR_SYNTAX, NULL },
		{ "FROM:", VR_SMTP_ADDR_SYNTAX, NULL },
		{ "FROM", VR_SMTP_ADDR_SYNTAX, NULL },
		{ "TO:<a@b.example>", VR_SMTP_ADDR_SYNTAX, NULL },
		{ "FROM:<a@b.example>x", VR_SMTP_ADDR_SYNTAX, NULL },
		{ "FROM:<a@b.example", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john..doe@example.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<.john@example.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john.@example.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<jo hn@example.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<jo(hn@example.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<\"unterminated@example.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@-example.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@example-.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@example..com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@example.com.>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@.example.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@exa_mple.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<@example.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@[300.1.1.1]>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@[1.2.3]>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@[IPv6:zz::1]>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@[tag:content]>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john@[192.0.2.1>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<@r1.example:>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<@r1.example,user@example.com>", VR_SMTP_ADDR_BAD, NULL },
		{ "FROM:<john>", VR_SMTP_ADDR_NO_DOMAIN, NULL },
		{ "FROM:<postmaster>", VR_SMTP_ADDR_NO_DOMAIN, NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_mail(cases[i].in, strlen(cases[i].in), cases[i].st, cases[i].addr);
}

static void test_mail_length_limits(void **state)
{
	char in[600];

	/* a path of exactly 256 octets incl. <> is fine, 257 is too long */
	for (size_t local = 242; local <= 243; local++) {
		memcpy(in, "FROM:<", 6);
		memset(in + 6, 'a', local);
		strcpy(in + 6 + local, "@example.com>");
		check_mail(in, strlen(in), local == 242 ? VR_SMTP_ADDR_OK : VR_SMTP_ADDR_TOO_LONG,
			   NULL);
	}
	memset(in + 6, 'a', 400);
	strcpy(in + 406, "@example.com>");
	check_mail(in, strlen(in), VR_SMTP_ADDR_TOO_LONG, NULL);

	/* labels of 63 octets, not 64 */
	for (size_t label = 63; label <= 64; label++) {
		memcpy(in, "FROM:<a@", 8);
		memset(in + 8, 'l', label);
		strcpy(in + 8 + label, ".example>");
		check_mail(in, strlen(in), label == 63 ? VR_SMTP_ADDR_OK : VR_SMTP_ADDR_BAD, NULL);
	}
}

#define CHECK_MAIL(lit, st, addr) check_mail(lit, sizeof(lit) - 1, st, addr)

static void test_mail_utf8(void **state)
{
	CHECK_MAIL("FROM:<j\xc3\xb6rg@example.com>", VR_SMTP_ADDR_UTF8, NULL);
	CHECK_MAIL("FROM:<j\xc3\xb6rg@example.com> SMTPUTF8", VR_SMTP_ADDR_OK,
		   "j\xc3\xb6rg@example.com");
	CHECK_MAIL("FROM:<a@b\xc3\xbc" "cher.example> SMTPUTF8", VR_SMTP_ADDR_OK, NULL);
	CHECK_MAIL("FROM:<\"\xe2\x82\xac\"@example.com> smtputf8", VR_SMTP_ADDR_OK, NULL);
	CHECK_MAIL("FROM:<\xf0\x9f\x98\x80@example.com> SMTPUTF8", VR_SMTP_ADDR_OK, NULL);
	/* malformed UTF-8 is bad syntax, SMTPUTF8 or not */
	CHECK_MAIL("FROM:<j\xc3(rg@example.com> SMTPUTF8", VR_SMTP_ADDR_BAD, NULL);
	CHECK_MAIL("FROM:<j\xc0\xafrg@example.com> SMTPUTF8", VR_SMTP_ADDR_BAD, NULL);
	CHECK_MAIL("FROM:<j\xed\xa0\x80@example.com> SMTPUTF8", VR_SMTP_ADDR_BAD, NULL);
	CHECK_MAIL("FROM:<j\xf4\x90\x80\x80@example.com> SMTPUTF8", VR_SMTP_ADDR_BAD, NULL);
	CHECK_MAIL("FROM:<j\xc3", VR_SMTP_ADDR_BAD, NULL);
	CHECK_MAIL("FROM:<j\xff@example.com> SMTPUTF8", VR_SMTP_ADDR_BAD, NULL);
}

static void test_mail_params(void **state)
{
	struct vr_smtp_envcmd e;
#define MAIL(s) vr_smtp_mail_parse((const uint8_t *)(s), strlen(s), &e)

	assert_int_equal(MAIL("FROM:<a@b.example> SIZE=1000"), VR_SMTP_ADDR_OK);
	assert_true(e.has_size);
	assert_int_equal(e.size, 1000);
	assert_int_equal(e.body, VR_SMTP_BODY_NONE);

	assert_int_equal(MAIL("FROM:<a@b.example> size=12  body=8bitmime  SMTPUTF8 AUTH=<>"),
			 VR_SMTP_ADDR_OK);
	assert_int_equal(e.size, 12);
	assert_int_equal(e.body, VR_SMTP_BODY_8BITMIME);
	assert_true(e.smtputf8);

	assert_int_equal(MAIL("FROM:<> BODY=7BIT"), VR_SMTP_ADDR_OK);
	assert_int_equal(e.body, VR_SMTP_BODY_7BIT);
	assert_false(e.has_size);

	assert_int_equal(MAIL("FROM:<a@b.example> SIZE=99999999999999999999"), VR_SMTP_ADDR_OK);
	assert_true(e.size == UINT64_MAX);
	assert_int_equal(MAIL("FROM:<a@b.example> AUTH=user+40example.com"), VR_SMTP_ADDR_OK);

#define BAD(s, status, kw) do { \
		assert_int_equal(MAIL(s), status); \
		assert_int_equal(e.bad_len, strlen(kw)); \
		assert_memory_equal(e.bad, kw, e.bad_len); \
	} while (0)
	BAD("FROM:<a@b.example> NOTIFY=NEVER", VR_SMTP_ADDR_PARAM, "NOTIFY");
	BAD("FROM:<a@b.example> RET=HDRS", VR_SMTP_ADDR_PARAM, "RET");
	BAD("FROM:<a@b.example> SIZE=12x", VR_SMTP_ADDR_PARAM_BAD, "SIZE");
	BAD("FROM:<a@b.example> SIZE=", VR_SMTP_ADDR_PARAM_BAD, "SIZE");
	BAD("FROM:<a@b.example> SIZE", VR_SMTP_ADDR_PARAM_BAD, "SIZE");
	BAD("FROM:<a@b.example> SIZE=123456789012345678901", VR_SMTP_ADDR_PARAM_BAD, "SIZE");
	BAD("FROM:<a@b.example> SIZE=1 SIZE=2", VR_SMTP_ADDR_PARAM_BAD, "SIZE");
	BAD("FROM:<a@b.example> BODY=BINARYMIME", VR_SMTP_ADDR_PARAM_BAD, "BODY");
	BAD("FROM:<a@b.example> SMTPUTF8=yes", VR_SMTP_ADDR_PARAM_BAD, "SMTPUTF8");
	BAD("FROM:<a@b.example> AUTH", VR_SMTP_ADDR_PARAM_BAD, "AUTH");
	BAD("FROM:<a@b.example> SIZE=1=2", VR_SMTP_ADDR_PARAM_BAD, "SIZE");
	assert_int_equal(MAIL("FROM:<a@b.example> =1"), VR_SMTP_ADDR_SYNTAX);
	assert_int_equal(MAIL("FROM:<a@b.example> -X=1"), VR_SMTP_ADDR_SYNTAX);
#undef BAD
#undef MAIL
}

static void test_rcpt(void **state)
{
	struct vr_smtp_envcmd e;
#define RCPT(s, u) vr_smtp_rcpt_parse((const uint8_t *)(s), strlen(s), u, &e)

	assert_int_equal(RCPT("TO:<user@example.com>", false), VR_SMTP_ADDR_OK);
	assert_int_equal(e.addr_len, 16);
	assert_memory_equal(e.addr, "user@example.com", 16);
	assert_int_equal(RCPT("to: <user@example.com>", false), VR_SMTP_ADDR_OK);
	assert_int_equal(RCPT("TO:<@hop.example:user@example.com>", false), VR_SMTP_ADDR_OK);
	assert_memory_equal(e.addr, "user@example.com", 16);
	assert_int_equal(RCPT("TO:<>", false), VR_SMTP_ADDR_BAD);
	assert_int_equal(RCPT("TO:<postmaster>", false), VR_SMTP_ADDR_NO_DOMAIN);
	assert_int_equal(RCPT("FROM:<user@example.com>", false), VR_SMTP_ADDR_SYNTAX);
	assert_int_equal(RCPT("TO:<user@example.com> NOTIFY=NEVER", false), VR_SMTP_ADDR_PARAM);
	assert_int_equal(RCPT("TO:<user@example.com> SIZE=10", false), VR_SMTP_ADDR_PARAM);
	assert_int_equal(RCPT("TO:<\xc3\xbc@example.com>", false), VR_SMTP_ADDR_UTF8);
	assert_int_equal(RCPT("TO:<\xc3\xbc@example.com>", true), VR_SMTP_ADDR_OK);
	assert_int_equal(RCPT("TO:<a@\xc3\xbc.example>", false), VR_SMTP_ADDR_UTF8);
#undef RCPT
}

static void test_helo(void **state)
{
	static const char *const good[] = {
		"client.example.com", "localhost", "mail_server.local", "a", "[192.0.2.1]",
		"[IPv6:2001:db8::1]", "x1-2.example",
	};
	static const char *const bad[] = {
		"", "exa mple.com", "-bad.example", "bad-.example", "a..b", "a.", ".a",
		"\xc3\xbcmlaut.de", "[192.0.2.1", "[999.0.2.1]", "exa\"mple",
	};
	char big[300];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(vr_smtp_helo_valid((const uint8_t *)good[i], strlen(good[i])));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (vr_smtp_helo_valid((const uint8_t *)bad[i], strlen(bad[i])))
			fail_msg("EHLO %s accepted", bad[i]);
	/* 255 octets is the most a domain has */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = i % 50 == 49 ? '.' : 'h';
	assert_true(vr_smtp_helo_valid((const uint8_t *)big, 255));
	assert_false(vr_smtp_helo_valid((const uint8_t *)big, 256 + 2));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_basic),
		cmocka_unit_test(test_line_pipelined),
		cmocka_unit_test(test_line_limit),
		cmocka_unit_test(test_line_huge_is_bounded),
		cmocka_unit_test(test_line_smuggling),
		cmocka_unit_test(test_line_nul),
		cmocka_unit_test(test_mail_paths),
		cmocka_unit_test(test_mail_length_limits),
		cmocka_unit_test(test_mail_utf8),
		cmocka_unit_test(test_mail_params),
		cmocka_unit_test(test_rcpt),
		cmocka_unit_test(test_helo),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
