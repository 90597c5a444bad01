/*
 * sender.c - which sender domains an account may use: its verified
 * domains and its hostname (root@hostname mail: cron, read receipts).
 *
 * A listed name covers itself only. "example.com" does not cover
 * "shop.example.com": the "or a subdomain the account lists" means
 * a subdomain is usable when it is listed itself, since a customer who
 * controls one name does not necessarily control every name under it.
 *
 * Names compare ASCII case-insensitively and otherwise octet for octet.
 * The accounts file only holds A-labels (account.c), so an internationalised
 * domain matches only when the sender writes it as an A-label too; a UTF-8
 * U-label (SMTPUTF8) is compared as given and matches nothing. We carry no
 * IDNA mapping: a relay that converted would accept names its customers
 * never registered in the form they used.
 */
#include <string.h>
#include <strings.h>

#include "vmrelay/policy.h"

static bool name_is(const char *name, const char *domain, size_t len)
{
	return name && strncasecmp(name, domain, len) == 0 && name[len] == '\0';
}

enum vr_may_send vr_account_may_send(const struct vr_account *acct, const char *domain,
				     size_t len)
{
	if (len == 0 || memchr(domain, '\0', len))
		return VR_SEND_UNREGISTERED;
	if (name_is(acct->hostname, domain, len))
		return VR_SEND_OK;
	for (unsigned i = 0; i < acct->n_domains; i++)
		if (name_is(acct->domains[i].name, domain, len))
			return acct->domains[i].verified ? VR_SEND_OK : VR_SEND_PENDING;
	return VR_SEND_UNREGISTERED;
}
