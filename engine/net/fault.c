/*
 * fault.c - seeded fault injection on a packet path (see vmrelay/netfault.h).
 *
 * Each packet draws from a splitmix64 stream once per kind of fault, in a
 * fixed order, so a run is a function of the seed and the packets alone.
 * Held packets (delayed or reordered) sit in a fixed array in arrival order;
 * a reordered one leaves as soon as a packet that came after it has gone
 * straight through, so it overtakes nothing and is overtaken by at least one
 * (or, if none follows within reorder_ms, it leaves in order).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/netfault.h"

enum { F_DROP, F_CORRUPT, F_DUP, F_DELAY, F_REORDER, F_KINDS };

struct held {
	struct vr_pkt *p;
	uint64_t due;                /* monotonic ms */
	uint64_t after;              /* reordered: leaves once passed > after; else UINT64_MAX */
};

struct vr_fault {
	vr_net_burst_fn sink;
	void *sink_arg;
	uint64_t threshold[F_KINDS]; /* a 32-bit draw below it means "do it" */
	uint32_t delay_ms, reorder_ms;
	uint64_t rng;
	struct held *held;
	unsigned nheld, hold;
	struct vr_pkt *out[VR_NET_BURST];
	unsigned nout;
	uint64_t passed;             /* packets sent straight through, not from the hold */
	struct vr_fault_stats st;
};

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15u);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
	return z ^ (z >> 31);
}

static int roll(struct vr_fault *f, int kind)
{
	return (splitmix64(&f->rng) >> 32) < f->threshold[kind];
}

struct vr_fault *vr_fault_new(const struct vr_fault_conf *conf, vr_net_burst_fn sink,
			      void *sink_arg, char *err, size_t errlen)
{
	const double pct[F_KINDS] = {
		[F_DROP] = conf->drop_pct, [F_CORRUPT] = conf->corrupt_pct,
		[F_DUP] = conf->dup_pct, [F_DELAY] = conf->delay_pct,
		[F_REORDER] = conf->reorder_pct,
	};
	static const char *const names[F_KINDS] = { "drop", "corrupt", "dup", "delay", "reorder" };

	if (!sink) {
		snprintf(err, errlen, "fault: no sink");
		return NULL;
	}
	for (int k = 0; k < F_KINDS; k++)
		if (!(pct[k] >= 0 && pct[k] <= 100)) {
			snprintf(err, errlen, "fault: %s_pct is not within 0..100", names[k]);
			return NULL;
		}
	struct vr_fault *f = calloc(1, sizeof(*f));
	if (!f) {
		snprintf(err, errlen, "fault: out of memory");
		return NULL;
	}
	for (int k = 0; k < F_KINDS; k++)
		f->threshold[k] = (uint64_t)(pct[k] / 100.0 * 4294967296.0 + 0.5);
	f->sink = sink;
	f->sink_arg = sink_arg;
	f->delay_ms = conf->delay_ms;
	f->reorder_ms = conf->reorder_ms ? conf->reorder_ms : 1;
	f->rng = conf->seed;
	f->hold = conf->hold ? conf->hold : 256;
	f->held = calloc(f->hold, sizeof(*f->held));
	if (!f->held) {
		snprintf(err, errlen, "fault: out of memory for %u held packets", f->hold);
		free(f);
		return NULL;
	}
	return f;
}

void vr_fault_free(struct vr_fault *f)
{
	if (!f)
		return;
	for (unsigned i = 0; i < f->nheld; i++)
		vr_net_pkt_free(f->held[i].p);
	for (unsigned i = 0; i < f->nout; i++)
		vr_net_pkt_free(f->out[i]);
	free(f->held);
	free(f);
}

static void out_flush(struct vr_fault *f, uint64_t now)
{
	if (!f->nout)
		return;
	unsigned took = f->sink(f->sink_arg, f->out, f->nout, now);
	if (took > f->nout)
		took = f->nout;
	f->st.out += took;
	for (unsigned i = took; i < f->nout; i++) {
		f->st.refused++;
		vr_net_pkt_free(f->out[i]);
	}
	f->nout = 0;
}

static void out_push(struct vr_fault *f, struct vr_pkt *p, uint64_t now)
{
	f->out[f->nout++] = p;
	if (f->nout == VR_NET_BURST)
		out_flush(f, now);
}

/* Holds p until due (or, reordered, until a later packet has gone); 0 or -ENOBUFS. */
static int hold(struct vr_fault *f, struct vr_pkt *p, uint64_t due, uint64_t after)
{
	if (f->nheld == f->hold) {
		f->st.hold_full++;
		return -ENOBUFS;
	}
	f->held[f->nheld++] = (struct held){ p, due, after };
	return 0;
}

/* Sends what is due, in arrival order, keeping the rest in order. */
static void release(struct vr_fault *f, uint64_t now)
{
	unsigned keep = 0;

	for (unsigned i = 0; i < f->nheld; i++) {
		struct held *h = &f->held[i];
		if (h->due <= now || f->passed > h->after)
			out_push(f, h->p, now);
		else
			f->held[keep++] = *h;
	}
	f->nheld = keep;
}

static void one(struct vr_fault *f, struct vr_pkt *p, uint64_t now)
{
	f->st.in++;
	if (roll(f, F_DROP)) {
		f->st.dropped++;
		vr_net_pkt_free(p);
		return;
	}
	if (roll(f, F_CORRUPT) && p->len) {
		uint64_t r = splitmix64(&f->rng);
		p->data[(r >> 3) % p->len] ^= (uint8_t)(1u << (r & 7));
		f->st.corrupted++;
	}
	if (roll(f, F_DUP)) {
		struct vr_pkt *c = vr_net_pkt_clone(p);
		if (c) {
			f->st.duplicated++;
			out_push(f, c, now);
		}
	}
	if (roll(f, F_DELAY) && hold(f, p, now + f->delay_ms, UINT64_MAX) == 0) {
		f->st.delayed++;
		return;
	}
	if (roll(f, F_REORDER) && hold(f, p, now + f->reorder_ms, f->passed) == 0) {
		f->st.reordered++;
		return;
	}
	f->passed++;
	out_push(f, p, now);
}

unsigned vr_fault_burst(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
{
	struct vr_fault *f = arg;

	for (unsigned i = 0; i < n; i++)
		one(f, pkts[i], now);
	release(f, now);
	out_flush(f, now);
	return n;
}

void vr_fault_poll(struct vr_fault *f, uint64_t now)
{
	release(f, now);
	out_flush(f, now);
}

unsigned vr_fault_held(const struct vr_fault *f)
{
	return f->nheld;
}

const struct vr_fault_stats *vr_fault_stats(const struct vr_fault *f)
{
	return &f->st;
}
