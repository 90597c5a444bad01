/*
 * client.c - vmrelay-bench's load generator: N SMTP sessions over one
 * edge-triggered event loop, sending M messages in all (or for a while).
 * The loop's events and the connections come from a transport (io.h):
 * kernel sockets under epoll, or our userspace stack on a DPDK port.
 *
 * A session is a connection and the replies it waits for, in order: every
 * command sent pushes what its reply will answer onto a small ring, and
 * every reply parsed pops it. Without PIPELINING one command is in flight at
 * a time; with it, MAIL, every RCPT and DATA (or BDAT and the message) go in
 * one write, exactly as RFC 2920 §3.1 lets a client group them, and the same
 * ring matches the replies. A message's latency runs from the write that
 * handed its last octet to the kernel to the moment its final reply was
 * parsed.
 *
 * A message is counted once: accepted (a 2xx final reply), or failed under
 * the first thing that went wrong for it ("MAIL 451", "connect: Connection
 * refused", "timeout waiting for the final reply"). A refused recipient of a
 * message that still went through is counted apart, by code. A session
 * holds its message ("ticket") from before it connects, so a server that
 * fails connections still ends the run after M attempts.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"
#include "conn.h"
#include "io.h"
#include "reply.h"

#define RX_MAX (2 * VR_BENCH_REPLY_MAX)
#define TICK_NS 100000000ull                /* timeouts, progress */
#define RETRY_NS 10000000ull                /* after a failed connect */

/* What a reply answers. */
enum cmd { C_GREET, C_EHLO, C_STARTTLS, C_MAIL, C_RCPT, C_DATA, C_DOT, C_BDAT, C_RSET, C_QUIT };

static const char *const cmd_names[] = {
	[C_GREET] = "greeting", [C_EHLO] = "EHLO", [C_STARTTLS] = "STARTTLS",
	[C_MAIL] = "MAIL", [C_RCPT] = "RCPT", [C_DATA] = "DATA",
	[C_DOT] = "end-of-data", [C_BDAT] = "BDAT", [C_RSET] = "RSET", [C_QUIT] = "QUIT",
};

enum state { S_IDLE, S_RETRY, S_CONNECTING, S_OPEN, S_DONE };

struct client;

struct session {
	struct client *cl;
	unsigned id;
	uint32_t gen;                /* connection number: stale epoll events are skipped */
	enum state state;
	struct vr_bench_conn conn;
	struct vr_bench_reply_parser rp;
	uint8_t *pend;               /* ring of enum cmd awaiting replies */
	unsigned pend_head, pend_n, pend_cap;
	bool tls_wait;               /* STARTTLS accepted, handshake running */
	bool tls_on;
	unsigned ext;                /* VR_BENCH_EXT_* from the last EHLO */
	uint64_t deadline;           /* ns: timeout, or the retry time */

	/* the message held, and its transaction */
	bool has_msg;
	bool failed;                 /* its failure is counted already */
	bool body_queued;
	uint64_t seq;
	struct vr_bench_msg msg;
	unsigned rcpt_next, rcpt_ok, rcpt_replies;
	unsigned last_rcpt_code;
	uint64_t t_end;              /* ns: its last octet went out; 0 before */
};

struct client {
	const struct vr_bench_cfg *cfg;
	struct vr_bench_io *io;
	int sigfd;
	struct session *s;
	unsigned active;             /* sessions not done */
	uint64_t issued;             /* tickets handed out */
	uint64_t t0, t_stop, now;
	bool interrupted;
	unsigned source_next;
	uint64_t rng;
	struct vr_bench_pad pad;
	struct vr_bench_msg_params mp;
	char **rcpts;
	char run_id[32];

	/* what the run saw */
	uint64_t accepted, failed, rcpt_ok, rcpt_refused, bytes, sessions_done, connections;
	struct vr_bench_hist lat;
	struct vr_bench_counts failures, refused, errors;
	struct vr_bench_hash *hash;
	struct vr_bench_hash_sum sum;
};

static void session_start(struct session *s);
static void session_close(struct session *s, bool clean);
static void txn_begin(struct session *s);

/* Buffers here are small and bounded: running out of memory ends the run. */
static void die_nomem(void)
{
	fprintf(stderr, "vmrelay-bench: out of memory\n");
	exit(VR_BENCH_EXIT_USAGE);
}

