/*
 * bench_tcp.c - the userspace TCP's cost per segment on one core: two stack
 * instances wired back to back in one thread (frames handed over in
 * bursts, as a poll loop would), no kernel, no NIC, no copy but TCP's own.
 *
 *   bench_tcp [--mbytes N] [--conns N] [--rcvbuf BYTES] [--sndbuf BYTES] [--ip6]
 *
 * Three runs: a bulk transfer of N MB over one connection (segments/s and
 * Gbit/s of payload), then N short connections each doing an SMTP-sized
 * exchange (SYN, a 30-byte command, a 30-byte reply, FIN both ways):
 * connections/s, then a SYN flood from spoofed ports (--syns N, checksummed
 * frames with Linux's SYN options) answered with cookies: SYNs/s. Both
 * stacks' segments count (every segment is built by one instance and parsed
 * by the other), per second of CPU time the process used, so on a shared
 * machine it is still the speed of one core. With --ip6 all three run over
 * IPv6 (2001:db8::1 and ::2, the peer found by Neighbor Discovery), for
 * the cost of IPv6 against IPv4's in back-to-back runs.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_bytes.h"
#include "vmrelay/tcp.h"

#define QMAX 8192

struct wire {
	struct vr_pkt *q[QMAX];
	unsigned n;
};

struct side {
	struct vr_net *net;
	struct vr_tcp *tcp;
	struct wire in;
	struct vr_tcp_conn *c;
	uint64_t to_send, sent, recvd;
	int done;
};

static struct side A, B;
static uint64_t now = 1000;
static uint8_t payload[65536];
static unsigned conns_done;
static int ip6;                        /* --ip6 */
static const uint8_t a_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
static const uint8_t b_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };

static unsigned wire_put(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t t)
{
	struct wire *w = arg;
	unsigned take = n < QMAX - w->n ? n : QMAX - w->n;

	memcpy(w->q + w->n, pkts, take * sizeof(*pkts));
	w->n += take;
	return take;
}

static void pump(struct side *s)
{
	while (s->c && s->sent < s->to_send) {
		uint64_t want = s->to_send - s->sent;
		ssize_t n = vr_tcp_send(s->c, payload, want < sizeof(payload) ? want : sizeof(payload));
		if (n <= 0)
			break;
		s->sent += (uint64_t)n;
	}
}

static void drain(struct side *s)
{
	const uint8_t *p;
	size_t n;

	while (s->c && (n = vr_tcp_peek(s->c, &p)) > 0) {
		s->recvd += n;
		vr_tcp_consume(s->c, n);
	}
}

/* The client side of the short exchange: command out, reply in, close. */
static void a_readable(struct vr_tcp_conn *c, void *u, uint64_t t)
{
	drain(&A);
	if (A.recvd >= 30 && A.c) {
		vr_tcp_close(A.c);
		A.c = NULL;
		conns_done++;
	}
}
static void a_established(struct vr_tcp_conn *c, void *u, uint64_t t) { pump(&A); }
static void b_readable(struct vr_tcp_conn *c, void *u, uint64_t t)
{
	drain(&B);
	if (B.to_send && B.recvd >= 30 && !B.sent) {
		pump(&B);
		vr_tcp_shutdown(B.c);
	}
}
static void b_peer_closed(struct vr_tcp_conn *c, void *u, uint64_t t)
{
	if (B.c)
		vr_tcp_close(B.c);
	B.c = NULL;
}
static int resetting;                  /* the bulk connection's end: its RST is expected */

static void on_error(struct vr_tcp_conn *c, void *u, int err, uint64_t t)
{
	if (resetting) {
		B.c = NULL;
		return;
	}
	fprintf(stderr, "bench_tcp: connection error %d\n", err);
	exit(1);
}

static const struct vr_tcp_cb a_cb = { .established = a_established, .readable = a_readable,
				       .error = on_error };
static const struct vr_tcp_cb b_cb = { .readable = b_readable, .peer_closed = b_peer_closed,
				       .error = on_error };

static int b_accept(void *arg, struct vr_tcp_conn *c, uint64_t t)
{
	B.c = c;
	B.recvd = B.sent = 0;
	return 0;
}

