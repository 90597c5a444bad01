/*
 * worker.c - one delivery thread: an epoll loop over the inbox eventfd (new
 * mail from the committers), the resolver, the spool's completions (our
 * DSNs) and the outbound connections; the queue (queue.c) says which job
 * goes next, this file opens connections, hands jobs over, and turns each
 * outcome into state records, retries and DSNs.
 *
 * One job at a time per connection; a connection takes the destination's
 * next job (the VPSes in turn) whenever it is idle, up to CONN_MSGS, so a
 * busy destination reuses its connections. A connection that fails before
 * it carried any mail moves the destination on to the next address (the
 * MX order); when every address failed in a row, the destination's ready
 * jobs are deferred.
 *
 * Durability: state records are appended as outcomes arrive and made
 * durable once per loop iteration, before the next epoll_wait. A bounced
 * recipient is recorded only once its DSN is committed: a crash between
 * the two sends a second DSN, never none.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#include "vmrelay/clock.h"
#include "vmrelay/dkim.h"
#include "vmrelay/log.h"
#include "vmrelay/policy.h"
#include "vmrelay/resolve.h"
#include "vmrelay/smtpc.h"
#include "worker.h"

/* Per destination and thread, like Postfix's default_destination_
 * concurrency_limit (20) scaled to fewer, busier connections; and messages
 * per connection before it is renewed, so one connection cannot hold a
 * receiver's resources forever. */
#define CONN_MAX   8u
#define CONN_MSGS  100u
#define MX_TTL_MS  60000u       /* reuse an MX answer this long */
#define SMTP_PORT  25
#define EP_EVENTS  64
#define HDR_MAX    (64u * 1024)  /* of the original's header in a DSN */
#define SIGN_CHUNK (64u * 1024)

/* epoll data for the fixed fds; a connection's is its pointer. */
enum { EP_INBOX = 1, EP_RESOLVER, EP_SPOOL };

struct attempt {
	struct dq_job *job;
	struct vr_smtpc_msg m;
	struct vr_smtpc_rcpt *rcpts;  /* [job->n] */
	struct vr_spool_body *body;   /* pulled as the client's output drains */
	size_t pos;                   /* bytes of the signature handed out */
	uint64_t start_us;
};

struct dconn {
	struct dconn *prev, *next;
	struct dworker *w;
	struct dq_dest *dest;
	struct vr_smtpc_conn *k;
	uint32_t events;              /* registered with epoll */
	struct attempt *att;
	bool carried;                 /* a message went over it */
	bool closed;
	char mx[sizeof(((struct vr_config *)0)->smarthost)];  /* MX name or smarthost */
	char ip[VR_ADDRSTRLEN];
};

/* A DSN on its way into the spool, and the recipients it reports. */
struct bounce {
	struct dworker *w;
	struct dq_msg *msg;
	uint8_t type;                 /* VR_STATE_BOUNCED or VR_STATE_EXPIRED */
	unsigned n;
	struct { unsigned rcpt; char reply[VR_SMTPC_TEXT_MAX + 16]; } r[];
};

static uint64_t wall_us(void)
{
	return vr_clock_wall_us();
}

static void stat_add(uint64_t *c, int64_t n)
{
	/* One writer (this thread); vr_delivery_stats reads any time. */
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + (uint64_t)n, __ATOMIC_RELAXED);
}

/* --- state records --- */

static void record(struct dworker *w, struct dq_msg *m, uint8_t type, uint32_t rcpt,
		   uint64_t next_us, const char *text)
{
	struct vr_spool_event ev = {
		.type = type, .rcpt = rcpt, .attempts = m->attempts, .at_us = wall_us(),
		.next_us = next_us, .text = text, .text_len = strlen(text),
	};
	memcpy(ev.qid, m->qid, sizeof(ev.qid));
	if (vr_spool_log_append(w->log, &ev) < 0)
		vr_log_err("event=state_record_failed qid=%s type=%#x", m->qid, type);
}

/* A recipient is final: recorded, and the message dropped when it was the last. */
static void rcpt_final(struct dworker *w, struct dq_msg *m, unsigned i, uint8_t type,
		       const char *text)
{
	if (m->rcpt_state[i])
		return;
	m->rcpt_state[i] = type;
	m->pending--;
	record(w, m, type, i, 0, text);
}

static void attempt_log(struct dworker *w, const struct dconn *c, struct dq_msg *m, unsigned i,
			const char *result, const char *reply)
{
	char q_rcpt[300], q_reply[VR_SMTPC_TEXT_MAX * 4 + 3];
	const struct vr_smtpc *s = c && c->k ? vr_smtpc_conn_smtpc(c->k) : NULL;
	const char *tls = s ? vr_smtpc_tls_version(s) : NULL;
	uint64_t now = wall_us();

	vr_log_info("event=delivery qid=%s vps=%s rcpt=%s mx=%s ip=%s tls=%s dane=%s result=%s "
		    "delay=%.1f attempts=%u reply=%s", m->qid, m->account[0] ? m->account : "-",
		    vr_log_quote(q_rcpt, sizeof(q_rcpt), m->rcpts[i], strlen(m->rcpts[i])),
		    c && c->mx[0] ? c->mx : "-", c && c->ip[0] ? c->ip : "-", tls ? tls : "none",
		    s && vr_smtpc_tls_verified(s) ? "yes" : "no", result, (double)(now - VR_MIN(now, m->received_us)) / 1e6, m->attempts,
		    vr_log_quote(q_reply, sizeof(q_reply), reply, strlen(reply)));
}

/* --- DSNs --- */

static void spool_msg_of(const struct dq_msg *m, struct vr_spool_msg *sm)
{
	memset(sm, 0, sizeof(*sm));
	memcpy(sm->qid, m->qid, sizeof(sm->qid));
	sm->segment = m->segment;
	sm->offset = m->offset;
	sm->size = m->size;
	sm->n_rcpts = m->n_rcpts;
}

/* The original's header block for the DSN: its first HDR_MAX bytes at
 * most, nothing if it cannot be read. */
