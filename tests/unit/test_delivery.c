/*
 * test_delivery.c - the delivery scheduler's pure parts: the backoff
 * schedule, jobs by destination, fairness between VPSes and retry times
 * under a fake clock, messages rebuilt from their spool state, and the DSN
 * text.
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

#include "vmrelay/delivery.h"
#include "../../engine/delivery/delivery_impl.h"

#define T0 1700000000000000ull  /* the fake clock's start, wall us */

static void test_backoff(void **state)
{
	static const uint64_t want[] = { 300, 600, 1200, 2400, 3600, 3600, 3600 };

	for (unsigned i = 0; i < VR_ARRAY_SIZE(want); i++)
		assert_int_equal(vr_delivery_backoff_s(i + 1, 300, 3600), want[i]);
	/* A cap below a doubling step is kept exactly; huge counts do not wrap. */
	assert_int_equal(vr_delivery_backoff_s(3, 300, 1000), 1000);
	assert_int_equal(vr_delivery_backoff_s(100000, 1, 86400), 86400);
	assert_int_equal(vr_delivery_backoff_s(1, 2, 2), 2);
}

/* A message as the spool would hand it over. */
static struct dq_msg *msg(const char *qid, const char *account, const char *const *rcpts,
			  unsigned n)
{
	char seg[] = "seg/w0-0000000001.seg";
	struct vr_spool_msg m = {
		.account = (char *)account, .client = "192.0.2.1", .helo = "h",
		.mail_from = "a@example.com", .rcpts = (char **)rcpts, .n_rcpts = n,
		.received_us = T0, .size = 10, .segment = seg, .offset = 40,
	};
	snprintf(m.qid, sizeof(m.qid), "%s", qid);
	struct dq_msg *d = vr_dq_msg_new(&m, NULL);
	assert_non_null(d);
	return d;
}

static const char *const one_rcpt[] = { "x@dest.example" };

