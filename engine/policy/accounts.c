/*
 * accounts.c - the accounts table: loading a JSON Lines file, and the
 * lookups the SMTP session makes (see vmrelay/policy.h).
 *
 * Accounts sit in one array in file order; an id index and the address
 * index (addr.c) hold positions in it. Every string and array an account
 * points to comes from the table's arena, so a table of a million accounts
 * is a handful of large allocations and is freed in one go.
 *
 * Loading stops at the first bad line and returns NULL: the caller keeps
 * the table it has, so a typo never empties the relay's list of VPSes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "policy_impl.h"

/* Longest line we read: an account with thousands of ips fits easily. */
#define LINE_MAX_BYTES (1u << 20)

struct id_slot {
	uint32_t index;              /* account index + 1, 0 = empty */
	uint32_t hash;               /* high bits of its hash: most misses skip strcmp */
};

struct vr_accounts {
	struct vr_account *acc;      /* file order */
	unsigned n, cap;
	struct id_slot *ids;         /* open addressing, at most half full */
	size_t ids_mask;
	struct vr_policy_addrtab *addrs;
	struct vr_policy_arena arena;
};

/* --- arena --- */

struct arena_chunk {
	struct arena_chunk *next;
	max_align_t data[];
};

#define ARENA_CHUNK (256u * 1024)

void *vr_policy_arena_alloc(struct vr_policy_arena *a, size_t n)
{
	n = (n + 7) & ~(size_t)7;
	if ((size_t)(a->end - a->next) < n) {
		size_t size = VR_MAX(n, ARENA_CHUNK);
		struct arena_chunk *c = malloc(sizeof(*c) + size);
		if (!c)
			return NULL;
		c->next = a->chunks;
		a->chunks = c;
		a->next = (uint8_t *)c->data;
		a->end = a->next + size;
	}
	void *p = a->next;
	a->next += n;
	return memset(p, 0, n);
}

char *vr_policy_arena_strndup(struct vr_policy_arena *a, const char *s, size_t n)
{
	char *d = vr_policy_arena_alloc(a, n + 1);

	if (d)
		memcpy(d, s, n);
	return d;
}

struct arena_cleanup {
	struct arena_cleanup *next;
	void (*fn)(void *);
	void *arg;
};

int vr_policy_arena_on_free(struct vr_policy_arena *a, void (*fn)(void *), void *arg)
{
	struct arena_cleanup *c = vr_policy_arena_alloc(a, sizeof(*c));

	if (!c)
		return -ENOMEM;
	*c = (struct arena_cleanup){ .next = a->cleanups, .fn = fn, .arg = arg };
	a->cleanups = c;
	return 0;
}

void vr_policy_arena_free(struct vr_policy_arena *a)
{
	for (struct arena_cleanup *c = a->cleanups; c; c = c->next)
		c->fn(c->arg);
	for (struct arena_chunk *c = a->chunks, *next; c; c = next) {
		next = c->next;
		free(c);
	}
	memset(a, 0, sizeof(*a));
}

void *vr_policy_big_alloc(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/* Advice only: without THP the table works, just with more misses. */
	madvise(p, n, MADV_HUGEPAGE);
	return p;
}

void vr_policy_big_free(void *p, size_t n)
{
	if (p)
		munmap(p, n);
}

/* --- id index --- */

/* FNV-1a, then murmur3's finaliser so the low bits we mask with are mixed. */
static size_t id_hash(const char *id)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *id; id++)
		h = (h ^ (uint8_t)*id) * 0x100000001b3ull;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return (size_t)h;
}

static struct id_slot *id_find(const struct vr_accounts *t, const char *id)
{
	size_t h = id_hash(id);

	for (size_t i = h & t->ids_mask;; i = (i + 1) & t->ids_mask) {
		struct id_slot *s = &t->ids[i];
		if (s->index == 0 ||
		    (s->hash == (uint32_t)(h >> 32) && strcmp(t->acc[s->index - 1].id, id) == 0))
			return s;
	}
}

/* --- loading --- */

struct load {
	const char *path;
	struct vr_accounts *t;
	uint32_t *lines;             /* line of each account, for messages */
	struct vr_policy_line line;
	char why[512];
	char *err;
	size_t errlen;
};

