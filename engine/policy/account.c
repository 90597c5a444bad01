/*
 * account.c - one accounts line (a JSON object, already parsed by jansson)
 * into a struct vr_account.
 *
 *   {"id":"vps1","ips":["203.0.113.7","2001:db8:7::/64"],
 *    "hostname":"host1.example.com",
 *    "domains":["example.com",{"name":"pending.example","verified":false}],
 *    "daily_quota":1000,"over_quota":"defer","auth_sha256":"<64 hex>",
 *    "dkim":{"example.com":[{"selector":"ed1","algorithm":"ed25519-sha256",
 *                            "key":"/etc/vmrelay/keys/ed1.pem"}]}}
 *
 * Each key has an entry in fields[]; a key not there, a value of the wrong
 * type or shape, and a missing id are errors, so a typo in the operator's
 * file never silently drops a setting. Strings go into the table's arena.
 * Checks that involve other lines (duplicate ids and addresses) are the
 * caller's. DKIM key files are loaded here, each freed with the table; a
 * file named by several accounts is loaded once per table.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "vmrelay/dkim.h"
#include "policy_impl.h"

struct parse {
	struct vr_policy_line *line;
	struct vr_account *a;
};

static int bad(struct parse *p, const char *fmt, ...) VR_PRINTF(2, 3);

static int bad(struct parse *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->line->why, p->line->whylen, fmt, ap);
	va_end(ap);
	return -1;
}

static const char *type_name(const json_t *v)
{
	static const char *const names[] = {
		[JSON_OBJECT] = "an object", [JSON_ARRAY] = "an array",
		[JSON_STRING] = "a string", [JSON_INTEGER] = "an integer",
		[JSON_REAL] = "a number", [JSON_TRUE] = "true",
		[JSON_FALSE] = "false", [JSON_NULL] = "null",
	};
	return names[json_typeof(v)];
}

static int want_type(struct parse *p, const json_t *v, json_type type, const char *what)
{
	static const char *const names[] = {
		[JSON_OBJECT] = "an object", [JSON_ARRAY] = "an array",
		[JSON_STRING] = "a string", [JSON_INTEGER] = "an integer",
	};
	if (json_typeof(v) == type)
		return 0;
	return bad(p, "%s must be %s, not %s", what, names[type], type_name(v));
}

/* A JSON string as (pointer, length). jansson refuses \u0000 unless asked
 * (JSON_ALLOW_NUL), so the text is a proper C string. */
static int string_of(struct parse *p, const json_t *v, const char *what, const char **s,
		     size_t *len)
{
	if (want_type(p, v, JSON_STRING, what) < 0)
		return -1;
	*s = json_string_value(v);
	*len = json_string_length(v);
	return 0;
}

/*
 * A host or domain name: LDH labels of 1..63, at most 253 in all, one
 * trailing dot allowed. Stored lower case without the dot. IDNs must be
 * written as A-labels (xn--...), which is what SMTP carries anyway.
 */
static int check_dns_name(struct parse *p, const char *s, size_t len, const char *what,
			  char **out)
{
	size_t label = 0, shown = VR_MIN(len, 80);
	bool ascii = true;

	for (size_t i = 0; i < len; i++)
		ascii &= (unsigned char)s[i] < 0x80;
	if (len && s[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		goto bad_name;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				goto bad_name;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   (c >= '0' && c <= '9') || (c == '-' && label > 0)) {
			if (++label > 63)
				goto bad_name;
		} else {
			goto bad_name;
		}
	}
	if (s[len - 1] == '-')
		goto bad_name;
	*out = vr_policy_arena_strndup(p->line->arena, s, len);
	if (!*out)
		return bad(p, "out of memory");
	for (char *c = *out; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c | 0x20);
	return 0;
bad_name:
	return bad(p, "%s '%.*s' is not a valid domain name%s", what, (int)shown, s,
		   ascii ? "" : " (write IDNs as xn-- A-labels)");
}

static int dns_name(struct parse *p, const json_t *v, const char *what, char **out)
{
	const char *s;
	size_t len;

	if (string_of(p, v, what, &s, &len) < 0)
		return -1;
	return check_dns_name(p, s, len, what, out);
}

/* "'ips'[12]" into buf without printf: it runs for every list item of a
 * million-line file, and is only read when there is an error. */
static const char *indexed(char *buf, const char *key, size_t i)
{
	char digits[24];
	int n = 0;

	do
		digits[n++] = (char)('0' + i % 10);
	while ((i /= 10) != 0);
	char *o = stpcpy(buf, key);
	*o++ = '[';
	while (n)
		*o++ = digits[--n];
	*o++ = ']';
	*o = '\0';
	return buf;
}

