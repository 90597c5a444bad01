/*
 * addr.c - envelope syntax: MAIL/RCPT paths and parameters, EHLO names
 * (see addr.h).
 *
 * The grammar is RFC 5321 §4.1.2 with RFC 6531's UTF-8 extensions: a
 * local-part is a dot-atom or a quoted-string, a domain is dot-separated LDH
 * labels (U-labels allowed) or an address literal, and a source route is
 * parsed and dropped (§C). Each scanner returns how many octets it matched,
 * 0 for no match, so they compose without copying.
 */
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "vmrelay/common.h"
#include "vmrelay/utf8.h"

#include "addr.h"

#define LABEL_MAX   63        /* RFC 1035 §2.3.4 */
#define DOMAIN_MAX  255

static bool is_alnum(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 5322 §3.2.3 atext, less the alphanumerics. */
static bool is_atext_special(uint8_t c)
{
	return c && strchr("!#$%&'*+-/=?^_`{|}~", c);
}

/* One character of an atom, a label or a quoted string: an ASCII octet that
 * ok() accepts (1) or a UTF-8 sequence (its length, *utf8 set); else 0. */
static size_t scan_char(const uint8_t *p, size_t n, bool (*ok)(uint8_t), bool *utf8)
{
	if (p[0] < 0x80)
		return ok(p[0]) ? 1 : 0;
	size_t k = vr_utf8_seq(p, n);
	if (k)
		*utf8 = true;
	return k;
}

static bool is_atext(uint8_t c) { return is_alnum(c) || is_atext_special(c); }
static bool is_ldh(uint8_t c) { return is_alnum(c) || c == '-'; }
static bool is_ldh_under(uint8_t c) { return is_ldh(c) || c == '_'; }
/* RFC 5321 qtextSMTP: printable ASCII but '"' and '\'. */
static bool is_qtext(uint8_t c) { return c >= 32 && c <= 126 && c != '"' && c != '\\'; }

/* dot-atom / quoted-string */
static size_t scan_local(const uint8_t *p, size_t n, bool *utf8)
{
	size_t i = 0, k;

	if (n && p[0] == '"') {
		for (i = 1; i < n; i += k) {
			if (p[i] == '"')
				return i + 1;
			if (p[i] == '\\')
				k = i + 1 < n && p[i + 1] >= 32 && p[i + 1] <= 126 ? 2 : 0;
			else
				k = scan_char(p + i, n - i, is_qtext, utf8);
			if (!k)
				return 0;
		}
		return 0;
	}
	for (;;) {
		size_t start = i;
		while (i < n && (k = scan_char(p + i, n - i, is_atext, utf8)) != 0)
			i += k;
		if (i == start)
			return 0;
		if (i + 1 < n && p[i] == '.') {
			i++;
			continue;
		}
		return i;
	}
}

/* sub-domain *("." sub-domain); a label neither starts nor ends with '-'. */
static size_t scan_domain(const uint8_t *p, size_t n, bool (*ok)(uint8_t), bool *utf8)
{
	size_t i = 0, k;

	for (;;) {
		size_t start = i;
		while (i < n && (k = scan_char(p + i, n - i, ok, utf8)) != 0)
			i += k;
		if (i == start || i - start > LABEL_MAX || p[start] == '-' || p[i - 1] == '-')
			return 0;
		if (i < n && p[i] == '.') {
			i++;
			continue;
		}
		return i;
	}
}

/* "[1.2.3.4]" or "[IPv6:...]"; general address literals are not accepted. */
static size_t scan_literal(const uint8_t *p, size_t n)
{
	char text[INET6_ADDRSTRLEN + 8];
	uint8_t addr[16];
	const uint8_t *end;

	if (n < 3 || p[0] != '[' || !(end = memchr(p, ']', n)))
		return 0;
	size_t len = (size_t)(end - p) - 1;
	if (len >= sizeof(text))
		return 0;
	memcpy(text, p + 1, len);
	text[len] = '\0';
	if (len > 5 && strncasecmp(text, "IPv6:", 5) == 0) {
		if (inet_pton(AF_INET6, text + 5, addr) != 1)
			return 0;
	} else if (inet_pton(AF_INET, text, addr) != 1) {
		return 0;
	}
	return len + 2;
}

static size_t scan_host(const uint8_t *p, size_t n, bool *utf8)
{
	if (n && p[0] == '[')
		return scan_literal(p, n);
	return scan_domain(p, n, is_ldh, utf8);
}

/* "@d1,@d2:" (RFC 5321 §4.1.2 A-d-l), accepted and ignored (§C). */
static size_t scan_route(const uint8_t *p, size_t n, bool *utf8)
{
	size_t i = 0;

	while (i < n && p[i] == '@') {
		size_t k = scan_domain(p + i + 1, n - i - 1, is_ldh, utf8);
		if (!k)
			return 0;
		i += 1 + k;
		if (i < n && p[i] == ':')
			return i + 1;
		if (i >= n || p[i] != ',')
			return 0;
		i++;
	}
	return 0;
}

/* "<" [route] mailbox ">" or, if null_ok, "<>". *used counts through ">". */
static enum vr_smtp_addr_status scan_path(const uint8_t *p, size_t n, bool null_ok,
					  struct vr_smtp_envcmd *out, bool *domain, size_t *used)
{
	size_t i = 1, k;

	if (n < 2 || p[0] != '<')
		return VR_SMTP_ADDR_SYNTAX;
	*domain = false;
	if (p[1] == '>') {
		*used = 2;
		return null_ok ? VR_SMTP_ADDR_OK : VR_SMTP_ADDR_BAD;
	}
	if (p[1] == '@') {
		if (!(k = scan_route(p + 1, n - 1, &out->utf8)))
			return VR_SMTP_ADDR_BAD;
		i += k;
	}
	size_t mailbox = i;
	if (!(k = scan_local(p + i, n - i, &out->utf8)))
		return VR_SMTP_ADDR_BAD;
	i += k;
	if (i < n && p[i] == '@') {
		if (!(k = scan_host(p + i + 1, n - i - 1, &out->utf8)))
			return VR_SMTP_ADDR_BAD;
		out->domain = p + i + 1;
		out->domain_len = k;
		i += 1 + k;
		*domain = true;
	}
	if (i >= n || p[i] != '>')
		return VR_SMTP_ADDR_BAD;
	/* The line limit bounded the scan; the path limit is checked on the
	 * whole path, so "too long" is only said of a well-formed path. */
	if (i + 1 > VR_SMTP_PATH_MAX)
		return VR_SMTP_ADDR_TOO_LONG;
	out->addr = p + mailbox;
	out->addr_len = i - mailbox;
	*used = i + 1;
	return VR_SMTP_ADDR_OK;
}

/* --- ESMTP parameters --- */

typedef enum vr_smtp_addr_status param_fn(struct vr_smtp_envcmd *out, const uint8_t *v,
					  size_t n);

static enum vr_smtp_addr_status param_size(struct vr_smtp_envcmd *out, const uint8_t *v, size_t n)
{
	uint64_t size = 0;

	/* RFC 1870: size-value ::= 1*20DIGIT */
	if (n == 0 || n > 20)
		return VR_SMTP_ADDR_PARAM_BAD;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return VR_SMTP_ADDR_PARAM_BAD;
		unsigned d = v[i] - '0';
		size = size > (UINT64_MAX - d) / 10 ? UINT64_MAX : size * 10 + d;
	}
	out->has_size = true;
	out->size = size;
	return VR_SMTP_ADDR_OK;
}

