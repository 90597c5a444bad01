/*
 * tcp_in.c - segment input (RFC 9293 §3.10.7): header and option checks,
 * the lookup (connection, TIME_WAIT entry, listener, or a RST back), and
 * the state machine of a connection: PAWS (RFC 7323 §5), acceptability,
 * RST and SYN judged per RFC 5961 (exact RST resets, anything else in
 * window earns a challenge ACK), ACK processing with RTT samples and NewReno
 * (RFC 5681, RFC 6582), data into the receive ring in order or out of order,
 * and FIN.
 *
 * Out-of-order bytes go straight to their place in the receive ring: the
 * ring always has room for the whole advertised window, so reassembly needs
 * no packet held and no copy beyond the one every byte gets. Which ranges
 * are there is kept in TCP_OOO_MAX (start, end) pairs, also the SACK blocks.
 */
#include <errno.h>
#include <string.h>

#include "tcp_impl.h"

#define OPT_EOL    0
#define OPT_NOP    1
#define OPT_MSS    2
#define OPT_WS     3
#define OPT_SACKOK 4
#define OPT_SACK   5
#define OPT_TS     8

/* Option kinds with a fixed length, checked before they are read. */
static const uint8_t opt_len[] = { [OPT_MSS] = 4, [OPT_WS] = 3, [OPT_SACKOK] = 2, [OPT_TS] = 10 };

static int parse_opts(const uint8_t *o, size_t len, struct tcp_opts *out)
{
	size_t i = 0;

	while (i < len) {
		uint8_t kind = o[i];
		if (kind == OPT_EOL)
			break;
		if (kind == OPT_NOP) {
			i++;
			continue;
		}
		if (i + 1 >= len || o[i + 1] < 2 || i + o[i + 1] > len)
			return -1;
		uint8_t l = o[i + 1];
		if (kind < VR_ARRAY_SIZE(opt_len) && opt_len[kind] && l != opt_len[kind])
			return -1;
		switch (kind) {
		case OPT_MSS:
			out->has_mss = 1;
			out->mss = rd16(o + i + 2);
			break;
		case OPT_WS:
			out->has_ws = 1;
			out->wscale = o[i + 2];
			break;
		case OPT_SACKOK:
			out->sack_ok = 1;
			break;
		case OPT_TS:
			out->has_ts = 1;
			out->tsval = rd32(o + i + 2);
			out->tsecr = rd32(o + i + 6);
			break;
		case OPT_SACK:
			out->nsack = 0;
			for (unsigned k = 2; k + 8 <= l && out->nsack < VR_ARRAY_SIZE(out->sack); k += 8)
				out->sack[out->nsack++] = (struct tcp_range){ rd32(o + i + k),
									      rd32(o + i + k + 4) };
			break;
		default:
			break;
		}
		i += l;
	}
	return 0;
}

uint32_t tcp_initial_cwnd(const struct vr_tcp_conn *c)
{
	if (c->nrtx)
		return c->mss;
	return VR_MIN(10u * c->mss, VR_MAX(2u * c->mss, 14600u));
}

void tcp_syn_options(struct vr_tcp_conn *c, const struct tcp_opts *o, uint64_t now)
{
	const struct vr_tcp_conf *cf = &c->t->conf;
	uint16_t peer_mss = o->has_mss ? o->mss : TCP_MSS_DEFAULT;

	c->mss = VR_MIN(c->mss, VR_MAX(peer_mss, 64));
	c->ws_ok = o->has_ws && !cf->no_wscale;
	c->snd_wscale = c->ws_ok ? VR_MIN(o->wscale, TCP_WSCALE_MAX) : 0;
	c->rcv_wscale = c->ws_ok ? c->t->wscale : 0;
	c->ts_ok = o->has_ts && !cf->no_timestamps;
	c->sack_ok = o->sack_ok && !cf->no_sack;
	if (c->ts_ok) {
		c->ts_recent = o->tsval;
		c->ts_recent_at = now;
	}
}

/*
 * A challenge ACK (RFC 5961 §§3.2, 4.2, 5.2): the peer, if genuine,
 * resynchronizes. Throttled per connection (§7), not per instance: a shared
 * budget is the side channel of CVE-2016-5696, letting an off-path attacker
 * count the challenges someone else's connection provoked.
 */
