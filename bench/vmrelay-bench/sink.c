/*
 * sink.c - vmrelay-bench --sink: an SMTP server that receives and throws
 * away, counting (and with --hash, hashing) every message it accepts.
 *
 * One edge-triggered epoll loop serves every connection. Command lines and
 * message content go through the relay's own parsers (engine/smtp parse.c
 * and data.c, fuzzed there), so the sink is exactly as strict about line
 * ends, dot-stuffing and smuggling as vmrelay. Commands come from a table;
 * replies to a pipelined group are queued and written together once the
 * group has been read. For failure tests, --fail-rate refuses that share of
 * messages at their end with --reply-code, from a seeded generator, so a
 * run is repeatable.
 *
 * Counts are printed at exit (SIGINT, SIGTERM, --messages, --duration) and
 * on SIGUSR1, in text or as one JSON object a line.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"
#include "conn.h"
#include "data.h"
#include "parse.h"

#define RX_MAX 65536
#define LISTENER UINT64_MAX
#define SIGNALS (UINT64_MAX - 1)

enum mode { M_CMD, M_DATA, M_BDAT };

struct sink;

struct peer {
	struct sink *sk;
	unsigned id;
	uint32_t gen;
	bool open;
	bool quit;                   /* close once the replies are out */
	bool tls_next;               /* STARTTLS: TLS once the 220 is out */
	bool greeted, mail;
	unsigned rcpts;
	enum mode mode;
	uint64_t bdat_left;
	bool bdat_open;              /* a BDAT chunk began this message's content */
	bool bdat_last, bdat_bad;    /* BDAT without a transaction: read, then refuse */
	struct vr_bench_conn conn;
	struct vr_smtp_line lp;
	struct vr_smtp_data dd;
	struct vr_bench_hash *hash;
	uint64_t deadline;
	struct peer *next_free;
};

struct sink {
	const struct vr_bench_cfg *cfg;
	int ep, lfd, sigfd;
	struct peer *p;
	struct peer *free;
	unsigned open;
	uint64_t rng, now, t0;
	bool stop;
	char name[VR_ADDRSTRLEN];    /* where it listens, with the port bound */

	uint64_t sessions, messages, rcpts, bytes, refused, errors;
	struct vr_bench_hash_sum sum;
};

/* --- replies --- */

static void reply(struct peer *p, const char *text)
{
	/* tx has no ceiling: a client that never reads is timed out. */
	if (vr_buf_append(&p->conn.tx, text, strlen(text)) < 0 ||
	    vr_buf_append(&p->conn.tx, "\r\n", 2) < 0) {
		fprintf(stderr, "vmrelay-bench: out of memory\n");
		exit(VR_BENCH_EXIT_USAGE);
	}
}

static void replyf(struct peer *p, const char *fmt, ...) VR_PRINTF(2, 3);
static void replyf(struct peer *p, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	reply(p, line);
}

static void txn_reset(struct peer *p)
{
	p->mail = p->bdat_open = false;
	p->rcpts = 0;
}

/* --- message content --- */

static int on_content(void *arg, const void *data, size_t n)
{
	struct peer *p = arg;

	if (p->hash)
		vr_bench_hash_update(p->hash, data, n);
	return 0;
}

static void content_begin(struct peer *p, bool dot)
{
	vr_smtp_data_init(&p->dd, dot, p->sk->cfg->max_size, on_content, p);
	if (p->hash)
		vr_bench_hash_begin(p->hash);
}

/* The message ended: accept it, or refuse it as asked or as it deserves. */
static void content_end(struct peer *p)
{
	struct sink *sk = p->sk;
	const struct vr_bench_cfg *cfg = sk->cfg;

	if (p->dd.flags & VR_SMTP_DATA_BIG) {
		reply(p, "552 5.3.4 Message too big");
		sk->refused++;
	} else if (p->dd.flags) {
		reply(p, "554 5.6.0 Message has a NUL or a line over 1000 octets");
		sk->refused++;
	} else if (cfg->fail_rate > 0 && vr_bench_rand_unit(&sk->rng) < cfg->fail_rate) {
		replyf(p, "%u %u.3.0 vmrelay-bench: failure injected", cfg->reply_code,
		       cfg->reply_code / 100);
		sk->refused++;
	} else {
		sk->messages++;
		sk->rcpts += p->rcpts;
		sk->bytes += p->dd.size;
		if (p->hash)
			vr_bench_hash_end(p->hash, &sk->sum);
		replyf(p, "250 2.0.0 Ok: queued as %" PRIu64, sk->messages);
		if (cfg->messages && sk->messages >= cfg->messages)
			sk->stop = true;
	}
	txn_reset(p);
	p->mode = M_CMD;
}

