/*
 * test_tcp.c - TCP in the packetdrill style: segments crafted by hand go
 * into vr_net_rx on a virtual clock, and every frame the stack transmits is
 * parsed (checksums verified by an independent RFC 1071 sum) and asserted
 * on: the handshakes, data both ways, delayed ACKs, out-of-order reassembly
 * with SACK, retransmission and RTO backoff, fast retransmit and NewReno,
 * zero windows and probes, FIN and RST in each state, RFC 5961 challenge
 * ACKs, SYN cookies, TIME_WAIT and its reuse, PAWS, path MTU.
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

#define OUR_IP  0x0a000001u            /* 10.0.0.1/24 */
#define PEER_IP 0x0a000002u
#define PORT    25
#define PPORT   40000                  /* the peer's port */
#define PISN    1000000u               /* the peer's ISN */
#define T0      1000000u

#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_PSH 0x08
#define F_ACK 0x10

static const uint8_t our_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 };
static const uint8_t peer_mac[6] = { 0x02, 0, 0, 0, 0, 0x02 };
static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

/* Options of a segment, as sent by the test or parsed from the stack's. */
struct opts {
	int mss, ws;                   /* -1: absent */
	int sack_ok, ts;
	uint32_t tsval, tsecr;
	unsigned nsack;
	uint32_t sack[4][2];
};

struct seg {
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t win;
	uint32_t len;
	uint8_t data[2048];
	struct opts o;
};

static struct seg out[512];
static unsigned nout;

static uint16_t get16(const uint8_t *b) { return (uint16_t)(b[0] << 8 | b[1]); }
static uint32_t get32(const uint8_t *b) { return (uint32_t)get16(b) << 16 | get16(b + 2); }
static void put16(uint8_t *b, uint16_t v) { b[0] = (uint8_t)(v >> 8); b[1] = (uint8_t)v; }
static void put32(uint8_t *b, uint32_t v) { put16(b, (uint16_t)(v >> 16)); put16(b + 2, (uint16_t)v); }

