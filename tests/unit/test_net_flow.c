/*
 * test_net_flow.c - what TCP will build on in engine/net: SipHash-2-4
 * against the reference vectors and OpenSSL's SIPHASH MAC, the connection
 * table against a brute-force model over random churn, and the timing wheel
 * against a model clock: no timer early, none later than a tick, far and
 * overdue timers after clock jumps, and timers re-armed from their callback.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "vmrelay/common.h"
#include "vmrelay/netflow.h"
#include "vmrelay/netwheel.h"

static uint64_t rng = 88172645463325252u;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static uint64_t openssl_siphash(const uint8_t key[16], const uint8_t *data, size_t len)
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
	size_t size = 8, outlen = 0;
	OSSL_PARAM params[] = { OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
				OSSL_PARAM_construct_end() };
	uint8_t out[8];

	assert_non_null(ctx);
	assert_int_equal(EVP_MAC_init(ctx, key, 16, params), 1);
	assert_int_equal(EVP_MAC_update(ctx, data, len), 1);
	assert_int_equal(EVP_MAC_final(ctx, out, &outlen, sizeof(out)), 1);
	assert_int_equal(outlen, 8);
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | out[i];
	return v;
}

static void test_siphash_vectors(void **state)
{
	uint8_t key[16], msg[64];

	for (int i = 0; i < 16; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 64; i++)
		msg[i] = (uint8_t)i;
	/* From the reference implementation's vectors.h (key 00..0f, message 00..len-1). */
	assert_true(vr_siphash24(key, msg, 0) == 0x726fdb47dd0e0e31u);
	assert_true(vr_siphash24(key, msg, 1) == 0x74f839c593dc67fdu);
	assert_true(vr_siphash24(key, msg, 15) == 0xa129ca6149be45e5u);
	/* Every length to 64 and random keys against OpenSSL's implementation. */
	for (int round = 0; round < 300; round++) {
		size_t len = (size_t)round % 65;
		for (int i = 0; i < 16; i++)
			key[i] = (uint8_t)rnd();
		for (size_t i = 0; i < len; i++)
			msg[i] = (uint8_t)rnd();
		assert_true(vr_siphash24(key, msg, len) == openssl_siphash(key, msg, len));
	}
}

static struct vr_flow_key flow(unsigned i)
{
	/* A few clients, many ports: collisions in the model's small key space. */
	return (struct vr_flow_key){ .laddr = 0x0a000001u, .raddr = 0xcb007100u + i % 7,
				     .lport = 25, .rport = (uint16_t)(40000 + i / 7) };
}

static void test_flow_table_matches_model(void **state)
{
	enum { SPACE = 3000, MAX = 1000 };
	static uint32_t model[SPACE];          /* 0: absent, else value + 1 */
	uint8_t key[16] = { 1, 2, 3 };
	char err[128];
	struct vr_flow_table *t = vr_flow_table_new(MAX, key, err, sizeof(err));
	unsigned count = 0;

	assert_non_null(t);
	memset(model, 0, sizeof(model));
	for (int op = 0; op < 200000; op++) {
		unsigned i = (unsigned)(rnd() % SPACE);
		struct vr_flow_key k = flow(i);
		uint32_t v = 0;
		switch (rnd() % 3) {
		case 0: {
			uint32_t val = (uint32_t)rnd() & 0xffffff;
			int rc = vr_flow_insert(t, &k, val);
			if (model[i])
				assert_int_equal(rc, -EEXIST);
			else if (count == MAX)
				assert_int_equal(rc, -ENOSPC);
			else {
				assert_int_equal(rc, 0);
				model[i] = val + 1;
				count++;
			}
			break;
		}
		case 1:
			if (model[i]) {
				assert_int_equal(vr_flow_lookup(t, &k, &v), 0);
				assert_int_equal(v, model[i] - 1);
			} else {
				assert_int_equal(vr_flow_lookup(t, &k, &v), -ENOENT);
			}
			break;
		default:
			assert_int_equal(vr_flow_remove(t, &k), model[i] ? 0 : -ENOENT);
			count -= model[i] != 0;
			model[i] = 0;
		}
		assert_int_equal(vr_flow_count(t), count);
	}
	/* Everything the model holds is found once more at the end. */
	for (unsigned i = 0; i < SPACE; i++) {
		struct vr_flow_key k = flow(i);
		uint32_t v;
		assert_int_equal(vr_flow_lookup(t, &k, &v), model[i] ? 0 : -ENOENT);
	}
	vr_flow_table_free(t);
}