/* --- one function per key --- */

static int f_id(struct parse *p, json_t *v)
{
	const char *s;
	size_t len;

	if (string_of(p, v, "'id'", &s, &len) < 0)
		return -1;
	if (len == 0 || len >= VR_ACCOUNT_ID_MAX)
		return bad(p, "'id' must be 1 to %d characters", VR_ACCOUNT_ID_MAX - 1);
	size_t ok = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-");
	if (ok != len)
		return bad(p, "'id' '%s' may only contain letters, digits, '.', '_' and '-'", s);
	memcpy(p->a->id, s, len + 1);
	return 0;
}

static int f_ips(struct parse *p, json_t *v)
{
	struct vr_policy_line *l = p->line;
	char what[32];
	size_t i;
	json_t *item;

	if (want_type(p, v, JSON_ARRAY, "'ips'") < 0)
		return -1;
	if (json_array_size(v) > l->cap_addrs) {
		size_t cap = json_array_size(v);
		struct vr_policy_addr *addrs = realloc(l->addrs, cap * sizeof(*addrs));
		if (addrs)
			l->addrs = addrs;
		const char **text = realloc(l->addr_text, cap * sizeof(*text));
		if (text)
			l->addr_text = text;
		if (!addrs || !text)
			return bad(p, "out of memory");
		l->cap_addrs = (unsigned)cap;
	}
	json_array_foreach(v, i, item) {
		const char *s;
		size_t len;
		indexed(what, "'ips'", i);
		if (string_of(p, item, what, &s, &len) < 0)
			return -1;
		char why[160];
		if (vr_policy_addr_parse(s, len, &l->addrs[i], why, sizeof(why)) < 0)
			return bad(p, "%s: %s", what, why);
		l->addr_text[i] = s;
	}
	l->n_addrs = (unsigned)json_array_size(v);
	return 0;
}

static int f_hostname(struct parse *p, json_t *v)
{
	return dns_name(p, v, "'hostname'", &p->a->hostname);
}

/* {"name": "example.com", "verified": false}; a verified domain whose DNS
 * check fails also carries "check_failures" and "failing_since" (unix
 * seconds), which only dns-check reads (engine/ctl/dns.c). */
static int domain_object(struct parse *p, json_t *obj, const char *what, json_t **name,
			 bool *verified)
{
	const char *k;
	json_t *val;

	*name = NULL;
	json_object_foreach(obj, k, val) {
		if (strcmp(k, "name") == 0) {
			*name = val;
		} else if (strcmp(k, "check_failures") == 0 || strcmp(k, "failing_since") == 0) {
			if (!json_is_integer(val) || json_integer_value(val) < 0)
				return bad(p, "%s: '%s' must be a whole number, not %s", what, k,
					   json_is_integer(val) ? "negative" : type_name(val));
		} else if (strcmp(k, "verified") != 0) {
			return bad(p, "%s: unknown key '%.40s'", what, k);
		} else if (!json_is_boolean(val)) {
			return bad(p, "%s: 'verified' must be true or false, not %s", what,
				   type_name(val));
		} else {
			*verified = json_is_true(val);
		}
	}
	if (!*name)
		return bad(p, "%s: 'name' is missing", what);
	return 0;
}

static int f_domains(struct parse *p, json_t *v)
{
	struct vr_account *a = p->a;
	char what[48];
	size_t i;
	json_t *item;

	if (want_type(p, v, JSON_ARRAY, "'domains'") < 0)
		return -1;
	a->domains = vr_policy_arena_alloc(p->line->arena,
					   json_array_size(v) * sizeof(*a->domains));
	if (!a->domains)
		return bad(p, "out of memory");
	json_array_foreach(v, i, item) {
		struct vr_domain *d = &a->domains[i];
		json_t *name = item;
		d->verified = true;
		indexed(what, "'domains'", i);
		if (json_is_object(item)) {
			if (domain_object(p, item, what, &name, &d->verified) < 0)
				return -1;
		} else if (!json_is_string(item)) {
			return bad(p, "%s must be a string or an object, not %s", what,
				   type_name(item));
		}
		if (dns_name(p, name, what, &d->name) < 0)
			return -1;
		for (size_t j = 0; j < i; j++)
			if (strcmp(a->domains[j].name, d->name) == 0)
				return bad(p, "%s: '%s' is listed twice", what, d->name);
	}
	a->n_domains = (unsigned)json_array_size(v);
	return 0;
}

