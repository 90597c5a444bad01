/*
 * policy.h - who is sending: the accounts table (JSON Lines, one VPS a line)
 * mapping source IPv4 addresses and IPv6 prefixes, or an SMTP AUTH token, to
 * a VPS account.
 *
 * A table is immutable once loaded. The current one is published with RCU:
 * readers (worker threads, registered with liburcu) call vr_policy_current()
 * inside rcu_read_lock()/rcu_read_unlock() and must not keep account pointers
 * past the unlock; they copy the account id. vr_policy_publish() swaps in a
 * new table and frees the old one after a grace period.
 */
#ifndef VR_POLICY_H
#define VR_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define VR_ACCOUNT_ID_MAX 64

enum vr_over_quota { VR_OVER_QUOTA_DEFER, VR_OVER_QUOTA_HOLD };

struct vr_domain {
	char *name;                  /* lower case, no trailing dot */
	bool verified;
};

enum vr_dkim_alg { VR_DKIM_RSA_SHA256, VR_DKIM_ED25519_SHA256 };

struct evp_pkey_st;

/* One signing key of a domain. The loader has vr_dkim_key_load() read the
 * file into pkey and frees it with the table, so a table in use holds
 * loaded keys only. */
struct vr_dkim_key {
	char *selector;              /* lower case */
	enum vr_dkim_alg alg;
	char *key;                   /* absolute path of the PEM private key */
	struct evp_pkey_st *pkey;    /* OpenSSL's EVP_PKEY; read-only once loaded */
};

struct vr_dkim_domain {
	char *name;                  /* lower case; one of the account's domains or its hostname */
	struct vr_dkim_key *keys;    /* in the order written; at least one */
	unsigned n_keys;
};

struct vr_account {
	char id[VR_ACCOUNT_ID_MAX];
	char *hostname;              /* lower case; may be NULL */
	struct vr_domain *domains;
	unsigned n_domains;
	uint32_t daily_quota;
	enum vr_over_quota over_quota;
	bool unlimited;              /* exempt from the sending windows: the provider's own
					systems and benchmarks, never a customer */
	bool has_auth;
	uint8_t auth_sha256[32];     /* SHA-256 of the AUTH token */
	struct vr_dkim_domain *dkim;
	unsigned n_dkim;
};

struct vr_accounts;

/*
 * Loads a JSON Lines file. Blank lines and lines starting with '#' are
 * skipped. NULL on error with err saying "accounts.jsonl:7: ..." (file, line,
 * what is wrong); duplicate ids or addresses are errors too.
 *
 * One object a line: "id" (required: 1-63 of A-Z a-z 0-9 . _ -), "ips"
 * (IPv4 addresses, IPv6 addresses standing for their /64, prefixes
 * "a.b.c.d/n" / "x::/n"), "hostname", "domains" (names, or {"name": ...,
 * "verified": false} for one pending its DNS check), "daily_quota" (default
 * default_daily_quota), "over_quota" ("defer" or "hold"), "auth_sha256" (64
 * hex digits), "unlimited" (true: exempt from the sending windows), "dkim" ({"domain": [{"selector", "algorithm", "key"}]}). An
 * unknown key or a value of the wrong type is an error. Every DKIM key file
 * is read here (vr_dkim_key_load()): a missing or unreadable file, a key of
 * the wrong type for its algorithm or an RSA key under 1024 bits is an
 * error naming the line and the file.
 */
struct vr_accounts *vr_accounts_load(const char *path, uint32_t default_daily_quota,
				     char *err, size_t errlen);
/* The same, and a daily_quota above max_daily_quota ([limits] per_day_max)
 * is an error; vr_accounts_load() only insists on at least 1. */
struct vr_accounts *vr_accounts_load_max(const char *path, uint32_t default_daily_quota,
					 uint32_t max_daily_quota, char *err, size_t errlen);
void vr_accounts_free(struct vr_accounts *t);
unsigned vr_accounts_count(const struct vr_accounts *t);
/* The i-th account in file order, i < vr_accounts_count(): for listings. */
const struct vr_account *vr_accounts_at(const struct vr_accounts *t, unsigned i);

/* IPv4 by exact address, IPv6 by the longest listed prefix (a bare address
 * means its /64). IPv4-mapped IPv6 is treated as IPv4. NULL if unknown. */
const struct vr_account *vr_accounts_by_addr(const struct vr_accounts *t,
					     const struct sockaddr *sa);
const struct vr_account *vr_accounts_by_id(const struct vr_accounts *t, const char *id);
/* AUTH: user is the account id, the password the token; compared in constant
 * time against auth_sha256. NULL if either is wrong. */
const struct vr_account *vr_accounts_by_token(const struct vr_accounts *t, const char *user,
					      const void *token, size_t token_len);

/* May an account send as a domain (of MAIL FROM or of a header From
 * address)? Its verified domains and its hostname qualify; a listed domain
 * covers itself, not its subdomains; ASCII case is ignored (sender.c says
 * how IDNs compare). */
enum vr_may_send {
	VR_SEND_OK,
	VR_SEND_UNREGISTERED,        /* not the account's */
	VR_SEND_PENDING,             /* listed with "verified": false */
};
enum vr_may_send vr_account_may_send(const struct vr_account *acct, const char *domain,
				     size_t len);

/* RCU-published current table (see above). */
struct vr_accounts *vr_policy_current(void);
/* Publishes t (may be NULL at shutdown) and frees the previous table after
 * synchronize_rcu(). Called by one writer thread at a time. */
void vr_policy_publish(struct vr_accounts *t);

#endif
