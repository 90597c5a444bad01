/*
 * test_tcp_harness.c - the packetdrill-style harness the test_tcp*.c
 * programs share: one stack on a virtual clock listening on PORT, a fake
 * port that parses and checksum-checks every segment the stack sends, a
 * peer whose segments are crafted byte by byte, and an owner that counts
 * its callbacks.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "vmrelay/tcp.h"

#include "test_tcp_harness.h"

static const uint8_t our_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 };
static const uint8_t peer_mac[6] = { 0x02, 0, 0, 0, 0, 0x02 };
static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

struct seg out[SEGS_MAX];
unsigned nout;

static uint32_t pseudo(uint32_t src, uint32_t dst, size_t len)
{
	return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + 6 + (uint32_t)len;
}

static void parse_opts(const uint8_t *o, size_t len, struct opts *r)
{
	*r = (struct opts){ .mss = -1, .ws = -1 };
	for (size_t i = 0; i < len;) {
		if (o[i] == 0)
			break;
		if (o[i] == 1) {
			i++;
			continue;
		}
		assert_true(i + 1 < len && o[i + 1] >= 2 && i + o[i + 1] <= len);
		switch (o[i]) {
		case 2: r->mss = get16(o + i + 2); break;
		case 3: r->ws = o[i + 2]; break;
		case 4: r->sack_ok = 1; break;
		case 8: r->ts = 1; r->tsval = get32(o + i + 2); r->tsecr = get32(o + i + 6); break;
		case 5:
			r->nsack = (o[i + 1] - 2) / 8;
			for (unsigned k = 0; k < r->nsack; k++) {
				r->sack[k][0] = get32(o + i + 2 + 8 * k);
				r->sack[k][1] = get32(o + i + 6 + 8 * k);
			}
			break;
		}
		i += o[i + 1];
	}
}

/* The fake port: ARP frames are dropped, TCP segments parsed and checked. */
static unsigned tx_capture(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t t)
{
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *f = pkts[i]->data;
		size_t len = pkts[i]->len;
		if (get16(f + 12) == 0x0800) {
			const uint8_t *ip = f + 14, *th = ip + 20;
			assert_int_equal(ip[9], 6);
			assert_int_equal(rfc1071(0, ip, 20), 0);
			size_t tl = get16(ip + 2) - 20;
			assert_int_equal(tl + 34, len);
			assert_int_equal(rfc1071(pseudo(get32(ip + 12), get32(ip + 16), tl), th, tl), 0);
			assert_true(nout < VR_ARRAY_SIZE(out));
			struct seg *s = &out[nout++];
			unsigned doff = (th[12] >> 4) * 4u;
			s->sport = get16(th);
			s->dport = get16(th + 2);
			s->seq = get32(th + 4);
			s->ack = get32(th + 8);
			s->flags = th[13];
			s->win = get16(th + 14);
			s->len = (uint32_t)(tl - doff);
			memcpy(s->data, th + doff, s->len);
			parse_opts(th + 20, doff - 20, &s->o);
		}
		vr_net_pkt_free(pkts[i]);
	}
	return n;
}

/* The stack under test, its clock and what its owner saw. */
struct vr_net *net;
struct vr_tcp *tcp;
uint64_t now;
struct vr_tcp_conn *conn;       /* the last one accepted or connected */
int accepted, established, readable, writable, peer_closed, errors, last_err;
int refuse;
uint16_t rx_flags;

static int on_accept(void *arg, struct vr_tcp_conn *c, uint64_t t)
{
	accepted++;
	if (refuse)
		return -ECONNREFUSED;
	conn = c;
	return 0;
}
static void on_established(struct vr_tcp_conn *c, void *u, uint64_t t) { established++; }
static void on_readable(struct vr_tcp_conn *c, void *u, uint64_t t) { readable++; }
static void on_writable(struct vr_tcp_conn *c, void *u, uint64_t t) { writable++; }
static void on_peer_closed(struct vr_tcp_conn *c, void *u, uint64_t t) { peer_closed++; }
static void on_error(struct vr_tcp_conn *c, void *u, int err, uint64_t t)
{
	errors++;
	last_err = err;
	if (c == conn)
		conn = NULL;
}

const struct vr_tcp_cb cbs = {
	.established = on_established, .readable = on_readable, .writable = on_writable,
	.peer_closed = on_peer_closed, .error = on_error,
};

struct vr_tcp_conf tconf;

void inject(const uint8_t *b, size_t len)
{
	struct vr_pkt *p = vr_net_pkt_alloc(net);

	assert_non_null(p);
	memcpy(p->data, b, len);
	p->len = (uint16_t)len;
	p->flags = rx_flags;
	vr_net_rx(net, &p, 1, now);
}

static void learn_peer(void)
{
	uint8_t f[64] = { 0 };

	memcpy(f, bcast, 6);
	memcpy(f + 6, peer_mac, 6);
	put16(f + 12, 0x0806);
	put16(f + 14, 1);
	put16(f + 16, 0x0800);
	f[18] = 6;
	f[19] = 4;
	put16(f + 20, 1);
	memcpy(f + 22, peer_mac, 6);
	put32(f + 28, PEER_IP);
	put32(f + 38, OUR_IP);
	inject(f, 42);
}

