/*
 * ctl_impl.h - what the control module's files share: the ctl itself and
 * the counters' table, which both stats and metrics walk, and the
 * accounts file's editing.
 */
#ifndef VR_CTL_IMPL_H
#define VR_CTL_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vmrelay/ctl.h"

struct vr_ctl {
	struct vr_ctl_ops ops;
	int lfd;                      /* the listening Unix socket */
	int hfd;                      /* [relay] metrics_listen's socket; -1: none */
	uint16_t metrics_port;        /* the port it is bound to */
	int stop_fd;                  /* eventfd: vr_ctl_free wakes the thread */
	bool group_set;               /* group is a group's id */
	gid_t group;
	pthread_t thread;
	bool started;
	struct vr_wizard *wizard;     /* dns-records, dns-check; NULL: no [dns] section */
};

/* One counter of struct vr_smtp_stats: its JSON key is name, its metric
 * vmrelay_<name>[_total]. */
struct vr_ctl_counter {
	const char *name;
	size_t offset;
	bool gauge;
	const char *help;
};

extern const struct vr_ctl_counter vr_ctl_counters[];
extern const unsigned vr_ctl_n_counters;

/* The same for struct vr_spool_stats (counters all). */
extern const struct vr_ctl_counter vr_ctl_spool_counters[];
extern const unsigned vr_ctl_n_spool_counters;

/* The same for struct vr_cluster_stats (Redis quota leases, issue 8). */
extern const struct vr_ctl_counter vr_ctl_cluster_counters[];
extern const unsigned vr_ctl_n_cluster_counters;

/* The same for struct vr_delivery_stats (issue 5). */
extern const struct vr_ctl_counter vr_ctl_delivery_counters[];
extern const unsigned vr_ctl_n_delivery_counters;

/* A decimal without sign, blanks or leading zeros, up to UINT32_MAX: 0 or -1. */
int vr_ctl_parse_u32(const char *s, uint32_t *out);

/* Worker w's counter k, read while the worker runs. */
uint64_t vr_ctl_counter_read(const struct vr_ctl *c, unsigned w, const struct vr_ctl_counter *k);
/* Counter k of a snapshot (struct vr_spool_stats, vr_delivery_stats or
 * vr_cluster_stats, as its table says) the caller took. */
uint64_t vr_ctl_snapshot_read(const void *snap, const struct vr_ctl_counter *k);

/* --- acctfile.c: `account add|remove` edit [relay] accounts in place --- */

/* Appends one accounts line (no newline) to the file, if the file with it
 * still loads. id gets the line's id. 0, or -1 with err, the file untouched. */
int vr_ctl_accounts_add(struct vr_ctl *c, const char *line, char *id, size_t idlen, char *err,
			size_t errlen);
/* Removes account id's line from the file. 0, or -1 with err (e.g. an
 * unknown id), the file untouched. */
int vr_ctl_accounts_remove(struct vr_ctl *c, const char *id, char *err, size_t errlen);
/* Rewrites account id's line as fn changed its JSON object (fn: 0, or -1
 * with err to leave the file alone). 0, or -1 with err, the file untouched. */
struct json_t;
typedef int vr_ctl_account_edit_fn(struct json_t *obj, void *arg, char *err, size_t errlen);
int vr_ctl_accounts_edit(struct vr_ctl *c, const char *id, vr_ctl_account_edit_fn *fn,
			 void *arg, char *err, size_t errlen);

/* --- dns.c: the DNS wizard's commands --- */

/* Makes c->wizard from [dns] (reads the secret); none without a [dns]
 * section. 0, or -1 with err. */
int vr_ctl_dns_init(struct vr_ctl *c, char *err, size_t errlen);
/* queue.c: queue list|show|hold|release|delete|flush (issue 6). */
int vr_ctl_queue_list(struct vr_ctl *c, const char *const *argv, struct json_t *reply,
		      char *err, size_t errlen);
/* One VPS's mail waiting for delivery: {"messages", "recipients", "held"};
 * NULL with err. The caller owns the object. */
struct json_t *vr_ctl_queue_depth(struct vr_ctl *c, const char *vps, char *err, size_t errlen);
int vr_ctl_queue_show(struct vr_ctl *c, const char *const *argv, struct json_t *reply,
		      char *err, size_t errlen);
int vr_ctl_queue_hold(struct vr_ctl *c, const char *const *argv, struct json_t *reply,
		      char *err, size_t errlen);
int vr_ctl_queue_release(struct vr_ctl *c, const char *const *argv, struct json_t *reply,
			 char *err, size_t errlen);
int vr_ctl_queue_delete(struct vr_ctl *c, const char *const *argv, struct json_t *reply,
			char *err, size_t errlen);
int vr_ctl_queue_flush(struct vr_ctl *c, const char *const *argv, struct json_t *reply,
		       char *err, size_t errlen);

int vr_ctl_dns_records(struct vr_ctl *c, const char *const *argv, struct json_t *reply,
		       char *err, size_t errlen);
int vr_ctl_dns_check(struct vr_ctl *c, const char *const *argv, struct json_t *reply,
		     char *err, size_t errlen);

#endif
