/*
 * bench_smtpc.c - the outbound SMTP client's cost per message on one core:
 * a vr_smtpc handing messages over one reused, pipelined connection to a
 * server that lives in the same loop and does nearly nothing (it answers
 * the MAIL/RCPT/DATA group once it sees DATA, and the end of data once it
 * sees the dot), so the figure is the client's protocol work, body filter
 * (dot-stuffing, line ends) and, with --tls, both ends' AES-GCM.
 *
 *   bench_smtpc [--seconds S] [--size BYTES] [--rcpts N] [--tls CERT KEY]
 *
 * Rates are per second of CPU time used (user + system), so other load on
 * the machine does not skew them; the wall-clock rate is printed too.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "vmrelay/clock.h"
#include "vmrelay/smtpc.h"

static struct {
	unsigned seconds, rcpts;
	size_t size;
	const char *cert, *key;
} opt = { 3, 1, 6144, NULL, NULL };

struct bench {
	struct vr_smtpc *c;
	struct vr_smtpc_msg msg;
	struct vr_smtpc_rcpt rcpts[64];
	char *body;
	size_t off;
	uint64_t done, bytes;
	/* The server: where it is in the stream, the last bytes it saw. */
	bool in_data;
	uint32_t tail;
	struct vr_tls *srv;
	struct vr_buf srv_out;
};

static ssize_t body_read(void *cookie, uint8_t *buf, size_t cap)
{
	struct bench *b = cookie;
	size_t n = VR_MIN(cap, opt.size - b->off);

	memcpy(buf, b->body + b->off, n);
	b->off += n;
	return (ssize_t)n;
}

static void hand(struct bench *b)
{
	b->off = 0;
	if (vr_smtpc_send(b->c, &b->msg, 0) < 0)
		abort();
}

static void on_ready(void *owner)
{
	hand(owner);
}

static void on_msg_done(void *owner, struct vr_smtpc_msg *m, enum vr_smtpc_status st,
			const struct vr_smtpc_reply *r)
{
	struct bench *b = owner;

	if (st != VR_SMTPC_SENT)
		abort();
	b->done++;
}

static void on_closed(void *owner, const struct vr_smtpc_reply *r)
{
	fprintf(stderr, "bench_smtpc: connection closed: %u %s\n", r->code, r->text);
	exit(1);
}

static const struct vr_smtpc_ops ops = { on_ready, on_msg_done, on_closed };

static void to_client(struct bench *b, const char *s)
{
	if (b->srv) {
		vr_tls_write(b->srv, s, strlen(s));
		vr_buf_reset(&b->srv_out);
		vr_tls_drain(b->srv, &b->srv_out);
		vr_smtpc_rx(b->c, vr_buf_head(&b->srv_out), b->srv_out.len, 0);
		return;
	}
	vr_smtpc_rx(b->c, s, strlen(s), 0);
}

/* The last four bytes of the stream up to and with p[k]. */
static uint32_t tail_at(uint32_t tail, const uint8_t *p, size_t k)
{
	for (size_t j = k >= 3 ? k - 3 : 0; j <= k; j++)
		tail = tail << 8 | p[j];
	return tail;
}

/* The server reads the client's plaintext: a reply group after "DATA\r\n"
 * (the client pipelines MAIL, RCPT and DATA), one after "\r\n.\r\n". It
 * looks only at line ends, so its own cost stays small next to the client's. */
static void server_read(struct bench *b, const uint8_t *p, size_t n)
{
	char group[512];

	for (const uint8_t *q = p, *e = p + n; q < e && (q = memchr(q, '\n', (size_t)(e - q)));
	     q++) {
		uint32_t t = tail_at(b->tail, p, (size_t)(q - p));
		if (!b->in_data && t == ('T' << 24 | 'A' << 16 | '\r' << 8 | '\n')) {
			size_t o = (size_t)snprintf(group, sizeof(group), "250 ok\r\n");
			for (unsigned r = 0; r < opt.rcpts; r++)
				o += (size_t)snprintf(group + o, sizeof(group) - o, "250 ok\r\n");
			snprintf(group + o, sizeof(group) - o, "354 go\r\n");
			b->in_data = true;
			to_client(b, group);
		} else if (b->in_data && t == ('\n' << 24 | '.' << 16 | '\r' << 8 | '\n')) {
			b->in_data = false;
			to_client(b, "250 2.0.0 ok\r\n");
		}
	}
	if (n)
		b->tail = tail_at(b->tail, p, n - 1);
}

/* Moves what the client wrote to the server, one round: the server's
 * answers make the client write more, for the next round. */
static void pump(struct bench *b)
{
	const uint8_t *p;
	size_t n;
	uint8_t plain[65536];

	if ((n = vr_smtpc_tx_peek(b->c, &p)) > 0) {
		b->bytes += n;
		if (b->srv) {
			vr_tls_feed(b->srv, p, n);
			vr_smtpc_tx_consume(b->c, n, 0);
			ssize_t r;
			while ((r = vr_tls_read(b->srv, plain, sizeof(plain))) > 0)
				server_read(b, plain, (size_t)r);
			vr_buf_reset(&b->srv_out);
			vr_tls_drain(b->srv, &b->srv_out);
			if (b->srv_out.len)
				vr_smtpc_rx(b->c, vr_buf_head(&b->srv_out), b->srv_out.len, 0);
			return;
		}
		/* Copy first: consuming lets the client write over it. */
		memcpy(plain, p, VR_MIN(n, sizeof(plain)));
		n = VR_MIN(n, sizeof(plain));
		vr_smtpc_tx_consume(b->c, n, 0);
		server_read(b, plain, n);
	}
}

