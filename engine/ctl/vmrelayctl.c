/*
 * vmrelayctl.c - the operator's client of the control socket:
 *
 *   vmrelayctl [-s SOCKET] [--human] CMD [ARG...]
 *
 * Sends {"cmd": CMD, "args": [ARG...]} as one line and prints the reply:
 * the JSON line as the relay sent it, or with --human a table for stats,
 * quota show, vps show, account list and queue list, the text itself for
 * metrics, and "key: value" lines for the rest. Which commands there are is
 * the relay's business (an unknown one gets its error reply listing them),
 * so a new command needs no new client.
 *
 * Exit status: 0 for an ok reply, 1 for an error reply (its error also on
 * stderr with --human), 2 for a usage error or when the relay cannot be
 * reached or does not answer.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/vmrelay/ctl.sock"
#define REPLY_MAX (16u << 20)
/* reload parses the whole accounts file; drain answers at once */
#define TIMEOUT_MS 60000
#define EXIT_USAGE 2

static void usage(FILE *out)
{
	fprintf(out, "usage: vmrelayctl [-s SOCKET] [--human] CMD [ARG...]\n"
		     "  -s, --socket PATH  control socket (default " DEFAULT_SOCKET ")\n"
		     "  -H, --human        a readable table instead of the JSON reply\n"
		     "commands: stats, metrics, quota show IP|ID, quota set ID N, quota reset ID,\n"
		     "          account list|show ID|add JSON-LINE|remove ID, vps show ID|IP,\n"
		     "          queue list [--vps ID] [--domain D] [--limit N] (100 by default),\n"
		     "          queue show|hold|release|delete QID, queue flush,\n"
		     "          dns-records DOMAIN, dns-check DOMAIN, reload, drain\n");
}

static void die(const char *fmt, const char *a, const char *b)
{
	fputs("vmrelayctl: ", stderr);
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	exit(EXIT_USAGE);
}

static int connect_to(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path))
		die("%s: socket path too long%s", path, "");
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		die("cannot reach the relay at %s: %s", path, strerror(errno));
	return fd;
}

static void send_all(int fd, const char *p, size_t n, const char *path)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			die("%s: sending the request: %s", path, strerror(errno));
		p += w;
		n -= (size_t)w;
	}
}

/* One reply line, without its newline; malloc'd. */
static char *read_line(int fd, const char *path)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int rc = poll(&p, 1, TIMEOUT_MS);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc == 0)
			die("%s: no reply within %s seconds", path, "60");
		if (len + 1 == cap) {
			if (cap >= REPLY_MAX)
				die("%s: reply longer than %s", path, "16 MiB");
			cap *= 2;
			buf = realloc(buf, cap);
		}
		if (!buf)
			die("out of memory%s%s", "", "");
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("%s: reading the reply: %s", path, strerror(errno));
		if (n == 0)
			die("%s: the relay closed the connection without a reply%s", path, "");
		char *nl = memchr(buf + len, '\n', (size_t)n);
		len += (size_t)n;
		if (nl) {
			*nl = '\0';
			return buf;
		}
	}
}

/* --- --human --- */

static void print_scalar(const json_t *v)
{
	if (json_is_string(v))
		fputs(json_string_value(v), stdout);
	else if (json_is_integer(v))
		printf("%lld", (long long)json_integer_value(v));
	else if (json_is_true(v))
		fputs("yes", stdout);
	else if (json_is_false(v))
		fputs("no", stdout);
	else if (json_is_null(v))
		fputs("-", stdout);
	else {
		char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		fputs(s ? s : "?", stdout);
		free(s);
	}
}

/* "key: value" lines, nested objects indented. */
static void print_object(const json_t *o, int indent)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)o, k, v) {
		if (indent == 0 && strcmp(k, "ok") == 0)
			continue;
		printf("%*s%s:", indent, "", k);
		if (json_is_object(v)) {
			putchar('\n');
			print_object(v, indent + 2);
			continue;
		}
		putchar(' ');
		print_scalar(v);
		putchar('\n');
	}
}

