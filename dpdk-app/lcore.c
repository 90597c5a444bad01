/*
 * lcore.c - a poll-mode worker: one per worker lcore, pinned there by the
 * EAL, running `while (!stop)`: rx burst from its queue, frames steered to
 * the worker that owns their flow, the stack (its TCP calls the SMTP
 * sessions back, engine/io/stack.c), the sessions' timers and spool
 * completions, TCP's timers and output, tx burst.
 *
 * On stop the worker stops accepting and serves the sessions in flight for
 * up to DPDK_GRACE_MS, then resets what is left and sends those resets
 * before it returns.
 *
 * Steering (steer.c): a TCP frame belongs to the worker its 4-tuple hashes
 * to (see dpdk.c); one that arrives elsewhere is passed to the owner's inbox
 * ring and the owner processes it with its own. ARP replies are copied to every worker,
 * since each stack keeps its own neighbour cache and the reply to a request
 * one worker sent may arrive at another. An ICMP fragmentation-needed or
 * ICMPv6 packet-too-big belongs to the worker owning the TCP flow it quotes
 * (the quoted header is one we sent: its 4-tuple, turned round, hashes as
 * the flow's frames do). Everything else (ARP requests, pings, ND
 * solicitations) is answered by whichever worker receives it.
 *
 * Received frames are not copied: each mbuf is wrapped in a stack packet
 * descriptor (vr_net_pkt_wrap) and given back through ext_free when the stack
 * is done with it; a reply built in place (an ICMP echo) leaves in the very
 * mbuf it came in. Measured under smtp-source (6 KB messages, 20 sessions):
 * wrapping costs about 55 cycles a frame, copying into a pool packet 130 to
 * 230, against some 4000 for the stack and the session behind it. Packets
 * the stack builds in its own pool are copied into an mbuf on the way out.
 */
#include <poll.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <urcu-qsbr.h>

#include "vmrelay/clock.h"
#include "vmrelay/log.h"
#include "dpdk_impl.h"
#include "steer.h"

/*
 * A worker that found nothing to do IDLE_ROUNDS rounds in a row sleeps. Where
 * the port has wake fds (net_af_packet's sockets, wake.c) it sleeps until a
 * frame arrives, a commit of its own completes or IDLE_WAIT_US passes (TCP's
 * and the sessions' timers count milliseconds): an idle worker costs nothing
 * and wakes as a kernel-socket server would, on the frame itself. Elsewhere
 * it naps, first IDLE_SLEEP_MIN_US, doubling while it stays idle up to
 * IDLE_SLEEP_MAX_US while it has connections and IDLE_SLEEP_EMPTY_US while it
 * has none: an idle relay then costs a few percent of a core instead of all
 * of it (this matters on machines that share their cores, where a spinning
 * worker also slows the threads it waits for), a busy one notices its next
 * frame within tens of microseconds, and an empty one within a millisecond.
 * Either sleep also ends when the spool's completion eventfd fires, so a
 * commit ends it at once: sessions waiting for their 250 are most of what a
 * busy worker waits for. The worker's timer slack is 1 us, so that short
 * sleeps are short.
 *
 * On the bench's veth path (2 cpus, smtp-source, 20 sessions), capping the
 * timed nap at 1 ms gave 0.55x kernel mode's msgs/s, at 64 us 0.65-0.7x, and
 * never sleeping 0.4-0.9x from run to run. Sleeping on the packet socket
 * instead cut the worker's share of the relay's cpu from 55% to 43% (ppoll
 * from 20% of its time to 8%), and with one session at a time it took 0.36
 * to 0.55 cpu seconds per 1000 messages where the timed nap took 0.72 to 0.91.
 */
#define IDLE_ROUNDS          64
#define IDLE_SLEEP_MIN_US    4
#define IDLE_SLEEP_MAX_US    64
#define IDLE_SLEEP_EMPTY_US  1000
#define IDLE_WAIT_US         1000

/* The worker owning m's flow (steer.c); *arp_reply for a frame every worker needs. */
static unsigned frame_owner(const struct dpdk_worker *w, const struct rte_mbuf *m,
			    bool *arp_reply)
{
	const struct vr_dpdk *d = w->d;
	const struct vr_dpdk_steer st = {
		.n_workers = d->n_workers, .reta_size = d->reta_size, .rss_key = d->rss_key,
	};
	bool hw = d->rss && (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH);

	return vr_dpdk_frame_owner(&st, rte_pktmbuf_mtod(m, const uint8_t *), m->data_len,
				   hw ? &m->hash.rss : NULL, w->id, arp_reply);
}

