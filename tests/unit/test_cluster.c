/*
 * test_cluster.c - quota leases (engine/cluster): block sizing from the
 * rate, the fail-safe share, refusal texts, the hash-tagged keys, the
 * parameters' errors (one for a [cluster] TLS file names its setting); then, with
 * a real redis-server the test starts on a free loopback port, the Lua
 * script (grants never exceed a window, settling, a dead node's lease
 * charged at its expiry, the day), two nodes in one process sharing one
 * VPS, the fail-safe share with Redis unreachable, and MOVED/ASK through a
 * fake Cluster node that redirects to the real server.
 *
 * Without /usr/bin/redis-server the Redis tests are skipped.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <urcu-qsbr.h>

#include "vmrelay/cluster.h"

#include "../../engine/cluster/cluster_impl.h"

#define REDIS_SERVER "/usr/bin/redis-server"

static pid_t redis_pid;
static int redis_port;
static char redis_addr[64];

/* A port nobody listens on right now (the kernel's pick, released). */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	rcu_thread_offline();
	nanosleep(&ts, NULL);
	rcu_thread_online();
}

static redisContext *redis_cli(void)
{
	redisContext *ctx = redisConnect("127.0.0.1", redis_port);

	assert_non_null(ctx);
	assert_int_equal(ctx->err, 0);
	return ctx;
}