static void orig_header(struct dworker *w, const struct dq_msg *m, struct vr_buf *hdr)
{
	struct vr_spool_msg sm;
	ssize_t n = 0;

	spool_msg_of(m, &sm);
	struct vr_spool_body *b = vr_spool_body_open(w->d->cfg->spool_dir, &sm);
	uint8_t *p = b ? vr_buf_reserve(hdr, HDR_MAX) : NULL;
	while (p && vr_buf_len(hdr) < HDR_MAX &&
	       (n = vr_spool_body_read(b, p + vr_buf_len(hdr), HDR_MAX - vr_buf_len(hdr))) > 0) {
		vr_buf_commit(hdr, (size_t)n);
		if (memmem(p, vr_buf_len(hdr), "\r\n\r\n", 4))
			break;
	}
	vr_spool_body_close(b);
	if (n < 0)
		vr_buf_reset(hdr);
	hdr->len = dsn_header_len(vr_buf_head(hdr), vr_buf_len(hdr));
}

/*
 * Hands a DSN about b's recipients to the spool; the BOUNCED/EXPIRED
 * records follow its commit (dsn_done). A message from <> gets none: the
 * records are written at once (RFC 5321 6.1: no bounce of a bounce).
 */
static void dsn_send(struct dworker *w, struct bounce *b)
{
	struct dq_msg *m = b->msg;
	bool expired = b->type == VR_STATE_EXPIRED;

	if (!m->mail_from[0]) {
		for (unsigned i = 0; i < b->n; i++)
			rcpt_final(w, m, b->r[i].rcpt, b->type, b->r[i].reply);
		goto done;
	}
	struct dsn_rcpt *dr = calloc(b->n, sizeof(*dr));
	char (*status)[12] = calloc(b->n, sizeof(*status));
	struct vr_buf text, hdr;
	vr_buf_init(&text, 0);
	vr_buf_init(&hdr, 0);
	for (unsigned i = 0; dr && status && i < b->n; i++) {
		const char *reply = b->r[i].reply;
		/* "550 5.1.1 ..." -> 5.1.1; else the class the reply says. */
		if (sscanf(reply, "%*3d %11[0-9.]", status[i]) != 1 || status[i][1] != '.')
			snprintf(status[i], sizeof(status[i]), expired ? "4.4.7" : "5.0.0");
		dr[i] = (struct dsn_rcpt){ .addr = m->rcpts[b->r[i].rcpt], .status = status[i],
					   .diag = reply, .mta = "" };
	}
	orig_header(w, m, &hdr);
	uint64_t now = wall_us();
	int rc = dr && status ? dsn_build(&text, w->d->cfg->hostname, m->qid, m->mail_from,
					  m->received_us, now, expired, dr, b->n,
					  vr_buf_head(&hdr), vr_buf_len(&hdr)) : -ENOMEM;
	free(dr);
	free(status);
	vr_buf_free(&hdr);
	if (rc == 0) {
		const char *to = m->mail_from;
		const struct vr_spool_envelope env = {
			.account = "", .client = "local", .helo = w->d->cfg->hostname,
			.mail_from = "", .rcpts = &to, .n_rcpts = 1, .received_us = now,
		};
		struct vr_spool_txn *t = vr_spool_txn_begin(w->d->spool, w->spool_worker, &env, b);
		if (!t)
			rc = -errno;
		else if ((rc = vr_spool_txn_write(t, vr_buf_head(&text), vr_buf_len(&text))) < 0)
			vr_spool_txn_abort(t);
		else {
			vr_spool_txn_commit(t);
			w->dsn_inflight++;
		}
	}
	vr_buf_free(&text);
	if (rc == 0)
		return;                 /* dsn_done finishes */
	/* No DSN now: the recipients stay pending and bounce again next time. */
	vr_log_err("event=dsn_failed qid=%s error=\"%s\"", m->qid, strerror(-rc));
	for (unsigned i = 0; i < b->n; i++)
		record(w, m, VR_STATE_DEFERRED, b->r[i].rcpt, now, b->r[i].reply);
done:
	m->jobs--;
	dq_msg_release(&w->q, m);
	free(b);
}

static void dsn_done(void *cookie, int status, const char *qid)
{
	struct bounce *b = cookie;
	struct dq_msg *m = b->msg;
	struct dworker *w = b->w;

	w->dsn_inflight--;
	if (status == 0) {
		vr_log_info("event=dsn qid=%s dsn_qid=%s to=<%s> recipients=%u reason=%s", m->qid, qid,
			    m->mail_from, b->n, b->type == VR_STATE_EXPIRED ? "expired" : "bounced");
		stat_add(&w->stats.dsns, 1);
		for (unsigned i = 0; i < b->n; i++)
			rcpt_final(w, m, b->r[i].rcpt, b->type, b->r[i].reply);
	} else {
		vr_log_err("event=dsn_failed qid=%s error=\"%s\"", m->qid, strerror(-status));
	}
	m->jobs--;
	dq_msg_release(&w->q, m);
	free(b);
}

static struct bounce *bounce_new(struct dworker *w, struct dq_msg *m, uint8_t type,
				 unsigned cap)
{
	struct bounce *b = calloc(1, sizeof(*b) + cap * sizeof(b->r[0]));

	if (b) {
		b->w = w;
		b->msg = m;
		b->type = type;
		m->jobs++;            /* keeps m while the DSN is on its way */
	}
	return b;
}

static void bounce_add(struct bounce *b, unsigned rcpt, const char *reply)
{
	b->r[b->n].rcpt = rcpt;
	snprintf(b->r[b->n].reply, sizeof(b->r[b->n].reply), "%s", reply);
	b->n++;
}

/* --- outcomes of a job --- */

static bool expired(const struct dworker *w, const struct dq_msg *m, uint64_t now)
{
	return now >= m->received_us + (uint64_t)w->d->cfg->max_age_s * 1000000u;
}

