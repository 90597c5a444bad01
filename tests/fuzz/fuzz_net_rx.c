/*
 * fuzz_net_rx.c - libFuzzer harness for the stack's receive path
 * (engine/net): every frame off the wire passes Ethernet, ARP, IPv4, ICMP,
 * IPv6 (extension headers), ICMPv6 and Neighbor Discovery parsing, so no byte sequence may crash it, leak a packet, hold more of the
 * pool than its queues allow, or make it send a frame that is not well
 * formed.
 *
 * The input is a run of records: one byte of clock advance (in 16 ms
 * steps, so ARP retries and expiry happen), a big-endian 16-bit length,
 * then that many frame bytes. Each input gets a fresh instance; at the end
 * the clock runs past every ARP retry and the whole pool must be back.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined;
 * run: build-fuzz/tests/fuzz/fuzz_net_rx tests/fuzz/corpus/fuzz_net_rx
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define POOL     64
#define ARP_MAX  8
#define PENDING  4

static const uint8_t our_mac[6] = { 0x02, 0, 0, 0, 0, 0x01 };

static uint16_t be16(const uint8_t *b) { return (uint16_t)(b[0] << 8 | b[1]); }

/*
 * Every frame we send is ours, an IPv4 one carries a correct header
 * checksum, an IPv6 one is ICMPv6 of the length its header says with a
 * correct checksum (nothing else of IPv6 is sent without TCP).
 */
static unsigned tx_check(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
{
	for (unsigned i = 0; i < n; i++) {
		const struct vr_pkt *p = pkts[i];
		if (p->len < 14 + 20 || memcmp(p->data + 6, our_mac, 6) != 0)
			abort();
		if (be16(p->data + 12) == 0x0800 &&
		    vr_net_csum_fold(vr_net_csum_add(0, p->data + 14, 20)) != 0)
			abort();
		if (be16(p->data + 12) == 0x86dd) {
			const uint8_t *ip = p->data + 14;
			uint32_t plen = be16(ip + 4);
			if (p->len < 14 + 40 + 8 || ip[0] >> 4 != 6 || ip[6] != 58 ||
			    14 + 40 + plen != p->len ||
			    vr_net_csum_fold(vr_net_csum_add(vr_net_csum_pseudo6(ip + 8, ip + 24, 58, plen),
							     ip + 40, plen)))
				abort();
		}
		vr_net_pkt_free(pkts[i]);
	}
	return n;
}

static void tcp_sink(void *arg, struct vr_pkt *p, const struct vr_net_ip_info *ip, uint64_t now)
{
	vr_net_pkt_free(p);
}

static void pmtu_sink(void *arg, const struct vr_net_pmtu *m, uint64_t now)
{
	if (m->mtu < 68 || m->l4_len < 8)
		abort();
	volatile uint8_t touch = m->l4[m->l4_len - 1];
	(void)touch;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vr_net_conf c = {
		.mac = { 0x02, 0, 0, 0, 0, 0x01 }, .ip = 0x0a000001u, .prefix = 24,
		.gateway = 0x0a0000feu, .pkts = POOL, .arp_entries = ARP_MAX,
		.arp_pending = PENDING, .tx = tx_check, .tcp_rx = tcp_sink, .pmtu = pmtu_sink,
		.ip6 = { 0x20, 0x01, 0x0d, 0xb8, 0, 0x77, [15] = 1 }, .prefix6 = 64,
		.gateway6 = { 0xfe, 0x80, [15] = 0xfe },
	};
	char err[128];
	struct vr_net *n = vr_net_new(&c, err, sizeof(err));
	uint64_t now = 1000;

	if (!n)
		abort();
	while (size >= 3) {
		now += (uint64_t)data[0] * 16;
		size_t len = be16(data + 1);
		data += 3;
		size -= 3;
		struct vr_pkt *p = vr_net_pkt_alloc(n);
		if (!p)
			abort();
		/* No port hands over more than a pool buffer holds. */
		len = len < size ? len : size;
		len = len < p->tailroom ? len : p->tailroom;
		memcpy(p->data, data, len);
		p->len = (uint16_t)len;
		vr_net_rx(n, &p, 1, now);
		vr_net_poll(n, now);
		data += len;
		size -= len;
		/* Only ARP's pending queues may hold packets between bursts. */
		if (vr_net_pkt_in_use(n) > ARP_MAX * PENDING)
			abort();
	}
	for (int i = 0; i < 8; i++)
		vr_net_poll(n, now += 1000);
	if (vr_net_pkt_in_use(n) != 0)
		abort();
	vr_net_free(n);
	return 0;
}
