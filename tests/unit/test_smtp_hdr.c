/*
 * test_smtp_hdr.c - the header section scanner (engine/smtp/hdr.c) and the
 * From address list parser (engine/smtp/from.c).
 *
 * Every scanner input is fed whole, byte by byte and split at every point;
 * the result, the octets used, the From body kept and the line quoted
 * must not depend on how the input was cut. The parser is given each From
 * body as one piece, as the session does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "hdr.h"

/* --- the scanner --- */

struct scan {
	int rc;
	size_t used;
	int err;
	char from[VR_SMTP_FROM_MAX + 1];
	char show[VR_SMTP_HDR_SHOW + 1];
};

/* Feeds in[] in pieces ending at cuts[], then finishes if the section is
 * still open at the end. */
static void scan(const char *in, size_t n, const size_t *cuts, size_t ncuts, struct scan *r)
{
	struct vr_smtp_hdr *h = malloc(sizeof(*h));
	size_t fed = 0;

	assert_non_null(h);
	vr_smtp_hdr_init(h);
	memset(r, 0, sizeof(*r));
	r->rc = VR_AGAIN;
	for (size_t c = 0; c <= ncuts && r->rc == VR_AGAIN; c++) {
		size_t end = c < ncuts ? cuts[c] : n, used = 0;
		r->rc = vr_smtp_hdr_parse(h, (const uint8_t *)in + fed, end - fed, &used);
		assert_true(used <= end - fed);
		if (r->rc == VR_AGAIN)
			assert_int_equal(used, end - fed);
		fed += used;
	}
	if (r->rc == VR_AGAIN)
		r->rc = vr_smtp_hdr_finish(h);
	/* nothing more is taken once it decided */
	size_t more = 1;
	assert_int_equal(vr_smtp_hdr_parse(h, (const uint8_t *)"x", 1, &more), r->rc);
	assert_int_equal(more, 0);
	assert_int_equal(vr_smtp_hdr_finish(h), r->rc);
	r->used = fed;
	r->err = r->rc == VR_ERR ? h->err : 0;
	memcpy(r->from, h->from, h->from_len);
	r->from[h->from_len] = '\0';
	if (r->err == VR_SMTP_HDR_BAD_LINE) {
		memcpy(r->show, h->show, h->show_len);
		r->show[h->show_len] = '\0';
	}
	free(h);
}

static void scan_all_ways(const char *name, const char *in, size_t n, struct scan *whole)
{
	struct scan r;
	size_t *cuts = malloc((n + 1) * sizeof(*cuts));

	scan(in, n, NULL, 0, whole);
	for (size_t i = 0; i < n; i++)
		cuts[i] = i + 1;
	scan(in, n, cuts, n, &r);
	if (r.rc != whole->rc || r.used != whole->used || r.err != whole->err ||
	    strcmp(r.from, whole->from) || strcmp(r.show, whole->show))
		fail_msg("%s: byte by byte differs from whole", name);
	for (size_t k = 0; k <= n; k++) {
		scan(in, n, &k, 1, &r);
		if (r.rc != whole->rc || r.used != whole->used || r.err != whole->err ||
		    strcmp(r.from, whole->from) || strcmp(r.show, whole->show))
			fail_msg("%s: cut at %zu differs from whole", name, k);
	}
	free(cuts);
}

