/*
 * canon.c - DKIM canonicalisation (RFC 6376 3.4): the body, streamed into
 * its hash a chunk at a time, and single header fields.
 *
 * The body is the hot loop of signing (a 6 KB message is hashed once, its
 * headers are a few hundred bytes), and SHA-256 itself costs most of it.
 * scan() writes the canonical body into a staging buffer that goes to the
 * digest 8 KiB at a time, copying 16 bytes at once wherever nothing
 * changes (text, single spaces between words, the CRLF between lines of
 * text) and judging only the bytes that might: WSP runs, WSP at line ends,
 * lone CRs. What it cannot decide from the bytes at hand (empty lines, a
 * pair or a run cut by the end of the chunk) takes the byte-by-byte path,
 * whose state in struct vr_dkim_body carries each case across chunks.
 */
#include <errno.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "dkim_impl.h"

/* Bytes the body loop must look at one by one, per canonicalisation. */
static const bool special[][256] = {
	[VR_DKIM_RELAXED] = { [' '] = true, ['\t'] = true, ['\r'] = true },
	[VR_DKIM_SIMPLE] = { ['\r'] = true },
};

static bool is_wsp(uint8_t c)
{
	return c == ' ' || c == '\t';
}

int vr_dkim_body_init(struct vr_dkim_body *b, enum vr_dkim_canon canon)
{
	b->md = EVP_MD_CTX_new();
	b->canon = canon;
	if (!b->md || vr_dkim_body_reset(b) < 0) {
		vr_dkim_body_free(b);
		return -ENOMEM;
	}
	return 0;
}

int vr_dkim_body_reset(struct vr_dkim_body *b)
{
	const EVP_MD *sha256 = vr_dkim_sha256();

	b->cr = b->wsp = b->text = b->hashed = false;
	b->blank = 0;
	b->n = 0;
	if (!sha256 || EVP_DigestInit_ex(b->md, sha256, NULL) != 1)
		return -EIO;
	return 0;
}

void vr_dkim_body_free(struct vr_dkim_body *b)
{
	EVP_MD_CTX_free(b->md);
	b->md = NULL;
}

static int flush(struct vr_dkim_body *b)
{
	if (b->n && EVP_DigestUpdate(b->md, b->out, b->n) != 1)
		return -EIO;
	b->n = 0;
	return 0;
}

/* Stages p[0..n); scan() may have left the staging past its limit. */
static int put(struct vr_dkim_body *b, const uint8_t *p, size_t n)
{
	b->hashed = true;
	while (n) {
		if (b->n >= VR_DKIM_STAGE && flush(b) < 0)
			return -EIO;
		size_t k = VR_MIN(n, VR_DKIM_STAGE - b->n);
		memcpy(b->out + b->n, p, k);
		b->n += k;
		p += k;
		n -= k;
	}
	return 0;
}

/* A line starts to be hashed: the empty lines before it were not the end
 * of the body after all, and a pending WSP run (relaxed) becomes one SP. */
static int line_text(struct vr_dkim_body *b)
{
	static const uint8_t crlf[2] = { '\r', '\n' };

	if (!b->text) {
		for (; b->blank; b->blank--)
			if (put(b, crlf, 2) < 0)
				return -EIO;
		b->text = true;
	}
	if (b->wsp) {
		b->wsp = false;
		return put(b, (const uint8_t *)" ", 1);
	}
	return 0;
}

static int line_end(struct vr_dkim_body *b)
{
	/* Relaxed: WSP at the end of a line is dropped, and a line of WSP
	 * only is an empty line. */
	b->wsp = false;
	if (!b->text) {
		b->blank++;
		return 0;
	}
	b->text = false;
	return put(b, (const uint8_t *)"\r\n", 2);
}

/* One byte that is content, not a line end. */
static int content(struct vr_dkim_body *b, uint8_t c)
{
	if (b->canon == VR_DKIM_RELAXED && is_wsp(c)) {
		b->wsp = true;
		return 0;
	}
	if (line_text(b) < 0)
		return -EIO;
	return put(b, &c, 1);
}