/*
 * Ends job j's attempt: results[i] for its i-th recipient: 2xx delivered,
 * 5xx bounced, anything else deferred (or expired once too old). The job
 * lives on with the deferred recipients or is freed.
 */
static void job_finish(struct dworker *w, struct dconn *c, struct dq_job *j,
		       const struct vr_smtpc_reply *const *replies)
{
	struct dq_msg *m = j->msg;
	uint64_t now = wall_us();
	bool old = expired(w, m, now);
	struct bounce *b = NULL;
	unsigned keep = 0;

	m->attempts++;
	for (unsigned i = 0; i < j->n; i++) {
		const struct vr_smtpc_reply *r = replies[i];
		unsigned ri = j->rcpt[i];
		char text[VR_SMTPC_TEXT_MAX + 16];
		snprintf(text, sizeof(text), "%u %s%s%s", r->code, r->enh, r->enh[0] ? " " : "",
			 r->text);
		if (vr_smtpc_reply_ok(r)) {
			attempt_log(w, c, m, ri, "sent", text);
			rcpt_final(w, m, ri, VR_STATE_DELIVERED, text);
			stat_add(&w->stats.sent, 1);
			continue;
		}
		/* 5xx, the server's or the client's own (SMTPUTF8 mail to a
		 * server without it), is final; anything else is worth a retry. */
		bool perm = r->code >= 500 && r->code < 600;
		if (!perm && !old) {
			attempt_log(w, c, m, ri, "deferred", text);
			j->rcpt[keep++] = ri;
			stat_add(&w->stats.deferred, 1);
			continue;
		}
		attempt_log(w, c, m, ri, perm ? "bounced" : "expired", text);
		stat_add(&w->stats.bounced, 1);
		if (!b)
			b = bounce_new(w, m, perm ? VR_STATE_BOUNCED : VR_STATE_EXPIRED, j->n);
		if (b)
			bounce_add(b, ri, text);
	}
	if (keep && j->gen == m->gen) {
		uint64_t wait = vr_delivery_backoff_s(m->attempts, w->d->cfg->retry_first_s,
						      w->d->cfg->retry_max_s) * 1000000u;
		/* Never past the message's end of life: it expires on time. */
		uint64_t next = VR_MIN(now + wait, m->received_us +
				       (uint64_t)w->d->cfg->max_age_s * 1000000u);
		j->n = keep;
		m->next_us = next;
		for (unsigned i = 0; i < keep; i++)
			record(w, m, VR_STATE_DEFERRED, j->rcpt[i], next, "");
		dq_job_wait(&w->q, j, next);
	} else {
		j->dest->flying--;
		dq_job_free(&w->q, j);
	}
	if (b)
		dsn_send(w, b);
	else
		dq_msg_release(&w->q, m);
}

/* Every recipient of j gets the same reply (a connection or DNS failure). */
static void job_fail(struct dworker *w, struct dconn *c, struct dq_job *j,
		     const struct vr_smtpc_reply *r)
{
	const struct vr_smtpc_reply *replies[j->n];

	for (unsigned i = 0; i < j->n; i++)
		replies[i] = r;
	job_finish(w, c, j, replies);
}

static void reply_make(struct vr_smtpc_reply *r, unsigned code, const char *enh,
		       const char *fmt, const char *arg)
{
	memset(r, 0, sizeof(*r));
	r->code = code;
	r->local = true;
	snprintf(r->enh, sizeof(r->enh), "%s", enh);
	snprintf(r->text, sizeof(r->text), fmt, arg);
}

/* Fails every ready job of d with r. */
static void dest_fail(struct dworker *w, struct dq_dest *d, const struct vr_smtpc_reply *r)
{
	struct dq_job *j;

	while ((j = dq_job_take(&w->q, d)) != NULL)
		job_fail(w, NULL, j, r);
}

/* --- attempts --- */

/* The stored signature first, then the message as the spool has it. */
static ssize_t body_pull(void *cookie, uint8_t *buf, size_t cap)
{
	struct attempt *a = cookie;
	struct dq_msg *m = a->job->msg;

	if (a->pos < m->dkim_len) {
		size_t n = VR_MIN(cap, m->dkim_len - a->pos);
		memcpy(buf, m->dkim + a->pos, n);
		a->pos += n;
		return (ssize_t)n;
	}
	ssize_t n = vr_spool_body_read(a->body, buf, cap);
	if (n < 0) {
		vr_log_err("event=spool_read_failed qid=%s segment=%s error=\"%s\"", m->qid,
			   m->segment, strerror((int)-n));
		return -1;
	}
	return n;
}

/*
 * Signs m once, with its VPS's keys for the header From's domain, reading
 * the body through in SIGN_CHUNK pieces; the fields (or "": nothing to sign
 * with, or a message the signer refuses) are stored so retries reuse them.
 * 0, or -errno when the body cannot be read (then nothing is stored).
 */
static int sign_once(struct dworker *w, struct dq_msg *m, struct vr_spool_body *body)
{
	struct vr_buf out;
	char err[256] = "", q[300];
	uint8_t *chunk = malloc(SIGN_CHUNK);
	ssize_t n = 0;
	int rc = -ENOENT;

	if (!chunk)
		return -ENOMEM;
	vr_buf_init(&out, 64 * 1024);
	/* The signer keeps the account (RCU-published) until it finishes, so
	 * the thread is online throughout: page-cache reads of mail just
	 * committed and the signing itself, milliseconds. */
	rcu_thread_online();
	rcu_read_lock();
	struct vr_accounts *t = vr_policy_current();
	const struct vr_account *acct = t && m->account[0] ? vr_accounts_by_id(t, m->account) : NULL;
	struct vr_dkim_signer *s = acct ? vr_dkim_signer_new_for(acct, wall_us() / 1000000u, NULL)
					: NULL;
	if (s) {
		/* A feed error sticks: finish reports it. */
		while ((n = vr_spool_body_read(body, chunk, SIGN_CHUNK)) > 0)
			vr_dkim_signer_feed(s, chunk, (size_t)n);
		rc = n < 0 ? (int)n : vr_dkim_signer_finish(s, &out, err, sizeof(err));
		vr_dkim_signer_free(s);
	}
	rcu_read_unlock();
	rcu_thread_offline();
	free(chunk);
	if (n < 0) {
		vr_buf_free(&out);
		return (int)n;
	}
	if (rc < 0 && rc != -ENOENT && acct)
		vr_log_warn("event=dkim_failed qid=%s vps=%s error=%s", m->qid, m->account,
			    vr_log_quote(q, sizeof(q), err, strlen(err)));
	if (rc < 0)
		vr_buf_reset(&out);
	m->dkim = malloc(vr_buf_len(&out) + 1);
	if (m->dkim) {
		if (vr_buf_len(&out))
			memcpy(m->dkim, vr_buf_head(&out), vr_buf_len(&out));
		m->dkim[vr_buf_len(&out)] = '\0';
		m->dkim_len = vr_buf_len(&out);
		record(w, m, VR_SPOOL_DKIM, VR_SPOOL_ALL, 0, m->dkim);
	}
	vr_buf_free(&out);
	return 0;
}

