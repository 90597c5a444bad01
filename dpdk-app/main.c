/*
 * main.c - the vmrelay binary: vmrelay -c relay.ini [--io kernel|dpdk] [--check]
 *
 * Loads the configuration, the accounts table and the TLS key, builds the
 * sending windows ([limits]), opens and recovers the spool and counts what
 * it holds into the windows, then runs the transport - kernel sockets, or
 * DPDK poll-mode workers over our own TCP/IP stack (dpdk.c) - until
 * SIGTERM or SIGINT. SIGHUP opens the log file again (logrotate) and
 * reloads the accounts file into both the accounts table and the
 * windows; a bad file is logged with its line and
 * the tables in force stay. The control socket ([relay] control_socket,
 * engine/ctl) runs in a thread of its own and may reload the same way, or
 * drain the relay: stop accepting, finish the sessions, exit 0. --check
 * validates the same inputs and exits without touching the spool or the
 * network.
 *
 * Signals are blocked in every thread and taken synchronously by the main
 * thread (sigwaitinfo), so reloading may allocate and log freely; the io runs
 * in a thread of its own and tells the main thread when it ends by itself.
 *
 * Exit status: 0 after a clean stop or a good --check, 2 for a bad command
 * line or bad inputs, 1 for a failure while running.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#include "vmrelay/cluster.h"
#include "vmrelay/config.h"
#include "vmrelay/ctl.h"
#include "vmrelay/delivery.h"
#include "vmrelay/io.h"
#include "vmrelay/log.h"
#include "vmrelay/policy.h"
#include "vmrelay/ratelimit.h"
#include "vmrelay/smtp.h"
#include "vmrelay/spool.h"
#include "vmrelay/tls.h"
#include "dpdk.h"

#define EXIT_USAGE 2
/* How long a stop lets deliveries in flight finish: well inside the 15 s a
 * service manager gives before SIGKILL. */
#define DELIVERY_DRAIN_MS 5000u

struct relay {
	const char *config_path;
	struct vr_config cfg;
	struct vr_tls_ctx *tls;
	struct vr_tls_ctx *client_tls;  /* delivery's STARTTLS */
	struct vr_rl *rl;
	struct vr_spool *spool;
	struct vr_cluster *cluster;   /* [cluster] redis set: quota leases */
	struct vr_delivery *delivery;
	struct vr_smtp_stats *stats;
	struct vr_smtpd srv;
	struct vr_io *io;             /* one of these two runs */
	struct vr_dpdk *dpdk;
	struct vr_ctl_io dpdk_io;     /* its workers' counters, for the ctl */
	struct vr_ctl *ctl;
	/* The windows have one writer at a time: SIGHUP's reload here, the
	 * control thread's reload and quota commands. */
	pthread_mutex_t writer;
	atomic_bool draining;         /* the io was stopped by `drain` */
	pthread_t main_thread;
	int io_rc;
};

static void usage(FILE *out)
{
	fprintf(out, "usage: vmrelay -c relay.ini [--io kernel|dpdk] [--check]\n"
		     "  -c, --config FILE  configuration (INI)\n"
		     "      --io MODE      transport: kernel (epoll) or dpdk; overrides [io] mode\n"
		     "      --check        validate configuration, accounts and TLS files, then exit\n"
		     "  -V, --version      print the version\n");
}

/* Parses argv into r and *check; exits on a usage error. */
static void parse_args(int argc, char **argv, struct relay *r, int *check, const char **io)
{
	enum { OPT_IO = 256, OPT_CHECK };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "io", required_argument, NULL, OPT_IO },
		{ "check", no_argument, NULL, OPT_CHECK },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': r->config_path = optarg; break;
		case OPT_IO: *io = optarg; break;
		case OPT_CHECK: *check = 1; break;
		case 'V': printf("vmrelay %s\n", VR_VERSION); exit(0);
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(EXIT_USAGE);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "vmrelay: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		exit(EXIT_USAGE);
	}
	if (!r->config_path) {
		fprintf(stderr, "vmrelay: no configuration given (-c relay.ini)\n");
		usage(stderr);
		exit(EXIT_USAGE);
	}
}

/* An operator may raise a quota up to [limits] per_day_max, not beyond. */
static struct vr_accounts *load_accounts(const struct vr_config *cfg, char *err, size_t errlen)
{
	return vr_accounts_load_max(cfg->accounts, cfg->per_day, cfg->per_day_max, err, errlen);
}