static void challenge_ack(struct vr_tcp_conn *c, uint64_t now)
{
	if (now - c->challenge_at >= 1000) {
		c->challenge_at = now;
		c->challenges = 0;
	}
	if (c->challenges >= TCP_CHALLENGE_PER_S) {
		vr_net_count(&c->t->st.drop[VR_TCP_DROP_CHALLENGE_LIMIT], 1);
		return;
	}
	c->challenges++;
	vr_net_count(&c->t->st.challenge_acks, 1);
	c->ack_now = 1;
}

static void rtt_sample(struct vr_tcp_conn *c, uint32_t r)
{
	if (!r)
		r = 1;
	/* RFC 6298 §2.2 and §2.3, in eighths and quarters of a millisecond. */
	if (!c->srtt8) {
		c->srtt8 = r << 3;
		c->rttvar4 = r << 1;
	} else {
		int32_t delta = (int32_t)(r << 3) - (int32_t)c->srtt8;
		uint32_t adelta = (uint32_t)(delta < 0 ? -delta : delta) >> 1;   /* in quarters */
		c->rttvar4 = c->rttvar4 - (c->rttvar4 >> 2) + (adelta >> 2);
		c->srtt8 = (uint32_t)((int32_t)c->srtt8 + (delta >> 3));
	}
	tcp_rto_update(c);
}

/* NewReno on an ACK of new data (RFC 5681 §3.1, RFC 6582 §3.2 steps 5 and 6). */
static void cc_newack(struct vr_tcp_conn *c, uint32_t acked, uint64_t now)
{
	uint32_t mss = c->mss;

	if (c->in_recovery) {
		if (seq_ge(c->snd_una, c->recover)) {
			uint32_t flight = c->snd_max - c->snd_una;
			c->cwnd = VR_MIN(c->ssthresh, VR_MAX(flight, mss) + mss);
			c->in_recovery = 0;
			c->dupacks = 0;
		} else {
			/* A partial ACK: the next hole is lost too; deflate by what left. */
			tcp_retransmit_next(c, now);
			c->cwnd = c->cwnd > acked ? c->cwnd - acked : 0;
			if (acked >= mss)
				c->cwnd += mss;
			c->cwnd = VR_MAX(c->cwnd, mss);
		}
		return;
	}
	c->dupacks = 0;
	if (c->cwnd < c->ssthresh)
		c->cwnd += VR_MIN(acked, 2 * mss);          /* RFC 3465 with L = 2 */
	else
		c->cwnd += VR_MAX(1u, mss * mss / c->cwnd);
	c->cwnd = VR_MIN(c->cwnd, 1u << 30);
}

/*
 * RFC 5681 §3.2 and RFC 6582 §3.2 steps 1-4 on a duplicate ACK; and
 * RFC 8985 §7.4: a tail loss probe answered by a SACK below it shows a
 * loss at once, without waiting for three duplicates.
 */
static void cc_dupack(struct vr_tcp_conn *c, const struct tcp_seg *s, uint64_t now)
{
	uint32_t mss = c->mss;

	vr_net_count(&c->t->st.dup_acks_in, 1);
	c->dupacks++;
	if (c->in_recovery) {
		/* A segment left the network: fill a SACKed hole with it, or inflate. */
		if (!c->sack_ok || !tcp_retransmit_next(c, now))
			c->cwnd += mss;
		return;
	}
	int probed = c->tlp_high && c->sack_ok && s->opt.nsack;
	/* Step 1: not after an RTO's retransmissions, whose duplicates say nothing new. */
	if ((c->dupacks != 3 && !probed) || !seq_gt(c->snd_una, c->recover))
		return;
	if (probed)
		vr_net_count(&c->t->st.tlp_recoveries, 1);
	uint32_t flight = c->snd_max - c->snd_una;
	c->ssthresh = VR_MAX(flight / 2, 2 * mss);
	c->recover = c->snd_max;
	c->in_recovery = 1;
	c->tlp_high = 0;                 /* recovery may probe once for itself */
	vr_net_count(&c->t->st.fast_retransmits, 1);
	c->rtx_high = c->snd_una;
	tcp_retransmit_next(c, now);
	c->cwnd = c->ssthresh + 3 * mss;
}

