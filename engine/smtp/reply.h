/*
 * reply.h - every reply text the SMTP server sends, as one table (private
 * to engine/smtp).
 *
 * A reply knows its consequences: whether it counts as a protocol error
 * towards max_errors, whether the session closes after it, which counter it
 * bumps and, for refusals worth a log line, the reason= it logs. Handlers
 * just name the reply.
 */
#ifndef VR_SMTP_REPLY_H
#define VR_SMTP_REPLY_H

struct vr_session;

enum vr_smtp_reply {
	/* connection */
	VR_R_BANNER,
	VR_R_PREGREET,
	VR_R_TIMEOUT,
	VR_R_TOO_MANY_ERRORS,
	VR_R_BARE_LF,
	VR_R_BARE_CR,
	VR_R_BYE,
	VR_R_NOMEM,
	/* command level */
	VR_R_OK,
	VR_R_LINE_TOO_LONG,
	VR_R_NUL,
	VR_R_UNKNOWN,
	VR_R_SYNTAX,
	VR_R_NEED_HELO,
	VR_R_HELO_BAD,
	VR_R_HELP,
	VR_R_VRFY,
	VR_R_EXPN,
	/* STARTTLS */
	VR_R_TLS_GO,
	VR_R_TLS_UNAVAILABLE,
	VR_R_TLS_ACTIVE,
	VR_R_TLS_TEMP,
	VR_R_TLS_INJECTION,
	/* AUTH */
	VR_R_AUTH_OK,
	VR_R_AUTH_FAILED,
	VR_R_AUTH_CANCELLED,
	VR_R_AUTH_BASE64,
	VR_R_AUTH_TWICE,
	VR_R_AUTH_IN_MAIL,
	VR_R_AUTH_MECH,
	VR_R_AUTH_NEED_TLS,
	/* envelope */
	VR_R_MAIL_OK,
	VR_R_MAIL_NESTED,
	VR_R_MAIL_BAD,
	VR_R_MAIL_TOO_LONG,
	VR_R_MAIL_NO_DOMAIN,
	VR_R_RELAY_DENIED,
	VR_R_SENDER_DENIED,
	VR_R_SENDER_PENDING,
	VR_R_RCPT_OK,
	VR_R_NEED_MAIL,
	VR_R_RCPT_BAD,
	VR_R_RCPT_TOO_LONG,
	VR_R_RCPT_NO_DOMAIN,
	VR_R_RCPT_TOO_MANY,
	VR_R_UTF8,
	VR_R_PARAM_UNKNOWN,
	VR_R_PARAM_BAD,
	VR_R_SIZE,
	VR_R_QUOTA,
	VR_R_QUOTA_UNKNOWN,
	/* message */
	VR_R_DATA_GO,
	VR_R_NO_RCPTS,
	VR_R_DATA_AFTER_BDAT,
	VR_R_BDAT_SYNTAX,
	VR_R_BDAT_OK,
	VR_R_MSG_NUL,
	VR_R_MSG_LONG_LINE,
	VR_R_FROM_MISSING,
	VR_R_FROM_TWICE,
	VR_R_FROM_LONG,
	VR_R_FROM_INVALID,
	VR_R_HEADER_BAD_LINE,
	VR_R_FROM_DENIED,
	VR_R_FROM_PENDING,
	VR_R_QUEUED,
	VR_R_QUEUE_ERROR,
	VR_R_QUEUE_FULL,
	VR_R__COUNT
};

/*
 * Sends reply r (its printf arguments follow, as its text in reply.c
 * wants), then applies its consequences. May close the session: callers
 * return after replying.
 */
void vr_smtp_reply(struct vr_session *s, enum vr_smtp_reply r, ...);

#endif