static struct vr_accounts *load_fail(struct load *ld, unsigned lineno)
{
	snprintf(ld->err, ld->errlen, "%s:%u: %s", ld->path, lineno, ld->why);
	return NULL;
}

/* Appends the account parsed from one line and indexes it. 0 or -1 + why. */
static int add_account(struct load *ld, const struct vr_account *a, unsigned lineno)
{
	struct vr_accounts *t = ld->t;

	if (t->n == t->cap) {
		snprintf(ld->why, sizeof(ld->why), "the file grew while it was being read");
		return -1;
	}
	struct id_slot *slot = id_find(t, a->id);
	if (slot->index) {
		snprintf(ld->why, sizeof(ld->why), "duplicate id '%s' (first on line %u)", a->id,
			 ld->lines[slot->index - 1]);
		return -1;
	}
	t->acc[t->n] = *a;
	ld->lines[t->n] = lineno;

	for (unsigned i = 0; i < ld->line.n_addrs; i++) {
		uint32_t other;
		int rc = vr_policy_addrtab_insert(t->addrs, &ld->line.addrs[i], t->n, &other);
		if (rc < 0) {
			snprintf(ld->why, sizeof(ld->why), "out of memory");
			return -1;
		}
		if (rc == 0)
			continue;
		char canon[64];
		vr_policy_addr_format(&ld->line.addrs[i], canon, sizeof(canon));
		/* Name the prefix too when the text was not it ("2001:db8::5"
		 * collides as 2001:db8::/64). */
		char as[96] = "";
		if (strcmp(ld->line.addr_text[i], canon) != 0)
			snprintf(as, sizeof(as), " (as %s)", canon);
		if (other == t->n)
			snprintf(ld->why, sizeof(ld->why), "'ips': '%.64s'%s is listed twice",
				 ld->line.addr_text[i], as);
		else
			snprintf(ld->why, sizeof(ld->why),
				 "'ips': '%.64s'%s is already on line %u (account '%s')",
				 ld->line.addr_text[i], as, ld->lines[other], t->acc[other].id);
		return -1;
	}
	slot->index = t->n + 1;
	slot->hash = (uint32_t)(id_hash(a->id) >> 32);
	t->n++;
	return 0;
}

static bool skip_line(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
		i++;
	return i == n || s[i] == '#';
}

static struct vr_accounts *load_lines(struct load *ld, FILE *fp)
{
	char *buf = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	ssize_t n;

	while ((n = getline(&buf, &cap, fp)) >= 0) {
		lineno++;
		if (skip_line(buf, (size_t)n))
			continue;
		if ((size_t)n > LINE_MAX_BYTES) {
			snprintf(ld->why, sizeof(ld->why), "line too long (more than %u bytes)",
				 LINE_MAX_BYTES);
			goto fail;
		}
		json_error_t jerr;
		json_t *obj = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
		if (!obj) {
			snprintf(ld->why, sizeof(ld->why), "bad JSON at column %d: %s", jerr.column,
				 jerr.text);
			goto fail;
		}
		struct vr_account a;
		int rc = vr_policy_account_parse(&ld->line, obj, &a);
		if (rc == 0)
			rc = add_account(ld, &a, lineno);
		json_decref(obj);
		if (rc < 0)
			goto fail;
	}
	if (ferror(fp)) {
		snprintf(ld->err, ld->errlen, "%s: %s", ld->path, strerror(errno));
		free(buf);
		return NULL;
	}
	free(buf);
	return ld->t;
fail:
	free(buf);
	return load_fail(ld, lineno);
}

/* Lines in the file: at least as many as accounts, so the arrays and the
 * id index are sized once instead of growing (a million accounts would
 * otherwise be copied and rehashed twenty times over). */
static int count_lines(FILE *fp, size_t *lines)
{
	char buf[65536];
	size_t n, count = 1;

	while ((n = fread(buf, 1, sizeof(buf), fp)) > 0)
		for (const char *p = buf; (p = memchr(p, '\n', (size_t)(buf + n - p))); p++)
			count++;
	if (ferror(fp))
		return -errno;
	rewind(fp);
	*lines = count;
	return 0;
}

static struct vr_accounts *table_new(size_t lines, uint32_t **line_of)
{
	struct vr_accounts *t = calloc(1, sizeof(*t));
	size_t ids = 16;