static void human_stats(const json_t *r)
{
	const json_t *total = json_object_get(r, "total"), *workers = json_object_get(r, "workers");
	size_t nw = json_array_size(workers);
	const char *k;
	json_t *v;

	printf("%-28s %14s", "counter", "total");
	for (size_t w = 0; w < nw; w++)
		printf(" %11s%-3zu", "worker ", w);
	putchar('\n');
	json_object_foreach((json_t *)total, k, v) {
		printf("%-28s %14lld", k, (long long)json_integer_value(v));
		for (size_t w = 0; w < nw; w++)
			printf(" %14lld", (long long)json_integer_value(
				       json_object_get(json_array_get(workers, w), k)));
		putchar('\n');
	}
	json_object_foreach(json_object_get(r, "spool"), k, v)
		printf("spool %-22s %14lld\n", k, (long long)json_integer_value(v));
	json_object_foreach(json_object_get(r, "delivery"), k, v)
		printf("delivery %-19s %14lld\n", k, (long long)json_integer_value(v));
}

/* queue list, the way mailq lists a queue: one message a line, held ones
 * marked '!', and a count (of how many match, when the relay cut the list
 * short). */
static void human_queue(const json_t *r)
{
	const json_t *msgs = json_object_get(r, "messages");
	size_t i;
	json_t *m;

	printf("%-14s %9s %-20s %-10s %9s %8s %-20s %s\n", "qid", "size", "arrival", "vps",
	       "pending", "attempts", "next attempt", "from");
	json_array_foreach((json_t *)msgs, i, m) {
		char arrival[32], next[32];
		time_t a = (time_t)json_integer_value(json_object_get(m, "arrival"));
		time_t n = (time_t)json_integer_value(json_object_get(m, "next_attempt"));
		struct tm tm;
		strftime(arrival, sizeof(arrival), "%Y-%m-%d %H:%M:%S", gmtime_r(&a, &tm));
		if (n)
			strftime(next, sizeof(next), "%Y-%m-%d %H:%M:%S", gmtime_r(&n, &tm));
		else
			snprintf(next, sizeof(next), "now");
		printf("%-13s%c %9lld %-20s %-10s %5lld/%-3lld %8lld %-20s <%s>\n",
		       json_string_value(json_object_get(m, "qid")),
		       json_is_true(json_object_get(m, "held")) ? '!' : ' ',
		       (long long)json_integer_value(json_object_get(m, "size")), arrival,
		       json_string_value(json_object_get(m, "vps")),
		       (long long)json_integer_value(json_object_get(m, "pending")),
		       (long long)json_integer_value(json_object_get(m, "recipients")),
		       (long long)json_integer_value(json_object_get(m, "attempts")), next,
		       json_string_value(json_object_get(m, "from")));
	}
	if (json_is_true(json_object_get(r, "truncated")))
		printf("%zu of %lld messages shown: narrow with --vps or --domain, or --limit\n",
		       json_array_size(msgs), (long long)json_integer_value(json_object_get(r, "total")));
	else
		printf("%zu message%s\n", json_array_size(msgs), json_array_size(msgs) == 1 ? "" : "s");
}

