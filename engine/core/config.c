/*
 * config.c - the relay's INI configuration (see vmrelay/config.h).
 *
 * inih does the INI syntax; every (section, key) it reports is looked up in
 * keys[], whose parse function checks the value and stores it at an offset
 * in a scratch struct vr_config. Cross-key rules (required keys, per_day <=
 * per_day_max, cert with key) are checked after the file, and only then is
 * the caller's struct overwritten, so a bad file changes nothing.
 *
 * Debian's libinih is built without line numbers in the handler and with a
 * 200-byte line limit, so we feed it through our own reader: it counts lines,
 * refuses over-long ones instead of letting inih split them, strips leading
 * blanks (inih would read an indented line as the continuation of the
 * previous value) and spots unknown section headers, which inih does not
 * report to the handler. The first error stops the parse.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmrelay/common.h"
#include "vmrelay/config.h"
#include "vmrelay/log.h"

struct key;
typedef int parse_fn(const struct key *k, const char *v, struct vr_config *cfg, char *err,
		     size_t errlen);

struct key {
	const char *section;
	const char *name;
	parse_fn *parse;
	size_t offset;
	size_t size;           /* of the field: string capacity, integer width */
	uint64_t min, max;     /* integer range */
	bool required;
};

static parse_fn parse_str, parse_path, parse_uint, parse_size, parse_hostname, parse_dns_name,
	parse_listen_list, parse_io_mode, parse_log_level, parse_ipv4_prefix, parse_ipv4,
	parse_ipv6_prefix, parse_ipv6,
	parse_hostport, parse_timezone, parse_address, parse_resolver, parse_hostport_list,
	parse_bool;

#define F(field) offsetof(struct vr_config, field), sizeof(((struct vr_config *)0)->field)
#define STR(s, k, field, fn) { s, k, fn, F(field), 0, 0, false }
#define REQ(s, k, field, fn) { s, k, fn, F(field), 0, 0, true }
#define NUM(s, k, field, lo, hi) { s, k, parse_uint, F(field), lo, hi, false }

#define SECONDS_MAX (366u * 86400u)

