/*
 * main.c - vmrelay-bench's command line: an SMTP load generator
 * (client.c) or, with --sink, a receiving server (sink.c).
 *
 *   vmrelay-bench --target HOST:PORT --sessions N --messages M --size BYTES
 *                 [--reuse] [--pipelining] [--chunking] [--starttls] ...
 *   vmrelay-bench --sink --listen HOST:PORT [--hash sha256] ...
 *
 * Options come from one table: name, argument, which mode takes it, the
 * function that checks and stores it, and its help line, so --help and the
 * checks can never disagree. Every bad value is refused before anything
 * starts, with the option and the reason.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "bench.h"

#define SESSIONS_MAX 100000
#define RCPTS_MAX 1000
#define TO_MAX 1000

enum { CLIENT = 1, SINK = 2, BOTH = 3 };
#define OPT_BASE 0x100

struct opts {
	struct vr_bench_cfg cfg;
	bool sink;
	unsigned given;              /* modes of the options given */
	const char *target, *listen, *size, *tls_cert, *tls_key, *output;
	char *to_copy;
	const char *to_list[TO_MAX];
	bool sessions_set;
};

static void usage(FILE *out);

static int fail(const char *opt, const char *fmt, ...) VR_PRINTF(2, 3);
static int fail(const char *opt, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vmrelay-bench: %s: ", opt);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -1;
}

static int uint_arg(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (!*s || *end || errno || s[0] == '-' || v < lo || v > hi)
		return fail(opt, "'%s' is not a whole number from %llu to %llu", s,
			    (unsigned long long)lo, (unsigned long long)hi);
	*out = v;
	return 0;
}

static int real_arg(const char *opt, const char *s, double lo, double hi, double *out)
{
	char *end;

	errno = 0;
	double v = strtod(s, &end);
	if (!*s || *end || errno || !isfinite(v) || v < lo || v > hi)
		return fail(opt, "'%s' is not a number from %g to %g", s, lo, hi);
	*out = v;
	return 0;
}

/* HOST:PORT or [IPV6]:PORT, resolved once; name gets the numeric host. */
static int addr_arg(const char *opt, const char *s, struct vr_bench_addr *a, char *name,
		    size_t namelen)
{
	char host[256];
	const char *colon = strrchr(s, ':'), *h = s;
	size_t hlen;

	if (!colon || colon == s || !colon[1])
		return fail(opt, "'%s' is not HOST:PORT", s);
	hlen = (size_t)(colon - s);
	if (s[0] == '[' && colon[-1] == ']')
		h++, hlen -= 2;
	if (hlen == 0 || hlen >= sizeof(host))
		return fail(opt, "'%s' is not HOST:PORT", s);
	memcpy(host, h, hlen);
	host[hlen] = '\0';

	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *ai;
	int rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc != 0)
		return fail(opt, "'%s': %s", s, rc == EAI_SERVICE ? "bad port" : gai_strerror(rc));
	memcpy(&a->sa, ai->ai_addr, ai->ai_addrlen);
	a->len = ai->ai_addrlen;
	freeaddrinfo(ai);
	vr_bench_addr_name(a, name, namelen);
	return 0;
}

void vr_bench_addr_name(const struct vr_bench_addr *a, char *out, size_t outlen)
{
	char host[INET6_ADDRSTRLEN] = "?";
	bool v6 = a->sa.ss_family == AF_INET6;
	const struct sockaddr_in *v4a = (const struct sockaddr_in *)&a->sa;
	const struct sockaddr_in6 *v6a = (const struct sockaddr_in6 *)&a->sa;

	inet_ntop(a->sa.ss_family, v6 ? (const void *)&v6a->sin6_addr : (const void *)&v4a->sin_addr,
		  host, sizeof(host));
	snprintf(out, outlen, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "",
		 ntohs(v6 ? v6a->sin6_port : v4a->sin_port));
}

/* An address for SMTP: no blanks, controls or angle brackets. */
static int mailbox_arg(const char *opt, const char *s)
{
	if (!*s || strlen(s) > 254)
		return fail(opt, "an address is 1 to 254 characters");
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == 0x7f)
			return fail(opt, "'%s': no blanks, control characters or <> in an address", s);
	return 0;
}

/* --- option handlers --- */

typedef int opt_fn(struct opts *o, const char *opt, const char *arg);

