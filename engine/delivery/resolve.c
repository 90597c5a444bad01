/*
 * resolve.c - the asynchronous resolver (resolve.h) on libunbound.
 *
 * A query is one struct query and the libunbound requests it has out, its
 * "subs": one for TLSA, TXT and CNAME; for MX the MX request, then an A and
 * an AAAA request per MX host (or for the domain itself when it has no MX).
 * Each sub carries the function that takes its answer. A query ends - its
 * callback runs, then it is freed - when its last sub has answered or its
 * deadline passes, whichever is first; at the deadline the subs still out
 * are cancelled and count as timed out.
 *
 * Pending queries sit in a list in the order they started, which is also
 * their deadline order because every query gets the same timeout: the head
 * is the only one vr_resolver_timeout_ms() and the expiry loop look at.
 *
 * libunbound resolves in a thread of its own (ub_ctx_async) and passes the
 * answers back through a pipe, ub_fd(); ub_process() runs our callbacks on
 * the caller's thread, so nothing here needs a lock.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unbound.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "vmrelay/clock.h"
#include "vmrelay/common.h"
#include "vmrelay/resolve.h"
#include "resolve_rdata.h"

enum { RR_A = 1, RR_CNAME = 5, RR_MX = 15, RR_TXT = 16, RR_AAAA = 28, RR_TLSA = 52 };
enum { CLASS_IN = 1 };
enum { RCODE_NXDOMAIN = 3 };

#define DEFAULT_TIMEOUT_MS 30000u
#define MAX_SUBS (1 + 2 * VR_MX_MAX_HOSTS)
#define WHAT_MAX (VR_DNS_NAME_MAX + 16)   /* "TLSA _25._tcp.name" */

struct query;
struct sub;

typedef void answer_fn(struct query *q, struct sub *s, int err, struct ub_result *res);

/* One libunbound request of a query. */
struct sub {
	struct query *q;
	answer_fn *answer;
	int ub_id;
	int host;                /* MX: index of the host it resolves */
	int rrtype;
	bool live;
};

/* Per MX host: what its A (0) and AAAA (1) answers said. */
struct host_state {
	enum vr_resolve_status st[2];
	bool secure[2];
	uint32_t rnd;            /* shuffles hosts of one preference */
};

struct query {
	struct query *prev, *next;
	struct vr_resolver *r;
	uint64_t deadline;
	void (*deliver)(struct query *q);
	void *cb;                /* the caller's vr_resolve_*_fn */
	void *arg;
	void *res;               /* the result being built; handed over at the end */
	enum vr_resolve_status status;   /* the query's own answer, copied into */
	bool secure;                     /* res when it is handed over */
	char why[VR_RESOLVE_WHY_MAX];
	unsigned n_subs, live;
	struct sub subs[MAX_SUBS];
	struct host_state hosts[VR_MX_MAX_HOSTS];   /* MX only */
	char first_fail[VR_RESOLVE_WHY_MAX];         /* MX: first host failure */
	char what[WHAT_MAX];                         /* "MX example.com", for why */
	char name[VR_DNS_NAME_MAX + 1];
};

struct vr_resolver {
	struct ub_ctx *ctx;
	unsigned timeout_ms;
	struct query *head, *tail;   /* oldest first = earliest deadline first */
	unsigned pending;
	unsigned delivered;          /* callbacks run, counted for vr_resolver_process */
	uint64_t rng;
};

/* --- small helpers --- */

static const char *const status_names[] = {
	[VR_RESOLVE_OK] = "ok",
	[VR_RESOLVE_NODATA] = "nodata",
	[VR_RESOLVE_NXDOMAIN] = "nxdomain",
	[VR_RESOLVE_NULLMX] = "nullmx",
	[VR_RESOLVE_TEMPFAIL] = "tempfail",
};

const char *vr_resolve_status_name(enum vr_resolve_status st)
{
	if ((unsigned)st >= VR_ARRAY_SIZE(status_names))
		return "unknown";
	return status_names[st];
}

static const char *const rcode_names[] = {
	"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
};

