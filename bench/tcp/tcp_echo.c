/*
 * tcp_echo.c - the userspace stack on an AF_PACKET socket, as an echo
 * server: whatever a client sends on the port comes back, and the peer's
 * FIN is answered with ours once everything went back. With --drop,
 * --reorder, --dup and --corrupt the fault layer sits on both directions.
 * It is how interop.py puts real Linux TCP on the other end without DPDK.
 *
 *   tcp_echo --iface IF --ip A.B.C.D/N --port P [--seconds S]
 *            [--drop PCT] [--reorder PCT] [--dup PCT] [--corrupt PCT] [--seed N]
 *
 * The interface should carry no address of its own (the kernel would answer
 * too) and run in a namespace of its own. On SIGTERM, SIGINT or after S
 * seconds it prints the TCP counters and the drops as "name value" lines.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmrelay/clock.h"
#include "vmrelay/netfault.h"
#include "vmrelay/tcp.h"

static volatile sig_atomic_t stop;
static int fd;
static struct vr_net *net;
static struct vr_tcp *tcp;

static void on_signal(int sig) { stop = 1; }

static unsigned port_tx(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		if (send(fd, pkts[i]->data, pkts[i]->len, 0) < 0 && errno == EAGAIN)
			break;
		vr_net_pkt_free(pkts[i]);
	}
	return i;
}

/* Echoes what is readable as far as the send buffer takes it; closes after the peer's FIN. */
static void echo(struct vr_tcp_conn *c)
{
	const uint8_t *p;
	size_t n;

	while ((n = vr_tcp_peek(c, &p)) > 0) {
		ssize_t w = vr_tcp_send(c, p, n);
		if (w <= 0)
			break;
		vr_tcp_consume(c, (size_t)w);
	}
	if (vr_tcp_user(c) && !vr_tcp_readable(c))
		vr_tcp_close(c);
}

static void on_readable(struct vr_tcp_conn *c, void *u, uint64_t now) { echo(c); }
static void on_writable(struct vr_tcp_conn *c, void *u, uint64_t now) { echo(c); }
static void on_peer_closed(struct vr_tcp_conn *c, void *u, uint64_t now)
{
	vr_tcp_set_user(c, c);           /* marks "close once drained" */
	echo(c);
}
static void on_error(struct vr_tcp_conn *c, void *u, int err, uint64_t now)
{
	fprintf(stderr, "tcp_echo: connection error %s\n", strerror(-err));
}

static const struct vr_tcp_cb cbs = {
	.readable = on_readable, .writable = on_writable, .peer_closed = on_peer_closed,
	.error = on_error,
};

static int on_accept(void *arg, struct vr_tcp_conn *c, uint64_t now) { return 0; }

static int port_open(const char *iface, uint8_t mac[6])
{
	struct ifreq ifr = { 0 };
	int one = 1;

	fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
	if (fd < 0)
		return -1;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", iface);
	if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0)
		return -1;
	memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
		.sll_ifindex = (int)if_nametoindex(iface),
	};
	if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		return -1;
	/* Our own frames are not input; the kernel's checksum state comes with each frame. */
	if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) < 0)
		return -1;
	/* Room for bursts between polls: the socket's drops would look like loss. */
	int bytes = 8 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes));
	return 0;
}

/* Reads what the socket has into pool packets and hands them to rx (fault layer or stack). */
static void port_rx(vr_net_burst_fn rx, void *rx_arg, uint64_t now)
{
	for (int burst = 0; burst < 4096; burst++) {   /* all there is: late ACKs look like loss */
		struct vr_pkt *p = vr_net_pkt_alloc(net);
		if (!p)
			return;
		union {
			struct cmsghdr h;
			uint8_t b[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
		} ctl;
		struct iovec iov = { .iov_base = p->data, .iov_len = p->tailroom };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl,
				     .msg_controllen = sizeof(ctl) };
		ssize_t n = recvmsg(fd, &mh, MSG_TRUNC);
		if (n < 0 || (size_t)n > p->tailroom) {
			vr_net_pkt_free(p);
			if (n < 0)
				return;
			continue;
		}
		p->len = (uint16_t)n;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			const struct tpacket_auxdata *a = (const void *)CMSG_DATA(c);
			/* A frame from a local stack may carry a checksum it left to offload. */
			if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA &&
			    (a->tp_status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID)))
				p->flags |= VR_PKT_RX_L4_CSUM_OK;
		}
		rx(rx_arg, &p, 1, now);
	}
}

