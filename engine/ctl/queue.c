/*
 * queue.c - the operator's view of the delivery queue (issue 6):
 * `queue list [--vps ID] [--domain D] [--limit N]` (one VPS's mail, mail
 * with a recipient at D still to deliver), `queue show QID`,
 * `queue hold|release|delete QID` and `queue flush`.
 *
 * list comes from the delivery threads' memory (vr_delivery_walk, which
 * stops at the limit unless --domain needs every message counted), vps
 * show's queue depth and list's total from counters they keep
 * (vr_delivery_depth, read without asking them): reading the spool back cost 40-120 ms a command
 * with 20,000 messages queued, and the SMTP side its disk. Without delivery
 * threads (a relay that only spools) both read the spool.
 *
 * list answers at most --limit messages (LIST_DEFAULT, up to LIST_MAX), in
 * no set order, with "total" (how many match) and "truncated": a
 * 1M-message queue is not a 200 MB reply, and a dashboard polling it does
 * not pay for rows it does not show (at 20,000 queued, 1000 rows a reply
 * cost the control thread 5-12 ms, and as much again its client); --vps
 * and --domain narrow it.
 *
 * show reads the spool as a restart would (vr_spool_queue_scan), for the
 * message's client and each recipient's state. The changes go to the
 * thread that owns the message (vr_delivery_command), which records them
 * in the spool before it answers: a `show` right after a `hold` sees it.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <urcu-qsbr.h>

#include "ctl_impl.h"
#include "vmrelay/common.h"
#include "vmrelay/delivery.h"
#include "vmrelay/spool.h"

#define COMMAND_TIMEOUT_MS 10000u
#define LIST_DEFAULT 100u
#define LIST_MAX 10000u

static const char *rcpt_state(uint8_t st)
{
	static const char *const names[] = {
		[0] = "pending", [VR_STATE_DELIVERED] = "delivered",
		[VR_STATE_BOUNCED] = "bounced", [VR_STATE_EXPIRED] = "expired",
	};

	return st < VR_ARRAY_SIZE(names) && names[st] ? names[st] : "unknown";
}

/* The fields list and show share. */
static json_t *msg_json(const struct vr_spool_msg *m, const struct vr_spool_qstate *st)
{
	return json_pack("{s:s,s:s,s:s,s:I,s:I,s:i,s:i,s:i,s:I,s:b,s:b}",
			 "qid", m->qid, "vps", m->account, "from", m->mail_from,
			 "arrival", (json_int_t)(m->received_us / 1000000u),
			 "size", (json_int_t)m->size, "recipients", (int)m->n_rcpts,
			 "pending", (int)st->pending, "attempts", (int)st->attempts,
			 "next_attempt", (json_int_t)(st->next_us / 1000000u),
			 "held", st->held, "signed", st->dkim && st->dkim_len);
}

/* queue list's filters: NULL matches all. */
struct list {
	const char *vps;
	const char *domain;           /* a recipient still to deliver is at it */
	uint32_t limit;
	bool counted;                 /* the counters gave the total: stop at limit + 1 */
	json_t *out;                  /* the first limit */
	uint64_t total;               /* every match (counted: up to limit + 1) */
};

static bool rcpt_at(const char *rcpt, const char *domain)
{
	const char *at = strrchr(rcpt, '@');

	return at && strcasecmp(at + 1, domain) == 0;
}

static bool list_match(const struct list *l, const struct vr_spool_msg *m,
		       const struct vr_spool_qstate *st)
{
	if (st->deleted || !st->pending)
		return false;
	if (l->vps && strcmp(m->account, l->vps) != 0)
		return false;
	if (!l->domain)
		return true;
	for (unsigned i = 0; i < m->n_rcpts; i++)
		if (!st->rcpt[i] && rcpt_at(m->rcpts[i], l->domain))
			return true;
	return false;
}

static int list_one(const struct vr_spool_msg *m, const struct vr_spool_qstate *st, void *arg)
{
	struct list *l = arg;

	if (!list_match(l, m, st))
		return 0;
	if (++l->total > l->limit)
		return l->counted;
	json_t *o = msg_json(m, st);
	return o && json_array_append_new(l->out, o) == 0 ? 0 : -ENOMEM;
}

