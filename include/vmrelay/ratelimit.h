/*
 * ratelimit.h - per-VPS sending windows: mails per minute, per hour and per
 * calendar day, in a liburcu lock-free hash table (cds_lfht) keyed by account
 * id that the workers reach through a flat RCU-published index, with atomic
 * counters so one VPS's sessions on several worker threads share one count.
 * Memory: about 245 bytes per account with 100,000 to 1,000,000 accounts.
 *
 * A recipient reserves a slot at RCPT (it counts at once, so concurrent
 * sessions cannot over-admit), the reservation is confirmed when its message
 * is durably committed and released when the transaction is abandoned.
 *
 * The windows are exact in whole seconds (engine/ratelimit/window.c says
 * precisely): a reservation at second t is granted if and only if the mails
 * counted at seconds t-60 .. t, in calendar minutes t/60-60 .. t/60, and in
 * t's calendar day, plus its own, fit the minute, hour and daily limits. So
 * no real 60 s (3600 s) span ever holds more than the limit, and a VPS is
 * refused only when the last 61 seconds (61 minutes) are full. (Two
 * threads reserving for one VPS across a second boundary may both back off
 * where one of them would have fitted; never both get the last slot.)
 *
 * Threads: every function is called from a thread registered with liburcu's
 * QSBR flavour (see "RCU readers" below), online, outside a read-side
 * critical section; each takes rcu_read_lock itself (free under QSBR).
 * vr_rl_reserve/confirm/release/show are for any number of worker threads
 * at once and never wait. vr_rl_sync, vr_rl_set_daily, vr_rl_reset and
 * vr_rl_restore are for one writer thread at a time (the main thread on
 * reload, the control thread), running alongside the workers; vr_rl_sync
 * may wait for a grace period (it goes offline meanwhile by itself).
 *
 * RCU readers. The relay uses liburcu's QSBR flavour everywhere (meson's
 * `urcu` is liburcu-qsbr; never mix in <urcu.h>, the default flavour: its
 * readers are invisible to QSBR writers). A thread that touches any
 * RCU-protected table (this one, vr_policy_current()'s accounts, anything
 * published with rcu_assign_pointer/rcu_xchg_pointer or kept in a cds_lfht)
 *  1. includes <urcu-qsbr.h> (before any <urcu/...> header, so cds_lfht and
 *     call_rcu map to the QSBR flavour) and calls rcu_register_thread()
 *     before its first lookup: it is then online;
 *  2. calls rcu_quiescent_state() once per loop iteration, where it holds
 *     no pointer it found in a table (such a pointer is good from its
 *     lookup until the thread's next quiescent state or offline);
 *  3. calls rcu_thread_offline() before anything that may block (epoll_wait,
 *     poll, sigwait, sleeps, pthread_join, a lock the writer may hold) and
 *     rcu_thread_online() after it: an online thread that blocks stalls
 *     every writer's grace period, and vr_rl_sync and policy reloads with it;
 *  4. calls rcu_unregister_thread() before it exits.
 * A writer may be a registered thread; synchronize_rcu and rcu_barrier take
 * it offline while they wait. A thread that never reads a table needs none
 * of this.
 *
 * Time is passed in (wall-clock seconds since the epoch, from 1970-01-02 to
 * 2106), so tests replay any schedule. An account's time never runs
 * backwards: a `now` before the newest second it counted counts as that
 * second. The day boundary is midnight in the configured time zone.
 */
#ifndef VR_RATELIMIT_H
#define VR_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrelay/policy.h"

struct vr_rl;

enum vr_rl_window { VR_RL_MINUTE, VR_RL_HOUR, VR_RL_DAY, VR_RL_NWINDOWS };

struct vr_rl_limits {
	uint32_t per_minute;          /* default 60; 1..255 (a second's count is one byte) */
	uint32_t per_hour;            /* default 250 */
	uint32_t per_day_max;         /* cap on any account's daily quota; default 10000 */
	const char *timezone;         /* "UTC" (also NULL or "") or a tz database name,
				       * read from $TZDIR or /usr/share/zoneinfo */
};

/* Why a reservation was refused, and the state of every window (show). */
struct vr_rl_window_state {
	uint32_t used;                /* reserved + confirmed within the window now */
	uint32_t limit;
	int64_t resets_at;            /* when the next slot frees (epoch s): the oldest
				       * counted mail leaves the window, or the next day
				       * starts; 0 if one is free */
};

