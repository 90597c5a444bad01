/*
 * sign.c - the DKIM signer: one message in, one DKIM-Signature field per
 * key of its domain out (RFC 6376 3.5, 3.7; RFC 8463 for Ed25519).
 *
 * Feeding keeps the header block, up to its empty line, and streams the
 * rest through the body canonicaliser (canon.c), so memory is bounded by
 * VR_DKIM_HEADER_MAX whatever the message size. Finishing indexes the
 * header fields we sign, hashes their canonical form once, and then per
 * key adds that key's own signature field (with b= empty) to a copy of the
 * hash and signs it: dual signing costs one body hash and one header pass.
 *
 * A signer can be reset for the next message and keeps what it allocated,
 * including each RSA key's signing context: setting one up (OpenSSL
 * fetches the algorithm by name) costs a few microseconds. Ed25519 needs
 * none: libsodium signs with the secret key made when the key loaded. A freed signer is kept as its thread's spare, and the next
 * new one on that thread is the spare reset, so a caller that makes a
 * signer per message pays no more than one that resets its own.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/rsa.h>
#include <sodium.h>

#include "dkim_impl.h"

/* RFC 5322 2.1.1: lines SHOULD stay within 78 characters. */
#define FOLD_COLUMNS 78

/* The fields we sign, in h= order (see dkim.h for why these). */
static const char *const signed_names[] = {
	"from", "to", "cc", "subject", "date", "message-id", "mime-version", "content-type",
	"reply-to",
};
#define N_SIGNED VR_ARRAY_SIZE(signed_names)
#define FROM 0
/* Which of them a field name of a given length can be (bit k:
 * signed_names[k]): most fields are told apart by their length alone. */
static const uint16_t by_len[16] = {
	[2] = 1 << 1 | 1 << 2, [4] = 1 << 0 | 1 << 4, [7] = 1 << 3, [8] = 1 << 8,
	[10] = 1 << 5, [12] = 1 << 6 | 1 << 7,
};

static const char *const alg_names[] = {
	[VR_DKIM_RSA_SHA256] = "rsa-sha256", [VR_DKIM_ED25519_SHA256] = "ed25519-sha256",
};
static const char *const canon_names[] = {
	[VR_DKIM_RELAXED] = "relaxed", [VR_DKIM_SIMPLE] = "simple",
};

/* Signing contexts a signer keeps, for its last keys used. */
#define KEY_CTX 4
/* A header block buffer grown past this is given back between messages. */
#define HDR_KEEP (64u * 1024)

/* An RSA key's signing context, ready for the next signature. It holds a
 * reference to pkey, so pkey stays valid (and its address cannot be
 * reused by another key) while cached, even across a table reload. */
struct key_ctx {
	const EVP_PKEY *pkey;
	EVP_PKEY_CTX *pk;            /* EVP_PKEY_sign */
};

/* A header field we sign: where it sits in the header block. */
struct field {
	uint32_t off, len;           /* name through its CRLF */
	uint8_t name;                /* index in signed_names */
};

struct vr_dkim_signer {
	const struct vr_dkim_domain *d;  /* NULL until chosen (vr_dkim_signer_new_for) */
	const struct vr_account *acct;
	uint64_t now;
	struct vr_dkim_opts opts;
	int err;                     /* the first error; it sticks (and after
					finishing, says so) */
	char why[200];               /* and what it was */
	bool in_body;                /* the header block's empty line is behind us */
	size_t bol;                  /* header: offset of the current line in hdr */
	struct vr_buf hdr;           /* the header block */
	struct field *fields;        /* the fields we sign, in header order */
	size_t n_fields, cap_fields;
	unsigned count[N_SIGNED];    /* occurrences of each */
	struct vr_dkim_body body;
	/* kept across messages */
	struct vr_buf tmp;           /* canonical header fields being hashed */
	EVP_MD_CTX *hctx, *kctx;     /* header hash, and its copy per key */
	struct key_ctx keys[KEY_CTX];
	unsigned next_key;           /* the slot to replace next */
};

static int fail(struct vr_dkim_signer *s, int err, const char *fmt, ...) VR_PRINTF(3, 4);

static int fail(struct vr_dkim_signer *s, int err, const char *fmt, ...)
{
	va_list ap;

	if (s->err)
		return s->err;
	va_start(ap, fmt);
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	va_end(ap);
	s->err = err;
	return err;
}

