/*
 * addr.c - client addresses and prefixes, and the index that maps them to
 * accounts (see policy_impl.h).
 *
 * A VPS is an IPv4 address or an IPv6 /64, occasionally a wider prefix for a
 * customer with several. Rather than a trie we keep one hash table keyed by
 * (family, length, masked prefix) and remember which lengths occur: looking
 * up a client is one probe per length present, longest first, which for the
 * usual table (/32s and /64s) is one probe for IPv4 and one for IPv6.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_impl.h"

/* --- prefixes --- */

static uint64_t mask64(unsigned bits)
{
	return bits == 0 ? 0 : ~0ull << (64 - bits);
}

static void addr_mask(struct vr_policy_addr *a, unsigned plen)
{
	a->plen = (uint8_t)plen;
	if (a->family == 4) {
		a->lo &= mask64(plen) >> 32;
	} else if (plen >= 64) {
		a->lo &= mask64(plen - 64);
	} else {
		a->hi &= mask64(plen);
		a->lo = 0;
	}
}

static uint64_t load_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void store_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void from_in6(const struct in6_addr *in6, struct vr_policy_addr *a)
{
	if (IN6_IS_ADDR_V4MAPPED(in6)) {
		a->family = 4;
		a->hi = 0;
		a->lo = load_be64(in6->s6_addr + 8) & 0xffffffffu;
		a->plen = 32;
		return;
	}
	a->family = 6;
	a->hi = load_be64(in6->s6_addr);
	a->lo = load_be64(in6->s6_addr + 8);
	a->plen = 128;
}

bool vr_policy_addr_from_sockaddr(const struct sockaddr *sa, struct vr_policy_addr *out)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		out->family = 4;
		out->hi = 0;
		out->lo = ntohl(sin->sin_addr.s_addr);
		out->plen = 32;
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		from_in6(&((const struct sockaddr_in6 *)sa)->sin6_addr, out);
		return true;
	}
	return false;
}

int vr_policy_addr_parse(const char *s, size_t len, struct vr_policy_addr *out, char *why,
			 size_t whylen)
{
	char text[INET6_ADDRSTRLEN + 4];
	const char *slash = memchr(s, '/', len);
	size_t alen = slash ? (size_t)(slash - s) : len;
	struct in_addr in4;
	struct in6_addr in6;
	unsigned plen = 0;

	if (alen >= sizeof(text))
		goto bad;
	memcpy(text, s, alen);
	text[alen] = '\0';
	if (slash) {
		const char *p = slash + 1, *end = s + len;
		if (p == end || end - p > 3)
			goto bad;
		for (; p < end; p++) {
			if (*p < '0' || *p > '9')
				goto bad;
			plen = plen * 10 + (unsigned)(*p - '0');
		}
	}
	struct vr_policy_addr a;
	if (inet_pton(AF_INET, text, &in4) == 1) {
		a.family = 4;
		a.hi = 0;
		a.lo = ntohl(in4.s_addr);
		if (!slash)
			plen = 32;
	} else if (inet_pton(AF_INET6, text, &in6) == 1) {
		from_in6(&in6, &a);
		if (a.family == 4 && slash) {
			/* ::ffff:a.b.c.d/n is IPv4 /n-96 */
			if (plen < 96)
				goto bad;
			plen -= 96;
		} else if (!slash) {
			/* A VPS owns its /64, whatever address it happens to use. */
			plen = a.family == 4 ? 32 : 64;
			addr_mask(&a, plen);
		}
	} else {
		goto bad;
	}
	if (plen > (a.family == 4 ? 32u : 128u))
		goto bad;
	struct vr_policy_addr masked = a;
	addr_mask(&masked, plen);
	if (masked.hi != a.hi || masked.lo != a.lo) {
		char canon[INET6_ADDRSTRLEN + 4];
		vr_policy_addr_format(&masked, canon, sizeof(canon));
		snprintf(why, whylen, "'%.*s' has host bits set (the prefix is %s)", (int)len, s,
			 canon);
		return -1;
	}
	*out = masked;
	return 0;
bad:
	snprintf(why, whylen, "'%.*s' is not an IPv4 or IPv6 address or prefix",
		 (int)VR_MIN(len, 64), s);
	return -1;
}

