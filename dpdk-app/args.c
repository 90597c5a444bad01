/*
 * args.c - the [dpdk] lines that are more than one value: eal, split into
 * the argument vector rte_eal_init takes the way a POSIX shell splits a
 * simple command, without running one; and fault, the fault injection the
 * tests put between the port and the stack.
 *
 * eal:
 * Blanks (space, tab) separate words; 'single quotes' keep everything up to
 * the next quote; "double quotes" keep everything but \" and \\, which lose
 * their backslash; outside quotes a backslash keeps the next character.
 * Nothing expands: $HOME, `cmd` and * are passed on as written, because no
 * shell ever sees the line. An unterminated quote or a trailing backslash is
 * an error, not a guess.
 *
 * fault: "key=value" items separated by commas, each key at most once: the
 * percentages drop, corrupt, dup, delay and reorder (0..100), delay_ms and
 * reorder_ms (milliseconds), seed; see vmrelay/netfault.h.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpdk.h"

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

int vr_dpdk_split(const char *line, char *buf, size_t buflen, char **argv, int max,
		  char *err, size_t errlen)
{
	size_t o = 0;
	int argc = 0;
	const char *s = line;

	for (;;) {
		while (is_blank(*s))
			s++;
		if (!*s)
			break;
		if (argc == max) {
			snprintf(err, errlen, "more than %d words", max);
			return -1;
		}
		argv[argc++] = buf + o;
		char quote = 0;
		for (; *s && (quote || !is_blank(*s)); s++) {
			char c = *s;
			if (!quote && (c == '\'' || c == '"')) {
				quote = c;
				continue;
			}
			if (quote && c == quote) {
				quote = 0;
				continue;
			}
			if (c == '\\' && quote != '\'') {
				char next = s[1];
				if (!next) {
					snprintf(err, errlen, "a backslash ends the line");
					return -1;
				}
				/* In double quotes only \" and \\ escape (and \$ and
				 * \`, which mean nothing here): the rest stay as typed. */
				if (!quote || next == '"' || next == '\\') {
					c = next;
					s++;
				}
			}
			if (o + 1 >= buflen) {
				snprintf(err, errlen, "longer than %zu bytes", buflen - 1);
				return -1;
			}
			buf[o++] = c;
		}
		if (quote) {
			snprintf(err, errlen, "unterminated %s quote",
				 quote == '"' ? "double" : "single");
			return -1;
		}
		if (o >= buflen) {
			snprintf(err, errlen, "longer than %zu bytes", buflen - 1);
			return -1;
		}
		buf[o++] = '\0';
	}
	return argc;
}

enum fault_kind { PCT, MS, SEED };

static const struct fault_key {
	const char *name;
	enum fault_kind kind;
	size_t off;
} fault_keys[] = {
	{ "drop", PCT, offsetof(struct vr_fault_conf, drop_pct) },
	{ "corrupt", PCT, offsetof(struct vr_fault_conf, corrupt_pct) },
	{ "dup", PCT, offsetof(struct vr_fault_conf, dup_pct) },
	{ "delay", PCT, offsetof(struct vr_fault_conf, delay_pct) },
	{ "reorder", PCT, offsetof(struct vr_fault_conf, reorder_pct) },
	{ "delay_ms", MS, offsetof(struct vr_fault_conf, delay_ms) },
	{ "reorder_ms", MS, offsetof(struct vr_fault_conf, reorder_ms) },
	{ "seed", SEED, offsetof(struct vr_fault_conf, seed) },
};

/* One "key=value" of len bytes into out; seen marks keys already given. */
static int fault_item(const char *item, size_t len, struct vr_fault_conf *out, unsigned *seen,
		      char *err, size_t errlen)
{
	const char *eq = memchr(item, '=', len);
	char value[32], *end;

	if (!eq) {
		snprintf(err, errlen, "'%.*s' is not key=value", (int)len, item);
		return -1;
	}
	size_t klen = (size_t)(eq - item), vlen = len - klen - 1;
	unsigned i;
	for (i = 0; i < VR_ARRAY_SIZE(fault_keys); i++)
		if (strlen(fault_keys[i].name) == klen && !memcmp(fault_keys[i].name, item, klen))
			break;
	if (i == VR_ARRAY_SIZE(fault_keys)) {
		snprintf(err, errlen, "unknown key '%.*s' (drop, corrupt, dup, delay, reorder, "
			 "delay_ms, reorder_ms, seed)", (int)klen, item);
		return -1;
	}
	const struct fault_key *k = &fault_keys[i];
	if (*seen & 1u << i) {
		snprintf(err, errlen, "'%s' given twice", k->name);
		return -1;
	}
	*seen |= 1u << i;
	if (vlen == 0 || vlen >= sizeof(value))
		goto bad;
	memcpy(value, eq + 1, vlen);
	value[vlen] = '\0';
	errno = 0;
	char *field = (char *)out + k->off;
	if (k->kind == PCT) {
		double d = strtod(value, &end);
		if (*end || errno || !(d >= 0 && d <= 100))
			goto bad;
		*(double *)(void *)field = d;
	} else {
		if (value[0] == '-')
			goto bad;
		unsigned long long u = strtoull(value, &end, 10);
		if (*end || errno || (k->kind == MS && u > 60000))
			goto bad;
		if (k->kind == MS)
			*(uint32_t *)(void *)field = (uint32_t)u;
		else
			*(uint64_t *)(void *)field = u;
	}
	return 0;
bad:
	snprintf(err, errlen, "'%s' wants %s, not '%.*s'", k->name,
		 k->kind == PCT ? "a percentage 0..100" : k->kind == MS ?
		 "milliseconds 0..60000" : "an unsigned integer", (int)vlen, eq + 1);
	return -1;
}

int vr_dpdk_fault_parse(const char *text, struct vr_fault_conf *out, char *err, size_t errlen)
{
	unsigned seen = 0;

	memset(out, 0, sizeof(*out));
	for (const char *p = text; *p;) {
		size_t len = strcspn(p, ",");
		if (fault_item(p, len, out, &seen, err, errlen) < 0)
			return -1;
		p += len;
		if (*p == ',' && !*++p) {
			snprintf(err, errlen, "a comma ends the list");
			return -1;
		}
	}
	return 0;
}