struct vr_rl_verdict {
	bool ok;
	enum vr_rl_window window;     /* the window that refused, when !ok */
	struct vr_rl_window_state w[VR_RL_NWINDOWS];
};

/* A granted reservation; the caller keeps it until confirm or release. */
struct vr_rl_ticket {
	int64_t at;                   /* epoch s it was counted at */
	uint32_t n;
	uint16_t gen;                 /* the account's ring salts then: a ticket
				       * from before vr_rl_reset releases nothing */
};

/* NULL with err saying why for a limit out of range or an unknown zone. */
struct vr_rl *vr_rl_new(const struct vr_rl_limits *lim, char *err, size_t errlen);
/* No thread may use rl any more. Also waits for deferred frees (rcu_barrier). */
void vr_rl_free(struct vr_rl *rl);

/*
 * Makes the table match an accounts table: adds accounts (with their
 * daily_quota), updates quotas, and removes accounts no longer listed
 * (their entries freed after a grace period, call_rcu). Counters of accounts
 * that stay are kept; a quota is set from the table, so it replaces one set
 * with vr_rl_set_daily. 0; -ERANGE if a daily_quota is 0 or above
 * per_day_max (nothing changed); -ENOMEM (quotas are set, but new accounts
 * may be missing and removed ones still counted until a sync succeeds).
 */
int vr_rl_sync(struct vr_rl *rl, const struct vr_accounts *accounts);
/* The operator's change of one daily quota: -ERANGE above per_day_max or 0,
 * -ENOENT for an unknown account. */
int vr_rl_set_daily(struct vr_rl *rl, const char *id, uint32_t quota);
/* Forgets an account's counts (operator's "quota reset"); -ENOENT for an
 * unknown account. */
int vr_rl_reset(struct vr_rl *rl, const char *id);

/*
 * Reserves n slots (one per recipient) for account id at time now. Returns
 * 0 and fills *ticket, -EDQUOT when a window is full (*v says which, with its
 * count, limit and when a slot frees), -ENOENT for an unknown account,
 * -EINVAL for n == 0 or a time out of range. v may be NULL; on success it
 * holds each window's count including this reservation, resets_at 0.
 */
int vr_rl_reserve(struct vr_rl *rl, const char *id, uint32_t n, int64_t now,
		  struct vr_rl_ticket *ticket, struct vr_rl_verdict *v);
/* The message is durably committed: the reservation becomes a sent mail.
 * (The slots were counted at reserve; nothing in the table changes, the
 * ticket just may not be released any more.) */
void vr_rl_confirm(struct vr_rl *rl, const char *id, const struct vr_rl_ticket *ticket);
/* The transaction was abandoned: the slots are given back. */
void vr_rl_release(struct vr_rl *rl, const char *id, const struct vr_rl_ticket *ticket);

/* Every window of account id at time now (used, limit, resets_at); v->ok
 * says whether one more slot is free, else v->window is the first full one.
 * 0, -ENOENT or -EINVAL. */
int vr_rl_show(struct vr_rl *rl, const char *id, int64_t now, struct vr_rl_verdict *v);

/*
 * Counts n mails sent at time `at` without checking limits: at start, the
 * relay replays what it durably accepted, so a restart or a kill -9 never
 * hands a VPS a fresh quota. Any order of times; a mail older than every
 * window it could count in (or from an earlier day than the one counting)
 * is ignored. A day's count stops at 524,287 (no day can hold more than
 * 1476 x 255 granted mails). 0, -ENOENT or -EINVAL.
 */
int vr_rl_restore(struct vr_rl *rl, const char *id, uint32_t n, int64_t at);

/*
 * The refusal text for a 451 4.7.1 reply, e.g. "daily quota 1000/1000
 * reached, resets 00:00 UTC in 3h12m" or "60 mails per minute reached
 * (60/60), next slot in 14s"; for a granted verdict "within limits (minute
 * 3/60, hour 10/250, day 100/1000)". Printable ASCII. Returns out.
 */
char *vr_rl_explain(const struct vr_rl *rl, const struct vr_rl_verdict *v, int64_t now,
		    char *out, size_t outlen);

#endif