static int redis_start(void **state)
{
	if (access(REDIS_SERVER, X_OK) != 0)
		return 0;
	/* cluster mode: its bus listens on port + 10000 */
	do
		redis_port = free_port();
	while (redis_port > 55000);
	snprintf(redis_addr, sizeof(redis_addr), "127.0.0.1:%d", redis_port);
	redis_pid = fork();
	if (redis_pid == 0) {
		char port[16], conf[64];
		snprintf(port, sizeof(port), "%d", redis_port);
		snprintf(conf, sizeof(conf), "/tmp/vr_test_cluster.%d.conf", (int)getpid());
		/* a one-node Redis Cluster, so ASKING means something */
		if (!freopen("/dev/null", "w", stdout))
			_exit(127);
		execl(REDIS_SERVER, REDIS_SERVER, "--port", port, "--bind", "127.0.0.1",
		      "--save", "", "--appendonly", "no", "--loglevel", "warning",
		      "--cluster-enabled", "yes", "--cluster-config-file", conf, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		redisContext *ctx = redisConnect("127.0.0.1", redis_port);
		bool ok = false;
		if (ctx && !ctx->err) {
			/* every slot here; ready once the cluster says ok */
			redisReply *r = redisCommand(ctx, "CLUSTER ADDSLOTSRANGE 0 16383");
			freeReplyObject(r);
			r = redisCommand(ctx, "CLUSTER INFO");
			ok = r && r->type == REDIS_REPLY_STRING &&
			     strstr(r->str, "cluster_state:ok");
			freeReplyObject(r);
		}
		if (ctx)
			redisFree(ctx);
		if (ok)
			return 0;
		usleep(20000);
	}
	return -1;
}

static int redis_stop(void **state)
{
	char conf[64];

	if (redis_pid > 0) {
		kill(redis_pid, SIGTERM);
		waitpid(redis_pid, NULL, 0);
		snprintf(conf, sizeof(conf), "/tmp/vr_test_cluster.%d.conf", (int)redis_pid);
		unlink(conf);
	}
	return 0;
}

static void need_redis(void)
{
	if (redis_pid <= 0)
		skip();
	redisContext *ctx = redis_cli();
	redisReply *r = redisCommand(ctx, "FLUSHALL");
	assert_non_null(r);
	freeReplyObject(r);
	redisFree(ctx);
}

/* --- lease arithmetic --- */

static void test_rate_and_size(void **state)
{
	const struct vr_cl_sizing sz = { .lease_min = 2, .lease_max = 50, .ttl_s = 10 };
	double rate = 0;

	/* a steady 4 mails/s is learnt within a few half-lives */
	for (int i = 0; i < 60; i++)
		rate = vr_cl_rate_update(rate, 4, 1000);
	assert_true(rate > 3.9 && rate < 4.1);
	/* a lease's life of mail and a quarter: it outlasts the renewal */
	assert_int_equal(vr_cl_lease_want(&sz, 4.0), 50);
	assert_int_equal(vr_cl_lease_want(&sz, 2.0), 25);
	/* one tick of a burst moves it only by what the tick covers */
	double burst = vr_cl_rate_update(rate, 100, 100);
	assert_true(burst > rate && burst < 100);
	/* a quiet VPS costs the minimum, a flood no more than the maximum */
	assert_int_equal(vr_cl_lease_want(&sz, 0), 2);
	assert_int_equal(vr_cl_lease_want(&sz, 0.01), 2);
	assert_int_equal(vr_cl_lease_want(&sz, 1e9), 50);
	/* near a limit a block is at most a third of what is left */
	assert_int_equal(vr_cl_lease_fit(&sz, 40, 100), 33);
	assert_int_equal(vr_cl_lease_fit(&sz, 40, 1000), 40);
	assert_int_equal(vr_cl_lease_fit(&sz, 40, 3), 2);
	assert_int_equal(vr_cl_lease_fit(&sz, 40, UINT32_MAX), 40);
	/* topped up below an eighth */
	assert_int_equal(vr_cl_lease_low(40), 5);
	assert_int_equal(vr_cl_lease_low(1), 1);
	assert_int_equal(vr_cl_lease_low(9), 2);
	/* no time passed: no new information */
	assert_true(vr_cl_rate_update(3.0, 7, 0) == 3.0);
	/* silence decays the rate */
	assert_true(vr_cl_rate_update(4.0, 0, 10000) < 1.1);
}

static void test_failsafe_share(void **state)
{
	const uint32_t lim[VR_RL_NWINDOWS] = { 60, 250, 1000 };
	struct vr_cl_failsafe fs = { 0 };
	int64_t t = 1711800000;          /* a minute, hour and day boundary */

	/* 10 %: 6 a minute, 25 an hour, 100 a day */
	assert_int_equal(vr_cl_failsafe_grant(&fs, lim, 10, t, 10), 6);
	assert_int_equal(vr_cl_failsafe_grant(&fs, lim, 10, t + 59, 10), 0);
	vr_cl_failsafe_return(&fs, t + 59, 2);
	assert_int_equal(vr_cl_failsafe_grant(&fs, lim, 10, t + 59, 10), 2);
	/* each new minute brings 6 until the hour's 25 */
	assert_int_equal(vr_cl_failsafe_grant(&fs, lim, 10, t + 60, 10), 6);
	assert_int_equal(vr_cl_failsafe_grant(&fs, lim, 10, t + 120, 10), 6);
	assert_int_equal(vr_cl_failsafe_grant(&fs, lim, 10, t + 180, 10), 6);
	assert_int_equal(vr_cl_failsafe_grant(&fs, lim, 10, t + 240, 10), 1);
	assert_int_equal(vr_cl_failsafe_grant(&fs, lim, 10, t + 300, 10), 0);
	/* a return into a window that has passed changes nothing */
	vr_cl_failsafe_return(&fs, t + 3600, 5);
	assert_int_equal(vr_cl_failsafe_grant(&fs, lim, 10, t + 3600, 10), 6);
	/* 0 %: nothing at all; 100 %: the whole limit */
	struct vr_cl_failsafe none = { 0 }, all = { 0 };
	assert_int_equal(vr_cl_failsafe_grant(&none, lim, 0, t, 10), 0);
	assert_int_equal(vr_cl_failsafe_grant(&all, lim, 100, t, 100), 60);
}

static void test_uses_list(void **state)
{
	struct vr_cl_use u[VR_CL_USES_MAX];
	unsigned n = 0;

	vr_cl_uses_add(u, &n, 100, 2);
	vr_cl_uses_add(u, &n, 100, 3);
	vr_cl_uses_add(u, &n, 99, 1);
	vr_cl_uses_add(u, &n, 98, 0);
	assert_int_equal(n, 2);
	assert_int_equal(u[0].at, 100);
	assert_int_equal(u[0].n, 5);
	/* full: more go with the latest second, or make it later: never earlier */
	for (int64_t s = 200; n < VR_CL_USES_MAX; s++)
		vr_cl_uses_add(u, &n, s, 1);
	int64_t latest = 200 + VR_CL_USES_MAX - 3;
	assert_int_equal(u[n - 1].at, latest);
	vr_cl_uses_add(u, &n, 150, 4);
	assert_int_equal(n, VR_CL_USES_MAX);
	assert_int_equal(u[n - 1].n, 5);
	assert_int_equal(u[n - 1].at, latest);
	vr_cl_uses_add(u, &n, 5000, 1);
	assert_int_equal(u[n - 1].at, 5000);
	assert_int_equal(u[n - 1].n, 6);
}

static void test_explain(void **state)
{
	char out[200];
	struct vr_cluster_verdict v = { .window = VR_RL_DAY, .used = 1000, .limit = 1000,
					.resets_at = 1000 + 3 * 3600 + 12 * 60 + 5 };

	assert_string_equal(vr_cluster_explain(&v, "vps1", 1000, out, sizeof(out)),
			    "cluster-wide daily quota 1000/1000 reached, next slot in 3h12m");
	v = (struct vr_cluster_verdict){ .window = VR_RL_MINUTE, .used = 60, .limit = 60,
					 .resets_at = 1014 };
	assert_string_equal(vr_cluster_explain(&v, "vps1", 1000, out, sizeof(out)),
			    "cluster-wide per-minute limit 60/60 reached, next slot in 14s");
	v = (struct vr_cluster_verdict){ .pending = true };
	assert_string_equal(vr_cluster_explain(&v, "vps1", 1000, out, sizeof(out)),
			    "cluster quota for VPS vps1 not ready on this node, try again shortly");
	v.redis_away = true;
	assert_string_equal(vr_cluster_explain(&v, "vps1", 1000, out, sizeof(out)),
			    "cluster quota store unreachable and this node's share for VPS vps1 "
			    "used, try again later");
}

static void test_keys(void **state)
{
	char keys[VR_CL_NKEYS][VR_CL_KEY_MAX], id[VR_CL_KEY_MAX];

	/* the hash tag is the VPS: its keys share one Cluster slot */
	assert_int_equal(vr_cl_keys("vr:", "vps1", keys), 0);
	assert_string_equal(keys[VR_CL_KEY_W], "vr:{vps1}:w");
	assert_string_equal(keys[VR_CL_KEY_L], "vr:{vps1}:l");
	assert_string_equal(keys[VR_CL_KEY_Q], "vr:{vps1}:q");
	memset(id, 'x', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	assert_int_equal(vr_cl_keys("vr:", id, keys), -1);
}

static void test_params_refused(void **state)
{
	char err[256];
	struct vr_cluster_params p = {
		.redis = "127.0.0.1:1", .prefix = "t:", .node = "n1", .per_minute = 60,
		.per_hour = 250, .lease_min = 1, .lease_max = 10, .lease_ttl_s = 10,
		.timeout_ms = 100, .failsafe_percent = 10,
	};

	p.lease_min = 11;
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "lease_min 11, lease_max 10"));
	p.lease_min = 1;
	p.failsafe_percent = 101;
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "failsafe_percent 101"));
	p.failsafe_percent = 10;
	p.timezone = "Europe/Berlin";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "UTC only"));
	p.timezone = NULL;
	char name[200];
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	p.node = name;
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "node name"));
	p.node = "";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_string_equal(err, "no node name");
	p.node = "n1";
	p.password_file = "/nonexistent/pw";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "password_file /nonexistent/pw"));
	p.password_file = NULL;
	p.timeout_ms = 3000;
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "timeout_ms 3000 is over a quarter of lease_ttl_s 10"));
	p.timeout_ms = 100;

	/* where Redis is: one address, or sentinels with a master name */
	p.redis = "no-port";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "redis: 'no-port' is not host:port"));
	p.redis = "127.0.0.1:1";
	p.sentinels = "127.0.0.1:26379";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "either redis or sentinels"));
	p.redis = NULL;
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "sentinels need master_name"));
	p.master_name = "mymaster";
	p.sentinels = "127.0.0.1:26379, 127.0.0.1";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "sentinels: '127.0.0.1' is not host:port"));
	p.sentinels = "127.0.0.1:26379, [::1]:26380";
	struct vr_cluster *c = vr_cluster_new(&p, err, sizeof(err));
	assert_non_null(c);
	vr_cluster_free(c);

	/* TLS: a CA is required, files must load, client cert and key pair */
	p.tls_ca = "/etc/ssl/certs/ca-certificates.crt";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "need tls = yes"));
	p.tls = true;
	p.tls_ca = NULL;
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "tls = yes needs tls_ca"));
	p.tls_ca = "/nonexistent/ca.pem";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_string_equal(err, "tls_ca /nonexistent/ca.pem: No such file or directory");
	p.tls_ca = "/etc/ssl/certs/ca-certificates.crt";
	p.tls_cert = "/etc/ssl/certs/ca-certificates.crt";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "tls_cert and tls_key go together"));
	p.tls_key = "/etc/ssl/certs/ca-certificates.crt";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_non_null(strstr(err, "tls_key /etc/ssl/certs/ca-certificates.crt: "));
	/* each file's error names its own setting (engine/tls names the file) */
	p.tls_cert = "/nonexistent/cert.pem";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_string_equal(err, "tls_cert /nonexistent/cert.pem: No such file or directory");
	p.tls_cert = p.tls_key;
	p.tls_ca = "/etc/hostname";
	assert_null(vr_cluster_new(&p, err, sizeof(err)));
	assert_memory_equal(err, "tls_ca /etc/hostname: cannot load CA certificates: ", 51);
	p.tls_ca = "/etc/ssl/certs/ca-certificates.crt";
	p.tls_cert = p.tls_key = NULL;
	c = vr_cluster_new(&p, err, sizeof(err));
	assert_non_null(c);
	vr_cluster_free(c);
}