/* [limits] as sending windows, knowing every account of t. NULL after
 * telling stderr why. */
static struct vr_rl *windows_new(const struct vr_config *cfg, const struct vr_accounts *t)
{
	const struct vr_rl_limits lim = {
		.per_minute = cfg->per_minute,
		.per_hour = cfg->per_hour,
		.per_day_max = cfg->per_day_max,
		.timezone = cfg->timezone,
	};
	char err[256];
	struct vr_rl *rl = vr_rl_new(&lim, err, sizeof(err));

	if (!rl) {
		fprintf(stderr, "vmrelay: [limits] %s\n", err);
		return NULL;
	}
	int rc = vr_rl_sync(rl, t);
	if (rc < 0) {
		fprintf(stderr, "vmrelay: %s: quotas: %s\n", cfg->accounts, strerror(-rc));
		vr_rl_free(rl);
		return NULL;
	}
	return rl;
}

/* What load_inputs() made, when the relay is not to run. */
static void drop_inputs(struct relay *r, struct vr_accounts *accounts)
{
	vr_accounts_free(accounts);
	vr_rl_free(r->rl);
	vr_tls_ctx_free(r->tls);
	rcu_unregister_thread();
}

/* The inputs --check validates: config, io mode, accounts, limits, TLS
 * files. 0, or -1 after telling stderr why. */
static int load_inputs(struct relay *r, const char *io_mode, struct vr_accounts **accounts)
{
	char err[1024];

	if (vr_config_load(r->config_path, &r->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "vmrelay: %s\n", err);
		return -1;
	}
	if (io_mode) {
		if (strcmp(io_mode, "kernel") == 0) {
			r->cfg.io_mode = VR_IO_KERNEL;
		} else if (strcmp(io_mode, "dpdk") == 0) {
			r->cfg.io_mode = VR_IO_DPDK;
		} else {
			fprintf(stderr, "vmrelay: --io '%s': use kernel or dpdk\n", io_mode);
			return -1;
		}
	}
	if (r->cfg.io_mode == VR_IO_DPDK && vr_dpdk_check(&r->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "vmrelay: %s\n", err);
		return -1;
	}
	*accounts = load_accounts(&r->cfg, err, sizeof(err));
	if (!*accounts) {
		fprintf(stderr, "vmrelay: %s\n", err);
		return -1;
	}
	r->rl = windows_new(&r->cfg, *accounts);
	if (!r->rl)
		goto fail;
	if (r->cfg.tls_cert[0]) {
		r->tls = vr_tls_server_ctx_new(r->cfg.tls_cert, r->cfg.tls_key, err, sizeof(err));
		if (!r->tls) {
			fprintf(stderr, "vmrelay: %s\n", err);
			goto fail;
		}
	}
	return 0;
fail:
	vr_rl_free(r->rl);
	r->rl = NULL;
	vr_accounts_free(*accounts);
	*accounts = NULL;
	return -1;
}

/*
 * "127.0.0.1:25,[::1]:25,0.0.0.0:465 tls=implicit" for the start line, with
 * the ports actually bound (a configured port 0 becomes the kernel's pick;
 * DPDK takes none).
 */
static void listen_text(const struct vr_config *cfg, const struct vr_io *io, char *out,
			size_t len)
{
	size_t n = 0;

	out[0] = '\0';
	for (unsigned i = 0; i < cfg->n_listen && n < len; i++) {
		const struct vr_listen *l = &cfg->listen[i];
		char host[INET6_ADDRSTRLEN];
		const void *a = l->addr.ss_family == AF_INET
			? (const void *)&((const struct sockaddr_in *)&l->addr)->sin_addr
			: (const void *)&((const struct sockaddr_in6 *)&l->addr)->sin6_addr;
		if (!inet_ntop(l->addr.ss_family, a, host, sizeof(host)))
			snprintf(host, sizeof(host), "?");
		n += (size_t)snprintf(out + n, len - n, l->addr.ss_family == AF_INET6 ?
				      "%s[%s]:%u%s" : "%s%s:%u%s", i ? "," : "", host,
				      io ? vr_io_bound_port(io, i) : ntohs(((const struct sockaddr_in *)
									    &l->addr)->sin_port),
				      l->implicit_tls ? " tls=implicit" : "");
	}
}

