/*
 * common.h - return conventions and small macros shared by every module.
 *
 * Parsers return VR_OK, VR_AGAIN (need more bytes) or VR_ERR and say how many
 * bytes they consumed; other functions return 0 or a negative errno, or a
 * pointer / NULL.
 */
#ifndef VR_COMMON_H
#define VR_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define VR_OK     0
#define VR_AGAIN  1
#define VR_ERR   (-1)

#define VR_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define VR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define VR_MAX(a, b) ((a) > (b) ? (a) : (b))

#define VR_LIKELY(x)   __builtin_expect(!!(x), 1)
#define VR_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define VR_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Longest text form of an address we print: IPv6 with brackets and port. */
#define VR_ADDRSTRLEN 64

#endif