static void attempt_free(struct attempt *a)
{
	if (!a)
		return;
	vr_spool_body_close(a->body);
	free(a->rcpts);
	free(a);
}

/* Opens m's body for reading: NULL + errno. */
static struct vr_spool_body *body_open(struct dworker *w, const struct dq_msg *m)
{
	struct vr_spool_msg sm;

	spool_msg_of(m, &sm);
	return vr_spool_body_open(w->d->cfg->spool_dir, &sm);
}

/* Reads j's message and prepares it for the client; NULL if that failed
 * (then j was deferred). */
static struct attempt *attempt_new(struct dworker *w, struct dq_job *j)
{
	struct dq_msg *m = j->msg;
	struct attempt *a = calloc(1, sizeof(*a));
	struct vr_smtpc_reply r;
	int rc = -ENOMEM;

	if (a && (a->rcpts = calloc(j->n, sizeof(*a->rcpts)))) {
		/* First pickup: a pass for the signature, then one to send. */
		rc = 0;
		if (!m->dkim) {
			struct vr_spool_body *b = body_open(w, m);
			rc = b ? sign_once(w, m, b) : -errno;
			vr_spool_body_close(b);
		}
		if (rc == 0 && !(a->body = body_open(w, m)))
			rc = -errno;
	}
	if (rc < 0) {
		vr_log_err("event=spool_read_failed qid=%s segment=%s error=\"%s\"", m->qid,
			   m->segment, strerror(-rc));
		attempt_free(a);
		reply_make(&r, 451, "4.3.0", "queue file unreadable: %s", strerror(-rc));
		job_fail(w, NULL, j, &r);
		return NULL;
	}
	a->job = j;
	a->start_us = wall_us();
	for (unsigned i = 0; i < j->n; i++)
		a->rcpts[i].addr = m->rcpts[j->rcpt[i]];
	a->m = (struct vr_smtpc_msg){
		.from = m->mail_from, .rcpts = a->rcpts, .n_rcpts = j->n,
		.size = m->dkim_len + m->size, .body = body_pull, .cookie = a,
		.flags = (m->flags & VR_SPOOL_8BITMIME ? VR_SMTPC_8BIT : 0) |
			 (m->flags & VR_SPOOL_SMTPUTF8 ? VR_SMTPC_SMTPUTF8 : 0),
	};
	return a;
}

/* --- DANE (RFC 7672) --- */

/* The TLSA answer of each host of a destination's MX answer, asked for the
 * first time a connection would go to the host, when the MX answer and
 * the host's addresses validated (DNSSEC): only then can DANE apply. */
enum { DANE_UNASKED, DANE_PENDING, DANE_DONE };
struct dane {
	unsigned n;
	struct {
		uint8_t state;
		struct vr_tlsa_result *res;   /* NULL when DONE: the lookup could not start */
	} h[];
};

struct tlsa_query {
	struct dworker *w;
	struct dq_dest *d;
	unsigned host;
	uint32_t gen;
};

static void dane_free(void *p)
{
	struct dane *dn = p;

	for (unsigned i = 0; dn && i < dn->n; i++)
		vr_resolve_free(dn->h[i].res);
	free(dn);
}

static void tlsa_answer(void *arg, struct vr_tlsa_result *res)
{
	struct tlsa_query *tq = arg;
	struct dq_dest *d = tq->d;
	struct dane *dn = d->dane;

	if (tq->gen != d->mx_gen || !dn) {
		vr_resolve_free(res);   /* for an MX answer since replaced */
	} else {
		dn->h[tq->host].state = DANE_DONE;
		dn->h[tq->host].res = res;
		dq_kick(&tq->w->q, d);
	}
	free(tq);
}

/* Starts the TLSA lookup of host i of d; false if it could not start. */
static bool tlsa_ask(struct dworker *w, struct dq_dest *d, unsigned i, const char *host)
{
	struct tlsa_query *tq = malloc(sizeof(*tq));

	if (!tq)
		return false;
	*tq = (struct tlsa_query){ w, d, i, d->mx_gen };
	if (vr_resolve_tlsa(w->res, host, SMTP_PORT, tlsa_answer, tq) == 0)
		return true;
	free(tq);
	return false;
}

/* --- connections --- */

static void conn_ready(void *owner);
static void conn_msg_done(void *owner, struct vr_smtpc_msg *msg, enum vr_smtpc_status st,
			  const struct vr_smtpc_reply *reply);
static void conn_closed(void *owner, const struct vr_smtpc_reply *reply);

static const struct vr_smtpc_ops conn_ops = {
	.ready = conn_ready, .msg_done = conn_msg_done, .closed = conn_closed,
};

enum pick { PICK_OK, PICK_WAIT, PICK_NONE };

/*
 * Whether host i of d may be used, and how (*tlsa: DANE records, or NULL
 * for opportunistic TLS): PICK_WAIT while its TLSA lookup runs, PICK_NONE
 * when the lookup failed (RFC 7672 2.2: such a host is skipped, never
 * used without its records).
 */
