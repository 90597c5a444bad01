/*
 * test_smtp_driver.c - real sessions over a real spool, accounts table and
 * TLS, for the smtp unit tests (see test_smtp_driver.h).
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <urcu-qsbr.h>
#include <cmocka.h>

#include "vmrelay/log.h"
#include "vmrelay/policy.h"
#include "vmrelay/ratelimit.h"

#include "test_smtp_driver.h"

struct drv drv;

/* --- fixture --- */

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void hex_sha256(const char *token, char out[65])
{
	uint8_t md[SHA256_DIGEST_LENGTH];

	SHA256((const uint8_t *)token, strlen(token), md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

/* A self-signed P-256 certificate for relay.example.net. */
static void write_cert(const char *cert, const char *key)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	FILE *f;

	assert_non_null(pk);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)DRV_HOSTNAME, -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509_set_pubkey(x, pk);
	assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
	assert_non_null(f = fopen(cert, "w"));
	PEM_write_X509(f, x);
	fclose(f);
	assert_non_null(f = fopen(key, "w"));
	PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
}

/* --- the sending windows, and every call the session makes on them ---
 *
 * The tests link with -Wl,--wrap for these (engine/smtp/meson.build), so
 * the session's calls land here first and are counted in slots: every
 * reserved slot must end confirmed or released, exactly once. */

int __real_vr_rl_reserve(struct vr_rl *rl, const char *id, uint32_t n, int64_t now,
			 struct vr_rl_ticket *ticket, struct vr_rl_verdict *v);
void __real_vr_rl_confirm(struct vr_rl *rl, const char *id, const struct vr_rl_ticket *ticket);
void __real_vr_rl_release(struct vr_rl *rl, const char *id, const struct vr_rl_ticket *ticket);
int __wrap_vr_rl_reserve(struct vr_rl *rl, const char *id, uint32_t n, int64_t now,
			 struct vr_rl_ticket *ticket, struct vr_rl_verdict *v);
void __wrap_vr_rl_confirm(struct vr_rl *rl, const char *id, const struct vr_rl_ticket *ticket);
void __wrap_vr_rl_release(struct vr_rl *rl, const char *id, const struct vr_rl_ticket *ticket);

int __wrap_vr_rl_reserve(struct vr_rl *rl, const char *id, uint32_t n, int64_t now,
			 struct vr_rl_ticket *ticket, struct vr_rl_verdict *v)
{
	int rc = __real_vr_rl_reserve(rl, id, n, now, ticket, v);

	if (rc == 0)
		drv.rl_reserved += n;
	return rc;
}

void __wrap_vr_rl_confirm(struct vr_rl *rl, const char *id, const struct vr_rl_ticket *ticket)
{
	drv.rl_confirmed += ticket->n;
	__real_vr_rl_confirm(rl, id, ticket);
}

void __wrap_vr_rl_release(struct vr_rl *rl, const char *id, const struct vr_rl_ticket *ticket)
{
	drv.rl_released += ticket->n;
	__real_vr_rl_release(rl, id, ticket);
}

static void drv_limits_free(void)
{
	vr_rl_free(drv.srv.rl);
	drv.srv.rl = NULL;
	drv.rl_reserved = drv.rl_confirmed = drv.rl_released = 0;
}

void drv_limits(uint32_t per_minute, uint32_t per_hour)
{
	const struct vr_rl_limits lim = {
		.per_minute = per_minute, .per_hour = per_hour, .per_day_max = 10000,
	};
	char err[256];

	drv_limits_free();
	drv.srv.rl = vr_rl_new(&lim, err, sizeof(err));
	if (!drv.srv.rl)
		fail_msg("vr_rl_new: %s", err);
	rcu_read_lock();
	const struct vr_accounts *t = vr_policy_current();
	rcu_read_unlock();
	/* this thread is the only writer of the table, so t stays */
	assert_int_equal(vr_rl_sync(drv.srv.rl, t), 0);
}

uint32_t drv_used(const char *id)
{
	struct vr_rl_verdict v;

	assert_int_equal(vr_rl_show(drv.srv.rl, id, (int64_t)time(NULL), &v), 0);
	return v.w[VR_RL_MINUTE].used;
}

