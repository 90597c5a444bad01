/*
 * hdr.c - the header section scanner (see hdr.h).
 *
 * A byte loop over the RFC 5322 §2.2 line grammar, its state kept between
 * calls so a field split across any number of segments resumes where the
 * last call stopped; field bodies, most of the octets, are passed over in
 * runs (hdr_value_run). Only the From field's body is kept (unfolded: the
 * CRLF before a continuation line's blank is dropped, §2.2.3); every other
 * field is looked at and forgotten.
 *
 * Field names follow §3.6.8 (printable ASCII but the colon), compared
 * case-insensitively; blanks before the colon (obs-optional, §4.5) are
 * taken, so "From :" is checked like "From:" and cannot slip past us to a
 * lenient reader.
 */
#include <string.h>

#include "hdr.h"

enum {
	hs_bol = 0,        /* at the start of a line */
	hs_name,           /* in a field name */
	hs_name_wsp,       /* blanks between the name and its colon */
	hs_value,          /* in a field body */
	hs_cr,             /* the CR ending a field line */
	hs_end_cr,         /* the CR of the blank line */
	hs_bad,            /* in a bad line: kept until its end for the reply */
	hs_done,
};

void vr_smtp_hdr_init(struct vr_smtp_hdr *h)
{
	h->state = hs_bol;
	h->err = 0;
	h->name_len = 0;
	h->name_from = false;
	h->field = false;
	h->in_from = false;
	h->n_from = 0;
	h->from_len = 0;
	h->show_len = 0;
}

static bool is_wsp(uint8_t c)
{
	return c == ' ' || c == '\t';
}

/* RFC 5322 ftext: printable US-ASCII but ':'. */
static bool is_ftext(uint8_t c)
{
	return c >= 33 && c <= 126 && c != ':';
}

static int hdr_fail(struct vr_smtp_hdr *h, enum vr_smtp_hdr_err err, size_t i, size_t *used)
{
	h->err = (uint8_t)err;
	h->state = hs_done;
	*used = i;
	return VR_ERR;
}

/* The section is over: it is usable with exactly one From. */
static int hdr_end(struct vr_smtp_hdr *h)
{
	h->state = hs_done;
	if (h->n_from == 1)
		return VR_OK;
	h->err = VR_SMTP_HDR_NO_FROM;
	return VR_ERR;
}

/* A name's colon: the field body starts. */
static int hdr_colon(struct vr_smtp_hdr *h, size_t i, size_t *used)
{
	h->field = true;
	h->in_from = h->name_from && h->name_len == 4;
	if (h->in_from && ++h->n_from > 1)
		return hdr_fail(h, VR_SMTP_HDR_TWO_FROM, i + 1, used);
	h->state = hs_value;
	return VR_AGAIN;
}

static int hdr_from_add(struct vr_smtp_hdr *h, uint8_t c, size_t i, size_t *used)
{
	if (h->from_len == sizeof(h->from))
		return hdr_fail(h, VR_SMTP_HDR_FROM_LONG, i, used);
	h->from[h->from_len++] = c;
	return VR_AGAIN;
}

/* One octet of a field name (the first one included). */
static int hdr_name(struct vr_smtp_hdr *h, uint8_t c, size_t i, size_t *used)
{
	static const char from[] = "from";

	if (c == ':' && h->name_len)
		return hdr_colon(h, i, used);
	if (is_wsp(c) && h->name_len) {
		h->state = hs_name_wsp;
		return VR_AGAIN;
	}
	if (!is_ftext(c)) {
		h->state = hs_bad;      /* ":" with no name is no field either */
		return VR_AGAIN;
	}
	h->name_from = h->name_from && h->name_len < 4 && (c | 0x20) == from[h->name_len];
	if (h->name_len < UINT8_MAX)
		h->name_len++;
	h->state = hs_name;
	return VR_AGAIN;
}

/*
 * Field bodies are most of a header section, so they go in runs: up to
 * the next CR (or a stray LF) with memchr, kept in one copy if the field
 * is From, as far as From has room. Returns the octets taken; the octet
 * after them, if any, is for the loop below.
 */
static size_t hdr_value_run(struct vr_smtp_hdr *h, const uint8_t *p, size_t n)
{
	const uint8_t *cr = memchr(p, '\r', n);
	size_t k = cr ? (size_t)(cr - p) : n;
	const uint8_t *lf = memchr(p, '\n', k);

	if (lf)
		k = (size_t)(lf - p);
	if (h->in_from) {
		k = VR_MIN(k, sizeof(h->from) - h->from_len);
		memcpy(h->from + h->from_len, p, k);
		h->from_len += k;
	}
	size_t show = VR_MIN(k, sizeof(h->show) - h->show_len);
	memcpy(h->show + h->show_len, p, show);
	h->show_len += show;
	return k;
}

int vr_smtp_hdr_parse(struct vr_smtp_hdr *h, const uint8_t *p, size_t n, size_t *used)
{
	int rc = VR_AGAIN;

	if (h->state == hs_done) {
		*used = 0;
		return h->err ? VR_ERR : VR_OK;
	}
	for (size_t i = 0; i < n; i++) {
		if (h->state == hs_value) {
			i += hdr_value_run(h, p + i, n - i);
			if (i == n)
				break;
		}
		uint8_t c = p[i];

		/* Every line's start is kept, for the reply if it turns bad. */
		if (h->state == hs_bol)
			h->show_len = 0;
		if (h->show_len < sizeof(h->show) && c != '\r' && c != '\n')
			h->show[h->show_len++] = c;

		switch (h->state) {
		case hs_bol:
			if (c == '\r') {
				h->state = hs_end_cr;
			} else if (is_wsp(c)) {
				/* folding: only a field can be continued */
				h->state = h->field ? hs_value : hs_bad;
				if (h->in_from)
					rc = hdr_from_add(h, c, i, used);
			} else {
				h->in_from = false;
				h->name_len = 0;
				h->name_from = true;
				rc = hdr_name(h, c, i, used);
			}
			break;
		case hs_name:
			rc = hdr_name(h, c, i, used);
			break;
		case hs_name_wsp:
			if (c == ':')
				rc = hdr_colon(h, i, used);
			else if (!is_wsp(c))
				h->state = hs_bad;
			break;
		case hs_value:
			if (c == '\r')
				h->state = hs_cr;
			else if (c == '\n')
				h->state = hs_bad;
			else if (h->in_from)
				rc = hdr_from_add(h, c, i, used);
			break;
		case hs_cr:
			h->state = c == '\n' ? hs_bol : hs_bad;
			break;
		case hs_end_cr:
			if (c != '\n') {
				h->state = hs_bad;
				break;
			}
			*used = i + 1;
			return hdr_end(h);
		case hs_bad:
			break;
		}
		if (rc != VR_AGAIN)
			return rc;
		/* A bad line is reported at its end (or once show[] is full),
		 * the same octet however the content was cut. */
		if (h->state == hs_bad && (c == '\r' || c == '\n' || h->show_len == sizeof(h->show)))
			return hdr_fail(h, VR_SMTP_HDR_BAD_LINE, i + 1, used);
	}
	*used = n;
	return VR_AGAIN;
}

int vr_smtp_hdr_finish(struct vr_smtp_hdr *h)
{
	switch (h->state) {
	case hs_done:
		return h->err ? VR_ERR : VR_OK;
	case hs_name:
	case hs_name_wsp:
	case hs_bad:
		h->err = VR_SMTP_HDR_BAD_LINE;
		h->state = hs_done;
		return VR_ERR;
	default:
		/* the last field (or the blank line) ran into the end */
		return hdr_end(h);
	}
}
