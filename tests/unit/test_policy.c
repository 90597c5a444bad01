/*
 * test_policy.c - the accounts table: loading (every field, every kind of
 * bad line with its line number), lookups by address, id and AUTH token,
 * a large file, and RCU publication under concurrent readers.
 *
 * DKIM keys are made by setup() in the test's directory; test_dkim_keys
 * covers every way a key file can fail the load, test_dkim_key_files_shared
 * one key file named by many accounts.
 *
 * The large-file test loads 100,000 accounts and prints how long that and
 * the lookups took; VR_TEST_ACCOUNTS=1000000 makes it a million.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <urcu-qsbr.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "vmrelay/common.h"
#include "vmrelay/policy.h"

static char dir[] = "/tmp/vr_test_policy.XXXXXX";
static char path[128];
/* Key files: ed25519, RSA-2048, RSA-512 (too small). */
static const char *const key_names[] = { "ed1.pem", "rsa1.pem", "rsa512.pem" };

/* sha256("s3cret-token") */
#define TOKEN "s3cret-token"
static char token_hex[65];

static void write_file(const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct sockaddr_storage sa_of(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
		sin6->sin6_family = AF_INET6;
	}
	return ss;
}

/* The id of the account text belongs to, or "-" for none. */
static const char *who(const struct vr_accounts *t, const char *text)
{
	struct sockaddr_storage ss = sa_of(text);
	const struct vr_account *a = vr_accounts_by_addr(t, (struct sockaddr *)&ss);

	return a ? a->id : "-";
}

/* --- a file with every field --- */

static const char *full_file(void)
{
	static char text[4096];

	/* The keys are loaded, so they must exist: setup() makes them. */
	snprintf(text, sizeof(text),
		"# accounts for the unit test\n"
		"\n"
		"{\"id\":\"vps1\",\"ips\":[\"203.0.113.7\",\"2001:db8:7::/64\"],"
		"\"hostname\":\"Host1.Example.COM.\",\"domains\":[\"example.com\","
		"{\"name\":\"Pending.Example\",\"verified\":false},{\"name\":\"ok.example\","
		"\"check_failures\":2,\"failing_since\":1764800000}],"
		"\"daily_quota\":5000,\"over_quota\":\"hold\",\"unlimited\":true,"
		"\"auth_sha256\":\"%s\","
		"\"dkim\":{\"example.com\":[{\"selector\":\"ed1\",\"algorithm\":\"ed25519-sha256\","
		"\"key\":\"%s/ed1.pem\"},{\"selector\":\"rsa1\","
		"\"algorithm\":\"rsa-sha256\",\"key\":\"%s/rsa1.pem\"}],"
		"\"host1.example.com\":[{\"selector\":\"h\",\"algorithm\":\"rsa-sha256\","
		"\"key\":\"%s/rsa1.pem\"}]}}\n"
		"   # indented comment\r\n"
		"{\"id\":\"vps2\",\"ips\":[\"198.51.100.0/24\",\"2001:db8:9::1\"]}\r\n"
		"{\"id\":\"vps3\",\"ips\":[\"198.51.100.77\",\"2001:db8:9::/48\",\"::ffff:192.0.2.1\","
		"\"2001:db8:9:0:1::/80\"]}\n"
		"{\"id\":\"token-only_1.x\",\"auth_sha256\":\"%s\",\"domains\":[]}\n"
		"{\"id\":\"vps5\",\"ips\":[\"10.0.0.0/8\",\"0.0.0.0/0\"]}\n",
		token_hex, dir, dir, dir, token_hex);
	return text;
}

static struct vr_accounts *load_full(void)
{
	char err[512] = "";

	write_file(full_file());
	struct vr_accounts *t = vr_accounts_load(path, 1000, err, sizeof(err));
	if (!t)
		fail_msg("load: %s", err);
	return t;
}

