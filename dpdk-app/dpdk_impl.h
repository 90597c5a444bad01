/*
 * dpdk_impl.h - what dpdk.c (EAL, port, lifecycle) and lcore.c (the poll
 * loop) share. Private to dpdk-app.
 *
 * Threads: struct vr_dpdk is written by the main thread before the workers
 * are launched and read-only while they run, except `stop` (any thread) and
 * each worker's inbox ring (multi-producer: any worker; single consumer: its
 * owner). A struct dpdk_worker belongs to its lcore while it runs.
 */
#ifndef VR_DPDK_IMPL_H
#define VR_DPDK_IMPL_H

#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "vmrelay/config.h"
#include "vmrelay/iostack.h"
#include "vmrelay/net.h"
#include "vmrelay/smtp.h"
#include "vmrelay/tcp.h"
#include "dpdk.h"

#define DPDK_BURST     VR_NET_BURST
#define DPDK_TX_MAX    (4 * DPDK_BURST)  /* mbufs gathered before a tx burst */
#define DPDK_INBOX     4096              /* frames steered to a worker, waiting */
#define DPDK_RSS_KEY   40
#define DPDK_GRACE_MS  5000              /* sessions in flight may finish after stop */
#define DPDK_WAKE_MAX  64                /* the port's fds an idle worker waits on */

/* Counters of one worker, written by it only. */
struct dpdk_worker_stats {
	uint64_t steered;            /* frames passed to their flow's owner */
	uint64_t inbox_full;         /* ... dropped: the owner's ring was full */
	uint64_t arp_copies;         /* ARP replies copied to every other worker */
	uint64_t rx_multiseg;        /* chained mbufs: more than one buffer a frame */
	uint64_t no_desc;            /* the stack had no packet descriptor */
	uint64_t tx_nombuf;          /* no mbuf to copy a stack packet into */
	uint64_t tx_full;            /* the port's tx queue took fewer than offered */
};

struct dpdk_worker {
	struct vr_dpdk *d;
	unsigned id;                 /* = queue = the spool's worker index */
	unsigned lcore;
	struct vr_net *net;
	struct vr_fault *rx_fault;   /* [dpdk] fault: between the port and the stack */
	struct vr_fault *tx_fault;
	struct vr_tcp *tcp;
	struct vr_iostack *stack;    /* SMTP over tcp */
	struct rte_ring *inbox;
	struct rte_mbuf *tx[DPDK_TX_MAX];
	unsigned ntx;
	struct dpdk_worker_stats st;
	int rc;
} __rte_cache_aligned;

struct vr_dpdk {
	struct vr_smtpd *srv;
	const struct vr_config *cfg;
	uint16_t port;
	char port_name[RTE_DEV_NAME_MAX_LEN];
	struct rte_ether_addr mac;
	uint32_t ip, gateway;        /* host order */
	uint8_t prefix;
	uint8_t ip6[16], gateway6[16];   /* [dpdk] ip6, gateway6; all zero: none */
	uint8_t prefix6;
	uint16_t mtu;
	bool rss;                    /* the port spreads flows over the queues itself */
	bool port_started;
	unsigned reta_size;          /* flows are owned by hash % reta_size % workers */
	uint8_t rss_key[DPDK_RSS_KEY];
	unsigned n_workers;
	int wake_fd[DPDK_WAKE_MAX];  /* readable when the port has frames (wake.c) */
	unsigned n_wake;             /* 0: the port has none, workers nap on a timer */
	struct rte_mempool *mp;
	struct vr_iostack_shared *sh;/* per-client connection counts, all workers */
	atomic_bool stop;            /* set by vr_dpdk_stop; workers poll it */
	sem_t ended;                 /* posted by each worker as it returns */
	struct dpdk_worker *w;
};

/* wake.c: fills d->wake_fd from the started port; returns how many. */
unsigned vr_dpdk_wake_fds(struct vr_dpdk *d);

/* lcore.c */
int vr_dpdk_worker_main(void *arg);
/* conf.tx of a worker's stack: arg is the struct dpdk_worker. */
unsigned vr_dpdk_tx(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now);
/* conf.ext_free: gives a wrapped mbuf back. */
void vr_dpdk_ext_free(void *arg, void *ext);

#endif
