/*
 * tcp_out.c - segment output: building segments from the send ring with
 * their options, what may be sent now (the peer's window, cwnd, sender SWS
 * avoidance), the FIN, pure and delayed ACKs, the window we advertise
 * (receiver SWS avoidance), retransmission on RTO (RFC 6298) and on three
 * duplicate ACKs, and the persist timer's zero-window probes.
 *
 * RTO bounds: 200 ms floor instead of RFC 6298's 1 s. The relay talks to
 * VPSes in the same data centre, with RTTs under a millisecond; a 1 s floor
 * would turn every tail loss into a second of stall. 200 ms is Linux's
 * floor, which the peers' delayed ACKs (<= 200 ms, RFC 1122) are built
 * around, so a spurious RTO stays rare. It is a conf field.
 *
 * XXX RFC 9293 §3.7.4 (Nagle): not applied. The owner's sends within a poll
 * iteration are coalesced before anything leaves (output runs at the end
 * of the burst or in vr_tcp_poll), which is what Nagle buys an SMTP server,
 * without holding a reply back for a delayed ACK.
 */
#include <errno.h>
#include <string.h>

#include "tcp_impl.h"

uint16_t tcp_mss_for_mtu(uint16_t mtu, int v6)
{
	return (uint16_t)(mtu - (v6 ? VR_NET_IP6_HDR : VR_NET_IP_HDR) - TCP_HDR);
}

void tcp_rto_update(struct vr_tcp_conn *c)
{
	const struct vr_tcp_conf *cf = &c->t->conf;
	/* RFC 6298 §2.3: SRTT + max(G, 4 * RTTVAR), G being our 1 ms clock. */
	uint32_t rto = (c->srtt8 >> 3) + VR_MAX(1u, c->rttvar4);

	c->rto = VR_MIN(VR_MAX(rto, cf->rto_min_ms), cf->rto_max_ms);
}

/* The options in the order Linux sends them (what middleboxes expect), padded to words. */
static unsigned opts_write(uint8_t *o, const struct tcp_opts *opt, const struct tcp_range *sack,
			   unsigned nsack)
{
	unsigned n = 0;

	if (opt->has_mss) {
		o[n++] = 2, o[n++] = 4;
		wr16(o + n, opt->mss);
		n += 2;
	}
	if (opt->sack_ok) {
		if (!opt->has_ts)
			o[n++] = 1, o[n++] = 1;
		o[n++] = 4, o[n++] = 2;
	}
	if (opt->has_ts) {
		if (!opt->sack_ok)
			o[n++] = 1, o[n++] = 1;
		o[n++] = 8, o[n++] = 10;
		wr32(o + n, opt->tsval);
		wr32(o + n + 4, opt->tsecr);
		n += 8;
	}
	if (opt->has_ws) {
		o[n++] = 1, o[n++] = 3, o[n++] = 3;
		o[n++] = opt->wscale;
	}
	if (nsack) {
		o[n++] = 1, o[n++] = 1, o[n++] = 5;
		o[n++] = (uint8_t)(2 + 8 * nsack);
		for (unsigned i = 0; i < nsack; i++, n += 8) {
			wr32(o + n, sack[i].start);
			wr32(o + n + 4, sack[i].end);
		}
	}
	return n;
}

static void csum_and_send(struct vr_tcp *t, struct vr_pkt *p, const struct vr_flow_key *k,
			  uint64_t now)
{
	vr_net_count(&t->st.segs_out, 1);
	if (VR_UNLIKELY(k->v6)) {
		uint32_t sum = vr_net_csum_pseudo6(k->laddr6, k->raddr6, VR_NET_IP_PROTO_TCP, p->len);
		wr16(p->data + 16, vr_net_csum_fold(vr_net_csum_add(sum, p->data, p->len)));
		vr_net_ip6_output(t->net, p, k->laddr6, k->raddr6, VR_NET_IP_PROTO_TCP, now);
		return;
	}
	uint32_t sum = vr_net_csum_pseudo(t->ip, k->raddr, VR_NET_IP_PROTO_TCP, p->len);

	wr16(p->data + 16, vr_net_csum_fold(vr_net_csum_add(sum, p->data, p->len)));
	vr_net_ip_output(t->net, p, k->raddr, VR_NET_IP_PROTO_TCP, now);
}