/* xorshift64*: shuffling equal MX preferences needs spread, not secrecy. */
static uint32_t next_rand(struct vr_resolver *r)
{
	r->rng ^= r->rng >> 12;
	r->rng ^= r->rng << 25;
	r->rng ^= r->rng >> 27;
	return (uint32_t)((r->rng * 0x2545f4914f6cdd1dull) >> 32);
}

/*
 * A name we are asked to look up into out: lower case, no final dot. Only
 * letters, digits, '-' and '_' in labels of 1 to 63 octets: what domains in
 * mail addresses (A-labels for IDNs) and the wizard's _labels are made of.
 */
static int name_check(const char *name, char out[VR_DNS_NAME_MAX + 1])
{
	size_t n = name ? strlen(name) : 0, label = 0;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n > VR_DNS_NAME_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (c == '.') {
			if (label == 0)
				return -EINVAL;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			   c == '_') {
			label++;
		} else if (c >= 'A' && c <= 'Z') {
			c = (char)(c + 32);
			label++;
		} else {
			return -EINVAL;
		}
		if (label > 63)
			return -EINVAL;
		out[i] = c;
	}
	out[n] = '\0';
	return 0;
}

/* What an answer says, and for anything but OK a line for logs and DSNs. */
static enum vr_resolve_status classify(const char *what, int err, const struct ub_result *res,
				       char *why, size_t whylen)
{
	if (err != 0 || res == NULL) {
		snprintf(why, whylen, "%s: %s", what, ub_strerror(err));
		return VR_RESOLVE_TEMPFAIL;
	}
	/* RFC 7672 2.1.1: a bogus answer is a failure to retry, never "none". */
	if (res->bogus) {
		snprintf(why, whylen, "%s: DNSSEC validation failed (%s)", what,
			 res->why_bogus ? res->why_bogus : "no reason given");
		return VR_RESOLVE_TEMPFAIL;
	}
	if (res->rcode == RCODE_NXDOMAIN) {
		snprintf(why, whylen, "%s: no such domain", what);
		return VR_RESOLVE_NXDOMAIN;
	}
	if (res->rcode != 0) {
		if ((size_t)res->rcode < VR_ARRAY_SIZE(rcode_names))
			snprintf(why, whylen, "%s: %s", what, rcode_names[res->rcode]);
		else
			snprintf(why, whylen, "%s: rcode %d", what, res->rcode);
		return VR_RESOLVE_TEMPFAIL;
	}
	if (!res->havedata) {
		snprintf(why, whylen, "%s: no record", what);
		return VR_RESOLVE_NODATA;
	}
	return VR_RESOLVE_OK;
}

/* --- the query list --- */

static void link_query(struct vr_resolver *r, struct query *q)
{
	q->prev = r->tail;
	q->next = NULL;
	if (r->tail)
		r->tail->next = q;
	else
		r->head = q;
	r->tail = q;
	r->pending++;
}

static void unlink_query(struct vr_resolver *r, struct query *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		r->head = q->next;
	if (q->next)
		q->next->prev = q->prev;
	else
		r->tail = q->prev;
	r->pending--;
}

/* Hands the result to the caller and frees the query. Unlinked first, so
 * the callback sees a consistent resolver and may start new queries. */
static void finish(struct query *q)
{
	struct vr_resolver *r = q->r;

	unlink_query(r, q);
	r->delivered++;
	q->deliver(q);
	free(q);
}

static void on_answer(void *data, int err, struct ub_result *res)
{
	struct sub *s = data;
	struct query *q = s->q;

	s->live = false;
	q->live--;
	s->answer(q, s, err, res);
	if (res)
		ub_resolve_free(res);
	if (q->live == 0)
		finish(q);
}

static int ub_errno(int rc)
{
	return rc == UB_NOMEM ? -ENOMEM : -EIO;
}