/*
 * SIGHUP's and the control socket's reload: 0, or -1 with err saying why
 * (logged too), the tables in force kept. The log file is opened again
 * first, whatever happens to the accounts (logrotate's postrotate HUP).
 *
 * The windows learn the new table before sessions can find it: a new
 * account has its quota by its first RCPT. (A removed one may still be
 * found by a session for a moment, whose RCPT then says 451, try later.)
 */
static int reload_accounts(struct relay *r, char *err, size_t errlen)
{
	char q[1100];

	/* Offline while it may wait (QSBR): the other writer may hold the lock
	 * in a grace period that waits for this thread. */
	/* logrotate moved the file away: the lines from here on go to a new one */
	int lrc = vr_log_reopen(r->cfg.log_file);
	if (lrc < 0)
		vr_log_err("event=log_reopen_failed file=%s error=\"%s\"", r->cfg.log_file,
			   strerror(-lrc));
	rcu_thread_offline();
	pthread_mutex_lock(&r->writer);
	rcu_thread_online();
	struct vr_accounts *t = load_accounts(&r->cfg, err, errlen);
	int rc = t ? vr_rl_sync(r->rl, t) : 0;
	if (rc < 0) {
		snprintf(err, errlen, "%s: quotas: %s", r->cfg.accounts, strerror(-rc));
		vr_accounts_free(t);
		t = NULL;
	}
	if (!t) {
		pthread_mutex_unlock(&r->writer);
		vr_log_err("event=reload_failed accounts=%s error=%s", r->cfg.accounts,
			   vr_log_quote(q, sizeof(q), err, strlen(err)));
		return -1;
	}
	unsigned n = vr_accounts_count(t);
	vr_policy_publish(t);
	pthread_mutex_unlock(&r->writer);
	vr_log_info("event=reload accounts=%u", n);
	return 0;
}

static int ctl_reload(void *arg, char *err, size_t errlen)
{
	return reload_accounts(arg, err, errlen);
}

static void io_stop(struct relay *r)
{
	if (r->dpdk)
		vr_dpdk_stop(r->dpdk);
	else
		vr_io_stop(r->io);
}

/* The io ends after its sessions; the main thread then sees a drained
 * relay, not a failed one. */
static void ctl_drain(void *arg)
{
	struct relay *r = arg;

	atomic_store(&r->draining, true);
	io_stop(r);
}

/* The control socket, if configured. 0, or -1 after saying why. */
static int ctl_start(struct relay *r)
{
	const struct vr_ctl_ops ops = {
		.cfg = &r->cfg, .srv = &r->srv, .writer = &r->writer, .delivery = r->delivery,
		.io = r->dpdk ? &r->dpdk_io : NULL,
		.reload = ctl_reload, .drain = ctl_drain, .arg = r,
	};
	char err[1024], q[1100];
	int rc;

	if (!r->cfg.control_socket[0])
		return 0;
	r->ctl = vr_ctl_new(&ops, err, sizeof(err));
	if (r->ctl && (rc = vr_ctl_start(r->ctl)) < 0)
		snprintf(err, sizeof(err), "control thread: %s", strerror(-rc));
	else if (r->ctl)
		return 0;
	vr_log_err("event=ctl_failed error=%s", vr_log_quote(q, sizeof(q), err, strlen(err)));
	fprintf(stderr, "vmrelay: %s\n", err);
	return -1;
}

/* What the spool holds was counted when it was accepted: count it again,
 * so a restart or a kill -9 never hands a VPS a fresh quota. */
struct replay {
	struct vr_rl *rl;
	uint64_t messages, mails;
};

static int replay_one(const struct vr_spool_msg *m, void *arg)
{
	struct replay *rp = arg;
	int64_t at = (int64_t)(m->received_us / 1000000u);

	/* held mail took no slot when it was accepted */
	if (m->flags & VR_SPOOL_HOLD)
		return 0;
	/* -ENOENT: an account since removed; older mail the windows ignore */
	if (vr_rl_restore(rp->rl, m->account, m->n_rcpts, at) == 0) {
		rp->messages++;
		rp->mails += m->n_rcpts;
	}
	return 0;
}

static int replay_spool(struct relay *r)
{
	struct replay rp = { .rl = r->rl };
	char q[300];
	int rc = vr_spool_scan(r->cfg.spool_dir, replay_one, &rp, NULL);

	if (rc < 0) {
		const char *e = strerror(-rc);
		vr_log_err("event=quota_replay_failed dir=%s error=%s", r->cfg.spool_dir,
			   vr_log_quote(q, sizeof(q), e, strlen(e)));
		return rc;
	}
	vr_log_info("event=quota_replayed messages=%llu mails=%llu",
		    (unsigned long long)rp.messages, (unsigned long long)rp.mails);
	return 0;
}