/*
 * The sender's scoreboard (RFC 6675 §3): what the peer SACKed above
 * snd_una, ascending and merged, at most TCP_SACKED_MAX ranges (past that
 * the highest goes: recovery works from the bottom). Blocks outside
 * (snd_una, snd_max] are D-SACKs or lies, and are ignored.
 */
static void sacked_update(struct vr_tcp_conn *c, const struct tcp_opts *o)
{
	unsigned n = 0;

	for (unsigned i = 0; i < c->nsacked; i++) {
		struct tcp_range r = c->sacked[i];
		if (seq_le(r.end, c->snd_una))
			continue;
		if (seq_lt(r.start, c->snd_una))
			r.start = c->snd_una;
		c->sacked[n++] = r;
	}
	c->nsacked = (uint8_t)n;
	for (unsigned b = 0; b < o->nsack; b++) {
		struct tcp_range r = o->sack[b];
		if (!seq_lt(r.start, r.end) || !seq_gt(r.start, c->snd_una) ||
		    seq_gt(r.end, c->snd_max))
			continue;
		unsigned at = 0;
		while (at < c->nsacked && seq_lt(c->sacked[at].end, r.start))
			at++;
		/* Swallow every range it touches from there. */
		unsigned last = at;
		while (last < c->nsacked && seq_le(c->sacked[last].start, r.end)) {
			if (seq_lt(c->sacked[last].start, r.start))
				r.start = c->sacked[last].start;
			if (seq_gt(c->sacked[last].end, r.end))
				r.end = c->sacked[last].end;
			last++;
		}
		unsigned keep = c->nsacked - last;
		if (at == last && c->nsacked == TCP_SACKED_MAX) {
			if (at == TCP_SACKED_MAX)
				continue;            /* above all we keep: drop it */
			keep--;                      /* the highest goes */
		}
		memmove(&c->sacked[at + 1], &c->sacked[last], keep * sizeof(r));
		c->sacked[at] = r;
		c->nsacked = (uint8_t)(at + 1 + keep);
	}
}

/* The ACK field of an acceptable segment (RFC 9293 §3.10.7.4, fifth check). */
static void ack_input(struct vr_tcp_conn *c, const struct tcp_seg *s, uint64_t now)
{
	struct vr_tcp *t = c->t;
	uint32_t win = (uint32_t)s->win << c->snd_wscale;

	if (c->persist)
		c->nrtx = 0;                 /* the peer is alive, only its window is shut */
	if (seq_gt(s->ack, c->snd_una)) {
		uint32_t acked = s->ack - c->snd_una;
		int fin_acked = c->fin_sent && s->ack == c->snd_una + c->slen + 1;
		uint32_t data = VR_MIN(acked - (uint32_t)fin_acked, c->slen);

		if (c->ts_ok && s->opt.has_ts && s->opt.tsecr &&
		    ts_now(c, now) - s->opt.tsecr < 1u << 30)
			rtt_sample(c, ts_now(c, now) - s->opt.tsecr);
		else if (c->rtt_timing && seq_gt(s->ack, c->rtt_seq)) {
			c->rtt_timing = 0;
			rtt_sample(c, (uint32_t)(now - c->rtt_start));
		}
		c->shead = (c->shead + data) % t->conf.sndbuf;
		c->slen -= data;
		c->snd_una = s->ack;
		if (seq_lt(c->snd_nxt, c->snd_una))
			c->snd_nxt = c->snd_una;
		c->nrtx = 0;
		c->persist = 0;
		c->tlp_at = 0;                   /* output arms the next probe */
		if (c->tlp_high && seq_ge(s->ack, c->tlp_high))
			c->tlp_high = 0;
		if (c->sack_ok)
			sacked_update(c, &s->opt);
		cc_newack(c, acked, now);
		c->rtx_at = c->snd_una == c->snd_max ? 0 : now + c->rto;
		if (c->writable_wanted && c->slen < t->conf.sndbuf && !c->fin_queued) {
			c->writable_wanted = 0;
			c->writable_due = 1;
		}
		if (fin_acked) {
			c->fin_acked = 1;
			if (c->state == TCP_FIN_WAIT_1) {
				c->state = TCP_FIN_WAIT_2;
				if (!c->owned)
					c->idle_at = now + t->conf.fin_wait_ms;
			} else if (c->state == TCP_CLOSING) {
				tcp_enter_timewait(c, now);
			} else if (c->state == TCP_LAST_ACK) {
				c->state = TCP_CLOSED;
				c->rtx_at = 0;
			}
		}
	} else if (s->ack == c->snd_una && !s->len && !(s->flags & (TCP_SYN | TCP_FIN)) &&
		   win == c->snd_wnd && c->snd_max != c->snd_una && !c->persist) {
		if (c->sack_ok)
			sacked_update(c, &s->opt);
		cc_dupack(c, s, now);
	}
	/* RFC 9293 §3.10.7.4: the window, from the newest segment only. */
	if (seq_lt(c->snd_wl1, s->seq) || (c->snd_wl1 == s->seq && seq_le(c->snd_wl2, s->ack))) {
		c->snd_wnd = win;
		c->snd_wl1 = s->seq;
		c->snd_wl2 = s->ack;
		c->max_snd_wnd = VR_MAX(c->max_snd_wnd, win);
		if (win && c->persist) {
			c->persist = 0;
			c->rtx_at = c->snd_una == c->snd_max ? 0 : now + c->rto;
		}
	}
}

