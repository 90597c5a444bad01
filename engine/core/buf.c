/*
 * buf.c - growable byte buffer with a ceiling (see vmrelay/buf.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmrelay/buf.h"

void vr_buf_init(struct vr_buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max ? max : SIZE_MAX;
}

void vr_buf_free(struct vr_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}

void vr_buf_reset(struct vr_buf *b)
{
	b->off = b->len = 0;
}

uint8_t *vr_buf_reserve(struct vr_buf *b, size_t n)
{
	if (n > b->max - b->len)
		return errno = ENOBUFS, NULL;
	if (b->off + b->len + n <= b->cap)
		return b->data + b->off + b->len;
	/* Compacting is cheaper than growing when half the buffer is consumed. */
	if (b->len + n <= b->cap && b->off >= b->cap / 2) {
		memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
		return b->data + b->len;
	}
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + n)
		cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
	if (cap > b->max && b->max >= b->len + n)
		cap = b->max;
	uint8_t *d = malloc(cap);
	if (!d)
		return errno = ENOMEM, NULL;
	if (b->len)
		memcpy(d, b->data + b->off, b->len);
	free(b->data);
	b->data = d;
	b->cap = cap;
	b->off = 0;
	return d + b->len;
}

void vr_buf_commit(struct vr_buf *b, size_t n)
{
	b->len += n;
}

int vr_buf_append(struct vr_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	uint8_t *w = vr_buf_reserve(b, n);
	if (!w)
		return -errno;
	memcpy(w, p, n);
	b->len += n;
	return 0;
}

int vr_buf_printf(struct vr_buf *b, const char *fmt, ...)
{
	char small[512];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n < sizeof(small))
		return vr_buf_append(b, small, (size_t)n);
	uint8_t *w = vr_buf_reserve(b, (size_t)n + 1);
	if (!w)
		return -errno;
	va_start(ap, fmt);
	vsnprintf((char *)w, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void vr_buf_consume(struct vr_buf *b, size_t n)
{
	if (n >= b->len) {
		b->off = b->len = 0;
		return;
	}
	b->off += n;
	b->len -= n;
}