static int f_daily_quota(struct parse *p, json_t *v)
{
	if (want_type(p, v, JSON_INTEGER, "'daily_quota'") < 0)
		return -1;
	json_int_t q = json_integer_value(v);
	if (q < 1)
		return bad(p, "'daily_quota' must be at least 1");
	if ((uint64_t)q > p->line->max_quota)
		return bad(p, "'daily_quota' %lld is above the cap of %u (per_day_max)",
			   (long long)q, p->line->max_quota);
	p->a->daily_quota = (uint32_t)q;
	return 0;
}

static int f_over_quota(struct parse *p, json_t *v)
{
	static const char *const names[] = {
		[VR_OVER_QUOTA_DEFER] = "defer", [VR_OVER_QUOTA_HOLD] = "hold",
	};
	const char *s;
	size_t len;

	if (string_of(p, v, "'over_quota'", &s, &len) < 0)
		return -1;
	for (size_t i = 0; i < VR_ARRAY_SIZE(names); i++) {
		if (strcmp(s, names[i]) == 0) {
			p->a->over_quota = (enum vr_over_quota)i;
			return 0;
		}
	}
	return bad(p, "'over_quota' must be \"defer\" or \"hold\", not \"%.40s\"", s);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)(c | 0x20);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int f_unlimited(struct parse *p, json_t *v)
{
	if (!json_is_boolean(v))
		return bad(p, "'unlimited' must be true or false, not %s", type_name(v));
	p->a->unlimited = json_is_true(v);
	return 0;
}

static int f_auth_sha256(struct parse *p, json_t *v)
{
	const char *s;
	size_t len;

	if (string_of(p, v, "'auth_sha256'", &s, &len) < 0)
		return -1;
	if (len != 64)
		return bad(p, "'auth_sha256' must be 64 hex digits (SHA-256 of the token), not %zu "
			   "characters", len);
	for (size_t i = 0; i < 32; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return bad(p, "'auth_sha256' must be 64 hex digits, '%c' is not one",
				   hi < 0 ? s[2 * i] : s[2 * i + 1]);
		p->a->auth_sha256[i] = (uint8_t)(hi << 4 | lo);
	}
	p->a->has_auth = true;
	return 0;
}

static int dkim_alg(struct parse *p, json_t *v, const char *what, enum vr_dkim_alg *alg)
{
	static const char *const algs[] = {
		[VR_DKIM_RSA_SHA256] = "rsa-sha256", [VR_DKIM_ED25519_SHA256] = "ed25519-sha256",
	};
	const char *s;
	size_t len;

	if (string_of(p, v, what, &s, &len) < 0)
		return -1;
	for (size_t i = 0; i < VR_ARRAY_SIZE(algs); i++) {
		if (strcmp(s, algs[i]) == 0) {
			*alg = (enum vr_dkim_alg)i;
			return 0;
		}
	}
	return bad(p, "%s must be \"rsa-sha256\" or \"ed25519-sha256\", not \"%.40s\"", what, s);
}

static int dkim_key(struct parse *p, json_t *v, const char *what, struct vr_dkim_key *key)
{
	char sub[400];
	const char *k, *s;
	size_t len;
	json_t *val;
	bool have_alg = false;

	if (want_type(p, v, JSON_OBJECT, what) < 0)
		return -1;
	json_object_foreach(v, k, val) {
		snprintf(sub, sizeof(sub), "%.300s: '%.40s'", what, k);
		if (strcmp(k, "selector") == 0) {
			if (dns_name(p, val, sub, &key->selector) < 0)
				return -1;
		} else if (strcmp(k, "algorithm") == 0) {
			if (dkim_alg(p, val, sub, &key->alg) < 0)
				return -1;
			have_alg = true;
		} else if (strcmp(k, "key") == 0) {
			if (string_of(p, val, sub, &s, &len) < 0)
				return -1;
			if (s[0] != '/' || len >= PATH_MAX)
				return bad(p, "%s must be an absolute file name, not \"%.80s\"",
					   sub, s);
			key->key = vr_policy_arena_strndup(p->line->arena, s, len);
			if (!key->key)
				return bad(p, "out of memory");
		} else {
			return bad(p, "%s: unknown key '%.40s'", what, k);
		}
	}
	if (!key->selector || !have_alg || !key->key)
		return bad(p, "%s: '%s' is missing", what,
			   !key->selector ? "selector" : !have_alg ? "algorithm" : "key");
	return 0;
}

