/*
 * tz.c - the calendar days of the configured time zone, for the daily
 * quota: the second each day starts, from 1970 to 2106, in one table built
 * at start from the tz database file (RFC 8536 TZif: its transitions, then
 * the POSIX TZ rule of its footer for the years after them).
 *
 * Why not localtime_r: it follows the process-wide TZ, one zone for the
 * whole process, and changing it under running threads is a race; and the
 * workers make no libc time calls. The table is ~50,000 days (200 KB);
 * finding a day is an index guess and one or two comparisons.
 *
 * A day starts at local midnight; where a zone jumps over midnight the day
 * starts at the jump, and where it falls back across midnight the day that
 * had begun goes on (days only move forward).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmrelay/common.h"

#include "rl_impl.h"

#define DAY 86400
#define TZ_FILE_MAX (1u << 20)
#define T_END (INT64_C(1) << 32)        /* the table covers [0, 2^32) */
#define YEAR_FIRST 1969                 /* rule years generated: all of [0, 2^32) */
#define YEAR_LAST 2106

/* One UTC offset change; seq keeps the order of equal times when sorting. */
struct trans {
	int64_t at;
	int32_t off;
	uint32_t seq;
};

struct trans_list {
	struct trans *t;
	uint32_t n, cap;
};

static int trans_push(struct trans_list *l, int64_t at, int32_t off)
{
	if (l->n == l->cap) {
		uint32_t cap = l->cap ? 2 * l->cap : 256;
		struct trans *t = realloc(l->t, cap * sizeof(*t));
		if (!t)
			return -1;
		l->t = t;
		l->cap = cap;
	}
	l->t[l->n] = (struct trans){ at, off, l->n };
	l->n++;
	return 0;
}