/* The delivery workers: the queue read back, the commit hook set, before
 * the committers start. 0, or -1 after saying why. */
static int delivery_new(struct relay *r)
{
	char err[1024], q[1100];

	r->client_tls = vr_tls_client_ctx_new(err, sizeof(err));
	if (r->client_tls) {
		const struct vr_delivery_conf dc = {
			.cfg = &r->cfg, .spool = r->spool, .spool_worker = r->cfg.workers,
			.tls = r->client_tls,
		};
		r->delivery = vr_delivery_new(&dc, err, sizeof(err));
	}
	if (r->delivery)
		return 0;
	vr_log_err("event=delivery_failed error=%s", vr_log_quote(q, sizeof(q), err, strlen(err)));
	fprintf(stderr, "vmrelay: %s\n", err);
	return -1;
}

/* [cluster] as the cluster module's parameters; NULL with err if bad. */
static struct vr_cluster *cluster_new(const struct vr_config *cfg, char *node, size_t nodelen,
				      char *err, size_t errlen)
{
	char host[128] = "";

	/* a restarted node is a new lease holder: its old lease just expires */
	if (cfg->cluster_node[0])
		snprintf(node, nodelen, "%s", cfg->cluster_node);
	else
		snprintf(node, nodelen, "%s-%d",
			 gethostname(host, sizeof(host) - 1) == 0 ? host : "vmrelay", (int)getpid());
	const struct vr_cluster_params p = {
		.redis = cfg->redis, .sentinels = cfg->cluster_sentinels,
		.master_name = cfg->cluster_master_name, .tls = cfg->cluster_tls,
		.tls_ca = cfg->cluster_tls_ca, .tls_cert = cfg->cluster_tls_cert,
		.tls_key = cfg->cluster_tls_key, .tls_server_name = cfg->cluster_tls_server_name,
		.prefix = cfg->cluster_prefix, .node = node,
		.password_file = cfg->cluster_password_file, .per_minute = cfg->per_minute,
		.per_hour = cfg->per_hour, .lease_min = cfg->cluster_lease_min,
		.lease_max = cfg->cluster_lease_max, .lease_ttl_s = cfg->cluster_lease_ttl_s,
		.timeout_ms = cfg->cluster_timeout_ms,
		.failsafe_percent = cfg->cluster_failsafe_percent, .timezone = cfg->timezone,
	};
	return vr_cluster_new(&p, err, errlen);
}

/* --check: [cluster]'s files load and its values agree (nothing connects).
 * 0, or -1 after telling stderr why. */
static int cluster_check(const struct relay *r)
{
	char node[192], err[512];

	if (!r->cfg.redis[0] && !r->cfg.cluster_sentinels[0])
		return 0;
	struct vr_cluster *c = cluster_new(&r->cfg, node, sizeof(node), err, sizeof(err));
	if (!c) {
		fprintf(stderr, "vmrelay: %s: [cluster] %s\n", r->config_path, err);
		return -1;
	}
	vr_cluster_free(c);
	return 0;
}

/* [cluster]: the quota leases' thread, if a Redis address or sentinels are
 * set. 0, or -1 after saying why. Redis need not be up: the fail-safe
 * share holds till it is. */
static int cluster_start(struct relay *r)
{
	const struct vr_config *cfg = &r->cfg;
	char node[192], err[512], q[600];
	int rc = 0;

	if (!cfg->redis[0] && !cfg->cluster_sentinels[0])
		return 0;
	r->cluster = cluster_new(cfg, node, sizeof(node), err, sizeof(err));
	if (r->cluster && (rc = vr_cluster_start(r->cluster)) == 0) {
		vr_log_info("event=cluster redis=%s node=%s",
			    cfg->redis[0] ? cfg->redis : cfg->cluster_sentinels, node);
		return 0;
	}
	if (r->cluster)
		snprintf(err, sizeof(err), "cluster thread: %s", strerror(-rc));
	vr_log_err("event=cluster_failed error=%s", vr_log_quote(q, sizeof(q), err, strlen(err)));
	fprintf(stderr, "vmrelay: [cluster] %s\n", err);
	return -1;
}

