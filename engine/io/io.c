/*
 * io.c - the kernel-socket transport's setup and threads (see vmrelay/io.h):
 * listening sockets, one epoll set and one thread per worker, stop.
 *
 * Every worker has its own SO_REUSEPORT socket per listen address, so the
 * kernel spreads new connections over the workers and no two threads ever
 * touch one socket. Because SO_REUSEPORT would also let a second relay share
 * the port unnoticed, each address is first bound by a probe socket without
 * it: that bind fails while anyone else listens there.
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vmrelay/log.h"
#include "io_impl.h"

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static uint16_t get_port(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
					      : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* A bound socket for l at port; listening unless it is the probe. */
static int listen_socket(const struct vr_listen *l, uint16_t port, bool probe,
			 char *err, size_t errlen)
{
	struct sockaddr_storage a = l->addr;
	int one = 1;

	set_port(&a, port);
	int fd = socket(a.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* REUSEADDR: a restart must not wait for TIME_WAIT to clear. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (!probe && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
	    (a.ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&a, l->addrlen) < 0 ||
	    (!probe && listen(fd, SOMAXCONN) < 0))
		goto fail;
	return fd;
fail:
	snprintf(err, errlen, "listen %s: %s", l->text, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* Finds the port for l (the configured one, or the kernel's pick for 0),
 * making sure nobody else listens there. 0 on failure. */
static uint16_t listen_probe(const struct vr_listen *l, char *err, size_t errlen)
{
	struct sockaddr_storage a;
	socklen_t len = sizeof(a);

	int fd = listen_socket(l, get_port(&l->addr), true, err, errlen);
	if (fd < 0)
		return 0;
	if (getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
		snprintf(err, errlen, "listen %s: %s", l->text, strerror(errno));
		close(fd);
		return 0;
	}
	close(fd);
	return get_port(&a);
}

static int epoll_add(int ep, int fd, struct io_handle *h)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = h };
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static int worker_init(struct vr_io *io, unsigned id, char *err, size_t errlen)
{
	const struct vr_config *cfg = io->cfg;
	struct io_worker *w = &io->w[id];

	w->io = io;
	w->id = id;
	w->ep = -1;
	for (unsigned i = 0; i < VR_CONFIG_MAX_LISTEN; i++)
		w->lfd[i] = -1;
	vr_io_set_init(&w->set, sizeof(struct io_conn), io->cl);
	w->stop_h.kind = IO_STOP;
	w->spool_h.kind = IO_SPOOL;
	w->ep = epoll_create1(EPOLL_CLOEXEC);
	if (w->ep < 0 || epoll_add(w->ep, io->stop_fd, &w->stop_h) < 0 ||
	    (io->srv->spool &&
	     epoll_add(w->ep, vr_spool_done_fd(io->srv->spool, id), &w->spool_h) < 0)) {
		snprintf(err, errlen, "worker %u: epoll: %s", id, strerror(errno));
		return -1;
	}
	for (unsigned i = 0; i < cfg->n_listen; i++) {
		w->lh[i].kind = IO_LISTENER;
		w->lh[i].idx = i;
		w->lfd[i] = listen_socket(&cfg->listen[i], io->port[i], false, err, errlen);
		if (w->lfd[i] < 0)
			return -1;
		if (epoll_add(w->ep, w->lfd[i], &w->lh[i]) < 0) {
			snprintf(err, errlen, "worker %u: epoll: %s", id, strerror(errno));
			return -1;
		}
	}
	return 0;
}

struct vr_io *vr_io_kernel_new(struct vr_smtpd *srv, char *err, size_t errlen)
{
	const struct vr_config *cfg = srv->cfg;
	struct vr_io *io = calloc(1, sizeof(*io));

	if (!io) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	io->srv = srv;
	io->cfg = cfg;
	io->n_workers = srv->n_workers;
	io->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (io->n_workers == 0 || cfg->n_listen == 0) {
		snprintf(err, errlen, "nothing to run: %u workers, %u listen addresses",
			 io->n_workers, cfg->n_listen);
		goto fail;
	}
	io->w = calloc(io->n_workers, sizeof(*io->w));
	if (!io->w || io->stop_fd < 0 || !(io->cl = vr_io_connlimit_new(cfg, io->n_workers))) {
		snprintf(err, errlen, "io setup: %s", strerror(errno));
		goto fail;
	}
	for (unsigned i = 0; i < cfg->n_listen; i++)
		if (!(io->port[i] = listen_probe(&cfg->listen[i], err, errlen)))
			goto fail;
	for (unsigned id = 0; id < io->n_workers; id++) {
		io->n_ready = id + 1;       /* vr_io_free undoes what was made */
		if (worker_init(io, id, err, errlen) < 0)
			goto fail;
	}
	return io;
fail:
	vr_io_free(io);
	return NULL;
}

uint16_t vr_io_bound_port(const struct vr_io *io, unsigned i)
{
	return i < io->cfg->n_listen ? io->port[i] : 0;
}

int vr_io_run(struct vr_io *io)
{
	sigset_t all, old;
	unsigned started = 0;
	int rc = 0;

	/* Threads inherit the mask: workers never run a signal handler. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (; started < io->n_workers; started++) {
		rc = pthread_create(&io->w[started].thread, NULL, vr_io_worker_main,
				    &io->w[started]);
		if (rc) {
			vr_log_err("event=thread_failed worker=%u error=\"%s\"", started,
				   strerror(rc));
			rc = -rc;
			vr_io_stop(io);
			break;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	for (unsigned i = 0; i < started; i++) {
		pthread_join(io->w[i].thread, NULL);
		if (!rc)
			rc = io->w[i].rc;
	}
	return rc;
}

void vr_io_stop(struct vr_io *io)
{
	uint64_t one = 1;

	/* Level-triggered and never read: it stays readable for every worker. */
	ssize_t n = write(io->stop_fd, &one, sizeof(one));
	(void)n;
}

void vr_io_free(struct vr_io *io)
{
	if (!io)
		return;
	for (unsigned id = 0; id < io->n_ready; id++) {
		struct io_worker *w = &io->w[id];
		for (unsigned i = 0; i < VR_CONFIG_MAX_LISTEN; i++)
			if (w->lfd[i] >= 0)
				close(w->lfd[i]);
		if (w->ep >= 0)
			close(w->ep);
		vr_io_set_free(&w->set);
	}
	if (io->stop_fd >= 0)
		close(io->stop_fd);
	vr_connlimit_free(io->cl);
	free(io->w);
	free(io);
}