static int trans_cmp(const void *a, const void *b)
{
	const struct trans *x = a, *y = b;

	if (x->at != y->at)
		return x->at < y->at ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* --- calendar arithmetic (proleptic Gregorian, days since 1970-01-01) --- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + (int64_t)doe - 719468;
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* --- the POSIX TZ string of a TZif footer ("CET-1CEST,M3.5.0,M10.5.0/3") --- */

enum rule_kind { RULE_JULIAN, RULE_ZERO, RULE_MONTH };

struct rule {
	enum rule_kind kind;
	int day, week, month;           /* Jn: day 1-365; n: day 0-365; Mm.w.d */
	int32_t time;                   /* seconds after local midnight; may be < 0 or > 24h */
};

struct posix_tz {
	int32_t std_off, dst_off;       /* UTC offsets (east positive) */
	bool has_dst;
	struct rule start, end;
};

static bool parse_name(const char **p)
{
	const char *s = *p;

	if (*s == '<') {
		const char *e = strchr(s, '>');
		if (!e || e - s - 1 < 3)
			return false;
		*p = e + 1;
		return true;
	}
	while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'))
		s++;
	if (s - *p < 3)
		return false;
	*p = s;
	return true;
}

static bool parse_num(const char **p, int lo, int hi, int *out)
{
	const char *s = *p;
	int v = 0;

	if (*s < '0' || *s > '9')
		return false;
	while (*s >= '0' && *s <= '9' && v <= hi)
		v = v * 10 + (*s++ - '0');
	if (v < lo || v > hi)
		return false;
	*p = s;
	*out = v;
	return true;
}

/* [+-]hh[:mm[:ss]], hours up to max_h; seconds, signed. */
static bool parse_hms(const char **p, int max_h, int32_t *out)
{
	int sign = 1, h, m = 0, s = 0;

	if (**p == '+' || **p == '-')
		sign = *(*p)++ == '-' ? -1 : 1;
	if (!parse_num(p, 0, max_h, &h))
		return false;
	if (**p == ':') {
		(*p)++;
		if (!parse_num(p, 0, 59, &m))
			return false;
		if (**p == ':') {
			(*p)++;
			if (!parse_num(p, 0, 59, &s))
				return false;
		}
	}
	*out = sign * (h * 3600 + m * 60 + s);
	return true;
}

static bool parse_rule(const char **p, struct rule *r)
{
	r->time = 2 * 3600;
	if (**p == 'J') {
		(*p)++;
		r->kind = RULE_JULIAN;
		if (!parse_num(p, 1, 365, &r->day))
			return false;
	} else if (**p == 'M') {
		(*p)++;
		r->kind = RULE_MONTH;
		if (!parse_num(p, 1, 12, &r->month) || *(*p)++ != '.' ||
		    !parse_num(p, 1, 5, &r->week) || *(*p)++ != '.' ||
		    !parse_num(p, 0, 6, &r->day))
			return false;
	} else {
		r->kind = RULE_ZERO;
		if (!parse_num(p, 0, 365, &r->day))
			return false;
	}
	if (**p == '/') {
		(*p)++;
		/* RFC 8536 3.3.1: a rule's time may be -167..167 hours. */
		return parse_hms(p, 167, &r->time);
	}
	return true;
}

/* POSIX offsets count west: "CET-1" is UTC+1. */
static bool parse_posix_tz(const char *s, struct posix_tz *tz)
{
	int32_t off;

	memset(tz, 0, sizeof(*tz));
	if (!parse_name(&s) || !parse_hms(&s, 24, &off))
		return false;
	tz->std_off = -off;
	if (!*s)
		return true;
	if (!parse_name(&s))
		return false;
	tz->has_dst = true;
	tz->dst_off = tz->std_off + 3600;
	if (*s && *s != ',') {
		if (!parse_hms(&s, 24, &off))
			return false;
		tz->dst_off = -off;
	}
	/* The rules are optional in POSIX (implementation-defined default);
	 * zic always writes them. */
	return *s++ == ',' && parse_rule(&s, &tz->start) && *s++ == ',' &&
	       parse_rule(&s, &tz->end) && !*s;
}

/* Day of the year (0-based) a rule falls on in year y. */
static int64_t rule_yday(const struct rule *r, int64_t y)
{
	switch (r->kind) {
	case RULE_JULIAN:
		return r->day - 1 + (is_leap(y) && r->day >= 60);
	case RULE_ZERO:
		return r->day;
	case RULE_MONTH:
		break;
	}
	static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int64_t first = days_from_civil(y, (unsigned)r->month, 1);
	int wd = (int)((first % 7 + 11) % 7);          /* 1970-01-01 was a Thursday (4) */
	int dom = 1 + (r->day - wd + 7) % 7 + (r->week - 1) * 7;
	int len = mdays[r->month - 1] + (r->month == 2 && is_leap(y));

	while (dom > len)
		dom -= 7;
	return first + dom - 1 - days_from_civil(y, 1, 1);
}

/* The footer's changes for every year of the table, after `after`
 * (unsorted: trans_normalise sorts them in). */
static int posix_transitions(const struct posix_tz *tz, int64_t after, struct trans_list *l)
{
	if (!tz->has_dst)
		return 0;
	for (int64_t y = YEAR_FIRST; y <= YEAR_LAST; y++) {
		int64_t jan1 = days_from_civil(y, 1, 1) * DAY;
		/* The start rule's time is local standard time, the end's local DST. */
		int64_t on = jan1 + rule_yday(&tz->start, y) * DAY + tz->start.time - tz->std_off;
		int64_t off = jan1 + rule_yday(&tz->end, y) * DAY + tz->end.time - tz->dst_off;
		if ((on > after && trans_push(l, on, tz->dst_off) < 0) ||
		    (off > after && trans_push(l, off, tz->std_off) < 0))
			return -1;
	}
	return 0;
}

/* --- TZif (RFC 8536) --- */

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzif_counts {
	uint32_t isut, isstd, leap, time, type, chars;
};

static bool tzif_header(const uint8_t *p, size_t len, struct tzif_counts *c)
{
	if (len < 44 || memcmp(p, "TZif", 4) != 0)
		return false;
	c->isut = be32(p + 20);
	c->isstd = be32(p + 24);
	c->leap = be32(p + 28);
	c->time = be32(p + 32);
	c->type = be32(p + 36);
	c->chars = be32(p + 40);
	/* RFC 8536 3.1 bounds, which also keep the sizes below from overflowing. */
	return c->type >= 1 && c->type <= 256 && c->chars >= 1 && c->chars <= 65536 &&
	       c->time <= 1u << 20 && c->leap <= 1u << 16 &&
	       (c->isut == 0 || c->isut == c->type) && (c->isstd == 0 || c->isstd == c->type);
}

static size_t tzif_body_len(const struct tzif_counts *c, size_t tsize)
{
	return c->time * tsize + c->time + c->type * 6 + c->chars + c->leap * (tsize + 4) +
	       c->isstd + c->isut;
}

/* Parses a TZif image into transitions; why says what is wrong. */
static int tzif_parse(const uint8_t *p, size_t len, struct trans_list *l, const char **why)
{
	struct tzif_counts c;
	size_t tsize = 4;

	*why = "not a TZif file";
	if (!tzif_header(p, len, &c))
		return -1;
	if (p[4] >= '2') {
		/* Version 2+: skip the 32-bit block for the 64-bit one and the footer. */
		size_t skip = 44 + tzif_body_len(&c, 4);
		if (skip > len || !tzif_header(p + skip, len - skip, &c))
			return -1;
		p += skip;
		len -= skip;
		tsize = 8;
	}
	if (44 + tzif_body_len(&c, tsize) > len)
		return -1;
	if (c.leap) {
		*why = "leap-second zones (right/...) are not supported";
		return -1;
	}
	const uint8_t *times = p + 44, *idx = times + c.time * tsize, *types = idx + c.time;
	int32_t off[256];

	for (uint32_t i = 0; i < c.type; i++) {
		off[i] = (int32_t)be32(types + 6 * i);
		/* RFC 8536 3.2: -89999..93599; -2^31 is forbidden. */
		if (off[i] < -89999 || off[i] > 93599) {
			*why = "UTC offset out of range";
			return -1;
		}
	}
	/* RFC 8536 3.2: times before the first transition use type 0. */
	if (trans_push(l, INT64_MIN, off[0]) < 0)
		goto nomem;
	int64_t last = INT64_MIN;
	for (uint32_t i = 0; i < c.time; i++) {
		int64_t at = tsize == 8 ? be64(times + 8 * i) : (int32_t)be32(times + 4 * i);
		if (at <= last || idx[i] >= c.type) {
			*why = "transitions out of order";
			return -1;
		}
		last = at;
		if (trans_push(l, at, off[idx[i]]) < 0)
			goto nomem;
	}
	if (tsize == 8) {
		/* The footer: "\n" TZ-string "\n", the rule after the last transition. */
		const uint8_t *f = p + 44 + tzif_body_len(&c, 8), *end = p + len;
		const uint8_t *nl = f < end && *f == '\n' ? memchr(f + 1, '\n', (size_t)(end - f - 1))
							   : NULL;
		char rule[128];
		struct posix_tz ptz;

		if (!nl || (size_t)(nl - f - 1) >= sizeof(rule)) {
			*why = "TZif footer missing";
			return -1;
		}
		memcpy(rule, f + 1, (size_t)(nl - f - 1));
		rule[nl - f - 1] = '\0';
		if (rule[0] && !parse_posix_tz(rule, &ptz)) {
			*why = "TZif footer rule not understood";
			return -1;
		}
		if (rule[0] && posix_transitions(&ptz, last, l) < 0)
			goto nomem;
	}
	return 0;
nomem:
	*why = strerror(ENOMEM);
	return -1;
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint8_t *buf = NULL;
	size_t n = 0;

	if (fd < 0)
		return -errno;
	buf = malloc(TZ_FILE_MAX);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, TZ_FILE_MAX - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = -errno;
			free(buf);
			close(fd);
			return e;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == TZ_FILE_MAX) {
			free(buf);
			close(fd);
			return -EFBIG;
		}
	}
	close(fd);
	*out = buf;
	*len = n;
	return 0;
}