static void print_stats(void)
{
	const struct vr_tcp_stats *s = vr_tcp_stats(tcp);
	const struct { const char *name; uint64_t v; } rows[] = {
		{ "segs_in", s->segs_in }, { "segs_out", s->segs_out },
		{ "bytes_in", s->bytes_in }, { "bytes_out", s->bytes_out },
		{ "passive_opens", s->passive_opens }, { "established", s->established },
		{ "resets_in", s->resets_in }, { "resets_out", s->resets_out },
		{ "retransmits", s->retransmits }, { "rto_expired", s->rto_expired },
		{ "fast_retransmits", s->fast_retransmits }, { "ooo_segs", s->ooo_segs },
		{ "sack_blocks_sent", s->sack_blocks_sent }, { "challenge_acks", s->challenge_acks },
		{ "cookies_sent", s->cookies_sent }, { "cookies_accepted", s->cookies_accepted },
		{ "timeouts", s->timeouts }, { "conns_left", vr_tcp_conn_count(tcp) },
	};

	for (size_t i = 0; i < VR_ARRAY_SIZE(rows); i++)
		printf("%s %llu\n", rows[i].name, (unsigned long long)rows[i].v);
	for (unsigned d = 0; d < VR_TCP_DROP_MAX; d++)
		printf("drop_%s %llu\n", vr_tcp_drop_name(d), (unsigned long long)s->drop[d]);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "iface", required_argument, NULL, 'i' }, { "ip", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' }, { "seconds", required_argument, NULL, 's' },
		{ "drop", required_argument, NULL, 'd' }, { "reorder", required_argument, NULL, 'r' },
		{ "dup", required_argument, NULL, 'u' }, { "corrupt", required_argument, NULL, 'c' },
		{ "seed", required_argument, NULL, 'e' }, { NULL, 0, NULL, 0 },
	};
	const char *iface = NULL, *ip = NULL;
	unsigned port = 0, seconds = 0;
	struct vr_fault_conf fc = { .reorder_ms = 2, .hold = 1024, .seed = 1 };
	int o;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'i': iface = optarg; break;
		case 'a': ip = optarg; break;
		case 'p': port = (unsigned)atoi(optarg); break;
		case 's': seconds = (unsigned)atoi(optarg); break;
		case 'd': fc.drop_pct = atof(optarg); break;
		case 'r': fc.reorder_pct = atof(optarg); break;
		case 'u': fc.dup_pct = atof(optarg); break;
		case 'c': fc.corrupt_pct = atof(optarg); break;
		case 'e': fc.seed = strtoull(optarg, NULL, 10); break;
		default: goto usage;
		}
	}
	char addr[32];
	unsigned prefix = 0;
	struct in_addr in;
	if (!iface || !ip || !port || port > 65535 || sscanf(ip, "%31[0-9.]/%u", addr, &prefix) != 2 ||
	    inet_pton(AF_INET, addr, &in) != 1)
		goto usage;

	uint8_t mac[6];
	if (port_open(iface, mac) < 0) {
		fprintf(stderr, "tcp_echo: %s: %s\n", iface, strerror(errno));
		return 1;
	}
	char err[128];
	struct vr_fault_conf fb = fc;
	fb.seed = fc.seed + 1;
	struct vr_fault *tx_fault = vr_fault_new(&fc, port_tx, NULL, err, sizeof(err));
	struct vr_net_conf nc = {
		.ip = ntohl(in.s_addr), .prefix = (uint8_t)prefix, .pkts = 8192,
		.tx = vr_fault_burst, .tx_arg = tx_fault,
	};
	memcpy(nc.mac, mac, 6);
	uint64_t now = vr_clock_ms();
	net = tx_fault ? vr_net_new(&nc, err, sizeof(err)) : NULL;
	struct vr_fault *rx_fault = net ? vr_fault_new(&fb, vr_net_rx_burst, net, err, sizeof(err))
					: NULL;
	struct vr_tcp_conf tc = { .max_conns = 2048, .rcvbuf = 128 * 1024, .sndbuf = 128 * 1024 };
	tcp = rx_fault ? vr_tcp_new(net, &tc, now, err, sizeof(err)) : NULL;
	if (!tcp || vr_tcp_listen(tcp, (uint16_t)port, &cbs, on_accept, NULL) < 0) {
		fprintf(stderr, "tcp_echo: %s\n", err);
		return 1;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	uint64_t end = seconds ? now + seconds * 1000ull : UINT64_MAX;
	while (!stop && now < end) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		poll(&pfd, 1, 1);
		now = vr_clock_ms();
		vr_fault_poll(rx_fault, now);
		port_rx(vr_fault_burst, rx_fault, now);
		vr_fault_poll(tx_fault, now);
		vr_tcp_poll(tcp, now);
	}
	print_stats();
	vr_tcp_free(tcp);
	vr_fault_free(rx_fault);
	vr_fault_free(tx_fault);
	vr_net_free(net);
	return 0;
usage:
	fprintf(stderr, "usage: tcp_echo --iface IF --ip A.B.C.D/N --port P [--seconds S]\n"
			"       [--drop PCT] [--reorder PCT] [--dup PCT] [--corrupt PCT] [--seed N]\n");
	return 2;
}