static int sub_start(struct query *q, const char *name, int rrtype, int host, answer_fn *fn)
{
	struct sub *s = &q->subs[q->n_subs];
	int rc;

	s->q = q;
	s->answer = fn;
	s->host = host;
	s->rrtype = rrtype;
	rc = ub_resolve_async(q->r->ctx, name, rrtype, CLASS_IN, s, on_answer, &s->ub_id);
	if (rc != 0)
		return ub_errno(rc);
	s->live = true;
	q->n_subs++;
	q->live++;
	return 0;
}

static struct query *query_new(struct vr_resolver *r, const char *name, const char *type,
			       size_t res_size)
{
	struct query *q = calloc(1, sizeof(*q));

	if (q == NULL)
		return NULL;
	if (name_check(name, q->name) < 0) {
		free(q);
		errno = EINVAL;
		return NULL;
	}
	q->res = calloc(1, res_size);
	if (q->res == NULL) {
		free(q);
		errno = ENOMEM;
		return NULL;
	}
	q->r = r;
	snprintf(q->what, sizeof(q->what), "%s %s", type, q->name);
	return q;
}

/* Starts q's first request; on failure nothing of q remains. */
static int query_start(struct query *q, int rrtype, answer_fn *fn)
{
	struct vr_resolver *r = q->r;
	int rc = sub_start(q, q->name, rrtype, -1, fn);

	if (rc < 0) {
		free(q->res);
		free(q);
		return rc;
	}
	q->deadline = vr_clock_ms() + r->timeout_ms;
	link_query(r, q);
	return 0;
}

/* --- MX --- */

static void mx_deliver(struct query *q)
{
	struct vr_mx_result *mx = q->res;
	bool any_temp = false;

	mx->status = q->status;
	mx->secure = q->secure;
	snprintf(mx->why, sizeof(mx->why), "%s", q->why);

	for (unsigned h = 0; h < mx->n_hosts; h++) {
		struct vr_mx_host *host = &mx->hosts[h];
		struct host_state *hs = &q->hosts[h];

		host->secure = hs->secure[0] && hs->secure[1];
		if (host->n_addrs > 0)
			host->status = VR_RESOLVE_OK;
		else if (hs->st[0] == VR_RESOLVE_TEMPFAIL || hs->st[1] == VR_RESOLVE_TEMPFAIL)
			host->status = VR_RESOLVE_TEMPFAIL;
		else if (hs->st[0] == VR_RESOLVE_NXDOMAIN && hs->st[1] == VR_RESOLVE_NXDOMAIN)
			host->status = VR_RESOLVE_NXDOMAIN;
		else
			host->status = VR_RESOLVE_NODATA;
		if (host->status == VR_RESOLVE_OK)
			mx->status = VR_RESOLVE_OK;
		any_temp |= host->status == VR_RESOLVE_TEMPFAIL;
	}
	/* With hosts asked for, their answers decide. */
	if (mx->n_hosts > 0 && mx->status != VR_RESOLVE_OK) {
		if (any_temp) {
			mx->status = VR_RESOLVE_TEMPFAIL;
			snprintf(mx->why, sizeof(mx->why), "%s", q->first_fail);
		} else {
			mx->status = VR_RESOLVE_NODATA;
			snprintf(mx->why, sizeof(mx->why), mx->implicit ?
				 "%s has no MX and no address" : "no MX host of %s has an address",
				 q->name);
		}
	}
	if (mx->status == VR_RESOLVE_OK)
		mx->why[0] = '\0';
	((vr_resolve_mx_fn *)q->cb)(q->arg, mx);
}

