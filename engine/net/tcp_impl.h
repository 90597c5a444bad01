/*
 * tcp_impl.h - TCP's insides, shared by engine/net/tcp*.c: tcp.c (the
 * instance, the owner's API, timers, TIME_WAIT), tcp_in.c (segment input and
 * the state machine), tcp_out.c (segment output, retransmission, congestion
 * control) and tcp_syn.c (listeners, the SYN queue, SYN cookies).
 *
 * Everything here is touched by the one worker thread that owns the
 * instance; there is no lock, and the only atomics are the counters' relaxed
 * stores (vr_net_count: the control thread reads them).
 */
#ifndef VR_TCP_IMPL_H
#define VR_TCP_IMPL_H

#include "vmrelay/netflow.h"
#include "vmrelay/netwheel.h"
#include "vmrelay/tcp.h"

#include "net_impl.h"

#define TCP_HDR          20
#define TCP_FIN  0x01
#define TCP_SYN  0x02
#define TCP_RST  0x04
#define TCP_PSH  0x08
#define TCP_ACK  0x10

#define TCP_OOO_MAX      4           /* out-of-order ranges kept per connection */
#define TCP_SACKED_MAX   6           /* ranges the peer SACKed, kept for loss recovery */
#define TCP_MSS_DEFAULT  536         /* RFC 9293 §3.7.1: when the peer says nothing */
#define TCP_WSCALE_MAX   14
#define TCP_TS_LEN       12          /* NOP NOP TS: what timestamps cost per segment */
#define TCP_PAWS_IDLE_MS (24u * 86400 * 1000)  /* RFC 7323 §5.5: ts_recent goes stale */
#define TCP_TLP_MIN_MS   10          /* the earliest tail loss probe */
#define TCP_WCDELACK_MS  200         /* RFC 8985 §7.2: a peer's worst case delayed ACK */
#define TCP_CHALLENGE_PER_S 10          /* challenge ACKs a connection sends a second */
#define TCP_PMTU_MIN     552         /* a floor under ICMP's word, as Linux's min_pmtu */
#define TCP_PMTU6_MIN    VR_NET_IP6_MTU_MIN  /* RFC 8201 §4: IPv6 never goes below */
#define TCP_TW_FLAG      0x80000000u /* flow table value: a TIME_WAIT entry, not a conn */

/* Sequence-space comparisons (RFC 9293 §3.4), modulo 2^32. */
static inline int seq_lt(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }
static inline int seq_le(uint32_t a, uint32_t b) { return (int32_t)(a - b) <= 0; }
static inline int seq_gt(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }
static inline int seq_ge(uint32_t a, uint32_t b) { return (int32_t)(a - b) >= 0; }

enum tcp_state {
	TCP_CLOSED, TCP_SYN_SENT, TCP_SYN_RCVD, TCP_ESTABLISHED, TCP_FIN_WAIT_1,
	TCP_FIN_WAIT_2, TCP_CLOSING, TCP_TIME_WAIT, TCP_CLOSE_WAIT, TCP_LAST_ACK,
	TCP_NSTATES
};

struct tcp_range { uint32_t start, end; };

/* A segment's options as parsed (tcp_in.c) or to be sent. */
struct tcp_opts {
	uint16_t mss;
	uint8_t wscale;
	uint8_t has_mss : 1, has_ws : 1, sack_ok : 1, has_ts : 1;
	uint8_t nsack;               /* received SACK blocks */
	uint32_t tsval, tsecr;
	struct tcp_range sack[4];
};

/* A parsed incoming segment; data points into the packet. */
struct tcp_seg {
	uint32_t seq, ack;
	uint16_t win;                /* as sent, unscaled */
	uint8_t flags;
	uint32_t len;                /* payload bytes */
	const uint8_t *data;
	struct tcp_opts opt;
};

