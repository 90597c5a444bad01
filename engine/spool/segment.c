/*
 * segment.c - segment files: created with their header durable, appended
 * with positioned writes (so a failed batch can be cut off with ftruncate and
 * the next one written in its place), and read back as a stream of records.
 *
 * The reader reports damage instead of stopping at it: after a bad record it
 * searches forward for the next intact one (a record magic whose header and
 * CRC check out), so one flipped bit costs one message, not every message
 * after it. Damage that runs to the end of the file is a torn tail, what a
 * crash in the middle of a write leaves behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrelay/clock.h"
#include "vmrelay/common.h"
#include "segment.h"

/* Room for the largest record plus as much again, so sequential reads go to
 * the kernel in large pieces; a smaller file gets a buffer its size. */
#define READ_BUF (2 * (VR_REC_HDR_SIZE + VR_REC_PAYLOAD_MAX))
/* What one refill reads at least, unless vr_seg_reader_ahead() says
 * otherwise: a scan reads in large pieces. */
#define READ_AHEAD (256u * 1024)

void vr_seg_name(char out[VR_SEG_NAME_MAX], unsigned worker, uint64_t seq)
{
	snprintf(out, VR_SEG_NAME_MAX, VR_SEG_DIR "/w%u-%010" PRIu64 ".seg", worker, seq);
}

static bool digits(const char *s, const char *end, uint64_t max, uint64_t *v)
{
	uint64_t n = 0;

	if (s == end || end - s > 20)
		return false;
	for (; s < end; s++) {
		if (*s < '0' || *s > '9' || n > (max - (uint64_t)(*s - '0')) / 10)
			return false;
		n = n * 10 + (uint64_t)(*s - '0');
	}
	*v = n;
	return true;
}

bool vr_seg_name_parse(const char *base, unsigned *worker, uint64_t *seq)
{
	const char *dash = strchr(base, '-');
	size_t len = strlen(base);
	uint64_t w;

	if (base[0] != 'w' || !dash || len < 4 || strcmp(base + len - 4, ".seg") != 0)
		return false;
	if (!digits(base + 1, dash, UINT32_MAX, &w) || !digits(dash + 1, base + len - 4, UINT64_MAX, seq))
		return false;
	*worker = (unsigned)w;
	return true;
}

/* --- writing --- */

