/*
 * dpdk.c - the DPDK transport's setup and lifecycle (see dpdk.h): the EAL
 * from the config's eal line, the one port (a queue pair per worker lcore,
 * RSS where the port has it), the mbuf pool, each worker's stack and inbox
 * ring, launching the workers on their lcores and stopping them.
 *
 * Which worker owns a flow is decided in software for every port: the
 * Toeplitz hash of its 4-tuple under our RSS key, through a redirection table
 * of reta_size entries that deal the queues round-robin. A port with RSS is
 * given the same key and table, so its frames already land on the owner; a
 * port without (net_af_packet, whose kernel fanout rolls over to another
 * socket when one is full) delivers some frames elsewhere, and lcore.c passes
 * them on.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include "vmrelay/clock.h"
#include "vmrelay/log.h"
#include "dpdk_impl.h"

#define EAL_ARGS_MAX  64
#define RX_DESC       1024
#define TX_DESC       1024
#define MBUF_CACHE    256
#define RETA_DEFAULT  128              /* a port without RSS: any size works */
#define NET_PKTS      8192             /* stack packet descriptors per worker */
#define TCP_CONNS_MAX (1u << 20)
/* An SMTP client sends little but DATA, and the session takes it at once:
 * a small window is enough. (10000 connections' buffers are 600 MiB of
 * address space, touched only as they fill: 100 MiB resident at start.) */
#define TCP_RCVBUF    (32u << 10)

/* The key most NICs ship with (Microsoft's RSS verification suite). */
static const uint8_t rss_key_default[DPDK_RSS_KEY] = {
	0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
	0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
	0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
};

int vr_dpdk_eal_init(const struct vr_config *cfg, char *err, size_t errlen)
{
	char buf[sizeof(cfg->dpdk_eal) + 8], why[128];
	char *argv[EAL_ARGS_MAX + 1];

	argv[0] = "vmrelay";
	int argc = vr_dpdk_split(cfg->dpdk_eal, buf, sizeof(buf), argv + 1, EAL_ARGS_MAX - 1,
				 why, sizeof(why));
	if (argc < 0) {
		snprintf(err, errlen, "[dpdk] eal: %s", why);
		return -1;
	}
	argc++;
	argv[argc] = NULL;
	/*
	 * The EAL pins this thread to the main lcore's cpu, and every thread
	 * started later (spool committers, delivery, control) would inherit
	 * that one cpu. They get back the cpus the relay was started with
	 * instead: the operator's choice (taskset, systemd's CPUAffinity,
	 * isolcpus keeping the worker cores apart), and where a worker sleeps
	 * while idle, its core serves them too.
	 */
	cpu_set_t cpus;
	int have_cpus = pthread_getaffinity_np(pthread_self(), sizeof(cpus), &cpus) == 0;
	/* The EAL may permute argv: buf and argv live until it returns. */
	if (rte_eal_init(argc, argv) < 0) {
		snprintf(err, errlen, "[dpdk] eal '%s': %s", cfg->dpdk_eal, rte_strerror(rte_errno));
		return -1;
	}
	if (have_cpus)
		pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
	unsigned workers = rte_lcore_count() - 1;
	if (workers != cfg->workers) {
		snprintf(err, errlen, "[dpdk] eal gives %u worker lcore%s (besides the main lcore "
			 "%u) but [io] workers = %u: list %u lcores with -l", workers,
			 workers == 1 ? "" : "s", rte_get_main_lcore(), cfg->workers,
			 cfg->workers + 1);
		return -1;
	}
	if (rte_eth_dev_count_avail() == 0) {
		snprintf(err, errlen, "[dpdk] eal: no port; give one, e.g. "
			 "--vdev=net_af_packet0,iface=IFACE or a PCI device bound to vfio-pci");
		return -1;
	}
	return 0;
}

/* "10.77.0.1/24" -> ip, prefix; "10.77.0.254" -> gateway. config.c checked
 * the syntax; the stack checks the meaning. */