static void test_every_field(void **state)
{
	struct vr_accounts *t = load_full();

	assert_int_equal(vr_accounts_count(t), 5);
	const struct vr_account *a = vr_accounts_by_id(t, "vps1");
	assert_non_null(a);
	assert_ptr_equal(a, vr_accounts_at(t, 0));
	assert_string_equal(a->hostname, "host1.example.com");
	assert_int_equal(a->n_domains, 3);
	assert_string_equal(a->domains[0].name, "example.com");
	assert_true(a->domains[0].verified);
	assert_string_equal(a->domains[1].name, "pending.example");
	assert_false(a->domains[1].verified);
	assert_true(a->domains[2].verified);
	assert_int_equal(a->daily_quota, 5000);
	assert_int_equal(a->over_quota, VR_OVER_QUOTA_HOLD);
	assert_true(a->unlimited);
	assert_true(a->has_auth);
	assert_int_equal(a->auth_sha256[0], strtoul((char[]){ token_hex[0], token_hex[1], 0 },
						     NULL, 16));
	assert_int_equal(a->n_dkim, 2);
	assert_string_equal(a->dkim[0].name, "example.com");
	assert_int_equal(a->dkim[0].n_keys, 2);
	assert_string_equal(a->dkim[0].keys[0].selector, "ed1");
	assert_int_equal(a->dkim[0].keys[0].alg, VR_DKIM_ED25519_SHA256);
	char key[256];
	snprintf(key, sizeof(key), "%s/ed1.pem", dir);
	assert_string_equal(a->dkim[0].keys[0].key, key);
	assert_string_equal(a->dkim[0].keys[1].selector, "rsa1");
	assert_int_equal(a->dkim[0].keys[1].alg, VR_DKIM_RSA_SHA256);
	assert_string_equal(a->dkim[1].name, "host1.example.com");
	/* Loaded: the file named twice is loaded once, the key shared. */
	assert_true(EVP_PKEY_is_a(a->dkim[0].keys[0].pkey, "ED25519"));
	assert_true(EVP_PKEY_is_a(a->dkim[0].keys[1].pkey, "RSA"));
	assert_true(EVP_PKEY_is_a(a->dkim[1].keys[0].pkey, "RSA"));
	assert_ptr_equal(a->dkim[1].keys[0].pkey, a->dkim[0].keys[1].pkey);

	/* Defaults. */
	a = vr_accounts_by_id(t, "vps2");
	assert_non_null(a);
	assert_null(a->hostname);
	assert_int_equal(a->n_domains, 0);
	assert_int_equal(a->daily_quota, 1000);
	assert_int_equal(a->over_quota, VR_OVER_QUOTA_DEFER);
	assert_false(a->unlimited);
	assert_false(a->has_auth);
	assert_int_equal(a->n_dkim, 0);

	assert_non_null(vr_accounts_by_id(t, "token-only_1.x"));
	assert_null(vr_accounts_by_id(t, "VPS1"));
	assert_null(vr_accounts_by_id(t, "vps"));
	assert_null(vr_accounts_at(t, 5));
	vr_accounts_free(t);
}

static void test_lookup_addr(void **state)
{
	struct vr_accounts *t = load_full();

	assert_string_equal(who(t, "203.0.113.7"), "vps1");
	assert_string_equal(who(t, "203.0.113.8"), "vps5");       /* only 0.0.0.0/0 */
	/* A /32 inside a /24 wins over the /24, which wins over /8 and /0. */
	assert_string_equal(who(t, "198.51.100.77"), "vps3");
	assert_string_equal(who(t, "198.51.100.78"), "vps2");
	assert_string_equal(who(t, "10.200.0.1"), "vps5");
	/* IPv4-mapped IPv6 clients are their IPv4 address. */
	assert_string_equal(who(t, "::ffff:203.0.113.7"), "vps1");
	assert_string_equal(who(t, "::ffff:198.51.100.1"), "vps2");
	assert_string_equal(who(t, "192.0.2.1"), "vps3");
	/* A bare IPv6 address stands for its /64; longer prefixes win. */
	assert_string_equal(who(t, "2001:db8:7::1"), "vps1");
	assert_string_equal(who(t, "2001:db8:7:0:ffff:ffff:ffff:ffff"), "vps1");
	assert_string_equal(who(t, "2001:db8:9::abcd"), "vps2");
	assert_string_equal(who(t, "2001:db8:9:0:1::5"), "vps3");  /* /80 inside the /64 */
	assert_string_equal(who(t, "2001:db8:9:1::1"), "vps3");    /* the /48 */
	assert_string_equal(who(t, "2001:db8:8::1"), "-");
	assert_string_equal(who(t, "::1"), "-");                   /* 0.0.0.0/0 is IPv4 only */

	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	assert_null(vr_accounts_by_addr(t, (struct sockaddr *)&sun));
	vr_accounts_free(t);
}