static void test_flow_hash_is_keyed(void **state)
{
	uint8_t k1[16] = { 1 }, k2[16] = { 2 };
	char err[128];
	struct vr_flow_table *a = vr_flow_table_new(8, k1, err, sizeof(err));
	struct vr_flow_table *b = vr_flow_table_new(8, k2, err, sizeof(err));
	struct vr_flow_key k = flow(5), swapped = k;

	swapped.lport = k.rport;
	swapped.rport = k.lport;
	assert_true(vr_flow_hash(a, &k) != vr_flow_hash(b, &k));
	assert_true(vr_flow_hash(a, &k) != vr_flow_hash(a, &swapped));
	/* The table hashes as vr_flow_key_hash does under its key (TCP's ISNs use that). */
	assert_true(vr_flow_hash(a, &k) == vr_flow_key_hash(k1, &k));
	assert_true(vr_flow_key_hash(k1, &k) != vr_flow_key_hash(k2, &k));
	assert_null(vr_flow_table_new(0, k1, err, sizeof(err)));
	assert_string_equal(err, "flow: table size 0 is not 1..16777216");
	vr_flow_table_free(a);
	vr_flow_table_free(b);
}

/* Wheel tests: timers with their deadlines and when they fired. */
struct tmr {
	struct vr_wheel_timer t;
	uint64_t deadline, fired_at;
	int fires;
	int rearm;                   /* fire() arms it again this far ahead */
};

static unsigned fire_count;

static void on_fire(struct vr_wheel_timer *wt, void *arg, uint64_t now)
{
	struct tmr *m = (struct tmr *)((char *)wt - offsetof(struct tmr, t));
	struct vr_wheel *w = arg;

	assert_false(vr_wheel_armed(wt));
	assert_true(now >= m->deadline);
	m->fired_at = now;
	m->fires++;
	fire_count++;
	if (m->rearm) {
		m->deadline = now + (uint64_t)m->rearm;
		vr_wheel_arm(w, wt, m->deadline);
	}
}

static void test_wheel_against_model(void **state)
{
	enum { N = 2000, TICK = 10 };
	static struct tmr tm[N];
	struct vr_wheel w;
	uint64_t now = 123457;

	assert_int_equal(vr_wheel_init(&w, 256, TICK, now), 0);
	memset(tm, 0, sizeof(tm));
	fire_count = 0;
	for (int step = 0; step < 20000; step++) {
		struct tmr *m = &tm[rnd() % N];
		switch (rnd() % 4) {
		case 0:
		case 1:
			/* Up to 3 revolutions ahead, so some wait their turn in the slot. */
			m->deadline = now + rnd() % (3 * 256 * TICK);
			m->fired_at = 0;
			vr_wheel_arm(&w, &m->t, m->deadline);
			break;
		case 2:
			vr_wheel_cancel(&w, &m->t);
			break;
		default:
			now += rnd() % (2 * TICK);
			vr_wheel_advance(&w, now, on_fire, &w);
			/* Nothing armed was due a tick ago (on_fire checks none is early). */
			for (unsigned i = 0; i < N; i++)
				if (vr_wheel_armed(&tm[i].t))
					assert_true(tm[i].deadline + TICK > now);
		}
	}
	assert_true(fire_count > 1000);
	vr_wheel_fini(&w);
}

static void test_wheel_jump_and_rearm(void **state)
{
	struct vr_wheel w;
	struct tmr near = { .rearm = 100 }, far = { 0 }, exact = { 0 };

	assert_int_equal(vr_wheel_init(&w, 16, 10, 1000), 0);
	near.deadline = 1005;
	far.deadline = 1000 + 10 * 16 * 5;               /* five revolutions out */
	exact.deadline = 1160;                           /* one revolution: same slot as now */
	vr_wheel_arm(&w, &near.t, near.deadline);
	vr_wheel_arm(&w, &far.t, far.deadline);
	vr_wheel_arm(&w, &exact.t, exact.deadline);
	fire_count = 0;
	assert_int_equal(vr_wheel_advance(&w, 1009, on_fire, &w), 0);   /* not early */
	assert_int_equal(vr_wheel_advance(&w, 1010, on_fire, &w), 1);
	assert_int_equal(near.fires, 1);
	assert_true(vr_wheel_armed(&near.t));                          /* re-armed itself */
	assert_int_equal(vr_wheel_advance(&w, 1159, on_fire, &w), 1);  /* near again at 1110 */
	assert_int_equal(exact.fires, 0);
	assert_int_equal(vr_wheel_advance(&w, 1160, on_fire, &w), 1);
	assert_int_equal(exact.fires, 1);
	/* A jump of several revolutions fires what is due, keeps what is not. */
	near.rearm = 0;
	assert_int_equal(vr_wheel_advance(&w, 1799, on_fire, &w), 1);  /* near, at 1210 */
	assert_int_equal(far.fires, 0);
	assert_true(vr_wheel_armed(&far.t));
	assert_int_equal(vr_wheel_advance(&w, 1800, on_fire, &w), 1);
	assert_int_equal(far.fires, 1);
	assert_int_equal(w.armed, 0);
	assert_int_equal(vr_wheel_init(&w, 100, 10, 0), -EINVAL);
	vr_wheel_fini(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_siphash_vectors),
		cmocka_unit_test(test_flow_table_matches_model),
		cmocka_unit_test(test_flow_hash_is_keyed),
		cmocka_unit_test(test_wheel_against_model),
		cmocka_unit_test(test_wheel_jump_and_rearm),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