static int o_target(struct opts *o, const char *opt, const char *arg)
{
	o->target = arg;
	return 0;
}

static int o_listen(struct opts *o, const char *opt, const char *arg)
{
	o->listen = arg;
	return 0;
}

static int o_sink(struct opts *o, const char *opt, const char *arg)
{
	o->sink = true;
	return 0;
}

static int o_sessions(struct opts *o, const char *opt, const char *arg)
{
	uint64_t v;
	if (uint_arg(opt, arg, 1, SESSIONS_MAX, &v) < 0)
		return -1;
	o->cfg.sessions = (unsigned)v;
	o->sessions_set = true;
	return 0;
}

static int o_messages(struct opts *o, const char *opt, const char *arg)
{
	return uint_arg(opt, arg, 1, UINT64_MAX / 2, &o->cfg.messages);
}

static int o_duration(struct opts *o, const char *opt, const char *arg)
{
	return real_arg(opt, arg, 0.001, 86400 * 7, &o->cfg.duration);
}

static int o_size(struct opts *o, const char *opt, const char *arg)
{
	o->size = arg;
	return 0;
}

static int o_rcpts(struct opts *o, const char *opt, const char *arg)
{
	uint64_t v;
	if (uint_arg(opt, arg, 1, RCPTS_MAX, &v) < 0)
		return -1;
	o->cfg.rcpts = (unsigned)v;
	return 0;
}

static int o_reuse(struct opts *o, const char *opt, const char *arg)
{
	o->cfg.reuse = true;
	return 0;
}

static int o_pipelining(struct opts *o, const char *opt, const char *arg)
{
	o->cfg.pipelining = true;
	return 0;
}

static int o_chunking(struct opts *o, const char *opt, const char *arg)
{
	o->cfg.chunking = true;
	return 0;
}

static int o_starttls(struct opts *o, const char *opt, const char *arg)
{
	o->cfg.starttls = true;
	return 0;
}

static int o_source(struct opts *o, const char *opt, const char *arg)
{
	char *copy = strdup(arg), *save = NULL;
	int rc = 0;

	if (!copy)
		return fail(opt, "out of memory");
	for (char *ip = strtok_r(copy, ",", &save); ip && rc == 0; ip = strtok_r(NULL, ",", &save)) {
		struct vr_bench_addr *a = &o->cfg.sources[o->cfg.nsources];
		struct sockaddr_in *v4 = (struct sockaddr_in *)&a->sa;
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->sa;

		if (o->cfg.nsources == VR_BENCH_SOURCES_MAX) {
			rc = fail(opt, "at most %d addresses", VR_BENCH_SOURCES_MAX);
		} else if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
			v4->sin_family = AF_INET;
			a->len = sizeof(*v4);
			o->cfg.nsources++;
		} else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
			v6->sin6_family = AF_INET6;
			a->len = sizeof(*v6);
			o->cfg.nsources++;
		} else {
			rc = fail(opt, "'%s' is not an IPv4 or IPv6 address", ip);
		}
	}
	free(copy);
	return rc;
}

static int o_from(struct opts *o, const char *opt, const char *arg)
{
	o->cfg.from = arg;
	return mailbox_arg(opt, arg);
}

