/*
 * access.c - who may send what: the one place MAIL, RCPT and header
 * policy is decided.
 *
 *   MAIL    the client is a known VPS (by source address, or the account
 *           it authenticated as): never an open relay. The envelope
 *           sender's domain is one the account may use (sender.c); the
 *           null sender is allowed, its message still needs a good From.
 *   RCPT    the transaction has an account (no path reaches RCPT or DATA
 *           without one), and the account a free slot in every sending
 *           window: one reservation per recipient, kept by the session
 *           until its message is committed (confirmed) or the transaction
 *           ends any other way (released). With no slot: 451 4.7.1 saying
 *           which window, its count and when a slot frees; or, for an
 *           account with over_quota = hold, the transaction is accepted and
 *           held for the operator. Clustered (vmrelay/cluster.h), the
 *           recipient also takes a slot of this node's block of the VPS's
 *           cluster-wide allowance, after the local windows agreed.
 *   header  once the header section has passed (msg.c feeds hdr.c), every
 *           address of the one From field has a domain the account may
 *           use; the verdict is given as the reply to the message.
 *
 * The accounts table is looked up again at each stage, under RCU, since a
 * reload may have changed it; only the account id is kept.
 */
#include <errno.h>
#include <string.h>
#include <urcu-qsbr.h>

#include "vmrelay/clock.h"
#include "vmrelay/cluster.h"
#include "vmrelay/log.h"
#include "vmrelay/policy.h"
#include "vmrelay/ratelimit.h"
#include "vmrelay/utf8.h"

#include "session.h"

/*
 * Client text quoted in a reply: printable ASCII as it is, UTF-8 too when
 * the client speaks SMTPUTF8 (RFC 6531), any other octet as '?';
 * blanks around it dropped, cut with "..." to fit.
 */
static void reply_text(bool utf8, char *out, size_t outlen, const uint8_t *p, size_t n)
{
	size_t o = 0;

	while (n && (p[0] == ' ' || p[0] == '\t')) {
		p++;
		n--;
	}
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	for (size_t i = 0; i < n;) {
		size_t k = 1;
		if (p[i] >= 0x80 && utf8)
			k = VR_MAX(vr_utf8_seq(p + i, n - i), (size_t)1);
		if (o + k + 4 > outlen) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if (k > 1)
			memcpy(out + o, p + i, k);
		else
			out[o] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
		o += k;
		i += k;
	}
	out[o] = '\0';
}

/* --- MAIL --- */

static enum vr_smtp_reply sender_reply(enum vr_may_send v, bool header)
{
	static const enum vr_smtp_reply replies[2][3] = {
		{ [VR_SEND_UNREGISTERED] = VR_R_SENDER_DENIED, [VR_SEND_PENDING] = VR_R_SENDER_PENDING },
		{ [VR_SEND_UNREGISTERED] = VR_R_FROM_DENIED, [VR_SEND_PENDING] = VR_R_FROM_PENDING },
	};
	return replies[header][v];
}

/* Finds the account behind this client now and checks the sender. */
static int access_mail(struct vr_session *s, const struct vr_smtp_envcmd *cmd)
{
	const struct vr_account *acct = NULL;
	const struct vr_accounts *t;
	enum vr_may_send v = VR_SEND_OK;
	char id[VR_ACCOUNT_ID_MAX];
	uint32_t daily = 0;

	rcu_read_lock();
	t = vr_policy_current();
	if (t)
		acct = s->authed ? vr_accounts_by_id(t, s->auth_id)
				 : vr_accounts_by_addr(t, (const struct sockaddr *)&s->peer);
	if (acct) {
		memcpy(id, acct->id, sizeof(id));
		s->hold_over_quota = acct->over_quota == VR_OVER_QUOTA_HOLD;
		s->unlimited = acct->unlimited;
		daily = acct->daily_quota;
		/* the null sender (a bounce from the VPS) names no domain */
		if (cmd->addr_len)
			v = vr_account_may_send(acct, (const char *)cmd->domain, cmd->domain_len);
	}
	rcu_read_unlock();

	if (!acct) {
		vr_smtp_reply(s, VR_R_RELAY_DENIED, s->client);
		return -1;
	}
	memcpy(s->account, id, sizeof(s->account));
	if (v != VR_SEND_OK) {
		char domain[VR_SMTP_DENY_TEXT];
		reply_text(cmd->smtputf8, domain, sizeof(domain), cmd->domain, cmd->domain_len);
		/* s->account names the VPS in its recent refusals, then no
		 * transaction is open */
		vr_smtp_reply(s, sender_reply(v, false), domain, id);
		s->account[0] = '\0';
		return -1;
	}
	/* RCPTs follow: have this node's cluster block ready by then */
	if (s->srv->cluster && !s->unlimited)
		vr_cluster_touch(s->srv->cluster, id, daily);
	return 0;
}

