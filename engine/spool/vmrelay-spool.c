/*
 * vmrelay-spool - look into a spool directory, like Postfix's mailq and
 * postcat: list the queued messages, show one as it will be delivered,
 * check every record of every segment.
 *
 * Read-only, and safe while the relay runs: it reads segments up to their
 * size when opened, so a batch being written shows at most as a torn tail.
 * Envelope values are printed with control characters escaped, so a crafted
 * address cannot drive the operator's terminal.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "vmrelay/utf8.h"
#include "vmrelay/common.h"
#include "vmrelay/spool.h"
#include "scan.h"

#define EXIT_USAGE 2

static const char usage[] =
	"usage: vmrelay-spool [--json] DIR      list the queued messages (\"!\" after the queue\n"
	"                                       ID: held for the operator, over quota)\n"
	"       vmrelay-spool DIR show QID      print one: envelope as header lines, then the body\n"
	"       vmrelay-spool DIR check         verify every record; exit 1 on damage\n"
	"Exit status: 0 ok, 1 error or damage found, 2 bad usage.\n";

static const char *dir;
static bool json;

static const struct {
	uint32_t bit;
	const char *name;
} flag_names[] = {
	{ VR_SPOOL_8BITMIME, "8bitmime" },
	{ VR_SPOOL_SMTPUTF8, "smtputf8" },
	{ VR_SPOOL_TLS, "tls" },
	{ VR_SPOOL_AUTH, "auth" },
	{ VR_SPOOL_HOLD, "hold" },
};

static void fail(const char *fmt, ...) VR_PRINTF(1, 2);
static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vmrelay-spool: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* --- printing values --- */

static const char *plural(uint64_t n)
{
	return n == 1 ? "" : "s";
}

/* Text for a terminal: control characters and backslash as \xNN. */
static void put_text(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '\\')
			printf("\\x%02x", *p);
		else
			putchar(*p);
	}
}

/* A JSON string; bytes that are not UTF-8 become U+FFFD. */
static void put_json(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		size_t n = vr_utf8_seq(p, strlen((const char *)p));
		if (n == 0) {
			fputs("\\ufffd", stdout);
			p++;
		} else if (*p == '"' || *p == '\\') {
			printf("\\%c", *p++);
		} else if (*p < 0x20 || *p == 0x7f) {
			printf("\\u%04x", *p++);
		} else {
			fwrite(p, 1, n, stdout);
			p += n;
		}
	}
	putchar('"');
}

/* "2024-05-01T12:00:00Z", with microseconds if us_too. */
static const char *time_text(uint64_t us, bool us_too)
{
	static char out[40];
	time_t t = (time_t)(us / 1000000);
	struct tm tm;

	gmtime_r(&t, &tm);
	size_t n = strftime(out, sizeof(out), "%Y-%m-%dT%H:%M:%S", &tm);
	if (us_too)
		snprintf(out + n, sizeof(out) - n, ".%06uZ", (unsigned)(us % 1000000));
	else
		snprintf(out + n, sizeof(out) - n, "Z");
	return out;
}

/* Flag names separated by sep, "none" if there are none. */
static void put_flags(uint32_t flags, const char *sep, bool quoted)
{
	const char *s = "";

	for (size_t i = 0; i < VR_ARRAY_SIZE(flag_names); i++) {
		if (!(flags & flag_names[i].bit))
			continue;
		printf(quoted ? "%s\"%s\"" : "%s%s", s, flag_names[i].name);
		flags &= ~flag_names[i].bit;
		s = sep;
	}
	if (flags)
		printf(quoted ? "%s\"0x%x\"" : "%s0x%x", s, flags);
	else if (!*s && !quoted)
		printf("none");
}

/* --- list --- */

struct list {
	uint64_t messages, bytes, held;
};

static int list_json(const struct vr_spool_msg *m)
{
	printf("{\"qid\":\"%s\",\"size\":%" PRIu64 ",\"arrival\":\"%s\",\"received_us\":%" PRIu64,
	       m->qid, m->size, time_text(m->received_us, true), m->received_us);
	printf(",\"account\":");
	put_json(m->account);
	printf(",\"client\":");
	put_json(m->client);
	printf(",\"helo\":");
	put_json(m->helo);
	printf(",\"sender\":");
	put_json(m->mail_from);
	printf(",\"recipients\":[");
	for (unsigned i = 0; i < m->n_rcpts; i++) {
		if (i)
			putchar(',');
		put_json(m->rcpts[i]);
	}
	printf("],\"flags\":[");
	put_flags(m->flags, ",", true);
	printf("],\"segment\":\"%s\",\"offset\":%" PRIu64 "}\n", m->segment, m->offset);
	return 0;
}