/* RFC 1071 §4.1 written out, over a pseudo-header sum: an independent check on the stack's. */
static uint16_t rfc1071(uint32_t sum, const uint8_t *addr, size_t count)
{
	while (count > 1) {
		sum += (uint32_t)(addr[0] << 8 | addr[1]);
		addr += 2;
		count -= 2;
	}
	if (count > 0)
		sum += (uint32_t)addr[0] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

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
static unsigned tx_capture(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
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
static struct vr_net *net;
static struct vr_tcp *tcp;
static uint64_t now;
static struct vr_tcp_conn *conn;       /* the last one accepted or connected */
static int accepted, established, readable, writable, peer_closed, errors, last_err;
static int refuse;

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

static const struct vr_tcp_cb cbs = {
	.established = on_established, .readable = on_readable, .writable = on_writable,
	.peer_closed = on_peer_closed, .error = on_error,
};

static struct vr_tcp_conf tconf;

static void inject(const uint8_t *b, size_t len)
{
	struct vr_pkt *p = vr_net_pkt_alloc(net);

	assert_non_null(p);
	memcpy(p->data, b, len);
	p->len = (uint16_t)len;
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
	return n;
}

static uint16_t pport = PPORT;         /* the peer's port in what it sends */
static int corrupt;                    /* flip a payload bit after the checksum */

/* A segment from the peer (PEER_IP:pport) to our port dport. */
static void peer_send(uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win,
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
	memcpy(th + 20 + olen, data, len);
	put16(th + 16, rfc1071(pseudo(PEER_IP, OUR_IP, tl), th, tl));
	if (corrupt)
		th[tl - 1] ^= 0x10;
	inject(f, 14 + 20 + tl);
}

static void tick(uint64_t ms)
{
	now += ms;
	vr_tcp_poll(tcp, now);
}

static void fixture_make(void)
{
	struct vr_net_conf c = {
		.ip = OUR_IP, .prefix = 24, .pkts = 512, .tx = tx_capture,
	};
	char err[128];

	memcpy(c.mac, our_mac, 6);
	now = T0;
	nout = 0;
	accepted = established = readable = writable = peer_closed = errors = last_err = 0;
	refuse = 0;
	corrupt = 0;
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

static int setup(void **state)
{
	tconf = (struct vr_tcp_conf){ .key = { 1, 2, 3, 4 } };
	fixture_make();
	return 0;
}

static int teardown(void **state)
{
	vr_tcp_free(tcp);
	assert_int_equal(vr_net_pkt_in_use(net), 0);
	vr_net_free(net);
	return 0;
}

static const struct vr_tcp_stats *st(void) { return vr_tcp_stats(tcp); }

/* The one segment the stack sent since the last call. */
static struct seg *one(void)
{
	assert_int_equal(nout, 1);
	nout = 0;
	return &out[0];
}

static uint32_t iss;                   /* our ISN on the current connection */

/* A passive open with the options given; returns with the connection accepted. */
static void open_passive(const struct opts *o, uint16_t win)
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

static void open_plain(void)
{
	open_passive(NULL, 65535);
}

static void test_handshake_passive(void **state)
{
	struct opts o = { .mss = 1460, .ws = 7, .sack_ok = 1, .ts = 1, .tsval = 5000 };

	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, &o);
	struct seg *sa = one();
	assert_int_equal(sa->flags, F_SYN | F_ACK);
	assert_int_equal(sa->ack, PISN + 1);
	assert_int_equal(sa->o.mss, 1460);
	assert_int_equal(sa->o.ws, 1);             /* 64 KiB is one bit past 16 */
	assert_true(sa->o.sack_ok);
	assert_true(sa->o.ts);
	assert_int_equal(sa->o.tsecr, 5000);
	assert_int_equal(vr_tcp_conn_count(tcp), 1);
	assert_int_equal(accepted, 0);
	struct opts a = { .mss = -1, .ws = -1, .ts = 1, .tsval = 5001, .tsecr = sa->o.tsval };
	peer_send(PORT, PISN + 1, sa->seq + 1, F_ACK, 512, NULL, 0, &a);
	assert_int_equal(accepted, 1);
	struct vr_tcp_info info;
	vr_tcp_conn_info(conn, &info);
	assert_string_equal(info.state, "ESTABLISHED");
	assert_int_equal(info.snd_wnd, 512 << 7);
	/* Our window scaled by 1, theirs by 7 (RFC 7323 §2.3). */
	peer_send(PORT, PISN + 1, sa->seq + 1, F_ACK, 512, "hi", 2, &a);
	tick(40);
	assert_int_equal(one()->win, 32767);
	assert_true(info.timestamps && info.sack && info.wscale);
	assert_int_equal(info.rport, PPORT);
	assert_int_equal(st()->passive_opens, 1);
}

static void test_isn_keyed(void **state)
{
	/* RFC 6528: the same tuple later gets a later ISN; another key, another ISN. */
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	uint32_t a = one()->seq;
	vr_tcp_free(tcp);
	vr_net_free(net);
	tconf.key[0] = 9;
	fixture_make();
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	uint32_t b = one()->seq;
	assert_int_not_equal(a, b);
	vr_tcp_free(tcp);
	vr_net_free(net);
	tconf.key[0] = 1;
	fixture_make();
	now += 1000;
	peer_send(PORT, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	uint32_t c = one()->seq;
	assert_int_equal(c - a, 1000 * 250);
}

static void test_no_listener_rst(void **state)
{
	peer_send(26, PISN, 0, F_SYN, 65535, NULL, 0, NULL);
	struct seg *r = one();
	assert_int_equal(r->flags, F_RST | F_ACK);
	assert_int_equal(r->seq, 0);
	assert_int_equal(r->ack, PISN + 1);
	peer_send(26, PISN, 777, F_ACK, 65535, "x", 1, NULL);
	r = one();
	assert_int_equal(r->flags, F_RST);
	assert_int_equal(r->seq, 777);
	peer_send(26, PISN, 777, F_RST, 65535, NULL, 0, NULL);
	assert_int_equal(nout, 0);                 /* never a RST for a RST */
	assert_int_equal(st()->drop[VR_TCP_DROP_NO_LISTENER], 3);
}

static void test_bad_segments(void **state)
{
	open_plain();
	corrupt = 1;
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, "abc", 3, NULL);
	corrupt = 0;
	assert_int_equal(st()->drop[VR_TCP_DROP_CSUM], 1);
	assert_int_equal(vr_tcp_readable(conn), 0);
	peer_send(PORT, PISN + 1, iss + 1, F_SYN | F_FIN, 65535, NULL, 0, NULL);
	assert_int_equal(st()->drop[VR_TCP_DROP_BAD_FLAGS], 1);
	/* An option running past the header. */
	struct opts o = { .mss = 1460, .ws = -1 };
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, NULL, 0, &o);
	assert_int_equal(st()->drop[VR_TCP_DROP_BAD_OPT], 0);
	assert_int_equal(nout, 0);
	assert_non_null(conn);
}

static void test_data_and_delayed_ack(void **state)
{
	char buf[64];

	open_plain();
	peer_send(PORT, PISN + 1, iss + 1, F_ACK | F_PSH, 65535, "EHLO x\r\n", 8, NULL);
	assert_int_equal(readable, 1);
	assert_int_equal(vr_tcp_readable(conn), 8);
	assert_int_equal(nout, 0);                 /* the ACK waits */
	tick(39);
	assert_int_equal(nout, 0);
	tick(1);
	struct seg *a = one();
	assert_int_equal(a->flags, F_ACK);
	assert_int_equal(a->ack, PISN + 9);
	assert_int_equal(a->seq, iss + 1);
	assert_int_equal(st()->delayed_acks, 1);
	assert_int_equal(vr_tcp_read(conn, buf, sizeof(buf)), 8);
	assert_memory_equal(buf, "EHLO x\r\n", 8);

	/* A reply carries the ACK. */
	peer_send(PORT, PISN + 9, iss + 1, F_ACK | F_PSH, 65535, "NOOP\r\n", 6, NULL);
	assert_int_equal(vr_tcp_send(conn, "250 ok\r\n", 8), 8);
	tick(1);
	a = one();
	assert_int_equal(a->flags, F_ACK | F_PSH);
	assert_int_equal(a->ack, PISN + 15);
	assert_int_equal(a->len, 8);
	assert_memory_equal(a->data, "250 ok\r\n", 8);
	tick(100);
	assert_int_equal(nout, 0);                 /* no ACK owed any more */
}

static void test_every_second_segment_acked(void **state)
{
	static char blk[1460];

	open_passive(&(struct opts){ .mss = 1460, .ws = -1 }, 65535);
	memset(blk, 'a', sizeof(blk));
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, blk, 1460, NULL);
	assert_int_equal(nout, 0);
	peer_send(PORT, PISN + 1 + 1460, iss + 1, F_ACK, 65535, blk, 1460, NULL);
	struct seg *a = one();
	assert_int_equal(a->ack, PISN + 1 + 2920);
}

