/*
 * test_resolve.c - the resolver without a DNS server: the rdata decoders
 * (against a guard page), name checks, configuration errors, and a query to
 * a server that never answers ending TEMPFAIL at its deadline.
 * Answers from a real server (nsd, unbound, DNSSEC) are tests/e2e/test_resolve.py.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmrelay/clock.h"
#include "vmrelay/common.h"
#include "vmrelay/resolve.h"
#include "resolve_rdata.h"
#include "guard.h"

/* --- rdata decoders --- */

static int name_of(const void *wire, size_t len, char *out)
{
	struct guarded g = guard(wire, len);
	int n = vr_rdata_name(g.data, len, out);

	unguard(&g);
	return n;
}

static void test_rdata_name(void **state)
{
	char out[VR_DNS_NAME_MAX + 1];

	assert_int_equal(name_of("\x03mx1\x07" "Example\x03" "COM\x00", 17, out), 17);
	assert_string_equal(out, "mx1.example.com");
	assert_int_equal(name_of("\x00", 1, out), 1);
	assert_string_equal(out, "");
	assert_int_equal(name_of("\x04_ds1\x0a_domainkey\x01x\x00", 19, out), 19);
	assert_string_equal(out, "_ds1._domainkey.x");
	/* no terminating root label */
	assert_int_equal(name_of("\x03mx1", 4, out), -1);
	/* a label running past the data */
	assert_int_equal(name_of("\x05mx1\x00", 5, out), -1);
	/* a compression pointer, a '.' or a space inside a label */
	assert_int_equal(name_of("\xc0\x0c", 2, out), -1);
	assert_int_equal(name_of("\x03m.x\x00", 5, out), -1);
	assert_int_equal(name_of("\x03m x\x00", 5, out), -1);
	assert_int_equal(name_of("", 0, out), -1);
}

static void test_rdata_name_length(void **state)
{
	uint8_t wire[300];
	char out[VR_DNS_NAME_MAX + 1];
	size_t at = 0;

	/* 4 labels of 63 = 255 presentation octets: over the 253 limit */
	for (int l = 0; l < 4; l++) {
		wire[at++] = 63;
		memset(wire + at, 'a', 63);
		at += 63;
	}
	wire[at++] = 0;
	assert_int_equal(name_of(wire, at, out), -1);
	/* 3 x 63 + 61: 253 exactly */
	wire[3 * 64] = 61;
	wire[3 * 64 + 1 + 61] = 0;
	assert_int_equal(name_of(wire, 3 * 64 + 63, out), 3 * 64 + 63);
	assert_int_equal(strlen(out), 253);
	/* a label of 64 */
	wire[0] = 64;
	assert_int_equal(name_of(wire, at, out), -1);
}

static void test_rdata_mx(void **state)
{
	char name[VR_DNS_NAME_MAX + 1];
	uint16_t pref = 0;
	struct guarded g = guard("\x01\x02\x02mx\x01t\x00", 8);

	assert_int_equal(vr_rdata_mx(g.data, 8, &pref, name), 0);
	assert_int_equal(pref, 258);
	assert_string_equal(name, "mx.t");
	unguard(&g);

	g = guard("\x00\x00\x00", 3);       /* the null MX's "0 ." */
	assert_int_equal(vr_rdata_mx(g.data, 3, &pref, name), 0);
	assert_int_equal(pref, 0);
	assert_string_equal(name, "");
	unguard(&g);

	g = guard("\x00\x0a\x00\x00", 4);   /* trailing octet after the name */
	assert_int_equal(vr_rdata_mx(g.data, 4, &pref, name), -1);
	unguard(&g);
	g = guard("\x00\x0a", 2);
	assert_int_equal(vr_rdata_mx(g.data, 2, &pref, name), -1);
	unguard(&g);
}

static void test_rdata_tlsa(void **state)
{
	struct vr_tlsa_rr rr;
	struct guarded g = guard("\x03\x01\x01\xab\xcd", 5);

	assert_int_equal(vr_rdata_tlsa(g.data, 5, &rr), 0);
	assert_int_equal(rr.usage, 3);
	assert_int_equal(rr.selector, 1);
	assert_int_equal(rr.mtype, 1);
	assert_int_equal(rr.len, 2);
	assert_memory_equal(rr.data, "\xab\xcd", 2);
	assert_int_equal(vr_rdata_tlsa(g.data, 2, &rr), -1);
	unguard(&g);
}

static void test_rdata_txt(void **state)
{
	char out[64];
	struct guarded g = guard("\x06v=spf1\x0d include:x ~a\x00", 22);

	/* strings are joined without a separator (RFC 7208 3.3) */
	assert_int_equal(vr_rdata_txt(g.data, 21, out, sizeof(out)), 19);
	assert_string_equal(out, "v=spf1 include:x ~a");
	assert_int_equal(vr_rdata_txt(g.data, 22, out, sizeof(out)), 19);  /* empty string */
	assert_int_equal(vr_rdata_txt(g.data, 20, out, sizeof(out)), -1);  /* overrun */
	assert_int_equal(vr_rdata_txt(g.data, 22, out, 10), -1);           /* out too small */
	assert_int_equal(vr_rdata_txt(g.data, 0, out, sizeof(out)), -1);
	unguard(&g);
}

/* --- the resolver --- */

static struct vr_resolver *new_resolver(const char *server, unsigned timeout_ms)
{
	struct vr_resolver_conf conf = { .server = server, .timeout_ms = timeout_ms };
	char err[256] = "";
	struct vr_resolver *r = vr_resolver_new(&conf, err, sizeof(err));

	if (r == NULL)
		fail_msg("vr_resolver_new: %s", err);
	return r;
}

