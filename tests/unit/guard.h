/*
 * guard.h - test helper: a copy of some bytes whose last octet sits right
 * before an inaccessible page, so a parser reading one octet too far faults
 * (picohttpparser's way of testing bounds). Header-only: each test program
 * that parses network bytes includes it.
 */
#ifndef VR_TEST_GUARD_H
#define VR_TEST_GUARD_H

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct guarded {
	uint8_t *map;
	size_t maplen;
	uint8_t *data;
};

static inline struct guarded guard(const void *p, size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = (n + pg - 1) / pg * pg + pg;
	struct guarded g;

	g.map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(g.map != MAP_FAILED);
	assert_int_equal(mprotect(g.map + len - pg, pg, PROT_NONE), 0);
	g.maplen = len;
	g.data = g.map + len - pg - n;
	memcpy(g.data, p, n);
	return g;
}

static inline void unguard(struct guarded *g)
{
	munmap(g->map, g->maplen);
}

#endif
