/*
 * hdr.h - the message's header section as it streams through the content
 * decoder, and the From field's address list (private to engine/smtp).
 *
 *   hdr.c   finds the header fields line by line (RFC 5322 §2.2) while
 *           the content passes through, keeps the From field's body,
 *           unfolded, and notes whatever makes the section unusable;
 *   from.c  parses that body as a mailbox-list (RFC 5322 §3.4, §3.6.2)
 *           and hands out the domain of each address.
 *
 * Like the other parsers here these allocate nothing: the header scanner
 * keeps From in its own fixed buffer, and the address list parser returns
 * slices of the text it is given. Both see network bytes and are strict:
 * what another parser could read differently (a second From field, a line
 * that is no field, an encoded word hiding a comma, a source route) is
 * refused rather than guessed at, since the domains a recipient sees are
 * what the sender rules must check.
 */
#ifndef VR_SMTP_HDR_H
#define VR_SMTP_HDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrelay/common.h"

/* The From field's body, unfolded: room for several addresses with
 * display names (one line may hold 998 octets, folding allows more). */
#define VR_SMTP_FROM_MAX 2048
/* Octets of an offending line kept to quote in the reply. */
#define VR_SMTP_HDR_SHOW 64

/* Why vr_smtp_hdr_parse() or vr_smtp_hdr_finish() returned VR_ERR. */
enum vr_smtp_hdr_err {
	VR_SMTP_HDR_NO_FROM = 1,     /* the section ended without a From field */
	VR_SMTP_HDR_TWO_FROM,        /* RFC 5322 §3.6: From occurs exactly once */
	VR_SMTP_HDR_FROM_LONG,       /* From's body over VR_SMTP_FROM_MAX */
	VR_SMTP_HDR_BAD_LINE,        /* neither a field, nor its continuation, nor
				      * the blank line: show[] holds its start */
};

/* Scanner state, one per message; zeroed by vr_smtp_hdr_init(). */
struct vr_smtp_hdr {
	uint8_t state;
	uint8_t err;                 /* enum vr_smtp_hdr_err after VR_ERR */
	uint8_t name_len;            /* of the field name so far, saturated */
	bool name_from;              /* the name so far is a prefix of "From" */
	bool field;                  /* a field has begun: folding may follow */
	bool in_from;                /* the field being read is From */
	unsigned n_from;
	size_t from_len;
	size_t show_len;
	uint8_t show[VR_SMTP_HDR_SHOW];   /* the current line's first octets */
	uint8_t from[VR_SMTP_FROM_MAX];   /* From's body, unfolded */
};

void vr_smtp_hdr_init(struct vr_smtp_hdr *h);
/*
 * Scans n octets of content (CRLF lines, dot-unstuffed). Returns VR_AGAIN
 * when all n were used and the section goes on; VR_OK when the blank line
 * ended it with exactly one From field (h->from holds its body; *used
 * counts through the blank line); VR_ERR when the section cannot be used
 * (h->err says why; *used octets were looked at). A bad line is reported
 * at its end, so what show[] holds does not depend on how the content was
 * cut. After VR_OK or VR_ERR the scanner takes no more input.
 */
int vr_smtp_hdr_parse(struct vr_smtp_hdr *h, const uint8_t *p, size_t n, size_t *used);
/* The content ended inside the header section (a message of header fields
 * only, or an empty one): VR_OK or VR_ERR as above. */
int vr_smtp_hdr_finish(struct vr_smtp_hdr *h);

/* Called with the domain of each address, a slice of the parsed text: a
 * dot-atom or a domain literal with its brackets. */
typedef void vr_smtp_from_fn(void *arg, const uint8_t *domain, size_t len);

/*
 * Parses an unfolded From body as a mailbox-list: each mailbox a bare
 * addr-spec or a display name and an angle-addr, with comments and
 * folding whitespace anywhere RFC 5322 allows them. Display names are
 * phrases of atoms and quoted strings; an RFC 2047 encoded word is an
 * atom there and is not decoded (it names nobody). A local part is one
 * dot-atom or quoted string, a domain one dot-atom or domain literal;
 * octets above 0x7f are text (RFC 6532). Refused: group syntax, source
 * routes, obsolete forms, empty list members. Returns VR_OK after calling
 * fn for every address, or VR_ERR with *why saying what is wrong (fn may
 * have been called for the addresses before the fault).
 */
int vr_smtp_from_parse(const uint8_t *p, size_t n, vr_smtp_from_fn *fn, void *arg,
		       const char **why);

#endif