static int o_to(struct opts *o, const char *opt, const char *arg)
{
	char *save = NULL;

	free(o->to_copy);
	o->to_copy = strdup(arg);
	o->cfg.nto = 0;
	if (!o->to_copy)
		return fail(opt, "out of memory");
	for (char *a = strtok_r(o->to_copy, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
		if (o->cfg.nto == TO_MAX)
			return fail(opt, "at most %d addresses", TO_MAX);
		if (mailbox_arg(opt, a) < 0)
			return -1;
		o->to_list[o->cfg.nto++] = a;
	}
	if (o->cfg.nto == 0)
		return fail(opt, "no address given");
	o->cfg.to = o->to_list;
	return 0;
}

static int o_helo(struct opts *o, const char *opt, const char *arg)
{
	o->cfg.helo = arg;
	for (const char *p = arg; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return fail(opt, "'%s': no blanks or control characters", arg);
	return *arg ? 0 : fail(opt, "empty");
}

static int o_hash(struct opts *o, const char *opt, const char *arg)
{
	int alg = vr_bench_hash_alg_parse(arg);
	if (alg < 0)
		return fail(opt, "'%s': the hash is sha256 or xxh3", arg);
	o->cfg.hash = (enum vr_bench_hash_alg)alg;
	return 0;
}

static int o_json(struct opts *o, const char *opt, const char *arg)
{
	o->cfg.json = true;
	return 0;
}

static int o_timeout(struct opts *o, const char *opt, const char *arg)
{
	return real_arg(opt, arg, 0.01, 86400, &o->cfg.timeout);
}

static int o_seed(struct opts *o, const char *opt, const char *arg)
{
	return uint_arg(opt, arg, 0, UINT64_MAX, &o->cfg.seed);
}

static int o_fail_rate(struct opts *o, const char *opt, const char *arg)
{
	return real_arg(opt, arg, 0, 1, &o->cfg.fail_rate);
}

static int o_reply_code(struct opts *o, const char *opt, const char *arg)
{
	uint64_t v;
	if (uint_arg(opt, arg, 400, 599, &v) < 0)
		return -1;
	o->cfg.reply_code = (unsigned)v;
	return 0;
}

static int o_max_size(struct opts *o, const char *opt, const char *arg)
{
	return uint_arg(opt, arg, 1, UINT64_MAX / 2, &o->cfg.max_size);
}

static int o_tls_cert(struct opts *o, const char *opt, const char *arg)
{
	o->tls_cert = arg;
	return 0;
}

static int o_tls_key(struct opts *o, const char *opt, const char *arg)
{
	o->tls_key = arg;
	return 0;
}

static int o_dpdk(struct opts *o, const char *opt, const char *arg)
{
	o->cfg.dpdk_eal = arg;
	return *arg ? 0 : fail(opt, "give the EAL arguments, e.g. '--no-huge -m 256 "
			       "--vdev=net_memif0,role=client,socket=/run/memif.sock'");
}

static int o_dpdk_ip(struct opts *o, const char *opt, const char *arg)
{
	o->cfg.dpdk_ip = arg;
	return 0;
}

static int o_output(struct opts *o, const char *opt, const char *arg)
{
	o->output = arg;
	return 0;
}

static int o_help(struct opts *o, const char *opt, const char *arg)
{
	usage(stdout);
	exit(VR_BENCH_EXIT_OK);
}

static const struct {
	const char *name;
	const char *arg;             /* NULL: a flag */
	int mode;
	opt_fn *fn;
	const char *help;
} options[] = {
	{ "target", "HOST:PORT", BOTH, o_target,
	  "the SMTP server to drive (--sink: where to listen)" },
	{ "sessions", "N", BOTH, o_sessions,
	  "concurrent sessions (1); --sink: connections served at once (1024)" },
	{ "messages", "M", BOTH, o_messages,
	  "messages in all (100 unless --duration); --sink: exit after M" },
	{ "duration", "SECONDS", BOTH, o_duration,
	  "stop starting messages after this long (and --sink: exit)" },
	{ "size", "SPEC", CLIENT, o_size,
	  "message size in octets, headers included (6000): 10k, 1m (k=1024), a\n"
	  "range 1k..1m[:uniform|:lognormal], or a list 4k:70,64k:25,1m:5" },
	{ "rcpts", "K", CLIENT, o_rcpts, "recipients per message (1)" },
	{ "reuse", NULL, CLIENT, o_reuse,
	  "send every message of a session over one connection (default: a\n"
	  "new connection per message)" },
	{ "pipelining", NULL, CLIENT, o_pipelining,
	  "MAIL, RCPT and DATA/BDAT in one write (RFC 2920)" },
	{ "chunking", NULL, CLIENT, o_chunking, "BDAT instead of DATA (RFC 3030)" },
	{ "starttls", NULL, CLIENT, o_starttls, "STARTTLS before the first message" },
	{ "source", "IP[,IP...]", CLIENT, o_source,
	  "local addresses to connect from, in turn" },
	{ "from", "ADDR", CLIENT, o_from, "envelope and header sender (bench@bench.example)" },
	{ "to", "ADDR[,ADDR...]", CLIENT, o_to,
	  "recipients (sink@sink.example), used in turn; with fewer than\n"
	  "--rcpts, each gets a +N tag before its @" },
	{ "helo", "NAME", CLIENT, o_helo, "the EHLO name (bench.example)" },
	{ "dpdk", "'EAL ARGS'", CLIENT, o_dpdk,
	  "drive the target over our userspace TCP/IP stack on the EAL's first\n"
	  "port (net_memif to another DPDK process, or a NIC), polled on one\n"
	  "lcore, no kernel socket; the EAL's arguments as vmrelay's [dpdk] eal\n"
	  "takes them, e.g. '-l 1 --no-huge -m 256 --no-pci\n"
	  "  --vdev=net_memif0,role=client,socket=/tmp/m.sock'\n"
	  "(IPv4 targets; no --source; STARTTLS works over it)" },
	{ "dpdk-ip", "A.B.C.D/N", CLIENT, o_dpdk_ip,
	  "--dpdk: the stack's address on the port's network (required)" },
	{ "hash", "sha256|xxh3", BOTH, o_hash,
	  "hash every accepted message; the sum of the digests is reported" },
	{ "json", NULL, BOTH, o_json, "report as one JSON object" },
	{ "output", "FILE", BOTH, o_output, "write the report to FILE instead of stdout" },
	{ "timeout", "SECONDS", BOTH, o_timeout, "how long a peer may stay silent (60)" },
	{ "seed", "N", BOTH, o_seed, "seed of the sizes and injected failures drawn (1)" },
	{ "sink", NULL, SINK, o_sink, "be the receiving server" },
	{ "listen", "HOST:PORT", SINK, o_listen,
	  "--sink: where to listen (port 0: any; the port is printed)" },
	{ "fail-rate", "P", SINK, o_fail_rate, "--sink: refuse this share of messages (0)" },
	{ "reply-code", "CODE", SINK, o_reply_code, "--sink: with this code (451)" },
	{ "max-size", "OCTETS", SINK, o_max_size, "--sink: the SIZE limit (1073741824)" },
	{ "tls-cert", "FILE", SINK, o_tls_cert, "--sink: offer STARTTLS with this certificate" },
	{ "tls-key", "FILE", SINK, o_tls_key, "--sink: and this key" },
	{ "help", NULL, BOTH, o_help, "this text" },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: vmrelay-bench --target HOST:PORT [options]   (load generator)\n"
		"       vmrelay-bench --sink --listen HOST:PORT [options]  (receiving server)\n\n");
	for (size_t i = 0; i < VR_ARRAY_SIZE(options); i++) {
		char left[48];
		const char *h = options[i].help, *nl;
		snprintf(left, sizeof(left), "--%s%s%s", options[i].name, options[i].arg ? " " : "",
			 options[i].arg ? options[i].arg : "");
		fprintf(out, "  %-26s", left);
		while ((nl = strchr(h, '\n'))) {
			fprintf(out, "%.*s\n  %-26s", (int)(nl - h), h, "");
			h = nl + 1;
		}
		fprintf(out, "%s\n", h);
	}
	fprintf(out, "\nexit status: 0 all went through, 1 a message or recipient failed (the\n"
		"report says which codes), 2 bad usage or set-up, 3 interrupted\n");
}

/* --- putting it together --- */

static int parse(struct opts *o, int argc, char **argv)
{
	struct option lo[VR_ARRAY_SIZE(options) + 1];
	int c;

	/* getopt_long answers an option with its val: the table index plus
	 * OPT_BASE, so that 0 (what optopt holds for an unknown one) is none. */
	for (size_t i = 0; i < VR_ARRAY_SIZE(options); i++)
		lo[i] = (struct option){ options[i].name, options[i].arg ? required_argument :
					 no_argument, NULL, (int)i + OPT_BASE };
	lo[VR_ARRAY_SIZE(options)] = (struct option){ 0 };
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c < OPT_BASE) {
			fprintf(stderr, "vmrelay-bench: %s: %s (see --help)\n", argv[optind - 1],
				optopt >= OPT_BASE ? "needs a value" : "unknown option");
			return -1;
		}
		c -= OPT_BASE;
		char name[64];
		snprintf(name, sizeof(name), "--%s", options[c].name);
		if (options[c].fn(o, name, optarg) < 0)
			return -1;
		if (options[c].mode != BOTH)
			o->given |= (unsigned)options[c].mode;
	}
	if (optind < argc)
		return fail(argv[optind], "unexpected argument (see --help)");
	return 0;
}