static void test_fairness(void **state)
{
	struct dq q;
	char qid[16];

	vr_dq_init(&q, "127.0.0.1:2525");
	/* VPS a queues 30 messages before b and c queue 3 each. */
	for (unsigned i = 0; i < 30; i++) {
		snprintf(qid, sizeof(qid), "A%012u", i);
		assert_int_equal(vr_dq_msg_add(&q, msg(qid, "a", one_rcpt, 1), T0), 0);
	}
	for (unsigned i = 0; i < 3; i++) {
		snprintf(qid, sizeof(qid), "B%012u", i);
		assert_int_equal(vr_dq_msg_add(&q, msg(qid, "b", one_rcpt, 1), T0), 0);
		snprintf(qid, sizeof(qid), "C%012u", i);
		assert_int_equal(vr_dq_msg_add(&q, msg(qid, "c", one_rcpt, 1), T0), 0);
	}
	struct dq_dest *d = vr_dq_kicked(&q);
	assert_non_null(d);
	assert_null(vr_dq_kicked(&q));     /* one destination: the smarthost */
	assert_int_equal(d->ready, 36);

	/* The first nine turns go a, b, c, a, b, c...; each VPS's own mail
	 * stays in order; then a alone. */
	char order[37] = "";
	unsigned seen_a = 0;
	for (unsigned i = 0; i < 36; i++) {
		struct dq_job *j = vr_dq_job_take(&q, d);
		assert_non_null(j);
		order[i] = j->msg->account[0];
		if (order[i] == 'a') {
			snprintf(qid, sizeof(qid), "A%012u", seen_a++);
			assert_string_equal(j->msg->qid, qid);
		}
		j->dest->flying--;
		struct dq_msg *m = j->msg;
		m->pending = 0;         /* delivered */
		vr_dq_job_free(&q, j);
		vr_dq_msg_release(&q, m);
	}
	assert_string_equal(order, "abcabcabcaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_null(vr_dq_job_take(&q, d));
	assert_int_equal(q.n_msgs, 0);
	vr_dq_free(&q);
}

static void test_retry_clock(void **state)
{
	struct dq q;

	vr_dq_init(&q, "127.0.0.1:2525");
	struct dq_msg *m = msg("R000000000000", "a", one_rcpt, 1);
	assert_int_equal(vr_dq_msg_add(&q, m, T0), 0);
	struct dq_dest *d = vr_dq_kicked(&q);
	struct dq_job *j = vr_dq_job_take(&q, d);
	assert_non_null(j);

	/* Deferred for 300 s: not ready a moment before, ready at the time. */
	assert_int_equal(vr_dq_job_wait(&q, j, T0 + 300000000u), 0);
	assert_int_equal(d->waiting, 1);
	assert_true(vr_dq_next_due_ms(&q) == (T0 + 300000000u) / 1000u);
	assert_int_equal(vr_dq_due(&q, T0 + 299999000u), 0);
	assert_null(vr_dq_job_take(&q, d));
	assert_int_equal(vr_dq_due(&q, T0 + 300000000u), 1);
	assert_ptr_equal(vr_dq_kicked(&q), d);
	assert_ptr_equal(vr_dq_job_take(&q, d), j);
	assert_true(vr_dq_next_due_ms(&q) == UINT64_MAX);

	/* A message whose state says "next try later" waits from the start. */
	static const char *const r2[] = { "y@dest.example" };
	struct dq_msg *later = msg("R000000000001", "a", r2, 1);
	later->next_us = T0 + 60000000u;
	assert_int_equal(vr_dq_msg_add(&q, later, T0), 0);
	assert_int_equal(d->ready, 0);
	assert_int_equal(d->waiting, 1);
	assert_int_equal(vr_dq_due(&q, T0 + 60000000u), 1);
	assert_int_equal(d->ready, 1);

	j->dest->flying--;
	vr_dq_job_free(&q, j);
	vr_dq_free(&q);
}

static void test_jobs_by_domain(void **state)
{
	static const char *const rcpts[] = {
		"a@one.example", "b@Two.Example", "c@ONE.example", "d@two.example", "e@three.example",
	};
	struct dq q;

	vr_dq_init(&q, NULL);
	struct dq_msg *m = msg("D000000000000", "a", rcpts, 5);
	/* Recipient 3 was delivered before a restart: not tried again. */
	m->rcpt_state[3] = VR_STATE_DELIVERED;
	m->pending = 4;
	assert_int_equal(vr_dq_msg_add(&q, m, T0), 0);
	assert_int_equal(m->jobs, 3);

	struct dq_dest *one = vr_dq_dest_get(&q, "z@one.EXAMPLE");
	struct dq_dest *two = vr_dq_dest_get(&q, "z@two.example");
	assert_string_equal(one->name, "one.example");
	struct dq_job *j = vr_dq_job_take(&q, one);
	assert_int_equal(j->n, 2);
	assert_int_equal(j->rcpt[0], 0);
	assert_int_equal(j->rcpt[1], 2);
	struct dq_job *k = vr_dq_job_take(&q, two);
	assert_int_equal(k->n, 1);
	assert_int_equal(k->rcpt[0], 1);
	j->dest->flying--;
	k->dest->flying--;
	vr_dq_job_free(&q, j);
	vr_dq_job_free(&q, k);
	vr_dq_free(&q);
}

static void test_msg_from_state(void **state)
{
	static const char *const rcpts[] = { "a@x.example", "b@x.example", "c@x.example" };
	char seg[] = "seg/w0-0000000001.seg";
	uint8_t st_rcpt[3] = { VR_STATE_DELIVERED, 0, VR_STATE_BOUNCED };
	struct vr_spool_msg m = {
		.qid = "S000000000000", .account = "vps1", .client = "c", .helo = "h",
		.mail_from = "", .rcpts = (char **)rcpts, .n_rcpts = 3, .received_us = T0,
		.segment = seg, .flags = VR_SPOOL_HOLD,
	};
	const struct vr_spool_qstate st = {
		.rcpt = st_rcpt, .pending = 1, .attempts = 4, .next_us = T0 + 5,
		.held = false, .dkim = "DKIM-Signature: a=b\r\n", .dkim_len = 21,
	};
	struct dq_msg *d = vr_dq_msg_new(&m, &st);

	assert_non_null(d);
	assert_int_equal(d->pending, 1);
	assert_int_equal(d->attempts, 4);
	assert_false(d->held);          /* released since: the state wins over the flag */
	assert_int_equal(d->dkim_len, 21);
	assert_string_equal(d->dkim, "DKIM-Signature: a=b\r\n");
	assert_string_equal(d->rcpts[1], "b@x.example");
	assert_string_equal(d->mail_from, "");

	/* Just committed with the hold flag: held, all pending, not signed. */
	struct dq_msg *h = vr_dq_msg_new(&m, NULL);
	assert_true(h->held);
	assert_int_equal(h->pending, 3);
	assert_null(h->dkim);

	struct dq q;
	vr_dq_init(&q, "127.0.0.1:1");
	assert_int_equal(vr_dq_msg_add(&q, h, T0), 0);
	assert_int_equal(h->jobs, 0);   /* held: no job until released */
	assert_int_equal(vr_dq_msg_add(&q, d, T0), 0);
	assert_int_equal(q.n_msgs, 2);
	vr_dq_free(&q);
}


static void test_hold_voids_jobs(void **state)
{
	struct dq q;
	static const char *const r2[] = { "p@one.example", "q@two.example" };

	vr_dq_init(&q, NULL);
	struct dq_msg *m = msg("H000000000000", "a", r2, 2);
	assert_int_equal(vr_dq_msg_add(&q, m, T0), 0);
	assert_int_equal(m->jobs, 2);
	struct dq_dest *one = vr_dq_dest_get(&q, "x@one.example");
	struct dq_dest *two = vr_dq_dest_get(&q, "x@two.example");

	/* Held: its jobs are void; taking them drops them, not the message. */
	m->held = true;
	m->gen++;
	assert_null(vr_dq_job_take(&q, one));
	assert_null(vr_dq_job_take(&q, two));
	assert_int_equal(m->jobs, 0);
	assert_ptr_equal(vr_dq_msg_find(&q, "H000000000000"), m);
	assert_int_equal(q.n_msgs, 1);

	/* Released: fresh jobs, one per destination again. */
	m->held = false;
	assert_int_equal(vr_dq_msg_jobs(&q, m, T0), 0);
	struct dq_job *j = vr_dq_job_take(&q, one);
	assert_non_null(j);
	assert_int_equal(j->rcpt[0], 0);

	/* Deleted: found no more, freed with its last job. */
	m->deleted = true;
	m->gen++;
	assert_null(vr_dq_msg_find(&q, "H000000000000"));
	j->dest->flying--;
	vr_dq_job_free(&q, j);
	vr_dq_msg_release(&q, m);
	assert_int_equal(q.n_msgs, 1);  /* the void job for two.example still refers to it */
	assert_null(vr_dq_job_take(&q, two));
	assert_int_equal(q.n_msgs, 0);
	vr_dq_free(&q);
}

struct swept {
	char names[4][48];
	unsigned n;
};

static void sweep_note(const char *name, void *arg)
{
	struct swept *s = arg;

	assert_true(s->n < 4);
	snprintf(s->names[s->n++], sizeof(s->names[0]), "%s", name);
}

static void test_segments_done(void **state)
{
	struct dsegs *s = vr_dsegs_new();
	struct swept sw = { 0 };

	/* Worker 0's segment 1, mail still to do, and a previous run's
	 * segment (sealed) whose mail is all done. */
	assert_int_equal(vr_dsegs_add(s, "seg/w0-0000000001.seg", T0, true, false), 0);
	assert_int_equal(vr_dsegs_add(s, "seg/w0-0000000001.seg", T0 + 5, true, false), 0);
	assert_int_equal(vr_dsegs_add(s, "seg/w1-0000000000.seg", T0, false, true), 0);
	assert_int_equal(vr_dsegs_sweep(s, UINT64_MAX, sweep_note, &sw), 1);
	assert_string_equal(sw.names[0], "seg/w1-0000000000.seg");

	/* Done, but still appended to: stays. */
	vr_dsegs_done(s, "seg/w0-0000000001.seg");
	vr_dsegs_done(s, "seg/w0-0000000001.seg");
	assert_int_equal(vr_dsegs_sweep(s, UINT64_MAX, sweep_note, &sw), 0);
	/* Worker 1's newer segment seals nothing of worker 0's. */
	assert_int_equal(vr_dsegs_add(s, "seg/w1-0000000003.seg", T0, true, false), 0);
	assert_int_equal(vr_dsegs_sweep(s, UINT64_MAX, sweep_note, &sw), 0);
	/* Worker 0 moved on: segment 1 is sealed; it goes once old enough. */
	assert_int_equal(vr_dsegs_add(s, "seg/w0-0000000004.seg", T0 + 9, true, false), 0);
	assert_int_equal(vr_dsegs_sweep(s, T0 + 5, sweep_note, &sw), 0);
	/* A state log sealed while segment 4 was the newest speaks of mail in
	 * segments up to 4: it may go only once all of them are gone. */
	assert_true(vr_dsegs_max_seq(s) == 4);
	assert_false(vr_dsegs_gone_upto(s, 1));
	assert_int_equal(vr_dsegs_sweep(s, T0 + 6, sweep_note, &sw), 1);
	assert_string_equal(sw.names[1], "seg/w0-0000000001.seg");
	assert_true(vr_dsegs_gone_upto(s, 2));
	assert_false(vr_dsegs_gone_upto(s, 3));  /* worker 1's segment 3 still has mail */

	/* A count gone wrong (mail done in a segment never added): from then
	 * on nothing is removed. */
	vr_dsegs_done(s, "seg/w9-0000000009.seg");
	assert_int_equal(vr_dsegs_add(s, "seg/w0-0000000005.seg", T0, false, false), 0);
	assert_int_equal(vr_dsegs_sweep(s, UINT64_MAX, sweep_note, &sw), 0);
	assert_false(vr_dsegs_gone_upto(s, 0));
	vr_dsegs_free(s);

	/* A name that is no segment cannot be counted: nothing is removed. */
	s = vr_dsegs_new();
	assert_int_equal(vr_dsegs_add(s, "seg/w0-0000000001.seg", T0, false, true), 0);
	assert_int_equal(vr_dsegs_add(s, "../etc/passwd", T0, true, true), -ENOMEM);
	assert_int_equal(vr_dsegs_sweep(s, UINT64_MAX, sweep_note, &sw), 0);
	vr_dsegs_free(s);
}

static char *dsn_text(bool expired, const struct dsn_rcpt *r, unsigned n, const char *orig)
{
	struct vr_buf b;

	vr_buf_init(&b, 0);
	size_t hl = vr_dsn_header_len((const uint8_t *)orig, strlen(orig));
	assert_int_equal(vr_dsn_build(&b, "relay.example.net", "QID0000000001", "sender@example.com",
				   T0, T0 + 3600000000ull, expired, r, n, (const uint8_t *)orig, hl),
			 0);
	assert_int_equal(vr_buf_append(&b, "", 1), 0);
	char *s = strdup((const char *)vr_buf_head(&b));
	vr_buf_free(&b);
	return s;
}

static void test_dsn(void **state)
{
	const struct dsn_rcpt r[] = {
		{ "bad@dest.example", "5.1.1", "550 5.1.1 no such user", "mx.dest.example" },
		/* A hostile reply trying to add a field of its own. */
		{ "evil@dest.example", "5.7.1", "550 no\r\nX-Injected: yes", "" },
	};
	const char *orig = "From: a@example.com\r\nSubject: hi\r\n\r\nbody text\r\n";
	char *s = dsn_text(false, r, 2, orig);

	assert_non_null(strstr(s, "To: <sender@example.com>\r\n"));
	assert_non_null(strstr(s, "From: Mail Delivery System <MAILER-DAEMON@relay.example.net>"));
	assert_non_null(strstr(s, "Content-Type: multipart/report; report-type=delivery-status;"));
	assert_non_null(strstr(s, "Content-Type: message/delivery-status\r\n\r\n"
				  "Reporting-MTA: dns; relay.example.net\r\n"));
	assert_non_null(strstr(s, "\r\n\r\nFinal-Recipient: rfc822; bad@dest.example\r\n"
				  "Action: failed\r\nStatus: 5.1.1\r\n"
				  "Remote-MTA: dns; mx.dest.example\r\n"
				  "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
	assert_non_null(strstr(s, "Diagnostic-Code: smtp; 550 no??X-Injected: yes\r\n"));
	assert_null(strstr(s, "\nX-Injected"));
	/* The original's header, not its body. */
	assert_non_null(strstr(s, "Content-Type: text/rfc822-headers\r\n\r\n"
				  "From: a@example.com\r\nSubject: hi\r\n"));
	assert_null(strstr(s, "body text"));
	/* Three parts, each opened by the boundary on a line of its own, and
	 * the closing delimiter last. */
	const char *bd = "\r\n--QID0000000001.1700003600000000/relay.example.net";
	unsigned parts = 0;
	for (const char *p = s; (p = strstr(p, bd)) != NULL; p += strlen(bd))
		parts++;
	assert_int_equal(parts, 4);
	const char *end = strstr(s, "relay.example.net--\r\n");
	assert_non_null(end);
	assert_string_equal(end, "relay.example.net--\r\n");
	free(s);

	/* An SMTPUTF8 recipient reads back exactly (RFC 6533 utf-8-addr-xtext). */
	const struct dsn_rcpt u[] = {
		{ "j\xc3\xbcrgen+x@d\xc3\xa9st.example", "5.6.7", "550", "" },
	};
	s = dsn_text(false, u, 1, "");
	assert_non_null(strstr(s, "\r\nFinal-Recipient: utf-8; "
				  "j\\x{FC}rgen\\x{2B}x@d\\x{E9}st.example\r\n"));
	for (const char *p = s; *p; p++)
		assert_true(*p > 0 && *p < 0x7f);     /* 7-bit throughout */
	free(s);

	const struct dsn_rcpt e[] = { { "slow@dest.example", "4.4.7", "", "" } };
	s = dsn_text(true, e, 1, "");
	assert_non_null(strstr(s, "Status: 4.4.7\r\n"));
	assert_non_null(strstr(s, "Diagnostic-Code: X-Vmrelay; delivery time expired"));
	assert_non_null(strstr(s, "given up"));
	free(s);
}

static void test_header_len(void **state)
{
	const char *m = "A: 1\r\nB: 2\r\n\r\nbody";

	assert_int_equal(vr_dsn_header_len((const uint8_t *)m, strlen(m)), 12);
	assert_int_equal(vr_dsn_header_len((const uint8_t *)"\r\nbody", 6), 0);
	assert_int_equal(vr_dsn_header_len((const uint8_t *)"A: 1\r\n", 6), 6);
	assert_int_equal(vr_dsn_header_len(NULL, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_fairness),
		cmocka_unit_test(test_retry_clock),
		cmocka_unit_test(test_jobs_by_domain),
		cmocka_unit_test(test_msg_from_state),
		cmocka_unit_test(test_hold_voids_jobs),
		cmocka_unit_test(test_segments_done),
		cmocka_unit_test(test_dsn),
		cmocka_unit_test(test_header_len),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
