/*
 * canon.c - DKIM canonicalisation (RFC 6376 3.4): the body, streamed into
 * its hash a chunk at a time, and single header fields.
 *
 * The body is the hot loop of signing (a 6 KB message is hashed once, its
 * headers are a few hundred bytes). Most of a body passes through
 * canonicalisation unchanged: text, single spaces between words, the CRLF
 * between non-empty lines. run_end() finds such runs and they go to the
 * hash straight from the caller's buffer; only what changes (WSP runs,
 * WSP at line ends, empty lines) takes the byte-by-byte path. Chunks may
 * end anywhere: in a WSP run, between CR and LF, inside a run of empty
 * lines; the state in struct vr_dkim_body carries each across.
 */
#include <errno.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "dkim_impl.h"

/* Runs this long are hashed in place rather than staged. */
#define RUN_DIRECT 128

/* Bytes the body loop must look at one by one, per canonicalisation. */
static const bool special[][256] = {
	[VR_DKIM_RELAXED] = { [' '] = true, ['\t'] = true, ['\r'] = true },
	[VR_DKIM_SIMPLE] = { ['\r'] = true },
};

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

static int put(struct vr_dkim_body *b, const uint8_t *p, size_t n)
{
	b->hashed = true;
	while (n) {
		size_t k = VR_MIN(n, sizeof(b->out) - b->n);
		memcpy(b->out + b->n, p, k);
		b->n += k;
		p += k;
		n -= k;
		if (b->n == sizeof(b->out) && flush(b) < 0)
			return -EIO;
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
	if (b->canon == VR_DKIM_RELAXED && (c == ' ' || c == '\t')) {
		b->wsp = true;
		return 0;
	}
	if (line_text(b) < 0)
		return -EIO;
	return put(b, &c, 1);
}

/*
 * Where the unchanged run starting at p[i] (an ordinary byte) ends: it goes
 * on through ordinary bytes, a single SP before an ordinary byte (relaxed),
 * and a CRLF followed by an ordinary byte (the next line is not empty, and
 * in relaxed does not start with WSP). Whatever stops it is for the slow
 * path, and so is a pair cut by the end of the chunk.
 */
#if defined(__SSE2__)
/*
 * run_end() sixteen bytes at a time. The vector test flags every byte that
 * might end the run: HTAB, SP before SP, HTAB or CR (relaxed), and every
 * CR. Blocks without one, most of them, cost a few instructions; a flagged
 * byte is judged by the byte rules, and a CRLF before an ordinary byte,
 * which one line in every few blocks ends with, lets the scan go on.
 */
static inline size_t run_end16(bool relaxed, const bool *sp, const uint8_t *p, size_t i,
			       size_t n)
{
	const __m128i cr = _mm_set1_epi8('\r'), space = _mm_set1_epi8(' '),
		      tab = _mm_set1_epi8('\t');

	while (i + 17 <= n) {
		__m128i v0 = _mm_loadu_si128((const __m128i *)(p + i));
		__m128i flag = _mm_cmpeq_epi8(v0, cr);
		if (relaxed) {
			__m128i v1 = _mm_loadu_si128((const __m128i *)(p + i + 1));
			__m128i next = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v1, space),
								 _mm_cmpeq_epi8(v1, tab)),
						    _mm_cmpeq_epi8(v1, cr));
			flag = _mm_or_si128(flag, _mm_or_si128(_mm_cmpeq_epi8(v0, tab),
							       _mm_and_si128(_mm_cmpeq_epi8(v0, space),
									     next)));
		}
		unsigned m = (unsigned)_mm_movemask_epi8(flag);
		if (!m) {
			i += 16;
			continue;
		}
		i += (size_t)__builtin_ctz(m);
		if (p[i] == '\r' && i + 2 < n && p[i + 1] == '\n' && !sp[p[i + 2]])
			i += 3;
		else
			return i;
	}
	return i;
}
#endif

static size_t run_end(const bool *sp, const uint8_t *p, size_t i, size_t n)
{
#if defined(__SSE2__)
	/* Two copies, each with its canonicalisation a constant. */
	i = sp[' '] ? run_end16(true, sp, p, i, n) : run_end16(false, sp, p, i, n);
#endif
	while (i < n) {
		uint8_t c = p[i];
		if (!sp[c])
			i++;
		else if (c == ' ' && i + 1 < n && !sp[p[i + 1]])
			i += 2;
		else if (c == '\r' && i + 2 < n && p[i + 1] == '\n' && !sp[p[i + 2]])
			i += 3;
		else
			break;
	}
	return i;
}

static int run(struct vr_dkim_body *b, const uint8_t *p, size_t n)
{
	if (line_text(b) < 0)
		return -EIO;
	if (n < RUN_DIRECT)
		return put(b, p, n);
	b->hashed = true;
	if (flush(b) < 0 || EVP_DigestUpdate(b->md, p, n) != 1)
		return -EIO;
	return 0;
}

int vr_dkim_body_feed(struct vr_dkim_body *b, const uint8_t *p, size_t n)
{
	const bool *sp = special[b->canon];
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		if (!b->cr && !sp[c]) {
			size_t j = run_end(sp, p, i + 1, n);
			if (run(b, p + i, j - i) < 0)
				return -EIO;
			i = j;
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

static bool is_wsp(uint8_t c)
{
	return c == ' ' || c == '\t';
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
		if (!sp[p[i]]) {
			/* A run of text, copied whole. */
			size_t j = i + 1;
			while (j < n && !sp[p[j]])
				j++;
			if (wsp && text)
				*w++ = ' ';
			wsp = false;
			text = true;
			memcpy(w, p + i, j - i);
			w += j - i;
			i = j;
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