static enum pick dane_pick(struct dworker *w, struct dq_dest *d, unsigned i,
			   const struct vr_tlsa_result **tlsa)
{
	const struct vr_mx_result *r = d->mx;
	const struct vr_mx_host *h = &r->hosts[i];
	struct dane *dn = d->dane;

	*tlsa = NULL;
	if (!r->secure || !h->secure || !w->d->tls || !dn || i >= dn->n)
		return PICK_OK;
	if (dn->h[i].state == DANE_UNASKED) {
		dn->h[i].state = tlsa_ask(w, d, i, h->name) ? DANE_PENDING : DANE_DONE;
		if (dn->h[i].state == DANE_PENDING)
			return PICK_WAIT;
	}
	if (dn->h[i].state == DANE_PENDING)
		return PICK_WAIT;
	const struct vr_tlsa_result *t = dn->h[i].res;
	if (!t || t->status == VR_RESOLVE_TEMPFAIL) {
		snprintf(d->last_fail, sizeof(d->last_fail), "TLSA lookup for %.200s failed: %.150s",
			 h->name, t && t->why[0] ? t->why : "no answer");
		return PICK_NONE;
	}
	if (t->status == VR_RESOLVE_OK && t->secure && t->n)
		*tlsa = t;
	return PICK_OK;
}

/* The address the destination's next connection tries (and its TLSA
 * records, if DANE applies): PICK_NONE once every one has been tried since
 * the last success, PICK_WAIT while a TLSA lookup runs. */
static enum pick dest_addr(struct dworker *w, struct dq_dest *d, struct sockaddr_storage *sa,
			   char *mx, size_t mxlen, const struct vr_tlsa_result **tlsa)
{
	*tlsa = NULL;
	if (!w->q.smarthost) {
		const struct vr_mx_result *r = d->mx;
		for (;;) {
			while (d->next_host < r->n_hosts &&
			       d->next_addr >= r->hosts[d->next_host].n_addrs) {
				d->next_host++;
				d->next_addr = 0;
			}
			if (d->next_host >= r->n_hosts)
				return PICK_NONE;
			enum pick p = dane_pick(w, d, d->next_host, tlsa);
			if (p != PICK_NONE) {
				if (p == PICK_WAIT)
					return p;
				break;
			}
			d->next_host++;     /* no usable TLSA answer: the next host */
			d->next_addr = 0;
		}
		const struct vr_mx_host *h = &r->hosts[d->next_host];
		*sa = h->addrs[d->next_addr];
		((struct sockaddr_in *)sa)->sin_port = htons(SMTP_PORT);  /* same place in v6 */
		snprintf(mx, mxlen, "%s", h->name);
		return PICK_OK;
	}
	if (d->next_host > 0)
		return PICK_NONE;
	*sa = w->d->smarthost;
	snprintf(mx, mxlen, "%s", w->d->cfg->smarthost);
	return PICK_OK;
}

static void conn_open(struct dworker *w, struct dq_dest *d)
{
	struct dconn *c = calloc(1, sizeof(*c));
	const struct vr_tlsa_result *t;
	struct sockaddr_storage sa;
	struct vr_smtpc_reply r;

	if (!c)
		return;
	enum pick pick = dest_addr(w, d, &sa, c->mx, sizeof(c->mx), &t);
	if (pick == PICK_WAIT) {
		free(c);                /* the TLSA answer kicks the destination */
		return;
	}
	if (pick == PICK_NONE) {
		/* Every address failed in a row: defer what waits, start over. */
		free(c);
		d->next_host = d->next_addr = 0;
		reply_make(&r, 451, "4.4.1", "%s", d->last_fail[0] ? d->last_fail :
			   "no server of the destination answered");
		dest_fail(w, d, &r);
		return;
	}
	getnameinfo((struct sockaddr *)&sa, sizeof(sa), c->ip, sizeof(c->ip), NULL, 0,
		    NI_NUMERICHOST);
	unsigned n_tlsa = t ? t->n : 0;
	struct vr_smtpc_tlsa tlsa[n_tlsa ? n_tlsa : 1];
	for (unsigned i = 0; i < n_tlsa; i++)
		tlsa[i] = (struct vr_smtpc_tlsa){ t->rr[i].usage, t->rr[i].selector, t->rr[i].mtype,
						  t->rr[i].data, t->rr[i].len };
	const struct vr_smtpc_params p = {
		.helo_name = w->d->cfg->hostname, .peer = (struct sockaddr *)&sa,
		/* the MX name, or the smarthost's without its port (SNI, texts) */
		.peer_name = w->q.smarthost ? w->d->smarthost_name : c->mx,
		.tls = w->d->tls,
		.tls_mode = t ? VR_SMTPC_TLS_DANE : w->d->tls ? VR_SMTPC_TLS_MAY : VR_SMTPC_TLS_NONE,
		.tlsa = n_tlsa ? tlsa : NULL, .n_tlsa = n_tlsa,
		.max_msgs = CONN_MSGS, .ops = &conn_ops, .owner = c,
	};
	c->w = w;
	c->dest = d;
	c->k = vr_smtpc_conn_new(&p, NULL, vr_clock_ms());
	if (!c->k) {
		vr_log_err("event=connect_failed dest=%s error=\"%s\"", d->name, strerror(errno));
		free(c);
		return;
	}
	c->events = vr_smtpc_conn_events(c->k);
	struct epoll_event ev = { .events = c->events, .data.ptr = c };
	epoll_ctl(w->epfd, EPOLL_CTL_ADD, vr_smtpc_conn_fd(c->k), &ev);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	d->conns++;
	d->idle++;
	stat_add(&w->stats.connections, 1);
}

