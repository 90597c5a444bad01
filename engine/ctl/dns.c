/*
 * dns.c - the DNS wizard's control commands (issue 6):
 *
 *   dns-records DOMAIN   the records the customer adds (wizard.h), SPF
 *                        merged into the domain's SPF record if it has one,
 *                        and for each DKIM CNAME the TXT the relay's
 *                        operator publishes at its target; as JSON and as
 *                        zone-file snippets
 *   dns-check DOMAIN     each record looked up and judged: ok, missing,
 *                        wrong (with what was found) or unknown (DNS failed);
 *                        a domain pending its check ("verified": false in
 *                        the accounts file) whose records all check out is
 *                        marked "verified": true there, and the relay
 *                        reloads: it may send from then on
 *
 * Un-verifying. A verified domain whose records DNS definitely answers
 * wrong or missing (not a lookup that failed: that says nothing) stays
 * verified at first: DNS flaps, a customer's provider breaks a zone for an
 * hour, and stopping their mail at once would punish the wrong party. Each
 * such check is counted on the domain in the accounts file ("check_failures",
 * "failing_since"), logged (event=dns_check_failing) and shown in the reply;
 * once [dns] unverify_checks checks in a row have failed, the first at least
 * unverify_after_s ago, the domain is marked "verified": false
 * (event=dns_unverified) and the relay reloads: its mail is refused until a
 * check passes again. A check that passes clears the count.
 *
 * Verification is recorded in the accounts file because that file is the one
 * source of truth for who may send what (acctfile.c): it survives restarts
 * and reloads, the provider's panel and `account show` see it, and the
 * workers see it the moment the reloaded table is published, with no state
 * of the wizard's own to keep in step.
 *
 * The lookups block the control thread, at most [delivery] dns_timeout_ms:
 * an operator's command may wait, and a resolver of the command's own keeps
 * the delivery thread's out of it. What the answers are judged against is
 * copied out of the accounts table first, and the thread is RCU-offline
 * while it waits, so no grace period (a reload) waits for DNS.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <urcu-qsbr.h>

#include "ctl_impl.h"
#include "vmrelay/buf.h"
#include "vmrelay/dkim.h"
#include "vmrelay/log.h"
#include "vmrelay/policy.h"
#include "vmrelay/resolve.h"
#include "vmrelay/wizard.h"

#define MAX_RECORDS 18            /* SPF, AUTH and up to 16 DKIM selectors */
#define DKIM_TXT_MAX 1024         /* "v=DKIM1; k=rsa; p=" + a 4096-bit key's base64 */
#define WAIT_MARGIN_MS 1000       /* past the resolver's own per-query deadline */

/* One record and what DNS said about it. */
struct item {
	struct vr_wizard_record rec;
	char dkim_txt[DKIM_TXT_MAX];  /* DKIM: what the operator publishes at the target */
	struct vr_txt_result *txt;
	struct vr_cname_result *cname;
};

struct job {
	char domain[VR_DNS_NAME_MAX + 1];
	char account[VR_ACCOUNT_ID_MAX];
	bool verified;
	unsigned n;
	struct item items[MAX_RECORDS];
	struct vr_txt_result *domain_txt;  /* TXT at the domain: the SPF advice's input */
};

int vr_ctl_dns_init(struct vr_ctl *c, char *err, size_t errlen)
{
	const struct vr_config *cfg = c->ops.cfg;

	/* The wizard is optional; half a [dns] section is a mistake. */
	if (!cfg->dns_spf_name[0] && !cfg->dns_key_zone[0] && !cfg->dns_secret_file[0])
		return 0;
	c->wizard = vr_wizard_new(cfg->dns_spf_name, cfg->dns_key_zone, cfg->dns_secret_file,
				  err, errlen);
	return c->wizard ? 0 : -1;
}

