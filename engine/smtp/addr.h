/*
 * addr.h - envelope syntax (private to engine/smtp): the arguments of MAIL
 * and RCPT (RFC 5321 §4.1.2 paths, RFC 6531 UTF-8, RFC 1870/6152/6531/4954
 * parameters) and of EHLO/HELO.
 *
 * Pure functions over (pointer, length) slices of the command line: nothing
 * is copied or allocated; results point into the input.
 */
#ifndef VR_SMTP_ADDR_H
#define VR_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 §4.5.3.1.3: a path is at most 256 octets, brackets included. */
#define VR_SMTP_PATH_MAX 256

enum vr_smtp_addr_status {
	VR_SMTP_ADDR_OK = 0,
	VR_SMTP_ADDR_SYNTAX,       /* not "FROM:<...>" / "TO:<...>" at all */
	VR_SMTP_ADDR_BAD,          /* the path does not follow the grammar */
	VR_SMTP_ADDR_TOO_LONG,     /* path over VR_SMTP_PATH_MAX */
	VR_SMTP_ADDR_NO_DOMAIN,    /* a mailbox without "@domain" */
	VR_SMTP_ADDR_UTF8,         /* non-ASCII without SMTPUTF8 */
	VR_SMTP_ADDR_PARAM,        /* unknown parameter (named by bad) */
	VR_SMTP_ADDR_PARAM_BAD,    /* bad or repeated parameter (named by bad) */
};

enum vr_smtp_body { VR_SMTP_BODY_NONE, VR_SMTP_BODY_7BIT, VR_SMTP_BODY_8BITMIME };

/* A parsed MAIL FROM or RCPT TO argument. */
struct vr_smtp_envcmd {
	const uint8_t *addr;       /* the mailbox, without <> and source route */
	size_t addr_len;           /* 0: the null path <> */
	const uint8_t *domain;     /* after the mailbox's "@": a domain or an */
	size_t domain_len;         /* address literal; 0 if none */
	bool utf8;                 /* addr has non-ASCII octets (valid UTF-8) */
	/* MAIL parameters */
	bool has_size;
	uint64_t size;             /* SIZE=, saturated at UINT64_MAX */
	enum vr_smtp_body body;
	bool smtputf8;
	/* The keyword of the parameter that failed, for the reply. */
	const uint8_t *bad;
	size_t bad_len;
};

/* "FROM:<path> [params]". The null path is allowed. */
enum vr_smtp_addr_status vr_smtp_mail_parse(const uint8_t *p, size_t n,
					    struct vr_smtp_envcmd *out);
/* "TO:<path>": no parameters are supported. smtputf8: MAIL said SMTPUTF8. */
enum vr_smtp_addr_status vr_smtp_rcpt_parse(const uint8_t *p, size_t n, bool smtputf8,
					    struct vr_smtp_envcmd *out);
/* An EHLO/HELO argument: a domain (LDH labels; '_' tolerated, as real
 * hosts use it) or an address literal. */
bool vr_smtp_helo_valid(const uint8_t *p, size_t n);

#endif
