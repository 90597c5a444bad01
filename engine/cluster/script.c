/*
 * script.c - the Lua script that is the whole cluster protocol, its keys
 * and its reply.
 *
 * Per VPS, two hashes under one hash tag (so Redis Cluster keeps them on
 * one slot and the script may touch both):
 *
 *   <prefix>{<id>}:w   settled mails: s<second>, m<minute>, d<day> (UTC
 *                      epoch numbers) -> count
 *   <prefix>{<id>}:l   outstanding leases: <node> -> "<slots> <expiry>"
 *   <prefix>{<id>}:q   the daily quota the operator set (quota set), which
 *                      every node then applies; absent: the accounts file's
 *
 * One call settles what the node reports and grants what it asks, at
 * Redis's clock (TIME), so the nodes agree on every boundary:
 *
 *   1. Another node's lease past its expiry was not renewed (the node died
 *      or lost Redis): all its slots are charged as sent at the expiry, a
 *      time no earlier than any mail sent from it, and the lease is gone.
 *      (Grants happen only in calls, so until this call it counted in
 *      full.)
 *   2. The caller's sent mails are charged at the seconds it sent them (no
 *      later than now) and its lease shrinks by them and by what it
 *      returns: until then they counted in the lease, from then on in the
 *      windows they fall in, so no window misses one;
 *      its own lease, even expired, is settled exactly this way: the node
 *      stopped spending it at its own earlier deadline and knows what it
 *      used (after a Redis outage, say).
 *   3. used(window) = settled mails in the last 61 seconds / 61 minutes /
 *      this day + every outstanding lease; the grant is what every window
 *      still has, up to what was asked. So settled + outstanding never
 *      exceeds a limit, and a mail is counted either inside a lease or at
 *      the time it was sent (or a later one): no window ever held more.
 *
 * The caller's lease expiry moves to now + ttl on every call.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>

#include "cluster_impl.h"

/* Both keys live two days: the day window, and a lease that no call has
 * charged yet must not vanish before its day is over. */
const char vr_cl_script[] =
	"local W, L = KEYS[1], KEYS[2]\n"
	"local q = tonumber(redis.call('GET', KEYS[3]))\n"
	"local node, want = ARGV[1], tonumber(ARGV[2])\n"
	"local extra, ret = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
	"local lim = { tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]) }\n"
	"local ttl = tonumber(ARGV[8])\n"
	"if q then lim[3] = q end\n"
	"local t = tonumber(redis.call('TIME')[1])\n"
	"local function charge(at, n)\n"
	"  if n <= 0 then return end\n"
	"  redis.call('HINCRBY', W, 's' .. at, n)\n"
	"  redis.call('HINCRBY', W, 'm' .. math.floor(at / 60), n)\n"
	"  redis.call('HINCRBY', W, 'd' .. math.floor(at / 86400), n)\n"
	"end\n"
	"local others, mine = 0, nil\n"
	"local ls = redis.call('HGETALL', L)\n"
	"for i = 1, #ls, 2 do\n"
	"  local k, exp = string.match(ls[i + 1], '^(%d+) (%d+)$')\n"
	"  k, exp = tonumber(k), tonumber(exp)\n"
	"  if ls[i] == node then\n"
	"    mine = k\n"
	"  elseif exp <= t then\n"
	"    charge(exp, k)\n"
	"    redis.call('HDEL', L, ls[i])\n"
	"  else\n"
	"    others = others + k\n"
	"  end\n"
	"end\n"
	"local known = 0\n"
	"if mine then\n"
	"  known = 1\n"
	"  local lused = 0\n"
	"  for i = 9, #ARGV - 1, 2 do\n"
	"    local n = tonumber(ARGV[i + 1])\n"
	"    charge(math.min(tonumber(ARGV[i]), t), n)\n"
	"    lused = lused + n\n"
	"  end\n"
	"  mine = math.max(mine - lused - ret, 0)\n"
	"end\n"
	"charge(t, extra)\n"
	"local f = {}\n"
	"for s = t - 60, t do f[#f + 1] = 's' .. s end\n"
	"local m0 = math.floor(t / 60)\n"
	"for m = m0 - 60, m0 do f[#f + 1] = 'm' .. m end\n"
	"local d0 = math.floor(t / 86400)\n"
	"f[#f + 1] = 'd' .. d0\n"
	"local v = redis.call('HMGET', W, unpack(f))\n"
	"local held = others + (mine or 0)\n"
	"local used = { held, held, held + (tonumber(v[123]) or 0) }\n"
	"local first = { nil, nil }\n"
	"for i = 1, 61 do\n"
	"  local n = tonumber(v[i]) or 0\n"
	"  used[1] = used[1] + n\n"
	"  if n > 0 and not first[1] then first[1] = t - 61 + i end\n"
	"  n = tonumber(v[61 + i]) or 0\n"
	"  used[2] = used[2] + n\n"
	"  if n > 0 and not first[2] then first[2] = m0 - 61 + i end\n"
	"end\n"
	"local grant, refused, resets = want, 0, 0\n"
	"for w = 1, 3 do\n"
	"  local free = math.max(lim[w] - used[w], 0)\n"
	"  if free < grant then grant, refused = free, w end\n"
	"end\n"
	"if refused == 1 then resets = first[1] and first[1] + 61 or t + ttl\n"
	"elseif refused == 2 then resets = first[2] and (first[2] + 61) * 60 or t + ttl\n"
	"elseif refused == 3 then resets = (d0 + 1) * 86400 end\n"
	"local k = (mine or 0) + grant\n"
	"if k > 0 then\n"
	"  redis.call('HSET', L, node, k .. ' ' .. (t + ttl))\n"
	"else\n"
	"  redis.call('HDEL', L, node)\n"
	"end\n"
	"if redis.call('HLEN', W) > 140 then\n"
	"  for _, key in ipairs(redis.call('HKEYS', W)) do\n"
	"    local kind, n = string.sub(key, 1, 1), tonumber(string.sub(key, 2))\n"
	"    if (kind == 's' and n < t - 60) or (kind == 'm' and n < m0 - 60)\n"
	"       or (kind == 'd' and n < d0) then redis.call('HDEL', W, key) end\n"
	"  end\n"
	"end\n"
	"redis.call('EXPIRE', W, 172800)\n"
	"redis.call('EXPIRE', L, 172800)\n"
	"return { grant, k, t, used[1] + grant, used[2] + grant, used[3] + grant, known,\n"
	"         refused, resets, lim[3] }\n";