/* The key's TXT; a table loaded without its keys (pkey NULL) has it read. */
static void dkim_txt(const struct vr_dkim_key *k, char *out, size_t len)
{
	struct vr_buf b;
	struct vr_dkim_key tmp = *k;
	char err[256];
	int rc;

	vr_buf_init(&b, len - 1);
	tmp.pkey = NULL;
	if (k->pkey)
		rc = vr_dkim_key_txt(k, &b);
	else if ((rc = vr_dkim_key_load(&tmp, err, sizeof(err))) == 0)
		rc = vr_dkim_key_txt(&tmp, &b);
	if (rc == 0)
		snprintf(out, len, "%.*s", (int)vr_buf_len(&b), (const char *)vr_buf_head(&b));
	else
		snprintf(out, len, "(the key %s cannot be read: %s)", k->key,
			 k->pkey ? strerror(-rc) : err);
	vr_dkim_key_unload(&tmp);
	vr_buf_free(&b);
}

/* Copies the records of domain out of the current table. */
static int job_prepare(struct vr_ctl *c, const char *domain, struct job *j, char *err,
		       size_t errlen)
{
	struct vr_wizard_record recs[MAX_RECORDS];
	int n = -1;

	if (c->wizard == NULL) {
		snprintf(err, errlen, "the DNS wizard is off: set [dns] spf_name, key_zone and "
			 "secret_file");
		return -1;
	}
	rcu_read_lock();
	const struct vr_accounts *t = vr_policy_current();
	const struct vr_account *a = t ? vr_wizard_account_of(t, domain, &j->verified) : NULL;
	if (a == NULL) {
		snprintf(err, errlen, "no account lists the domain '%s'", domain);
	} else {
		n = vr_wizard_records(c->wizard, a, domain, recs, MAX_RECORDS, err, errlen);
		snprintf(j->account, sizeof(j->account), "%s", a->id);
		for (int i = 0; i < n; i++) {
			j->items[i].rec = recs[i];
			if (recs[i].kind == VR_WIZARD_DKIM)
				dkim_txt(recs[i].key, j->items[i].dkim_txt,
					 sizeof(j->items[i].dkim_txt));
			/* the key lives in the table: not past the unlock */
			j->items[i].rec.key = NULL;
		}
	}
	rcu_read_unlock();
	if (n < 0)
		return -1;
	j->n = (unsigned)n;
	snprintf(j->domain, sizeof(j->domain), "%s", recs[0].name);   /* SPF's: the domain */
	return 0;
}

static void got_txt(void *arg, struct vr_txt_result *res)
{
	*(struct vr_txt_result **)arg = res;
}

static void got_cname(void *arg, struct vr_cname_result *res)
{
	*(struct vr_cname_result **)arg = res;
}

/* Looks up the domain's TXT and, with check, every record; waits for all. */
static int job_lookup(struct vr_ctl *c, struct job *j, bool check, char *err, size_t errlen)
{
	const struct vr_config *cfg = c->ops.cfg;
	struct vr_resolver_conf rc = { .server = cfg->resolver, .trust_anchor = cfg->trust_anchor,
				       .timeout_ms = cfg->dns_timeout_ms };
	struct vr_resolver *r = vr_resolver_new(&rc, err, errlen);
	int e = 0;

	if (r == NULL)
		return -1;
	e = vr_resolve_txt(r, j->domain, got_txt, &j->domain_txt);
	for (unsigned i = 0; check && i < j->n && e == 0; i++) {
		struct item *it = &j->items[i];

		if (it->rec.kind == VR_WIZARD_SPF)
			continue;      /* judged on domain_txt */
		e = it->rec.cname ? vr_resolve_cname(r, it->rec.name, got_cname, &it->cname) :
			vr_resolve_txt(r, it->rec.name, got_txt, &it->txt);
	}
	if (e < 0) {
		snprintf(err, errlen, "cannot look up %s: %s", j->domain, strerror(-e));
	} else {
		rcu_thread_offline();
		/* every query ends by its own deadline, so none is left but
		 * after a failure of the resolver itself */
		if (vr_resolver_wait(r, rc.timeout_ms + WAIT_MARGIN_MS) > 0) {
			snprintf(err, errlen, "the resolver failed while looking up %s", j->domain);
			e = -EIO;
		}
		rcu_thread_online();
	}
	vr_resolver_free(r);      /* drops what is still out after an error */
	return e < 0 ? -1 : 0;
}