static void *io_thread(void *arg)
{
	struct relay *r = arg;

	r->io_rc = r->dpdk ? vr_dpdk_run(r->dpdk) : vr_io_run(r->io);
	/* Wakes the main thread if the io ended without being asked to. */
	pthread_kill(r->main_thread, SIGUSR1);
	return NULL;
}

/* Takes signals until a stop; returns the signal that ended it (0: the io
 * ended by itself). */
static int wait_signals(struct relay *r, const sigset_t *set)
{
	for (;;) {
		siginfo_t si;
		/* A registered RCU reader blocks offline (vmrelay/ratelimit.h). */
		rcu_thread_offline();
		int sig = sigwaitinfo(set, &si);
		rcu_thread_online();
		if (sig < 0)
			continue;           /* EINTR */
		if (sig == SIGHUP) {
			char err[1024];
			reload_accounts(r, err, sizeof(err));
			continue;
		}
		if (sig == SIGUSR1)
			return 0;
		vr_log_info("event=stopping signal=%s", sig == SIGTERM ? "TERM" : "INT");
		io_stop(r);
		return sig;
	}
}

static int start(struct relay *r, struct vr_accounts *accounts, const sigset_t *set)
{
	char err[1024], listen[VR_CONFIG_MAX_LISTEN * 72], q[sizeof(listen) + 8], port[256] = "";
	const struct vr_config *cfg = &r->cfg;

	/* First: a port or lcore list the EAL refuses stops the relay before
	 * the spool is opened or any thread started. */
	if (cfg->io_mode == VR_IO_DPDK && vr_dpdk_eal_init(cfg, err, sizeof(err)) < 0) {
		vr_log_err("event=io_failed error=%s", vr_log_quote(q, sizeof(q), err, strlen(err)));
		fprintf(stderr, "vmrelay: %s\n", err);
		vr_accounts_free(accounts);
		return 1;
	}
	/* The delivery threads submit their DSNs as spool workers of their own,
	 * after the SMTP workers. */
	r->spool = vr_spool_open(cfg->spool_dir, cfg->workers + cfg->delivery_workers, err,
				 sizeof(err));
	if (!r->spool) {
		vr_log_err("event=spool_failed dir=%s error=%s", cfg->spool_dir,
			   vr_log_quote(q, sizeof(q), err, strlen(err)));
		fprintf(stderr, "vmrelay: %s\n", err);
		vr_accounts_free(accounts);
		return 1;
	}
	const struct vr_spool_recovery *rec = vr_spool_recovered(r->spool);
	vr_log_info("event=spool_recovered dir=%s messages=%llu torn=%llu segments=%llu",
		    cfg->spool_dir, (unsigned long long)rec->messages,
		    (unsigned long long)rec->torn, (unsigned long long)rec->segments);
	/* before listening: no VPS may send on a count that misses its mail */
	if (replay_spool(r) < 0) {
		fprintf(stderr, "vmrelay: %s: cannot count the spool into the quotas\n",
			cfg->spool_dir);
		vr_accounts_free(accounts);
		return 1;
	}

	r->stats = calloc(cfg->workers, sizeof(*r->stats));
	r->srv = (struct vr_smtpd){
		.cfg = cfg, .tls = r->tls, .spool = r->spool, .rl = r->rl, .stats = r->stats,
		.n_workers = cfg->workers,
	};
	if (cluster_start(r) < 0) {
		vr_accounts_free(accounts);
		return 1;
	}
	r->srv.cluster = r->cluster;
	if (delivery_new(r) < 0) {
		vr_accounts_free(accounts);
		return 1;
	}
	int rc = r->stats ? vr_spool_start(r->spool) : -ENOMEM;
	if (rc < 0) {
		vr_log_err("event=spool_failed error=\"%s\"", strerror(-rc));
		vr_accounts_free(accounts);
		return 1;
	}
	if ((rc = vr_delivery_start(r->delivery)) < 0) {
		vr_log_err("event=delivery_failed error=\"%s\"", strerror(-rc));
		vr_accounts_free(accounts);
		return 1;
	}
	if (cfg->io_mode == VR_IO_DPDK) {
		r->dpdk = vr_dpdk_new(&r->srv, err, sizeof(err));
		if (r->dpdk)
			vr_dpdk_ctl_io(r->dpdk, &r->dpdk_io);
	} else {
		r->io = vr_io_kernel_new(&r->srv, err, sizeof(err));
	}
	if (!r->io && !r->dpdk) {
		vr_log_err("event=io_failed error=%s", vr_log_quote(q, sizeof(q), err, strlen(err)));
		fprintf(stderr, "vmrelay: %s\n", err);
		vr_accounts_free(accounts);
		return 1;
	}
	vr_policy_publish(accounts);
	if (ctl_start(r) < 0)
		return 1;

	listen_text(cfg, r->io, listen, sizeof(listen));
	if (r->dpdk)
		vr_dpdk_describe(r->dpdk, port, sizeof(port));
	vr_log_info("event=start version=%s pid=%d io=%s workers=%u listen=%s accounts=%u "
		    "tls=%s%s%s", VR_VERSION, (int)getpid(), r->dpdk ? "dpdk" : "kernel",
		    cfg->workers, vr_log_quote(q, sizeof(q), listen, strlen(listen)),
		    vr_accounts_count(accounts), r->tls ? "yes" : "no", port[0] ? " " : "", port);

	pthread_t t;
	r->main_thread = pthread_self();
	if ((rc = pthread_create(&t, NULL, io_thread, r)) != 0) {
		vr_log_err("event=io_failed error=\"%s\"", strerror(rc));
		return 1;
	}
	int sig = wait_signals(r, set);
	rcu_thread_offline();
	pthread_join(t, NULL);
	rcu_thread_online();
	if (r->io_rc < 0 || (sig == 0 && !atomic_load(&r->draining))) {
		vr_log_err("event=io_failed error=\"%s\"",
			   r->io_rc < 0 ? strerror(-r->io_rc) : "workers ended unasked");
		return 1;
	}
	if (sig == 0)
		vr_log_info("event=drained");
	return 0;
}

