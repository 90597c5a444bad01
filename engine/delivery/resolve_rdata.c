/*
 * resolve_rdata.c - wire-format record data to what resolve.h hands out:
 * names in presentation form, MX, TLSA and TXT rdata (resolve_rdata.h).
 */
#include <string.h>

#include "resolve_rdata.h"

/* Octets allowed in a label we print: what host names and _service labels
 * are made of. */
static int label_char(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

int vr_rdata_name(const uint8_t *p, size_t len, char out[VR_DNS_NAME_MAX + 1])
{
	size_t at = 0, o = 0;

	for (;;) {
		if (at >= len)
			return -1;
		uint8_t n = p[at++];
		if (n == 0)
			break;
		/* 0xc0: a compression pointer, never in the rdata libunbound
		 * hands out; 0x40, 0x80: reserved label types. */
		if (n > 63 || n > len - at)
			return -1;
		if (o + (o > 0) + n > VR_DNS_NAME_MAX)
			return -1;
		if (o > 0)
			out[o++] = '.';
		for (uint8_t i = 0; i < n; i++) {
			uint8_t c = p[at++];
			if (!label_char(c))
				return -1;
			out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
		}
	}
	out[o] = '\0';
	return (int)at;
}

int vr_rdata_mx(const uint8_t *p, size_t len, uint16_t *pref, char name[VR_DNS_NAME_MAX + 1])
{
	int n;

	if (len < 3)
		return -1;
	n = vr_rdata_name(p + 2, len - 2, name);
	if (n < 0 || (size_t)n != len - 2)
		return -1;
	*pref = (uint16_t)(p[0] << 8 | p[1]);
	return 0;
}

int vr_rdata_tlsa(const uint8_t *p, size_t len, struct vr_tlsa_rr *rr)
{
	if (len < 3 || len - 3 > UINT16_MAX)
		return -1;
	rr->usage = p[0];
	rr->selector = p[1];
	rr->mtype = p[2];
	rr->len = (uint16_t)(len - 3);
	rr->data = p + 3;
	return 0;
}

long vr_rdata_txt(const uint8_t *p, size_t len, char *out, size_t outlen)
{
	size_t at = 0, o = 0;

	if (len == 0 || outlen == 0)
		return -1;
	while (at < len) {
		size_t n = p[at++];
		if (n > len - at || n >= outlen - o)
			return -1;
		memcpy(out + o, p + at, n);
		o += n;
		at += n;
	}
	out[o] = '\0';
	return (long)o;
}