static enum vr_smtp_addr_status param_body(struct vr_smtp_envcmd *out, const uint8_t *v, size_t n)
{
	if (n == 4 && strncasecmp((const char *)v, "7BIT", 4) == 0)
		out->body = VR_SMTP_BODY_7BIT;
	else if (n == 8 && strncasecmp((const char *)v, "8BITMIME", 8) == 0)
		out->body = VR_SMTP_BODY_8BITMIME;
	else
		return VR_SMTP_ADDR_PARAM_BAD;   /* BINARYMIME is not offered */
	return VR_SMTP_ADDR_OK;
}

static enum vr_smtp_addr_status param_smtputf8(struct vr_smtp_envcmd *out, const uint8_t *v,
					       size_t n)
{
	if (v)
		return VR_SMTP_ADDR_PARAM_BAD;
	out->smtputf8 = true;
	return VR_SMTP_ADDR_OK;
}

/* RFC 4954 §5: AUTH=<mailbox> names the original submitter; we identify
 * the client ourselves, so it is accepted and ignored. */
static enum vr_smtp_addr_status param_auth(struct vr_smtp_envcmd *out, const uint8_t *v, size_t n)
{
	return v ? VR_SMTP_ADDR_OK : VR_SMTP_ADDR_PARAM_BAD;
}

struct param {
	const char *name;
	param_fn *parse;
};

static const struct param mail_params[] = {
	{ "SIZE", param_size },
	{ "BODY", param_body },
	{ "SMTPUTF8", param_smtputf8 },
	{ "AUTH", param_auth },
};

/* esmtp-value: octets 33-126 but '=', and UTF-8 (RFC 6531 §3.3). */
static bool is_value(uint8_t c) { return c >= 33 && c <= 126 && c != '='; }

