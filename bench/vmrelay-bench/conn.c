/*
 * conn.c - a plain or TLS connection for edge-triggered events (see conn.h),
 * and the kernel socket's ops.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"

/* Plaintext handed to TLS at a time: one record's worth. */
#define TLS_CHUNK 16384
/* Ciphertext queued before it must go out: bounds the memory per session. */
#define CIPHER_MAX (256 * 1024)

void vr_bench_conn_init(struct vr_bench_conn *c, size_t rx_max, size_t tx_max)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	vr_buf_init(&c->rx, rx_max);
	vr_buf_init(&c->tx, tx_max);
	/* vr_tls_drain() fills up to the ceiling: that bounds a session's
	 * ciphertext, whatever size the message. */
	vr_buf_init(&c->cipher, CIPHER_MAX);
}

static ssize_t sock_recv(struct vr_bench_conn *c, void *buf, size_t len)
{
	ssize_t n = read(c->fd, buf, len);

	return n < 0 ? -errno : n;
}

static ssize_t sock_sendv(struct vr_bench_conn *c, const struct iovec *iov, unsigned n)
{
	struct msghdr mh = { .msg_iov = (struct iovec *)iov, .msg_iovlen = n };
	/* MSG_NOSIGNAL: a peer gone away is an error to count, not SIGPIPE. */
	ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);

	return w < 0 ? -errno : w;
}

static void sock_close(struct vr_bench_conn *c)
{
	close(c->fd);
	c->fd = -1;
}

static const struct vr_bench_conn_ops sock_ops = {
	.recv = sock_recv, .sendv = sock_sendv, .close = sock_close,
};

void vr_bench_conn_open(struct vr_bench_conn *c, int fd)
{
	c->fd = fd;
	c->ops = &sock_ops;
}

void vr_bench_conn_attach(struct vr_bench_conn *c, const struct vr_bench_conn_ops *ops, void *h)
{
	c->h = h;
	c->ops = ops;
}

void vr_bench_conn_close(struct vr_bench_conn *c)
{
	if (c->ops)
		c->ops->close(c);
	c->ops = NULL;
	c->h = NULL;
	vr_tls_free(c->tls);
	c->tls = NULL;
	vr_buf_reset(&c->rx);
	vr_buf_reset(&c->tx);
	vr_buf_reset(&c->cipher);
	c->nseg = c->seg_i = 0;
}

void vr_bench_conn_free(struct vr_bench_conn *c)
{
	vr_bench_conn_close(c);
	vr_buf_free(&c->rx);
	vr_buf_free(&c->tx);
	vr_buf_free(&c->cipher);
}

int vr_bench_conn_tls(struct vr_bench_conn *c, struct vr_tls_ctx *ctx, bool server)
{
	c->tls = vr_tls_new(ctx, server, NULL);
	if (!c->tls)
		return -ENOMEM;
	if (server)
		return 0;
	/* The client speaks first: its hello waits in the cipher buffer. */
	int rc = vr_tls_handshake(c->tls);
	if (rc == -EPROTO)
		return rc;
	return vr_tls_drain(c->tls, &c->cipher) < 0 ? -ENOBUFS : 0;
}

/* Decrypts what TLS holds into rx, and queues what the handshake says. */
static int conn_decrypt(struct vr_bench_conn *c)
{
	for (;;) {
		size_t room = c->rx.max - c->rx.len;
		if (room == 0)
			return 1;
		room = VR_MIN(room, (size_t)TLS_CHUNK);
		uint8_t *w = vr_buf_reserve(&c->rx, room);
		if (!w)
			return -ENOMEM;
		ssize_t n = vr_tls_read(c->tls, w, room);
		if (n < 0)
			return (int)n;
		if (n == 0)
			break;
		vr_buf_commit(&c->rx, (size_t)n);
	}
	return vr_tls_drain(c->tls, &c->cipher) == -ENOBUFS ? -ENOBUFS : 0;
}

int vr_bench_conn_read(struct vr_bench_conn *c)
{
	uint8_t tmp[TLS_CHUNK];

	for (;;) {
		uint8_t *w;
		size_t room;

		if (c->tls) {
			int rc = conn_decrypt(c);
			if (rc != 0)
				return rc;
			w = tmp;
			room = sizeof(tmp);
		} else {
			room = VR_MIN(c->rx.max - c->rx.len, (size_t)65536);
			if (room == 0)
				return 1;
			w = vr_buf_reserve(&c->rx, room);
			if (!w)
				return -ENOMEM;
		}
		ssize_t n = c->ops->recv(c, w, room);
		if (n == -EINTR)
			continue;
		if (n < 0)
			return n == -EAGAIN ? 0 : (int)n;
		if (n == 0)
			return -EPIPE;
		if (!c->tls)
			vr_buf_commit(&c->rx, (size_t)n);
		else if (vr_tls_feed(c->tls, tmp, (size_t)n) < 0)
			return -ENOMEM;
	}
}