static void hdr_write(uint8_t *h, const struct vr_flow_key *k, uint32_t seq, uint32_t ack,
		      unsigned hlen, uint8_t flags, uint16_t win)
{
	wr16(h, k->lport);
	wr16(h + 2, k->rport);
	wr32(h + 4, seq);
	wr32(h + 8, ack);
	h[12] = (uint8_t)(hlen / 4 << 4);
	h[13] = flags;
	wr16(h + 14, win);
	wr16(h + 16, 0);
	wr16(h + 18, 0);
}

void tcp_send_bare(struct vr_tcp *t, const struct vr_flow_key *k, uint32_t seq, uint32_t ack,
		   uint8_t flags, uint32_t win, const struct tcp_opts *opt, uint64_t now)
{
	struct vr_pkt *p = vr_net_pkt_alloc(t->net);

	if (!p) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_NO_PKT], 1);
		return;
	}
	unsigned hlen = TCP_HDR + (opt ? opts_write(p->data + TCP_HDR, opt, NULL, 0) : 0);
	hdr_write(p->data, k, seq, ack, hlen, flags, (uint16_t)VR_MIN(win, 0xffffu));
	p->len = (uint16_t)hlen;
	if (flags & TCP_RST)
		vr_net_count(&t->st.resets_out, 1);
	csum_and_send(t, p, k, now);
}

void tcp_send_reset_for(struct vr_tcp *t, const struct vr_flow_key *k, const struct tcp_seg *s,
			uint64_t now)
{
	if (s->flags & TCP_ACK)
		tcp_send_bare(t, k, s->ack, 0, TCP_RST, 0, NULL, now);
	else
		tcp_send_bare(t, k, 0,
			      s->seq + s->len + !!(s->flags & TCP_SYN) + !!(s->flags & TCP_FIN),
			      TCP_RST | TCP_ACK, 0, NULL, now);
}

uint32_t tcp_rcv_window(struct vr_tcp_conn *c)
{
	uint32_t space = rcv_space(c);
	uint32_t cur = seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t wnd = space;

	/* RFC 9293 §3.8.6.2.2: move the right edge by a segment or half the buffer at least. */
	if (space > cur && space - cur < VR_MIN(c->t->conf.rcvbuf / 2, (uint32_t)c->mss))
		wnd = cur;
	wnd = VR_MIN(wnd, 0xffffu << c->rcv_wscale);
	/* Scaled, round up where the buffer allows, so the right edge does not creep back. */
	uint32_t mask = (1u << c->rcv_wscale) - 1;
	if (((wnd + mask) & ~mask) <= space && wnd + mask <= 0xffffu << c->rcv_wscale)
		wnd += mask;
	return wnd & ~mask;
}

/* SACK blocks an ACK carries: three beside timestamps, four without (RFC 2018 §3). */
static unsigned sack_count(const struct vr_tcp_conn *c)
{
	return c->sack_ok ? VR_MIN(c->nooo, c->ts_ok ? 3u : 4u) : 0;
}

/* Payload that fits in a segment beside the options it carries. */
static uint32_t seg_room(const struct vr_tcp_conn *c)
{
	unsigned nsack = sack_count(c);
	uint32_t opts = (c->ts_ok ? TCP_TS_LEN : 0) + (nsack ? 4 + 8 * nsack : 0);

	return c->mss > opts + 8 ? c->mss - opts : 8;
}

