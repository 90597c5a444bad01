/*
 * cmd.c - the SMTP command table (RFC 5321 §4.1 and the extensions we
 * offer), after OpenSMTPD's commands[] and Postfix's smtpd_cmd_table: each
 * command has flags the dispatcher enforces, a check() that validates and
 * replies on error, and a proceed() that does the work. Both are short
 * runs of guard clauses.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "session.h"

#define CMD_NOARG   0x01u     /* an argument is a syntax error */
#define CMD_ARG     0x02u     /* an argument is required */
#define CMD_HELO    0x04u     /* EHLO/HELO must come first */

struct cmd;

/* The command's argument, and what check() learnt for proceed(). */
struct cmd_args {
	const struct cmd *cmd;
	const uint8_t *arg;
	size_t len;
	struct vr_smtp_envcmd env;     /* MAIL, RCPT */
	uint64_t octets;               /* BDAT */
	bool last;
};

struct cmd {
	const char *name;
	unsigned flags;
	const char *usage;
	/* 0, or -1 after replying */
	int (*check)(struct vr_session *s, struct cmd_args *a);
	void (*proceed)(struct vr_session *s, struct cmd_args *a);
};

/* --- EHLO, HELO --- */

/* EHLO keywords, in the order offered; SIZE takes the limit. */
static bool offer_always(const struct vr_session *s) { return true; }
static bool offer_starttls(const struct vr_session *s) { return s->srv->tls && !s->tls_on; }
/* RFC 4954 §4: credentials only ever cross an encrypted channel. */
static bool offer_auth(const struct vr_session *s) { return s->tls_on && !s->authed; }

static const struct {
	const char *text;              /* printf format; argument: the size limit */
	bool (*offer)(const struct vr_session *s);
} extensions[] = {
	{ "PIPELINING", offer_always },
	{ "SIZE %" PRIu64, offer_always },
	{ "8BITMIME", offer_always },
	{ "SMTPUTF8", offer_always },
	{ "ENHANCEDSTATUSCODES", offer_always },
	{ "CHUNKING", offer_always },
	{ "STARTTLS", offer_starttls },
	{ "AUTH PLAIN LOGIN", offer_auth },
};

static int helo_check(struct vr_session *s, struct cmd_args *a)
{
	if (!vr_smtp_helo_valid(a->arg, a->len)) {
		vr_smtp_reply(s, VR_R_HELO_BAD);
		return -1;
	}
	return 0;
}

static void helo_store(struct vr_session *s, struct cmd_args *a, bool esmtp)
{
	/* RFC 5321 §4.1.4: a new EHLO/HELO ends any transaction. */
	vr_smtp_txn_reset(s);
	memcpy(s->helo, a->arg, a->len);
	s->helo[a->len] = '\0';
	s->esmtp = esmtp;
}

static void ehlo_proceed(struct vr_session *s, struct cmd_args *a)
{
	const char *offered[VR_ARRAY_SIZE(extensions)];
	size_t n = 0;

	helo_store(s, a, true);
	for (size_t i = 0; i < VR_ARRAY_SIZE(extensions); i++)
		if (extensions[i].offer(s))
			offered[n++] = extensions[i].text;
	vr_smtp_printf(s, "250-%s", s->cfg->hostname);
	for (size_t i = 0; i < n; i++) {
		char line[64];
		snprintf(line, sizeof(line), offered[i], s->cfg->max_message_size);
		vr_smtp_printf(s, "250%c%s", i + 1 < n ? '-' : ' ', line);
	}
}

static void helo_proceed(struct vr_session *s, struct cmd_args *a)
{
	helo_store(s, a, false);
	vr_smtp_printf(s, "250 %s", s->cfg->hostname);
}

/* --- MAIL, RCPT --- */