/* Hands frames to this worker's stack, each mbuf wrapped, not copied. */
static void rx_local(struct dpdk_worker *w, struct rte_mbuf **m, unsigned n, uint64_t now)
{
	struct vr_pkt *pkts[DPDK_BURST];
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++) {
		struct vr_pkt *p = vr_net_pkt_wrap(w->net, rte_pktmbuf_mtod(m[i], uint8_t *),
						   m[i]->data_len, rte_pktmbuf_headroom(m[i]),
						   rte_pktmbuf_tailroom(m[i]), m[i]);
		if (!p) {
			vr_net_count(&w->st.no_desc, 1);
			rte_pktmbuf_free(m[i]);
			continue;
		}
		if ((m[i]->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD)
			p->flags |= VR_PKT_RX_IP_CSUM_OK;
		pkts[k++] = p;
	}
	if (k && w->rx_fault)
		vr_fault_burst(w->rx_fault, pkts, k, now);
	else if (k)
		vr_net_rx(w->net, pkts, k, now);
}

/* Copies an ARP reply (or neighbour advertisement) into every other worker's inbox. */
static void arp_share(struct dpdk_worker *w, struct rte_mbuf *m)
{
	struct vr_dpdk *d = w->d;

	for (unsigned i = 0; i < d->n_workers; i++) {
		if (i == w->id)
			continue;
		struct rte_mbuf *c = rte_pktmbuf_copy(m, d->mp, 0, UINT32_MAX);
		if (!c || rte_ring_enqueue(d->w[i].inbox, c) < 0) {
			vr_net_count(&w->st.inbox_full, 1);
			if (c)
				rte_pktmbuf_free(c);
			continue;
		}
		vr_net_count(&w->st.arp_copies, 1);
	}
}

/* One rx burst from our queue: ours to the stack, the rest to their owners. */
static unsigned rx_port(struct dpdk_worker *w, uint64_t now)
{
	struct vr_dpdk *d = w->d;
	struct rte_mbuf *m[DPDK_BURST], *mine[DPDK_BURST];
	unsigned k = 0;
	uint16_t n = rte_eth_rx_burst(d->port, (uint16_t)w->id, m, DPDK_BURST);

	for (unsigned i = 0; i < n; i++) {
		bool arp_reply;
		if (m[i]->nb_segs != 1) {
			vr_net_count(&w->st.rx_multiseg, 1);
			rte_pktmbuf_free(m[i]);
			continue;
		}
		unsigned owner = frame_owner(w, m[i], &arp_reply);
		if (arp_reply)
			arp_share(w, m[i]);
		if (owner == w->id) {
			mine[k++] = m[i];
		} else if (rte_ring_enqueue(d->w[owner].inbox, m[i]) == 0) {
			vr_net_count(&w->st.steered, 1);
		} else {
			vr_net_count(&w->st.inbox_full, 1);
			rte_pktmbuf_free(m[i]);
		}
	}
	rx_local(w, mine, k, now);
	return n;
}

/* Frames other workers received for our flows. */
static unsigned rx_inbox(struct dpdk_worker *w, uint64_t now)
{
	struct rte_mbuf *m[DPDK_BURST];
	unsigned n = rte_ring_dequeue_burst(w->inbox, (void **)m, DPDK_BURST, NULL);

	rx_local(w, m, n, now);
	return n;
}

static void tx_flush(struct dpdk_worker *w)
{
	if (!w->ntx)
		return;
	uint16_t sent = rte_eth_tx_burst(w->d->port, (uint16_t)w->id, w->tx, (uint16_t)w->ntx);
	if (sent < w->ntx) {
		vr_net_count(&w->st.tx_full, w->ntx - sent);
		rte_pktmbuf_free_bulk(w->tx + sent, w->ntx - sent);
	}
	w->ntx = 0;
}