static int seg_send(struct vr_tcp_conn *c, uint32_t seq, uint32_t len, uint8_t flags,
		    uint64_t now)
{
	struct vr_tcp *t = c->t;
	struct vr_pkt *p = vr_net_pkt_alloc(t->net);

	if (!p) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_NO_PKT], 1);
		return -1;
	}
	struct tcp_opts o = { 0 };
	if (flags & TCP_SYN) {
		o.has_mss = 1;
		o.mss = tcp_mss_for_mtu(vr_net_mtu(t->net), c->key.v6);
		o.has_ws = c->ws_ok;
		o.wscale = c->rcv_wscale;
		o.sack_ok = c->sack_ok;
	}
	if (c->ts_ok) {
		o.has_ts = 1;
		o.tsval = ts_now(c, now);
		o.tsecr = flags & TCP_ACK ? c->ts_recent : 0;
	}
	unsigned nsack = flags & TCP_SYN ? 0 : sack_count(c);
	unsigned hlen = TCP_HDR + opts_write(p->data + TCP_HDR, &o, c->ooo, nsack);
	uint32_t wnd;
	uint16_t win;
	if (flags & TCP_SYN) {
		wnd = VR_MIN(rcv_space(c), 0xffffu);         /* never scaled (RFC 7323 §2.2) */
		win = (uint16_t)wnd;
	} else {
		wnd = tcp_rcv_window(c);
		win = (uint16_t)(wnd >> c->rcv_wscale);
	}
	hdr_write(p->data, &c->key, seq, flags & TCP_ACK ? c->rcv_nxt : 0, hlen, flags, win);
	if (len) {
		uint32_t size = t->conf.sndbuf;
		uint32_t pos = (uint32_t)(((uint64_t)c->shead + (seq - c->snd_una)) % size);
		uint32_t first = VR_MIN(len, size - pos);
		memcpy(p->data + hlen, c->sbuf + pos, first);
		memcpy(p->data + hlen + first, c->sbuf, len - first);
	}
	p->len = (uint16_t)(hlen + len);
	if (flags & TCP_ACK) {
		c->rcv_adv = c->rcv_nxt + wnd;
		c->ack_now = 0;
		c->delack_at = 0;
		c->rcv_wup = c->rcv_nxt;
	}
	vr_net_count(&t->st.sack_blocks_sent, nsack);
	vr_net_count(&t->st.bytes_out, len);
	csum_and_send(t, p, &c->key, now);
	return 0;
}

void tcp_send_syn(struct vr_tcp_conn *c, uint64_t now)
{
	seg_send(c, c->iss, 0, c->state == TCP_SYN_SENT ? TCP_SYN : TCP_SYN | TCP_ACK, now);
	c->snd_nxt = c->snd_max = c->iss + 1;
	c->rtt_timing = !c->nrtx;            /* Karn: a retransmitted SYN is not timed */
	c->rtt_seq = c->iss;
	c->rtt_start = now;
	c->rtx_at = now + c->rto;
}

int tcp_retransmit_next(struct vr_tcp_conn *c, uint64_t now)
{
	uint32_t data_end = c->snd_una + c->slen;
	uint32_t seq = c->snd_una, hole_end = data_end;

	if (c->sack_ok && c->nsacked) {
		if (seq_gt(c->rtx_high, seq))
			seq = c->rtx_high;
		unsigned i = 0;
		for (; i < c->nsacked; i++) {
			if (seq_le(c->sacked[i].end, seq))
				continue;
			if (seq_gt(c->sacked[i].start, seq))
				break;
			seq = c->sacked[i].end;
		}
		/* Above the highest SACKed byte nothing is known lost yet. */
		if (i == c->nsacked)
			return 0;
		hole_end = c->sacked[i].start;
	}
	uint32_t len = VR_MIN(seg_room(c), seq_lt(seq, hole_end) ? hole_end - seq : 0);
	uint8_t flags = TCP_ACK;
	if (seq + len == data_end && c->fin_sent)
		flags |= TCP_FIN;
	if (!len && !(flags & TCP_FIN))
		return 0;
	if (seg_send(c, seq, len, flags, now) < 0)
		return 0;
	c->rtx_high = seq + len;
	c->retransmits++;
	vr_net_count(&c->t->st.retransmits, 1);
	c->rtt_timing = 0;                   /* Karn: never time a retransmission */
	c->rtx_at = now + c->rto;
	return 1;
}

static uint32_t backoff(const struct vr_tcp_conn *c)
{
	uint64_t r = (uint64_t)c->rto << VR_MIN(c->nrtx, 20u);

	return (uint32_t)VR_MIN(r, (uint64_t)c->t->conf.rto_max_ms);
}

static void give_up(struct vr_tcp_conn *c, uint64_t now)
{
	vr_net_count(&c->t->st.timeouts, 1);
	if (c->state != TCP_SYN_SENT)
		tcp_send_bare(c->t, &c->key, c->snd_nxt, 0, TCP_RST, 0, NULL, now);
	tcp_conn_error(c, -ETIMEDOUT, now);
}