/* A tz database name: relative, no "..", the characters zone names use. */
static bool name_ok(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len >= sizeof(((struct vr_rl_tz *)0)->name) || name[0] == '/' ||
	    strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-.") !=
		    len)
		return false;
	for (const char *c = name; (c = strstr(c, "..")); c += 2)
		if ((c == name || c[-1] == '/') && (c[2] == '/' || c[2] == '\0'))
			return false;
	return true;
}

/* --- the day table --- */

struct day_list {
	uint32_t *s;
	uint32_t n, cap;
};

static int day_push(struct day_list *d, int64_t start)
{
	if (d->n == d->cap) {
		uint32_t cap = d->cap ? 2 * d->cap : 65536;
		uint32_t *s = realloc(d->s, cap * sizeof(*s));
		if (!s)
			return -1;
		d->s = s;
		d->cap = cap;
	}
	d->s[d->n++] = (uint32_t)start;
	return 0;
}

/*
 * Walks the intervals of constant offset over [0, 2^32): a day starts at
 * each local midnight inside an interval, or at an interval's first second
 * when the jump into it crossed midnight forwards.
 */
static int build_days(struct vr_rl_tz *tz, const struct trans_list *l)
{
	struct day_list d = { 0 };
	int64_t next_day = INT64_MIN;

	for (uint32_t i = 0; i < l->n; i++) {
		int64_t lo = VR_MAX(l->t[i].at, 0);
		int64_t hi = VR_MIN(i + 1 < l->n ? l->t[i + 1].at : T_END, T_END);
		int32_t off = l->t[i].off;
		if (lo >= hi)
			continue;
		int64_t today = floor_div(lo + off, DAY);
		if (today >= next_day) {
			if (day_push(&d, lo) < 0)
				goto nomem;
			next_day = today + 1;
		}
		for (int64_t m = next_day * DAY - off; m < hi; m = next_day * DAY - off) {
			if (day_push(&d, m) < 0)
				goto nomem;
			next_day++;
		}
	}
	/* The last day's end is unknown: it is the table's end instead. */
	tz->start = d.s;
	tz->ndays = d.n - 1;
	tz->guess_off = l->t[0].off;
	for (uint32_t i = 0; i < l->n && l->t[i].at <= 0; i++)
		tz->guess_off = l->t[i].off;
	tz->guess_base = floor_div(tz->guess_off, DAY);
	return 0;
nomem:
	free(d.s);
	return -1;
}