struct vr_tcp_conn {
	struct vr_tcp *t;
	struct vr_flow_key key;
	uint8_t state;               /* enum tcp_state */
	uint8_t listener;            /* passive: the listener's slot */
	uint8_t snd_wscale, rcv_wscale;
	uint8_t nrtx;                /* RTO expiries (or unanswered probes) in a row */
	uint8_t dupacks;
	uint8_t nooo;
	uint8_t challenges;          /* challenge ACKs sent since challenge_at */
	unsigned owned : 1;          /* the owner holds the handle */
	unsigned busy : 1;           /* the stack is inside this connection: defer the free */
	unsigned passive : 1;
	unsigned synq : 1;           /* counted in the SYN queue */
	unsigned ts_ok : 1, sack_ok : 1, ws_ok : 1;
	unsigned fin_queued : 1;     /* shutdown: FIN after the data */
	unsigned fin_sent : 1;       /* our FIN has a sequence number (snd_max covers it) */
	unsigned fin_acked : 1;
	unsigned fin_rcvd : 1;       /* the peer's FIN is in sequence */
	unsigned fin_ooo : 1;        /* the peer's FIN arrived ahead of a hole, at fin_seq */
	unsigned peer_closed_due : 1, readable_due : 1, writable_due : 1, established_due : 1;
	unsigned writable_wanted : 1;/* a send came up short */
	unsigned ack_now : 1;        /* an ACK goes out at the next output */
	unsigned in_recovery : 1;    /* NewReno fast recovery (RFC 6582) */
	unsigned persist : 1;        /* the retransmission timer probes a zero window */
	unsigned rtt_timing : 1;     /* rtt_seq is being timed (no timestamps) */
	int error;                   /* for the error callback, when due */

	const struct vr_tcp_cb *cb;
	void *user;

	/* Send side: bytes [snd_una, snd_una + slen) live in sbuf from shead. */
	uint32_t iss, snd_una, snd_nxt, snd_max, snd_wl1, snd_wl2;
	uint32_t snd_wnd, max_snd_wnd;
	uint32_t cwnd, ssthresh, recover;
	uint16_t mss;                /* payload per segment, options apart */
	uint8_t nsacked;
	struct tcp_range sacked[TCP_SACKED_MAX];   /* ascending, above snd_una */
	uint32_t rtx_high;           /* recovery resent everything below this */
	uint32_t tlp_high;           /* snd_max when a tail loss probe went; 0: none out */
	uint8_t *sbuf;
	uint32_t shead, slen;

	/* Receive side: rlen in-order bytes from rhead, then out-of-order ranges. */
	uint32_t irs, rcv_nxt, rcv_adv, fin_seq;
	uint8_t *rbuf;
	uint32_t rhead, rlen;
	struct tcp_range ooo[TCP_OOO_MAX];   /* most recent first (RFC 2018 §4) */
	uint32_t rcv_wup;            /* rcv_nxt when our last ACK left */
	uint16_t rcv_mss;            /* the largest segment seen: what "full" means */

	/* Timestamps (RFC 7323): ours run at 1 ms from a per-tuple offset. */
	uint32_t ts_offset, ts_recent;
	uint64_t ts_recent_at;

	/* RTO (RFC 6298): srtt in 1/8 ms, rttvar in 1/4 ms. */
	uint32_t srtt8, rttvar4, rto;
	uint32_t rtt_seq;
	uint64_t rtt_start;
	uint64_t challenge_at;
	uint64_t retransmits;

	/* One wheel timer at the earliest of these (0: not set). */
	struct vr_wheel_timer tm;
	uint64_t rtx_at, delack_at, idle_at, tlp_at;

	uint32_t next_free;          /* pool free list */
	struct vr_tcp_conn *qnext, **qpprev;   /* the output list; qpprev NULL: not on it */
};

/* A compact TIME_WAIT entry: what is needed to ACK a FIN again and judge a new SYN. */
struct tcp_tw {
	struct vr_flow_key key;
	uint32_t snd_nxt, rcv_nxt;
	uint32_t ts_offset, ts_recent;
	uint64_t expire;
	uint8_t ts_ok, live;
};

struct tcp_listener {
	uint16_t port;
	uint8_t used;
	const struct vr_tcp_cb *cb;
	vr_tcp_accept_fn accept;
	void *arg;
};

struct vr_tcp {
	struct vr_net *net;
	struct vr_tcp_conf conf;
	uint32_t ip;

	struct vr_tcp_conn *conn;
	uint8_t *bufs;
	uint32_t free_head;          /* UINT32_MAX: pool empty */
	unsigned nconns, nsynrcvd;
	struct vr_tcp_conn *out_head;   /* connections with output due */

	struct vr_flow_table *flows;
	struct vr_wheel wheel;

	/* TIME_WAIT entries: a ring in expiry order (every entry lives as long). */
	struct tcp_tw *tw;
	unsigned tw_head, tw_count, tw_live;

	struct tcp_listener lst[VR_TCP_LISTEN_MAX];