/* --- commands --- */

static void cmd_helo(struct peer *p, const uint8_t *arg, size_t len, bool ehlo)
{
	const struct vr_bench_cfg *cfg = p->sk->cfg;

	if (len == 0) {
		reply(p, "501 5.5.4 Syntax: EHLO hostname");
		return;
	}
	p->greeted = true;
	txn_reset(p);
	if (!ehlo) {
		reply(p, "250 vmrelay-bench");
		return;
	}
	replyf(p, "250-vmrelay-bench\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n"
	       "250-SIZE %" PRIu64 "%s\r\n250 ENHANCEDSTATUSCODES", cfg->max_size,
	       cfg->tls && !p->conn.tls ? "\r\n250-STARTTLS" : "");
}

static void cmd_ehlo(struct peer *p, const uint8_t *arg, size_t len)
{
	cmd_helo(p, arg, len, true);
}

static void cmd_helo_only(struct peer *p, const uint8_t *arg, size_t len)
{
	cmd_helo(p, arg, len, false);
}

static void cmd_mail(struct peer *p, const uint8_t *arg, size_t len)
{
	if (!p->greeted)
		reply(p, "503 5.5.1 Error: send HELO/EHLO first");
	else if (p->mail)
		reply(p, "503 5.5.1 Error: nested MAIL command");
	else if (len < 5 || strncasecmp((const char *)arg, "FROM:", 5) != 0)
		reply(p, "501 5.5.4 Syntax: MAIL FROM:<address>");
	else {
		p->mail = true;
		reply(p, "250 2.1.0 Ok");
	}
}

static void cmd_rcpt(struct peer *p, const uint8_t *arg, size_t len)
{
	if (!p->mail)
		reply(p, "503 5.5.1 Error: need MAIL command");
	else if (len < 3 || strncasecmp((const char *)arg, "TO:", 3) != 0)
		reply(p, "501 5.5.4 Syntax: RCPT TO:<address>");
	else {
		p->rcpts++;
		reply(p, "250 2.1.5 Ok");
	}
}

static void cmd_data(struct peer *p, const uint8_t *arg, size_t len)
{
	if (!p->rcpts) {
		reply(p, p->mail ? "554 5.5.1 Error: no valid recipients" :
		      "503 5.5.1 Error: need RCPT command");
		return;
	}
	reply(p, "354 End data with <CR><LF>.<CR><LF>");
	content_begin(p, true);
	p->mode = M_DATA;
}

/* RFC 3030: BDAT SIZE [LAST]. The chunk follows at once, whatever we say. */
static void cmd_bdat(struct peer *p, const uint8_t *arg, size_t len)
{
	char tmp[64];
	char *end;

	if (len >= sizeof(tmp)) {
		reply(p, "501 5.5.4 Syntax: BDAT size [LAST]");
		return;
	}
	memcpy(tmp, arg, len);
	tmp[len] = '\0';
	errno = 0;
	unsigned long long n = strtoull(tmp, &end, 10);
	while (*end == ' ')
		end++;
	bool last = strcasecmp(end, "LAST") == 0;
	if (end == tmp || errno || (*end && !last) || tmp[0] < '0' || tmp[0] > '9') {
		/* The chunk's length is unknown: the stream cannot be followed. */
		reply(p, "501 5.5.4 Syntax: BDAT size [LAST]");
		p->quit = true;
		return;
	}
	p->bdat_bad = !p->rcpts;
	if (!p->bdat_bad && !p->bdat_open) {
		content_begin(p, false);
		p->bdat_open = true;
	}
	p->mode = M_BDAT;
	p->bdat_left = n;
	p->bdat_last = last;
}

static void cmd_rset(struct peer *p, const uint8_t *arg, size_t len)
{
	txn_reset(p);
	reply(p, "250 2.0.0 Ok");
}

static void cmd_noop(struct peer *p, const uint8_t *arg, size_t len)
{
	reply(p, "250 2.0.0 Ok");
}

static void cmd_quit(struct peer *p, const uint8_t *arg, size_t len)
{
	reply(p, "221 2.0.0 Bye");
	p->quit = true;
}

static void cmd_starttls(struct peer *p, const uint8_t *arg, size_t len)
{
	if (!p->sk->cfg->tls || p->conn.tls) {
		reply(p, "502 5.5.1 Error: command not implemented");
		return;
	}
	reply(p, "220 2.0.0 Ready to start TLS");
	p->tls_next = true;
	p->greeted = false;
	txn_reset(p);
}

