/*
 * reply.h - the client's SMTP reply parser (private to vmrelay-bench).
 *
 * Incremental and zero-copy, like the server's command parser: a byte loop
 * over a state kept between calls, so a reply split across any number of
 * reads resumes where the last call stopped, and the octets already looked
 * at are not scanned again. A reply is one or more lines "DDD-text" ending
 * with "DDD text" (RFC 5321 §4.2.1); pipelined replies simply follow one
 * another, and each call returns the next one. The parser sees what the
 * server sent and trusts none of it: the code, the separator, the line and
 * reply lengths and the line ends are checked as they stream in.
 */
#ifndef VR_BENCH_REPLY_H
#define VR_BENCH_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrelay/common.h"

/* RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets incl. CRLF. */
#define VR_BENCH_REPLY_LINE_MAX 512
/* A whole multi-line reply (an EHLO list is well under this). */
#define VR_BENCH_REPLY_MAX 16384

/* Why vr_bench_reply_parse() returned VR_ERR. */
enum vr_bench_reply_err {
	VR_BENCH_REPLY_BAD_CODE = 1,   /* not three digits from 200 to 599 */
	VR_BENCH_REPLY_BAD_SEP,        /* neither ' ', '-' nor CRLF after the code */
	VR_BENCH_REPLY_MISMATCH,       /* a continuation line with another code */
	VR_BENCH_REPLY_LONG_LINE,      /* a line over VR_BENCH_REPLY_LINE_MAX */
	VR_BENCH_REPLY_LONG,           /* a reply over VR_BENCH_REPLY_MAX */
	VR_BENCH_REPLY_BARE_LF,        /* LF not preceded by CR */
	VR_BENCH_REPLY_BARE_CR,        /* CR not followed by LF */
};

/* Parser state, kept by the caller between calls; zero is the initial state. */
struct vr_bench_reply_parser {
	uint8_t state;
	uint8_t err;             /* enum vr_bench_reply_err after VR_ERR */
	bool last;               /* the current line is the reply's last */
	uint16_t code;           /* of the first line */
	uint16_t cur;            /* of the current line, as its digits arrive */
	uint16_t lines;          /* complete lines so far */
	uint16_t line_len;       /* octets of the current line so far */
	size_t scanned;          /* octets of the reply already looked at */
};

/* One complete reply; text points into the buffer given to the parser. */
struct vr_bench_reply {
	uint16_t code;
	uint16_t lines;
	const uint8_t *text;     /* every line, CRLFs included */
	size_t len;
};

/*
 * Parses the reply starting at p (n octets available). Returns
 *  VR_OK:    a complete reply; *used = its length, out filled;
 *  VR_AGAIN: no complete reply yet; *used = 0, and the caller presents the
 *            same octets again followed by more;
 *  VR_ERR:   p->err says why; *used = the octets up to the fault. The stream
 *            cannot be resynchronised: the caller closes the connection.
 * After VR_OK the parser is ready for the next reply.
 */
int vr_bench_reply_parse(struct vr_bench_reply_parser *p, const uint8_t *buf, size_t n,
			 size_t *used, struct vr_bench_reply *out);
/* "bad reply code", ... for error reports. */
const char *vr_bench_reply_strerror(enum vr_bench_reply_err err);

/*
 * Line i of a reply without its code, separator and CRLF, in text and len.
 * Returns false past the last line.
 */
bool vr_bench_reply_line(const struct vr_bench_reply *r, unsigned i, const uint8_t **text,
			 size_t *len);

/* EHLO keywords the client acts on: RFC 2920, 3030, 3207, 6152, 1870. */
#define VR_BENCH_EXT_PIPELINING  0x01u
#define VR_BENCH_EXT_CHUNKING    0x02u
#define VR_BENCH_EXT_STARTTLS    0x04u
#define VR_BENCH_EXT_8BITMIME    0x08u
#define VR_BENCH_EXT_SIZE        0x10u

struct vr_bench_ehlo {
	unsigned ext;            /* VR_BENCH_EXT_* */
	uint64_t size;           /* SIZE's limit; 0 when absent or unlimited */
};

/* The extensions a 250 reply to EHLO lists (its first line is the greeting). */
void vr_bench_ehlo_parse(const struct vr_bench_reply *r, struct vr_bench_ehlo *out);

#endif
