/*
 * scan.c - readers of a spool directory: vr_spool_scan() finds the intact
 * messages, vr_spool_read_body() streams one message's body back.
 *
 * A segment is read as records (segment.c), and records are put together
 * into messages by a small state machine: ENVELOPE opens a message, BODY
 * records add to it, an END whose counts agree closes it. Anything else
 * (damage, a stray record, the end of the file) drops the open message and
 * counts it as torn; the remaining records of a message whose start was lost
 * are skipped as one torn message, not one per record. Only a closed
 * message is ever reported, so a reader never sees half a message.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrelay/clock.h"
#include "vmrelay/common.h"
#include "scan.h"
#include "segment.h"

/* One segment file in the directory listing. */
struct seg_entry {
	uint64_t seq;
	unsigned worker;
	char name[VR_SEG_NAME_MAX];
};

/* Assembling messages inside one segment. */
enum asm_state {
	IDLE,                         /* between messages */
	IN_MSG,                       /* ENVELOPE seen, END awaited */
	ORPHAN,                       /* skipping what is left of a torn message */
};

struct assembler {
	const struct vr_spool_scan_ops *ops;
	struct vr_spool_seg_info *info;
	enum asm_state state;
	struct vr_spool_msg msg;
	void *mem;                    /* the msg's strings */
	uint32_t n_body;
};

/* Reports a damaged place; one in the middle of a file is counted here,
 * the message a tail tears is counted by the caller. */
static void damage(struct assembler *a, uint64_t off, uint64_t len, bool tail, const char *what)
{
	if (!tail)
		a->info->damaged++;
	if (a->ops->damage)
		a->ops->damage(a->info, off, len, tail, what, a->ops->arg);
}

/* Drops the open message, if any; the caller says why. */
static void drop(struct assembler *a, enum asm_state next)
{
	if (a->state == IN_MSG) {
		a->info->torn++;
		free(a->mem);
		a->mem = NULL;
	}
	a->state = next;
}

static void msg_open(struct assembler *a, const struct vr_rec *rec, uint64_t off)
{
	memset(&a->msg, 0, sizeof(a->msg));
	if (vr_rec_env_decode(rec->payload, rec->len, &a->msg, &a->mem) < 0) {
		/* Intact but unreadable: its BODY and END follow, skip them. */
		a->info->torn++;
		damage(a, off, VR_REC_HDR_SIZE + rec->len, false, "malformed envelope");
		a->state = ORPHAN;
		return;
	}
	a->msg.segment = (char *)a->info->name;
	a->msg.offset = off;
	a->n_body = 0;
	a->state = IN_MSG;
}

static int msg_close(struct assembler *a, const struct vr_rec *rec, uint64_t off)
{
	uint64_t size;
	uint32_t n_body;
	int rc = 0;

	if (vr_rec_end_decode(rec->payload, rec->len, &size, &n_body) < 0 ||
	    size != a->msg.size || n_body != a->n_body) {
		drop(a, IDLE);
		damage(a, off, VR_REC_HDR_SIZE + rec->len, false, "END does not match the message");
		return 0;
	}
	a->info->messages++;
	if (a->ops->message)
		rc = a->ops->message(&a->msg, a->ops->arg);
	free(a->mem);
	a->mem = NULL;
	a->state = IDLE;
	return rc;
}

/* Feeds one intact record; returns the message callback's stop value. */
static int feed(struct assembler *a, const struct vr_rec *rec, uint64_t off)
{
	a->info->records++;
	switch (rec->type) {
	case VR_REC_ENVELOPE:
		if (a->state == IN_MSG) {
			drop(a, IDLE);
			damage(a, a->msg.offset, off - a->msg.offset, false, "message without END");
		}
		msg_open(a, rec, off);
		return 0;
	case VR_REC_BODY:
		if (a->state == IN_MSG) {
			a->msg.size += rec->len;
			a->n_body++;
		} else if (a->state == IDLE) {
			a->info->torn++;    /* its ENVELOPE was lost */
			a->state = ORPHAN;
		}
		return 0;
	case VR_REC_END:
		if (a->state == IN_MSG)
			return msg_close(a, rec, off);
		if (a->state == IDLE)
			a->info->torn++;
		a->state = IDLE;
		return 0;
	default:
		/* A later version's record: fine between messages. */
		if (a->state == IN_MSG) {
			drop(a, ORPHAN);
			damage(a, a->msg.offset, off - a->msg.offset, false,
			       "foreign record inside a message");
		} else {
			a->state = IDLE;
		}
		return 0;
	}
}