static int parse_addresses(const struct vr_config *cfg, struct vr_dpdk *d, char *err,
			   size_t errlen)
{
	char ip[sizeof(cfg->dpdk_ip)];
	struct in_addr a;

	if (!cfg->dpdk_ip[0]) {
		snprintf(err, errlen, "[dpdk] ip is required with io = dpdk (e.g. 10.77.0.1/24)");
		return -1;
	}
	snprintf(ip, sizeof(ip), "%s", cfg->dpdk_ip);
	char *slash = strchr(ip, '/');
	d->prefix = 32;
	if (slash) {
		*slash = '\0';
		d->prefix = (uint8_t)atoi(slash + 1);
	}
	if (inet_pton(AF_INET, ip, &a) != 1) {
		snprintf(err, errlen, "[dpdk] ip '%s' is not an IPv4 address", cfg->dpdk_ip);
		return -1;
	}
	d->ip = ntohl(a.s_addr);
	if (cfg->dpdk_gateway[0]) {
		if (inet_pton(AF_INET, cfg->dpdk_gateway, &a) != 1) {
			snprintf(err, errlen, "[dpdk] gateway '%s' is not an IPv4 address",
				 cfg->dpdk_gateway);
			return -1;
		}
		d->gateway = ntohl(a.s_addr);
	}
	if (cfg->dpdk_ip6[0]) {
		snprintf(ip, sizeof(ip), "%s", cfg->dpdk_ip6);
		slash = strchr(ip, '/');
		*slash = '\0';                  /* config.c saw the prefix */
		d->prefix6 = (uint8_t)atoi(slash + 1);
		if (inet_pton(AF_INET6, ip, d->ip6) != 1) {
			snprintf(err, errlen, "[dpdk] ip6 '%s' is not an IPv6 address", cfg->dpdk_ip6);
			return -1;
		}
	}
	if (cfg->dpdk_gateway6[0] && inet_pton(AF_INET6, cfg->dpdk_gateway6, d->gateway6) != 1) {
		snprintf(err, errlen, "[dpdk] gateway6 '%s' is not an IPv6 address",
			 cfg->dpdk_gateway6);
		return -1;
	}
	return 0;
}

/* Listeners must be on our address or on every address: the stack has one of each family. */
static int check_listen(const struct vr_config *cfg, const struct vr_dpdk *d, char *err,
			size_t errlen)
{
	static const uint8_t any6[16];

	for (unsigned i = 0; i < cfg->n_listen; i++) {
		const struct vr_listen *l = &cfg->listen[i];
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&l->addr;
		if (l->addr.ss_family == AF_INET6) {
			const uint8_t *a6 = ((const struct sockaddr_in6 *)&l->addr)->sin6_addr.s6_addr;
			if (!cfg->dpdk_ip6[0]) {
				snprintf(err, errlen, "listen %s: IPv6 needs [dpdk] ip6", l->text);
				return -1;
			}
			if (memcmp(a6, any6, 16) && memcmp(a6, d->ip6, 16)) {
				snprintf(err, errlen, "listen %s: not [dpdk] ip6 %s nor [::]", l->text,
					 cfg->dpdk_ip6);
				return -1;
			}
		} else if (sin->sin_addr.s_addr && ntohl(sin->sin_addr.s_addr) != d->ip) {
			snprintf(err, errlen, "listen %s: not [dpdk] ip %s nor 0.0.0.0", l->text,
				 cfg->dpdk_ip);
			return -1;
		}
		if (sin->sin_port == 0) {
			snprintf(err, errlen, "listen %s: port 0 needs the kernel to pick one; "
				 "give a port with io = dpdk", l->text);
			return -1;
		}
	}
	return 0;
}

int vr_dpdk_check(const struct vr_config *cfg, char *err, size_t errlen)
{
	char buf[sizeof(cfg->dpdk_eal) + 8], why[128];
	char *argv[EAL_ARGS_MAX];
	struct vr_dpdk d;

	int argc = vr_dpdk_split(cfg->dpdk_eal, buf, sizeof(buf), argv, EAL_ARGS_MAX - 1, why,
				 sizeof(why));
	if (argc < 0) {
		snprintf(err, errlen, "[dpdk] eal: %s", why);
		return -1;
	}
	if (argc == 0) {
		snprintf(err, errlen, "[dpdk] eal is required with io = dpdk (e.g. -l 0-1 "
			 "--vdev=net_af_packet0,iface=eth1)");
		return -1;
	}
	struct vr_fault_conf fc;
	if (vr_dpdk_fault_parse(cfg->dpdk_fault, &fc, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "[dpdk] fault: %s", why);
		return -1;
	}
	if (parse_addresses(cfg, &d, err, errlen) < 0)
		return -1;
	return check_listen(cfg, &d, err, errlen);
}

