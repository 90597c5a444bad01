/*
 * test_ctl.c - the control module: every command's reply for good and bad
 * requests through vr_ctl_exec, the metrics text, and the socket itself
 * (requests split across writes, several in one write, an over-long line,
 * several clients at once, the socket's mode and its removal), and the
 * metrics endpoint's HTTP parser, fed whole and byte by byte, and server.
 *
 * The relay around the ctl is a stand-in: two workers' counters set by
 * hand, real sending windows and a real accounts table, no spool, and
 * reload/drain hooks that record their calls.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include <urcu-qsbr.h>

#include "../../engine/ctl/http.h"
#include "vmrelay/ctl.h"
#include "vmrelay/log.h"
#include "vmrelay/policy.h"
#include "vmrelay/ratelimit.h"

static char dir[] = "/tmp/vr_test_ctl.XXXXXX";
static char accounts_path[256], sock_path[256];

struct fixture {
	struct vr_config cfg;
	struct vr_smtp_stats stats[2];
	struct vr_smtpd srv;
	pthread_mutex_t writer;
	struct vr_ctl *ctl;
	int reloads, drains;
	bool reload_fails;
};

static int fake_reload(void *arg, char *err, size_t errlen)
{
	struct fixture *f = arg;

	f->reloads++;
	if (f->reload_fails) {
		snprintf(err, errlen, "accounts.jsonl:3: unknown key 'quota'");
		return -1;
	}
	return 0;
}

static void fake_drain(void *arg)
{
	((struct fixture *)arg)->drains++;
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];

	vr_config_defaults(&f->cfg);
	snprintf(f->cfg.control_socket, sizeof(f->cfg.control_socket), "%s", sock_path);
	f->cfg.per_day_max = 5000;
	pthread_mutex_init(&f->writer, NULL);

	const struct vr_rl_limits lim = { .per_minute = 60, .per_hour = 250, .per_day_max = 5000 };
	struct vr_accounts *t = vr_accounts_load_max(accounts_path, 1000, 5000, err, sizeof(err));
	assert_non_null(t);
	f->srv = (struct vr_smtpd){ .cfg = &f->cfg, .stats = f->stats, .n_workers = 2,
				    .rl = vr_rl_new(&lim, err, sizeof(err)) };
	assert_non_null(f->srv.rl);
	assert_int_equal(vr_rl_sync(f->srv.rl, t), 0);
	vr_policy_publish(t);

	const struct vr_ctl_ops ops = { .cfg = &f->cfg, .srv = &f->srv, .writer = &f->writer,
					.reload = fake_reload, .drain = fake_drain, .arg = f };
	f->ctl = vr_ctl_new(&ops, err, sizeof(err));
	if (!f->ctl)
		fail_msg("vr_ctl_new: %s", err);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	vr_ctl_free(f->ctl);
	vr_policy_publish(NULL);
	vr_rl_free(f->srv.rl);
	free(f);
	return 0;
}

/* The reply to one request line, parsed; the caller decrefs. */
static json_t *ask(struct fixture *f, const char *req)
{
	struct vr_buf out;
	json_error_t jerr;

	vr_buf_init(&out, 0);
	assert_int_equal(vr_ctl_exec(f->ctl, req, strlen(req), &out), 0);
	assert_true(vr_buf_len(&out) > 0);
	const char *p = (const char *)vr_buf_head(&out);
	/* one line, ending in its only newline */
	assert_int_equal(p[vr_buf_len(&out) - 1], '\n');
	assert_null(memchr(p, '\n', vr_buf_len(&out) - 1));
	json_t *r = json_loadb(p, vr_buf_len(&out), 0, &jerr);
	vr_buf_free(&out);
	assert_non_null(r);
	return r;
}

static const char *error_of(json_t *r)
{
	assert_true(json_is_false(json_object_get(r, "ok")));
	return json_string_value(json_object_get(r, "error"));
}

static void assert_error(struct fixture *f, const char *req, const char *substr)
{
	json_t *r = ask(f, req);
	const char *e = error_of(r);

	if (!e || !strstr(e, substr))
		fail_msg("%s: error '%s' lacks '%s'", req, e ? e : "(none)", substr);
	json_decref(r);
}

static void test_stats_per_worker_and_total(void **state)
{
	struct fixture *f = *state;

	f->stats[0].messages_accepted = 7;
	f->stats[1].messages_accepted = 5;
	f->stats[1].refused_quota = 3;
	f->stats[0].sessions_active = 2;
	json_t *r = ask(f, "{\"cmd\": \"stats\"}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_t *total = json_object_get(r, "total"), *w = json_object_get(r, "workers");
	assert_int_equal(json_integer_value(json_object_get(total, "messages_accepted")), 12);
	assert_int_equal(json_integer_value(json_object_get(total, "refused_quota")), 3);
	assert_int_equal(json_integer_value(json_object_get(total, "sessions_active")), 2);
	assert_int_equal(json_array_size(w), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(w, 1),
							    "messages_accepted")), 5);
	/* every counter of struct vr_smtp_stats is there */
	assert_int_equal(json_object_size(total), sizeof(struct vr_smtp_stats) / sizeof(uint64_t));
	json_decref(r);
}