static size_t opts_build(uint8_t *o, const struct opts *x)
{
	size_t n = 0;

	if (x->mss >= 0) {
		o[n++] = 2, o[n++] = 4;
		put16(o + n, (uint16_t)x->mss);
		n += 2;
	}
	if (x->ws >= 0)
		o[n++] = 1, o[n++] = 3, o[n++] = 3, o[n++] = (uint8_t)x->ws;
	if (x->sack_ok)
		o[n++] = 1, o[n++] = 1, o[n++] = 4, o[n++] = 2;
	if (x->ts) {
		o[n++] = 1, o[n++] = 1, o[n++] = 8, o[n++] = 10;
		put32(o + n, x->tsval);
		put32(o + n + 4, x->tsecr);
		n += 8;
	}
	if (x->nsack) {
		o[n++] = 1, o[n++] = 1, o[n++] = 5, o[n++] = (uint8_t)(2 + 8 * x->nsack);
		for (unsigned i = 0; i < x->nsack; i++, n += 8) {
			put32(o + n, x->sack[i][0]);
			put32(o + n + 4, x->sack[i][1]);
		}
	}
	if (x->truncated)
		o[n++] = 8, o[n++] = 10, o[n++] = 0, o[n++] = 0;
	return n;
}

uint16_t pport = PPORT;         /* the peer's port in what it sends */
int corrupt;                    /* flip a payload bit after the checksum */

/* A segment from the peer (PEER_IP:pport) to our port dport. */
void peer_send(uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win,
		      const void *data, size_t len, const struct opts *o)
{
	static uint8_t f[2048];
	static const struct opts none = { .mss = -1, .ws = -1 };
	uint8_t *ip = f + 14, *th = ip + 20;
	size_t olen = opts_build(th + 20, o ? o : &none);
	size_t tl = 20 + olen + len;

	memcpy(f, our_mac, 6);
	memcpy(f + 6, peer_mac, 6);
	put16(f + 12, 0x0800);
	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(20 + tl));
	ip[8] = 64;
	ip[9] = 6;
	put32(ip + 12, PEER_IP);
	put32(ip + 16, OUR_IP);
	put16(ip + 10, rfc1071(0, ip, 20));
	put16(th, pport);
	put16(th + 2, dport);
	put32(th + 4, seq);
	put32(th + 8, ack);
	th[12] = (uint8_t)((20 + olen) / 4 << 4);
	th[13] = flags;
	put16(th + 14, win);
	put16(th + 16, 0);
	put16(th + 18, 0);
	if (len)
		memcpy(th + 20 + olen, data, len);
	put16(th + 16, rfc1071(pseudo(PEER_IP, OUR_IP, tl), th, tl));
	if (corrupt)
		th[tl - 1] ^= 0x10;
	inject(f, 14 + 20 + tl);
}

void tick(uint64_t ms)
{
	now += ms;
	vr_tcp_poll(tcp, now);
}

void fixture_make(void)
{
	struct vr_net_conf c = {
		.ip = OUR_IP, .prefix = 24, .pkts = 512, .tx = tx_capture,
		.arp_ttl_ms = 86400000,            /* the peer's MAC stays known for a day */
	};
	char err[128];

	memcpy(c.mac, our_mac, 6);
	now = T0;
	nout = 0;
	accepted = established = readable = writable = peer_closed = errors = last_err = 0;
	refuse = 0;
	corrupt = 0;
	rx_flags = 0;
	pport = PPORT;
	conn = NULL;
	net = vr_net_new(&c, err, sizeof(err));
	assert_non_null(net);
	tcp = vr_tcp_new(net, &tconf, now, err, sizeof(err));
	assert_non_null(tcp);
	assert_int_equal(vr_tcp_listen(tcp, PORT, &cbs, on_accept, NULL), 0);
	learn_peer();
	vr_tcp_poll(tcp, now);
	nout = 0;
}

void fixture_remake(void)
{
	vr_tcp_free(tcp);
	vr_net_free(net);
	fixture_make();
}

int setup(void **state)
{
	tconf = (struct vr_tcp_conf){ .key = { 1, 2, 3, 4 } };
	fixture_make();
	return 0;
}

int teardown(void **state)
{
	vr_tcp_free(tcp);
	assert_int_equal(vr_net_pkt_in_use(net), 0);
	vr_net_free(net);
	return 0;
}

const struct vr_tcp_stats *st(void) { return vr_tcp_stats(tcp); }

/* The one segment the stack sent since the last call. */
struct seg *one(void)
{
	assert_int_equal(nout, 1);
	nout = 0;
	return &out[0];
}

uint32_t iss;                   /* our ISN on the current connection */

/* A passive open with the options given; returns with the connection accepted. */
void open_passive(const struct opts *o, uint16_t win)
{
	peer_send(PORT, PISN, 0, F_SYN, win, NULL, 0, o);
	struct seg *sa = one();
	assert_int_equal(sa->flags, F_SYN | F_ACK);
	assert_int_equal(sa->ack, PISN + 1);
	iss = sa->seq;
	struct opts ack_o = { .mss = -1, .ws = -1 };
	if (o && o->ts) {
		ack_o.ts = 1;
		ack_o.tsval = o->tsval + 1;
		ack_o.tsecr = sa->o.tsval;
	}
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, win, NULL, 0, &ack_o);
	assert_int_equal(accepted, 1);
	assert_non_null(conn);
	assert_int_equal(nout, 0);
}

void open_plain(void)
{
	open_passive(NULL, 65535);
}

/* Connects to the peer's port 2525; returns the SYN it sent. */
struct vr_tcp_conn *connect_peer(struct seg *syn)
{
	int err = 0;
	struct vr_tcp_conn *c = vr_tcp_connect(tcp, PEER_IP, 2525, &cbs, NULL, now, &err);

	assert_non_null(c);
	*syn = *one();
	pport = 2525;
	return c;
}