/* Mode-specific checks and defaults, once every option is known. */
static int settle(struct opts *o)
{
	struct vr_bench_cfg *cfg = &o->cfg;
	char err[256];

	if (o->sink && (o->given & CLIENT))
		return fail("--sink", "takes none of the load generator's own options");
	if (o->output && !freopen(o->output, "w", stdout))
		return fail("--output", "%s: %s", o->output, strerror(errno));
	if (!o->sink && (o->given & SINK))
		return fail("--listen, --fail-rate, --reply-code, --max-size, --tls-*",
			    "options of --sink only");
	if (o->sink) {
		const char *at = o->listen ? o->listen : o->target;
		if (!at)
			return fail("--sink", "give --listen HOST:PORT");
		if (!o->sessions_set)
			cfg->sessions = 1024;
		if (!!o->tls_cert != !!o->tls_key)
			return fail("--tls-cert/--tls-key", "give both or neither");
		if (o->tls_cert) {
			cfg->tls = vr_tls_server_ctx_new(o->tls_cert, o->tls_key, err, sizeof(err));
			if (!cfg->tls)
				return fail("--tls-cert", "%s", err);
		}
		if (cfg->fail_rate > 0 && !cfg->reply_code)
			cfg->reply_code = 451;
		return addr_arg(o->listen ? "--listen" : "--target", at, &cfg->listen,
				cfg->listen_name, sizeof(cfg->listen_name));
	}
	if (!o->target)
		return fail("--target", "give the server to drive as HOST:PORT (see --help)");
	if (addr_arg("--target", o->target, &cfg->target, cfg->target_name,
		     sizeof(cfg->target_name)) < 0)
		return -1;
	if (!!cfg->dpdk_eal != !!cfg->dpdk_ip)
		return fail("--dpdk/--dpdk-ip", "give both or neither");
	if (cfg->dpdk_eal && cfg->target.sa.ss_family != AF_INET)
		return fail("--target", "the DPDK stack speaks IPv4 only");
	if (cfg->dpdk_eal && cfg->nsources)
		return fail("--source", "not with --dpdk: the stack has one address, --dpdk-ip");
	for (unsigned i = 0; i < cfg->nsources; i++)
		if (cfg->sources[i].sa.ss_family != cfg->target.sa.ss_family)
			return fail("--source", "the addresses must be of the target's family (%s)",
				    cfg->target.sa.ss_family == AF_INET ? "IPv4" : "IPv6");
	snprintf(cfg->size_spec, sizeof(cfg->size_spec), "%s", o->size ? o->size : "6000");
	if (vr_bench_sizes_parse(&cfg->sizes, cfg->size_spec, err, sizeof(err)) < 0)
		return fail("--size", "%s", err);
	if (!cfg->messages && !(cfg->duration > 0))
		cfg->messages = 100;
	if (cfg->starttls) {
		cfg->tls = vr_tls_client_ctx_new(err, sizeof(err));
		if (!cfg->tls)
			return fail("--starttls", "%s", err);
	}
	return 0;
}

