/*
 * redis.c - the cluster thread's connections to Redis (conn.c: plain or
 * TLS, connect and reply timeout; only this thread ever waits on them),
 * AUTH from the password file, the script loaded with SCRIPT LOAD on every
 * new connection, Redis Cluster's redirections, and Sentinel.
 *
 * hiredis 0.14 has no cluster client, so a VPS remembers the connection
 * that last served it. MOVED names the node that owns the VPS's slot now:
 * we connect there (once; up to VR_CL_CONNS nodes) and the VPS stays
 * there. ASK is a one-off during a slot migration: ASKING, then the same
 * call on the named node, and the VPS stays where it was. A connection
 * that fails is closed; the next call reconnects.
 *
 * With sentinels, the seed is whatever master they name (SENTINEL
 * get-master-addr-by-name, asking each in turn until one answers); a new
 * connection there must say ROLE master. A failed connection or a READONLY
 * reply (the master was demoted under us) forgets the master, so the next
 * connection asks the sentinels again.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/common.h"

#include "cluster_impl.h"

/* Redirections followed for one call: more means a confused cluster. */
#define MAX_HOPS 4

static void conn_drop(struct vr_cl_redis *r, int i)
{
	vr_cl_conn_close(r->conn[i].c);
	r->conn[i].c = NULL;
}

