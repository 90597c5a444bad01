/*
 * smtpc_msg.c - one message over an established client connection:
 * [RSET] MAIL RCPT... DATA, the body, the final dot (see vmrelay/smtpc.h).
 *
 * The transaction is two cursors over the same command sequence: tx_step is
 * the next command to write, rx_step the command whose reply comes next.
 * With PIPELINING (RFC 2920) the writer runs ahead and the whole group goes
 * out in one write; without, it waits for each reply. Replies are matched
 * to commands by order alone, so a pipelined RCPT's 503 after a refused
 * MAIL is consumed like any other and the recipient keeps MAIL's reply.
 *
 * With PIPELINING, once a message's end of data is out the owner is
 * offered the next message at once (ready), and its MAIL, RCPT and DATA
 * go out behind the dot: one round trip per message instead of two
 * (RFC 2920 3.1 lets message content start a command group). The dot's
 * reply comes first, and decides that message alone; a 421 or a lost
 * connection ends both.
 *
 * The body is pulled from the caller only while the output is below its
 * low-water mark, and filtered on the way: every line end becomes CR LF
 * (a bare CR or LF never leaves us: SMTP smuggling), a line starting with
 * "." gets another (RFC 5321 4.5.2), and a body not ending in a line end
 * gets one before the final ".".
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "vmrelay/utf8.h"
#include "smtpc_impl.h"

#define BODY_CHUNK 8192
/* RFC 5321 4.5.3.1.3: a path is at most 256 octets with its brackets. */
#define PATH_MAX_LEN 254

/* The RFC 5321 timeout for the reply to each step. */
static uint32_t step_timeout(const struct vr_smtpc *c, enum smtpc_step s)
{
	static const size_t field[] = {
		[STEP_RSET] = offsetof(struct vr_smtpc_timeouts, helo),
		[STEP_MAIL] = offsetof(struct vr_smtpc_timeouts, mail),
		[STEP_RCPT] = offsetof(struct vr_smtpc_timeouts, rcpt),
		[STEP_DATA] = offsetof(struct vr_smtpc_timeouts, data),
		[STEP_END] = offsetof(struct vr_smtpc_timeouts, dot),
	};
	uint32_t v;

	memcpy(&v, (const char *)&c->to + field[s], sizeof(v));
	return v;
}

const char *vr_smtpc_msg_phase(const struct vr_smtpc *c)
{
	static const char *const step_phase[] = {
		[STEP_RSET] = "sending RSET",
		[STEP_MAIL] = "sending MAIL FROM",
		[STEP_RCPT] = "sending RCPT TO",
		[STEP_DATA] = "sending DATA command",
		[STEP_END] = "sending end of data -- message may be sent more than once",
	};

	if (c->state == S_BODY)
		return "sending message body";
	if (c->state == S_DOT || c->dot_msg)
		return step_phase[STEP_END];
	return step_phase[c->rx_step];
}

/* --- addresses --- */

/*
 * 0: fine as ASCII; 1: needs SMTPUTF8; -1: not sendable (empty, too long,
 * control bytes or angle brackets that would break the command line, or
 * malformed UTF-8).
 */
static int addr_check(const char *a, bool may_be_empty)
{
	size_t n = strlen(a);
	int utf8 = 0;

	if ((n == 0 && !may_be_empty) || n > PATH_MAX_LEN)
		return -1;
	for (size_t i = 0; i < n;) {
		uint8_t b = (uint8_t)a[i];
		if (b < 0x20 || b == 0x7f || b == '<' || b == '>')
			return -1;
		size_t k = vr_utf8_seq((const uint8_t *)a + i, n - i);
		if (k == 0)
			return -1;
		utf8 |= k > 1;
		i += k;
	}
	return utf8;
}

static bool rcpt_valid(const struct vr_smtpc_rcpt *r)
{
	return addr_check(r->addr, false) >= 0;
}

