/*
 * tcp.c - the TCP instance (see vmrelay/tcp.h): creation and its checks,
 * the connection pool, the owner's calls (send, read, shutdown, close,
 * abort), the deferred callbacks, the timers and the compact TIME_WAIT
 * entries.
 *
 * The stack never calls an owner while it is half-way through a segment:
 * input and timers only mark what is due (readable, peer_closed, ...), and
 * tcp_conn_settle calls the owner afterwards with `busy` set, so whatever
 * the owner does from a callback (even close or abort) frees nothing under
 * the stack's feet; the free happens when settle returns.
 *
 * TIME_WAIT entries all live timewait_ms, so a ring in arrival order is
 * also their expiry order: expiring them is popping the head, and a full
 * ring gives up its oldest entry early (counted as recycled).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "tcp_impl.h"

#define WHEEL_SLOTS   4096
#define WHEEL_TICK_MS 1
#define PORT_FIRST    49152          /* RFC 6335 §6: the dynamic range */
#define PORT_COUNT    16384

static const char *const state_names[TCP_NSTATES] = {
	[TCP_CLOSED] = "CLOSED", [TCP_SYN_SENT] = "SYN_SENT", [TCP_SYN_RCVD] = "SYN_RCVD",
	[TCP_ESTABLISHED] = "ESTABLISHED", [TCP_FIN_WAIT_1] = "FIN_WAIT_1",
	[TCP_FIN_WAIT_2] = "FIN_WAIT_2", [TCP_CLOSING] = "CLOSING", [TCP_TIME_WAIT] = "TIME_WAIT",
	[TCP_CLOSE_WAIT] = "CLOSE_WAIT", [TCP_LAST_ACK] = "LAST_ACK",
};

static const char *const drop_names[VR_TCP_DROP_MAX] = {
	[VR_TCP_DROP_SHORT] = "short", [VR_TCP_DROP_CSUM] = "csum",
	[VR_TCP_DROP_BAD_FLAGS] = "bad_flags", [VR_TCP_DROP_BAD_OPT] = "bad_opt",
	[VR_TCP_DROP_NO_LISTENER] = "no_listener", [VR_TCP_DROP_NO_CONN] = "no_conn",
	[VR_TCP_DROP_UNACCEPTABLE] = "unacceptable", [VR_TCP_DROP_PAWS] = "paws",
	[VR_TCP_DROP_BAD_ACK] = "bad_ack", [VR_TCP_DROP_BAD_COOKIE] = "bad_cookie",
	[VR_TCP_DROP_OOO_FULL] = "ooo_full", [VR_TCP_DROP_RST_IGNORED] = "rst_ignored",
	[VR_TCP_DROP_NO_PKT] = "no_pkt", [VR_TCP_DROP_PMTU] = "pmtu",
	[VR_TCP_DROP_CHALLENGE_LIMIT] = "challenge_limit",
};

static const char *tcp_state_name(unsigned s)
{
	return s < TCP_NSTATES ? state_names[s] : "?";
}

const char *vr_tcp_drop_name(enum vr_tcp_drop d)
{
	return (unsigned)d < VR_TCP_DROP_MAX ? drop_names[d] : "unknown";
}

/* Fills in the defaults (documented in tcp.h) and says what is wrong, if anything. */
static int conf_check(struct vr_tcp_conf *c, char *err, size_t errlen)
{
	if (!c->max_conns)
		c->max_conns = 1024;
	if (!c->sndbuf)
		c->sndbuf = 16 * 1024;
	if (!c->rcvbuf)
		c->rcvbuf = 64 * 1024;
	if (!c->syn_queue)
		c->syn_queue = 128;
	if (!c->timewait_max)
		c->timewait_max = c->max_conns;
	if (!c->timewait_ms)
		c->timewait_ms = 60000;
	if (!c->rto_min_ms)
		c->rto_min_ms = 200;
	if (!c->rto_init_ms)
		c->rto_init_ms = 1000;
	if (!c->rto_max_ms)
		c->rto_max_ms = 60000;
	if (!c->max_retries)
		c->max_retries = 8;
	if (!c->syn_retries)
		c->syn_retries = 5;
	if (!c->delack_ms)
		c->delack_ms = 40;
	if (!c->fin_wait_ms)
		c->fin_wait_ms = 60000;

	const char *why = NULL;
	if (c->max_conns > 1u << 22 || c->timewait_max > 1u << 22)
		why = "max_conns or timewait_max is over 4M";
	else if (c->sndbuf < 2048 || c->sndbuf > 16u << 20 || c->rcvbuf < 2048 ||
		 c->rcvbuf > 16u << 20)
		why = "sndbuf or rcvbuf is outside 2 KiB..16 MiB";
	else if (c->rto_min_ms > c->rto_init_ms || c->rto_init_ms > c->rto_max_ms)
		why = "RTO bounds are not rto_min <= rto_init <= rto_max";
	else if (c->max_retries > 30 || c->syn_retries > 30)
		why = "max_retries or syn_retries is over 30";
	else if (c->delack_ms > 500)
		why = "delack_ms is over 500 (RFC 1122 4.2.3.2)";
	if (why) {
		snprintf(err, errlen, "tcp: %s", why);
		return -EINVAL;
	}
	return 0;
}

