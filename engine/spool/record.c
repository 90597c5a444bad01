/*
 * record.c - the spool's on-disk format and its codecs. All integers are
 * little-endian.
 *
 * A segment file is a 40-byte header and then records, appended only:
 *
 *    0  magic     8  "vmrspool"
 *    8  version   4  1
 *   12  worker    4  the worker whose messages it holds (informational)
 *   16  seq       8  segment number: unique in the spool, grows over time
 *   24  created   8  wall clock, microseconds since the epoch
 *   32  salt      4  random, chosen per worker and run; seeds record CRCs
 *   36  crc       4  CRC32C of bytes 0..35
 *
 * A record is a 16-byte header and len payload bytes:
 *
 *    0  magic     4  f5 76 72 1e
 *    4  type      1
 *    5  zero      3  reserved, must be zero
 *    8  len       4  payload bytes, at most 1 MiB
 *   12  crc       4  CRC32C started from the salt, over bytes 0..11 then
 *                    the payload
 *
 * Why a salt: message bodies are bytes chosen by the sender and may contain
 * well-formed records. A reader only looks inside a payload when it
 * resynchronises after damage (searching for the next magic); a forged
 * record must then also match a CRC seeded with a value the sender never
 * sees, which it does with probability 2^-32. So a crash cannot turn a body
 * into a message with an envelope of the sender's choosing.
 *
 * Types (one byte), in ranges so that later records fit without a version
 * change:
 *   0x01-0x1f  message records, written contiguously by the committer:
 *              ENVELOPE (0x01), BODY (0x02) zero or more, END (0x03). A
 *              message exists only if all its records are intact and END,
 *              whose counts agree with the BODY records seen, closes it.
 *   0x20-0x3f  queue state, appended later about a committed message and
 *              naming it by queue ID (enum vr_spool_state in spool.h):
 *              delivered, deferred, bounced, expired per recipient; held,
 *              released, deleted for the message. Written by the delivery
 *              threads to state logs of their own (state.c).
 *   0x40-0x5f  per-message annotations appended later: the DKIM-Signature
 *              fields (0x40), so retries never sign again.
 *   0x60-0xff  unassigned.
 * An intact record of a type a reader does not know is skipped when it
 * stands between messages, so older tools read newer spools; inside a
 * message only BODY and END may appear.
 *
 * ENVELOPE payload: fields, each tag (1 byte), length (2), value:
 *   1 queue ID   2 arrival (u64 us)   3 flags (u32)   4 account
 *   5 client     6 HELO               7 sender ("" for <>)
 *   8 recipient, once per recipient, in order.
 * Fields 1-7 appear exactly once; texts hold no NUL. Unknown tags are
 * skipped: later versions may add fields (DSN parameters, say).
 * BODY payload: message bytes (CRLF lines, dot-unstuffed), 1 byte..1 MiB.
 * END payload: body size (u64) and the number of BODY records (u32).
 * State and annotation payloads: fields as in ENVELOPE, tag (1), length (2),
 * value: 1 queue ID, 2 recipient index (u32; 0xffffffff: the message),
 * 3 attempts (u32), 4 when (u64 us), 5 next attempt (u64 us), 6 text (the
 * remote reply; for 0x40 the header fields). Queue ID and when are
 * required; unknown tags are skipped.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/common.h"
#include "vmrelay/crc32c.h"
#include "record.h"

static const uint8_t seg_magic[8] = { 'v', 'm', 'r', 's', 'p', 'o', 'o', 'l' };
/* Not text: 0xf5 never occurs in UTF-8, which keeps false magic matches
 * during resynchronisation rare in ordinary mail. */
static const uint8_t rec_magic[4] = { 0xf5, 0x76, 0x72, 0x1e };

enum env_tag {
	TAG_QID = 1, TAG_ARRIVAL, TAG_FLAGS, TAG_ACCOUNT, TAG_CLIENT, TAG_HELO, TAG_SENDER,
	TAG_RCPT,
};

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}


