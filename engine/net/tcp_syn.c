/*
 * tcp_syn.c - passive open: listeners, the bounded SYN queue and, past it,
 * SYN cookies (RFC 4987 §3.6).
 *
 * A SYN takes a connection in SYN_RCVD while fewer than conf.syn_queue are
 * half open; beyond that (or with always_cookies) it is answered with a
 * SYN-ACK whose ISN is a cookie and nothing is kept. The cookie:
 *
 *     ISN  = count (5 bits) | MSS index (3 bits) | MAC (24 bits)
 *     MAC  = SipHash(cookie key; 4-tuple, peer ISN, full count, opt)
 *
 * count is the time in COOKIE_PERIOD_MS steps; an ACK is accepted with the
 * current or the previous count. Without timestamps opt is the MSS index
 * alone, so the connection runs without window scaling and SACK. With
 * timestamps, opt (MSS index, SACK-permitted, window scale) also rides in the
 * low 8 bits of our TSval, which the final ACK echoes in TSecr: the MAC binds
 * both, so neither can be forged.
 */
#include <string.h>

#include "tcp_impl.h"

#define COOKIE_PERIOD_MS 8000
#define COOKIE_WS_NONE   15

/* MSS values a cookie can say (RFC 4987 leaves the table to us; Linux's, plus small ones). */
static const uint16_t cookie_mss[8] = { 216, 536, 1024, 1220, 1300, 1400, 1440, 1460 };

struct tcp_listener *tcp_listener_find(struct vr_tcp *t, uint16_t port)
{
	for (unsigned i = 0; i < VR_TCP_LISTEN_MAX; i++)
		if (t->lst[i].used && t->lst[i].port == port)
			return &t->lst[i];
	return NULL;
}

static uint32_t cookie_mac(const struct vr_tcp *t, const struct vr_flow_key *k,
			   uint32_t peer_isn, uint64_t count, uint8_t opt)
{
	uint8_t b[25 + 24];
	uint8_t *o = b;

	/* An IPv6 tuple's addresses first; an IPv4 one is hashed as before IPv6 came. */
	if (VR_UNLIKELY(k->v6)) {
		memcpy(b, k->laddr6, 16);
		memcpy(b + 16, k->raddr6, 16);
		o = b + 24;
	} else {
		memcpy(b, &k->laddr, 4);
		memcpy(b + 4, &k->raddr, 4);
	}
	memcpy(o + 8, &k->lport, 2);
	memcpy(o + 10, &k->rport, 2);
	memcpy(o + 12, &peer_isn, 4);
	memcpy(o + 16, &count, 8);
	o[24] = opt;
	return (uint32_t)vr_siphash24(t->cookie_key, b, (size_t)(o - b) + 25) & 0xffffff;
}

static void cookie_send(struct vr_tcp *t, const struct vr_flow_key *k, const struct tcp_seg *s,
			uint64_t now)
{
	uint16_t our_mss = tcp_mss_for_mtu(vr_net_mtu(t->net), k->v6);
	uint16_t mss = VR_MIN(s->opt.has_mss ? s->opt.mss : TCP_MSS_DEFAULT, our_mss);
	uint8_t idx = 0;
	while (idx + 1u < VR_ARRAY_SIZE(cookie_mss) && cookie_mss[idx + 1] <= mss)
		idx++;
	int ts = s->opt.has_ts && !t->conf.no_timestamps;
	int ws = ts && s->opt.has_ws && !t->conf.no_wscale;
	int sack = ts && s->opt.sack_ok && !t->conf.no_sack;
	uint8_t opt = idx;
	if (ts)
		opt = (uint8_t)(idx | sack << 3 |
				(ws ? VR_MIN(s->opt.wscale, TCP_WSCALE_MAX) : COOKIE_WS_NONE) << 4);
	uint64_t count = now / COOKIE_PERIOD_MS;
	uint32_t isn = (uint32_t)(count & 31) << 27 | (uint32_t)idx << 24 |
		       cookie_mac(t, k, s->seq, count, opt);
	struct tcp_opts o = {
		.has_mss = 1, .mss = our_mss, .has_ws = ws, .wscale = t->wscale, .sack_ok = sack,
		.has_ts = ts, .tsval = (((uint32_t)now + tcp_ts_offset(t, k)) & ~0xffu) | opt,
		.tsecr = s->opt.tsval,
	};
	tcp_send_bare(t, k, isn, s->seq + 1, TCP_SYN | TCP_ACK,
		      VR_MIN(t->conf.rcvbuf, 0xffffu), &o, now);
	vr_net_count(&t->st.cookies_sent, 1);
	t->cookie_until = now + 2 * COOKIE_PERIOD_MS;
}

