/*
 * resolve.h - asynchronous DNS for delivery and the DNS wizard (libunbound).
 *
 * One resolver per thread: it is not thread-safe, and its callbacks run on
 * the thread that calls vr_resolver_process(). The delivery thread puts
 * vr_resolver_fd() in its epoll set, calls vr_resolver_process() when it is
 * readable or when vr_resolver_timeout_ms() has passed; the ctl thread, which
 * may block, uses vr_resolver_wait() instead.
 *
 * Queries:
 *   MX    the mail hosts of a domain, each resolved to its addresses, sorted by
 *         preference with random order within a preference; no MX falls back
 *         to the domain's own A/AAAA (RFC 5321 5.1); "0 ." alone is a null MX
 *         (RFC 7505).
 *   TLSA  _PORT._tcp.HOST with the DNSSEC verdict: only a secure answer counts
 *         for DANE (RFC 7672); a bogus one is a temporary failure.
 *   TXT, CNAME  for the DNS wizard.
 *
 * Ownership: each result is ONE heap block handed to the callback, which owns
 * it and releases it with vr_resolve_free() (pointers inside a result point
 * into the same block, so it may be cached or passed on as is). A callback
 * never runs inside the vr_resolve_*() call that started the query, only from
 * vr_resolver_process() / vr_resolver_wait(); it may start new queries.
 */
#ifndef VR_RESOLVE_H
#define VR_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define VR_DNS_NAME_MAX   253   /* presentation form, without the final dot */
#define VR_MX_MAX_HOSTS   16    /* MX hosts kept, lowest preferences first */
#define VR_MX_MAX_ADDRS   8     /* addresses kept per host: up to half A, half AAAA;
				 * A first */
#define VR_RESOLVE_WHY_MAX 384   /* room for a full name and the reason */

/*
 * What a lookup came to. Permanent: NXDOMAIN, NODATA, NULLMX. Temporary:
 * TEMPFAIL (SERVFAIL, REFUSED, timeout, DNSSEC bogus, out of memory): retry.
 */
enum vr_resolve_status {
	VR_RESOLVE_OK = 0,     /* records found */
	VR_RESOLVE_NODATA,     /* the name exists but has no record of the type;
				* MX: no MX and no A/AAAA, or no MX host has an
				* address and none failed temporarily */
	VR_RESOLVE_NXDOMAIN,   /* the name does not exist */
	VR_RESOLVE_NULLMX,     /* MX only: "0 ." - the domain accepts no mail; bounce */
	VR_RESOLVE_TEMPFAIL,
};

/* "ok", "nodata", "nxdomain", "nullmx", "tempfail". */
const char *vr_resolve_status_name(enum vr_resolve_status st);

struct vr_mx_host {
	char name[VR_DNS_NAME_MAX + 1];  /* lower case, no final dot */
	uint16_t pref;
	enum vr_resolve_status status;   /* of its address lookups (OK if any address) */
	bool secure;                     /* its A and AAAA answers both validated */
	unsigned n_addrs;
	struct sockaddr_storage addrs[VR_MX_MAX_ADDRS]; /* AF_INET/AF_INET6, port 0:
							 * the caller sets the port */
};

struct vr_mx_result {
	enum vr_resolve_status status;   /* OK when at least one host has an address */
	bool secure;                     /* the MX answer validated (DANE needs it) */
	bool implicit;                   /* no MX: hosts[0] is the domain itself */
	char why[VR_RESOLVE_WHY_MAX];    /* for a log line / DSN when not OK, e.g.
					  * "MX example.com: SERVFAIL" */
	unsigned n_hosts;
	struct vr_mx_host hosts[];       /* in the order to try them */
};

struct vr_tlsa_rr {
	uint8_t usage, selector, mtype;  /* RFC 6698 fields */
	uint16_t len;
	const uint8_t *data;             /* certificate association data */
};