/* --- RCPT --- */

/* A held message is not sent, so it takes no slot: what this transaction
 * reserved goes back now, and nothing more is. */
static int access_hold(struct vr_session *s)
{
	vr_smtp_quota_end(s, false);
	s->held = true;
	vr_log_info("event=hold client=%s account=%s", s->client, s->account);
	return 0;
}

/* A window of the account is full: defer the recipient, or hold the
 * message if the account says so. */
static int access_over_quota(struct vr_session *s, const struct vr_rl_verdict *v, int64_t now)
{
	char why[VR_SMTP_DENY_TEXT];

	if (s->hold_over_quota)
		return access_hold(s);
	vr_rl_explain(s->srv->rl, v, now, why, sizeof(why));
	vr_smtp_reply(s, VR_R_QUOTA, why);
	return -1;
}

/* --- the cluster-wide allowance (vmrelay/cluster.h) --- */

/* A VPS's first RCPT on this node may come before the node's block of its
 * allowance (asked for at MAIL) has arrived from Redis: the reply waits,
 * input with it, looking again every RCPT_POLL_MS, for at most
 * RCPT_WAIT_MS (well inside any client's RCPT timeout). */
#define RCPT_WAIT_MS 1500
#define RCPT_POLL_MS 2

/* No cluster slot for the recipient: its local reservation (the last
 * ticket) goes back and the client learns why. */
static void cluster_refuse(struct vr_session *s, const struct vr_cluster_verdict *cv)
{
	int64_t now = (int64_t)(vr_clock_wall_us() / 1000000u);
	char why[VR_SMTP_DENY_TEXT];

	vr_rl_release(s->srv->rl, s->account, &s->tickets[--s->n_tickets]);
	vr_cluster_explain(cv, s->account, now, why, sizeof(why));
	vr_smtp_reply(s, VR_R_QUOTA, why);
}

/* After the local windows took the recipient's ticket: 0 with the cluster
 * slot taken (or the message held), 1 when the reply waits
 * (VR_SMTP_RCPT_WAIT), -1 after a 451. Only a spent allowance is over
 * quota; a block not here yet is waited for, then a 451 that says so. */
static int access_cluster(struct vr_session *s)
{
	struct vr_cluster_verdict cv;
	int rc = vr_cluster_take(s->srv->cluster, s->account, 1, &cv);

	if (rc == 0) {
		s->n_cluster++;
		return 0;
	}
	if (rc == -EAGAIN) {
		s->phase = VR_SMTP_RCPT_WAIT;
		s->rcpt_wait_until = s->now + RCPT_WAIT_MS;
		return 1;
	}
	if (s->hold_over_quota)
		return access_hold(s);
	cluster_refuse(s, &cv);
	return -1;
}

void vr_smtp_rcpt_wait(struct vr_session *s)
{
	struct vr_cluster_verdict cv;
	int rc = vr_cluster_poll(s->srv->cluster, s->account, 1, &cv);

	if (rc == -EAGAIN && s->now < s->rcpt_wait_until)
		return;
	/* the recipient is on the envelope already (cmd.c): it comes off
	 * unless the slot came or the message is held */
	s->phase = VR_SMTP_CMD;
	if (rc == 0) {
		s->n_cluster++;
		vr_smtp_reply(s, VR_R_RCPT_OK);
	} else if (rc == -EDQUOT && s->hold_over_quota) {
		access_hold(s);
		vr_smtp_reply(s, VR_R_RCPT_OK);
	} else {
		cluster_refuse(s, &cv);
		s->n_rcpt--;
	}
}

uint64_t vr_smtp_rcpt_wait_deadline(const struct vr_session *s)
{
	return VR_MIN(s->now + RCPT_POLL_MS, s->rcpt_wait_until);
}

