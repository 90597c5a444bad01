/*
 * scan.h - walking a spool directory segment by segment, private to
 * engine/spool: vr_spool_scan() is the public face; recovery and
 * `vmrelay-spool check` also want to hear about each segment and each
 * damaged spot.
 */
#ifndef VR_SPOOL_SCAN_H
#define VR_SPOOL_SCAN_H

#include <stdbool.h>
#include <stdint.h>

#include "vmrelay/spool.h"

struct vr_spool_seg_info {
	const char *name;             /* "seg/w0-0000000001.seg", inside dir */
	unsigned worker;
	uint64_t seq;
	uint64_t size;                /* bytes read */
	uint64_t records;             /* intact records */
	uint64_t messages;            /* intact messages */
	uint64_t torn;                /* messages dropped */
	uint64_t tails;               /* of those, cut off by the end of the file */
	uint64_t damaged;             /* damaged places not at the end */
	/* 0, or why the file could not be read: -ENODATA (shorter than its
	 * header: created, never written), -EBADMSG (damaged header),
	 * -EPROTONOSUPPORT (newer format), -errno. */
	int error;
};

struct vr_spool_scan_ops {
	/* Each intact message; non-zero stops the scan and is returned. */
	int (*message)(const struct vr_spool_msg *msg, void *arg);
	/* Each damaged place: what was wrong, where; tail says it ran to the
	 * end of the file (a torn write). Optional. */
	void (*damage)(const struct vr_spool_seg_info *seg, uint64_t off, uint64_t len, bool tail,
		       const char *what, void *arg);
	/* Each segment once read. Optional. */
	void (*segment)(const struct vr_spool_seg_info *seg, void *arg);
	void *arg;
};

/* vr_spool_scan() with every callback. Returns what it returns. */
int vr_spool_scan_ops(const char *dir, const struct vr_spool_scan_ops *ops,
		      struct vr_spool_scan_stats *stats);

#endif