static int f_dkim(struct parse *p, json_t *v)
{
	struct vr_account *a = p->a;
	struct vr_policy_arena *arena = p->line->arena;
	char what[300];
	const char *domain;
	json_t *keys;
	unsigned n = 0;

	if (want_type(p, v, JSON_OBJECT, "'dkim'") < 0)
		return -1;
	a->dkim = vr_policy_arena_alloc(arena, json_object_size(v) * sizeof(*a->dkim));
	if (!a->dkim)
		return bad(p, "out of memory");
	json_object_foreach(v, domain, keys) {
		struct vr_dkim_domain *d = &a->dkim[n];
		if (check_dns_name(p, domain, strlen(domain), "'dkim' domain", &d->name) < 0)
			return -1;
		for (unsigned j = 0; j < n; j++)
			if (strcmp(a->dkim[j].name, d->name) == 0)
				return bad(p, "'dkim': '%s' is listed twice", d->name);
		snprintf(what, sizeof(what), "'dkim'.\"%s\"", d->name);
		if (want_type(p, keys, JSON_ARRAY, what) < 0)
			return -1;
		if (json_array_size(keys) == 0)
			return bad(p, "%s has no keys", what);
		d->keys = vr_policy_arena_alloc(arena, json_array_size(keys) * sizeof(*d->keys));
		if (!d->keys)
			return bad(p, "out of memory");
		size_t i;
		json_t *key;
		json_array_foreach(keys, i, key) {
			char sub[sizeof(what) + 24];
			snprintf(sub, sizeof(sub), "%s[%zu]", what, i);
			if (dkim_key(p, key, sub, &d->keys[i]) < 0)
				return -1;
			for (size_t j = 0; j < i; j++)
				if (strcmp(d->keys[j].selector, d->keys[i].selector) == 0)
					return bad(p, "%s: selector '%s' is listed twice", sub,
						   d->keys[i].selector);
		}
		d->n_keys = (unsigned)json_array_size(keys);
		n++;
	}
	a->n_dkim = n;
	return 0;
}

static const struct field {
	const char *name;
	int (*parse)(struct parse *p, json_t *v);
} fields[] = {
	{ "id", f_id },
	{ "ips", f_ips },
	{ "hostname", f_hostname },
	{ "domains", f_domains },
	{ "daily_quota", f_daily_quota },
	{ "over_quota", f_over_quota },
	{ "unlimited", f_unlimited },
	{ "auth_sha256", f_auth_sha256 },
	{ "dkim", f_dkim },
};

/* DKIM signs as the sender's domain, so it must be one the VPS may use. */
static int check_dkim_domains(struct parse *p)
{
	const struct vr_account *a = p->a;

	for (unsigned i = 0; i < a->n_dkim; i++) {
		const char *name = a->dkim[i].name;
		bool known = a->hostname && strcmp(a->hostname, name) == 0;
		for (unsigned j = 0; j < a->n_domains && !known; j++)
			known = strcmp(a->domains[j].name, name) == 0;
		if (!known)
			return bad(p, "'dkim' domain '%s' is neither in 'domains' nor the hostname",
				   name);
	}
	return 0;
}

static void dkim_key_unload(void *key)
{
	vr_dkim_key_unload(key);
}

/* --- key files shared within one load ---
 *
 * A provider may name one key file in thousands of accounts (a relay-wide
 * selector): each is read and parsed once per load, and every account
 * naming the same file with the same algorithm holds a reference to that
 * one key. Only within a load: a reload reads every file again, so a
 * rotated key takes effect. */

static size_t seen_hash(dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)ino ^ ((uint64_t)dev << 32)) * 0x9e3779b97f4a7c15ull;

	return (size_t)(h ^ (h >> 31));
}

static bool seen_is(const struct vr_policy_key_seen *s, const struct stat *st,
		    enum vr_dkim_alg alg)
{
	return s->ino == st->st_ino && s->dev == st->st_dev && s->size == st->st_size &&
	       s->mtime.tv_sec == st->st_mtim.tv_sec && s->mtime.tv_nsec == st->st_mtim.tv_nsec &&
	       s->alg == (int)alg;
}

/* The slot of st's file checked for alg, or the free slot where it goes
 * (st NULL: the first free slot for dev and ino). Half full at most, so a
 * probe always ends. */
