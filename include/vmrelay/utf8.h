/*
 * utf8.h - UTF-8 well-formedness (RFC 3629 §4), for SMTPUTF8 addresses and
 * for printing stored envelopes safely.
 */
#ifndef VR_UTF8_H
#define VR_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (1-4) of the well-formed sequence at p, of the n bytes there, or 0
 * when there is none: no overlong forms, no surrogates, nothing above
 * U+10FFFF, no truncated sequence. ASCII, NUL included, is 1. */
size_t vr_utf8_seq(const uint8_t *p, size_t n);

#endif