static int write_full(int fd, const void *p, size_t n, uint64_t off)
{
	while (n) {
		ssize_t w = pwrite(fd, p, n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p = (const uint8_t *)p + w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

int vr_seg_create(struct vr_seg *seg, int segdir, unsigned worker, uint64_t seq, uint32_t salt)
{
	vr_seg_name(seg->name, worker, seq);
	return vr_seg_create_named(seg, segdir, worker, seq, salt);
}

int vr_seg_create_named(struct vr_seg *seg, int segdir, unsigned worker, uint64_t seq,
			uint32_t salt)
{
	struct vr_seg_hdr h = {
		.version = VR_SEG_VERSION, .worker = worker, .seq = seq,
		.created_us = vr_clock_wall_us(), .salt = salt,
	};
	uint8_t hdr[VR_SEG_HDR_SIZE];
	const char *slash = strrchr(seg->name, '/');
	const char *base = slash ? slash + 1 : seg->name;
	int rc;

	seg->fd = openat(segdir, base, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (seg->fd < 0)
		return -errno;
	vr_seg_hdr_encode(hdr, &h);
	rc = write_full(seg->fd, hdr, sizeof(hdr), 0);
	if (rc == 0 && fdatasync(seg->fd) < 0)
		rc = -errno;
	/* The new name must be durable before a commit in the file is
	 * acknowledged, or the whole file may vanish in a crash. */
	if (rc == 0 && fsync(segdir) < 0)
		rc = -errno;
	if (rc < 0) {
		close(seg->fd);
		unlinkat(segdir, base, 0);
		seg->fd = -1;
		return rc;
	}
	seg->len = VR_SEG_HDR_SIZE;
	seg->created_us = h.created_us;
	return 0;
}

int vr_seg_write(struct vr_seg *seg, struct iovec *iov, unsigned n_iov)
{
	uint64_t off = seg->len;

	for (;;) {
		while (n_iov && iov->iov_len == 0) {
			iov++;
			n_iov--;
		}
		if (!n_iov)
			return 0;
		ssize_t w = pwritev(seg->fd, iov, (int)VR_MIN(n_iov, (unsigned)IOV_MAX), (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		off += (uint64_t)w;
		/* Drop what was written; resume inside a partly written iovec. */
		size_t done = (size_t)w;
		while (done >= iov->iov_len) {
			done -= iov->iov_len;
			iov++;
			n_iov--;
			if (!n_iov)
				return 0;
		}
		iov->iov_base = (uint8_t *)iov->iov_base + done;
		iov->iov_len -= done;
	}
}

void vr_seg_close(struct vr_seg *seg)
{
	if (seg->fd >= 0)
		close(seg->fd);
	seg->fd = -1;
}

/* --- reading --- */

static int read_full(int fd, void *p, size_t n, uint64_t off, size_t *got)
{
	*got = 0;
	while (*got < n) {
		ssize_t r = pread(fd, (uint8_t *)p + *got, n - *got, (off_t)(off + *got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		*got += (size_t)r;
	}
	return 0;
}

/* Reads and checks the header: 0 or what vr_seg_reader_open() returns. */
static int header_read(struct vr_seg_reader *r)
{
	uint8_t hdr[VR_SEG_HDR_SIZE];
	size_t got;
	int rc = read_full(r->fd, hdr, sizeof(hdr), 0, &got);

	if (rc < 0)
		return rc;
	if (got < sizeof(hdr))
		return -ENODATA;
	if (vr_seg_hdr_parse(hdr, got, &r->hdr) != VR_OK)
		return -EBADMSG;
	return r->hdr.version == VR_SEG_VERSION ? 0 : -EPROTONOSUPPORT;
}

int vr_seg_reader_open(struct vr_seg_reader *r, int dirfd, const char *name)
{
	struct stat st;
	int rc;

	memset(r, 0, sizeof(*r));
	r->fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0)
		return -errno;
	rc = fstat(r->fd, &st) < 0 ? -errno : header_read(r);
	if (rc == 0) {
		r->size = (uint64_t)st.st_size;
		r->cap = (size_t)VR_MIN((uint64_t)READ_BUF, VR_MAX(r->size, (uint64_t)VR_SEG_HDR_SIZE));
		r->ahead = READ_AHEAD;
	}
	if (rc < 0) {
		vr_seg_reader_close(r);
		return rc;
	}
	r->pos = VR_SEG_HDR_SIZE;
	return 0;
}

void vr_seg_reader_attach(struct vr_seg_reader *r, int fd, const struct vr_seg_hdr *hdr,
			  uint64_t size)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->hdr = *hdr;
	r->size = size;
	r->cap = (size_t)VR_MIN((uint64_t)READ_BUF, VR_MAX(r->size, (uint64_t)VR_SEG_HDR_SIZE));
	r->ahead = READ_AHEAD;
	r->pos = VR_SEG_HDR_SIZE;
	r->borrowed = true;
}

void vr_seg_reader_close(struct vr_seg_reader *r)
{
	if (r->fd >= 0 && !r->borrowed)
		close(r->fd);
	free(r->buf);
	r->fd = -1;
	r->buf = NULL;
}

void vr_seg_reader_seek(struct vr_seg_reader *r, uint64_t off)
{
	r->pos = VR_MAX(off, (uint64_t)VR_SEG_HDR_SIZE);
}

void vr_seg_reader_ahead(struct vr_seg_reader *r, size_t bytes)
{
	r->ahead = VR_MAX(bytes, (size_t)VR_REC_HDR_SIZE);
}

/*
 * Makes the buffer hold file bytes [off, off + want), or up to the end of
 * the file if that comes first, and points *p at off with *avail bytes.
 */
static int window(struct vr_seg_reader *r, uint64_t off, size_t want, const uint8_t **p,
		  size_t *avail)
{
	uint64_t end = off + VR_MIN((uint64_t)want, r->size - off);

	if (off < r->base || end > r->base + r->len) {
		size_t n = (size_t)VR_MIN(VR_MIN((uint64_t)r->cap, r->size - off),
					  (uint64_t)VR_MAX(want, r->ahead)), got;
		/* The buffer grows as reads need it: a reader of one small
		 * message never holds the megabytes a scan may. */
		if (n > r->alloc) {
			uint8_t *nb = malloc(n);
			if (!nb)
				return -ENOMEM;
			free(r->buf);
			r->buf = nb;
			r->alloc = n;
			r->len = 0;
		}
		int rc = read_full(r->fd, r->buf, n, off, &got);
		if (rc < 0)
			return rc;
		/* The file shrank under us (the committer cut off a failed
		 * batch while a tool was reading): the end is where it is now. */
		if (got < n)
			r->size = off + got;
		r->base = off;
		r->len = got;
	}
	*p = r->buf + (off - r->base);
	*avail = (size_t)(r->base + r->len - off);
	return 0;
}

/* Offset of the first intact record at or after from, or the file size. */
static int resync(struct vr_seg_reader *r, uint64_t from, uint64_t *next)
{
	const uint8_t *p;
	size_t avail, used;
	struct vr_rec rec;
	int rc;

	while (from < r->size) {
		if ((rc = window(r, from, r->cap, &p, &avail)) < 0)
			return rc;
		size_t i = vr_rec_find_magic(p, avail);
		if (i == avail) {
			/* Keep the last bytes: a magic may straddle the window. */
			if (from + avail >= r->size)
				break;
			from += avail - (VR_REC_MAGIC_SIZE - 1);
			continue;
		}
		from += i;
		if ((rc = window(r, from, VR_REC_HDR_SIZE + VR_REC_PAYLOAD_MAX, &p, &avail)) < 0)
			return rc;
		if (vr_rec_parse(p, avail, r->hdr.salt, &rec, &used) == VR_OK) {
			*next = from;
			return 0;
		}
		from++;
	}
	*next = r->size;
	return 0;
}

int vr_seg_reader_next(struct vr_seg_reader *r, struct vr_rec *rec, uint64_t *off)
{
	const uint8_t *p;
	size_t avail, used;
	uint64_t next;
	int rc;

	if (r->pos >= r->size)
		return VR_SEG_EOF;
	if ((rc = window(r, r->pos, VR_REC_HDR_SIZE, &p, &avail)) < 0)
		return rc;
	/* The header says how much more the record needs; a second VR_AGAIN
	 * means it runs past the end of the file. */
	int parsed = avail ? vr_rec_parse(p, avail, r->hdr.salt, rec, &used) : VR_ERR;
	if (parsed == VR_AGAIN && (rc = window(r, r->pos, used, &p, &avail)) < 0)
		return rc;
	if (parsed == VR_AGAIN)
		parsed = vr_rec_parse(p, avail, r->hdr.salt, rec, &used);
	if (parsed == VR_OK) {
		*off = r->pos;
		r->pos += used;
		return VR_SEG_RECORD;
	}
	if ((rc = resync(r, r->pos + 1, &next)) < 0)
		return rc;
	r->bad_off = r->pos;
	r->bad_len = next - r->pos;
	r->pos = next;
	return next >= r->size ? VR_SEG_TAIL : VR_SEG_DAMAGE;
}
