/*
 * dpdk.h - the vmrelay binary's DPDK transport (--io dpdk, issue 3): the EAL
 * from the [dpdk] eal line, one port, and one pinned poll-mode worker per
 * worker lcore running the userspace stack (engine/net) for [dpdk] ip.
 *
 * Threads: vr_dpdk_eal_init, vr_dpdk_new and vr_dpdk_free from the main
 * thread (the EAL's main lcore; it keeps the cpus the process started with,
 * and the threads it starts later inherit them); vr_dpdk_run from any one
 * thread; vr_dpdk_stop from any thread.
 */
#ifndef VR_DPDK_H
#define VR_DPDK_H

#include <stddef.h>
#include "vmrelay/config.h"
#include "vmrelay/ctl.h"
#include "vmrelay/netfault.h"
#include "vmrelay/smtp.h"

struct vr_dpdk;

/*
 * Splits an EAL line into argv[0 .. return) the way a shell splits words
 * (quotes, backslashes; no expansion), the words stored in buf. -1 with err
 * for an unterminated quote, a trailing backslash, more than max words or
 * more than buflen bytes.
 */
int vr_dpdk_split(const char *line, char *buf, size_t buflen, char **argv, int max,
		  char *err, size_t errlen);

/*
 * Parses a [dpdk] fault line ("drop=3,reorder=1,dup=1,seed=7") into out
 * (what is not given is 0). -1 with err for an unknown or repeated key or a
 * value out of range.
 */
int vr_dpdk_fault_parse(const char *text, struct vr_fault_conf *out, char *err, size_t errlen);

/*
 * What --check can tell about cfg's DPDK settings without starting the EAL:
 * an eal line that splits and names a port, [dpdk] ip and ip6, listen
 * addresses the stack can serve (its address, 0.0.0.0 or, with ip6, [::];
 * a fixed port). 0, or -1 with err.
 */
int vr_dpdk_check(const struct vr_config *cfg, char *err, size_t errlen);
/*
 * Starts the EAL from cfg->dpdk_eal and checks it against cfg: one worker
 * lcore per [io] workers besides the main lcore, and a port. Once per
 * process. 0, or -1 with err.
 */
int vr_dpdk_eal_init(const struct vr_config *cfg, char *err, size_t errlen);
/*
 * Sets up the port (a queue pair per worker, RSS where it has it), a stack
 * per worker for [dpdk] ip/prefix/gateway and ip6/gateway6, and the SMTP listeners on the
 * ports of [relay] listen. NULL with err.
 */
struct vr_dpdk *vr_dpdk_new(struct vr_smtpd *srv, char *err, size_t errlen);
/* The workers' own counters (frames, drops, steering, TCP) for the control
 * socket's stats and metrics; d must outlive the ctl (lcore.c). */
void vr_dpdk_ctl_io(struct vr_dpdk *d, struct vr_ctl_io *out);
/* "10.77.0.1 mac=..  port=net_af_packet0 queues=2 rss=no" for the start line. */
void vr_dpdk_describe(const struct vr_dpdk *d, char *out, size_t len);
/*
 * Runs the workers until vr_dpdk_stop(), then lets sessions in flight finish
 * for up to 5 s. 0 or -errno.
 */
int vr_dpdk_run(struct vr_dpdk *d);
void vr_dpdk_stop(struct vr_dpdk *d);
/* Stops the port and frees what new made; the EAL stays up (it cannot be
 * started twice in a process). */
void vr_dpdk_free(struct vr_dpdk *d);

#endif
