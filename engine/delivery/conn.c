/*
 * conn.c - a delivery thread's outbound connections: which address of a
 * destination comes next (the MX order, DANE where the DNS allows it),
 * opening a connection, handing it the destination's next job whenever it
 * is idle, the message pulled from the spool as the client asks for it,
 * and signed once at its first pickup.
 *
 * With PIPELINING a connection is offered its destination's next job as
 * soon as the end of data of the one before is out (vmrelay/smtpc.h), so
 * it may carry two attempts: one waiting for that reply, the next one.
 *
 * A connection that fails before it carried any mail moves the
 * destination on to the next address; when every address failed in a
 * row, the destination's ready jobs are deferred.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <urcu-qsbr.h>

#include "vmrelay/clock.h"
#include "vmrelay/dkim.h"
#include "vmrelay/log.h"
#include "vmrelay/policy.h"
#include "worker.h"

/* Messages per connection before it is renewed, so one connection cannot
 * hold a receiver's resources forever. */
#define CONN_MSGS  100u
/* How long an idle connection waits for its destination's next job, as
 * Postfix's connection cache does: mail comes in bursts, and a TCP and TLS
 * handshake per message would cost the receiver more than the message. */
#define CONN_PARK_MS 2000u
#define SIGN_CHUNK (64u * 1024)

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
		vr_dw_record(w, m, VR_SPOOL_DKIM, VR_SPOOL_ALL, 0, m->dkim);
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

/* Opens m's body for reading, from the thread's open segments: NULL +
 * errno. */
static struct vr_spool_body *body_open(struct dworker *w, const struct dq_msg *m)
{
	struct vr_spool_msg sm;

	vr_dw_spool_msg_of(m, &sm);
	return vr_spool_body_open_in(w->segfiles, &sm);
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
		/* First pickup: a pass for the signature, then one to send,
		 * from the same open file (the page cache has it: just
		 * committed). */
		rc = (a->body = body_open(w, m)) ? 0 : -errno;
		if (rc == 0 && !m->dkim && (rc = sign_once(w, m, a->body)) == 0)
			vr_spool_body_rewind(a->body);
	}
	if (rc < 0) {
		vr_log_err("event=spool_read_failed qid=%s segment=%s error=\"%s\"", m->qid,
			   m->segment, strerror(-rc));
		attempt_free(a);
		vr_dw_reply_make(&r, 451, "4.3.0", "queue file unreadable: %s", strerror(-rc));
		vr_dw_job_fail(w, NULL, j, &r);
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

void *vr_dw_dane_new(unsigned n_hosts)
{
	struct dane *dn = calloc(1, sizeof(*dn) + n_hosts * sizeof(dn->h[0]));

	if (dn)
		dn->n = n_hosts;
	return dn;
}

void vr_dw_dane_free(void *p)
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
		vr_dq_kick(&tq->w->q, d);
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

void vr_dw_conn_open(struct dworker *w, struct dq_dest *d)
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
		vr_dw_reply_make(&r, 451, "4.4.1", "%s", d->last_fail[0] ? d->last_fail :
			   "no server of the destination answered");
		vr_dw_dest_fail(w, d, &r);
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
	while (!w->stopping && (j = vr_dq_job_take(&w->q, c->dest)) != NULL) {
		struct vr_smtpc_reply r;
		struct attempt *a;
		if (vr_dw_expired(w, j->msg, wall_us())) {
			vr_dw_reply_make(&r, 451, "4.4.7", "%s", "delivery time expired");
			vr_dw_job_fail(w, c, j, &r);
			continue;
		}
		if (!(a = attempt_new(w, j)))
			continue;
		if (vr_smtpc_send(s, &a->m, vr_clock_ms()) == 0) {
			c->carried = true;
			if (!c->att)
				c->dest->idle--;
			a->next = c->att;
			c->att = a;
			stat_add(&w->stats.in_flight, 1);
			return;
		}
		vr_dw_reply_make(&r, 451, "4.4.2", "%s", "connection lost before the message");
		attempt_free(a);
		vr_dw_job_fail(w, c, j, &r);
		vr_smtpc_quit(s, vr_clock_ms());
		return;
	}
	if (w->stopping) {
		vr_smtpc_quit(s, vr_clock_ms());
		return;
	}
	c->parked = true;
	c->park_until = vr_clock_ms() + CONN_PARK_MS;
}

void vr_dw_conn_unpark(struct dconn *c)
{
	if (c->parked) {
		c->parked = false;
		conn_ready(c);
	}
}

void vr_dw_conn_park_end(struct dconn *c)
{
	if (c->parked) {
		c->parked = false;
		vr_smtpc_quit(vr_smtpc_conn_smtpc(c->k), vr_clock_ms());
	}
}

static void conn_msg_done(void *owner, struct vr_smtpc_msg *msg, enum vr_smtpc_status st,
			  const struct vr_smtpc_reply *reply)
{
	struct dconn *c = owner;
	struct attempt *a = msg->cookie;
	const struct vr_smtpc_reply *replies[a->job->n];

	/* Recipients accepted at RCPT share the message's fate unless it was
	 * sent: the end-of-data reply is their word. */
	for (unsigned i = 0; i < a->job->n; i++)
		replies[i] = st == VR_SMTPC_SENT || !vr_smtpc_reply_ok(&a->rcpts[i].reply)
			? &a->rcpts[i].reply : reply;
	vr_dw_job_finish(c->w, c, a->job, replies);
	for (struct attempt **pp = &c->att; *pp; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	attempt_free(a);
	if (!c->att)
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

void vr_dw_conn_free(struct dworker *w, struct dconn *c)
{
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, vr_smtpc_conn_fd(c->k), NULL);
	vr_smtpc_conn_free(c->k);
	if (!c->att)
		c->dest->idle--;
	while (c->att) {
		/* Dropped in flight (stopping): the spool still has it all. */
		struct attempt *a = c->att;
		c->att = a->next;
		a->job->dest->flying--;
		struct dq_msg *m = a->job->msg;
		vr_dq_job_free(&w->q, a->job);
		vr_dq_msg_release(&w->q, m);
		attempt_free(a);
		stat_add(&w->stats.in_flight, -1);
	}
	c->dest->conns--;
	/* Its place may go to a job that waited for it, or to the next address. */
	if (c->dest->ready)
		vr_dq_kick(&w->q, c->dest);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	stat_add(&w->stats.connections, -1);
	free(c);
}
