/*
 * vmrelay-dns - the resolver (resolve.h) from the command line, for the
 * end-to-end tests and for an operator asking "what does the relay see?".
 *
 *   vmrelay-dns [-s IP[@PORT]] [-a TRUST_ANCHOR] [-t TIMEOUT_MS] TYPE NAME ...
 *
 * TYPE is mx, tlsa (NAME is the host; port 25), txt or cname. Every query is
 * started at once, so they are all in flight together; then one JSON object
 * per query is printed, one a line, in the order given. Exit 0 when every
 * query was answered (whatever the answer), 1 if the resolver failed, 2 on
 * bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "vmrelay/common.h"
#include "vmrelay/resolve.h"

/* One query's output line, filled by its callback. */
struct slot {
	json_t *out;
};

static json_t *head(const char *type, enum vr_resolve_status st, bool secure, const char *why)
{
	return json_pack("{s:s, s:s, s:b, s:s}", "type", type, "status",
			 vr_resolve_status_name(st), "secure", secure, "why", why);
}

static json_t *addr_text(const struct sockaddr_storage *ss)
{
	char text[INET6_ADDRSTRLEN];
	const void *a = ss->ss_family == AF_INET ?
		(const void *)&((const struct sockaddr_in *)ss)->sin_addr :
		(const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;

	inet_ntop(ss->ss_family, a, text, sizeof(text));
	return json_string(text);
}

static void on_mx(void *arg, struct vr_mx_result *res)
{
	struct slot *slot = arg;
	json_t *o = head("mx", res->status, res->secure, res->why), *hosts = json_array();

	for (unsigned h = 0; h < res->n_hosts; h++) {
		const struct vr_mx_host *host = &res->hosts[h];
		json_t *addrs = json_array();

		for (unsigned i = 0; i < host->n_addrs; i++)
			json_array_append_new(addrs, addr_text(&host->addrs[i]));
		json_array_append_new(hosts, json_pack("{s:s, s:i, s:s, s:b, s:o}",
			"name", host->name, "pref", host->pref,
			"status", vr_resolve_status_name(host->status), "secure", host->secure,
			"addrs", addrs));
	}
	json_object_set_new(o, "implicit", json_boolean(res->implicit));
	json_object_set_new(o, "hosts", hosts);
	slot->out = o;
	vr_resolve_free(res);
}

static void on_tlsa(void *arg, struct vr_tlsa_result *res)
{
	struct slot *slot = arg;
	json_t *o = head("tlsa", res->status, res->secure, res->why), *rrs = json_array();

	for (unsigned i = 0; i < res->n; i++) {
		const struct vr_tlsa_rr *rr = &res->rr[i];
		char hex[2 * UINT16_MAX + 1];

		for (unsigned j = 0; j < rr->len; j++)
			snprintf(hex + 2 * j, 3, "%02x", rr->data[j]);
		hex[2 * rr->len] = '\0';
		json_array_append_new(rrs, json_pack("{s:i, s:i, s:i, s:s}", "usage", rr->usage,
			"selector", rr->selector, "mtype", rr->mtype, "data", hex));
	}
	json_object_set_new(o, "records", rrs);
	slot->out = o;
	vr_resolve_free(res);
}

static void on_txt(void *arg, struct vr_txt_result *res)
{
	struct slot *slot = arg;
	json_t *o = head("txt", res->status, res->secure, res->why), *rrs = json_array();

	for (unsigned i = 0; i < res->n; i++)
		json_array_append_new(rrs, json_stringn(res->rr[i].text, res->rr[i].len));
	json_object_set_new(o, "records", rrs);
	slot->out = o;
	vr_resolve_free(res);
}

static void on_cname(void *arg, struct vr_cname_result *res)
{
	struct slot *slot = arg;
	json_t *o = head("cname", res->status, res->secure, res->why);

	json_object_set_new(o, "target", json_string(res->target));
	slot->out = o;
	vr_resolve_free(res);
}

static int start(struct vr_resolver *r, const char *type, const char *name, struct slot *slot)
{
	if (strcmp(type, "mx") == 0)
		return vr_resolve_mx(r, name, on_mx, slot);
	if (strcmp(type, "tlsa") == 0)
		return vr_resolve_tlsa(r, name, 25, on_tlsa, slot);
	if (strcmp(type, "txt") == 0)
		return vr_resolve_txt(r, name, on_txt, slot);
	if (strcmp(type, "cname") == 0)
		return vr_resolve_cname(r, name, on_cname, slot);
	return -EPROTONOSUPPORT;
}

static int usage(void)
{
	fprintf(stderr, "usage: vmrelay-dns [-s IP[@PORT]] [-a TRUST_ANCHOR] [-t TIMEOUT_MS] "
		"mx|tlsa|txt|cname NAME ...\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct vr_resolver_conf conf = { 0 };
	struct vr_resolver *r;
	struct slot *slots;
	char err[256];
	int c, n, rc = 0;

	while ((c = getopt(argc, argv, "s:a:t:")) != -1) {
		switch (c) {
		case 's': conf.server = optarg; break;
		case 'a': conf.trust_anchor = optarg; break;
		case 't': conf.timeout_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		default: return usage();
		}
	}
	n = (argc - optind) / 2;
	if (n == 0 || (argc - optind) % 2 != 0)
		return usage();
	r = vr_resolver_new(&conf, err, sizeof(err));
	if (r == NULL) {
		fprintf(stderr, "vmrelay-dns: %s\n", err);
		return 1;
	}
	slots = calloc((size_t)n, sizeof(*slots));
	if (slots == NULL)
		return 1;
	for (int i = 0; i < n; i++) {
		const char *type = argv[optind + 2 * i], *name = argv[optind + 2 * i + 1];
		int e = start(r, type, name, &slots[i]);

		if (e == -EPROTONOSUPPORT) {
			fprintf(stderr, "vmrelay-dns: unknown type '%s'\n", type);
			return usage();
		}
		if (e < 0)
			slots[i].out = json_pack("{s:s, s:s, s:s}", "type", type, "status", "error",
						 "why", strerror(-e));
	}
	/* Each query ends by its own deadline; the margin covers the last poll. */
	if (vr_resolver_wait(r, (conf.timeout_ms ? conf.timeout_ms : 30000) + 1000) > 0)
		rc = 1;
	for (int i = 0; i < n; i++) {
		if (slots[i].out == NULL)
			continue;
		char *line = json_dumps(slots[i].out, JSON_COMPACT);
		if (line)
			puts(line);
		free(line);
		json_decref(slots[i].out);
	}
	vr_resolver_free(r);
	free(slots);
	return rc;
}
