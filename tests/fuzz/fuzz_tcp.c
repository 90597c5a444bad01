/*
 * fuzz_tcp.c - libFuzzer harness for TCP (engine/net/tcp*.c): arbitrary
 * segments reach a stack with a listening port, a few connections the
 * harness established itself and one active open in progress, while an
 * owner reads, writes, shuts down, closes and aborts at the input's say and
 * the clock jumps so every timer fires. No input may crash it, leak a
 * packet or a connection, make it send a malformed segment, or hold more
 * packets than ARP's queues allow.
 *
 * Segments get correct checksums and, for the established connections,
 * ports and sequence numbers relative to the connection's (so small fuzzed
 * numbers land in its window): the fuzzer then explores the state machine
 * instead of the checksum. Raw frames pass unchanged. The stack is dual
 * stack: NCONN connections are made over IPv4 and as many over IPv6, and
 * the kind byte's top bit sends a segment or too-big message over IPv6.
 *
 * The input is a run of records: one byte of clock advance (8 ms steps),
 * one byte of kind, then the kind's bytes:
 *   0 segment: conn index (>= NCONN: the ports as given), a 16-bit length,
 *     then a TCP header and payload; seq and ack are offsets for a conn.
 *   1 frame: a 16-bit length and an Ethernet frame.
 *   2 owner: conn index, action (read, send, shutdown, close, abort), count.
 *   3 ICMP fragmentation-needed (ICMPv6 packet too big): conn index, 16-bit
 *     MTU, 32-bit seq offset.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined;
 * run: build-fuzz/tests/fuzz/fuzz_tcp tests/fuzz/corpus/tcp
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test_bytes.h"
#include "vmrelay/tcp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define POOL     256
#define ARP_MAX  8
#define PENDING  4
#define NCONN    4
#define OUR_IP   0x0a000001u
#define PEER_IP  0x0a000002u
#define PORT     25
#define PORT6_BASE 41000             /* the IPv6 connections' peer ports (IPv4's: 40000) */

static const uint8_t our_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 };
static const uint8_t peer_mac[6] = { 0x02, 0, 0, 0, 0, 0x02 };
static const uint8_t our_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
static const uint8_t peer_ip6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };


/* The connections the owner holds, and the peer's view of the harness-made ones. */
static struct vr_tcp_conn *held[2 * NCONN + 2];
static uint32_t our_isn[2][NCONN];   /* [1]: the IPv6 connections */
static uint16_t last_synack_port;
static uint32_t last_synack_seq;

static void held_drop(struct vr_tcp_conn *c)
{
	for (unsigned i = 0; i < 2 * NCONN + 2; i++)
		if (held[i] == c)
			held[i] = NULL;
}

/* Every frame we send is ours and well formed; a TCP one has correct checksums. */
static unsigned tx_check(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
{
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *f = pkts[i]->data;
		size_t len = pkts[i]->len;
		if (len < 14 + 20 || memcmp(f + 6, our_mac, 6) != 0)
			abort();
		if (get16(f + 12) == 0x0800 && f[14 + 9] == 6) {
			const uint8_t *ip = f + 14, *th = ip + 20;
			size_t tl = get16(ip + 2) - 20u;
			if (vr_net_csum_fold(vr_net_csum_add(0, ip, 20)) || tl < 20 || tl + 34 != len ||
			    (th[12] >> 4) * 4u < 20 || (th[12] >> 4) * 4u > tl ||
			    vr_net_csum_fold(vr_net_csum_add(vr_net_csum_pseudo(OUR_IP, get32(ip + 16),
										6, (uint16_t)tl),
							     th, tl)))
				abort();
			if (th[13] == 0x12 && get16(th) == PORT) {
				last_synack_port = get16(th + 2);
				last_synack_seq = get32(th + 4);
			}
		}
		if (get16(f + 12) == 0x86dd) {
			const uint8_t *ip = f + 14, *l4 = ip + 40;
			size_t tl = get16(ip + 4);
			if (len < 14 + 40 || ip[0] >> 4 != 6 || tl + 54 != len ||
			    (ip[6] != 6 && ip[6] != 58) ||
			    vr_net_csum_fold(vr_net_csum_add(vr_net_csum_pseudo6(ip + 8, ip + 24,
										 ip[6], (uint32_t)tl),
							     l4, tl)))
				abort();
			if (ip[6] == 6 && (tl < 20 || (l4[12] >> 4) * 4u < 20 ||
					   (l4[12] >> 4) * 4u > tl))
				abort();
			if (ip[6] == 6 && l4[13] == 0x12 && get16(l4) == PORT) {
				last_synack_port = get16(l4 + 2);
				last_synack_seq = get32(l4 + 4);
			}
		}
		vr_net_pkt_free(pkts[i]);
	}
	return n;
}

