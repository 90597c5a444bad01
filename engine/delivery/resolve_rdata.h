/*
 * resolve_rdata.h - decoders of the record data libunbound hands the resolver
 * (struct ub_result: each record's rdata in wire format, names uncompressed).
 * Private to resolve.c; apart so the fuzz harness (fuzz_resolve_rdata) drives
 * exactly these bytes-in functions. None allocates; each checks every length
 * against len before reading.
 */
#ifndef VR_RESOLVE_RDATA_H
#define VR_RESOLVE_RDATA_H

#include <stddef.h>
#include <stdint.h>

#include "vmrelay/resolve.h"

/*
 * A wire-format name at p[0..len) into out: lower case, labels joined by
 * '.', no final dot, "" for the root. Labels may hold letters, digits, '-'
 * and '_' only (host names, and the _service labels of TXT/TLSA owners):
 * anything else could not be written back as the same name. Returns the
 * octets the name took, or -1.
 */
int vr_rdata_name(const uint8_t *p, size_t len, char out[VR_DNS_NAME_MAX + 1]);

/* MX rdata: preference and exchange, the whole rdata. 0 or -1. */
int vr_rdata_mx(const uint8_t *p, size_t len, uint16_t *pref, char name[VR_DNS_NAME_MAX + 1]);

/* TLSA rdata (RFC 6698 2.1): rr->data points into p. 0, or -1 if shorter
 * than the three fixed octets or longer than a uint16_t can say. */
int vr_rdata_tlsa(const uint8_t *p, size_t len, struct vr_tlsa_rr *rr);

/*
 * TXT rdata: its character-strings joined into out (NUL-terminated; outlen
 * >= len is always enough). Returns the joined length, or -1 if a string's
 * length octet runs past the rdata or the rdata is empty.
 */
long vr_rdata_txt(const uint8_t *p, size_t len, char *out, size_t outlen);

#endif
