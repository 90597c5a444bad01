/*
 * io_dpdk.c - vmrelay-bench's DPDK transport (--dpdk, see io.h): the
 * sessions' TCP is our own userspace stack (engine/net) on one DPDK port
 * (net_memif to another DPDK process, or a NIC), polled on the main lcore
 * without pause, as a relay's worker polls: rx burst, the stack (its
 * callbacks mark connections ready), TCP's timers and output, tx burst. No
 * kernel socket carries a byte; the kernel sees only the signal fd, looked
 * at once a millisecond.
 *
 * The stack calls back from inside the poll; the sessions must not run
 * there (a session closing its connection from within the stack's own
 * callback would be legal, but a session is written for epoll). So each
 * callback only ORs an event into its connection and queues the connection
 * once; wait() hands the queue out as epoll would, and the sessions call
 * into the stack afterwards. A connection closed while still queued stays
 * out of the free list until the queue reaches it.
 *
 * Before the first session the port's link must be up, and one connection
 * to the target is opened and reset: that resolves the target's MAC address
 * (ARP), so a hundred sessions' SYNs do not wait on one ARP reply (the stack
 * holds only a few frames per unresolved neighbour), and a target that does
 * not answer is reported before the run instead of as a run of timeouts.
 *
 * Threads: one, the client's; struct dpdk_io and every dconn are its.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "vmrelay/clock.h"
#include "vmrelay/tcp.h"
#include "io.h"
#include "port.h"

#define NET_PKTS       16384
#define SNDBUF         (256u << 10)     /* a large message moves in one go */
#define RCVBUF         (16u << 10)      /* replies are small */
#define PROBE_MS       10000            /* the target answers within this at start */

struct dpdk_io;

struct dconn {
	struct dpdk_io *io;
	struct vr_tcp_conn *tc;      /* NULL once the stack dropped it (error) */
	uint64_t tag;
	uint32_t events;             /* not yet handed out */
	int err;                     /* errno of the error callback */
	bool eof;                    /* the peer's FIN came */
	bool queued;                 /* on the ready ring */
	bool closed;                 /* closed while queued: free it when reached */
	struct dconn *next_free;
};

struct dpdk_io {
	struct vr_bench_io io;
	struct vr_bench_port *port;
	struct vr_tcp *tcp;
	int sigfd;
	uint32_t target;             /* host order */
	uint16_t target_port;
	struct dconn *conns, *free_list;
	struct dconn **ready;        /* ring of nconns */
	unsigned nconns, ready_head, nready;
	uint64_t signal_ms;          /* when the signal fd was last looked at */
};

/* --- the stack's callbacks: mark and queue --- */

static void mark(struct dconn *d, uint32_t ev)
{
	struct dpdk_io *x = d->io;

	d->events |= ev;
	if (d->queued)
		return;
	d->queued = true;
	x->ready[(x->ready_head + x->nready++) % x->nconns] = d;
}

static void cb_established(struct vr_tcp_conn *c, void *user, uint64_t now)
{
	mark(user, EPOLLOUT);
}

static void cb_readable(struct vr_tcp_conn *c, void *user, uint64_t now)
{
	mark(user, EPOLLIN);
}

static void cb_writable(struct vr_tcp_conn *c, void *user, uint64_t now)
{
	mark(user, EPOLLOUT);
}

static void cb_peer_closed(struct vr_tcp_conn *c, void *user, uint64_t now)
{
	struct dconn *d = user;

	d->eof = true;
	mark(d, EPOLLIN | EPOLLRDHUP);
}

static void cb_error(struct vr_tcp_conn *c, void *user, int err, uint64_t now)
{
	struct dconn *d = user;

	d->tc = NULL;                /* invalid once we return */
	d->err = -err;
	mark(d, EPOLLERR | EPOLLHUP);
}

static const struct vr_tcp_cb conn_cb = {
	.established = cb_established, .readable = cb_readable, .writable = cb_writable,
	.peer_closed = cb_peer_closed, .error = cb_error,
};

/* --- a connection's bytes --- */

static ssize_t d_recv(struct vr_bench_conn *c, void *buf, size_t len)
{
	struct dconn *d = c->h;

	if (!d->tc)
		return d->err ? -d->err : 0;
	size_t n = vr_tcp_read(d->tc, buf, len);
	if (n > 0)
		return (ssize_t)n;
	return d->eof ? 0 : -EAGAIN;
}

static ssize_t d_sendv(struct vr_bench_conn *c, const struct iovec *iov, unsigned n)
{
	struct dconn *d = c->h;
	size_t total = 0;

	if (!d->tc)
		return -(d->err ? d->err : EPIPE);
	for (unsigned i = 0; i < n; i++) {
		ssize_t w = vr_tcp_send(d->tc, iov[i].iov_base, iov[i].iov_len);
		if (w < 0)
			return total ? (ssize_t)total : w;
		total += (size_t)w;
		if ((size_t)w < iov[i].iov_len)
			break;
	}
	return total ? (ssize_t)total : -EAGAIN;
}