static void test_conf_errors(void **state)
{
	static const struct { const char *server, *ta, *msg; } bad[] = {
		{ "1.2.3", NULL, "resolver '1.2.3': not IP or IP@port" },
		{ "127.0.0.1@", NULL, "resolver '127.0.0.1@': not IP or IP@port" },
		{ "127.0.0.1@70000", NULL, "resolver '127.0.0.1@70000': not IP or IP@port" },
		{ "ns.example", NULL, "resolver 'ns.example': not IP or IP@port" },
		{ "127.0.0.1", "/nonexistent/root.key",
		  "trust anchor '/nonexistent/root.key': No such file or directory" },
	};
	for (size_t i = 0; i < VR_ARRAY_SIZE(bad); i++) {
		struct vr_resolver_conf conf = { .server = bad[i].server, .trust_anchor = bad[i].ta };
		char err[256] = "";

		assert_null(vr_resolver_new(&conf, err, sizeof(err)));
		assert_string_equal(err, bad[i].msg);
	}
}

static void never(void *arg, struct vr_txt_result *res)
{
	fail_msg("callback of a query that was refused or dropped");
}

static void test_bad_names(void **state)
{
	struct vr_resolver *r = new_resolver("127.0.0.1@9", 0);
	char long_name[300];
	static const char *const bad[] = {
		"", ".", "a..b", ".a", "a b.example", "caf\xc3\xa9.example", "a/b", "a\nb",
	};

	for (size_t i = 0; i < VR_ARRAY_SIZE(bad); i++)
		assert_int_equal(vr_resolve_txt(r, bad[i], never, NULL), -EINVAL);
	assert_int_equal(vr_resolve_txt(r, NULL, never, NULL), -EINVAL);
	memset(long_name, 'a', 64);
	strcpy(long_name + 64, ".example");
	assert_int_equal(vr_resolve_txt(r, long_name, never, NULL), -EINVAL);
	memset(long_name, 'a', 254);
	long_name[254] = '\0';
	for (size_t i = 63; i < 254; i += 64)
		long_name[i] = '.';
	assert_int_equal(vr_resolve_txt(r, long_name, never, NULL), -EINVAL);
	assert_int_equal(vr_resolve_tlsa(r, long_name + 10, 65535, NULL, NULL), -EINVAL);
	assert_int_equal(vr_resolver_pending(r), 0);
	assert_int_equal(vr_resolver_timeout_ms(r), -1);
	vr_resolver_free(r);
}

/* A UDP port that takes queries and never answers. */
static int silent_server(char *addr, size_t len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	snprintf(addr, len, "127.0.0.1@%u", ntohs(sin.sin_port));
	return fd;
}

struct got_mx {
	int calls;
	struct vr_mx_result *res;
};

static void on_mx(void *arg, struct vr_mx_result *res)
{
	struct got_mx *got = arg;

	got->calls++;
	got->res = res;
}

static void test_timeout(void **state)
{
	char addr[64];
	int fd = silent_server(addr, sizeof(addr));
	struct vr_resolver *r = new_resolver(addr, 300);
	struct got_mx got = { 0 };
	uint64_t t0 = vr_clock_ms(), waited;
	int left;

	assert_int_equal(vr_resolve_mx(r, "example.com", on_mx, &got), 0);
	assert_int_equal(vr_resolver_pending(r), 1);
	/* the callback never runs inside the call that started the query */
	assert_int_equal(got.calls, 0);
	left = vr_resolver_timeout_ms(r);
	assert_true(left > 200 && left <= 300);
	assert_int_equal(vr_resolver_wait(r, 5000), 0);
	waited = vr_clock_ms() - t0;
	assert_true(waited >= 300 && waited < 2000);
	assert_int_equal(got.calls, 1);
	assert_int_equal(got.res->status, VR_RESOLVE_TEMPFAIL);
	assert_int_equal(got.res->n_hosts, 0);
	assert_string_equal(got.res->why, "MX example.com: no answer within 300 ms");
	vr_resolve_free(got.res);
	assert_int_equal(vr_resolver_timeout_ms(r), -1);
	/* a callback of an expired query never runs again */
	usleep(100 * 1000);
	assert_int_equal(vr_resolver_process(r), 0);
	assert_int_equal(got.calls, 1);
	vr_resolver_free(r);
	close(fd);
}

/* Freeing a resolver with queries out drops them without callbacks. */
static void test_free_pending(void **state)
{
	char addr[64];
	int fd = silent_server(addr, sizeof(addr));
	struct vr_resolver *r = new_resolver(addr, 10000);

	for (int i = 0; i < 50; i++)
		assert_int_equal(vr_resolve_txt(r, "example.com", never, NULL), 0);
	assert_int_equal(vr_resolver_pending(r), 50);
	assert_int_equal(vr_resolver_wait(r, 50), 50);
	vr_resolver_free(r);
	close(fd);
}

static void test_status_names(void **state)
{
	assert_string_equal(vr_resolve_status_name(VR_RESOLVE_OK), "ok");
	assert_string_equal(vr_resolve_status_name(VR_RESOLVE_NULLMX), "nullmx");
	assert_string_equal(vr_resolve_status_name(VR_RESOLVE_TEMPFAIL), "tempfail");
	assert_string_equal(vr_resolve_status_name((enum vr_resolve_status)99), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rdata_name),
		cmocka_unit_test(test_rdata_name_length),
		cmocka_unit_test(test_rdata_mx),
		cmocka_unit_test(test_rdata_tlsa),
		cmocka_unit_test(test_rdata_txt),
		cmocka_unit_test(test_conf_errors),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_free_pending),
		cmocka_unit_test(test_status_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