static void ring_write(struct vr_tcp_conn *c, uint32_t off, const uint8_t *d, uint32_t len)
{
	uint32_t size = c->t->conf.rcvbuf;
	uint32_t pos = (uint32_t)(((uint64_t)c->rhead + c->rlen + off) % size);
	uint32_t first = VR_MIN(len, size - pos);

	memcpy(c->rbuf + pos, d, first);
	memcpy(c->rbuf, d + first, len - first);
}

/*
 * Records [start, end) as received out of order, merged with the ranges it
 * touches and moved to the front (RFC 2018 §4: the first SACK block is the
 * latest). 0, or -1 when it touches none and there is no slot.
 */
static int ooo_add(struct vr_tcp_conn *c, uint32_t start, uint32_t end)
{
	struct tcp_range r = { start, end };
	unsigned n = 0;

	for (unsigned i = 0; i < c->nooo; i++) {
		struct tcp_range o = c->ooo[i];
		if (seq_le(o.start, r.end) && seq_ge(o.end, r.start)) {
			r.start = seq_lt(o.start, r.start) ? o.start : r.start;
			r.end = seq_gt(o.end, r.end) ? o.end : r.end;
		} else {
			c->ooo[n++] = o;
		}
	}
	if (n == TCP_OOO_MAX)
		return -1;
	memmove(&c->ooo[1], &c->ooo[0], n * sizeof(c->ooo[0]));
	c->ooo[0] = r;
	c->nooo = (uint8_t)(n + 1);
	return 0;
}

/* Moves rcv_nxt over the out-of-order ranges it reached. */
static void ooo_pull(struct vr_tcp_conn *c)
{
	for (unsigned i = 0; i < c->nooo;) {
		struct tcp_range o = c->ooo[i];
		if (seq_gt(o.start, c->rcv_nxt)) {
			i++;
			continue;
		}
		if (seq_gt(o.end, c->rcv_nxt)) {
			c->rlen += o.end - c->rcv_nxt;
			c->rcv_nxt = o.end;
		}
		memmove(&c->ooo[i], &c->ooo[i + 1], (c->nooo - i - 1) * sizeof(c->ooo[0]));
		c->nooo--;
		i = 0;
	}
}