int vr_cl_keys(const char *prefix, const char *id, char keys[VR_CL_NKEYS][VR_CL_KEY_MAX])
{
	static const char suffix[VR_CL_NKEYS] = { [VR_CL_KEY_W] = 'w', [VR_CL_KEY_L] = 'l',
						  [VR_CL_KEY_Q] = 'q' };

	for (int k = 0; k < VR_CL_NKEYS; k++) {
		int n = snprintf(keys[k], VR_CL_KEY_MAX, "%s{%s}:%c", prefix, id, suffix[k]);
		if (n < 0 || n >= VR_CL_KEY_MAX)
			return -1;
	}
	return 0;
}

int vr_cl_argv(const struct vr_cl_call *call, const char *sha,
	       char keys[VR_CL_NKEYS][VR_CL_KEY_MAX], char buf[][24], const char *argv[])
{
	const uint32_t nums[] = {
		call->want, call->extra_used, call->returned, call->limit[VR_RL_MINUTE],
		call->limit[VR_RL_HOUR], call->limit[VR_RL_DAY], call->ttl_s,
	};
	size_t b = 0;
	int argc = 0;

	argv[argc++] = "EVALSHA";
	argv[argc++] = sha;
	argv[argc++] = "3";
	for (int k = 0; k < VR_CL_NKEYS; k++)
		argv[argc++] = keys[k];
	argv[argc++] = call->node;
	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++, b++) {
		snprintf(buf[b], 24, "%u", nums[i]);
		argv[argc++] = buf[b];
	}
	for (unsigned i = 0; i < call->n_uses && i < VR_CL_USES_MAX; i++, b += 2) {
		snprintf(buf[b], 24, "%lld", (long long)call->uses[i].at);
		snprintf(buf[b + 1], 24, "%u", call->uses[i].n);
		argv[argc++] = buf[b];
		argv[argc++] = buf[b + 1];
	}
	return argc;
}

void vr_cl_uses_add(struct vr_cl_use *uses, unsigned *n_uses, int64_t at, uint32_t n)
{
	unsigned last = 0;

	if (n == 0)
		return;
	for (unsigned i = 0; i < *n_uses; i++) {
		if (uses[i].at == at) {
			uses[i].n += n;
			return;
		}
		if (uses[i].at > uses[last].at)
			last = i;
	}
	if (*n_uses < VR_CL_USES_MAX) {
		uses[(*n_uses)++] = (struct vr_cl_use){ at, n };
		return;
	}
	uses[last].n += n;
	if (at > uses[last].at)
		uses[last].at = at;
}

int vr_cl_grant_parse(const struct redisReply *r, struct vr_cl_grant *g)
{
	long long v[10];

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 10)
		return -1;
	for (size_t i = 0; i < 10; i++) {
		if (r->element[i]->type != REDIS_REPLY_INTEGER || r->element[i]->integer < 0)
			return -1;
		v[i] = r->element[i]->integer;
	}
	if (v[0] > UINT32_MAX || v[1] > UINT32_MAX || v[7] > VR_RL_NWINDOWS || v[9] > UINT32_MAX)
		return -1;
	*g = (struct vr_cl_grant){
		.granted = (uint32_t)v[0],
		.lease = (uint32_t)v[1],
		.now = v[2],
		.used = { (uint32_t)v[3], (uint32_t)v[4], (uint32_t)v[5] },
		.lease_known = v[6] != 0,
		.refused = (int)v[7],
		.resets_at = v[8],
		.day_limit = (uint32_t)v[9],
	};
	return 0;
}