/* A path or parameter refused: the reply for each status. */
static void addr_refuse(struct vr_session *s, const struct cmd_args *a,
			enum vr_smtp_addr_status st, bool rcpt)
{
	static const enum vr_smtp_reply mail[] = {
		[VR_SMTP_ADDR_BAD] = VR_R_MAIL_BAD,
		[VR_SMTP_ADDR_TOO_LONG] = VR_R_MAIL_TOO_LONG,
		[VR_SMTP_ADDR_NO_DOMAIN] = VR_R_MAIL_NO_DOMAIN,
		[VR_SMTP_ADDR_UTF8] = VR_R_UTF8,
	};
	static const enum vr_smtp_reply to[] = {
		[VR_SMTP_ADDR_BAD] = VR_R_RCPT_BAD,
		[VR_SMTP_ADDR_TOO_LONG] = VR_R_RCPT_TOO_LONG,
		[VR_SMTP_ADDR_NO_DOMAIN] = VR_R_RCPT_NO_DOMAIN,
		[VR_SMTP_ADDR_UTF8] = VR_R_UTF8,
	};

	switch (st) {
	case VR_SMTP_ADDR_SYNTAX:
		vr_smtp_reply(s, VR_R_SYNTAX, a->cmd->usage);
		break;
	case VR_SMTP_ADDR_PARAM:
	case VR_SMTP_ADDR_PARAM_BAD:
		vr_smtp_reply(s, st == VR_SMTP_ADDR_PARAM ? VR_R_PARAM_UNKNOWN : VR_R_PARAM_BAD,
			      (int)a->env.bad_len, (const char *)a->env.bad);
		break;
	default:
		vr_smtp_reply(s, rcpt ? to[st] : mail[st]);
		break;
	}
}

static int mail_check(struct vr_session *s, struct cmd_args *a)
{
	enum vr_smtp_addr_status st;

	if (s->in_mail) {
		vr_smtp_reply(s, VR_R_MAIL_NESTED);
		return -1;
	}
	if ((st = vr_smtp_mail_parse(a->arg, a->len, &a->env)) != VR_SMTP_ADDR_OK) {
		addr_refuse(s, a, st, false);
		return -1;
	}
	/* RFC 1870 §6.2: refuse a declared size now, not after the upload. */
	if (a->env.has_size && a->env.size > s->cfg->max_message_size) {
		vr_smtp_reply(s, VR_R_SIZE, s->cfg->max_message_size);
		return -1;
	}
	return vr_smtp_access(s, VR_SMTP_ACCESS_MAIL, &a->env);
}

static void mail_proceed(struct vr_session *s, struct cmd_args *a)
{
	if (vr_smtp_env_add(s, 0, a->env.addr, a->env.addr_len) < 0) {
		vr_smtp_reply(s, VR_R_NOMEM, s->cfg->hostname);
		return;
	}
	s->in_mail = true;
	s->smtputf8 = a->env.smtputf8;
	s->body8 = a->env.body == VR_SMTP_BODY_8BITMIME;
	vr_smtp_reply(s, VR_R_MAIL_OK);
}

static int rcpt_check(struct vr_session *s, struct cmd_args *a)
{
	enum vr_smtp_addr_status st;

	if (!s->in_mail) {
		vr_smtp_reply(s, VR_R_NEED_MAIL);
		return -1;
	}
	if (s->n_rcpt >= s->cfg->max_recipients) {
		vr_smtp_reply(s, VR_R_RCPT_TOO_MANY);
		return -1;
	}
	st = vr_smtp_rcpt_parse(a->arg, a->len, s->smtputf8, &a->env);
	if (st != VR_SMTP_ADDR_OK) {
		addr_refuse(s, a, st, true);
		return -1;
	}
	return vr_smtp_access(s, VR_SMTP_ACCESS_RCPT, &a->env);
}

static void rcpt_proceed(struct vr_session *s, struct cmd_args *a)
{
	if (vr_smtp_env_add(s, s->n_rcpt + 1, a->env.addr, a->env.addr_len) < 0) {
		s->phase = VR_SMTP_CMD;        /* no waiting for a recipient we lost */
		vr_smtp_reply(s, VR_R_NOMEM, s->cfg->hostname);
		return;
	}
	s->n_rcpt++;
	/* the cluster quota block is on its way: the reply waits (access.c) */
	if (s->phase != VR_SMTP_RCPT_WAIT)
		vr_smtp_reply(s, VR_R_RCPT_OK);
}