static void addr_answer(struct query *q, struct sub *s, int err, struct ub_result *res)
{
	struct vr_mx_result *mx = q->res;
	struct vr_mx_host *host = &mx->hosts[s->host];
	struct host_state *hs = &q->hosts[s->host];
	int fam = s->rrtype == RR_AAAA;
	size_t want = fam ? 16 : 4;
	unsigned taken = 0;
	char what[WHAT_MAX], why[VR_RESOLVE_WHY_MAX];

	snprintf(what, sizeof(what), "%s %s", fam ? "AAAA" : "A", host->name);
	hs->st[fam] = classify(what, err, res, why, sizeof(why));
	if (hs->st[fam] == VR_RESOLVE_TEMPFAIL && q->first_fail[0] == '\0')
		snprintf(q->first_fail, sizeof(q->first_fail), "%s", why);
	/* a validated "no AAAA" is as secure as a validated AAAA */
	if (hs->st[fam] != VR_RESOLVE_TEMPFAIL)
		hs->secure[fam] = res->secure;
	if (hs->st[fam] != VR_RESOLVE_OK)
		return;
	/* Half the slots per family, so a host's many AAAA never crowd out
	 * its A records (or the reverse), whichever answer comes first. */
	for (int i = 0; res->data[i] && taken < VR_MX_MAX_ADDRS / 2; i++) {
		struct sockaddr_storage *ss = &host->addrs[host->n_addrs];

		if ((size_t)res->len[i] != want)
			continue;
		memset(ss, 0, sizeof(*ss));
		if (fam) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
			sin6->sin6_family = AF_INET6;
			memcpy(&sin6->sin6_addr, res->data[i], 16);
		} else {
			struct sockaddr_in *sin = (struct sockaddr_in *)ss;
			sin->sin_family = AF_INET;
			memcpy(&sin->sin_addr, res->data[i], 4);
		}
		host->n_addrs++;
		taken++;
	}
	/* IPv4 first: the AAAA answer may have come first. */
	if (!fam && host->n_addrs > taken) {
		struct sockaddr_storage tmp[VR_MX_MAX_ADDRS];
		unsigned v6 = host->n_addrs - taken;

		memcpy(tmp, host->addrs, v6 * sizeof(tmp[0]));
		memmove(host->addrs, host->addrs + v6, taken * sizeof(tmp[0]));
		memcpy(host->addrs + taken, tmp, v6 * sizeof(tmp[0]));
	}
}

/*
 * Adds an MX host in (preference, random) order, keeping the best
 * VR_MX_MAX_HOSTS; a host listed twice keeps its best preference.
 */
static void mx_add(struct query *q, uint16_t pref, const char *name)
{
	struct vr_mx_result *mx = q->res;
	uint32_t rnd = next_rand(q->r);
	unsigned pos, n = mx->n_hosts;

	for (unsigned i = 0; i < n; i++) {
		if (strcmp(mx->hosts[i].name, name) != 0)
			continue;
		if (mx->hosts[i].pref <= pref)
			return;
		memmove(&mx->hosts[i], &mx->hosts[i + 1], (n - i - 1) * sizeof(mx->hosts[0]));
		memmove(&q->hosts[i], &q->hosts[i + 1], (n - i - 1) * sizeof(q->hosts[0]));
		n--;
		break;
	}
	for (pos = 0; pos < n; pos++)
		if (pref < mx->hosts[pos].pref ||
		    (pref == mx->hosts[pos].pref && rnd < q->hosts[pos].rnd))
			break;
	if (pos == VR_MX_MAX_HOSTS)
		return;
	if (n == VR_MX_MAX_HOSTS)
		n--;
	memmove(&mx->hosts[pos + 1], &mx->hosts[pos], (n - pos) * sizeof(mx->hosts[0]));
	memmove(&q->hosts[pos + 1], &q->hosts[pos], (n - pos) * sizeof(q->hosts[0]));
	memset(&mx->hosts[pos], 0, sizeof(mx->hosts[0]));
	snprintf(mx->hosts[pos].name, sizeof(mx->hosts[pos].name), "%s", name);
	mx->hosts[pos].pref = pref;
	q->hosts[pos].rnd = rnd;
	mx->n_hosts = n + 1;
}

static void mx_resolve_hosts(struct query *q)
{
	struct vr_mx_result *mx = q->res;

	for (unsigned h = 0; h < mx->n_hosts; h++) {
		static const int types[2] = { RR_A, RR_AAAA };

		for (int fam = 0; fam < 2; fam++) {
			q->hosts[h].st[fam] = VR_RESOLVE_TEMPFAIL;  /* until it answers */
			if (sub_start(q, mx->hosts[h].name, types[fam], (int)h, addr_answer) < 0 &&
			    q->first_fail[0] == '\0')
				snprintf(q->first_fail, sizeof(q->first_fail),
					 "%s %s: cannot start the query", fam ? "AAAA" : "A",
					 mx->hosts[h].name);
		}
	}
}