static void side_make(struct side *s, struct side *peer, uint32_t ip, uint8_t mac_last,
		      const struct vr_tcp_conf *tc)
{
	char err[128];
	struct vr_net_conf c = {
		.mac = { 0x02, 0, 0, 0, 0, mac_last }, .ip = ip, .prefix = 24, .pkts = 16384,
		.tx = wire_put, .tx_arg = &peer->in, .prefix6 = 64,
	};

	if (ip6)
		memcpy(c.ip6, mac_last == 1 ? a_ip6 : b_ip6, 16);

	s->net = vr_net_new(&c, err, sizeof(err));
	s->tcp = s->net ? vr_tcp_new(s->net, tc, now, err, sizeof(err)) : NULL;
	if (!s->tcp) {
		fprintf(stderr, "bench_tcp: %s\n", err);
		exit(1);
	}
}

static void deliver(struct side *s)
{
	unsigned n = s->in.n;

	s->in.n = 0;
	for (unsigned i = 0; i < n; i += VR_NET_BURST)
		vr_net_rx(s->net, s->in.q + i, n - i < VR_NET_BURST ? n - i : VR_NET_BURST, now);
}

/* One poll-loop turn for both sides; the clock moves 1 ms every 64 turns. */
static void turn(unsigned long i)
{
	if (!(i & 63))
		now++;
	deliver(&A);
	deliver(&B);
	pump(&A);
	drain(&B);
	vr_tcp_poll(A.tcp, now);
	vr_tcp_poll(B.tcp, now);
}

/* A SYN from A's MAC and address to B's port 25, with Linux's options; returns its length. */
static size_t syn_frame(uint8_t *f, uint16_t sport, uint32_t seq)
{
	static const uint8_t opts[20] = { 2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0,
					  1, 3, 3, 7 };
	uint8_t *ip = f + 14, *th = ip + 20;

	memcpy(f, (const uint8_t[6]){ 0x02, 0, 0, 0, 0, 2 }, 6);
	memcpy(f + 6, (const uint8_t[6]){ 0x02, 0, 0, 0, 0, 1 }, 6);
	put16(f + 12, 0x0800);
	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16(ip + 2, 20 + 40);
	ip[8] = 64;
	ip[9] = 6;
	put32(ip + 12, 0x0a000001u);
	put32(ip + 16, 0x0a000002u);
	put16(ip + 10, vr_net_csum_fold(vr_net_csum_add(0, ip, 20)));
	memset(th, 0, 20);
	put16(th, sport);
	put16(th + 2, 25);
	put32(th + 4, seq);
	th[12] = 10 << 4;
	th[13] = 0x02;
	put16(th + 14, 64240);
	memcpy(th + 20, opts, sizeof(opts));
	put16(th + 16, vr_net_csum_fold(vr_net_csum_add(
		vr_net_csum_pseudo(0x0a000001u, 0x0a000002u, 6, 40), th, 40)));
	return 14 + 20 + 40;
}

/* syn_frame over IPv6, A to B. */
static size_t syn6_frame(uint8_t *f, uint16_t sport, uint32_t seq)
{
	uint8_t v4[128];
	size_t len = syn_frame(v4, sport, seq);
	uint8_t *ip = f + 14, *th = ip + 40;

	memcpy(f, v4, 12);
	put16(f + 12, 0x86dd);
	put_ip6(ip, 40, 6, 64, a_ip6, b_ip6);
	memcpy(th, v4 + 34, len - 34);
	put16(th + 16, 0);
	put16(th + 16, vr_net_csum_fold(vr_net_csum_add(
		vr_net_csum_pseudo6(a_ip6, b_ip6, 6, 40), th, 40)));
	return 14 + 40 + 40;
}

static struct vr_tcp_conn *connect_b(int *err)
{
	if (ip6)
		return vr_tcp_connect6(A.tcp, b_ip6, 25, &a_cb, NULL, now, err);
	return vr_tcp_connect(A.tcp, 0x0a000002u, 25, &a_cb, NULL, now, err);
}

