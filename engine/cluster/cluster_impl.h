/*
 * cluster_impl.h - what the files of engine/cluster share, and what
 * tests/unit/test_cluster.c reaches into:
 *
 *   cluster.c  the table of active VPSes, the workers' side, the thread
 *   lease.c    arithmetic: block size from a VPS's rate, the fail-safe share
 *   script.c   the Lua script that grants and settles leases, its keys, and
 *              the parsing of its reply
 *   redis.c    connections to Redis (AUTH, SCRIPT LOAD, MOVED and ASK,
 *              Sentinel)
 *   conn.c     one connection: socket, timeouts, TLS, the RESP codec
 *   admin.c    the operator's quota commands, cluster-wide
 */
#ifndef VR_CLUSTER_IMPL_H
#define VR_CLUSTER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrelay/cluster.h"

/* --- lease.c --- */

struct vr_cl_sizing {
	uint32_t lease_min, lease_max;
	uint32_t ttl_s;
};

/* Mails per second, smoothed: the old rate weighs in by how short the new
 * sample is (half-life of about 5 s). */
double vr_cl_rate_update(double rate, uint64_t taken, uint64_t dt_ms);
/* Slots to hold for a VPS sending at rate: a lease's life of mail and a
 * quarter, within [lease_min, lease_max]. */
uint32_t vr_cl_lease_want(const struct vr_cl_sizing *sz, double rate);
/* want cut to a third of what every window had left besides this node's
 * own lease at the last call (at least lease_min): a block counts as used
 * until it is settled, so
 * near a limit big blocks on some nodes would leave others refused while
 * slots sit idle; each taking a third of what is left leaves the next
 * node something. */
uint32_t vr_cl_lease_fit(const struct vr_cl_sizing *sz, uint32_t want, uint32_t headroom);
/* Below this many slots a block is topped up: an eighth of want, at least
 * 1. A steady VPS's block (want) lasts past its renewal, so it is renewed
 * and topped up in the same call, once per lease life; a burst tops up
 * early. */
uint32_t vr_cl_lease_low(uint32_t want);

/* Fail-safe counts of one VPS on this node: calendar minute, hour, day. */
struct vr_cl_failsafe {
	int64_t at[VR_RL_NWINDOWS];   /* which minute / hour / day is counted */
	uint32_t n[VR_RL_NWINDOWS];
};

/* Grants up to want slots from the share (percent of each limit, rounded
 * down) left in the current calendar windows at now, and counts them. */
uint32_t vr_cl_failsafe_grant(struct vr_cl_failsafe *fs, const uint32_t limit[VR_RL_NWINDOWS],
			      uint32_t percent, int64_t now, uint32_t want);
/* Slots granted by the share but not used go back to it (same windows only). */
void vr_cl_failsafe_return(struct vr_cl_failsafe *fs, int64_t now, uint32_t n);

/* --- script.c --- */

extern const char vr_cl_script[];

/* Mails of a lease sent in one second (Redis's clock): settled at that
 * second, so a window holds them exactly as long as it should. */
struct vr_cl_use {
	int64_t at;
	uint32_t n;
};
#define VR_CL_USES_MAX 64

/* Arguments of one script call: what the node settles and what it asks. */
struct vr_cl_call {
	const char *node;
	uint32_t want;                /* new slots wanted */
	const struct vr_cl_use *uses; /* slots of this node's lease now sent */
	unsigned n_uses;              /* <= VR_CL_USES_MAX */
	uint32_t extra_used;          /* mails sent outside any lease (fail-safe) */
	uint32_t returned;            /* lease slots given back */
	uint32_t limit[VR_RL_NWINDOWS];
	uint32_t ttl_s;
};

/* The script's answer. */
struct vr_cl_grant {
	uint32_t granted;
	uint32_t lease;               /* this node's lease in Redis now */
	int64_t now;                  /* Redis's clock */
	uint32_t used[VR_RL_NWINDOWS];  /* incl. every lease and this grant */
	bool lease_known;             /* the node's lease was still in Redis */
	int refused;                  /* 0, or 1 + the window that stopped the grant */
	int64_t resets_at;            /* when that window frees a slot */
	uint32_t day_limit;           /* the daily quota in force (the operator's, if set) */
};

#define VR_CL_KEY_MAX 200
enum { VR_CL_KEY_W, VR_CL_KEY_L, VR_CL_KEY_Q, VR_CL_NKEYS };
/* "<prefix>{<id>}:w", ":l" and ":q" (the operator's daily quota): the hash
 * tag keeps a VPS's keys on one Cluster slot. -1 if they do not fit. */
int vr_cl_keys(const char *prefix, const char *id, char keys[VR_CL_NKEYS][VR_CL_KEY_MAX]);
/* Builds the argument vector of an EVALSHA (argv strings in buf, which
 * holds VR_CL_ARGS_MAX). Returns argc. */
#define VR_CL_ARGS_MAX (13 + 2 * VR_CL_USES_MAX)
int vr_cl_argv(const struct vr_cl_call *call, const char *sha,
	       char keys[VR_CL_NKEYS][VR_CL_KEY_MAX], char buf[][24], const char *argv[]);