static void test_metrics_text(void **state)
{
	struct fixture *f = *state;
	struct vr_buf b;

	f->stats[0].messages_accepted = 7;
	f->stats[1].messages_accepted = 5;
	vr_buf_init(&b, 0);
	assert_int_equal(vr_ctl_metrics(f->ctl, &b), 0);
	assert_int_equal(vr_buf_append(&b, "", 1), 0);
	const char *t = (const char *)vr_buf_head(&b);
	assert_non_null(strstr(t, "# TYPE vmrelay_messages_accepted_total counter\n"));
	assert_non_null(strstr(t, "vmrelay_messages_accepted_total{worker=\"0\"} 7\n"));
	assert_non_null(strstr(t, "vmrelay_messages_accepted_total{worker=\"1\"} 5\n"));
	assert_non_null(strstr(t, "# TYPE vmrelay_sessions_active gauge\n"));
	assert_null(strstr(t, "vmrelay_sessions_active_total"));
	vr_buf_free(&b);

	json_t *r = ask(f, "{\"cmd\": \"metrics\", \"args\": []}");
	assert_non_null(strstr(json_string_value(json_object_get(r, "metrics")),
			       "vmrelay_messages_accepted_total{worker=\"1\"} 5\n"));
	json_decref(r);
}

static void test_quota_show_by_id_and_address(void **state)
{
	struct fixture *f = *state;
	struct vr_rl_ticket tk;

	assert_int_equal(vr_rl_reserve(f->srv.rl, "vps1", 3, (int64_t)time(NULL), &tk, NULL), 0);
	vr_rl_confirm(f->srv.rl, "vps1", &tk);
	json_t *r = ask(f, "{\"cmd\": \"quota\", \"args\": [\"show\", \"192.0.2.1\"]}");
	assert_string_equal(json_string_value(json_object_get(r, "account")), "vps1");
	json_t *day = json_object_get(json_object_get(r, "windows"), "day");
	assert_int_equal(json_integer_value(json_object_get(day, "used")), 3);
	assert_int_equal(json_integer_value(json_object_get(day, "limit")), 1000);
	json_t *min = json_object_get(json_object_get(r, "windows"), "minute");
	assert_int_equal(json_integer_value(json_object_get(min, "limit")), 60);
	json_decref(r);

	r = ask(f, "{\"cmd\": \"quota\", \"args\": [\"show\", \"vps1\"]}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	r = ask(f, "{\"cmd\": \"quota\", \"args\": [\"show\", \"bench\"]}");
	assert_true(json_is_true(json_object_get(r, "unlimited")));
	assert_null(json_object_get(r, "windows"));
	json_decref(r);
	assert_error(f, "{\"cmd\": \"quota\", \"args\": [\"show\", \"nope\"]}",
		     "unknown account 'nope'");
	assert_error(f, "{\"cmd\": \"quota\", \"args\": [\"show\", \"198.51.100.9\"]}",
		     "no account sends from 198.51.100.9");
}

static void test_quota_set_and_reset(void **state)
{
	struct fixture *f = *state;
	struct vr_rl_verdict v;
	struct vr_rl_ticket tk;
	int64_t now = (int64_t)time(NULL);

	json_t *r = ask(f, "{\"cmd\": \"quota\", \"args\": [\"set\", \"vps1\", \"5000\"]}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	assert_int_equal(vr_rl_show(f->srv.rl, "vps1", now, &v), 0);
	assert_int_equal(v.w[VR_RL_DAY].limit, 5000);

	assert_error(f, "{\"cmd\": \"quota\", \"args\": [\"set\", \"vps1\", \"5001\"]}",
		     "above the cap ([limits] per_day_max = 5000)");
	assert_error(f, "{\"cmd\": \"quota\", \"args\": [\"set\", \"vps1\", \"0\"]}",
		     "not a number from 1 to 5000");
	assert_error(f, "{\"cmd\": \"quota\", \"args\": [\"set\", \"vps1\", \"-1\"]}",
		     "not a number");
	assert_error(f, "{\"cmd\": \"quota\", \"args\": [\"set\", \"vps1\", \"010\"]}",
		     "not a number");
	assert_error(f, "{\"cmd\": \"quota\", \"args\": [\"set\", \"vps1\", \"99999999999\"]}",
		     "not a number");
	assert_error(f, "{\"cmd\": \"quota\", \"args\": [\"set\", \"ghost\", \"10\"]}",
		     "unknown account 'ghost'");
	assert_int_equal(vr_rl_show(f->srv.rl, "vps1", now, &v), 0);
	assert_int_equal(v.w[VR_RL_DAY].limit, 5000);

	assert_int_equal(vr_rl_reserve(f->srv.rl, "vps1", 4, now, &tk, NULL), 0);
	vr_rl_confirm(f->srv.rl, "vps1", &tk);
	r = ask(f, "{\"cmd\": \"quota\", \"args\": [\"reset\", \"vps1\"]}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	assert_int_equal(vr_rl_show(f->srv.rl, "vps1", now, &v), 0);
	assert_int_equal(v.w[VR_RL_DAY].used, 0);
	assert_error(f, "{\"cmd\": \"quota\", \"args\": [\"reset\", \"ghost\"]}", "unknown account");
}

static void test_accounts(void **state)
{
	struct fixture *f = *state;

	json_t *r = ask(f, "{\"cmd\": \"account\", \"args\": [\"list\"]}");
	json_t *list = json_object_get(r, "accounts");
	assert_int_equal(json_array_size(list), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "id")),
			    "vps1");
	json_decref(r);

	r = ask(f, "{\"cmd\": \"account\", \"args\": [\"show\", \"vps1\"]}");
	json_t *a = json_object_get(r, "account");
	assert_string_equal(json_string_value(json_object_get(a, "hostname")), "vps1.example.com");
	assert_string_equal(json_string_value(json_object_get(a, "over_quota")), "hold");
	json_t *d = json_array_get(json_object_get(a, "domains"), 1);
	assert_string_equal(json_string_value(json_object_get(d, "name")), "pending.example");
	assert_true(json_is_false(json_object_get(d, "verified")));
	json_decref(r);
	assert_error(f, "{\"cmd\": \"account\", \"args\": [\"show\", \"ghost\"]}",
		     "unknown account 'ghost'");
}

/* The whole of a small file, into a static buffer. */
static const char *slurp(const char *path)
{
	static char text[4096];
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	size_t n = fread(text, 1, sizeof(text) - 1, fp);
	fclose(fp);
	text[n] = '\0';
	return text;
}

static void test_account_add_remove_edit_the_file(void **state)
{
	struct fixture *f = *state;
	char path[300];
	const char *vps1 = "{\"id\": \"vps1\", \"ips\": [\"192.0.2.1\"]}";

	snprintf(path, sizeof(path), "%s/edit.jsonl", dir);
	snprintf(f->cfg.accounts, sizeof(f->cfg.accounts), "%s", path);
	write_file(path, "# a comment stays\n{\"id\": \"vps1\", \"ips\": [\"192.0.2.1\"]}");
	chmod(path, 0640);

	/* the last line had no newline: the new one still gets its own */
	json_t *r = ask(f, "{\"cmd\": \"account\", \"args\": [\"add\", "
			"\"{\\\"id\\\": \\\"vps7\\\", \\\"ips\\\": [\\\"192.0.2.7\\\"]}\"]}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_string_equal(json_string_value(json_object_get(r, "account")), "vps7");
	json_decref(r);
	assert_int_equal(f->reloads, 1);
	char want[512];
	snprintf(want, sizeof(want), "# a comment stays\n%s\n%s\n", vps1,
		 "{\"id\": \"vps7\", \"ips\": [\"192.0.2.7\"]}");
	assert_string_equal(slurp(path), want);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);

	/* refused: the file and the reload count stay */
	assert_error(f, "{\"cmd\": \"account\", \"args\": [\"add\", "
		     "\"{\\\"id\\\": \\\"vps8\\\", \\\"ips\\\": [\\\"192.0.2.7\\\"]}\"]}",
		     "edit.jsonl:4: 'ips': '192.0.2.7' is already on line 3 (account 'vps7')");
	assert_error(f, "{\"cmd\": \"account\", \"args\": [\"add\", \"# vps8\"]}", "bad JSON");
	assert_error(f, "{\"cmd\": \"account\", \"args\": [\"remove\", \"vps8\"]}",
		     "unknown account 'vps8' (not in ");
	assert_string_equal(slurp(path), want);
	assert_int_equal(f->reloads, 1);

	r = ask(f, "{\"cmd\": \"account\", \"args\": [\"remove\", \"vps1\"]}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	assert_string_equal(slurp(path),
			    "# a comment stays\n{\"id\": \"vps7\", \"ips\": [\"192.0.2.7\"]}\n");
	assert_int_equal(f->reloads, 2);

	/* the file changed even though the reload failed: the reply says both */
	f->reload_fails = true;
	assert_error(f, "{\"cmd\": \"account\", \"args\": [\"remove\", \"vps7\"]}",
		     "edit.jsonl changed, but the reload failed: accounts.jsonl:3:");
	assert_string_equal(slurp(path), "# a comment stays\n");
	unlink(path);

	snprintf(f->cfg.accounts, sizeof(f->cfg.accounts), "%s/gone/edit.jsonl", dir);
	assert_error(f, "{\"cmd\": \"account\", \"args\": [\"remove\", \"vps7\"]}",
		     "gone/edit.jsonl: No such file or directory");
}

static void test_vps_show(void **state)
{
	struct fixture *f = *state;

	json_t *r = ask(f, "{\"cmd\": \"vps\", \"args\": [\"show\", \"192.0.2.1\"]}");
	json_t *a = json_object_get(r, "account");
	assert_string_equal(json_string_value(json_object_get(a, "id")), "vps1");
	assert_string_equal(json_string_value(json_object_get(a, "over_quota")), "hold");
	json_t *day = json_object_get(json_object_get(r, "windows"), "day");
	assert_int_equal(json_integer_value(json_object_get(day, "limit")), 1000);
	assert_true(json_is_true(json_object_get(r, "may_send")));
	json_decref(r);
	/* exempt: the account, no windows */
	r = ask(f, "{\"cmd\": \"vps\", \"args\": [\"show\", \"bench\"]}");
	assert_true(json_is_true(json_object_get(json_object_get(r, "account"), "unlimited")));
	assert_null(json_object_get(r, "windows"));
	json_decref(r);
	assert_error(f, "{\"cmd\": \"vps\", \"args\": [\"show\", \"ghost\"]}",
		     "unknown account 'ghost'");
}

static void *record_remote(void *arg)
{
	(void)arg;
	vr_log_event(VR_LOG_EVENT_REMOTE, "vps1", "Q2", 0, "connect to mx.example.net: refused");
	vr_log_event(VR_LOG_EVENT_REMOTE, "vps1", "Q3", 451, "451 4.7.1 greylisted");
	vr_log_event(VR_LOG_EVENT_REMOTE, "bench", "Q4", 550, "550 5.1.1 no such user");
	return NULL;
}

/* vps show's recent refusals and remote errors: the VPS's own, from every
 * thread's ring, newest first; no spool: nothing waiting. */
static void test_vps_show_recent_events(void **state)
{
	struct fixture *f = *state;
	pthread_t t;

	vr_log_event(VR_LOG_EVENT_REFUSAL, "vps1", NULL, 550,
		     "550 5.7.1 sender domain evil.example is not registered for VPS vps1");
	vr_log_event(VR_LOG_EVENT_REFUSAL, "bench", NULL, 451, "451 4.7.1 not vps1's");
	usleep(2000);
	vr_log_event(VR_LOG_EVENT_REFUSAL, "vps1", NULL, 451, "451 4.7.1 hourly limit reached");
	usleep(2000);
	assert_int_equal(pthread_create(&t, NULL, record_remote, NULL), 0);
	pthread_join(t, NULL);

	json_t *r = ask(f, "{\"cmd\": \"vps\", \"args\": [\"show\", \"vps1\"]}");
	json_t *ref = json_object_get(r, "refusals"), *rem = json_object_get(r, "remote_errors");
	assert_int_equal(json_array_size(ref), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(ref, 0), "code")), 451);
	assert_string_equal(json_string_value(json_object_get(json_array_get(ref, 1), "text")),
			    "550 5.7.1 sender domain evil.example is not registered for VPS vps1");
	assert_null(json_object_get(json_array_get(ref, 0), "qid"));
	double at0 = json_real_value(json_object_get(json_array_get(ref, 0), "at"));
	assert_true(at0 > (double)time(NULL) - 60 && at0 <= (double)time(NULL) + 1);
	assert_int_equal(json_array_size(rem), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(rem, 0), "qid")),
			    "Q3");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(rem, 1), "code")), 0);
	json_t *q = json_object_get(r, "queue");
	assert_int_equal(json_integer_value(json_object_get(q, "messages")), 0);
	assert_int_equal(json_integer_value(json_object_get(q, "held")), 0);
	json_decref(r);
}