static void mx_answer(struct query *q, struct sub *s, int err, struct ub_result *res)
{
	struct vr_mx_result *mx = q->res;
	int n_rr = 0;

	q->status = classify(q->what, err, res, q->why, sizeof(q->why));
	if (q->status == VR_RESOLVE_NODATA) {
		/* RFC 5321 5.1: no MX, so the domain is its own mail host. */
		mx->implicit = true;
		q->secure = res->secure;
		mx_add(q, 0, q->name);
		mx_resolve_hosts(q);
		return;
	}
	if (q->status != VR_RESOLVE_OK)
		return;
	q->secure = res->secure;
	for (int i = 0; res->data[i]; i++) {
		uint16_t pref;
		char name[VR_DNS_NAME_MAX + 1];

		n_rr++;
		if (vr_rdata_mx((const uint8_t *)res->data[i], (size_t)res->len[i], &pref,
				name) < 0)
			continue;
		/* RFC 7505 3: "0 ." alone says the domain takes no mail. */
		if (name[0] == '\0') {
			if (pref == 0 && res->data[1] == NULL) {
				q->status = VR_RESOLVE_NULLMX;
				snprintf(q->why, sizeof(q->why),
					 "%s: null MX, the domain accepts no mail", q->what);
				return;
			}
			continue;
		}
		mx_add(q, pref, name);
	}
	if (mx->n_hosts == 0) {
		q->status = VR_RESOLVE_NODATA;
		snprintf(q->why, sizeof(q->why), "%s: none of its %d MX records is usable",
			 q->what, n_rr);
		return;
	}
	q->status = VR_RESOLVE_NODATA;   /* until a host has an address */
	mx_resolve_hosts(q);
}

int vr_resolve_mx(struct vr_resolver *r, const char *domain, vr_resolve_mx_fn *cb, void *arg)
{
	struct query *q = query_new(r, domain, "MX", sizeof(struct vr_mx_result) +
				    VR_MX_MAX_HOSTS * sizeof(struct vr_mx_host));

	if (q == NULL)
		return -errno;
	q->deliver = mx_deliver;
	q->cb = (void *)cb;
	q->arg = arg;
	return query_start(q, RR_MX, mx_answer);
}

/* --- TLSA, TXT, CNAME: one request, one answer --- */

/* Sets q's status from the answer; true if it has records to decode. */
static bool simple_head(struct query *q, int err, struct ub_result *res)
{
	q->status = classify(q->what, err, res, q->why, sizeof(q->why));
	if (q->status != VR_RESOLVE_TEMPFAIL && res)
		q->secure = res->secure;
	return q->status == VR_RESOLVE_OK;
}

/* Replaces q->res (head bytes of it kept) with a zeroed block of size;
 * false, and the query a TEMPFAIL, without memory. */
static bool simple_grow(struct query *q, size_t head, size_t size)
{
	void *n = calloc(1, size);

	if (n == NULL) {
		q->status = VR_RESOLVE_TEMPFAIL;
		snprintf(q->why, sizeof(q->why), "%s: out of memory", q->what);
		return false;
	}
	memcpy(n, q->res, head);
	free(q->res);
	q->res = n;
	return true;
}