/* Sorted by time, equal times resolved to the last, no-op changes dropped. */
static void trans_normalise(struct trans_list *l)
{
	uint32_t n = 0;

	qsort(l->t, l->n, sizeof(*l->t), trans_cmp);
	for (uint32_t i = 0; i < l->n; i++) {
		if (n && l->t[n - 1].at == l->t[i].at)
			n--;
		if (n && l->t[n - 1].off == l->t[i].off)
			continue;
		l->t[n++] = l->t[i];
	}
	l->n = n;
}

int vr_rl_tz_load(struct vr_rl_tz *tz, const char *name, char *err, size_t errlen)
{
	struct trans_list l = { 0 };
	const char *why = strerror(ENOMEM);

	memset(tz, 0, sizeof(*tz));
	if (!name_ok(name)) {
		snprintf(err, errlen, "timezone '%s': not a tz database name", name);
		return -1;
	}
	snprintf(tz->name, sizeof(tz->name), "%s", name);
	if (strcmp(name, "UTC") == 0) {
		/* Built in: works without the tz database installed. */
		if (trans_push(&l, INT64_MIN, 0) < 0)
			goto fail;
	} else {
		const char *dir = getenv("TZDIR");
		char path[4096];
		uint8_t *img = NULL;
		size_t len = 0;
		int rc;

		snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", name);
		rc = read_file(path, &img, &len);
		if (rc < 0) {
			snprintf(err, errlen, "timezone '%s': cannot read %s: %s", name, path,
				 strerror(-rc));
			return -1;
		}
		rc = tzif_parse(img, len, &l, &why);
		free(img);
		if (rc < 0)
			goto fail;
	}
	trans_normalise(&l);
	if (build_days(tz, &l) < 0)
		goto fail;
	tz->trans_at = malloc(l.n * sizeof(*tz->trans_at));
	tz->trans_off = malloc(l.n * sizeof(*tz->trans_off));
	if (!tz->trans_at || !tz->trans_off) {
		vr_rl_tz_free(tz);
		goto fail;
	}
	for (uint32_t i = 0; i < l.n; i++) {
		tz->trans_at[i] = l.t[i].at;
		tz->trans_off[i] = l.t[i].off;
	}
	tz->ntrans = l.n;
	free(l.t);
	return 0;
fail:
	free(l.t);
	snprintf(err, errlen, "timezone '%s': %s", name, why);
	return -1;
}

void vr_rl_tz_free(struct vr_rl_tz *tz)
{
	free(tz->start);
	free(tz->trans_at);
	free(tz->trans_off);
	memset(tz, 0, sizeof(*tz));
}

int32_t vr_rl_tz_offset(const struct vr_rl_tz *tz, int64_t t)
{
	uint32_t lo = 0, hi = tz->ntrans;

	/* The last change at or before t; trans_at[0] is INT64_MIN. */
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (tz->trans_at[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	return tz->trans_off[lo];
}