static void d_close(struct vr_bench_conn *c)
{
	struct dconn *d = c->h;
	struct dpdk_io *x = d->io;

	/* The stack finishes the exchange of FINs (or resets, with unread
	 * bytes) and calls nothing more. */
	if (d->tc)
		vr_tcp_close(d->tc);
	d->tc = NULL;
	if (d->queued) {
		d->closed = true;
		return;
	}
	d->next_free = x->free_list;
	x->free_list = d;
}

static const struct vr_bench_conn_ops dconn_ops = {
	.recv = d_recv, .sendv = d_sendv, .close = d_close,
};

/* --- the transport --- */

static int dpdk_connect(struct vr_bench_io *io, struct vr_bench_conn *c,
			const struct vr_bench_addr *src, uint64_t tag, const char **step)
{
	struct dpdk_io *x = (struct dpdk_io *)io;
	struct dconn *d = x->free_list;
	int err;

	*step = "connect";
	if (!d)
		return -ENOBUFS;
	struct dconn *next = d->next_free;
	*d = (struct dconn){ .io = x, .tag = tag };
	d->tc = vr_tcp_connect(x->tcp, x->target, x->target_port, &conn_cb, d, vr_clock_ms(), &err);
	if (!d->tc) {
		d->next_free = next;
		return err;
	}
	x->free_list = next;
	vr_bench_conn_attach(c, &dconn_ops, d);
	return 0;
}

static int dpdk_connected(struct vr_bench_conn *c)
{
	struct dconn *d = c->h;

	return d->tc ? 0 : d->err ? d->err : ECONNABORTED;
}

/* One round of the poll loop. */
static void poll_once(struct dpdk_io *x, uint64_t now)
{
	vr_bench_port_rx(x->port, now);
	vr_tcp_poll(x->tcp, now);
	vr_bench_port_flush(x->port);
}

static bool signalled(struct dpdk_io *x)
{
	struct signalfd_siginfo si;

	return read(x->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si);
}

static int dpdk_wait(struct vr_bench_io *io, struct vr_bench_event *ev, int max, int ms)
{
	struct dpdk_io *x = (struct dpdk_io *)io;
	uint64_t now = vr_clock_ms(), until = now + (uint64_t)ms;
	int n = 0;

	for (;;) {
		poll_once(x, now);
		if (x->nready)
			break;
		now = vr_clock_ms();
		if (now != x->signal_ms) {
			x->signal_ms = now;
			if (signalled(x)) {
				ev[n++] = (struct vr_bench_event){ VR_BENCH_IO_SIGNAL, EPOLLIN };
				return n;
			}
		}
		if (now >= until)
			return 0;
	}
	while (x->nready && n < max) {
		struct dconn *d = x->ready[x->ready_head];
		x->ready_head = (x->ready_head + 1) % x->nconns;
		x->nready--;
		d->queued = false;
		if (d->closed) {
			d->closed = false;
			d->next_free = x->free_list;
			x->free_list = d;
			continue;
		}
		ev[n++] = (struct vr_bench_event){ d->tag, d->events };
		d->events = 0;
	}
	return n;
}

/* "dpdk PORT", the stack's retransmissions and every drop reason that counted. */
static void dpdk_describe(struct vr_bench_io *io, char *out, size_t len)
{
	struct dpdk_io *x = (struct dpdk_io *)io;
	const struct vr_tcp_stats *ts = vr_tcp_stats(x->tcp);
	const struct vr_net_stats *ns = vr_net_stats(vr_bench_port_net(x->port));
	size_t n = (size_t)snprintf(out, len, "dpdk %s retransmits=%llu (rto=%llu fast=%llu "
				    "tlp=%llu) tx_dropped=%llu rx_missed=%llu",
				    vr_bench_port_name(x->port), (unsigned long long)ts->retransmits,
				    (unsigned long long)ts->rto_expired,
				    (unsigned long long)ts->fast_retransmits,
				    (unsigned long long)ts->tlp_probes,
				    (unsigned long long)vr_bench_port_tx_dropped(x->port),
				    (unsigned long long)vr_bench_port_rx_missed(x->port));

	for (unsigned i = 0; i < VR_NET_DROP_MAX && n < len; i++)
		if (ns->drop[i])
			n += (size_t)snprintf(out + n, len - n, " net_%s=%llu", vr_net_drop_name(i),
					      (unsigned long long)ns->drop[i]);
	for (unsigned i = 0; i < VR_TCP_DROP_MAX && n < len; i++)
		if (ts->drop[i])
			n += (size_t)snprintf(out + n, len - n, " tcp_%s=%llu", vr_tcp_drop_name(i),
					      (unsigned long long)ts->drop[i]);
}

