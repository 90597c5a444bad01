/*
 * test_bytes.h - what tests, fuzz harnesses and benchmarks that build and
 * take apart frames by hand (test_net.c, test_net6.c, test_tcp_harness.c,
 * fuzz_tcp.c, bench_tcp.c) share: big-endian fields, an IPv6 header, and
 * RFC 1071's checksum written out the RFC's way, an independent check on
 * the stack's.
 */
#ifndef TEST_BYTES_H
#define TEST_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t get16(const uint8_t *b) { return (uint16_t)(b[0] << 8 | b[1]); }
static inline uint32_t get32(const uint8_t *b) { return (uint32_t)get16(b) << 16 | get16(b + 2); }
static inline void put16(uint8_t *b, uint16_t v) { b[0] = (uint8_t)(v >> 8); b[1] = (uint8_t)v; }
static inline void put32(uint8_t *b, uint32_t v)
{
	put16(b, (uint16_t)(v >> 16));
	put16(b + 2, (uint16_t)v);
}

/* RFC 8200 3's fixed header at h: version 6, no traffic class or flow label. */
static inline void put_ip6(uint8_t *h, uint16_t payload_len, uint8_t next, uint8_t hops,
			   const uint8_t *src, const uint8_t *dst)
{
	put32(h, 0x60000000u);
	put16(h + 4, payload_len);
	h[6] = next;
	h[7] = hops;
	memcpy(h + 8, src, 16);
	memcpy(h + 24, dst, 16);
}

/* RFC 1071 §4.1 over count bytes at addr, on top of sum (a pseudo-header's, or 0). */
static inline uint16_t rfc1071(uint32_t sum, const uint8_t *addr, size_t count)
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

#endif