/* A domain to sign with: at least one key, all loaded. */
static bool keys_loaded(const struct vr_dkim_domain *d)
{
	for (unsigned i = 0; i < d->n_keys; i++)
		if (!d->keys[i].pkey)
			return false;
	return d->n_keys > 0;
}

static void signer_destroy(struct vr_dkim_signer *s);
static int reset(struct vr_dkim_signer *s, const struct vr_dkim_domain *d,
		 const struct vr_account *acct, uint64_t now_s);

/* Each thread's spare signer (pthread-specific, so that the thread's exit
 * frees it): the one freed last there, until the next is made there. */
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;
static bool spare_ok;

static void spare_destroy(void *s)
{
	signer_destroy(s);
}

static void spare_init(void)
{
	spare_ok = pthread_key_create(&spare_key, spare_destroy) == 0;
}

static struct vr_dkim_signer *signer_alloc(uint64_t now_s, const struct vr_dkim_opts *opts)
{
	static const struct vr_dkim_opts relaxed = { VR_DKIM_RELAXED, VR_DKIM_RELAXED };
	struct vr_dkim_signer *s = NULL;

	pthread_once(&spare_once, spare_init);
	if (spare_ok && (s = pthread_getspecific(spare_key))) {
		pthread_setspecific(spare_key, NULL);
		s->opts = opts ? *opts : relaxed;
		s->body.canon = s->opts.body;
		if (reset(s, NULL, NULL, now_s) == 0)
			return s;
		signer_destroy(s);
		errno = EIO;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->now = now_s;
	s->opts = opts ? *opts : relaxed;
	vr_buf_init(&s->hdr, VR_DKIM_HEADER_MAX);
	vr_buf_init(&s->tmp, 0);
	s->hctx = EVP_MD_CTX_new();
	s->kctx = EVP_MD_CTX_new();
	if (!s->hctx || !s->kctx || vr_dkim_body_init(&s->body, s->opts.body) < 0) {
		signer_destroy(s);
		errno = ENOMEM;
		return NULL;
	}
	return s;
}

struct vr_dkim_signer *vr_dkim_signer_new(const struct vr_dkim_domain *d, uint64_t now_s,
					  const struct vr_dkim_opts *opts)
{
	if (!keys_loaded(d)) {
		errno = EINVAL;
		return NULL;
	}
	struct vr_dkim_signer *s = signer_alloc(now_s, opts);
	if (s)
		s->d = d;
	return s;
}

struct vr_dkim_signer *vr_dkim_signer_new_for(const struct vr_account *acct, uint64_t now_s,
					      const struct vr_dkim_opts *opts)
{
	struct vr_dkim_signer *s = signer_alloc(now_s, opts);

	if (s)
		s->acct = acct;
	return s;
}

static int reset(struct vr_dkim_signer *s, const struct vr_dkim_domain *d,
		 const struct vr_account *acct, uint64_t now_s)
{
	s->d = d;
	s->acct = acct;
	s->now = now_s;
	s->err = 0;
	s->why[0] = '\0';
	s->in_body = false;
	s->bol = 0;
	if (s->hdr.cap > HDR_KEEP) {
		vr_buf_free(&s->hdr);
		vr_buf_init(&s->hdr, VR_DKIM_HEADER_MAX);
	}
	vr_buf_reset(&s->hdr);
	s->n_fields = 0;
	memset(s->count, 0, sizeof(s->count));
	return vr_dkim_body_reset(&s->body);
}

int vr_dkim_signer_reset(struct vr_dkim_signer *s, const struct vr_dkim_domain *d,
			 uint64_t now_s)
{
	if (!keys_loaded(d))
		return -EINVAL;
	return reset(s, d, NULL, now_s);
}

int vr_dkim_signer_reset_for(struct vr_dkim_signer *s, const struct vr_account *acct,
			     uint64_t now_s)
{
	return reset(s, NULL, acct, now_s);
}

static void key_ctx_free(struct key_ctx *c)
{
	EVP_PKEY_CTX_free(c->pk);
	*c = (struct key_ctx){ 0 };
}

static void signer_destroy(struct vr_dkim_signer *s)
{
	vr_dkim_body_free(&s->body);
	vr_buf_free(&s->hdr);
	vr_buf_free(&s->tmp);
	EVP_MD_CTX_free(s->hctx);
	EVP_MD_CTX_free(s->kctx);
	for (unsigned i = 0; i < KEY_CTX; i++)
		key_ctx_free(&s->keys[i]);
	free(s->fields);
	free(s);
}

void vr_dkim_signer_free(struct vr_dkim_signer *s)
{
	if (!s)
		return;
	if (spare_ok && !pthread_getspecific(spare_key) && pthread_setspecific(spare_key, s) == 0)
		return;
	signer_destroy(s);
}

/* --- the header block --- */

/* Appends p[0..n) to the header block; the block ends at an empty line.
 * Returns how many bytes were header. */
static size_t header_feed(struct vr_dkim_signer *s, const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n && !s->in_body) {
		const uint8_t *lf = memchr(p + i, '\n', n - i);
		size_t end = lf ? (size_t)(lf - p) + 1 : n;
		if (vr_buf_append(&s->hdr, p + i, end - i) < 0) {
			fail(s, -EMSGSIZE, "the header block is longer than %u bytes",
			     VR_DKIM_HEADER_MAX);
			return n;
		}
		i = end;
		size_t len = s->hdr.len;
		const uint8_t *h = vr_buf_head(&s->hdr);
		/* Lines end in CRLF; a bare LF is a byte of the line. */
		if (lf && len >= 2 && h[len - 2] == '\r') {
			if (len - s->bol == 2)
				s->in_body = true;
			s->bol = len;
		}
	}
	return i;
}

