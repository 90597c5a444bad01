/*
 * smtpc_reply.h - the SMTP reply parser of the outbound client (private to
 * engine/delivery; the fuzz harness compiles it too).
 *
 * Incremental and zero-copy: the caller keeps the unconsumed bytes from the
 * server in one buffer whose start is the start of a reply, and presents
 * them again with whatever arrived since; the parser resumes where it
 * stopped and records each line's text as an (offset, length) slice into
 * that buffer. Limits are checked while scanning, so a server streaming an
 * endless line or endless continuation lines costs a bounded buffer.
 */
#ifndef VR_SMTPC_REPLY_H
#define VR_SMTPC_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrelay/common.h"
#include "vmrelay/smtpc.h"

/* RFC 5321 4.5.3.1.5 says 512 octets per reply line; real servers send
 * longer banners, so be generous and still bounded. */
#define VR_SMTPC_LINE_MAX  2048
/* Lines of one multi-line reply; an EHLO reply has a dozen or two. */
#define VR_SMTPC_LINES_MAX 64

struct vr_smtpc_line {
	uint32_t off;            /* text after "NNN-" / "NNN " and the enhanced code */
	uint32_t len;            /* without CR LF */
};

struct vr_smtpc_rp {
	bool enhanced;           /* the server advertised ENHANCEDSTATUSCODES */
	size_t line_start;       /* offset of the line being scanned */
	size_t scanned;          /* bytes of it already searched for LF */
	unsigned code;           /* of the first line; all must agree */
	unsigned n_lines;
	char enh[12];            /* the first line's RFC 3463 code, "" if none */
	struct vr_smtpc_line line[VR_SMTPC_LINES_MAX];
	const char *err;         /* why VR_ERR, a constant string */
};

/* Readies p for a new reply. */
void vr_smtpc_rp_init(struct vr_smtpc_rp *p, bool enhanced);

/*
 * Parses the reply at the start of buf (len bytes, the same bytes as last
 * time plus any new ones). Returns
 *  VR_OK:    a complete reply, *used = its length; code, enh, line[] set;
 *  VR_AGAIN: incomplete; *used = 0;
 *  VR_ERR:   garbage (p->err says what); the connection cannot go on.
 */
int vr_smtpc_rp_parse(struct vr_smtpc_rp *p, const uint8_t *buf, size_t len, size_t *used);

/* Copies a complete reply into out: its lines joined by one space, control
 * bytes as '?', cut with "..." to fit. local is set false. */
void vr_smtpc_rp_copy(const struct vr_smtpc_rp *p, const uint8_t *buf,
		      struct vr_smtpc_reply *out);

#endif