/* The first sendable recipient from i on, or n_rcpts. */
static size_t rcpt_next(const struct vr_smtpc_msg *m, size_t i)
{
	while (i < m->n_rcpts && !rcpt_valid(&m->rcpts[i]))
		i++;
	return i;
}

static void step_advance(const struct vr_smtpc *c, enum smtpc_step *s, size_t *rcpt)
{
	switch (*s) {
	case STEP_RSET:
		*s = STEP_MAIL;
		return;
	case STEP_MAIL:
		*s = STEP_RCPT;
		*rcpt = rcpt_next(c->msg, 0);
		return;
	case STEP_RCPT:
		*rcpt = rcpt_next(c->msg, *rcpt + 1);
		if (*rcpt == c->msg->n_rcpts)
			*s = STEP_DATA;
		return;
	default:
		*s = STEP_END;
		return;
	}
}

/* --- ending a message --- */

static enum vr_smtpc_status msg_status(const struct vr_smtpc_msg *m)
{
	bool temp = false;

	for (size_t i = 0; i < m->n_rcpts; i++) {
		if (vr_smtpc_reply_ok(&m->rcpts[i].reply))
			return VR_SMTPC_SENT;
		temp |= !(m->rcpts[i].reply.code >= 500);
	}
	return temp ? VR_SMTPC_DEFER : VR_SMTPC_BOUNCE;
}

/* Hands m back to the owner; decided is the reply that decided it, code 0
 * if none did. A copy: msg_done may send the next message, which reuses
 * c->reply. */
static void msg_give_back(struct vr_smtpc *c, struct vr_smtpc_msg *m,
			  const struct vr_smtpc_reply *decided)
{
	enum vr_smtpc_status st = msg_status(m);
	struct vr_smtpc_reply r = *decided;

	/* No single reply decided (every recipient refused): the first one
	 * of the outcome's kind speaks for the message. */
	for (size_t i = 0; i < m->n_rcpts && r.code == 0; i++) {
		const struct vr_smtpc_reply *x = &m->rcpts[i].reply;
		if ((st == VR_SMTPC_BOUNCE) == (x->code >= 500))
			r = *x;
	}
	c->ops->msg_done(c->owner, m, st, &r);
}

/* The owner may hand over the next message while the end of data of the
 * one before waits for its reply. */
static void offer_next(struct vr_smtpc *c)
{
	if (c->quit_asked || (c->max_msgs && c->msgs >= c->max_msgs))
		return;
	c->ops->ready(c->owner);
}

/* Hands the message back; returns with the connection idle (or waiting
 * for the reply to the end of data before it), or closed. */
static void msg_end(struct vr_smtpc *c, uint64_t now, bool closing)
{
	struct vr_smtpc_msg *m = c->msg;
	struct vr_smtpc_reply r = c->reply;

	c->msg = NULL;
	if (!closing && c->dot_msg) {
		c->state = S_DOT;
		c->deadline = c->dot_deadline;
	} else if (!closing) {
		c->state = S_IDLE;
		c->deadline = UINT64_MAX;
	}
	msg_give_back(c, m, &r);
	if (closing || c->msg)
		return;
	if (c->state == S_IDLE)
		vr_smtpc_idle(c, now);
	else if (c->state == S_DOT && c->dot_msg)
		offer_next(c);
}

/* Recipients not refused yet (no reply, or a provisional RCPT 2xx) share
 * the failure; a refusal already received stands. */
static void rcpts_fail(struct vr_smtpc_msg *m, const struct vr_smtpc_reply *r)
{
	for (size_t i = 0; i < m->n_rcpts; i++) {
		struct vr_smtpc_reply *x = &m->rcpts[i].reply;
		if (x->code == 0 || vr_smtpc_reply_ok(x))
			*x = *r;
	}
}