static const struct key keys[] = {
	REQ("relay", "hostname", hostname, parse_hostname),
	REQ("relay", "listen", listen, parse_listen_list),
	REQ("relay", "spool_dir", spool_dir, parse_path),
	REQ("relay", "accounts", accounts, parse_path),
	STR("relay", "control_socket", control_socket, parse_path),
	STR("relay", "control_group", control_group, parse_str),
	STR("relay", "metrics_listen", metrics_listen, parse_address),
	STR("relay", "log_file", log_file, parse_path),
	STR("relay", "log_level", log_level, parse_log_level),

	STR("io", "mode", io_mode, parse_io_mode),
	NUM("io", "workers", workers, 1, 64),

	STR("dpdk", "eal", dpdk_eal, parse_str),
	STR("dpdk", "ip", dpdk_ip, parse_ipv4_prefix),
	STR("dpdk", "gateway", dpdk_gateway, parse_ipv4),
	STR("dpdk", "ip6", dpdk_ip6, parse_ipv6_prefix),
	STR("dpdk", "gateway6", dpdk_gateway6, parse_ipv6),
	STR("dpdk", "fault", dpdk_fault, parse_str),

	{ "smtp", "max_message_size", parse_size, F(max_message_size), 1024, 1ull << 30, false },
	NUM("smtp", "max_recipients", max_recipients, 1, 100000),
	NUM("smtp", "max_errors", max_errors, 1, 1000),
	NUM("smtp", "max_conn_per_ip", max_conn_per_ip, 1, 1000000),
	NUM("smtp", "max_connections", max_connections, 1, 10000000),
	NUM("smtp", "idle_timeout_ms", idle_timeout_ms, 1, 86400000),
	NUM("smtp", "greet_pause_ms", greet_pause_ms, 0, 600000),

	NUM("limits", "per_minute", per_minute, 1, 1000000),
	NUM("limits", "per_hour", per_hour, 1, 1000000),
	NUM("limits", "per_day", per_day, 1, 100000000),
	NUM("limits", "per_day_max", per_day_max, 1, 100000000),
	STR("limits", "timezone", timezone, parse_timezone),

	STR("tls", "cert", tls_cert, parse_path),
	STR("tls", "key", tls_key, parse_path),

	NUM("delivery", "workers", delivery_workers, 1, 1024),
	STR("delivery", "smarthost", smarthost, parse_hostport),
	STR("delivery", "resolver", resolver, parse_resolver),
	STR("delivery", "trust_anchor", trust_anchor, parse_path),
	NUM("delivery", "dns_timeout_ms", dns_timeout_ms, 100, 600000),
	NUM("delivery", "retry_first_s", retry_first_s, 1, SECONDS_MAX),
	NUM("delivery", "retry_max_s", retry_max_s, 1, SECONDS_MAX),
	NUM("delivery", "max_age_s", max_age_s, 1, SECONDS_MAX),

	STR("cluster", "redis", redis, parse_hostport),
	STR("cluster", "key_prefix", cluster_prefix, parse_str),
	STR("cluster", "node", cluster_node, parse_str),
	STR("cluster", "sentinels", cluster_sentinels, parse_hostport_list),
	STR("cluster", "master_name", cluster_master_name, parse_str),
	STR("cluster", "password_file", cluster_password_file, parse_path),
	STR("cluster", "tls", cluster_tls, parse_bool),
	STR("cluster", "tls_ca", cluster_tls_ca, parse_path),
	STR("cluster", "tls_cert", cluster_tls_cert, parse_path),
	STR("cluster", "tls_key", cluster_tls_key, parse_path),
	STR("cluster", "tls_server_name", cluster_tls_server_name, parse_str),
	NUM("cluster", "lease_min", cluster_lease_min, 1, 1000000),
	NUM("cluster", "lease_max", cluster_lease_max, 1, 1000000),
	NUM("cluster", "lease_ttl_s", cluster_lease_ttl_s, 2, 3600),
	NUM("cluster", "timeout_ms", cluster_timeout_ms, 1, 60000),
	NUM("cluster", "failsafe_percent", cluster_failsafe_percent, 0, 100),

	STR("dns", "spf_name", dns_spf_name, parse_dns_name),
	STR("dns", "key_zone", dns_key_zone, parse_dns_name),
	STR("dns", "secret_file", dns_secret_file, parse_path),
	NUM("dns", "unverify_checks", dns_unverify_checks, 1, 1000),
	NUM("dns", "unverify_after_s", dns_unverify_after_s, 0, SECONDS_MAX),
};

static const char *const sections[] = {
	"relay", "io", "dpdk", "smtp", "limits", "tls", "delivery", "cluster", "dns",
};

/* One load: the scratch config, where we are, and the first error. */
struct load {
	const char *path;
	FILE *fp;
	char *line;            /* getline buffer */
	size_t linecap;
	unsigned lineno;
	unsigned seen[VR_ARRAY_SIZE(keys)];   /* line each key was set on, 0 = not set */
	struct vr_config cfg;
	char *err;
	size_t errlen;
	bool failed;
};

static void fail(struct load *ld, unsigned line, const char *fmt, ...) VR_PRINTF(3, 4);

static void fail(struct load *ld, unsigned line, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	if (ld->failed)
		return;
	ld->failed = true;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (line)
		snprintf(ld->err, ld->errlen, "%s:%u: %s", ld->path, line, what);
	else
		snprintf(ld->err, ld->errlen, "%s: %s", ld->path, what);
}