/* Segment text (RFC 9293 §3.10.7.4, seventh check). Returns 0 if the whole of it was kept. */
static int data_input(struct vr_tcp_conn *c, const struct tcp_seg *s, uint64_t now)
{
	struct vr_tcp *t = c->t;
	uint32_t seq = s->seq, len = s->len;
	const uint8_t *d = s->data;

	if (seq_lt(seq, c->rcv_nxt)) {
		uint32_t skip = c->rcv_nxt - seq;
		if (skip >= len) {
			vr_net_count(&t->st.dup_segs, 1);
			c->ack_now = 1;
			return 0;
		}
		d += skip;
		len -= skip;
		seq = c->rcv_nxt;
	}
	uint32_t space = rcv_space(c), off = seq - c->rcv_nxt;
	int cut = 0;
	if (off >= space) {
		c->ack_now = 1;
		return -1;
	}
	if (len > space - off) {
		len = space - off;
		cut = 1;
	}
	if (off) {
		if (ooo_add(c, seq, seq + len) < 0) {
			vr_net_count(&t->st.drop[VR_TCP_DROP_OOO_FULL], 1);
			c->ack_now = 1;
			return -1;
		}
		ring_write(c, off, d, len);
		vr_net_count(&t->st.ooo_segs, 1);
		c->ack_now = 1;              /* RFC 5681 §4.2: a duplicate ACK at once */
		return cut ? -1 : 0;
	}
	ring_write(c, 0, d, len);
	c->rcv_nxt += len;
	c->rlen += len;
	vr_net_count(&t->st.bytes_in, len);
	c->readable_due = 1;
	if (s->len > c->rcv_mss)
		c->rcv_mss = (uint16_t)VR_MIN(s->len, 0xffffu);
	if (c->nooo) {
		ooo_pull(c);
		c->ack_now = 1;              /* it filled (part of) a hole */
	} else if (c->rcv_nxt - c->rcv_wup > c->rcv_mss) {
		/*
		 * RFC 5681 §4.2: every second full segment; counted in bytes, as
		 * Linux does, so a full segment and a short one are ACKed at once
		 * too. Held, they would leave two segments out at the sender,
		 * whose tail loss probe comes after two RTTs, not after our
		 * delayed ACK (RFC 8985 §7.2 allows for that only with one out).
		 */
		c->ack_now = 1;
	} else if (!c->delack_at) {
		c->delack_at = now + t->conf.delack_ms;
	}
	return cut ? -1 : 0;
}

static void fin_input(struct vr_tcp_conn *c, uint64_t now)
{
	c->rcv_nxt++;
	c->fin_rcvd = 1;
	c->fin_ooo = 0;
	c->ack_now = 1;
	c->peer_closed_due = 1;
	switch (c->state) {
	case TCP_SYN_RCVD:
	case TCP_ESTABLISHED:
		c->state = TCP_CLOSE_WAIT;
		break;
	case TCP_FIN_WAIT_1:
		c->state = TCP_CLOSING;
		break;
	case TCP_FIN_WAIT_2:
		tcp_enter_timewait(c, now);
		break;
	default:
		break;
	}
}

/*
 * The handshake's RTT: the echoed timestamp says which SYN it answers, so
 * it counts even after a retransmission (RFC 7323 §4.1); without one, only
 * an unretransmitted SYN is timed (Karn). Either way the 1 s initial RTO,
 * or its backoff, does not outlive the handshake when there is a sample.
 */
static void handshake_rtt(struct vr_tcp_conn *c, const struct tcp_seg *s, uint64_t now)
{
	if (c->ts_ok && s->opt.has_ts && s->opt.tsecr &&
	    ts_now(c, now) - s->opt.tsecr < 1u << 30)
		rtt_sample(c, ts_now(c, now) - s->opt.tsecr);
	else if (c->rtt_timing)
		rtt_sample(c, (uint32_t)(now - c->rtt_start));
	c->rtt_timing = 0;
}