void vr_bench_conn_segments(struct vr_bench_conn *c, const struct iovec *iov, unsigned n)
{
	memcpy(c->seg, iov, n * sizeof(*iov));
	c->nseg = n;
	c->seg_i = 0;
}

static bool conn_plain_pending(const struct vr_bench_conn *c)
{
	return c->tx.len > 0 || c->seg_i < c->nseg;
}

bool vr_bench_conn_pending(const struct vr_bench_conn *c)
{
	return conn_plain_pending(c) || c->cipher.len > 0 || (c->tls && vr_tls_pending(c->tls));
}

/* Drops n octets from the front of tx, then of the segments. */
static void conn_advance(struct vr_bench_conn *c, size_t n)
{
	size_t t = VR_MIN(n, c->tx.len);

	vr_buf_consume(&c->tx, t);
	n -= t;
	while (n > 0 && c->seg_i < c->nseg) {
		struct iovec *s = &c->seg[c->seg_i];
		size_t k = VR_MIN(n, s->iov_len);
		s->iov_base = (uint8_t *)s->iov_base + k;
		s->iov_len -= k;
		n -= k;
		if (s->iov_len == 0)
			c->seg_i++;
	}
	while (c->seg_i < c->nseg && c->seg[c->seg_i].iov_len == 0)
		c->seg_i++;
}

/* Writes iov to the transport until done or it would block: 1, 0 or -errno. */
static int conn_send(struct vr_bench_conn *c, struct iovec *iov, unsigned n, size_t *sent)
{
	*sent = 0;
	if (n == 0)
		return 1;
	c->t_send = vr_bench_now();
	ssize_t w = c->ops->sendv(c, iov, n);
	if (w < 0)
		return w == -EAGAIN ? 0 : w == -EINTR ? 1 : (int)w;
	*sent = (size_t)w;
	return 1;
}

static int conn_flush_plain(struct vr_bench_conn *c)
{
	while (conn_plain_pending(c)) {
		struct iovec iov[1 + VR_BENCH_SEG_MAX];
		unsigned n = 0;
		size_t sent;

		if (c->tx.len)
			iov[n++] = (struct iovec){ (void *)vr_buf_head(&c->tx), c->tx.len };
		for (unsigned i = c->seg_i; i < c->nseg; i++)
			iov[n++] = c->seg[i];
		int rc = conn_send(c, iov, n, &sent);
		if (rc <= 0)
			return rc;
		conn_advance(c, sent);
	}
	return 1;
}

/* Moves plaintext through TLS into the cipher buffer while it has room. */
static int conn_encrypt(struct vr_bench_conn *c)
{
	while (conn_plain_pending(c) && c->cipher.len < CIPHER_MAX / 2) {
		const void *p;
		size_t n;

		if (c->tx.len) {
			p = vr_buf_head(&c->tx);
			n = c->tx.len;
		} else {
			p = c->seg[c->seg_i].iov_base;
			n = c->seg[c->seg_i].iov_len;
		}
		n = VR_MIN(n, (size_t)TLS_CHUNK);
		int rc = vr_tls_write(c->tls, p, n);
		if (rc == -EAGAIN)
			break;                  /* still in the handshake */
		if (rc < 0)
			return rc;
		conn_advance(c, n);
		if (vr_tls_drain(c->tls, &c->cipher) == -ENOBUFS)
			return -ENOBUFS;
	}
	if (vr_tls_pending(c->tls) && vr_tls_drain(c->tls, &c->cipher) == -ENOBUFS)
		return -ENOBUFS;
	return 0;
}

static int conn_flush_tls(struct vr_bench_conn *c)
{
	for (;;) {
		int rc = conn_encrypt(c);
		if (rc < 0)
			return rc;
		/* Plaintext left here waits for the handshake to finish. */
		if (c->cipher.len == 0)
			return 1;
		struct iovec iov = { (void *)vr_buf_head(&c->cipher), c->cipher.len };
		size_t sent;
		rc = conn_send(c, &iov, 1, &sent);
		if (rc <= 0)
			return rc;
		vr_buf_consume(&c->cipher, sent);
	}
}

int vr_bench_conn_flush(struct vr_bench_conn *c)
{
	return c->tls ? conn_flush_tls(c) : conn_flush_plain(c);
}