void vr_smtpc_msg_abort(struct vr_smtpc *c, const struct vr_smtpc_reply *r)
{
	/* The older message first: its end of data went out first. */
	if (c->dot_msg) {
		struct vr_smtpc_msg *m = c->dot_msg;
		c->dot_msg = NULL;
		rcpts_fail(m, r);
		msg_give_back(c, m, r);
	}
	if (!c->msg)
		return;
	rcpts_fail(c->msg, r);
	c->reply = *r;
	msg_end(c, 0, true);
}

void vr_smtpc_msg_refused(struct vr_smtpc *c, uint64_t now_ms)
{
	c->refuse_pending = false;
	msg_end(c, now_ms, false);
}

/* --- starting one --- */

/* Every recipient not refused already gets this local reply. */
static void refuse_all(struct vr_smtpc *c, unsigned code, const char *enh, const char *text)
{
	for (size_t i = 0; i < c->msg->n_rcpts; i++) {
		struct vr_smtpc_rcpt *x = &c->msg->rcpts[i];
		if (x->reply.code == 0)
			vr_smtpc_local(&x->reply, code, enh, "%s", text);
	}
}

void vr_smtpc_msg_start(struct vr_smtpc *c, uint64_t now_ms)
{
	struct vr_smtpc_msg *m = c->msg;
	int from = addr_check(m->from, true), utf8 = from > 0 || (m->flags & VR_SMTPC_SMTPUTF8);
	size_t valid = 0;
	char text[VR_SMTPC_TEXT_MAX];

	memset(&c->reply, 0, sizeof(c->reply));
	for (size_t i = 0; i < m->n_rcpts; i++) {
		struct vr_smtpc_rcpt *x = &m->rcpts[i];
		int rc = addr_check(x->addr, false);
		if (rc < 0) {
			vr_smtpc_local(&x->reply, 553, "5.1.3",
				       "bad recipient address syntax (control bytes, brackets, "
				       "bad UTF-8 or over %d bytes)", PATH_MAX_LEN);
			continue;
		}
		utf8 |= rc;
		valid++;
	}
	/* Refusals are reported from the next tick, never from inside
	 * vr_smtpc_send(): its caller may be in one of our callbacks. */
	c->refuse_pending = true;
	if (from < 0) {
		refuse_all(c, 553, "5.1.7", "bad sender address syntax (control bytes, brackets, "
			   "bad UTF-8 or too long)");
		return;
	}
	if (utf8 && !(c->caps & VR_SMTPC_CAP_SMTPUTF8)) {
		/* RFC 6531 3.4: no downgrade; the sender gets a DSN. */
		snprintf(text, sizeof(text), "SMTPUTF8 is required, but was not offered by host %s",
			 c->peer);
		refuse_all(c, 550, "5.6.7", text);
		return;
	}
	if (c->size_limit && m->size > c->size_limit) {
		snprintf(text, sizeof(text), "message size %llu exceeds size limit %llu of server %s",
			 (unsigned long long)m->size, (unsigned long long)c->size_limit, c->peer);
		refuse_all(c, 552, "5.3.4", text);
		return;
	}
	if (valid == 0)
		return;
	c->refuse_pending = false;
	c->utf8 = utf8;
	c->msgs++;
	c->tx_step = c->rx_step = c->rset_needed ? STEP_RSET : STEP_MAIL;
	c->tx_rcpt = c->rx_rcpt = 0;
	c->rset_needed = false;
	c->pipelining = c->caps & VR_SMTPC_CAP_PIPELINING;
	c->outstanding = 0;
	c->mail_ok = false;
	c->accepted = 0;
	c->data_discard = false;
	c->state = S_TXN;
	/* Behind an end of data, the dot's reply comes first: its timer runs. */
	if (!c->dot_msg)
		vr_smtpc_set_timer(c, step_timeout(c, c->rx_step), now_ms);
	vr_smtpc_msg_pump(c, now_ms);
}

/* --- commands --- */

