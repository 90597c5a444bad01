/*
 * cluster.h - one quota for a VPS across many relay nodes: quota leases on
 * Redis (issue 8).
 *
 * A node takes a block ("lease") of a VPS's remaining minute, hour and day
 * allowance from Redis in one atomic step (a Lua script, EVALSHA), spends
 * it locally, and gives back what it did not use when the block ages out or
 * the node stops. Redis counts every outstanding lease as spent, and a
 * settled slot at the second the node says it was sent (on Redis's clock,
 * rounded later), so across all nodes no 61 s, 61 min or calendar day
 * (UTC, on Redis's clock) ever holds more than the limit. A lease that is
 * not renewed (its node crashed) counts as fully spent at its expiry: never
 * spent twice; its minute and hour slots come back one window after the
 * expiry, its unused day slots do not. The guarantees assume Redis keeps
 * its data (appendonly) across a restart.
 *
 * The local windows (ratelimit.h) still apply on each node; this is a
 * second gate behind them.
 *
 * Prefetched, and waited for only when cold: the cluster thread keeps each
 * active VPS's block ahead of need (its rate times lease_ttl_s and a
 * quarter, cut to a third of what the windows have left: a steady VPS
 * calls Redis about once per lease_ttl_s, which renews and tops up at
 * once; a quiet one once per mail and once more to give the block back
 * after 15 s without mail), so a RCPT only looks at local atomics and
 * never waits on the common path. A VPS becomes active at MAIL
 * (vr_cluster_touch); if its first block has not arrived by RCPT, the
 * session parks that RCPT's reply (engine/smtp, VR_SMTP_RCPT_WAIT: the
 * worker goes on, the session looks again on its timer) rather than refuse
 * a VPS under its limit. A 451 for a full window comes only when Redis said
 * the allowance is spent.
 *
 * Redis is one server, a master its Sentinels name, or a Redis Cluster;
 * plain TCP or TLS (the server's certificate checked against a CA and its
 * name), AUTH from a file.
 *
 * Redis unreachable: each node admits at most failsafe_percent of each
 * limit per calendar minute, hour and day on its own, logs it, counts it
 * in stats, and settles those mails into Redis when it comes back. Never
 * fail-open; 0 refuses every clustered VPS while Redis is away.
 *
 * Threads: vr_cluster_touch/take/confirm/release/stats are for any number
 * of worker threads registered with liburcu's QSBR flavour (online, outside
 * a read-side critical section; vmrelay/ratelimit.h) and never wait.
 * new/start/stop/free are for the main thread. The Redis I/O is on the
 * cluster's own thread.
 */
#ifndef VR_CLUSTER_H
#define VR_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrelay/ratelimit.h"

struct vr_cluster;

struct vr_cluster_params {
	const char *redis;            /* "host:port" of Redis (or one Cluster node) ... */
	const char *sentinels;        /* ... or "host:port, host:port" of Sentinels */
	const char *master_name;      /* the master the sentinels watch */
	bool tls;                     /* TLS to Redis (and to the sentinels) */
	const char *tls_ca;           /* CA file the servers' certificates chain to */
	const char *tls_cert, *tls_key;  /* client certificate; NULL or "": none */
	const char *tls_server_name;  /* name in the certificates; NULL or "": the host */
	const char *prefix;           /* key prefix, e.g. "vmrelay:" */
	const char *node;             /* this node's name in the lease table; unique */
	const char *password_file;    /* AUTH password, first line; NULL or "": none */
	uint32_t per_minute, per_hour;  /* [limits]; the day is each account's quota */
	uint32_t lease_min, lease_max;  /* slots per block; 1 <= min <= max */
	uint32_t lease_ttl_s;         /* a block's life before it must be renewed */
	uint32_t timeout_ms;          /* connect and reply timeout */
	uint32_t failsafe_percent;    /* share of each limit per node with Redis away */
	const char *timezone;         /* day boundary, as [limits] timezone */
};

/* A refusal: which window is spent cluster-wide, and its state. */
struct vr_cluster_verdict {
	enum vr_rl_window window;
	uint32_t used, limit;
	int64_t resets_at;            /* epoch s, 0 if unknown */
	bool pending;                 /* no block yet / Redis away: not a full window */
	bool redis_away;              /* pending because Redis does not answer */
};