static void test_token(void **state)
{
	struct vr_accounts *t = load_full();
	const char *tok = TOKEN;

	const struct vr_account *a = vr_accounts_by_token(t, "vps1", tok, strlen(tok));
	assert_non_null(a);
	assert_string_equal(a->id, "vps1");
	assert_non_null(vr_accounts_by_token(t, "token-only_1.x", tok, strlen(tok)));
	assert_null(vr_accounts_by_token(t, "vps1", tok, strlen(tok) - 1));
	assert_null(vr_accounts_by_token(t, "vps1", "s3cret-tokem", strlen(tok)));
	assert_null(vr_accounts_by_token(t, "vps1", "", 0));
	/* The right token with the wrong user: vps2 has no token at all,
	 * nosuch does not exist. */
	assert_null(vr_accounts_by_token(t, "vps2", tok, strlen(tok)));
	assert_null(vr_accounts_by_token(t, "nosuch", tok, strlen(tok)));
	assert_null(vr_accounts_by_token(t, NULL, tok, strlen(tok)));
	vr_accounts_free(t);
}

/* --- bad files --- */

#define GOOD "{\"id\":\"vps1\",\"ips\":[\"203.0.113.7\",\"2001:db8:7::/64\"]," \
	     "\"domains\":[\"example.com\"]}\n"

static void expect_error(const char *text, uint32_t max_quota, const char *suffix)
{
	char err[1024], want[1024];

	write_file(text);
	struct vr_accounts *t = vr_accounts_load_max(path, 1000, max_quota, err, sizeof(err));
	if (t)
		fail_msg("loaded: %s", text);
	snprintf(want, sizeof(want), "%s%s", path, suffix);
	assert_string_equal(err, want);
}