/* RFC 9293 §3.10.7.3: the answer to our SYN. */
static void syn_sent_input(struct vr_tcp_conn *c, const struct tcp_seg *s, uint64_t now)
{
	struct vr_tcp *t = c->t;

	if ((s->flags & TCP_ACK) && (seq_le(s->ack, c->iss) || seq_gt(s->ack, c->snd_max))) {
		if (!(s->flags & TCP_RST))
			tcp_send_reset_for(t, &c->key, s, now);
		vr_net_count(&t->st.drop[VR_TCP_DROP_BAD_ACK], 1);
		return;
	}
	if (s->flags & TCP_RST) {
		if (s->flags & TCP_ACK) {
			vr_net_count(&t->st.resets_in, 1);
			tcp_conn_error(c, -ECONNREFUSED, now);
		} else {
			vr_net_count(&t->st.drop[VR_TCP_DROP_RST_IGNORED], 1);
		}
		return;
	}
	if (!(s->flags & TCP_SYN)) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_BAD_FLAGS], 1);
		return;
	}
	c->irs = s->seq;
	c->rcv_nxt = s->seq + 1;
	tcp_syn_options(c, &s->opt, now);
	c->snd_wl1 = s->seq;
	c->snd_wl2 = s->ack;
	c->snd_wnd = c->max_snd_wnd = s->win;           /* a SYN's window is never scaled */
	if (!(s->flags & TCP_ACK)) {
		/* Simultaneous open (RFC 9293 §3.5): our SYN again, with an ACK now. */
		c->state = TCP_SYN_RCVD;
		tcp_send_syn(c, now);
		return;
	}
	handshake_rtt(c, s, now);
	c->snd_una = s->ack;
	c->snd_nxt = c->snd_max = s->ack;
	c->recover = c->iss;             /* RFC 6582 §3.2: recover starts at the ISN */
	c->cwnd = tcp_initial_cwnd(c);
	c->nrtx = 0;
	c->rtx_at = 0;
	c->state = TCP_ESTABLISHED;
	c->established_due = 1;
	c->ack_now = 1;
	vr_net_count(&t->st.established, 1);
}

/* The handshake's last ACK (RFC 9293 §3.10.7.4, fifth check, SYN-RECEIVED). */
static int syn_rcvd_ack(struct vr_tcp_conn *c, const struct tcp_seg *s, uint64_t now)
{
	struct vr_tcp *t = c->t;

	if (!seq_gt(s->ack, c->snd_una) || seq_gt(s->ack, c->snd_max)) {
		tcp_send_reset_for(t, &c->key, s, now);
		vr_net_count(&t->st.drop[VR_TCP_DROP_BAD_ACK], 1);
		return -1;
	}
	if (c->synq) {
		c->synq = 0;
		t->nsynrcvd--;
	}
	handshake_rtt(c, s, now);
	c->snd_una = c->snd_nxt = c->snd_max = c->iss + 1;
	c->recover = c->iss;             /* RFC 6582 §3.2: recover starts at the ISN */
	c->cwnd = tcp_initial_cwnd(c);
	c->nrtx = 0;
	c->rtx_at = 0;
	c->snd_wnd = c->max_snd_wnd = (uint32_t)s->win << c->snd_wscale;
	c->snd_wl1 = s->seq;
	c->snd_wl2 = s->ack;
	c->state = c->fin_queued ? TCP_FIN_WAIT_1 : TCP_ESTABLISHED;
	c->established_due = 1;
	vr_net_count(&t->st.established, 1);
	return 0;
}

/* RFC 9293 §3.10.7.4, first check, with RST and FIN-only segments at a zero window taken. */
static int acceptable(const struct vr_tcp_conn *c, const struct tcp_seg *s)
{
	uint32_t wnd = rcv_space(c);
	uint32_t seglen = s->len + !!(s->flags & TCP_SYN) + !!(s->flags & TCP_FIN);

	if (s->seq == c->rcv_nxt)
		return 1;
	if (!wnd)
		return 0;
	if (seq_ge(s->seq, c->rcv_nxt) && seq_lt(s->seq, c->rcv_nxt + wnd))
		return 1;
	return seglen && seq_ge(s->seq + seglen - 1, c->rcv_nxt) &&
	       seq_lt(s->seq + seglen - 1, c->rcv_nxt + wnd);
}

