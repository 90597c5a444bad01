/*
 * conn.c - one accepted TCP connection driving one vr_session: admission
 * (connection limits), reads bounded by the session's rx space, writes of
 * its output with EPOLLOUT while the socket is full, the deadline in the
 * worker's timer heap, and an orderly close.
 *
 * Closing is FIN first, then a short linger that reads and drops whatever
 * the client still sends: closing a socket with unread input makes the kernel
 * send RST, which can destroy our last reply (a 421 or 521) in the client's
 * receive queue before it reads it.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "io_impl.h"

#define READS_PER_EVENT 4       /* then let other connections run */

/*
 * Turns a connection away before any session exists: the reply is written
 * best-effort (the socket is new, so it fits) and the socket closed. Not on an
 * implicit-TLS port, where plaintext would only be a TLS protocol error.
 */
static void refuse(int fd, const struct vr_listen *l, const char *reply)
{
	if (!l->implicit_tls) {
		ssize_t n = send(fd, reply, strlen(reply), MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)n;
		shutdown(fd, SHUT_WR);
	}
	close(fd);
}

static int conn_interest(struct io_conn *c, uint32_t want)
{
	if (want == c->events)
		return 0;
	struct epoll_event ev = { .events = want, .data.ptr = &c->h };
	if (epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		return -errno;
	c->events = want;
	return 0;
}

/* Hands received bytes to the session. -1 if the socket failed. */
static int conn_read(struct io_conn *c, uint64_t now, int reads)
{
	uint8_t *buf = c->w->rbuf;

	while (reads-- > 0 && !c->rd_eof && !vr_io_sess_closing(&c->ss)) {
		size_t space = vr_session_rx_space(c->ss.s);
		if (space == 0) {
			c->rx_stalled = true;
			break;
		}
		size_t want = VR_MIN(space, sizeof(c->w->rbuf));
		ssize_t n = recv(c->fd, buf, want, 0);
		if (n > 0) {
			if (vr_session_rx(c->ss.s, buf, (size_t)n, now) != VR_OK)
				c->ss.rx_failed = true;
			if ((size_t)n < want)
				break;          /* the socket is empty */
		} else if (n == 0) {
			c->rd_eof = true;
			vr_session_rx_eof(c->ss.s, now);
		} else if (errno == EINTR) {
			reads++;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			break;
		} else {
			return -1;
		}
	}
	return 0;
}

/* The session's output into the socket (vr_io_send_fn). */
static ssize_t conn_send(void *arg, const uint8_t *p, size_t n)
{
	const struct io_conn *c = arg;

	for (;;) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w > 0)
			return w;
		if (w < 0 && errno == EINTR)
			continue;
		return w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
	}
}

/* The session is finished and its output sent: FIN, then linger. */
static void conn_finish(struct io_conn *c, uint64_t now)
{
	shutdown(c->fd, SHUT_WR);
	vr_io_sess_finish(&c->ss);
	if (c->rd_eof || conn_interest(c, EPOLLIN) < 0 ||
	    vr_timer_set(&c->w->set.timers, &c->ss.timer, now + IO_LINGER_MS) < 0)
		vr_io_conn_close(c);
}

/*
 * After anything happened to the session: send its output, close if it is
 * done, and re-register what we wait for (input while it has room, output
 * while the socket is full) and when (its deadline).
 */
void vr_io_conn_service(struct io_conn *c, uint64_t now)
{
	int rc = vr_io_session_flush(c->ss.s, conn_send, c);

	if (rc < 0) {
		vr_io_conn_close(c);
		return;
	}
	bool closing = vr_io_sess_closing(&c->ss);
	if (closing && rc == 0) {
		conn_finish(c, now);
		return;
	}
	/* Input interest stays while the session has no room (a message
	 * being committed) until input actually waits: a client that waits
	 * for its reply, as most do, then costs no epoll_ctl per message;
	 * one that pipelines ahead is read again once there is room. */
	uint32_t want = rc > 0 ? EPOLLOUT : 0;
	if (vr_session_rx_space(c->ss.s) > 0)
		c->rx_stalled = false;
	if (!closing && !c->rd_eof && !c->rx_stalled)
		want |= EPOLLIN;

	uint64_t deadline = vr_io_session_deadline(c->ss.s, closing, &c->ss.drain_until, now);
	if (conn_interest(c, want) < 0 ||
	    vr_timer_set(&c->w->set.timers, &c->ss.timer, deadline) < 0)
		vr_io_conn_close(c);
}