unsigned vr_dpdk_tx(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
{
	struct dpdk_worker *w = arg;

	for (unsigned i = 0; i < n; i++) {
		struct vr_pkt *p = pkts[i];
		struct rte_mbuf *m = p->ext;
		if (m) {
			/* A received frame answered in place: send its own mbuf. */
			m->data_off = (uint16_t)(p->data - (uint8_t *)m->buf_addr);
			p->ext = NULL;
		} else {
			m = rte_pktmbuf_alloc(w->d->mp);
			if (!m) {
				vr_net_count(&w->st.tx_nombuf, 1);
				return i;       /* the stack frees the rest */
			}
			memcpy(rte_pktmbuf_mtod(m, uint8_t *), p->data, p->len);
		}
		m->data_len = m->pkt_len = p->len;
		m->ol_flags = 0;
		vr_net_pkt_free(p);
		w->tx[w->ntx++] = m;
		if (w->ntx == DPDK_TX_MAX)
			tx_flush(w);
	}
	return n;
}

void vr_dpdk_ext_free(void *arg, void *ext)
{
	rte_pktmbuf_free(ext);
}

/* The worker's counters, and every drop reason that counted, at its end. */
static void worker_log_stats(const struct dpdk_worker *w)
{
	const struct vr_net_stats *ns = vr_net_stats(w->net);
	const struct vr_tcp_stats *ts = vr_tcp_stats(w->tcp);
	char drops[1024];
	size_t n = 0;

	drops[0] = '\0';
	for (unsigned i = 0; i < VR_NET_DROP_MAX && n < sizeof(drops); i++)
		if (ns->drop[i])
			n += (size_t)snprintf(drops + n, sizeof(drops) - n, " net_%s=%llu",
					      vr_net_drop_name(i), (unsigned long long)ns->drop[i]);
	for (unsigned i = 0; i < VR_TCP_DROP_MAX && n < sizeof(drops); i++)
		if (ts->drop[i])
			n += (size_t)snprintf(drops + n, sizeof(drops) - n, " tcp_%s=%llu",
					      vr_tcp_drop_name(i), (unsigned long long)ts->drop[i]);
	vr_log_info("event=worker_stats worker=%u lcore=%u rx_frames=%llu tx_frames=%llu "
		    "steered=%llu inbox_full=%llu arp_copies=%llu no_desc=%llu tx_nombuf=%llu "
		    "tx_full=%llu tcp_passive_opens=%llu tcp_resets_out=%llu "
		    "tcp_retransmits=%llu tcp_syn_queue_full=%llu tcp_cookies_sent=%llu "
		    "tcp_cookies_accepted=%llu tcp_challenge_acks=%llu%s", w->id, w->lcore,
		    (unsigned long long)ns->rx_frames,
		    (unsigned long long)ns->tx_frames, (unsigned long long)w->st.steered,
		    (unsigned long long)w->st.inbox_full, (unsigned long long)w->st.arp_copies,
		    (unsigned long long)w->st.no_desc, (unsigned long long)w->st.tx_nombuf,
		    (unsigned long long)w->st.tx_full, (unsigned long long)ts->passive_opens,
		    (unsigned long long)ts->resets_out, (unsigned long long)ts->retransmits,
		    (unsigned long long)ts->syn_queue_full, (unsigned long long)ts->cookies_sent,
		    (unsigned long long)ts->cookies_accepted, (unsigned long long)ts->challenge_acks,
		    drops);
	for (int i = 0; i < 2 && w->rx_fault; i++) {
		const struct vr_fault_stats *f = vr_fault_stats(i ? w->tx_fault : w->rx_fault);
		vr_log_info("event=fault_stats worker=%u dir=%s in=%llu dropped=%llu corrupted=%llu "
			    "duplicated=%llu delayed=%llu reordered=%llu", w->id, i ? "tx" : "rx",
			    (unsigned long long)f->in, (unsigned long long)f->dropped,
			    (unsigned long long)f->corrupted, (unsigned long long)f->duplicated,
			    (unsigned long long)f->delayed, (unsigned long long)f->reordered);
	}
}

/* Sleeps up to us, or until the spool completes a commit of ours or, where
 * the port has wake fds, until a frame arrives. */
static void worker_nap(const struct dpdk_worker *w, unsigned us)
{
	const struct vr_dpdk *d = w->d;
	const struct vr_spool *sp = d->srv->spool;
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)us * 1000 };
	struct pollfd pfd[1 + DPDK_WAKE_MAX];

	pfd[0] = (struct pollfd){ .fd = sp ? vr_spool_done_fd(sp, w->id) : -1, .events = POLLIN };
	for (unsigned i = 0; i < d->n_wake; i++)
		pfd[1 + i] = (struct pollfd){ .fd = d->wake_fd[i], .events = POLLIN };
	if (ppoll(pfd, 1 + d->n_wake, &ts, NULL) <= 0)
		return;
	/* A socket whose interface went down stays in error until that is
	 * read: left so, every sleep would end at once. */
	for (unsigned i = 0; i < d->n_wake; i++)
		if (pfd[1 + i].revents & POLLERR) {
			int e;
			socklen_t len = sizeof(e);
			getsockopt(pfd[1 + i].fd, SOL_SOCKET, SO_ERROR, &e, &len);
		}
}

