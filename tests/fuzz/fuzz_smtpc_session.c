/*
 * fuzz_smtpc_session.c - libFuzzer harness for the whole outbound client
 * conversation (engine/delivery/smtpc*.c) without TLS: the input is what a
 * hostile or broken server sends.
 *
 * Input: one control octet, then the server's byte stream. The control
 * octet picks the segment sizes, how far time jumps between segments, the
 * message's flags and the body's chunking; the client always has a
 * message to send (three recipients, one of them unsendable, a body with
 * dots and bare line ends) and takes up to three, the next one behind an
 * end of data when the server offers PIPELINING (so two copies take
 * turns). Checked, on every run:
 *  - what the client writes never holds a bare CR or LF (no smuggling of
 *    our own) and stays within its output bound;
 *  - every message handed over comes back exactly once and in order, at
 *    most two out at a time, each recipient
 *    with a reply of 200-599, a 2xx only when the message was sent, and
 *    the status agrees with the recipients' replies;
 *  - the connection ends, reported once: at the latest when the stream is
 *    over and the server closes.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 * Run:   build-fuzz/tests/fuzz/fuzz_smtpc_session -max_total_time=60
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/smtpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static const char body_text[] = ".first\r\nbare\nline\rend\r\n..\r\nno final";

/* Message n goes in slot[n % 2]. */
struct slot {
	struct vr_smtpc_msg msg;
	struct vr_smtpc_rcpt rcpts[3];
	size_t off, chunk;           /* body pulled this many bytes at a time */
};

struct run {
	struct vr_smtpc *c;
	struct slot slot[2];
	unsigned handed, done, ready, closed;
	uint64_t now;
	bool prev_cr;                /* output: the last byte was CR */
};

static ssize_t body(void *cookie, uint8_t *buf, size_t cap)
{
	struct slot *s = cookie;
	size_t n = VR_MIN(VR_MIN(cap, s->chunk), sizeof(body_text) - 1 - s->off);

	memcpy(buf, body_text + s->off, n);
	s->off += n;
	return (ssize_t)n;
}

static void hand(struct run *r)
{
	if (r->handed == 3) {
		vr_smtpc_quit(r->c, r->now);
		return;
	}
	struct slot *s = &r->slot[r->handed % 2];
	s->off = 0;
	if (vr_smtpc_send(r->c, &s->msg, r->now) == 0)
		r->handed++;
}

static void on_ready(void *owner)
{
	struct run *r = owner;

	/* Idle, or behind the end of data of the one message out. */
	CHECK(r->handed - r->done <= 1);
	r->ready++;
	hand(r);
}

static void on_msg_done(void *owner, struct vr_smtpc_msg *m, enum vr_smtpc_status st,
			const struct vr_smtpc_reply *reply)
{
	struct run *r = owner;
	bool ok = false, temp = false;

	CHECK(r->done < r->handed && m == &r->slot[r->done % 2].msg);
	r->done++;
	for (size_t i = 0; i < m->n_rcpts; i++) {
		const struct vr_smtpc_reply *x = &m->rcpts[i].reply;
		CHECK(x->code >= 200 && x->code <= 599 && x->code / 100 != 3);
		CHECK(strlen(x->text) < sizeof(x->text));
		ok |= vr_smtpc_reply_ok(x);
		temp |= vr_smtpc_reply_temp(x);
	}
	CHECK(ok == (st == VR_SMTPC_SENT));
	CHECK(ok || temp == (st == VR_SMTPC_DEFER));
	CHECK(reply->code >= 200 && reply->code <= 599);
}

static void on_closed(void *owner, const struct vr_smtpc_reply *reply)
{
	struct run *r = owner;

	r->closed++;
	CHECK(reply->code >= 200 && reply->code <= 599);
}

static const struct vr_smtpc_ops ops = { on_ready, on_msg_done, on_closed };

/* Takes all output, checking its line ends. */
static void drain(struct run *r)
{
	const uint8_t *p;
	size_t n;

	while ((n = vr_smtpc_tx_peek(r->c, &p)) > 0) {
		CHECK(n <= 256 * 1024);
		for (size_t i = 0; i < n; i++) {
			CHECK((p[i] == '\n') == r->prev_cr);
			r->prev_cr = p[i] == '\r';
		}
		vr_smtpc_tx_consume(r->c, n, r->now);
	}
}

static void tick(struct run *r)
{
	if (vr_smtpc_deadline(r->c) <= r->now)
		vr_smtpc_tick(r->c, r->now);
	drain(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run r;
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(25) };
	struct vr_smtpc_timeouts to = { 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000 };
	const struct vr_smtpc_params p = {
		.helo_name = "relay.fuzz", .peer_name = "mx.fuzz", .peer = (struct sockaddr *)&sin,
		.max_msgs = 2, .timeouts = &to, .ops = &ops, .owner = &r,
	};

	if (size < 1)
		return 0;
	uint8_t ctl = data[0];
	size_t seg = (size_t)(ctl & 0x7) * 7 + 1;
	uint64_t step = (ctl & 0x18) == 0x18 ? 700 : 0;

	memset(&r, 0, sizeof(r));
	for (unsigned k = 0; k < 2; k++) {
		struct slot *s = &r.slot[k];
		s->rcpts[0].addr = "a@b.fuzz";
		s->rcpts[1].addr = "bad\r\n@b.fuzz";
		s->rcpts[2].addr = (ctl & 0x20) ? "j\xc3\xb6rg@b.fuzz" : "c@b.fuzz";
		s->msg = (struct vr_smtpc_msg){ "s@x.fuzz", s->rcpts, 3, sizeof(body_text) - 1,
						(ctl & 0x40) ? VR_SMTPC_8BIT : 0u, body, s };
		s->chunk = (ctl & 0x80) ? 1 : 64;
	}
	r.now = 1;
	r.c = vr_smtpc_new(&p, r.now);
	CHECK(r.c);
	hand(&r);
	for (size_t off = 1; off < size && !vr_smtpc_done(r.c);) {
		size_t n = VR_MIN(VR_MIN(seg, size - off), vr_smtpc_rx_space(r.c));
		if (n == 0)
			break;
		vr_smtpc_rx(r.c, data + off, n, r.now);
		off += n;
		drain(&r);
		r.now += step;
		tick(&r);
	}
	vr_smtpc_rx_eof(r.c, 0, r.now);
	tick(&r);
	CHECK(vr_smtpc_done(r.c) && r.closed == 1);
	CHECK(r.done == r.handed);
	vr_smtpc_free(r.c);
	return 0;
}
