/*
 * metrics.c - the relay's counters: the table stats and metrics both walk,
 * and the Prometheus text exposition (format 0.0.4) of them.
 *
 * Every figure is per worker, labelled worker="N"; Prometheus sums them
 * itself (sum without (worker)), so no total is exported twice. The
 * transport's own counters (ops.io: DPDK workers) are per worker too. The
 * spool's counters belong to no worker and carry no label.
 */
#include <stdio.h>

#include "ctl_impl.h"
#include "vmrelay/cluster.h"
#include "vmrelay/delivery.h"
#include "vmrelay/spool.h"

#define C(field, help) { #field, offsetof(struct vr_smtp_stats, field), false, help }
#define G(field, help) { #field, offsetof(struct vr_smtp_stats, field), true, help }

const struct vr_ctl_counter vr_ctl_counters[] = {
	C(connections, "SMTP connections accepted."),
	G(sessions_active, "SMTP sessions open now."),
	C(messages_accepted, "Messages accepted (250 after DATA/BDAT)."),
	C(recipients_accepted, "Recipients of accepted messages."),
	C(bytes_accepted, "Message octets accepted."),
	C(refused_relay, "MAIL refused: the client is no registered VPS."),
	C(refused_sender, "Refused: envelope or header From not a domain of the VPS."),
	C(refused_quota, "RCPT deferred: a sending window is full."),
	C(messages_held, "Messages accepted over quota and held for the operator."),
	C(refused_syntax, "Commands refused with 500/501/503."),
	C(refused_size, "Messages refused for their size."),
	C(refused_smuggling, "Messages refused for a bare CR or LF (SMTP smuggling)."),
	C(refused_pregreet, "Clients refused for talking before the greeting."),
	C(refused_starttls_injection, "Sessions refused for commands pipelined behind STARTTLS."),
	C(refused_auth, "AUTH attempts refused."),
	C(refused_spool, "Messages deferred because the spool failed."),
	C(refused_content, "Messages refused for a NUL or an over-long line."),
	C(timeouts, "Sessions closed for idling."),
	C(tls_handshakes, "TLS handshakes completed."),
};
const unsigned vr_ctl_n_counters = VR_ARRAY_SIZE(vr_ctl_counters);

uint64_t vr_ctl_snapshot_read(const void *snap, const struct vr_ctl_counter *k)
{
	return *(const uint64_t *)((const char *)snap + k->offset);
}

