/*
 * test_net_fault.c - the fault-injection layer (engine/net/fault.c) over
 * seeded runs of 20,000 numbered packets: each fault happens at close to
 * its percentage, nothing is lost but what was dropped, duplicates and
 * reordered packets look like what they are, delays follow the virtual
 * clock, and the same seed gives the same run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "vmrelay/net.h"
#include "vmrelay/netfault.h"

#define RUN 20000u
#define PAYLOAD 64
#define BODY 0x5a

static unsigned tx_unused(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
{
	return 0;
}

/* The sink: the sequence numbers that arrived, in order, and their bytes' damage. */
static uint32_t got[2 * RUN];
static unsigned ngot, nflipped_bits;
static uint64_t got_at[2 * RUN];

static unsigned sink(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
{
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *d = pkts[i]->data;
		uint32_t seq;
		memcpy(&seq, d, 4);
		/* The body is all BODY: count the bits flipped in it, at most one a packet. */
		unsigned flipped = 0;
		for (unsigned k = 4; k < pkts[i]->len; k++)
			flipped += (unsigned)__builtin_popcount((uint8_t)(d[k] ^ BODY));
		assert_true(flipped <= 1);
		nflipped_bits += flipped;
		assert_true(ngot < VR_ARRAY_SIZE(got));
		got_at[ngot] = now;
		got[ngot++] = seq;
		vr_net_pkt_free(pkts[i]);
	}
	return n;
}

static struct vr_net *pool(void)
{
	struct vr_net_conf c = { .mac = { 2, 0, 0, 0, 0, 1 }, .ip = 0x0a000001u, .prefix = 24,
				 .pkts = 4096, .tx = tx_unused };
	char err[128];
	struct vr_net *n = vr_net_new(&c, err, sizeof(err));
	assert_non_null(n);
	return n;
}

/* Feeds RUN packets in bursts of 8, one millisecond apart, then polls long enough. */
static const struct vr_fault_stats *run(struct vr_net *n, const struct vr_fault_conf *fc,
					struct vr_fault_stats *out)
{
	char err[128];
	struct vr_fault *f = vr_fault_new(fc, sink, NULL, err, sizeof(err));
	uint64_t now = 1000;

	assert_non_null(f);
	ngot = nflipped_bits = 0;
	for (uint32_t seq = 0; seq < RUN; now++) {
		struct vr_pkt *b[8];
		unsigned k = 0;
		for (; k < 8 && seq < RUN; k++, seq++) {
			b[k] = vr_net_pkt_alloc(n);
			assert_non_null(b[k]);
			memcpy(b[k]->data, &seq, 4);
			memset(b[k]->data + 4, BODY, PAYLOAD - 4);
			b[k]->len = PAYLOAD;
		}
		assert_int_equal(vr_fault_burst(f, b, k, now), k);
		vr_fault_poll(f, now);
	}
	vr_fault_poll(f, now + 100000);
	assert_int_equal(vr_fault_held(f), 0);
	*out = *vr_fault_stats(f);
	vr_fault_free(f);
	assert_int_equal(vr_net_pkt_in_use(n), 0);
	return out;
}

static void assert_near_pct(uint64_t count, double pct)
{
	double want = RUN * pct / 100.0;
	/* Four standard deviations of a binomial: fails by chance about never. */
	double var = RUN * (pct / 100.0) * (1 - pct / 100.0), sd = var;
	for (int i = 0; i < 30; i++)                      /* Newton: sqrt without libm */
		sd = (sd + var / sd) / 2;
	double slack = 4.0 * sd + 1;
	if ((double)count < want - slack || (double)count > want + slack)
		fail_msg("%llu events, wanted %.0f +- %.0f", (unsigned long long)count, want, slack);
}

static void test_clean_passes_all_in_order(void **state)
{
	struct vr_net *n = pool();
	struct vr_fault_conf fc = { .seed = 1 };
	struct vr_fault_stats st;

	run(n, &fc, &st);
	assert_int_equal(ngot, RUN);
	for (uint32_t i = 0; i < RUN; i++)
		assert_int_equal(got[i], i);
	assert_int_equal(st.in, RUN);
	assert_int_equal(st.out, RUN);
	assert_int_equal(nflipped_bits, 0);
	vr_net_free(n);
}

static void test_drop_rate_and_nothing_else_lost(void **state)
{
	struct vr_net *n = pool();
	struct vr_fault_conf fc = { .drop_pct = 3, .seed = 42 };
	struct vr_fault_stats st;

	run(n, &fc, &st);
	assert_near_pct(st.dropped, 3);
	assert_int_equal(ngot + st.dropped, RUN);
	for (unsigned i = 1; i < ngot; i++)
		assert_true(got[i] > got[i - 1]);
	vr_net_free(n);
}

