/*
 * test_smtp_golden.c - golden SMTP transcripts: tests/data/smtp/NAME.in is
 * what a client sends, NAME.out exactly what the server must answer,
 * banner included. Each .in is fed through a real session (real spool,
 * real accounts table) whole and then byte by byte; both must give .out.
 *
 * NAME.in: each line is sent followed by CRLF. In a line, \r \n \0 \\ and
 * \xHH stand for those octets, \{N}c for N times the character c, and a
 * trailing \c suppresses the CRLF (so bare CR/LF can be written). Lines
 * starting with "#!" are directives:
 *   #!client ADDR          client address (default: vps1's, registered)
 *   #!config KEY N         greet_pause_ms, idle_timeout_ms, max_errors,
 *                          max_recipients, max_message_size
 *   #!whole                feed whole only (the test is about what one
 *                          segment holds, e.g. STARTTLS injection)
 *   #!wait MS              let MS milliseconds pass (idle timeouts)
 *   #!eof                  the client shuts its sending side
 * NAME.out: the server's lines, one per line (CRLF on the wire). Queue IDs
 * are written "QID". SMTP_GOLDEN_UPDATE=1 rewrites the .out files from
 * what the server said (review them before committing).
 */
#include <ctype.h>
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "test_smtp_driver.h"

enum step_kind { STEP_SEND, STEP_WAIT, STEP_EOF };

struct step {
	enum step_kind kind;
	size_t off, len;        /* SEND: octets in script->bytes */
	uint64_t ms;            /* WAIT */
};

struct script {
	char client[64];
	bool whole_only;
	struct vr_buf bytes;
	struct step steps[64];
	size_t n_steps;
};

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	rewind(f);
	char *p = malloc((size_t)n + 1);
	assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
	p[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return p;
}

static void add_step(struct script *sc, struct step st)
{
	assert_true(sc->n_steps < sizeof(sc->steps) / sizeof(sc->steps[0]));
	sc->steps[sc->n_steps++] = st;
}

/* Ends the SEND step being built, if any. */
static void end_send(struct script *sc, size_t *start)
{
	size_t now = vr_buf_len(&sc->bytes);
	if (now > *start)
		add_step(sc, (struct step){ .kind = STEP_SEND, .off = *start, .len = now - *start });
	*start = now;
}

static void put(struct script *sc, const void *p, size_t n)
{
	assert_int_equal(vr_buf_append(&sc->bytes, p, n), 0);
}

/* One .in line, escapes resolved. */
static void unescape_line(struct script *sc, const char *name, const char *p, size_t n)
{
	bool crlf = true;

	for (size_t i = 0; i < n; i++) {
		if (p[i] != '\\') {
			put(sc, p + i, 1);
			continue;
		}
		if (++i >= n)
			fail_msg("%s: lone backslash at the end of a line", name);
		char c = p[i], o;
		unsigned long count;
		char *end;
		switch (c) {
		case 'r': put(sc, "\r", 1); break;
		case 'n': put(sc, "\n", 1); break;
		case '0': put(sc, "", 1); break;
		case '\\': put(sc, "\\", 1); break;
		case 'c':
			if (i + 1 != n)
				fail_msg("%s: \\c must end its line", name);
			crlf = false;
			break;
		case 'x':
			if (i + 2 >= n)
				fail_msg("%s: short \\x escape", name);
			o = (char)strtoul((char[]){ p[i + 1], p[i + 2], 0 }, &end, 16);
			if (*end)
				fail_msg("%s: bad \\x escape", name);
			put(sc, &o, 1);
			i += 2;
			break;
		case '{':
			count = strtoul(p + i + 1, &end, 10);
			if (*end != '}' || end + 1 >= p + n)
				fail_msg("%s: bad \\{N}c escape", name);
			for (unsigned long k = 0; k < count; k++)
				put(sc, end + 1, 1);
			i = (size_t)(end + 1 - p);
			break;
		default:
			fail_msg("%s: unknown escape \\%c", name, c);
		}
	}
	if (crlf)
		put(sc, "\r\n", 2);
}

static void directive(struct script *sc, const char *name, const char *line, size_t *start)
{
	char key[64];
	unsigned long long v;

	if (sscanf(line, "#!client %63s", sc->client) == 1)
		return;
	if (strcmp(line, "#!whole") == 0) {
		sc->whole_only = true;
		return;
	}
	if (sscanf(line, "#!wait %llu", &v) == 1) {
		end_send(sc, start);
		add_step(sc, (struct step){ .kind = STEP_WAIT, .ms = v });
		return;
	}
	if (strcmp(line, "#!eof") == 0) {
		end_send(sc, start);
		add_step(sc, (struct step){ .kind = STEP_EOF });
		return;
	}
	if (sscanf(line, "#!config %63s %llu", key, &v) == 2) {
		if (strcmp(key, "greet_pause_ms") == 0)
			drv.cfg.greet_pause_ms = (unsigned)v;
		else if (strcmp(key, "idle_timeout_ms") == 0)
			drv.cfg.idle_timeout_ms = (unsigned)v;
		else if (strcmp(key, "max_errors") == 0)
			drv.cfg.max_errors = (unsigned)v;
		else if (strcmp(key, "max_recipients") == 0)
			drv.cfg.max_recipients = (unsigned)v;
		else if (strcmp(key, "max_message_size") == 0)
			drv.cfg.max_message_size = v;
		else
			fail_msg("%s: unknown config key %s", name, key);
		return;
	}
	fail_msg("%s: unknown directive %s", name, line);
}