void vr_io_conn_accept(struct io_worker *w, unsigned listen_idx, int fd,
		       const struct sockaddr_storage *peer, uint64_t now)
{
	const struct vr_config *cfg = w->io->cfg;
	const struct vr_listen *l = &cfg->listen[listen_idx];
	char ip[VR_ADDRSTRLEN], reply[512];
	uint64_t *slot;

	vr_io_addr_text((const struct sockaddr *)peer, ip, sizeof(ip));
	if (vr_io_admit(cfg, &w->set, (const struct sockaddr *)peer, ip, &slot,
			reply, sizeof(reply))) {
		refuse(fd, l, reply);
		return;
	}

	struct io_conn *c = vr_io_sess_alloc(&w->set, slot, ip);
	if (!c) {
		close(fd);
		return;
	}
	c->h.kind = IO_CONN;
	c->w = w;
	c->fd = fd;
	c->peer = *peer;
	socklen_t len = sizeof(c->local);
	if (getsockname(fd, (struct sockaddr *)&c->local, &len) < 0)
		c->local.ss_family = AF_UNSPEC;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	struct vr_session_params p = {
		.srv = w->io->srv,
		.worker = w->id,
		.peer = (const struct sockaddr *)&c->peer,
		.local = (const struct sockaddr *)&c->local,
		.implicit_tls = l->implicit_tls,
		.kick = vr_io_sess_kick,
		.owner = &c->ss,
	};
	if (vr_io_sess_start(&c->ss, &p, ip, now) < 0) {
		close(fd);
		return;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &c->h };
	if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		vr_io_sess_abandon(&c->ss, ip, errno);
		close(fd);
		return;
	}
	c->events = EPOLLIN;
	vr_io_sess_open(&c->ss);

	/* A client that talks before the banner has usually sent its bytes by
	 * now: one read hands them over before the first tick greets it. */
	if (conn_read(c, now, 1) < 0) {
		vr_io_conn_close(c);
		return;
	}
	vr_session_tick(c->ss.s, now);
	vr_io_conn_service(c, now);
}

static void conn_linger(struct io_conn *c)
{
	for (int i = 0; i < READS_PER_EVENT; i++) {
		ssize_t n = recv(c->fd, c->w->rbuf, sizeof(c->w->rbuf), 0);
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		break;                  /* EOF or error: the client is done */
	}
	vr_io_conn_close(c);
}

void vr_io_conn_event(struct io_conn *c, uint32_t events, uint64_t now)
{
	if (c->ss.state == IO_SESS_DEAD)
		return;
	if (c->ss.state == IO_SESS_LINGER) {
		conn_linger(c);
		return;
	}
	/* With our side still open, a hang-up or error means the peer reset
	 * the connection: nobody is left to read a reply. */
	if (events & (EPOLLERR | EPOLLHUP)) {
		vr_io_conn_close(c);
		return;
	}
	if ((events & EPOLLIN) && conn_read(c, now, READS_PER_EVENT) < 0) {
		vr_io_conn_close(c);
		return;
	}
	vr_io_conn_service(c, now);
}

void vr_io_conn_expire(struct io_conn *c, uint64_t now)
{
	if (c->ss.state == IO_SESS_LINGER || vr_io_sess_drained(&c->ss, now)) {
		vr_io_conn_close(c);
		return;
	}
	vr_session_tick(c->ss.s, now);
	vr_io_conn_service(c, now);
}

void vr_io_conn_close(struct io_conn *c)
{
	if (c->ss.state == IO_SESS_DEAD)
		return;
	vr_io_sess_end(&c->ss);
	close(c->fd);               /* also leaves the epoll set */
	c->fd = -1;
}
