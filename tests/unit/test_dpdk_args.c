/*
 * test_dpdk_args.c - the [dpdk] eal line split into EAL arguments: words,
 * quotes and backslashes as a shell reads them, nothing expanded, and a
 * clear refusal of what a shell would refuse or what does not fit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "dpdk.h"

#define MAX 16

struct split {
	char buf[256];
	char *argv[MAX];
	char err[128];
	int argc;
};

static void split(struct split *s, const char *line, size_t buflen, int max)
{
	memset(s, 0, sizeof(*s));
	s->argc = vr_dpdk_split(line, s->buf, buflen, s->argv, max, s->err, sizeof(s->err));
}

static void expect(const char *line, const char *const *words, int n)
{
	struct split s;

	split(&s, line, sizeof(s.buf), MAX);
	assert_int_equal(s.argc, n);
	for (int i = 0; i < n; i++)
		assert_string_equal(s.argv[i], words[i]);
}

static void test_words(void **state)
{
	static const char *const w[] = { "-l", "0-1", "--no-huge", "-m", "512",
		"--vdev=net_af_packet0,iface=veth-relay,qpairs=1" };

	expect("-l 0-1 --no-huge -m 512 --vdev=net_af_packet0,iface=veth-relay,qpairs=1", w, 6);
	expect("  -l\t0-1   --no-huge -m 512\t--vdev=net_af_packet0,iface=veth-relay,qpairs=1  ",
	       w, 6);
	expect("", NULL, 0);
	expect(" \t ", NULL, 0);
}

static void test_quotes(void **state)
{
	static const char *const single[] = { "--vdev=net_tap0,iface=a b", "x" };
	static const char *const dbl[] = { "say \"hi\" \\ \\n $HOME" };
	static const char *const glued[] = { "abc def", "" };
	static const char *const back[] = { "a b", "c\"d", "e\\" };

	expect("'--vdev=net_tap0,iface=a b' x", single, 2);
	expect("\"say \\\"hi\\\" \\\\ \\n $HOME\"", dbl, 1);
	/* quoted and bare pieces make one word; '' is an empty word */
	expect("ab'c d'\"ef\" ''", glued, 2);
	expect("a\\ b c\\\"d e\\\\", back, 3);
	/* inside single quotes a backslash is just a backslash */
	static const char *const lit[] = { "a\\b" };
	expect("'a\\b'", lit, 1);
}

static void test_refused(void **state)
{
	struct split s;

	split(&s, "-l 0-1 '--vdev=x", sizeof(s.buf), MAX);
	assert_int_equal(s.argc, -1);
	assert_string_equal(s.err, "unterminated single quote");
	split(&s, "\"abc", sizeof(s.buf), MAX);
	assert_int_equal(s.argc, -1);
	assert_string_equal(s.err, "unterminated double quote");
	split(&s, "-l 0-1 \\", sizeof(s.buf), MAX);
	assert_int_equal(s.argc, -1);
	assert_string_equal(s.err, "a backslash ends the line");
	split(&s, "a b c d", sizeof(s.buf), 3);
	assert_int_equal(s.argc, -1);
	assert_string_equal(s.err, "more than 3 words");
	/* "abcd" needs five bytes with its NUL; "abc" fits in four */
	split(&s, "abcd", 4, MAX);
	assert_int_equal(s.argc, -1);
	assert_string_equal(s.err, "longer than 3 bytes");
	split(&s, "abc", 4, MAX);
	assert_int_equal(s.argc, 1);
	assert_string_equal(s.argv[0], "abc");
	split(&s, "ab c", 4, MAX);
	assert_int_equal(s.argc, -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_words),
		cmocka_unit_test(test_quotes),
		cmocka_unit_test(test_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