static int on_accept(void *arg, struct vr_tcp_conn *c, uint64_t now)
{
	for (unsigned i = 0; i < 2 * NCONN + 2; i++) {
		if (!held[i]) {
			held[i] = c;
			return 0;
		}
	}
	return -1;
}

static void on_readable(struct vr_tcp_conn *c, void *u, uint64_t now) {}
static void on_error(struct vr_tcp_conn *c, void *u, int err, uint64_t now) { held_drop(c); }

static const struct vr_tcp_cb cbs = { .readable = on_readable, .error = on_error };

static void frame_in(struct vr_net *n, const uint8_t *f, size_t len, uint64_t now)
{
	struct vr_pkt *p = vr_net_pkt_alloc(n);

	if (!p)
		abort();
	len = len < p->tailroom ? len : p->tailroom;
	memcpy(p->data, f, len);
	p->len = (uint16_t)len;
	vr_net_rx(n, &p, 1, now);
}

/* An IPv6 datagram from the peer around l4 (len bytes of TCP or ICMPv6), checksummed. */
static void ip6_in(struct vr_net *n, uint8_t proto, const uint8_t *l4, size_t len, uint64_t now)
{
	static uint8_t f[2048];

	if (len > sizeof(f) - 54)
		len = sizeof(f) - 54;
	memcpy(f, our_mac, 6);
	memcpy(f + 6, peer_mac, 6);
	put16(f + 12, 0x86dd);
	uint8_t *ip = f + 14;
	put_ip6(ip, (uint16_t)len, proto, 64, peer_ip6, our_ip6);
	memcpy(ip + 40, l4, len);
	unsigned at = proto == 6 ? 16 : 2;
	if (len >= at + 2) {
		put16(ip + 40 + at, 0);
		put16(ip + 40 + at, vr_net_csum_fold(vr_net_csum_add(
			vr_net_csum_pseudo6(peer_ip6, our_ip6, proto, (uint32_t)len), ip + 40, len)));
	}
	frame_in(n, f, 54 + len, now);
}

/* An IPv4 datagram from the peer around l4 (len bytes of protocol proto). */
static void ip_in(struct vr_net *n, uint8_t proto, const uint8_t *l4, size_t len, uint64_t now)
{
	static uint8_t f[2048];

	if (len > sizeof(f) - 34)
		len = sizeof(f) - 34;
	memcpy(f, our_mac, 6);
	memcpy(f + 6, peer_mac, 6);
	put16(f + 12, 0x0800);
	uint8_t *ip = f + 14;
	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(20 + len));
	ip[8] = 64;
	ip[9] = proto;
	put32(ip + 12, PEER_IP);
	put32(ip + 16, OUR_IP);
	put16(ip + 10, vr_net_csum_fold(vr_net_csum_add(0, ip, 20)));
	memcpy(ip + 20, l4, len);
	if (proto == 6 && len >= 20) {
		put16(ip + 20 + 16, 0);
		put16(ip + 20 + 16, vr_net_csum_fold(vr_net_csum_add(
			vr_net_csum_pseudo(PEER_IP, OUR_IP, 6, (uint16_t)len), ip + 20, len)));
	}
	frame_in(n, f, 34 + len, now);
}

static void seg_in(struct vr_net *n, int v6, uint16_t sport, uint32_t seq, uint32_t ack,
		   uint8_t flags, uint64_t now)
{
	uint8_t th[20] = { 0 };

	put16(th, sport);
	put16(th + 2, PORT);
	put32(th + 4, seq);
	put32(th + 8, ack);
	th[12] = 5 << 4;
	th[13] = flags;
	put16(th + 14, 65535);
	if (v6)
		ip6_in(n, 6, th, sizeof(th), now);
	else
		ip_in(n, 6, th, sizeof(th), now);
}