/* --- tickets, failures --- */

static bool ticket_take(struct client *cl)
{
	const struct vr_bench_cfg *cfg = cl->cfg;

	if (cl->interrupted || (cfg->messages && cl->issued >= cfg->messages) ||
	    (cfg->duration > 0 && cl->now >= cl->t_stop))
		return false;
	cl->issued++;
	return true;
}

/* The message held fails under key, unless it failed already. */
static void msg_fail(struct session *s, const char *fmt, ...) VR_PRINTF(2, 3);
static void msg_fail(struct session *s, const char *fmt, ...)
{
	char key[VR_BENCH_KEY_MAX];
	va_list ap;

	if (!s->has_msg || s->failed)
		return;
	va_start(ap, fmt);
	vsnprintf(key, sizeof(key), fmt, ap);
	va_end(ap);
	s->failed = true;
	s->cl->failed++;
	vr_bench_count(&s->cl->failures, key);
}

/* The connection is beyond use: its message fails (or, between messages,
 * the session counts an error) under key, and the session starts over. */
static void conn_fail(struct session *s, const char *fmt, ...) VR_PRINTF(2, 3);
static void conn_fail(struct session *s, const char *fmt, ...)
{
	char key[VR_BENCH_KEY_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(key, sizeof(key), fmt, ap);
	va_end(ap);
	if (s->has_msg && !s->failed)
		msg_fail(s, "%s", key);
	else if (!s->has_msg)
		vr_bench_count(&s->cl->errors, key);
	session_close(s, false);
}

/* --- sending --- */

static void pend_push(struct session *s, enum cmd c)
{
	s->pend[(s->pend_head + s->pend_n++) % s->pend_cap] = (uint8_t)c;
}

static void send_cmd(struct session *s, enum cmd c, const char *fmt, ...) VR_PRINTF(3, 4);
static void send_cmd(struct session *s, enum cmd c, const char *fmt, ...)
{
	char line[VR_BENCH_REPLY_LINE_MAX + 64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (vr_buf_append(&s->conn.tx, line, (size_t)VR_MIN(n, (int)sizeof(line) - 1)) < 0)
		die_nomem();
	pend_push(s, c);
}

static void send_ehlo(struct session *s)
{
	send_cmd(s, C_EHLO, "EHLO %s\r\n", s->cl->cfg->helo);
}

static void send_rcpt(struct session *s)
{
	send_cmd(s, C_RCPT, "RCPT TO:<%s>\r\n", s->cl->rcpts[s->rcpt_next++]);
}

/* The message itself: DATA's content after its 354, or BDAT and the chunk. */
static void send_body(struct session *s, bool dot)
{
	struct client *cl = s->cl;
	struct iovec iov[VR_BENCH_MSG_IOV];
	unsigned n = vr_bench_msg_iov(&s->msg, &cl->pad, dot, iov);

	if (!dot)
		send_cmd(s, C_BDAT, "BDAT %" PRIu64 " LAST\r\n", s->msg.size);
	else
		pend_push(s, C_DOT);
	vr_bench_conn_segments(&s->conn, iov, n);
	s->body_queued = true;
	s->t_end = 0;
}

static void send_content(struct session *s)
{
	if (s->cl->cfg->chunking)
		send_body(s, false);
	else
		send_cmd(s, C_DATA, "DATA\r\n");
}

static void send_quit(struct session *s)
{
	send_cmd(s, C_QUIT, "QUIT\r\n");
}

/* --- transactions --- */

static void txn_clear(struct session *s)
{
	s->has_msg = s->failed = s->body_queued = false;
	s->rcpt_next = s->rcpt_ok = s->rcpt_replies = 0;
	s->t_end = 0;
}

/* The transaction ended (either way): the next one, or QUIT. */
static void txn_end(struct session *s, bool clean)
{
	txn_clear(s);
	if (!s->cl->cfg->reuse)
		send_quit(s);
	else if (!clean)
		send_cmd(s, C_RSET, "RSET\r\n");
	else
		txn_begin(s);
}

static void txn_begin(struct session *s)
{
	struct client *cl = s->cl;
	const struct vr_bench_cfg *cfg = cl->cfg;

	if (!s->has_msg) {
		if (!ticket_take(cl)) {
			send_quit(s);
			return;
		}
		s->has_msg = true;
		s->seq = cl->issued;
	}
	uint64_t size = vr_bench_sizes_draw(&cfg->sizes, &cl->rng);
	if (vr_bench_msg_make(&s->msg, &cl->mp, s->seq, size) < 0)
		die_nomem();
	/* RFC 1870: SIZE= only to a server that announced SIZE. */
	if (s->ext & VR_BENCH_EXT_SIZE)
		send_cmd(s, C_MAIL, "MAIL FROM:<%s> SIZE=%" PRIu64 "\r\n", cfg->from, s->msg.size);
	else
		send_cmd(s, C_MAIL, "MAIL FROM:<%s>\r\n", cfg->from);
	if (!cfg->pipelining)
		return;
	while (s->rcpt_next < cfg->rcpts)
		send_rcpt(s);
	send_content(s);
}

/* --- replies --- */

static bool ok(const struct vr_bench_reply *r)
{
	return r->code / 100 == 2;
}

static void on_greet(struct session *s, const struct vr_bench_reply *r)
{
	if (!ok(r)) {
		msg_fail(s, "greeting %u", r->code);
		send_quit(s);
		return;
	}
	send_ehlo(s);
}

static void on_ehlo(struct session *s, const struct vr_bench_reply *r)
{
	const struct vr_bench_cfg *cfg = s->cl->cfg;
	struct vr_bench_ehlo e;
	const char *missing = NULL;

	if (!ok(r)) {
		msg_fail(s, "EHLO %u", r->code);
		send_quit(s);
		return;
	}
	vr_bench_ehlo_parse(r, &e);
	s->ext = e.ext;
	if (cfg->starttls && !s->tls_on && !(e.ext & VR_BENCH_EXT_STARTTLS))
		missing = "STARTTLS";
	else if (cfg->pipelining && !(e.ext & VR_BENCH_EXT_PIPELINING))
		missing = "PIPELINING";
	else if (cfg->chunking && !(e.ext & VR_BENCH_EXT_CHUNKING))
		missing = "CHUNKING";
	if (missing) {
		msg_fail(s, "EHLO: no %s offered", missing);
		send_quit(s);
	} else if (cfg->starttls && !s->tls_on) {
		send_cmd(s, C_STARTTLS, "STARTTLS\r\n");
	} else {
		txn_begin(s);
	}
}

static void on_starttls(struct session *s, const struct vr_bench_reply *r)
{
	if (r->code != 220) {
		msg_fail(s, "STARTTLS %u", r->code);
		send_quit(s);
		return;
	}
	/* What came with the 220 was sent in plaintext and must not be taken
	 * for the encrypted session's (CVE-2011-0411 class). */
	if (s->conn.rx.len > 0 || s->pend_n > 0) {
		conn_fail(s, "STARTTLS: plaintext after the 220");
		return;
	}
	int rc = vr_bench_conn_tls(&s->conn, s->cl->cfg->tls, false);
	if (rc < 0) {
		conn_fail(s, "TLS: %s", rc == -EPROTO ? vr_tls_error(s->conn.tls) : strerror(-rc));
		return;
	}
	s->tls_wait = true;
}

static void on_mail(struct session *s, const struct vr_bench_reply *r)
{
	if (!ok(r))
		msg_fail(s, "MAIL %u", r->code);
	if (s->cl->cfg->pipelining)
		return;          /* the rest of the group is on its way */
	if (s->failed)
		txn_end(s, false);
	else
		send_rcpt(s);
}

static void on_rcpt(struct session *s, const struct vr_bench_reply *r)
{
	struct client *cl = s->cl;
	bool last = ++s->rcpt_replies == cl->cfg->rcpts;

	if (ok(r)) {
		s->rcpt_ok++;
	} else if (!s->failed) {
		/* (after a failed MAIL, the group's RCPT replies say nothing new) */
		cl->rcpt_refused++;
		s->last_rcpt_code = r->code;
		vr_bench_countf(&cl->refused, "RCPT %u", r->code);
	}
	if (last && s->rcpt_ok == 0)
		msg_fail(s, "RCPT %u", s->last_rcpt_code);
	if (cl->cfg->pipelining)
		return;          /* DATA or BDAT is on its way */
	if (!last)
		send_rcpt(s);
	else if (s->rcpt_ok == 0)
		txn_end(s, false);
	else
		send_content(s);
}

static void on_data(struct session *s, const struct vr_bench_reply *r)
{
	if (r->code == 354) {
		send_body(s, true);
		return;
	}
	msg_fail(s, "DATA %u", r->code);
	txn_end(s, false);
}

/* The final reply of a message: end-of-data or BDAT LAST. */
static void on_final(struct session *s, const struct vr_bench_reply *r)
{
	struct client *cl = s->cl;
	enum cmd c = cl->cfg->chunking ? C_BDAT : C_DOT;
	uint64_t now = vr_bench_now();

	if (s->t_end == 0) {
		conn_fail(s, "%s %u before the end of the message", cmd_names[c], r->code);
		return;
	}
	if (!ok(r)) {
		msg_fail(s, "%s %u", cmd_names[c], r->code);
	} else if (!s->failed) {
		cl->accepted++;
		cl->rcpt_ok += s->rcpt_ok;
		cl->bytes += s->msg.size;
		vr_bench_hist_add(&cl->lat, now - s->t_end);
		if (cl->hash) {
			vr_bench_hash_begin(cl->hash);
			vr_bench_msg_hash(&s->msg, &cl->pad, cl->hash);
			vr_bench_hash_end(cl->hash, &cl->sum);
		}
	}
	txn_end(s, !s->failed);
}

static void on_rset(struct session *s, const struct vr_bench_reply *r)
{
	if (!ok(r)) {
		conn_fail(s, "RSET %u", r->code);
		return;
	}
	txn_begin(s);
}

static void on_quit(struct session *s, const struct vr_bench_reply *r)
{
	session_close(s, true);
}

static void (*const on_reply[])(struct session *, const struct vr_bench_reply *) = {
	[C_GREET] = on_greet, [C_EHLO] = on_ehlo, [C_STARTTLS] = on_starttls,
	[C_MAIL] = on_mail, [C_RCPT] = on_rcpt, [C_DATA] = on_data, [C_DOT] = on_final,
	[C_BDAT] = on_final, [C_RSET] = on_rset, [C_QUIT] = on_quit,
};

/* Parses and handles every complete reply in rx. */
static void session_replies(struct session *s)
{
	while (s->state == S_OPEN && s->conn.rx.len > 0) {
		struct vr_bench_reply r;
		size_t used;
		int rc = vr_bench_reply_parse(&s->rp, vr_buf_head(&s->conn.rx), s->conn.rx.len,
					      &used, &r);
		if (rc == VR_AGAIN)
			return;
		if (rc == VR_ERR) {
			conn_fail(s, "protocol: %s", vr_bench_reply_strerror(s->rp.err));
			return;
		}
		/* Consuming only moves rx's offset: r.text stays valid here. */
		vr_buf_consume(&s->conn.rx, used);
		if (s->pend_n == 0) {
			conn_fail(s, "protocol: reply %u to no command", r.code);
			return;
		}
		enum cmd c = s->pend[s->pend_head];
		s->pend_head = (s->pend_head + 1) % s->pend_cap;
		s->pend_n--;
		on_reply[c](s, &r);
	}
}

/* --- connections --- */

static void session_close(struct session *s, bool clean)
{
	struct client *cl = s->cl;

	vr_bench_conn_close(&s->conn);
	s->rp = (struct vr_bench_reply_parser){ 0 };
	s->pend_head = s->pend_n = 0;
	s->tls_wait = s->tls_on = false;
	if (clean)
		cl->sessions_done++;
	if (s->has_msg && !s->failed)
		msg_fail(s, "connection closed");
	txn_clear(s);
	s->state = S_IDLE;
}

/* A connection that could not be made: the next try waits a little, so a
 * server that refuses does not spin the loop. */
static void retry_later(struct session *s)
{
	s->state = S_RETRY;
	s->deadline = s->cl->now + RETRY_NS;
}

static void session_connect(struct session *s)
{
	struct client *cl = s->cl;
	const struct vr_bench_cfg *cfg = cl->cfg;
	const struct vr_bench_addr *src = NULL;
	const char *step;

	s->state = S_CONNECTING;
	s->gen++;
	cl->connections++;
	if (cfg->nsources)
		src = &cfg->sources[cl->source_next++ % cfg->nsources];
	int rc = cl->io->ops->connect(cl->io, &s->conn, src, (uint64_t)s->id << 32 | s->gen, &step);
	if (rc < 0) {
		conn_fail(s, "%s: %s", step, strerror(-rc));
		retry_later(s);
		return;
	}
	pend_push(s, C_GREET);
	s->deadline = cl->now + (uint64_t)(cfg->timeout * 1e9);
}

/* The session's next connection, if there is a message left for it. */
static void session_start(struct session *s)
{
	struct client *cl = s->cl;

	if (!ticket_take(cl)) {
		s->state = S_DONE;
		cl->active--;
		return;
	}
	s->has_msg = true;
	s->seq = cl->issued;
	session_connect(s);
}

static void session_flush(struct session *s)
{
	int rc = vr_bench_conn_flush(&s->conn);

	if (rc < 0 && s->pend_n == 1 && s->pend[s->pend_head] == C_QUIT) {
		session_close(s, true);
		return;
	}
	if (rc < 0) {
		conn_fail(s, "%s: %s", s->conn.tls ? "TLS" : "write",
			  rc == -EPROTO ? vr_tls_error(s->conn.tls) : strerror(-rc));
		return;
	}
	/* The clock was read before the write that emptied the queue: on
	 * loopback the server may have replied before that write returned,
	 * and the woken server may even have preempted us right after it. */
	if (s->body_queued && s->t_end == 0 && !vr_bench_conn_pending(&s->conn))
		s->t_end = s->conn.t_send;
}

static void session_read(struct session *s)
{
	int rc;

	do {
		rc = vr_bench_conn_read(&s->conn);
		session_replies(s);
		if (s->state != S_OPEN)
			return;
	} while (rc == 1);
	if (s->tls_wait && vr_tls_established(s->conn.tls)) {
		s->tls_wait = false;
		s->tls_on = true;
		send_ehlo(s);
	}
	if (rc == 0)
		return;
	/* The server may close after its 221, or instead of it (reset, even,
	 * when it was gone before our QUIT arrived): nothing is lost. */
	if (s->pend_n == 1 && s->pend[s->pend_head] == C_QUIT)
		session_close(s, true);
	else if (rc == -EPIPE)
		conn_fail(s, "connection closed by the server%s%s", s->pend_n ? " awaiting " : "",
			  s->pend_n ? cmd_names[s->pend[s->pend_head]] : "");
	else if (rc == -EPROTO)
		conn_fail(s, "TLS: %s", vr_tls_error(s->conn.tls));
	else
		conn_fail(s, "read: %s", strerror(-rc));
}

static void session_event(struct session *s, uint32_t ev)
{
	struct client *cl = s->cl;

	s->deadline = cl->now + (uint64_t)(cl->cfg->timeout * 1e9);
	if (s->state == S_CONNECTING) {
		if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		int err = cl->io->ops->connected(&s->conn);
		if (err) {
			conn_fail(s, "connect: %s", strerror(err));
			retry_later(s);
			return;
		}
		s->state = S_OPEN;
	}
	if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		session_read(s);
	if (s->state == S_OPEN)
		session_flush(s);
	/* A session that closed its connection goes on with the next one. */
	if (s->state == S_IDLE)
		session_start(s);
}

/* --- the loop --- */

static void tick(struct client *cl)
{
	for (unsigned i = 0; i < cl->cfg->sessions; i++) {
		struct session *s = &cl->s[i];

		if (cl->now < s->deadline)
			continue;
		if (s->state == S_RETRY) {
			s->state = S_IDLE;
			session_start(s);
		} else if (s->state == S_CONNECTING) {
			conn_fail(s, "timeout connecting");
			session_start(s);
		} else if (s->state == S_OPEN) {
			conn_fail(s, "timeout awaiting %s", s->pend_n ?
				  cmd_names[s->pend[s->pend_head]] : "nothing");
			session_start(s);
		}
	}
}

static void progress(struct client *cl, bool last)
{
	double t = (double)(cl->now - cl->t0) / 1e9;

	if (last) {
		fputs("\r\033[K", stderr);
		return;
	}
	fprintf(stderr, "\r\033[K%6.1f s  %" PRIu64 " accepted  %" PRIu64 " failed  %.0f msgs/s  "
		"%u sessions", t, cl->accepted, cl->failed, t > 0 ? (double)cl->accepted / t : 0.0,
		cl->active);
}

static void run(struct client *cl)
{
	struct vr_bench_event evs[256];
	uint64_t next_tick = cl->now + TICK_NS, next_progress = cl->now + 1000000000ull;

	while (cl->active > 0 && !cl->interrupted) {
		int n = cl->io->ops->wait(cl->io, evs, (int)VR_ARRAY_SIZE(evs), 100);
		cl->now = vr_bench_now();
		if (n < 0) {
			fprintf(stderr, "vmrelay-bench: waiting for events: %s\n", strerror(-n));
			cl->interrupted = true;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].tag == VR_BENCH_IO_SIGNAL) {
				cl->interrupted = true;
				continue;
			}
			struct session *s = &cl->s[evs[i].tag >> 32];
			if ((uint32_t)evs[i].tag != s->gen || s->state == S_IDLE ||
			    s->state == S_RETRY || s->state == S_DONE)
				continue;        /* an event of a connection since closed */
			session_event(s, evs[i].events);
		}
		if (cl->now >= next_tick) {
			tick(cl);
			next_tick = cl->now + TICK_NS;
		}
		if (cl->cfg->progress && cl->now >= next_progress) {
			progress(cl, false);
			next_progress = cl->now + 1000000000ull;
		}
	}
	if (cl->cfg->progress)
		progress(cl, true);
}