/* Independent secrets from one: each is SipHash of a label under the key. */
static void derive(const uint8_t key[VR_SIPHASH_KEY_LEN], const char *label,
		   uint8_t out[VR_SIPHASH_KEY_LEN])
{
	uint8_t in[16] = { 0 };
	size_t len = strlen(label);

	memcpy(in, label, len < 15 ? len : 15);
	uint64_t a = vr_siphash24(key, in, sizeof(in));
	in[15] = 1;
	uint64_t b = vr_siphash24(key, in, sizeof(in));
	memcpy(out, &a, 8);
	memcpy(out + 8, &b, 8);
}

struct vr_tcp *vr_tcp_new(struct vr_net *net, const struct vr_tcp_conf *conf, uint64_t now,
			  char *err, size_t errlen)
{
	static const uint8_t zero[VR_SIPHASH_KEY_LEN];
	struct vr_tcp *t = calloc(1, sizeof(*t));

	if (!t) {
		snprintf(err, errlen, "tcp: out of memory");
		return NULL;
	}
	t->conf = *conf;
	if (conf_check(&t->conf, err, errlen) < 0) {
		free(t);
		return NULL;
	}
	if (!memcmp(t->conf.key, zero, sizeof(zero)) &&
	    getrandom(t->conf.key, sizeof(t->conf.key), 0) != sizeof(t->conf.key)) {
		snprintf(err, errlen, "tcp: getrandom: %s", strerror(errno));
		free(t);
		return NULL;
	}
	t->net = net;
	t->ip = vr_net_ip(net);
	uint8_t flow_key[VR_SIPHASH_KEY_LEN];
	derive(t->conf.key, "flow", flow_key);
	derive(t->conf.key, "isn", t->isn_key);
	derive(t->conf.key, "cookie", t->cookie_key);
	derive(t->conf.key, "ts", t->ts_key);

	size_t per = (size_t)t->conf.sndbuf + t->conf.rcvbuf;
	t->conn = calloc(t->conf.max_conns, sizeof(*t->conn));
	t->bufs = malloc(per * t->conf.max_conns);
	t->tw = calloc(t->conf.timewait_max, sizeof(*t->tw));
	t->flows = vr_flow_table_new(t->conf.max_conns + t->conf.timewait_max, flow_key, err,
				     errlen);
	if (!t->flows) {
		vr_tcp_free(t);
		return NULL;
	}
	if (!t->conn || !t->bufs || !t->tw ||
	    vr_wheel_init(&t->wheel, WHEEL_SLOTS, WHEEL_TICK_MS, now) < 0) {
		snprintf(err, errlen, "tcp: out of memory for %u connections of %zu bytes",
			 t->conf.max_conns, per);
		vr_tcp_free(t);
		return NULL;
	}
	for (unsigned i = 0; i < t->conf.max_conns; i++) {
		struct vr_tcp_conn *c = &t->conn[i];
		c->t = t;
		c->sbuf = t->bufs + per * i;
		c->rbuf = c->sbuf + t->conf.sndbuf;
		c->next_free = i + 1 < t->conf.max_conns ? i + 1 : CONN_NONE;
	}
	t->free_head = 0;
	/* The smallest shift that lets the window cover the whole buffer (RFC 7323 §2.3). */
	while (t->wscale < TCP_WSCALE_MAX && (t->conf.rcvbuf >> t->wscale) > 0xffff)
		t->wscale++;
	t->port_hint = (uint16_t)vr_siphash24(t->isn_key, &now, sizeof(now));
	vr_net_set_tcp(net, vr_tcp_input, t, vr_tcp_pmtu, t);
	return t;
}