void vr_config_defaults(struct vr_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->log_level = VR_LOG_INFO;
	cfg->io_mode = VR_IO_KERNEL;
	cfg->workers = 1;
	cfg->max_message_size = 25u << 20;
	cfg->max_recipients = 100;
	cfg->max_errors = 10;
	cfg->max_conn_per_ip = 50;
	cfg->max_connections = 10000;
	cfg->idle_timeout_ms = 300000;
	cfg->greet_pause_ms = 0;
	cfg->per_minute = 60;
	cfg->per_hour = 250;
	cfg->per_day = 1000;
	cfg->per_day_max = 10000;
	strcpy(cfg->timezone, "UTC");
	/* Postfix's backoff (5 minutes doubling to about an hour) and its
	 * five-day maximal_queue_lifetime. */
	cfg->delivery_workers = 2;    /* they mostly wait on the network */
	cfg->retry_first_s = 300;
	cfg->retry_max_s = 3600;
	cfg->max_age_s = 5 * 86400;
	cfg->dns_timeout_ms = 30000;
	cfg->dns_unverify_checks = 3;
	cfg->dns_unverify_after_s = 86400;
	strcpy(cfg->cluster_prefix, "vmrelay:");
	cfg->cluster_lease_min = 1;
	cfg->cluster_lease_max = 64;
	cfg->cluster_lease_ttl_s = 60;
	cfg->cluster_timeout_ms = 200;
	cfg->cluster_failsafe_percent = 10;
}

/* --- value parsers: each writes its field or explains in err --- */

static void *field_of(const struct key *k, struct vr_config *cfg)
{
	return (char *)cfg + k->offset;
}

static int store_str(const struct key *k, const char *v, struct vr_config *cfg, char *err,
		     size_t errlen)
{
	size_t n = strlen(v);

	if (n >= k->size) {
		snprintf(err, errlen, "value too long (%zu bytes, at most %zu)", n, k->size - 1);
		return -1;
	}
	memcpy(field_of(k, cfg), v, n + 1);
	return 0;
}

static int parse_str(const struct key *k, const char *v, struct vr_config *cfg,
		     char *err, size_t errlen)
{
	return store_str(k, v, cfg, err, errlen);
}

static int parse_path(const struct key *k, const char *v, struct vr_config *cfg,
		      char *err, size_t errlen)
{
	if (*v == '\0' && k->required) {
		snprintf(err, errlen, "empty value");
		return -1;
	}
	return store_str(k, v, cfg, err, errlen);
}

/* Decimal digits only: no sign, no blanks, no hex, no overflow. */
static int parse_u64(const char *v, uint64_t *out, const char **end)
{
	uint64_t n = 0;
	const char *p = v;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (n > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -1;
		n = n * 10 + (uint64_t)(*p - '0');
	}
	*out = n;
	*end = p;
	return 0;
}

static int store_uint(const struct key *k, uint64_t n, const char *v, struct vr_config *cfg,
		      char *err, size_t errlen)
{
	if (n < k->min || n > k->max) {
		snprintf(err, errlen, "%s out of range %llu..%llu", v,
			 (unsigned long long)k->min, (unsigned long long)k->max);
		return -1;
	}
	if (k->size == sizeof(uint64_t))
		*(uint64_t *)field_of(k, cfg) = n;
	else
		*(unsigned *)field_of(k, cfg) = (unsigned)n;
	return 0;
}

static int parse_uint(const struct key *k, const char *v, struct vr_config *cfg,
		      char *err, size_t errlen)
{
	uint64_t n;
	const char *end;

	if (parse_u64(v, &n, &end) < 0 || *end != '\0') {
		snprintf(err, errlen, "bad number '%s'", v);
		return -1;
	}
	return store_uint(k, n, v, cfg, err, errlen);
}

/* A byte count with an optional k, m or g (binary multiples), as in "25m". */
static int parse_size(const struct key *k, const char *v, struct vr_config *cfg,
		      char *err, size_t errlen)
{
	static const char units[] = "kmg";
	uint64_t n;
	const char *end;

	if (parse_u64(v, &n, &end) < 0)
		goto bad;
	if (*end != '\0') {
		const char *u = strchr(units, end[0] | 0x20);
		if (!u || end[1] != '\0')
			goto bad;
		unsigned shift = 10u * (unsigned)(u - units + 1);
		if (n > UINT64_MAX >> shift)
			goto bad;
		n <<= shift;
	}
	return store_uint(k, n, v, cfg, err, errlen);
bad:
	snprintf(err, errlen, "bad size '%s' (a number of bytes, optionally with k, m or g)", v);
	return -1;
}