void tcp_conn_input(struct vr_tcp_conn *c, const struct tcp_seg *s, uint64_t now)
{
	struct vr_tcp *t = c->t;

	if (c->state == TCP_SYN_SENT) {
		syn_sent_input(c, s, now);
		return;
	}
	if (c->state == TCP_CLOSED) {
		if (!(s->flags & TCP_RST))
			tcp_send_reset_for(t, &c->key, s, now);
		return;
	}
	if (c->state == TCP_SYN_RCVD && (s->flags & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
	    s->seq == c->irs) {
		tcp_send_syn(c, now);        /* our SYN-ACK was lost */
		return;
	}
	if (c->ts_ok && s->opt.has_ts && !(s->flags & TCP_RST) &&
	    seq_lt(s->opt.tsval, c->ts_recent) && now - c->ts_recent_at < TCP_PAWS_IDLE_MS) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_PAWS], 1);
		c->ack_now = 1;
		return;
	}
	if (!acceptable(c, s)) {
		if (s->flags & TCP_RST) {
			vr_net_count(&t->st.drop[VR_TCP_DROP_RST_IGNORED], 1);
		} else {
			vr_net_count(&t->st.drop[VR_TCP_DROP_UNACCEPTABLE], 1);
			c->ack_now = 1;
		}
		return;
	}
	if (s->flags & TCP_RST) {
		if (s->seq != c->rcv_nxt) {
			challenge_ack(c, now);
			return;
		}
		if (c->state == TCP_TIME_WAIT) {             /* RFC 1337 */
			vr_net_count(&t->st.drop[VR_TCP_DROP_RST_IGNORED], 1);
			return;
		}
		vr_net_count(&t->st.resets_in, 1);
		tcp_conn_error(c, c->state == TCP_SYN_RCVD && !c->passive ? -ECONNREFUSED
									 : -ECONNRESET, now);
		return;
	}
	if (s->flags & TCP_SYN) {
		challenge_ack(c, now);
		return;
	}
	if (!(s->flags & TCP_ACK)) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_BAD_FLAGS], 1);
		return;
	}
	if (c->state == TCP_SYN_RCVD && syn_rcvd_ack(c, s, now) < 0)
		return;
	if (seq_gt(s->ack, c->snd_max)) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_BAD_ACK], 1);
		c->ack_now = 1;
		return;
	}
	if (seq_lt(s->ack, c->snd_una - c->max_snd_wnd)) {
		challenge_ack(c, now);
		return;
	}
	/* RFC 7323 §4.3: the timestamp to echo is the one of the segment we were expecting. */
	if (c->ts_ok && s->opt.has_ts && seq_le(s->seq, c->rcv_nxt) &&
	    seq_ge(s->opt.tsval, c->ts_recent)) {
		c->ts_recent = s->opt.tsval;
		c->ts_recent_at = now;
	}
	ack_input(c, s, now);
	if (c->state == TCP_CLOSED)
		return;
	int whole = 1;
	if (s->len) {
		switch (c->state) {
		case TCP_ESTABLISHED: case TCP_FIN_WAIT_1: case TCP_FIN_WAIT_2:
			/*
			 * New data for an owner who closed: nobody will read it (RFC
			 * 9293 §3.10.4). A retransmission of what was read is not new.
			 */
			if (!c->owned && !c->established_due && seq_gt(s->seq + s->len, c->rcv_nxt)) {
				tcp_send_bare(t, &c->key, c->snd_nxt, 0, TCP_RST, 0, NULL, now);
				c->state = TCP_CLOSED;
				c->rtx_at = c->delack_at = c->idle_at = c->tlp_at = 0;
				return;
			}
			whole = data_input(c, s, now) == 0;
			break;
		default:
			break;
		}
	}
	if ((s->flags & TCP_FIN) && whole && !c->fin_rcvd) {
		uint32_t fin_seq = s->seq + s->len;
		if (fin_seq == c->rcv_nxt) {
			fin_input(c, now);
		} else if (seq_gt(fin_seq, c->rcv_nxt)) {
			c->fin_ooo = 1;
			c->fin_seq = fin_seq;
		}
	} else if (c->fin_ooo && c->fin_seq == c->rcv_nxt) {
		fin_input(c, now);
	}
}

/* The fixed header's fields; the caller checked the length and the data offset. */
static void seg_parse(struct tcp_seg *s, const uint8_t *d, unsigned doff, unsigned len)
{
	s->seq = rd32(d + 4);
	s->ack = rd32(d + 8);
	s->flags = d[13] & 0x3f;
	s->win = rd16(d + 14);
	s->data = d + doff;
	s->len = len - doff;
}

