/*
 * segs.c - which spool segments still hold mail to deliver, so that a
 * segment can be removed while the relay runs once all its mail is done,
 * it is sealed (its committer moved on to a newer one) and its newest
 * message is older than the quota replay's day.
 *
 * Counted per segment: messages added (loaded at start, or announced by a
 * committer), minus messages done (every recipient final, or deleted).
 * Anything the table could not count makes every segment stay: a segment
 * is removed only when all its messages are known to be done.
 *
 * Threads: committers add, delivery threads finish and sweep; one mutex,
 * held for a short lookup (the committers' hook, the delivery loops: none
 * of them a poll-mode worker).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/common.h"
#include "delivery_impl.h"

struct seg {
	struct seg *next;
	char name[48];                /* "seg/w<worker>-<seq>.seg" */
	unsigned worker;
	unsigned long long seq;
	uint64_t todo;                /* messages not done */
	uint64_t newest_us;           /* arrival of its newest message */
	bool sealed;
};

struct dsegs {
	pthread_mutex_t mu;
	struct seg *list;
	unsigned long long max_seq;   /* of every segment ever added */
	bool unsafe;                  /* something went uncounted: remove nothing */
};

struct dsegs *vr_dsegs_new(void)
{
	struct dsegs *s = calloc(1, sizeof(*s));

	if (s)
		pthread_mutex_init(&s->mu, NULL);
	return s;
}

void vr_dsegs_free(struct dsegs *s)
{
	if (!s)
		return;
	for (struct seg *g = s->list, *n; g; g = n) {
		n = g->next;
		free(g);
	}
	pthread_mutex_destroy(&s->mu);
	free(s);
}

static struct seg *find(struct dsegs *s, const char *name)
{
	for (struct seg *g = s->list; g; g = g->next)
		if (strcmp(g->name, name) == 0)
			return g;
	return NULL;
}

/* A new segment of a worker seals the worker's older ones. */
static struct seg *seg_new(struct dsegs *s, const char *name, bool sealed)
{
	struct seg *g = calloc(1, sizeof(*g));
	int end = 0;

	if (!g || strlen(name) >= sizeof(g->name) ||
	    sscanf(name, "seg/w%u-%llu.seg%n", &g->worker, &g->seq, &end) != 2 || name[end]) {
		free(g);
		return NULL;
	}
	snprintf(g->name, sizeof(g->name), "%s", name);
	g->sealed = sealed;
	for (struct seg *o = s->list; o; o = o->next)
		if (o->worker == g->worker && o->seq < g->seq)
			o->sealed = true;
	g->next = s->list;
	s->list = g;
	return g;
}

int vr_dsegs_add(struct dsegs *s, const char *name, uint64_t received_us, bool todo,
		 bool sealed)
{
	pthread_mutex_lock(&s->mu);
	struct seg *g = find(s, name);
	if (!g)
		g = seg_new(s, name, sealed);
	if (g) {
		g->todo += todo;
		g->newest_us = VR_MAX(g->newest_us, received_us);
		s->max_seq = VR_MAX(s->max_seq, g->seq);
	} else {
		s->unsafe = true;
	}
	pthread_mutex_unlock(&s->mu);
	return g ? 0 : -ENOMEM;
}

void vr_dsegs_done(struct dsegs *s, const char *name)
{
	pthread_mutex_lock(&s->mu);
	struct seg *g = find(s, name);
	if (g && g->todo)
		g->todo--;
	else
		s->unsafe = true;     /* a count gone wrong: trust none */
	pthread_mutex_unlock(&s->mu);
}

unsigned vr_dsegs_sweep(struct dsegs *s, uint64_t before_us,
			void (*fn)(const char *name, void *arg), void *arg)
{
	struct seg *gone = NULL;
	unsigned n = 0;

	pthread_mutex_lock(&s->mu);
	for (struct seg **pp = &s->list; !s->unsafe && *pp;) {
		struct seg *g = *pp;
		if (g->sealed && !g->todo && g->newest_us < before_us) {
			*pp = g->next;
			g->next = gone;
			gone = g;
			continue;
		}
		pp = &g->next;
	}
	pthread_mutex_unlock(&s->mu);
	/* Outside the lock: the files' removal may take a while. */
	for (struct seg *g = gone, *next; g; g = next) {
		next = g->next;
		fn(g->name, arg);
		free(g);
		n++;
	}
	return n;
}

unsigned long long vr_dsegs_max_seq(struct dsegs *s)
{
	pthread_mutex_lock(&s->mu);
	unsigned long long seq = s->max_seq;
	pthread_mutex_unlock(&s->mu);
	return seq;
}

bool vr_dsegs_gone_upto(struct dsegs *s, unsigned long long seq)
{
	bool gone = true;

	pthread_mutex_lock(&s->mu);
	for (struct seg *g = s->list; gone && g; g = g->next)
		gone = g->seq > seq;
	gone &= !s->unsafe;
	pthread_mutex_unlock(&s->mu);
	return gone;
}
