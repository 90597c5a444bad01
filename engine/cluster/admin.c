/*
 * admin.c - the operator's quota commands made cluster-wide (the control
 * socket's quota show, set and reset, when the relay is clustered): what
 * Redis counts for a VPS, a daily quota every node applies, and forgetting
 * a VPS's counts.
 *
 * Threads: the control thread. Each call opens a connection of its own
 * (the cluster thread's are not shared), waits at most timeout_ms for each
 * reply, and closes it; the caller goes RCU-offline around the call.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "vmrelay/common.h"

#include "cluster_impl.h"

/* One command about VPS id's key k; 0 or -1 with err. */
static int admin_cmd(const struct vr_cluster *c, const char *id, const char *verb, int k,
		     const char *arg, char *err, size_t errlen)
{
	char keys[VR_CL_NKEYS][VR_CL_KEY_MAX];
	struct vr_cl_redis r;
	redisReply *rep;
	int ci = -1;
	const char *prefix = vr_cl_admin_open(c, &r);
	const char *argv[] = { verb, keys[k], arg };

	if (vr_cl_keys(prefix, id, keys) < 0) {
		snprintf(err, errlen, "keys of '%s' too long", id);
		return -1;
	}
	int rc = vr_cl_redis_cmd(&r, &ci, arg ? 3 : 2, argv, &rep, err, errlen);
	if (rc == 0)
		freeReplyObject(rep);
	vr_cl_redis_close(&r);
	return rc;
}

int vr_cluster_show(const struct vr_cluster *c, const char *id, uint32_t daily,
		    struct vr_rl_verdict *v, char *err, size_t errlen)
{
	struct vr_cl_redis r;
	struct vr_cl_grant g;
	int ci = -1;
	const char *prefix = vr_cl_admin_open(c, &r);
	/* asks for nothing and settles nothing: no node is named "" */
	struct vr_cl_call call = { .node = "", .ttl_s = 1 };

	vr_cl_admin_limits(c, daily, call.limit);
	int rc = vr_cl_redis_eval(&r, &ci, id, prefix, &call, &g, err, errlen);
	vr_cl_redis_close(&r);
	if (rc < 0)
		return -1;
	*v = (struct vr_rl_verdict){ .ok = true };
	call.limit[VR_RL_DAY] = g.day_limit;
	for (int w = 0; w < VR_RL_NWINDOWS; w++) {
		v->w[w].used = g.used[w];
		v->w[w].limit = call.limit[w];
		if (v->ok && g.used[w] >= call.limit[w]) {
			v->ok = false;
			v->window = (enum vr_rl_window)w;
		}
	}
	return 0;
}

int vr_cluster_set_daily(const struct vr_cluster *c, const char *id, uint32_t quota, char *err,
			 size_t errlen)
{
	char n[16];

	snprintf(n, sizeof(n), "%u", quota);
	return admin_cmd(c, id, "SET", VR_CL_KEY_Q, n, err, errlen);
}

int vr_cluster_reset(const struct vr_cluster *c, const char *id, char *err, size_t errlen)
{
	/* the counts only: outstanding leases are slots nodes hold and may
	 * still spend, and a quota the operator set stays */
	return admin_cmd(c, id, "DEL", VR_CL_KEY_W, NULL, err, errlen);
}