static void write_step(struct vr_smtpc *c)
{
	const struct vr_smtpc_msg *m = c->msg;

	switch (c->tx_step) {
	case STEP_RSET:
		vr_smtpc_emit(c, "RSET\r\n", 6);
		break;
	case STEP_MAIL: {
		char size[40] = "";
		if ((c->caps & VR_SMTPC_CAP_SIZE) && m->size)
			snprintf(size, sizeof(size), " SIZE=%llu", (unsigned long long)m->size);
		/* 8-bit to a server without 8BITMIME goes anyway, unlabelled,
		 * as Postfix does: refusing would bounce mail that in
		 * practice is delivered fine. */
		vr_smtpc_emitf(c, "MAIL FROM:<%s>%s%s%s\r\n", m->from, size,
			       (m->flags & VR_SMTPC_8BIT) && (c->caps & VR_SMTPC_CAP_8BITMIME)
			       ? " BODY=8BITMIME" : "", c->utf8 ? " SMTPUTF8" : "");
		break;
	}
	case STEP_RCPT:
		vr_smtpc_emitf(c, "RCPT TO:<%s>\r\n", m->rcpts[c->tx_rcpt].addr);
		break;
	case STEP_DATA:
		vr_smtpc_emit(c, "DATA\r\n", 6);
		break;
	case STEP_END:
		return;
	}
	c->outstanding++;
	step_advance(c, &c->tx_step, &c->tx_rcpt);
}

/* One byte through the filter's state; at most 4 bytes out. */
static size_t filter_byte(struct vr_smtpc *c, uint8_t b, uint8_t *out)
{
	size_t o = 0;

	if (c->pending_cr) {
		c->pending_cr = false;
		out[o++] = '\r';
		out[o++] = '\n';
		c->at_bol = true;
		if (b == '\n')
			return o;
	}
	if (b == '\r') {
		c->pending_cr = true;
		return o;
	}
	if (b == '\n') {
		out[o++] = '\r';
		out[o++] = '\n';
		c->at_bol = true;
		return o;
	}
	if (c->at_bol && b == '.')
		out[o++] = '.';
	out[o++] = b;
	c->at_bol = false;
	return o;
}

/*
 * The body filter: line ends to CR LF, dot-stuffing. out holds 2n + 2.
 * Stored mail is CR LF lines already, so the middle of a line, up to and
 * with its CR LF, is copied whole (found with memchr); line starts, bare
 * CRs and LFs and a CR LF split between chunks go byte by byte.
 */
static size_t body_filter(struct vr_smtpc *c, const uint8_t *in, size_t n, uint8_t *out)
{
	size_t o = 0, i = 0;

	while (i < n) {
		if (c->pending_cr || c->at_bol) {
			o += filter_byte(c, in[i++], out + o);
			continue;
		}
		const uint8_t *lf = memchr(in + i, '\n', n - i);
		size_t end = lf ? (size_t)(lf - in) : n;
		const uint8_t *cr = memchr(in + i, '\r', end - i);
		size_t stop = cr ? (size_t)(cr - in) : end;
		if (lf && stop + 1 == end) {
			stop = end + 1;                 /* the line's own CR LF */
			c->at_bol = true;
		}
		memcpy(out + o, in + i, stop - i);
		o += stop - i;
		i = stop;
		/* Stopped at a bare CR or LF, or a CR whose LF is still to come. */
		if (i < n && !c->at_bol)
			o += filter_byte(c, in[i++], out + o);
	}
	return o;
}

/* The end of data is out; with PIPELINING the message steps aside into
 * dot_msg and the owner may hand over the next one at once. */
static void dot_sent(struct vr_smtpc *c, uint64_t now)
{
	vr_smtpc_emit(c, ".\r\n", 3);
	c->state = S_DOT;
	vr_smtpc_set_timer(c, c->to.dot, now);
	if (!c->pipelining || c->quit_asked || (c->max_msgs && c->msgs >= c->max_msgs))
		return;
	c->dot_msg = c->msg;
	c->dot_discard = c->data_discard;
	c->dot_deadline = c->deadline;
	c->dot_reply = c->reply;
	c->msg = NULL;
	offer_next(c);
}

