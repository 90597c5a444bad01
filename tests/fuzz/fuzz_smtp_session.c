/*
 * fuzz_smtp_session.c - libFuzzer harness for a whole SMTP session
 * (engine/smtp) over a real spool in a temporary directory, without TLS.
 *
 * Input: one control octet, then the client's byte stream. The control
 * octet picks the client (registered or not), the segment sizes and how
 * often time passes; the stream is fed as a transport would, honouring
 * rx_space, reading the output and reaping spool completions. Checked:
 * the session never asks for more memory than its bounds (output and
 * rx_space), it always ends (closing, at the latest by the idle timeout
 * once the input is used up), the sending window counts exactly the
 * recipients of the messages committed (every other reservation given
 * back), and sanitizers watch every access.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 * Run:   build-fuzz/tests/fuzz/fuzz_smtp_session -max_total_time=60
 *        (the spool lives under $TMPDIR, /dev/shm is a good choice)
 */
#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#include "vmrelay/log.h"
#include "vmrelay/policy.h"
#include "vmrelay/ratelimit.h"
#include "vmrelay/smtp.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static struct vr_config cfg;
static struct vr_smtp_stats stats[1];
static struct vr_smtpd srv;
static struct vr_spool *spool;
static struct vr_rl *rl;
static char dir[256];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* libFuzzer ends with exit(): the spool goes, and its directory with it. */
static void cleanup(void)
{
	vr_spool_close(spool);
	vr_rl_free(rl);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[300], err[256];
	const char *tmp = getenv("TMPDIR");
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/vr_fuzz_smtp.XXXXXX", tmp ? tmp : "/tmp");
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/accounts.jsonl", dir);
	CHECK(f = fopen(path, "w"));
	fputs("{\"id\":\"vps1\",\"ips\":[\"203.0.113.7\"],\"domains\":[\"example.com\"]}\n", f);
	fclose(f);

	vr_log_open(NULL, VR_LOG_ERR);
	rcu_register_thread();
	struct vr_accounts *t = vr_accounts_load(path, 1000, err, sizeof(err));
	CHECK(t);
	vr_policy_publish(t);
	snprintf(path, sizeof(path), "%s/spool", dir);
	spool = vr_spool_open(path, 1, err, sizeof(err));
	CHECK(spool && vr_spool_start(spool) == 0);
	atexit(cleanup);

	vr_config_defaults(&cfg);
	snprintf(cfg.hostname, sizeof(cfg.hostname), "relay.fuzz");
	/* small limits, so the fuzzer reaches them */
	cfg.max_message_size = 4096;
	cfg.max_recipients = 4;
	cfg.max_errors = 20;
	cfg.idle_timeout_ms = 1000;
	/* a minute window small enough to fill */
	const struct vr_rl_limits lim = { .per_minute = 3, .per_hour = 250, .per_day_max = 10000 };
	CHECK(rl = vr_rl_new(&lim, err, sizeof(err)));
	CHECK(vr_rl_sync(rl, t) == 0);
	srv = (struct vr_smtpd){ .cfg = &cfg, .spool = spool, .rl = rl, .stats = stats,
				 .n_workers = 1 };
	return 0;
}

/* Output a transport would send; the bound is the session's contract. */
static void drain(struct vr_session *s)
{
	const uint8_t *p;
	size_t n = vr_session_tx_peek(s, &p);

	CHECK(n <= 192 * 1024);
	vr_session_tx_consume(s, n);
}

/* Waits for a commit in flight to complete. */
static void reap(void)
{
	struct pollfd pfd = { .fd = vr_spool_done_fd(spool, 0), .events = POLLIN };

	CHECK(poll(&pfd, 1, 10000) == 1);
	vr_spool_reap(spool, 0, vr_session_commit_done, 16);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_in peer = { .sin_family = AF_INET };
	uint64_t now = 0;

	if (size < 1)
		return 0;
	uint8_t ctl = data[0];
	const uint8_t *in = data + 1;
	size_t n = size - 1, seg = (size_t)(ctl >> 4) * 37 + 1;

	inet_pton(AF_INET, ctl & 1 ? "198.51.100.9" : "203.0.113.7", &peer.sin_addr);
	CHECK(vr_rl_reset(rl, "vps1") == 0);
	uint64_t committed = stats[0].recipients_accepted;
	cfg.greet_pause_ms = ctl & 2 ? 50 : 0;
	const struct vr_session_params p = { .srv = &srv, .peer = (struct sockaddr *)&peer };
	struct vr_session *s = vr_session_new(&p, now);
	CHECK(s);
	vr_session_tick(s, now);

	for (size_t off = 0, rounds = 0; !vr_session_closing(s); rounds++) {
		CHECK(rounds < 10 * n + 1000);
		drain(s);
		if (vr_session_deadline(s) <= now) {
			vr_session_tick(s, now);
			continue;
		}
		size_t space = vr_session_rx_space(s);
		if (off == n) {
			if (space)
				break;          /* idle: waits for the client */
			reap();
			continue;
		}
		if (space == 0) {
			reap();
			continue;
		}
		size_t k = seg < space ? seg : space;
		k = k < n - off ? k : n - off;
		if (vr_session_rx(s, in + off, k, now) != VR_OK)
			CHECK(vr_session_closing(s));
		off += k;
		if (ctl & 4)
			now += 7;           /* time passes between segments */
	}
	/* The client goes quiet: the banner (if still due), then the idle
	 * timeout end it, within a few deadlines. */
	for (int i = 0; i < 4 && !vr_session_closing(s); i++) {
		drain(s);
		uint64_t deadline = vr_session_deadline(s);
		CHECK(deadline != UINT64_MAX);
		now = deadline > now ? deadline : now;
		vr_session_tick(s, now);
	}
	CHECK(vr_session_closing(s));
	drain(s);
	vr_session_free(s);
	/* completions of commits in flight when the session went: orphans */
	vr_spool_reap(spool, 0, vr_session_commit_done, 16);
	/* (no TLS here, so a session never closes with a commit in flight) */
	struct vr_rl_verdict v;
	CHECK(vr_rl_show(rl, "vps1", time(NULL), &v) == 0);
	CHECK(v.w[VR_RL_MINUTE].used == stats[0].recipients_accepted - committed);
	return 0;
}
