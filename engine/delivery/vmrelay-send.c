/*
 * vmrelay-send - hands one message file to an SMTP server with the relay's
 * own outbound client (vr_smtpc_conn on an epoll loop, as a delivery thread
 * drives it). A test tool, not installed: tests/e2e/test_smtpc.py runs it
 * against smtp-sink, aiosmtpd and scripted servers.
 *
 *   vmrelay-send --server IP:PORT --to ADDR [--to ADDR ...] [options] FILE
 *
 * The file is sent as stored (CRLF lines), pulled in chunks straight from
 * the file. With PIPELINING a message goes out behind the one before's end
 * of data, so two copies take turns (slot). One JSON object per line on stdout: each message's outcome
 * ("msg") and each connection's end ("closed", with TLS and capabilities).
 * Exit status: 0 every message sent, 1 otherwise, 2 usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "vmrelay/clock.h"
#include "vmrelay/smtpc.h"

#define MAX_RCPTS 64
#define MAX_TLSA 8

/* One message in flight: at most two are, the older waiting for the
 * reply to its end of data. */
struct slot {
	struct vr_smtpc_msg msg;
	struct vr_smtpc_rcpt rcpts[MAX_RCPTS];
	int fd;                       /* the message file */
	off_t off;
};

struct run {
	struct vr_smtpc_conn *k;
	struct slot slot[2];          /* message n goes in slot[n % 2] */
	unsigned count, started, sent, failed;
	bool conn_failed;
};

static const char *const status_name[] = {
	[VR_SMTPC_SENT] = "sent", [VR_SMTPC_DEFER] = "deferred", [VR_SMTPC_BOUNCE] = "bounced",
};

static const struct {
	unsigned cap;
	const char *name;
} cap_names[] = {
	{ VR_SMTPC_CAP_ESMTP, "ESMTP" }, { VR_SMTPC_CAP_PIPELINING, "PIPELINING" },
	{ VR_SMTPC_CAP_SIZE, "SIZE" }, { VR_SMTPC_CAP_8BITMIME, "8BITMIME" },
	{ VR_SMTPC_CAP_SMTPUTF8, "SMTPUTF8" }, { VR_SMTPC_CAP_STARTTLS, "STARTTLS" },
	{ VR_SMTPC_CAP_ENHANCED, "ENHANCEDSTATUSCODES" }, { VR_SMTPC_CAP_CHUNKING, "CHUNKING" },
};

static json_t *reply_json(const struct vr_smtpc_reply *r)
{
	return json_pack("{s:i, s:s, s:s, s:b}", "code", (int)r->code, "enh", r->enh, "text",
			 r->text, "local", r->local);
}

static void print_json(json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);

	puts(s);
	fflush(stdout);
	free(s);
	json_decref(o);
}

static ssize_t body_read(void *cookie, uint8_t *buf, size_t cap)
{
	struct slot *r = cookie;
	ssize_t n = pread(r->fd, buf, cap, r->off);

	if (n > 0)
		r->off += n;
	return n < 0 ? -1 : n;
}

/* The next message, or QUIT when all went. */
static void next_msg(struct run *r)
{
	struct vr_smtpc *c = vr_smtpc_conn_smtpc(r->k);

	if (r->started == r->count) {
		vr_smtpc_quit(c, vr_clock_ms());
		return;
	}
	struct slot *s = &r->slot[r->started++ % 2];
	s->off = 0;
	if (vr_smtpc_send(c, &s->msg, vr_clock_ms()) < 0)
		abort();
}

static void on_ready(void *owner)
{
	next_msg(owner);
}

static void on_msg_done(void *owner, struct vr_smtpc_msg *msg, enum vr_smtpc_status st,
			const struct vr_smtpc_reply *reply)
{
	struct run *r = owner;
	json_t *rcpts = json_array();

	for (size_t i = 0; i < msg->n_rcpts; i++) {
		json_t *x = reply_json(&msg->rcpts[i].reply);
		json_object_set_new(x, "addr", json_string(msg->rcpts[i].addr));
		json_array_append_new(rcpts, x);
	}
	if (st == VR_SMTPC_SENT)
		r->sent++;
	else
		r->failed++;
	print_json(json_pack("{s:s, s:i, s:s, s:o, s:o}", "event", "msg", "n", (int)(r->sent +
			     r->failed), "status", status_name[st], "reply", reply_json(reply),
			     "rcpts", rcpts));
}