static void owner_act(unsigned idx, uint8_t action, uint8_t count)
{
	static const uint8_t junk[256];
	static uint8_t buf[256];
	struct vr_tcp_conn *c = held[idx % (2 * NCONN + 2)];

	if (!c)
		return;
	switch (action % 5) {
	case 0:
		vr_tcp_read(c, buf, count);
		break;
	case 1:
		vr_tcp_send(c, junk, count);
		break;
	case 2:
		vr_tcp_shutdown(c);
		break;
	case 3:
		held_drop(c);
		vr_tcp_close(c);
		break;
	default:
		held_drop(c);
		vr_tcp_abort(c);
		break;
	}
}

static void icmp6_in(struct vr_net *n, unsigned idx, uint16_t mtu, uint32_t seqoff, uint64_t now)
{
	uint8_t m[8 + 48] = { 2 };
	uint8_t *q = m + 8;

	put32(m + 4, mtu);
	put_ip6(q, 1440, 6, 64, our_ip6, peer_ip6);
	put16(q + 40, PORT);
	put16(q + 42, (uint16_t)(PORT6_BASE + idx % NCONN));
	put32(q + 44, our_isn[1][idx % NCONN] + 1 + seqoff);
	ip6_in(n, 58, m, sizeof(m), now);
}

static void icmp_in(struct vr_net *n, unsigned idx, uint16_t mtu, uint32_t seqoff, uint64_t now)
{
	uint8_t m[8 + 28] = { 3, 4 };
	uint8_t *q = m + 8;

	put16(m + 6, mtu);
	q[0] = 0x45;
	put16(q + 2, 1500);
	q[8] = 64;
	q[9] = 6;
	put32(q + 12, OUR_IP);
	put32(q + 16, PEER_IP);
	put16(q + 20, PORT);
	put16(q + 22, (uint16_t)(40000 + idx % NCONN));
	put32(q + 24, our_isn[0][idx % NCONN] + 1 + seqoff);
	put16(m + 2, vr_net_csum_fold(vr_net_csum_add(0, m, sizeof(m))));
	ip_in(n, 1, m, sizeof(m), now);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vr_net_conf nc = {
		.mac = { 0x02, 0, 0, 0, 0, 0x01 }, .ip = OUR_IP, .prefix = 24, .pkts = POOL,
		.arp_entries = ARP_MAX, .arp_pending = PENDING, .tx = tx_check, .prefix6 = 64,
	};
	struct vr_tcp_conf tc = {
		.max_conns = 16, .sndbuf = 4096, .rcvbuf = 4096, .syn_queue = 4, .timewait_max = 4,
		.key = { 7 },
		/* Short timers, so that the end of an input can run them all out quickly. */
		.max_retries = 3, .syn_retries = 2, .rto_max_ms = 8000, .timewait_ms = 10000,
		.fin_wait_ms = 10000,
	};
	char err[128];
	uint64_t now = 1000;

	memset(held, 0, sizeof(held));
	memcpy(nc.ip6, our_ip6, 16);
	struct vr_net *n = vr_net_new(&nc, err, sizeof(err));
	struct vr_tcp *t = n ? vr_tcp_new(n, &tc, now, err, sizeof(err)) : NULL;
	if (!t || vr_tcp_listen(t, PORT, &cbs, on_accept, NULL) < 0)
		abort();

	/* The peer's ARP request (so its MAC is known), then NCONN handshakes. */
	uint8_t arp[42] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x06,
			    0, 1, 0x08, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0, 0x02 };
	put32(arp + 28, PEER_IP);
	put32(arp + 38, OUR_IP);
	frame_in(n, arp, sizeof(arp), now);
	/* The peer's IPv6 neighbour solicitation, for the same. */
	uint8_t ns[32] = { 135 };
	memcpy(ns + 8, our_ip6, 16);
	ns[24] = 1;
	ns[25] = 1;
	memcpy(ns + 26, peer_mac, 6);
	static uint8_t nsf[14 + 40 + 32];
	memcpy(nsf, (const uint8_t[6]){ 0x33, 0x33, 0xff, 0, 0, 1 }, 6);
	memcpy(nsf + 6, peer_mac, 6);
	put16(nsf + 12, 0x86dd);
	put_ip6(nsf + 14, sizeof(ns), 58, 255, peer_ip6,
		(const uint8_t[16]){ 0xff, 0x02, [11] = 1, 0xff, 0, 0, 1 });
	put16(ns + 2, vr_net_csum_fold(vr_net_csum_add(
		vr_net_csum_pseudo6(nsf + 22, nsf + 38, 58, sizeof(ns)), ns, sizeof(ns))));
	memcpy(nsf + 54, ns, sizeof(ns));
	frame_in(n, nsf, sizeof(nsf), now);
	for (int v6 = 0; v6 < 2; v6++) {
		for (unsigned i = 0; i < NCONN; i++) {
			uint16_t port = (uint16_t)((v6 ? PORT6_BASE : 40000) + i);
			seg_in(n, v6, port, 5000, 0, 0x02, now);
			if (last_synack_port != port)
				abort();
			our_isn[v6][i] = last_synack_seq;
			seg_in(n, v6, port, 5001, our_isn[v6][i] + 1, 0x10, now);
		}
	}
	if (vr_tcp_conn_count(t) != 2 * NCONN)
		abort();
	int cerr;
	held[2 * NCONN + 1] = vr_tcp_connect(t, PEER_IP, 2525, &cbs, NULL, now, &cerr);

	while (size >= 2) {
		now += (uint64_t)data[0] * 8;
		uint8_t kind = data[1] % 4;
		int v6 = data[1] >> 7;
		data += 2;
		size -= 2;
		if (kind == 0 && size >= 3) {
			unsigned idx = data[0];
			size_t len = get16(data + 1);
			data += 3;
			size -= 3;
			len = len < size ? len : size;
			uint8_t seg[2048];
			len = len < sizeof(seg) ? len : sizeof(seg);
			memcpy(seg, data, len);
			if (idx < NCONN && len >= 20) {
				put16(seg, (uint16_t)((v6 ? PORT6_BASE : 40000) + idx));
				put16(seg + 2, PORT);
				put32(seg + 4, get32(seg + 4) + 5001);
				put32(seg + 8, get32(seg + 8) + our_isn[v6][idx] + 1);
			}
			if (v6)
				ip6_in(n, 6, seg, len, now);
			else
				ip_in(n, 6, seg, len, now);
			data += len;
			size -= len;
		} else if (kind == 1 && size >= 2) {
			size_t len = get16(data);
			data += 2;
			size -= 2;
			len = len < size ? len : size;
			frame_in(n, data, len, now);
			data += len;
			size -= len;
		} else if (kind == 2 && size >= 3) {
			owner_act(data[0], data[1], data[2]);
			data += 3;
			size -= 3;
		} else if (kind == 3 && size >= 7) {
			if (v6)
				icmp6_in(n, data[0], get16(data + 1), get32(data + 3), now);
			else
				icmp_in(n, data[0], get16(data + 1), get32(data + 3), now);
			data += 7;
			size -= 7;
		} else {
			break;
		}
		vr_tcp_poll(t, now);
		if (vr_net_pkt_in_use(n) > ARP_MAX * PENDING || vr_tcp_conn_count(t) > 16)
			abort();
	}
	/* Every timer runs out: orphans finish, TIME_WAIT expires, held ones stay held. */
	for (int i = 0; i < 8; i++)
		vr_tcp_poll(t, now += 10000);
	for (unsigned i = 0; i < 2 * NCONN + 2; i++)
		if (held[i])
			vr_tcp_abort(held[i]);
	vr_tcp_poll(t, now += 1000);
	if (vr_tcp_conn_count(t) != 0 || vr_tcp_timewait_count(t) != 0)
		abort();
	vr_tcp_free(t);
	for (int i = 0; i < 8; i++)
		vr_net_poll(n, now += 1000);
	if (vr_net_pkt_in_use(n) != 0)
		abort();
	vr_net_free(n);
	return 0;
}
