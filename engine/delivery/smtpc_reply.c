/*
 * smtpc_reply.c - SMTP reply parser for the outbound client (see
 * smtpc_reply.h).
 *
 *   reply = *( code "-" [ text ] CRLF ) code [ SP text ] CRLF   (RFC 5321 4.2)
 *
 * Every line of a reply must carry the same code, and codes are 2yz-5yz with
 * y at most 5: anything else is a server we cannot understand, and guessing
 * what it meant could turn a refusal into a delivery. A lone LF ends a line
 * as well as CR LF (some servers send it; a reply is not a smuggling vector
 * the way a command or a DATA line is). With ENHANCEDSTATUSCODES (RFC 2034)
 * each line's text starts "class.subject.detail "; its class must match the
 * code's first digit, or it is left in the text as an ordinary word.
 */
#include <string.h>

#include "smtpc_reply.h"

void vr_smtpc_rp_init(struct vr_smtpc_rp *p, bool enhanced)
{
	p->enhanced = enhanced;
	p->line_start = 0;
	p->scanned = 0;
	p->code = 0;
	p->n_lines = 0;
	p->enh[0] = '\0';
	p->err = NULL;
}

static bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/* 1-3 digits at s[*i]; advances *i. */
static bool digits3(const uint8_t *s, size_t n, size_t *i)
{
	size_t start = *i;

	while (*i < n && *i - start < 3 && is_digit(s[*i]))
		(*i)++;
	return *i > start && (*i == n || !is_digit(s[*i]));
}

/*
 * The length of an RFC 3463 code of class cls at the start of s (n bytes),
 * including the blank after it, or 0 if there is none.
 */
static size_t enhanced_len(const uint8_t *s, size_t n, uint8_t cls)
{
	size_t i = 2;

	if (n < 5 || s[0] != cls || s[1] != '.')
		return 0;
	if (!digits3(s, n, &i) || i >= n || s[i] != '.')
		return 0;
	i++;
	if (!digits3(s, n, &i))
		return 0;
	if (i == n)
		return i;
	return s[i] == ' ' ? i + 1 : 0;
}

static int fail(struct vr_smtpc_rp *p, const char *why)
{
	p->err = why;
	return VR_ERR;
}

/* One complete line, s[0..n) without its line end. VR_OK: the last line. */
static int line_done(struct vr_smtpc_rp *p, const uint8_t *s, size_t n, size_t off)
{
	if (n < 3 || !is_digit(s[0]) || !is_digit(s[1]) || !is_digit(s[2]))
		return fail(p, "reply line does not start with a 3-digit code");
	if (s[0] < '2' || s[0] > '5' || s[1] > '5')
		return fail(p, "reply code out of range (RFC 5321 4.2.1: 2yz-5yz, y 0-5)");
	if (n > 3 && s[3] != '-' && s[3] != ' ')
		return fail(p, "reply code not followed by '-', ' ' or the line end");
	unsigned code = (unsigned)(s[0] - '0') * 100 + (unsigned)(s[1] - '0') * 10 +
			(unsigned)(s[2] - '0');
	if (p->n_lines == 0)
		p->code = code;
	else if (code != p->code)
		return fail(p, "lines of one reply carry different codes");
	bool more = n > 3 && s[3] == '-';
	size_t skip = n > 3 ? 4 : 3;
	if (more && p->n_lines + 1 == VR_SMTPC_LINES_MAX)
		return fail(p, "multi-line reply has too many lines");
	if (p->enhanced) {
		size_t e = enhanced_len(s + skip, n - skip, s[0]);
		if (e && p->n_lines == 0) {
			size_t k = e;
			while (k > 0 && s[skip + k - 1] == ' ')
				k--;
			memcpy(p->enh, s + skip, k);
			p->enh[k] = '\0';
		}
		skip += e;
	}
	p->line[p->n_lines].off = (uint32_t)(off + skip);
	p->line[p->n_lines].len = (uint32_t)(n - skip);
	p->n_lines++;
	return more ? VR_AGAIN : VR_OK;
}

int vr_smtpc_rp_parse(struct vr_smtpc_rp *p, const uint8_t *buf, size_t len, size_t *used)
{
	*used = 0;
	for (;;) {
		size_t avail = len - p->line_start;
		size_t window = VR_MIN(avail, (size_t)VR_SMTPC_LINE_MAX);
		const uint8_t *s = buf + p->line_start;
		const uint8_t *lf = p->scanned < window
			? memchr(s + p->scanned, '\n', window - p->scanned) : NULL;

		if (!lf) {
			if (window == VR_SMTPC_LINE_MAX)
				return fail(p, "reply line longer than 2048 bytes");
			p->scanned = window;
			return VR_AGAIN;
		}
		size_t n = (size_t)(lf - s);
		size_t text = n > 0 && s[n - 1] == '\r' ? n - 1 : n;
		int rc = line_done(p, s, text, p->line_start);
		if (rc == VR_ERR)
			return rc;
		p->line_start += n + 1;
		p->scanned = 0;
		if (rc == VR_OK) {
			*used = p->line_start;
			return VR_OK;
		}
	}
}

void vr_smtpc_rp_copy(const struct vr_smtpc_rp *p, const uint8_t *buf,
		      struct vr_smtpc_reply *out)
{
	static const char cut[] = "...";
	size_t o = 0, room = sizeof(out->text) - 1;

	out->code = p->code;
	out->local = false;
	memcpy(out->enh, p->enh, sizeof(out->enh));
	for (unsigned i = 0; i < p->n_lines; i++) {
		const uint8_t *s = buf + p->line[i].off;
		size_t n = p->line[i].len;
		if (i > 0 && n > 0 && o < room)
			out->text[o++] = ' ';
		for (size_t k = 0; k < n; k++) {
			if (o == room) {
				memcpy(out->text + room - (sizeof(cut) - 1), cut, sizeof(cut) - 1);
				out->text[room] = '\0';
				return;
			}
			out->text[o++] = s[k] < 0x20 || s[k] == 0x7f ? '?' : (char)s[k];
		}
	}
	out->text[o] = '\0';
}
