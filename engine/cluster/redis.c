/*
 * redis.c - the cluster thread's connections to Redis: hiredis's blocking
 * client with a connect and reply timeout (only this thread ever waits on
 * it), AUTH from the password file, the script loaded with SCRIPT LOAD on
 * every new connection, and Redis Cluster's redirections.
 *
 * hiredis 0.14 has no cluster client, so a VPS remembers the connection
 * that last served it. MOVED names the node that owns the VPS's slot now:
 * we connect there (once; up to VR_CL_CONNS nodes) and the VPS stays
 * there. ASK is a one-off during a slot migration: ASKING, then the same
 * call on the named node, and the VPS stays where it was. A connection
 * that fails is closed; the next call reconnects.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "vmrelay/common.h"

#include "cluster_impl.h"

/* Redirections followed for one call: more means a confused cluster. */
#define MAX_HOPS 4

static struct timeval tv_of(uint32_t ms)
{
	return (struct timeval){ .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
}

static void conn_drop(struct vr_cl_redis *r, int i)
{
	if (r->conn[i].ctx)
		redisFree(r->conn[i].ctx);
	r->conn[i].ctx = NULL;
}

/* One command with a reply that must not be an error. 0 or -1 with err. */
static int simple(struct vr_cl_redis *r, redisContext *ctx, int argc, const char **argv,
		  redisReply **out, char *err, size_t errlen)
{
	redisReply *rep = redisCommandArgv(ctx, argc, argv, NULL);

	r->ops++;
	if (!rep) {
		snprintf(err, errlen, "%s: %s", argv[0], ctx->errstr[0] ? ctx->errstr : "no reply");
		return -1;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "%s: %s", argv[0], rep->str);
		freeReplyObject(rep);
		return -1;
	}
	if (out)
		*out = rep;
	else
		freeReplyObject(rep);
	return 0;
}

static int conn_setup(struct vr_cl_redis *r, redisContext *ctx, char *err, size_t errlen)
{
	redisReply *rep;

	if (r->password[0]) {
		const char *auth[] = { "AUTH", r->password };
		if (simple(r, ctx, 2, auth, NULL, err, errlen) < 0)
			return -1;
	}
	const char *load[] = { "SCRIPT", "LOAD", vr_cl_script };
	if (simple(r, ctx, 3, load, &rep, err, errlen) < 0)
		return -1;
	if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
		snprintf(err, errlen, "SCRIPT LOAD: unexpected reply");
		freeReplyObject(rep);
		return -1;
	}
	memcpy(r->sha, rep->str, 41);
	freeReplyObject(rep);
	return 0;
}

/* "host:port", "[v6]:port" into host and port. */
static int split_addr(const char *addr, char *host, size_t hostlen, int *port)
{
	const char *colon = strrchr(addr, ':');
	const char *h = addr;
	size_t n;

	if (!colon)
		return -1;
	n = (size_t)(colon - addr);
	if (*h == '[' && n >= 2 && colon[-1] == ']') {
		h++;
		n -= 2;
	}
	if (n == 0 || n >= hostlen)
		return -1;
	memcpy(host, h, n);
	host[n] = '\0';
	*port = atoi(colon + 1);
	return *port > 0 && *port < 65536 ? 0 : -1;
}

int vr_cl_redis_conn(struct vr_cl_redis *r, const char *where, char *err, size_t errlen)
{
	int free_slot = -1, port;
	char host[256], addr[sizeof(r->conn[0].addr)];

	/* where may be a slot's own address, which is rewritten below */
	if (strlen(where) >= sizeof(addr)) {
		snprintf(err, errlen, "bad Redis address '%.80s'", where);
		return -1;
	}
	memcpy(addr, where, strlen(where) + 1);

	for (int i = 0; i < VR_CL_CONNS; i++) {
		if (strcmp(r->conn[i].addr, addr) == 0) {
			if (r->conn[i].ctx)
				return i;
			free_slot = i;
			break;
		}
		if (free_slot < 0 && !r->conn[i].addr[0])
			free_slot = i;
	}
	if (free_slot < 0) {
		snprintf(err, errlen, "more than %d Redis nodes", VR_CL_CONNS);
		return -1;
	}
	if (split_addr(addr, host, sizeof(host), &port) < 0) {
		snprintf(err, errlen, "bad Redis address '%s'", addr);
		return -1;
	}
	redisContext *ctx = redisConnectWithTimeout(host, port, tv_of(r->timeout_ms));
	if (!ctx || ctx->err) {
		snprintf(err, errlen, "connect %s: %s", addr, ctx ? ctx->errstr : "out of memory");
		if (ctx)
			redisFree(ctx);
		r->errors++;
		return -1;
	}
	if (redisSetTimeout(ctx, tv_of(r->timeout_ms)) != REDIS_OK ||
	    conn_setup(r, ctx, err, errlen) < 0) {
		redisFree(ctx);
		r->errors++;
		return -1;
	}
	snprintf(r->conn[free_slot].addr, sizeof(r->conn[0].addr), "%s", addr);
	r->conn[free_slot].ctx = ctx;
	return free_slot;
}

