/*
 * port.c - one DPDK port, one queue pair, one userspace stack (see port.h).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "vmrelay/clock.h"
#include "dpdk.h"          /* dpdk-app's vr_dpdk_split: the relay's own eal syntax */
#include "port.h"

#define EAL_ARGS_MAX 64
#define NB_DESC      1024
#define NB_MBUF      8191
#define MBUF_CACHE   256
#define TX_MAX       (4 * VR_NET_BURST)

struct vr_bench_port {
	uint16_t port;
	struct rte_mempool *mp;
	struct vr_net *net;
	struct rte_mbuf *tx[TX_MAX];
	unsigned ntx;
	uint64_t tx_dropped;
	bool started;
	char name[RTE_ETH_NAME_MAX_LEN + 32];
};

int vr_bench_eal_init(const char *prog, const char *line, char *err, size_t errlen)
{
	/* The EAL keeps pointers into argv: both live as long as the process. */
	static char buf[4096];
	static char *argv[EAL_ARGS_MAX + 1];
	char why[128];

	argv[0] = (char *)prog;
	int argc = vr_dpdk_split(line, buf, sizeof(buf), argv + 1, EAL_ARGS_MAX - 1, why,
				 sizeof(why));
	if (argc < 0) {
		snprintf(err, errlen, "%s", why);
		return -1;
	}
	argv[++argc] = NULL;
	if (rte_eal_init(argc, argv) < 0) {
		snprintf(err, errlen, "EAL '%s': %s", line, rte_strerror(rte_errno));
		return -1;
	}
	return 0;
}

/* Gathers the stack's frames into mbufs; a full gather goes out at once. */
static unsigned port_tx(void *arg, struct vr_pkt **pkts, unsigned n, uint64_t now)
{
	struct vr_bench_port *p = arg;

	for (unsigned i = 0; i < n; i++) {
		struct rte_mbuf *m = rte_pktmbuf_alloc(p->mp);
		if (!m) {
			p->tx_dropped += n - i;
			return i;               /* the stack frees the rest */
		}
		memcpy(rte_pktmbuf_mtod(m, uint8_t *), pkts[i]->data, pkts[i]->len);
		m->data_len = m->pkt_len = pkts[i]->len;
		vr_net_pkt_free(pkts[i]);
		p->tx[p->ntx++] = m;
		if (p->ntx == TX_MAX)
			vr_bench_port_flush(p);
	}
	return n;
}

static void ext_free(void *arg, void *ext)
{
	rte_pktmbuf_free(ext);
}

unsigned vr_bench_port_flush(struct vr_bench_port *p)
{
	unsigned n = p->ntx;

	if (!n)
		return 0;
	uint16_t sent = rte_eth_tx_burst(p->port, 0, p->tx, (uint16_t)n);
	if (sent < n) {
		p->tx_dropped += n - sent;
		rte_pktmbuf_free_bulk(p->tx + sent, n - sent);
	}
	p->ntx = 0;
	return sent;
}

int vr_bench_port_wait_link(const struct vr_bench_port *p, unsigned ms)
{
	uint64_t until = vr_clock_ms() + ms;
	struct rte_eth_link link;

	for (;;) {
		if (rte_eth_link_get_nowait(p->port, &link) == 0 && link.link_status == RTE_ETH_LINK_UP)
			return 0;
		if (vr_clock_ms() >= until)
			return -1;
		usleep(10000);
	}
}

unsigned vr_bench_port_rx(struct vr_bench_port *p, uint64_t now)
{
	struct rte_mbuf *m[VR_NET_BURST];
	struct vr_pkt *pkts[VR_NET_BURST];
	unsigned k = 0;
	uint16_t n = rte_eth_rx_burst(p->port, 0, m, VR_NET_BURST);

	for (unsigned i = 0; i < n; i++) {
		pkts[k] = vr_net_pkt_wrap(p->net, rte_pktmbuf_mtod(m[i], uint8_t *), m[i]->data_len,
					  rte_pktmbuf_headroom(m[i]), rte_pktmbuf_tailroom(m[i]),
					  m[i]);
		if (pkts[k])
			k++;
		else
			rte_pktmbuf_free(m[i]);
	}
	if (k)
		vr_net_rx(p->net, pkts, k, now);
	return n;
}