void tcp_rtx_timeout(struct vr_tcp_conn *c, uint64_t now)
{
	struct vr_tcp *t = c->t;

	if (c->persist) {
		if (c->nrtx >= t->conf.max_retries) {
			give_up(c, now);
			return;
		}
		c->nrtx++;
		vr_net_count(&t->st.zero_window_probes, 1);
		/* RFC 9293 §3.8.6.1: one byte past a shut window; output sends more if it opened. */
		if (!c->snd_wnd && seq_lt(c->snd_nxt, c->snd_una + c->slen) &&
		    seg_send(c, c->snd_nxt, 1, TCP_ACK, now) == 0 && seq_gt(c->snd_nxt + 1, c->snd_max))
			c->snd_max = c->snd_nxt + 1;
		c->rtx_at = now + backoff(c);
		return;
	}
	if (c->state == TCP_SYN_SENT || c->state == TCP_SYN_RCVD) {
		if (c->nrtx >= t->conf.syn_retries) {
			give_up(c, now);
			return;
		}
		c->nrtx++;
		c->rto = VR_MIN(c->rto * 2, t->conf.rto_max_ms);
		c->retransmits++;
		vr_net_count(&t->st.retransmits, 1);
		tcp_send_syn(c, now);
		return;
	}
	if (c->snd_una == c->snd_max)
		return;
	if (c->nrtx >= t->conf.max_retries) {
		give_up(c, now);
		return;
	}
	/* RFC 6298 §5.4-5.6 and RFC 5681 §3.1: back off, one segment, go back to snd_una. */
	c->nrtx++;
	vr_net_count(&t->st.rto_expired, 1);
	if (c->nrtx == 1)
		c->ssthresh = VR_MAX((c->snd_max - c->snd_una) / 2, 2u * c->mss);
	c->cwnd = c->mss;
	c->in_recovery = 0;
	c->dupacks = 0;
	c->recover = c->snd_max;             /* RFC 6582 §3.2 step 4 */
	c->nsacked = 0;                      /* RFC 6675 §5.1: the peer may have reneged */
	c->tlp_at = 0;
	c->tlp_high = 0;
	c->snd_nxt = c->snd_una;
	c->rtt_timing = 0;
	c->rto = VR_MIN(c->rto * 2, t->conf.rto_max_ms);
	c->rtx_at = 0;
}

/*
 * RFC 8985 §7 (the tail loss probe, simplified): when the last segments of
 * a flight are lost no duplicate ACK comes, and only the RTO (200 ms at
 * least, against sub-millisecond RTTs here) would notice. Two RTTs after
 * the last ACK, the last segment goes again; its SACK shows any hole
 * (cc_dupack then recovers at once) or its ACK ends the episode. In
 * recovery the probe is the first hole again: a lost retransmission is the
 * commonest RTO left (RACK's reordering window does this, §6.2). One probe
 * per episode. With a single segment in flight the peer may be holding its
 * ACK for it (a delayed ACK, or the relay's until its 250): §7.2 adds the
 * worst case delayed ACK, which puts the probe after our 200 ms RTO floor
 * unless the RTO is longer.
 */
static void tlp_arm(struct vr_tcp_conn *c, uint64_t now)
{
	uint32_t flight = c->snd_max - c->snd_una;

	if (c->tlp_at || c->tlp_high || c->persist || !c->sack_ok || !c->srtt8 || !c->rtx_at)
		return;
	uint64_t pto = VR_MAX(2u * (c->srtt8 >> 3), TCP_TLP_MIN_MS);
	if (flight <= c->mss)
		pto += TCP_WCDELACK_MS;
	if (now + pto < c->rtx_at)
		c->tlp_at = now + pto;
}

void tcp_tlp_timeout(struct vr_tcp_conn *c, uint64_t now)
{
	uint32_t end = c->snd_max - (c->fin_sent && !c->fin_acked), room = seg_room(c);

	if (c->snd_una == c->snd_max || c->persist)
		return;
	vr_net_count(&c->t->st.tlp_probes, 1);
	if (c->in_recovery) {
		c->rtx_high = c->snd_una;
		if (tcp_retransmit_next(c, now))
			c->tlp_high = c->snd_max;
		return;
	}
	uint32_t len = VR_MIN(room, end - c->snd_una);
	uint8_t flags = TCP_ACK | (end != c->snd_max ? TCP_FIN : 0);
	if (seg_send(c, end - len, len, flags, now) < 0)
		return;
	c->tlp_high = c->snd_max;
	c->retransmits++;
	vr_net_count(&c->t->st.retransmits, 1);
	c->rtt_timing = 0;
	c->rtx_at = now + c->rto;
}