void drv_config_reset(void)
{
	drv_limits_free();
	vr_config_defaults(&drv.cfg);
	snprintf(drv.cfg.hostname, sizeof(drv.cfg.hostname), "%s", DRV_HOSTNAME);
	drv.cfg.greet_pause_ms = 0;
	drv.cfg.max_message_size = 10 * 1024 * 1024;
	drv.force_status = 1;
}

int drv_setup(void **state)
{
	char err[256], h1[65], h2[65], text[1024], cert[128], key[128];

	snprintf(drv.dir, sizeof(drv.dir), "/tmp/vr_test_smtp.XXXXXX");
	if (!mkdtemp(drv.dir))
		return -1;
	snprintf(drv.spool_dir, sizeof(drv.spool_dir), "%s/spool", drv.dir);
	snprintf(drv.accounts, sizeof(drv.accounts), "%s/accounts.jsonl", drv.dir);
	snprintf(drv.log, sizeof(drv.log), "%s/log", drv.dir);
	snprintf(cert, sizeof(cert), "%s/cert.pem", drv.dir);
	snprintf(key, sizeof(key), "%s/key.pem", drv.dir);

	hex_sha256(DRV_VPS1_TOKEN, h1);
	hex_sha256(DRV_VPS2_TOKEN, h2);
	snprintf(text, sizeof(text),
		 "{\"id\":\"vps1\",\"ips\":[\"" DRV_VPS1_ADDR "\",\"2001:db8:7::/64\"],"
		 "\"hostname\":\"host1.example.com\",\"domains\":[\"example.com\","
		 "\"lists.example.net\",{\"name\":\"pending.example\",\"verified\":false}],"
		 "\"auth_sha256\":\"%s\"}\n"
		 "{\"id\":\"vps2\",\"domains\":[\"example.org\"],\"auth_sha256\":\"%s\"}\n"
		 "{\"id\":\"vps3\",\"ips\":[\"" DRV_VPS3_ADDR "\"],\"domains\":[\"hold.example\"],"
		 "\"over_quota\":\"hold\"}\n", h1, h2);
	write_file(drv.accounts, text);

	rcu_register_thread();
	struct vr_accounts *t = vr_accounts_load(drv.accounts, 1000, err, sizeof(err));
	if (!t) {
		fprintf(stderr, "accounts: %s\n", err);
		return -1;
	}
	vr_policy_publish(t);

	write_cert(cert, key);
	drv.tls_server = vr_tls_server_ctx_new(cert, key, err, sizeof(err));
	drv.tls_client = vr_tls_client_ctx_new(err, sizeof(err));
	if (!drv.tls_server || !drv.tls_client) {
		fprintf(stderr, "tls: %s\n", err);
		return -1;
	}
	drv.spool = vr_spool_open(drv.spool_dir, 1, err, sizeof(err));
	if (!drv.spool || vr_spool_start(drv.spool) < 0) {
		fprintf(stderr, "spool: %s\n", err);
		return -1;
	}
	/* The log goes to a file the tests can read (never the token). */
	vr_log_open(drv.log, VR_LOG_DEBUG);
	drv_config_reset();
	drv.srv = (struct vr_smtpd){
		.cfg = &drv.cfg,
		.tls = drv.tls_server,
		.spool = drv.spool,
		.stats = drv.stats,
		.n_workers = 1,
	};
	return 0;
}

