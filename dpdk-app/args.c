/*
 * args.c - the [dpdk] eal line split into the argument vector rte_eal_init
 * takes, the way a POSIX shell splits a simple command, without running one.
 *
 * Blanks (space, tab) separate words; 'single quotes' keep everything up to
 * the next quote; "double quotes" keep everything but \" and \\, which lose
 * their backslash; outside quotes a backslash keeps the next character.
 * Nothing expands: $HOME, `cmd` and * are passed on as written, because no
 * shell ever sees the line. An unterminated quote or a trailing backslash is
 * an error, not a guess.
 */
#include <stdio.h>
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
