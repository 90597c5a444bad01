/*
 * netfault.h - seeded fault injection between a packet source and its sink
 * (issue 3): drop, duplicate, reorder, delay and corrupt a given percentage
 * of packets, the way `tc netem` would, for the stack's tests on a machine
 * without netem. Deterministic: the same seed, packets and clock give the
 * same faults.
 *
 * A struct vr_fault is itself a vr_net_burst_fn (vr_fault_burst), so it wraps
 * either direction: rx as source -> fault -> vr_net_rx_burst, tx as the
 * stack's conf.tx -> fault -> the real transmit. Single-threaded, like the
 * stack instance whose packets it handles; it allocates only at creation.
 */
#ifndef VR_NETFAULT_H
#define VR_NETFAULT_H

#include <stdint.h>
#include "vmrelay/net.h"

struct vr_fault_conf {
	/* Each 0..100, drawn independently per packet in this order. */
	double drop_pct;             /* freed, never delivered */
	double corrupt_pct;          /* one random bit flipped */
	double dup_pct;              /* delivered twice (a pool copy) */
	double delay_pct;            /* held for delay_ms */
	double reorder_pct;          /* held until a later packet has gone, or reorder_ms */
	uint32_t delay_ms;
	uint32_t reorder_ms;         /* 0 means 1 */
	unsigned hold;               /* packets held at most; 0 means 256; past it none is held */
	uint64_t seed;
};

struct vr_fault_stats {
	uint64_t in, out, dropped, corrupted, duplicated, delayed, reordered;
	uint64_t hold_full;          /* would have been held, went straight through */
	uint64_t refused;            /* the sink did not take them; freed */
};

struct vr_fault;

/* NULL with *err set on a bad conf or no memory. */
struct vr_fault *vr_fault_new(const struct vr_fault_conf *conf, vr_net_burst_fn sink,
			      void *sink_arg, char *err, size_t errlen);
/* Frees the packets still held, then the layer. */
void vr_fault_free(struct vr_fault *f);
/* A vr_net_burst_fn (arg is the struct vr_fault): takes all n. */
unsigned vr_fault_burst(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now);
/* Releases held packets whose time has come; call once per poll loop. */
void vr_fault_poll(struct vr_fault *f, uint64_t now);
unsigned vr_fault_held(const struct vr_fault *f);
const struct vr_fault_stats *vr_fault_stats(const struct vr_fault *f);

#endif