static void dpdk_free(struct vr_bench_io *io)
{
	struct dpdk_io *x = (struct dpdk_io *)io;

	/* What is still closing gets a last round to send its FIN or RST. */
	if (x->tcp)
		poll_once(x, vr_clock_ms());
	vr_tcp_free(x->tcp);
	vr_bench_port_free(x->port);
	free(x->conns);
	free(x->ready);
	free(x);
	/* The EAL stays up: it cannot be started twice in a process. */
}

static const struct vr_bench_io_ops dpdk_ops = {
	.connect = dpdk_connect, .connected = dpdk_connected, .wait = dpdk_wait,
	.describe = dpdk_describe, .free = dpdk_free,
};

/* Opens and resets one connection to the target (see the top of the file). */
static int probe(struct dpdk_io *x, char *err, size_t errlen)
{
	struct vr_bench_conn c = { .fd = -1 };
	uint64_t until = vr_clock_ms() + PROBE_MS;
	const char *step;
	int rc = dpdk_connect(&x->io, &c, NULL, 0, &step);

	if (rc < 0) {
		snprintf(err, errlen, "connect: %s", strerror(-rc));
		return -1;
	}
	struct dconn *d = c.h;
	uint64_t now;
	while (!d->events && (now = vr_clock_ms()) < until)
		poll_once(x, now);
	rc = d->events ? dpdk_connected(&c) : ETIMEDOUT;
	/* Its events are spent here: the ring starts empty. */
	x->nready = x->ready_head = 0;
	d->queued = false;
	if (d->tc)
		vr_tcp_abort(d->tc);
	d->tc = NULL;
	vr_bench_conn_close(&c);
	/* Refused is an answer: the neighbour is known and the run will say. */
	if (rc && rc != ECONNREFUSED) {
		snprintf(err, errlen, "no answer within %d s: %s", PROBE_MS / 1000, strerror(rc));
		return -1;
	}
	return 0;
}

struct vr_bench_io *vr_bench_io_dpdk_new(const struct vr_bench_cfg *cfg, int sigfd, char *err,
					 size_t errlen)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&cfg->target.sa;
	struct dpdk_io *x = calloc(1, sizeof(*x));
	char why[256];

	if (!x) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	x->io.ops = &dpdk_ops;
	x->sigfd = sigfd;
	x->target = ntohl(sin->sin_addr.s_addr);
	x->target_port = ntohs(sin->sin_port);
	/* Each session holds one connection; the one it just closed may still
	 * be queued, so twice as many, and the probe's. */
	x->nconns = 2 * cfg->sessions + 1;
	x->conns = calloc(x->nconns, sizeof(*x->conns));
	x->ready = calloc(x->nconns, sizeof(*x->ready));
	if (!x->conns || !x->ready) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (unsigned i = x->nconns; i-- > 0;) {
		x->conns[i].next_free = x->free_list;
		x->free_list = &x->conns[i];
	}
	if (vr_bench_eal_init("vmrelay-bench", cfg->dpdk_eal, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "--dpdk: %s", why);
		goto fail;
	}
	if (!(x->port = vr_bench_port_new(cfg->dpdk_ip, NET_PKTS, why, sizeof(why)))) {
		snprintf(err, errlen, "--dpdk: %s", why);
		goto fail;
	}
	/* Connections closing (FIN_WAIT, TIME_WAIT apart) outlive their session. */
	struct vr_tcp_conf tc = {
		.max_conns = 4 * cfg->sessions + 16, .sndbuf = SNDBUF, .rcvbuf = RCVBUF,
	};
	x->tcp = vr_tcp_new(vr_bench_port_net(x->port), &tc, vr_clock_ms(), why, sizeof(why));
	if (!x->tcp) {
		snprintf(err, errlen, "--dpdk: %s", why);
		goto fail;
	}
	/* A memif client's link is up once the server (the relay) took it. */
	if (vr_bench_port_wait_link(x->port, PROBE_MS) < 0) {
		snprintf(err, errlen, "--dpdk: %s: the link did not come up within %d s (for "
			 "net_memif: is the other side running, on the same socket?)",
			 vr_bench_port_name(x->port), PROBE_MS / 1000);
		goto fail;
	}
	if (probe(x, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "--dpdk: %s over %s: %s", cfg->target_name,
			 vr_bench_port_name(x->port), why);
		goto fail;
	}
	return &x->io;
fail:
	dpdk_free(&x->io);
	return NULL;
}
