/*
 * io_kernel.c - vmrelay-bench's default transport (see io.h): non-blocking
 * kernel sockets under one edge-triggered epoll set.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io.h"

/* Linux 4.2: the port is picked at connect(), so many sessions may share a
 * source address without running out of ports at bind(). */
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

struct kernel_io {
	struct vr_bench_io io;
	const struct vr_bench_addr *target;
	int ep;
};

static int kernel_connect(struct vr_bench_io *io, struct vr_bench_conn *c,
			  const struct vr_bench_addr *src, uint64_t tag, const char **step)
{
	struct kernel_io *k = (struct kernel_io *)io;
	int fd = socket(k->target->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	*step = "socket";
	if (fd < 0)
		return -errno;
	vr_bench_conn_open(c, fd);
	if (src) {
		int one = 1;
		*step = "bind";
		if (src->sa.ss_family == AF_INET)
			setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (const struct sockaddr *)&src->sa, src->len) < 0)
			return -errno;
	}
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = tag,
	};
	*step = "epoll";
	if (epoll_ctl(k->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	*step = "connect";
	if (connect(fd, (const struct sockaddr *)&k->target->sa, k->target->len) < 0 &&
	    errno != EINPROGRESS)
		return -errno;
	return 0;
}

static int kernel_connected(struct vr_bench_conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	return err;
}

static int kernel_wait(struct vr_bench_io *io, struct vr_bench_event *ev, int max, int ms)
{
	struct kernel_io *k = (struct kernel_io *)io;
	struct epoll_event evs[256];
	int n = epoll_wait(k->ep, evs, VR_MIN(max, (int)VR_ARRAY_SIZE(evs)), ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++)
		ev[i] = (struct vr_bench_event){ evs[i].data.u64, evs[i].events };
	return n;
}

static void kernel_describe(struct vr_bench_io *io, char *out, size_t len)
{
	snprintf(out, len, "kernel");
}

static void kernel_free(struct vr_bench_io *io)
{
	struct kernel_io *k = (struct kernel_io *)io;

	if (k->ep >= 0)
		close(k->ep);
	free(k);
}

static const struct vr_bench_io_ops kernel_ops = {
	.connect = kernel_connect, .connected = kernel_connected, .wait = kernel_wait,
	.describe = kernel_describe, .free = kernel_free,
};

struct vr_bench_io *vr_bench_io_kernel_new(const struct vr_bench_cfg *cfg, int sigfd, char *err,
					   size_t errlen)
{
	struct kernel_io *k = calloc(1, sizeof(*k));

	if (!k) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	k->io.ops = &kernel_ops;
	k->target = &cfg->target;
	k->ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = VR_BENCH_IO_SIGNAL };
	if (k->ep < 0 || epoll_ctl(k->ep, EPOLL_CTL_ADD, sigfd, &ev) < 0) {
		snprintf(err, errlen, "epoll: %s", strerror(errno));
		kernel_free(&k->io);
		return NULL;
	}
	return &k->io;
}