/* The ACK that completes a cookie handshake: a connection, ESTABLISHED, or NULL. */
static struct vr_tcp_conn *cookie_check(struct vr_tcp *t, struct tcp_listener *l,
					const struct vr_flow_key *k, const struct tcp_seg *s,
					uint64_t now)
{
	uint32_t isn = s->ack - 1, peer_isn = s->seq - 1;
	uint8_t idx = (uint8_t)(isn >> 24 & 7);
	int ts = s->opt.has_ts && !t->conf.no_timestamps;
	uint8_t opt = ts ? (uint8_t)s->opt.tsecr : idx;
	uint64_t count = now / COOKIE_PERIOD_MS;
	const uint64_t counts[2] = { count, count ? count - 1 : count };
	int ok = 0;

	for (unsigned i = 0; i < 2 && !ok; i++)
		ok = (isn >> 27) == (counts[i] & 31) && (opt & 7) == idx &&
		     cookie_mac(t, k, peer_isn, counts[i], opt) == (isn & 0xffffff);
	if (!ok) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_BAD_COOKIE], 1);
		return NULL;
	}
	struct vr_tcp_conn *c = tcp_conn_alloc(t, k, now);
	if (!c)
		return NULL;
	struct tcp_opts o = { .has_mss = 1, .mss = cookie_mss[idx] };
	if (ts) {
		uint8_t w = opt >> 4;
		o.has_ts = 1;
		o.tsval = s->opt.tsval;
		o.sack_ok = opt >> 3 & 1;
		o.has_ws = w != COOKIE_WS_NONE;
		o.wscale = w;
	}
	tcp_syn_options(c, &o, now);
	c->state = TCP_ESTABLISHED;
	c->passive = 1;
	c->listener = (uint8_t)(l - t->lst);
	c->irs = peer_isn;
	c->rcv_nxt = s->seq;
	c->rcv_adv = s->seq;
	c->rcv_wup = s->seq;
	c->iss = isn;
	c->snd_una = c->snd_nxt = c->snd_max = s->ack;
	c->recover = c->iss;
	c->snd_wnd = c->max_snd_wnd = (uint32_t)s->win << c->snd_wscale;
	c->snd_wl1 = s->seq;
	c->snd_wl2 = s->ack;
	c->cwnd = tcp_initial_cwnd(c);
	c->established_due = 1;
	vr_net_count(&t->st.cookies_accepted, 1);
	vr_net_count(&t->st.passive_opens, 1);
	vr_net_count(&t->st.established, 1);
	return c;
}

static struct vr_tcp_conn *syn_queue(struct vr_tcp *t, struct tcp_listener *l,
				     const struct vr_flow_key *k, const struct tcp_seg *s,
				     uint64_t now)
{
	struct vr_tcp_conn *c = tcp_conn_alloc(t, k, now);

	if (!c)
		return NULL;
	c->state = TCP_SYN_RCVD;
	c->passive = 1;
	c->synq = 1;
	c->listener = (uint8_t)(l - t->lst);
	c->irs = s->seq;
	c->rcv_nxt = s->seq + 1;
	c->iss = tcp_isn(t, k, now);
	c->snd_una = c->snd_nxt = c->snd_max = c->iss;
	tcp_syn_options(c, &s->opt, now);
	c->snd_wnd = c->max_snd_wnd = s->win;
	t->nsynrcvd++;
	vr_net_count(&t->st.passive_opens, 1);
	tcp_send_syn(c, now);
	return c;
}

struct vr_tcp_conn *tcp_listen_input(struct vr_tcp *t, struct tcp_listener *l,
				     const struct vr_flow_key *k, const struct tcp_seg *s,
				     uint64_t now)
{
	if (s->flags & TCP_RST) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_RST_IGNORED], 1);
		return NULL;
	}
	if (s->flags & TCP_ACK) {
		struct vr_tcp_conn *c = NULL;
		if (!(s->flags & TCP_SYN) && now < t->cookie_until)
			c = cookie_check(t, l, k, s, now);
		if (c) {
			c->busy = 1;
			tcp_conn_input(c, s, now);   /* data riding on the ACK */
			c->busy = 0;
			return c;
		}
		tcp_send_reset_for(t, k, s, now);
		vr_net_count(&t->st.drop[VR_TCP_DROP_BAD_ACK], 1);
		return NULL;
	}
	if (!(s->flags & TCP_SYN)) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_BAD_FLAGS], 1);
		return NULL;
	}
	if (!t->conf.always_cookies) {
		if (t->nsynrcvd < t->conf.syn_queue) {
			struct vr_tcp_conn *c = syn_queue(t, l, k, s, now);
			if (c)
				return c;
		} else {
			vr_net_count(&t->st.syn_queue_full, 1);
		}
	}
	cookie_send(t, k, s, now);
	return NULL;
}
