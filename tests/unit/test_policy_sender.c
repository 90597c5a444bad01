/*
 * test_policy_sender.c - which sender domains an account may use
 * (engine/policy/sender.c), on accounts loaded from a real file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmrelay/policy.h"

static const char accounts[] =
	"{\"id\":\"vps1\",\"ips\":[\"192.0.2.1\"],\"hostname\":\"Host1.Example.NET.\","
	"\"domains\":[\"example.com\",\"shop.example.org\",\"xn--bcher-kva.example\","
	"{\"name\":\"pending.example\",\"verified\":false},{\"name\":\"ok.example\","
	"\"verified\":true}]}\n"
	"{\"id\":\"vps2\",\"ips\":[\"192.0.2.2\"]}\n";

static struct vr_accounts *load(void)
{
	char path[] = "/tmp/vr_test_sender.XXXXXX", err[256];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, accounts, sizeof(accounts) - 1), (ssize_t)sizeof(accounts) - 1);
	close(fd);
	struct vr_accounts *t = vr_accounts_load(path, 1000, err, sizeof(err));
	unlink(path);
	if (!t)
		fail_msg("%s", err);
	return t;
}

static enum vr_may_send may(const struct vr_account *a, const char *domain)
{
	return vr_account_may_send(a, domain, strlen(domain));
}

static void test_rules(void **state)
{
	struct vr_accounts *t = load();
	const struct vr_account *a = vr_accounts_by_id(t, "vps1");
	static const struct { const char *domain; enum vr_may_send v; } cases[] = {
		{ "example.com", VR_SEND_OK },
		{ "EXAMPLE.Com", VR_SEND_OK },              /* ASCII case is no difference */
		{ "host1.example.net", VR_SEND_OK },        /* the hostname: root@host mail */
		{ "HOST1.example.net", VR_SEND_OK },
		{ "shop.example.org", VR_SEND_OK },         /* a subdomain listed itself */
		{ "ok.example", VR_SEND_OK },
		{ "sub.example.com", VR_SEND_UNREGISTERED },  /* not listed: not covered */
		{ "example.org", VR_SEND_UNREGISTERED },      /* the parent of a listed one */
		{ "example.net", VR_SEND_UNREGISTERED },      /* the hostname's parent */
		{ "xample.com", VR_SEND_UNREGISTERED },
		{ "example.co", VR_SEND_UNREGISTERED },
		{ "example.com.evil", VR_SEND_UNREGISTERED },
		{ "example.com.", VR_SEND_UNREGISTERED },     /* callers pass checked names */
		{ "pending.example", VR_SEND_PENDING },
		{ "Pending.Example", VR_SEND_PENDING },
		/* IDNs: the file holds A-labels; the U-label is not converted */
		{ "xn--bcher-kva.example", VR_SEND_OK },
		{ "XN--BCHER-KVA.example", VR_SEND_OK },
		{ "b\xc3\xbc\x63her.example", VR_SEND_UNREGISTERED },
		{ "[192.0.2.1]", VR_SEND_UNREGISTERED },
		{ "", VR_SEND_UNREGISTERED },
	};

	assert_non_null(a);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (may(a, cases[i].domain) != cases[i].v)
			fail_msg("'%s': %d, want %d", cases[i].domain, may(a, cases[i].domain),
				 cases[i].v);

	/* the length is the name's: a longer buffer is not read past it */
	assert_int_equal(vr_account_may_send(a, "example.comX", 11), VR_SEND_OK);
	assert_int_equal(vr_account_may_send(a, "example.com\0evil", 16), VR_SEND_UNREGISTERED);

	/* no hostname, no domains: nothing */
	const struct vr_account *b = vr_accounts_by_id(t, "vps2");
	assert_int_equal(may(b, "example.com"), VR_SEND_UNREGISTERED);
	assert_int_equal(may(b, "host1.example.net"), VR_SEND_UNREGISTERED);
	vr_accounts_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rules),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
