/*
 * ctl.h - the control socket: a thread serving line-delimited JSON requests
 * on the Unix socket [relay] control_socket, for vmrelayctl and operators'
 * scripts.
 *
 * A request is one line, {"cmd": "quota", "args": ["show", "vps1"]}; the
 * reply is one line, {"ok": true, ...} or {"ok": false, "error": "..."}.
 * Commands: stats, metrics, quota show|set|reset, account
 * list|show|add|remove, vps show, reload, drain, queue list [--vps ID]
 * [--domain D]|show|hold|release|delete|flush, dns-records, dns-check
 * (engine/ctl/cmd.c has the table, with each one's usage; queue.c the
 * queue's, dns.c the DNS wizard's two). account add|remove edit [relay]
 * accounts and then call ops->reload. vps show adds to quota show the
 * account, its mail in the spool and its recent refusals and remote errors
 * (vr_log_events_of, vmrelay/log.h).
 *
 * With [relay] metrics_listen set, the same thread serves the metrics over
 * HTTP: GET /metrics on that address (no credentials: read-only figures).
 *
 * Only root, the relay's own user and members of [relay] control_group
 * (default: the group "vmrelay" if it exists) are served, judged by the
 * peer's credentials (SO_PEERCRED); anyone else gets one error line, the
 * connection is closed and the refusal logged.
 *
 * Threads: vr_ctl_new, vr_ctl_start and vr_ctl_free from one thread. The
 * control thread reads the workers' counters with relaxed atomic loads and
 * never takes a lock a worker takes; it registers itself with liburcu. It
 * writes the sending windows (quota set/reset) under ops->writer, which the
 * relay's other writer (reload on SIGHUP) must hold too.
 */
#ifndef VR_CTL_H
#define VR_CTL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrelay/buf.h"
#include "vmrelay/config.h"
#include "vmrelay/smtp.h"

/* Longest request line; a longer one is refused and its connection closed. */
#define VR_CTL_REQUEST_MAX 4096

/*
 * A transport's own counters, per worker, beside the sessions' (srv->stats):
 * the DPDK poll-mode workers' frames, drops, steering and TCP. stats shows
 * each as io_<name> in every worker's object and in the total; metrics as
 * vmrelay_io_<name>_total{worker="N"}.
 */
struct vr_ctl_io_counter {
	const char *name;             /* lower case, digits and '_' */
	const char *help;             /* one sentence */
	unsigned src;                 /* the transport's: which of its structs */
	size_t offset;                /* the transport's: where in it */
};

struct vr_ctl_io {
	const struct vr_ctl_io_counter *counters;
	unsigned n;
	/* Worker w's counter k, on the control thread while the worker counts:
	 * without a lock (each counter has one writer; relaxed loads, so a
	 * figure may be an increment or two old, never torn). */
	uint64_t (*read)(void *arg, unsigned w, const struct vr_ctl_io_counter *k);
	void *arg;
};

struct vr_ctl_ops {
	const struct vr_config *cfg;
	struct vr_smtpd *srv;         /* counters (srv->stats), srv->spool, srv->rl */
	pthread_mutex_t *writer;      /* held around vr_rl_set_daily / vr_rl_reset */
	struct vr_delivery *delivery; /* counters, queue commands; NULL: none */
	const struct vr_ctl_io *io;   /* the transport's counters; NULL: none */
	/* The relay's reload (the same as SIGHUP's): 0, or -1 with err saying
	 * why, the tables in force kept. It takes ops->writer itself. */
	int (*reload)(void *arg, char *err, size_t errlen);
	/* Stop accepting, finish the sessions, flush, exit (vr_io_stop). */
	void (*drain)(void *arg);
	void *arg;
};

struct vr_ctl;

/*
 * Creates the socket at ops->cfg->control_socket (mode 0660, a stale socket
 * file replaced), resolves the control group and binds metrics_listen. NULL + err, e.g.
 * "control_socket /run/vmrelay/ctl.sock: Permission denied" or
 * "control_group 'ops': no such group". ops is copied; what it points to
 * must outlive the ctl.
 */
struct vr_ctl *vr_ctl_new(const struct vr_ctl_ops *ops, char *err, size_t errlen);
/* The port metrics_listen is bound to (its port 0 made the kernel pick);
 * 0 when it is off. */
uint16_t vr_ctl_metrics_port(const struct vr_ctl *c);
/* Starts the control thread. 0 or -errno. */
int vr_ctl_start(struct vr_ctl *c);
/* Stops the thread (if started), closes every client, removes the socket. */
void vr_ctl_free(struct vr_ctl *c);

/*
 * Runs one request line (no newline) and appends its reply line, newline
 * included, to out. What the control thread does for each line; from an
 * RCU-registered thread. 0, or -ENOMEM/-ENOBUFS from out.
 */
int vr_ctl_exec(struct vr_ctl *c, const char *req, size_t len, struct vr_buf *out);

/* The Prometheus text exposition of the counters (the `metrics` command). */
int vr_ctl_metrics(const struct vr_ctl *c, struct vr_buf *out);

#endif