/* Adds n mails sent at `at` to a settlement list; a full list puts them
 * with its latest second (later is never less: they stay in the window
 * longer, never shorter). */
void vr_cl_uses_add(struct vr_cl_use *uses, unsigned *n_uses, int64_t at, uint32_t n);
/* Reads the script's array reply (integers). 0 or -1 if malformed. */
struct redisReply;
int vr_cl_grant_parse(const struct redisReply *r, struct vr_cl_grant *g);

/* --- conn.c --- */

struct vr_cl_conn;
struct vr_tls_ctx;

/* An engine/tls client context that verifies servers against the CA file
 * ca, with a client certificate if cert and key are not NULL. NULL with
 * err naming the key and file at fault ("tls_ca FILE: ..."). */
struct vr_tls_ctx *vr_cl_tls_ctx_new(const char *ca, const char *cert, const char *key,
				     char *err, size_t errlen);
/* Connects to host:port within timeout_ms, then TLS if tls is not NULL (the
 * server's certificate must name tls_name, or host if it is NULL or "").
 * NULL with err. */
struct vr_cl_conn *vr_cl_conn_open(const char *host, int port, struct vr_tls_ctx *tls,
				   const char *tls_name, uint32_t timeout_ms, char *err,
				   size_t errlen);
/* hiredis's reader, with replies that refuse arrays longer than any we
 * expect (hiredis 0.14 would allocate whatever a server announces). */
struct redisReader *vr_cl_reader_new(void);
/* Sends one command and reads its reply (an error reply is a reply; the
 * caller frees it), within the timeout. NULL with err: the connection is
 * no longer usable. */
struct redisReply *vr_cl_conn_cmd(struct vr_cl_conn *c, int argc, const char **argv,
				  char *err, size_t errlen);
void vr_cl_conn_close(struct vr_cl_conn *c);

/* --- redis.c --- */

#define VR_CL_CONNS 8
#define VR_CL_SENTINELS 8
#define VR_CL_ADDR_MAX 64

struct vr_cl_redis {
	struct {
		struct vr_cl_conn *c;
		char addr[VR_CL_ADDR_MAX];
	} conn[VR_CL_CONNS];
	char seed[300];               /* [cluster] redis; unused with sentinels */
	char sentinels[VR_CL_SENTINELS][VR_CL_ADDR_MAX];
	unsigned n_sentinels;
	char master_name[128];
	char master[VR_CL_ADDR_MAX];  /* as the sentinels last said; "" = ask */
	struct vr_tls_ctx *tls;       /* NULL: plain; the owner's, borrowed */
	char tls_name[256];           /* the name servers' certificates carry */
	char password[256];           /* "" = no AUTH */
	char sha[41];
	uint32_t timeout_ms;
	uint64_t ops, errors, redirects;
};

/* "host:port", "[v6]:port" into host and port. 0 or -1. */
int vr_cl_split_addr(const char *addr, char *host, size_t hostlen, int *port);
/* A sentinel's answer to get-master-addr-by-name as "host:port" in out.
 * 0, or -1 ("" in out) if it is not one. */
int vr_cl_master_addr(const struct redisReply *rep, char *out, size_t outlen);
/* Connects (AUTH, ROLE with sentinels, SCRIPT LOAD) to where (host:port;
 * NULL: the seed, or the master the sentinels name) if not yet. The
 * connection's index, or -1 with err. */
int vr_cl_redis_conn(struct vr_cl_redis *r, const char *where, char *err, size_t errlen);
/*
 * Runs one command on connection *ci (-1: the seed), following MOVED (which
 * updates *ci: the VPS lives there now) and ASK, and loading the script
 * again after NOSCRIPT. 0 with the reply (not an error; the caller frees
 * it) in *out; -1 with err (a failed connection is dropped).
 */
int vr_cl_redis_cmd(struct vr_cl_redis *r, int *ci, int argc, const char **argv,
		    struct redisReply **out, char *err, size_t errlen);
/* The script for VPS id under prefix, through vr_cl_redis_cmd. 0 with *g
 * filled, or -1 with err. */
int vr_cl_redis_eval(struct vr_cl_redis *r, int *ci, const char *id, const char *prefix,
		     const struct vr_cl_call *call, struct vr_cl_grant *g, char *err,
		     size_t errlen);
void vr_cl_redis_close(struct vr_cl_redis *r);

/* --- cluster.c, for admin.c --- */

/* A connection set-up like the cluster thread's (seed or sentinels, AUTH,
 * TLS, timeout), not yet connected, in *r; returns the key prefix. */
const char *vr_cl_admin_open(const struct vr_cluster *c, struct vr_cl_redis *r);
/* [limits] per_minute and per_hour, and daily, as a call's limits. */
void vr_cl_admin_limits(const struct vr_cluster *c, uint32_t daily,
			uint32_t limit[VR_RL_NWINDOWS]);

#endif