/* Reads one segment through the assembler. */
static int scan_segment(int dirfd, struct vr_spool_seg_info *info,
			const struct vr_spool_scan_ops *ops)
{
	struct assembler a = { .ops = ops, .info = info, .state = IDLE };
	struct vr_seg_reader r;
	struct vr_rec rec;
	uint64_t off;
	int ev, stop = 0;

	info->error = vr_seg_reader_open(&r, dirfd, info->name);
	if (info->error < 0)
		return 0;
	while (!stop && (ev = vr_seg_reader_next(&r, &rec, &off)) != VR_SEG_EOF) {
		if (ev < 0) {
			info->error = ev;
			break;
		}
		switch (ev) {
		case VR_SEG_RECORD:
			stop = feed(&a, &rec, off);
			break;
		case VR_SEG_DAMAGE:
			drop(&a, a.state == IDLE ? IDLE : ORPHAN);
			damage(&a, r.bad_off, r.bad_len, false, "damaged records");
			break;
		case VR_SEG_TAIL:
			/* Whatever the torn bytes were, they were one message
			 * being written, unless we were skipping one already. */
			if (a.state != ORPHAN) {
				info->torn++;
				info->tails++;
			}
			free(a.mem);
			a.mem = NULL;
			a.state = IDLE;
			damage(&a, r.bad_off, r.bad_len, true, "torn tail");
			break;
		}
	}
	if (!stop && a.state == IN_MSG) {
		drop(&a, IDLE);
		info->tails++;
		damage(&a, r.size, 0, true, "message without END at the end of the file");
	}
	free(a.mem);
	info->size = r.size;
	vr_seg_reader_close(&r);
	return stop;
}

static int entry_cmp(const void *x, const void *y)
{
	const struct seg_entry *a = x, *b = y;

	if (a->seq != b->seq)
		return a->seq < b->seq ? -1 : 1;
	return a->worker < b->worker ? -1 : a->worker > b->worker;
}

/* The segment files of dir, oldest first; *n of them (caller frees). */
static int list_segments(int dirfd, struct seg_entry **out, size_t *n)
{
	struct seg_entry *v = NULL;
	size_t cap = 0;
	struct dirent *de;
	int fd, rc = 0;

	*n = 0;
	fd = openat(dirfd, VR_SEG_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	while ((de = readdir(d)) != NULL) {
		struct seg_entry e;
		if (!vr_seg_name_parse(de->d_name, &e.worker, &e.seq))
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			struct seg_entry *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
		}
		vr_seg_name(e.name, e.worker, e.seq);
		v[(*n)++] = e;
	}
	closedir(d);
	if (rc < 0) {
		free(v);
		return rc;
	}
	if (*n)
		qsort(v, *n, sizeof(*v), entry_cmp);
	*out = v;
	return 0;
}

int vr_spool_scan_ops(const char *dir, const struct vr_spool_scan_ops *ops,
		      struct vr_spool_scan_stats *stats)
{
	struct vr_spool_scan_stats st = { 0 };
	struct seg_entry *segs = NULL;
	size_t n = 0;
	int stop = 0;

	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	int rc = list_segments(dirfd, &segs, &n);
	for (size_t i = 0; rc == 0 && !stop && i < n; i++) {
		struct vr_spool_seg_info info = {
			.name = segs[i].name, .worker = segs[i].worker, .seq = segs[i].seq,
		};
		stop = scan_segment(dirfd, &info, ops);
		st.segments++;
		st.messages += info.messages;
		st.torn += info.torn;
		st.tails += info.tails;
		st.bad_records += info.damaged;
		st.bad_segments += info.error < 0 && info.error != -ENODATA;
		if (ops->segment)
			ops->segment(&info, ops->arg);
	}
	free(segs);
	close(dirfd);
	if (stats)
		*stats = st;
	return rc < 0 ? rc : stop;
}

int vr_spool_scan(const char *dir, int (*fn)(const struct vr_spool_msg *msg, void *arg),
		  void *arg, struct vr_spool_scan_stats *stats)
{
	const struct vr_spool_scan_ops ops = { .message = fn, .arg = arg };

	return vr_spool_scan_ops(dir, &ops, stats);
}

/* --- one message's body --- */

/* About the bytes one message takes in its segment: its body, and room
 * for the envelope and the records' headers of a usual one. One read
 * brings it all in; a longer envelope costs a second. */
static size_t msg_span(const struct vr_spool_msg *msg)
{
	return (size_t)VR_MIN(msg->size, (uint64_t)SIZE_MAX / 2) + 4096u;
}

