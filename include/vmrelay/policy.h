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

struct vr_account {
	char id[VR_ACCOUNT_ID_MAX];
	char *hostname;              /* lower case; may be NULL */
	struct vr_domain *domains;
	unsigned n_domains;
	uint32_t daily_quota;
	enum vr_over_quota over_quota;
	bool has_auth;
	uint8_t auth_sha256[32];     /* SHA-256 of the AUTH token */
};

struct vr_accounts;

/*
 * Loads a JSON Lines file. Blank lines and lines starting with '#' are
 * skipped. NULL on error with err saying "accounts.jsonl:7: ..." (file, line,
 * what is wrong); duplicate ids or addresses are errors too.
 */
struct vr_accounts *vr_accounts_load(const char *path, uint32_t default_daily_quota,
				     char *err, size_t errlen);
void vr_accounts_free(struct vr_accounts *t);
unsigned vr_accounts_count(const struct vr_accounts *t);

/* IPv4 by exact address, IPv6 by the longest listed prefix (a bare address
 * means its /64). IPv4-mapped IPv6 is treated as IPv4. NULL if unknown. */
const struct vr_account *vr_accounts_by_addr(const struct vr_accounts *t,
					     const struct sockaddr *sa);
const struct vr_account *vr_accounts_by_id(const struct vr_accounts *t, const char *id);
/* AUTH: user is the account id, the password the token; compared in constant
 * time against auth_sha256. NULL if either is wrong. */
const struct vr_account *vr_accounts_by_token(const struct vr_accounts *t, const char *user,
					      const void *token, size_t token_len);

/* RCU-published current table (see above). */
struct vr_accounts *vr_policy_current(void);
/* Publishes t (may be NULL at shutdown) and frees the previous table after
 * synchronize_rcu(). Called by one writer thread at a time. */
void vr_policy_publish(struct vr_accounts *t);

#endif