/* One round of the loop; returns how much it did (0: idle). */
static unsigned worker_round(struct dpdk_worker *w, uint64_t now)
{
	unsigned work = rx_port(w, now) + rx_inbox(w, now);

	if (w->rx_fault) {
		vr_fault_poll(w->rx_fault, now);
		vr_fault_poll(w->tx_fault, now);
		/* held frames are work still to do: no napping on them */
		work += vr_fault_held(w->rx_fault) + vr_fault_held(w->tx_fault);
	}
	vr_iostack_poll(w->stack, now);
	vr_tcp_poll(w->tcp, now);       /* and vr_net_poll */
	work += w->ntx;
	tx_flush(w);
	return work;
}

int vr_dpdk_worker_main(void *arg)
{
	struct dpdk_worker *w = arg;
	struct vr_dpdk *d = w->d;
	uint64_t grace_until = 0;
	unsigned idle = 0, nap_us = IDLE_SLEEP_MIN_US;

	/* Sessions read the RCU-published accounts and windows. */
	rcu_register_thread();
	/* never waits for the log: lines go through its ring */
	vr_log_thread_async();
	prctl(PR_SET_TIMERSLACK, 1000ul);
	vr_log_info("event=worker_start worker=%u lcore=%u", w->id, w->lcore);
	for (;;) {
		/* DESIGN: a quiescent state once per loop (QSBR); no table
		 * pointer is held from one round to the next. */
		rcu_quiescent_state();
		uint64_t now = vr_clock_ms();
		/* Acquire pairs with vr_dpdk_stop's release; a round late is fine. */
		if (!grace_until && atomic_load_explicit(&d->stop, memory_order_acquire)) {
			vr_iostack_stop(w->stack);
			grace_until = now + DPDK_GRACE_MS;
			vr_log_info("event=worker_stopping worker=%u connections=%u", w->id,
				    vr_iostack_conns(w->stack));
		}
		if (grace_until && (vr_iostack_conns(w->stack) == 0 || now >= grace_until))
			break;
		if (worker_round(w, now)) {
			idle = 0;
			nap_us = IDLE_SLEEP_MIN_US;
		} else if (++idle >= IDLE_ROUNDS) {
			/* A registered RCU reader sleeps offline (ratelimit.h). */
			unsigned cap = vr_iostack_conns(w->stack) ? IDLE_SLEEP_MAX_US
								  : IDLE_SLEEP_EMPTY_US;
			if (d->n_wake)  /* a frame ends the sleep: no need to start short */
				nap_us = cap = IDLE_WAIT_US;
			rcu_thread_offline();
			worker_nap(w, VR_MIN(nap_us, cap));
			rcu_thread_online();
			nap_us = VR_MIN(nap_us * 2, cap);
		}
	}
	/* Whatever outlived the grace is reset, and the resets leave now. */
	vr_iostack_free(w->stack);
	w->stack = NULL;
	vr_tcp_poll(w->tcp, vr_clock_ms());
	tx_flush(w);
	worker_log_stats(w);
	rcu_unregister_thread();
	sem_post(&d->ended);
	return 0;
}

/* --- the workers' counters, for the control thread (stats, metrics) --- */

enum io_src { SRC_NET, SRC_TCP, SRC_WORKER, SRC_NET_DROPS, SRC_TCP_DROPS };