struct vr_tlsa_result {
	enum vr_resolve_status status;   /* OK, NODATA, NXDOMAIN or TEMPFAIL (bogus too) */
	bool secure;                     /* validated; DANE applies only if OK && secure */
	char why[VR_RESOLVE_WHY_MAX];
	unsigned n;
	struct vr_tlsa_rr rr[];
};

struct vr_txt_rr {
	size_t len;
	const char *text;                /* the record's strings joined, NUL-terminated
					  * (a NUL inside: use len) */
};

struct vr_txt_result {
	enum vr_resolve_status status;
	bool secure;
	char why[VR_RESOLVE_WHY_MAX];
	unsigned n;
	struct vr_txt_rr rr[];
};

struct vr_cname_result {
	enum vr_resolve_status status;   /* NODATA: the name exists but is no CNAME */
	bool secure;
	char why[VR_RESOLVE_WHY_MAX];
	char target[VR_DNS_NAME_MAX + 1]; /* lower case, no final dot */
};

typedef void vr_resolve_mx_fn(void *arg, struct vr_mx_result *res);
typedef void vr_resolve_tlsa_fn(void *arg, struct vr_tlsa_result *res);
typedef void vr_resolve_txt_fn(void *arg, struct vr_txt_result *res);
typedef void vr_resolve_cname_fn(void *arg, struct vr_cname_result *res);

struct vr_resolver;

struct vr_resolver_conf {
	const char *server;       /* "" or NULL: /etc/resolv.conf; "IP" or "IP@port":
				   * ask that recursive server / forwarder only */
	const char *trust_anchor; /* "" or NULL: no DNSSEC validation (every answer
				   * insecure, so no DANE); else a file of DS/DNSKEY
				   * records, e.g. /usr/share/dns/root.key */
	unsigned timeout_ms;      /* per query, including the MX host lookups;
				   * 0 = 30000. Past it the query ends TEMPFAIL */
};

/* NULL with a message in err ("resolver '1.2.3': not an IP[@port]"). */
struct vr_resolver *vr_resolver_new(const struct vr_resolver_conf *conf, char *err,
				    size_t errlen);

/* Pending queries are dropped: their callbacks never run. NULL is a no-op. */
void vr_resolver_free(struct vr_resolver *r);

/* Readable when answers are waiting: then call vr_resolver_process(). */
int vr_resolver_fd(const struct vr_resolver *r);

/*
 * Runs the callbacks of every answer that has arrived and of every query past
 * its timeout. Never blocks. Returns the number of callbacks run, or a
 * negative errno if libunbound failed (the resolver is then unusable).
 */
int vr_resolver_process(struct vr_resolver *r);

/* Milliseconds until the earliest query timeout, 0 if one is due, -1 if none
 * is pending: the epoll_wait() timeout for the resolver. */
int vr_resolver_timeout_ms(const struct vr_resolver *r);

/* Queries started and not yet called back. */
unsigned vr_resolver_pending(const struct vr_resolver *r);

/*
 * For threads that may block (ctl): processes until no query is pending or
 * timeout_ms has passed. Returns the number still pending.
 */
unsigned vr_resolver_wait(struct vr_resolver *r, unsigned timeout_ms);

/*
 * Start a query. Names are presentation form, a final dot allowed. Return 0,
 * -EINVAL for a name that cannot be queried (empty, too long, empty label,
 * a label over 63 octets), or -ENOMEM / -EIO (libunbound refused it).
 */
int vr_resolve_mx(struct vr_resolver *r, const char *domain, vr_resolve_mx_fn *cb, void *arg);
int vr_resolve_tlsa(struct vr_resolver *r, const char *host, uint16_t port,
		    vr_resolve_tlsa_fn *cb, void *arg);
int vr_resolve_txt(struct vr_resolver *r, const char *name, vr_resolve_txt_fn *cb, void *arg);
int vr_resolve_cname(struct vr_resolver *r, const char *name, vr_resolve_cname_fn *cb,
		     void *arg);

/* Releases any result above. NULL is a no-op. */
void vr_resolve_free(void *res);

#endif
