/*
 * io.h - the kernel-socket transport: one epoll thread per worker, each with
 * its own SO_REUSEPORT listening sockets, driving vr_session over TCP.
 *
 * Per connection the transport reads no more than the session has room for,
 * sends its output (waiting for EPOLLOUT when the socket is full), ticks it
 * at its deadline (a timer heap per worker), flushes it when a spool
 * completion kicks it, and closes it (FIN, then a short linger) when it is
 * finished. Before any session exists it enforces cfg->max_connections per
 * worker and cfg->max_conn_per_ip per IPv4 address or IPv6 /64 across all
 * workers, answering "421 4.7.0" and closing.
 *
 * Threads: vr_io_kernel_new, vr_io_run and vr_io_free from one thread;
 * vr_io_stop from any thread or a signal handler. Worker threads are
 * registered liburcu QSBR readers (see vmrelay/ratelimit.h) and run with every
 * signal blocked, so signals reach the caller's threads.
 */
#ifndef VR_IO_H
#define VR_IO_H

#include <stddef.h>
#include <stdint.h>
#include "vmrelay/smtp.h"

struct vr_io;

/*
 * Binds every listen address of srv->cfg once per worker (srv->n_workers).
 * Port 0 binds an ephemeral port, the same for every worker (see
 * vr_io_bound_port). NULL + err on failure, e.g. "listen 0.0.0.0:25: Address
 * already in use" (also when another process holds the port with
 * SO_REUSEPORT). srv must outlive the io.
 */
struct vr_io *vr_io_kernel_new(struct vr_smtpd *srv, char *err, size_t errlen);
/* The port listen address i is bound to (host order); 0 if i is out of range. */
uint16_t vr_io_bound_port(const struct vr_io *io, unsigned i);
/*
 * Runs the workers until vr_io_stop(), then lets sessions in flight finish
 * for up to 5 s and closes the rest. Returns 0 or -errno. Once only.
 */
int vr_io_run(struct vr_io *io);
/* Async-signal-safe: asks every worker to stop accepting and return. */
void vr_io_stop(struct vr_io *io);
void vr_io_free(struct vr_io *io);

#endif
