/*
 * smtpc_conn.c - the outbound client on a kernel socket (see
 * vmrelay/smtpc.h): a non-blocking connect with its own timeout, then reads
 * bounded by the client's rx space and writes of whatever it queued, all
 * driven by the delivery thread's epoll loop. The driver never blocks and
 * never calls back into its owner except through the client's callbacks.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtpc_impl.h"

#define READS_PER_EVENT 4       /* then let other connections run */
#define READ_CHUNK 16384

struct vr_smtpc_conn {
	struct vr_smtpc *c;
	int fd;
	bool connecting;
	int early_err;              /* connect(2) failed at once; told at the first io */
	bool write_failed;          /* the rest of tx can never go */
};

static socklen_t sa_len(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
					: sizeof(struct sockaddr_in6);
}

struct vr_smtpc_conn *vr_smtpc_conn_new(const struct vr_smtpc_params *p,
					const struct sockaddr *source, uint64_t now_ms)
{
	if (!p->peer || (p->peer->sa_family != AF_INET && p->peer->sa_family != AF_INET6) ||
	    (source && source->sa_family != p->peer->sa_family)) {
		errno = EINVAL;
		return NULL;
	}
	struct vr_smtpc_conn *k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	k->c = vr_smtpc_new(p, now_ms);
	if (!k->c)
		goto fail;
	k->fd = socket(p->peer->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (k->fd < 0)
		goto fail;
	if (source && bind(k->fd, source, sa_len(source)) < 0)
		goto fail_fd;
	/* We write whole command groups ourselves; Nagle would hold a group's
	 * short tail (the final dot, the next MAIL) until the body is
	 * acknowledged, which a receiver waiting for that dot delays. */
	int one = 1;
	setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	vr_smtpc_connecting(k->c, now_ms);
	k->connecting = true;
	if (connect(k->fd, p->peer, sa_len(p->peer)) == 0) {
		k->connecting = false;
		vr_smtpc_connected(k->c, now_ms);
	} else if (errno != EINPROGRESS) {
		k->early_err = errno;
	}
	return k;
fail_fd:
	close(k->fd);
fail:
	{
		int e = errno;
		vr_smtpc_free(k->c);
		free(k);
		errno = e;
	}
	return NULL;
}

void vr_smtpc_conn_free(struct vr_smtpc_conn *k)
{
	if (!k)
		return;
	close(k->fd);
	vr_smtpc_free(k->c);
	free(k);
}

int vr_smtpc_conn_fd(const struct vr_smtpc_conn *k)
{
	return k->fd;
}

struct vr_smtpc *vr_smtpc_conn_smtpc(struct vr_smtpc_conn *k)
{
	return k->c;
}

bool vr_smtpc_conn_done(const struct vr_smtpc_conn *k)
{
	return vr_smtpc_done(k->c) && (k->write_failed || k->c->tx.len == 0);
}

uint32_t vr_smtpc_conn_events(const struct vr_smtpc_conn *k)
{
	uint32_t ev = 0;

	if (vr_smtpc_conn_done(k))
		return 0;
	if (k->connecting)
		return EPOLLOUT;
	if (!vr_smtpc_done(k->c) && vr_smtpc_rx_space(k->c) > 0)
		ev |= EPOLLIN;
	if (k->c->tx.len > 0 && !k->write_failed)
		ev |= EPOLLOUT;
	return ev;
}

uint64_t vr_smtpc_conn_deadline(const struct vr_smtpc_conn *k)
{
	return k->early_err ? 0 : vr_smtpc_deadline(k->c);
}

static void conn_read(struct vr_smtpc_conn *k, uint64_t now)
{
	uint8_t buf[READ_CHUNK];

	for (int i = 0; i < READS_PER_EVENT && !vr_smtpc_done(k->c); i++) {
		size_t space = VR_MIN(vr_smtpc_rx_space(k->c), sizeof(buf));
		if (space == 0)
			return;
		ssize_t n = recv(k->fd, buf, space, 0);
		if (n > 0) {
			vr_smtpc_rx(k->c, buf, (size_t)n, now);
			/* Short: the socket is empty for now (epoll is level
			 * triggered), no recv just to hear EAGAIN. */
			if ((size_t)n < space)
				return;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		vr_smtpc_rx_eof(k->c, n == 0 ? 0 : errno, now);
		return;
	}
}

static void conn_write(struct vr_smtpc_conn *k, uint64_t now)
{
	const uint8_t *p;
	size_t n;

	while (!k->write_failed && (n = vr_smtpc_tx_peek(k->c, &p)) > 0) {
		ssize_t w = send(k->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			vr_smtpc_tx_consume(k->c, (size_t)w, now);
			continue;
		}
		if (w < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		k->write_failed = true;
		vr_smtpc_rx_eof(k->c, w < 0 ? errno : EPIPE, now);
	}
}

void vr_smtpc_conn_flush(struct vr_smtpc_conn *k, uint64_t now_ms)
{
	if (!k->connecting && !k->early_err && k->c->tx.len > 0)
		conn_write(k, now_ms);
}

void vr_smtpc_conn_io(struct vr_smtpc_conn *k, uint32_t events, uint64_t now_ms)
{
	if (k->early_err) {
		int e = k->early_err;
		k->early_err = 0;
		vr_smtpc_rx_eof(k->c, e, now_ms);
		return;
	}
	if (k->connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			vr_smtpc_rx_eof(k->c, err, now_ms);
			return;
		}
		k->connecting = false;
		vr_smtpc_connected(k->c, now_ms);
	}
	if (!k->connecting && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		conn_read(k, now_ms);
	/* Timeouts, and refusals the client reports from its tick, may
	 * queue output (the owner's next message): write after them. */
	if (now_ms >= vr_smtpc_deadline(k->c))
		vr_smtpc_tick(k->c, now_ms);
	if (!k->connecting)
		conn_write(k, now_ms);
}
