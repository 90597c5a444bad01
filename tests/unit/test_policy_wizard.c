/*
 * test_policy_wizard.c - the DNS wizard's records and verdicts
 * (engine/policy/wizard.c) on accounts loaded from a real file and on
 * resolver answers built by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmrelay/common.h"
#include "vmrelay/wizard.h"

static const char accounts[] =
	"{\"id\":\"vps1\",\"ips\":[\"192.0.2.1\"],"
	"\"domains\":[\"example.com\",{\"name\":\"Pending.example\",\"verified\":false}],"
	"\"dkim\":{\"example.com\":[{\"selector\":\"ed1\",\"algorithm\":\"ed25519-sha256\","
	"\"key\":\"" DKIM_TESTDATA "/ed25519.pem\"},{\"selector\":\"rsa1\","
	"\"algorithm\":\"rsa-sha256\",\"key\":\"" DKIM_TESTDATA "/rsa2048.pem\"}]}}\n"
	"{\"id\":\"vps2\",\"ips\":[\"192.0.2.2\"],\"domains\":[\"example.org\",\"example.com\"]}\n";

#define SECRET "0123456789abcdef0123456789abcdef"

/* HMAC(HMAC(SECRET, "vmrelay-account:vps1"), "example.com"), from Python's
 * hmac module: the token is a documented function, not whatever C computes. */
#define TOKEN_VPS1 "7b80d436742012e1fc7448daf973a53fbfb4ca0df85d91a4554e7e48f45d2525"
#define TOKEN_VPS2 "c513b84ce0d617a7035b1cfb0e1a64cf49288206a73a96c48d5f307d9f398a6c"

struct fixture {
	struct vr_accounts *t;
	struct vr_wizard *w;
};

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
}

static struct vr_wizard *wizard_with(const char *secret, mode_t mode, char *err, size_t errlen)
{
	char path[] = "/tmp/vr_test_wizard.XXXXXX";
	int fd = mkstemp(path);
	struct vr_wizard *w;

	assert_true(fd >= 0);
	close(fd);
	write_file(path, secret, mode);
	w = vr_wizard_new("SPF.Relay.Example.", "keys.relay.example", path, err, errlen);
	unlink(path);
	return w;
}

static int setup(void **state)
{
	static struct fixture fx;
	char path[] = "/tmp/vr_test_wizard_acc.XXXXXX", err[256];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	close(fd);
	write_file(path, accounts, 0600);
	fx.t = vr_accounts_load(path, 1000, err, sizeof(err));
	unlink(path);
	if (fx.t == NULL)
		fail_msg("%s", err);
	fx.w = wizard_with(SECRET "\n", 0600, err, sizeof(err));
	if (fx.w == NULL)
		fail_msg("%s", err);
	*state = &fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	vr_wizard_free(fx->w);
	vr_accounts_free(fx->t);
	return 0;
}