static int field_add(struct vr_dkim_signer *s, size_t start, size_t end)
{
	const uint8_t *h = vr_buf_head(&s->hdr);
	const uint8_t *colon = memchr(h + start, ':', end - start);

	if (!colon) {
		char q[64];
		size_t n = 0;
		for (; n < 40 && h[start + n] != '\r'; n++)
			q[n] = (h[start + n] >= 0x20 && h[start + n] < 0x7f) ? (char)h[start + n] : '?';
		q[n] = '\0';
		return fail(s, -EBADMSG, "header line \"%s\" has no colon", q);
	}
	size_t name = (size_t)(colon - h) - start;
	while (name && (h[start + name - 1] == ' ' || h[start + name - 1] == '\t'))
		name--;
	unsigned maybe = name < VR_ARRAY_SIZE(by_len) ? by_len[name] : 0;
	for (uint8_t k = 0; maybe; k++, maybe >>= 1) {
		if (!(maybe & 1) || strncasecmp(signed_names[k], (const char *)h + start, name) != 0)
			continue;
		if (s->n_fields == s->cap_fields) {
			size_t cap = s->cap_fields ? 2 * s->cap_fields : 16;
			struct field *f = realloc(s->fields, cap * sizeof(*f));
			if (!f)
				return fail(s, -ENOMEM, "out of memory");
			s->fields = f;
			s->cap_fields = cap;
		}
		s->fields[s->n_fields++] = (struct field){
			.off = (uint32_t)start, .len = (uint32_t)(end - start), .name = k,
		};
		s->count[k]++;
		break;
	}
	return 0;
}

/* Splits the header block into fields (a line starting with WSP continues
 * the one above) and keeps those we sign. */
static int header_index(struct vr_dkim_signer *s)
{
	/* No empty line: the whole message was header, and its last line
	 * gets the CRLF the client will add. */
	size_t len = s->hdr.len;
	const uint8_t *h = vr_buf_head(&s->hdr);
	if (!s->in_body && len && (len < 2 || h[len - 2] != '\r' || h[len - 1] != '\n')) {
		if (vr_buf_append(&s->hdr, "\r\n", 2) < 0)
			return fail(s, -EMSGSIZE, "the header block is longer than %u bytes",
				    VR_DKIM_HEADER_MAX);
		h = vr_buf_head(&s->hdr);
		len = s->hdr.len;
	}
	if (s->in_body)
		len -= 2;            /* the empty line */

	size_t start = 0, i = 0;
	while (i < len) {
		/* The line ends at the first LF after a CR (the block's last
		 * line too); a bare LF is a byte of the line. */
		const uint8_t *lf = h + i;
		do
			lf = rawmemchr(lf + 1, '\n');
		while (lf[-1] != '\r');
		size_t eol = (size_t)(lf - h) - 1;
		if (i == 0 && (h[0] == ' ' || h[0] == '\t'))
			return fail(s, -EBADMSG, "the header block starts with a continuation line");
		size_t next = eol + 2;
		if (next >= len || (h[next] != ' ' && h[next] != '\t')) {
			if (field_add(s, start, next) < 0)
				return s->err;
			start = next;
		}
		i = next;
	}
	if (s->count[FROM] == 0)
		return fail(s, -EBADMSG, "the message has no From field");
	return 0;
}