/* --- the script, against redis-server --- */

static struct vr_cl_redis *redis_new(void)
{
	struct vr_cl_redis *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	snprintf(r->seed, sizeof(r->seed), "%s", redis_addr);
	r->timeout_ms = 1000;
	return r;
}

static struct vr_cl_grant call(struct vr_cl_redis *r, const char *node, uint32_t want,
			       uint32_t lused, uint32_t ret, const uint32_t lim[3])
{
	/* what the node sent, it sent this second */
	struct vr_cl_use use = { .at = (int64_t)time(NULL), .n = lused };
	struct vr_cl_call c = { .node = node, .want = want, .uses = &use, .n_uses = lused > 0,
				.returned = ret, .ttl_s = 30 };
	struct vr_cl_grant g;
	char err[256];
	int ci = -1;

	memcpy(c.limit, lim, sizeof(c.limit));
	if (vr_cl_redis_eval(r, &ci, "v", "t:", &c, &g, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return g;
}

static void test_script_never_over(void **state)
{
	const uint32_t lim[3] = { 20, 250, 1000 };
	struct vr_cl_redis *r = redis_new();
	uint32_t total = 0;
	struct vr_cl_grant g;

	need_redis();
	/* three nodes grab 7 at a time: 7 + 7 + 6, then nothing */
	for (int i = 0; i < 6; i++) {
		g = call(r, (const char *[]){ "a", "b", "c" }[i % 3], 7, 0, 0, lim);
		total += g.granted;
		assert_true(g.used[VR_RL_MINUTE] <= 20);
	}
	assert_int_equal(total, 20);
	assert_int_equal(g.refused, 1 + VR_RL_MINUTE);
	assert_true(g.resets_at > g.now && g.resets_at <= g.now + 61);
	/* b gives back 5 it did not use and settles 2 sent: c gets the 5 */
	g = call(r, "b", 0, 2, 5, lim);
	assert_int_equal(g.lease, 0);
	assert_true(g.lease_known);
	g = call(r, "c", 9, 0, 0, lim);
	assert_int_equal(g.granted, 5);
	assert_int_equal(g.lease, 11);
	assert_int_equal(g.used[VR_RL_MINUTE], 20);
	vr_cl_redis_close(r);
	free(r);
}

static void test_script_day_and_settle(void **state)
{
	const uint32_t lim[3] = { 100, 250, 10 };
	struct vr_cl_redis *r = redis_new();
	struct vr_cl_grant g;

	need_redis();
	g = call(r, "a", 10, 0, 0, lim);
	assert_int_equal(g.granted, 10);
	g = call(r, "b", 1, 0, 0, lim);
	assert_int_equal(g.granted, 0);
	assert_int_equal(g.refused, 1 + VR_RL_DAY);
	assert_int_equal(g.resets_at % 86400, 0);
	/* a sent 4 and returns 6: the day holds 4, b may have 6 */
	g = call(r, "a", 0, 4, 6, lim);
	assert_int_equal(g.used[VR_RL_DAY], 4);
	assert_int_equal(g.used[VR_RL_HOUR], 4);
	g = call(r, "b", 8, 0, 0, lim);
	assert_int_equal(g.granted, 6);
	/* b sent 3 of them 70 s ago: out of the minute window, in the hour */
	struct vr_cl_use old = { .at = g.now - 70, .n = 3 };
	struct vr_cl_call c = { .node = "b", .uses = &old, .n_uses = 1, .ttl_s = 30 };
	int ci = -1;
	char err[256];
	memcpy(c.limit, lim, sizeof(c.limit));
	assert_int_equal(vr_cl_redis_eval(r, &ci, "v", "t:", &c, &g, err, sizeof(err)), 0);
	assert_int_equal(g.lease, 3);
	assert_int_equal(g.used[VR_RL_MINUTE], 4 + 3);
	assert_int_equal(g.used[VR_RL_HOUR], 4 + 3 + 3);
	/* what a node sends is charged once even if it reports with a lease
	 * it no longer has (here: never had) */
	g = call(r, "z", 0, 3, 0, lim);
	assert_false(g.lease_known);
	assert_int_equal(g.used[VR_RL_DAY], 10);
	vr_cl_redis_close(r);
	free(r);
}

/* Nodes agree on the day because only Redis's clock counts: a node whose
 * clock runs two days ahead reports its mails in its future, and they are
 * charged now, in Redis's day and minute. */
static void test_script_one_clock(void **state)
{
	const uint32_t lim[3] = { 20, 250, 1000 };
	struct vr_cl_redis *r = redis_new();
	struct vr_cl_grant g;
	char err[256];
	int ci = -1;

	need_redis();
	g = call(r, "ahead", 5, 0, 0, lim);
	assert_int_equal(g.granted, 5);
	struct vr_cl_use future = { .at = g.now + 2 * 86400, .n = 4 };
	struct vr_cl_call c = { .node = "ahead", .uses = &future, .n_uses = 1, .returned = 1,
				.ttl_s = 30 };
	memcpy(c.limit, lim, sizeof(c.limit));
	assert_int_equal(vr_cl_redis_eval(r, &ci, "v", "t:", &c, &g, err, sizeof(err)), 0);
	assert_int_equal(g.lease, 0);
	assert_int_equal(g.used[VR_RL_MINUTE], 4);
	assert_int_equal(g.used[VR_RL_DAY], 4);
	redisContext *ctx = redis_cli();
	redisReply *rep = redisCommand(ctx, "HGET t:{v}:w d%lld", (long long)(g.now / 86400));
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	assert_string_equal(rep->str, "4");
	freeReplyObject(rep);
	rep = redisCommand(ctx, "HEXISTS t:{v}:w d%lld", (long long)((g.now + 2 * 86400) / 86400));
	assert_int_equal(rep->integer, 0);
	freeReplyObject(rep);
	redisFree(ctx);
	vr_cl_redis_close(r);
	free(r);
}

static void test_script_dead_lease(void **state)
{
	const uint32_t lim[3] = { 20, 250, 1000 };
	struct vr_cl_redis *r = redis_new();
	redisContext *ctx;
	redisReply *rep;
	struct vr_cl_grant g;

	need_redis();
	g = call(r, "a", 0, 0, 0, lim);
	/* a node that died with 5 slots, its lease expired a second ago */
	ctx = redis_cli();
	char v[32];
	snprintf(v, sizeof(v), "5 %lld", (long long)g.now - 1);
	rep = redisCommand(ctx, "HSET t:{v}:l ghost %s", v);
	freeReplyObject(rep);
	/* it is charged as sent at its expiry: never spent twice */
	g = call(r, "a", 20, 0, 0, lim);
	assert_int_equal(g.granted, 15);
	rep = redisCommand(ctx, "HEXISTS t:{v}:l ghost");
	assert_int_equal(rep->integer, 0);
	freeReplyObject(rep);
	/* a live lease of another node counts in full */
	snprintf(v, sizeof(v), "3 %lld", (long long)g.now + 30);
	rep = redisCommand(ctx, "HSET t:{v}:l other %s", v);
	freeReplyObject(rep);
	g = call(r, "a", 0, 0, 15, lim);
	assert_int_equal(g.used[VR_RL_MINUTE], 5 + 3);
	/* a's own lease, expired while Redis was away: a knows it sent 2 of
	 * its 6 and gave 4 back, and exactly that is charged */
	snprintf(v, sizeof(v), "6 %lld", (long long)g.now - 1);
	rep = redisCommand(ctx, "HSET t:{v}:l a %s", v);
	freeReplyObject(rep);
	g = call(r, "a", 0, 2, 4, lim);
	assert_true(g.lease_known);
	assert_int_equal(g.lease, 0);
	assert_int_equal(g.used[VR_RL_MINUTE], 5 + 3 + 2);
	redisFree(ctx);
	vr_cl_redis_close(r);
	free(r);
}

/* --- the operator's commands --- */

static void test_operator_commands(void **state)
{
	const uint32_t lim[3] = { 60, 250, 100 };
	struct vr_cluster_params p = {
		.redis = redis_addr, .prefix = "t:", .node = "ctl", .per_minute = 60,
		.per_hour = 250, .lease_min = 1, .lease_max = 4, .lease_ttl_s = 10,
		.timeout_ms = 500, .failsafe_percent = 10,
	};
	struct vr_cl_redis *r = redis_new();
	struct vr_rl_verdict v;
	struct vr_cl_grant g;
	char err[256];

	need_redis();
	struct vr_cluster *c = vr_cluster_new(&p, err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(vr_cluster_show(c, "v", 100, &v, err, sizeof(err)), 0);
	assert_true(v.ok);
	assert_int_equal(v.w[VR_RL_MINUTE].used, 0);
	assert_int_equal(v.w[VR_RL_HOUR].limit, 250);
	assert_int_equal(v.w[VR_RL_DAY].limit, 100);
	/* a node's lease shows at once, as used */
	call(r, "a", 10, 0, 0, lim);
	assert_int_equal(vr_cluster_show(c, "v", 100, &v, err, sizeof(err)), 0);
	assert_int_equal(v.w[VR_RL_MINUTE].used, 10);
	assert_int_equal(v.w[VR_RL_DAY].used, 10);
	/* the operator's daily quota wins over the one each node passes */
	assert_int_equal(vr_cluster_set_daily(c, "v", 12, err, sizeof(err)), 0);
	g = call(r, "b", 5, 0, 0, lim);
	assert_int_equal(g.granted, 2);
	assert_int_equal(g.refused, 1 + VR_RL_DAY);
	assert_int_equal(g.day_limit, 12);
	assert_int_equal(vr_cluster_show(c, "v", 100, &v, err, sizeof(err)), 0);
	assert_false(v.ok);
	assert_int_equal(v.window, VR_RL_DAY);
	assert_int_equal(v.w[VR_RL_DAY].limit, 12);
	/* a sends 10 of its 10; reset forgets what was sent, not b's lease */
	call(r, "a", 0, 10, 0, lim);
	assert_int_equal(vr_cluster_reset(c, "v", err, sizeof(err)), 0);
	assert_int_equal(vr_cluster_show(c, "v", 100, &v, err, sizeof(err)), 0);
	assert_int_equal(v.w[VR_RL_DAY].used, 2);
	assert_int_equal(v.w[VR_RL_DAY].limit, 12);
	vr_cluster_free(c);
	vr_cl_redis_close(r);
	free(r);

	/* Redis away: an error that says where */
	char nowhere[32];
	snprintf(nowhere, sizeof(nowhere), "127.0.0.1:%d", free_port());
	p.redis = nowhere;
	c = vr_cluster_new(&p, err, sizeof(err));
	assert_int_equal(vr_cluster_show(c, "v", 100, &v, err, sizeof(err)), -1);
	assert_non_null(strstr(err, nowhere));
	vr_cluster_free(c);
}

/* --- the module: two nodes, one VPS --- */

static struct vr_cluster *node_new(const char *name, const char *redis, uint32_t per_minute)
{
	char err[256];
	struct vr_cluster_params p = {
		.redis = redis, .prefix = "t:", .node = name, .per_minute = per_minute,
		.per_hour = 250, .lease_min = 1, .lease_max = 4, .lease_ttl_s = 10,
		.timeout_ms = 300, .failsafe_percent = 10,
	};
	struct vr_cluster *c = vr_cluster_new(&p, err, sizeof(err));

	if (!c)
		fail_msg("%s", err);
	assert_int_equal(vr_cluster_start(c), 0);
	return c;
}

/* Takes one slot from c, waiting up to ms for a block not yet there. */
static int take_wait(struct vr_cluster *c, struct vr_cluster_verdict *v, unsigned ms)
{
	int rc = -EAGAIN;

	for (unsigned i = 0; i <= ms / 20 && rc == -EAGAIN; i++) {
		vr_cluster_touch(c, "vps1", 1000);
		rc = vr_cluster_take(c, "vps1", 1, v);
		if (rc == -EAGAIN)
			sleep_ms(20);
	}
	return rc;
}

static void test_two_nodes_one_quota(void **state)
{
	struct vr_cluster_verdict v;
	struct vr_cluster_stats st;
	unsigned ok[2] = { 0, 0 };
	int rc = 0;

	need_redis();
	struct vr_cluster *n[2] = { node_new("n1", redis_addr, 12), node_new("n2", redis_addr, 12) };
	/* a released slot goes back into the node's block: still 12 below */
	assert_int_equal(take_wait(n[0], &v, 2000), 0);
	vr_cluster_release(n[0], "vps1", 1);
	/* alternate until both are refused: 12 in all, never 13 */
	for (int i = 0; i < 40; i++) {
		rc = take_wait(n[i % 2], &v, 2000);
		if (rc == 0) {
			ok[i % 2]++;
			vr_cluster_confirm(n[i % 2], "vps1", 1);
		} else {
			assert_int_equal(rc, -EDQUOT);
		}
	}
	assert_int_equal(ok[0] + ok[1], 12);
	assert_true(ok[0] > 0 && ok[1] > 0);
	assert_int_equal(rc, -EDQUOT);
	assert_false(v.pending);
	assert_int_equal(v.window, VR_RL_MINUTE);
	assert_int_equal(v.limit, 12);
	vr_cluster_stats(n[0], &st);
	assert_true(st.redis_up);
	assert_true(st.spent > 0);
	assert_true(st.redis_ops > 0);
	vr_cluster_free(n[0]);
	vr_cluster_free(n[1]);
}

static void test_failsafe_when_redis_away(void **state)
{
	struct vr_cluster_verdict v;
	struct vr_cluster_stats st;
	char nowhere[32];
	unsigned ok = 0;
	time_t t0 = time(NULL);

	snprintf(nowhere, sizeof(nowhere), "127.0.0.1:%d", free_port());
	/* per minute 60, 10 %: at most 6 this calendar minute, on this node */
	struct vr_cluster *c = node_new("n1", nowhere, 60);
	/* The thread must first find Redis away: on a loaded machine that
	 * takes a while, and until then a RCPT waits as for a late block. */
	for (int i = 0; i < 500; i++) {
		vr_cluster_touch(c, "vps1", 1000);
		vr_cluster_stats(c, &st);
		if (st.redis_errors > 0)
			break;
		sleep_ms(20);
	}
	for (int i = 0; i < 10; i++) {
		int rc = take_wait(c, &v, 400);
		if (rc == 0) {
			ok++;
			vr_cluster_confirm(c, "vps1", 1);
		} else {
			assert_int_equal(rc, -EAGAIN);
			assert_true(v.pending);
			assert_true(v.redis_away);
		}
	}
	/* a calendar minute that began meanwhile brings its own 6 */
	if (time(NULL) / 60 == t0 / 60)
		assert_int_equal(ok, 6);
	else
		assert_true(ok >= 6 && ok <= 10);
	/* a pass of the thread folds what was confirmed */
	for (int i = 0; i < 250; i++) {
		vr_cluster_stats(c, &st);
		if (st.failsafe_taken == ok)
			break;
		sleep_ms(20);
	}
	assert_false(st.redis_up);
	assert_true(st.redis_errors > 0);
	assert_int_equal(st.failsafe_taken, ok);
	/* a waiting RCPT looking again is not counted again (unless a new
	 * calendar minute brought a new share, when the looks succeed) */
	uint64_t pending = st.pending;
	for (int i = 0; i < 3; i++)
		if (vr_cluster_poll(c, "vps1", 1, &v) == -EAGAIN)
			assert_true(v.pending && v.redis_away);
	vr_cluster_stats(c, &st);
	assert_int_equal(st.pending, pending);
	int rc = vr_cluster_take(c, "vps1", 1, &v);
	vr_cluster_stats(c, &st);
	assert_int_equal(st.pending, pending + (rc == -EAGAIN));
	vr_cluster_free(c);
}

/* --- MOVED and ASK, from a fake Cluster node --- */

struct fake {
	int lfd;
	int port;
	const char *redirect;     /* "MOVED" or "ASK" */
	char to[64];
};

/* Answers SCRIPT LOAD with a sha and every EVALSHA with a redirection. */
static void *fake_main(void *arg)
{
	struct fake *f = arg;
	int fd = accept(f->lfd, NULL, NULL);
	char buf[8192];
	ssize_t n;

	while (fd >= 0 && (n = read(fd, buf, sizeof(buf) - 1)) > 0) {
		char out[128];
		buf[n] = '\0';
		if (strstr(buf, "SCRIPT"))
			snprintf(out, sizeof(out), "$40\r\n%040d\r\n", 0);
		else
			snprintf(out, sizeof(out), "-%s 1234 %s\r\n", f->redirect, f->to);
		if (write(fd, out, strlen(out)) < 0)
			break;
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void redirect_case(const char *kind, bool stays)
{
	const uint32_t lim[3] = { 20, 250, 1000 };
	struct fake f = { .redirect = kind };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	struct vr_cl_call c = { .node = "a", .want = 3, .ttl_s = 30 };
	struct vr_cl_grant g;
	pthread_t t;
	char err[256];
	int ci = -1;

	need_redis();
	f.lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(f.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(f.lfd, 1), 0);
	assert_int_equal(getsockname(f.lfd, (struct sockaddr *)&a, &len), 0);
	snprintf(f.to, sizeof(f.to), "%s", redis_addr);
	pthread_create(&t, NULL, fake_main, &f);

	struct vr_cl_redis *r = redis_new();
	snprintf(r->seed, sizeof(r->seed), "127.0.0.1:%d", ntohs(a.sin_port));
	memcpy(c.limit, lim, sizeof(c.limit));
	if (vr_cl_redis_eval(r, &ci, "v", "t:", &c, &g, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(g.granted, 3);
	assert_int_equal(r->redirects, 1);
	/* MOVED: the VPS lives on the named node now; ASK: a one-off */
	assert_string_equal(r->conn[ci].addr, stays ? r->seed : redis_addr);
	vr_cl_redis_close(r);
	free(r);
	pthread_join(t, NULL);
	close(f.lfd);
}

static void test_moved(void **state)
{
	redirect_case("MOVED", false);
}

static void test_ask(void **state)
{
	redirect_case("ASK", true);
}

/* --- one connection (conn.c) and Sentinel --- */

/* A loopback listener: its fd and port. */
static int listener(int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

static void test_conn_timeout_and_big_reply(void **state)
{
	char err[256], big[100001];
	int port, lfd = listener(&port);

	/* a server that takes the connection and never answers: the call
	 * gives up after the reply timeout, and says so */
	struct vr_cl_conn *c = vr_cl_conn_open("127.0.0.1", port, NULL, NULL, 100, err,
					       sizeof(err));
	assert_non_null(c);
	const char *ping[] = { "PING" };
	assert_null(vr_cl_conn_cmd(c, 1, ping, err, sizeof(err)));
	assert_string_equal(err, "no reply in 100 ms");
	vr_cl_conn_close(c);
	close(lfd);
	/* nobody listening */
	assert_null(vr_cl_conn_open("127.0.0.1", port, NULL, NULL, 100, err, sizeof(err)));
	assert_string_equal(err, "connect: Connection refused");

	/* a reply far larger than one read, through the reader */
	need_redis();
	c = vr_cl_conn_open("127.0.0.1", redis_port, NULL, NULL, 2000, err, sizeof(err));
	assert_non_null(c);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	const char *set[] = { "SET", "t:big", big }, *get[] = { "GET", "t:big" };
	redisReply *rep = vr_cl_conn_cmd(c, 3, set, err, sizeof(err));
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_STATUS);
	freeReplyObject(rep);
	rep = vr_cl_conn_cmd(c, 2, get, err, sizeof(err));
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	assert_int_equal(rep->len, sizeof(big) - 1);
	assert_memory_equal(rep->str, big, sizeof(big) - 1);
	freeReplyObject(rep);
	/* an error reply is a reply */
	const char *bad[] = { "NOSUCHCOMMAND" };
	rep = vr_cl_conn_cmd(c, 1, bad, err, sizeof(err));
	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_ERROR);
	freeReplyObject(rep);
	vr_cl_conn_close(c);
}

/* A fake sentinel: answers every command on each of n connections with
 * the master's address "127.0.0.1", port. */
struct fake_sentinel {
	int lfd, n, master_port;
};

static void *sentinel_main(void *arg)
{
	struct fake_sentinel *f = arg;
	char buf[1024], out[128], port[16];

	for (int k = 0; k < f->n; k++) {
		int fd = accept(f->lfd, NULL, NULL);
		if (fd < 0)
			break;
		snprintf(port, sizeof(port), "%d", f->master_port);
		snprintf(out, sizeof(out), "*2\r\n$9\r\n127.0.0.1\r\n$%zu\r\n%s\r\n",
			 strlen(port), port);
		if (read(fd, buf, sizeof(buf)) > 0 && write(fd, out, strlen(out)) < 0)
			k = f->n;
		close(fd);
	}
	return NULL;
}

static void test_sentinel_discovery(void **state)
{
	struct fake_sentinel f = { .n = 2 };
	int dead_port, dead = listener(&dead_port), port;
	pthread_t t;
	char err[256];

	need_redis();
	close(dead);               /* a sentinel that is down: the next is asked */
	f.lfd = listener(&port);
	f.master_port = redis_port;
	pthread_create(&t, NULL, sentinel_main, &f);
	struct vr_cl_redis *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	r->timeout_ms = 1000;
	r->n_sentinels = 2;
	snprintf(r->sentinels[0], VR_CL_ADDR_MAX, "127.0.0.1:%d", dead_port);
	snprintf(r->sentinels[1], VR_CL_ADDR_MAX, "127.0.0.1:%d", port);
	snprintf(r->master_name, sizeof(r->master_name), "m");
	int ci = vr_cl_redis_conn(r, NULL, err, sizeof(err));
	if (ci < 0)
		fail_msg("%s", err);
	assert_string_equal(r->master, redis_addr);
	assert_string_equal(r->conn[ci].addr, redis_addr);
	/* the master goes away: the failed call forgets it, and the next
	 * connection asks the sentinels again */
	const uint32_t lim[3] = { 20, 250, 1000 };
	struct vr_cl_call c = { .node = "a", .want = 1, .ttl_s = 30 };
	struct vr_cl_grant g;
	memcpy(c.limit, lim, sizeof(c.limit));
	assert_int_equal(vr_cl_redis_eval(r, &ci, "v", "t:", &c, &g, err, sizeof(err)), 0);
	vr_cl_redis_close(r);
	snprintf(r->master, sizeof(r->master), "127.0.0.1:%d", dead_port);
	assert_int_equal(vr_cl_redis_eval(r, &ci, "v", "t:", &c, &g, err, sizeof(err)), -1);
	assert_string_equal(r->master, "");
	assert_int_equal(vr_cl_redis_eval(r, &ci, "v", "t:", &c, &g, err, sizeof(err)), 0);
	assert_string_equal(r->master, redis_addr);
	vr_cl_redis_close(r);
	free(r);
	pthread_join(t, NULL);
	close(f.lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rate_and_size),
		cmocka_unit_test(test_failsafe_share),
		cmocka_unit_test(test_uses_list),
		cmocka_unit_test(test_explain),
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_params_refused),
		cmocka_unit_test(test_script_never_over),
		cmocka_unit_test(test_script_day_and_settle),
		cmocka_unit_test(test_script_one_clock),
		cmocka_unit_test(test_script_dead_lease),
		cmocka_unit_test(test_operator_commands),
		cmocka_unit_test(test_two_nodes_one_quota),
		cmocka_unit_test(test_failsafe_when_redis_away),
		cmocka_unit_test(test_moved),
		cmocka_unit_test(test_ask),
		cmocka_unit_test(test_conn_timeout_and_big_reply),
		cmocka_unit_test(test_sentinel_discovery),
	};

	rcu_register_thread();
	int rc = cmocka_run_group_tests(tests, redis_start, redis_stop);
	rcu_unregister_thread();
	return rc;
}
