/*
 * io.h - the kernel-socket transport: one epoll thread per worker, each with
 * its own SO_REUSEPORT listening sockets, driving vr_session over TCP.
 */
#ifndef VR_IO_H
#define VR_IO_H

#include <stddef.h>
#include "vmrelay/smtp.h"

struct vr_io;

/* Binds every listen address once per worker. NULL + err on failure. */
struct vr_io *vr_io_kernel_new(struct vr_smtpd *srv, char *err, size_t errlen);
/* Runs the workers until vr_io_stop(); returns 0 or -errno. */
int vr_io_run(struct vr_io *io);
/* Async-signal-safe: asks every worker to stop accepting and return. */
void vr_io_stop(struct vr_io *io);
void vr_io_free(struct vr_io *io);

#endif