static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { return get16(p) | (uint32_t)get16(p + 2) << 16; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

void vr_seg_hdr_encode(uint8_t out[VR_SEG_HDR_SIZE], const struct vr_seg_hdr *h)
{
	memcpy(out, seg_magic, sizeof(seg_magic));
	put32(out + 8, h->version);
	put32(out + 12, h->worker);
	put64(out + 16, h->seq);
	put64(out + 24, h->created_us);
	put32(out + 32, h->salt);
	put32(out + 36, vr_crc32c(0, out, 36));
}

int vr_seg_hdr_parse(const uint8_t *p, size_t n, struct vr_seg_hdr *h)
{
	if (n < VR_SEG_HDR_SIZE)
		return VR_AGAIN;
	if (memcmp(p, seg_magic, sizeof(seg_magic)) != 0 || get32(p + 36) != vr_crc32c(0, p, 36))
		return VR_ERR;
	h->version = get32(p + 8);
	h->worker = get32(p + 12);
	h->seq = get64(p + 16);
	h->created_us = get64(p + 24);
	h->salt = get32(p + 32);
	return VR_OK;
}

static uint32_t rec_crc(const uint8_t *rec, uint32_t len, uint32_t salt)
{
	uint32_t crc = vr_crc32c(salt, rec, 12);
	return vr_crc32c(crc, rec + VR_REC_HDR_SIZE, len);
}

void vr_rec_seal(uint8_t *rec, uint8_t type, uint32_t len, uint32_t salt)
{
	memcpy(rec, rec_magic, sizeof(rec_magic));
	rec[4] = type;
	rec[5] = rec[6] = rec[7] = 0;
	put32(rec + 8, len);
	put32(rec + 12, rec_crc(rec, len, salt));
}

int vr_rec_parse(const uint8_t *p, size_t n, uint32_t salt, struct vr_rec *rec, size_t *used)
{
	/* Judge whatever part of the header is there, so garbage is refused
	 * as early as possible rather than waited on. */
	if (memcmp(p, rec_magic, VR_MIN(n, sizeof(rec_magic))) != 0)
		return VR_ERR;
	for (size_t i = 5; i < VR_MIN(n, 8); i++)
		if (p[i] != 0)
			return VR_ERR;
	if (n < VR_REC_HDR_SIZE) {
		*used = VR_REC_HDR_SIZE;
		return VR_AGAIN;
	}
	uint32_t len = get32(p + 8);
	if (len > VR_REC_PAYLOAD_MAX)
		return VR_ERR;
	if (n - VR_REC_HDR_SIZE < len) {
		*used = VR_REC_HDR_SIZE + len;
		return VR_AGAIN;
	}
	if (get32(p + 12) != rec_crc(p, len, salt))
		return VR_ERR;
	rec->type = p[4];
	rec->len = len;
	rec->payload = p + VR_REC_HDR_SIZE;
	*used = VR_REC_HDR_SIZE + len;
	return VR_OK;
}

size_t vr_rec_find_magic(const uint8_t *p, size_t n)
{
	const uint8_t *m = memmem(p, n, rec_magic, sizeof(rec_magic));
	return m ? (size_t)(m - p) : n;
}

/* --- ENVELOPE --- */

/* The envelope fields: how each is stored, and where it lives in the
 * writer's vr_spool_envelope (texts) and the reader's vr_spool_msg. */
enum field_kind { F_QID, F_U64, F_U32, F_TEXT, F_RCPT };
static const struct env_field {
	uint8_t kind;
	size_t env_off;
	size_t msg_off;
} env_fields[] = {
	[TAG_QID]     = { F_QID, 0, offsetof(struct vr_spool_msg, qid) },
	[TAG_ARRIVAL] = { F_U64, 0, offsetof(struct vr_spool_msg, received_us) },
	[TAG_FLAGS]   = { F_U32, 0, offsetof(struct vr_spool_msg, flags) },
	[TAG_ACCOUNT] = { F_TEXT, offsetof(struct vr_spool_envelope, account),
			  offsetof(struct vr_spool_msg, account) },
	[TAG_CLIENT]  = { F_TEXT, offsetof(struct vr_spool_envelope, client),
			  offsetof(struct vr_spool_msg, client) },
	[TAG_HELO]    = { F_TEXT, offsetof(struct vr_spool_envelope, helo),
			  offsetof(struct vr_spool_msg, helo) },
	[TAG_SENDER]  = { F_TEXT, offsetof(struct vr_spool_envelope, mail_from),
			  offsetof(struct vr_spool_msg, mail_from) },
	[TAG_RCPT]    = { F_RCPT, 0, 0 },
};
#define FIELD_HDR 3u            /* tag, length */

/*
 * The next tag-length-value field of an ENVELOPE or state payload: 1 and the
 * field (p and n moved past it), 0 at the end, -EBADMSG when a field runs
 * past the payload.
 */
static int next_field(const uint8_t **p, size_t *n, unsigned *tag, const uint8_t **v,
		      size_t *len)
{
	if (*n == 0)
		return 0;
	if (*n < FIELD_HDR || *n - FIELD_HDR < get16(*p + 1))
		return -EBADMSG;
	*tag = (*p)[0];
	*len = get16(*p + 1);
	*v = *p + FIELD_HDR;
	*p += FIELD_HDR + *len;
	*n -= FIELD_HDR + *len;
	return 1;
}
/* Every field but RCPT must appear once. */
#define FIELDS_REQUIRED ((1u << TAG_RCPT) - (1u << TAG_QID))

static const char *env_text(const struct vr_spool_envelope *env, enum env_tag tag)
{
	const char *s = *(const char *const *)((const char *)env + env_fields[tag].env_off);
	return s ? s : "";
}

size_t vr_rec_env_size(const struct vr_spool_envelope *env, const char *qid)
{
	size_t n = FIELD_HDR + strlen(qid) + FIELD_HDR + 8 + FIELD_HDR + 4;

	for (int tag = TAG_ACCOUNT; tag <= TAG_SENDER; tag++) {
		size_t len = strlen(env_text(env, (enum env_tag)tag));
		if (len > VR_ENV_TEXT_MAX)
			return 0;
		n += FIELD_HDR + len;
	}
	for (unsigned i = 0; i < env->n_rcpts; i++) {
		size_t len = strlen(env->rcpts[i]);
		if (len > VR_ENV_TEXT_MAX || n > VR_REC_PAYLOAD_MAX)
			return 0;
		n += FIELD_HDR + len;
	}
	return n > VR_REC_PAYLOAD_MAX ? 0 : VR_REC_HDR_SIZE + n;
}

static uint8_t *field_put(uint8_t *p, uint8_t tag, const void *v, size_t len)
{
	*p = tag;
	put16(p + 1, (uint16_t)len);
	if (len)
		memcpy(p + FIELD_HDR, v, len);
	return p + FIELD_HDR + len;
}

void vr_rec_env_encode(uint8_t *out, const struct vr_spool_envelope *env, const char *qid,
		       uint32_t salt)
{
	uint8_t *p = out + VR_REC_HDR_SIZE;
	uint8_t num[8];

	p = field_put(p, TAG_QID, qid, strlen(qid));
	put64(num, env->received_us);
	p = field_put(p, TAG_ARRIVAL, num, 8);
	put32(num, env->flags);
	p = field_put(p, TAG_FLAGS, num, 4);
	for (int tag = TAG_ACCOUNT; tag <= TAG_SENDER; tag++) {
		const char *s = env_text(env, (enum env_tag)tag);
		p = field_put(p, (uint8_t)tag, s, strlen(s));
	}
	for (unsigned i = 0; i < env->n_rcpts; i++)
		p = field_put(p, TAG_RCPT, env->rcpts[i], strlen(env->rcpts[i]));
	vr_rec_seal(out, VR_REC_ENVELOPE, (uint32_t)(p - out - VR_REC_HDR_SIZE), salt);
}

/* Checks one field's value against its kind. */
static bool field_valid(const struct env_field *f, const uint8_t *v, size_t len)
{
	switch (f->kind) {
	case F_U64: return len == 8;
	case F_U32: return len == 4;
	case F_QID: return len > 0 && len < VR_QID_MAX && !memchr(v, '\0', len);
	default:    return !memchr(v, '\0', len);
	}
}

/*
 * Walks the fields of an ENVELOPE payload. Without msg: checks the structure
 * and counts the recipients and text bytes the copy needs. With msg (only
 * after a clean first walk): copies texts to *strings and fills msg.
 */
static int env_walk(const uint8_t *p, size_t n, struct vr_spool_msg *msg, char *strings,
		    unsigned *n_rcpts, size_t *text)
{
	unsigned seen = 0;
	unsigned tag;
	const uint8_t *v;
	size_t len;
	int rc;

	while ((rc = next_field(&p, &n, &tag, &v, &len)) > 0) {
		if (tag < TAG_QID || tag > TAG_RCPT)
			continue;               /* a later version's field */
		const struct env_field *f = &env_fields[tag];
		if (!field_valid(f, v, len) || (f->kind != F_RCPT && (seen & 1u << tag)))
			return -EBADMSG;
		seen |= 1u << tag;
		if (!msg) {
			*n_rcpts += f->kind == F_RCPT;
			*text += f->kind == F_TEXT || f->kind == F_RCPT ? len + 1 : 0;
			continue;
		}
		void *dst = (char *)msg + f->msg_off;
		switch (f->kind) {
		case F_QID:
			memcpy(dst, v, len);
			((char *)dst)[len] = '\0';
			continue;
		case F_U64:
			*(uint64_t *)dst = get64(v);
			continue;
		case F_U32:
			*(uint32_t *)dst = get32(v);
			continue;
		case F_RCPT:
			dst = &msg->rcpts[msg->n_rcpts++];
			break;
		case F_TEXT:
			break;
		}
		memcpy(strings, v, len);
		strings[len] = '\0';
		*(char **)dst = strings;
		strings += len + 1;
	}
	if (rc < 0)
		return rc;
	return (seen & FIELDS_REQUIRED) == FIELDS_REQUIRED ? 0 : -EBADMSG;
}

int vr_rec_env_decode(const uint8_t *p, size_t n, struct vr_spool_msg *msg, void **mem)
{
	unsigned n_rcpts = 0;
	size_t text = 0;

	if (env_walk(p, n, NULL, NULL, &n_rcpts, &text) < 0)
		return -EBADMSG;
	/* One block: the rcpts array, then every text. */
	char **rcpts = malloc(n_rcpts * sizeof(*rcpts) + text);
	if (!rcpts)
		return -ENOMEM;
	msg->rcpts = rcpts;
	msg->n_rcpts = 0;
	env_walk(p, n, msg, (char *)(rcpts + n_rcpts), NULL, NULL);
	*mem = rcpts;
	return 0;
}

/* --- END --- */

void vr_rec_end_encode(uint8_t out[VR_REC_END_SIZE], uint64_t body_size, uint32_t n_body,
		       uint32_t salt)
{
	put64(out + VR_REC_HDR_SIZE, body_size);
	put32(out + VR_REC_HDR_SIZE + 8, n_body);
	vr_rec_seal(out, VR_REC_END, VR_REC_END_SIZE - VR_REC_HDR_SIZE, salt);
}

int vr_rec_end_decode(const uint8_t *p, size_t n, uint64_t *body_size, uint32_t *n_body)
{
	if (n != VR_REC_END_SIZE - VR_REC_HDR_SIZE)
		return -EBADMSG;
	*body_size = get64(p);
	*n_body = get32(p + 8);
	return 0;
}

/* --- queue state and annotations --- */

enum event_tag { EV_QID = 1, EV_RCPT, EV_ATTEMPTS, EV_AT, EV_NEXT, EV_TEXT };
#define EV_FIXED (3 * FIELD_HDR + 4 + 4 + 8 + 8 + FIELD_HDR)  /* all but qid and text */

static bool event_type(uint8_t type)
{
	return type >= 0x20 && type <= 0x5f;
}

size_t vr_rec_event_size(const struct vr_spool_event *ev)
{
	uint64_t t;

	if (!event_type(ev->type) || !vr_qid_time(ev->qid, &t) || ev->text_len > VR_ENV_TEXT_MAX)
		return 0;
	return VR_REC_HDR_SIZE + FIELD_HDR + VR_QID_LEN + EV_FIXED + FIELD_HDR + ev->text_len;
}

void vr_rec_event_encode(uint8_t *out, const struct vr_spool_event *ev, uint32_t salt)
{
	uint8_t *p = out + VR_REC_HDR_SIZE;
	uint8_t num[8];

	p = field_put(p, EV_QID, ev->qid, strlen(ev->qid));
	put32(num, ev->rcpt);
	p = field_put(p, EV_RCPT, num, 4);
	put32(num, ev->attempts);
	p = field_put(p, EV_ATTEMPTS, num, 4);
	put64(num, ev->at_us);
	p = field_put(p, EV_AT, num, 8);
	put64(num, ev->next_us);
	p = field_put(p, EV_NEXT, num, 8);
	p = field_put(p, EV_TEXT, ev->text, ev->text_len);
	vr_rec_seal(out, ev->type, (uint32_t)(p - out - VR_REC_HDR_SIZE), salt);
}

int vr_rec_event_decode(uint8_t type, const uint8_t *p, size_t n, struct vr_spool_event *ev)
{
	/* Which width each tag's value must have; 0: any (texts). */
	static const uint8_t width[EV_TEXT + 1] = {
		[EV_RCPT] = 4, [EV_ATTEMPTS] = 4, [EV_AT] = 8, [EV_NEXT] = 8,
	};
	unsigned seen = 0;

	if (!event_type(type))
		return -EBADMSG;
	memset(ev, 0, sizeof(*ev));
	ev->type = type;
	ev->rcpt = VR_SPOOL_ALL;
	ev->text = "";
	unsigned tag;
	const uint8_t *v;
	size_t len;
	int rc;

	while ((rc = next_field(&p, &n, &tag, &v, &len)) > 0) {
		if (tag < EV_QID || tag > EV_TEXT)
			continue;               /* a later version's field */
		if ((seen & 1u << tag) || (width[tag] && len != width[tag]))
			return -EBADMSG;
		seen |= 1u << tag;
		switch (tag) {
		case EV_QID:
			if (len != VR_QID_LEN)
				return -EBADMSG;
			memcpy(ev->qid, v, len);
			ev->qid[len] = '\0';
			break;
		case EV_RCPT:     ev->rcpt = get32(v); break;
		case EV_ATTEMPTS: ev->attempts = get32(v); break;
		case EV_AT:       ev->at_us = get64(v); break;
		case EV_NEXT:     ev->next_us = get64(v); break;
		case EV_TEXT:
			ev->text = (const char *)v;
			ev->text_len = len;
			break;
		}
	}
	if (rc < 0)
		return rc;
	uint64_t t;
	if ((seen & (1u << EV_QID | 1u << EV_AT)) != (1u << EV_QID | 1u << EV_AT) ||
	    !vr_qid_time(ev->qid, &t))
		return -EBADMSG;
	return 0;
}

/* --- queue IDs --- */

static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
#define QID_TIME_LEN 11u        /* 55 bits of microseconds: past year 3000 */

void vr_qid_format(char out[VR_QID_MAX], uint64_t time_us, unsigned worker)
{
	for (unsigned i = QID_TIME_LEN; i-- > 0; time_us >>= 5)
		out[i] = b32[time_us & 31];
	out[QID_TIME_LEN] = b32[(worker >> 5) & 31];
	out[QID_TIME_LEN + 1] = b32[worker & 31];
	out[VR_QID_LEN] = '\0';
}

bool vr_qid_time(const char *qid, uint64_t *time_us)
{
	uint64_t t = 0;

	if (strlen(qid) != VR_QID_LEN)
		return false;
	for (unsigned i = 0; i < QID_TIME_LEN; i++) {
		const char *d = qid[i] ? strchr(b32, qid[i]) : NULL;
		if (!d)
			return false;
		t = t << 5 | (uint64_t)(d - b32);
	}
	*time_us = t;
	return true;
}
