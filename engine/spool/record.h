/*
 * record.h - the spool's on-disk format, private to engine/spool: segment file
 * header, record header, payload codecs and queue IDs. record.c describes the
 * format byte by byte.
 */
#ifndef VR_SPOOL_RECORD_H
#define VR_SPOOL_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrelay/spool.h"

#define VR_SEG_HDR_SIZE     40u
#define VR_SEG_VERSION      1u
#define VR_REC_HDR_SIZE     16u
#define VR_REC_MAGIC_SIZE   4u
#define VR_REC_PAYLOAD_MAX  (1u << 20)  /* any record; BODY chunks are at most this */
#define VR_REC_END_SIZE     (VR_REC_HDR_SIZE + 12u)
#define VR_ENV_TEXT_MAX     65535u      /* one envelope string */

/* Record types; record.c explains the ranges kept for later records. */
enum vr_rec_type {
	VR_REC_ENVELOPE = 0x01,
	VR_REC_BODY     = 0x02,
	VR_REC_END      = 0x03,
	/* 0x20-0x3f: enum vr_spool_state (spool.h); 0x40: VR_SPOOL_DKIM */
};

struct vr_seg_hdr {
	uint32_t version;
	uint32_t worker;
	uint64_t seq;
	uint64_t created_us;
	uint32_t salt;
};

/* A record as parsed: payload points into the caller's bytes. */
struct vr_rec {
	uint8_t type;
	uint32_t len;
	const uint8_t *payload;
};

void vr_seg_hdr_encode(uint8_t out[VR_SEG_HDR_SIZE], const struct vr_seg_hdr *h);
/* VR_OK, VR_AGAIN (fewer than VR_SEG_HDR_SIZE bytes) or VR_ERR (not a
 * segment header: bad magic or CRC). The version is the caller's to check. */
int vr_seg_hdr_parse(const uint8_t *p, size_t n, struct vr_seg_hdr *h);

/* Fills the header of the record whose payload (len bytes) follows it in
 * memory at rec + VR_REC_HDR_SIZE, CRC included. */
void vr_rec_seal(uint8_t *rec, uint8_t type, uint32_t len, uint32_t salt);
/*
 * Parses the record at p, n bytes available. VR_OK: *rec is filled and *used
 * is its size on disk. VR_AGAIN: the record looks sound so far but needs
 * *used bytes in all. VR_ERR: not an intact record (magic, reserved bytes,
 * length or CRC).
 */
int vr_rec_parse(const uint8_t *p, size_t n, uint32_t salt, struct vr_rec *rec, size_t *used);
/* Offset of the first possible record magic in p[0..n), or n if none. */
size_t vr_rec_find_magic(const uint8_t *p, size_t n);

/* Size of the ENVELOPE record for env and qid; 0 if it cannot be one (a
 * string over VR_ENV_TEXT_MAX, or over VR_REC_PAYLOAD_MAX in all). */
size_t vr_rec_env_size(const struct vr_spool_envelope *env, const char *qid);
/* Writes that record (header sealed) into out, which has room for it. */
void vr_rec_env_encode(uint8_t *out, const struct vr_spool_envelope *env, const char *qid,
		       uint32_t salt);
/*
 * Decodes an ENVELOPE payload into msg: the strings and the rcpts array are
 * one malloc'd block returned in *mem (free it after use); segment, offset
 * and size are left alone. 0, -EBADMSG or -ENOMEM.
 */
int vr_rec_env_decode(const uint8_t *p, size_t n, struct vr_spool_msg *msg, void **mem);

void vr_rec_end_encode(uint8_t out[VR_REC_END_SIZE], uint64_t body_size, uint32_t n_body,
		       uint32_t salt);
/* 0 or -EBADMSG. */
int vr_rec_end_decode(const uint8_t *p, size_t n, uint64_t *body_size, uint32_t *n_body);

/* Queue-state and annotation records (types 0x20-0x5f), about one
 * message named by queue ID. Size of ev's record; 0 if it cannot be one
 * (a type outside 0x20-0x5f, a qid that is no queue ID, a text over
 * VR_ENV_TEXT_MAX). */
size_t vr_rec_event_size(const struct vr_spool_event *ev);
/* Writes that record (header sealed) into out, which has room for it. */
void vr_rec_event_encode(uint8_t *out, const struct vr_spool_event *ev, uint32_t salt);
/* Decodes a record of type 0x20-0x5f; ev->text points into p. 0 or -EBADMSG. */
int vr_rec_event_decode(uint8_t type, const uint8_t *p, size_t n, struct vr_spool_event *ev);

/* Queue IDs: 11 characters of microsecond time then 2 of worker number, in
 * Crockford's base 32; the fixed width makes text order time order. */
#define VR_QID_LEN          13u
#define VR_QID_WORKERS_MAX  1024u
void vr_qid_format(char out[VR_QID_MAX], uint64_t time_us, unsigned worker);
/* The time part of a queue ID; false if qid is not one of ours. */
bool vr_qid_time(const char *qid, uint64_t *time_us);

#endif
