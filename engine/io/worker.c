/*
 * worker.c - one worker thread: an epoll loop over its own listening
 * sockets, its connections, the spool's completion eventfd and the shared
 * stop eventfd.
 *
 * Each round: wait until an event or the earliest deadline, handle the
 * events, fire the timers that are due, flush the sessions that a spool
 * completion gave output, and only then reuse the memory of connections
 * closed during the round (their events may still be in this round's batch).
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#include "vmrelay/clock.h"
#include "vmrelay/log.h"
#include "io_impl.h"

#define EVENTS_MAX        256
#define ACCEPTS_PER_EVENT 64     /* then serve the connections we have */
#define REAP_BATCH        256

static int worker_timeout(const struct io_worker *w, uint64_t now)
{
	const struct vr_timer *t = vr_timer_first(&w->set.timers);
	uint64_t until = t ? t->deadline : UINT64_MAX;

	if (w->stopping)
		until = VR_MIN(until, w->grace_until);
	if (w->accept_paused)
		until = VR_MIN(until, w->accept_resume);
	if (until == UINT64_MAX)
		return -1;
	return until <= now ? 0 : (int)VR_MIN(until - now, (uint64_t)INT_MAX);
}

static void worker_listen(struct io_worker *w, bool on)
{
	for (unsigned i = 0; i < w->io->cfg->n_listen; i++) {
		struct epoll_event ev = { .events = on ? EPOLLIN : 0, .data.ptr = &w->lh[i] };
		if (w->lfd[i] >= 0)
			epoll_ctl(w->ep, EPOLL_CTL_MOD, w->lfd[i], &ev);
	}
	w->accept_paused = !on;
}

static void worker_accept(struct io_worker *w, unsigned i, uint64_t now)
{
	for (int n = 0; n < ACCEPTS_PER_EVENT; n++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int fd = accept4(w->lfd[i], (struct sockaddr *)&peer, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			if (w->accept_failures) {
				vr_log_info("event=accept_resumed worker=%u failures=%u", w->id,
					    w->accept_failures);
				w->accept_failures = 0;
			}
			vr_io_conn_accept(w, i, fd, &peer, now);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		/* Out of descriptors or memory: the pending connection stays
		 * queued and the listener readable, so stop listening for a
		 * moment instead of spinning on it. Logged once a streak (and
		 * every 100th time), not ten times a second. */
		if (w->accept_failures++ % 100 == 0)
			vr_log_warn("event=accept_failed worker=%u listen=%s error=\"%s\" "
				    "failures=%u pause_ms=%u", w->id, w->io->cfg->listen[i].text,
				    strerror(errno), w->accept_failures, IO_ACCEPT_PAUSE_MS);
		worker_listen(w, false);
		w->accept_resume = now + IO_ACCEPT_PAUSE_MS;
		return;
	}
}

/* Reads the eventfd before reaping: a completion posted after the reap
 * writes it again, so none is left waiting without a wakeup. */
static void worker_reap(struct io_worker *w)
{
	struct vr_spool *sp = w->io->srv->spool;
	uint64_t v;

	if (read(vr_spool_done_fd(sp, w->id), &v, sizeof(v)) < 0 && errno != EAGAIN)
		vr_log_err("event=spool_eventfd worker=%u error=\"%s\"", w->id, strerror(errno));
	while (vr_spool_reap(sp, w->id, vr_session_commit_done, REAP_BATCH) == REAP_BATCH)
		;
}

/* Stop accepting; sessions in flight get IO_GRACE_MS to finish. */
static void worker_stop(struct io_worker *w, uint64_t now)
{
	w->stopping = true;
	w->grace_until = now + IO_GRACE_MS;
	epoll_ctl(w->ep, EPOLL_CTL_DEL, w->io->stop_fd, NULL);
	for (unsigned i = 0; i < w->io->cfg->n_listen; i++) {
		if (w->lfd[i] >= 0)
			close(w->lfd[i]);
		w->lfd[i] = -1;
	}
	w->accept_paused = false;
	vr_log_debug("event=worker_stopping worker=%u connections=%u", w->id, w->set.n);
}

static void worker_dispatch(struct io_worker *w, const struct epoll_event *ev, uint64_t now)
{
	struct io_handle *h = ev->data.ptr;

	switch (h->kind) {
	case IO_CONN:
		vr_io_conn_event((struct io_conn *)((char *)h - offsetof(struct io_conn, h)),
				 ev->events, now);
		break;
	case IO_LISTENER:
		if (w->lfd[h->idx] >= 0)
			worker_accept(w, h->idx, now);
		break;
	case IO_SPOOL:
		worker_reap(w);
		break;
	case IO_STOP:
		worker_stop(w, now);
		break;
	}
}

static void worker_expire(struct io_worker *w, uint64_t now)
{
	struct io_sess *x;

	while ((x = vr_io_set_next_expired(&w->set, now)))
		vr_io_conn_expire((struct io_conn *)x, now);
}

static void worker_flush_kicked(struct io_worker *w, uint64_t now)
{
	struct io_sess *x;

	while ((x = vr_io_set_next_kicked(&w->set)))
		if (x->state == IO_SESS_OPEN)
			vr_io_conn_service((struct io_conn *)x, now);
}

static int worker_loop(struct io_worker *w)
{
	struct epoll_event ev[EVENTS_MAX];

	for (;;) {
		uint64_t now = vr_clock_ms();
		if (w->stopping && (w->set.n == 0 || now >= w->grace_until))
			break;
		if (w->accept_paused && now >= w->accept_resume)
			worker_listen(w, true);
		/* Offline while it may block: a quiescent state once per round
		 * (DESIGN), and no grace period waits for an idle worker. No
		 * table pointer is held across rounds. */
		rcu_thread_offline();
		int n = epoll_wait(w->ep, ev, EVENTS_MAX, worker_timeout(w, now));
		rcu_thread_online();
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int rc = -errno;
			vr_log_err("event=epoll_failed worker=%u error=\"%s\"", w->id,
				   strerror(-rc));
			vr_io_stop(w->io);      /* a relay missing a worker stops whole */
			return rc;
		}
		now = vr_clock_ms();
		for (int i = 0; i < n; i++)
			worker_dispatch(w, &ev[i], now);
		worker_expire(w, now);
		worker_flush_kicked(w, now);
		vr_io_set_bury(&w->set);
	}
	return 0;
}

void *vr_io_worker_main(void *arg)
{
	struct io_worker *w = arg;

	/* Sessions read the RCU-published accounts and windows (QSBR reader:
	 * vmrelay/ratelimit.h says what that takes). */
	rcu_register_thread();
	/* never waits for the log: lines go through its ring */
	vr_log_thread_async();
	w->rc = worker_loop(w);
	while (!LIST_EMPTY(&w->set.conns))
		vr_io_conn_close((struct io_conn *)LIST_FIRST(&w->set.conns));
	rcu_unregister_thread();
	return NULL;
}
