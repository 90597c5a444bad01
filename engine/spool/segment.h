/*
 * segment.h - segment files, private to engine/spool: creating and appending
 * (the committer), and reading records back with resynchronisation after
 * damage (recovery, the scanners, vmrelay-spool).
 */
#ifndef VR_SPOOL_SEGMENT_H
#define VR_SPOOL_SEGMENT_H

#include <stdint.h>
#include <sys/uio.h>

#include "record.h"

#define VR_SEG_DIR       "seg"
#define VR_SEG_NAME_MAX  48     /* "seg/w<worker>-<seq>.seg" */

/* "seg/w<worker>-<seq>.seg", seq zero-padded so names sort by age. */
void vr_seg_name(char out[VR_SEG_NAME_MAX], unsigned worker, uint64_t seq);
/* Parses a file name inside seg/ (no directory part); false if the file is
 * not a segment. */
bool vr_seg_name_parse(const char *base, unsigned *worker, uint64_t *seq);

/* --- writing: a segment open for appends, owned by one thread --- */

/* A committer starts a new segment after this much, or this long, so that
 * older ones are sealed (never appended to again) and can be removed once
 * their mail is done, while the relay runs. */
#define VR_SEG_ROLL_BYTES  (64ull << 20)
#define VR_SEG_ROLL_US     (3600ull * 1000000u)

struct vr_seg {
	int fd;
	uint64_t len;                 /* bytes made durable so far */
	uint64_t created_us;          /* wall clock, as its header says */
	char name[VR_SEG_NAME_MAX];
};

/*
 * Creates segment seq for worker inside the segment directory segdir: the
 * header is written and made durable, and so is the directory entry, so a
 * commit acknowledged in it survives a crash. 0 or -errno (nothing is left
 * behind on failure).
 */
int vr_seg_create(struct vr_seg *seg, int segdir, unsigned worker, uint64_t seq, uint32_t salt);
/* The same for a file of another kind (a state log): seg->name, set by the
 * caller, is "<subdir>/<file>" and subdir the directory's fd. */
int vr_seg_create_named(struct vr_seg *seg, int subdir, unsigned worker, uint64_t seq,
			uint32_t salt);
/* Writes the iov at seg->len, not yet durable, consuming the array (it is
 * left advanced). 0 or -errno; on failure part of it may be in the file. */
int vr_seg_write(struct vr_seg *seg, struct iovec *iov, unsigned n_iov);
void vr_seg_close(struct vr_seg *seg);

/* --- reading --- */

enum vr_seg_event {
	VR_SEG_RECORD,                /* an intact record */
	VR_SEG_DAMAGE,                /* bytes [bad_off, +bad_len) skipped, records follow */
	VR_SEG_TAIL,                  /* bytes from bad_off to the end are no record */
	VR_SEG_EOF,
};

struct vr_seg_reader {
	int fd;
	struct vr_seg_hdr hdr;
	uint64_t size;                /* file size at open: later appends are not read */
	uint64_t pos;                 /* the next record */
	uint64_t bad_off, bad_len;    /* the last region reported */
	uint8_t *buf;                 /* file bytes [base, base + len) */
	uint64_t base;
	size_t len, alloc;            /* alloc: buf's size, grown up to cap */
	size_t cap;
	size_t ahead;                 /* a refill reads at least this much */
	bool borrowed;                /* fd is someone else's: close leaves it */
};

/*
 * Opens name (relative to dirfd) and checks its header. 0; -ENODATA if the
 * file is shorter than a header (created, never written: a crash during
 * creation); -EBADMSG if the header is damaged; -EPROTONOSUPPORT if a newer
 * version wrote it; other -errno.
 */
int vr_seg_reader_open(struct vr_seg_reader *r, int dirfd, const char *name);
void vr_seg_reader_close(struct vr_seg_reader *r);
/* A reader over a file kept open elsewhere (fd, its checked header, its
 * size): vr_seg_reader_close() leaves fd open. */
void vr_seg_reader_attach(struct vr_seg_reader *r, int fd, const struct vr_seg_hdr *hdr,
			  uint64_t size);
/* The next record starts at off (an offset a scan reported). */
void vr_seg_reader_seek(struct vr_seg_reader *r, uint64_t off);
/* Each refill reads at least bytes (256 KiB unless set): a reader of one
 * message asks for about its size, not the messages after it. */
void vr_seg_reader_ahead(struct vr_seg_reader *r, size_t bytes);
/*
 * Reads the next event; for VR_SEG_RECORD, *rec (payload valid until the
 * next call) and its offset *off. -errno on a read error.
 */
int vr_seg_reader_next(struct vr_seg_reader *r, struct vr_rec *rec, uint64_t *off);

#endif
