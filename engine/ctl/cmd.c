/*
 * cmd.c - the control commands: one request line in, one reply line out.
 *
 * A request is a JSON object {"cmd": NAME, "args": [STRING, ...]} ("args"
 * may be left out). Commands are the table below: a name, for a command
 * with sub-commands the word that must be args[0], how many further
 * arguments it takes, its handler and the usage line an error quotes.
 * A handler fills the reply object or says what went wrong in err; every
 * failure, the request's included, is {"ok": false, "error": "..."}, and no
 * request can change anything but what its command is for.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu-qsbr.h>

#include "ctl_impl.h"
#include "vmrelay/cluster.h"
#include "vmrelay/delivery.h"
#include "vmrelay/log.h"
#include "vmrelay/policy.h"
#include "vmrelay/ratelimit.h"
#include "vmrelay/spool.h"

#define ARGS_MAX 5
#define RECENT_MAX 20             /* vps show's refusals and remote errors, each */

typedef int cmd_fn(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
		   size_t errlen);

struct cmd {
	const char *name;
	const char *sub;              /* NULL: none */
	unsigned nargs;               /* after sub */
	unsigned opt;                 /* optional ones after those; the handler checks them */
	cmd_fn *fn;
	const char *usage;
};

static cmd_fn cmd_stats, cmd_metrics, cmd_quota_show, cmd_quota_set, cmd_quota_reset,
	cmd_account_list, cmd_account_show, cmd_account_add, cmd_account_remove,
	cmd_vps_show, cmd_reload, cmd_drain;

static const struct cmd cmds[] = {
	{ "stats", NULL, 0, 0, cmd_stats, "stats" },
	{ "metrics", NULL, 0, 0, cmd_metrics, "metrics" },
	{ "quota", "show", 1, 0, cmd_quota_show, "quota show IP|ID" },
	{ "quota", "set", 2, 0, cmd_quota_set, "quota set ID N" },
	{ "quota", "reset", 1, 0, cmd_quota_reset, "quota reset ID" },
	{ "account", "list", 0, 0, cmd_account_list, "account list" },
	{ "account", "show", 1, 0, cmd_account_show, "account show ID" },
	{ "account", "add", 1, 0, cmd_account_add, "account add JSON-LINE" },
	{ "account", "remove", 1, 0, cmd_account_remove, "account remove ID" },
	{ "vps", "show", 1, 0, cmd_vps_show, "vps show ID|IP" },
	{ "reload", NULL, 0, 0, cmd_reload, "reload" },
	{ "drain", NULL, 0, 0, cmd_drain, "drain" },
	{ "queue", "list", 0, 6, vr_ctl_queue_list,
	  "queue list [--vps ID] [--domain D] [--limit N]" },
	{ "queue", "show", 1, 0, vr_ctl_queue_show, "queue show QID" },
	{ "queue", "hold", 1, 0, vr_ctl_queue_hold, "queue hold QID" },
	{ "queue", "release", 1, 0, vr_ctl_queue_release, "queue release QID" },
	{ "queue", "delete", 1, 0, vr_ctl_queue_delete, "queue delete QID" },
	{ "queue", "flush", 0, 0, vr_ctl_queue_flush, "queue flush" },
	{ "dns-records", NULL, 1, 0, vr_ctl_dns_records, "dns-records DOMAIN" },
	{ "dns-check", NULL, 1, 0, vr_ctl_dns_check, "dns-check DOMAIN" },
};

static int set_u64(json_t *o, const char *key, uint64_t v)
{
	return json_object_set_new(o, key, json_integer((json_int_t)v));
}

/* A snapshot's figures (its table's t[0..n)) into o, by name. */
static void snapshot_json(json_t *o, const struct vr_ctl_counter *t, unsigned n, const void *snap)
{
	for (unsigned i = 0; i < n; i++)
		set_u64(o, t[i].name, vr_ctl_snapshot_read(snap, &t[i]));
}

/* The transport's counters, io_<name>, into each worker's object and the total. */
static void io_stats(const struct vr_ctl_io *io, unsigned n_workers, json_t *workers,
		     json_t *total)
{
	char key[128];

	for (unsigned i = 0; io && i < io->n; i++) {
		const struct vr_ctl_io_counter *k = &io->counters[i];
		uint64_t sum = 0;

		snprintf(key, sizeof(key), "io_%s", k->name);
		for (unsigned w = 0; w < n_workers; w++) {
			uint64_t v = io->read(io->arg, w, k);
			sum += v;
			set_u64(json_array_get(workers, w), key, v);
		}
		set_u64(total, key, sum);
	}
}

