/*
 * lease.c - the arithmetic of quota leases: how big a block a VPS gets from
 * its sending rate, and the share of each limit a node may use alone while
 * Redis is away. Pure functions of their arguments, for the cluster thread
 * only.
 */
#include <math.h>

#include "vmrelay/common.h"

#include "cluster_impl.h"

#define HALF_LIFE_MS 5000.0

double vr_cl_rate_update(double rate, uint64_t taken, uint64_t dt_ms)
{
	if (dt_ms == 0)
		return rate;
	/* Exponential smoothing in continuous time: a sample of dt counts for
	 * 1 - 2^(-dt / half-life), so irregular ticks weigh what they cover. */
	double w = 1.0 - exp2(-(double)dt_ms / HALF_LIFE_MS);
	double sample = (double)taken * 1000.0 / (double)dt_ms;
	return rate + w * (sample - rate);
}

uint32_t vr_cl_lease_want(const struct vr_cl_sizing *sz, double rate)
{
	/* a quarter more than a lease's life of mail: the block outlasts the
	 * renewal near the end of that life even if the rate was
	 * underestimated, so one call a life both renews and tops up */
	double want = ceil(rate * (double)sz->ttl_s * 1.25);

	if (!(want > (double)sz->lease_min))    /* also NaN */
		return sz->lease_min;
	if (want > (double)sz->lease_max)
		return sz->lease_max;
	return (uint32_t)want;
}

uint32_t vr_cl_lease_fit(const struct vr_cl_sizing *sz, uint32_t want, uint32_t headroom)
{
	return VR_MIN(want, VR_MAX(sz->lease_min, headroom / 3));
}

uint32_t vr_cl_lease_low(uint32_t want)
{
	return (want + 7) / 8;
}

/* The calendar window of each kind that now falls in. */
static void windows_at(int64_t now, int64_t at[VR_RL_NWINDOWS])
{
	at[VR_RL_MINUTE] = now / 60;
	at[VR_RL_HOUR] = now / 3600;
	at[VR_RL_DAY] = now / 86400;
}

uint32_t vr_cl_failsafe_grant(struct vr_cl_failsafe *fs, const uint32_t limit[VR_RL_NWINDOWS],
			      uint32_t percent, int64_t now, uint32_t want)
{
	int64_t at[VR_RL_NWINDOWS];
	uint32_t grant = want;

	windows_at(now, at);
	for (int w = 0; w < VR_RL_NWINDOWS; w++) {
		if (fs->at[w] != at[w]) {
			fs->at[w] = at[w];
			fs->n[w] = 0;
		}
		uint32_t share = (uint32_t)((uint64_t)limit[w] * percent / 100u);
		grant = VR_MIN(grant, share > fs->n[w] ? share - fs->n[w] : 0);
	}
	for (int w = 0; w < VR_RL_NWINDOWS; w++)
		fs->n[w] += grant;
	return grant;
}

void vr_cl_failsafe_return(struct vr_cl_failsafe *fs, int64_t now, uint32_t n)
{
	int64_t at[VR_RL_NWINDOWS];

	windows_at(now, at);
	for (int w = 0; w < VR_RL_NWINDOWS; w++)
		if (fs->at[w] == at[w])
			fs->n[w] -= VR_MIN(fs->n[w], n);
}