	uint8_t isn_key[VR_SIPHASH_KEY_LEN], cookie_key[VR_SIPHASH_KEY_LEN];
	uint8_t ts_key[VR_SIPHASH_KEY_LEN];
	uint64_t cookie_until;       /* cookie ACKs are checked until then */
	uint16_t port_hint;
	uint8_t wscale;              /* what we offer, from rcvbuf */
	uint64_t now;                /* the latest time passed in: for calls that take none */

	struct vr_tcp_stats st;
};

#define CONN_NONE UINT32_MAX

static inline void tcp_drop(struct vr_tcp *t, struct vr_pkt *p, enum vr_tcp_drop why)
{
	vr_net_count(&t->st.drop[why], 1);
	vr_net_pkt_free(p);
}

static inline uint32_t conn_idx(const struct vr_tcp_conn *c) { return (uint32_t)(c - c->t->conn); }
static inline uint32_t ts_now(const struct vr_tcp_conn *c, uint64_t now)
{
	return (uint32_t)now + c->ts_offset;
}
/* Free space in the receive buffer: the window we could offer. */
static inline uint32_t rcv_space(const struct vr_tcp_conn *c)
{
	return c->t->conf.rcvbuf - c->rlen;
}

/* tcp.c */
struct vr_tcp_conn *tcp_conn_alloc(struct vr_tcp *t, const struct vr_flow_key *k, uint64_t now);
void tcp_conn_timer(struct vr_tcp_conn *c);
void tcp_conn_queue(struct vr_tcp_conn *c);
void tcp_conn_error(struct vr_tcp_conn *c, int err, uint64_t now);
/* Runs the callbacks due, then output; the conn may be gone after. */
void tcp_conn_settle(struct vr_tcp_conn *c, uint64_t now);
void tcp_enter_timewait(struct vr_tcp_conn *c, uint64_t now);
/* A segment for a TIME_WAIT entry; *reuse says a new SYN may have the tuple. */
void tcp_tw_input(struct vr_tcp *t, uint32_t val, const struct tcp_seg *s, uint64_t now,
		  int *reuse);
uint32_t tcp_isn(const struct vr_tcp *t, const struct vr_flow_key *k, uint64_t now);
uint32_t tcp_ts_offset(const struct vr_tcp *t, const struct vr_flow_key *k);

/* tcp_in.c */
void tcp_conn_input(struct vr_tcp_conn *c, const struct tcp_seg *s, uint64_t now);
/* Takes what a SYN offered (ours offered first when active). */
void tcp_syn_options(struct vr_tcp_conn *c, const struct tcp_opts *o, uint64_t now);
/* The initial window (RFC 6928 §2; one segment after a lost SYN, RFC 5681 §3.1). */
uint32_t tcp_initial_cwnd(const struct vr_tcp_conn *c);

/* tcp_out.c */
void tcp_output(struct vr_tcp_conn *c, uint64_t now);
void tcp_send_syn(struct vr_tcp_conn *c, uint64_t now);
/* An ACK or RST with no connection behind it (listener, TIME_WAIT, unknown port). */
void tcp_send_bare(struct vr_tcp *t, const struct vr_flow_key *k, uint32_t seq, uint32_t ack,
		   uint8_t flags, uint32_t win, const struct tcp_opts *opt, uint64_t now);
/* RST in answer to s, per RFC 9293 §3.10.7.1. */
void tcp_send_reset_for(struct vr_tcp *t, const struct vr_flow_key *k, const struct tcp_seg *s,
			uint64_t now);
void tcp_rtx_timeout(struct vr_tcp_conn *c, uint64_t now);
void tcp_tlp_timeout(struct vr_tcp_conn *c, uint64_t now);
/*
 * Loss recovery's next retransmission: the first hole at or above rtx_high
 * that the peer's SACKs show (RFC 6675 §4, NextSeg rule 1), or without SACK
 * the segment at snd_una (RFC 6582). Returns whether one left.
 */
int tcp_retransmit_next(struct vr_tcp_conn *c, uint64_t now);
void tcp_rto_update(struct vr_tcp_conn *c);
uint32_t tcp_rcv_window(struct vr_tcp_conn *c);
/* The MSS an MTU leaves over IPv4 or IPv6 (no options). */
uint16_t tcp_mss_for_mtu(uint16_t mtu, int v6);

/* tcp_syn.c */
/* Returns a connection it made (to settle), or NULL. */
struct vr_tcp_conn *tcp_listen_input(struct vr_tcp *t, struct tcp_listener *l,
				     const struct vr_flow_key *k, const struct tcp_seg *s,
				     uint64_t now);
struct tcp_listener *tcp_listener_find(struct vr_tcp *t, uint16_t port);

#endif