#if defined(__SSE2__)
/*
 * Which of the sixteen bytes at p (and the one after them) might change:
 * every CR, and in relaxed HTAB and SP before SP, HTAB or CR. A single SP
 * between words, most of them, is left alone.
 */
static inline unsigned flags16(bool relaxed, __m128i v0, const uint8_t *p)
{
	const __m128i cr = _mm_set1_epi8('\r'), space = _mm_set1_epi8(' '),
		      tab = _mm_set1_epi8('\t');
	__m128i flag = _mm_cmpeq_epi8(v0, cr);

	if (relaxed) {
		__m128i v1 = _mm_loadu_si128((const __m128i *)(p + 1));
		__m128i next = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v1, space),
							 _mm_cmpeq_epi8(v1, tab)),
					    _mm_cmpeq_epi8(v1, cr));
		flag = _mm_or_si128(flag, _mm_or_si128(_mm_cmpeq_epi8(v0, tab),
						       _mm_and_si128(_mm_cmpeq_epi8(v0, space),
								     next)));
	}
	return (unsigned)_mm_movemask_epi8(flag);
}
#endif

#if defined(__x86_64__)
/*
 * Sixty-four bytes at a time where AVX-512 VBMI2 compresses bytes out of
 * a vector (x86-64 since Ice Lake and Zen 4): each byte's fate follows
 * from the one or two after it, so a block takes no branch per line.
 * Relaxed: WSP before WSP or before a CRLF goes, HTAB becomes SP. A line
 * that starts with a CR or (relaxed) WSP may be empty, which only the byte
 * loop can tell: the blocks stop at the CRLF before it, for the 16-byte
 * scan. They also stop short of the staging limit and 66 bytes before n
 * (a byte's fate needs two more), and never between a CR and its LF.
 * Same contract as scan(): p[*pi] starts text in a line that has text.
 */
__attribute__((target("avx512f,avx512bw,avx512vbmi2,popcnt"))) static void
scan64(bool relaxed, const uint8_t *p, size_t *pi, size_t n, uint8_t **po,
       const uint8_t *limit)
{
	const __m512i sp = _mm512_set1_epi8(' '), tab = _mm512_set1_epi8('\t'),
		      cr = _mm512_set1_epi8('\r'), lf = _mm512_set1_epi8('\n');
	uint8_t *o = *po;
	size_t i = *pi;
	uint64_t carry = 0;          /* the last block ended with a CR before its LF */

	for (; i + 66 <= n && o < limit; i += 64) {
		const __m512i v0 = _mm512_loadu_si512(p + i), v1 = _mm512_loadu_si512(p + i + 1);
		uint64_t cr0 = _mm512_cmpeq_epi8_mask(v0, cr), cr1 = _mm512_cmpeq_epi8_mask(v1, cr);
		uint64_t crlf = cr0 & _mm512_cmpeq_epi8_mask(v1, lf);
		/* Lines starting at bytes 1 to 64, as bits of v1 (a line of
		 * the next block is judged here too: this one ends before it). */
		uint64_t line = crlf << 1 | carry;
		uint64_t keep = ~0ull, tab0 = 0, bad;
		if (relaxed) {
			uint64_t lf2 = _mm512_cmpeq_epi8_mask(_mm512_loadu_si512(p + i + 2), lf);
			tab0 = _mm512_cmpeq_epi8_mask(v0, tab);
			uint64_t wsp0 = _mm512_cmpeq_epi8_mask(v0, sp) | tab0;
			uint64_t wsp1 = _mm512_cmpeq_epi8_mask(v1, sp) |
					_mm512_cmpeq_epi8_mask(v1, tab);
			keep = ~(wsp0 & (wsp1 | (cr1 & lf2)));
			bad = line & (cr1 | wsp1);
		} else {
			bad = line & cr1;
		}
		if (bad) {
			/* Up to the CRLF before the line in doubt. */
			unsigned at = (unsigned)__builtin_ctzll(bad) + 1;
			if (at < 2)
				break;
			keep &= (1ull << (at - 2)) - 1;
			carry = 0;
			i += at - 2;
		}
		/* Compressed in a register and stored whole: a compressing
		 * store to memory is microcoded on Zen 4, ten times slower. */
		_mm512_storeu_si512(o, _mm512_maskz_compress_epi8(keep,
								   _mm512_mask_blend_epi8(tab0, v0, sp)));
		o += _mm_popcnt_u64(keep);
		if (bad)
			break;
		carry = crlf >> 63;
	}
	if (carry) {
		/* Give the CR back: the 16-byte scan takes it with its LF. */
		i--;
		o--;
	}
	*pi = i;
	*po = o;
}