static double cpu_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t segments(void)
{
	return vr_tcp_stats(A.tcp)->segs_out + vr_tcp_stats(B.tcp)->segs_out;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mbytes", required_argument, NULL, 'm' }, { "conns", required_argument, NULL, 'c' },
		{ "rcvbuf", required_argument, NULL, 'r' }, { "sndbuf", required_argument, NULL, 's' },
		{ "syns", required_argument, NULL, 'y' }, { "ip6", no_argument, NULL, '6' },
		{ NULL, 0, NULL, 0 },
	};
	struct vr_tcp_conf tc = { .rcvbuf = 256 * 1024, .sndbuf = 256 * 1024, .max_conns = 64 };
	uint64_t mbytes = 512, nconns = 100000, nsyns = 1000000;
	int o;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'm': mbytes = strtoull(optarg, NULL, 10); break;
		case 'c': nconns = strtoull(optarg, NULL, 10); break;
		case 'r': tc.rcvbuf = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 's': tc.sndbuf = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'y': nsyns = strtoull(optarg, NULL, 10); break;
		case '6': ip6 = 1; break;
		default:
			fprintf(stderr, "usage: bench_tcp [--mbytes N] [--conns N] [--syns N] "
					"[--rcvbuf B] [--sndbuf B] [--ip6]\n");
			return 2;
		}
	}
	side_make(&A, &B, 0x0a000001u, 1, &tc);
	side_make(&B, &A, 0x0a000002u, 2, &tc);
	if (vr_tcp_listen(B.tcp, 25, &b_cb, b_accept, NULL) < 0)
		return 1;

	/* Bulk: one connection, mbytes one way. */
	int err;
	A.to_send = mbytes << 20;
	A.c = connect_b(&err);
	double t0 = cpu_seconds();
	unsigned long i = 0;
	while (B.recvd < A.to_send)
		turn(i++);
	double t1 = cpu_seconds();
	uint64_t segs = segments();
	/* The receiver's ACKs per data segment: 0.5 is an ACK every second segment. */
	const struct vr_tcp_stats *sa = vr_tcp_stats(A.tcp), *sb = vr_tcp_stats(B.tcp);
	printf("bulk: %llu MB in %.3f s CPU: %.0f segments/s, %.2f Gbit/s payload, %llu retransmits, "
	       "%.3f ACKs per data segment (%llu window updates)\n",
	       (unsigned long long)mbytes, t1 - t0, segs / (t1 - t0),
	       (double)(mbytes << 20) * 8 / (t1 - t0) / 1e9, (unsigned long long)sa->retransmits,
	       (double)sb->segs_out / (double)sa->segs_out,
	       (unsigned long long)sb->window_updates);
	resetting = 1;
	vr_tcp_abort(A.c);
	A.c = NULL;
	for (int k = 0; k < 200; k++)
		turn(i++);
	resetting = 0;

	/* Short connections: SMTP-sized exchanges, one after another. */
	memcpy(payload, "MAIL FROM:<a@example.com>\r\n\r\n\r", 30);
	uint64_t segs0 = segments();
	t0 = cpu_seconds();
	for (uint64_t k = 0; k < nconns; k++) {
		A.to_send = 30;
		A.sent = A.recvd = 0;
		B.to_send = 30;
		A.c = connect_b(&err);
		if (!A.c) {
			fprintf(stderr, "bench_tcp: connect: %d\n", err);
			return 1;
		}
		unsigned target = conns_done + 1;
		while (conns_done < target)
			turn(i++);
	}
	t1 = cpu_seconds();
	printf("short: %llu connections in %.3f s CPU: %.0f connections/s, %.0f segments/s\n",
	       (unsigned long long)nconns, t1 - t0, nconns / (t1 - t0),
	       (segments() - segs0) / (t1 - t0));

	/* SYN flood: the queue fills at once, then every SYN costs a cookie SYN-ACK. */
	uint8_t syn[128];
	uint64_t cookies0 = vr_tcp_stats(B.tcp)->cookies_sent;
	t0 = cpu_seconds();
	for (uint64_t k = 0; k < nsyns; k += VR_NET_BURST) {
		struct vr_pkt *burst[VR_NET_BURST];
		unsigned n = 0;
		for (; n < VR_NET_BURST && k + n < nsyns; n++) {
			uint64_t x = k + n;
			uint16_t sport = (uint16_t)(1024 + x % 60000);
			uint32_t seq = (uint32_t)(x * 2654435761u);
			size_t len = ip6 ? syn6_frame(syn, sport, seq) : syn_frame(syn, sport, seq);
			burst[n] = vr_net_pkt_alloc(B.net);
			memcpy(burst[n]->data, syn, len);
			burst[n]->len = (uint16_t)len;
		}
		vr_net_rx(B.net, burst, n, now);
		for (unsigned j = 0; j < A.in.n; j++)        /* the SYN-ACKs go nowhere */
			vr_net_pkt_free(A.in.q[j]);
		A.in.n = 0;
		if (!(k & 0xffff))
			vr_tcp_poll(B.tcp, ++now);
	}
	t1 = cpu_seconds();
	printf("flood: %llu SYNs in %.3f s CPU: %.0f SYNs/s, %llu answered with cookies\n",
	       (unsigned long long)nsyns, t1 - t0, nsyns / (t1 - t0),
	       (unsigned long long)(vr_tcp_stats(B.tcp)->cookies_sent - cookies0));
	return 0;
}