static int cmd_stats(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
		     size_t errlen)
{
	const struct vr_smtpd *srv = c->ops.srv;
	json_t *workers = json_array(), *total = json_object(), *spool = json_object();

	(void)argv, (void)err, (void)errlen;
	json_object_set_new(reply, "workers", workers);
	json_object_set_new(reply, "total", total);
	for (unsigned w = 0; w < srv->n_workers; w++) {
		json_t *o = json_object();
		set_u64(o, "worker", w);
		json_array_append_new(workers, o);
	}
	for (unsigned i = 0; i < vr_ctl_n_counters; i++) {
		const struct vr_ctl_counter *k = &vr_ctl_counters[i];
		uint64_t sum = 0;

		for (unsigned w = 0; w < srv->n_workers; w++) {
			uint64_t v = vr_ctl_counter_read(c, w, k);
			sum += v;
			set_u64(json_array_get(workers, w), k->name, v);
		}
		set_u64(total, k->name, sum);
	}
	io_stats(c->ops.io, srv->n_workers, workers, total);
	if (srv->spool) {
		struct vr_spool_stats st;

		vr_spool_stats(srv->spool, &st);
		snapshot_json(spool, vr_ctl_spool_counters, vr_ctl_n_spool_counters, &st);
	}
	json_object_set_new(reply, "spool", spool);
	if (c->ops.delivery) {
		json_t *dl = json_object();
		struct vr_delivery_stats ds;

		vr_delivery_stats(c->ops.delivery, &ds);
		snapshot_json(dl, vr_ctl_delivery_counters, vr_ctl_n_delivery_counters, &ds);
		json_object_set_new(reply, "delivery", dl);
	}
	if (srv->cluster) {
		json_t *cl = json_object();
		struct vr_cluster_stats cs;

		vr_cluster_stats(srv->cluster, &cs);
		json_object_set_new(cl, "redis_up", json_boolean(cs.redis_up));
		snapshot_json(cl, vr_ctl_cluster_counters, vr_ctl_n_cluster_counters, &cs);
		json_object_set_new(reply, "cluster", cl);
	}
	return 0;
}

static int cmd_metrics(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
		       size_t errlen)
{
	struct vr_buf b;

	(void)argv;
	vr_buf_init(&b, 1u << 20);
	if (vr_ctl_metrics(c, &b) < 0 || vr_buf_append(&b, "", 1) < 0) {
		vr_buf_free(&b);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	json_object_set_new(reply, "metrics", json_string((const char *)vr_buf_head(&b)));
	vr_buf_free(&b);
	return 0;
}

/* "1.2.3.4" or "2001:db8::1" -> the account id holding it, into id. */
static int id_of_addr(const char *text, char *id, size_t idlen, char *err, size_t errlen)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

	if (inet_pton(AF_INET, text, &in4->sin_addr) == 1)
		in4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1)
		in6->sin6_family = AF_INET6;
	else
		return 0;           /* not an address: an id */

	rcu_read_lock();
	const struct vr_accounts *t = vr_policy_current();
	const struct vr_account *a = t ? vr_accounts_by_addr(t, (struct sockaddr *)&ss) : NULL;
	if (a)
		snprintf(id, idlen, "%s", a->id);
	rcu_read_unlock();
	if (!a) {
		snprintf(err, errlen, "no account sends from %s", text);
		return -1;
	}
	return 1;
}

/* The windows' writer lock, taken offline (QSBR): its holder may be in a
 * reload waiting for a grace period, which would wait for us. */
static void writer_lock(struct vr_ctl *c)
{
	rcu_thread_offline();
	pthread_mutex_lock(c->ops.writer);
	rcu_thread_online();
}

/* Clustered, the quota commands act on Redis too (vmrelay/cluster.h); it
 * may take up to [cluster] timeout_ms, offline (QSBR). */