/* --- DATA, BDAT --- */

/* Shared by DATA and BDAT: is there a transaction to send content for? */
static int content_check(struct vr_session *s)
{
	if (!s->in_mail) {
		vr_smtp_reply(s, VR_R_NEED_MAIL);
		return -1;
	}
	/* RFC 2920 §3.1: MAIL took, every RCPT failed. */
	if (s->n_rcpt == 0) {
		vr_smtp_reply(s, VR_R_NO_RCPTS);
		return -1;
	}
	return 0;
}

static int data_check(struct vr_session *s, struct cmd_args *a)
{
	if (s->bdat) {
		vr_smtp_reply(s, VR_R_DATA_AFTER_BDAT);
		return -1;
	}
	return content_check(s);
}

static void data_proceed(struct vr_session *s, struct cmd_args *a)
{
	if (vr_smtp_msg_begin(s, true) < 0) {
		vr_smtp_reply(s, VR_R_QUEUE_ERROR);
		return;
	}
	s->phase = VR_SMTP_DATA;
	vr_smtp_reply(s, VR_R_DATA_GO);
}

/* "octets [LAST]" (RFC 3030 §2: bdat-cmd ::= "BDAT" SP chunk-size [SP end-marker]) */
static bool bdat_parse(struct cmd_args *a)
{
	size_t i = 0;

	a->octets = 0;
	for (; i < a->len && a->arg[i] >= '0' && a->arg[i] <= '9'; i++) {
		unsigned d = a->arg[i] - '0';
		if (a->octets > (UINT64_MAX - d) / 10)
			return false;
		a->octets = a->octets * 10 + d;
	}
	if (i == 0)
		return false;
	a->last = false;
	if (i == a->len)
		return true;
	if (a->len - i != 5 || a->arg[i] != ' ' || strncasecmp((const char *)a->arg + i + 1, "LAST", 4))
		return false;
	a->last = true;
	return true;
}

/* Not CMD_HELO: whatever we answer, RFC 3030 §3 has the chunk follow, and
 * it must be read and dropped so none of it is taken for commands. */
static int bdat_check(struct vr_session *s, struct cmd_args *a)
{
	if (!bdat_parse(a)) {
		vr_smtp_reply(s, VR_R_BDAT_SYNTAX);
		return -1;
	}
	if (!s->helo[0])
		vr_smtp_reply(s, VR_R_NEED_HELO);
	else if (content_check(s) == 0)
		return 0;
	vr_smtp_bdat_chunk(s, a->octets, a->last, true);
	return -1;
}

static void bdat_proceed(struct vr_session *s, struct cmd_args *a)
{
	if (!s->bdat) {
		if (vr_smtp_msg_begin(s, false) < 0) {
			vr_smtp_txn_reset(s);
			vr_smtp_reply(s, VR_R_QUEUE_ERROR);
			vr_smtp_bdat_chunk(s, a->octets, a->last, true);
			return;
		}
		s->bdat = true;
	}
	vr_smtp_bdat_chunk(s, a->octets, a->last, false);
}

/* --- the rest --- */

static void rset_proceed(struct vr_session *s, struct cmd_args *a)
{
	vr_smtp_txn_reset(s);
	vr_smtp_reply(s, VR_R_OK);
}

static void noop_proceed(struct vr_session *s, struct cmd_args *a)
{
	vr_smtp_reply(s, VR_R_OK);
}

static void quit_proceed(struct vr_session *s, struct cmd_args *a)
{
	vr_smtp_reply(s, VR_R_BYE, s->cfg->hostname);
}

static void vrfy_proceed(struct vr_session *s, struct cmd_args *a)
{
	vr_smtp_reply(s, VR_R_VRFY);
}

static void expn_proceed(struct vr_session *s, struct cmd_args *a)
{
	vr_smtp_reply(s, VR_R_EXPN);
}

static void help_proceed(struct vr_session *s, struct cmd_args *a)
{
	vr_smtp_reply(s, VR_R_HELP);
}