static struct vr_policy_key_seen *seen_slot(const struct vr_policy_line *l, dev_t dev,
					    ino_t ino, const struct stat *st, enum vr_dkim_alg alg)
{
	for (size_t i = seen_hash(dev, ino) & l->keys_seen_mask;; i = (i + 1) & l->keys_seen_mask) {
		struct vr_policy_key_seen *s = &l->keys_seen[i];
		if (!s->pkey || (st && seen_is(s, st, alg)))
			return s;
	}
}

/* Remembers a key just loaded from st's file; out of memory, it is only
 * not shared. */
static void seen_add(struct vr_policy_line *l, const struct stat *st,
		     const struct vr_dkim_key *key)
{
	size_t cap = l->keys_seen ? l->keys_seen_mask + 1 : 0;

	if (2 * (l->n_keys_seen + 1) > cap) {
		struct vr_policy_line grown = { .keys_seen_mask = (cap ? 2 * cap : 16) - 1 };
		grown.keys_seen = calloc(grown.keys_seen_mask + 1, sizeof(*grown.keys_seen));
		if (!grown.keys_seen)
			return;
		for (size_t i = 0; i < cap; i++) {
			const struct vr_policy_key_seen *s = &l->keys_seen[i];
			if (s->pkey)
				*seen_slot(&grown, s->dev, s->ino, NULL, 0) = *s;
		}
		free(l->keys_seen);
		l->keys_seen = grown.keys_seen;
		l->keys_seen_mask = grown.keys_seen_mask;
	}
	*seen_slot(l, st->st_dev, st->st_ino, st, key->alg) = (struct vr_policy_key_seen){
		.dev = st->st_dev, .ino = st->st_ino, .size = st->st_size,
		.mtime = st->st_mtim, .alg = (int)key->alg, .pkey = key->pkey,
	};
	l->n_keys_seen++;
}

/* Loads key, or shares the key already loaded from its file. */
static int dkim_key_get(struct vr_policy_line *l, struct vr_dkim_key *key, char *err,
			size_t errlen)
{
	struct stat st;

	/* a file stat cannot see, vr_dkim_key_load() explains */
	if (stat(key->key, &st) < 0)
		return vr_dkim_key_load(key, err, errlen);
	struct vr_policy_key_seen *s =
		l->keys_seen ? seen_slot(l, st.st_dev, st.st_ino, &st, key->alg) : NULL;
	if (s && s->pkey && EVP_PKEY_up_ref(s->pkey) == 1) {
		key->pkey = s->pkey;
		return 0;
	}
	int rc = vr_dkim_key_load(key, err, errlen);
	if (rc == 0)
		seen_add(l, &st, key);
	return rc;
}

/* Key files are read last, once the line is otherwise right, and now rather
 * than at the first delivery, so a bad one fails the load (a reload keeps
 * the table in use). The table's arena frees each key with it. */
static int load_dkim_keys(struct parse *p)
{
	const struct vr_account *a = p->a;
	char err[PATH_MAX + 128];

	for (unsigned i = 0; i < a->n_dkim; i++) {
		for (unsigned j = 0; j < a->dkim[i].n_keys; j++) {
			struct vr_dkim_key *key = &a->dkim[i].keys[j];
			if (dkim_key_get(p->line, key, err, sizeof(err)) < 0)
				return bad(p, "'dkim'.\"%s\"[%u]: %s", a->dkim[i].name, j, err);
			if (vr_policy_arena_on_free(p->line->arena, dkim_key_unload, key) < 0) {
				vr_dkim_key_unload(key);
				return bad(p, "out of memory");
			}
		}
	}
	return 0;
}

int vr_policy_account_parse(struct vr_policy_line *line, json_t *obj, struct vr_account *a)
{
	struct parse p = { line, a };
	const char *key;
	json_t *v;

	memset(a, 0, sizeof(*a));
	a->daily_quota = line->default_quota;
	a->over_quota = VR_OVER_QUOTA_DEFER;
	line->n_addrs = 0;
	if (!json_is_object(obj))
		return bad(&p, "a line must be a JSON object, not %s", type_name(obj));
	json_object_foreach(obj, key, v) {
		size_t i = 0;
		while (i < VR_ARRAY_SIZE(fields) && strcmp(fields[i].name, key) != 0)
			i++;
		if (i == VR_ARRAY_SIZE(fields))
			return bad(&p, "unknown key '%.64s'", key);
		if (fields[i].parse(&p, v) < 0)
			return -1;
	}
	if (a->id[0] == '\0')
		return bad(&p, "'id' is missing");
	if (check_dkim_domains(&p) < 0)
		return -1;
	return load_dkim_keys(&p);
}