/* A ring keeps its thread's last VR_LOG_EVENTS events, and a reader racing
 * the writer gets whole events only. */
static _Atomic bool ring_stop;

static void *ring_writer(void *arg)
{
	char text[32];

	(void)arg;
	for (unsigned i = 0; !ring_stop; i++) {
		snprintf(text, sizeof(text), "%u", i % 1000);
		vr_log_event(VR_LOG_EVENT_REMOTE, "ringer", text, i % 1000, text);
	}
	return NULL;
}

static void test_log_events_ring(void **state)
{
	struct vr_log_event ev[VR_LOG_EVENTS + 8];
	char want[32];
	pthread_t t;

	(void)state;
	for (unsigned i = 0; i < VR_LOG_EVENTS + 50; i++) {
		snprintf(want, sizeof(want), "%u", i);
		vr_log_event(VR_LOG_EVENT_REFUSAL, "wrapper", NULL, 500, want);
	}
	assert_int_equal(vr_log_events_of("wrapper", VR_LOG_EVENT_REFUSAL, ev,
					  VR_ARRAY_SIZE(ev)), VR_LOG_EVENTS);
	assert_int_equal(vr_log_events_of("wrapper", VR_LOG_EVENT_REMOTE, ev, 4), 0);
	assert_int_equal(vr_log_events_of("wrapper", VR_LOG_EVENT_REFUSAL, ev, 3), 3);
	assert_string_equal(ev[0].text, "177");
	assert_true(ev[0].at_us >= ev[1].at_us && ev[1].at_us >= ev[2].at_us);

	ring_stop = false;
	assert_int_equal(pthread_create(&t, NULL, ring_writer, NULL), 0);
	/* The rounds race the writer only once it runs (late on a busy machine). */
	for (unsigned ms = 0; !vr_log_events_of("ringer", VR_LOG_EVENT_REMOTE, ev, 1); ms++) {
		assert_true(ms < 10000);
		usleep(1000);
	}
	unsigned seen = 0;
	for (unsigned round = 0; round < 2000; round++) {
		unsigned n = vr_log_events_of("ringer", VR_LOG_EVENT_REMOTE, ev, VR_LOG_EVENTS);
		for (unsigned i = 0; i < n; i++) {
			snprintf(want, sizeof(want), "%u", ev[i].code);
			assert_string_equal(ev[i].text, want);
			assert_string_equal(ev[i].qid, want);
		}
		seen += n;
	}
	ring_stop = true;
	pthread_join(t, NULL);
	assert_true(seen > 0);
}

