/*
 * port.h - one DPDK port with one queue pair and a userspace stack
 * (engine/net) on it, polled from one lcore, with no kernel in the data
 * path: what vmrelay-bench's DPDK client (dpdk.c) and vmrelay-stackpps
 * (bench/stackpps/) both run on. Private to the benchmarks.
 *
 * The poll loop of its owner:
 *
 *     vr_bench_port_rx(p, now);        frames in, the stack's callbacks fire
 *     ...
 *     vr_tcp_poll(tcp, now);           the stack's output, through conf.tx
 *     vr_bench_port_flush(p);          the gathered frames leave
 *
 * Received frames are not copied: each mbuf is wrapped in a stack packet
 * (vr_net_pkt_wrap) and freed when the stack is done with it. Packets the
 * stack builds are copied into mbufs on the way out. Threads: one, the
 * owner's, after the EAL is up.
 */
#ifndef VR_BENCH_PORT_H
#define VR_BENCH_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "vmrelay/net.h"

struct vr_bench_port;

/*
 * Splits an EAL line the way vmrelay's [dpdk] eal is split (no shell) and
 * starts the EAL, prog as argv[0]. Once per process. 0, or -1 with err.
 */
int vr_bench_eal_init(const char *prog, const char *line, char *err, size_t errlen);

/*
 * The first port the EAL found, started with one rx and one tx queue, and a
 * stack on it for ip ("A.B.C.D/N") with pkts packet descriptors. NULL with
 * err.
 */
struct vr_bench_port *vr_bench_port_new(const char *ip, unsigned pkts, char *err, size_t errlen);
void vr_bench_port_free(struct vr_bench_port *p);

struct vr_net *vr_bench_port_net(const struct vr_bench_port *p);
/* "net_memif0 mac=02:..." for reports. */
const char *vr_bench_port_name(const struct vr_bench_port *p);
/* Waits up to ms for the port's link to come up (a memif peer to connect):
 * 0, or -1 if it did not. */
int vr_bench_port_wait_link(const struct vr_bench_port *p, unsigned ms);
/* One rx burst into the stack; returns the frames received. */
unsigned vr_bench_port_rx(struct vr_bench_port *p, uint64_t now);
/* Sends the frames the stack gave since the last flush; returns how many. */
unsigned vr_bench_port_flush(struct vr_bench_port *p);
/* Frames the port's tx queue or the mbuf pool refused, so far. */
uint64_t vr_bench_port_tx_dropped(const struct vr_bench_port *p);
/* Frames the port lost on the way in (missed, errors, no mbuf), so far. */
uint64_t vr_bench_port_rx_missed(const struct vr_bench_port *p);

#endif