static const struct {
	const char *verb;
	void (*fn)(struct peer *p, const uint8_t *arg, size_t len);
} commands[] = {
	{ "EHLO", cmd_ehlo },
	{ "HELO", cmd_helo_only },
	{ "MAIL", cmd_mail },
	{ "RCPT", cmd_rcpt },
	{ "DATA", cmd_data },
	{ "BDAT", cmd_bdat },
	{ "RSET", cmd_rset },
	{ "NOOP", cmd_noop },
	{ "QUIT", cmd_quit },
	{ "STARTTLS", cmd_starttls },
};

static void command(struct peer *p, const struct vr_smtp_cmdline *cl)
{
	for (size_t i = 0; i < VR_ARRAY_SIZE(commands); i++) {
		if (cl->verb_len == strlen(commands[i].verb) &&
		    strncasecmp((const char *)cl->verb, commands[i].verb, cl->verb_len) == 0) {
			commands[i].fn(p, cl->arg, cl->arg_len);
			return;
		}
	}
	reply(p, "500 5.5.2 Error: command not recognized");
}

/* --- input --- */

/* A fault that leaves the stream unreadable: say so and close. */
static void fatal(struct peer *p, const char *text)
{
	reply(p, text);
	p->quit = true;
	p->sk->errors++;
}

/* Consumes what it can of rx. */
static void input(struct peer *p)
{
	struct vr_buf *rx = &p->conn.rx;

	/* (a BDAT chunk of 0 octets ends with no input at all) */
	while ((rx->len > 0 || (p->mode == M_BDAT && p->bdat_left == 0)) && !p->quit &&
	       !p->tls_next) {
		const uint8_t *d = vr_buf_head(rx);
		size_t used = 0;
		int rc;

		if (p->mode == M_CMD) {
			struct vr_smtp_cmdline cl;
			rc = vr_smtp_line_parse(&p->lp, d, rx->len, &used, &cl);
			vr_buf_consume(rx, used);
			if (rc == VR_OK)
				command(p, &cl);
			else if (rc == VR_ERR && p->lp.err == VR_SMTP_LINE_LONG)
				reply(p, "500 5.5.2 Error: line too long");
			else if (rc == VR_ERR && p->lp.err == VR_SMTP_LINE_NUL)
				reply(p, "500 5.5.2 Error: NUL in a command");
			else if (rc == VR_ERR)
				fatal(p, "421 4.5.0 Error: bare CR or LF in a command");
			else if (used == 0)
				return;
		} else if (p->mode == M_DATA) {
			rc = vr_smtp_data_parse(&p->dd, d, rx->len, &used);
			vr_buf_consume(rx, used);
			if (rc == VR_OK)
				content_end(p);
			else if (rc == VR_ERR)
				fatal(p, "421 4.5.0 Error: bare CR or LF in the message");
		} else {
			size_t n = (size_t)VR_MIN((uint64_t)rx->len, p->bdat_left);
			rc = p->bdat_bad || n == 0 ? VR_AGAIN :
				vr_smtp_data_parse(&p->dd, d, n, &used);
			vr_buf_consume(rx, n);
			p->bdat_left -= n;
			if (rc == VR_ERR) {
				fatal(p, "421 4.5.0 Error: bare CR or LF in the message");
			} else if (p->bdat_left == 0) {
				p->mode = M_CMD;
				if (p->bdat_bad)
					reply(p, "503 5.5.1 Error: need RCPT command");
				else if (!p->bdat_last)
					replyf(p, "250 2.0.0 %" PRIu64 " octets received", p->dd.size);
				else if (vr_smtp_data_finish(&p->dd) == VR_ERR)
					fatal(p, "421 4.5.0 Error: bare CR at the end of the message");
				else
					content_end(p);
			}
		}
	}
	/* Plaintext pipelined behind STARTTLS is dropped (CVE-2011-0411). */
	if (p->tls_next)
		vr_buf_reset(rx);
}

/* --- connections --- */

static void peer_close(struct peer *p)
{
	struct sink *sk = p->sk;

	vr_bench_conn_close(&p->conn);
	p->open = false;
	p->next_free = sk->free;
	sk->free = p;
	sk->open--;
}