static void test_reload_and_drain(void **state)
{
	struct fixture *f = *state;

	json_t *r = ask(f, "{\"cmd\": \"reload\"}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_int_equal(json_integer_value(json_object_get(r, "accounts")), 2);
	json_decref(r);
	f->reload_fails = true;
	assert_error(f, "{\"cmd\": \"reload\"}", "accounts.jsonl:3: unknown key 'quota'");
	assert_int_equal(f->reloads, 2);

	assert_int_equal(f->drains, 0);
	r = ask(f, "{\"cmd\": \"drain\"}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	assert_int_equal(f->drains, 1);
}

static void test_bad_requests(void **state)
{
	struct fixture *f = *state;

	assert_error(f, "", "malformed JSON");
	assert_error(f, "{\"cmd\": \"stats\"", "malformed JSON");
	assert_error(f, "{\"cmd\": \"stats\"} x", "malformed JSON");
	assert_error(f, "[\"stats\"]", "a request is {\"cmd\"");
	assert_error(f, "{\"cmd\": 1}", "a request is {\"cmd\"");
	assert_error(f, "{\"args\": []}", "a request is {\"cmd\"");
	assert_error(f, "{\"cmd\": \"stats\", \"cmd\": \"drain\"}", "malformed JSON");
	assert_error(f, "{\"cmd\": \"stats\", \"verbose\": true}", "only \"cmd\" and \"args\"");
	assert_error(f, "{\"cmd\": \"stats\", \"args\": \"x\"}", "array of strings");
	assert_error(f, "{\"cmd\": \"stats\", \"args\": [1]}", "array of strings");
	assert_error(f, "{\"cmd\": \"x\", \"args\": [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\"]}",
		     "too many arguments");
	assert_error(f, "{\"cmd\": \"frobnicate\"}", "unknown command 'frobnicate'; commands: stats");
	assert_error(f, "{\"cmd\": \"stats\", \"args\": [\"x\"]}", "usage: stats");
	assert_error(f, "{\"cmd\": \"quota\"}",
		     "usage: quota show IP|ID | quota set ID N | quota reset ID");
	assert_error(f, "{\"cmd\": \"quota\", \"args\": [\"set\", \"vps1\"]}",
		     "usage: quota set ID N");
	/* bytes that are not UTF-8 never reach the reply */
	assert_error(f, "{\"cmd\": \"\xff\"}", "malformed JSON");
	assert_error(f, "{\"cmd\": \"\\u00e9t\\u00e9\"}", "unknown command '?\?t?\?'");
	assert_int_equal(f->drains, 0);
}

static void test_queue_list_usage(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
		"[\"list\", \"--vps\"]", "[\"list\", \"--vps\", \"\"]",
		"[\"list\", \"--host\", \"x\"]", "[\"list\", \"vps1\"]",
		"[\"list\", \"--vps\", \"a\", \"--vps\", \"b\"]",
		"[\"list\", \"--domain\", \"a\", \"x\"]",
		"[\"list\", \"--limit\"]", "[\"list\", \"--limit\", \"1\", \"--limit\", \"2\"]",
	};
	char req[256];

	for (size_t i = 0; i < VR_ARRAY_SIZE(bad); i++) {
		snprintf(req, sizeof(req), "{\"cmd\": \"queue\", \"args\": %s}", bad[i]);
		assert_error(f, req, "usage: queue list [--vps ID] [--domain D] [--limit N]");
	}
	static const char *const limits[] = { "0", "10001", "-1", "01", "1x", "99999999999" };
	for (size_t i = 0; i < VR_ARRAY_SIZE(limits); i++) {
		char want[128];
		snprintf(req, sizeof(req), "{\"cmd\": \"queue\", \"args\": [\"list\", "
			 "\"--limit\", \"%s\"]}", limits[i]);
		snprintf(want, sizeof(want), "queue list: limit '%s' is not a number from 1 to "
			 "10000", limits[i]);
		assert_error(f, req, want);
	}
}

/* --- over the socket --- */

static int dial(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sun.sun_path, sock_path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	return fd;
}

/* Reads until n newlines (or EOF); returns the bytes, NUL-terminated. */
static char *read_lines(int fd, unsigned n)
{
	static char buf[65536];
	size_t len = 0;
	unsigned seen = 0;

	while (seen < n && len < sizeof(buf) - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		assert_int_equal(poll(&p, 1, 5000), 1);
		ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
		assert_true(r >= 0);
		if (r == 0)
			break;
		for (ssize_t i = 0; i < r; i++)
			seen += buf[len + (size_t)i] == '\n';
		len += (size_t)r;
	}
	buf[len] = '\0';
	return buf;
}

static void test_socket_mode_and_lines(void **state)
{
	struct fixture *f = *state;
	struct stat st;

	assert_int_equal(stat(sock_path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0660);
	assert_int_equal(vr_ctl_start(f->ctl), 0);

	int a = dial(), b = dial();
	/* a request a byte at a time, while b is served in between */
	const char *req = "{\"cmd\":\"account\",\"args\":[\"show\",\"vps1\"]}\r\n";
	for (const char *p = req; *p; p++) {
		assert_int_equal(write(a, p, 1), 1);
		if (p == req + 5) {
			assert_int_equal(write(b, "{\"cmd\":\"nope\"}\n", 15), 15);
			assert_non_null(strstr(read_lines(b, 1), "unknown command 'nope'"));
		}
	}
	assert_non_null(strstr(read_lines(a, 1), "\"id\":\"vps1\""));
	/* two requests in one write: two replies in order */
	const char *two = "{\"cmd\":\"quota\",\"args\":[\"show\",\"vps1\"]}\n{bad\n";
	assert_int_equal(write(a, two, strlen(two)), (ssize_t)strlen(two));
	char *r = read_lines(a, 2);
	char *nl = strchr(r, '\n');
	assert_non_null(strstr(r, "\"account\":\"vps1\""));
	assert_true(strstr(r, "\"account\":\"vps1\"") < nl);
	assert_non_null(strstr(nl, "malformed JSON"));
	close(a);

	/* an over-long line: an error, then the connection closes */
	char big[VR_CTL_REQUEST_MAX + 100];
	memset(big, ' ', sizeof(big));
	assert_int_equal(write(b, big, sizeof(big)), (ssize_t)sizeof(big));
	assert_non_null(strstr(read_lines(b, 2), "request line too long"));
	char c;
	assert_int_equal(read(b, &c, 1), 0);
	close(b);
	assert_int_equal(f->drains, 0);
}

static void test_stale_socket_replaced_and_removed(void **state)
{
	struct fixture *f = *state;
	struct vr_ctl_ops ops = { .cfg = &f->cfg, .srv = &f->srv, .writer = &f->writer };
	char err[256];

	/* the fixture's socket is alive: a second relay must not steal it */
	assert_null(vr_ctl_new(&ops, err, sizeof(err)));
	assert_non_null(strstr(err, "another process is serving it"));

	vr_ctl_free(f->ctl);
	f->ctl = NULL;
	assert_int_equal(access(sock_path, F_OK), -1);

	/* a dead socket file (left by a crash) is replaced */
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(sun.sun_path, sock_path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	f->ctl = vr_ctl_new(&ops, err, sizeof(err));
	assert_non_null(f->ctl);

	/* a regular file is not ours to delete */
	vr_ctl_free(f->ctl);
	f->ctl = NULL;
	write_file(sock_path, "keep me\n");
	assert_null(vr_ctl_new(&ops, err, sizeof(err)));
	assert_non_null(strstr(err, "exists and is not a socket"));
	unlink(sock_path);

	snprintf(f->cfg.control_group, sizeof(f->cfg.control_group), "no-such-group-vr");
	assert_null(vr_ctl_new(&ops, err, sizeof(err)));
	assert_string_equal(err, "control_group 'no-such-group-vr': no such group");
	assert_int_equal(access(sock_path, F_OK), -1);
}

/* --- the metrics endpoint --- */

static const struct http_case {
	const char *req;
	int rc, status;
	bool head_only;
	const char *target;
} http_cases[] = {
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", VR_OK, 200, false, "/metrics" },
	{ "HEAD /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", VR_OK, 200, true,
	  "/metrics" },
	{ "GET /metrics?x=1 HTTP/1.0\r\n\r\n", VR_OK, 200, false, "/metrics?x=1" },
	{ "GET / HTTP/1.1\r\nhOsT:\tx \r\nContent-Length: 0\r\n\r\n", VR_OK, 200, false,
	  "/" },
	/* what Prometheus sends */
	{ "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nUser-Agent: Prometheus/2.45.0\r\n"
	  "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n"
	  "Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
	  VR_OK, 200, false, "/metrics" },
	{ "GET /metrics HTTP/1.1\r\n\r\n", VR_ERR, 400, false, NULL },        /* no Host */
	{ "GET /m HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", VR_ERR, 400, false, NULL },
	{ "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", VR_ERR, 405, false, NULL },
	{ "DELETEALL /metrics HTTP/1.1\r\n", VR_ERR, 405, false, NULL },
	{ "GET /metrics HTTP/2.0\r\n", VR_ERR, 505, false, NULL },
	{ "GET /metrics HTTP/1.1x\r\n", VR_ERR, 400, false, NULL },
	{ "GET /metrics http/1.1\r\n", VR_ERR, 400, false, NULL },
	{ "GET http://x/metrics HTTP/1.1\r\n", VR_ERR, 400, false, NULL },
	{ "GET  /metrics HTTP/1.1\r\n", VR_ERR, 400, false, NULL },
	{ " GET /metrics HTTP/1.1\r\n", VR_ERR, 400, false, NULL },
	{ "GET /metrics HTTP/1.1\n", VR_ERR, 400, false, NULL },               /* bare LF */
	{ "GET /metrics HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", VR_ERR, 400, false, NULL },
	{ "GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", VR_ERR, 400, false, NULL },
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", VR_ERR, 400, false, NULL },
	{ "GET /metrics HTTP/1.1\r\n: x\r\n\r\n", VR_ERR, 400, false, NULL },
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", VR_ERR, 400,
	  false, NULL },
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 000000000000\r\n\r\n", VR_ERR,
	  400, false, NULL },
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", VR_ERR,
	  400, false, NULL },
	{ "GET /metrics HTTP/1.1\r\nHost: x\x01\r\n\r\n", VR_ERR, 400, false, NULL },
	{ "GET /met\x80rics HTTP/1.1\r\n", VR_ERR, 400, false, NULL },
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\n", VR_AGAIN, 0, false, NULL },
	{ "GET /metr", VR_AGAIN, 0, false, NULL },
};