/* --- the report --- */

static json_t *counts_json(const struct vr_bench_counts *c)
{
	json_t *o = json_object();
	for (unsigned i = 0; i < c->n; i++)
		json_object_set_new(o, c->e[i].key, json_integer((json_int_t)c->e[i].n));
	return o;
}

static void counts_text(const char *label, const struct vr_bench_counts *c)
{
	if (c->n == 0)
		return;
	printf("  %-11s", label);
	for (unsigned i = 0; i < c->n; i++)
		printf("%s%s: %" PRIu64, i ? ", " : "", c->e[i].key, c->e[i].n);
	printf("\n");
}

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static void report(struct client *cl, double secs)
{
	const struct vr_bench_cfg *cfg = cl->cfg;
	const struct vr_bench_hist *h = &cl->lat;
	double per = secs > 0 ? 1.0 / secs : 0;
	char hex[2 * VR_BENCH_DIGEST_MAX + 1] = "", transport[1024];

	cl->io->ops->describe(cl->io, transport, sizeof(transport));
	if (cl->hash)
		vr_bench_hash_sum_hex(&cl->sum, hex);
	if (cfg->json) {
		json_t *o = json_pack("{s:s, s:I, s:b, s:b, s:b, s:b, s:I, s:s, s:f, s:b}",
			"target", cfg->target_name, "sessions", (json_int_t)cfg->sessions,
			"reuse", cfg->reuse, "pipelining", cfg->pipelining, "chunking", cfg->chunking,
			"starttls", cfg->starttls, "rcpts", (json_int_t)cfg->rcpts,
			"size", cfg->size_spec, "elapsed_s", secs, "interrupted", cl->interrupted);
		json_object_set_new(o, "transport", json_string(transport));
		json_object_set_new(o, "messages", json_pack("{s:I, s:I, s:I}",
			"sent", (json_int_t)(cl->accepted + cl->failed),
			"accepted", (json_int_t)cl->accepted, "failed", (json_int_t)cl->failed));
		json_object_set_new(o, "msgs_per_s", json_real((double)cl->accepted * per));
		json_object_set_new(o, "sessions_completed", json_integer((json_int_t)cl->sessions_done));
		json_object_set_new(o, "connections", json_integer((json_int_t)cl->connections));
		json_object_set_new(o, "sessions_per_s", json_real((double)cl->sessions_done * per));
		json_object_set_new(o, "bytes", json_integer((json_int_t)cl->bytes));
		json_object_set_new(o, "bytes_per_s", json_real((double)cl->bytes * per));
		json_object_set_new(o, "latency_ms", json_pack("{s:f, s:f, s:f, s:f, s:f}",
			"p50", ms(vr_bench_hist_quantile(h, 0.5)),
			"p99", ms(vr_bench_hist_quantile(h, 0.99)),
			"p999", ms(vr_bench_hist_quantile(h, 0.999)),
			"max", ms(h->max), "mean", h->count ? ms(h->sum / h->count) : 0.0));
		json_object_set_new(o, "recipients", json_pack("{s:I, s:I}",
			"accepted", (json_int_t)cl->rcpt_ok, "refused", (json_int_t)cl->rcpt_refused));
		json_object_set_new(o, "failures", counts_json(&cl->failures));
		json_object_set_new(o, "refused", counts_json(&cl->refused));
		json_object_set_new(o, "errors", counts_json(&cl->errors));
		if (cl->hash)
			json_object_set_new(o, "hash", json_pack("{s:s, s:s, s:I}",
				"alg", vr_bench_hash_alg_name(cfg->hash), "sum", hex,
				"messages", (json_int_t)cl->sum.messages));
		json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(7));
		putchar('\n');
		json_decref(o);
		return;
	}
	printf("vmrelay-bench: %s, %u session%s, %s connections%s%s%s, size %s, %u recipient%s\n",
	       cfg->target_name, cfg->sessions, cfg->sessions == 1 ? "" : "s",
	       cfg->reuse ? "reused" : "new", cfg->pipelining ? ", PIPELINING" : "",
	       cfg->chunking ? ", CHUNKING" : "", cfg->starttls ? ", STARTTLS" : "",
	       cfg->size_spec, cfg->rcpts, cfg->rcpts == 1 ? "" : "s");
	printf("  messages   %" PRIu64 " accepted, %" PRIu64 " failed in %.3f s%s: %.1f msgs/s\n",
	       cl->accepted, cl->failed, secs, cl->interrupted ? " (interrupted)" : "",
	       (double)cl->accepted * per);
	printf("  sessions   %" PRIu64 " completed of %" PRIu64 " connections: %.1f sessions/s\n",
	       cl->sessions_done, cl->connections, (double)cl->sessions_done * per);
	printf("  bytes      %" PRIu64 " accepted: %.2f MB/s\n", cl->bytes,
	       (double)cl->bytes * per / 1e6);
	printf("  latency    final reply after the message's end: p50 %.3f ms, p99 %.3f ms, "
	       "p99.9 %.3f ms, max %.3f ms\n", ms(vr_bench_hist_quantile(h, 0.5)),
	       ms(vr_bench_hist_quantile(h, 0.99)), ms(vr_bench_hist_quantile(h, 0.999)),
	       ms(h->max));
	printf("  recipients %" PRIu64 " accepted, %" PRIu64 " refused\n", cl->rcpt_ok,
	       cl->rcpt_refused);
	if (cl->hash)
		printf("  hash       %s %s (sum over %" PRIu64 " accepted messages)\n",
		       vr_bench_hash_alg_name(cfg->hash), hex, cl->sum.messages);
	printf("  transport  %s\n", transport);
	counts_text("failed", &cl->failures);
	counts_text("refused", &cl->refused);
	counts_text("errors", &cl->errors);
}