/*
 * RFC 1123 host name: LDH labels of 1..63, 253 in all. A DNS name that is not
 * a host's (an SPF include target such as _spf.example.net, a key zone) may
 * also hold underscores (RFC 2181 section 11).
 */
static bool valid_name(const char *v, bool underscore)
{
	size_t n = strlen(v), label = 0;

	if (n == 0 || n > 253)
		return false;
	for (const char *p = v; *p; p++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-')
				return false;
			label = 0;
			continue;
		}
		bool ldh = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			   (*p >= '0' && *p <= '9') || *p == '-' || (underscore && *p == '_');
		if (!ldh || (label == 0 && *p == '-') || ++label > 63)
			return false;
	}
	return label != 0 && v[n - 1] != '-';
}

static int parse_hostname(const struct key *k, const char *v, struct vr_config *cfg,
			  char *err, size_t errlen)
{
	if (valid_name(v, false))
		return store_str(k, v, cfg, err, errlen);
	snprintf(err, errlen, "bad host name '%s'", v);
	return -1;
}

static int parse_dns_name(const struct key *k, const char *v, struct vr_config *cfg,
			  char *err, size_t errlen)
{
	if (valid_name(v, true))
		return store_str(k, v, cfg, err, errlen);
	snprintf(err, errlen, "bad DNS name '%s'", v);
	return -1;
}

static int parse_port(const char *s, uint16_t *port, bool zero_ok)
{
	uint64_t n;
	const char *end;

	if (parse_u64(s, &n, &end) < 0 || *end != '\0' || (n == 0 && !zero_ok) || n > 65535)
		return -1;
	*port = (uint16_t)n;
	return 0;
}

int vr_config_parse_listen(const char *text, struct vr_listen *out, char *err, size_t errlen)
{
	char buf[sizeof(out->text)];
	struct vr_listen l;
	size_t n = strlen(text);

	memset(&l, 0, sizeof(l));
	while (n && (text[n - 1] == ' ' || text[n - 1] == '\t'))
		n--;
	while (n && (*text == ' ' || *text == '\t'))
		text++, n--;
	if (n == 0 || n >= sizeof(buf)) {
		snprintf(err, errlen, "bad listen address '%.*s': %s", (int)VR_MIN(n, 80), text,
			 n ? "too long" : "empty");
		return -1;
	}
	memcpy(buf, text, n);
	buf[n] = '\0';
	memcpy(l.text, buf, n + 1);

	/* Options follow the address after blanks. */
	char *opt = buf + strcspn(buf, " \t");
	while (*opt == ' ' || *opt == '\t')
		*opt++ = '\0';
	for (char *o; *(o = opt) != '\0';) {
		opt += strcspn(opt, " \t");
		while (*opt == ' ' || *opt == '\t')
			*opt++ = '\0';
		if (strcmp(o, "tls=implicit") != 0) {
			snprintf(err, errlen, "bad listen address '%s': unknown option '%s'",
				 l.text, o);
			return -1;
		}
		l.implicit_tls = true;
	}

	char *host = buf, *colon;
	const char *why = "missing port";
	if (*host == '[') {
		char *close = strchr(host, ']');
		if (!close || close[1] != ':')
			goto bad;
		*close = '\0';
		host++;
		colon = close + 1;
	} else {
		colon = strrchr(host, ':');
		if (!colon)
			goto bad;
	}
	*colon = '\0';
	uint16_t port;
	why = "bad port";
	/* Port 0 takes any free port: for tests, which ask the transport. */
	if (parse_port(colon + 1, &port, true) < 0)
		goto bad;

	why = "not an IPv4 address or [IPv6]";
	struct sockaddr_in *sin = (struct sockaddr_in *)&l.addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&l.addr;
	if (buf[0] != '[' && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		l.addrlen = sizeof(*sin);
	} else if (buf[0] == '[' && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		l.addrlen = sizeof(*sin6);
	} else {
		goto bad;
	}
	*out = l;
	return 0;
bad:
	snprintf(err, errlen, "bad listen address '%s': %s", l.text, why);
	return -1;
}