static void tlsa_answer(struct query *q, struct sub *s, int err, struct ub_result *res)
{
	size_t n = 0, bytes = 0;
	struct vr_tlsa_result *t;
	uint8_t *data;

	if (!simple_head(q, err, res))
		return;
	for (int i = 0; res->data[i]; i++, n++)
		bytes += (size_t)res->len[i];
	if (!simple_grow(q, sizeof(*t), sizeof(*t) + n * sizeof(t->rr[0]) + bytes))
		return;
	t = q->res;
	data = (uint8_t *)&t->rr[n];
	for (int i = 0; res->data[i]; i++) {
		struct vr_tlsa_rr *rr = &t->rr[t->n];

		if (vr_rdata_tlsa((const uint8_t *)res->data[i], (size_t)res->len[i], rr) < 0)
			continue;
		memcpy(data, rr->data, rr->len);
		rr->data = data;
		data += rr->len;
		t->n++;
	}
	if (t->n == 0) {
		q->status = VR_RESOLVE_NODATA;
		snprintf(q->why, sizeof(q->why), "%s: no well-formed TLSA record", q->what);
	}
}

static void txt_answer(struct query *q, struct sub *s, int err, struct ub_result *res)
{
	size_t n = 0, bytes = 0;
	struct vr_txt_result *t;
	char *text;

	if (!simple_head(q, err, res))
		return;
	for (int i = 0; res->data[i]; i++, n++)
		bytes += (size_t)res->len[i] + 1;
	if (!simple_grow(q, sizeof(*t), sizeof(*t) + n * sizeof(t->rr[0]) + bytes))
		return;
	t = q->res;
	text = (char *)&t->rr[n];
	for (int i = 0; res->data[i]; i++) {
		size_t cap = (size_t)res->len[i] + 1;
		long len = vr_rdata_txt((const uint8_t *)res->data[i], (size_t)res->len[i], text,
					cap);
		if (len < 0)
			continue;
		t->rr[t->n].text = text;
		t->rr[t->n].len = (size_t)len;
		t->n++;
		text += len + 1;
	}
	if (t->n == 0) {
		q->status = VR_RESOLVE_NODATA;
		snprintf(q->why, sizeof(q->why), "%s: no well-formed TXT record", q->what);
	}
}

static void cname_answer(struct query *q, struct sub *s, int err, struct ub_result *res)
{
	struct vr_cname_result *c = q->res;

	if (!simple_head(q, err, res))
		return;
	if (vr_rdata_name((const uint8_t *)res->data[0], (size_t)res->len[0], c->target) !=
	    res->len[0]) {
		q->status = VR_RESOLVE_NODATA;
		c->target[0] = '\0';
		snprintf(q->why, sizeof(q->why), "%s: the target is no host name", q->what);
	}
}

/* Copies the query's status into a simple result. */
#define SET_HEAD(res, q) do { \
	(res)->status = (q)->status; \
	(res)->secure = (q)->secure; \
	memcpy((res)->why, (q)->why, sizeof((res)->why)); \
} while (0)

static void tlsa_deliver(struct query *q)
{
	struct vr_tlsa_result *t = q->res;

	SET_HEAD(t, q);
	((vr_resolve_tlsa_fn *)q->cb)(q->arg, t);
}

static void txt_deliver(struct query *q)
{
	struct vr_txt_result *t = q->res;

	SET_HEAD(t, q);
	((vr_resolve_txt_fn *)q->cb)(q->arg, t);
}

static void cname_deliver(struct query *q)
{
	struct vr_cname_result *c = q->res;

	SET_HEAD(c, q);
	((vr_resolve_cname_fn *)q->cb)(q->arg, c);
}

static int simple_start(struct vr_resolver *r, const char *name, const char *type, int rrtype,
			size_t size, answer_fn *answer, void (*deliver)(struct query *),
			void *cb, void *arg)
{
	struct query *q = query_new(r, name, type, size);

	if (q == NULL)
		return -errno;
	q->deliver = deliver;
	q->cb = cb;
	q->arg = arg;
	return query_start(q, rrtype, answer);
}

int vr_resolve_tlsa(struct vr_resolver *r, const char *host, uint16_t port,
		    vr_resolve_tlsa_fn *cb, void *arg)
{
	char name[VR_DNS_NAME_MAX + 2];

	if (host == NULL || snprintf(name, sizeof(name), "_%u._tcp.%s", port, host) >=
	    (int)sizeof(name))
		return -EINVAL;
	return simple_start(r, name, "TLSA", RR_TLSA, sizeof(struct vr_tlsa_result),
			    tlsa_answer, tlsa_deliver, (void *)cb, arg);
}