static int starttls_check(struct vr_session *s, struct cmd_args *a)
{
	if (!s->srv->tls) {
		vr_smtp_reply(s, VR_R_TLS_UNAVAILABLE);
		return -1;
	}
	if (s->tls) {
		vr_smtp_reply(s, VR_R_TLS_ACTIVE);
		return -1;
	}
	/* CVE-2011-0411: plaintext queued behind STARTTLS would otherwise run
	 * as if it came over TLS. The client broke RFC 3207 §4; drop it. */
	if (s->rest) {
		vr_smtp_reply(s, VR_R_TLS_INJECTION, s->cfg->hostname);
		return -1;
	}
	return 0;
}

static void starttls_proceed(struct vr_session *s, struct cmd_args *a)
{
	vr_smtp_starttls(s);
}

static int auth_check(struct vr_session *s, struct cmd_args *a)
{
	if (!s->tls_on) {
		vr_smtp_reply(s, VR_R_AUTH_NEED_TLS);
		return -1;
	}
	if (!s->esmtp) {
		vr_smtp_reply(s, VR_R_NEED_HELO);
		return -1;
	}
	if (s->authed) {
		vr_smtp_reply(s, VR_R_AUTH_TWICE);
		return -1;
	}
	if (s->in_mail) {
		vr_smtp_reply(s, VR_R_AUTH_IN_MAIL);
		return -1;
	}
	return 0;
}

static void auth_proceed(struct vr_session *s, struct cmd_args *a)
{
	vr_smtp_auth_start(s, a->arg, a->len);
}

static const struct cmd commands[] = {
	{ "EHLO", CMD_ARG, "EHLO domain", helo_check, ehlo_proceed },
	{ "HELO", CMD_ARG, "HELO domain", helo_check, helo_proceed },
	{ "MAIL", CMD_ARG | CMD_HELO, "MAIL FROM:<address> [parameters]", mail_check, mail_proceed },
	{ "RCPT", CMD_ARG | CMD_HELO, "RCPT TO:<address>", rcpt_check, rcpt_proceed },
	{ "DATA", CMD_NOARG | CMD_HELO, "DATA", data_check, data_proceed },
	{ "BDAT", 0, "BDAT octets [LAST]", bdat_check, bdat_proceed },
	{ "RSET", CMD_NOARG, "RSET", NULL, rset_proceed },
	{ "NOOP", 0, "NOOP", NULL, noop_proceed },
	{ "QUIT", CMD_NOARG, "QUIT", NULL, quit_proceed },
	{ "VRFY", CMD_ARG, "VRFY address", NULL, vrfy_proceed },
	{ "EXPN", 0, "EXPN list", NULL, expn_proceed },
	{ "HELP", 0, "HELP", NULL, help_proceed },
	{ "STARTTLS", CMD_NOARG, "STARTTLS", starttls_check, starttls_proceed },
	{ "AUTH", CMD_ARG, "AUTH mechanism [initial-response]", auth_check, auth_proceed },
};

static const struct cmd *cmd_find(const uint8_t *verb, size_t len)
{
	for (size_t i = 0; i < VR_ARRAY_SIZE(commands); i++)
		if (strlen(commands[i].name) == len &&
		    strncasecmp(commands[i].name, (const char *)verb, len) == 0)
			return &commands[i];
	return NULL;
}

void vr_smtp_cmd(struct vr_session *s, const struct vr_smtp_cmdline *cl)
{
	const struct cmd *c = cmd_find(cl->verb, cl->verb_len);
	struct cmd_args a = { .cmd = c, .arg = cl->arg, .len = cl->arg_len };

	if (!c) {
		vr_smtp_reply(s, VR_R_UNKNOWN);
		return;
	}
	if (((c->flags & CMD_NOARG) && a.len) || ((c->flags & CMD_ARG) && !a.len)) {
		vr_smtp_reply(s, VR_R_SYNTAX, c->usage);
		return;
	}
	if ((c->flags & CMD_HELO) && !s->helo[0]) {
		vr_smtp_reply(s, VR_R_NEED_HELO);
		return;
	}
	if (c->check && c->check(s, &a) < 0)
		return;
	c->proceed(s, &a);
}