static void on_closed(void *owner, const struct vr_smtpc_reply *reply)
{
	struct run *r = owner;
	struct vr_smtpc *c = vr_smtpc_conn_smtpc(r->k);
	const char *ver = vr_smtpc_tls_version(c), *cipher = vr_smtpc_tls_cipher(c);
	json_t *caps = json_array();

	for (size_t i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]); i++)
		if (vr_smtpc_caps(c) & cap_names[i].cap)
			json_array_append_new(caps, json_string(cap_names[i].name));
	if (!vr_smtpc_reply_ok(reply))
		r->conn_failed = true;
	print_json(json_pack("{s:s, s:s, s:o, s:o, s:b, s:o, s:i, s:o}", "event", "closed",
			     "peer", vr_smtpc_peer_text(c), "tls", ver ? json_string(ver) : json_null(),
			     "cipher", cipher ? json_string(cipher) : json_null(), "verified",
			     vr_smtpc_tls_verified(c), "caps", caps, "msgs", (int)vr_smtpc_msgs_sent(c),
			     "reply", reply_json(reply)));
}

static const struct vr_smtpc_ops ops = { on_ready, on_msg_done, on_closed };

static int parse_addr(const char *s, struct sockaddr_storage *ss)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	if (!colon || colon == s || (size_t)(colon - s) >= sizeof(host))
		return -1;
	int port = atoi(colon + 1);
	if (port <= 0 || port > 65535)
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		return 0;
	}
	size_t n = strlen(host);
	if (host[0] == '[' && host[n - 1] == ']') {
		host[n - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) == 1) {
			in6->sin6_family = AF_INET6;
			in6->sin6_port = htons((uint16_t)port);
			return 0;
		}
	}
	return -1;
}

static int hex_decode(const char *s, uint8_t *out, size_t cap)
{
	size_t n = strlen(s);

	if (n % 2 || n / 2 > cap)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return (int)(n / 2);
}

/* "3 1 1 HEX" */
static int parse_tlsa(const char *s, struct vr_smtpc_tlsa *t, uint8_t *data, size_t cap)
{
	unsigned u, sel, mt;
	char hex[1024];

	if (sscanf(s, "%u %u %u %1023s", &u, &sel, &mt, hex) != 4 || u > 255 || sel > 255 ||
	    mt > 255)
		return -1;
	int n = hex_decode(hex, data, cap);
	if (n < 0)
		return -1;
	*t = (struct vr_smtpc_tlsa){ (uint8_t)u, (uint8_t)sel, (uint8_t)mt, data, (size_t)n };
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: vmrelay-send --server IP:PORT --to ADDR [--to ADDR ...] [--from ADDR]\n"
		"         [--helo NAME] [--peer-name NAME] [--tls none|may|dane] [--tlsa 'U S M HEX']\n"
		"         [--8bit] [--smtputf8] [--size N] [--count N] [--max-msgs N]\n"
		"         [--timeout-ms N] FILE\n");
	exit(2);
}