static void unqueue(struct vr_tcp_conn *c)
{
	if (!c->qpprev)
		return;
	*c->qpprev = c->qnext;
	if (c->qnext)
		c->qnext->qpprev = c->qpprev;
	c->qpprev = NULL;
}

/*
 * RFC 3042: the first two duplicate ACKs each let a new segment out beyond
 * cwnd, so a small window still collects the three that trigger a fast
 * retransmit instead of waiting out an RTO.
 */
static uint32_t limited_transmit(const struct vr_tcp_conn *c)
{
	return !c->in_recovery && c->dupacks < 3 ? c->dupacks * (uint32_t)c->mss : 0;
}

/* Sends what the windows allow from snd_nxt; returns whether a segment left. */
static int send_data(struct vr_tcp_conn *c, uint64_t now)
{
	struct vr_tcp *t = c->t;
	uint32_t data_end = c->snd_una + c->slen;
	int sent = 0;

	while (seq_lt(c->snd_nxt, data_end) ||
	       (c->fin_queued && !c->fin_acked && c->snd_nxt == data_end)) {
		uint32_t avail = data_end - c->snd_nxt;
		uint32_t wnd = VR_MIN(c->snd_wnd, c->cwnd + limited_transmit(c));
		uint32_t used = c->snd_nxt - c->snd_una;
		uint32_t usable = wnd > used ? wnd - used : 0;
		uint32_t room = seg_room(c);
		uint32_t len = VR_MIN(VR_MIN(avail, room), usable);
		if (avail && !len)
			break;
		/* RFC 9293 §3.8.6.2.1: no small segment the window forced, unless probing. */
		if (len < room && len < avail && len < c->max_snd_wnd / 2 && !c->persist)
			break;
		uint8_t flags = TCP_ACK;
		if (len == avail) {
			flags |= len ? TCP_PSH : 0;
			flags |= c->fin_queued ? TCP_FIN : 0;
		}
		int again = seq_lt(c->snd_nxt, c->snd_max);
		if (seg_send(c, c->snd_nxt, len, flags, now) < 0)
			break;
		if (again) {
			c->retransmits++;
			vr_net_count(&t->st.retransmits, 1);
		} else if (!c->ts_ok && !c->rtt_timing) {
			c->rtt_timing = 1;
			c->rtt_seq = c->snd_nxt;
			c->rtt_start = now;
		}
		c->snd_nxt += len + !!(flags & TCP_FIN);
		if (flags & TCP_FIN)
			c->fin_sent = 1;
		if (seq_gt(c->snd_nxt, c->snd_max))
			c->snd_max = c->snd_nxt;
		if (!c->rtx_at || c->persist) {
			c->persist = 0;
			c->rtx_at = now + c->rto;
		}
		sent = 1;
		if (flags & TCP_FIN)
			break;
	}
	return sent;
}

void tcp_output(struct vr_tcp_conn *c, uint64_t now)
{
	unqueue(c);
	switch (c->state) {
	case TCP_CLOSED:
		return;
	case TCP_SYN_SENT:
	case TCP_SYN_RCVD:
		break;
	case TCP_TIME_WAIT:
		if (c->ack_now)
			seg_send(c, c->snd_max, 0, TCP_ACK, now);
		break;
	default:
		if (!send_data(c, now) && c->ack_now)
			seg_send(c, c->snd_nxt, 0, TCP_ACK, now);
		/*
		 * RFC 6298 §5.1: a timer runs while anything is unacknowledged. With
		 * nothing in flight (the window held it back, or an RTO took it back)
		 * it is the persist timer (RFC 9293 §3.8.6.1), whose probes the
		 * window's owner answers.
		 */
		if (!c->rtx_at) {
			if (seq_gt(c->snd_nxt, c->snd_una)) {
				c->rtx_at = now + c->rto;
			} else if (seq_lt(c->snd_nxt, c->snd_una + c->slen) ||
				   c->snd_una != c->snd_max) {
				c->persist = 1;
				c->rtx_at = now + backoff(c);
			}
		}
		tlp_arm(c, now);
		break;
	}
	tcp_conn_timer(c);
}