/* Drops what the client wrote during the opening (EHLO, STARTTLS). */
static void discard(struct bench *b)
{
	const uint8_t *p;

	vr_smtpc_tx_consume(b->c, vr_smtpc_tx_peek(b->c, &p), 0);
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* A plain text mail of opt.size bytes, some lines starting with a dot. */
static char *make_body(void)
{
	char *s = malloc(opt.size);
	static const char head[] = "From: a@example.com\r\nTo: b@example.net\r\n"
				   "Subject: bench\r\n\r\n";

	memset(s, 'x', opt.size);
	memcpy(s, head, VR_MIN(sizeof(head) - 1, opt.size));
	for (size_t i = sizeof(head) - 1 + 70; i + 2 < opt.size; i += 72) {
		s[i] = '\r';
		s[i + 1] = '\n';
		if (i % 7 == 0)
			s[i + 2] = '.';
	}
	return s;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "seconds", required_argument, NULL, 's' }, { "size", required_argument, NULL, 'z' },
		{ "rcpts", required_argument, NULL, 'r' }, { "tls", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	static struct bench b;
	struct vr_tls_ctx *cctx = NULL, *sctx = NULL;
	char err[256];
	int o;

	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 's': opt.seconds = (unsigned)atoi(optarg); break;
		case 'z': opt.size = (size_t)atol(optarg); break;
		case 'r': opt.rcpts = (unsigned)atoi(optarg); break;
		case 't':
			if (optind >= argc)
				goto usage;
			opt.cert = optarg;
			opt.key = argv[optind++];
			break;
		default:
			goto usage;
		}
	}
	if (opt.rcpts < 1 || opt.rcpts > 64 || opt.size < 64)
		goto usage;
	if (opt.cert) {
		cctx = vr_tls_client_ctx_new(err, sizeof(err));
		sctx = cctx ? vr_tls_server_ctx_new(opt.cert, opt.key, err, sizeof(err)) : NULL;
		if (!sctx) {
			fprintf(stderr, "bench_smtpc: %s\n", err);
			return 1;
		}
		b.srv = vr_tls_new(sctx, true, NULL);
		vr_buf_init(&b.srv_out, 1 << 20);
	}
	b.body = make_body();
	for (unsigned i = 0; i < opt.rcpts; i++)
		b.rcpts[i].addr = "rcpt@example.net";
	b.msg = (struct vr_smtpc_msg){ "sender@example.com", b.rcpts, opt.rcpts, opt.size, 0,
				       body_read, &b };
	struct sockaddr_storage ss = { .ss_family = AF_INET };
	const struct vr_smtpc_params p = {
		.helo_name = "bench.example", .peer = (struct sockaddr *)&ss, .tls = cctx,
		.tls_mode = cctx ? VR_SMTPC_TLS_MAY : VR_SMTPC_TLS_NONE, .ops = &ops, .owner = &b,
	};
	b.c = vr_smtpc_new(&p, 0);
	if (!b.c)
		return 1;
	/* The opening in plaintext; then the server's end goes TLS if asked. */
	vr_smtpc_rx(b.c, "220 bench\r\n", 11, 0);
	discard(&b);
	if (b.srv) {
		vr_smtpc_rx(b.c, "250-bench\r\n250-PIPELINING\r\n250 STARTTLS\r\n", 41, 0);
		discard(&b);
		vr_smtpc_rx(b.c, "220 go\r\n", 8, 0);
		for (int i = 0; i < 8; i++)
			pump(&b);        /* the handshake; the client's EHLO arrives encrypted */
		to_client(&b, "250-bench\r\n250 PIPELINING\r\n");
	} else {
		vr_smtpc_rx(b.c, "250-bench\r\n250 PIPELINING\r\n", 27, 0);
	}
	double c0 = cpu_seconds();
	uint64_t w0 = vr_clock_ms(), bytes0 = b.bytes;
	while (vr_clock_ms() - w0 < opt.seconds * 1000ull)
		for (int i = 0; i < 100; i++)
			pump(&b);
	double cpu = cpu_seconds() - c0, wall = (double)(vr_clock_ms() - w0) / 1000;
	printf("bench_smtpc: %zu-byte messages, %u rcpt(s), %s: %.0f msgs/s per CPU second "
	       "(%.0f wall), %.1f MB/s on the wire per CPU second, %.2f us per message\n",
	       opt.size, opt.rcpts, b.srv ? vr_smtpc_tls_version(b.c) : "plaintext",
	       (double)b.done / cpu, (double)b.done / wall, (double)(b.bytes - bytes0) / cpu / 1e6,
	       cpu * 1e6 / (double)b.done);
	vr_smtpc_free(b.c);
	vr_tls_free(b.srv);
	vr_tls_ctx_free(cctx);
	vr_tls_ctx_free(sctx);
	free(b.body);
	return 0;
usage:
	fprintf(stderr, "usage: bench_smtpc [--seconds S] [--size BYTES] [--rcpts N] "
		"[--tls CERT KEY]\n");
	return 2;
}