/* One connection, until it closes. 0, or -1 if the loop itself failed. */
static int run_conn(struct run *r, struct vr_smtpc_params *p)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);

	r->k = vr_smtpc_conn_new(p, NULL, vr_clock_ms());
	if (ep < 0 || !r->k) {
		perror("vmrelay-send");
		return -1;
	}
	/* The first message goes with the connection, as the delivery thread
	 * hands it over: a failure to connect or greet is then its outcome. */
	next_msg(r);
	int fd = vr_smtpc_conn_fd(r->k);
	struct epoll_event ev = { .events = vr_smtpc_conn_events(r->k) };
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	while (!vr_smtpc_conn_done(r->k)) {
		uint64_t now = vr_clock_ms(), dl = vr_smtpc_conn_deadline(r->k);
		int wait = dl == UINT64_MAX ? -1 : dl <= now ? 0 : (int)VR_MIN(dl - now, 60000u);
		int n = epoll_wait(ep, &ev, 1, wait);
		if (n < 0 && errno != EINTR) {
			perror("epoll_wait");
			return -1;
		}
		vr_smtpc_conn_io(r->k, n > 0 ? ev.events : 0, vr_clock_ms());
		ev.events = vr_smtpc_conn_events(r->k);
		epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
	}
	vr_smtpc_conn_free(r->k);
	r->k = NULL;
	close(ep);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "server", required_argument, NULL, 's' }, { "to", required_argument, NULL, 't' },
		{ "from", required_argument, NULL, 'f' }, { "helo", required_argument, NULL, 'H' },
		{ "peer-name", required_argument, NULL, 'p' }, { "tls", required_argument, NULL, 'T' },
		{ "tlsa", required_argument, NULL, 'a' }, { "8bit", no_argument, NULL, '8' },
		{ "smtputf8", no_argument, NULL, 'u' }, { "size", required_argument, NULL, 'S' },
		{ "count", required_argument, NULL, 'c' }, { "max-msgs", required_argument, NULL, 'm' },
		{ "timeout-ms", required_argument, NULL, 'o' }, { NULL, 0, NULL, 0 },
	};
	static struct run r;
	static uint8_t tlsa_data[MAX_TLSA][512];
	struct vr_smtpc_tlsa tlsa[MAX_TLSA];
	struct vr_smtpc_timeouts to = { 0 };
	struct sockaddr_storage server;
	struct vr_smtpc_params p = { .helo_name = "vmrelay-send.test", .ops = &ops, .owner = &r };
	const char *server_arg = NULL, *tls = "none";
	char err[256];
	int o;

	struct slot *m0 = &r.slot[0];

	m0->msg.from = "";
	m0->msg.rcpts = m0->rcpts;
	m0->msg.body = body_read;
	m0->msg.cookie = m0;
	r.count = 1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 's': server_arg = optarg; break;
		case 't':
			if (m0->msg.n_rcpts == MAX_RCPTS)
				usage();
			m0->rcpts[m0->msg.n_rcpts++].addr = optarg;
			break;
		case 'f': m0->msg.from = optarg; break;
		case 'H': p.helo_name = optarg; break;
		case 'p': p.peer_name = optarg; break;
		case 'T': tls = optarg; break;
		case 'a':
			if (p.n_tlsa == MAX_TLSA || parse_tlsa(optarg, &tlsa[p.n_tlsa],
							       tlsa_data[p.n_tlsa], 512) < 0)
				usage();
			p.n_tlsa++;
			break;
		case '8': m0->msg.flags |= VR_SMTPC_8BIT; break;
		case 'u': m0->msg.flags |= VR_SMTPC_SMTPUTF8; break;
		case 'S': m0->msg.size = strtoull(optarg, NULL, 10); break;
		case 'c': r.count = (unsigned)atoi(optarg); break;
		case 'm': p.max_msgs = (unsigned)atoi(optarg); break;
		case 'o': {
			/* One figure for every step: tests want them short. */
			uint32_t ms = (uint32_t)atoi(optarg);
			to = (struct vr_smtpc_timeouts){ ms, ms, ms, ms, ms, ms, ms, ms, ms };
			p.timeouts = &to;
			break;
		}
		default: usage();
		}
	}
	if (!server_arg || m0->msg.n_rcpts == 0 || optind != argc - 1 || r.count == 0 ||
	    parse_addr(server_arg, &server) < 0)
		usage();
	p.peer = (struct sockaddr *)&server;
	p.tlsa = tlsa;
	if (!strcmp(tls, "may"))
		p.tls_mode = VR_SMTPC_TLS_MAY;
	else if (!strcmp(tls, "dane"))
		p.tls_mode = VR_SMTPC_TLS_DANE;
	else if (strcmp(tls, "none"))
		usage();
	if (p.tls_mode != VR_SMTPC_TLS_NONE && !(p.tls = vr_tls_client_ctx_new(err, sizeof(err)))) {
		fprintf(stderr, "vmrelay-send: %s\n", err);
		return 1;
	}
	m0->fd = open(argv[optind], O_RDONLY | O_CLOEXEC);
	if (m0->fd < 0) {
		fprintf(stderr, "vmrelay-send: %s: %s\n", argv[optind], strerror(errno));
		return 1;
	}
	r.slot[1] = *m0;
	r.slot[1].msg.rcpts = r.slot[1].rcpts;
	r.slot[1].msg.cookie = &r.slot[1];
	/* max-msgs may end a connection early: open another while messages
	 * remain and the last one ended well. */
	while (r.started < r.count && !r.conn_failed)
		if (run_conn(&r, &p) < 0)
			return 1;
	vr_tls_ctx_free(p.tls);
	close(m0->fd);
	return r.sent == r.count ? 0 : 1;
}