/* Whether scan64() runs here: two bit tests of what libgcc read from
 * CPUID at start, so no cache (and no race between signing threads). */
static bool have_scan64(void)
{
	return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi2");
}
#endif

/*
 * Canonicalises p[*pi..n) into the staging buffer, from an ordinary byte
 * in a line that has text, for as long as the bytes at hand decide the
 * canonical form: text; WSP runs before text (relaxed: one SP) or before
 * a CRLF (relaxed: dropped); a CRLF before a line that starts with text
 * (relaxed: or with WSP and then text). It stops before anything else,
 * for the byte loop: b->text says whether the line it stops in has text.
 * Inlined twice, with relaxed a constant in each copy.
 */
static inline __attribute__((always_inline)) int
scan(struct vr_dkim_body *b, bool relaxed, const uint8_t *p, size_t *pi, size_t n)
{
	const bool *sp = special[relaxed ? VR_DKIM_RELAXED : VR_DKIM_SIMPLE];
	uint8_t *o = b->out + b->n;
	size_t i = *pi;
	bool text = true;
	int rc = 0;

#if defined(__x86_64__)
	const bool wide = have_scan64();
#endif

	for (;;) {
		/* Each turn writes at most 64 bytes: the slack takes them. */
		if (o >= b->out + VR_DKIM_STAGE) {
			b->n = (size_t)(o - b->out);
			if (flush(b) < 0) {
				rc = -EIO;
				break;
			}
			o = b->out;
		}
#if defined(__x86_64__)
		if (wide && i + 66 <= n) {
			size_t at = i;
			scan64(relaxed, p, &i, n, &o, b->out + VR_DKIM_STAGE);
			if (i != at)
				continue;
		}
#endif
#if defined(__SSE2__)
		if (i + 17 <= n) {
			__m128i v0 = _mm_loadu_si128((const __m128i *)(p + i));
			_mm_storeu_si128((__m128i *)o, v0);
			unsigned m = flags16(relaxed, v0, p + i);
			if (!m) {
				i += 16;
				o += 16;
				continue;
			}
			i += (size_t)__builtin_ctz(m);
			o += __builtin_ctz(m);
		} else
#endif
		{
			size_t lim = VR_MIN(n, i + 16);
			while (i < lim && !sp[p[i]])
				*o++ = p[i++];
			if (i == n)
				break;
			if (!sp[p[i]])
				continue;
		}
		if (relaxed && is_wsp(p[i])) {
			size_t j = i + 1;
			while (j < n && is_wsp(p[j]))
				j++;
			if (j == n)
				break;
			if (p[j] != '\r') {
				*o++ = ' ';
				i = j;
				continue;
			}
			if (j + 1 == n || p[j + 1] != '\n')
				break;       /* WSP before a lone CR: a byte of the line */
			i = j;
		}
		if (i + 1 == n || p[i + 1] != '\n')
			break;
		*o++ = '\r';
		*o++ = '\n';
		i += 2;
		size_t j = i;
		while (relaxed && j < n && is_wsp(p[j]))
			j++;
		if (j == n || sp[p[j]]) {
			text = false;
			break;
		}
		if (j > i)
			*o++ = ' ';
		i = j;
	}
	b->n = (size_t)(o - b->out);
	b->text = text;
	*pi = i;
	return rc;
}