static void shut_down(struct relay *r)
{
	/* first: its drain and stats reach into the io and the counters */
	vr_ctl_free(r->ctl);
	vr_io_free(r->io);
	vr_dpdk_free(r->dpdk);
	/* after the sessions: what they hold is settled, the rest given back */
	vr_cluster_free(r->cluster);
	/* Attempts in flight may finish (SIGTERM drains); the rest is tried
	 * again after the restart. Stopped before the spool, freed after it:
	 * the committers' hook hands it mail until they stop. */
	vr_delivery_stop(r->delivery, DELIVERY_DRAIN_MS);
	/* Commits everything already submitted before it returns. */
	if (r->spool)
		vr_spool_close(r->spool);
	vr_delivery_free(r->delivery);
	vr_tls_ctx_free(r->client_tls);
	vr_policy_publish(NULL);
	vr_rl_free(r->rl);
	vr_tls_ctx_free(r->tls);
	free(r->stats);
}

int main(int argc, char **argv)
{
	struct relay r = { .writer = PTHREAD_MUTEX_INITIALIZER };
	struct vr_accounts *accounts = NULL;
	const char *io_mode = NULL;
	int check = 0;

	parse_args(argc, argv, &r, &check, &io_mode);
	/* Before any thread exists, so every thread inherits the mask: the
	 * windows' table may start liburcu's call_rcu thread as it fills. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* This thread syncs the windows' table and replays into it (RCU). */
	rcu_register_thread();
	if (load_inputs(&r, io_mode, &accounts) < 0) {
		rcu_unregister_thread();
		return EXIT_USAGE;
	}
	if (check) {
		if (cluster_check(&r) < 0) {
			drop_inputs(&r, accounts);
			return EXIT_USAGE;
		}
		printf("%s: ok: %u listen address%s, %u worker%s, %u accounts, TLS %s\n",
		       r.config_path, r.cfg.n_listen, r.cfg.n_listen == 1 ? "" : "es",
		       r.cfg.workers, r.cfg.workers == 1 ? "" : "s", vr_accounts_count(accounts),
		       r.tls ? "on" : "off");
		drop_inputs(&r, accounts);
		return 0;
	}
	int rc = vr_log_open(r.cfg.log_file, (enum vr_log_level)r.cfg.log_level);
	if (rc < 0) {
		fprintf(stderr, "vmrelay: log_file %s: %s\n", r.cfg.log_file, strerror(-rc));
		drop_inputs(&r, accounts);
		return EXIT_USAGE;
	}

	rc = start(&r, accounts, &set);
	shut_down(&r);
	vr_log_info("event=stop status=%d", rc);
	vr_log_close();
	rcu_unregister_thread();
	return rc;
}
