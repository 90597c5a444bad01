/*
 * test_dpdk_args.c - the [dpdk] eal line split into EAL arguments: words,
 * quotes and backslashes as a shell reads them, nothing expanded, and a
 * clear refusal of what a shell would refuse or what does not fit; the
 * [dpdk] fault line read into the fault layer's settings, and refused with
 * a reason.
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

static void test_fault(void **state)
{
	struct vr_fault_conf f;
	char err[160];

	assert_int_equal(vr_dpdk_fault_parse("drop=3,reorder=1,dup=1.5,seed=7", &f, err,
					     sizeof(err)), 0);
	assert_true(f.drop_pct == 3 && f.reorder_pct == 1 && f.dup_pct == 1.5);
	assert_true(f.corrupt_pct == 0 && f.delay_pct == 0 && f.delay_ms == 0);
	assert_int_equal(f.seed, 7);
	assert_int_equal(vr_dpdk_fault_parse("delay=100,delay_ms=20,reorder_ms=5,corrupt=0.1",
					     &f, err, sizeof(err)), 0);
	assert_true(f.delay_pct == 100 && f.corrupt_pct == 0.1);
	assert_int_equal(f.delay_ms, 20);
	assert_int_equal(f.reorder_ms, 5);
	assert_int_equal(vr_dpdk_fault_parse("", &f, err, sizeof(err)), 0);
	assert_true(f.drop_pct == 0 && f.seed == 0);

	static const struct {
		const char *text, *err;
	} bad[] = {
		{ "drop=101", "'drop' wants a percentage 0..100, not '101'" },
		{ "drop=-1", "'drop' wants a percentage 0..100, not '-1'" },
		{ "drop=3%", "'drop' wants a percentage 0..100, not '3%'" },
		{ "drop=", "'drop' wants a percentage 0..100, not ''" },
		{ "loss=3", "unknown key 'loss' (drop, corrupt, dup, delay, reorder, delay_ms, "
			    "reorder_ms, seed)" },
		{ "drop=1,drop=2", "'drop' given twice" },
		{ "drop", "'drop' is not key=value" },
		{ "drop=1,,dup=1", "'' is not key=value" },
		{ "drop=1,", "a comma ends the list" },
		{ "delay_ms=60001", "'delay_ms' wants milliseconds 0..60000, not '60001'" },
		{ "seed=-3", "'seed' wants an unsigned integer, not '-3'" },
		{ "seed=99999999999999999999", "'seed' wants an unsigned integer, "
					       "not '99999999999999999999'" },
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(vr_dpdk_fault_parse(bad[i].text, &f, err, sizeof(err)), -1);
		assert_string_equal(err, bad[i].err);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_words),
		cmocka_unit_test(test_quotes),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_fault),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
