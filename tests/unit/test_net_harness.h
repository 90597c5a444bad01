/*
 * test_net_harness.h - the fixture test_net.c and test_net6.c share around
 * a struct vr_net: a fake port that copies out what the stack transmits
 * (taking at most tx_accept frames a burst), a teardown that checks no
 * packet buffer leaked, and inject() to hand the stack one frame.
 * Include after cmocka.h and vmrelay/net.h.
 */
#ifndef TEST_NET_HARNESS_H
#define TEST_NET_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* What the stack transmitted, copied out. */
struct frame {
	uint8_t b[2048];
	size_t len;
};
static struct frame sent[64];
static unsigned nsent;
static unsigned tx_accept = ~0u;       /* frames the fake port takes per burst */

static unsigned tx_capture(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
{
	unsigned take = n < tx_accept ? n : tx_accept;

	for (unsigned i = 0; i < take; i++) {
		assert_true(nsent < VR_ARRAY_SIZE(sent));
		memcpy(sent[nsent].b, pkts[i]->data, pkts[i]->len);
		sent[nsent++].len = pkts[i]->len;
		vr_net_pkt_free(pkts[i]);
	}
	return take;
}

static int teardown(void **state)
{
	struct vr_net *n = *state;

	assert_int_equal(vr_net_pkt_in_use(n), 0);
	vr_net_free(n);
	return 0;
}

static void inject(struct vr_net *n, const uint8_t *b, size_t len, uint64_t now)
{
	struct vr_pkt *p = vr_net_pkt_alloc(n);

	assert_non_null(p);
	memcpy(p->data, b, len);
	p->len = (uint16_t)len;
	vr_net_rx(n, &p, 1, now);
}

#endif
