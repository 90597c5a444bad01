/*
 * io.h - how vmrelay-bench's client sessions (client.c) reach the server:
 * a small table of functions, as OpenSMTPD puts its queue backends behind
 * one, so the sessions are written once for every transport.
 *
 *   io_kernel.c  kernel sockets over epoll (the default)
 *   io_dpdk.c    our userspace TCP/IP stack (engine/net) on one DPDK port
 *                (net_memif, a NIC), polled without pause on the main lcore:
 *                no kernel socket in the data path (--dpdk)
 *
 * A transport opens connections into a struct vr_bench_conn (setting the
 * conn's byte-moving ops, conn.h) and reports what happened to them as
 * epoll-style events, edge-triggered: EPOLLIN when there is something new
 * to read (or the end of stream), EPOLLOUT when a connection completes or
 * has room again after a short send, EPOLLERR/EPOLLHUP when it failed.
 * Each event carries the tag the connection was opened with; the
 * transport's signal fd (SIGINT, SIGTERM) reports as VR_BENCH_IO_SIGNAL.
 * Threads: one, the client's.
 */
#ifndef VR_BENCH_IO_H
#define VR_BENCH_IO_H

#include <stdint.h>
#include <sys/epoll.h>

#include "bench.h"
#include "conn.h"

#define VR_BENCH_IO_SIGNAL UINT64_MAX

struct vr_bench_event {
	uint64_t tag;
	uint32_t events;             /* EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP */
};

struct vr_bench_io {
	const struct vr_bench_io_ops *ops;
};

struct vr_bench_io_ops {
	/*
	 * Starts connecting c to the target, from src (NULL: any address); an
	 * event with tag follows when it completed or failed. 0, or -errno with
	 * *step naming what failed ("socket", "bind", "connect").
	 */
	int (*connect)(struct vr_bench_io *io, struct vr_bench_conn *c,
		       const struct vr_bench_addr *src, uint64_t tag, const char **step);
	/* After c's first event: 0 if it is connected, else the errno. */
	int (*connected)(struct vr_bench_conn *c);
	/* Up to max events, waiting at most ms for the first. -errno on failure. */
	int (*wait)(struct vr_bench_io *io, struct vr_bench_event *ev, int max, int ms);
	/* Figures for the report: "transport" and its counters (may be NULL). */
	void (*describe)(struct vr_bench_io *io, char *out, size_t len);
	void (*free)(struct vr_bench_io *io);
};

/* Both NULL with err. sigfd stays the caller's. */
struct vr_bench_io *vr_bench_io_kernel_new(const struct vr_bench_cfg *cfg, int sigfd, char *err,
					   size_t errlen);
struct vr_bench_io *vr_bench_io_dpdk_new(const struct vr_bench_cfg *cfg, int sigfd, char *err,
					 size_t errlen);

#endif