/* One command with a reply that must not be an error. 0 or -1 with err. */
static int simple(struct vr_cl_redis *r, struct vr_cl_conn *conn, int argc, const char **argv,
		  redisReply **out, char *err, size_t errlen)
{
	char why[256];
	redisReply *rep = vr_cl_conn_cmd(conn, argc, argv, why, sizeof(why));

	r->ops++;
	if (!rep) {
		snprintf(err, errlen, "%s: %s", argv[0], why);
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

static int conn_setup(struct vr_cl_redis *r, struct vr_cl_conn *conn, char *err, size_t errlen)
{
	redisReply *rep;

	if (r->password[0]) {
		const char *auth[] = { "AUTH", r->password };
		if (simple(r, conn, 2, auth, NULL, err, errlen) < 0)
			return -1;
	}
	if (r->n_sentinels) {
		/* the sentinels' answer may be stale (a failover under way) */
		const char *role[] = { "ROLE" };
		if (simple(r, conn, 1, role, &rep, err, errlen) < 0)
			return -1;
		bool master = rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
			      rep->element[0]->type == REDIS_REPLY_STRING &&
			      strcmp(rep->element[0]->str, "master") == 0;
		freeReplyObject(rep);
		if (!master) {
			snprintf(err, errlen, "the sentinels' master is not a master (ROLE)");
			return -1;
		}
	}
	const char *load[] = { "SCRIPT", "LOAD", vr_cl_script };
	if (simple(r, conn, 3, load, &rep, err, errlen) < 0)
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

int vr_cl_split_addr(const char *addr, char *host, size_t hostlen, int *port)
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

int vr_cl_master_addr(const struct redisReply *rep, char *out, size_t outlen)
{
	char host[256];
	int port;

	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    rep->element[0]->type != REDIS_REPLY_STRING ||
	    rep->element[1]->type != REDIS_REPLY_STRING)
		return -1;
	const char *h = rep->element[0]->str;
	int n = snprintf(out, outlen, strchr(h, ':') ? "[%s]:%s" : "%s:%s", h,
			 rep->element[1]->str);
	/* what we connect to must read back as host and port */
	if (n <= 0 || (size_t)n >= outlen || vr_cl_split_addr(out, host, sizeof(host), &port) < 0) {
		out[0] = '\0';
		return -1;
	}
	return 0;
}

/* Asks the sentinels in turn for the master's address, into r->master. */
static int sentinel_ask(struct vr_cl_redis *r, char *err, size_t errlen)
{
	const char *argv[] = { "SENTINEL", "get-master-addr-by-name", r->master_name };
	char host[256], why[256] = "no sentinel";
	int port;

	for (unsigned i = 0; i < r->n_sentinels; i++) {
		if (vr_cl_split_addr(r->sentinels[i], host, sizeof(host), &port) < 0)
			continue;
		struct vr_cl_conn *conn = vr_cl_conn_open(host, port, r->tls, r->tls_name,
							  r->timeout_ms, why, sizeof(why));
		if (!conn) {
			r->errors++;
			continue;
		}
		redisReply *rep = vr_cl_conn_cmd(conn, 3, argv, why, sizeof(why));
		r->ops++;
		vr_cl_conn_close(conn);
		bool ok = rep && vr_cl_master_addr(rep, r->master, sizeof(r->master)) == 0;
		if (rep && !ok)
			snprintf(why, sizeof(why), "no master named '%s'", r->master_name);
		freeReplyObject(rep);
		if (ok)
			return 0;
		r->master[0] = '\0';
		r->errors++;
	}
	snprintf(err, errlen, "sentinels: %s", why);
	return -1;
}

int vr_cl_redis_conn(struct vr_cl_redis *r, const char *where, char *err, size_t errlen)
{
	int slot = -1, dropped = -1, port;
	char host[256], addr[sizeof(r->conn[0].addr)];

	if (!where && r->n_sentinels && !r->master[0] && sentinel_ask(r, err, errlen) < 0)
		return -1;
	if (!where)
		where = r->n_sentinels ? r->master : r->seed;
	/* where may be a slot's own address, which is rewritten below */
	if (strlen(where) >= sizeof(addr)) {
		snprintf(err, errlen, "bad Redis address '%.80s'", where);
		return -1;
	}
	memcpy(addr, where, strlen(where) + 1);

	for (int i = 0; i < VR_CL_CONNS; i++) {
		if (strcmp(r->conn[i].addr, addr) == 0) {
			if (r->conn[i].c)
				return i;
			slot = i;
			break;
		}
		if (slot < 0 && !r->conn[i].addr[0])
			slot = i;
		if (dropped < 0 && !r->conn[i].c)
			dropped = i;
	}
	/* a node gone for good (a failed-over master) leaves its slot */
	if (slot < 0)
		slot = dropped;
	if (slot < 0) {
		snprintf(err, errlen, "more than %d Redis nodes", VR_CL_CONNS);
		return -1;
	}
	if (vr_cl_split_addr(addr, host, sizeof(host), &port) < 0) {
		snprintf(err, errlen, "bad Redis address '%s'", addr);
		return -1;
	}
	char why[400];
	struct vr_cl_conn *conn = vr_cl_conn_open(host, port, r->tls, r->tls_name, r->timeout_ms,
						  why, sizeof(why));
	if (!conn || conn_setup(r, conn, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: %s", addr, why);
		vr_cl_conn_close(conn);
		r->errors++;
		if (r->n_sentinels)
			r->master[0] = '\0';
		return -1;
	}
	snprintf(r->conn[slot].addr, sizeof(r->conn[0].addr), "%s", addr);
	r->conn[slot].c = conn;
	return slot;
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
	/* with sentinels every VPS lives on the master, wherever that is now */
	int at = r->n_sentinels ? -1 : *ci;
	bool asking = false;
	char why[256];

	for (int hop = 0; hop <= MAX_HOPS; hop++) {
		if (at < 0 || !r->conn[at].c) {
			at = vr_cl_redis_conn(r, at < 0 ? NULL : r->conn[at].addr, err, errlen);
			if (at < 0)
				return -1;
			if (!asking)
				*ci = at;
		}
		struct vr_cl_conn *conn = r->conn[at].c;
		if (asking) {
			const char *ask[] = { "ASKING" };
			if (simple(r, conn, 1, ask, NULL, err, errlen) < 0)
				goto fail;
		}
		redisReply *rep = vr_cl_conn_cmd(conn, argc, argv, why, sizeof(why));
		r->ops++;
		if (!rep) {
			snprintf(err, errlen, "%s: %s", r->conn[at].addr, why);
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
			if (conn_setup(r, conn, err, errlen) < 0)
				goto fail;
			continue;
		}
		snprintf(err, errlen, "%s: %s", r->conn[at].addr, rep->str);
		/* a master demoted under us (a failover): ask the sentinels again */
		bool demoted = strncmp(rep->str, "READONLY", 8) == 0;
		freeReplyObject(rep);
		if (demoted)
			goto fail;
		r->errors++;
		return -1;
	}
	snprintf(err, errlen, "more than %d redirections", MAX_HOPS);
	r->errors++;
	return -1;
fail:
	r->errors++;
	conn_drop(r, at);
	if (r->n_sentinels)
		r->master[0] = '\0';
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