static void peer_flush(struct peer *p)
{
	int rc = vr_bench_conn_flush(&p->conn);

	if (rc < 0) {
		p->sk->errors++;
		peer_close(p);
		return;
	}
	if (vr_bench_conn_pending(&p->conn))
		return;
	if (p->quit) {
		peer_close(p);
	} else if (p->tls_next) {
		p->tls_next = false;
		if (vr_bench_conn_tls(&p->conn, p->sk->cfg->tls, true) < 0) {
			p->sk->errors++;
			peer_close(p);
		}
	}
}

static void peer_event(struct peer *p, uint32_t ev)
{
	int rc = 0;

	p->deadline = p->sk->now + (uint64_t)(p->sk->cfg->timeout * 1e9);
	if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		do {
			rc = vr_bench_conn_read(&p->conn);
			input(p);
		} while (rc == 1 && !p->quit && !p->tls_next);
	}
	peer_flush(p);
	if (p->open && rc < 0) {
		/* A client that goes away mid-message is an error; after QUIT or
		 * between messages it is only impolite. */
		if (rc != -EPIPE || p->mode != M_CMD || p->mail)
			p->sk->errors++;
		peer_close(p);
	}
}

static void accept_all(struct sink *sk)
{
	while (sk->free) {
		int fd = accept4(sk->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				sk->errors++;
			return;
		}
		struct peer *p = sk->free;
		sk->free = p->next_free;
		sk->open++;
		sk->sessions++;
		p->gen++;
		p->open = true;
		p->quit = p->tls_next = p->greeted = p->mail = false;
		p->rcpts = 0;
		p->mode = M_CMD;
		p->lp = (struct vr_smtp_line){ 0 };
		vr_bench_conn_open(&p->conn, fd);
		struct epoll_event ev = {
			.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
			.data.u64 = (uint64_t)p->id << 32 | p->gen,
		};
		if (epoll_ctl(sk->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			sk->errors++;
			peer_close(p);
			continue;
		}
		p->deadline = sk->now + (uint64_t)(sk->cfg->timeout * 1e9);
		reply(p, "220 vmrelay-bench ESMTP sink");
		peer_flush(p);
	}
}

/* --- the report --- */

static void report(struct sink *sk)
{
	char hex[2 * VR_BENCH_DIGEST_MAX + 1] = "";

	if (sk->cfg->hash)
		vr_bench_hash_sum_hex(&sk->sum, hex);
	if (sk->cfg->json) {
		json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
			"listen", sk->name, "sessions", (json_int_t)sk->sessions,
			"messages", (json_int_t)sk->messages, "recipients", (json_int_t)sk->rcpts,
			"bytes", (json_int_t)sk->bytes, "refused", (json_int_t)sk->refused,
			"errors", (json_int_t)sk->errors,
			"elapsed_s", (double)(sk->now - sk->t0) / 1e9);
		if (sk->cfg->hash)
			json_object_set_new(o, "hash", json_pack("{s:s, s:s, s:I}",
				"alg", vr_bench_hash_alg_name(sk->cfg->hash), "sum", hex,
				"messages", (json_int_t)sk->sum.messages));
		json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(7));
		putchar('\n');
		json_decref(o);
	} else {
		printf("vmrelay-bench sink %s: %" PRIu64 " messages, %" PRIu64 " recipients, %"
		       PRIu64 " bytes, %" PRIu64 " sessions, %" PRIu64 " refused, %" PRIu64
		       " errors", sk->name, sk->messages, sk->rcpts, sk->bytes,
		       sk->sessions, sk->refused, sk->errors);
		if (sk->cfg->hash)
			printf(", %s %s", vr_bench_hash_alg_name(sk->cfg->hash), hex);
		printf("\n");
	}
	fflush(stdout);
}

/* --- set-up and loop --- */