static void test_ooo_reassembly_sack(void **state)
{
	char buf[32];

	open_passive(&(struct opts){ .mss = 1460, .ws = -1, .sack_ok = 1 }, 65535);
	peer_send(PORT, PISN + 1 + 10, iss + 1, F_ACK, 65535, "KLMNO", 5, NULL);
	struct seg *a = one();                     /* a duplicate ACK at once, with SACK */
	assert_int_equal(a->ack, PISN + 1);
	assert_int_equal(a->o.nsack, 1);
	assert_int_equal(a->o.sack[0][0], PISN + 11);
	assert_int_equal(a->o.sack[0][1], PISN + 16);
	peer_send(PORT, PISN + 1 + 20, iss + 1, F_ACK, 65535, "UVWXY", 5, NULL);
	a = one();
	assert_int_equal(a->o.nsack, 2);
	assert_int_equal(a->o.sack[0][0], PISN + 21);      /* the latest first */
	assert_int_equal(a->o.sack[1][0], PISN + 11);
	assert_int_equal(vr_tcp_readable(conn), 0);
	assert_int_equal(readable, 0);
	peer_send(PORT, PISN + 1, iss + 1, F_ACK, 65535, "ABCDEFGHIJ", 10, NULL);
	a = one();                                 /* the hole filled: ACKed at once */
	assert_int_equal(a->ack, PISN + 16);
	assert_int_equal(a->o.nsack, 1);
	assert_int_equal(vr_tcp_readable(conn), 15);
	peer_send(PORT, PISN + 1 + 12, iss + 1, F_ACK, 65535, "MNOPQRST", 8, NULL);
	a = one();
	assert_int_equal(a->ack, PISN + 26);
	assert_int_equal(a->o.nsack, 0);
	assert_int_equal(vr_tcp_read(conn, buf, sizeof(buf)), 25);
	assert_memory_equal(buf, "ABCDEFGHIJKLMNOPQRSTUVWXY", 25);
	assert_int_equal(st()->ooo_segs, 2);
}