static void test_records(void **state)
{
	struct fixture *fx = *state;
	struct vr_wizard_record r[8];
	char err[256];
	const struct vr_account *a = vr_accounts_by_id(fx->t, "vps1");
	int n = vr_wizard_records(fx->w, a, "Example.COM.", r, 8, err, sizeof(err));

	assert_int_equal(n, 4);
	assert_int_equal(r[0].kind, VR_WIZARD_SPF);
	assert_false(r[0].cname);
	assert_string_equal(r[0].name, "example.com");
	assert_string_equal(r[0].value, "v=spf1 include:spf.relay.example ~all");
	assert_int_equal(r[1].kind, VR_WIZARD_DKIM);
	assert_true(r[1].cname);
	assert_string_equal(r[1].name, "ed1._domainkey.example.com");
	assert_string_equal(r[1].value, "ed1.example.com.keys.relay.example");
	assert_string_equal(r[1].key->selector, "ed1");
	assert_string_equal(r[2].name, "rsa1._domainkey.example.com");
	assert_string_equal(r[2].value, "rsa1.example.com.keys.relay.example");
	assert_int_equal(r[3].kind, VR_WIZARD_AUTH);
	assert_false(r[3].cname);
	assert_string_equal(r[3].name, "_vmrelay-auth.example.com");
	assert_string_equal(r[3].value, "vmrelay-auth=" TOKEN_VPS1);

	/* another account listing the same domain gets another token; no
	 * DKIM keys for it, no CNAMEs */
	n = vr_wizard_records(fx->w, vr_accounts_by_id(fx->t, "vps2"), "example.com", r, 8, err,
			      sizeof(err));
	assert_int_equal(n, 2);
	assert_int_equal(r[1].kind, VR_WIZARD_AUTH);
	assert_string_equal(r[1].value, "vmrelay-auth=" TOKEN_VPS2);

	assert_int_equal(vr_wizard_records(fx->w, a, "example.com", r, 3, err, sizeof(err)), -1);
	assert_string_equal(err, "more than 3 records for example.com");
	assert_int_equal(vr_wizard_records(fx->w, a, "", r, 8, err, sizeof(err)), -1);
	assert_string_equal(err, "bad domain name ''");
}

/* A name that fits on its own but not under _domainkey / the key zone. */
static void test_records_too_long(void **state)
{
	struct fixture *fx = *state;
	struct vr_wizard_record r[8];
	char err[512], name[VR_DNS_NAME_MAX + 1];
	const struct vr_account *a = vr_accounts_by_id(fx->t, "vps2");

	memset(name, 'a', 250);
	strcpy(name + 240, ".example");
	for (int i = 63; i < 240; i += 64)
		name[i] = '.';
	assert_int_equal(vr_wizard_records(fx->w, a, name, r, 8, err, sizeof(err)), -1);
	assert_string_equal(err + 248, ": a record name would exceed 253 octets");
}

/* A different secret gives different tokens. */
static void test_secret_keys_the_token(void **state)
{
	struct fixture *fx = *state;
	struct vr_wizard_record r[4];
	char err[256];
	struct vr_wizard *w2 = wizard_with(SECRET "x", 0400, err, sizeof(err));
	const struct vr_account *a = vr_accounts_by_id(fx->t, "vps2");

	assert_non_null(w2);
	assert_int_equal(vr_wizard_records(w2, a, "example.com", r, 4, err, sizeof(err)), 2);
	assert_string_not_equal(r[1].value, "vmrelay-auth=" TOKEN_VPS2);
	assert_int_equal(strlen(r[1].value), strlen("vmrelay-auth=") + 64);
	vr_wizard_free(w2);
}

static void test_new_errors(void **state)
{
	char err[256];

	assert_null(wizard_with(SECRET, 0644, err, sizeof(err)));
	assert_non_null(strstr(err, ": readable by others (mode 0644)"));
	assert_null(wizard_with("short\n", 0600, err, sizeof(err)));
	assert_non_null(strstr(err, ": 5 octets, at least 16 needed"));
	assert_null(vr_wizard_new("spf.example", "keys.example", "/nonexistent/secret", err,
				  sizeof(err)));
	assert_string_equal(err, "secret_file /nonexistent/secret: No such file or directory");
	assert_null(vr_wizard_new("", "keys.example", "/x", err, sizeof(err)));
	assert_string_equal(err, "[dns] spf_name is not set");
	assert_null(vr_wizard_new("spf.example", "", "/x", err, sizeof(err)));
	assert_string_equal(err, "[dns] key_zone is not set");
	assert_null(vr_wizard_new("spf.example", "keys.example", "", err, sizeof(err)));
	assert_string_equal(err, "[dns] secret_file is not set");
}

static void test_account_of(void **state)
{
	struct fixture *fx = *state;
	bool verified = true;

	assert_string_equal(vr_wizard_account_of(fx->t, "EXAMPLE.com", &verified)->id, "vps1");
	assert_true(verified);
	assert_string_equal(vr_wizard_account_of(fx->t, "pending.example", &verified)->id,
			    "vps1");
	assert_false(verified);
	assert_string_equal(vr_wizard_account_of(fx->t, "example.org", NULL)->id, "vps2");
	assert_null(vr_wizard_account_of(fx->t, "example.net", NULL));
}