/* The windows of quota show and vps show: one row each. */
static void human_windows(const json_t *w)
{
	static const char *const names[] = { "minute", "hour", "day" };

	if (!w)
		return;
	printf("%-8s %10s %10s  %s\n", "window", "used", "limit", "slot frees at (UTC)");
	for (unsigned i = 0; i < 3; i++) {
		const json_t *o = json_object_get(w, names[i]);
		time_t at = (time_t)json_integer_value(json_object_get(o, "resets_at"));
		char when[32] = "-";
		struct tm tm;

		if (at && gmtime_r(&at, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
		printf("%-8s %10lld %10lld  %s\n", names[i],
		       (long long)json_integer_value(json_object_get(o, "used")),
		       (long long)json_integer_value(json_object_get(o, "limit")), when);
	}
}

static void human_quota(const json_t *r)
{
	printf("account %s%s\n", json_string_value(json_object_get(r, "account")),
	       json_is_true(json_object_get(r, "unlimited")) ? " (unlimited)" : "");
	human_windows(json_object_get(r, "windows"));
}

/* vps show's recent refusals or remote errors: time, code, qid, text. */
static void human_events(const char *title, const json_t *a)
{
	size_t i;
	json_t *e;

	printf("%s: %zu\n", title, json_array_size(a));
	json_array_foreach((json_t *)a, i, e) {
		time_t at = (time_t)json_real_value(json_object_get(e, "at"));
		const char *qid = json_string_value(json_object_get(e, "qid"));
		char when[32];
		struct tm tm;

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", gmtime_r(&at, &tm));
		printf("  %s %3lld %-13s %s\n", when,
		       (long long)json_integer_value(json_object_get(e, "code")), qid ? qid : "-",
		       json_string_value(json_object_get(e, "text")));
	}
}

/* The account as "key: value" lines, its windows as quota show has them,
 * its mail waiting, then what went wrong for it lately. */
static void human_vps(const json_t *r)
{
	const json_t *may = json_object_get(r, "may_send");
	const json_t *q = json_object_get(r, "queue");

	print_object(json_object_get(r, "account"), 0);
	if (may)
		printf("may_send: %s\n", json_is_true(may) ? "yes" : "no");
	human_windows(json_object_get(r, "windows"));
	printf("queue: %lld messages, %lld recipients, %lld held\n",
	       (long long)json_integer_value(json_object_get(q, "messages")),
	       (long long)json_integer_value(json_object_get(q, "recipients")),
	       (long long)json_integer_value(json_object_get(q, "held")));
	human_events("refusals", json_object_get(r, "refusals"));
	human_events("remote_errors", json_object_get(r, "remote_errors"));
}

static void human_accounts(const json_t *r)
{
	size_t i, j;
	json_t *a, *d;

	printf("%-20s %-30s %11s %-6s %s\n", "id", "hostname", "daily_quota", "over", "domains");
	json_array_foreach(json_object_get(r, "accounts"), i, a) {
		const json_t *h = json_object_get(a, "hostname");
		printf("%-20s %-30s %11lld %-6s ", json_string_value(json_object_get(a, "id")),
		       json_is_string(h) ? json_string_value(h) : "-",
		       (long long)json_integer_value(json_object_get(a, "daily_quota")),
		       json_string_value(json_object_get(a, "over_quota")));
		json_array_foreach(json_object_get(a, "domains"), j, d)
			printf("%s%s%s", j ? "," : "", json_string_value(json_object_get(d, "name")),
			       json_is_true(json_object_get(d, "verified")) ? "" : "(unverified)");
		putchar('\n');
	}
}

/* The records as zone-file lines, then what the relay's operator adds. */
static void human_dns_records(const json_t *r)
{
	const char *note = json_string_value(json_object_get(r, "note"));
	const char *op = json_string_value(json_object_get(r, "operator_zone"));

	printf("; %s (account %s): add to the zone of %s\n",
	       json_string_value(json_object_get(r, "domain")),
	       json_string_value(json_object_get(r, "account")),
	       json_string_value(json_object_get(r, "domain")));
	if (note)
		printf("; note: %s\n", note);
	fputs(json_string_value(json_object_get(r, "zone")), stdout);
	if (op && *op)
		printf("; the relay's operator publishes the keys:\n%s", op);
}

/* One line per record: verdict, type, name, and what was found if not ok. */
static void human_dns_check(const json_t *r)
{
	const json_t *recs = json_object_get(r, "records"), *rec;
	size_t i;

	printf("%-8s %-5s %-5s %s\n", "VERDICT", "KIND", "TYPE", "NAME");
	json_array_foreach(recs, i, rec) {
		const char *verdict = json_string_value(json_object_get(rec, "verdict"));
		const char *found = json_string_value(json_object_get(rec, "found"));

		printf("%-8s %-5s %-5s %s\n", verdict,
		       json_string_value(json_object_get(rec, "kind")),
		       json_string_value(json_object_get(rec, "type")),
		       json_string_value(json_object_get(rec, "name")));
		if (strcmp(verdict, "ok") == 0)
			continue;
		printf("%8s expected: %s\n", "", json_string_value(json_object_get(rec, "value")));
		if (found)
			printf("%8s found:    %s\n", "", found);
	}
	printf("%s\n", json_is_true(json_object_get(r, "all_ok")) ? "all records check out" :
	       "some records do not check out");
}

static void human(const char *cmd, const char *sub, const json_t *r)
{
	if (!json_is_true(json_object_get(r, "ok"))) {
		fprintf(stderr, "vmrelayctl: %s\n", json_string_value(json_object_get(r, "error")));
	} else if (strcmp(cmd, "stats") == 0) {
		human_stats(r);
	} else if (strcmp(cmd, "metrics") == 0) {
		fputs(json_string_value(json_object_get(r, "metrics")), stdout);
	} else if (strcmp(cmd, "quota") == 0 && sub && strcmp(sub, "show") == 0) {
		human_quota(r);
	} else if (strcmp(cmd, "vps") == 0 && sub && strcmp(sub, "show") == 0) {
		human_vps(r);
	} else if (strcmp(cmd, "account") == 0 && sub && strcmp(sub, "list") == 0) {
		human_accounts(r);
	} else if (strcmp(cmd, "queue") == 0 && sub && strcmp(sub, "list") == 0) {
		human_queue(r);
	} else if (strcmp(cmd, "dns-records") == 0) {
		human_dns_records(r);
	} else if (strcmp(cmd, "dns-check") == 0) {
		human_dns_check(r);
	} else if (json_object_size(r) > 1) {
		print_object(r, 0);
	} else {
		puts("ok");
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "human", no_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = DEFAULT_SOCKET;
	int c, readable = 0;

	/* "+": options end at the command, so `quota set ID -1` reaches the relay */
	while ((c = getopt_long(argc, argv, "+s:Hh", opts, NULL)) != -1) {
		switch (c) {
		case 's': path = optarg; break;
		case 'H': readable = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind == argc) {
		fprintf(stderr, "vmrelayctl: no command given\n");
		usage(stderr);
		return EXIT_USAGE;
	}

	json_t *args = json_array();
	for (int i = optind + 1; i < argc; i++) {
		json_t *s = json_string(argv[i]);
		if (!s)
			die("argument '%s' is not UTF-8%s", argv[i], "");
		json_array_append_new(args, s);
	}
	json_t *cmdv = json_string(argv[optind]);
	if (!cmdv)
		die("command '%s' is not UTF-8%s", argv[optind], "");
	json_t *req = json_pack("{s:o,s:o}", "cmd", cmdv, "args", args);
	char *line = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!line)
		die("out of memory%s%s", "", "");

	int fd = connect_to(path);
	send_all(fd, line, strlen(line), path);
	send_all(fd, "\n", 1, path);
	free(line);
	char *reply = read_line(fd, path);
	close(fd);

	json_error_t jerr;
	json_t *r = json_loads(reply, 0, &jerr);
	if (!json_is_object(r))
		die("%s: the reply is not a JSON object: %s", path, reply);
	if (readable)
		human(argv[optind], optind + 1 < argc ? argv[optind + 1] : NULL, r);
	else
		puts(reply);
	int ok = json_is_true(json_object_get(r, "ok"));
	json_decref(r);
	free(reply);
	return ok ? 0 : 1;
}