static void test_bad_lines(void **state)
{
	static const struct { const char *text, *err; } cases[] = {
		{ GOOD "\n{\"id\":\"x\",}\n",
		  ":3: bad JSON at column 11: string or '}' expected near '}'" },
		{ GOOD "{\"id\":\"x\"} {\"id\":\"y\"}\n",
		  ":2: bad JSON at column 12: end of file expected near '{'" },
		{ GOOD "{\"id\":\"x\",\"id\":\"y\"}\n",
		  ":2: bad JSON at column 14: duplicate object key near '\"id\"'" },
		{ "[1,2]\n", ":1: a line must be a JSON object, not an array" },
		{ GOOD "# c\n{\"ips\":[\"10.0.0.9\"]}\n", ":3: 'id' is missing" },
		{ "{\"id\":\"a b\"}\n",
		  ":1: 'id' 'a b' may only contain letters, digits, '.', '_' and '-'" },
		{ "{\"id\":\"a\\u0000b\"}\n",
		  ":1: bad JSON at column 16: \\u0000 is not allowed without JSON_ALLOW_NUL near "
		  "'\"a\\u0000b\"'" },
		{ "{\"id\":\"\"}\n", ":1: 'id' must be 1 to 63 characters" },
		{ "{\"id\":\"0123456789012345678901234567890123456789012345678901234567890123\"}\n",
		  ":1: 'id' must be 1 to 63 characters" },
		{ "{\"id\":7}\n", ":1: 'id' must be a string, not an integer" },
		{ "{\"id\":\"x\",\"ip\":[]}\n", ":1: unknown key 'ip'" },
		{ "{\"id\":\"x\",\"ips\":\"10.0.0.1\"}\n", ":1: 'ips' must be an array, not a string" },
		{ "{\"id\":\"x\",\"ips\":[null]}\n", ":1: 'ips'[0] must be a string, not null" },
		{ "{\"id\":\"x\",\"ips\":[\"10.0.0.1\",\"10.0.0.300\"]}\n",
		  ":1: 'ips'[1]: '10.0.0.300' is not an IPv4 or IPv6 address or prefix" },
		{ "{\"id\":\"x\",\"ips\":[\"10.0.0.0/33\"]}\n",
		  ":1: 'ips'[0]: '10.0.0.0/33' is not an IPv4 or IPv6 address or prefix" },
		{ "{\"id\":\"x\",\"ips\":[\"10.0.0.0/\"]}\n",
		  ":1: 'ips'[0]: '10.0.0.0/' is not an IPv4 or IPv6 address or prefix" },
		{ "{\"id\":\"x\",\"ips\":[\"example.com\"]}\n",
		  ":1: 'ips'[0]: 'example.com' is not an IPv4 or IPv6 address or prefix" },
		{ "{\"id\":\"x\",\"ips\":[\"10.0.0.1/24\"]}\n",
		  ":1: 'ips'[0]: '10.0.0.1/24' has host bits set (the prefix is 10.0.0.0/24)" },
		{ "{\"id\":\"x\",\"ips\":[\"2001:db8::1/48\"]}\n",
		  ":1: 'ips'[0]: '2001:db8::1/48' has host bits set (the prefix is 2001:db8::/48)" },
		{ GOOD "{\"id\":\"vps1\"}\n", ":2: duplicate id 'vps1' (first on line 1)" },
		{ GOOD "\n{\"id\":\"y\",\"ips\":[\"203.0.113.7\"]}\n",
		  ":3: 'ips': '203.0.113.7' is already on line 1 (account 'vps1')" },
		{ GOOD "{\"id\":\"y\",\"ips\":[\"2001:db8:7::99\"]}\n",
		  ":2: 'ips': '2001:db8:7::99' (as 2001:db8:7::/64) is already on line 1 (account 'vps1')" },
		{ "{\"id\":\"y\",\"ips\":[\"2001:db8::1\",\"2001:db8::2\"]}\n",
		  ":1: 'ips': '2001:db8::2' (as 2001:db8::/64) is listed twice" },
		{ "{\"id\":\"x\",\"hostname\":\"bad_host.example\"}\n",
		  ":1: 'hostname' 'bad_host.example' is not a valid domain name" },
		{ "{\"id\":\"x\",\"hostname\":\"a..b\"}\n",
		  ":1: 'hostname' 'a..b' is not a valid domain name" },
		{ "{\"id\":\"x\",\"domains\":[\"b\\u00fccher.example\"]}\n",
		  ":1: 'domains'[0] 'b\xc3\xbc" "cher.example' is not a valid domain name (write IDNs as xn-- A-labels)" },
		{ "{\"id\":\"x\",\"domains\":[\"-a.example\"]}\n",
		  ":1: 'domains'[0] '-a.example' is not a valid domain name" },
		{ "{\"id\":\"x\",\"domains\":[\"a.example\",\"A.example.\"]}\n",
		  ":1: 'domains'[1]: 'a.example' is listed twice" },
		{ "{\"id\":\"x\",\"domains\":[{\"name\":\"a.example\",\"verfied\":true}]}\n",
		  ":1: 'domains'[0]: unknown key 'verfied'" },
		{ "{\"id\":\"x\",\"domains\":[{\"name\":\"a.example\",\"verified\":\"yes\"}]}\n",
		  ":1: 'domains'[0]: 'verified' must be true or false, not a string" },
		{ "{\"id\":\"x\",\"domains\":[{\"name\":\"a.example\",\"check_failures\":-1}]}\n",
		  ":1: 'domains'[0]: 'check_failures' must be a whole number, not negative" },
		{ "{\"id\":\"x\",\"domains\":[{\"name\":\"a.example\",\"failing_since\":\"today\"}]}\n",
		  ":1: 'domains'[0]: 'failing_since' must be a whole number, not a string" },
		{ "{\"id\":\"x\",\"domains\":[{\"verified\":true}]}\n",
		  ":1: 'domains'[0]: 'name' is missing" },
		{ "{\"id\":\"x\",\"domains\":[1]}\n",
		  ":1: 'domains'[0] must be a string or an object, not an integer" },
		{ "{\"id\":\"x\",\"daily_quota\":\"100\"}\n",
		  ":1: 'daily_quota' must be an integer, not a string" },
		{ "{\"id\":\"x\",\"daily_quota\":100.5}\n",
		  ":1: 'daily_quota' must be an integer, not a number" },
		{ "{\"id\":\"x\",\"daily_quota\":0}\n", ":1: 'daily_quota' must be at least 1" },
		{ "{\"id\":\"x\",\"daily_quota\":10001}\n",
		  ":1: 'daily_quota' 10001 is above the cap of 10000 (per_day_max)" },
		{ "{\"id\":\"x\",\"unlimited\":1}\n",
		  ":1: 'unlimited' must be true or false, not an integer" },
		{ "{\"id\":\"x\",\"over_quota\":\"bounce\"}\n",
		  ":1: 'over_quota' must be \"defer\" or \"hold\", not \"bounce\"" },
		{ "{\"id\":\"x\",\"auth_sha256\":\"abcd\"}\n",
		  ":1: 'auth_sha256' must be 64 hex digits (SHA-256 of the token), not 4 characters" },
		{ "{\"id\":\"x\",\"auth_sha256\":\"g000000000000000000000000000000000000000000000000000000000000000\"}\n",
		  ":1: 'auth_sha256' must be 64 hex digits, 'g' is not one" },
		{ "{\"id\":\"x\",\"domains\":[\"a.example\"],\"dkim\":{\"b.example\":[]}}\n",
		  ":1: 'dkim'.\"b.example\" has no keys" },
		{ "{\"id\":\"x\",\"domains\":[\"a.example\"],\"dkim\":{\"b.example\":[{\"selector\":\"s\","
		  "\"algorithm\":\"rsa-sha256\",\"key\":\"/k.pem\"}]}}\n",
		  ":1: 'dkim' domain 'b.example' is neither in 'domains' nor the hostname" },
		{ "{\"id\":\"x\",\"domains\":[\"a.example\"],\"dkim\":{\"a.example\":[{\"selector\":\"s\","
		  "\"algorithm\":\"rsa-sha1\",\"key\":\"/k.pem\"}]}}\n",
		  ":1: 'dkim'.\"a.example\"[0]: 'algorithm' must be \"rsa-sha256\" or \"ed25519-sha256\", not \"rsa-sha1\"" },
		{ "{\"id\":\"x\",\"domains\":[\"a.example\"],\"dkim\":{\"a.example\":[{\"selector\":\"s\","
		  "\"algorithm\":\"rsa-sha256\",\"key\":\"keys/k.pem\"}]}}\n",
		  ":1: 'dkim'.\"a.example\"[0]: 'key' must be an absolute file name, not \"keys/k.pem\"" },
		{ "{\"id\":\"x\",\"domains\":[\"a.example\"],\"dkim\":{\"a.example\":[{"
		  "\"algorithm\":\"rsa-sha256\",\"key\":\"/k.pem\"}]}}\n",
		  ":1: 'dkim'.\"a.example\"[0]: 'selector' is missing" },
		{ "{\"id\":\"x\",\"domains\":[\"a.example\"],\"dkim\":{\"a.example\":[{\"selector\":\"s\","
		  "\"algorithm\":\"rsa-sha256\",\"key\":\"/k.pem\",\"bits\":2048}]}}\n",
		  ":1: 'dkim'.\"a.example\"[0]: unknown key 'bits'" },
		{ "{\"id\":\"x\",\"domains\":[\"a.example\"],\"dkim\":{\"a.example\":[{\"selector\":\"s\","
		  "\"algorithm\":\"rsa-sha256\",\"key\":\"/k.pem\"},{\"selector\":\"S\","
		  "\"algorithm\":\"ed25519-sha256\",\"key\":\"/k2.pem\"}]}}\n",
		  ":1: 'dkim'.\"a.example\"[1]: selector 's' is listed twice" },
		{ "{\"id\":\"x\",\"dkim\":[]}\n", ":1: 'dkim' must be an object, not an array" },
	};
	for (size_t i = 0; i < VR_ARRAY_SIZE(cases); i++)
		expect_error(cases[i].text, 10000, cases[i].err);
}

