/*
 * http.h - the request parser of the metrics endpoint: strict HTTP/1.1
 * (RFC 9112) for what a scraper sends, GET or HEAD of a path, headers, no
 * body; everything else is refused with the status that says why.
 */
#ifndef VR_CTL_HTTP_H
#define VR_CTL_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VR_HTTP_LINE_MAX 1024         /* request line; longer: 414 */
#define VR_HTTP_HEAD_MAX 8192         /* request line and headers; more: 431 */
#define VR_HTTP_HEADERS_MAX 64

struct vr_http_req {
	unsigned state;
	size_t line, head;            /* octets of this line, of the whole head */
	unsigned n_headers;
	char target[VR_HTTP_LINE_MAX];
	size_t tlen, mlen, vlen, nlen, clen;
	char method[8], version[9], name[20], clen_text[8];
	bool head_only;               /* HEAD: no body in the response */
	bool host, http10;
	int status;                   /* the response's status, once parsed */
};

void vr_http_init(struct vr_http_req *r);
/*
 * Feeds n octets. VR_AGAIN: all used, the head is not complete. VR_OK: the
 * head ended; *used octets were its last (bytes after it are ignored: one
 * request per connection) and r->status is 200 (GET or HEAD of a path),
 * which the caller may turn into 404. VR_ERR: a bad request; r->status is
 * 400, 405, 414, 431 or 505. Once VR_OK or VR_ERR, it stays so.
 */
int vr_http_parse(struct vr_http_req *r, const uint8_t *p, size_t n, size_t *used);

#endif
