/*
 * policy_impl.h - what the policy module's files share and nobody else
 * sees: address prefixes and their hash index (addr.c), the bump arena a
 * table's strings live in, and the parser of one accounts line (account.c).
 */
#ifndef VR_POLICY_IMPL_H
#define VR_POLICY_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <jansson.h>

#include "vmrelay/common.h"
#include "vmrelay/policy.h"

/* --- addr.c --- */

/*
 * An IPv4 or IPv6 prefix with its host bits cleared. IPv4 sits in the low
 * 32 bits of lo; IPv6 is hi:lo, both halves in host order. A full address
 * is a prefix of 32 / 128.
 */
struct vr_policy_addr {
	uint64_t hi, lo;
	uint8_t family;              /* 4 or 6 */
	uint8_t plen;
};

/*
 * Parses "a.b.c.d", "a.b.c.d/n", "x:..:y" (meaning its /64) or "x::/n";
 * an IPv4-mapped IPv6 address is taken as the IPv4 address. Host bits set
 * under a prefix are an error. 0, or -1 with the reason in why.
 */
int vr_policy_addr_parse(const char *s, size_t len, struct vr_policy_addr *out, char *why,
			 size_t whylen);
/* A client address (IPv4-mapped IPv6 becomes IPv4). false for other families. */
bool vr_policy_addr_from_sockaddr(const struct sockaddr *sa, struct vr_policy_addr *out);
/* "10.0.0.0/24", "2001:db8::/64"; a full IPv4 address without "/32". */
void vr_policy_addr_format(const struct vr_policy_addr *a, char *out, size_t len);

/*
 * Prefix -> account index. One open-addressing table keyed by (family,
 * length, prefix), plus the lengths present per family, longest first: a
 * lookup probes once per length present (typically /32 and /64), whatever
 * the number of accounts. Built by one thread, then read-only.
 */
struct vr_policy_addrtab;

/* hint: how many prefixes are expected (the table grows past it). */
struct vr_policy_addrtab *vr_policy_addrtab_new(size_t hint);
void vr_policy_addrtab_free(struct vr_policy_addrtab *t);
/* 0 if added; 1 if the prefix is already there (*existing says whose);
 * -ENOMEM. */
int vr_policy_addrtab_insert(struct vr_policy_addrtab *t, const struct vr_policy_addr *a,
			     uint32_t value, uint32_t *existing);
/* Longest prefix holding the full address a. */
bool vr_policy_addrtab_lookup(const struct vr_policy_addrtab *t, const struct vr_policy_addr *a,
			      uint32_t *value);

/* --- accounts.c: a table's memory --- */

/* Everything an accounts table points to, freed in one go with the table. */
struct vr_policy_arena {
	struct arena_chunk *chunks;
	uint8_t *next, *end;
	struct arena_cleanup *cleanups;
};

void *vr_policy_arena_alloc(struct vr_policy_arena *a, size_t n);
char *vr_policy_arena_strndup(struct vr_policy_arena *a, const char *s, size_t n);
/* Has fn(arg) called when the arena is freed: for what the table holds
 * outside it (loaded DKIM keys), also on a load that fails half way.
 * 0 or -ENOMEM. */
int vr_policy_arena_on_free(struct vr_policy_arena *a, void (*fn)(void *), void *arg);
void vr_policy_arena_free(struct vr_policy_arena *a);

/*
 * Zeroed memory for the index tables, with transparent huge pages asked
 * for: lookups probe them at random, and with 4 KiB pages nearly every
 * probe of a large table would also miss the TLB. NULL on failure.
 */
void *vr_policy_big_alloc(size_t n);
void vr_policy_big_free(void *p, size_t n);

/* --- account.c --- */

/* A key file loaded earlier in the same table's load: the file (device,
 * inode, and size and mtime, so a file rewritten in place is read again),
 * the algorithm it was checked against, and the key (pkey NULL: a free slot). */
struct vr_policy_key_seen {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	int alg;                     /* enum vr_dkim_alg */
	struct evp_pkey_st *pkey;    /* a reference is held by each key using it */
};

/* One line being parsed: the caller's settings in, the addresses out. */
struct vr_policy_line {
	struct vr_policy_arena *arena;
	uint32_t default_quota, max_quota;
	/* the account's "ips", parsed; reused from line to line */
	struct vr_policy_addr *addrs;
	const char **addr_text;      /* as written, for messages; valid until the next line */
	unsigned n_addrs, cap_addrs;
	char *why;                   /* what is wrong, without file and line */
	size_t whylen;
	/* key files loaded so far in this load, open addressing on the inode;
	 * the caller frees keys_seen after the last line */
	struct vr_policy_key_seen *keys_seen;
	size_t keys_seen_mask, n_keys_seen;
};

/* Fills *a from one JSON object. 0, or -1 with line->why set. */
int vr_policy_account_parse(struct vr_policy_line *line, json_t *obj, struct vr_account *a);

#endif
