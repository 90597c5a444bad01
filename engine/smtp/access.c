/*
 * access.c - who may relay: the one place MAIL and RCPT policy is decided.
 *
 * Never an open relay: MAIL is accepted only for a known VPS (by source
 * address, or the account it authenticated as), and RCPT re-checks that a
 * transaction has an account, so no path reaches RCPT or DATA without one.
 * Sender-domain rules and quotas hook in here too (a later issue), so the
 * decision stays in one function per stage.
 */
#include <string.h>
#include <urcu.h>

#include "vmrelay/policy.h"

#include "session.h"

/* Finds the account behind this client now (the table may have been
 * reloaded since the last transaction) and copies its id. */
static int access_mail(struct vr_session *s)
{
	const struct vr_account *acct = NULL;
	const struct vr_accounts *t;

	rcu_read_lock();
	t = vr_policy_current();
	if (t)
		acct = s->authed ? vr_accounts_by_id(t, s->auth_id)
				 : vr_accounts_by_addr(t, (const struct sockaddr *)&s->peer);
	if (acct)
		memcpy(s->account, acct->id, sizeof(s->account));
	rcu_read_unlock();

	if (!acct) {
		vr_smtp_reply(s, VR_R_RELAY_DENIED, s->client);
		return -1;
	}
	return 0;
}

int vr_smtp_access(struct vr_session *s, enum vr_smtp_access_stage stage,
		   const struct vr_smtp_envcmd *cmd)
{
	switch (stage) {
	case VR_SMTP_ACCESS_MAIL:
		return access_mail(s);
	case VR_SMTP_ACCESS_RCPT:
		if (!s->account[0]) {
			vr_smtp_reply(s, VR_R_RELAY_DENIED, s->client);
			return -1;
		}
		return 0;
	}
	return -1;
}