/* --- set-up --- */

/* The K recipients of every message, from --to: cycled through, and tagged
 * "+i" before the "@" when there are fewer addresses than recipients, so
 * that the K are distinct. */
static int make_rcpts(struct client *cl)
{
	const struct vr_bench_cfg *cfg = cl->cfg;
	bool tag = cfg->rcpts > cfg->nto;

	cl->rcpts = calloc(cfg->rcpts, sizeof(*cl->rcpts));
	if (!cl->rcpts)
		return -ENOMEM;
	for (unsigned i = 0; i < cfg->rcpts; i++) {
		const char *a = cfg->to[i % cfg->nto], *at = strrchr(a, '@');
		int n = tag && at ? asprintf(&cl->rcpts[i], "%.*s+%u%s", (int)(at - a), a, i + 1, at)
				  : asprintf(&cl->rcpts[i], "%s", a);
		if (n < 0)
			return -ENOMEM;
	}
	return 0;
}

static int client_init(struct client *cl, const struct vr_bench_cfg *cfg)
{
	memset(cl, 0, sizeof(*cl));
	cl->cfg = cfg;
	cl->sigfd = -1;
	cl->rng = cfg->seed;
	snprintf(cl->run_id, sizeof(cl->run_id), "%" PRIx64 ".%d", vr_bench_now(), (int)getpid());
	if (make_rcpts(cl) < 0 || vr_bench_pad_init(&cl->pad, cfg->sizes.hi) < 0)
		return -ENOMEM;
	cl->mp = (struct vr_bench_msg_params){
		.from = cfg->from, .rcpts = (const char *const *)cl->rcpts,
		.nrcpts = cfg->rcpts, .run_id = cl->run_id,
	};
	if (cfg->hash) {
		cl->hash = vr_bench_hash_new(cfg->hash);
		if (!cl->hash)
			return -ENOMEM;
		vr_bench_hash_sum_init(&cl->sum, cfg->hash);
	}
	cl->s = calloc(cfg->sessions, sizeof(*cl->s));
	if (!cl->s)
		return -ENOMEM;
	for (unsigned i = 0; i < cfg->sessions; i++) {
		struct session *s = &cl->s[i];
		s->cl = cl;
		s->id = i;
		/* Every RCPT of a pipelined group, MAIL, DATA, QUIT and spare. */
		s->pend_cap = cfg->rcpts + 8;
		s->pend = malloc(s->pend_cap);
		if (!s->pend)
			return -ENOMEM;
		vr_bench_conn_init(&s->conn, RX_MAX, 0);
		vr_bench_msg_init(&s->msg);
	}
	cl->sigfd = vr_bench_signalfd(false);
	if (cl->sigfd < 0)
		return -errno;
	return 0;
}

