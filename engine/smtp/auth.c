/*
 * auth.c - SMTP AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN, only ever
 * offered under TLS. The user name is the account id, the password its
 * token; vr_accounts_by_token() compares in constant time. The token is
 * wiped from our buffers after use and never logged.
 */
#include <string.h>
#include <strings.h>
#include <urcu-qsbr.h>

#include "vmrelay/log.h"
#include "vmrelay/policy.h"

#include "session.h"

/* A decoded response: a 512-octet line holds at most 384 octets. */
#define AUTH_MAX ((VR_SMTP_LINE_MAX / 4) * 3)

static int b64_value(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Strict RFC 4648 base64: padded, nothing but the alphabet. Returns the
 * decoded length or -1. "=" alone is RFC 4954's empty response. */
static ssize_t b64_decode(const uint8_t *p, size_t n, uint8_t *out, size_t cap)
{
	size_t o = 0;

	if (n == 1 && p[0] == '=')
		return 0;
	if (n % 4 || n / 4 * 3 > cap)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		size_t pad = 0;
		for (size_t k = 0; k < 4; k++) {
			/* '=' only in the last two places of the last quantum */
			if (p[i + k] == '=' && i + 4 == n && k >= 2 && (k == 3 || p[i + 3] == '=')) {
				v[k] = 0;
				pad++;
			} else if ((v[k] = b64_value(p[i + k])) < 0 || pad) {
				return -1;
			}
		}
		uint32_t q = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		out[o++] = (uint8_t)(q >> 16);
		if (pad < 2)
			out[o++] = (uint8_t)(q >> 8);
		if (pad < 1)
			out[o++] = (uint8_t)q;
	}
	return (ssize_t)o;
}

static ssize_t auth_decode(struct vr_session *s, const uint8_t *p, size_t n, uint8_t *out)
{
	ssize_t len = b64_decode(p, n, out, AUTH_MAX);

	if (len < 0)
		vr_smtp_reply(s, VR_R_AUTH_BASE64);
	return len;
}

static void auth_verify(struct vr_session *s, const char *user, const uint8_t *token, size_t len)
{
	const struct vr_account *acct = NULL;
	const struct vr_accounts *t;

	rcu_read_lock();
	t = vr_policy_current();
	if (t && *user)
		acct = vr_accounts_by_token(t, user, token, len);
	if (acct)
		memcpy(s->auth_id, acct->id, sizeof(s->auth_id));
	rcu_read_unlock();

	if (!acct) {
		vr_smtp_reply(s, VR_R_AUTH_FAILED);
		return;
	}
	s->authed = true;
	vr_log_info("event=auth client=%s account=%s", s->client, s->auth_id);
	vr_smtp_reply(s, VR_R_AUTH_OK);
}

/* A user name as a C string, or false if it cannot be an account id. */
static bool auth_user(char *out, const uint8_t *p, size_t n)
{
	if (n == 0 || n >= VR_ACCOUNT_ID_MAX || memchr(p, '\0', n))
		return false;
	memcpy(out, p, n);
	out[n] = '\0';
	return true;
}

/* RFC 4616: [authzid] NUL authcid NUL passwd; authzid, if any, = authcid. */
static void plain_response(struct vr_session *s, const uint8_t *p, size_t n)
{
	uint8_t buf[AUTH_MAX];
	char user[VR_ACCOUNT_ID_MAX];
	ssize_t len = auth_decode(s, p, n, buf);

	if (len < 0)
		return;
	const uint8_t *nul1 = memchr(buf, '\0', (size_t)len);
	const uint8_t *nul2 = nul1 ? memchr(nul1 + 1, '\0', (size_t)(buf + len - nul1 - 1)) : NULL;
	if (!nul2) {
		vr_smtp_reply(s, VR_R_AUTH_BASE64);
	} else {
		size_t zlen = (size_t)(nul1 - buf), clen = (size_t)(nul2 - nul1 - 1);
		const uint8_t *pass = nul2 + 1;
		size_t plen = (size_t)(buf + len - pass);
		bool ok = auth_user(user, nul1 + 1, clen) &&
			  (zlen == 0 || (zlen == clen && memcmp(buf, nul1 + 1, clen) == 0));
		if (ok)
			auth_verify(s, user, pass, plen);
		else
			vr_smtp_reply(s, VR_R_AUTH_FAILED);
	}
	explicit_bzero(buf, sizeof(buf));
}

