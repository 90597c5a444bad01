/*
 * tcp.h - TCP for the per-core userspace stack (RFC 9293; issue 3), and the
 * socket-like, callback-driven interface the transport above runs SMTP
 * sessions on.
 *
 * One struct vr_tcp per struct vr_net (one per worker core), shared with
 * nothing but its counters (vr_net_count): no lock, no malloc after vr_tcp_new. Connections, their
 * send and receive buffers, the SYN queue and the TIME_WAIT entries are
 * pools sized at creation. Bytes are copied once in each direction: from the
 * frame into the connection's receive buffer, and from the owner's vr_tcp_send
 * into its send buffer; segments are built from the send buffer when they go
 * out, so TCP holds no packet between calls.
 *
 * The poll loop of a worker:
 *
 *     n = rx_burst(...); vr_net_rx(net, pkts, n, now);   callbacks fire here
 *     ...sessions run, calling vr_tcp_send / vr_tcp_read ...
 *     vr_tcp_poll(tcp, now);     timers, queued output, vr_net_poll + flush
 *
 * Callbacks are called from vr_net_rx (through the net hook) and
 * vr_tcp_poll, never from vr_tcp_connect, vr_tcp_send, vr_tcp_read,
 * vr_tcp_consume, vr_tcp_shutdown, vr_tcp_close or vr_tcp_abort, so an owner
 * may call any of these from inside a callback. Data given to vr_tcp_send leaves at the next
 * vr_tcp_poll (or at the end of the rx burst being processed), so several
 * sends in one loop iteration share segments.
 *
 * Lifetime of a connection handle: it is valid from the accept callback (or
 * vr_tcp_connect) until the owner calls vr_tcp_close or vr_tcp_abort, or
 * until the `error` callback returns, whichever is first. After vr_tcp_close
 * the stack finishes the exchange of FINs by itself (with a timeout) and
 * calls nothing more.
 *
 * Addresses and ports are host byte order; "now" is monotonic milliseconds.
 */
#ifndef VR_TCP_H
#define VR_TCP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "vmrelay/net.h"

struct vr_tcp;
struct vr_tcp_conn;

struct vr_tcp_conf {
	/*
	 * Memory is max_conns * (sndbuf + rcvbuf), all allocated by vr_tcp_new
	 * (the defaults: 80 MiB, touched only as connections use it).
	 */
	unsigned max_conns;          /* connections, embryonic ones included; 0 means 1024 */
	uint32_t sndbuf;             /* bytes per connection, 2K..16M; 0 means 16 KiB */
	uint32_t rcvbuf;             /* bytes per connection, 2K..16M; 0 means 64 KiB */
	unsigned syn_queue;          /* half-open connections before SYN cookies; 0 means 128 */
	unsigned timewait_max;       /* compact TIME_WAIT entries; 0 means max_conns */
	uint32_t timewait_ms;        /* 0 means 60 s (2 MSL) */
	uint32_t rto_min_ms;         /* 0 means 200 ms (see tcp_out.c for why) */
	uint32_t rto_init_ms;        /* 0 means 1 s (RFC 6298 §2.1) */
	uint32_t rto_max_ms;         /* 0 means 60 s */
	unsigned max_retries;        /* RTO expiries in a row before giving up; 0 means 8 */
	unsigned syn_retries;        /* SYN/SYN-ACK retransmissions; 0 means 5 */
	uint32_t delack_ms;          /* 1..500; 0 means 40 */
	uint32_t fin_wait_ms;        /* FIN_WAIT_2 / LAST_ACK after close; 0 means 60 s */
	uint8_t key[16];             /* secret for ISNs, cookies and the flow hash; all zero: random */
	unsigned no_timestamps : 1;  /* do not offer or accept RFC 7323 timestamps */
	unsigned no_wscale : 1;      /* do not offer or accept window scaling */
	unsigned no_sack : 1;        /* do not offer or accept SACK-permitted */
	unsigned always_cookies : 1; /* answer every SYN with a cookie (tests, floods) */
};

/*
 * Per-connection callbacks. Every one may be NULL except `error`. They get
 * the connection and its user pointer (vr_tcp_set_user).
 *
 * established: the handshake completed (active open; a passive one is
 *   reported through the listener's accept callback instead).
 * readable: new in-order bytes arrived (vr_tcp_readable says how many). The
 *   owner reads at its pace; what it leaves unread closes the window.
 * writable: room freed in the send buffer after a vr_tcp_send took less than
 *   it was offered.
 * peer_closed: the peer's FIN arrived after all its data (every byte before
 *   it is readable already). The owner may still send, then shutdown/close.
 * error: the connection is gone (err: -ECONNRESET the peer reset it,
 *   -ECONNREFUSED reset during active open, -ETIMEDOUT retransmissions or
 *   the handshake timed out). The handle is invalid
 *   once it returns; do not close it.
 */