static int port_start(struct vr_bench_port *p, char *err, size_t errlen)
{
	struct rte_eth_conf conf;
	uint16_t nrx = NB_DESC, ntx = NB_DESC;
	char dev[RTE_ETH_NAME_MAX_LEN];
	int rc;

	if (rte_eth_dev_count_avail() == 0) {
		snprintf(err, errlen, "no port: give one, e.g. "
			 "--vdev=net_memif0,role=client,socket=PATH");
		return -1;
	}
	p->port = (uint16_t)rte_eth_find_next_owned_by(0, RTE_ETH_DEV_NO_OWNER);
	rte_eth_dev_get_name_by_port(p->port, dev);
	p->mp = rte_pktmbuf_pool_create("vr_bench", NB_MBUF, MBUF_CACHE, 0,
					RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
	if (!p->mp) {
		snprintf(err, errlen, "mbuf pool: %s (raise -m)", rte_strerror(rte_errno));
		return -1;
	}
	memset(&conf, 0, sizeof(conf));
	if ((rc = rte_eth_dev_configure(p->port, 1, 1, &conf)) < 0 ||
	    (rc = rte_eth_dev_adjust_nb_rx_tx_desc(p->port, &nrx, &ntx)) < 0 ||
	    (rc = rte_eth_rx_queue_setup(p->port, 0, nrx, rte_socket_id(), NULL, p->mp)) < 0 ||
	    (rc = rte_eth_tx_queue_setup(p->port, 0, ntx, rte_socket_id(), NULL)) < 0 ||
	    (rc = rte_eth_dev_start(p->port)) < 0) {
		snprintf(err, errlen, "port %s: %s", dev, rte_strerror(-rc));
		return -1;
	}
	p->started = true;
	struct rte_ether_addr mac;
	char macs[RTE_ETHER_ADDR_FMT_SIZE];
	rte_eth_macaddr_get(p->port, &mac);
	rte_ether_format_addr(macs, sizeof(macs), &mac);
	snprintf(p->name, sizeof(p->name), "%s mac=%s", dev, macs);
	return 0;
}

struct vr_bench_port *vr_bench_port_new(const char *ip, unsigned pkts, char *err, size_t errlen)
{
	struct vr_bench_port *p = calloc(1, sizeof(*p));
	char addr[32], why[256];
	struct in_addr a;

	if (!p) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(addr, sizeof(addr), "%s", ip);
	char *slash = strchr(addr, '/');
	if (!slash || (*slash = '\0', inet_pton(AF_INET, addr, &a)) != 1) {
		snprintf(err, errlen, "address '%s' is not A.B.C.D/N", ip);
		goto fail;
	}
	if (port_start(p, err, errlen) < 0)
		goto fail;
	struct rte_ether_addr mac;
	rte_eth_macaddr_get(p->port, &mac);
	struct vr_net_conf nc = {
		.ip = ntohl(a.s_addr), .prefix = (uint8_t)atoi(slash + 1), .pkts = pkts,
		/* Every session's SYN may wait on the first ARP reply. */
		.arp_pending = VR_NET_ARP_PENDING_MAX,
		.tx = port_tx, .tx_arg = p, .ext_free = ext_free, .ext_arg = p,
	};
	memcpy(nc.mac, mac.addr_bytes, sizeof(nc.mac));
	if (!(p->net = vr_net_new(&nc, why, sizeof(why)))) {
		snprintf(err, errlen, "%s: %s", ip, why);
		goto fail;
	}
	return p;
fail:
	vr_bench_port_free(p);
	return NULL;
}

void vr_bench_port_free(struct vr_bench_port *p)
{
	if (!p)
		return;
	rte_pktmbuf_free_bulk(p->tx, p->ntx);
	vr_net_free(p->net);
	if (p->started) {
		rte_eth_dev_stop(p->port);
		rte_eth_dev_close(p->port);
	}
	rte_mempool_free(p->mp);
	free(p);
}

struct vr_net *vr_bench_port_net(const struct vr_bench_port *p)
{
	return p->net;
}

const char *vr_bench_port_name(const struct vr_bench_port *p)
{
	return p->name;
}

uint64_t vr_bench_port_tx_dropped(const struct vr_bench_port *p)
{
	return p->tx_dropped;
}

uint64_t vr_bench_port_rx_missed(const struct vr_bench_port *p)
{
	struct rte_eth_stats st;

	if (rte_eth_stats_get(p->port, &st) < 0)
		return 0;
	return st.imissed + st.ierrors + st.rx_nombuf;
}
