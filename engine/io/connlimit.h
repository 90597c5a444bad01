/*
 * connlimit.h - concurrent connections per client (IPv4 address or IPv6 /64),
 * counted across all worker threads without a lock (see connlimit.c).
 */
#ifndef VR_IO_CONNLIMIT_H
#define VR_IO_CONNLIMIT_H

#include <stdint.h>
#include <sys/socket.h>

struct vr_connlimit;

/* The largest per-client limit a slot can count. */
#define VR_CONNLIMIT_MAX 32767u

/*
 * limit: concurrent connections allowed per client (1..VR_CONNLIMIT_MAX).
 * clients: how many distinct clients may be connected at once (sizes the
 * table). NULL on -ENOMEM or a bad limit.
 */
struct vr_connlimit *vr_connlimit_new(unsigned limit, unsigned clients);
void vr_connlimit_free(struct vr_connlimit *cl);

/* The client's key: an IPv4 address (also when IPv4-mapped) or an IPv6 /64. */
uint64_t vr_connlimit_key(const struct sockaddr *sa);

/*
 * Takes one connection for key. Returns 0 and sets *slot (pass it to
 * vr_connlimit_release), -EUSERS at the limit, -ENOSPC when the table has no
 * room for another client, -EBUSY if racing claims did not settle.
 */
int vr_connlimit_acquire(struct vr_connlimit *cl, uint64_t key, uint64_t **slot);
void vr_connlimit_release(struct vr_connlimit *cl, uint64_t *slot);
/* Connections key holds now (for tests and stats; racy by nature). */
unsigned vr_connlimit_count(const struct vr_connlimit *cl, uint64_t key);
/* The bucket key falls in: tests use it to make clients share one. */
uint64_t vr_connlimit_bucket(const struct vr_connlimit *cl, uint64_t key);

#endif