int vr_resolve_txt(struct vr_resolver *r, const char *name, vr_resolve_txt_fn *cb, void *arg)
{
	return simple_start(r, name, "TXT", RR_TXT, sizeof(struct vr_txt_result), txt_answer,
			    txt_deliver, (void *)cb, arg);
}

int vr_resolve_cname(struct vr_resolver *r, const char *name, vr_resolve_cname_fn *cb,
		     void *arg)
{
	return simple_start(r, name, "CNAME", RR_CNAME, sizeof(struct vr_cname_result),
			    cname_answer, cname_deliver, (void *)cb, arg);
}

void vr_resolve_free(void *res)
{
	free(res);
}

/* --- timeouts --- */

/* The deadline passed: what is still out counts as timed out. */
static void expire(struct query *q)
{
	struct vr_resolver *r = q->r;

	for (unsigned i = 0; i < q->n_subs; i++) {
		struct sub *s = &q->subs[i];

		if (!s->live)
			continue;
		ub_cancel(r->ctx, s->ub_id);
		s->live = false;
		q->live--;
		if (s->answer == addr_answer) {
			if (q->first_fail[0] == '\0')
				snprintf(q->first_fail, sizeof(q->first_fail),
					 "%s %s: no answer within %u ms",
					 s->rrtype == RR_AAAA ? "AAAA" : "A",
					 ((struct vr_mx_result *)q->res)->hosts[s->host].name,
					 r->timeout_ms);
		} else {
			q->status = VR_RESOLVE_TEMPFAIL;
			snprintf(q->why, sizeof(q->why), "%s: no answer within %u ms", q->what,
				 r->timeout_ms);
		}
	}
	finish(q);
}

/* --- the resolver --- */

/* "IP" or "IP@port", the forms ub_ctx_set_fwd() takes. */
static int server_check(const char *s)
{
	char ip[INET6_ADDRSTRLEN];
	unsigned char bin[sizeof(struct in6_addr)];
	const char *at = strchr(s, '@');
	size_t n = at ? (size_t)(at - s) : strlen(s);

	if (n == 0 || n >= sizeof(ip))
		return -1;
	memcpy(ip, s, n);
	ip[n] = '\0';
	if (inet_pton(AF_INET, ip, bin) != 1 && inet_pton(AF_INET6, ip, bin) != 1)
		return -1;
	if (at) {
		char *end;
		unsigned long port = strtoul(at + 1, &end, 10);
		if (at[1] < '0' || at[1] > '9' || *end != '\0' || port == 0 || port > 65535)
			return -1;
	}
	return 0;
}

static int ctx_setup(struct vr_resolver *r, const struct vr_resolver_conf *conf, char *err,
		     size_t errlen)
{
	const char *server = conf->server ? conf->server : "";
	const char *ta = conf->trust_anchor ? conf->trust_anchor : "";
	int rc;

	/* A thread, not the default forked process: we live in a threaded relay. */
	if ((rc = ub_ctx_async(r->ctx, 1)) != 0)
		goto ub_fail;
	/* The operator named this server, or resolv.conf does: a local
	 * recursive server on 127.0.0.1 is the common case, not an error. */
	if ((rc = ub_ctx_set_option(r->ctx, "do-not-query-localhost:", "no")) != 0)
		goto ub_fail;
	/* A queue run at start asks for thousands of domains at once, and
	 * libunbound as a library keeps 16 queries out (outgoing-range 16):
	 * 2000 MX lookups took 14 s. 1024 took 1.3 s, as fast as 4096 and
	 * with a quarter of the sockets at most. */
	if ((rc = ub_ctx_set_option(r->ctx, "outgoing-range:", "1024")) != 0 ||
	    (rc = ub_ctx_set_option(r->ctx, "num-queries-per-thread:", "4096")) != 0)
		goto ub_fail;
	if (*server == '\0') {
		if ((rc = ub_ctx_resolvconf(r->ctx, NULL)) != 0) {
			snprintf(err, errlen, "resolver: cannot read /etc/resolv.conf: %s",
				 ub_strerror(rc));
			return -1;
		}
	} else {
		if (server_check(server) < 0) {
			snprintf(err, errlen, "resolver '%s': not IP or IP@port", server);
			return -1;
		}
		if ((rc = ub_ctx_set_fwd(r->ctx, server)) != 0)
			goto ub_fail;
	}
	if (*ta != '\0') {
		/* libunbound reads the file only at the first query: check it now,
		 * so a wrong path is a start-up error and not silent DANE loss. */
		FILE *f = fopen(ta, "r");
		if (f == NULL) {
			snprintf(err, errlen, "trust anchor '%s': %s", ta, strerror(errno));
			return -1;
		}
		fclose(f);
		if ((rc = ub_ctx_add_ta_file(r->ctx, ta)) != 0)
			goto ub_fail;
	}
	return 0;
ub_fail:
	snprintf(err, errlen, "resolver: libunbound: %s", ub_strerror(rc));
	return -1;
}