static json_t *cluster_windows(const struct vr_cluster *cl, const char *id, uint32_t daily)
{
	static const char *const names[VR_RL_NWINDOWS] = { "minute", "hour", "day" };
	struct vr_rl_verdict v;
	char err[512];

	rcu_thread_offline();
	int rc = vr_cluster_show(cl, id, daily, &v, err, sizeof(err));
	rcu_thread_online();
	if (rc < 0)
		return json_pack("{s:s}", "error", err);
	json_t *o = json_object();
	for (unsigned i = 0; i < VR_RL_NWINDOWS; i++)
		json_object_set_new(o, names[i], json_pack("{s:I,s:I}",
			"used", (json_int_t)v.w[i].used, "limit", (json_int_t)v.w[i].limit));
	json_object_set_new(o, "may_send", json_boolean(v.ok));
	return o;
}

static int cluster_act(const struct vr_cluster *cl, const char *id, uint32_t quota, char *err,
		       size_t errlen)
{
	rcu_thread_offline();
	int rc = quota ? vr_cluster_set_daily(cl, id, quota, err, errlen)
		       : vr_cluster_reset(cl, id, err, errlen);
	rcu_thread_online();
	return rc;
}

/* Whether id is a current account, and whether it is exempt from the windows. */
static int account_known(const char *id, bool *unlimited, char *err, size_t errlen)
{
	rcu_read_lock();
	const struct vr_accounts *t = vr_policy_current();
	const struct vr_account *a = t ? vr_accounts_by_id(t, id) : NULL;
	if (a)
		*unlimited = a->unlimited;
	rcu_read_unlock();
	if (!a) {
		snprintf(err, errlen, "unknown account '%s'", id);
		return -1;
	}
	return 0;
}

static int cmd_quota_show(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
			  size_t errlen)
{
	static const char *const names[VR_RL_NWINDOWS] = { "minute", "hour", "day" };
	char id[VR_ACCOUNT_ID_MAX];
	struct vr_rl_verdict v;
	bool unlimited = false;
	int rc = id_of_addr(argv[0], id, sizeof(id), err, errlen);

	if (rc < 0)
		return -1;
	if (rc == 0)
		snprintf(id, sizeof(id), "%s", argv[0]);
	if (account_known(id, &unlimited, err, errlen) < 0)
		return -1;
	json_object_set_new(reply, "account", json_string(id));
	json_object_set_new(reply, "unlimited", json_boolean(unlimited));
	if (unlimited || !c->ops.srv->rl)
		return 0;
	rc = vr_rl_show(c->ops.srv->rl, id, (int64_t)time(NULL), &v);
	if (rc < 0) {
		snprintf(err, errlen, "account '%s' has no sending windows: %s", id,
			 strerror(-rc));
		return -1;
	}
	json_t *w = json_object();
	for (unsigned i = 0; i < VR_RL_NWINDOWS; i++)
		json_object_set_new(w, names[i], json_pack("{s:I,s:I,s:I}",
			"used", (json_int_t)v.w[i].used, "limit", (json_int_t)v.w[i].limit,
			"resets_at", (json_int_t)v.w[i].resets_at));
	json_object_set_new(reply, "windows", w);
	json_object_set_new(reply, "may_send", json_boolean(v.ok));
	if (c->ops.srv->cluster)
		json_object_set_new(reply, "cluster", cluster_windows(c->ops.srv->cluster, id,
								      v.w[VR_RL_DAY].limit));
	return 0;
}

int vr_ctl_parse_u32(const char *s, uint32_t *out)
{
	uint64_t v = 0;

	if (!*s || (s[0] == '0' && s[1]))
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || (v = v * 10 + (uint64_t)(*s - '0')) > UINT32_MAX)
			return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

static int cmd_quota_set(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
			 size_t errlen)
{
	uint32_t max = c->ops.cfg->per_day_max, n;
	bool unlimited;

	if (vr_ctl_parse_u32(argv[1], &n) < 0 || n == 0) {
		snprintf(err, errlen, "quota '%s' is not a number from 1 to %u", argv[1], max);
		return -1;
	}
	if (n > max) {
		snprintf(err, errlen, "quota %u is above the cap ([limits] per_day_max = %u)", n,
			 max);
		return -1;
	}
	if (account_known(argv[0], &unlimited, err, errlen) < 0)
		return -1;
	writer_lock(c);
	int rc = vr_rl_set_daily(c->ops.srv->rl, argv[0], n);
	pthread_mutex_unlock(c->ops.writer);
	if (rc < 0) {
		snprintf(err, errlen, "quota of '%s': %s", argv[0], strerror(-rc));
		return -1;
	}
	if (c->ops.srv->cluster && cluster_act(c->ops.srv->cluster, argv[0], n, err, errlen) < 0)
		return -1;
	vr_log_info("event=ctl_quota_set account=%s daily_quota=%u", argv[0], n);
	json_object_set_new(reply, "account", json_string(argv[0]));
	set_u64(reply, "daily_quota", n);
	return 0;
}