/* argv: [--vps ID] [--domain D] [--limit N], each at most once. */
static int list_args(const char *const *argv, struct list *l, char *err, size_t errlen)
{
	const char *limit = NULL;

	for (; argv[0]; argv += 2) {
		const char **slot = strcmp(argv[0], "--vps") == 0 ? &l->vps
				  : strcmp(argv[0], "--domain") == 0 ? &l->domain
				  : strcmp(argv[0], "--limit") == 0 ? &limit : NULL;
		if (!slot || !argv[1] || !argv[1][0] || *slot) {
			snprintf(err, errlen, "usage: queue list [--vps ID] [--domain D] [--limit N]");
			return -1;
		}
		*slot = argv[1];
	}
	l->limit = LIST_DEFAULT;
	if (limit && (vr_ctl_parse_u32(limit, &l->limit) < 0 || l->limit == 0 ||
		      l->limit > LIST_MAX)) {
		snprintf(err, errlen, "queue list: limit '%s' is not a number from 1 to %u", limit,
			 LIST_MAX);
		return -1;
	}
	return 0;
}

/* Calls fn for every message waiting: the delivery threads' queue, or
 * without them the spool. 0, or -1 with err. */
static int queue_walk(struct vr_ctl *c, vr_delivery_walk_fn *fn, void *arg, char *err,
		      size_t errlen)
{
	int rc;

	if (c->ops.delivery) {
		rcu_thread_offline();
		rc = vr_delivery_walk(c->ops.delivery, fn, arg, COMMAND_TIMEOUT_MS);
		rcu_thread_online();
		if (rc < 0)
			snprintf(err, errlen, "delivery queue: %s", strerror(-rc));
		return rc < 0 ? -1 : 0;
	}
	rc = vr_spool_queue_scan(c->ops.cfg->spool_dir, fn, arg);
	if (rc < 0 && rc != -ENOENT) {
		snprintf(err, errlen, "spool %s: %s", c->ops.cfg->spool_dir, strerror(-rc));
		return -1;
	}
	return 0;
}

int vr_ctl_queue_list(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
		      size_t errlen)
{
	struct list l = { 0 };

	if (list_args(argv, &l, err, errlen) < 0)
		return -1;
	if (!(l.out = json_array())) {
		snprintf(err, errlen, "queue list: out of memory");
		return -1;
	}
	/* Without --domain the threads' counters know the total: the walk
	 * need not go past the limit. */
	struct vr_delivery_depth dd;
	l.counted = !l.domain && c->ops.delivery &&
		    vr_delivery_depth(c->ops.delivery, l.vps, &dd) == 0;
	if (queue_walk(c, list_one, &l, err, errlen) < 0) {
		json_decref(l.out);
		return -1;
	}
	/* The counters and the walk are a moment apart: never fewer than seen. */
	uint64_t total = l.counted ? VR_MAX(dd.messages, l.total) : l.total;
	json_object_set_new(reply, "messages", l.out);
	json_object_set_new(reply, "total", json_integer((json_int_t)total));
	json_object_set_new(reply, "truncated", json_boolean(total > l.limit));
	return 0;
}

/* vps show's queue depth: one VPS's mail waiting, as queue list counts it. */
struct depth {
	const char *vps;
	uint64_t messages, recipients, held;
};

static int depth_one(const struct vr_spool_msg *m, const struct vr_spool_qstate *st, void *arg)
{
	struct depth *d = arg;

	if (st->deleted || !st->pending || strcmp(m->account, d->vps) != 0)
		return 0;
	d->messages++;
	d->recipients += st->pending;
	d->held += st->held;
	return 0;
}