/* "MOVED 3999 127.0.0.1:6381" / "ASK ...": the address, or NULL. */
static const char *redirect_to(const char *msg, const char *kind)
{
	size_t n = strlen(kind);

	if (strncmp(msg, kind, n) != 0 || msg[n] != ' ')
		return NULL;
	const char *sp = strchr(msg + n + 1, ' ');
	return sp ? sp + 1 : NULL;
}

int vr_cl_redis_cmd(struct vr_cl_redis *r, int *ci, int argc, const char **argv,
		    struct redisReply **out, char *err, size_t errlen)
{
	int at = *ci;
	bool asking = false;

	for (int hop = 0; hop <= MAX_HOPS; hop++) {
		if (at < 0 || !r->conn[at].ctx) {
			at = vr_cl_redis_conn(r, at < 0 ? r->seed : r->conn[at].addr, err, errlen);
			if (at < 0)
				return -1;
			if (!asking)
				*ci = at;
		}
		redisContext *ctx = r->conn[at].ctx;
		if (asking) {
			const char *ask[] = { "ASKING" };
			if (simple(r, ctx, 1, ask, NULL, err, errlen) < 0)
				goto fail;
		}
		redisReply *rep = redisCommandArgv(ctx, argc, argv, NULL);
		r->ops++;
		if (!rep) {
			snprintf(err, errlen, "%s: %s", r->conn[at].addr,
				 ctx->errstr[0] ? ctx->errstr : "no reply");
			goto fail;
		}
		if (rep->type != REDIS_REPLY_ERROR) {
			*out = rep;
			return 0;
		}
		const char *moved = redirect_to(rep->str, "MOVED");
		const char *ask = redirect_to(rep->str, "ASK");
		if (moved || ask) {
			char to[64];
			snprintf(to, sizeof(to), "%s", moved ? moved : ask);
			freeReplyObject(rep);
			r->redirects++;
			at = vr_cl_redis_conn(r, to, err, errlen);
			if (at < 0)
				return -1;
			asking = ask != NULL;
			if (moved)
				*ci = at;
			continue;
		}
		if (strncmp(rep->str, "NOSCRIPT", 8) == 0) {
			/* A restarted Redis forgot the script (its sha stays). */
			freeReplyObject(rep);
			if (conn_setup(r, ctx, err, errlen) < 0)
				goto fail;
			continue;
		}
		snprintf(err, errlen, "%s: %s", r->conn[at].addr, rep->str);
		freeReplyObject(rep);
		r->errors++;
		return -1;
	}
	snprintf(err, errlen, "more than %d redirections", MAX_HOPS);
	r->errors++;
	return -1;
fail:
	r->errors++;
	conn_drop(r, at);
	return -1;
}

int vr_cl_redis_eval(struct vr_cl_redis *r, int *ci, const char *id, const char *prefix,
		     const struct vr_cl_call *call, struct vr_cl_grant *g, char *err,
		     size_t errlen)
{
	char keys[VR_CL_NKEYS][VR_CL_KEY_MAX], buf[VR_CL_ARGS_MAX][24];
	const char *argv[VR_CL_ARGS_MAX];
	redisReply *rep;

	if (vr_cl_keys(prefix, id, keys) < 0) {
		snprintf(err, errlen, "keys of '%s' too long", id);
		return -1;
	}
	int argc = vr_cl_argv(call, r->sha, keys, buf, argv);
	if (vr_cl_redis_cmd(r, ci, argc, argv, &rep, err, errlen) < 0)
		return -1;
	int rc = vr_cl_grant_parse(rep, g);
	freeReplyObject(rep);
	if (rc < 0) {
		snprintf(err, errlen, "malformed script reply");
		r->errors++;
	}
	return rc;
}

void vr_cl_redis_close(struct vr_cl_redis *r)
{
	for (int i = 0; i < VR_CL_CONNS; i++)
		conn_drop(r, i);
}
