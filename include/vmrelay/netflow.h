/*
 * netflow.h - the keyed hash and the connection table TCP looks segments up
 * in (issue 3).
 *
 * The hash is SipHash-2-4 under a per-instance random key: a peer choosing
 * ports and addresses cannot aim its connections at one bucket, and the same
 * function serves RFC 6528's initial sequence numbers. The table maps a
 * 4-tuple to a 32-bit value (TCP's index into its connection pool); it is
 * open-addressed, sized at creation and never grows, so lookups and inserts
 * allocate nothing. One table per stack instance, single-threaded.
 */
#ifndef VR_NETFLOW_H
#define VR_NETFLOW_H

#include <stddef.h>
#include <stdint.h>

#define VR_SIPHASH_KEY_LEN 16

/* SipHash-2-4 (Aumasson and Bernstein) of len bytes under key. */
uint64_t vr_siphash24(const uint8_t key[VR_SIPHASH_KEY_LEN], const void *data, size_t len);

/*
 * A connection as seen from our side. IPv4: laddr/raddr host order, v6 and
 * the IPv6 fields zero. IPv6: v6 set, laddr6/raddr6 wire order, laddr and
 * raddr zero. The IPv4 fields come first and an IPv4 key hashes the same 12
 * bytes as before IPv6 (vr_flow_key_hash), so IPv4 pays only for a bigger
 * slot (64 bytes, one cache line) and a byte more to compare.
 */
struct vr_flow_key {
	uint32_t laddr, raddr;
	uint16_t lport, rport;
	uint8_t v6;
	uint8_t laddr6[16], raddr6[16];
};

struct vr_flow_table;

/* Holds up to max flows (1..1<<24). NULL with *err set. */
struct vr_flow_table *vr_flow_table_new(unsigned max, const uint8_t key[VR_SIPHASH_KEY_LEN],
					char *err, size_t errlen);
void vr_flow_table_free(struct vr_flow_table *t);
/* 0, -EEXIST (the tuple is there: its value is left alone) or -ENOSPC (full). */
int vr_flow_insert(struct vr_flow_table *t, const struct vr_flow_key *k, uint32_t val);
/* 0 with *val set, or -ENOENT. */
int vr_flow_lookup(const struct vr_flow_table *t, const struct vr_flow_key *k, uint32_t *val);
/* 0 or -ENOENT. */
int vr_flow_remove(struct vr_flow_table *t, const struct vr_flow_key *k);
unsigned vr_flow_count(const struct vr_flow_table *t);
/* The table's hash of k (what decides its slot). */
uint64_t vr_flow_hash(const struct vr_flow_table *t, const struct vr_flow_key *k);
/* SipHash-2-4 of k's ports and addresses (of its family) under key, whatever the padding. */
uint64_t vr_flow_key_hash(const uint8_t key[VR_SIPHASH_KEY_LEN], const struct vr_flow_key *k);

#endif