#define NET(f, h) { #f, h, SRC_NET, offsetof(struct vr_net_stats, f) }
#define TCP(f, h) { "tcp_" #f, h, SRC_TCP, offsetof(struct vr_tcp_stats, f) }
#define WRK(f, h) { #f, h, SRC_WORKER, offsetof(struct dpdk_worker_stats, f) }

static const struct vr_ctl_io_counter io_counters[] = {
	NET(rx_frames, "Frames the worker's stack received."),
	NET(rx_bytes, "Octets of the frames the worker's stack received."),
	NET(tx_frames, "Frames the worker's stack sent."),
	NET(tx_bytes, "Octets of the frames the worker's stack sent."),
	NET(arp_requests_rx, "ARP requests received."),
	NET(arp_replies_tx, "ARP replies sent."),
	NET(icmp_echo_rx, "ICMP echo requests received."),
	NET(icmp_pmtu_rx, "ICMP fragmentation-needed and ICMPv6 packet-too-big received."),
	{ "net_dropped", "Frames the stack dropped below TCP, for any reason (the "
	  "reasons are in the worker_stats log line at exit).", SRC_NET_DROPS, 0 },
	WRK(steered, "Frames passed to the worker owning their flow."),
	WRK(inbox_full, "Frames dropped: the owning worker's inbox was full."),
	WRK(arp_copies, "ARP replies copied to the other workers."),
	WRK(rx_multiseg, "Frames dropped for spanning more than one buffer."),
	WRK(no_desc, "Frames dropped: the stack had no packet descriptor."),
	WRK(tx_nombuf, "Packets not sent: no mbuf to copy them into."),
	WRK(tx_full, "Frames dropped: the port's tx queue was full."),
	TCP(segs_in, "TCP segments received."),
	TCP(segs_out, "TCP segments sent."),
	TCP(passive_opens, "TCP connections accepted (SYN answered)."),
	TCP(established, "TCP connections established."),
	TCP(resets_in, "TCP resets received."),
	TCP(resets_out, "TCP resets sent."),
	TCP(retransmits, "TCP segments sent again, for any reason."),
	TCP(rto_expired, "TCP retransmission timeouts."),
	TCP(fast_retransmits, "TCP fast retransmits."),
	TCP(syn_queue_full, "SYNs that found the SYN queue full."),
	TCP(cookies_sent, "SYN cookies sent."),
	TCP(cookies_accepted, "ACKs accepted for a SYN cookie."),
	TCP(challenge_acks, "Challenge ACKs sent (RFC 5961)."),
	TCP(timeouts, "TCP connections given up on."),
	TCP(pmtu_updates, "Path MTU messages that lowered a connection's MSS."),
	{ "tcp_dropped", "TCP segments dropped, for any reason.", SRC_TCP_DROPS, 0 },
};

static uint64_t load(const void *base, size_t offset)
{
	/* Pairs with the single writer's plain or relaxed store: a figure an
	 * increment old is fine, a torn one impossible (aligned 64 bits). */
	return __atomic_load_n((const uint64_t *)((const char *)base + offset), __ATOMIC_RELAXED);
}

static uint64_t io_read(void *arg, unsigned id, const struct vr_ctl_io_counter *k)
{
	const struct dpdk_worker *w = &((const struct vr_dpdk *)arg)->w[id];
	const struct vr_net_stats *ns = vr_net_stats(w->net);
	const struct vr_tcp_stats *ts = vr_tcp_stats(w->tcp);
	uint64_t sum = 0;

	switch ((enum io_src)k->src) {
	case SRC_NET:
		return load(ns, k->offset);
	case SRC_TCP:
		return load(ts, k->offset);
	case SRC_WORKER:
		return load(&w->st, k->offset);
	case SRC_NET_DROPS:
		for (unsigned i = 0; i < VR_NET_DROP_MAX; i++)
			sum += load(ns->drop, i * sizeof(ns->drop[0]));
		return sum;
	case SRC_TCP_DROPS:
		for (unsigned i = 0; i < VR_TCP_DROP_MAX; i++)
			sum += load(ts->drop, i * sizeof(ts->drop[0]));
		return sum;
	}
	return 0;
}

void vr_dpdk_ctl_io(struct vr_dpdk *d, struct vr_ctl_io *out)
{
	*out = (struct vr_ctl_io){
		.counters = io_counters, .n = VR_ARRAY_SIZE(io_counters),
		.read = io_read, .arg = d,
	};
}