/* Checks that the record at the reader is the ENVELOPE of msg. */
static int envelope_check(struct vr_seg_reader *r, const struct vr_spool_msg *msg)
{
	struct vr_spool_msg m = { 0 };
	struct vr_rec rec;
	uint64_t off;
	void *mem;

	int ev = vr_seg_reader_next(r, &rec, &off);
	if (ev < 0)
		return ev;
	if (ev != VR_SEG_RECORD || off != msg->offset || rec.type != VR_REC_ENVELOPE)
		return -EBADMSG;
	int rc = vr_rec_env_decode(rec.payload, rec.len, &m, &mem);
	if (rc < 0)
		return rc;
	rc = strcmp(m.qid, msg->qid) == 0 ? 0 : -EBADMSG;
	free(mem);
	return rc;
}

int vr_spool_read_body(const char *dir, const struct vr_spool_msg *msg,
		       int (*out)(const void *p, size_t n, void *arg), void *arg)
{
	struct vr_seg_reader r;
	struct vr_rec rec;
	uint64_t off, size = 0, end_size;
	uint32_t n_body = 0, end_n;
	int rc;

	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	rc = vr_seg_reader_open(&r, dirfd, msg->segment);
	close(dirfd);
	if (rc < 0)
		return rc == -ENODATA ? -EBADMSG : rc;
	vr_seg_reader_ahead(&r, msg_span(msg));
	vr_seg_reader_seek(&r, msg->offset);
	rc = envelope_check(&r, msg);
	while (rc == 0) {
		int ev = vr_seg_reader_next(&r, &rec, &off);
		if (ev < 0) {
			rc = ev;
		} else if (ev != VR_SEG_RECORD) {
			rc = -EBADMSG;
		} else if (rec.type == VR_REC_BODY) {
			size += rec.len;
			n_body++;
			rc = out(rec.payload, rec.len, arg);
		} else if (rec.type == VR_REC_END) {
			if (vr_rec_end_decode(rec.payload, rec.len, &end_size, &end_n) < 0 ||
			    end_size != size || end_n != n_body || size != msg->size)
				rc = -EBADMSG;
			break;
		} else {
			rc = -EBADMSG;
		}
	}
	vr_seg_reader_close(&r);
	return rc;
}

/* --- one message's body, pulled --- */

struct vr_spool_body {
	struct vr_seg_reader r;
	struct vr_spool_msg msg;      /* size and qid, to check END against */
	const uint8_t *p;             /* the BODY record's bytes not yet read */
	size_t left;
	uint64_t size;                /* body bytes seen */
	uint32_t n_body;
	bool done;
	uint64_t body_pos;            /* the first record after the envelope */
};

/* b's reader is open: checks that msg's envelope is where msg says and
 * gets ready for its body. 0, or -errno (then the reader is closed). */
static int body_start(struct vr_spool_body *b, const struct vr_spool_msg *msg)
{
	vr_seg_reader_ahead(&b->r, msg_span(msg));
	vr_seg_reader_seek(&b->r, msg->offset);
	int rc = envelope_check(&b->r, msg);
	if (rc < 0) {
		vr_seg_reader_close(&b->r);
		return rc;
	}
	memcpy(b->msg.qid, msg->qid, sizeof(b->msg.qid));
	b->msg.size = msg->size;
	b->body_pos = b->r.pos;
	return 0;
}

struct vr_spool_body *vr_spool_body_open(const char *dir, const struct vr_spool_msg *msg)
{
	struct vr_spool_body *b = calloc(1, sizeof(*b));
	int rc = -ENOMEM;

	if (!b)
		return errno = ENOMEM, NULL;
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		rc = -errno;
		free(b);
		return errno = -rc, NULL;
	}
	rc = vr_seg_reader_open(&b->r, dirfd, msg->segment);
	close(dirfd);
	if (rc == 0)
		rc = body_start(b, msg);
	if (rc < 0) {
		free(b);
		return errno = rc == -ENODATA ? EBADMSG : -rc, NULL;
	}
	return b;
}

/* --- a delivery thread's open segments --- */

#define SEGCACHE_N       4u       /* the segments being delivered from */
#define SEGCACHE_IDLE_MS 60000u

struct segcache_entry {
	int fd;                       /* -1: free */
	struct vr_seg_hdr hdr;
	uint64_t size;                /* at the last look: grows while appended to */
	uint64_t used_ms;
	char name[VR_SEG_NAME_MAX];
};

struct vr_spool_segcache {
	int dirfd;
	struct segcache_entry e[SEGCACHE_N];
};

struct vr_spool_segcache *vr_spool_segcache_new(const char *dir)
{
	struct vr_spool_segcache *sc = calloc(1, sizeof(*sc));

	if (!sc)
		return errno = ENOMEM, NULL;
	sc->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sc->dirfd < 0) {
		int e = errno;
		free(sc);
		return errno = e, NULL;
	}
	for (unsigned i = 0; i < SEGCACHE_N; i++)
		sc->e[i].fd = -1;
	return sc;
}

