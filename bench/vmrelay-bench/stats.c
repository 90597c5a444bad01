/*
 * stats.c - latency histogram and counters (see stats.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "stats.h"

/* Bucket of v: v itself below 128; else 64 per power of two (top 7 bits). */
static unsigned hist_index(uint64_t v)
{
	if (v < 128)
		return (unsigned)v;
	unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - 6;
	return 128 + (shift - 1) * 64 + (unsigned)((v >> shift) - 64);
}

/* The largest value that falls into bucket i. */
static uint64_t hist_upper(unsigned i)
{
	if (i < 128)
		return i;
	unsigned shift = (i - 128) / 64 + 1;
	uint64_t mant = 64 + (i - 128) % 64;
	return ((mant + 1) << shift) - 1;
}

void vr_bench_hist_add(struct vr_bench_hist *h, uint64_t v)
{
	h->bucket[hist_index(v)]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

uint64_t vr_bench_hist_quantile(const struct vr_bench_hist *h, double q)
{
	if (h->count == 0)
		return 0;
	/* The rank of the sample wanted, 1-based: at least the first. */
	uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
	uint64_t seen = 0;

	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < VR_BENCH_HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank)
			return hist_upper(i) < h->max ? hist_upper(i) : h->max;
	}
	return h->max;
}

void vr_bench_count(struct vr_bench_counts *c, const char *key)
{
	unsigned i;

	for (i = 0; i < c->n && strcmp(c->e[i].key, key) != 0; i++)
		;
	if (i == VR_BENCH_KEYS) {
		i = VR_BENCH_KEYS - 1;          /* full: the last entry is "other" */
	} else if (i == c->n) {
		c->n++;
		snprintf(c->e[i].key, sizeof(c->e[i].key), "%s",
			 i == VR_BENCH_KEYS - 1 ? "other" : key);
	}
	c->e[i].n++;
	c->total++;
}

void vr_bench_countf(struct vr_bench_counts *c, const char *fmt, ...)
{
	char key[VR_BENCH_KEY_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(key, sizeof(key), fmt, ap);
	va_end(ap);
	vr_bench_count(c, key);
}