static void test_duplicates_adjacent(void **state)
{
	struct vr_net *n = pool();
	struct vr_fault_conf fc = { .dup_pct = 1, .seed = 7 };
	struct vr_fault_stats st;
	unsigned twins = 0;

	run(n, &fc, &st);
	assert_near_pct(st.duplicated, 1);
	assert_int_equal(ngot, RUN + st.duplicated);
	for (unsigned i = 1; i < ngot; i++) {
		assert_true(got[i] >= got[i - 1]);
		twins += got[i] == got[i - 1];
	}
	assert_int_equal(twins, st.duplicated);
	vr_net_free(n);
}

static void test_reorder_each_once_some_late(void **state)
{
	struct vr_net *n = pool();
	struct vr_fault_conf fc = { .reorder_pct = 1, .seed = 9 };
	struct vr_fault_stats st;
	static uint8_t seen[RUN];
	unsigned late = 0;

	memset(seen, 0, sizeof(seen));
	run(n, &fc, &st);
	assert_near_pct(st.reordered, 1);
	assert_int_equal(ngot, RUN);
	uint32_t highest = 0;
	for (unsigned i = 0; i < ngot; i++) {
		assert_int_equal(seen[got[i]]++, 0);
		if (i && got[i] < highest)
			late++;
		highest = got[i] > highest ? got[i] : highest;
	}
	/* Every reordered packet arrives after one that was sent after it. */
	assert_int_equal(late, st.reordered);
	vr_net_free(n);
}

static void test_delay_follows_clock(void **state)
{
	struct vr_net *n = pool();
	struct vr_fault_conf fc = { .delay_pct = 100, .delay_ms = 50, .seed = 3, .hold = 1024 };
	char err[128];
	struct vr_fault *f = vr_fault_new(&fc, sink, NULL, err, sizeof(err));
	struct vr_pkt *p = vr_net_pkt_alloc(n);

	ngot = 0;
	uint32_t seq = 5;
	memcpy(p->data, &seq, 4);
	p->len = 4;
	vr_fault_burst(f, &p, 1, 1000);
	vr_fault_poll(f, 1049);
	assert_int_equal(ngot, 0);
	vr_fault_poll(f, 1050);
	assert_int_equal(ngot, 1);
	assert_int_equal(got_at[0], 1050);
	vr_fault_free(f);

	/* A full hold lets packets straight through, counted. */
	fc.hold = 2;
	struct vr_fault_stats st;
	run(n, &fc, &st);
	assert_int_equal(st.hold_full, RUN - st.delayed);
	assert_int_equal(ngot, RUN);
	vr_net_free(n);
}

static void test_corrupt_flips_one_bit(void **state)
{
	struct vr_net *n = pool();
	struct vr_fault_conf fc = { .corrupt_pct = 2, .seed = 11 };
	struct vr_fault_stats st;

	run(n, &fc, &st);
	assert_near_pct(st.corrupted, 2);
	/* A flip lands in the body 60 times in 64; the rest hit the sequence number. */
	assert_true(nflipped_bits <= st.corrupted);
	assert_true(nflipped_bits >= st.corrupted * 52 / PAYLOAD);
	vr_net_free(n);
}

static void test_same_seed_same_run(void **state)
{
	struct vr_net *n = pool();
	struct vr_fault_conf fc = { .drop_pct = 3, .dup_pct = 1, .reorder_pct = 1,
				    .delay_pct = 1, .delay_ms = 5, .corrupt_pct = 1, .seed = 99 };
	struct vr_fault_stats a, b;
	static uint32_t first[2 * RUN];

	run(n, &fc, &a);
	unsigned nfirst = ngot;
	memcpy(first, got, ngot * sizeof(got[0]));
	run(n, &fc, &b);
	assert_int_equal(ngot, nfirst);
	assert_memory_equal(got, first, ngot * sizeof(got[0]));
	assert_memory_equal(&a, &b, sizeof(a));
	fc.seed = 100;
	run(n, &fc, &b);
	assert_true(ngot != nfirst || memcmp(got, first, ngot * sizeof(got[0])) != 0);
	vr_net_free(n);
}

static void test_bad_conf_named(void **state)
{
	struct vr_fault_conf fc = { .reorder_pct = 101 };
	char err[128];

	assert_null(vr_fault_new(&fc, sink, NULL, err, sizeof(err)));
	assert_string_equal(err, "fault: reorder_pct is not within 0..100");
	fc.reorder_pct = -1;
	assert_null(vr_fault_new(&fc, sink, NULL, err, sizeof(err)));
	fc.reorder_pct = 0;
	assert_null(vr_fault_new(&fc, NULL, NULL, err, sizeof(err)));
	assert_string_equal(err, "fault: no sink");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean_passes_all_in_order),
		cmocka_unit_test(test_drop_rate_and_nothing_else_lost),
		cmocka_unit_test(test_duplicates_adjacent),
		cmocka_unit_test(test_reorder_each_once_some_late),
		cmocka_unit_test(test_delay_follows_clock),
		cmocka_unit_test(test_corrupt_flips_one_bit),
		cmocka_unit_test(test_same_seed_same_run),
		cmocka_unit_test(test_bad_conf_named),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