struct vr_tcp_cb {
	void (*established)(struct vr_tcp_conn *c, void *user, uint64_t now);
	void (*readable)(struct vr_tcp_conn *c, void *user, uint64_t now);
	void (*writable)(struct vr_tcp_conn *c, void *user, uint64_t now);
	void (*peer_closed)(struct vr_tcp_conn *c, void *user, uint64_t now);
	void (*error)(struct vr_tcp_conn *c, void *user, int err, uint64_t now);
};

/*
 * A listener's accept callback: c completed the three-way handshake and uses
 * the listener's callbacks. Return 0 to keep it (set its user pointer here),
 * or a negative errno to refuse it: it is reset and the handle is invalid.
 */
typedef int (*vr_tcp_accept_fn)(void *arg, struct vr_tcp_conn *c, uint64_t now);

/* Drop reasons, counted per instance; vr_tcp_drop_name gives each a name. */
enum vr_tcp_drop {
	VR_TCP_DROP_SHORT,           /* shorter than a header, or data offset wrong */
	VR_TCP_DROP_CSUM,
	VR_TCP_DROP_BAD_FLAGS,       /* SYN+FIN, SYN+RST, no ACK where one is due ... */
	VR_TCP_DROP_BAD_OPT,         /* malformed options */
	VR_TCP_DROP_NO_LISTENER,     /* answered with RST */
	VR_TCP_DROP_NO_CONN,         /* the connection pool is full */
	VR_TCP_DROP_UNACCEPTABLE,    /* outside the receive window (ACKed, RFC 9293 §3.10.7.4) */
	VR_TCP_DROP_PAWS,            /* old timestamp (RFC 7323 §5) */
	VR_TCP_DROP_BAD_ACK,         /* acknowledges what we never sent */
	VR_TCP_DROP_BAD_COOKIE,      /* ACK to a SYN cookie that does not check out */
	VR_TCP_DROP_OOO_FULL,        /* out of order and no room to track it */
	VR_TCP_DROP_RST_IGNORED,     /* RST outside the window */
	VR_TCP_DROP_NO_PKT,          /* no packet to send a segment in */
	VR_TCP_DROP_PMTU,            /* fragmentation-needed not believed */
	VR_TCP_DROP_CHALLENGE_LIMIT, /* a challenge ACK over the connection's budget */
	VR_TCP_DROP_MAX
};

struct vr_tcp_stats {
	uint64_t segs_in, segs_out, bytes_in, bytes_out;     /* payload bytes */
	uint64_t active_opens, passive_opens, established;
	uint64_t resets_in, resets_out;
	uint64_t retransmits;        /* segments sent again, for any reason */
	uint64_t rto_expired, fast_retransmits, sack_blocks_sent;
	uint64_t tlp_probes, tlp_recoveries; /* tail loss probes, and losses they showed */
	uint64_t dup_acks_in, ooo_segs, dup_segs;
	uint64_t challenge_acks;     /* RFC 5961 §§3-5 */
	uint64_t cookies_sent, cookies_accepted;
	uint64_t syn_queue_full;     /* SYNs that found the queue full */
	uint64_t timewait_reused, timewait_recycled;  /* reused by a SYN, or evicted early */
	uint64_t zero_window_probes, window_updates, delayed_acks;
	uint64_t timeouts;           /* connections given up on */
	uint64_t pmtu_updates;
	uint64_t drop[VR_TCP_DROP_MAX];
};

/* What the owner can learn about a connection: IPv4 (laddr, raddr) or v6 (laddr6, raddr6). */
struct vr_tcp_info {
	uint32_t laddr, raddr;
	uint8_t laddr6[16], raddr6[16];
	uint16_t lport, rport;
	const char *state;           /* "ESTABLISHED", "CLOSE_WAIT", ... */
	uint16_t mss;                /* what we send in a segment */
	uint32_t srtt_ms, rto_ms;
	uint32_t cwnd, snd_wnd, rcv_wnd;
	uint32_t unsent, unacked;    /* bytes in the send buffer */
	uint64_t retransmits;
	unsigned timestamps : 1, sack : 1, wscale : 1, v6 : 1;
};

/*
 * Creates the TCP of net and installs itself as net's tcp_rx and pmtu hooks
 * (vr_net_set_tcp); net must outlive it. NULL with *err set to a sentence on
 * a bad conf or no memory.
 */
