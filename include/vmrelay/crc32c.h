/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of every spool record.
 * Uses the SSE4.2 crc32 instruction when the CPU has it, slicing tables
 * otherwise; both give the same result (RFC 3720 test vectors in the tests).
 */
#ifndef VR_CRC32C_H
#define VR_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* crc is the running value: start with 0, pass the result back to continue. */
uint32_t vr_crc32c(uint32_t crc, const void *p, size_t n);

#endif