struct vr_cluster_stats {
	bool redis_up;
	uint64_t redis_ops;           /* commands sent to Redis */
	uint64_t redis_errors;        /* failed connects, timeouts, error replies */
	uint64_t redirects;           /* MOVED and ASK replies followed */
	uint64_t leases;              /* blocks granted */
	uint64_t slots_leased;
	uint64_t slots_returned;
	uint64_t taken;               /* slots the workers took */
	uint64_t pending;             /* RCPTs that found no block at once (and waited) */
	uint64_t spent;               /* RCPTs refused: the allowance is spent cluster-wide */
	uint64_t failsafe_taken;      /* slots taken while Redis was away */
	uint64_t active;              /* VPSes with a block or demand now */
};

/* NULL with err saying why (bad parameter, unreadable password file, TLS
 * files that do not load), naming the [cluster] key. Connects to nothing,
 * so vmrelay --check uses it to validate [cluster]. */
struct vr_cluster *vr_cluster_new(const struct vr_cluster_params *p, char *err, size_t errlen);
/* Starts the cluster thread. 0 or -errno. */
int vr_cluster_start(struct vr_cluster *c);
/* Stops the thread after giving every unused slot back to Redis (bounded by
 * timeout_ms). Call once the workers are gone. */
void vr_cluster_stop(struct vr_cluster *c);
void vr_cluster_free(struct vr_cluster *c);

/* The VPS is about to send (MAIL): have a block ready for it. daily is its
 * quota (the account's daily_quota). */
void vr_cluster_touch(struct vr_cluster *c, const char *id, uint32_t daily);
/*
 * Takes n slots from the VPS's block. 0; -EDQUOT when Redis said a window
 * is spent (*v says which, pending false); -EAGAIN when no block is here
 * yet, or Redis is away and the fail-safe share is used (v->pending true,
 * v->redis_away says which). v may be NULL.
 */
int vr_cluster_take(struct vr_cluster *c, const char *id, uint32_t n,
		    struct vr_cluster_verdict *v);
/* vr_cluster_take again for a RCPT already waiting on -EAGAIN: the same,
 * but the wait is not counted again, and the cluster thread is woken only
 * once per look it takes. */
int vr_cluster_poll(struct vr_cluster *c, const char *id, uint32_t n,
		    struct vr_cluster_verdict *v);
/* Taken slots became sent mail (the message is committed) ... */
void vr_cluster_confirm(struct vr_cluster *c, const char *id, uint32_t n);
/* ... or were not used (the transaction was abandoned). */
void vr_cluster_release(struct vr_cluster *c, const char *id, uint32_t n);

void vr_cluster_stats(const struct vr_cluster *c, struct vr_cluster_stats *st);

/*
 * The operator's quota commands, cluster-wide: for the control thread
 * (RCU-offline: they wait on Redis, at most timeout_ms a reply). 0, or -1
 * with err (Redis unreachable, say).
 *
 * show: what Redis counts for VPS id now, every node's outstanding lease
 * included (used, limit; resets_at 0); daily is the account's quota, which
 * one set with vr_cluster_set_daily overrides. set_daily: the daily quota
 * every node applies from now on (the caller checks the cap). reset:
 * forgets the VPS's counts (not the leases nodes hold, nor a quota set).
 */
int vr_cluster_show(const struct vr_cluster *c, const char *id, uint32_t daily,
		    struct vr_rl_verdict *v, char *err, size_t errlen);
int vr_cluster_set_daily(const struct vr_cluster *c, const char *id, uint32_t quota, char *err,
			 size_t errlen);
int vr_cluster_reset(const struct vr_cluster *c, const char *id, char *err, size_t errlen);

/* "cluster-wide daily quota 1000/1000 reached, next slot in 3h12m", "cluster
 * quota for VPS x not ready on this node, try again shortly" or "cluster
 * quota store unreachable and this node's share for VPS x used, try again
 * later". Returns out. */
char *vr_cluster_explain(const struct vr_cluster_verdict *v, const char *id, int64_t now,
			 char *out, size_t outlen);

#endif