struct vr_tcp *vr_tcp_new(struct vr_net *net, const struct vr_tcp_conf *conf, uint64_t now,
			  char *err, size_t errlen);
/* Frees every connection without a callback or a segment; uninstalls the hooks. */
void vr_tcp_free(struct vr_tcp *t);

/*
 * Listens on port (any of our addresses). 0, -EADDRINUSE or -ENOSPC (at most
 * VR_TCP_LISTEN_MAX ports). cb must outlive the listener and its
 * connections.
 */
#define VR_TCP_LISTEN_MAX 16
int vr_tcp_listen(struct vr_tcp *t, uint16_t port, const struct vr_tcp_cb *cb,
		  vr_tcp_accept_fn accept, void *arg);
/* Stops accepting on port (established connections go on). 0 or -ENOENT. */
int vr_tcp_unlisten(struct vr_tcp *t, uint16_t port);

/*
 * Active open to raddr:rport from an ephemeral port; the SYN leaves at once.
 * Returns the connection (established or error follows), or NULL with *err
 * -ENOBUFS (pool full), -EADDRNOTAVAIL (no free port) or -EINVAL.
 */
struct vr_tcp_conn *vr_tcp_connect(struct vr_tcp *t, uint32_t raddr, uint16_t rport,
				   const struct vr_tcp_cb *cb, void *user, uint64_t now,
				   int *err);

/* The same to an IPv6 raddr (16 bytes), from ip6 or the link-local address; also -EAFNOSUPPORT. */
struct vr_tcp_conn *vr_tcp_connect6(struct vr_tcp *t, const uint8_t raddr[16], uint16_t rport,
				    const struct vr_tcp_cb *cb, void *user, uint64_t now,
				    int *err);

/*
 * Copies up to len bytes into the send buffer; returns how many it took (0
 * when full: writable follows), or -ENOTCONN (never synchronized, or reset)
 * or -EPIPE (after shutdown or close).
 */
ssize_t vr_tcp_send(struct vr_tcp_conn *c, const void *data, size_t len);
/* Room in the send buffer now. */
size_t vr_tcp_sendable(const struct vr_tcp_conn *c);

/* Bytes ready to read. */
size_t vr_tcp_readable(const struct vr_tcp_conn *c);
/* Copies and consumes up to len bytes; returns how many. */
size_t vr_tcp_read(struct vr_tcp_conn *c, void *buf, size_t len);
/*
 * Zero-copy reading: *data points at the next contiguous readable bytes in
 * the receive buffer (the return value says how many; the buffer is a ring,
 * so after consuming them more may follow). Valid until the next call into
 * the stack for this connection.
 */
size_t vr_tcp_peek(const struct vr_tcp_conn *c, const uint8_t **data);
/* Consumes n readable bytes (at most vr_tcp_readable), opening the window. */
void vr_tcp_consume(struct vr_tcp_conn *c, size_t n);

/* FIN after the queued data; sending is over. 0, or -ENOTCONN. Idempotent. */
int vr_tcp_shutdown(struct vr_tcp_conn *c);
/*
 * The owner is done with c: shutdown, and the stack finishes the close alone.
 * Unread data makes it a reset instead (RFC 9293 §3.10.4, RFC 2525 §2.17).
 */
void vr_tcp_close(struct vr_tcp_conn *c);
/* Sends RST and frees the connection at once. */
void vr_tcp_abort(struct vr_tcp_conn *c);

void vr_tcp_set_user(struct vr_tcp_conn *c, void *user);
void *vr_tcp_user(const struct vr_tcp_conn *c);
void vr_tcp_conn_info(const struct vr_tcp_conn *c, struct vr_tcp_info *info);

/*
 * Timers (retransmission, delayed ACK, persist, TIME_WAIT, half-open
 * expiry), the output queued by sends and reads, then vr_net_poll. Call
 * once per poll loop.
 */
void vr_tcp_poll(struct vr_tcp *t, uint64_t now);

/* Connections held (embryonic, owned and orphaned); TIME_WAIT entries apart. */
unsigned vr_tcp_conn_count(const struct vr_tcp *t);
unsigned vr_tcp_timewait_count(const struct vr_tcp *t);
const struct vr_tcp_stats *vr_tcp_stats(const struct vr_tcp *t);
const char *vr_tcp_drop_name(enum vr_tcp_drop d);

/* The net hooks, for a caller wiring net and tcp by hand (arg: the struct vr_tcp). */
void vr_tcp_input(void *arg, struct vr_pkt *p, const struct vr_net_ip_info *ip, uint64_t now);
void vr_tcp_pmtu(void *arg, const struct vr_net_pmtu *m, uint64_t now);

#endif
