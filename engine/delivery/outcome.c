/*
 * outcome.c - what a delivery thread makes of an attempt's result: state
 * records, retries with backoff, bounces and expiries with their DSN, and
 * the log line per recipient and attempt.
 *
 * A bounced recipient is recorded only once its DSN is committed: a crash
 * between the two sends a second DSN, never none.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/log.h"
#include "worker.h"

#define HDR_MAX    (64u * 1024)  /* of the original's header in a DSN */

/* A DSN on its way into the spool, and the recipients it reports. */
struct bounce {
	struct dworker *w;
	struct dq_msg *msg;
	uint8_t type;                 /* VR_STATE_BOUNCED or VR_STATE_EXPIRED */
	unsigned n;
	struct { unsigned rcpt; char reply[VR_SMTPC_TEXT_MAX + 16]; } r[];
};

/* --- state records --- */

void vr_dw_record(struct dworker *w, struct dq_msg *m, uint8_t type, uint32_t rcpt,
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
	vr_dq_depth_count(&w->q, m, -1);
	m->pending--;
	vr_dq_depth_count(&w->q, m, 1);
	vr_dw_record(w, m, type, i, 0, text);
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
	/* for `vps show`: the remote errors its mail met (a ring, no lock) */
	if (strcmp(result, "sent") != 0 && m->account[0])
		vr_log_event(VR_LOG_EVENT_REMOTE, m->account, m->qid,
			     (unsigned)strtoul(reply, NULL, 10), reply);
}

/* --- DSNs --- */

void vr_dw_spool_msg_of(const struct dq_msg *m, struct vr_spool_msg *sm)
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

	vr_dw_spool_msg_of(m, &sm);
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
	hdr->len = vr_dsn_header_len(vr_buf_head(hdr), vr_buf_len(hdr));
}

/*
 * Hands a DSN about b's recipients to the spool; the BOUNCED/EXPIRED
 * records follow its commit (vr_dw_dsn_done). A message from <> gets none: the
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
	int rc = dr && status ? vr_dsn_build(&text, w->d->cfg->hostname, m->qid, m->mail_from,
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
		vr_dw_record(w, m, VR_STATE_DEFERRED, b->r[i].rcpt, now, b->r[i].reply);
done:
	m->jobs--;
	vr_dq_msg_release(&w->q, m);
	free(b);
}

void vr_dw_dsn_done(void *cookie, int status, const char *qid)
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
	vr_dq_msg_release(&w->q, m);
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

bool vr_dw_expired(const struct dworker *w, const struct dq_msg *m, uint64_t now)
{
	return now >= m->received_us + (uint64_t)w->d->cfg->max_age_s * 1000000u;
}

/*
 * Ends job j's attempt: results[i] for its i-th recipient: 2xx delivered,
 * 5xx bounced, anything else deferred (or expired once too old). The job
 * lives on with the deferred recipients or is freed.
 */
void vr_dw_job_finish(struct dworker *w, struct dconn *c, struct dq_job *j,
		      const struct vr_smtpc_reply *const *replies)
{
	struct dq_msg *m = j->msg;
	uint64_t now = wall_us();
	bool old = vr_dw_expired(w, m, now);
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
			vr_dw_record(w, m, VR_STATE_DEFERRED, j->rcpt[i], next, "");
		vr_dq_job_wait(&w->q, j, next);
	} else {
		j->dest->flying--;
		vr_dq_job_free(&w->q, j);
	}
	if (b)
		dsn_send(w, b);
	else
		vr_dq_msg_release(&w->q, m);
}

/* Every recipient of j gets the same reply (a connection or DNS failure). */
void vr_dw_job_fail(struct dworker *w, struct dconn *c, struct dq_job *j,
		    const struct vr_smtpc_reply *r)
{
	const struct vr_smtpc_reply *replies[j->n];

	for (unsigned i = 0; i < j->n; i++)
		replies[i] = r;
	vr_dw_job_finish(w, c, j, replies);
}

void vr_dw_reply_make(struct vr_smtpc_reply *r, unsigned code, const char *enh,
		      const char *fmt, const char *arg)
{
	memset(r, 0, sizeof(*r));
	r->code = code;
	r->local = true;
	snprintf(r->enh, sizeof(r->enh), "%s", enh);
	snprintf(r->text, sizeof(r->text), fmt, arg);
}

/* Fails every ready job of d with r. */
void vr_dw_dest_fail(struct dworker *w, struct dq_dest *d, const struct vr_smtpc_reply *r)
{
	struct dq_job *j;

	while ((j = vr_dq_job_take(&w->q, d)) != NULL)
		vr_dw_job_fail(w, NULL, j, r);
}