static int access_rcpt(struct vr_session *s)
{
	struct vr_rl_verdict v;
	struct vr_rl_ticket ticket;

	if (!s->account[0]) {
		vr_smtp_reply(s, VR_R_RELAY_DENIED, s->client);
		return -1;
	}
	/* no windows: no limits (unit tests only); held: nothing to count;
	 * an account the operator exempted: nothing to enforce */
	if (!s->srv->rl || s->held || s->unlimited)
		return 0;
	int64_t now = (int64_t)(vr_clock_wall_us() / 1000000u);
	int rc = vr_rl_reserve(s->srv->rl, s->account, 1, now, &ticket, &v);
	if (rc == -EDQUOT)
		return access_over_quota(s, &v, now);
	if (rc < 0) {
		/* -ENOENT: the account left the windows' table on a reload
		 * while the session still had it. */
		vr_smtp_reply(s, VR_R_QUOTA_UNKNOWN, s->account);
		return -1;
	}
	/* one per recipient, and RCPT stops at max_recipients < slots */
	s->tickets[s->n_tickets++] = ticket;
	if (s->srv->cluster)
		return access_cluster(s) < 0 ? -1 : 0;
	return 0;
}

void vr_smtp_quota_end(struct vr_session *s, bool sent)
{
	for (unsigned i = 0; i < s->n_tickets; i++) {
		if (sent)
			vr_rl_confirm(s->srv->rl, s->account, &s->tickets[i]);
		else
			vr_rl_release(s->srv->rl, s->account, &s->tickets[i]);
	}
	if (s->n_cluster) {
		if (sent)
			vr_cluster_confirm(s->srv->cluster, s->account, s->n_cluster);
		else
			vr_cluster_release(s->srv->cluster, s->account, s->n_cluster);
	}
	s->n_tickets = 0;
	s->n_cluster = 0;
}

int vr_smtp_access(struct vr_session *s, enum vr_smtp_access_stage stage,
		   const struct vr_smtp_envcmd *cmd)
{
	switch (stage) {
	case VR_SMTP_ACCESS_MAIL:
		return access_mail(s, cmd);
	case VR_SMTP_ACCESS_RCPT:
		return access_rcpt(s);
	}
	return -1;
}

/* --- the header From --- */

/* The first domain of the From list the account may not use. */
struct from_check {
	const struct vr_account *acct;
	enum vr_may_send v;
	const uint8_t *domain;
	size_t len;
};

static void from_domain(void *arg, const uint8_t *domain, size_t len)
{
	struct from_check *fc = arg;

	if (fc->v != VR_SEND_OK)
		return;
	fc->v = vr_account_may_send(fc->acct, (const char *)domain, len);
	fc->domain = domain;
	fc->len = len;
}

static void deny(struct vr_session *s, enum vr_smtp_reply r, const uint8_t *text, size_t n,
		 const char *more)
{
	s->denied = true;
	s->deny = r;
	reply_text(s->smtputf8, s->deny_text, sizeof(s->deny_text), text, n);
	s->deny_more = more;
}

/* Why the header section was unusable, as the message's reply. */
static const enum vr_smtp_reply header_faults[] = {
	[VR_SMTP_HDR_NO_FROM] = VR_R_FROM_MISSING,
	[VR_SMTP_HDR_TWO_FROM] = VR_R_FROM_TWICE,
	[VR_SMTP_HDR_FROM_LONG] = VR_R_FROM_LONG,
	[VR_SMTP_HDR_BAD_LINE] = VR_R_HEADER_BAD_LINE,
};

void vr_smtp_access_header(struct vr_session *s, int rc)
{
	const struct vr_smtp_hdr *h = &s->hdr;
	struct from_check fc = { .v = VR_SEND_OK };
	const char *why = NULL;

	if (rc != VR_OK) {
		deny(s, header_faults[h->err], h->show, h->show_len, NULL);
		return;
	}
	rcu_read_lock();
	const struct vr_accounts *t = vr_policy_current();
	fc.acct = t ? vr_accounts_by_id(t, s->account) : NULL;
	if (fc.acct)
		rc = vr_smtp_from_parse(h->from, h->from_len, from_domain, &fc, &why);
	rcu_read_unlock();

	if (!fc.acct)
		deny(s, VR_R_RELAY_DENIED, (const uint8_t *)s->client, strlen(s->client), NULL);
	else if (rc != VR_OK)
		deny(s, VR_R_FROM_INVALID, h->from, h->from_len, why);
	else if (fc.v != VR_SEND_OK)
		deny(s, sender_reply(fc.v, true), fc.domain, fc.len, s->account);
}
