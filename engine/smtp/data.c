/*
 * data.c - the DATA/BDAT content decoder (see data.h).
 *
 * DATA mode walks the RFC 5321 line grammar with five states. A period at
 * the start of a line is never content: followed by CRLF it ends the
 * message, followed by anything else it is the stuffing dot that §4.5.2
 * says to delete. So output is the input minus those dots and the final
 * ".CRLF", emitted as runs between them without copying.
 */
#include <string.h>

#include "data.h"

enum {
	ds_bol = 0,        /* at the start of a line */
	ds_text,
	ds_cr,             /* CR in a line; only LF may follow */
	ds_dot,            /* "." at the start of a line */
	ds_dot_cr,         /* ".CR" at the start of a line: end, if LF follows */
};

void vr_smtp_data_init(struct vr_smtp_data *d, bool dot, uint64_t max,
		       vr_smtp_sink_fn *sink, void *arg)
{
	*d = (struct vr_smtp_data){
		.state = dot ? ds_bol : ds_text,
		.dot = dot,
		.max = max,
		.sink = sink,
		.arg = arg,
	};
}

static void data_emit(struct vr_smtp_data *d, const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	d->size += n;
	if (d->size > d->max)
		d->flags |= VR_SMTP_DATA_BIG;
	/* A spoilt message is refused at its end: storing more is wasted work. */
	if (d->flags)
		return;
	if (d->sink(d->arg, p, n) < 0)
		d->flags |= VR_SMTP_DATA_STORE;
}

static int data_fail(struct vr_smtp_data *d, enum vr_smtp_data_err err, size_t i, size_t *used)
{
	d->err = (uint8_t)err;
	*used = i + 1;
	return VR_ERR;
}

/* Octets of a line, counted on the wire in DATA mode. */
static void data_line(struct vr_smtp_data *d, size_t n)
{
	d->line += (uint32_t)VR_MIN(n, (size_t)UINT32_MAX - d->line);
	if (d->line > VR_SMTP_TEXT_LINE_MAX)
		d->flags |= VR_SMTP_DATA_LONG;
}

/*
 * Inside a line almost every octet is plain text, so the text state jumps
 * to the next CR with memchr and checks the span in bulk for the octets
 * that matter (LF, NUL); the other states go octet by octet.
 */
int vr_smtp_data_parse(struct vr_smtp_data *d, const uint8_t *p, size_t n, size_t *used)
{
	size_t run = 0;     /* first octet not yet emitted */
	size_t i = 0;

	while (i < n) {
		if (d->state == ds_text) {
			const uint8_t *cr = memchr(p + i, '\r', n - i);
			size_t end = cr ? (size_t)(cr - p) : n;
			const uint8_t *lf = memchr(p + i, '\n', end - i);
			if (lf)
				return data_fail(d, VR_SMTP_DATA_BARE_LF, (size_t)(lf - p), used);
			if (d->dot) {
				if (!(d->flags & VR_SMTP_DATA_NUL) && memchr(p + i, '\0', end - i))
					d->flags |= VR_SMTP_DATA_NUL;
				data_line(d, end - i + (cr != NULL));
			}
			if (!cr)
				break;
			d->state = ds_cr;
			i = end + 1;
			continue;
		}

		uint8_t c = p[i];
		if (d->dot)
			data_line(d, 1);
		switch (d->state) {
		case ds_bol:
			if (c == '.' && d->dot) {
				data_emit(d, p + run, i - run);
				run = i + 1;
				d->state = ds_dot;
				break;
			}
			/* fallthrough */
		case ds_dot:
			switch (c) {
			case '\r':
				/* The CR after a leading dot is not content either. */
				if (d->state == ds_dot)
					run = i + 1;
				d->state = d->state == ds_dot ? ds_dot_cr : ds_cr;
				break;
			case '\n':
				return data_fail(d, VR_SMTP_DATA_BARE_LF, i, used);
			case '\0':
				if (d->dot)
					d->flags |= VR_SMTP_DATA_NUL;
				d->state = ds_text;
				break;
			default:
				d->state = ds_text;
				break;
			}
			break;

		case ds_cr:
			if (c != '\n')
				return data_fail(d, VR_SMTP_DATA_BARE_CR, i, used);
			d->state = d->dot ? ds_bol : ds_text;
			d->line = 0;
			break;

		case ds_dot_cr:
			if (c != '\n')
				return data_fail(d, VR_SMTP_DATA_BARE_CR, i, used);
			*used = i + 1;
			return VR_OK;
		}
		i++;
	}
	data_emit(d, p + run, n - run);
	*used = n;
	return VR_AGAIN;
}

int vr_smtp_data_finish(struct vr_smtp_data *d)
{
	if (d->state == ds_cr) {
		d->err = VR_SMTP_DATA_BARE_CR;
		return VR_ERR;
	}
	return VR_OK;
}