int vr_dkim_signer_feed(struct vr_dkim_signer *s, const void *p, size_t n)
{
	const uint8_t *b = p;

	if (s->err)
		return s->err;
	if (!s->in_body) {
		size_t used = header_feed(s, b, n);
		if (s->err)
			return s->err;
		b += used;
		n -= used;
	}
	if (n && vr_dkim_body_feed(&s->body, b, n) < 0)
		return fail(s, -EIO, "SHA-256 failed");
	return 0;
}

/* --- choosing the domain (vr_dkim_signer_new_for) --- */

/*
 * The domain of the first address in the first From field. The SMTP
 * session checked the field's syntax (engine/smtp/from.c) before the
 * message was accepted, so the first '@' outside quoted strings, comments
 * and domain literals is that address's, and its domain follows it.
 */
static int from_domain(struct vr_dkim_signer *s, const char **dom, size_t *dlen)
{
	const struct field *f = s->fields;
	while (f->name != FROM)
		f++;
	const uint8_t *h = vr_buf_head(&s->hdr) + f->off;
	const uint8_t *end = h + f->len, *p = memchr(h, ':', f->len) + 1;
	int comment = 0;
	bool quoted = false, literal = false;

	for (; p < end; p++) {
		if ((quoted || comment) && *p == '\\' && p + 1 < end)
			p++;
		else if (quoted)
			quoted = *p != '"';
		else if (comment)
			comment += *p == '(' ? 1 : *p == ')' ? -1 : 0;
		else if (literal)
			literal = *p != ']';
		else if (*p == '"')
			quoted = true;
		else if (*p == '(')
			comment = 1;
		else if (*p == '[')
			literal = true;
		else if (*p == '@')
			break;
	}
	if (p == end)
		return fail(s, -EBADMSG, "the From field has no address with a domain");
	const uint8_t *d = ++p;
	while (p < end && (*p == '.' || *p == '-' || *p >= 0x80 || (*p >= '0' && *p <= '9') ||
			   ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')))
		p++;
	size_t n = (size_t)(p - d);
	if (n && d[n - 1] == '.')
		n--;
	if (n == 0)
		return fail(s, -EBADMSG, "the From field has no address with a domain");
	*dom = (const char *)d;
	*dlen = n;
	return 0;
}

static int choose_domain(struct vr_dkim_signer *s)
{
	const char *dom = NULL;
	size_t len = 0;

	if (s->d)
		return 0;
	if (from_domain(s, &dom, &len) < 0)
		return s->err;
	s->d = vr_dkim_domain_find(s->acct, dom, len);
	if (!s->d)
		return fail(s, -ENOENT, "account %s has no DKIM key for %.*s", s->acct->id,
			    (int)VR_MIN(len, 253u), dom);
	if (!keys_loaded(s->d))
		return fail(s, -EINVAL, "the DKIM keys of %s are not loaded", s->d->name);
	return 0;
}

/* --- the signature field --- */

/* Appends to a field, folding with CRLF TAB before a column would pass
 * FOLD_COLUMNS. */
struct fold {
	struct vr_buf *b;
	size_t col;
	int rc;
};

static void put(struct fold *f, const void *p, size_t n)
{
	if (f->rc == 0)
		f->rc = vr_buf_append(f->b, p, n);
	f->col += n;
}

static void fold(struct fold *f)
{
	put(f, "\r\n\t", 3);
	f->col = 1;
}

/* A word that must not be split: folded before if it does not fit. With
 * sp, a space separates it from the previous word on the same line. */
static void word(struct fold *f, const char *s, size_t n, bool sp)
{
	if (f->col + sp + n > FOLD_COLUMNS)
		fold(f);
	else if (sp)
		put(f, " ", 1);
	put(f, s, n);
}

/* Text that may be folded anywhere (base64: RFC 6376 3.5 allows FWS
 * between any two of its characters), with room left after it for tail
 * more characters (the ';' that ends its tag). */
static void text(struct fold *f, const char *s, size_t n, size_t tail)
{
	while (n) {
		size_t room = f->col < FOLD_COLUMNS ? FOLD_COLUMNS - f->col : 0;
		size_t k = n + tail <= room ? n : VR_MIN(n, room);
		if (k == n && n + tail > room)
			k = room > tail ? room - tail : 0;
		if (k == 0) {
			fold(f);
			continue;
		}
		put(f, s, k);
		s += k;
		n -= k;
	}
}

static size_t b64(char *out, const uint8_t *p, size_t n)
{
	return (size_t)EVP_EncodeBlock((unsigned char *)out, p, (int)n);
}

/* a, b and c joined into w (at least 3 * 256 bytes; names are shorter):
 * the words of the signature field, built without printf, which would
 * cost as much as the rest of the field together. */
static size_t join(char *w, const char *a, const char *b, const char *c)
{
	size_t la = strlen(a), lb = strlen(b), lc = strlen(c);

	memcpy(w, a, la);
	memcpy(w + la, b, lb);
	memcpy(w + la + lb, c, lc);
	return la + lb + lc;
}

/* Everything up to and including "b=": what the header hash covers. */
static int sig_prefix(struct vr_dkim_signer *s, const struct vr_dkim_key *k,
		      const char *bh, struct vr_buf *out)
{
	struct fold f = { .b = out };
	char w[3 * 256], t[24], *p = t + sizeof(t);
	uint64_t now = s->now;

	put(&f, "DKIM-Signature: v=1;", 20);
	word(&f, w, join(w, "a=", alg_names[k->alg], ";"), true);
	size_t n = join(w, "c=", canon_names[s->opts.header], "/");
	word(&f, w, n + join(w + n, canon_names[s->opts.body], ";", ""), true);
	word(&f, w, join(w, "d=", s->d->name, ";"), true);
	word(&f, w, join(w, "s=", k->selector, ";"), true);
	*--p = '\0';
	do
		*--p = (char)('0' + now % 10);
	while (now /= 10);
	word(&f, w, join(w, "t=", p, ";"), true);
	/* h=: each name as often as it occurs, From once more; the last
	 * carries the ';' so that it folds with it. */
	unsigned left = 1;
	for (unsigned i = 0; i < N_SIGNED; i++)
		left += s->count[i];
	for (unsigned i = 0; i < N_SIGNED; i++) {
		for (unsigned j = 0; j < s->count[i] + (i == FROM); j++) {
			bool first = i == FROM && j == 0;
			word(&f, w, join(w, first ? "h=" : ":", signed_names[i], --left ? "" : ";"),
			     first);
		}
	}
	word(&f, "bh=", 3, true);
	text(&f, bh, strlen(bh), 1);
	put(&f, ";", 1);
	word(&f, "b=", 2, true);
	return f.rc ? f.rc : (int)f.col;
}

static int openssl_fail(struct vr_dkim_signer *s, const char *what)
{
	char e[120];

	ERR_error_string_n(ERR_get_error(), e, sizeof(e));
	ERR_clear_error();
	return fail(s, -EIO, "%s: %s", what, e);
}

/* RFC 8463 3: PureEdDSA over the 32-byte SHA-256 hash, by libsodium with
 * the secret key made at load (key.c); RFC 6376 3.3.1: RSASSA-PKCS1-v1_5
 * over the same hash, by OpenSSL with the key's cached context, or one
 * set up now in the slot used longest ago. */
static int sign_hash(struct vr_dkim_signer *s, const struct vr_dkim_key *k,
		     const uint8_t hash[32], uint8_t *sig, size_t *siglen)
{
	if (k->alg == VR_DKIM_ED25519_SHA256) {
		const uint8_t *sk = vr_dkim_ed25519_sk(k->pkey);
		unsigned long long n;

		if (!sk || *siglen < crypto_sign_BYTES ||
		    crypto_sign_detached(sig, &n, hash, 32, sk) != 0)
			return fail(s, -EIO, "%s: no Ed25519 signing key", k->key);
		*siglen = (size_t)n;
		return 0;
	}

	struct key_ctx *c = NULL;
	for (unsigned i = 0; i < KEY_CTX && !c; i++)
		if (s->keys[i].pkey == k->pkey)
			c = &s->keys[i];
	if (!c) {
		c = &s->keys[s->next_key++ % KEY_CTX];
		key_ctx_free(c);
		c->pk = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
		if (!c->pk || EVP_PKEY_sign_init(c->pk) != 1 ||
		    EVP_PKEY_CTX_set_rsa_padding(c->pk, RSA_PKCS1_PADDING) != 1 ||
		    EVP_PKEY_CTX_set_signature_md(c->pk, vr_dkim_sha256()) != 1) {
			key_ctx_free(c);
			return openssl_fail(s, k->key);
		}
		c->pkey = k->pkey;
	}
	return EVP_PKEY_sign(c->pk, sig, siglen, hash, 32) == 1 ? 0 : openssl_fail(s, k->key);
}

/* Signatures up to RSA-8192 and their base64 sit on the stack; larger
 * keys use the heap. */
#define SIG_STACK 1024

/* One key's DKIM-Signature field, appended to out. s->hctx has hashed
 * the signed header fields; last says no other key needs it after this. */
static int sign_key(struct vr_dkim_signer *s, const struct vr_dkim_key *k, bool last,
		    const char *bh, struct vr_buf *out)
{
	size_t start = out->len;
	int col = sig_prefix(s, k, bh, out);
	if (col < 0)
		return fail(s, col, "no room for the signature field");

	/* The field as hashed: itself with an empty b= and no CRLF. */
	vr_buf_reset(&s->tmp);
	if (vr_dkim_header_canon(s->opts.header, vr_buf_head(out) + start, out->len - start,
				 &s->tmp) < 0)
		return fail(s, -ENOMEM, "out of memory");
	/* The last key may finish the shared hash itself: one copy fewer,
	 * and none at all for the usual single key. */
	uint8_t hash[32];
	EVP_MD_CTX *m = last ? s->hctx : s->kctx;
	if ((!last && EVP_MD_CTX_copy_ex(s->kctx, s->hctx) != 1) ||
	    EVP_DigestUpdate(m, vr_buf_head(&s->tmp), s->tmp.len) != 1 ||
	    EVP_DigestFinal_ex(m, hash, NULL) != 1)
		return openssl_fail(s, "SHA-256");

	size_t max = (size_t)EVP_PKEY_get_size(k->pkey), siglen = max;
	uint8_t stack[SIG_STACK + 4 * SIG_STACK / 3 + 4];
	uint8_t *sig = max <= SIG_STACK ? stack : malloc(max + 4 * ((max + 2) / 3) + 1);
	if (!sig)
		return fail(s, -ENOMEM, "out of memory");
	char *sig64 = (char *)sig + max;
	int rc = sign_hash(s, k, hash, sig, &siglen);
	if (rc == 0) {
		struct fold f = { .b = out, .col = (size_t)col };
		text(&f, sig64, b64(sig64, sig, siglen), 0);
		put(&f, "\r\n", 2);
		rc = f.rc ? fail(s, f.rc, "no room for the signature field") : 0;
	}
	if (sig != stack)
		free(sig);
	return rc;
}

/* The canonical signed header fields, hashed once for every key: for a
 * name listed n times, its n occurrences from the bottom up (RFC 6376
 * 5.4.2). */
static int header_hash(struct vr_dkim_signer *s)
{
	const uint8_t *h = vr_buf_head(&s->hdr);

	if (EVP_DigestInit_ex(s->hctx, vr_dkim_sha256(), NULL) != 1)
		return openssl_fail(s, "SHA-256");
	vr_buf_reset(&s->tmp);
	for (uint8_t k = 0; k < N_SIGNED; k++) {
		for (size_t i = s->n_fields; i-- > 0;) {
			const struct field *f = &s->fields[i];
			if (f->name == k &&
			    vr_dkim_header_canon(s->opts.header, h + f->off, f->len, &s->tmp) < 0)
				return fail(s, -ENOMEM, "out of memory");
		}
	}
	if (EVP_DigestUpdate(s->hctx, vr_buf_head(&s->tmp), s->tmp.len) != 1)
		return openssl_fail(s, "SHA-256");
	return 0;
}

int vr_dkim_signer_finish(struct vr_dkim_signer *s, struct vr_buf *out, char *err,
			  size_t errlen)
{
	size_t start = out->len;
	uint8_t bh[32];
	char bh64[48];

	if (s->err || header_index(s) < 0 || choose_domain(s) < 0)
		goto out;
	if (vr_dkim_body_final(&s->body, bh) < 0) {
		fail(s, -EIO, "SHA-256 failed");
		goto out;
	}
	b64(bh64, bh, sizeof(bh));
	if (header_hash(s) < 0)
		goto out;
	for (unsigned i = 0; i < s->d->n_keys; i++)
		if (sign_key(s, &s->d->keys[i], i + 1 == s->d->n_keys, bh64, out) < 0)
			break;
out:
	if (s->err) {
		out->len = start;
		snprintf(err, errlen, "%s", s->why);
		return s->err;
	}
	/* Not fail(): no formatting on the path every message takes. */
	s->err = -EINVAL;
	strcpy(s->why, "the message is signed already: reset the signer for the next one");
	return 0;
}