static void body_end(struct vr_smtpc *c, uint64_t now)
{
	c->body_eof = true;
	if (c->pending_cr || !c->at_bol)
		vr_smtpc_emit(c, "\r\n", 2);
	c->pending_cr = false;
	dot_sent(c, now);
}

static void body_pull(struct vr_smtpc *c, uint64_t now)
{
	uint8_t in[BODY_CHUNK], out[2 * BODY_CHUNK + 2];

	while (c->state == S_BODY && !c->broken && vr_smtpc_out_len(c) < SMTPC_TX_LOW) {
		ssize_t n = c->msg->body(c->msg->cookie, in, sizeof(in));
		if (n < 0 || (size_t)n > sizeof(in)) {
			struct vr_smtpc_reply r;
			/* Half a message is out: only dropping the connection
			 * keeps the server from delivering it. */
			vr_smtpc_local(&r, 451, "4.3.0",
				       "local error: cannot read the message body; connection "
				       "to %s dropped", c->peer);
			vr_smtpc_fail(c, &r);
			return;
		}
		if (n == 0) {
			body_end(c, now);
			return;
		}
		vr_smtpc_emit(c, out, body_filter(c, in, (size_t)n, out));
	}
}

void vr_smtpc_msg_pump(struct vr_smtpc *c, uint64_t now_ms)
{
	if (c->state == S_BODY) {
		/* Progress resets the data block timeout. */
		vr_smtpc_set_timer(c, c->to.block, now_ms);
		body_pull(c, now_ms);
		return;
	}
	while (c->state == S_TXN && c->tx_step != STEP_END && !c->broken &&
	       (c->pipelining ? vr_smtpc_out_len(c) < SMTPC_TX_LOW : c->outstanding == 0))
		write_step(c);
}

/* --- replies --- */

/*
 * A reply of the wrong kind (a 3xx to RCPT, a 2xx to DATA) becomes a local
 * 4xx quoting it: counting it as an acceptance could lose mail, counting it
 * as a refusal could bounce it.
 */
static void expect(struct vr_smtpc *c, struct vr_smtpc_reply *r, unsigned ok_class)
{
	unsigned cls = r->code / 100;

	if (cls == ok_class || cls == 4 || cls == 5)
		return;
	struct vr_smtpc_reply q = *r;
	vr_smtpc_local(r, 451, "4.5.0", "unexpected reply from %s while %s: %u %s", c->peer,
		       vr_smtpc_msg_phase(c), q.code, q.text);
}

/* Every recipient of m that RCPT accepted gets r (DATA's refusal, or the
 * final word). */
static void rcpts_accepted_get(struct vr_smtpc_msg *m, const struct vr_smtpc_reply *r)
{
	for (size_t i = 0; i < m->n_rcpts; i++) {
		struct vr_smtpc_reply *x = &m->rcpts[i].reply;
		if (vr_smtpc_reply_ok(x))
			*x = *r;
	}
}

static void accepted_get(struct vr_smtpc *c, const struct vr_smtpc_reply *r)
{
	rcpts_accepted_get(c->msg, r);
	c->reply = *r;
}

/* The reply to the end of data of dot_msg, with the next message's
 * commands out behind it (or a local refusal of it pending, or none). */
static void on_dot_msg_reply(struct vr_smtpc *c, struct vr_smtpc_reply *r, uint64_t now)
{
	struct vr_smtpc_msg *m = c->dot_msg;

	expect(c, r, 2);
	c->dot_msg = NULL;
	if (!c->dot_discard)
		rcpts_accepted_get(m, r);
	if (c->state == S_TXN) {
		vr_smtpc_set_timer(c, step_timeout(c, c->rx_step), now);
	} else {
		/* Nothing went out behind it: idle, as msg_end leaves it. */
		c->state = S_IDLE;
		c->deadline = UINT64_MAX;
	}
	msg_give_back(c, m, c->dot_discard ? &c->dot_reply : r);
	if (c->state == S_IDLE && !c->msg)
		vr_smtpc_idle(c, now);
}

