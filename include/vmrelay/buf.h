/*
 * buf.h - growable byte buffer with a hard ceiling.
 *
 * The struct is public because sessions keep their I/O buffers inline and the
 * hot path reads data/len directly. Bytes live in data[off .. off+len);
 * consuming from the front only moves off, and the buffer compacts itself when
 * it must grow. max bounds memory: appending past it fails with -ENOBUFS and
 * leaves the buffer unchanged.
 */
#ifndef VR_BUF_H
#define VR_BUF_H

#include <stddef.h>
#include <stdint.h>
#include "vmrelay/common.h"

struct vr_buf {
	uint8_t *data;
	size_t off;   /* first unconsumed byte */
	size_t len;   /* bytes held from off */
	size_t cap;   /* allocated size of data */
	size_t max;   /* ceiling for len; 0 means SIZE_MAX */
};

/* NULL + 0 is undefined in C: an unallocated buffer's head is NULL itself. */
static inline const uint8_t *vr_buf_head(const struct vr_buf *b)
{
	return b->data ? b->data + b->off : NULL;
}
static inline size_t vr_buf_len(const struct vr_buf *b) { return b->len; }

void vr_buf_init(struct vr_buf *b, size_t max);
void vr_buf_free(struct vr_buf *b);
/* Empties the buffer, keeping its memory. */
void vr_buf_reset(struct vr_buf *b);
/* Returns 0, -ENOBUFS (over max) or -ENOMEM. */
int vr_buf_append(struct vr_buf *b, const void *p, size_t n);
int vr_buf_printf(struct vr_buf *b, const char *fmt, ...) VR_PRINTF(2, 3);
/* Makes room for n more bytes and returns where to write them (commit with
 * vr_buf_commit), or NULL on -ENOBUFS/-ENOMEM. */
uint8_t *vr_buf_reserve(struct vr_buf *b, size_t n);
void vr_buf_commit(struct vr_buf *b, size_t n);
/* Drops n bytes from the front. */
void vr_buf_consume(struct vr_buf *b, size_t n);

#endif