static int list_one(const struct vr_spool_msg *m, void *arg)
{
	struct list *l = arg;

	l->messages++;
	l->bytes += m->size;
	l->held += (m->flags & VR_SPOOL_HOLD) != 0;
	if (json)
		return list_json(m);
	if (l->messages == 1)
		printf("%-13s %10s  %-20s  %-12s  %s\n", "QUEUE ID", "SIZE", "ARRIVAL", "ACCOUNT",
		       "SENDER -> RECIPIENTS");
	/* As in Postfix's mailq, "!" after the queue ID marks a held message. */
	printf("%-13s%c%10" PRIu64 "  %-20s  ", m->qid, m->flags & VR_SPOOL_HOLD ? '!' : ' ',
	       m->size, time_text(m->received_us, false));
	put_text(m->account);
	printf("%*s  ", (int)(12 - VR_MIN(strlen(m->account), 12)), "");
	put_text(*m->mail_from ? m->mail_from : "<>");
	printf(" ->");
	for (unsigned i = 0; i < m->n_rcpts; i++) {
		printf(i ? ", " : " ");
		put_text(m->rcpts[i]);
	}
	putchar('\n');
	return 0;
}

/* After a read: a hint if the spool holds damage the listing skipped. */
static void damage_hint(const struct vr_spool_scan_stats *st)
{
	if (st->torn > st->tails || st->bad_records || st->bad_segments)
		fail("%s: %" PRIu64 " damaged message(s) or segment(s) skipped; run "
		     "'vmrelay-spool %s check'", dir, st->torn - st->tails + st->bad_segments, dir);
}

static int cmd_list(char **args)
{
	struct vr_spool_scan_stats st;
	struct list l = { 0 };

	int rc = vr_spool_scan(dir, list_one, &l, &st);
	if (rc < 0)
		return rc;
	if (!json) {
		if (l.messages && l.held)
			printf("-- %" PRIu64 " message%s, %" PRIu64 " bytes, %" PRIu64 " held (!)\n",
			       l.messages, plural(l.messages), l.bytes, l.held);
		else if (l.messages)
			printf("-- %" PRIu64 " message%s, %" PRIu64 " bytes\n", l.messages,
			       plural(l.messages), l.bytes);
		else
			printf("spool is empty\n");
	}
	damage_hint(&st);
	return 0;
}

/* --- show --- */

static int body_out(const void *p, size_t n, void *arg)
{
	return fwrite(p, 1, n, stdout) == n ? 0 : -EIO;
}

static void header(const char *name, const char *value)
{
	printf("X-Vmrelay-%s: ", name);
	put_text(value);
	printf("\r\n");
}

/* Prints msg if it is the one asked for: 1 when done, or -errno. */
static int show_one(const struct vr_spool_msg *m, void *arg)
{
	char num[32];

	if (strcmp(m->qid, (const char *)arg) != 0)
		return 0;
	header("Queue-ID", m->qid);
	header("Arrival", time_text(m->received_us, true));
	header("Account", m->account);
	header("Client", m->client);
	header("Helo", m->helo);
	printf("X-Vmrelay-Sender: <");
	put_text(m->mail_from);
	printf(">\r\n");
	for (unsigned i = 0; i < m->n_rcpts; i++) {
		printf("X-Vmrelay-Recipient: <");
		put_text(m->rcpts[i]);
		printf(">\r\n");
	}
	printf("X-Vmrelay-Flags: ");
	put_flags(m->flags, " ", false);
	printf("\r\n");
	snprintf(num, sizeof(num), "%" PRIu64, m->size);
	header("Size", num);
	int rc = vr_spool_read_body(dir, m, body_out, NULL);
	return rc < 0 ? rc : 1;
}

static int cmd_show(char **args)
{
	int rc = vr_spool_scan(dir, show_one, args[0], NULL);

	if (rc < 0)
		return rc;
	if (rc == 0) {
		fail("%s: no message with queue ID %s", dir, args[0]);
		return 1;
	}
	return 0;
}