/* Deals the port's redirection table round-robin over the queues. */
static int reta_set(struct vr_dpdk *d, unsigned size)
{
	struct rte_eth_rss_reta_entry64 reta[size / RTE_ETH_RETA_GROUP_SIZE];

	memset(reta, 0, sizeof(reta));
	for (unsigned i = 0; i < size; i++) {
		reta[i / RTE_ETH_RETA_GROUP_SIZE].mask |= 1ull << (i % RTE_ETH_RETA_GROUP_SIZE);
		reta[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE] =
			(uint16_t)(i % d->n_workers);
	}
	return rte_eth_dev_rss_reta_update(d->port, reta, (uint16_t)size);
}

static int port_setup(struct vr_dpdk *d, char *err, size_t errlen)
{
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf;
	uint16_t q = (uint16_t)d->n_workers, nrx = RX_DESC, ntx = TX_DESC;
	int rc;

	/* The first port: vr_dpdk_eal_init saw that there is one. */
	d->port = (uint16_t)rte_eth_find_next_owned_by(0, RTE_ETH_DEV_NO_OWNER);
	rte_eth_dev_get_name_by_port(d->port, d->port_name);
	if ((rc = rte_eth_dev_info_get(d->port, &info)) < 0)
		goto fail;
	if (info.max_rx_queues < q || info.max_tx_queues < q) {
		snprintf(err, errlen, "port %s has %u rx and %u tx queues; %u workers need %u "
			 "of each (net_af_packet: add qpairs=%u to its --vdev)", d->port_name,
			 info.max_rx_queues, info.max_tx_queues, q, q, q);
		return -1;
	}
	memset(&conf, 0, sizeof(conf));
	memcpy(d->rss_key, rss_key_default, sizeof(d->rss_key));
	d->reta_size = RETA_DEFAULT;
	uint64_t hf = info.flow_type_rss_offloads & (RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_NONFRAG_IPV4_TCP |
						     RTE_ETH_RSS_IPV6 | RTE_ETH_RSS_NONFRAG_IPV6_TCP);
	if (q > 1 && (hf & RTE_ETH_RSS_NONFRAG_IPV4_TCP) && info.reta_size &&
	    info.hash_key_size == DPDK_RSS_KEY) {
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_key = d->rss_key;
		conf.rx_adv_conf.rss_conf.rss_key_len = DPDK_RSS_KEY;
		conf.rx_adv_conf.rss_conf.rss_hf = hf;
		d->rss = true;
	}
	if ((rc = rte_eth_dev_configure(d->port, q, q, &conf)) < 0 ||
	    (rc = rte_eth_dev_adjust_nb_rx_tx_desc(d->port, &nrx, &ntx)) < 0)
		goto fail;
	/* Enough mbufs for every ring full, every steering ring full and each
	 * lcore's cache, with the same again for frames in flight. */
	unsigned nmbuf = 2 * q * (nrx + ntx + DPDK_INBOX + MBUF_CACHE);
	d->mp = rte_pktmbuf_pool_create("vr_mbuf", nmbuf, MBUF_CACHE, 0,
					RTE_MBUF_DEFAULT_BUF_SIZE, rte_eth_dev_socket_id(d->port));
	if (!d->mp) {
		snprintf(err, errlen, "mbuf pool of %u: %s (raise -m in [dpdk] eal)", nmbuf,
			 rte_strerror(rte_errno));
		return -1;
	}
	for (uint16_t i = 0; i < q; i++) {
		int sock = rte_eth_dev_socket_id(d->port);
		if ((rc = rte_eth_rx_queue_setup(d->port, i, nrx, sock, NULL, d->mp)) < 0 ||
		    (rc = rte_eth_tx_queue_setup(d->port, i, ntx, sock, NULL)) < 0)
			goto fail;
	}
	if (d->rss && reta_set(d, info.reta_size) == 0)
		d->reta_size = info.reta_size;
	else
		d->rss = false;
	uint16_t mtu = 1500;
	if (rte_eth_dev_get_mtu(d->port, &mtu) == 0 && mtu > 1500)
		mtu = 1500;
	d->mtu = mtu;
	if ((rc = rte_eth_macaddr_get(d->port, &d->mac)) < 0 || (rc = rte_eth_dev_start(d->port)) < 0)
		goto fail;
	d->port_started = true;
	/*
	 * Neighbor Discovery asks for us at our solicited-node groups' MACs
	 * (33:33:ff:..): the port must pass multicast up. A port that cannot
	 * (promiscuous af_packet already does) still answers a peer that knows
	 * our MAC, but not one asking afresh.
	 */
	if (d->cfg->dpdk_ip6[0] && (rc = rte_eth_allmulticast_enable(d->port)) < 0)
		vr_log_warn("event=dpdk_allmulticast port=%s error=\"%s\"", d->port_name,
			    rte_strerror(-rc));
	vr_dpdk_wake_fds(d);
	return 0;
fail:
	snprintf(err, errlen, "port %s: %s", d->port_name, rte_strerror(-rc));
	return -1;
}