static void conn_ready(void *owner)
{
	struct dconn *c = owner;
	struct dworker *w = c->w;
	struct vr_smtpc *s = vr_smtpc_conn_smtpc(c->k);
	struct dq_job *j;

	/* It answered: the destination's address list starts over from here. */
	c->dest->last_fail[0] = '\0';
	while (!w->stopping && (j = dq_job_take(&w->q, c->dest)) != NULL) {
		struct vr_smtpc_reply r;
		if (expired(w, j->msg, wall_us())) {
			reply_make(&r, 451, "4.4.7", "%s", "delivery time expired");
			job_fail(w, c, j, &r);
			continue;
		}
		if (!(c->att = attempt_new(w, j)))
			continue;
		if (vr_smtpc_send(s, &c->att->m, vr_clock_ms()) == 0) {
			c->carried = true;
			c->dest->idle--;
			stat_add(&w->stats.in_flight, 1);
			return;
		}
		reply_make(&r, 451, "4.4.2", "%s", "connection lost before the message");
		attempt_free(c->att);
		c->att = NULL;
		job_fail(w, c, j, &r);
		break;
	}
	vr_smtpc_quit(s, vr_clock_ms());
}

static void conn_msg_done(void *owner, struct vr_smtpc_msg *msg, enum vr_smtpc_status st,
			  const struct vr_smtpc_reply *reply)
{
	struct dconn *c = owner;
	struct attempt *a = c->att;
	const struct vr_smtpc_reply *replies[a->job->n];

	/* Recipients accepted at RCPT share the message's fate unless it was
	 * sent: the end-of-data reply is their word. */
	for (unsigned i = 0; i < a->job->n; i++)
		replies[i] = st == VR_SMTPC_SENT || !vr_smtpc_reply_ok(&a->rcpts[i].reply)
			? &a->rcpts[i].reply : reply;
	job_finish(c->w, c, a->job, replies);
	attempt_free(a);
	c->att = NULL;
	c->dest->idle++;
	stat_add(&c->w->stats.in_flight, -1);
}

static void conn_closed(void *owner, const struct vr_smtpc_reply *reply)
{
	struct dconn *c = owner;
	struct dq_dest *d = c->dest;
	char q[VR_SMTPC_TEXT_MAX * 4 + 3];

	c->closed = true;
	if (c->carried || vr_smtpc_reply_ok(reply) || reply->code == 221)
		return;
	/* Failed before it carried anything: the next address, and its reply
	 * (which names the host) for the deferral if all of them fail. */
	snprintf(d->last_fail, sizeof(d->last_fail), "%.*s", (int)sizeof(d->last_fail) - 1,
		 reply->text);
	vr_log_info("event=connect_failed dest=%s mx=%s ip=%s code=%u reply=%s", d->name, c->mx,
		    c->ip, reply->code, vr_log_quote(q, sizeof(q), reply->text, strlen(reply->text)));
	d->next_addr++;
	if (c->w->q.smarthost)
		d->next_host++;
}

static void conn_free(struct dworker *w, struct dconn *c)
{
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, vr_smtpc_conn_fd(c->k), NULL);
	vr_smtpc_conn_free(c->k);
	if (c->att) {
		/* Dropped in flight (stopping): the spool still has it all. */
		c->att->job->dest->flying--;
		struct dq_msg *m = c->att->job->msg;
		dq_job_free(&w->q, c->att->job);
		dq_msg_release(&w->q, m);
		attempt_free(c->att);
		stat_add(&w->stats.in_flight, -1);
	} else {
		c->dest->idle--;
	}
	c->dest->conns--;
	/* Its place may go to a job that waited for it, or to the next address. */
	if (c->dest->ready)
		dq_kick(&w->q, c->dest);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	stat_add(&w->stats.connections, -1);
	free(c);
}

/* --- destinations --- */

struct mx_query {
	struct dworker *w;
	struct dq_dest *d;
};

static void mx_answer(void *arg, struct vr_mx_result *res)
{
	struct mx_query *mq = arg;
	struct dworker *w = mq->w;
	struct dq_dest *d = mq->d;

	free(mq);
	d->resolving = false;
	vr_resolve_free(d->mx);
	d->mx = res;
	/* TLSA answers belong to the hosts of one MX answer. */
	dane_free(d->dane);
	d->dane = calloc(1, sizeof(struct dane) + res->n_hosts * sizeof(((struct dane *)0)->h[0]));
	if (d->dane)
		((struct dane *)d->dane)->n = res->n_hosts;
	d->mx_gen++;
	d->mx_expires_ms = vr_clock_ms() + MX_TTL_MS;
	d->next_host = d->next_addr = 0;
	dq_kick(&w->q, d);
}

/* Fails d's jobs the way its MX answer says, or returns false if the
 * answer allows delivery. */
static bool mx_refuses(struct dworker *w, struct dq_dest *d)
{
	const struct vr_mx_result *res = d->mx;
	struct vr_smtpc_reply r;

	switch (res->status) {
	case VR_RESOLVE_OK:
		return false;
	case VR_RESOLVE_NULLMX:
		reply_make(&r, 556, "5.1.10", "%s", "the recipient domain accepts no mail (null MX)");
		break;
	case VR_RESOLVE_NXDOMAIN:
	case VR_RESOLVE_NODATA:
		reply_make(&r, 550, "5.1.2", "%s", res->why[0] ? res->why :
			   "the recipient domain has no mail server");
		break;
	default:
		reply_make(&r, 451, "4.4.3", "%s", res->why[0] ? res->why : "DNS lookup failed");
		/* Ask again at the next try, not in a minute. */
		d->mx_expires_ms = 0;
		break;
	}
	dest_fail(w, d, &r);
	return true;
}