/* A key file that cannot be used fails the load, naming the line and
 * the file; a good table loaded after a failed one, and a reload, leave
 * nothing behind (ASan's leak check would say). */
static void test_dkim_keys(void **state)
{
	static const struct { const char *alg, *file, *err; } cases[] = {
		{ "ed25519-sha256", "missing.pem", "missing.pem: No such file or directory" },
		{ "ed25519-sha256", "rsa1.pem", "rsa1.pem: key type RSA, but ed25519-sha256 needs ED25519" },
		{ "rsa-sha256", "ed1.pem", "ed1.pem: key type ED25519, but rsa-sha256 needs RSA" },
		{ "rsa-sha256", "rsa512.pem",
		  "rsa512.pem: RSA key of 512 bits, at least 1024 needed (RFC 8301)" },
		{ "rsa-sha256", "accounts.jsonl",
		  "accounts.jsonl: not a PEM private key (or one with a passphrase)" },
	};
	char text[1024], want[512], err[1024];

	for (size_t i = 0; i < VR_ARRAY_SIZE(cases); i++) {
		/* Line 1 loads its key before line 2 fails. */
		snprintf(text, sizeof(text),
			 "{\"id\":\"a\",\"domains\":[\"a.example\"],\"dkim\":{\"a.example\":"
			 "[{\"selector\":\"s\",\"algorithm\":\"ed25519-sha256\",\"key\":\"%s/ed1.pem\"}]}}\n"
			 "{\"id\":\"x\",\"domains\":[\"x.example\"],\"dkim\":{\"x.example\":["
			 "{\"selector\":\"ok\",\"algorithm\":\"ed25519-sha256\",\"key\":\"%s/ed1.pem\"},"
			 "{\"selector\":\"s\",\"algorithm\":\"%s\",\"key\":\"%s/%s\"}]}}\n",
			 dir, dir, cases[i].alg, dir, cases[i].file);
		snprintf(want, sizeof(want), ":2: 'dkim'.\"x.example\"[1]: %s/%s", dir, cases[i].err);
		expect_error(text, 10000, want);
	}

	write_file(full_file());
	struct vr_accounts *t = vr_accounts_load(path, 1000, err, sizeof(err));
	assert_non_null(t);
	struct vr_accounts *t2 = vr_accounts_load(path, 1000, err, sizeof(err));
	assert_non_null(t2);
	/* Each table has keys of its own: freeing one leaves the other's. */
	vr_accounts_free(t);
	const struct vr_account *a = vr_accounts_by_id(t2, "vps1");
	assert_int_equal(EVP_PKEY_get_bits(a->dkim[0].keys[1].pkey), 2048);
	vr_accounts_free(t2);
}