/* Feeds req in pieces of `step` octets (0: whole). */
static int http_feed(struct vr_http_req *r, const char *req, size_t len, size_t step)
{
	size_t off = 0, used;
	int rc = VR_AGAIN;

	vr_http_init(r);
	while (off < len && rc == VR_AGAIN) {
		size_t n = step && len - off > step ? step : len - off;
		rc = vr_http_parse(r, (const uint8_t *)req + off, n, &used);
		assert_true(used <= n);
		off += used;
	}
	return rc;
}

static void test_http_parser(void **state)
{
	static struct vr_http_req r;

	(void)state;
	for (unsigned i = 0; i < sizeof(http_cases) / sizeof(http_cases[0]); i++) {
		const struct http_case *t = &http_cases[i];
		for (size_t step = 0; step <= 1; step++) {
			int rc = http_feed(&r, t->req, strlen(t->req), step);
			if (rc != t->rc || r.status != t->status)
				fail_msg("case %u (step %zu): rc %d status %d, wanted %d %d", i,
					 step, rc, r.status, t->rc, t->status);
			if (rc == VR_OK) {
				assert_int_equal(r.head_only, t->head_only);
				assert_int_equal(r.tlen, strlen(t->target));
				assert_memory_equal(r.target, t->target, r.tlen);
			}
		}
	}
}