json_t *vr_ctl_queue_depth(struct vr_ctl *c, const char *vps, char *err, size_t errlen)
{
	struct depth d = { .vps = vps };
	struct vr_delivery_depth dd;

	if (c->ops.delivery && vr_delivery_depth(c->ops.delivery, vps, &dd) == 0) {
		d.messages = dd.messages;
		d.recipients = dd.recipients;
		d.held = dd.held;
	} else if (queue_walk(c, depth_one, &d, err, errlen) < 0) {
		return NULL;
	}
	return json_pack("{s:I,s:I,s:I}", "messages", (json_int_t)d.messages,
			 "recipients", (json_int_t)d.recipients, "held", (json_int_t)d.held);
}

struct show {
	const char *qid;
	json_t *msg;
};

static int show_one(const struct vr_spool_msg *m, const struct vr_spool_qstate *st, void *arg)
{
	struct show *s = arg;

	if (strcmp(m->qid, s->qid) != 0)
		return 0;
	if (!(s->msg = msg_json(m, st)))
		return -ENOMEM;
	json_t *r = json_array();
	json_object_set_new(s->msg, "deleted", json_boolean(st->deleted));
	json_object_set_new(s->msg, "client", json_string(m->client));
	for (unsigned i = 0; r && i < m->n_rcpts; i++)
		json_array_append_new(r, json_pack("{s:s,s:s}", "address", m->rcpts[i], "state",
						   rcpt_state(st->rcpt[i])));
	json_object_set_new(s->msg, "rcpts", r);
	return 1;                     /* found: stop */
}

int vr_ctl_queue_show(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
		      size_t errlen)
{
	struct show s = { .qid = argv[0] };
	int rc = vr_spool_queue_scan(c->ops.cfg->spool_dir, show_one, &s);

	if (rc < 0) {
		json_decref(s.msg);
		snprintf(err, errlen, "spool %s: %s", c->ops.cfg->spool_dir, strerror(-rc));
		return -1;
	}
	if (!s.msg) {
		snprintf(err, errlen, "no message %s in the spool", argv[0]);
		return -1;
	}
	json_object_set_new(reply, "message", s.msg);
	return 0;
}

/* Hands op to the delivery threads, offline while it waits (QSBR). */
static int command(struct vr_ctl *c, enum vr_delivery_op op, const char *qid, json_t *reply,
		   char *err, size_t errlen)
{
	static const char *const done[] = {
		[VR_DELIVERY_HOLD] = "held", [VR_DELIVERY_RELEASE] = "released",
		[VR_DELIVERY_DELETE] = "deleted", [VR_DELIVERY_FLUSH] = "flushed",
	};

	if (!c->ops.delivery) {
		snprintf(err, errlen, "delivery is not running");
		return -1;
	}
	rcu_thread_offline();
	int rc = vr_delivery_command(c->ops.delivery, op, qid, COMMAND_TIMEOUT_MS);
	rcu_thread_online();
	/* qid is NULL for FLUSH only, which fails neither way below. */
	const char *name = qid ? qid : "-";

	switch (rc) {
	case 0:
		if (qid)
			json_object_set_new(reply, "qid", json_string(qid));
		json_object_set_new(reply, "done", json_string(done[op]));
		return 0;
	case -ENOENT:
		snprintf(err, errlen, "no message %s waits for delivery", name);
		break;
	case -EALREADY:
		snprintf(err, errlen, "message %s is %s", name,
			 op == VR_DELIVERY_HOLD ? "held already" : "not held");
		break;
	default:
		snprintf(err, errlen, "queue %s: %s", done[op], strerror(-rc));
		break;
	}
	return -1;
}

int vr_ctl_queue_hold(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
		      size_t errlen)
{
	return command(c, VR_DELIVERY_HOLD, argv[0], reply, err, errlen);
}

int vr_ctl_queue_release(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
			 size_t errlen)
{
	return command(c, VR_DELIVERY_RELEASE, argv[0], reply, err, errlen);
}

int vr_ctl_queue_delete(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
			size_t errlen)
{
	return command(c, VR_DELIVERY_DELETE, argv[0], reply, err, errlen);
}

int vr_ctl_queue_flush(struct vr_ctl *c, const char *const *argv, json_t *reply, char *err,
		       size_t errlen)
{
	return command(c, VR_DELIVERY_FLUSH, NULL, reply, err, errlen);
}