int drv_teardown(void **state)
{
	char cmd[128];

	drv_limits_free();
	vr_spool_close(drv.spool);
	vr_policy_publish(NULL);
	vr_tls_ctx_free(drv.tls_server);
	vr_tls_ctx_free(drv.tls_client);
	vr_log_close();
	rcu_unregister_thread();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", drv.dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* --- conversations --- */

static void client_tls_flush(struct conv *c);

static void conv_kick(void *owner)
{
	struct conv *c = owner;
	c->kicks++;
}

void conv_open(struct conv *c, const char *addr, bool implicit_tls)
{
	conv_open_mode(c, addr, implicit_tls, implicit_tls);
}

void conv_open_mode(struct conv *c, const char *addr, bool implicit_tls, bool client_tls)
{
	struct sockaddr_storage peer = { 0 }, local = { 0 };
	struct sockaddr_in *v4 = (struct sockaddr_in *)&peer;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&peer;

	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, addr, &v6->sin6_addr), 1);
		v6->sin6_family = AF_INET6;
	}
	v4->sin_port = htons(40000);
	local.ss_family = AF_INET;
	const struct vr_session_params p = {
		.srv = &drv.srv,
		.worker = 0,
		.peer = (struct sockaddr *)&peer,
		.local = (struct sockaddr *)&local,
		.implicit_tls = implicit_tls,
		.kick = conv_kick,
		.owner = c,
	};
	vr_buf_init(&c->out, 0);
	assert_non_null(c->s = vr_session_new(&p, 0));
	vr_session_tick(c->s, 0);
	if (client_tls) {
		assert_non_null(c->tls = vr_tls_new(drv.tls_client, false, DRV_HOSTNAME));
		assert_int_equal(vr_tls_handshake(c->tls), -EAGAIN);
		client_tls_flush(c);
	}
	conv_settle(c);
}

void conv_close(struct conv *c)
{
	vr_session_free(c->s);
	vr_tls_free(c->tls);
	vr_buf_free(&c->out);
	memset(c, 0, sizeof(*c));
}

bool conv_closed(const struct conv *c)
{
	const uint8_t *p;
	return vr_session_closing(c->s) && vr_session_tx_peek(c->s, &p) == 0;
}

/* Feeds ciphertext or plaintext to the session, as its rx_space allows. */
static void feed(struct conv *c, const uint8_t *p, size_t n, size_t step);

/* Client TLS: what the client wants to send goes out. */
static void client_tls_flush(struct conv *c)
{
	struct vr_buf wire;

	vr_buf_init(&wire, 0);
	assert_true(vr_tls_drain(c->tls, &wire) >= 0);
	if (vr_buf_len(&wire))
		feed(c, vr_buf_head(&wire), vr_buf_len(&wire), SIZE_MAX);
	vr_buf_free(&wire);
}

/* Takes the session's output (decrypting it as the client). Returns true
 * if there was any. */
static bool collect(struct conv *c)
{
	const uint8_t *p;
	size_t n = vr_session_tx_peek(c->s, &p);

	if (n == 0)
		return false;
	if (!c->tls) {
		assert_int_equal(vr_buf_append(&c->out, p, n), 0);
		vr_session_tx_consume(c->s, n);
		return true;
	}
	assert_int_equal(vr_tls_feed(c->tls, p, n), 0);
	vr_session_tx_consume(c->s, n);
	for (;;) {
		uint8_t buf[4096];
		ssize_t r = vr_tls_read(c->tls, buf, sizeof(buf));
		if (r <= 0)
			break;
		assert_int_equal(vr_buf_append(&c->out, buf, (size_t)r), 0);
	}
	client_tls_flush(c);
	return true;
}

static void reap_done(void *cookie, int status, const char *qid)
{
	vr_session_commit_done(cookie, drv.force_status == 1 ? status : drv.force_status, qid);
}

/* Waits (up to 10 s) for the spool to complete something, and reaps it. */
static void reap(void)
{
	struct pollfd pfd = { .fd = vr_spool_done_fd(drv.spool, 0), .events = POLLIN };

	assert_int_equal(poll(&pfd, 1, 10000), 1);
	vr_spool_reap(drv.spool, 0, reap_done, 64);
}

void conv_settle(struct conv *c)
{
	for (;;) {
		while (collect(c))
			;
		if (vr_session_closing(c->s))
			return;
		uint64_t deadline = vr_session_deadline(c->s);
		if (deadline <= c->now) {
			vr_session_tick(c->s, c->now);
			continue;
		}
		if (vr_session_rx_space(c->s) > 0)
			return;
		/* Waiting, and not for output: a commit is in flight. */
		reap();
	}
}

static void feed(struct conv *c, const uint8_t *p, size_t n, size_t step)
{
	while (n > 0) {
		size_t space = vr_session_rx_space(c->s);
		if (vr_session_closing(c->s))
			return;      /* a transport stops reading */
		if (space == 0) {
			conv_settle(c);
			continue;
		}
		size_t k = VR_MIN(VR_MIN(space, step), n);
		int rc = vr_session_rx(c->s, p, k, c->now);
		assert_int_equal(rc, vr_session_closing(c->s) ? VR_ERR : VR_OK);
		p += k;
		n -= k;
	}
}

