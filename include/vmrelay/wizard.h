/*
 * wizard.h - the DNS wizard: the records a customer adds for a domain sent
 * through the relay, and the verdict on what DNS holds for each.
 *
 *   SPF    TXT   <domain>                       v=spf1 include:<spf_name> ~all
 *          (merged into the domain's own SPF record when it has one)
 *   DKIM   CNAME <sel>._domainkey.<domain>      <sel>.<domain>.<key_zone>
 *          one per selector the account signs the domain with; the relay's
 *          operator publishes the key's TXT at the target, so keys rotate
 *          without the customer touching DNS again
 *   AUTH   TXT   _vmrelay-auth.<domain>         vmrelay-auth=<64 hex digits>
 *
 * The ownership token is HMAC-SHA256(account key, domain) and the account
 * key is HMAC-SHA256(relay secret, "vmrelay-account:" + account id): only
 * the relay can compute it, it differs per account and per domain, and no
 * per-account secret has to be stored or handed out. The relay secret is
 * the content of [dns] secret_file, read once when the wizard is made.
 *
 * Everything here is pure: the lookups are the caller's (resolve.h), which
 * hands the answers to vr_wizard_judge_*(). Thread-safe once made.
 */
#ifndef VR_WIZARD_H
#define VR_WIZARD_H

#include <stdbool.h>
#include <stddef.h>

#include "vmrelay/policy.h"
#include "vmrelay/resolve.h"

#define VR_WIZARD_VALUE_MAX 512   /* a TXT value or CNAME target we print */
#define VR_WIZARD_SECRET_MIN 16   /* octets of secret_file, at least */
#define VR_WIZARD_AUTH_LABEL "_vmrelay-auth"
#define VR_WIZARD_AUTH_PREFIX "vmrelay-auth="

enum vr_wizard_kind { VR_WIZARD_SPF, VR_WIZARD_DKIM, VR_WIZARD_AUTH };

struct vr_wizard_record {
	enum vr_wizard_kind kind;
	bool cname;                        /* a CNAME; else a TXT */
	char name[VR_DNS_NAME_MAX + 1];    /* owner, no final dot */
	char value[VR_WIZARD_VALUE_MAX];   /* TXT text, or CNAME target without final dot */
	const struct vr_dkim_key *key;     /* DKIM: the key, valid while the table is */
};

enum vr_wizard_verdict {
	VR_WIZARD_OK,
	VR_WIZARD_MISSING,
	VR_WIZARD_WRONG,                   /* something else is there: found says what */
	VR_WIZARD_UNKNOWN,                 /* DNS did not answer: found says why */
};

struct vr_wizard_finding {
	enum vr_wizard_verdict verdict;
	char found[VR_RESOLVE_WHY_MAX + VR_WIZARD_VALUE_MAX];
};

struct vr_wizard;

/*
 * spf_name and key_zone are host names ([dns] spf_name, key_zone), secret_file
 * a file of at least VR_WIZARD_SECRET_MIN octets (a trailing newline is not
 * part of it) that only its owner may read. NULL with err, e.g.
 * "secret_file /etc/vmrelay/dns.secret: readable by others (mode 0644)".
 */
struct vr_wizard *vr_wizard_new(const char *spf_name, const char *key_zone,
				const char *secret_file, char *err, size_t errlen);
/* Wipes the secret. NULL is a no-op. */
void vr_wizard_free(struct vr_wizard *w);

/* "spf", "dkim", "auth" / "ok", "missing", "wrong", "unknown". */
const char *vr_wizard_kind_name(enum vr_wizard_kind k);
const char *vr_wizard_verdict_name(enum vr_wizard_verdict v);

/* The account listing domain (ASCII case ignored), the first in file order,
 * and whether it lists it as verified. NULL if none does. */
const struct vr_account *vr_wizard_account_of(const struct vr_accounts *t, const char *domain,
					      bool *verified);

/*
 * The records for domain of acct into out[max]: SPF first, a DKIM CNAME per
 * selector of acct for domain, the ownership TXT last. The SPF value is the
 * plain record; vr_wizard_spf_advice() turns it into merged advice. Returns
 * how many, or -1 with err (a bad domain name, max too small).
 */
int vr_wizard_records(const struct vr_wizard *w, const struct vr_account *acct,
		      const char *domain, struct vr_wizard_record *out, unsigned max,
		      char *err, size_t errlen);

/* True if text is an SPF record ("v=spf1" alone or followed by a space). */
bool vr_wizard_is_spf(const char *text, size_t len);

/*
 * Given the TXT records at the domain, sets spf->value to what to publish:
 * the plain record when there is no SPF record, the existing one if it
 * already includes spf_name, else the existing one with include:<spf_name>
 * right after "v=spf1" (ahead of its "all", so it counts). Leaves the value
 * alone for anything but an answer with exactly one SPF record.
 */
void vr_wizard_spf_advice(const struct vr_wizard *w, struct vr_wizard_record *spf,
			  const struct vr_txt_result *txt);

/* The verdict on one record, from the TXT answer at its name (SPF, AUTH) or
 * the CNAME answer (DKIM). */
void vr_wizard_judge_txt(const struct vr_wizard *w, const struct vr_wizard_record *rec,
			 const struct vr_txt_result *res, struct vr_wizard_finding *f);
void vr_wizard_judge_cname(const struct vr_wizard_record *rec,
			   const struct vr_cname_result *res, struct vr_wizard_finding *f);

#endif