/* --- check --- */

static void check_damage(const struct vr_spool_seg_info *seg, uint64_t off, uint64_t len,
			 bool tail, const char *what, void *arg)
{
	printf("%s: offset %" PRIu64 ": %s (%" PRIu64 " bytes)\n", seg->name, off, what, len);
}

static void check_segment(const struct vr_spool_seg_info *seg, void *arg)
{
	const char *why = seg->error == -EBADMSG ? "damaged header" :
			  seg->error == -EPROTONOSUPPORT ? "written by a newer version" :
			  strerror(-seg->error);

	printf("%s: ", seg->name);
	if (seg->error == -ENODATA) {
		printf("empty (created, never written)\n");
		return;
	}
	if (seg->error < 0 && seg->records == 0) {
		printf("UNREADABLE: %s\n", why);
		return;
	}
	printf("%" PRIu64 " record%s, %" PRIu64 " message%s", seg->records, plural(seg->records),
	       seg->messages, plural(seg->messages));
	if (seg->torn)
		printf(", %" PRIu64 " torn (%" PRIu64 " at the end)", seg->torn, seg->tails);
	if (seg->error < 0)
		printf(", READ ERROR: %s\n", why);
	else if (seg->damaged || seg->torn > seg->tails)
		printf(", DAMAGED\n");
	else
		printf(", ok\n");
}

static int cmd_check(char **args)
{
	const struct vr_spool_scan_ops ops = { .damage = check_damage, .segment = check_segment };
	struct vr_spool_scan_stats st;

	int rc = vr_spool_scan_ops(dir, &ops, &st);
	if (rc < 0)
		return rc;
	bool bad = st.torn > st.tails || st.bad_records || st.bad_segments;
	printf("%" PRIu64 " segments, %" PRIu64 " messages, %" PRIu64 " torn (%" PRIu64
	       " at an unterminated tail), %" PRIu64 " damaged places, %" PRIu64
	       " unreadable segments: %s\n", st.segments, st.messages, st.torn, st.tails,
	       st.bad_records, st.bad_segments, bad ? "DAMAGED" : "ok");
	return bad ? 1 : 0;
}

/* --- main --- */

static const struct command {
	const char *name;
	int n_args;
	bool json;                    /* takes --json */
	int (*run)(char **args);
} commands[] = {
	{ "list", 0, true, cmd_list },
	{ "show", 1, false, cmd_show },
	{ "check", 0, false, cmd_check },
};

int main(int argc, char **argv)
{
	char *pos[4];
	int n_pos = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(usage, stdout);
			return 0;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fail("unknown option %s", argv[i]);
			fputs(usage, stderr);
			return EXIT_USAGE;
		} else if (n_pos == (int)VR_ARRAY_SIZE(pos)) {
			fputs(usage, stderr);
			return EXIT_USAGE;
		} else {
			pos[n_pos++] = argv[i];
		}
	}
	if (n_pos == 0) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	dir = pos[0];
	const char *name = n_pos > 1 ? pos[1] : "list";
	const struct command *cmd = NULL;
	for (size_t i = 0; i < VR_ARRAY_SIZE(commands); i++)
		if (strcmp(name, commands[i].name) == 0)
			cmd = &commands[i];
	if (!cmd) {
		fail("unknown command %s", name);
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	if (n_pos - 2 != cmd->n_args && !(n_pos == 1 && cmd->n_args == 0)) {
		fail("%s takes %d argument%s", cmd->name, cmd->n_args, cmd->n_args == 1 ? "" : "s");
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	if (json && !cmd->json) {
		fail("--json goes with listing only");
		return EXIT_USAGE;
	}

	struct stat st;
	if (stat(dir, &st) < 0) {
		fail("%s: %s", dir, strerror(errno));
		return 1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fail("%s: not a directory", dir);
		return 1;
	}
	int rc = cmd->run(pos + 2);
	if (rc == -ENOENT) {
		fail("%s: not a vmrelay spool (no seg/ directory)", dir);
		return 1;
	}
	if (rc < 0) {
		fail("%s: %s", dir, strerror(-rc));
		return 1;
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fail("writing output: %s", strerror(errno));
		return 1;
	}
	return rc;
}