/* --- verdicts, on answers built as the resolver builds them --- */

static struct vr_txt_result *txt(enum vr_resolve_status st, const char *const *texts)
{
	unsigned n = 0;
	struct vr_txt_result *r;

	while (texts && texts[n])
		n++;
	r = calloc(1, sizeof(*r) + n * sizeof(r->rr[0]));
	assert_non_null(r);
	r->status = st;
	snprintf(r->why, sizeof(r->why), "TXT x: SERVFAIL");
	for (unsigned i = 0; i < n; i++) {
		r->rr[i].text = texts[i];
		r->rr[i].len = strlen(texts[i]);
	}
	r->n = n;
	return r;
}

static void judge_txt(struct fixture *fx, struct vr_wizard_record *rec, enum vr_resolve_status st,
		      const char *const *texts, enum vr_wizard_verdict v, const char *found)
{
	struct vr_txt_result *res = txt(st, texts);
	struct vr_wizard_finding f;

	vr_wizard_judge_txt(fx->w, rec, res, &f);
	assert_string_equal(vr_wizard_verdict_name(f.verdict), vr_wizard_verdict_name(v));
	assert_string_equal(f.found, found);
	free(res);
}

static void records_of(struct fixture *fx, struct vr_wizard_record *r)
{
	char err[256];

	assert_int_equal(vr_wizard_records(fx->w, vr_accounts_by_id(fx->t, "vps1"), "example.com",
					   r, 4, err, sizeof(err)), 4);
}

static void test_judge_spf(void **state)
{
	struct fixture *fx = *state;
	struct vr_wizard_record r[4];

	records_of(fx, r);
	judge_txt(fx, &r[0], VR_RESOLVE_OK,
		  (const char *[]){ "google-site-verification=x",
				    "v=spf1 mx INCLUDE:spf.relay.example. -all", NULL },
		  VR_WIZARD_OK, "v=spf1 mx INCLUDE:spf.relay.example. -all");
	judge_txt(fx, &r[0], VR_RESOLVE_OK,
		  (const char *[]){ "v=spf1 +include:spf.relay.example ~all", NULL },
		  VR_WIZARD_OK, "v=spf1 +include:spf.relay.example ~all");
	/* a longer name that starts the same is not ours */
	judge_txt(fx, &r[0], VR_RESOLVE_OK,
		  (const char *[]){ "v=spf1 include:spf.relay.example.evil ~all", NULL },
		  VR_WIZARD_WRONG, "v=spf1 include:spf.relay.example.evil ~all");
	judge_txt(fx, &r[0], VR_RESOLVE_OK, (const char *[]){ "v=spf10 x", NULL },
		  VR_WIZARD_MISSING, "");
	judge_txt(fx, &r[0], VR_RESOLVE_OK,
		  (const char *[]){ "v=spf1 include:spf.relay.example ~all", "v=spf1 mx -all",
				    NULL },
		  VR_WIZARD_WRONG, "2 SPF records (receivers reject them all; keep one)");
	judge_txt(fx, &r[0], VR_RESOLVE_NXDOMAIN, NULL, VR_WIZARD_MISSING, "");
	judge_txt(fx, &r[0], VR_RESOLVE_NODATA, NULL, VR_WIZARD_MISSING, "");
	judge_txt(fx, &r[0], VR_RESOLVE_TEMPFAIL, NULL, VR_WIZARD_UNKNOWN, "TXT x: SERVFAIL");
}