/* (SP esmtp-param)*, each keyword at most once. */
static enum vr_smtp_addr_status scan_params(const uint8_t *p, size_t n, const struct param *tab,
					    size_t ntab, struct vr_smtp_envcmd *out)
{
	unsigned seen = 0;
	size_t i = 0;
	bool utf8 = false;

	while (i < n) {
		if (p[i] != ' ')
			return VR_SMTP_ADDR_SYNTAX;
		while (i < n && p[i] == ' ')
			i++;
		if (i == n)
			break;
		size_t kw = i;
		while (i < n && (is_alnum(p[i]) || (i > kw && p[i] == '-')))
			i++;
		out->bad = p + kw;
		out->bad_len = i - kw;
		if (i == kw)
			return VR_SMTP_ADDR_SYNTAX;
		const uint8_t *v = NULL;
		size_t vlen = 0, k;
		if (i < n && p[i] == '=') {
			v = p + ++i;
			while (i < n && (k = scan_char(p + i, n - i, is_value, &utf8)) != 0)
				i += k;
			vlen = (size_t)(p + i - v);
			if (vlen == 0)
				return VR_SMTP_ADDR_PARAM_BAD;
		}
		if (i < n && p[i] != ' ')
			return VR_SMTP_ADDR_PARAM_BAD;

		size_t t = 0;
		while (t < ntab && (strlen(tab[t].name) != out->bad_len ||
				    strncasecmp(tab[t].name, (const char *)out->bad, out->bad_len)))
			t++;
		if (t == ntab)
			return VR_SMTP_ADDR_PARAM;
		if (seen & (1u << t))
			return VR_SMTP_ADDR_PARAM_BAD;
		seen |= 1u << t;
		enum vr_smtp_addr_status st = tab[t].parse(out, v, vlen);
		if (st != VR_SMTP_ADDR_OK)
			return st;
	}
	out->bad = NULL;
	out->bad_len = 0;
	return VR_SMTP_ADDR_OK;
}

/* "FROM:" / "TO:", then the path and its parameters. */
static enum vr_smtp_addr_status scan_cmd(const uint8_t *p, size_t n, const char *prefix,
					 bool null_ok, const struct param *tab, size_t ntab,
					 struct vr_smtp_envcmd *out, bool *domain)
{
	size_t plen = strlen(prefix), used = 0;

	memset(out, 0, sizeof(*out));
	if (n < plen || strncasecmp((const char *)p, prefix, plen) != 0)
		return VR_SMTP_ADDR_SYNTAX;
	/* XXX RFC 5321 §4.1.2: no space may follow the colon; clients send
	 * one anyway and Postfix and Exim accept it, so we do too. */
	while (plen < n && p[plen] == ' ')
		plen++;
	enum vr_smtp_addr_status st = scan_path(p + plen, n - plen, null_ok, out, domain, &used);
	if (st != VR_SMTP_ADDR_OK)
		return st;
	return scan_params(p + plen + used, n - plen - used, tab, ntab, out);
}

enum vr_smtp_addr_status vr_smtp_mail_parse(const uint8_t *p, size_t n, struct vr_smtp_envcmd *out)
{
	bool domain;
	enum vr_smtp_addr_status st = scan_cmd(p, n, "FROM:", true, mail_params,
					       VR_ARRAY_SIZE(mail_params), out, &domain);
	if (st != VR_SMTP_ADDR_OK)
		return st;
	if (out->utf8 && !out->smtputf8)
		return VR_SMTP_ADDR_UTF8;
	if (out->addr_len && !domain)
		return VR_SMTP_ADDR_NO_DOMAIN;
	return VR_SMTP_ADDR_OK;
}

enum vr_smtp_addr_status vr_smtp_rcpt_parse(const uint8_t *p, size_t n, bool smtputf8,
					    struct vr_smtp_envcmd *out)
{
	bool domain;
	enum vr_smtp_addr_status st = scan_cmd(p, n, "TO:", false, NULL, 0, out, &domain);
	if (st != VR_SMTP_ADDR_OK)
		return st;
	if (out->utf8 && !smtputf8)
		return VR_SMTP_ADDR_UTF8;
	/* XXX RFC 5321 §4.5.1: "postmaster" without a domain should reach
	 * the local postmaster; a relay has no local mailboxes. */
	if (!domain)
		return VR_SMTP_ADDR_NO_DOMAIN;
	return VR_SMTP_ADDR_OK;
}

bool vr_smtp_helo_valid(const uint8_t *p, size_t n)
{
	bool utf8 = false;

	if (n == 0 || n > DOMAIN_MAX)
		return false;
	if (p[0] == '[')
		return scan_literal(p, n) == n;
	return scan_domain(p, n, is_ldh_under, &utf8) == n && !utf8;
}
