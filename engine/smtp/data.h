/*
 * data.h - the message content decoder for DATA and BDAT (private to
 * engine/smtp).
 *
 * Streaming: content passes through in runs that point into the caller's
 * buffer and go straight to a sink (the spool transaction); the decoder
 * holds no message bytes. In DATA mode it removes dot-stuffing and finds the
 * end, which only <CRLF>.<CRLF> is (RFC 5321 §4.1.1.4). In both modes a bare
 * CR or LF is fatal (SMTP smuggling, CVE-2023-51764 class): the content is
 * forwarded later with DATA, where such octets could end it early.
 *
 * Faults that spoil the message but not the protocol stream (NUL, a line
 * over 1000 octets, the size limit, a sink error) are flags: the decoder
 * stops storing and keeps reading to the real end, so the client and the
 * server stay in step and the refusal comes as the message's reply.
 */
#ifndef VR_SMTP_DATA_H
#define VR_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrelay/common.h"

/* RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets incl. CRLF. */
#define VR_SMTP_TEXT_LINE_MAX 1000

/* Spoilers, in the order the reply names them. */
#define VR_SMTP_DATA_BIG    0x01u   /* over the size limit */
#define VR_SMTP_DATA_NUL    0x02u   /* a NUL octet (DATA only) */
#define VR_SMTP_DATA_LONG   0x04u   /* a line over 1000 octets (DATA only) */
#define VR_SMTP_DATA_STORE  0x08u   /* the sink failed */

/* Fatal faults: vr_smtp_data_parse() returned VR_ERR. */
enum vr_smtp_data_err {
	VR_SMTP_DATA_BARE_LF = 1,
	VR_SMTP_DATA_BARE_CR,
};

/* Receives unstuffed content. Returns 0 or a negative errno. */
typedef int vr_smtp_sink_fn(void *arg, const void *p, size_t n);

struct vr_smtp_data {
	uint8_t state;
	bool dot;                /* DATA: dot-stuffed, ends at CRLF.CRLF */
	uint8_t err;             /* enum vr_smtp_data_err after VR_ERR */
	uint32_t flags;          /* VR_SMTP_DATA_* */
	uint32_t line;           /* octets of the current line so far, on the wire */
	uint64_t size;           /* content octets after unstuffing */
	uint64_t max;            /* VR_SMTP_DATA_BIG beyond this */
	vr_smtp_sink_fn *sink;
	void *arg;
};

/* dot: DATA mode; otherwise BDAT (raw) mode. */
void vr_smtp_data_init(struct vr_smtp_data *d, bool dot, uint64_t max,
		       vr_smtp_sink_fn *sink, void *arg);
/*
 * Decodes n octets at p. Returns VR_OK at the end of DATA (*used counts the
 * final ".CRLF"), VR_AGAIN when all n octets were used and more content is
 * due (always, in BDAT mode, unless VR_ERR), VR_ERR on a bare CR or LF.
 */
int vr_smtp_data_parse(struct vr_smtp_data *d, const uint8_t *p, size_t n, size_t *used);
/* BDAT LAST: the content ended. VR_ERR if it ended in a bare CR. */
int vr_smtp_data_finish(struct vr_smtp_data *d);

#endif