/* Opens what connections d's ready jobs call for. */
static void dest_pump(struct dworker *w, struct dq_dest *d)
{
	if (w->stopping)
		return;
	if (!w->q.smarthost && d->ready) {
		if (d->resolving)
			return;
		if (!d->mx || vr_clock_ms() >= d->mx_expires_ms) {
			struct mx_query *mq = malloc(sizeof(*mq));
			if (mq) {
				*mq = (struct mx_query){ w, d };
				if (vr_resolve_mx(w->res, d->name, mx_answer, mq) == 0) {
					d->resolving = true;
					return;
				}
				free(mq);
			}
			struct vr_smtpc_reply r;
			reply_make(&r, 451, "4.4.3", "cannot look up the MX of %s", d->name);
			dest_fail(w, d, &r);
			return;
		}
		if (mx_refuses(w, d))
			return;
	}
	while (d->ready > d->idle && d->conns < CONN_MAX) {
		unsigned before = d->conns;
		conn_open(w, d);
		if (d->conns == before)
			break;              /* deferred everything, or out of sockets */
	}
}

/* --- operator commands --- */

void dcmd_put(struct dcmd *c)
{
	/* acq_rel: the last owner sees everything the other wrote. */
	if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		close(c->done_fd);
		free(c);
	}
}

static int cmd_apply(struct dworker *w, const struct dcmd *c)
{
	struct dq_msg *m = c->op == VR_DELIVERY_FLUSH ? NULL : dq_msg_find(&w->q, c->qid);

	if (c->op != VR_DELIVERY_FLUSH && (!m || !m->pending))
		return -ENOENT;
	switch (c->op) {
	case VR_DELIVERY_HOLD:
		if (m->held)
			return -EALREADY;
		m->held = true;
		m->gen++;               /* its jobs are dropped as they come up */
		record(w, m, VR_STATE_HELD, VR_SPOOL_ALL, 0, "");
		break;
	case VR_DELIVERY_RELEASE:
		if (!m->held)
			return -EALREADY;
		m->held = false;
		m->next_us = 0;
		record(w, m, VR_STATE_RELEASED, VR_SPOOL_ALL, 0, "");
		return dq_msg_jobs(&w->q, m, wall_us());
	case VR_DELIVERY_DELETE:
		m->deleted = true;
		m->gen++;
		record(w, m, VR_STATE_DELETED, VR_SPOOL_ALL, 0, "");
		dq_msg_release(&w->q, m);
		break;
	case VR_DELIVERY_FLUSH:
		dq_due(&w->q, UINT64_MAX);
		break;
	}
	return 0;
}

static const char *const op_names[] = {
	[VR_DELIVERY_HOLD] = "hold", [VR_DELIVERY_RELEASE] = "release",
	[VR_DELIVERY_DELETE] = "delete", [VR_DELIVERY_FLUSH] = "flush",
};

/* Runs the queued commands; each is durable before its caller hears. */
static void cmds_run(struct dworker *w)
{
	struct cds_wfcq_node *node;
	uint64_t one = 1;

	while ((node = __cds_wfcq_dequeue_blocking(&w->cmd_head, &w->cmd_tail)) != NULL) {
		struct dcmd *c = caa_container_of(node, struct dcmd, node);
		int rc = cmd_apply(w, c);
		if (rc == 0 && vr_spool_log_sync(w->log) < 0)
			rc = -EIO;
		vr_log_info("event=queue_command op=%s qid=%s worker=%u result=\"%s\"",
			    op_names[c->op], c->op == VR_DELIVERY_FLUSH ? "-" : c->qid, w->id,
			    rc ? strerror(-rc) : "done");
		/* Release, paired with the caller's acquire after the eventfd. */
		__atomic_store_n(&c->result, rc, __ATOMIC_RELEASE);
		ssize_t r = write(c->done_fd, &one, sizeof(one));
		(void)r;                /* an eventfd write only fails when full */
		dcmd_put(c);
	}
}

/* --- the loop --- */

static void inbox_drain(struct dworker *w)
{
	struct cds_wfcq_node *node;
	uint64_t now = wall_us();

	while ((node = __cds_wfcq_dequeue_blocking(&w->inbox_head, &w->inbox_tail)) != NULL) {
		struct dq_msg *m = caa_container_of(node, struct dq_msg, node);
		if (dq_msg_add(&w->q, m, now) < 0)
			vr_log_err("event=queue_failed qid=%s error=\"out of memory\"", m->qid);
	}
}

/* Re-arms each connection's epoll interest and frees the finished ones. */
static void conns_sweep(struct dworker *w, uint64_t *deadline)
{
	struct dconn *c = w->conns, *next;

	for (; c; c = next) {
		next = c->next;
		if (vr_smtpc_conn_done(c->k)) {
			conn_free(w, c);
			continue;
		}
		uint32_t ev = vr_smtpc_conn_events(c->k);
		if (ev != c->events) {
			struct epoll_event e = { .events = ev, .data.ptr = c };
			epoll_ctl(w->epfd, EPOLL_CTL_MOD, vr_smtpc_conn_fd(c->k), &e);
			c->events = ev;
		}
		*deadline = VR_MIN(*deadline, vr_smtpc_conn_deadline(c->k));
	}
}

static void conns_tick(struct dworker *w, uint64_t now_ms)
{
	for (struct dconn *c = w->conns; c; c = c->next)
		if (vr_smtpc_conn_deadline(c->k) <= now_ms)
			vr_smtpc_conn_io(c->k, 0, now_ms);
}

static void stop_begin(struct dworker *w)
{
	w->stopping = true;
	w->drain_until_ms = vr_clock_ms() + w->d->drain_ms;
	for (struct dconn *c = w->conns; c; c = c->next)
		if (!c->att)
			vr_smtpc_quit(vr_smtpc_conn_smtpc(c->k), vr_clock_ms());
}

/* The epoll timeout: the earliest of the connections, the retries, the
 * resolver and the drain. */
static int wait_ms(struct dworker *w, uint64_t conn_deadline)
{
	uint64_t now = vr_clock_ms(), due = dq_next_due_ms(&w->q);
	uint64_t t = conn_deadline;

	if (w->q.kick)
		return 0;               /* a destination freed up while we swept */

	if (due != UINT64_MAX) {
		uint64_t wall = wall_us() / 1000u;
		t = VR_MIN(t, now + (due > wall ? due - wall : 0));
	}
	if (w->stopping)
		t = VR_MIN(t, w->drain_until_ms);
	int rt = w->res ? vr_resolver_timeout_ms(w->res) : -1;
	if (rt >= 0)
		t = VR_MIN(t, now + (uint64_t)rt);
	if (t == UINT64_MAX)
		return -1;
	return t > now ? (int)VR_MIN(t - now, 60000u) : 0;
}