/* Reads NAME.in; sets drv.cfg from its directives. */
static void script_load(struct script *sc, const char *name, const char *text)
{
	size_t start = 0;

	memset(sc, 0, sizeof(*sc));
	snprintf(sc->client, sizeof(sc->client), "%s", DRV_VPS1_ADDR);
	vr_buf_init(&sc->bytes, 0);
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		char line[256];
		if (n >= 2 && p[0] == '#' && p[1] == '!') {
			assert_true(n < sizeof(line));
			memcpy(line, p, n);
			line[n] = '\0';
			directive(sc, name, line, &start);
		} else {
			unescape_line(sc, name, p, n);
		}
		p += n + (nl ? 1 : 0);
	}
	end_send(sc, &start);
}

/* Queue IDs differ per run: "queued as X" becomes "queued as QID". */
static char *normalize(const char *said)
{
	char *out = malloc(strlen(said) + 1), *o = out;

	for (const char *p = said; *p;) {
		const char *q = strstr(p, "queued as ");
		if (!q) {
			strcpy(o, p);
			break;
		}
		q += 10;
		memcpy(o, p, (size_t)(q - p));
		o += q - p;
		o += sprintf(o, "QID");
		p = q + strcspn(q, "\r\n");
	}
	return out;
}

/* .out lines end in LF in the repository; on the wire they end in CRLF. */
static char *expected_text(const char *path)
{
	size_t n;
	char *raw = slurp(path, &n);
	if (!raw)
		return NULL;
	char *out = malloc(2 * n + 1), *o = out;
	for (size_t i = 0; i < n; i++) {
		if (raw[i] == '\n')
			*o++ = '\r';
		*o++ = raw[i];
	}
	*o = '\0';
	free(raw);
	return out;
}

static char *run(const struct script *sc, size_t step)
{
	struct conv c;

	conv_open(&c, sc->client, false);
	for (size_t i = 0; i < sc->n_steps; i++) {
		const struct step *st = &sc->steps[i];
		switch (st->kind) {
		case STEP_SEND:
			conv_send(&c, vr_buf_head(&sc->bytes) + st->off, st->len, step);
			break;
		case STEP_WAIT:
			conv_wait(&c, st->ms);
			break;
		case STEP_EOF:
			vr_session_rx_eof(c.s, c.now);
			conv_settle(&c);
			break;
		}
	}
	conv_settle(&c);
	char *said = normalize(conv_said(&c));
	conv_close(&c);
	return said;
}

static bool run_one(const char *dir, const char *name)
{
	char in_path[512], out_path[512];
	struct script sc;
	size_t n;
	bool ok = true;

	snprintf(in_path, sizeof(in_path), "%s/%s.in", dir, name);
	snprintf(out_path, sizeof(out_path), "%s/%s.out", dir, name);
	char *text = slurp(in_path, &n);
	assert_non_null(text);
	drv_config_reset();
	script_load(&sc, name, text);
	char *expect = expected_text(out_path);

	char *whole = run(&sc, SIZE_MAX);
	if (getenv("SMTP_GOLDEN_UPDATE")) {
		FILE *f = fopen(out_path, "w");
		for (const char *p = whole; *p; p++)
			if (*p != '\r')
				fputc(*p, f);
		fclose(f);
	} else if (!expect || strcmp(whole, expect) != 0) {
		print_error("%s (whole): expected\n%s\ngot\n%s\n", name, expect ? expect : "(no .out)",
			    whole);
		ok = false;
	}
	if (ok && !sc.whole_only) {
		char *bytewise = run(&sc, 1);
		if (strcmp(bytewise, whole) != 0) {
			print_error("%s (byte by byte): expected\n%s\ngot\n%s\n", name, whole, bytewise);
			ok = false;
		}
		free(bytewise);
	}
	free(whole);
	free(expect);
	free(text);
	vr_buf_free((struct vr_buf *)&sc.bytes);
	return ok;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_golden_transcripts(void **state)
{
	const char *dir = SMTP_TESTDATA;
	DIR *d = opendir(dir);
	struct dirent *e;
	char *names[256];
	size_t n = 0, failed = 0;

	assert_non_null(d);
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (len > 3 && strcmp(e->d_name + len - 3, ".in") == 0) {
			assert_true(n < 256);
			names[n++] = strndup(e->d_name, len - 3);
		}
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), by_name);
	assert_true(n >= 20);
	for (size_t i = 0; i < n; i++) {
		if (!run_one(dir, names[i]))
			failed++;
		free(names[i]);
	}
	if (failed)
		fail_msg("%zu of %zu transcripts failed", failed, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_transcripts),
	};
	return cmocka_run_group_tests(tests, drv_setup, drv_teardown);
}