/* The transport, once the rest is ready: --dpdk starts the EAL and the
 * port, and reaches the target once, in here. */
static int client_io(struct client *cl)
{
	const struct vr_bench_cfg *cfg = cl->cfg;
	char err[512];

	cl->io = cfg->dpdk_eal ? vr_bench_io_dpdk_new(cfg, cl->sigfd, err, sizeof(err))
			       : vr_bench_io_kernel_new(cfg, cl->sigfd, err, sizeof(err));
	if (!cl->io) {
		fprintf(stderr, "vmrelay-bench: %s\n", err);
		return -1;
	}
	return 0;
}

static void client_free(struct client *cl)
{
	for (unsigned i = 0; cl->s && i < cl->cfg->sessions; i++) {
		vr_bench_conn_free(&cl->s[i].conn);
		vr_bench_msg_free(&cl->s[i].msg);
		free(cl->s[i].pend);
	}
	free(cl->s);
	for (unsigned i = 0; cl->rcpts && i < cl->cfg->rcpts; i++)
		free(cl->rcpts[i]);
	free(cl->rcpts);
	vr_bench_pad_free(&cl->pad);
	vr_bench_hash_free(cl->hash);
	if (cl->io)
		cl->io->ops->free(cl->io);
	if (cl->sigfd >= 0)
		close(cl->sigfd);
}