void vr_tcp_free(struct vr_tcp *t)
{
	if (!t)
		return;
	if (t->net && t->wheel.slot)
		vr_net_set_tcp(t->net, NULL, NULL, NULL, NULL);
	vr_wheel_fini(&t->wheel);
	vr_flow_table_free(t->flows);
	free(t->conn);
	free(t->bufs);
	free(t->tw);
	free(t);
}

/* RFC 6528: a keyed hash of the 4-tuple plus a clock ticking every 4 us. */
uint32_t tcp_isn(const struct vr_tcp *t, const struct vr_flow_key *k, uint64_t now)
{
	return (uint32_t)vr_flow_key_hash(t->isn_key, k) + (uint32_t)(now * 250);
}

/* RFC 7323 §7.1: timestamps start at a per-connection offset, not at our clock. */
uint32_t tcp_ts_offset(const struct vr_tcp *t, const struct vr_flow_key *k)
{
	return (uint32_t)vr_flow_key_hash(t->ts_key, k);
}

struct vr_tcp_conn *tcp_conn_alloc(struct vr_tcp *t, const struct vr_flow_key *k, uint64_t now)
{
	if (t->free_head == CONN_NONE) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_NO_CONN], 1);
		return NULL;
	}
	uint32_t i = t->free_head;
	if (vr_flow_insert(t->flows, k, i) < 0) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_NO_CONN], 1);
		return NULL;
	}
	struct vr_tcp_conn *c = &t->conn[i];
	t->free_head = c->next_free;
	uint8_t *sbuf = c->sbuf, *rbuf = c->rbuf;
	memset(c, 0, sizeof(*c));
	c->t = t;
	c->sbuf = sbuf;
	c->rbuf = rbuf;
	c->key = *k;
	c->rto = t->conf.rto_init_ms;
	c->ts_offset = tcp_ts_offset(t, k);
	c->mss = tcp_mss_for_mtu(vr_net_mtu(t->net), k->v6);
	c->rcv_mss = TCP_MSS_DEFAULT;
	c->ssthresh = UINT32_MAX;
	t->nconns++;
	return c;
}

static void tcp_conn_free(struct vr_tcp_conn *c)
{
	struct vr_tcp *t = c->t;

	vr_wheel_cancel(&t->wheel, &c->tm);
	if (c->qpprev) {
		*c->qpprev = c->qnext;
		if (c->qnext)
			c->qnext->qpprev = c->qpprev;
		c->qpprev = NULL;
	}
	vr_flow_remove(t->flows, &c->key);
	if (c->synq)
		t->nsynrcvd--;
	c->state = TCP_CLOSED;
	c->next_free = t->free_head;
	t->free_head = conn_idx(c);
	t->nconns--;
}

/* Moves an orphaned connection's TIME_WAIT into a compact entry. */
static void tw_convert(struct vr_tcp_conn *c, uint64_t now)
{
	struct vr_tcp *t = c->t;
	struct tcp_tw e = {
		.key = c->key, .snd_nxt = c->snd_max, .rcv_nxt = c->rcv_nxt,
		.ts_offset = c->ts_offset, .ts_recent = c->ts_recent, .ts_ok = c->ts_ok,
		.expire = now + t->conf.timewait_ms, .live = 1,
	};

	tcp_conn_free(c);
	if (t->tw_count == t->conf.timewait_max) {
		struct tcp_tw *old = &t->tw[t->tw_head];
		if (old->live) {
			vr_flow_remove(t->flows, &old->key);
			t->tw_live--;
			vr_net_count(&t->st.timewait_recycled, 1);
		}
		t->tw_head = (t->tw_head + 1) % t->conf.timewait_max;
		t->tw_count--;
	}
	unsigned pos = (t->tw_head + t->tw_count) % t->conf.timewait_max;
	if (vr_flow_insert(t->flows, &e.key, TCP_TW_FLAG | pos) < 0)
		return;
	t->tw[pos] = e;
	t->tw_count++;
	t->tw_live++;
}

/* Frees c unless its owner holds it or the stack is inside it. */
static void tcp_conn_release(struct vr_tcp_conn *c)
{
	if (c->owned || c->busy)
		return;
	if (c->state == TCP_CLOSED)
		tcp_conn_free(c);
	else if (c->state == TCP_TIME_WAIT)
		tw_convert(c, c->t->now);
}

