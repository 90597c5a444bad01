/*
 * test_tcp_harness.h - what test_tcp_harness.c gives the test_tcp*.c
 * programs (see there).
 */
#ifndef TEST_TCP_HARNESS_H
#define TEST_TCP_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "vmrelay/tcp.h"
#include "test_bytes.h"

#define OUR_IP  0x0a000001u            /* 10.0.0.1/24 */
#define PEER_IP 0x0a000002u
#define PORT    25
#define PPORT   40000                  /* the peer's port */
#define PISN    1000000u               /* the peer's ISN */
#define T0      1000000u

#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_PSH 0x08
#define F_ACK 0x10


/* Options of a segment, as sent by the test or parsed from the stack's. */
struct opts {
	int mss, ws;                   /* -1: absent */
	int sack_ok, ts;
	uint32_t tsval, tsecr;
	unsigned nsack;
	uint32_t sack[4][2];
	int truncated;                 /* sending: end with an option longer than the room left */
};

struct seg {
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t win;
	uint32_t len;
	uint8_t data[2048];
	struct opts o;
};

#define SEGS_MAX 512
extern struct seg out[SEGS_MAX];       /* what the stack sent, parsed */
extern unsigned nout;
extern struct vr_net *net;
extern struct vr_tcp *tcp;
extern uint64_t now;
extern struct vr_tcp_conn *conn;       /* the last one accepted */
extern int accepted, established, readable, writable, peer_closed, errors, last_err;
extern int refuse;                     /* the accept callback refuses */
extern struct vr_tcp_conf tconf;       /* what fixture_make creates the stack with */
extern uint16_t pport;                 /* the peer's port in what it sends */
extern int corrupt;                    /* flip a payload bit after the checksum */
extern uint16_t rx_flags;              /* VR_PKT_* offload flags on injected frames */
extern uint32_t iss;                   /* our ISN on the current connection */
extern const struct vr_tcp_cb cbs;

/* A frame into the stack at the current time. */
void inject(const uint8_t *b, size_t len);
/* A segment from the peer (PEER_IP:pport) to our port dport; o may be NULL. */
void peer_send(uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags, uint16_t win,
	       const void *data, size_t len, const struct opts *o);
/* Advances the clock by ms and polls. */
void tick(uint64_t ms);
/* A fresh stack from tconf, listening on PORT, the peer's MAC known. */
void fixture_make(void);
/* The same, after freeing the current one (tconf changed). */
void fixture_remake(void);
int setup(void **state);
int teardown(void **state);
const struct vr_tcp_stats *st(void);
/* The one segment sent since the last call (asserts there was exactly one). */
struct seg *one(void);
/* A passive open from PPORT with options o (NULL: none); sets conn and iss. */
void open_passive(const struct opts *o, uint16_t win);
void open_plain(void);
/* Connects to the peer's port 2525 and returns the SYN it sent; pport becomes 2525. */
struct vr_tcp_conn *connect_peer(struct seg *syn);

#endif