static uint16_t port_of(const struct vr_listen *l)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&l->addr;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&l->addr;

	return ntohs(l->addr.ss_family == AF_INET ? sin->sin_port : sin6->sin6_port);
}

static int parse_listen_list(const struct key *k, const char *v, struct vr_config *cfg,
			     char *err, size_t errlen)
{
	struct vr_listen *out = cfg->listen;
	unsigned n = 0;

	for (const char *p = v;; p++) {
		size_t len = strcspn(p, ",");
		char item[128];
		if (n == VR_CONFIG_MAX_LISTEN) {
			snprintf(err, errlen, "more than %d listen addresses",
				 VR_CONFIG_MAX_LISTEN);
			return -1;
		}
		snprintf(item, sizeof(item), "%.*s", (int)VR_MIN(len, sizeof(item) - 1), p);
		if (vr_config_parse_listen(item, &out[n], err, errlen) < 0)
			return -1;
		for (unsigned i = 0; i < n && port_of(&out[n]) != 0; i++) {
			if (out[i].addrlen == out[n].addrlen &&
			    memcmp(&out[i].addr, &out[n].addr, out[n].addrlen) == 0) {
				snprintf(err, errlen, "'%s' listed twice", out[n].text);
				return -1;
			}
		}
		n++;
		p += len;
		if (*p == '\0')
			break;
	}
	cfg->n_listen = n;
	return 0;
}

static int parse_io_mode(const struct key *k, const char *v, struct vr_config *cfg,
			 char *err, size_t errlen)
{
	static const char *const names[] = { [VR_IO_KERNEL] = "kernel", [VR_IO_DPDK] = "dpdk" };

	for (size_t i = 0; i < VR_ARRAY_SIZE(names); i++) {
		if (strcmp(v, names[i]) == 0) {
			cfg->io_mode = (enum vr_io_mode)i;
			return 0;
		}
	}
	snprintf(err, errlen, "'%s' is not kernel or dpdk", v);
	return -1;
}

static int parse_log_level(const struct key *k, const char *v, struct vr_config *cfg,
			   char *err, size_t errlen)
{
	int level = vr_log_level_parse(v);

	if (level < 0) {
		snprintf(err, errlen, "'%s' is not err, warn, info or debug", v);
		return -1;
	}
	cfg->log_level = level;
	return 0;
}

static int parse_ipv4(const struct key *k, const char *v, struct vr_config *cfg,
		      char *err, size_t errlen)
{
	struct in_addr a;

	if (inet_pton(AF_INET, v, &a) != 1) {
		snprintf(err, errlen, "'%s' is not an IPv4 address", v);
		return -1;
	}
	return store_str(k, v, cfg, err, errlen);
}

static int parse_ipv4_prefix(const struct key *k, const char *v, struct vr_config *cfg,
			     char *err, size_t errlen)
{
	char addr[INET_ADDRSTRLEN];
	const char *slash = strchr(v, '/'), *end;
	struct in_addr a;
	uint64_t len;

	if (!slash || (size_t)(slash - v) >= sizeof(addr) ||
	    parse_u64(slash + 1, &len, &end) < 0 || *end != '\0' || len > 32)
		goto bad;
	memcpy(addr, v, (size_t)(slash - v));
	addr[slash - v] = '\0';
	if (inet_pton(AF_INET, addr, &a) != 1)
		goto bad;
	return store_str(k, v, cfg, err, errlen);
bad:
	snprintf(err, errlen, "'%s' is not an IPv4 address/prefix such as 10.77.0.1/24", v);
	return -1;
}

static int parse_ipv6(const struct key *k, const char *v, struct vr_config *cfg,
		      char *err, size_t errlen)
{
	struct in6_addr a;

	if (inet_pton(AF_INET6, v, &a) != 1) {
		snprintf(err, errlen, "'%s' is not an IPv6 address", v);
		return -1;
	}
	return store_str(k, v, cfg, err, errlen);
}