static void entry_close(struct segcache_entry *e)
{
	if (e->fd >= 0)
		close(e->fd);
	e->fd = -1;
	e->used_ms = 0;
}

void vr_spool_segcache_free(struct vr_spool_segcache *sc)
{
	if (!sc)
		return;
	for (unsigned i = 0; i < SEGCACHE_N; i++)
		entry_close(&sc->e[i]);
	close(sc->dirfd);
	free(sc);
}

void vr_spool_segcache_trim(struct vr_spool_segcache *sc, uint64_t now_ms)
{
	for (unsigned i = 0; i < SEGCACHE_N; i++)
		if (sc->e[i].fd >= 0 && now_ms - sc->e[i].used_ms >= SEGCACHE_IDLE_MS)
			entry_close(&sc->e[i]);
}

/* msg's segment, open: found, or opened in place of the least recently
 * used. 0 or what vr_seg_reader_open() returns. */
static int segcache_get(struct vr_spool_segcache *sc, const struct vr_spool_msg *msg,
			uint64_t now_ms, struct segcache_entry **out)
{
	struct segcache_entry *e = NULL, *lru = &sc->e[0];

	for (unsigned i = 0; i < SEGCACHE_N && !e; i++) {
		if (sc->e[i].fd >= 0 && strcmp(sc->e[i].name, msg->segment) == 0)
			e = &sc->e[i];
		else if (sc->e[i].used_ms < lru->used_ms)
			lru = &sc->e[i];
	}
	if (!e) {
		struct vr_seg_reader r;
		if (strlen(msg->segment) >= sizeof(lru->name))
			return -ENAMETOOLONG;
		int rc = vr_seg_reader_open(&r, sc->dirfd, msg->segment);
		if (rc < 0)
			return rc;
		entry_close(lru);
		e = lru;
		e->fd = r.fd;
		e->hdr = r.hdr;
		e->size = r.size;
		strcpy(e->name, msg->segment);
		r.borrowed = true;      /* the fd is the entry's now */
		vr_seg_reader_close(&r);
	} else if (e->size < msg->offset + msg_span(msg)) {
		/* Mail committed since the last look may lie past it. */
		struct stat st;
		if (fstat(e->fd, &st) < 0)
			return -errno;
		e->size = (uint64_t)st.st_size;
	}
	e->used_ms = now_ms;
	*out = e;
	return 0;
}

struct vr_spool_body *vr_spool_body_open_in(struct vr_spool_segcache *sc,
					    const struct vr_spool_msg *msg)
{
	struct vr_spool_body *b = calloc(1, sizeof(*b));
	struct segcache_entry *e;

	if (!b)
		return errno = ENOMEM, NULL;
	int rc = segcache_get(sc, msg, vr_clock_ms(), &e);
	if (rc == 0) {
		vr_seg_reader_attach(&b->r, e->fd, &e->hdr, e->size);
		rc = body_start(b, msg);
	}
	if (rc < 0) {
		free(b);
		return errno = rc == -ENODATA ? EBADMSG : -rc, NULL;
	}
	return b;
}

void vr_spool_body_rewind(struct vr_spool_body *b)
{
	vr_seg_reader_seek(&b->r, b->body_pos);
	b->p = NULL;
	b->left = 0;
	b->size = 0;
	b->n_body = 0;
	b->done = false;
}

/* The next BODY record into b->p, or done at a matching END. */
static int body_next(struct vr_spool_body *b)
{
	struct vr_rec rec;
	uint64_t off, end_size;
	uint32_t end_n;
	int ev = vr_seg_reader_next(&b->r, &rec, &off);

	if (ev < 0)
		return ev;
	if (ev != VR_SEG_RECORD)
		return -EBADMSG;
	if (rec.type == VR_REC_BODY) {
		b->p = rec.payload;   /* valid until the reader's next call */
		b->left = rec.len;
		b->size += rec.len;
		b->n_body++;
		return 0;
	}
	if (rec.type != VR_REC_END || vr_rec_end_decode(rec.payload, rec.len, &end_size, &end_n) < 0 ||
	    end_size != b->size || end_n != b->n_body || b->size != b->msg.size)
		return -EBADMSG;
	b->done = true;
	return 0;
}

ssize_t vr_spool_body_read(struct vr_spool_body *b, void *buf, size_t cap)
{
	while (!b->left && !b->done) {
		int rc = body_next(b);
		if (rc < 0)
			return rc;
	}
	size_t n = VR_MIN(cap, b->left);
	memcpy(buf, b->p, n);
	b->p += n;
	b->left -= n;
	return (ssize_t)n;
}

void vr_spool_body_close(struct vr_spool_body *b)
{
	if (!b)
		return;
	vr_seg_reader_close(&b->r);
	free(b);
}