void *dw_main(void *arg)
{
	struct dworker *w = arg;
	struct epoll_event ev[EP_EVENTS];

	rcu_register_thread();
	rcu_thread_offline();
	for (;;) {
		if (!w->stopping && __atomic_load_n(&w->d->stop, __ATOMIC_ACQUIRE))
			stop_begin(w);
		inbox_drain(w);
		cmds_run(w);
		dq_due(&w->q, wall_us());
		struct dq_dest *d;
		while ((d = dq_kicked(&w->q)) != NULL)
			dest_pump(w, d);
		uint64_t deadline = UINT64_MAX;
		conns_sweep(w, &deadline);
		/* One fdatasync for everything this round decided. */
		if (vr_spool_log_pending(w->log) && vr_spool_log_sync(w->log) < 0)
			vr_log_err("event=state_sync_failed worker=%u", w->id);
		__atomic_store_n(&w->stats.queued, w->q.n_msgs, __ATOMIC_RELAXED);
		if (w->stopping && ((!w->conns && !w->dsn_inflight) ||
				    vr_clock_ms() >= w->drain_until_ms))
			break;

		int n = epoll_wait(w->epfd, ev, EP_EVENTS, wait_ms(w, deadline));
		uint64_t now = vr_clock_ms();
		for (int i = 0; i < n; i++) {
			uint64_t tag = ev[i].data.u64;
			if (tag == EP_INBOX) {
				uint64_t v;
				ssize_t r = read(w->inbox_fd, &v, sizeof(v));
				(void)r;    /* EAGAIN: a racing wake already read it */
			} else if (tag == EP_RESOLVER) {
				vr_resolver_process(w->res);
			} else if (tag == EP_SPOOL) {
				vr_spool_reap(w->d->spool, w->spool_worker, dsn_done, 256);
			} else {
				struct dconn *c = ev[i].data.ptr;
				vr_smtpc_conn_io(c->k, ev[i].events, now);
			}
		}
		if (w->res && vr_resolver_timeout_ms(w->res) == 0)
			vr_resolver_process(w->res);
		conns_tick(w, now);
	}
	/* Dropped in flight: tried again after the restart. */
	while (w->conns)
		conn_free(w, w->conns);
	if (vr_spool_log_sync(w->log) < 0)
		vr_log_err("event=state_sync_failed worker=%u", w->id);
	rcu_thread_online();
	rcu_unregister_thread();
	return NULL;
}

void dw_wake(struct dworker *w)
{
	uint64_t one = 1;
	ssize_t r = write(w->inbox_fd, &one, sizeof(one));

	(void)r;                      /* fails only when already readable */
}

static int ep_add(struct dworker *w, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	return epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int dw_init(struct dworker *w, struct vr_delivery *d, unsigned id, char *err, size_t errlen)
{
	const struct vr_config *cfg = d->cfg;
	int rc;

	w->d = d;
	w->id = id;
	w->inbox_fd = w->epfd = -1;
	__cds_wfcq_init(&w->inbox_head, &w->inbox_tail);
	__cds_wfcq_init(&w->cmd_head, &w->cmd_tail);
	dq_init(&w->q, cfg->smarthost);
	if (!(w->log = vr_spool_log_open(cfg->spool_dir, id, err, errlen)))
		return -errno;
	w->inbox_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->inbox_fd < 0 || w->epfd < 0) {
		rc = -errno;
		snprintf(err, errlen, "delivery thread %u: %s", id, strerror(-rc));
		return rc;
	}
	if (!cfg->smarthost[0]) {
		const struct vr_resolver_conf rconf = {
			.server = cfg->resolver, .trust_anchor = cfg->trust_anchor,
			.timeout_ms = cfg->dns_timeout_ms,
		};
		if (!(w->res = vr_resolver_new(&rconf, err, errlen)))
			return -EINVAL;
	}
	if ((rc = ep_add(w, w->inbox_fd, EP_INBOX)) < 0 ||
	    (w->res && (rc = ep_add(w, vr_resolver_fd(w->res), EP_RESOLVER)) < 0) ||
	    (rc = ep_add(w, vr_spool_done_fd(d->spool, w->spool_worker), EP_SPOOL)) < 0) {
		snprintf(err, errlen, "delivery thread %u: epoll: %s", id, strerror(-rc));
		return rc;
	}
	return 0;
}

void dw_fini(struct dworker *w)
{
	struct cds_wfcq_node *node;

	/* Commands that came too late: their callers hear -ESHUTDOWN. */
	while ((node = __cds_wfcq_dequeue_blocking(&w->cmd_head, &w->cmd_tail)) != NULL) {
		struct dcmd *c = caa_container_of(node, struct dcmd, node);
		uint64_t one = 1;
		c->result = -ESHUTDOWN;
		ssize_t r = write(c->done_fd, &one, sizeof(one));
		(void)r;
		dcmd_put(c);
	}
	/* Mail that came in after the thread stopped: the spool has it. */
	while ((node = __cds_wfcq_dequeue_blocking(&w->inbox_head, &w->inbox_tail)) != NULL) {
		struct dq_msg *m = caa_container_of(node, struct dq_msg, node);
		free(m->dkim);
		free(m);
	}
	for (unsigned h = 0; h < DQ_HASH; h++)
		for (struct dq_dest *d = w->q.hash[h]; d; d = d->hnext) {
			vr_resolve_free(d->mx);
			dane_free(d->dane);
			d->mx = d->dane = NULL;
		}
	dq_free(&w->q);
	vr_resolver_free(w->res);
	vr_spool_log_close(w->log);
	if (w->inbox_fd >= 0)
		close(w->inbox_fd);
	if (w->epfd >= 0)
		close(w->epfd);
}