struct vr_resolver *vr_resolver_new(const struct vr_resolver_conf *conf, char *err,
				    size_t errlen)
{
	struct vr_resolver *r = calloc(1, sizeof(*r));

	if (r == NULL || (r->ctx = ub_ctx_create()) == NULL) {
		snprintf(err, errlen, "resolver: out of memory");
		free(r);
		return NULL;
	}
	if (ctx_setup(r, conf, err, errlen) < 0) {
		vr_resolver_free(r);
		return NULL;
	}
	r->timeout_ms = conf->timeout_ms ? conf->timeout_ms : DEFAULT_TIMEOUT_MS;
	if (getrandom(&r->rng, sizeof(r->rng), GRND_NONBLOCK) != sizeof(r->rng))
		r->rng = vr_clock_wall_us();
	r->rng |= 1;   /* xorshift never leaves 0 */
	return r;
}

void vr_resolver_free(struct vr_resolver *r)
{
	if (r == NULL)
		return;
	/* Stops libunbound's thread first: no callback may run after this. */
	ub_ctx_delete(r->ctx);
	while (r->head) {
		struct query *q = r->head;
		unlink_query(r, q);
		free(q->res);
		free(q);
	}
	free(r);
}

int vr_resolver_fd(const struct vr_resolver *r)
{
	return ub_fd(r->ctx);
}

int vr_resolver_process(struct vr_resolver *r)
{
	uint64_t now;

	r->delivered = 0;
	if (ub_poll(r->ctx)) {
		int rc = ub_process(r->ctx);
		if (rc != 0)
			return ub_errno(rc);
	}
	now = vr_clock_ms();
	while (r->head && r->head->deadline <= now)
		expire(r->head);
	return (int)r->delivered;
}

int vr_resolver_timeout_ms(const struct vr_resolver *r)
{
	uint64_t now = vr_clock_ms();

	if (r->head == NULL)
		return -1;
	if (r->head->deadline <= now)
		return 0;
	return (int)VR_MIN(r->head->deadline - now, (uint64_t)INT_MAX);
}

unsigned vr_resolver_pending(const struct vr_resolver *r)
{
	return r->pending;
}

unsigned vr_resolver_wait(struct vr_resolver *r, unsigned timeout_ms)
{
	uint64_t end = vr_clock_ms() + timeout_ms;

	while (r->pending > 0) {
		uint64_t now = vr_clock_ms();
		struct pollfd pfd = { .fd = vr_resolver_fd(r), .events = POLLIN };
		int wait, due = vr_resolver_timeout_ms(r);

		if (now >= end)
			break;
		wait = (int)VR_MIN(end - now, (uint64_t)INT_MAX);
		if (due >= 0 && due < wait)
			wait = due;
		if (poll(&pfd, 1, wait) < 0 && errno != EINTR)
			break;
		if (vr_resolver_process(r) < 0)
			break;
	}
	return r->pending;
}