static void test_scanner(void **state)
{
	static const struct {
		const char *name, *in;
		int rc, err;
		const char *from;         /* VR_OK: the From body; BAD_LINE: the line */
		int used;                 /* VR_OK: octets through the blank line; -1 all */
	} cases[] = {
		{ "plain", "From: a@example.com\r\nSubject: hi\r\n\r\nFrom: body@evil.example\r\n",
		  VR_OK, 0, " a@example.com", 36 },
		{ "folded", "Subject: x\r\nFrom: Alice\r\n <a@example.com>,\r\n\tb@example.com\r\n\r\n",
		  VR_OK, 0, " Alice <a@example.com>,\tb@example.com", -1 },
		{ "case", "fROM:x@example.com\r\n\r\n", VR_OK, 0, "x@example.com", -1 },
		{ "blanks before the colon", "From \t: a@example.com\r\n\r\n", VR_OK, 0,
		  " a@example.com", -1 },
		{ "empty body", "From:\r\n\r\n", VR_OK, 0, "", -1 },
		{ "headers only", "To: b@example.net\r\nFrom: a@example.com\r\n", VR_OK, 0,
		  " a@example.com", -1 },
		{ "no CRLF at the end (BDAT)", "From: a@example.com", VR_OK, 0, " a@example.com", -1 },
		{ "From's continuation is not another field",
		  "From: a@example.com\r\n From: b@example.com\r\n\r\n", VR_OK, 0,
		  " a@example.com From: b@example.com", -1 },
		{ "other fields", "Fromage: x\r\nX-From: y\r\nResent-From: z\r\nFrm: w\r\n\r\n",
		  VR_ERR, VR_SMTP_HDR_NO_FROM, "", -1 },
		{ "in a continuation only", "Subject: x\r\n From: a@example.com\r\n\r\n", VR_ERR,
		  VR_SMTP_HDR_NO_FROM, "", -1 },
		{ "empty section", "\r\nFrom: a@example.com\r\n", VR_ERR, VR_SMTP_HDR_NO_FROM, "", 2 },
		{ "empty message", "", VR_ERR, VR_SMTP_HDR_NO_FROM, "", -1 },
		{ "two", "From: a@example.com\r\nTo: x@example.net\r\nfrom: b@example.com\r\n\r\n",
		  VR_ERR, VR_SMTP_HDR_TWO_FROM, "", 45 },
		{ "no field", "Subject: x\r\ngarbage line\r\nFrom: a@example.com\r\n\r\n", VR_ERR,
		  VR_SMTP_HDR_BAD_LINE, "garbage line", 25 },
		{ "leading continuation", " folded\r\nFrom: a@example.com\r\n\r\n", VR_ERR,
		  VR_SMTP_HDR_BAD_LINE, " folded", 8 },
		{ "no name", ": value\r\n", VR_ERR, VR_SMTP_HDR_BAD_LINE, ": value", 8 },
		{ "8-bit name", "Fr\xc3\xb6m: a@example.com\r\n\r\n", VR_ERR, VR_SMTP_HDR_BAD_LINE,
		  "Fr\xc3\xb6m: a@example.com", 21 },
		{ "blank inside the name", "Reply To: a@example.com\r\n\r\n", VR_ERR,
		  VR_SMTP_HDR_BAD_LINE, "Reply To: a@example.com", 24 },
		{ "unfinished name", "From: a@example.com\r\nSubj", VR_ERR, VR_SMTP_HDR_BAD_LINE,
		  "Subj", -1 },
		{ "bare LF in a body", "From: a@example.com\nTo: b\r\n\r\n", VR_ERR,
		  VR_SMTP_HDR_BAD_LINE, "From: a@example.com", 20 },
		{ "bare CR after a line", "From: a@example.com\rTo: b\r\n\r\n", VR_ERR,
		  VR_SMTP_HDR_BAD_LINE, "From: a@example.comTo: b", 26 },
		{ "CR then no LF at the blank line", "From: a@example.com\r\n\rX\r\n", VR_ERR,
		  VR_SMTP_HDR_BAD_LINE, "X", 24 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct scan r;
		size_t n = strlen(cases[i].in);

		scan_all_ways(cases[i].name, cases[i].in, n, &r);
		if (r.rc != cases[i].rc || r.err != cases[i].err)
			fail_msg("%s: rc %d err %d, want %d %d", cases[i].name, r.rc, r.err,
				 cases[i].rc, cases[i].err);
		if (cases[i].rc == VR_OK)
			assert_string_equal(r.from, cases[i].from);
		if (cases[i].err == VR_SMTP_HDR_BAD_LINE)
			assert_string_equal(r.show, cases[i].from);
		if (cases[i].used >= 0)
			assert_int_equal(r.used, (size_t)cases[i].used);
	}
}

/* The From body is kept up to its limit; one octet more is refused, at
 * the same place however the input was cut. */
static void test_scanner_limits(void **state)
{
	char *in = malloc(VR_SMTP_FROM_MAX + 64);
	struct scan r;

	for (int over = 0; over <= 1; over++) {
		size_t n = (size_t)sprintf(in, "From:");
		memset(in + n, 'x', VR_SMTP_FROM_MAX + (size_t)over);
		n += VR_SMTP_FROM_MAX + (size_t)over;
		n += (size_t)sprintf(in + n, "\r\n\r\n");
		scan_all_ways(over ? "From one over" : "From at the limit", in, n, &r);
		assert_int_equal(r.rc, over ? VR_ERR : VR_OK);
		if (over) {
			assert_int_equal(r.err, VR_SMTP_HDR_FROM_LONG);
			assert_int_equal(r.used, 5 + VR_SMTP_FROM_MAX);
		} else {
			assert_int_equal(strlen(r.from), VR_SMTP_FROM_MAX);
		}
	}

	/* a long bad line (a name without a colon, here) is quoted by its start */
	size_t n = (size_t)sprintf(in, "Subject: x\r\n");
	memset(in + n, 'y', 500);
	n += 500;
	n += (size_t)sprintf(in + n, "\r\n\r\n");
	scan_all_ways("long bad line", in, n, &r);
	assert_int_equal(r.err, VR_SMTP_HDR_BAD_LINE);
	assert_int_equal(strlen(r.show), VR_SMTP_HDR_SHOW);
	assert_int_equal(r.used, 12 + 500 + 1);
	free(in);
}

/* --- the From address list --- */

struct domains {
	char text[1024];       /* "d1|d2|..." */
};

static void add_domain(void *arg, const uint8_t *domain, size_t len)
{
	struct domains *d = arg;
	size_t n = strlen(d->text);

	assert_true(n + len + 2 < sizeof(d->text));
	if (n)
		d->text[n++] = '|';
	memcpy(d->text + n, domain, len);
	d->text[n + len] = '\0';
}

static void test_from_valid(void **state)
{
	static const struct { const char *in, *domains; } cases[] = {
		{ "a@example.com", "example.com" },
		{ " a@example.com ", "example.com" },
		{ "<a@example.com>", "example.com" },
		{ "  Alice Liddell  <alice@Example.COM>  ", "Example.COM" },
		{ "\"Smith, John\" <j@example.com>", "example.com" },
		{ "\"a@evil.example\"@example.com", "example.com" },
		{ "\"quoted \\\" and \\\\ pairs\" <q@example.com>", "example.com" },
		{ "a@example.com (b@evil.example, c@evil.example)", "example.com" },
		{ "(x (nested (deep)) \\) y) a@example.com", "example.com" },
		{ "a @ example.com", "example.com" },
		{ "a@example.com, Bob <b@example.org>,c@sub.example.com",
		  "example.com|example.org|sub.example.com" },
		{ "=?UTF-8?B?SsO2cmcgTcO8bGxlcg==?= <j@example.com>", "example.com" },
		{ "=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <j@example.com>", "example.com" },
		{ "\"=?utf-8?q?a,b?=\" <j@example.com>", "example.com" },
		{ "J. R. R. Tolkien <jrr@example.com>", "example.com" },
		{ "J\xc3\xb6rg <j\xc3\xb6rg@b\xc3\xbc\x63her.example>", "b\xc3\xbc\x63her.example" },
		{ "root@[192.0.2.1]", "[192.0.2.1]" },
		{ "first.last+tag@mail.example.com", "mail.example.com" },
		{ "\tAlice\t<a@example.com>", "example.com" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct domains d = { "" };
		const char *why = "unset";
		int rc = vr_smtp_from_parse((const uint8_t *)cases[i].in, strlen(cases[i].in),
					    add_domain, &d, &why);
		if (rc != VR_OK)
			fail_msg("'%s': refused (%s)", cases[i].in, why);
		assert_string_equal(d.text, cases[i].domains);
	}
}

static void test_from_invalid(void **state)
{
	static const struct { const char *in, *why; } cases[] = {
		{ "", "no address" },
		{ "   (just a comment)  ", "no address" },
		{ "Alice", "a display name without an address" },
		{ "a@example.com, Alice", "a display name without an address" },
		/* a Q-encoded comma is no separator to a decoding reader */
		{ "=?utf-8?Q?M=C3=BCller,_Hans?= <h@example.com>",
		  "a display name without an address" },
		{ "<@relay.example:a@example.com>", "a source route" },
		{ "<@relay.example,@b.example:a@example.com>", "a source route" },
		{ "undisclosed-recipients:;", "group syntax" },
		{ "team: a@example.com;", "group syntax" },
		{ "a@example.com,,b@example.com", "an empty list member" },
		{ "a@example.com,", "an empty list member" },
		{ ", a@example.com", "an empty list member" },
		{ "a@@example.com", "no domain after @" },
		{ "a@", "no domain after @" },
		{ "a@\"example.com\"", "no domain after @" },
		{ "a@example..com", "a misplaced dot in the domain" },
		{ "a@example.com.", "a misplaced dot in the domain" },
		{ ".a@example.com", "a misplaced dot in the local part" },
		{ "<a..b@example.com>", "a misplaced dot in the local part" },
		{ "a b@example.com", "a local part of several words" },
		{ "@example.com", "no local part before @" },
		{ "<a@example.com", "a missing >" },
		{ "<a@example.com> <b@example.com>", "no comma between addresses" },
		{ "a@example.com <a@example.com>", "no comma between addresses" },
		{ "<>", "no address inside <>" },
		{ "Alice <a>", "an address without @domain" },
		{ ". Alice <a@example.com>", "a display name starting with a dot" },
		{ "\"unterminated <a@example.com>", "an unterminated quoted string" },
		{ "(unterminated a@example.com", "an unterminated comment" },
		{ "a@example.com)", "an unbalanced ')'" },
		{ "a@[192.0.2.1", "an unterminated domain literal" },
		{ "a@[192.0.[2].1]", "a bad domain literal" },
		{ "a@exa\x01mple.com", "a control character" },
		{ "\"a\x7f\"@example.com", "a control character" },
		{ "(a\rb) a@example.com", "a control character" },
		{ "a\\@b@example.com", "an unexpected character" },
		{ "[192.0.2.1]", "a domain literal out of place" },
		{ "> a@example.com", "an unexpected >" },
		{ "\"a\\", "a backslash quoting nothing" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct domains d = { "" };
		const char *why = NULL;
		int rc = vr_smtp_from_parse((const uint8_t *)cases[i].in, strlen(cases[i].in),
					    add_domain, &d, &why);
		if (rc != VR_ERR)
			fail_msg("'%s': accepted (domains %s)", cases[i].in, d.text);
		assert_non_null(why);
		if (strcmp(why, cases[i].why) != 0)
			fail_msg("'%s': refused for '%s', want '%s'", cases[i].in, why, cases[i].why);
	}
}

/* A NUL inside the body is a control character, not an end. */
static void test_from_nul(void **state)
{
	static const char in[] = "a@example.com\0, b@evil.example";
	struct domains d = { "" };
	const char *why = NULL;

	assert_int_equal(vr_smtp_from_parse((const uint8_t *)in, sizeof(in) - 1, add_domain, &d,
					    &why), VR_ERR);
	assert_string_equal(why, "a control character");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scanner),
		cmocka_unit_test(test_scanner_limits),
		cmocka_unit_test(test_from_valid),
		cmocka_unit_test(test_from_invalid),
		cmocka_unit_test(test_from_nul),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