static int sink_listen(struct sink *sk)
{
	const struct vr_bench_cfg *cfg = sk->cfg;
	struct vr_bench_addr a = cfg->listen;
	int one = 1;

	sk->lfd = socket(a.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (sk->lfd < 0)
		return -errno;
	setsockopt(sk->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(sk->lfd, (struct sockaddr *)&a.sa, a.len) < 0 || listen(sk->lfd, 4096) < 0 ||
	    getsockname(sk->lfd, (struct sockaddr *)&a.sa, &a.len) < 0)
		return -errno;
	/* The port bound (port 0 lets the kernel choose): tests read this line. */
	vr_bench_addr_name(&a, sk->name, sizeof(sk->name));
	fprintf(stderr, "vmrelay-bench: sink listening on %s\n", sk->name);
	return 0;
}

static int sink_init(struct sink *sk, const struct vr_bench_cfg *cfg)
{
	memset(sk, 0, sizeof(*sk));
	sk->cfg = cfg;
	sk->ep = sk->lfd = sk->sigfd = -1;
	sk->rng = cfg->seed;
	vr_bench_hash_sum_init(&sk->sum, cfg->hash);
	sk->p = calloc(cfg->sessions, sizeof(*sk->p));
	if (!sk->p)
		return -ENOMEM;
	for (unsigned i = cfg->sessions; i-- > 0;) {
		struct peer *p = &sk->p[i];
		p->sk = sk;
		p->id = i;
		vr_bench_conn_init(&p->conn, RX_MAX, 0);
		if (cfg->hash && !(p->hash = vr_bench_hash_new(cfg->hash)))
			return -ENOMEM;
		p->next_free = sk->free;
		sk->free = p;
	}
	sk->ep = epoll_create1(EPOLL_CLOEXEC);
	if (sk->ep < 0)
		return -errno;
	int rc = sink_listen(sk);
	if (rc < 0)
		return rc;
	sk->sigfd = vr_bench_signalfd(true);
	if (sk->sigfd < 0)
		return -errno;
	struct epoll_event lev = { .events = EPOLLIN | EPOLLET, .data.u64 = LISTENER };
	struct epoll_event sev = { .events = EPOLLIN, .data.u64 = SIGNALS };
	if (epoll_ctl(sk->ep, EPOLL_CTL_ADD, sk->lfd, &lev) < 0 ||
	    epoll_ctl(sk->ep, EPOLL_CTL_ADD, sk->sigfd, &sev) < 0)
		return -errno;
	return 0;
}

static void sink_free(struct sink *sk)
{
	for (unsigned i = 0; sk->p && i < sk->cfg->sessions; i++) {
		vr_bench_conn_free(&sk->p[i].conn);
		vr_bench_hash_free(sk->p[i].hash);
	}
	free(sk->p);
	if (sk->ep >= 0)
		close(sk->ep);
	if (sk->lfd >= 0)
		close(sk->lfd);
	if (sk->sigfd >= 0)
		close(sk->sigfd);
}

static void on_signals(struct sink *sk)
{
	struct signalfd_siginfo si;

	while (read(sk->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGUSR1)
			report(sk);
		else
			sk->stop = true;
	}
}

static void timeouts(struct sink *sk)
{
	for (unsigned i = 0; i < sk->cfg->sessions; i++) {
		struct peer *p = &sk->p[i];
		if (!p->open || sk->now < p->deadline)
			continue;
		reply(p, "421 4.4.2 Error: timeout exceeded");
		p->quit = true;
		sk->errors++;
		peer_flush(p);
		if (p->open)
			peer_close(p);
	}
}

int vr_bench_sink_run(const struct vr_bench_cfg *cfg)
{
	static struct sink sk;
	struct epoll_event evs[256];
	int rc = sink_init(&sk, cfg);

	if (rc < 0) {
		fprintf(stderr, "vmrelay-bench: sink on %s: %s\n", cfg->listen_name, strerror(-rc));
		sink_free(&sk);
		return VR_BENCH_EXIT_USAGE;
	}
	sk.now = sk.t0 = vr_bench_now();
	uint64_t stop_at = cfg->duration > 0 ? sk.t0 + (uint64_t)(cfg->duration * 1e9) : UINT64_MAX;
	uint64_t next_tick = sk.t0 + 100000000ull;

	while (!sk.stop) {
		int n = epoll_wait(sk.ep, evs, (int)VR_ARRAY_SIZE(evs), 100);
		sk.now = vr_bench_now();
		for (int i = 0; i < n && !sk.stop; i++) {
			uint64_t d = evs[i].data.u64;
			if (d == LISTENER) {
				accept_all(&sk);
				continue;
			}
			if (d == SIGNALS) {
				on_signals(&sk);
				continue;
			}
			struct peer *p = &sk.p[d >> 32];
			if (p->open && (uint32_t)d == p->gen) {
				bool was_full = sk.free == NULL;
				peer_event(p, evs[i].events);
				/* A slot freed while connections waited in the backlog. */
				if (was_full && sk.free)
					accept_all(&sk);
			}
		}
		if (sk.now >= stop_at)
			sk.stop = true;
		if (sk.now >= next_tick) {
			timeouts(&sk);
			accept_all(&sk);     /* room made by the timeouts */
			next_tick = sk.now + 100000000ull;
		}
	}
	report(&sk);
	sink_free(&sk);
	return VR_BENCH_EXIT_OK;
}
