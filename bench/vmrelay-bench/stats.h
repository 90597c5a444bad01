/*
 * stats.h - what a run counts: a latency histogram and failures by cause
 * (private to vmrelay-bench).
 *
 * The histogram is log-linear, as HdrHistogram's: exact below 128 ns, then
 * 64 buckets per power of two, so any percentile is within 1.6% of the true
 * value from nanoseconds to hours in 30 KiB, and adding a sample is a few
 * instructions. Failures are counted under a short text key ("DATA 451",
 * "connect: Connection refused"): there are few distinct ones in a run.
 */
#ifndef VR_BENCH_STATS_H
#define VR_BENCH_STATS_H

#include <stdint.h>
#include <time.h>

/* Monotonic nanoseconds. */
static inline uint64_t vr_bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#define VR_BENCH_HIST_BUCKETS (128 + 57 * 64)

struct vr_bench_hist {
	uint64_t count, sum, max;
	uint64_t bucket[VR_BENCH_HIST_BUCKETS];
};

void vr_bench_hist_add(struct vr_bench_hist *h, uint64_t v);
/* The value at or below which a fraction q (0..1) of the samples lie: the
 * upper edge of its bucket, never above the largest sample. 0 if empty. */
uint64_t vr_bench_hist_quantile(const struct vr_bench_hist *h, double q);

#define VR_BENCH_KEY_MAX 64
#define VR_BENCH_KEYS 64

/* Counters under text keys; past VR_BENCH_KEYS distinct keys, "other". */
struct vr_bench_counts {
	unsigned n;
	uint64_t total;
	struct {
		char key[VR_BENCH_KEY_MAX];
		uint64_t n;
	} e[VR_BENCH_KEYS];
};

void vr_bench_count(struct vr_bench_counts *c, const char *key);
void vr_bench_countf(struct vr_bench_counts *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