static int worker_setup(struct vr_dpdk *d, struct dpdk_worker *w, char *err, size_t errlen)
{
	char name[RTE_RING_NAMESIZE];

	snprintf(name, sizeof(name), "vr_inbox%u", w->id);
	w->inbox = rte_ring_create(name, DPDK_INBOX, rte_lcore_to_socket_id(w->lcore),
				   RING_F_SC_DEQ);
	if (!w->inbox) {
		snprintf(err, errlen, "worker %u: ring: %s", w->id, rte_strerror(rte_errno));
		return -1;
	}
	struct vr_net_conf nc = {
		.ip = d->ip, .prefix = d->prefix, .gateway = d->gateway, .mtu = d->mtu,
		.prefix6 = d->prefix6,
		.pkts = NET_PKTS,
		.tx = vr_dpdk_tx, .tx_arg = w,
		.ext_free = vr_dpdk_ext_free, .ext_arg = w,
	};
	memcpy(nc.mac, d->mac.addr_bytes, sizeof(nc.mac));
	memcpy(nc.ip6, d->ip6, sizeof(nc.ip6));
	memcpy(nc.gateway6, d->gateway6, sizeof(nc.gateway6));
	char why[256];
	/* Faults on the way out sit between the stack and the port. */
	if (d->cfg->dpdk_fault[0]) {
		struct vr_fault_conf fc;
		vr_dpdk_fault_parse(d->cfg->dpdk_fault, &fc, why, sizeof(why));
		fc.seed = fc.seed * 2 * d->n_workers + 2 * w->id;
		w->tx_fault = vr_fault_new(&fc, vr_dpdk_tx, w, why, sizeof(why));
		if (!w->tx_fault)
			goto fault_failed;
		nc.tx = vr_fault_burst;
		nc.tx_arg = w->tx_fault;
	}
	w->net = vr_net_new(&nc, why, sizeof(why));
	if (!w->net) {
		snprintf(err, errlen, "[dpdk] ip %s: %s", d->cfg->dpdk_ip, why);
		return -1;
	}
	/* ... and on the way in between the port and the stack. */
	if (d->cfg->dpdk_fault[0]) {
		struct vr_fault_conf fc;
		vr_dpdk_fault_parse(d->cfg->dpdk_fault, &fc, why, sizeof(why));
		fc.seed = fc.seed * 2 * d->n_workers + 2 * w->id + 1;
		w->rx_fault = vr_fault_new(&fc, vr_net_rx_burst, w->net, why, sizeof(why));
		if (!w->rx_fault)
			goto fault_failed;
		vr_log_warn("event=fault_injection worker=%u fault=\"%s\"", w->id,
			    d->cfg->dpdk_fault);
	}
	/* Room past max_connections for the finished ones still closing. */
	struct vr_tcp_conf tc = {
		.max_conns = VR_MIN(d->cfg->max_connections + d->cfg->max_connections / 4 + 16,
				    TCP_CONNS_MAX),
		.rcvbuf = TCP_RCVBUF,
	};
	w->tcp = vr_tcp_new(w->net, &tc, vr_clock_ms(), why, sizeof(why));
	if (!w->tcp) {
		snprintf(err, errlen, "worker %u: %s", w->id, why);
		return -1;
	}
	w->stack = vr_iostack_new(d->srv, d->sh, w->id, w->tcp, err, errlen);
	return w->stack ? 0 : -1;
fault_failed:
	snprintf(err, errlen, "[dpdk] fault: %s", why);
	return -1;
}