static int parse_ipv6_prefix(const struct key *k, const char *v, struct vr_config *cfg,
			     char *err, size_t errlen)
{
	char addr[INET6_ADDRSTRLEN];
	const char *slash = strchr(v, '/'), *end;
	struct in6_addr a;
	uint64_t len;

	if (!slash || (size_t)(slash - v) >= sizeof(addr) ||
	    parse_u64(slash + 1, &len, &end) < 0 || *end != '\0' || len < 1 || len > 128)
		goto bad;
	memcpy(addr, v, (size_t)(slash - v));
	addr[slash - v] = '\0';
	if (inet_pton(AF_INET6, addr, &a) != 1)
		goto bad;
	return store_str(k, v, cfg, err, errlen);
bad:
	snprintf(err, errlen, "'%s' is not an IPv6 address/prefix such as 2001:db8:77::1/64", v);
	return -1;
}

/* host:port or [v6]:port; the host may be a name, resolved when used. */
static int check_hostport(const char *v, char *err, size_t errlen)
{
	const char *colon = strrchr(v, ':');
	uint16_t port;

	if (!colon || colon == v || parse_port(colon + 1, &port, false) < 0 ||
	    (v[0] == '[' && colon[-1] != ']') ||
	    (v[0] != '[' && memchr(v, ':', (size_t)(colon - v)))) {
		snprintf(err, errlen, "'%s' is not host:port or [IPv6]:port", v);
		return -1;
	}
	return 0;
}

static int parse_hostport(const struct key *k, const char *v, struct vr_config *cfg,
			  char *err, size_t errlen)
{
	if (*v != '\0' && check_hostport(v, err, errlen) < 0)
		return -1;
	return store_str(k, v, cfg, err, errlen);
}

/* "host:port, host:port ..." */
static int parse_hostport_list(const struct key *k, const char *v, struct vr_config *cfg,
			       char *err, size_t errlen)
{
	char item[300];

	for (const char *p = v; *p;) {
		size_t n = strcspn(p, ", ");
		if (n >= sizeof(item)) {
			snprintf(err, errlen, "address too long");
			return -1;
		}
		memcpy(item, p, n);
		item[n] = '\0';
		if (n && check_hostport(item, err, errlen) < 0)
			return -1;
		p += n + (p[n] != '\0');
	}
	return store_str(k, v, cfg, err, errlen);
}

static int parse_bool(const struct key *k, const char *v, struct vr_config *cfg, char *err,
		      size_t errlen)
{
	bool *b = (bool *)((char *)cfg + k->offset);

	if (strcmp(v, "yes") != 0 && strcmp(v, "no") != 0) {
		snprintf(err, errlen, "'%s' is not yes or no", v);
		return -1;
	}
	*b = v[0] == 'y';
	return 0;
}

/* One "address:port" we bind (port 0 for tests), or "" for none. */
static int parse_address(const struct key *k, const char *v, struct vr_config *cfg,
			 char *err, size_t errlen)
{
	struct vr_listen l;

	if (*v == '\0')
		return store_str(k, v, cfg, err, errlen);
	if (vr_config_parse_listen(v, &l, err, errlen) < 0)
		return -1;
	if (l.implicit_tls) {
		snprintf(err, errlen, "'%s': no TLS here", v);
		return -1;
	}
	return store_str(k, v, cfg, err, errlen);
}

/* glibc silently falls back to UTC for a zone it cannot find, which would
 * move every VPS's day boundary without a word: insist the zone exists. */
/* "" (the system's resolv.conf), "IP" or "IP@port": libunbound's forwarder
 * syntax, checked here so a typo names its line. */
static int parse_resolver(const struct key *k, const char *v, struct vr_config *cfg,
			  char *err, size_t errlen)
{
	char ip[INET6_ADDRSTRLEN];
	unsigned char bin[sizeof(struct in6_addr)];
	const char *at = strchr(v, '@');
	size_t n = at ? (size_t)(at - v) : strlen(v);
	uint16_t port;

	if (*v == '\0')
		return store_str(k, v, cfg, err, errlen);
	if (n >= sizeof(ip))
		goto bad;
	memcpy(ip, v, n);
	ip[n] = '\0';
	if (inet_pton(AF_INET, ip, bin) != 1 && inet_pton(AF_INET6, ip, bin) != 1)
		goto bad;
	if (at && parse_port(at + 1, &port, false) < 0)
		goto bad;
	return store_str(k, v, cfg, err, errlen);
bad:
	snprintf(err, errlen, "'%s': not IP or IP@port", v);
	return -1;
}