void vr_tcp_input(void *arg, struct vr_pkt *p, const struct vr_net_ip_info *ip, uint64_t now)
{
	struct vr_tcp *t = arg;
	const uint8_t *d = p->data;
	struct tcp_seg s = { 0 };

	t->now = now;
	vr_net_count(&t->st.segs_in, 1);
	if (p->len < TCP_HDR || (d[12] >> 4) * 4u < TCP_HDR || (d[12] >> 4) * 4u > p->len) {
		tcp_drop(t, p, VR_TCP_DROP_SHORT);
		return;
	}
	if (!(p->flags & VR_PKT_RX_L4_CSUM_OK) &&
	    vr_net_csum_fold(vr_net_csum_add(
		    VR_UNLIKELY(ip->v6) ? vr_net_csum_pseudo6(ip->src6, ip->dst6,
							       VR_NET_IP_PROTO_TCP, p->len)
					: vr_net_csum_pseudo(ip->src, ip->dst, VR_NET_IP_PROTO_TCP,
							     p->len),
		    d, p->len))) {
		tcp_drop(t, p, VR_TCP_DROP_CSUM);
		return;
	}
	unsigned doff = (d[12] >> 4) * 4u;
	seg_parse(&s, d, doff, p->len);
	if (((s.flags & TCP_SYN) && (s.flags & (TCP_FIN | TCP_RST))) || !rd16(d) || !rd16(d + 2)) {
		tcp_drop(t, p, VR_TCP_DROP_BAD_FLAGS);
		return;
	}
	if (parse_opts(d + TCP_HDR, doff - TCP_HDR, &s.opt) < 0) {
		tcp_drop(t, p, VR_TCP_DROP_BAD_OPT);
		return;
	}
	struct vr_flow_key k = { .laddr = ip->dst, .raddr = ip->src, .lport = rd16(d + 2),
				 .rport = rd16(d), .v6 = ip->v6 };
	if (VR_UNLIKELY(ip->v6)) {
		memcpy(k.laddr6, ip->dst6, 16);
		memcpy(k.raddr6, ip->src6, 16);
	}
	uint32_t val;
	if (vr_flow_lookup(t->flows, &k, &val) == 0) {
		if (!(val & TCP_TW_FLAG)) {
			struct vr_tcp_conn *c = &t->conn[val];
			c->busy = 1;
			tcp_conn_input(c, &s, now);
			c->busy = 0;
			tcp_conn_settle(c, now);
			vr_net_pkt_free(p);
			return;
		}
		int reuse;
		tcp_tw_input(t, val, &s, now, &reuse);
		if (!reuse) {
			vr_net_pkt_free(p);
			return;
		}
	}
	struct tcp_listener *l = tcp_listener_find(t, k.lport);
	if (l) {
		struct vr_tcp_conn *c = tcp_listen_input(t, l, &k, &s, now);
		if (c)
			tcp_conn_settle(c, now);
		vr_net_pkt_free(p);
		return;
	}
	if (!(s.flags & TCP_RST))
		tcp_send_reset_for(t, &k, &s, now);
	tcp_drop(t, p, VR_TCP_DROP_NO_LISTENER);
}

void vr_tcp_pmtu(void *arg, const struct vr_net_pmtu *m, uint64_t now)
{
	struct vr_tcp *t = arg;
	uint32_t val;

	if (m->proto != VR_NET_IP_PROTO_TCP) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_PMTU], 1);
		return;
	}
	struct vr_flow_key k = { .lport = rd16(m->l4), .rport = rd16(m->l4 + 2), .v6 = m->v6 };
	if (m->v6) {
		memcpy(k.laddr6, m->src6, 16);
		memcpy(k.raddr6, m->dst6, 16);
	} else {
		k.laddr = t->ip;
		k.raddr = m->dst;
	}
	uint32_t seq = rd32(m->l4 + 4);
	if (vr_flow_lookup(t->flows, &k, &val) < 0 || (val & TCP_TW_FLAG)) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_PMTU], 1);
		return;
	}
	struct vr_tcp_conn *c = &t->conn[val];
	/* RFC 5927 §4.1: believe it only for a sequence number we sent and is not yet acked. */
	if (seq_lt(seq, c->snd_una) || seq_ge(seq, c->snd_max)) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_PMTU], 1);
		return;
	}
	uint16_t mss = tcp_mss_for_mtu(VR_MAX(m->mtu, m->v6 ? TCP_PMTU6_MIN : TCP_PMTU_MIN), m->v6);
	if (mss >= c->mss)
		return;
	c->mss = mss;
	vr_net_count(&t->st.pmtu_updates, 1);
	c->snd_nxt = c->snd_una;         /* what was sent at the old size is lost: again */
	tcp_conn_queue(c);
}