	if (!t)
		return NULL;
	while (ids < 2 * lines)
		ids *= 2;
	t->cap = (unsigned)lines;
	t->acc = malloc(lines * sizeof(*t->acc));
	t->ids = vr_policy_big_alloc(ids * sizeof(*t->ids));
	t->ids_mask = ids - 1;
	/* Most accounts have an IPv4 address and an IPv6 prefix. */
	t->addrs = vr_policy_addrtab_new(2 * lines);
	*line_of = malloc(lines * sizeof(**line_of));
	if (!t->acc || !t->ids || !t->addrs || !*line_of) {
		free(*line_of);
		vr_accounts_free(t);
		return NULL;
	}
	return t;
}

struct vr_accounts *vr_accounts_load_max(const char *path, uint32_t default_daily_quota,
					 uint32_t max_daily_quota, char *err, size_t errlen)
{
	struct load ld = {
		.path = path, .err = err, .errlen = errlen,
		.line = { .default_quota = default_daily_quota, .max_quota = max_daily_quota },
	};
	size_t lines;
	int rc;

	ld.line.why = ld.why;
	ld.line.whylen = sizeof(ld.why);
	FILE *fp = fopen(path, "re");
	if (!fp || (rc = count_lines(fp, &lines)) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(fp ? -rc : errno));
		if (fp)
			fclose(fp);
		return NULL;
	}
	if (lines > UINT32_MAX / 2) {
		snprintf(err, errlen, "%s: more than %u lines", path, UINT32_MAX / 2);
		fclose(fp);
		return NULL;
	}
	struct vr_accounts *t = NULL;
	ld.t = table_new(lines, &ld.lines);
	if (ld.t) {
		ld.line.arena = &ld.t->arena;
		t = load_lines(&ld, fp);
	} else {
		snprintf(err, errlen, "%s: out of memory for %zu lines", path, lines);
	}
	fclose(fp);
	free(ld.lines);
	free(ld.line.addrs);
	free(ld.line.addr_text);
	free(ld.line.keys_seen);
	if (!t)
		vr_accounts_free(ld.t);
	return t;
}

struct vr_accounts *vr_accounts_load(const char *path, uint32_t default_daily_quota,
				     char *err, size_t errlen)
{
	return vr_accounts_load_max(path, default_daily_quota, UINT32_MAX, err, errlen);
}

void vr_accounts_free(struct vr_accounts *t)
{
	if (!t)
		return;
	vr_policy_addrtab_free(t->addrs);
	vr_policy_arena_free(&t->arena);
	vr_policy_big_free(t->ids, (t->ids_mask + 1) * sizeof(*t->ids));
	free(t->acc);
	free(t);
}

/* --- lookups --- */

unsigned vr_accounts_count(const struct vr_accounts *t)
{
	return t->n;
}

const struct vr_account *vr_accounts_at(const struct vr_accounts *t, unsigned i)
{
	return i < t->n ? &t->acc[i] : NULL;
}

const struct vr_account *vr_accounts_by_addr(const struct vr_accounts *t,
					     const struct sockaddr *sa)
{
	struct vr_policy_addr a;
	uint32_t i;

	if (!vr_policy_addr_from_sockaddr(sa, &a) || !vr_policy_addrtab_lookup(t->addrs, &a, &i))
		return NULL;
	return &t->acc[i];
}

const struct vr_account *vr_accounts_by_id(const struct vr_accounts *t, const char *id)
{
	uint32_t i = id_find(t, id)->index;

	return i ? &t->acc[i - 1] : NULL;
}

const struct vr_account *vr_accounts_by_token(const struct vr_accounts *t, const char *user,
					      const void *token, size_t token_len)
{
	static const uint8_t nobody[32];
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned mdlen;

	const struct vr_account *a = user ? vr_accounts_by_id(t, user) : NULL;
	if (a && !a->has_auth)
		a = NULL;
	/* Hash and compare even for an unknown user, so the time taken does not
	 * tell which ids exist and have a token. */
	if (EVP_Digest(token, token_len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		return NULL;
	int differ = CRYPTO_memcmp(md, a ? a->auth_sha256 : nobody, 32);
	return a && differ == 0 ? a : NULL;
}
