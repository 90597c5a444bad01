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
 * mbufs); the port and the stack on it are vmrelay-bench's (port.h), the
 * same its --dpdk client runs on. After S seconds (the server: also on SIGINT or SIGTERM) it prints
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

#include "vmrelay/clock.h"
#include "vmrelay/tcp.h"
#include "port.h"

#define PKTS     8192

struct run {
	struct vr_bench_port *port;
	struct vr_net *net;
	struct vr_tcp *tcp;
	uint64_t payload;
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

static void stack_setup(struct run *r, const char *ip)
{
	char err[256];

	if (!(r->port = vr_bench_port_new(ip, PKTS, err, sizeof(err))))
		die("port", err);
	r->net = vr_bench_port_net(r->port);
	struct vr_tcp_conf tc = { .max_conns = 256, .sndbuf = 256 << 10, .rcvbuf = 256 << 10 };
	if (!(r->tcp = vr_tcp_new(r->net, &tc, vr_clock_ms(), err, sizeof(err))))
		die("tcp", err);
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
		vr_bench_port_rx(r.port, now);
		vr_tcp_poll(r.tcp, now);
		vr_bench_port_flush(r.port);
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
	       (unsigned long long)ts->retransmits,
	       (unsigned long long)vr_bench_port_tx_dropped(r.port));
	vr_tcp_free(r.tcp);
	vr_bench_port_free(r.port);
	rte_eal_cleanup();
	return 0;
}
