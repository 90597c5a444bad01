/*
 * msg.c - message sizes and contents (see msg.h).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "msg.h"

/* A padding line: 72 characters and CRLF, as RFC 5322 §2.1.1 advises (78). */
#define PAD_TEXT 72
#define PAD_LINE (PAD_TEXT + 2)

/* --- sizes --- */

/* One size: digits and an optional k or m suffix. Returns the end, or NULL. */
static const char *size_parse(const char *p, uint64_t *out)
{
	uint64_t v = 0;
	const char *start = p;

	for (; isdigit((unsigned char)*p); p++) {
		if (v > VR_BENCH_SIZE_MAX)
			return NULL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (p == start)
		return NULL;
	if (*p == 'k' || *p == 'K')
		v <<= 10, p++;
	else if (*p == 'm' || *p == 'M')
		v <<= 20, p++;
	*out = v;
	return p;
}

static int size_check(uint64_t v, const char *spec, char *err, size_t errlen)
{
	if (v >= VR_BENCH_SIZE_MIN && v <= VR_BENCH_SIZE_MAX)
		return 0;
	snprintf(err, errlen, "'%s': every size must be from %u to %llu octets", spec,
		 VR_BENCH_SIZE_MIN, (unsigned long long)VR_BENCH_SIZE_MAX);
	return -1;
}

static int sizes_range(struct vr_bench_sizes *s, const char *spec, const char *p, char *err,
		       size_t errlen)
{
	p = size_parse(p + 2, &s->hi);
	if (!p || (*p && *p != ':'))
		goto syntax;
	if (size_check(s->hi, spec, err, errlen) < 0)
		return -1;
	if (s->hi < s->lo) {
		snprintf(err, errlen, "'%s': the range ends below its start", spec);
		return -1;
	}
	s->kind = VR_BENCH_SIZE_UNIFORM;
	if (*p == '\0' || strcmp(p, ":uniform") == 0)
		return 0;
	if (strcmp(p, ":lognormal") != 0) {
		snprintf(err, errlen, "'%s': the distribution is uniform or lognormal", spec);
		return -1;
	}
	s->kind = VR_BENCH_SIZE_LOGNORMAL;
	s->mu = (log((double)s->lo) + log((double)s->hi)) / 2;
	s->sigma = (log((double)s->hi) - log((double)s->lo)) / 6;
	return 0;
syntax:
	snprintf(err, errlen, "'%s': a range is LO..HI[:uniform|:lognormal]", spec);
	return -1;
}

static int sizes_table(struct vr_bench_sizes *s, const char *spec, char *err, size_t errlen)
{
	const char *p = spec;
	double total = 0;

	s->kind = VR_BENCH_SIZE_TABLE;
	s->lo = UINT64_MAX;
	s->hi = 0;
	for (s->n = 0; *p; s->n++) {
		char *end;
		if (s->n == VR_BENCH_SIZE_TABLE_MAX) {
			snprintf(err, errlen, "'%s': at most %d sizes", spec, VR_BENCH_SIZE_TABLE_MAX);
			return -1;
		}
		p = size_parse(p, &s->size[s->n]);
		if (!p || *p != ':')
			goto syntax;
		if (size_check(s->size[s->n], spec, err, errlen) < 0)
			return -1;
		errno = 0;
		double w = strtod(p + 1, &end);
		if (end == p + 1 || errno || !(w > 0) || !isfinite(w) || (*end && *end != ','))
			goto syntax;
		total += w;
		s->cum[s->n] = total;
		s->lo = VR_MIN(s->lo, s->size[s->n]);
		s->hi = VR_MAX(s->hi, s->size[s->n]);
		p = *end ? end + 1 : end;
		if (*end && !*p)
			goto syntax;
	}
	for (unsigned i = 0; i < s->n; i++)
		s->cum[i] /= total;
	s->cum[s->n - 1] = 1.0;
	return 0;
syntax:
	snprintf(err, errlen, "'%s': a list is SIZE:WEIGHT,... with weights above 0", spec);
	return -1;
}

int vr_bench_sizes_parse(struct vr_bench_sizes *s, const char *spec, char *err, size_t errlen)
{
	const char *p;

	memset(s, 0, sizeof(*s));
	if (strchr(spec, ','))
		return sizes_table(s, spec, err, errlen);
	p = size_parse(spec, &s->lo);
	if (p && *p == ':')
		return sizes_table(s, spec, err, errlen);
	if (!p || (*p && strncmp(p, "..", 2) != 0)) {
		snprintf(err, errlen, "'%s' is no size: give octets (6000, 10k, 1m), a range "
			 "(1k..1m[:lognormal]) or a list (4k:70,1m:30)", spec);
		return -1;
	}
	if (size_check(s->lo, spec, err, errlen) < 0)
		return -1;
	if (*p)
		return sizes_range(s, spec, p, err, errlen);
	s->kind = VR_BENCH_SIZE_FIXED;
	s->hi = s->lo;
	return 0;
}

uint64_t vr_bench_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

double vr_bench_rand_unit(uint64_t *state)
{
	return (double)(vr_bench_rand(state) >> 11) * 0x1.0p-53;
}

uint64_t vr_bench_sizes_draw(const struct vr_bench_sizes *s, uint64_t *rng)
{
	switch (s->kind) {
	case VR_BENCH_SIZE_FIXED:
		break;
	case VR_BENCH_SIZE_UNIFORM:
		return s->lo + vr_bench_rand(rng) % (s->hi - s->lo + 1);
	case VR_BENCH_SIZE_LOGNORMAL:
		/* Box-Muller; a draw beyond lo..hi (0.3%) is drawn again. */
		for (;;) {
			double u = 1.0 - vr_bench_rand_unit(rng), v = vr_bench_rand_unit(rng);
			double z = sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
			double x = exp(s->mu + s->sigma * z);
			if (x >= (double)s->lo && x <= (double)s->hi)
				return (uint64_t)x;
		}
	case VR_BENCH_SIZE_TABLE: {
		double u = vr_bench_rand_unit(rng);
		for (unsigned i = 0; i < s->n; i++)
			if (u < s->cum[i])
				return s->size[i];
		return s->size[s->n - 1];
	}
	}
	return s->lo;
}

/* --- padding --- */

/* Line i starts with "." when i % 16 == 1: a 1 KiB body has one already. */
static bool pad_dotted(size_t i)
{
	return i % 16 == 1;
}

/* Octets of the first k lines on the wire: one more per dotted line. */
static size_t pad_wire_len(size_t k)
{
	return k * PAD_LINE + (k + 14) / 16;
}

int vr_bench_pad_init(struct vr_bench_pad *pad, uint64_t max_body)
{
	static const char alphabet[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	size_t lines = max_body / PAD_LINE + 2;

	pad->lines = lines;
	pad->raw = malloc(lines * PAD_LINE);
	pad->wire = malloc(pad_wire_len(lines));
	if (!pad->raw || !pad->wire) {
		vr_bench_pad_free(pad);
		return -ENOMEM;
	}
	uint8_t *w = pad->wire;
	for (size_t i = 0; i < lines; i++) {
		uint8_t *r = pad->raw + i * PAD_LINE;
		for (size_t j = 0; j < PAD_TEXT; j++)
			r[j] = j % 9 == 8 ? ' ' : (uint8_t)alphabet[(i * 7 + j) % 62];
		if (pad_dotted(i)) {
			r[0] = '.';
			*w++ = '.';
		}
		r[PAD_TEXT] = '\r';
		r[PAD_TEXT + 1] = '\n';
		memcpy(w, r, PAD_LINE);
		w += PAD_LINE;
	}
	return 0;
}

void vr_bench_pad_free(struct vr_bench_pad *pad)
{
	free(pad->raw);
	free(pad->wire);
	pad->raw = pad->wire = NULL;
}

/* --- messages --- */

void vr_bench_msg_init(struct vr_bench_msg *m)
{
	memset(m, 0, sizeof(*m));
	vr_buf_init(&m->head, 0);
}

void vr_bench_msg_free(struct vr_bench_msg *m)
{
	vr_buf_free(&m->head);
}

/* RFC 5322 date of now, formatted once a second. */
static const char *msg_date(void)
{
	static char date[64];
	static time_t when = -1;
	time_t now = time(NULL);
	struct tm tm;

	if (now != when) {
		gmtime_r(&now, &tm);
		strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
		when = now;
	}
	return date;
}

static int msg_head(struct vr_buf *b, const struct vr_bench_msg_params *p, uint64_t seq)
{
	const char *at = strrchr(p->from, '@');
	const char *domain = at && at[1] ? at + 1 : "vmrelay-bench.invalid";
	int rc = 0;

	vr_buf_reset(b);
	rc |= vr_buf_printf(b, "From: <%s>\r\nTo: ", p->from);
	/* One recipient a line: the header stays readable however many. */
	for (unsigned i = 0; i < p->nrcpts; i++)
		rc |= vr_buf_printf(b, "%s<%s>", i ? ",\r\n " : "", p->rcpts[i]);
	rc |= vr_buf_printf(b, "\r\nSubject: vmrelay-bench message %llu\r\nDate: %s\r\n"
			    "Message-ID: <%llu.%s@%s>\r\n\r\n", (unsigned long long)seq,
			    msg_date(), (unsigned long long)seq, p->run_id, domain);
	return rc < 0 ? -ENOMEM : 0;
}

int vr_bench_msg_make(struct vr_bench_msg *m, const struct vr_bench_msg_params *p, uint64_t seq,
		      uint64_t size)
{
	if (msg_head(&m->head, p, seq) < 0)
		return -ENOMEM;
	uint64_t head = vr_buf_len(&m->head), body = size > head ? size - head : 0;
	size_t r = (size_t)(body % PAD_LINE);

	m->lines = (size_t)(body / PAD_LINE);
	/* A line is at least its CRLF: a 1-octet rest joins the last full line. */
	if (r == 1 && m->lines > 0) {
		m->lines--;
		r += PAD_LINE;
	} else if (r == 1) {
		r = 2;
	}
	m->tail_len = r;
	if (r > 0) {
		/* The last line starts with "." too: stuffed on the wire as "..". */
		m->tail[0] = '.';
		memset(m->tail + 1, 'z', r - 2);
		if (r > 2)
			m->tail[1] = '.';
		m->tail[r - 1] = '\r';
		m->tail[r] = '\n';
	}
	m->size = head + m->lines * PAD_LINE + r;
	return 0;
}

unsigned vr_bench_msg_iov(const struct vr_bench_msg *m, const struct vr_bench_pad *pad, bool dot,
			  struct iovec iov[VR_BENCH_MSG_IOV])
{
	/* The raw tail starts at tail + 1; on the wire a leading "." gains one. */
	bool stuffed = dot && m->tail_len > 2;
	unsigned n = 0;

	iov[n++] = (struct iovec){ (void *)vr_buf_head(&m->head), vr_buf_len(&m->head) };
	if (m->lines)
		iov[n++] = (struct iovec){ dot ? pad->wire : pad->raw,
					   dot ? pad_wire_len(m->lines) : m->lines * PAD_LINE };
	if (m->tail_len)
		iov[n++] = (struct iovec){ (void *)(m->tail + !stuffed), m->tail_len + stuffed };
	if (dot)
		iov[n++] = (struct iovec){ (void *)".\r\n", 3 };
	return n;
}

void vr_bench_msg_hash(const struct vr_bench_msg *m, const struct vr_bench_pad *pad,
		       struct vr_bench_hash *h)
{
	vr_bench_hash_update(h, vr_buf_head(&m->head), vr_buf_len(&m->head));
	vr_bench_hash_update(h, pad->raw, m->lines * PAD_LINE);
	vr_bench_hash_update(h, m->tail + 1, m->tail_len);
}
