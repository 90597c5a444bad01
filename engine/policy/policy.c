/*
 * policy.c - publication of the current accounts table with RCU (see
 * vmrelay/policy.h).
 *
 * Threads: worker threads are registered liburcu QSBR readers (see "RCU
 * readers" in vmrelay/ratelimit.h) and call vr_policy_current() inside
 * rcu_read_lock(); one writer at a time (startup, then the reload / control
 * thread) calls vr_policy_publish().
 */
#include <urcu-qsbr.h>

#include "vmrelay/policy.h"

static struct vr_accounts *current;

struct vr_accounts *vr_policy_current(void)
{
	/* Pairs with the release in rcu_xchg_pointer(): a reader that sees the
	 * new pointer sees the table fully built. */
	return rcu_dereference(current);
}

void vr_policy_publish(struct vr_accounts *t)
{
	struct vr_accounts *old = rcu_xchg_pointer(&current, t);

	if (!old)
		return;
	/* Every reader that may still hold old passes a quiescent state (a
	 * registered caller is taken offline meanwhile). */
	synchronize_rcu();
	vr_accounts_free(old);
}