static void login_user(struct vr_session *s, const uint8_t *p, size_t n)
{
	uint8_t buf[AUTH_MAX];
	ssize_t len = auth_decode(s, p, n, buf);

	if (len < 0)
		return;
	/* A bad name still gets the password prompt: the answer to a wrong
	 * name and to a wrong password must not differ. */
	if (!auth_user(s->auth_user, buf, (size_t)len))
		s->auth_user[0] = '\0';
	s->auth_step = VR_SMTP_AUTH_LOGIN_PASS;
	s->phase = VR_SMTP_AUTH;
	vr_smtp_printf(s, "334 UGFzc3dvcmQ6");   /* "Password:" */
}

static void login_pass(struct vr_session *s, const uint8_t *p, size_t n)
{
	uint8_t buf[AUTH_MAX];
	ssize_t len = auth_decode(s, p, n, buf);

	if (len >= 0)
		auth_verify(s, s->auth_user, buf, (size_t)len);
	explicit_bzero(buf, sizeof(buf));
	s->auth_user[0] = '\0';
}

static void plain_start(struct vr_session *s, const uint8_t *ir, size_t n, bool has_ir)
{
	if (has_ir) {
		plain_response(s, ir, n);
		return;
	}
	s->auth_step = VR_SMTP_AUTH_PLAIN;
	s->phase = VR_SMTP_AUTH;
	vr_smtp_printf(s, "334 ");
}

static void login_start(struct vr_session *s, const uint8_t *ir, size_t n, bool has_ir)
{
	if (has_ir) {
		login_user(s, ir, n);
		return;
	}
	s->auth_step = VR_SMTP_AUTH_LOGIN_USER;
	s->phase = VR_SMTP_AUTH;
	vr_smtp_printf(s, "334 VXNlcm5hbWU6");   /* "Username:" */
}

static const struct {
	const char *name;
	void (*start)(struct vr_session *s, const uint8_t *ir, size_t n, bool has_ir);
} mechanisms[] = {
	{ "PLAIN", plain_start },
	{ "LOGIN", login_start },
};

void vr_smtp_auth_start(struct vr_session *s, const uint8_t *arg, size_t len)
{
	const uint8_t *sp = memchr(arg, ' ', len);
	size_t mlen = sp ? (size_t)(sp - arg) : len;

	for (size_t i = 0; i < VR_ARRAY_SIZE(mechanisms); i++) {
		if (strlen(mechanisms[i].name) != mlen ||
		    strncasecmp(mechanisms[i].name, (const char *)arg, mlen) != 0)
			continue;
		if (!sp) {
			mechanisms[i].start(s, NULL, 0, false);
			return;
		}
		const uint8_t *ir = sp + 1;
		mechanisms[i].start(s, ir, (size_t)(arg + len - ir), true);
		return;
	}
	vr_smtp_reply(s, VR_R_AUTH_MECH);
}

void vr_smtp_auth_line(struct vr_session *s, const uint8_t *p, size_t n)
{
	s->phase = VR_SMTP_CMD;
	if (n == 1 && p[0] == '*') {
		s->auth_user[0] = '\0';
		vr_smtp_reply(s, VR_R_AUTH_CANCELLED);
		return;
	}
	/* A continuation line has no "=" convention: empty is empty. */
	if (n == 0)
		p = (const uint8_t *)"=", n = 1;
	switch (s->auth_step) {
	case VR_SMTP_AUTH_PLAIN:
		plain_response(s, p, n);
		break;
	case VR_SMTP_AUTH_LOGIN_USER:
		login_user(s, p, n);
		break;
	case VR_SMTP_AUTH_LOGIN_PASS:
		login_pass(s, p, n);
		break;
	}
}
