/*
 * config.h - the relay's INI configuration (inih), parsed once at start and on
 * reload into a plain struct that is read-only afterwards.
 *
 * Keys are a table (section, key, parser, field); an unknown section or key is
 * an error that names the file, the line and the key, and so is a bad value,
 * a key given twice, or a missing required key ([relay] hostname, listen,
 * spool_dir, accounts). Sections and keys that later issues act on ([dpdk],
 * [limits], [delivery], [cluster]) are parsed and checked now, so a config
 * written for the full relay loads today.
 *
 * Syntax: "key = value", "; comment" lines and "value ; comment" after a
 * blank; indentation is ignored (no continuation lines); a line may hold
 * at most 198 characters (Debian's inih). Sizes take k, m or g ("25m").
 */
#ifndef VR_CONFIG_H
#define VR_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <limits.h>
#include <sys/socket.h>

#define VR_CONFIG_MAX_LISTEN 16

enum vr_io_mode { VR_IO_KERNEL, VR_IO_DPDK };

struct vr_listen {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	bool implicit_tls;            /* "tls=implicit": TLS from the first byte (port 465) */
	char text[64];                /* as written, for logs */
};

struct vr_config {
	/* [relay] */
	char hostname[256];
	struct vr_listen listen[VR_CONFIG_MAX_LISTEN];
	unsigned n_listen;
	char spool_dir[PATH_MAX];
	char accounts[PATH_MAX];
	char control_socket[PATH_MAX];
	char control_group[64];       /* may use control_socket besides root; "" = "vmrelay"
				       * if that group exists */
	char metrics_listen[300];     /* host:port of GET /metrics; "" = off */
	char log_file[PATH_MAX];      /* "" = stderr */
	int log_level;                /* enum vr_log_level */

	/* [io] */
	enum vr_io_mode io_mode;
	unsigned workers;             /* worker threads / lcores; default 1 */

	/* [dpdk] */
	char dpdk_eal[1024];
	char dpdk_ip[64];             /* address/prefix */
	char dpdk_gateway[64];
	char dpdk_ip6[64];            /* IPv6 address/prefix; "" = IPv4 only */
	char dpdk_gateway6[64];       /* IPv6 next hop off-link (often a router's fe80::) */
	char dpdk_fault[128];         /* tests: "drop=3,reorder=1,dup=1,seed=7" on rx and
				       * tx (dpdk-app checks it); "" = none */

	/* [smtp]: protocol limits, each enforced before any work is done */
	uint64_t max_message_size;    /* octets, SIZE= and DATA/BDAT; default 25 MiB */
	unsigned max_recipients;      /* per transaction; default 100 */
	unsigned max_errors;          /* protocol errors before 421; default 10 */
	unsigned max_conn_per_ip;     /* concurrent connections per IPv4 / IPv6 /64; default 50 */
	unsigned max_connections;     /* per worker; default 10000 */
	unsigned idle_timeout_ms;     /* between commands and within DATA; default 300000 */
	unsigned greet_pause_ms;      /* delay before the banner; talking first is refused; default 0 */

	/* [limits] */
	unsigned per_minute, per_hour, per_day, per_day_max;
	char timezone[64];            /* day boundary for per_day; default "UTC" */

	/* [tls] */
	char tls_cert[PATH_MAX];
	char tls_key[PATH_MAX];

	/* [delivery] */
	unsigned delivery_workers;
	char smarthost[300];          /* host:port, "" = MX routing */
	char resolver[300];           /* "" = /etc/resolv.conf, or "IP[@port]" to ask */
	char trust_anchor[PATH_MAX];  /* DS/DNSKEY file for DNSSEC (DANE); "" = no validation */
	unsigned dns_timeout_ms;      /* per DNS query; default 30000 */
	unsigned retry_first_s, retry_max_s, max_age_s;

	/* [cluster]: quota leases on Redis (vmrelay/cluster.h); off without redis */
	char redis[300];              /* host:port, "" = not clustered ... */
	char cluster_sentinels[300];  /* ... or sentinels: host:port, host:port */
	char cluster_master_name[128];  /* master_name the sentinels know */
	bool cluster_tls;             /* tls = yes: TLS to Redis and the sentinels */
	char cluster_tls_ca[PATH_MAX];  /* CA of the servers' certificates */
	char cluster_tls_cert[PATH_MAX], cluster_tls_key[PATH_MAX];  /* client cert */
	char cluster_tls_server_name[256];  /* name in their certificates; "" = the host */
	char cluster_prefix[64];      /* key_prefix; default "vmrelay:" */
	char cluster_node[128];       /* node: this node's lease name; "" = host-pid */
	char cluster_password_file[PATH_MAX];   /* AUTH password, first line */
	unsigned cluster_lease_min, cluster_lease_max;  /* slots per block; 1, 64 */
	unsigned cluster_lease_ttl_s;               /* default 60 */
	unsigned cluster_timeout_ms;                /* connect and reply; default 200 */
	unsigned cluster_failsafe_percent;          /* per node with Redis away; 10 */

	/* [dns]: the DNS wizard (dns-records, dns-check) */
	char dns_spf_name[256];       /* customers' SPF says include:<this> */
	char dns_key_zone[256];       /* DKIM CNAMEs point at <sel>.<domain>.<this> */
	char dns_secret_file[PATH_MAX]; /* the relay secret keying ownership tokens */
	/* a verified domain whose dns-check fails this many times in a row,
	 * the first at least this long ago, is unverified; 3 and 86400 */
	unsigned dns_unverify_checks, dns_unverify_after_s;
};

/* Fills cfg with the defaults listed above. */
void vr_config_defaults(struct vr_config *cfg);

/*
 * Loads path over the defaults. Returns 0, or -1 with a message in err such as
 * "relay.ini:12: unknown key 'listn' in [relay]". cfg is only written on
 * success.
 */
int vr_config_load(const char *path, struct vr_config *cfg, char *err, size_t errlen);

/* Parses "host:port [tls=implicit]" ("[v6]:port" for IPv6); host is an
 * address, not a name; port 0 means any free port (for tests). 0 or -1 + err. */
int vr_config_parse_listen(const char *text, struct vr_listen *out, char *err, size_t errlen);

#endif