int vr_dkim_body_feed(struct vr_dkim_body *b, const uint8_t *p, size_t n)
{
	const bool *sp = special[b->canon];
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		if (!b->cr && !sp[c]) {
			b->hashed = true;
			if (line_text(b) < 0 || (b->canon == VR_DKIM_RELAXED ? scan(b, true, p, &i, n)
									  : scan(b, false, p, &i, n)) < 0)
				return -EIO;
			continue;
		}
		i++;
		if (b->cr) {
			b->cr = false;
			if (c == '\n') {
				if (line_end(b) < 0)
					return -EIO;
				continue;
			}
			if (content(b, '\r') < 0)
				return -EIO;
		}
		if (c == '\r')
			b->cr = true;
		else if (content(b, c) < 0)
			return -EIO;
	}
	return 0;
}

int vr_dkim_body_final(struct vr_dkim_body *b, uint8_t hash[32])
{
	/* A last line without its CRLF gets the one the SMTP client will
	 * add; a lone CR there is content, as anywhere else. */
	if (b->cr) {
		b->cr = false;
		if (content(b, '\r') < 0)
			return -EIO;
	}
	if (b->text && line_end(b) < 0)
		return -EIO;
	/* RFC 6376 3.4.3: an empty simple body is one CRLF; 3.4.4: an empty
	 * relaxed body stays empty. */
	if (b->canon == VR_DKIM_SIMPLE && !b->hashed && put(b, (const uint8_t *)"\r\n", 2) < 0)
		return -EIO;
	if (flush(b) < 0 || EVP_DigestFinal_ex(b->md, hash, NULL) != 1)
		return -EIO;
	return 0;
}

int vr_dkim_header_canon(enum vr_dkim_canon canon, const uint8_t *p, size_t n,
			 struct vr_buf *out)
{
	if (canon == VR_DKIM_SIMPLE)
		return vr_buf_append(out, p, n);

	/* Relaxed never makes a field longer, save the CRLF it may add. */
	uint8_t *w = vr_buf_reserve(out, n + 2), *start = w;
	if (!w)
		return -ENOBUFS;
	const uint8_t *colon = memchr(p, ':', n);
	size_t name = (size_t)(colon - p);
	while (name && is_wsp(p[name - 1]))
		name--;
	for (size_t i = 0; i < name; i++)
		*w++ = (p[i] >= 'A' && p[i] <= 'Z') ? (uint8_t)(p[i] | 0x20) : p[i];
	*w++ = ':';

	bool crlf = n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n';
	bool wsp = false, text = false;
	const bool *sp = special[VR_DKIM_RELAXED];
	for (size_t i = (size_t)(colon - p) + 1; i < n;) {
#if defined(__SSE2__)
		/* Within text, sixteen bytes at a time up to one that might
		 * change. The output never runs ahead of the input, so the
		 * 16-byte store stays within the n + 2 bytes reserved. */
		if (text && !wsp && i + 17 <= n) {
			__m128i v = _mm_loadu_si128((const __m128i *)(p + i));
			_mm_storeu_si128((__m128i *)w, v);
			unsigned m = flags16(true, v, p + i);
			unsigned k = m ? (unsigned)__builtin_ctz(m) : 16;
			i += k;
			w += k;
			if (k)
				continue;
		}
#endif
		if (!sp[p[i]]) {
			/* A run of text: the 16-byte copy above takes it on
			 * where the field leaves room for it. */
			if (wsp && text)
				*w++ = ' ';
			wsp = false;
			text = true;
			do
				*w++ = p[i++];
			while (i + 17 > n && i < n && !sp[p[i]]);
		} else if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') {
			i += 2;      /* unfolding: the CRLF goes, the WSP after it stays */
		} else if (p[i] == '\r') {
			if (wsp && text)
				*w++ = ' ';
			wsp = false;
			text = true;
			*w++ = p[i++];
		} else {
			wsp = true;
			i++;
		}
	}
	if (crlf) {
		*w++ = '\r';
		*w++ = '\n';
	}
	vr_buf_commit(out, (size_t)(w - start));
	return 0;
}
