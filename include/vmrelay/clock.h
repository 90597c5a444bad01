/*
 * clock.h - time sources. Sessions and timers take "now" as an argument so
 * tests can drive time; these are what the real transports pass in.
 */
#ifndef VR_CLOCK_H
#define VR_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic milliseconds, for timeouts. */
static inline uint64_t vr_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Wall-clock microseconds since the epoch, for queue IDs and records. */
static inline uint64_t vr_clock_wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

#endif
