/*
 * wake.c - what an idle worker sleeps on besides the spool: the port's own
 * file descriptors, readable when a frame arrives, so that a worker with
 * nothing to do can block until there is something instead of waking on a
 * timer to look.
 *
 * net_af_packet keeps one packet socket per queue pair, bound to its
 * interface, and exports none of them; but poll() on such a socket reports
 * POLLIN as soon as the kernel has put a frame into its mmap'ed receive ring
 * (packet_poll), which is exactly "rx burst would return something". We find
 * them by asking every descriptor of the process: a packet socket bound to
 * the port's if_index (rte_eth_dev_info). A worker waits on all of them, not
 * on its queue's alone: the kernel's fanout may put one of its flows on
 * another queue, and lcore.c steers that frame back through the owner's
 * inbox, which has no fd.
 *
 * A port without such descriptors (net_memif, net_ring, a NIC without rx
 * interrupts) gets none, and lcore.c keeps its timed naps.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/if_packet.h>
#include <rte_ethdev.h>

#include "vmrelay/log.h"
#include "dpdk_impl.h"

/* fd is a packet socket bound to interface ifindex. */
static bool packet_socket_of(int fd, int ifindex)
{
	struct sockaddr_ll sll;
	socklen_t len = sizeof(sll);
	int domain;
	socklen_t dlen = sizeof(domain);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) < 0 || domain != AF_PACKET)
		return false;
	memset(&sll, 0, sizeof(sll));
	if (getsockname(fd, (struct sockaddr *)&sll, &len) < 0)
		return false;
	return sll.sll_ifindex == ifindex;
}

unsigned vr_dpdk_wake_fds(struct vr_dpdk *d)
{
	struct rte_eth_dev_info info;
	struct dirent *e;
	DIR *dir;

	d->n_wake = 0;
	if (rte_eth_dev_info_get(d->port, &info) < 0 || info.if_index == 0)
		return 0;
	if (!(dir = opendir("/proc/self/fd"))) {
		vr_log_warn("event=wake_fds_unknown error=\"/proc/self/fd: %s\"", strerror(errno));
		return 0;
	}
	unsigned found = 0;
	while ((e = readdir(dir))) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (*end || end == e->d_name || fd == dirfd(dir) ||
		    !packet_socket_of((int)fd, (int)info.if_index))
			continue;
		if (found < DPDK_WAKE_MAX)
			d->wake_fd[found] = (int)fd;
		found++;
	}
	closedir(dir);
	/* A frame on a socket left out would wait for the timeout: all or none. */
	if (found > DPDK_WAKE_MAX) {
		vr_log_warn("event=wake_fds_unused sockets=%u max=%u", found, DPDK_WAKE_MAX);
		return 0;
	}
	d->n_wake = found;
	return found;
}