void tcp_enter_timewait(struct vr_tcp_conn *c, uint64_t now)
{
	c->state = TCP_TIME_WAIT;
	c->rtx_at = 0;
	c->tlp_at = 0;
	c->delack_at = 0;
	c->idle_at = now + c->t->conf.timewait_ms;
}

void tcp_conn_timer(struct vr_tcp_conn *c)
{
	uint64_t at = 0;
	const uint64_t d[] = { c->rtx_at, c->delack_at, c->idle_at, c->tlp_at };

	for (unsigned i = 0; i < VR_ARRAY_SIZE(d); i++)
		if (d[i] && (!at || d[i] < at))
			at = d[i];
	if (at)
		vr_wheel_arm(&c->t->wheel, &c->tm, at);
	else
		vr_wheel_cancel(&c->t->wheel, &c->tm);
}

void tcp_conn_queue(struct vr_tcp_conn *c)
{
	struct vr_tcp *t = c->t;

	if (c->qpprev)
		return;
	c->qnext = t->out_head;
	if (c->qnext)
		c->qnext->qpprev = &c->qnext;
	t->out_head = c;
	c->qpprev = &t->out_head;
}

void tcp_conn_error(struct vr_tcp_conn *c, int err, uint64_t now)
{
	c->state = TCP_CLOSED;
	c->error = err;
	c->rtx_at = c->delack_at = c->idle_at = c->tlp_at = 0;
}

void tcp_conn_settle(struct vr_tcp_conn *c, uint64_t now)
{
	const struct vr_tcp_cb *cb = c->cb;

	c->busy = 1;
	if (c->state == TCP_CLOSED && c->error) {
		if (c->owned) {
			c->owned = 0;
			cb->error(c, c->user, c->error, now);
		}
		c->busy = 0;
		tcp_conn_release(c);
		return;
	}
	if (c->established_due) {
		c->established_due = 0;
		if (c->passive) {
			struct tcp_listener *l = &c->t->lst[c->listener];
			c->cb = cb = l->cb;
			c->owned = 1;
			/* The listener may have gone (vr_tcp_unlisten) since the SYN. */
			if (!l->used || l->port != c->key.lport || l->accept(l->arg, c, now) < 0) {
				c->owned = 0;
				c->busy = 0;
				vr_tcp_abort(c);
				return;
			}
		} else if (c->owned && cb->established) {
			cb->established(c, c->user, now);
		}
	}
	if (c->readable_due) {
		c->readable_due = 0;
		if (c->owned && cb->readable && c->rlen)
			cb->readable(c, c->user, now);
	}
	if (c->peer_closed_due) {
		c->peer_closed_due = 0;
		if (c->owned && cb->peer_closed)
			cb->peer_closed(c, c->user, now);
	}
	if (c->writable_due) {
		c->writable_due = 0;
		if (c->owned && cb->writable)
			cb->writable(c, c->user, now);
	}
	c->busy = 0;
	if (c->state != TCP_CLOSED)
		tcp_output(c, now);
	tcp_conn_release(c);
}

static void timer_fire(struct vr_wheel_timer *tm, void *arg, uint64_t now)
{
	struct vr_tcp_conn *c = (struct vr_tcp_conn *)((char *)tm - offsetof(struct vr_tcp_conn, tm));

	if (c->tlp_at && c->tlp_at <= now) {
		c->tlp_at = 0;
		tcp_tlp_timeout(c, now);
	}
	if (c->rtx_at && c->rtx_at <= now) {
		c->rtx_at = 0;
		tcp_rtx_timeout(c, now);
	}
	if (c->delack_at && c->delack_at <= now) {
		c->delack_at = 0;
		c->ack_now = 1;
		vr_net_count(&c->t->st.delayed_acks, 1);
	}
	if (c->idle_at && c->idle_at <= now) {
		/* TIME_WAIT ran out for an owner still holding c, or an orphan's FIN_WAIT_2 did. */
		c->idle_at = 0;
		c->state = TCP_CLOSED;
	}
	tcp_conn_settle(c, now);
}