uint64_t vr_ctl_counter_read(const struct vr_ctl *c, unsigned w, const struct vr_ctl_counter *k)
{
	const uint64_t *p = (const uint64_t *)((const char *)&c->ops.srv->stats[w] + k->offset);

	/* The worker adds without a lock; a torn read is impossible, a read
	 * one increment old is fine. */
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Counters all: a spool figure is a family vmrelay_spool_<name>_total. */
#define S(field, help) { #field, offsetof(struct vr_spool_stats, field), false, help }
const struct vr_ctl_counter vr_ctl_spool_counters[] = {
	S(batches, "Spool commit rounds that found transactions."),
	S(fsyncs, "fdatasync calls on spool segments."),
	S(committed, "Transactions made durable in the spool."),
	S(failed, "Spool transactions that failed."),
	S(bytes, "Record octets made durable in the spool."),
	S(segments, "Spool segment files created."),
	S(abandoned, "Spool segments given up after an I/O error."),
};
const unsigned vr_ctl_n_spool_counters = VR_ARRAY_SIZE(vr_ctl_spool_counters);

#define L(field, gauge, help) { #field, offsetof(struct vr_cluster_stats, field), gauge, help }
const struct vr_ctl_counter vr_ctl_cluster_counters[] = {
	L(redis_ops, false, "Commands sent to Redis for quota leases."),
	L(redis_errors, false, "Failed Redis connects, timeouts and error replies."),
	L(redirects, false, "Redis Cluster MOVED and ASK replies followed."),
	L(leases, false, "Quota blocks granted by Redis."),
	L(slots_leased, false, "Slots granted in quota blocks."),
	L(slots_returned, false, "Unused slots given back to Redis."),
	L(taken, false, "Cluster slots taken by recipients."),
	L(pending, false, "RCPTs that found no quota block on this node at once."),
	L(spent, false, "RCPTs deferred: a cluster-wide window is full."),
	L(failsafe_taken, false, "Mails sent on the fail-safe share while Redis was away."),
	L(active, true, "VPSes with a quota block or demand on this node now."),
};
const unsigned vr_ctl_n_cluster_counters = VR_ARRAY_SIZE(vr_ctl_cluster_counters);

#define D(field, gauge, help) { #field, offsetof(struct vr_delivery_stats, field), gauge, help }
const struct vr_ctl_counter vr_ctl_delivery_counters[] = {
	D(queued, true, "Messages the delivery threads hold, waiting or in flight."),
	D(sent, false, "Recipients delivered."),
	D(deferred, false, "Recipient attempts deferred."),
	D(bounced, false, "Recipients bounced or expired."),
	D(dsns, false, "Delivery status notifications committed to the spool."),
	D(in_flight, true, "Messages being handed to the next hop now."),
	D(connections, true, "Outbound SMTP connections open now."),
};
const unsigned vr_ctl_n_delivery_counters = VR_ARRAY_SIZE(vr_ctl_delivery_counters);

/* A family's HELP and TYPE lines: vmrelay_<prefix><name>, with _total on a
 * counter; *suffix gets what follows name in its samples. */
static int family(struct vr_buf *out, const char *prefix, const char *name, const char *help,
		  bool gauge, const char **suffix)
{
	*suffix = gauge ? "" : "_total";
	return vr_buf_printf(out, "# HELP vmrelay_%s%s%s %s\n# TYPE vmrelay_%s%s%s %s\n",
			     prefix, name, *suffix, help, prefix, name, *suffix,
			     gauge ? "gauge" : "counter");
}

/* The figures of one snapshot (spool, delivery, cluster): a family each, of
 * one sample without a label. */
static int snapshot_metrics(struct vr_buf *out, const char *prefix,
			    const struct vr_ctl_counter *t, unsigned n, const void *snap)
{
	const char *suffix;
	int rc = 0;

	for (unsigned i = 0; i < n && rc == 0; i++) {
		rc = family(out, prefix, t[i].name, t[i].help, t[i].gauge, &suffix);
		if (rc == 0)
			rc = vr_buf_printf(out, "vmrelay_%s%s%s %llu\n", prefix, t[i].name, suffix,
					   (unsigned long long)vr_ctl_snapshot_read(snap, &t[i]));
	}
	return rc;
}

int vr_ctl_metrics(const struct vr_ctl *c, struct vr_buf *out)
{
	const struct vr_smtpd *srv = c->ops.srv;
	const struct vr_ctl_io *io = c->ops.io;
	const char *suffix;
	int rc = 0;

	for (unsigned i = 0; i < vr_ctl_n_counters && rc == 0; i++) {
		const struct vr_ctl_counter *k = &vr_ctl_counters[i];

		rc = family(out, "", k->name, k->help, k->gauge, &suffix);
		for (unsigned w = 0; w < srv->n_workers && rc == 0; w++)
			rc = vr_buf_printf(out, "vmrelay_%s%s{worker=\"%u\"} %llu\n", k->name,
					   suffix, w,
					   (unsigned long long)vr_ctl_counter_read(c, w, k));
	}
	for (unsigned i = 0; io && i < io->n && rc == 0; i++) {
		const struct vr_ctl_io_counter *k = &io->counters[i];

		rc = family(out, "io_", k->name, k->help, false, &suffix);
		for (unsigned w = 0; w < srv->n_workers && rc == 0; w++)
			rc = vr_buf_printf(out, "vmrelay_io_%s_total{worker=\"%u\"} %llu\n", k->name,
					   w, (unsigned long long)io->read(io->arg, w, k));
	}
	if (srv->cluster && rc == 0) {
		struct vr_cluster_stats cs;

		vr_cluster_stats(srv->cluster, &cs);
		rc = vr_buf_printf(out, "# HELP vmrelay_cluster_redis_up Whether Redis answers "
				   "(0: fail-safe shares).\n# TYPE vmrelay_cluster_redis_up gauge\n"
				   "vmrelay_cluster_redis_up %d\n", cs.redis_up);
		if (rc == 0)
			rc = snapshot_metrics(out, "cluster_", vr_ctl_cluster_counters,
					      vr_ctl_n_cluster_counters, &cs);
	}
	if (c->ops.delivery && rc == 0) {
		struct vr_delivery_stats ds;

		vr_delivery_stats(c->ops.delivery, &ds);
		rc = snapshot_metrics(out, "delivery_", vr_ctl_delivery_counters,
				      vr_ctl_n_delivery_counters, &ds);
	}
	if (srv->spool && rc == 0) {
		struct vr_spool_stats st;

		vr_spool_stats(srv->spool, &st);
		rc = snapshot_metrics(out, "spool_", vr_ctl_spool_counters, vr_ctl_n_spool_counters,
				      &st);
	}
	return rc;
}