void vr_policy_addr_format(const struct vr_policy_addr *a, char *out, size_t len)
{
	char text[INET6_ADDRSTRLEN];

	if (a->family == 4) {
		struct in_addr in4 = { .s_addr = htonl((uint32_t)a->lo) };
		inet_ntop(AF_INET, &in4, text, sizeof(text));
		if (a->plen == 32)
			snprintf(out, len, "%s", text);
		else
			snprintf(out, len, "%s/%u", text, a->plen);
		return;
	}
	struct in6_addr in6;
	store_be64(in6.s6_addr, a->hi);
	store_be64(in6.s6_addr + 8, a->lo);
	inet_ntop(AF_INET6, &in6, text, sizeof(text));
	snprintf(out, len, "%s/%u", text, a->plen);
}

/* --- the index --- */

struct slot {
	uint64_t hi, lo;
	uint32_t value;
	uint8_t family;              /* 0: empty */
	uint8_t plen;
};

struct vr_policy_addrtab {
	struct slot *slots;
	size_t mask;                 /* capacity - 1, a power of two minus one */
	size_t n;
	/* lengths present, longest first, per family (index 0: IPv4, 1: IPv6) */
	uint8_t lens[2][129];
	unsigned n_lens[2];
};

/* murmur3's finaliser: every input bit reaches every output bit. */
static uint64_t fmix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static size_t slot_hash(const struct vr_policy_addr *a)
{
	return (size_t)fmix64(a->hi ^ fmix64(a->lo ^ ((uint64_t)a->family << 8 | a->plen)));
}

static struct slot *slot_find(const struct vr_policy_addrtab *t, const struct vr_policy_addr *a)
{
	for (size_t i = slot_hash(a) & t->mask;; i = (i + 1) & t->mask) {
		struct slot *s = &t->slots[i];
		if (s->family == 0 || (s->lo == a->lo && s->hi == a->hi && s->plen == a->plen &&
				       s->family == a->family))
			return s;
	}
}

struct vr_policy_addrtab *vr_policy_addrtab_new(size_t hint)
{
	struct vr_policy_addrtab *t = calloc(1, sizeof(*t));
	size_t cap = 64;

	if (!t)
		return NULL;
	while (cap < 2 * hint)
		cap *= 2;
	t->mask = cap - 1;
	t->slots = vr_policy_big_alloc(cap * sizeof(*t->slots));
	if (!t->slots) {
		free(t);
		return NULL;
	}
	return t;
}

void vr_policy_addrtab_free(struct vr_policy_addrtab *t)
{
	if (!t)
		return;
	vr_policy_big_free(t->slots, (t->mask + 1) * sizeof(*t->slots));
	free(t);
}

static int grow(struct vr_policy_addrtab *t)
{
	size_t cap = (t->mask + 1) * 2;
	struct slot *old = t->slots, *slots = vr_policy_big_alloc(cap * sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	t->slots = slots;
	t->mask = cap - 1;
	for (size_t i = 0; i < cap / 2; i++) {
		if (old[i].family == 0)
			continue;
		struct vr_policy_addr a = { old[i].hi, old[i].lo, old[i].family, old[i].plen };
		*slot_find(t, &a) = old[i];
	}
	vr_policy_big_free(old, cap / 2 * sizeof(*old));
	return 0;
}

int vr_policy_addrtab_insert(struct vr_policy_addrtab *t, const struct vr_policy_addr *a,
			     uint32_t value, uint32_t *existing)
{
	/* Half full at most keeps linear probing short. */
	if ((t->n + 1) * 2 > t->mask + 1 && grow(t) < 0)
		return -ENOMEM;
	struct slot *s = slot_find(t, a);
	if (s->family != 0) {
		*existing = s->value;
		return 1;
	}
	*s = (struct slot){ a->hi, a->lo, value, a->family, a->plen };
	t->n++;

	int f = a->family == 6;
	unsigned i = 0, n = t->n_lens[f];
	while (i < n && t->lens[f][i] > a->plen)
		i++;
	if (i == n || t->lens[f][i] != a->plen) {
		memmove(&t->lens[f][i + 1], &t->lens[f][i], n - i);
		t->lens[f][i] = a->plen;
		t->n_lens[f]++;
	}
	return 0;
}

bool vr_policy_addrtab_lookup(const struct vr_policy_addrtab *t, const struct vr_policy_addr *a,
			      uint32_t *value)
{
	int f = a->family == 6;

	for (unsigned i = 0; i < t->n_lens[f]; i++) {
		struct vr_policy_addr p = *a;
		addr_mask(&p, t->lens[f][i]);
		const struct slot *s = slot_find(t, &p);
		if (s->family != 0) {
			*value = s->value;
			return true;
		}
	}
	return false;
}