static void on_rcpt_reply(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now)
{
	if (c->mail_ok) {
		c->msg->rcpts[c->rx_rcpt].reply = *r;
		c->accepted += vr_smtpc_reply_ok(r);
	}
	step_advance(c, &c->rx_step, &c->rx_rcpt);
	if (c->rx_step == STEP_DATA && !c->pipelining && c->accepted == 0) {
		/* MAIL stands with nobody to send to: the next one needs RSET. */
		c->rset_needed = true;
		msg_end(c, now, false);
	}
}

static void on_data_reply(struct vr_smtpc *c, const struct vr_smtpc_reply *r, uint64_t now)
{
	bool go = c->mail_ok && c->accepted > 0;

	c->rx_step = STEP_END;
	if (r->code == 354) {
		c->at_bol = true;
		c->pending_cr = false;
		c->body_eof = false;
		if (!go) {
			/* RFC 2920 3.1 says the server should have refused DATA
			 * with no recipients; some do not. End it empty. */
			c->data_discard = true;
			dot_sent(c, now);
			return;
		}
		c->state = S_BODY;
		vr_smtpc_msg_pump(c, now);
		return;
	}
	if (go)
		accepted_get(c, r);
	c->rset_needed = c->mail_ok;
	msg_end(c, now, false);
}

void vr_smtpc_msg_reply(struct vr_smtpc *c, const struct vr_smtpc_reply *reply, uint64_t now_ms)
{
	struct vr_smtpc_reply r = *reply;

	if (r.code == 421) {
		/* RFC 5321 3.8: the server is closing the channel; whatever we
		 * pipelined after this command will never be answered. */
		vr_smtpc_fail(c, &r);
		return;
	}
	if (c->dot_msg) {
		on_dot_msg_reply(c, &r, now_ms);
		return;
	}
	if (c->state == S_DOT) {
		expect(c, &r, 2);
		if (!c->data_discard)
			accepted_get(c, &r);
		msg_end(c, now_ms, false);
		return;
	}
	c->outstanding--;
	expect(c, &r, c->rx_step == STEP_DATA ? 3 : 2);
	if (c->rx_step == STEP_DATA && r.code / 100 == 3 && r.code != 354)
		vr_smtpc_local(&r, 451, "4.5.0", "unexpected reply from %s to DATA: %u %s",
			       c->peer, reply->code, reply->text);
	switch (c->rx_step) {
	case STEP_RSET:
		if (!vr_smtpc_reply_ok(&r)) {
			struct vr_smtpc_reply f;
			vr_smtpc_local(&f, 421, "4.4.2", "host %s refused RSET: %u %s", c->peer,
				       r.code, r.text);
			vr_smtpc_fail(c, &f);
			return;
		}
		step_advance(c, &c->rx_step, &c->rx_rcpt);
		break;
	case STEP_MAIL:
		step_advance(c, &c->rx_step, &c->rx_rcpt);
		c->mail_ok = vr_smtpc_reply_ok(&r);
		if (!c->mail_ok) {
			c->reply = r;
			for (size_t i = 0; i < c->msg->n_rcpts; i++)
				if (c->msg->rcpts[i].reply.code == 0)
					c->msg->rcpts[i].reply = r;
			if (!c->pipelining) {
				msg_end(c, now_ms, false);
				return;
			}
		}
		break;
	case STEP_RCPT:
		on_rcpt_reply(c, &r, now_ms);
		break;
	case STEP_DATA:
		on_data_reply(c, &r, now_ms);
		return;
	case STEP_END:
		return;
	}
	if (c->state != S_TXN)
		return;
	vr_smtpc_set_timer(c, step_timeout(c, c->rx_step), now_ms);
	vr_smtpc_msg_pump(c, now_ms);
}