static int cmd_quota_reset(struct vr_ctl *c, const char *const *argv, json_t *reply,
			   char *err, size_t errlen)
{
	bool unlimited;

	if (account_known(argv[0], &unlimited, err, errlen) < 0)
		return -1;
	writer_lock(c);
	int rc = vr_rl_reset(c->ops.srv->rl, argv[0]);
	pthread_mutex_unlock(c->ops.writer);
	if (rc < 0) {
		snprintf(err, errlen, "quota of '%s': %s", argv[0], strerror(-rc));
		return -1;
	}
	if (c->ops.srv->cluster && cluster_act(c->ops.srv->cluster, argv[0], 0, err, errlen) < 0)
		return -1;
	vr_log_info("event=ctl_quota_reset account=%s", argv[0]);
	json_object_set_new(reply, "account", json_string(argv[0]));
	return 0;
}

static json_t *account_json(const struct vr_account *a)
{
	json_t *o = json_object(), *domains = json_array();

	json_object_set_new(o, "id", json_string(a->id));
	json_object_set_new(o, "hostname", a->hostname ? json_string(a->hostname) : json_null());
	for (unsigned i = 0; i < a->n_domains; i++)
		json_array_append_new(domains, json_pack("{s:s,s:b}", "name", a->domains[i].name,
							 "verified", a->domains[i].verified));
	json_object_set_new(o, "domains", domains);
	set_u64(o, "daily_quota", a->daily_quota);
	json_object_set_new(o, "over_quota", json_string(a->over_quota == VR_OVER_QUOTA_HOLD ?
							 "hold" : "defer"));
	json_object_set_new(o, "unlimited", json_boolean(a->unlimited));
	json_object_set_new(o, "auth", json_boolean(a->has_auth));
	return o;
}

static int cmd_account_list(struct vr_ctl *c, const char *const *argv, json_t *reply,
			    char *err, size_t errlen)
{
	json_t *list = json_array();

	(void)c, (void)argv, (void)err, (void)errlen;
	rcu_read_lock();
	const struct vr_accounts *t = vr_policy_current();
	for (unsigned i = 0, n = t ? vr_accounts_count(t) : 0; i < n; i++)
		json_array_append_new(list, account_json(vr_accounts_at(t, i)));
	rcu_read_unlock();
	json_object_set_new(reply, "accounts", list);
	return 0;
}

static int cmd_account_show(struct vr_ctl *c, const char *const *argv, json_t *reply,
			    char *err, size_t errlen)
{
	(void)c;
	rcu_read_lock();
	const struct vr_accounts *t = vr_policy_current();
	const struct vr_account *a = t ? vr_accounts_by_id(t, argv[0]) : NULL;
	if (a)
		json_object_set_new(reply, "account", account_json(a));
	rcu_read_unlock();
	if (!a) {
		snprintf(err, errlen, "unknown account '%s'", argv[0]);
		return -1;
	}
	return 0;
}

/* After an edit of the file: the same reload as `reload`. The file has
 * changed whatever the reload says, so a failure says so. */
static int reload_after_edit(struct vr_ctl *c, json_t *reply, char *err, size_t errlen)
{
	char why[1024];

	if (!c->ops.reload) {
		snprintf(err, errlen, "%s changed, but this relay cannot reload",
			 c->ops.cfg->accounts);
		return -1;
	}
	if (c->ops.reload(c->ops.arg, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s changed, but the reload failed: %s",
			 c->ops.cfg->accounts, why);
		return -1;
	}
	rcu_read_lock();
	const struct vr_accounts *t = vr_policy_current();
	set_u64(reply, "accounts", t ? vr_accounts_count(t) : 0);
	rcu_read_unlock();
	return 0;
}