static void test_http_limits(void **state)
{
	static struct vr_http_req r;
	static char req[VR_HTTP_HEAD_MAX + 200];
	size_t used;

	(void)state;
	/* a target one octet too long for the request line */
	int n = snprintf(req, sizeof(req), "GET /%0*d HTTP/1.1\r\n", VR_HTTP_LINE_MAX, 0);
	assert_int_equal(http_feed(&r, req, (size_t)n, 1), VR_ERR);
	assert_int_equal(r.status, 414);

	/* a head past VR_HTTP_HEAD_MAX, in lines that are each fine */
	n = snprintf(req, sizeof(req), "GET /metrics HTTP/1.1\r\n");
	while ((size_t)n < VR_HTTP_HEAD_MAX)
		n += snprintf(req + n, sizeof(req) - (size_t)n, "X-Pad: %0100d\r\n", 0);
	assert_int_equal(http_feed(&r, req, (size_t)n, 0), VR_ERR);
	assert_int_equal(r.status, 431);

	/* too many headers, the head small */
	n = snprintf(req, sizeof(req), "GET /metrics HTTP/1.1\r\nHost: x\r\n");
	for (int i = 0; i < VR_HTTP_HEADERS_MAX; i++)
		n += snprintf(req + n, sizeof(req) - (size_t)n, "A: b\r\n");
	assert_int_equal(http_feed(&r, req, (size_t)n, 0), VR_ERR);
	assert_int_equal(r.status, 431);

	/* once done, it stays done, and ignores what follows */
	const char *two = "GET /metrics HTTP/1.0\r\n\r\nGET /x HTTP/1.0\r\n\r\n";
	vr_http_init(&r);
	assert_int_equal(vr_http_parse(&r, (const uint8_t *)two, strlen(two), &used), VR_OK);
	assert_int_equal(used, 25);
	assert_int_equal(vr_http_parse(&r, (const uint8_t *)two + used, 5, &used), VR_OK);
	assert_int_equal(used, 0);
}

