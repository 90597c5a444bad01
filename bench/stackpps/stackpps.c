/*
 * stackpps.c - the userspace stack's packets per second on one DPDK core,
 * with no kernel anywhere: two processes, one a TCP sink, the other opening
 * connections and sending as fast as the sink's windows let it, joined by a
 * DPDK port pair (net_memif between the processes; bench/stackpps.sh).
 *
 *   vmrelay-stackpps EAL-ARGS -- --role server|client --ip A.B.C.D/N
 *                    [--peer A.B.C.D] [--port P] [--conns N] [--seconds S]
 *
 * Each process runs the stack on its main lcore, polling without pause, as a
 * relay's worker would under load: rx burst, vr_net_rx (mbufs wrapped, not
 * copied), TCP timers and output, tx burst (the stack's packets copied into
 * mbufs). After S seconds (the server: also on SIGINT or SIGTERM) it prints
 * one line of "key=value": frames in and out, their sum per second of wall
 * time (both directions: every frame is built or parsed on this core),
 * payload Gbit/s, retransmissions. The measured span leaves out the first
 * second of traffic (handshakes, slow start) and, on the server, the idle
 * time after the last byte.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "vmrelay/clock.h"
#include "vmrelay/tcp.h"

#define BURST    32
#define NB_DESC  1024
#define NB_MBUF  8191
#define PKTS     8192

struct run {
	uint16_t port;
	struct rte_mempool *mp;
	struct vr_net *net;
	struct vr_tcp *tcp;
	struct rte_mbuf *tx[BURST * 4];
	unsigned ntx;
	uint64_t tx_dropped, payload;
	int client;
	uint32_t peer;
	uint16_t tcp_port;
	unsigned conns, open;
};

static volatile sig_atomic_t force_quit;
static uint8_t junk[65536];

static void on_signal(int sig)
{
	force_quit = 1;
}

static void die(const char *what, const char *why)
{
	fprintf(stderr, "vmrelay-stackpps: %s: %s\n", what, why);
	exit(1);
}

static void tx_flush(struct run *r)
{
	uint16_t sent = rte_eth_tx_burst(r->port, 0, r->tx, (uint16_t)r->ntx);

	if (sent < r->ntx) {
		r->tx_dropped += r->ntx - sent;
		rte_pktmbuf_free_bulk(r->tx + sent, r->ntx - sent);
	}
	r->ntx = 0;
}

static unsigned port_tx(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
{
	struct run *r = arg;

	for (unsigned i = 0; i < n; i++) {
		struct rte_mbuf *m = rte_pktmbuf_alloc(r->mp);
		if (!m)
			return i;
		memcpy(rte_pktmbuf_mtod(m, uint8_t *), pkts[i]->data, pkts[i]->len);
		m->data_len = m->pkt_len = pkts[i]->len;
		vr_net_pkt_free(pkts[i]);
		r->tx[r->ntx++] = m;
		if (r->ntx == RTE_DIM(r->tx))
			tx_flush(r);
	}
	return n;
}

static void ext_free(void *arg, void *ext)
{
	rte_pktmbuf_free(ext);
}

/* --- the sink: reads and drops --- */

static void sink_readable(struct vr_tcp_conn *c, void *user, uint64_t now)
{
	struct run *r = user;
	size_t n = vr_tcp_readable(c);

	vr_tcp_consume(c, n);
	r->payload += n;
}

static void sink_closed(struct vr_tcp_conn *c, void *user, uint64_t now)
{
	sink_readable(c, user, now);
	vr_tcp_close(c);
}

static void conn_error(struct vr_tcp_conn *c, void *user, int err, uint64_t now)
{
	((struct run *)user)->open--;
}

static int sink_accept(void *arg, struct vr_tcp_conn *c, uint64_t now)
{
	struct run *r = arg;

	vr_tcp_set_user(c, r);
	r->open++;
	return 0;
}