int vr_bench_client_run(const struct vr_bench_cfg *cfg)
{
	static struct client cl;     /* the histogram is large: not on the stack */
	int rc = client_init(&cl, cfg);

	if (rc < 0) {
		fprintf(stderr, "vmrelay-bench: cannot set up: %s\n", strerror(-rc));
		client_free(&cl);
		return VR_BENCH_EXIT_USAGE;
	}
	if (client_io(&cl) < 0) {
		client_free(&cl);
		return VR_BENCH_EXIT_USAGE;
	}
	cl.now = cl.t0 = vr_bench_now();
	cl.t_stop = cl.t0 + (uint64_t)(cfg->duration * 1e9);
	cl.active = cfg->sessions;
	for (unsigned i = 0; i < cfg->sessions; i++)
		session_start(&cl.s[i]);
	run(&cl);
	report(&cl, (double)(vr_bench_now() - cl.t0) / 1e9);
	fflush(stdout);

	int status = VR_BENCH_EXIT_OK;
	if (cl.interrupted) {
		fprintf(stderr, "vmrelay-bench: interrupted: the figures cover the run so far\n");
		status = VR_BENCH_EXIT_SIGNAL;
	} else if (cl.failed || cl.rcpt_refused || cl.errors.total) {
		fprintf(stderr, "vmrelay-bench: %" PRIu64 " of %" PRIu64 " messages failed, %" PRIu64
			" recipients refused, %" PRIu64 " session errors (see the report)\n",
			cl.failed, cl.accepted + cl.failed, cl.rcpt_refused, cl.errors.total);
		status = VR_BENCH_EXIT_FAILED;
	}
	client_free(&cl);
	return status;
}
