/*
 * http.c - a strict HTTP/1.1 request-head parser (RFC 9112) for GET
 * /metrics, one octet at a time, so requests split anywhere parse the same.
 *
 * It sees network bytes, so it accepts only what a scraper needs and says
 * no to the rest: a request line "METHOD SP /path SP HTTP/1.x CRLF", token
 * header names right before their colon, values of visible characters,
 * spaces and tabs, CRLF line ends (a bare LF or CR is 400, as are obsolete
 * line folding, a body or Transfer-Encoding, a missing or repeated Host in
 * HTTP/1.1), and bounded sizes. Only GET and HEAD are served (405).
 */
#include <string.h>
#include <strings.h>

#include "http.h"
#include "vmrelay/common.h"

enum {
	S_METHOD, S_TARGET, S_VERSION, S_LINE_LF,   /* request line */
	S_FIELD, S_NAME, S_VALUE, S_FIELD_LF,       /* header lines */
	S_END_LF, S_DONE, S_FAILED,
};

/* RFC 9110 5.6.2 tchar */
static bool tchar(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* visible characters and obs-text (RFC 9110 5.5), and blanks inside */
static bool vchar(uint8_t c)
{
	return (c > 0x20 && c != 0x7f) || c == ' ' || c == '\t';
}

void vr_http_init(struct vr_http_req *r)
{
	memset(r, 0, sizeof(*r));
}

static int fail(struct vr_http_req *r, int status)
{
	r->state = S_FAILED;
	r->status = status;
	return VR_ERR;
}

/* What a complete header line says: only three names matter to us. */
static int field_done(struct vr_http_req *r)
{
	if (r->nlen == 4 && strncasecmp(r->name, "host", 4) == 0) {
		if (r->host)
			return fail(r, 400);
		r->host = true;
	} else if (r->nlen == 17 && strncasecmp(r->name, "transfer-encoding", 17) == 0) {
		return fail(r, 400);
	} else if (r->nlen == 14 && strncasecmp(r->name, "content-length", 14) == 0) {
		/* a GET carries no body; "Content-Length: 0" says as much */
		if (r->clen > sizeof(r->clen_text))
			return fail(r, 400);
		while (r->clen && (r->clen_text[r->clen - 1] == ' ' ||
				   r->clen_text[r->clen - 1] == '\t'))
			r->clen--;
		if (r->clen != 1 || r->clen_text[0] != '0')
			return fail(r, 400);
	}
	if (++r->n_headers > VR_HTTP_HEADERS_MAX)
		return fail(r, 431);
	return VR_AGAIN;
}

static int line_done(struct vr_http_req *r)
{
	static const char v10[] = "HTTP/1.0", v11[] = "HTTP/1.1";

	if (r->vlen == 8 && memcmp(r->version, v11, 8) == 0)
		r->http10 = false;
	else if (r->vlen == 8 && memcmp(r->version, v10, 8) == 0)
		r->http10 = true;
	else if (r->vlen == 8 && memcmp(r->version, "HTTP/", 5) == 0 &&
		 r->version[5] >= '0' && r->version[5] <= '9' && r->version[6] == '.' &&
		 r->version[7] >= '0' && r->version[7] <= '9')
		return fail(r, 505);
	else
		return fail(r, 400);
	if (r->mlen == 3 && memcmp(r->method, "GET", 3) == 0)
		r->head_only = false;
	else if (r->mlen == 4 && memcmp(r->method, "HEAD", 4) == 0)
		r->head_only = true;
	else
		return fail(r, 405);
	return VR_AGAIN;
}

static int step(struct vr_http_req *r, uint8_t c)
{
	if (++r->head > VR_HTTP_HEAD_MAX)
		return fail(r, 431);
	r->line++;
	switch (r->state) {
	case S_METHOD:
		if (c == ' ' && r->mlen) {
			r->state = S_TARGET;
		} else if (tchar(c)) {
			if (r->mlen == sizeof(r->method))
				return fail(r, 405);    /* no method we serve is that long */
			r->method[r->mlen++] = (char)c;
		} else {
			return fail(r, 400);
		}
		return VR_AGAIN;
	case S_TARGET:
		if (r->tlen == 0 && c != '/')
			return fail(r, 400);        /* origin-form only */
		if (c == ' ') {
			r->state = S_VERSION;
		} else if (c > 0x20 && c < 0x7f) {
			if (r->line > VR_HTTP_LINE_MAX)
				return fail(r, 414);
			r->target[r->tlen++] = (char)c;
		} else {
			return fail(r, 400);
		}
		return VR_AGAIN;
	case S_VERSION:
		if (c == '\r') {
			r->state = S_LINE_LF;
		} else if (r->vlen < sizeof(r->version) - 1 && c > 0x20 && c < 0x7f) {
			r->version[r->vlen++] = (char)c;
		} else {
			return fail(r, 400);
		}
		return VR_AGAIN;
	case S_LINE_LF:
		if (c != '\n')
			return fail(r, 400);
		r->state = S_FIELD;
		r->line = 0;
		return line_done(r);
	case S_FIELD:
		if (c == '\r') {
			r->state = S_END_LF;
			return VR_AGAIN;
		}
		/* a leading blank would be obs-fold (or smuggling): refuse it */
		if (!tchar(c))
			return fail(r, 400);
		r->nlen = r->clen = 0;
		r->state = S_NAME;
		/* fall through */
	case S_NAME:
		if (c == ':') {
			r->state = S_VALUE;
		} else if (tchar(c)) {
			if (r->nlen < sizeof(r->name))
				r->name[r->nlen] = (char)c;
			r->nlen++;
		} else {
			return fail(r, 400);        /* blank before the colon, or worse */
		}
		return VR_AGAIN;
	case S_VALUE:
		if (c == '\r') {
			r->state = S_FIELD_LF;
		} else if (vchar(c)) {
			if ((c == ' ' || c == '\t') && r->clen == 0)
				return VR_AGAIN;        /* leading OWS */
			if (r->clen < sizeof(r->clen_text))
				r->clen_text[r->clen] = (char)c;
			r->clen++;
		} else {
			return fail(r, 400);
		}
		return VR_AGAIN;
	case S_FIELD_LF:
		if (c != '\n')
			return fail(r, 400);
		r->state = S_FIELD;
		r->line = 0;
		return field_done(r);
	case S_END_LF:
		if (c != '\n')
			return fail(r, 400);
		if (!r->http10 && !r->host)
			return fail(r, 400);
		r->state = S_DONE;
		r->status = 200;
		return VR_OK;
	}
	return VR_ERR;
}

int vr_http_parse(struct vr_http_req *r, const uint8_t *p, size_t n, size_t *used)
{
	*used = 0;
	if (r->state == S_DONE)
		return VR_OK;
	if (r->state == S_FAILED)
		return VR_ERR;
	for (size_t i = 0; i < n; i++) {
		int rc = step(r, p[i]);
		if (rc != VR_AGAIN) {
			*used = i + 1;
			return rc;
		}
	}
	*used = n;
	return VR_AGAIN;
}
