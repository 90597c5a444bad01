/*
 * iostack.h - the stack transport: SMTP sessions (smtp.h) over the userspace
 * stack's TCP (tcp.h), one instance per worker core, driven by that core's
 * poll loop (dpdk-app/lcore.c; tests drive two stacks back to back).
 *
 * It does for a vr_tcp what engine/io does for kernel sockets: listens on
 * the ports of [relay] listen, turns connections away before any session
 * exists when the worker holds cfg->max_connections or the client (an IPv4
 * address or an IPv6 /64, as policy sees it) holds cfg->max_conn_per_ip
 * across all workers ("421 4.7.0",
 * nothing on an implicit-TLS port), hands each session no more input than it
 * has room for, sends its output as the send buffer frees (the writable
 * callback), ticks it at its deadline, flushes it when a spool completion
 * kicks it, and closes after the session ends: FIN first, then input read and
 * dropped for a short linger so our last reply is not destroyed by a reset.
 *
 * Threads: a struct vr_iostack and its sessions belong to one worker thread
 * (a registered RCU reader: sessions read the accounts and the windows); the
 * shared part is for every worker at once (lock-free, engine/io/connlimit.c).
 */
#ifndef VR_IOSTACK_H
#define VR_IOSTACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "vmrelay/smtp.h"
#include "vmrelay/tcp.h"

struct vr_iostack;
struct vr_iostack_shared;

/* What all workers' transports share (the per-client connection counts),
 * sized for n_workers * cfg->max_connections clients. NULL with err. */
struct vr_iostack_shared *vr_iostack_shared_new(const struct vr_config *cfg, unsigned n_workers,
						char *err, size_t errlen);
void vr_iostack_shared_free(struct vr_iostack_shared *sh);

/*
 * Listens on tcp for every port of srv->cfg's listen list (addresses must be
 * the stack's own or 0.0.0.0; the caller checks). worker indexes srv->stats
 * and the spool's completion queues. NULL with err ("listen 0.0.0.0:25:
 * Address already in use").
 */
struct vr_iostack *vr_iostack_new(struct vr_smtpd *srv, struct vr_iostack_shared *sh,
				  unsigned worker, struct vr_tcp *tcp, char *err, size_t errlen);
/*
 * Once per poll loop, before vr_tcp_poll: reaps spool completions (when the
 * spool says some wait: no system call otherwise), flushes the sessions they
 * kicked, fires the sessions' deadlines.
 */
void vr_iostack_poll(struct vr_iostack *st, uint64_t now);
/* Stops accepting; the sessions in flight go on. */
void vr_iostack_stop(struct vr_iostack *st);
/* Connections held: sessions, and finished ones lingering. */
unsigned vr_iostack_conns(const struct vr_iostack *st);
/* Resets what is still connected and frees the instance (tcp outlives it). */
void vr_iostack_free(struct vr_iostack *st);

#endif
