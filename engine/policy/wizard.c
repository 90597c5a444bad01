/*
 * wizard.c - the DNS wizard (wizard.h): the records a customer adds for a
 * domain, the ownership token, SPF merging, and the verdict on what DNS
 * answered for each record. No I/O but reading the secret once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "vmrelay/common.h"
#include "vmrelay/wizard.h"

#define SECRET_MAX 4096

struct vr_wizard {
	char spf_name[VR_DNS_NAME_MAX + 1];
	char key_zone[VR_DNS_NAME_MAX + 1];
	size_t secret_len;
	unsigned char secret[SECRET_MAX];
};

static const char *const kind_names[] = {
	[VR_WIZARD_SPF] = "spf", [VR_WIZARD_DKIM] = "dkim", [VR_WIZARD_AUTH] = "auth",
};

static const char *const verdict_names[] = {
	[VR_WIZARD_OK] = "ok", [VR_WIZARD_MISSING] = "missing",
	[VR_WIZARD_WRONG] = "wrong", [VR_WIZARD_UNKNOWN] = "unknown",
};

const char *vr_wizard_kind_name(enum vr_wizard_kind k)
{
	return (unsigned)k < VR_ARRAY_SIZE(kind_names) ? kind_names[k] : "?";
}

const char *vr_wizard_verdict_name(enum vr_wizard_verdict v)
{
	return (unsigned)v < VR_ARRAY_SIZE(verdict_names) ? verdict_names[v] : "?";
}

/* Copies a host name without its final dot, lower case. -1 if empty or too
 * long: config.c has checked the syntax already. */
static int copy_name(char *out, const char *in)
{
	size_t n = strlen(in);

	if (n > 0 && in[n - 1] == '.')
		n--;
	if (n == 0 || n > VR_DNS_NAME_MAX)
		return -1;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] + 32 : in[i]);
	out[n] = '\0';
	return 0;
}

/* Reads the secret; refuses a file others may read, since whoever has it
 * can prove ownership of any customer's domain. */
static int read_secret(struct vr_wizard *w, const char *path, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "secret_file %s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "secret_file %s: not a regular file", path);
		goto fail;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(err, errlen, "secret_file %s: readable by others (mode %04o)", path,
			 (unsigned)(st.st_mode & 07777));
		goto fail;
	}
	n = read(fd, w->secret, sizeof(w->secret));
	if (n < 0) {
		snprintf(err, errlen, "secret_file %s: %s", path, strerror(errno));
		goto fail;
	}
	if ((size_t)n == sizeof(w->secret)) {
		snprintf(err, errlen, "secret_file %s: longer than %d octets", path, SECRET_MAX - 1);
		goto fail;
	}
	/* `openssl rand -hex 32 > file` leaves a newline that is not secret */
	while (n > 0 && (w->secret[n - 1] == '\n' || w->secret[n - 1] == '\r'))
		n--;
	if (n < VR_WIZARD_SECRET_MIN) {
		snprintf(err, errlen, "secret_file %s: %zd octets, at least %d needed", path, n,
			 VR_WIZARD_SECRET_MIN);
		goto fail;
	}
	w->secret_len = (size_t)n;
	close(fd);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	return -1;
}