static const struct vr_tcp_cb sink_cb = {
	.readable = sink_readable, .peer_closed = sink_closed, .error = conn_error,
};

/* --- the source: keeps every send buffer full --- */

static void source_fill(struct vr_tcp_conn *c, void *user, uint64_t now)
{
	struct run *r = user;
	ssize_t n;

	while ((n = vr_tcp_send(c, junk, sizeof(junk))) > 0)
		r->payload += (uint64_t)n;
}

static const struct vr_tcp_cb source_cb = {
	.established = source_fill, .writable = source_fill, .error = conn_error,
};

static void port_setup(struct run *r)
{
	struct rte_eth_conf conf;
	uint16_t nrx = NB_DESC, ntx = NB_DESC;

	if (rte_eth_dev_count_avail() == 0)
		die("port", "none: give one with --vdev");
	r->port = (uint16_t)rte_eth_find_next_owned_by(0, RTE_ETH_DEV_NO_OWNER);
	r->mp = rte_pktmbuf_pool_create("stackpps", NB_MBUF, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
					rte_socket_id());
	memset(&conf, 0, sizeof(conf));
	if (!r->mp || rte_eth_dev_configure(r->port, 1, 1, &conf) < 0 ||
	    rte_eth_dev_adjust_nb_rx_tx_desc(r->port, &nrx, &ntx) < 0 ||
	    rte_eth_rx_queue_setup(r->port, 0, nrx, rte_socket_id(), NULL, r->mp) < 0 ||
	    rte_eth_tx_queue_setup(r->port, 0, ntx, rte_socket_id(), NULL) < 0 ||
	    rte_eth_dev_start(r->port) < 0)
		die("port setup", rte_strerror(rte_errno));
}

static void stack_setup(struct run *r, const char *ip_prefix)
{
	struct rte_ether_addr mac;
	char ip[32], err[256];
	struct in_addr a;

	snprintf(ip, sizeof(ip), "%s", ip_prefix);
	char *slash = strchr(ip, '/');
	if (!slash || inet_pton(AF_INET, (*slash = '\0', ip), &a) != 1)
		die("--ip", "wants A.B.C.D/N");
	rte_eth_macaddr_get(r->port, &mac);
	struct vr_net_conf nc = {
		.ip = ntohl(a.s_addr), .prefix = (uint8_t)atoi(slash + 1), .pkts = PKTS,
		.tx = port_tx, .tx_arg = r, .ext_free = ext_free, .ext_arg = r,
	};
	memcpy(nc.mac, mac.addr_bytes, sizeof(nc.mac));
	if (!(r->net = vr_net_new(&nc, err, sizeof(err))))
		die("stack", err);
	struct vr_tcp_conf tc = { .max_conns = 256, .sndbuf = 256 << 10, .rcvbuf = 256 << 10 };
	if (!(r->tcp = vr_tcp_new(r->net, &tc, vr_clock_ms(), err, sizeof(err))))
		die("tcp", err);
}