static int cmd_account_add(struct vr_ctl *c, const char *const *argv, json_t *reply,
			   char *err, size_t errlen)
{
	char id[VR_ACCOUNT_ID_MAX + 64];

	if (vr_ctl_accounts_add(c, argv[0], id, sizeof(id), err, errlen) < 0)
		return -1;
	vr_log_info("event=ctl_account_add account=%s", id);
	json_object_set_new(reply, "account", json_string(id));
	return reload_after_edit(c, reply, err, errlen);
}

static int cmd_account_remove(struct vr_ctl *c, const char *const *argv, json_t *reply,
			      char *err, size_t errlen)
{
	if (vr_ctl_accounts_remove(c, argv[0], err, errlen) < 0)
		return -1;
	vr_log_info("event=ctl_account_remove account=%s", argv[0]);
	json_object_set_new(reply, "account", json_string(argv[0]));
	return reload_after_edit(c, reply, err, errlen);
}

/* An event holds a whole account id and queue ID (log.h cannot see their sizes). */
_Static_assert(sizeof(((struct vr_log_event *)0)->account) == VR_ACCOUNT_ID_MAX,
	       "vr_log_event.account is VR_ACCOUNT_ID_MAX");
_Static_assert(sizeof(((struct vr_log_event *)0)->qid) == VR_QID_MAX,
	       "vr_log_event.qid is VR_QID_MAX");

/* vps show's recent events of one kind, newest first. */
static json_t *recent_json(const char *id, enum vr_log_event_kind kind)
{
	struct vr_log_event ev[RECENT_MAX];
	unsigned n = vr_log_events_of(id, kind, ev, RECENT_MAX);
	json_t *a = json_array();

	for (unsigned i = 0; a && i < n; i++) {
		json_t *o = json_pack("{s:f,s:i,s:s}", "at", (double)ev[i].at_us / 1e6,
				      "code", (int)ev[i].code, "text", ev[i].text);
		if (o && ev[i].qid[0])
			json_object_set_new(o, "qid", json_string(ev[i].qid));
		json_array_append_new(a, o);
	}
	return a;
}

/* `quota show` with the account in full, its mail waiting in the spool, and
 * what went wrong for it lately: the last refusals the SMTP workers gave
 * it and the last deferrals and bounces remote servers gave its mail (kept
 * by each thread in a ring of its last VR_LOG_EVENTS, vmrelay/log.h: on a
 * busy relay "lately" is short). */
static int cmd_vps_show(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
			size_t errlen)
{
	if (cmd_quota_show(c, argv, reply, err, errlen) < 0)
		return -1;
	const char *id = json_string_value(json_object_get(reply, "account"));
	rcu_read_lock();
	const struct vr_accounts *t = vr_policy_current();
	const struct vr_account *a = t ? vr_accounts_by_id(t, id) : NULL;
	if (a)
		json_object_set_new(reply, "account", account_json(a));
	rcu_read_unlock();
	if (!a) {
		/* removed by a reload between the two looks */
		snprintf(err, errlen, "unknown account '%s'", argv[0]);
		return -1;
	}
	json_object_del(reply, "unlimited");      /* the account says it */
	id = json_string_value(json_object_get(json_object_get(reply, "account"), "id"));
	json_t *queue = vr_ctl_queue_depth(c, id, err, errlen);
	if (!queue)
		return -1;
	json_object_set_new(reply, "queue", queue);
	json_object_set_new(reply, "refusals", recent_json(id, VR_LOG_EVENT_REFUSAL));
	json_object_set_new(reply, "remote_errors", recent_json(id, VR_LOG_EVENT_REMOTE));
	return 0;
}

static int cmd_reload(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
		      size_t errlen)
{
	(void)argv;
	if (!c->ops.reload) {
		snprintf(err, errlen, "this relay cannot reload");
		return -1;
	}
	if (c->ops.reload(c->ops.arg, err, errlen) < 0)
		return -1;
	rcu_read_lock();
	const struct vr_accounts *t = vr_policy_current();
	set_u64(reply, "accounts", t ? vr_accounts_count(t) : 0);
	rcu_read_unlock();
	return 0;
}

static int cmd_drain(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
		     size_t errlen)
{
	(void)argv, (void)reply;
	if (!c->ops.drain) {
		snprintf(err, errlen, "this relay cannot drain");
		return -1;
	}
	vr_log_info("event=drain");
	c->ops.drain(c->ops.arg);
	return 0;
}