struct vr_wizard *vr_wizard_new(const char *spf_name, const char *key_zone,
				const char *secret_file, char *err, size_t errlen)
{
	struct vr_wizard *w = calloc(1, sizeof(*w));

	if (w == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (spf_name == NULL || copy_name(w->spf_name, spf_name) < 0) {
		snprintf(err, errlen, "[dns] spf_name is not set");
		goto fail;
	}
	if (key_zone == NULL || copy_name(w->key_zone, key_zone) < 0) {
		snprintf(err, errlen, "[dns] key_zone is not set");
		goto fail;
	}
	if (secret_file == NULL || *secret_file == '\0') {
		snprintf(err, errlen, "[dns] secret_file is not set");
		goto fail;
	}
	if (read_secret(w, secret_file, err, errlen) < 0)
		goto fail;
	return w;
fail:
	vr_wizard_free(w);
	return NULL;
}

void vr_wizard_free(struct vr_wizard *w)
{
	if (w == NULL)
		return;
	OPENSSL_cleanse(w->secret, sizeof(w->secret));
	free(w);
}

const struct vr_account *vr_wizard_account_of(const struct vr_accounts *t, const char *domain,
					      bool *verified)
{
	for (unsigned i = 0; i < vr_accounts_count(t); i++) {
		const struct vr_account *a = vr_accounts_at(t, i);

		for (unsigned d = 0; d < a->n_domains; d++) {
			if (strcasecmp(a->domains[d].name, domain) != 0)
				continue;
			if (verified)
				*verified = a->domains[d].verified;
			return a;
		}
	}
	return NULL;
}

/* The token's hex digits: HMAC(HMAC(secret, "vmrelay-account:" id), domain). */
static void auth_token(const struct vr_wizard *w, const char *id, const char *domain,
		       char hex[2 * 32 + 1])
{
	unsigned char key[32], mac[32];
	char label[sizeof("vmrelay-account:") + VR_ACCOUNT_ID_MAX];
	unsigned len = sizeof(key);
	int n = snprintf(label, sizeof(label), "vmrelay-account:%s", id);

	HMAC(EVP_sha256(), w->secret, (int)w->secret_len, (const unsigned char *)label,
	     (size_t)n, key, &len);
	len = sizeof(mac);
	HMAC(EVP_sha256(), key, sizeof(key), (const unsigned char *)domain, strlen(domain), mac,
	     &len);
	for (unsigned i = 0; i < sizeof(mac); i++)
		snprintf(hex + 2 * i, 3, "%02x", mac[i]);
	OPENSSL_cleanse(key, sizeof(key));
}

static struct vr_wizard_record *next_record(struct vr_wizard_record *out, unsigned max,
					    unsigned *n, enum vr_wizard_kind kind)
{
	if (*n >= max)
		return NULL;
	memset(&out[*n], 0, sizeof(out[0]));
	out[*n].kind = kind;
	return &out[(*n)++];
}

/* Did snprintf's n octets fit in len? Names near 253 octets may not fit
 * in a longer owner or target. */
static bool fits(size_t len, int n)
{
	return n >= 0 && (size_t)n < len;
}

int vr_wizard_records(const struct vr_wizard *w, const struct vr_account *acct,
		      const char *domain, struct vr_wizard_record *out, unsigned max,
		      char *err, size_t errlen)
{
	char d[VR_DNS_NAME_MAX + 1];
	const struct vr_dkim_domain *dk = NULL;
	struct vr_wizard_record *r;
	unsigned n = 0;

	if (copy_name(d, domain) < 0) {
		snprintf(err, errlen, "bad domain name '%s'", domain);
		return -1;
	}
	for (unsigned i = 0; i < acct->n_dkim && dk == NULL; i++)
		if (strcmp(acct->dkim[i].name, d) == 0)
			dk = &acct->dkim[i];

	if ((r = next_record(out, max, &n, VR_WIZARD_SPF)) == NULL)
		goto full;
	strcpy(r->name, d);
	if (!fits(sizeof(r->value), snprintf(r->value, sizeof(r->value), "v=spf1 include:%s ~all",
					     w->spf_name)))
		goto too_long;

	for (unsigned k = 0; dk && k < dk->n_keys; k++) {
		const char *sel = dk->keys[k].selector;

		if ((r = next_record(out, max, &n, VR_WIZARD_DKIM)) == NULL)
			goto full;
		r->cname = true;
		r->key = &dk->keys[k];
		if (!fits(sizeof(r->name),
			  snprintf(r->name, sizeof(r->name), "%s._domainkey.%s", sel, d)) ||
		    !fits(VR_DNS_NAME_MAX + 1,
			  snprintf(r->value, sizeof(r->value), "%s.%s.%s", sel, d, w->key_zone)))
			goto too_long;
	}

	if ((r = next_record(out, max, &n, VR_WIZARD_AUTH)) == NULL)
		goto full;
	if (!fits(sizeof(r->name), snprintf(r->name, sizeof(r->name), VR_WIZARD_AUTH_LABEL ".%s", d)))
		goto too_long;
	strcpy(r->value, VR_WIZARD_AUTH_PREFIX);
	auth_token(w, acct->id, d, r->value + strlen(VR_WIZARD_AUTH_PREFIX));
	return (int)n;
full:
	snprintf(err, errlen, "more than %u records for %s", max, d);
	return -1;
too_long:
	snprintf(err, errlen, "%s: a record name would exceed %d octets", d, VR_DNS_NAME_MAX);
	return -1;
}

/* --- SPF --- */

bool vr_wizard_is_spf(const char *text, size_t len)
{
	/* RFC 7208 4.5: "v=spf1" then a space or the end; case-insensitive */
	return len >= 6 && strncasecmp(text, "v=spf1", 6) == 0 && (len == 6 || text[6] == ' ');
}

/* Does the record hold the mechanism include:<name> (or +include:)? */
static bool spf_includes(const char *text, size_t len, const char *name)
{
	size_t nl = strlen(name), at = 0;

	while (at < len) {
		size_t end = at;

		while (end < len && text[end] != ' ')
			end++;
		const char *t = text + at;
		size_t tl = end - at;
		if (tl > 0 && *t == '+')
			t++, tl--;
		if (tl > 0 && t[tl - 1] == '.')
			tl--;
		if (tl == 8 + nl && strncasecmp(t, "include:", 8) == 0 &&
		    strncasecmp(t + 8, name, nl) == 0)
			return true;
		at = end + 1;
	}
	return false;
}

/* The SPF records among TXT answers: how many, and the first. */
static unsigned spf_records(const struct vr_txt_result *txt, const struct vr_txt_rr **first)
{
	unsigned n = 0;

	*first = NULL;
	if (txt == NULL || txt->status != VR_RESOLVE_OK)
		return 0;
	for (unsigned i = 0; i < txt->n; i++) {
		if (!vr_wizard_is_spf(txt->rr[i].text, txt->rr[i].len))
			continue;
		if (n++ == 0)
			*first = &txt->rr[i];
	}
	return n;
}

void vr_wizard_spf_advice(const struct vr_wizard *w, struct vr_wizard_record *spf,
			  const struct vr_txt_result *txt)
{
	const struct vr_txt_rr *rr;

	if (spf_records(txt, &rr) != 1)
		return;
	if (spf_includes(rr->text, rr->len, w->spf_name))
		snprintf(spf->value, sizeof(spf->value), "%.*s", (int)rr->len, rr->text);
	else    /* "v=spf1 include:NAME" and what followed "v=spf1" */
		snprintf(spf->value, sizeof(spf->value), "v=spf1 include:%s%.*s", w->spf_name,
			 (int)(rr->len - 6), rr->text + 6);
}

/* --- verdicts --- */

/*
 * A lookup without an answer decides the verdict alone: a temporary failure
 * leaves it open (with why), anything else (NXDOMAIN; NODATA, where the name
 * exists but holds no record of the type) is missing. True if it did.
 */
static bool judged_unanswered(struct vr_wizard_finding *f, enum vr_resolve_status status,
			      const char *why)
{
	f->found[0] = '\0';
	if (status == VR_RESOLVE_OK)
		return false;
	if (status == VR_RESOLVE_TEMPFAIL) {
		f->verdict = VR_WIZARD_UNKNOWN;
		snprintf(f->found, sizeof(f->found), "%s", why);
	} else {
		f->verdict = VR_WIZARD_MISSING;
	}
	return true;
}

void vr_wizard_judge_txt(const struct vr_wizard *w, const struct vr_wizard_record *rec,
			 const struct vr_txt_result *res, struct vr_wizard_finding *f)
{
	const struct vr_txt_rr *spf;
	unsigned n_spf;

	if (judged_unanswered(f, res->status, res->why))
		return;
	if (rec->kind == VR_WIZARD_SPF) {
		n_spf = spf_records(res, &spf);
		if (n_spf == 0) {
			f->verdict = VR_WIZARD_MISSING;
		} else if (n_spf > 1) {
			/* RFC 7208 4.5: more than one is a permerror for everyone */
			f->verdict = VR_WIZARD_WRONG;
			snprintf(f->found, sizeof(f->found),
				 "%u SPF records (receivers reject them all; keep one)", n_spf);
		} else {
			f->verdict = spf_includes(spf->text, spf->len, w->spf_name) ?
				VR_WIZARD_OK : VR_WIZARD_WRONG;
			snprintf(f->found, sizeof(f->found), "%.*s", (int)spf->len, spf->text);
		}
		return;
	}
	for (unsigned i = 0; i < res->n; i++) {
		if (res->rr[i].len == strlen(rec->value) &&
		    memcmp(res->rr[i].text, rec->value, res->rr[i].len) == 0) {
			f->verdict = VR_WIZARD_OK;
			snprintf(f->found, sizeof(f->found), "%s", rec->value);
			return;
		}
	}
	f->verdict = VR_WIZARD_WRONG;
	snprintf(f->found, sizeof(f->found), "%.*s", (int)res->rr[0].len, res->rr[0].text);
}

void vr_wizard_judge_cname(const struct vr_wizard_record *rec,
			   const struct vr_cname_result *res, struct vr_wizard_finding *f)
{
	if (judged_unanswered(f, res->status, res->why))
		return;
	f->verdict = strcasecmp(res->target, rec->value) == 0 ? VR_WIZARD_OK : VR_WIZARD_WRONG;
	snprintf(f->found, sizeof(f->found), "%s", res->target);
}
