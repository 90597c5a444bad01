/*
 * parse.h - the SMTP command line parser (private to engine/smtp).
 *
 * Incremental and zero-copy, in the manner of nginx's ngx_mail_parse.c: a
 * byte loop over switch (state) whose state lives in the session, so a line
 * split across any number of segments resumes where the last call stopped.
 * The verb and the argument are (pointer, length) slices into the caller's
 * buffer. The 512-octet limit is enforced while scanning, so an over-long
 * line is discarded as it streams in and never held in memory.
 */
#ifndef VR_SMTP_PARSE_H
#define VR_SMTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "vmrelay/common.h"

/* RFC 5321 §4.5.3.1.4: a command line is at most 512 octets incl. CRLF. */
#define VR_SMTP_LINE_MAX 512

/* Why vr_smtp_line_parse() returned VR_ERR. */
enum vr_smtp_line_err {
	VR_SMTP_LINE_LONG = 1,   /* over VR_SMTP_LINE_MAX; skipped to its LF */
	VR_SMTP_LINE_NUL,        /* a NUL octet; the whole line was consumed */
	VR_SMTP_LINE_BARE_LF,    /* LF not preceded by CR: the session must close */
	VR_SMTP_LINE_BARE_CR,    /* CR not followed by LF: the session must close */
};

/* Parser state, kept by the session between calls. Zero is the initial state. */
struct vr_smtp_line {
	uint16_t state;
	uint16_t scanned;        /* octets of the current line already looked at */
	uint16_t verb_len;
	uint16_t arg_off;
	uint16_t arg_end;        /* one past the last non-blank octet of the argument */
	uint16_t nul;
	uint16_t err;            /* enum vr_smtp_line_err after VR_ERR */
};

/* One complete line; slices point into the buffer given to the parser. */
struct vr_smtp_cmdline {
	const uint8_t *verb;
	size_t verb_len;
	const uint8_t *arg;      /* after the blanks following the verb; trailing blanks cut */
	size_t arg_len;
	const uint8_t *text;     /* the whole line without CRLF (AUTH continuation lines) */
	size_t text_len;
};

/*
 * Parses the line starting at p (n octets available). Returns
 *  VR_OK:    a complete line; *used = its length incl. CRLF, out filled;
 *  VR_AGAIN: no complete line yet. *used = 0 and the caller must present the
 *            same octets again, followed by more; or, while skipping an
 *            over-long line, *used = n and those octets are gone;
 *  VR_ERR:   l->err says why; *used octets are consumed.
 * After VR_OK and VR_ERR the state is ready for the next line.
 */
int vr_smtp_line_parse(struct vr_smtp_line *l, const uint8_t *p, size_t n, size_t *used,
		       struct vr_smtp_cmdline *out);

#endif
