/*
 * fuzz_spool_scan.c - libFuzzer harness for the spool's readers: recovery
 * and vmrelay-spool read segment files that a crash may have torn and a
 * disk may have damaged, so no byte sequence may crash them, make them loop,
 * or make them report what they cannot back up.
 *
 * The input is a segment file. One that does not start with the segment
 * magic gets a valid header (fixed salt) put in front, so most mutations
 * explore records rather than the header's CRC. For every message the scan
 * reports, the body is read back and must be exactly msg->size bytes, and
 * the counters must agree with what was seen.
 *
 * Build: meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 *        with CC=clang; run: build-fuzz/engine/spool/fuzz_spool_scan
 *        tests/fuzz/corpus/spool_scan
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmrelay/spool.h"
#include "../../engine/spool/record.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64] = "/tmp/vr_fuzz_spool.XXXXXX";
static char path[128];

struct seen {
	uint64_t messages;
	uint64_t body;                /* bytes of the body being read */
};

static int body_count(const void *p, size_t n, void *arg)
{
	struct seen *s = arg;

	s->body += n;
	return 0;
}

static int on_message(const struct vr_spool_msg *m, void *arg)
{
	struct seen *s = arg;

	s->messages++;
	if (!m->account || !m->client || !m->helo || !m->mail_from || strlen(m->qid) >= VR_QID_MAX)
		abort();
	for (unsigned i = 0; i < m->n_rcpts; i++)
		if (!m->rcpts[i])
			abort();
	s->body = 0;
	if (vr_spool_read_body(dir, m, body_count, s) != 0 || s->body != m->size)
		abort();
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char seg[96];

	if (!mkdtemp(dir))
		abort();
	snprintf(seg, sizeof(seg), "%s/seg", dir);
	if (mkdir(seg, 0700) < 0)
		abort();
	snprintf(path, sizeof(path), "%s/w0-0000000001.seg", seg);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct vr_seg_hdr h = { .version = VR_SEG_VERSION, .seq = 1, .salt = 0x5eed };
	uint8_t hdr[VR_SEG_HDR_SIZE];
	struct vr_spool_scan_stats st;
	struct seen s = { 0 };

	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		abort();
	if (size < 8 || memcmp(data, "vmrspool", 8) != 0) {
		vr_seg_hdr_encode(hdr, &h);
		if (write(fd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr))
			abort();
	}
	if (write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);

	if (vr_spool_scan(dir, on_message, &s, &st) != 0)
		abort();
	if (st.messages != s.messages || st.tails > st.torn || st.segments != 1)
		abort();
	return 0;
}