/* The whole response to req from the metrics endpoint. */
static char *http_get(uint16_t port, const char *req)
{
	static char buf[65536];
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	size_t len = 0;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		assert_int_equal(poll(&p, 1, 5000), 1);
		ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
		assert_true(r >= 0);
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	return buf;
}

static void test_http_server(void **state)
{
	struct fixture *f = *state;
	struct vr_ctl_ops ops = { .cfg = &f->cfg, .srv = &f->srv, .writer = &f->writer };
	char err[256];

	assert_int_equal(vr_ctl_metrics_port(f->ctl), 0);     /* off by default */
	vr_ctl_free(f->ctl);
	snprintf(f->cfg.metrics_listen, sizeof(f->cfg.metrics_listen), "127.0.0.1:0");
	f->ctl = vr_ctl_new(&ops, err, sizeof(err));
	assert_non_null(f->ctl);
	uint16_t port = vr_ctl_metrics_port(f->ctl);
	assert_int_not_equal(port, 0);
	assert_int_equal(vr_ctl_start(f->ctl), 0);
	f->stats[1].timeouts = 9;

	char *r = http_get(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_non_null(strstr(r, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(r, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	assert_non_null(strstr(r, "Connection: close\r\n"));
	char *body = strstr(r, "\r\n\r\n");
	assert_non_null(body);
	body += 4;
	unsigned long clen = strtoul(strstr(r, "Content-Length: ") + 16, NULL, 10);
	assert_int_equal(clen, strlen(body));
	assert_non_null(strstr(body, "vmrelay_timeouts_total{worker=\"1\"} 9\n"));

	r = http_get(port, "HEAD /metrics HTTP/1.0\r\n\r\n");
	assert_non_null(strstr(r, "HTTP/1.1 200 OK\r\n"));
	assert_string_equal(strstr(r, "\r\n\r\n"), "\r\n\r\n");
	assert_non_null(strstr(http_get(port, "GET /metricsx HTTP/1.0\r\n\r\n"),
			       "HTTP/1.1 404 Not Found\r\n"));
	r = http_get(port, "PUT /metrics HTTP/1.1\r\n\r\n");
	assert_non_null(strstr(r, "HTTP/1.1 405 Method Not Allowed\r\n"));
	assert_non_null(strstr(r, "Allow: GET, HEAD\r\n"));
	assert_non_null(strstr(http_get(port, "GET /metrics HTTP/1.1\n\n"),
			       "HTTP/1.1 400 Bad Request\r\n"));

	/* a bad address is an error at start */
	vr_ctl_free(f->ctl);
	f->ctl = NULL;
	snprintf(f->cfg.metrics_listen, sizeof(f->cfg.metrics_listen), "192.0.2.1:1");
	assert_null(vr_ctl_new(&ops, err, sizeof(err)));
	assert_string_equal(err, "metrics_listen 192.0.2.1:1: Cannot assign requested address");
	assert_int_equal(access(sock_path, F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stats_per_worker_and_total, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metrics_text, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quota_show_by_id_and_address, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quota_set_and_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_accounts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_add_remove_edit_the_file, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_vps_show, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vps_show_recent_events, setup, teardown),
		cmocka_unit_test(test_log_events_ring),
		cmocka_unit_test_setup_teardown(test_queue_list_usage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_and_drain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_socket_mode_and_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_socket_replaced_and_removed, setup,
						teardown),
		cmocka_unit_test(test_http_parser),
		cmocka_unit_test(test_http_limits),
		cmocka_unit_test_setup_teardown(test_http_server, setup, teardown),
	};

	if (!mkdtemp(dir))
		return 1;
	snprintf(accounts_path, sizeof(accounts_path), "%s/accounts.jsonl", dir);
	snprintf(sock_path, sizeof(sock_path), "%s/ctl.sock", dir);
	write_file(accounts_path,
		   "{\"id\": \"vps1\", \"ips\": [\"192.0.2.1\"], \"hostname\": \"vps1.example.com\", "
		   "\"domains\": [\"example.com\", {\"name\": \"pending.example\", "
		   "\"verified\": false}], \"over_quota\": \"hold\"}\n"
		   "{\"id\": \"bench\", \"ips\": [\"192.0.2.2\"], \"unlimited\": true}\n");
	rcu_register_thread();
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	rcu_unregister_thread();
	unlink(accounts_path);
	rmdir(dir);
	return rc;
}