static void test_bad_file(void **state)
{
	char err[512];

	assert_null(vr_accounts_load("/nonexistent/accounts.jsonl", 1000, err, sizeof(err)));
	assert_string_equal(err, "/nonexistent/accounts.jsonl: No such file or directory");

	/* A line over 1 MiB is refused rather than parsed. */
	size_t n = (1u << 20) + 100;
	char *big = malloc(n + 256);
	strcpy(big, GOOD "{\"id\":\"x\",\"hostname\":\"");
	size_t off = strlen(big);
	memset(big + off, 'a', n);
	strcpy(big + off + n, "\"}\n");
	expect_error(big, 10000, ":2: line too long (more than 1048576 bytes)");
	free(big);

	/* An empty file is an empty table, not an error. */
	write_file("# nobody yet\n\n");
	struct vr_accounts *t = vr_accounts_load(path, 1000, err, sizeof(err));
	assert_non_null(t);
	assert_int_equal(vr_accounts_count(t), 0);
	assert_null(vr_accounts_by_id(t, "x"));
	assert_string_equal(who(t, "192.0.2.1"), "-");
	vr_accounts_free(t);
}

/* --- a large file --- */

static void big_addr(unsigned i, char *v4, char *v6)
{
	sprintf(v4, "%u.%u.%u.%u", 10 + (i >> 24), (i >> 16) & 255, (i >> 8) & 255, i & 255);
	sprintf(v6, "2001:db8:%x:%x::", i >> 16, i & 0xffff);
}

static void test_large_file(void **state)
{
	const char *env = getenv("VR_TEST_ACCOUNTS");
	unsigned n = env ? (unsigned)strtoul(env, NULL, 10) : 100000;
	char v4[32], v6[64], err[512];

	FILE *f = fopen(path, "w");
	assert_non_null(f);
	for (unsigned i = 0; i < n; i++) {
		big_addr(i, v4, v6);
		fprintf(f, "{\"id\":\"vps%u\",\"ips\":[\"%s\",\"%s/64\"],\"hostname\":\"h%u.example.net\","
			"\"domains\":[\"d%u.example\"],\"daily_quota\":2000,\"auth_sha256\":\"%s\"}\n",
			i, v4, v6, i, i, token_hex);
	}
	long bytes = ftell(f);
	fclose(f);

	double t0 = now_s();
	struct vr_accounts *t = vr_accounts_load(path, 1000, err, sizeof(err));
	double t1 = now_s();
	if (!t)
		fail_msg("%s", err);
	assert_int_equal(vr_accounts_count(t), n);

	unsigned found = 0;
	char id[32];
	for (unsigned i = 0; i < n; i++) {
		big_addr(i, v4, v6);
		strcat(v6, "7");            /* some address inside the /64 */
		sprintf(id, "vps%u", i);
		found += strcmp(who(t, v4), id) == 0;
		found += strcmp(who(t, v6), id) == 0;
		found += vr_accounts_by_id(t, id) != NULL;
	}
	double t2 = now_s();
	assert_int_equal(found, 3 * n);
	print_message("%u accounts (%.1f MB): load %.3f s (%.0f lines/s), %u lookups %.3f s "
		      "(%.0f ns each, with formatting)\n", n, (double)bytes / 1e6, t1 - t0,
		      n / (t1 - t0), 3 * n, t2 - t1, (t2 - t1) * 1e9 / (3.0 * n));
	vr_accounts_free(t);
}