static void job_free(struct job *j)
{
	vr_resolve_free(j->domain_txt);
	for (unsigned i = 0; i < j->n; i++) {
		vr_resolve_free(j->items[i].txt);
		vr_resolve_free(j->items[i].cname);
	}
}

/* A TXT value in zone-file form: quoted, '"' and '\' escaped, split into
 * strings of at most 255 octets (RFC 1035 3.3.14). */
static void zone_txt(struct vr_buf *b, const char *text)
{
	size_t n = strlen(text), at = 0;

	do {
		size_t end = VR_MIN(n, at + 255);

		vr_buf_printf(b, "%s\"", at ? " " : "");
		for (; at < end; at++) {
			if (text[at] == '"' || text[at] == '\\')
				vr_buf_append(b, "\\", 1);
			vr_buf_append(b, &text[at], 1);
		}
		vr_buf_append(b, "\"", 1);
	} while (at < n);
}

static void zone_line(struct vr_buf *b, const char *name, bool cname, const char *value)
{
	vr_buf_printf(b, "%s. 3600 IN %s ", name, cname ? "CNAME" : "TXT");
	if (cname)
		vr_buf_printf(b, "%s.", value);
	else
		zone_txt(b, value);
	vr_buf_append(b, "\n", 1);
}

static void set_text(json_t *o, const char *key, struct vr_buf *b)
{
	json_object_set_new(o, key, json_stringn((const char *)vr_buf_head(b), vr_buf_len(b)));
}

static json_t *record_json(const struct item *it)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "kind", vr_wizard_kind_name(it->rec.kind),
			      "name", it->rec.name, "type", it->rec.cname ? "CNAME" : "TXT",
			      "value", it->rec.value);

	if (it->rec.kind == VR_WIZARD_DKIM)
		json_object_set_new(o, "target_txt", json_string(it->dkim_txt));
	return o;
}

static void reply_head(json_t *reply, const struct job *j)
{
	json_object_set_new(reply, "domain", json_string(j->domain));
	json_object_set_new(reply, "account", json_string(j->account));
	json_object_set_new(reply, "verified", json_boolean(j->verified));
}

int vr_ctl_dns_records(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
		       size_t errlen)
{
	struct job *j = calloc(1, sizeof(*j));
	json_t *recs = json_array();
	struct vr_buf zone, op;
	int rc = -1;

	if (j == NULL) {
		snprintf(err, errlen, "out of memory");
		json_decref(recs);
		return -1;
	}
	vr_buf_init(&zone, 64 * 1024);
	vr_buf_init(&op, 64 * 1024);
	if (job_prepare(c, argv[0], j, err, errlen) < 0 || job_lookup(c, j, false, err, errlen) < 0)
		goto out;
	if (j->domain_txt->status == VR_RESOLVE_TEMPFAIL)
		json_object_set_new(reply, "note", json_sprintf(
			"the domain's SPF record could not be read (%s): merge by hand if it has one",
			j->domain_txt->why));
	for (unsigned i = 0; i < j->n; i++) {
		struct item *it = &j->items[i];

		if (it->rec.kind == VR_WIZARD_SPF)
			vr_wizard_spf_advice(c->wizard, &it->rec, j->domain_txt);
		json_array_append_new(recs, record_json(it));
		zone_line(&zone, it->rec.name, it->rec.cname, it->rec.value);
		if (it->rec.kind == VR_WIZARD_DKIM)
			zone_line(&op, it->rec.value, false, it->dkim_txt);
	}
	reply_head(reply, j);
	json_object_set_new(reply, "records", recs);
	recs = NULL;
	set_text(reply, "zone", &zone);
	set_text(reply, "operator_zone", &op);
	rc = 0;
out:
	json_decref(recs);
	vr_buf_free(&zone);
	vr_buf_free(&op);
	job_free(j);
	free(j);
	return rc;
}

