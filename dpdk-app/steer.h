/*
 * steer.h - which poll-mode worker owns a received frame (steer.c): the
 * one whose queue the flow's Toeplitz hash deals it to. Apart from lcore.c
 * so that it is unit-tested (test_dpdk_steer.c) without an EAL or a port.
 *
 * Pure functions of their arguments: any thread.
 */
#ifndef VR_DPDK_STEER_H
#define VR_DPDK_STEER_H

#include <stdbool.h>
#include <stdint.h>

/* The port's dealing of flows: owned by hash % reta_size % n_workers. */
struct vr_dpdk_steer {
	unsigned n_workers, reta_size;
	const uint8_t *rss_key;      /* the port's 40-byte Toeplitz key */
};

/*
 * The worker owning Ethernet frame f (len bytes) that worker self
 * received: for IPv4 TCP (unfragmented) and IPv6 TCP (no extension
 * headers) the owner of its 4-tuple, for an ICMP fragmentation-needed or
 * ICMPv6 packet-too-big the owner of the TCP flow it quotes, for anything
 * else self (ARP, pings, ND: any worker answers). rss is the port's RSS
 * hash of the frame, or NULL where the port gave none. *share is set for
 * an ARP reply or neighbour advertisement, which every worker needs.
 */
unsigned vr_dpdk_frame_owner(const struct vr_dpdk_steer *s, const uint8_t *f, unsigned len,
			     const uint32_t *rss, unsigned self, bool *share);

#endif