void conv_send(struct conv *c, const void *p, size_t n, size_t step)
{
	if (!c->tls) {
		feed(c, p, n, step);
	} else {
		assert_int_equal(vr_tls_write(c->tls, p, n), 0);
		client_tls_flush(c);
	}
	conv_settle(c);
}

void conv_sendf(struct conv *c, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(buf));
	conv_send(c, buf, (size_t)n, SIZE_MAX);
}

void conv_wait(struct conv *c, uint64_t ms)
{
	conv_settle(c);
	c->now += ms;
	vr_session_tick(c->s, c->now);
	conv_settle(c);
}

const char *conv_said(struct conv *c)
{
	static char text[1 << 18];
	size_t n = vr_buf_len(&c->out) - c->seen;

	assert_true(n < sizeof(text));
	if (n)
		memcpy(text, vr_buf_head(&c->out) + c->seen, n);
	text[n] = '\0';
	c->seen = vr_buf_len(&c->out);
	return text;
}

void conv_starttls(struct conv *c)
{
	conv_sendf(c, "STARTTLS\r\n");
	assert_string_equal(conv_said(c), "220 2.0.0 ready to start TLS\r\n");
	assert_non_null(c->tls = vr_tls_new(drv.tls_client, false, DRV_HOSTNAME));
	assert_int_equal(vr_tls_handshake(c->tls), -EAGAIN);
	client_tls_flush(c);
	conv_settle(c);
	assert_true(vr_tls_established(c->tls));
}

/* --- the spool --- */

const char *drv_qid(const char *text, char *qid, size_t len)
{
	const char *p = strstr(text, "queued as ");
	if (!p)
		return NULL;
	p += 10;
	size_t n = strcspn(p, "\r\n");
	if (n == 0 || n >= len)
		return NULL;
	memcpy(qid, p, n);
	qid[n] = '\0';
	return qid;
}

struct find {
	const char *qid;
	struct drv_msg *m;
	bool found;
	unsigned count;
};

static int body_out(const void *p, size_t n, void *arg)
{
	struct drv_msg *m = arg;
	m->body = realloc(m->body, m->body_len + n + 1);
	memcpy(m->body + m->body_len, p, n);
	m->body_len += n;
	m->body[m->body_len] = '\0';
	return 0;
}

static int find_one(const struct vr_spool_msg *msg, void *arg)
{
	struct find *f = arg;

	f->count++;
	if (!f->qid || strcmp(msg->qid, f->qid) != 0)
		return 0;
	struct drv_msg *m = f->m;
	memset(m, 0, sizeof(*m));
	snprintf(m->account, sizeof(m->account), "%s", msg->account);
	snprintf(m->client, sizeof(m->client), "%s", msg->client);
	snprintf(m->helo, sizeof(m->helo), "%s", msg->helo);
	snprintf(m->from, sizeof(m->from), "%s", msg->mail_from);
	m->n_rcpts = msg->n_rcpts;
	for (unsigned i = 0; i < msg->n_rcpts && i < 4; i++)
		snprintf(m->rcpt[i], sizeof(m->rcpt[i]), "%s", msg->rcpts[i]);
	m->flags = msg->flags;
	m->received_us = msg->received_us;
	m->body = calloc(1, 1);
	assert_int_equal(vr_spool_read_body(drv.spool_dir, msg, body_out, m), 0);
	f->found = true;
	return 1;
}

bool drv_spool_find(const char *qid, struct drv_msg *m)
{
	struct find f = { .qid = qid, .m = m };

	vr_spool_scan(drv.spool_dir, find_one, &f, NULL);
	return f.found;
}

void drv_msg_free(struct drv_msg *m)
{
	free(m->body);
	m->body = NULL;
}

unsigned drv_spool_count(void)
{
	struct find f = { 0 };

	vr_spool_scan(drv.spool_dir, find_one, &f, NULL);
	return f.count;
}
