/*
 * reply.c - the client's SMTP reply parser (see reply.h).
 *
 * Six states walk the reply line grammar: three code digits, the separator,
 * the text, the CR. Only "DDD " (or a bare "DDD") ends a reply; "DDD-"
 * announces another line, which must carry the same code. Each line and
 * the whole reply are bounded while the bytes stream in, so a server that
 * never ends its reply costs at most VR_BENCH_REPLY_MAX octets of buffer.
 */
#include <string.h>
#include <strings.h>

#include "reply.h"

enum {
	rs_d0 = 0,         /* the first code digit of a line */
	rs_d1,
	rs_d2,
	rs_sep,            /* after the code: ' ', '-' or CR */
	rs_text,
	rs_cr,             /* CR seen; only LF may follow */
};

static int reply_fail(struct vr_bench_reply_parser *p, enum vr_bench_reply_err err, size_t i,
		      size_t *used)
{
	p->err = (uint8_t)err;
	*used = i + 1;
	return VR_ERR;
}

int vr_bench_reply_parse(struct vr_bench_reply_parser *p, const uint8_t *buf, size_t n,
			 size_t *used, struct vr_bench_reply *out)
{
	size_t i;

	for (i = p->scanned; i < n; i++) {
		uint8_t c = buf[i];

		if (i >= VR_BENCH_REPLY_MAX)
			return reply_fail(p, VR_BENCH_REPLY_LONG, i, used);
		if (++p->line_len > VR_BENCH_REPLY_LINE_MAX)
			return reply_fail(p, VR_BENCH_REPLY_LONG_LINE, i, used);
		switch (p->state) {
		case rs_d0:
			if (c < '2' || c > '5')
				return reply_fail(p, VR_BENCH_REPLY_BAD_CODE, i, used);
			p->cur = (uint16_t)((c - '0') * 100);
			p->state = rs_d1;
			break;
		case rs_d1:
		case rs_d2:
			if (c < '0' || c > '9')
				return reply_fail(p, VR_BENCH_REPLY_BAD_CODE, i, used);
			p->cur = (uint16_t)(p->cur + (c - '0') * (p->state == rs_d1 ? 10 : 1));
			if (p->state == rs_d2) {
				if (p->lines == 0)
					p->code = p->cur;
				else if (p->cur != p->code)
					return reply_fail(p, VR_BENCH_REPLY_MISMATCH, i, used);
			}
			p->state++;
			break;
		case rs_sep:
			if (c == '-' || c == ' ') {
				p->last = c == ' ';
				p->state = rs_text;
			} else if (c == '\r') {
				p->last = true;
				p->state = rs_cr;
			} else {
				return reply_fail(p, c == '\n' ? VR_BENCH_REPLY_BARE_LF :
						  VR_BENCH_REPLY_BAD_SEP, i, used);
			}
			break;
		case rs_text:
			if (c == '\r')
				p->state = rs_cr;
			else if (c == '\n')
				return reply_fail(p, VR_BENCH_REPLY_BARE_LF, i, used);
			break;
		case rs_cr:
			if (c != '\n')
				return reply_fail(p, VR_BENCH_REPLY_BARE_CR, i, used);
			p->lines++;
			p->line_len = 0;
			p->state = rs_d0;
			if (p->last) {
				*out = (struct vr_bench_reply){
					.code = p->code, .lines = p->lines, .text = buf, .len = i + 1,
				};
				*used = i + 1;
				*p = (struct vr_bench_reply_parser){ 0 };
				return VR_OK;
			}
			break;
		}
	}
	p->scanned = n;
	*used = 0;
	return VR_AGAIN;
}

static const char *const reply_errors[] = {
	[VR_BENCH_REPLY_BAD_CODE] = "bad reply code",
	[VR_BENCH_REPLY_BAD_SEP] = "bad separator after the reply code",
	[VR_BENCH_REPLY_MISMATCH] = "reply lines with different codes",
	[VR_BENCH_REPLY_LONG_LINE] = "reply line over 512 octets",
	[VR_BENCH_REPLY_LONG] = "reply over 16384 octets",
	[VR_BENCH_REPLY_BARE_LF] = "bare LF in a reply",
	[VR_BENCH_REPLY_BARE_CR] = "bare CR in a reply",
};

const char *vr_bench_reply_strerror(enum vr_bench_reply_err err)
{
	if ((size_t)err >= VR_ARRAY_SIZE(reply_errors) || !reply_errors[err])
		return "no error";
	return reply_errors[err];
}

bool vr_bench_reply_line(const struct vr_bench_reply *r, unsigned i, const uint8_t **text,
			 size_t *len)
{
	const uint8_t *p = r->text, *end = r->text + r->len;

	for (;;) {
		/* The parser let no CR into a line but its last octet but one. */
		const uint8_t *cr = memchr(p, '\r', (size_t)(end - p));
		if (!cr)
			return false;
		if (i-- == 0) {
			const uint8_t *t = p + VR_MIN((size_t)(cr - p), 4);
			*text = t;
			*len = (size_t)(cr - t);
			return true;
		}
		p = cr + 2;
	}
}

static const struct {
	const char *name;
	unsigned ext;
} ehlo_keywords[] = {
	{ "PIPELINING", VR_BENCH_EXT_PIPELINING },
	{ "CHUNKING", VR_BENCH_EXT_CHUNKING },
	{ "STARTTLS", VR_BENCH_EXT_STARTTLS },
	{ "8BITMIME", VR_BENCH_EXT_8BITMIME },
	{ "SIZE", VR_BENCH_EXT_SIZE },
};

void vr_bench_ehlo_parse(const struct vr_bench_reply *r, struct vr_bench_ehlo *out)
{
	const uint8_t *t;
	size_t len;

	*out = (struct vr_bench_ehlo){ 0 };
	for (unsigned i = 1; vr_bench_reply_line(r, i, &t, &len); i++) {
		const uint8_t *sp = memchr(t, ' ', len);
		size_t kw = sp ? (size_t)(sp - t) : len;

		for (size_t k = 0; k < VR_ARRAY_SIZE(ehlo_keywords); k++) {
			const char *name = ehlo_keywords[k].name;
			if (kw != strlen(name) || strncasecmp((const char *)t, name, kw) != 0)
				continue;
			out->ext |= ehlo_keywords[k].ext;
			if (ehlo_keywords[k].ext != VR_BENCH_EXT_SIZE || !sp)
				continue;
			/* RFC 1870: SIZE's parameter is the limit in octets, 0 for none. */
			uint64_t v = 0;
			for (const uint8_t *d = sp + 1; d < t + len && *d >= '0' && *d <= '9'; d++)
				v = v > (UINT64_MAX - 9) / 10 ? UINT64_MAX : v * 10 + (uint64_t)(*d - '0');
			out->size = v;
		}
	}
}