/* The pending domain arg of an account's line: "verified" becomes true. */
static int mark_verified(json_t *obj, void *arg, char *err, size_t errlen)
{
	const char *domain = arg;
	json_t *d;
	size_t i;

	json_array_foreach(json_object_get(obj, "domains"), i, d) {
		const char *name = json_string_value(json_object_get(d, "name"));

		if (name && strcasecmp(name, domain) == 0)
			return json_object_set_new(d, "verified", json_true());
	}
	snprintf(err, errlen, "the account no longer lists %s as pending", domain);
	return -1;
}

/* Reloads after j's domain was marked as (verified or unverified) in the
 * accounts file; a failure goes to reply's verify_error. 0 or -1. */
static int reload(struct vr_ctl *c, const struct job *j, const char *as, json_t *reply)
{
	char why[1024];

	if (c->ops.reload && c->ops.reload(c->ops.arg, why, sizeof(why)) >= 0)
		return 0;
	json_object_set_new(reply, "verify_error", json_sprintf(
		"%s marks %s %s, but the reload failed: %s", c->ops.cfg->accounts, j->domain, as,
		c->ops.reload ? why : "this relay cannot reload"));
	return -1;
}

/* All records check out for a pending domain: record it, then reload. */
static void verify(struct vr_ctl *c, const struct job *j, json_t *reply)
{
	char why[1024];

	if (vr_ctl_accounts_edit(c, j->account, mark_verified, (void *)j->domain, why,
				 sizeof(why)) < 0) {
		json_object_set_new(reply, "verify_error", json_string(why));
		return;
	}
	vr_log_info("event=dns_verified domain=%s account=%s", j->domain, j->account);
	if (reload(c, j, "verified", reply) < 0)
		return;
	json_object_set_new(reply, "verified", json_true());
	json_object_set_new(reply, "verified_now", json_true());
}

/* What one dns-check of a verified domain does to its line. */
struct recheck {
	const char *domain;
	bool failed;                  /* in: some record definitely wrong or missing */
	long long now;
	unsigned max_checks, after_s; /* [dns] unverify_checks, unverify_after_s */
	bool unverified;              /* out */
	long long checks, since;      /* out: the count after this check */
};

/* The domain's entry in an account's "domains", an object (a plain name is
 * made one); NULL if the line no longer lists it. */
static json_t *domain_entry(json_t *obj, const char *domain)
{
	json_t *domains = json_object_get(obj, "domains"), *d;
	size_t i;

	json_array_foreach(domains, i, d) {
		const char *name = json_is_string(d) ? json_string_value(d) :
				   json_string_value(json_object_get(d, "name"));
		if (!name || strcasecmp(name, domain) != 0)
			continue;
		if (json_is_string(d)) {
			json_t *o = json_pack("{s:s}", "name", name);
			if (!o || json_array_set_new(domains, i, o) < 0)
				return NULL;
			return o;
		}
		return d;
	}
	return NULL;
}

/* Counts a failed check, un-verifies, or clears the count (vr_ctl_accounts_edit's
 * fn). Returns -1 with err empty when there is nothing to write. */
static int note_recheck(json_t *obj, void *arg, char *err, size_t errlen)
{
	struct recheck *rc = arg;
	json_t *d = domain_entry(obj, rc->domain);

	err[0] = '\0';
	if (!d || json_is_false(json_object_get(d, "verified")))
		return -1;            /* gone or pending meanwhile: not ours to count */
	json_t *n = json_object_get(d, "check_failures");
	json_t *since = json_object_get(d, "failing_since");
	if (!rc->failed) {
		if (!n && !since)
			return -1;
		json_object_del(d, "check_failures");
		json_object_del(d, "failing_since");
		return 0;
	}
	rc->checks = (n ? json_integer_value(n) : 0) + 1;
	rc->since = since ? json_integer_value(since) : rc->now;
	if (rc->checks >= rc->max_checks && rc->now - rc->since >= rc->after_s) {
		json_object_del(d, "check_failures");
		json_object_del(d, "failing_since");
		json_object_set_new(d, "verified", json_false());
		rc->unverified = true;
	} else {
		json_object_set_new(d, "check_failures", json_integer(rc->checks));
		json_object_set_new(d, "failing_since", json_integer(rc->since));
	}
	return 0;
}