struct vr_dpdk *vr_dpdk_new(struct vr_smtpd *srv, char *err, size_t errlen)
{
	struct vr_dpdk *d = calloc(1, sizeof(*d));

	if (!d) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->srv = srv;
	d->cfg = srv->cfg;
	d->n_workers = srv->n_workers;
	atomic_init(&d->stop, false);
	sem_init(&d->ended, 0, 0);
	d->w = rte_zmalloc("vr_workers", d->n_workers * sizeof(*d->w), RTE_CACHE_LINE_SIZE);
	if (!d->w) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (parse_addresses(d->cfg, d, err, errlen) < 0 ||
	    check_listen(d->cfg, d, err, errlen) < 0 ||
	    !(d->sh = vr_iostack_shared_new(d->cfg, d->n_workers, err, errlen)) ||
	    port_setup(d, err, errlen) < 0)
		goto fail;
	unsigned lcore, id = 0;
	RTE_LCORE_FOREACH_WORKER(lcore) {
		struct dpdk_worker *w = &d->w[id];
		w->d = d;
		w->id = id++;
		w->lcore = lcore;
		if (worker_setup(d, w, err, errlen) < 0)
			goto fail;
	}
	return d;
fail:
	vr_dpdk_free(d);
	return NULL;
}

void vr_dpdk_describe(const struct vr_dpdk *d, char *out, size_t len)
{
	char mac[RTE_ETHER_ADDR_FMT_SIZE];

	rte_ether_format_addr(mac, sizeof(mac), &d->mac);
	snprintf(out, len, "ip=%s ip6=%s mac=%s port=%s queues=%u rss=%s mtu=%u wake_fds=%u",
		 d->cfg->dpdk_ip, d->cfg->dpdk_ip6[0] ? d->cfg->dpdk_ip6 : "none", mac,
		 d->port_name, d->n_workers, d->rss ? "yes" : "no", d->mtu, d->n_wake);
}

/*
 * rte_eal_wait_lcore spins until its worker returns: this thread would burn a
 * cpu the spool committers and delivery need. So it sleeps on a semaphore
 * each worker posts as it ends, and only then collects them.
 */
int vr_dpdk_run(struct vr_dpdk *d)
{
	unsigned launched = 0;
	int rc = 0;

	for (unsigned i = 0; i < d->n_workers; i++) {
		int r = rte_eal_remote_launch(vr_dpdk_worker_main, &d->w[i], d->w[i].lcore);
		if (r < 0) {
			vr_log_err("event=lcore_launch_failed worker=%u lcore=%u error=\"%s\"", i,
				   d->w[i].lcore, strerror(-r));
			vr_dpdk_stop(d);
			rc = r;
			continue;
		}
		launched++;
	}
	for (unsigned i = 0; i < launched; i++)
		while (sem_wait(&d->ended) < 0)
			;               /* EINTR */
	for (unsigned i = 0; i < d->n_workers; i++) {
		int r = rte_eal_wait_lcore(d->w[i].lcore);
		if (r < 0 && rc == 0)
			rc = r;
	}
	return rc;
}

void vr_dpdk_stop(struct vr_dpdk *d)
{
	/* Release: nothing to publish with it; workers only poll the flag. */
	atomic_store_explicit(&d->stop, true, memory_order_release);
}

void vr_dpdk_free(struct vr_dpdk *d)
{
	if (!d)
		return;
	for (unsigned i = 0; d->w && i < d->n_workers; i++) {
		struct dpdk_worker *w = &d->w[i];
		struct rte_mbuf *m;
		while (w->inbox && rte_ring_dequeue(w->inbox, (void **)&m) == 0)
			rte_pktmbuf_free(m);
		rte_ring_free(w->inbox);
		vr_iostack_free(w->stack);
		vr_tcp_free(w->tcp);
		/* both hold packets of the stack's pool: freed before it */
		vr_fault_free(w->rx_fault);
		vr_fault_free(w->tx_fault);
		vr_net_free(w->net);
	}
	if (d->port_started) {
		rte_eth_dev_stop(d->port);
		rte_eth_dev_close(d->port);
	}
	rte_mempool_free(d->mp);
	vr_iostack_shared_free(d->sh);
	rte_free(d->w);
	sem_destroy(&d->ended);
	free(d);
}