static int parse_timezone(const struct key *k, const char *v, struct vr_config *cfg,
			  char *err, size_t errlen)
{
	static const char tzchars[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-";
	char path[256];

	if (strcmp(v, "UTC") != 0) {
		if (*v == '\0' || *v == '/' || strstr(v, "..") || v[strspn(v, tzchars)]) {
			snprintf(err, errlen, "'%s' is not a time zone name", v);
			return -1;
		}
		snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", v);
		if (access(path, R_OK) != 0) {
			snprintf(err, errlen, "unknown time zone '%s' (no %s)", v, path);
			return -1;
		}
	}
	return store_str(k, v, cfg, err, errlen);
}

/* --- the inih glue --- */

static bool section_known(const char *name, size_t len)
{
	for (size_t i = 0; i < VR_ARRAY_SIZE(sections); i++)
		if (strlen(sections[i]) == len && memcmp(sections[i], name, len) == 0)
			return true;
	return false;
}

/* inih's reader: one line per call, see the opening comment. */
static char *reader(char *str, int num, void *arg)
{
	struct load *ld = arg;

	if (ld->failed)
		return NULL;
	ssize_t n = getline(&ld->line, &ld->linecap, ld->fp);
	if (n < 0)
		return NULL;
	ld->lineno++;
	char *p = ld->line;
	while (n && (p[n - 1] == '\n' || p[n - 1] == '\r'))
		n--;
	while (n && (*p == ' ' || *p == '\t'))
		p++, n--;
	if (n > (ssize_t)num - 2) {
		fail(ld, ld->lineno, "line too long (more than %d characters)", num - 2);
		return NULL;
	}
	if (*p == '[') {
		const char *close = memchr(p, ']', (size_t)n);
		if (close && !section_known(p + 1, (size_t)(close - p - 1))) {
			fail(ld, ld->lineno, "unknown section [%.*s]", (int)(close - p - 1), p + 1);
			return NULL;
		}
	}
	memcpy(str, p, (size_t)n);
	str[n] = '\n';
	str[n + 1] = '\0';
	return str;
}

static int handler(void *arg, const char *section, const char *name, const char *value)
{
	struct load *ld = arg;
	char why[256];

	if (*section == '\0') {
		fail(ld, ld->lineno, "key '%s' outside any section", name);
		return 0;
	}
	for (size_t i = 0; i < VR_ARRAY_SIZE(keys); i++) {
		const struct key *k = &keys[i];
		if (strcmp(k->section, section) != 0 || strcmp(k->name, name) != 0)
			continue;
		if (ld->seen[i]) {
			fail(ld, ld->lineno, "duplicate key '%s' in [%s] (first on line %u)", name,
			     section, ld->seen[i]);
			return 0;
		}
		ld->seen[i] = ld->lineno;
		if (k->parse(k, value, &ld->cfg, why, sizeof(why)) < 0) {
			fail(ld, ld->lineno, "'%s' in [%s]: %s", name, section, why);
			return 0;
		}
		return 1;
	}
	fail(ld, ld->lineno, "unknown key '%s' in [%s]", name, section);
	return 0;
}

static unsigned seen_line(const struct load *ld, const char *section, const char *name)
{
	for (size_t i = 0; i < VR_ARRAY_SIZE(keys); i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
			return ld->seen[i];
	return 0;
}

/* Rules between keys; a default never breaks one, so the line of whichever
 * key was set is the one to blame. */
static void check_all(struct load *ld)
{
	const struct vr_config *c = &ld->cfg;

	for (size_t i = 0; i < VR_ARRAY_SIZE(keys); i++)
		if (keys[i].required && !ld->seen[i])
			fail(ld, 0, "missing required key '%s' in [%s]", keys[i].name,
			     keys[i].section);
	if (c->per_day > c->per_day_max) {
		unsigned l = seen_line(ld, "limits", "per_day");
		fail(ld, l ? l : seen_line(ld, "limits", "per_day_max"),
		     "per_day %u is above per_day_max %u in [limits]", c->per_day, c->per_day_max);
	}
	if (!c->tls_cert[0] != !c->tls_key[0]) {
		const char *given = c->tls_cert[0] ? "cert" : "key";
		fail(ld, seen_line(ld, "tls", given), "[tls] has %s but not %s", given,
		     c->tls_cert[0] ? "key" : "cert");
	}
	if (c->cluster_lease_max < c->cluster_lease_min) {
		unsigned l = seen_line(ld, "cluster", "lease_max");
		fail(ld, l ? l : seen_line(ld, "cluster", "lease_min"),
		     "lease_max %u is below lease_min %u in [cluster]", c->cluster_lease_max,
		     c->cluster_lease_min);
	}
	if (c->redis[0] && c->cluster_sentinels[0])
		fail(ld, seen_line(ld, "cluster", "sentinels"),
		     "[cluster] has both redis and sentinels: give one");
	if (!c->cluster_sentinels[0] != !c->cluster_master_name[0]) {
		const char *given = c->cluster_sentinels[0] ? "sentinels" : "master_name";
		fail(ld, seen_line(ld, "cluster", given), "[cluster] has %s but not %s", given,
		     c->cluster_sentinels[0] ? "master_name" : "sentinels");
	}
	if (c->cluster_tls && !c->cluster_tls_ca[0])
		fail(ld, seen_line(ld, "cluster", "tls"), "[cluster] tls = yes needs tls_ca");
	if (!c->cluster_tls && (c->cluster_tls_ca[0] || c->cluster_tls_cert[0] ||
				c->cluster_tls_key[0] || c->cluster_tls_server_name[0]))
		fail(ld, seen_line(ld, "cluster", "tls_ca") ?: seen_line(ld, "cluster", "tls_cert")
			 ?: seen_line(ld, "cluster", "tls_key")
			 ?: seen_line(ld, "cluster", "tls_server_name"),
		     "[cluster] tls_* keys need tls = yes");
	if (!c->cluster_tls_cert[0] != !c->cluster_tls_key[0]) {
		const char *given = c->cluster_tls_cert[0] ? "tls_cert" : "tls_key";
		fail(ld, seen_line(ld, "cluster", given), "[cluster] has %s but not %s", given,
		     c->cluster_tls_cert[0] ? "tls_key" : "tls_cert");
	}
	if (c->retry_max_s < c->retry_first_s) {
		unsigned l = seen_line(ld, "delivery", "retry_max_s");
		fail(ld, l ? l : seen_line(ld, "delivery", "retry_first_s"),
		     "retry_max_s %u is below retry_first_s %u in [delivery]", c->retry_max_s,
		     c->retry_first_s);
	}
}

int vr_config_load(const char *path, struct vr_config *cfg, char *err, size_t errlen)
{
	struct load *ld = calloc(1, sizeof(*ld));
	int rc = -1;

	if (!ld) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	ld->path = path;
	ld->err = err;
	ld->errlen = errlen;
	vr_config_defaults(&ld->cfg);
	ld->fp = fopen(path, "re");
	if (!ld->fp) {
		fail(ld, 0, "%s", strerror(errno));
		goto out;
	}
	int line = ini_parse_stream(reader, ld, handler, ld);
	if (ferror(ld->fp))
		fail(ld, 0, "read error: %s", strerror(errno));
	/* inih reports syntax errors only through its return value, the
	 * first error line; ours, if any, cannot be earlier. */
	if (line > 0 && (!ld->failed || (unsigned)line < ld->lineno)) {
		ld->failed = false;
		fail(ld, (unsigned)line, "syntax error (expected [section] or key = value)");
	}
	if (!ld->failed)
		check_all(ld);
	if (!ld->failed) {
		*cfg = ld->cfg;
		rc = 0;
	}
out:
	if (ld->fp)
		fclose(ld->fp);
	free(ld->line);
	free(ld);
	return rc;
}