/* --- RCU publication --- */

static volatile int stop_readers;

static void *reader(void *arg)
{
	unsigned long *lookups = arg;
	struct sockaddr_storage ss = sa_of("203.0.113.7");

	rcu_register_thread();
	while (!__atomic_load_n(&stop_readers, __ATOMIC_RELAXED)) {
		rcu_read_lock();
		struct vr_accounts *t = vr_policy_current();
		if (t) {
			const struct vr_account *a = vr_accounts_by_addr(t, (struct sockaddr *)&ss);
			/* Touch the account's own memory: a freed table shows here. */
			if (!a || strcmp(a->id, "vps1") != 0 || strcmp(a->domains[0].name,
								       "example.com") != 0)
				abort();
			__atomic_add_fetch(lookups, 1, __ATOMIC_RELAXED);
		}
		rcu_read_unlock();
		rcu_quiescent_state();          /* a worker's loop (QSBR) */
	}
	rcu_unregister_thread();
	return NULL;
}

static void test_rcu_publish(void **state)
{
	pthread_t th[2];
	unsigned long lookups[2] = { 0, 0 };
	char err[512];

	write_file(GOOD);
	vr_policy_publish(vr_accounts_load(path, 1000, err, sizeof(err)));
	stop_readers = 0;
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader, &lookups[i]), 0);
	/* Both readers inside the loop before the tables start changing. */
	while (__atomic_load_n(&lookups[0], __ATOMIC_RELAXED) == 0 ||
	       __atomic_load_n(&lookups[1], __ATOMIC_RELAXED) == 0)
		sched_yield();
	for (int i = 0; i < 100; i++) {
		struct vr_accounts *t = vr_accounts_load(path, 1000, err, sizeof(err));
		assert_non_null(t);
		vr_policy_publish(t);
		assert_ptr_equal(vr_policy_current(), t);
	}
	__atomic_store_n(&stop_readers, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	print_message("readers made %lu and %lu lookups across 100 publications\n", lookups[0],
		      lookups[1]);
	vr_policy_publish(NULL);
	assert_null(vr_policy_current());
}

static int write_key(const char *name, EVP_PKEY *k)
{
	char file[256];

	snprintf(file, sizeof(file), "%s/%s", dir, name);
	FILE *f = fopen(file, "w");
	int ok = f && k && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1;
	if (f)
		fclose(f);
	EVP_PKEY_free(k);
	return ok ? 0 : -1;
}

/* Accounts naming one key file with one algorithm share its loaded key,
 * within a load; the next load reads the file again (a rotated key counts
 * from the reload on), and a file named with the wrong algorithm still
 * fails its line. */
