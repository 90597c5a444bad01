/*
 * parse.c - the SMTP command line parser (see parse.h).
 *
 * Every octet is looked at once: `scanned` remembers how far the current
 * line got, so a line that arrives a byte at a time costs O(length), not
 * O(length^2). CR and LF are checked here, in the one place every command
 * octet passes, because a bare CR or LF is how SMTP smuggling hides a second
 * command (CVE-2023-51764): we refuse it rather than guess a line ending.
 */
#include <stdbool.h>
#include <string.h>

#include "parse.h"

enum {
	sw_verb = 0,
	sw_spaces,          /* blanks between the verb and the argument */
	sw_arg,
	sw_cr,              /* CR seen; only LF may follow */
	sw_skip,            /* over-long line: discard up to the LF */
	sw_skip_cr,
};

static void line_reset(struct vr_smtp_line *l)
{
	memset(l, 0, sizeof(*l));
}

static int line_fail(struct vr_smtp_line *l, enum vr_smtp_line_err err, size_t used,
		     size_t *usedp)
{
	line_reset(l);
	l->err = (uint16_t)err;
	*usedp = used;
	return VR_ERR;
}

static int line_done(struct vr_smtp_line *l, const uint8_t *p, size_t lf, size_t *used,
		     struct vr_smtp_cmdline *out)
{
	bool nul = l->nul;
	size_t text_len = lf - 1;

	out->verb = p;
	out->verb_len = l->verb_len;
	out->arg = l->arg_off ? p + l->arg_off : p + text_len;
	out->arg_len = l->arg_off ? (size_t)(l->arg_end - l->arg_off) : 0;
	out->text = p;
	out->text_len = text_len;
	if (nul)
		return line_fail(l, VR_SMTP_LINE_NUL, lf + 1, used);
	line_reset(l);
	*used = lf + 1;
	return VR_OK;
}

int vr_smtp_line_parse(struct vr_smtp_line *l, const uint8_t *p, size_t n, size_t *used,
		       struct vr_smtp_cmdline *out)
{
	size_t i = l->scanned;

	for (; i < n; i++) {
		uint8_t c = p[i];

		/* The limit is checked before the octet is used: octet 513 of a
		 * line can only start the skip, never be parsed. */
		if (VR_UNLIKELY(i >= VR_SMTP_LINE_MAX) && l->state < sw_skip)
			l->state = l->state == sw_cr ? sw_skip_cr : sw_skip;

		switch (l->state) {
		case sw_verb:
			switch (c) {
			case ' ':
				l->verb_len = (uint16_t)i;
				l->state = sw_spaces;
				break;
			case '\r':
				l->verb_len = (uint16_t)i;
				l->state = sw_cr;
				break;
			case '\n':
				return line_fail(l, VR_SMTP_LINE_BARE_LF, i + 1, used);
			case '\0':
				l->nul = 1;
				break;
			}
			break;

		case sw_spaces:
			switch (c) {
			case ' ':
				break;
			case '\r':
				l->state = sw_cr;
				break;
			case '\n':
				return line_fail(l, VR_SMTP_LINE_BARE_LF, i + 1, used);
			default:
				l->nul |= c == '\0';
				l->arg_off = (uint16_t)i;
				l->arg_end = (uint16_t)(i + 1);
				l->state = sw_arg;
				break;
			}
			break;

		case sw_arg:
			switch (c) {
			case ' ':
			case '\t':
				break;
			case '\r':
				l->state = sw_cr;
				break;
			case '\n':
				return line_fail(l, VR_SMTP_LINE_BARE_LF, i + 1, used);
			case '\0':
				l->nul = 1;
				l->arg_end = (uint16_t)(i + 1);
				break;
			default:
				l->arg_end = (uint16_t)(i + 1);
				break;
			}
			break;

		case sw_cr:
			if (c != '\n')
				return line_fail(l, VR_SMTP_LINE_BARE_CR, i + 1, used);
			return line_done(l, p, i, used, out);

		case sw_skip:
			if (c == '\r')
				l->state = sw_skip_cr;
			else if (c == '\n')
				return line_fail(l, VR_SMTP_LINE_BARE_LF, i + 1, used);
			break;

		case sw_skip_cr:
			if (c != '\n')
				return line_fail(l, VR_SMTP_LINE_BARE_CR, i + 1, used);
			return line_fail(l, VR_SMTP_LINE_LONG, i + 1, used);
		}
	}

	if (l->state >= sw_skip) {
		/* Memory stays bounded: what was skipped is dropped now. */
		l->scanned = 0;
		*used = n;
	} else {
		l->scanned = (uint16_t)n;
		*used = 0;
	}
	return VR_AGAIN;
}