static void usage_list(char *out, size_t len)
{
	size_t n = 0;

	out[0] = '\0';
	for (unsigned i = 0; i < VR_ARRAY_SIZE(cmds) && n < len; i++)
		n += (size_t)snprintf(out + n, len - n, "%s%s", i ? ", " : "", cmds[i].usage);
}

/* The entry for name and args, or NULL with err saying what is wrong. */
static const struct cmd *lookup(const char *name, const char *const *argv, unsigned argc,
				char *err, size_t errlen)
{
	char all[512];
	size_t n = 0;

	for (unsigned i = 0; i < VR_ARRAY_SIZE(cmds); i++) {
		const struct cmd *k = &cmds[i];
		if (strcmp(k->name, name) != 0)
			continue;
		/* every usage of the name, should no sub-command match */
		n += (size_t)snprintf(all + n, sizeof(all) - n, "%s%s", n ? " | " : "",
				      k->usage);
		if (k->sub && (argc == 0 || strcmp(argv[0], k->sub) != 0))
			continue;
		unsigned n_args = argc - (k->sub != NULL);
		if (n_args >= k->nargs && n_args <= k->nargs + k->opt)
			return k;
		snprintf(err, errlen, "usage: %s", k->usage);
		return NULL;
	}
	if (n) {
		snprintf(err, errlen, "usage: %s", all);
		return NULL;
	}
	usage_list(all, sizeof(all));
	snprintf(err, errlen, "unknown command '%.64s'; commands: %s", name, all);
	return NULL;
}

/* Checks the request's shape and runs its command. */
static int run(struct vr_ctl *c, const char *req, size_t len, json_t *reply, char *err,
	       size_t errlen)
{
	const char *argv[ARGS_MAX + 1];
	json_error_t jerr;
	json_t *args, *v, *cmd;
	unsigned argc = 0;
	size_t i;
	int rc = -1;
	json_t *j = json_loadb(req, len, JSON_REJECT_DUPLICATES, &jerr);

	if (!j) {
		snprintf(err, errlen, "malformed JSON at column %d: %s", jerr.column, jerr.text);
		return -1;
	}
	cmd = json_object_get(j, "cmd");
	args = json_object_get(j, "args");
	if (!json_is_object(j) || !json_is_string(cmd)) {
		snprintf(err, errlen, "a request is {\"cmd\": NAME, \"args\": [...]}");
		goto out;
	}
	if (json_object_size(j) != 1u + (args != NULL)) {
		snprintf(err, errlen, "a request has only \"cmd\" and \"args\"");
		goto out;
	}
	if (args && !json_is_array(args)) {
		snprintf(err, errlen, "\"args\" must be an array of strings");
		goto out;
	}
	json_array_foreach(args, i, v) {
		if (!json_is_string(v)) {
			snprintf(err, errlen, "\"args\" must be an array of strings");
			goto out;
		}
		if (argc == ARGS_MAX) {
			snprintf(err, errlen, "too many arguments");
			goto out;
		}
		argv[argc++] = json_string_value(v);
	}
	argv[argc] = NULL;
	const struct cmd *k = lookup(json_string_value(cmd), argv, argc, err, errlen);
	if (k)
		rc = k->fn(c, argv + (k->sub != NULL), reply, err, errlen);
out:
	json_decref(j);
	return rc;
}

/* An error may quote a file or a request: keep the reply valid UTF-8. */
static void printable(char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			*s = '?';
	}
}

int vr_ctl_exec(struct vr_ctl *c, const char *req, size_t len, struct vr_buf *out)
{
	char err[1200];
	json_t *reply = json_object();

	if (!reply)
		return -ENOMEM;
	if (run(c, req, len, reply, err, sizeof(err)) < 0) {
		json_decref(reply);
		printable(err);
		reply = json_pack("{s:b,s:s}", "ok", 0, "error", err);
	} else {
		json_object_set_new(reply, "ok", json_true());
	}
	/* compact: one line; jansson escapes newlines inside strings */
	char *s = reply ? json_dumps(reply, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(reply);
	if (!s)
		return -ENOMEM;
	int rc = vr_buf_append(out, s, strlen(s));
	free(s);
	return rc < 0 ? rc : vr_buf_append(out, "\n", 1);
}