static void test_dkim_key_files_shared(void **state)
{
	char text[16384], err[512] = "", file[256];
	static const char *const line =
		"{\"id\":\"%s\",\"domains\":[\"%s.example\"],\"dkim\":{\"%s.example\":["
		"{\"selector\":\"s\",\"algorithm\":\"ed25519-sha256\",\"key\":\"%s/shared.pem\"},"
		"{\"selector\":\"r\",\"algorithm\":\"rsa-sha256\",\"key\":\"%s/rsa1.pem\"}]}}\n";
	size_t n = 0;

	assert_int_equal(write_key("shared.pem", EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")), 0);
	for (unsigned i = 0; i < 40; i++) {
		char id[16];
		snprintf(id, sizeof(id), "v%u", i);
		n += (size_t)snprintf(text + n, sizeof(text) - n, line, id, id, id, dir, dir);
		if (i == 2)     /* a line of its own key between the sharers */
			n += (size_t)snprintf(text + n, sizeof(text) - n,
				"{\"id\":\"own\",\"domains\":[\"own.example\"],\"dkim\":"
				"{\"own.example\":[{\"selector\":\"s\",\"algorithm\":"
				"\"ed25519-sha256\",\"key\":\"%s/ed1.pem\"}]}}\n", dir);
		assert_true(n < sizeof(text));
	}
	write_file(text);
	struct vr_accounts *t = vr_accounts_load(path, 1000, err, sizeof(err));
	if (!t)
		fail_msg("load: %s", err);
	const struct vr_account *v0 = vr_accounts_by_id(t, "v0");
	const struct vr_account *v39 = vr_accounts_by_id(t, "v39");
	const struct vr_account *own = vr_accounts_by_id(t, "own");
	assert_non_null(v0);
	assert_non_null(v39);
	assert_non_null(own);
	EVP_PKEY *ed = v0->dkim[0].keys[0].pkey, *rsa = v0->dkim[0].keys[1].pkey;
	assert_true(EVP_PKEY_is_a(ed, "ED25519"));
	assert_true(EVP_PKEY_is_a(rsa, "RSA"));
	assert_ptr_equal(v39->dkim[0].keys[0].pkey, ed);
	assert_ptr_equal(v39->dkim[0].keys[1].pkey, rsa);
	assert_ptr_not_equal(own->dkim[0].keys[0].pkey, ed);

	/* the key file is rotated: the next load has the new key, the table
	 * in use keeps the old one */
	assert_int_equal(write_key("shared.pem", EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")), 0);
	struct vr_accounts *t2 = vr_accounts_load(path, 1000, err, sizeof(err));
	if (!t2)
		fail_msg("reload: %s", err);
	EVP_PKEY *ed2 = vr_accounts_by_id(t2, "v0")->dkim[0].keys[0].pkey;
	assert_int_not_equal(EVP_PKEY_eq(ed2, ed), 1);
	assert_ptr_equal(vr_accounts_by_id(t2, "v39")->dkim[0].keys[0].pkey, ed2);
	assert_true(EVP_PKEY_is_a(vr_accounts_by_id(t, "v39")->dkim[0].keys[0].pkey, "ED25519"));
	vr_accounts_free(t);
	vr_accounts_free(t2);

	/* shared by path and algorithm: the second line's wrong algorithm fails */
	snprintf(text, sizeof(text),
		"{\"id\":\"a\",\"domains\":[\"a.example\"],\"dkim\":{\"a.example\":[{\"selector\":"
		"\"s\",\"algorithm\":\"rsa-sha256\",\"key\":\"%s/rsa1.pem\"}]}}\n"
		"{\"id\":\"b\",\"domains\":[\"b.example\"],\"dkim\":{\"b.example\":[{\"selector\":"
		"\"s\",\"algorithm\":\"ed25519-sha256\",\"key\":\"%s/rsa1.pem\"}]}}\n", dir, dir);
	write_file(text);
	assert_null(vr_accounts_load(path, 1000, err, sizeof(err)));
	assert_non_null(strstr(err, ":2: 'dkim'.\"b.example\"[0]: "));
	assert_non_null(strstr(err, "rsa1.pem: key type RSA, but ed25519-sha256 needs ED25519"));
	snprintf(file, sizeof(file), "%s/shared.pem", dir);
	unlink(file);
}

static int setup(void **state)
{
	uint8_t md[32];

	if (!mkdtemp(dir))
		return -1;
	if (write_key(key_names[0], EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")) < 0 ||
	    write_key(key_names[1], EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)) < 0 ||
	    write_key(key_names[2], EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)512)) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/accounts.jsonl", dir);
	EVP_Digest(TOKEN, strlen(TOKEN), md, NULL, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		sprintf(token_hex + 2 * i, "%02x", md[i]);
	return 0;
}

static int teardown(void **state)
{
	char file[256];

	for (size_t i = 0; i < VR_ARRAY_SIZE(key_names); i++) {
		snprintf(file, sizeof(file), "%s/%s", dir, key_names[i]);
		unlink(file);
	}
	unlink(path);
	return rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_field),
		cmocka_unit_test(test_lookup_addr),
		cmocka_unit_test(test_token),
		cmocka_unit_test(test_bad_lines),
		cmocka_unit_test(test_dkim_keys),
		cmocka_unit_test(test_dkim_key_files_shared),
		cmocka_unit_test(test_bad_file),
		cmocka_unit_test(test_large_file),
		cmocka_unit_test(test_rcu_publish),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