/* A verified domain was checked: its failures counted or cleared, and it
 * is un-verified when they reach the limits; then the relay reloads. */
static void recheck(struct vr_ctl *c, const struct job *j, bool failed, json_t *reply)
{
	const struct vr_config *cfg = c->ops.cfg;
	struct recheck rc = {
		.domain = j->domain, .failed = failed, .now = (long long)time(NULL),
		.max_checks = cfg->dns_unverify_checks, .after_s = cfg->dns_unverify_after_s,
	};
	char why[1024];

	if (vr_ctl_accounts_edit(c, j->account, note_recheck, &rc, why, sizeof(why)) < 0) {
		if (why[0])
			json_object_set_new(reply, "verify_error", json_string(why));
		return;
	}
	if (!failed)
		return;
	if (!rc.unverified) {
		vr_log_warn("event=dns_check_failing domain=%s account=%s checks=%lld since=%lld "
			    "unverify_checks=%u unverify_after_s=%u", j->domain, j->account,
			    rc.checks, rc.since, rc.max_checks, rc.after_s);
		json_object_set_new(reply, "failing", json_pack(
			"{s:I, s:I, s:I, s:I}", "checks", (json_int_t)rc.checks, "since",
			(json_int_t)rc.since, "unverify_checks", (json_int_t)rc.max_checks,
			"unverify_after_s", (json_int_t)rc.after_s));
		return;
	}
	vr_log_warn("event=dns_unverified domain=%s account=%s checks=%lld since=%lld",
		    j->domain, j->account, rc.checks, rc.since);
	if (reload(c, j, "unverified", reply) < 0)
		return;
	json_object_set_new(reply, "verified", json_false());
	json_object_set_new(reply, "unverified_now", json_true());
}

int vr_ctl_dns_check(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
		     size_t errlen)
{
	struct job *j = calloc(1, sizeof(*j));
	json_t *recs = json_array();
	bool all_ok = true, failed = false;
	int rc = -1;

	if (j == NULL) {
		snprintf(err, errlen, "out of memory");
		json_decref(recs);
		return -1;
	}
	if (job_prepare(c, argv[0], j, err, errlen) < 0 || job_lookup(c, j, true, err, errlen) < 0)
		goto out;
	for (unsigned i = 0; i < j->n; i++) {
		struct item *it = &j->items[i];
		struct vr_wizard_finding f;
		json_t *o;

		if (it->rec.kind == VR_WIZARD_SPF) {
			vr_wizard_judge_txt(c->wizard, &it->rec, j->domain_txt, &f);
			vr_wizard_spf_advice(c->wizard, &it->rec, j->domain_txt);
		} else if (it->rec.cname) {
			vr_wizard_judge_cname(&it->rec, it->cname, &f);
		} else {
			vr_wizard_judge_txt(c->wizard, &it->rec, it->txt, &f);
		}
		all_ok &= f.verdict == VR_WIZARD_OK;
		failed |= f.verdict == VR_WIZARD_MISSING || f.verdict == VR_WIZARD_WRONG;
		o = record_json(it);
		json_object_set_new(o, "verdict", json_string(vr_wizard_verdict_name(f.verdict)));
		if (f.found[0])
			json_object_set_new(o, "found", json_string(f.found));
		json_array_append_new(recs, o);
	}
	reply_head(reply, j);
	json_object_set_new(reply, "all_ok", json_boolean(all_ok));
	json_object_set_new(reply, "records", recs);
	recs = NULL;
	vr_log_info("event=ctl_dns_check domain=%s account=%s all_ok=%s", j->domain, j->account,
		    all_ok ? "yes" : "no");
	if (all_ok && !j->verified)
		verify(c, j, reply);
	else if (j->verified && (all_ok || failed))
		recheck(c, j, failed, reply);
	rc = 0;
out:
	json_decref(recs);
	job_free(j);
	free(j);
	return rc;
}
