/*
 * conn.h - one non-blocking TCP connection of vmrelay-bench, plain or TLS,
 * as both the client and the sink use it (private to vmrelay-bench).
 *
 * The owner parses plaintext from rx and appends plaintext to tx; a message
 * body goes out after tx as borrowed iovecs (seg), so a large message is
 * never copied. With TLS (the project's memory-BIO glue, vmrelay/tls.h)
 * reads decrypt into rx and flushes encrypt tx and seg through the cipher
 * buffer; the owner sees no difference. Made for edge-triggered events:
 * read and flush work until the transport would block.
 *
 * The bytes move through the connection's ops: a kernel socket's read and
 * sendmsg (vr_bench_conn_open), or a connection of the userspace stack
 * (io_dpdk.c, vr_bench_conn_attach). TLS sits above either.
 */
#ifndef VR_BENCH_CONN_H
#define VR_BENCH_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "vmrelay/buf.h"
#include "vmrelay/tls.h"
#include "stats.h"

#define VR_BENCH_SEG_MAX 4

struct vr_bench_conn;

struct vr_bench_conn_ops {
	/* As read(2): octets read, 0 at the peer's end of stream, -EAGAIN when
	 * nothing waits, or another -errno. */
	ssize_t (*recv)(struct vr_bench_conn *c, void *buf, size_t len);
	/* As sendmsg(2): octets taken, -EAGAIN when there is no room, -errno. */
	ssize_t (*sendv)(struct vr_bench_conn *c, const struct iovec *iov, unsigned n);
	/* Gives the connection back; buffers are the caller's. */
	void (*close)(struct vr_bench_conn *c);
};

struct vr_bench_conn {
	const struct vr_bench_conn_ops *ops; /* NULL when closed */
	int fd;                          /* a kernel socket, or -1 */
	void *h;                         /* another transport's connection */
	struct vr_buf rx;                /* plaintext received, not yet consumed */
	struct vr_buf tx;                /* plaintext to send, before seg */
	struct iovec seg[VR_BENCH_SEG_MAX];  /* borrowed: the owner keeps them alive */
	unsigned nseg, seg_i;            /* seg[seg_i] is advanced in place */
	struct vr_tls *tls;
	struct vr_buf cipher;            /* TLS: ciphertext to send */
	uint64_t t_send;                 /* ns, just before the latest write */
};

/* Buffers with their ceilings; no memory until first used. */
void vr_bench_conn_init(struct vr_bench_conn *c, size_t rx_max, size_t tx_max);
/* Takes a connected (or connecting) non-blocking socket. */
void vr_bench_conn_open(struct vr_bench_conn *c, int fd);
/* Takes another transport's connection h, moved by ops. */
void vr_bench_conn_attach(struct vr_bench_conn *c, const struct vr_bench_conn_ops *ops, void *h);
/* Closes the connection and drops TLS and unsent data; buffers keep their memory. */
void vr_bench_conn_close(struct vr_bench_conn *c);
void vr_bench_conn_free(struct vr_bench_conn *c);

/*
 * Starts TLS on the connection (rx must be empty: anything the peer sent in
 * plaintext before the handshake has no place in it). A client sends its
 * hello at the next flush. 0, -ENOMEM or -EPROTO.
 */
int vr_bench_conn_tls(struct vr_bench_conn *c, struct vr_tls_ctx *ctx, bool server);

/*
 * Reads what the connection has into rx. Returns 0 when it would block, 1 when
 * rx is full (consume, then read again), -EPIPE at the peer's end of stream
 * (rx may still hold its last words), -EPROTO on a TLS failure
 * (vr_tls_error() says which) or another -errno.
 */
int vr_bench_conn_read(struct vr_bench_conn *c);

/* Queues n octets of a body after tx; at most VR_BENCH_SEG_MAX at a time. */
void vr_bench_conn_segments(struct vr_bench_conn *c, const struct iovec *iov, unsigned n);
/* Anything not yet handed to the transport. */
bool vr_bench_conn_pending(const struct vr_bench_conn *c);
/*
 * Sends tx, then the segments. Returns 0 when the transport is full (an
 * EPOLLOUT edge follows), 1 when it is not (with TLS, plaintext may still
 * wait for the handshake: vr_bench_conn_pending() tells), -EPROTO or
 * another -errno.
 */
int vr_bench_conn_flush(struct vr_bench_conn *c);

#endif