static unsigned rx(struct run *r, uint64_t now)
{
	struct rte_mbuf *m[BURST];
	struct vr_pkt *p[BURST];
	unsigned k = 0;
	uint16_t n = rte_eth_rx_burst(r->port, 0, m, BURST);

	for (unsigned i = 0; i < n; i++) {
		p[k] = vr_net_pkt_wrap(r->net, rte_pktmbuf_mtod(m[i], uint8_t *), m[i]->data_len,
				       rte_pktmbuf_headroom(m[i]), rte_pktmbuf_tailroom(m[i]), m[i]);
		if (p[k])
			k++;
		else
			rte_pktmbuf_free(m[i]);
	}
	if (k)
		vr_net_rx(r->net, p, k, now);
	return n;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "role", required_argument, NULL, 'r' }, { "ip", required_argument, NULL, 'i' },
		{ "peer", required_argument, NULL, 'p' }, { "port", required_argument, NULL, 'P' },
		{ "conns", required_argument, NULL, 'c' }, { "seconds", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	struct run r = { .tcp_port = 9, .conns = 8 };
	const char *role = NULL, *ip = NULL, *peer = NULL;
	unsigned seconds = 10;
	int c, used = rte_eal_init(argc, argv);

	if (used < 0)
		die("EAL", rte_strerror(rte_errno));
	argc -= used;
	argv += used;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r': role = optarg; break;
		case 'i': ip = optarg; break;
		case 'p': peer = optarg; break;
		case 'P': r.tcp_port = (uint16_t)atoi(optarg); break;
		case 'c': r.conns = (unsigned)atoi(optarg); break;
		case 's': seconds = (unsigned)atoi(optarg); break;
		default: die("usage", "-- --role server|client --ip A.B.C.D/N [--peer A.B.C.D] "
				      "[--port P] [--conns N] [--seconds S]");
		}
	}
	if (!role || !ip || (strcmp(role, "server") && strcmp(role, "client")))
		die("usage", "--role server|client and --ip are required");
	r.client = strcmp(role, "client") == 0;
	struct in_addr pa;
	if (r.client && (!peer || inet_pton(AF_INET, peer, &pa) != 1))
		die("--peer", "the client needs the server's address");
	r.peer = r.client ? ntohl(pa.s_addr) : 0;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	port_setup(&r);
	stack_setup(&r, ip);
	if (!r.client && vr_tcp_listen(r.tcp, r.tcp_port, &sink_cb, sink_accept, &r) < 0)
		die("listen", "port in use");

	uint64_t start = vr_clock_ms(), end = start + seconds * 1000ull, opened_at = start + 500;
	uint64_t payload0 = 0, rx0 = 0, tx0 = 0, t0 = 0, first = 0;
	uint64_t t1 = 0, payload1 = 0, rx1 = 0, tx1 = 0;
	int opened = !r.client;
	const struct vr_net_stats *ns = vr_net_stats(r.net);
	while (!force_quit) {
		uint64_t now = vr_clock_ms();
		if (now >= end)
			break;
		/* Connections after a moment: both sides' gratuitous ARP first. */
		if (!opened && now >= opened_at) {
			for (unsigned i = 0; i < r.conns; i++) {
				int err;
				if (vr_tcp_connect(r.tcp, r.peer, r.tcp_port, &source_cb, &r, now, &err))
					r.open++;
			}
			opened = 1;
		}
		/* Measure from one second into the traffic. */
		if (!first && r.payload)
			first = now;
		if (first && !t0 && now >= first + 1000)
			t0 = now, payload0 = r.payload, rx0 = ns->rx_frames, tx0 = ns->tx_frames;
		uint64_t before = r.payload;
		rx(&r, now);
		vr_tcp_poll(r.tcp, now);
		tx_flush(&r);
		if (t0 && r.payload != before)
			t1 = now, payload1 = r.payload, rx1 = ns->rx_frames, tx1 = ns->tx_frames;
	}
	const struct vr_tcp_stats *ts = vr_tcp_stats(r.tcp);
	double secs = t1 > t0 ? (double)(t1 - t0) / 1000 : 0;
	uint64_t frames_in = rx1 - rx0, frames_out = tx1 - tx0, payload = payload1 - payload0;
	printf("role=%s seconds=%.2f frames_in=%llu frames_out=%llu pps=%.0f payload_gbps=%.3f "
	       "connections=%u retransmits=%llu tx_dropped=%llu\n", role, secs,
	       (unsigned long long)frames_in, (unsigned long long)frames_out,
	       secs > 0 ? (double)(frames_in + frames_out) / secs : 0,
	       secs > 0 ? (double)payload * 8 / secs / 1e9 : 0, r.open,
	       (unsigned long long)ts->retransmits, (unsigned long long)r.tx_dropped);
	vr_tcp_free(r.tcp);
	vr_net_free(r.net);
	rte_eth_dev_stop(r.port);
	rte_eth_dev_close(r.port);
	rte_eal_cleanup();
	return 0;
}
