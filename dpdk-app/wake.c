/*
 * wake.c - what an idle worker sleeps on besides the spool: the port's own
 * file descriptors, readable when a frame arrives, so that a worker with
 * nothing to do can block until there is something instead of waking on a
 * timer to look.
 *
 * The kernel-backed PMDs keep one socket per queue and export none of them;
 * but poll() on such a socket reports POLLIN as soon as the kernel has put a
 * frame where rx burst looks, which is exactly "rx burst would return
 * something". We find them by asking every descriptor of the process, with
 * a test per driver (sockets[] below):
 *
 *   net_af_packet  a packet socket bound to the port's if_index (packet_poll
 *                  sees the mmap'ed receive ring);
 *   net_af_xdp     an AF_XDP socket (xsk_poll sees its rx ring). An XDP
 *                  socket has no getsockname, so it cannot say its
 *                  interface: every one in the process is taken. The relay
 *                  opens one port, so they are its own; one of another
 *                  port would only end a sleep early, never make a frame
 *                  wait.
 *
 * A worker waits on all of them, not on its queue's alone: the kernel may
 * put one of its flows on another queue, and lcore.c steers that frame back
 * through the owner's inbox, which has no fd.
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
#include <linux/if_xdp.h>
#include <rte_ethdev.h>

#include "vmrelay/common.h"
#include "vmrelay/log.h"
#include "dpdk_impl.h"

static int socket_domain(int fd)
{
	int domain;
	socklen_t len = sizeof(domain);

	return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ? -1 : domain;
}

/* fd is a packet socket bound to interface ifindex. */
static bool packet_socket_of(int fd, int ifindex)
{
	struct sockaddr_ll sll;
	socklen_t len = sizeof(sll);

	if (socket_domain(fd) != AF_PACKET)
		return false;
	memset(&sll, 0, sizeof(sll));
	if (getsockname(fd, (struct sockaddr *)&sll, &len) < 0)
		return false;
	return sll.sll_ifindex == ifindex;
}

/* fd is an XDP socket (of the one port: see the top of the file). */
static bool xdp_socket_of(int fd, int ifindex)
{
	(void)ifindex;
	return socket_domain(fd) == AF_XDP;
}

static const struct {
	const char *driver;                     /* rte_eth_dev_info.driver_name */
	bool (*is_ours)(int fd, int ifindex);
} sockets[] = {
	{ "net_af_packet", packet_socket_of },
	{ "net_af_xdp",    xdp_socket_of },
};

unsigned vr_dpdk_wake_fds(struct vr_dpdk *d)
{
	struct rte_eth_dev_info info;
	struct dirent *e;
	DIR *dir;

	d->n_wake = 0;
	if (rte_eth_dev_info_get(d->port, &info) < 0 || info.if_index == 0)
		return 0;
	bool (*is_ours)(int, int) = NULL;
	for (size_t i = 0; i < VR_ARRAY_SIZE(sockets); i++)
		if (strcmp(info.driver_name, sockets[i].driver) == 0)
			is_ours = sockets[i].is_ours;
	if (!is_ours)
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
		    !is_ours((int)fd, (int)info.if_index))
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