/* Every session is a descriptor: raise the soft limit as far as needed. */
static int raise_nofile(unsigned sessions)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)sessions + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
		return 0;
	if (rl.rlim_max < want)
		return fail("--sessions", "%u sessions need %llu descriptors; the hard limit is "
			    "%llu (ulimit -Hn)", sessions, (unsigned long long)want,
			    (unsigned long long)rl.rlim_max);
	rl.rlim_cur = want;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return fail("--sessions", "cannot raise the descriptor limit: %s", strerror(errno));
	return 0;
}

int vr_bench_signalfd(bool usr1)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (usr1)
		sigaddset(&set, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -1;
	return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int main(int argc, char **argv)
{
	static struct opts o = {
		.cfg = {
			.sessions = 1, .rcpts = 1, .timeout = 60, .seed = 1,
			.from = "bench@bench.example", .helo = "bench.example",
			.max_size = 1ull << 30,
		},
	};
	static const char *default_to[] = { "sink@sink.example" };
	int status;

	o.cfg.to = default_to;
	o.cfg.nto = 1;
	if (parse(&o, argc, argv) < 0 || settle(&o) < 0 || raise_nofile(o.cfg.sessions) < 0) {
		free(o.to_copy);
		return VR_BENCH_EXIT_USAGE;
	}
	o.cfg.progress = !o.cfg.json && !o.sink && isatty(STDERR_FILENO);
	status = o.sink ? vr_bench_sink_run(&o.cfg) : vr_bench_client_run(&o.cfg);
	vr_tls_ctx_free(o.cfg.tls);
	free(o.to_copy);
	return status;
}