static void tw_expire(struct vr_tcp *t, uint64_t now)
{
	while (t->tw_count && t->tw[t->tw_head].expire <= now) {
		struct tcp_tw *e = &t->tw[t->tw_head];
		if (e->live) {
			vr_flow_remove(t->flows, &e->key);
			e->live = 0;
			t->tw_live--;
		}
		t->tw_head = (t->tw_head + 1) % t->conf.timewait_max;
		t->tw_count--;
	}
}

void vr_tcp_poll(struct vr_tcp *t, uint64_t now)
{
	t->now = now;
	vr_wheel_advance(&t->wheel, now, timer_fire, t);
	tw_expire(t, now);
	while (t->out_head) {
		struct vr_tcp_conn *c = t->out_head;
		t->out_head = c->qnext;
		if (c->qnext)
			c->qnext->qpprev = &t->out_head;
		c->qpprev = NULL;
		tcp_conn_settle(c, now);
	}
	vr_net_poll(t->net, now);
}

void tcp_tw_input(struct vr_tcp *t, uint32_t val, const struct tcp_seg *s, uint64_t now,
		  int *reuse)
{
	struct tcp_tw *e = &t->tw[val & ~TCP_TW_FLAG];

	*reuse = 0;
	/* RFC 1337: a RST must not cut TIME_WAIT short. */
	if (s->flags & TCP_RST) {
		vr_net_count(&t->st.drop[VR_TCP_DROP_RST_IGNORED], 1);
		return;
	}
	if ((s->flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		/* RFC 6191 with timestamps, RFC 1122 §4.2.2.13 without: a newer incarnation. */
		int newer = e->ts_ok && s->opt.has_ts ? seq_gt(s->opt.tsval, e->ts_recent)
						      : seq_gt(s->seq, e->rcv_nxt);
		if (newer) {
			vr_flow_remove(t->flows, &e->key);
			e->live = 0;
			t->tw_live--;
			vr_net_count(&t->st.timewait_reused, 1);
			*reuse = 1;
			return;
		}
	}
	if (e->ts_ok && s->opt.has_ts && seq_lt(s->opt.tsval, e->ts_recent))
		vr_net_count(&t->st.drop[VR_TCP_DROP_PAWS], 1);
	/*
	 * A retransmitted FIN, or anything else: say again where we are.
	 * XXX RFC 9293 §3.10.7.4: a FIN again does not restart the 2 MSL; the
	 * entries stay in arrival order so that expiry is popping a ring.
	 */
	struct tcp_opts o = { .has_ts = e->ts_ok, .tsval = (uint32_t)now + e->ts_offset,
			      .tsecr = e->ts_recent };
	tcp_send_bare(t, &e->key, e->snd_nxt, e->rcv_nxt, TCP_ACK, 0, &o, now);
}

int vr_tcp_listen(struct vr_tcp *t, uint16_t port, const struct vr_tcp_cb *cb,
		  vr_tcp_accept_fn accept, void *arg)
{
	struct tcp_listener *free_slot = NULL;

	if (!port || !cb || !cb->error || !accept)
		return -EINVAL;
	for (unsigned i = 0; i < VR_TCP_LISTEN_MAX; i++) {
		if (t->lst[i].used && t->lst[i].port == port)
			return -EADDRINUSE;
		if (!t->lst[i].used && !free_slot)
			free_slot = &t->lst[i];
	}
	if (!free_slot)
		return -ENOSPC;
	*free_slot = (struct tcp_listener){ .port = port, .used = 1, .cb = cb, .accept = accept,
					    .arg = arg };
	return 0;
}

int vr_tcp_unlisten(struct vr_tcp *t, uint16_t port)
{
	struct tcp_listener *l = tcp_listener_find(t, port);

	if (!l)
		return -ENOENT;
	l->used = 0;
	return 0;
}

/* Active open of k (its addresses and rport set) from an ephemeral port. */
static struct vr_tcp_conn *connect_key(struct vr_tcp *t, struct vr_flow_key k,
				       const struct vr_tcp_cb *cb, void *user, uint64_t now,
				       int *err)
{
	uint32_t val;

	if (!k.rport || !cb || !cb->error) {
		*err = -EINVAL;
		return NULL;
	}
	/* The next free port after a moving hint: the tuple must be unused, TIME_WAIT included. */
	for (unsigned i = 0; i < PORT_COUNT; i++) {
		uint16_t port = (uint16_t)(PORT_FIRST + (t->port_hint++ % PORT_COUNT));
		k.lport = port;
		if (vr_flow_lookup(t->flows, &k, &val) < 0 && !tcp_listener_find(t, port))
			break;
		k.lport = 0;
	}
	if (!k.lport) {
		*err = -EADDRNOTAVAIL;
		return NULL;
	}
	struct vr_tcp_conn *c = tcp_conn_alloc(t, &k, now);
	if (!c) {
		*err = -ENOBUFS;
		return NULL;
	}
	c->cb = cb;
	c->user = user;
	c->owned = 1;
	c->state = TCP_SYN_SENT;
	c->iss = tcp_isn(t, &k, now);
	c->snd_una = c->snd_nxt = c->snd_max = c->iss;
	/* What we offer; the SYN-ACK leaves what both sides have (tcp_syn_options). */
	c->ws_ok = !t->conf.no_wscale;
	c->rcv_wscale = c->ws_ok ? t->wscale : 0;
	c->ts_ok = !t->conf.no_timestamps;
	c->sack_ok = !t->conf.no_sack;
	vr_net_count(&t->st.active_opens, 1);
	tcp_send_syn(c, now);
	tcp_conn_timer(c);
	vr_net_flush(t->net, now);
	return c;
}

struct vr_tcp_conn *vr_tcp_connect(struct vr_tcp *t, uint32_t raddr, uint16_t rport,
				   const struct vr_tcp_cb *cb, void *user, uint64_t now,
				   int *err)
{
	struct vr_flow_key k = { .laddr = t->ip, .raddr = raddr, .rport = rport };

	if (!raddr) {
		*err = -EINVAL;
		return NULL;
	}
	return connect_key(t, k, cb, user, now, err);
}

struct vr_tcp_conn *vr_tcp_connect6(struct vr_tcp *t, const uint8_t raddr[16], uint16_t rport,
				    const struct vr_tcp_cb *cb, void *user, uint64_t now,
				    int *err)
{
	struct vr_flow_key k = { .rport = rport, .v6 = 1 };

	memcpy(k.raddr6, raddr, 16);
	if (vr_net_ip6_src(t->net, raddr, k.laddr6) < 0) {
		*err = -EAFNOSUPPORT;
		return NULL;
	}
	return connect_key(t, k, cb, user, now, err);
}

ssize_t vr_tcp_send(struct vr_tcp_conn *c, const void *data, size_t len)
{
	switch (c->state) {
	case TCP_SYN_SENT: case TCP_SYN_RCVD: case TCP_ESTABLISHED: case TCP_CLOSE_WAIT:
		break;
	case TCP_CLOSED:
		return -ENOTCONN;
	default:
		return -EPIPE;
	}
	if (c->fin_queued)
		return -EPIPE;
	uint32_t size = c->t->conf.sndbuf;
	size_t take = VR_MIN(len, (size_t)(size - c->slen));
	if (take < len)
		c->writable_wanted = 1;
	if (!take)
		return 0;
	uint32_t tail = (c->shead + c->slen) % size;
	size_t first = VR_MIN(take, (size_t)(size - tail));
	memcpy(c->sbuf + tail, data, first);
	memcpy(c->sbuf, (const uint8_t *)data + first, take - first);
	c->slen += (uint32_t)take;
	tcp_conn_queue(c);
	return (ssize_t)take;
}

size_t vr_tcp_sendable(const struct vr_tcp_conn *c)
{
	return c->t->conf.sndbuf - c->slen;
}

size_t vr_tcp_readable(const struct vr_tcp_conn *c)
{
	return c->rlen;
}

size_t vr_tcp_peek(const struct vr_tcp_conn *c, const uint8_t **data)
{
	*data = c->rbuf + c->rhead;
	return VR_MIN(c->rlen, c->t->conf.rcvbuf - c->rhead);
}

void vr_tcp_consume(struct vr_tcp_conn *c, size_t n)
{
	if (n > c->rlen)
		n = c->rlen;
	c->rhead = (uint32_t)((c->rhead + n) % c->t->conf.rcvbuf);
	c->rlen -= (uint32_t)n;
	/*
	 * RFC 9293 §3.8.6.2.2 (receiver SWS avoidance): a window update of its
	 * own only when the window the peer was last told of is down to half
	 * the buffer and this read opens it by two segments or half the buffer
	 * (Linux's rule, near enough). Otherwise the peer has room to send and
	 * the ACK every second segment (tcp_in.c) carries the window. Measured
	 * against what the peer was told, not the window before this read: a
	 * reader of each segment as it comes sent an update per segment
	 * whenever the payload plus the window scale's rounding reached the MSS
	 * (1428-byte IPv6 payloads did).
	 */
	uint32_t adv = seq_gt(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t half = c->t->conf.rcvbuf / 2;
	if (!c->ack_now && adv <= half && tcp_rcv_window(c) >= adv + VR_MIN(2u * c->mss, half) &&
	    (c->state == TCP_ESTABLISHED || c->state == TCP_FIN_WAIT_1 ||
	     c->state == TCP_FIN_WAIT_2)) {
		c->ack_now = 1;
		vr_net_count(&c->t->st.window_updates, 1);
		tcp_conn_queue(c);
	}
}

size_t vr_tcp_read(struct vr_tcp_conn *c, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len && c->rlen) {
		const uint8_t *p;
		size_t n = VR_MIN(vr_tcp_peek(c, &p), len - done);
		memcpy((uint8_t *)buf + done, p, n);
		vr_tcp_consume(c, n);
		done += n;
	}
	return done;
}

int vr_tcp_shutdown(struct vr_tcp_conn *c)
{
	switch (c->state) {
	case TCP_SYN_SENT:
	case TCP_CLOSED:
		return -ENOTCONN;
	default:
		break;
	}
	if (c->fin_queued)
		return 0;
	c->fin_queued = 1;
	/* RFC 9293 §3.10.4: the state moves now; the FIN follows the queued data. */
	if (c->state == TCP_ESTABLISHED)
		c->state = TCP_FIN_WAIT_1;
	else if (c->state == TCP_CLOSE_WAIT)
		c->state = TCP_LAST_ACK;
	tcp_conn_queue(c);
	return 0;
}

void vr_tcp_close(struct vr_tcp_conn *c)
{
	if (c->rlen || c->state == TCP_SYN_SENT) {
		vr_tcp_abort(c);
		return;
	}
	c->owned = 0;
	if (c->state == TCP_FIN_WAIT_2)
		c->idle_at = c->t->now + c->t->conf.fin_wait_ms;
	vr_tcp_shutdown(c);
	tcp_conn_timer(c);
	tcp_conn_release(c);
}

void vr_tcp_abort(struct vr_tcp_conn *c)
{
	uint64_t now = c->t->now;

	if (c->state != TCP_CLOSED && c->state != TCP_SYN_SENT && c->state != TCP_TIME_WAIT) {
		tcp_send_bare(c->t, &c->key, c->snd_nxt, 0, TCP_RST, 0, NULL, now);
	}
	c->owned = 0;
	c->error = 0;
	c->state = TCP_CLOSED;
	c->rtx_at = c->delack_at = c->idle_at = c->tlp_at = 0;
	tcp_conn_release(c);
}

void vr_tcp_set_user(struct vr_tcp_conn *c, void *user) { c->user = user; }
void *vr_tcp_user(const struct vr_tcp_conn *c) { return c->user; }

void vr_tcp_conn_info(const struct vr_tcp_conn *c, struct vr_tcp_info *info)
{
	uint32_t inflight = c->snd_max - c->snd_una - (c->fin_sent && c->snd_max != c->snd_una);

	*info = (struct vr_tcp_info){
		.laddr = c->key.laddr, .raddr = c->key.raddr, .lport = c->key.lport,
		.rport = c->key.rport, .state = tcp_state_name(c->state), .mss = c->mss,
		.srtt_ms = c->srtt8 >> 3, .rto_ms = c->rto, .cwnd = c->cwnd,
		.snd_wnd = c->snd_wnd, .rcv_wnd = rcv_space(c),
		.unacked = VR_MIN(inflight, c->slen), .retransmits = c->retransmits,
		.timestamps = c->ts_ok, .sack = c->sack_ok, .wscale = c->ws_ok, .v6 = c->key.v6,
	};
	info->unsent = c->slen - info->unacked;
	memcpy(info->laddr6, c->key.laddr6, 16);
	memcpy(info->raddr6, c->key.raddr6, 16);
}

unsigned vr_tcp_conn_count(const struct vr_tcp *t) { return t->nconns; }
unsigned vr_tcp_timewait_count(const struct vr_tcp *t) { return t->tw_live; }
const struct vr_tcp_stats *vr_tcp_stats(const struct vr_tcp *t) { return &t->st; }