static void test_spf_advice(void **state)
{
	struct fixture *fx = *state;
	const struct { const char *const *texts; const char *advice; } cases[] = {
		{ (const char *[]){ "hello", NULL }, "v=spf1 include:spf.relay.example ~all" },
		{ (const char *[]){ "v=spf1 mx a:mail.example.com -all", NULL },
		  "v=spf1 include:spf.relay.example mx a:mail.example.com -all" },
		{ (const char *[]){ "v=spf1", NULL }, "v=spf1 include:spf.relay.example" },
		{ (const char *[]){ "v=spf1 include:SPF.relay.example -all", NULL },
		  "v=spf1 include:SPF.relay.example -all" },
		/* two records: nothing sensible to merge into; judge says wrong */
		{ (const char *[]){ "v=spf1 mx -all", "v=spf1 a -all", NULL },
		  "v=spf1 include:spf.relay.example ~all" },
	};

	for (size_t i = 0; i < VR_ARRAY_SIZE(cases); i++) {
		struct vr_wizard_record r[4];
		struct vr_txt_result *res = txt(VR_RESOLVE_OK, cases[i].texts);

		records_of(fx, r);
		vr_wizard_spf_advice(fx->w, &r[0], res);
		assert_string_equal(r[0].value, cases[i].advice);
		free(res);
	}
}

static void test_judge_auth(void **state)
{
	struct fixture *fx = *state;
	struct vr_wizard_record r[4];

	records_of(fx, r);
	judge_txt(fx, &r[3], VR_RESOLVE_OK,
		  (const char *[]){ "other", "vmrelay-auth=" TOKEN_VPS1, NULL },
		  VR_WIZARD_OK, "vmrelay-auth=" TOKEN_VPS1);
	/* another account's token does not prove this one's ownership */
	judge_txt(fx, &r[3], VR_RESOLVE_OK,
		  (const char *[]){ "vmrelay-auth=" TOKEN_VPS2, NULL },
		  VR_WIZARD_WRONG, "vmrelay-auth=" TOKEN_VPS2);
	judge_txt(fx, &r[3], VR_RESOLVE_NXDOMAIN, NULL, VR_WIZARD_MISSING, "");
}

static void test_judge_cname(void **state)
{
	struct fixture *fx = *state;
	struct vr_wizard_record r[4];
	static const struct {
		enum vr_resolve_status st;
		const char *target;
		enum vr_wizard_verdict v;
		const char *found;
	} cases[] = {
		{ VR_RESOLVE_OK, "ed1.example.com.keys.relay.example", VR_WIZARD_OK,
		  "ed1.example.com.keys.relay.example" },
		{ VR_RESOLVE_OK, "ed1.example.com.keys.other.example", VR_WIZARD_WRONG,
		  "ed1.example.com.keys.other.example" },
		{ VR_RESOLVE_NODATA, "", VR_WIZARD_MISSING, "" },
		{ VR_RESOLVE_NXDOMAIN, "", VR_WIZARD_MISSING, "" },
		{ VR_RESOLVE_TEMPFAIL, "", VR_WIZARD_UNKNOWN, "CNAME x: timeout" },
	};

	records_of(fx, r);
	for (size_t i = 0; i < VR_ARRAY_SIZE(cases); i++) {
		struct vr_cname_result res = { .status = cases[i].st };
		struct vr_wizard_finding f;

		snprintf(res.target, sizeof(res.target), "%s", cases[i].target);
		snprintf(res.why, sizeof(res.why), "CNAME x: timeout");
		vr_wizard_judge_cname(&r[1], &res, &f);
		assert_string_equal(vr_wizard_verdict_name(f.verdict),
				    vr_wizard_verdict_name(cases[i].v));
		assert_string_equal(f.found, cases[i].found);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_records),
		cmocka_unit_test(test_records_too_long),
		cmocka_unit_test(test_secret_keys_the_token),
		cmocka_unit_test(test_new_errors),
		cmocka_unit_test(test_account_of),
		cmocka_unit_test(test_judge_spf),
		cmocka_unit_test(test_spf_advice),
		cmocka_unit_test(test_judge_auth),
		cmocka_unit_test(test_judge_cname),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