static void test_ooo_bounded(void **state)
{
	open_plain();
	/* Five disjoint islands: the fifth has no slot and is dropped, not stored. */
	for (unsigned i = 0; i < 5; i++)
		peer_send(PORT, PISN + 1 + 10 + 10 * i, iss + 1, F_ACK, 65535, "x", 1, NULL);
	assert_int_equal(st()->drop[VR_TCP_DROP_OOO_FULL], 1);
	assert_int_equal(st()->ooo_segs, 4);
}

/* Connects to the peer's port 2525; returns the SYN it sent. */
static struct vr_tcp_conn *connect_peer(struct seg *syn)
{
	int err = 0;
	struct vr_tcp_conn *c = vr_tcp_connect(tcp, PEER_IP, 2525, &cbs, NULL, now, &err);

	assert_non_null(c);
	*syn = *one();
	pport = 2525;
	return c;
}

static void test_active_open(void **state)
{
	struct seg syn;
	struct vr_tcp_conn *c = connect_peer(&syn);

	assert_int_equal(syn.flags, F_SYN);
	assert_int_equal(syn.dport, 2525);
	assert_true(syn.sport >= 49152);
	assert_int_equal(syn.o.mss, 1460);
	assert_true(syn.o.ts && syn.o.sack_ok && syn.o.ws == 1);
	struct vr_tcp_info info;
	vr_tcp_conn_info(c, &info);
	assert_string_equal(info.state, "SYN_SENT");
	assert_int_equal(vr_tcp_send(c, "HELO", 4), 4);   /* queued until established */
	now += 3;
	struct opts o = { .mss = 1400, .ws = 2, .sack_ok = 1, .ts = 1, .tsval = 77,
			  .tsecr = syn.o.tsval };
	peer_send(syn.sport, 5000, syn.seq + 1, F_SYN | F_ACK, 1000, NULL, 0, &o);
	assert_int_equal(established, 1);
	struct seg *a = one();                     /* the ACK carries the queued bytes */
	assert_int_equal(a->flags & (F_ACK | F_SYN), F_ACK);
	assert_int_equal(a->ack, 5001);
	assert_int_equal(a->seq, syn.seq + 1);
	assert_int_equal(a->len, 4);
	assert_int_equal(a->o.tsecr, 77);
	vr_tcp_conn_info(c, &info);
	assert_string_equal(info.state, "ESTABLISHED");
	assert_int_equal(info.mss, 1400);
	assert_int_equal(info.snd_wnd, 1000);      /* a SYN's window is not scaled */
	assert_int_equal(info.srtt_ms, 3);
	vr_tcp_abort(c);
	tick(0);
	struct seg *r = one();
	assert_int_equal(r->flags, F_RST);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
}

static void test_active_refused(void **state)
{
	struct seg syn;
	connect_peer(&syn);
	/* A RST whose ACK is not for our SYN is ignored; the right one refuses. */
	peer_send(syn.sport, 0, syn.seq + 5, F_RST | F_ACK, 0, NULL, 0, NULL);
	assert_int_equal(errors, 0);
	peer_send(syn.sport, 0, syn.seq + 1, F_RST | F_ACK, 0, NULL, 0, NULL);
	assert_int_equal(errors, 1);
	assert_int_equal(last_err, -ECONNREFUSED);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
}

static void test_syn_retries(void **state)
{
	struct seg syn;
	connect_peer(&syn);
	/* 1 s, then doubling (RFC 6298 §5.5); five retries, then -ETIMEDOUT. */
	uint32_t gap = 1000;
	for (unsigned i = 0; i < 5; i++) {
		tick(gap - 1);
		assert_int_equal(nout, 0);
		tick(1);
		struct seg *s = one();
		assert_int_equal(s->flags, F_SYN);
		assert_int_equal(s->seq, syn.seq);
		gap *= 2;
	}
	tick(gap);
	assert_int_equal(errors, 1);
	assert_int_equal(last_err, -ETIMEDOUT);
	assert_int_equal(vr_tcp_conn_count(tcp), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_handshake_passive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_isn_keyed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_listener_rst, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_segments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_and_delayed_ack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_second_segment_acked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ooo_reassembly_sack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ooo_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_active_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_active_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_syn_retries, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
