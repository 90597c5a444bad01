/*
 * test_spool.c - the durable queue: round trips through the committers,
 * recovery from torn and damaged segments, group commit, committers that
 * do not wait for each other, crashes (a child killed at random moments),
 * disk full, and the worker-side contract (queue IDs, abort, orphan, reap).
 *
 * Every test works in its own fresh directory under a private mkdtemp dir
 * and reads back what it wrote with vr_spool_scan() / vr_spool_read_body(),
 * the same readers recovery and vmrelay-spool use.
 */
#include <errno.h>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmrelay/clock.h"
#include "vmrelay/common.h"
#include "vmrelay/log.h"
#include "vmrelay/spool.h"
#include "../../engine/spool/record.h"
#include "../../engine/spool/segment.h"

static char tmpdir[] = "/tmp/vr_test_spool.XXXXXX";
static char dir[400];           /* this test's spool */

/* --- helpers --- */

/*
 * Fault injection: these stand in for libc's fdatasync, ftruncate and
 * pthread_create in the whole test process (the spool library is linked
 * into it statically) and fail with the errno set here, 0 meaning "work".
 */
static int fail_fdatasync, fail_ftruncate, fail_pthread_create;

/*
 * A slow disk under some segments: fdatasync of a file whose path contains
 * slow_segment waits (slow_waiting says one does) until slow_release.
 */
static const char *slow_segment;
static int slow_waiting, slow_release;
/* fdatasyncs of state logs (a path with /state/) so far. */
static unsigned state_syncs;

static bool fd_path_has(int fd, const char *part)
{
	char link[64], path[512];

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		return false;
	path[n] = '\0';
	return strstr(path, part) != NULL;
}

int fdatasync(int fd)
{
	int e = __atomic_load_n(&fail_fdatasync, __ATOMIC_RELAXED);
	const char *slow = __atomic_load_n(&slow_segment, __ATOMIC_ACQUIRE);

	if (e)
		return errno = e, -1;
	if (fd_path_has(fd, "/state/"))
		__atomic_add_fetch(&state_syncs, 1, __ATOMIC_RELAXED);
	if (slow && fd_path_has(fd, slow)) {
		__atomic_store_n(&slow_waiting, 1, __ATOMIC_RELEASE);
		while (!__atomic_load_n(&slow_release, __ATOMIC_ACQUIRE))
			usleep(1000);
	}
	return (int)syscall(SYS_fdatasync, fd);
}

/* Added to CLOCK_REALTIME: the committers' segment age moves with it. */
static int64_t clock_skew_us;

int clock_gettime(clockid_t id, struct timespec *ts)
{
	int rc = (int)syscall(SYS_clock_gettime, id, ts);
	int64_t skew = __atomic_load_n(&clock_skew_us, __ATOMIC_RELAXED);

	if (rc == 0 && id == CLOCK_REALTIME && skew) {
		int64_t ns = (int64_t)ts->tv_nsec + (skew % 1000000) * 1000;
		ts->tv_sec += (time_t)(skew / 1000000 + (ns >= 1000000000 ? 1 : 0));
		ts->tv_nsec = (long)(ns % 1000000000);
	}
	return rc;
}

/* Fails once with fail_pthread_create when it counts down to 1. */
int pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
	static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

	if (__atomic_load_n(&fail_pthread_create, __ATOMIC_RELAXED) &&
	    __atomic_sub_fetch(&fail_pthread_create, 1, __ATOMIC_RELAXED) == 0)
		return EAGAIN;
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "pthread_create");
	return real(th, attr, fn, arg);
}

int ftruncate(int fd, off_t len)
{
	int e = __atomic_load_n(&fail_ftruncate, __ATOMIC_RELAXED);

	if (e)
		return errno = e, -1;
	return (int)syscall(SYS_ftruncate, fd, len);
}

static void fail_set(int *which, int err)
{
	__atomic_store_n(which, err, __ATOMIC_RELAXED);
}

static uint32_t rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* Deterministic bytes of every value, from a seed. */
static uint8_t *body_make(size_t n, uint32_t seed)
{
	uint8_t *p = malloc(n ? n : 1);
	uint32_t s = seed * 2654435761u + 1;

	assert_non_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd(&s);
	return p;
}

static const char *const rcpts2[] = { "a@example.org", "b@example.net" };
static const struct vr_spool_envelope env_default = {
	.account = "vps1", .client = "203.0.113.7", .helo = "host1.example.com",
	.mail_from = "root@host1.example.com", .rcpts = rcpts2, .n_rcpts = 2,
	.flags = VR_SPOOL_8BITMIME | VR_SPOOL_TLS, .received_us = 1700000000123456ull,
};

/* A completion as the callback saw it. */
struct done {
	bool called;
	int status;
	char qid[VR_QID_MAX];
};

static void on_done(void *cookie, int status, const char *qid)
{
	struct done *d = cookie;

	assert_false(d->called);
	d->called = true;
	d->status = status;
	snprintf(d->qid, sizeof(d->qid), "%s", qid);
}

/* Begins, writes body in pieces of piece bytes, commits. */
static struct vr_spool_txn *put(struct vr_spool *sp, unsigned w,
				const struct vr_spool_envelope *env, const uint8_t *body, size_t n,
				size_t piece, void *cookie)
{
	struct vr_spool_txn *txn = vr_spool_txn_begin(sp, w, env, cookie);

	assert_non_null(txn);
	for (size_t off = 0; off < n; off += piece)
		assert_int_equal(vr_spool_txn_write(txn, body + off, n - off < piece ? n - off : piece), 0);
	vr_spool_txn_commit(txn);
	return txn;
}

/* Reaps worker's completions until want have arrived (5 s at most). */
static void reap_n(struct vr_spool *sp, unsigned w, unsigned want)
{
	unsigned got = 0;

	while (got < want) {
		struct pollfd pfd = { .fd = vr_spool_done_fd(sp, w), .events = POLLIN };
		assert_true(poll(&pfd, 1, 5000) == 1);
		got += vr_spool_reap(sp, w, on_done, want - got);
	}
}

/* A message as a scan found it, body included. */
struct got {
	struct vr_spool_msg m;        /* strings below are copies */
	char *strings[4];
	char **rcpts;
	uint8_t *body;
	size_t body_len;
};

struct found {
	struct got *v;
	size_t n;
};

static int body_append(const void *p, size_t n, void *arg)
{
	struct got *g = arg;

	g->body = realloc(g->body, g->body_len + n + 1);
	assert_non_null(g->body);
	memcpy(g->body + g->body_len, p, n);
	g->body_len += n;
	return 0;
}

static int collect(const struct vr_spool_msg *m, void *arg)
{
	struct found *f = arg;

	f->v = realloc(f->v, (f->n + 1) * sizeof(*f->v));
	assert_non_null(f->v);
	struct got *g = &f->v[f->n++];
	memset(g, 0, sizeof(*g));
	g->m = *m;
	g->strings[0] = g->m.account = strdup(m->account);
	g->strings[1] = g->m.client = strdup(m->client);
	g->strings[2] = g->m.helo = strdup(m->helo);
	g->strings[3] = g->m.mail_from = strdup(m->mail_from);
	g->m.segment = strdup(m->segment);
	g->rcpts = g->m.rcpts = calloc(m->n_rcpts + 1, sizeof(char *));
	for (unsigned i = 0; i < m->n_rcpts; i++)
		g->rcpts[i] = strdup(m->rcpts[i]);
	assert_int_equal(vr_spool_read_body(dir, m, body_append, g), 0);
	assert_int_equal(g->body_len, m->size);
	return 0;
}

static struct found scan_all(struct vr_spool_scan_stats *st)
{
	struct found f = { 0 };

	assert_int_equal(vr_spool_scan(dir, collect, &f, st), 0);
	return f;
}

static void found_free(struct found *f)
{
	for (size_t i = 0; i < f->n; i++) {
		struct got *g = &f->v[i];
		for (int k = 0; k < 4; k++)
			free(g->strings[k]);
		for (unsigned r = 0; r < g->m.n_rcpts; r++)
			free(g->rcpts[r]);
		free(g->rcpts);
		free(g->m.segment);
		free(g->body);
	}
	free(f->v);
	f->v = NULL;
	f->n = 0;
}

static struct got *find(struct found *f, const char *qid)
{
	for (size_t i = 0; i < f->n; i++)
		if (strcmp(f->v[i].m.qid, qid) == 0)
			return &f->v[i];
	return NULL;
}

static void check_envelope(const struct got *g, const struct vr_spool_envelope *env)
{
	assert_string_equal(g->m.account, env->account);
	assert_string_equal(g->m.client, env->client);
	assert_string_equal(g->m.helo, env->helo);
	assert_string_equal(g->m.mail_from, env->mail_from);
	assert_int_equal(g->m.n_rcpts, env->n_rcpts);
	for (unsigned i = 0; i < env->n_rcpts; i++)
		assert_string_equal(g->m.rcpts[i], env->rcpts[i]);
	assert_int_equal(g->m.flags, env->flags);
	assert_true(g->m.received_us == env->received_us);
}

static struct vr_spool *spool_open(unsigned workers)
{
	char err[256] = "";
	struct vr_spool *sp = vr_spool_open(dir, workers, err, sizeof(err));

	if (!sp)
		fail_msg("vr_spool_open: %s", err);
	return sp;
}

static void file_read(const char *path, uint8_t **p, size_t *n)
{
	struct stat st;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	*n = (size_t)st.st_size;
	*p = malloc(*n + 1);
	assert_int_equal(read(fd, *p, *n), (ssize_t)*n);
	close(fd);
}

static void file_write(const char *path, const uint8_t *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	close(fd);
}

static void seg_path(char *out, size_t len, const char *segment)
{
	snprintf(out, len, "%s/%s", dir, segment);
}

/* Entries of path other than . and .. */
static unsigned dir_count(const char *path)
{
	unsigned n = 0;
	DIR *d = opendir(path);

	assert_non_null(d);
	for (struct dirent *de; (de = readdir(d)) != NULL;)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Files in dir/seg. */
static unsigned seg_count(void)
{
	char path[512];
	unsigned n = 0;

	snprintf(path, sizeof(path), "%s/seg", dir);
	DIR *d = opendir(path);
	assert_non_null(d);
	for (struct dirent *de; (de = readdir(d)) != NULL;)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int test_setup(void **state)
{
	static unsigned n;

	snprintf(dir, sizeof(dir), "%s/spool%u", tmpdir, n++);
	return 0;
}

/* --- round trip --- */

static void test_round_trip(void **state)
{
	struct vr_spool *sp = spool_open(3);
	const struct vr_spool_recovery *rec = vr_spool_recovered(sp);
	static const char *const one[] = { "x@example.com" };
	const struct vr_spool_envelope null_sender = {
		.account = "vps2", .client = "2001:db8:7::1", .helo = "h", .mail_from = "",
		.rcpts = one, .n_rcpts = 1, .flags = VR_SPOOL_SMTPUTF8, .received_us = 42,
	};
	uint8_t all[256];
	size_t big_n = 2500000;
	uint8_t *big = body_make(big_n, 7);
	struct done d[6] = { 0 };
	struct vr_spool_txn *t[6];

	assert_true(rec->messages == 0 && rec->torn == 0);
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	assert_int_equal(vr_spool_start(sp), 0);
	t[0] = put(sp, 0, &env_default, all, sizeof(all), 256, &d[0]);
	t[1] = put(sp, 1, &null_sender, NULL, 0, 1, &d[1]);
	t[2] = put(sp, 2, &env_default, big, big_n, 65536 + 3, &d[2]);
	t[3] = put(sp, 0, &null_sender, (const uint8_t *)"Subject: x\r\n\r\nhi\r\n", 18, 1, &d[3]);
	/* Aborted ones never reach the disk. */
	struct vr_spool_txn *gone = vr_spool_txn_begin(sp, 1, &env_default, NULL);
	assert_int_equal(vr_spool_txn_write(gone, "lost", 4), 0);
	char gone_qid[VR_QID_MAX];
	strcpy(gone_qid, vr_spool_txn_qid(gone));
	vr_spool_txn_abort(gone);

	char qids[4][VR_QID_MAX];
	for (int i = 0; i < 4; i++)
		strcpy(qids[i], vr_spool_txn_qid(t[i]));
	reap_n(sp, 0, 2);
	reap_n(sp, 1, 1);
	reap_n(sp, 2, 1);
	for (int i = 0; i < 4; i++) {
		assert_true(d[i].called);
		assert_int_equal(d[i].status, 0);
		assert_string_equal(d[i].qid, qids[i]);
		assert_int_equal(strlen(qids[i]), VR_QID_LEN);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(qids[i], qids[j]);
	}
	vr_spool_close(sp);

	struct vr_spool_scan_stats st;
	struct found f = scan_all(&st);
	assert_int_equal(f.n, 4);
	assert_true(st.torn == 0 && st.bad_records == 0 && st.bad_segments == 0);
	assert_null(find(&f, gone_qid));
	struct got *g = find(&f, qids[0]);
	assert_non_null(g);
	check_envelope(g, &env_default);
	assert_memory_equal(g->body, all, sizeof(all));
	g = find(&f, qids[1]);
	check_envelope(g, &null_sender);
	assert_int_equal(g->body_len, 0);
	g = find(&f, qids[2]);
	assert_int_equal(g->body_len, big_n);
	assert_memory_equal(g->body, big, big_n);
	g = find(&f, qids[3]);
	assert_memory_equal(g->body, "Subject: x\r\n\r\nhi\r\n", 18);
	found_free(&f);
	free(big);
}

/* Workers on their own threads, many messages in flight each. */
struct worker_arg {
	struct vr_spool *sp;
	unsigned w, n;
	struct done *d;
	char (*qid)[VR_QID_MAX];
};

static void *worker_main(void *p)
{
	struct worker_arg *a = p;
	unsigned sent = 0, reaped = 0;

	while (reaped < a->n) {
		while (sent < a->n && sent - reaped < 16) {
			size_t n = (sent * 7919u + a->w * 104729u) % 70000;
			uint8_t *b = body_make(n, a->w << 16 | sent);
			struct vr_spool_envelope env = env_default;
			env.received_us = a->w << 16 | sent;
			struct vr_spool_txn *t = vr_spool_txn_begin(a->sp, a->w, &env, &a->d[sent]);
			if (!t || vr_spool_txn_write(t, b, n) != 0)
				abort();
			strcpy(a->qid[sent], vr_spool_txn_qid(t));
			vr_spool_txn_commit(t);
			free(b);
			sent++;
		}
		struct pollfd pfd = { .fd = vr_spool_done_fd(a->sp, a->w), .events = POLLIN };
		if (poll(&pfd, 1, 5000) != 1)
			abort();
		reaped += vr_spool_reap(a->sp, a->w, on_done, 1000);
	}
	return NULL;
}

static void test_threads(void **state)
{
	enum { W = 4, N = 150 };
	struct vr_spool *sp = spool_open(W);
	struct worker_arg a[W];
	pthread_t th[W];
	struct vr_spool_stats ss;

	assert_int_equal(vr_spool_start(sp), 0);
	for (unsigned i = 0; i < W; i++) {
		a[i] = (struct worker_arg){ sp, i, N, calloc(N, sizeof(struct done)),
					    calloc(N, VR_QID_MAX) };
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &a[i]), 0);
	}
	for (unsigned i = 0; i < W; i++)
		pthread_join(th[i], NULL);
	vr_spool_stats(sp, &ss);
	vr_spool_close(sp);
	assert_true(ss.committed == W * N && ss.failed == 0);
	assert_true(ss.fsyncs <= ss.batches);    /* one per batch at most */

	struct found f = scan_all(NULL);
	assert_int_equal(f.n, W * N);
	for (unsigned i = 0; i < W; i++) {
		for (unsigned k = 0; k < N; k++) {
			assert_int_equal(a[i].d[k].status, 0);
			struct got *g = find(&f, a[i].qid[k]);
			assert_non_null(g);
			size_t n = (k * 7919u + i * 104729u) % 70000;
			uint8_t *b = body_make(n, i << 16 | k);
			assert_int_equal(g->body_len, n);
			assert_memory_equal(g->body, b, n);
			assert_true(g->m.received_us == (i << 16 | k));
			free(b);
		}
		free(a[i].d);
		free(a[i].qid);
	}
	found_free(&f);
}

/* --- group commit --- */

static void test_group_commit(void **state)
{
	enum { N = 60 };
	struct vr_spool *sp = spool_open(2);
	struct done d[N] = { 0 };
	struct vr_spool_stats ss;

	/* Submitted before the committers run: one batch each takes them all. */
	for (unsigned i = 0; i < N; i++)
		put(sp, i % 2, &env_default, (const uint8_t *)"body\r\n", 6, 6, &d[i]);
	assert_int_equal(vr_spool_start(sp), 0);
	reap_n(sp, 0, N / 2);
	reap_n(sp, 1, N / 2);
	vr_spool_stats(sp, &ss);
	assert_int_equal(ss.batches, 2);          /* one per worker's committer */
	assert_int_equal(ss.fsyncs, 2);           /* one per segment */
	assert_int_equal(ss.committed, N);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(d[i].status, 0);
	vr_spool_close(sp);
}

/*
 * Each worker has its own committer: while the disk under worker 1's
 * segment hangs in fdatasync, worker 0's commits go on being acknowledged,
 * one by one; worker 1's comes back, durable, once its disk does.
 */
static void test_committers_independent(void **state)
{
	enum { N = 20 };
	struct vr_spool *sp = spool_open(2);
	struct done stuck = { 0 }, d[N] = { 0 };
	struct vr_spool_stats ss;

	assert_int_equal(vr_spool_start(sp), 0);
	__atomic_store_n(&slow_segment, "/seg/w1-", __ATOMIC_RELEASE);
	put(sp, 1, &env_default, (const uint8_t *)"stuck", 5, 5, &stuck);
	for (int i = 0; i < 5000 && !__atomic_load_n(&slow_waiting, __ATOMIC_ACQUIRE); i++)
		usleep(1000);
	assert_true(__atomic_load_n(&slow_waiting, __ATOMIC_ACQUIRE));
	for (unsigned i = 0; i < N; i++) {
		put(sp, 0, &env_default, (const uint8_t *)"goes", 4, 4, &d[i]);
		reap_n(sp, 0, 1);
		assert_true(d[i].called && d[i].status == 0);
	}
	struct pollfd pfd = { .fd = vr_spool_done_fd(sp, 1), .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 0), 0);
	assert_false(stuck.called);
	vr_spool_stats(sp, &ss);
	assert_int_equal(ss.committed, N);

	__atomic_store_n(&slow_release, 1, __ATOMIC_RELEASE);
	reap_n(sp, 1, 1);
	assert_int_equal(stuck.status, 0);
	vr_spool_stats(sp, &ss);
	assert_int_equal(ss.committed, N + 1);
	assert_int_equal(ss.fsyncs, N + 1);
	vr_spool_close(sp);

	struct found f = scan_all(NULL);
	assert_int_equal(f.n, N + 1);
	assert_non_null(find(&f, stuck.qid));
	found_free(&f);
}


/*
 * A committer that cannot be started: vr_spool_start fails and stops the
 * ones it did start (each commits what was submitted first); a later start
 * runs them all, and nothing submitted is lost.
 */
static void test_start_failure(void **state)
{
	struct vr_spool *sp = spool_open(3);
	struct done d[6] = { 0 };

	for (unsigned i = 0; i < 3; i++)
		put(sp, i, &env_default, (const uint8_t *)"before", 6, 6, &d[i]);
	__atomic_store_n(&fail_pthread_create, 2, __ATOMIC_RELAXED);  /* the second fails */
	assert_int_equal(vr_spool_start(sp), -EAGAIN);
	assert_int_equal(vr_spool_start(sp), 0);
	for (unsigned i = 0; i < 3; i++)
		put(sp, i, &env_default, (const uint8_t *)"after", 5, 5, &d[3 + i]);
	reap_n(sp, 0, 2);
	reap_n(sp, 1, 2);
	reap_n(sp, 2, 2);
	for (unsigned i = 0; i < 6; i++)
		assert_true(d[i].called && d[i].status == 0);
	assert_int_equal(vr_spool_start(sp), -EALREADY);
	vr_spool_close(sp);

	struct found f = scan_all(NULL);
	assert_int_equal(f.n, 6);
	found_free(&f);
}

/* Ends the injected faults, however their test ended. */
static int faults_teardown(void **state)
{
	__atomic_store_n(&slow_release, 1, __ATOMIC_RELEASE);
	__atomic_store_n(&slow_segment, NULL, __ATOMIC_RELEASE);
	__atomic_store_n(&fail_pthread_create, 0, __ATOMIC_RELAXED);
	return 0;
}

/* vr_spool_close commits what was submitted, even with no committer. */
static void test_close_commits(void **state)
{
	struct vr_spool *sp = spool_open(1);
	struct vr_spool_scan_stats st;

	put(sp, 0, &env_default, (const uint8_t *)"x", 1, 1, NULL);
	put(sp, 0, &env_default, (const uint8_t *)"y", 1, 1, NULL);
	vr_spool_close(sp);
	struct found f = scan_all(&st);
	assert_int_equal(f.n, 2);
	found_free(&f);
}

/* --- worker-side contract --- */

static void test_orphan_and_reap_max(void **state)
{
	struct vr_spool *sp = spool_open(1);
	struct done d[5] = { 0 };
	struct vr_spool_txn *t[5];

	for (int i = 0; i < 5; i++)
		t[i] = put(sp, 0, &env_default, (const uint8_t *)"x", 1, 1, &d[i]);
	vr_spool_txn_orphan(t[2]);
	assert_int_equal(vr_spool_start(sp), 0);
	struct pollfd pfd = { .fd = vr_spool_done_fd(sp, 0), .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 5000), 1);
	/* wait until all five are posted */
	for (int i = 0; i < 500; i++) {
		struct vr_spool_stats ss;
		vr_spool_stats(sp, &ss);
		if (ss.committed == 5)
			break;
		usleep(10000);
	}
	assert_int_equal(vr_spool_reap(sp, 0, on_done, 2), 2);
	/* Stopped by max: still readable for the rest. */
	assert_int_equal(poll(&pfd, 1, 0), 1);
	assert_int_equal(vr_spool_reap(sp, 0, on_done, 100), 3);
	assert_int_equal(poll(&pfd, 1, 0), 0);
	assert_false(d[2].called);              /* orphaned: no callback */
	for (int i = 0; i < 5; i++)
		assert_true(i == 2 || (d[i].called && d[i].status == 0));
	vr_spool_close(sp);

	struct found f = scan_all(NULL);
	assert_int_equal(f.n, 5);               /* the orphan is durable all the same */
	found_free(&f);
}

static void test_bad_envelope(void **state)
{
	struct vr_spool *sp = spool_open(2);
	char *huge = malloc(70000);
	struct vr_spool_envelope env = env_default;

	memset(huge, 'h', 69999);
	huge[69999] = '\0';
	env.helo = huge;
	errno = 0;
	assert_null(vr_spool_txn_begin(sp, 0, &env, NULL));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(vr_spool_txn_begin(sp, 2, &env_default, NULL));
	assert_int_equal(errno, EINVAL);
	free(huge);
	vr_spool_close(sp);
}

static void test_open_errors(void **state)
{
	char err[256] = "";
	char path[512];

	assert_null(vr_spool_open(dir, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "workers"));

	struct vr_spool *sp = spool_open(1);
	assert_null(vr_spool_open(dir, 1, err, sizeof(err)));
	assert_non_null(strstr(err, "in use by another process"));
	vr_spool_close(sp);

	snprintf(path, sizeof(path), "%s/file", tmpdir);
	file_write(path, (const uint8_t *)"x", 1);
	assert_null(vr_spool_open(path, 1, err, sizeof(err)));
	assert_non_null(strstr(err, path));
	snprintf(path, sizeof(path), "%s/no/such/dir", tmpdir);
	assert_null(vr_spool_open(path, 1, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot create"));
	assert_int_equal(vr_spool_scan(path, collect, NULL, NULL), -ENOENT);
}

/* Runs that accept nothing leave no files behind. */
static void test_empty_segments_removed(void **state)
{
	for (int i = 0; i < 3; i++)
		vr_spool_close(spool_open(2));
	assert_int_equal(seg_count(), 2);
	struct vr_spool *sp = spool_open(2);
	put(sp, 1, &env_default, (const uint8_t *)"x", 1, 1, NULL);
	vr_spool_close(sp);
	vr_spool_close(spool_open(2));
	assert_int_equal(seg_count(), 3);      /* the one with a message, two new */
}

/*
 * Queue IDs sort by time and never repeat across runs, even if the clock
 * went back: a segment holding an ID an hour ahead pushes new IDs past it.
 */
static void test_qid_after_restart(void **state)
{
	struct vr_spool *sp = spool_open(1);
	struct vr_seg seg;
	char ahead[VR_QID_MAX], path[512];
	uint64_t t;

	vr_spool_close(sp);
	snprintf(path, sizeof(path), "%s/seg", dir);
	int segdir = open(path, O_RDONLY | O_DIRECTORY);
	assert_int_equal(vr_seg_create(&seg, segdir, 5, 99, 1234), 0);
	vr_qid_format(ahead, (uint64_t)time(NULL) * 1000000 + 3600000000ull, 5);
	assert_true(vr_qid_time(ahead, &t));
	size_t len = vr_rec_env_size(&env_default, ahead);
	uint8_t *rec = malloc(len + VR_REC_END_SIZE);
	vr_rec_env_encode(rec, &env_default, ahead, 1234);
	vr_rec_end_encode(rec + len, 0, 0, 1234);
	struct iovec iov = { rec, len + VR_REC_END_SIZE };
	assert_int_equal(vr_seg_write(&seg, &iov, 1), 0);
	vr_seg_close(&seg);
	close(segdir);
	free(rec);

	sp = spool_open(1);
	assert_int_equal(vr_spool_recovered(sp)->messages, 1);
	struct vr_spool_txn *txn = vr_spool_txn_begin(sp, 0, &env_default, NULL);
	uint64_t t2;
	assert_true(vr_qid_time(vr_spool_txn_qid(txn), &t2));
	assert_true(t2 > t);
	assert_true(strcmp(vr_spool_txn_qid(txn), ahead) > 0);
	vr_spool_txn_abort(txn);
	vr_spool_close(sp);
}

/* --- recovery --- */

/* Commits bodies of the given sizes on one worker; returns their QIDs. */
static void commit_sizes(const size_t *sizes, unsigned n, char (*qid)[VR_QID_MAX])
{
	struct vr_spool *sp = spool_open(1);
	struct done d[16] = { 0 };

	assert_int_equal(vr_spool_start(sp), 0);
	for (unsigned i = 0; i < n; i++) {
		uint8_t *b = body_make(sizes[i], i);
		struct vr_spool_txn *t = put(sp, 0, &env_default, b, sizes[i], 4096, &d[i]);
		strcpy(qid[i], vr_spool_txn_qid(t));
		free(b);
		reap_n(sp, 0, 1);       /* one at a time: file order is commit order */
		assert_int_equal(d[i].status, 0);
	}
	vr_spool_close(sp);
}

/* Checks that exactly the messages in want[] (by index) are there, intact. */
static void expect_messages(char (*qid)[VR_QID_MAX], const size_t *sizes, unsigned n,
			    const bool *want, struct vr_spool_scan_stats *st)
{
	struct found f = scan_all(st);
	unsigned n_want = 0;

	for (unsigned i = 0; i < n; i++) {
		struct got *g = find(&f, qid[i]);
		n_want += want[i];
		if (!want[i]) {
			assert_null(g);
			continue;
		}
		assert_non_null(g);
		uint8_t *b = body_make(sizes[i], i);
		assert_int_equal(g->body_len, sizes[i]);
		assert_memory_equal(g->body, b, sizes[i]);
		check_envelope(g, &env_default);
		free(b);
	}
	assert_int_equal(f.n, n_want);
	found_free(&f);
}

static void test_recovery_torn_tail(void **state)
{
	static const size_t sizes[] = { 100, 30000, 20000 };
	char qid[3][VR_QID_MAX], path[512];
	uint8_t *file;
	size_t len;

	commit_sizes(sizes, 3, qid);
	struct found f = scan_all(NULL);
	assert_int_equal(f.n, 3);
	seg_path(path, sizeof(path), find(&f, qid[2])->m.segment);
	uint64_t last = find(&f, qid[2])->m.offset;
	found_free(&f);
	file_read(path, &file, &len);

	/* Every cut inside the last message: the first two stay, the third
	 * is gone and counted as a torn tail, never as damage. */
	for (size_t cut = last; cut <= len; cut += cut < last + 64 || cut > len - 64 ? 1 : 61) {
		struct vr_spool_scan_stats st;
		const bool want[3] = { true, true, cut == len };
		file_write(path, file, cut);
		expect_messages(qid, sizes, 3, want, &st);
		assert_int_equal(st.torn, cut > last && cut < len);
		assert_int_equal(st.tails, st.torn);
		assert_int_equal(st.bad_records, 0);
	}
	/* Recovery at open says the same, and new appends go elsewhere. */
	file_write(path, file, len - 5);
	struct vr_spool *sp = spool_open(1);
	assert_int_equal(vr_spool_recovered(sp)->messages, 2);
	assert_int_equal(vr_spool_recovered(sp)->torn, 1);
	put(sp, 0, &env_default, (const uint8_t *)"new", 3, 3, NULL);
	vr_spool_close(sp);
	struct vr_spool_scan_stats st;
	f = scan_all(&st);
	assert_int_equal(f.n, 3);
	assert_int_equal(st.tails, 1);
	found_free(&f);
	free(file);
}

/* A zero-filled tail (a crash after the size grew, before the data did). */
static void test_recovery_zero_tail(void **state)
{
	static const size_t sizes[] = { 500 };
	char qid[1][VR_QID_MAX], path[512];
	uint8_t *file;
	size_t len;

	commit_sizes(sizes, 1, qid);
	struct found f = scan_all(NULL);
	seg_path(path, sizeof(path), f.v[0].m.segment);
	found_free(&f);
	file_read(path, &file, &len);
	file = realloc(file, len + 8192);
	memset(file + len, 0, 8192);
	file_write(path, file, len + 8192);

	struct vr_spool_scan_stats st;
	const bool want[1] = { true };
	expect_messages(qid, sizes, 1, want, &st);
	assert_int_equal(st.tails, 1);
	assert_int_equal(st.bad_records, 0);
	free(file);
}

/* A flipped byte anywhere in a middle message costs that message only. */
static void test_recovery_flip(void **state)
{
	static const size_t sizes[] = { 1000, 50000, 3000, 0, 7000 };
	char qid[5][VR_QID_MAX], path[512];
	uint8_t *file;
	size_t len;
	uint32_t seed = 99;

	commit_sizes(sizes, 5, qid);
	struct found f = scan_all(NULL);
	seg_path(path, sizeof(path), f.v[0].m.segment);
	uint64_t start = find(&f, qid[1])->m.offset, end = find(&f, qid[2])->m.offset;
	found_free(&f);
	file_read(path, &file, &len);

	/* Every header byte of the first records, then samples of the rest. */
	for (uint64_t pos = start; pos < end; pos += pos < start + 200 ? 1 : 1 + rnd(&seed) % 1500) {
		struct vr_spool_scan_stats st;
		const bool want[5] = { true, false, true, true, true };
		file[pos] ^= 0x20;
		file_write(path, file, len);
		expect_messages(qid, sizes, 5, want, &st);
		assert_int_equal(st.torn, 1);
		assert_true(st.bad_records >= 1);
		assert_int_equal(st.tails, 0);
		file[pos] ^= 0x20;
	}
	/* The same through recovery. */
	file[end - 3] ^= 0x01;                  /* inside message 2's END */
	file_write(path, file, len);
	struct vr_spool *sp = spool_open(1);
	assert_int_equal(vr_spool_recovered(sp)->messages, 4);
	assert_int_equal(vr_spool_recovered(sp)->torn, 1);
	vr_spool_close(sp);
	free(file);
}

/*
 * A body may hold well-formed records, but they are sealed with a salt the
 * sender cannot know: however the enclosing message is torn or damaged, no
 * forged message comes out of recovery.
 */
static void test_forged_records_in_body(void **state)
{
	static const char *const victim[] = { "victim@example.org" };
	const struct vr_spool_envelope forged_env = {
		.account = "other", .client = "198.51.100.1", .helo = "x", .mail_from = "ceo@bank.example",
		.rcpts = victim, .n_rcpts = 1, .flags = 0, .received_us = 1,
	};
	char forged_qid[VR_QID_MAX], path[512];

	vr_qid_format(forged_qid, 1, 0);
	size_t elen = vr_rec_env_size(&forged_env, forged_qid);
	size_t forged_end = 4096 + elen + VR_REC_END_SIZE;    /* in the body */
	size_t n = forged_end + 4096;
	uint8_t *body = body_make(n, 1);
	/* The salts an attacker might try. */
	static const uint32_t guesses[] = { 0, 0x9e3779b9u, 0xffffffffu };
	for (unsigned k = 0; k < VR_ARRAY_SIZE(guesses); k++) {
		snprintf(dir, sizeof(dir), "%s/forged%u", tmpdir, k);
		vr_rec_env_encode(body + 4096, &forged_env, forged_qid, guesses[k]);
		vr_rec_end_encode(body + 4096 + elen, 0, 0, guesses[k]);
		struct vr_spool *sp = spool_open(1);
		put(sp, 0, &env_default, body, n, n, NULL);
		vr_spool_close(sp);

		struct found f = scan_all(NULL);
		assert_int_equal(f.n, 1);
		seg_path(path, sizeof(path), f.v[0].m.segment);
		uint64_t body_rec = f.v[0].m.offset + vr_rec_env_size(&env_default, f.v[0].m.qid);
		found_free(&f);
		uint8_t *file;
		size_t len;
		file_read(path, &file, &len);

		/* Damage the first BODY record's length: the reader resyncs
		 * through the body and must find nothing in it. */
		file[body_rec + 9] ^= 0xff;
		file_write(path, file, len);
		struct vr_spool_scan_stats st;
		f = scan_all(&st);
		assert_int_equal(f.n, 0);
		assert_int_equal(st.torn, 1);
		found_free(&f);
		/* A tear just after the forged records, as a crash would. */
		file[body_rec + 9] ^= 0xff;
		file_write(path, file, body_rec + VR_REC_HDR_SIZE + forged_end + 10);
		f = scan_all(&st);
		assert_int_equal(f.n, 0);
		assert_int_equal(st.tails, 1);
		found_free(&f);
		free(file);
	}
	free(body);
}

/* Records of a type this version does not know are skipped between messages. */
static void test_unknown_record_skipped(void **state)
{
	static const size_t sizes[] = { 10 };
	char qid[1][VR_QID_MAX], path[512];
	struct vr_seg_hdr h;
	uint8_t *file;
	size_t len;

	commit_sizes(sizes, 1, qid);
	struct found f = scan_all(NULL);
	seg_path(path, sizeof(path), f.v[0].m.segment);
	found_free(&f);
	file_read(path, &file, &len);
	assert_int_equal(vr_seg_hdr_parse(file, len, &h), VR_OK);

	/* A "delivered" record (0x20, a later version's) after the message,
	 * then a copy of the message's records. */
	size_t msg_len = len - VR_SEG_HDR_SIZE, rec_len = VR_REC_HDR_SIZE + 5;
	file = realloc(file, len + rec_len + msg_len);
	memcpy(file + len + VR_REC_HDR_SIZE, "hello", 5);
	vr_rec_seal(file + len, 0x20, 5, h.salt);
	memcpy(file + len + rec_len, file + VR_SEG_HDR_SIZE, msg_len);
	file_write(path, file, len + rec_len + msg_len);

	struct vr_spool_scan_stats st;
	f = scan_all(&st);
	assert_int_equal(f.n, 2);
	assert_true(st.torn == 0 && st.bad_records == 0 && st.tails == 0);
	found_free(&f);
	free(file);
}

static void test_bad_segment_header(void **state)
{
	static const size_t sizes[] = { 10, 20 };
	char qid[2][VR_QID_MAX], path[512];
	uint8_t *file;
	size_t len;

	commit_sizes(sizes, 2, qid);
	struct found f = scan_all(NULL);
	seg_path(path, sizeof(path), f.v[0].m.segment);
	found_free(&f);
	file_read(path, &file, &len);
	file[20] ^= 1;
	file_write(path, file, len);
	struct vr_spool_scan_stats st;
	f = scan_all(&st);
	assert_int_equal(f.n, 0);
	assert_int_equal(st.bad_segments, 1);
	found_free(&f);
	/* Recovery leaves the file alone for the operator. */
	struct vr_spool *sp = spool_open(1);
	assert_int_equal(vr_spool_recovered(sp)->bad_segments, 1);
	vr_spool_close(sp);
	assert_int_equal(access(path, F_OK), 0);
	free(file);
}

/* --- crash --- */

/* A txn in the child: what the parent needs to check it after the kill. */
struct crash_txn {
	uint32_t seed;
	size_t size;
	int fd;
};

static void crash_done(void *cookie, int status, const char *qid)
{
	struct crash_txn *c = cookie;
	char line[128];

	if (status != 0)
		_exit(3);
	int n = snprintf(line, sizeof(line), "%s %u %zu\n", qid, c->seed, c->size);
	if (write(c->fd, line, (size_t)n) != n)
		_exit(4);
	free(c);
}

/* The child: commits messages on two workers until killed. */
static void crash_child(int fd, uint32_t seed)
{
	char err[256];
	struct vr_spool *sp = vr_spool_open(dir, 2, err, sizeof(err));
	unsigned in_flight[2] = { 0, 0 };

	if (!sp || vr_spool_start(sp) != 0)
		_exit(2);
	for (uint32_t i = 0;; i++) {
		unsigned w = i & 1;
		struct crash_txn *c = malloc(sizeof(*c));
		c->seed = seed * 1000003u + i;
		/* Mostly small, now and then a big one that takes a while
		 * to write, so some kills land in the middle of a write. */
		c->size = i % 8 == 7 ? 2000000 + rnd(&seed) % 1000000 : rnd(&seed) % 60000;
		c->fd = fd;
		uint8_t *b = body_make(c->size, c->seed);
		struct vr_spool_txn *t = vr_spool_txn_begin(sp, w, &env_default, c);
		if (!t || vr_spool_txn_write(t, b, c->size) != 0)
			_exit(5);
		free(b);
		vr_spool_txn_commit(t);
		in_flight[w]++;
		while (in_flight[w] >= 4) {
			struct pollfd pfd = { .fd = vr_spool_done_fd(sp, w), .events = POLLIN };
			poll(&pfd, 1, 1000);
			in_flight[w] -= vr_spool_reap(sp, w, crash_done, 64);
		}
	}
}

/* A message the child acknowledged, and whether the parent found it. */
struct acked {
	char qid[VR_QID_MAX];
	unsigned seed;
	size_t size;
	bool found;
};

struct acked_list {
	struct acked *v;
	size_t n;
};

struct body_cmp {
	const uint8_t *want;
	size_t off, len;
};

static int body_compare(const void *p, size_t n, void *arg)
{
	struct body_cmp *c = arg;

	if (n > c->len - c->off || memcmp(c->want + c->off, p, n) != 0)
		return 1;
	c->off += n;
	return 0;
}

static int acked_check(const struct vr_spool_msg *m, void *arg)
{
	struct acked_list *l = arg;

	for (size_t i = 0; i < l->n; i++) {
		struct acked *a = &l->v[i];
		if (strcmp(a->qid, m->qid) != 0)
			continue;
		struct body_cmp c = { body_make(a->size, a->seed), 0, a->size };
		assert_int_equal(m->size, a->size);
		assert_int_equal(vr_spool_read_body(dir, m, body_compare, &c), 0);
		assert_int_equal(c.off, a->size);
		free((void *)c.want);
		a->found = true;
	}
	return 0;
}

/* The child's lines: "QID SEED SIZE", one per acknowledged message. */
static struct acked_list acked_parse(char *buf, size_t n)
{
	struct acked_list l = { calloc(n / 8 + 1, sizeof(struct acked)), 0 };

	buf[n] = '\0';
	for (char *line = buf, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
		struct acked *a = &l.v[l.n++];
		*nl = '\0';
		assert_int_equal(sscanf(line, "%23s %u %zu", a->qid, &a->seed, &a->size), 3);
	}
	return l;
}

static void test_crash(void **state)
{
	enum { CYCLES = 24 };
	uint32_t seed = 20240501;
	unsigned checked = 0;
	uint64_t tails = 0;

	for (unsigned cycle = 0; cycle < CYCLES; cycle++) {
		int p[2];
		assert_int_equal(pipe(p), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			crash_child(p[1], seed + cycle);
		}
		close(p[1]);
		usleep(20000 + rnd(&seed) % 150000);
		kill(pid, SIGKILL);
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status));   /* not an early _exit(n) */

		/* Every QID the child printed after its completion is intact. */
		static char buf[1 << 16];
		size_t n = 0;
		ssize_t r;
		while ((r = read(p[0], buf + n, sizeof(buf) - 1 - n)) > 0)
			n += (size_t)r;
		close(p[0]);
		struct acked_list l = acked_parse(buf, n);
		struct vr_spool_scan_stats st;
		assert_int_equal(vr_spool_scan(dir, acked_check, &l, &st), 0);
		for (size_t i = 0; i < l.n; i++)
			if (!l.v[i].found)
				fail_msg("cycle %u: %s acknowledged but not in the spool", cycle, l.v[i].qid);
		assert_int_equal(st.bad_records, 0);
		assert_int_equal(st.bad_segments, 0);
		assert_int_equal(st.torn, st.tails);
		tails = st.tails;
		checked += (unsigned)l.n;
		free(l.v);
	}
	assert_true(checked > CYCLES);          /* the children did commit */
	print_message("crash: %u cycles, %u acknowledged messages checked, %llu torn tails left\n",
		      CYCLES, checked, (unsigned long long)tails);
}

/* --- I/O errors --- */

/*
 * A failed fdatasync: the batch gets -EIO, never 0; the segment is given up
 * (what it held durably stays readable) and the next commit goes to a fresh
 * segment and succeeds.
 */
static void test_fdatasync_failure(void **state)
{
	struct vr_spool *sp = spool_open(1);
	struct done d[3] = { 0 };
	struct vr_spool_stats ss;

	assert_int_equal(vr_spool_start(sp), 0);
	put(sp, 0, &env_default, (const uint8_t *)"first", 5, 5, &d[0]);
	reap_n(sp, 0, 1);
	fail_set(&fail_fdatasync, EIO);
	put(sp, 0, &env_default, (const uint8_t *)"second", 6, 6, &d[1]);
	reap_n(sp, 0, 1);
	fail_set(&fail_fdatasync, 0);
	put(sp, 0, &env_default, (const uint8_t *)"third", 5, 5, &d[2]);
	reap_n(sp, 0, 1);
	vr_spool_stats(sp, &ss);
	vr_spool_close(sp);
	assert_int_equal(d[0].status, 0);
	assert_int_equal(d[1].status, -EIO);
	assert_int_equal(d[2].status, 0);
	assert_int_equal(ss.abandoned, 1);
	assert_int_equal(ss.segments, 2);

	struct vr_spool_scan_stats st;
	struct found f = scan_all(&st);
	assert_int_equal(f.n, 2);
	assert_non_null(find(&f, d[0].qid));
	assert_null(find(&f, d[1].qid));
	assert_non_null(find(&f, d[2].qid));
	assert_string_not_equal(find(&f, d[0].qid)->m.segment, find(&f, d[2].qid)->m.segment);
	assert_true(st.torn == 0 && st.bad_records == 0);
	found_free(&f);
}

/*
 * A failed write whose cut-back fails too: the segment ends in the failed
 * batch's bytes, so it is given up; they read as a torn tail, never as a
 * message, and new commits go to a fresh segment.
 */
static void test_truncate_failure(void **state)
{
	struct vr_spool *sp = spool_open(1);
	struct done d[3] = { 0 };
	uint8_t *big = body_make(300000, 9);
	struct rlimit old, lim;
	struct vr_spool_stats ss;

	assert_int_equal(vr_spool_start(sp), 0);
	put(sp, 0, &env_default, big, 1000, 1000, &d[0]);
	reap_n(sp, 0, 1);
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = 200000;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	fail_set(&fail_ftruncate, EIO);
	put(sp, 0, &env_default, big, 300000, 300000, &d[1]);
	reap_n(sp, 0, 1);
	fail_set(&fail_ftruncate, 0);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	put(sp, 0, &env_default, big, 300000, 300000, &d[2]);
	reap_n(sp, 0, 1);
	vr_spool_stats(sp, &ss);
	vr_spool_close(sp);
	assert_int_equal(d[0].status, 0);
	assert_int_equal(d[1].status, -EFBIG);
	assert_int_equal(d[2].status, 0);
	assert_int_equal(ss.abandoned, 1);

	struct vr_spool_scan_stats st;
	struct found f = scan_all(&st);
	assert_int_equal(f.n, 2);
	assert_null(find(&f, d[1].qid));
	assert_memory_equal(find(&f, d[2].qid)->body, big, 300000);
	assert_int_equal(st.tails, 1);
	assert_int_equal(st.torn, 1);
	assert_int_equal(st.bad_records, 0);
	found_free(&f);
	free(big);
}

/* --- disk full --- */

/*
 * The file-size limit gives EFBIG where a full disk gives ENOSPC, through
 * the same path: the batch fails and the segment is cut back. A file at its
 * size limit takes no more, so the next commits go to a new segment.
 */
static void test_file_size_limit(void **state)
{
	struct vr_spool *sp = spool_open(1);
	struct rlimit old, lim;
	struct done d[4] = { 0 };
	uint8_t *big = body_make(200000, 3);
	struct vr_spool_stats ss;
	char path[512];
	struct stat st;

	assert_int_equal(vr_spool_start(sp), 0);
	put(sp, 0, &env_default, big, 1000, 1000, &d[0]);
	reap_n(sp, 0, 1);
	assert_int_equal(d[0].status, 0);

	struct found f = scan_all(NULL);
	seg_path(path, sizeof(path), f.v[0].m.segment);
	found_free(&f);
	assert_int_equal(stat(path, &st), 0);
	off_t before = st.st_size;

	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = (rlim_t)before + 50000;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	put(sp, 0, &env_default, big, 200000, 65536, &d[1]);
	reap_n(sp, 0, 1);
	assert_int_equal(d[1].status, -EFBIG);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, before);  /* cut back: the file stays clean */
	put(sp, 0, &env_default, big, 5000, 5000, &d[2]);
	reap_n(sp, 0, 1);
	assert_int_equal(d[2].status, 0);      /* what fits still goes */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	put(sp, 0, &env_default, big, 200000, 65536, &d[3]);
	reap_n(sp, 0, 1);
	assert_int_equal(d[3].status, 0);
	vr_spool_stats(sp, &ss);
	assert_int_equal(ss.failed, 1);
	assert_int_equal(ss.abandoned, 0);
	assert_int_equal(ss.segments, 2);
	vr_spool_close(sp);

	struct vr_spool_scan_stats sst;
	f = scan_all(&sst);
	assert_int_equal(f.n, 3);
	assert_null(find(&f, d[1].qid));
	assert_string_not_equal(find(&f, d[0].qid)->m.segment, find(&f, d[2].qid)->m.segment);
	assert_memory_equal(find(&f, d[3].qid)->body, big, 200000);
	assert_true(sst.torn == 0 && sst.bad_records == 0);
	found_free(&f);
	free(big);
}

/* A real full disk: a small tmpfs (needs root; skipped otherwise). */
static void test_disk_full_tmpfs(void **state)
{
	char mnt[300], filler[320];
	uint8_t *big = body_make(100000, 4);
	struct done d[64] = { 0 };
	unsigned n = 0, ok = 0;

	snprintf(mnt, sizeof(mnt), "%s/tmpfs", tmpdir);
	assert_int_equal(mkdir(mnt, 0700), 0);
	if (mount("vr_test_spool", mnt, "tmpfs", 0, "size=1m") < 0) {
		rmdir(mnt);
		free(big);
		print_message("disk full on tmpfs: skipped, mount: %s\n", strerror(errno));
		skip();
	}
	snprintf(dir, sizeof(dir), "%s/spool", mnt);
	snprintf(filler, sizeof(filler), "%s/filler", mnt);
	uint8_t *fill = body_make(400000, 5);
	file_write(filler, fill, 400000);
	free(fill);

	struct vr_spool *sp = spool_open(1);
	assert_int_equal(vr_spool_start(sp), 0);
	/* Fill up: every status is 0 or -ENOSPC, and the first failure is
	 * -ENOSPC. */
	do {
		put(sp, 0, &env_default, big, 100000, 8192, &d[n]);
		reap_n(sp, 0, 1);
		assert_true(d[n].status == 0 || d[n].status == -ENOSPC);
		ok += d[n].status == 0;
	} while (d[n++].status == 0 && n < 20);
	assert_int_equal(d[n - 1].status, -ENOSPC);
	assert_true(ok >= 1);
	/* Space comes back: the next commit just works. */
	assert_int_equal(unlink(filler), 0);
	put(sp, 0, &env_default, big, 100000, 8192, &d[n]);
	reap_n(sp, 0, 1);
	assert_int_equal(d[n].status, 0);
	n++;
	ok++;
	vr_spool_close(sp);

	struct vr_spool_scan_stats st;
	struct found f = scan_all(&st);
	assert_int_equal(f.n, ok);
	for (unsigned i = 0; i < n; i++)
		assert_true((find(&f, d[i].qid) != NULL) == (d[i].status == 0));
	assert_true(st.torn == 0 && st.bad_records == 0);
	found_free(&f);
	free(big);
}

/* Unmounts the tmpfs however its test ended. */
static int tmpfs_teardown(void **state)
{
	char mnt[300];

	snprintf(mnt, sizeof(mnt), "%s/tmpfs", tmpdir);
	umount2(mnt, MNT_DETACH);
	rmdir(mnt);
	return 0;
}

/* --- queue state: records, logs, the hook, compaction --- */

#define T_OLD 1000000ull        /* before any message: nothing is old enough */

static void test_event_codec(void **state)
{
	char qid[VR_QID_MAX];
	vr_qid_format(qid, 1700000000123456ull, 3);
	struct vr_spool_event ev = {
		.type = VR_STATE_DEFERRED, .rcpt = 7, .attempts = 3, .at_us = 1700000001000000ull,
		.next_us = 1700000301000000ull, .text = "451 4.3.0 try later", .text_len = 19,
	};
	snprintf(ev.qid, sizeof(ev.qid), "%s", qid);
	size_t size = vr_rec_event_size(&ev);
	assert_true(size > VR_REC_HDR_SIZE);
	uint8_t *rec = malloc(size);
	vr_rec_event_encode(rec, &ev, 42);

	struct vr_rec r;
	size_t used;
	assert_int_equal(vr_rec_parse(rec, size, 42, &r, &used), VR_OK);
	assert_int_equal(used, size);
	assert_int_equal(r.type, VR_STATE_DEFERRED);
	struct vr_spool_event back;
	assert_int_equal(vr_rec_event_decode(r.type, r.payload, r.len, &back), 0);
	assert_string_equal(back.qid, qid);
	assert_int_equal(back.rcpt, 7);
	assert_int_equal(back.attempts, 3);
	assert_true(back.at_us == ev.at_us && back.next_us == ev.next_us);
	assert_int_equal(back.text_len, 19);
	assert_memory_equal(back.text, ev.text, 19);
	/* Message records are not events; a truncated payload is refused. */
	assert_int_equal(vr_rec_event_decode(VR_REC_BODY, r.payload, r.len, &back), -EBADMSG);
	assert_int_equal(vr_rec_event_decode(r.type, r.payload, r.len - 1, &back), -EBADMSG);
	free(rec);

	/* What no record can be: a type outside 0x20-0x5f, a bad queue ID. */
	ev.type = VR_REC_END;
	assert_int_equal(vr_rec_event_size(&ev), 0);
	ev.type = VR_STATE_HELD;
	snprintf(ev.qid, sizeof(ev.qid), "not-a-qid");
	assert_int_equal(vr_rec_event_size(&ev), 0);
}

/* A message's state as vr_spool_queue_scan() handed it over. */
struct qgot {
	char qid[VR_QID_MAX];
	uint8_t rcpt[4];
	unsigned n_rcpts, pending;
	uint32_t attempts;
	uint64_t next_us;
	bool held, deleted;
	char dkim[128];
};

struct qfound {
	struct qgot v[8];
	unsigned n;
};

static int qcollect(const struct vr_spool_msg *m, const struct vr_spool_qstate *st, void *arg)
{
	struct qfound *f = arg;

	assert_true(f->n < VR_ARRAY_SIZE(f->v));
	struct qgot *g = &f->v[f->n++];
	memset(g, 0, sizeof(*g));
	snprintf(g->qid, sizeof(g->qid), "%s", m->qid);
	g->n_rcpts = m->n_rcpts;
	memcpy(g->rcpt, st->rcpt, VR_MIN(m->n_rcpts, 4u));
	g->pending = st->pending;
	g->attempts = st->attempts;
	g->next_us = st->next_us;
	g->held = st->held;
	g->deleted = st->deleted;
	if (st->dkim)
		snprintf(g->dkim, sizeof(g->dkim), "%.*s", (int)st->dkim_len, st->dkim);
	return 0;
}

static int log_ev(struct vr_spool_log *log, uint8_t type, const char *qid, uint32_t rcpt,
		  uint32_t attempts, uint64_t at, uint64_t next, const char *text)
{
	struct vr_spool_event ev = {
		.type = type, .rcpt = rcpt, .attempts = attempts, .at_us = at, .next_us = next,
		.text = text, .text_len = strlen(text),
	};
	snprintf(ev.qid, sizeof(ev.qid), "%s", qid);
	return vr_spool_log_append(log, &ev);
}

/* Commits n two-recipient messages on worker 0, their queue IDs to qid. */
static void commit_two(unsigned n, char (*qid)[VR_QID_MAX], struct vr_spool_envelope *env)
{
	struct vr_spool *sp = spool_open(1);
	struct done d[8] = { 0 };

	for (unsigned i = 0; i < n; i++) {
		struct vr_spool_txn *t = put(sp, 0, env, (const uint8_t *)"x\r\n", 3, 3, &d[i]);
		snprintf(qid[i], VR_QID_MAX, "%s", vr_spool_txn_qid(t));
	}
	vr_spool_close(sp);
}

static void test_state_recovery(void **state)
{
	char qid[4][VR_QID_MAX], err[256];
	struct vr_spool_envelope env = env_default;
	commit_two(3, qid, &env);
	env.flags |= VR_SPOOL_HOLD;
	commit_two(1, qid + 3, &env);

	/* Two runs of the delivery thread, each with its own log. */
	struct vr_spool_log *log = vr_spool_log_open(dir, 0, err, sizeof(err));
	assert_non_null(log);
	assert_int_equal(log_ev(log, VR_SPOOL_DKIM, qid[0], VR_SPOOL_ALL, 0, 10, 0,
				"DKIM-Signature: v=1\r\n"), 0);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 0, 1, 11, 0, "250 ok"), 0);
	assert_int_equal(log_ev(log, VR_STATE_DEFERRED, qid[0], 1, 1, 12, 500, "451 later"), 0);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[1], 0, 1, 13, 0, "250 ok"), 0);
	assert_int_equal(log_ev(log, VR_STATE_BOUNCED, qid[1], 1, 1, 14, 0, "550 no"), 0);
	assert_int_equal(vr_spool_log_pending(log), 5);
	assert_int_equal(vr_spool_log_sync(log), 0);
	assert_int_equal(vr_spool_log_pending(log), 0);
	/* Not synced: close does it. */
	assert_int_equal(log_ev(log, VR_STATE_DELETED, qid[2], VR_SPOOL_ALL, 0, 15, 0, ""), 0);
	vr_spool_log_close(log);
	log = vr_spool_log_open(dir, 0, err, sizeof(err));
	assert_non_null(log);
	assert_int_equal(log_ev(log, VR_STATE_DEFERRED, qid[0], 1, 2, 20, 900, "451 again"), 0);
	/* A later run delivering a recipient already delivered changes nothing. */
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 0, 2, 21, 0, "250 again"), 0);
	assert_int_equal(log_ev(log, VR_STATE_RELEASED, qid[3], VR_SPOOL_ALL, 0, 22, 0, ""), 0);
	/* An index past the recipients is ignored, not trusted. */
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[3], 9, 0, 23, 0, ""), 0);
	vr_spool_log_close(log);

	struct qfound f = { 0 };
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &f), 0);
	assert_int_equal(f.n, 4);
	/* qid 0: one recipient delivered, one deferred twice; signed once. */
	assert_string_equal(f.v[0].qid, qid[0]);
	assert_int_equal(f.v[0].pending, 1);
	assert_int_equal(f.v[0].rcpt[0], VR_STATE_DELIVERED);
	assert_int_equal(f.v[0].rcpt[1], 0);
	assert_int_equal(f.v[0].attempts, 2);
	assert_true(f.v[0].next_us == 900);
	assert_string_equal(f.v[0].dkim, "DKIM-Signature: v=1\r\n");
	/* qid 1: every recipient final. */
	assert_int_equal(f.v[1].pending, 0);
	assert_int_equal(f.v[1].rcpt[1], VR_STATE_BOUNCED);
	assert_string_equal(f.v[1].dkim, "");
	/* qid 2: deleted by the operator; recipients untouched. */
	assert_true(f.v[2].deleted);
	assert_int_equal(f.v[2].pending, 2);
	/* qid 3: accepted on hold, then released. */
	assert_false(f.v[3].held);
	assert_int_equal(f.v[3].pending, 2);
}

/* A flush returns at once and the syncer makes the events durable on its
 * own, with the log still open; a sync waits for whatever is left. */
static void test_state_log_flush(void **state)
{
	char qid[2][VR_QID_MAX], err[256];
	struct vr_spool_envelope env = env_default;
	commit_two(2, qid, &env);

	struct vr_spool_log *log = vr_spool_log_open(dir, 0, err, sizeof(err));
	assert_non_null(log);
	assert_int_equal(vr_spool_log_flush(log), 0);      /* nothing yet: nothing to do */
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 0, 1, 11, 0, "250 ok"), 0);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 1, 1, 12, 0, "250 ok"), 0);
	assert_int_equal(vr_spool_log_pending(log), 2);
	assert_int_equal(vr_spool_log_flush(log), 0);
	for (unsigned i = 0; i < 5000 && vr_spool_log_pending(log); i++)
		usleep(1000);
	assert_int_equal(vr_spool_log_pending(log), 0);
	struct qfound f = { 0 };
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &f), 0);
	assert_int_equal(f.n, 2);
	assert_string_equal(f.v[0].qid, qid[0]);
	assert_int_equal(f.v[0].pending, 0);               /* done, on disk */
	assert_int_equal(f.v[1].pending, 2);

	/* Appended behind a flush, made durable by a sync before it returns. */
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[1], 0, 1, 13, 0, "250 ok"), 0);
	assert_int_equal(vr_spool_log_flush(log), 0);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[1], 1, 1, 14, 0, "250 ok"), 0);
	assert_int_equal(vr_spool_log_sync(log), 0);
	assert_int_equal(vr_spool_log_pending(log), 0);
	memset(&f, 0, sizeof(f));
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &f), 0);
	assert_int_equal(f.n, 2);
	assert_int_equal(f.v[1].pending, 0);
	vr_spool_log_close(log);
}

/* Commits n two-recipient messages (their IDs to qid) and opens state log
 * 0 with one event in its first file, durable: qid[0]'s recipient 0
 * delivered. */
static struct vr_spool_log *log_started(unsigned n, char (*qid)[VR_QID_MAX])
{
	char err[256];
	struct vr_spool_envelope env = env_default;
	commit_two(n, qid, &env);

	struct vr_spool_log *log = vr_spool_log_open(dir, 0, err, sizeof(err));
	assert_non_null(log);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 0, 1, 10, 0, "250 ok"), 0);
	assert_int_equal(vr_spool_log_sync(log), 0);
	return log;
}

/* Records are written at once and synced a little later: an fdatasync
 * that fails (after a group went into the file unsynced, or with it)
 * costs no record - they all go again into a fresh file - and the owner
 * hears of it from a later flush. */
static void test_state_log_sync_failure(void **state)
{
	char qid[2][VR_QID_MAX];
	struct vr_spool_log *log = log_started(2, qid);

	fail_set(&fail_fdatasync, EIO);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 1, 1, 12, 0, "250 ok"), 0);
	int rc = vr_spool_log_flush(log);
	for (unsigned i = 0; i < 5000 && rc == 0; i++) {
		usleep(1000);
		rc = vr_spool_log_flush(log);
	}
	assert_int_equal(rc, -EIO);
	assert_int_equal(vr_spool_log_pending(log), 1);
	fail_set(&fail_fdatasync, 0);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[1], 0, 1, 13, 0, "250 ok"), 0);
	assert_int_equal(vr_spool_log_sync(log), 0);
	assert_int_equal(vr_spool_log_pending(log), 0);
	vr_spool_log_close(log);
	struct qfound f = { 0 };
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &f), 0);
	assert_int_equal(f.n, 2);
	assert_string_equal(f.v[0].qid, qid[0]);
	assert_int_equal(f.v[0].pending, 0);
	assert_int_equal(f.v[1].pending, 1);
}

/* The intact records of every state log of dir: a reader's view. */
static unsigned state_records(void)
{
	char path[512];
	unsigned n = 0;

	snprintf(path, sizeof(path), "%s/state", dir);
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fdopendir(dup(fd));
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		struct vr_seg_reader r;
		struct vr_rec rec;
		uint64_t off;
		int k;
		if (de->d_name[0] == '.' || vr_seg_reader_open(&r, fd, de->d_name) < 0)
			continue;
		while ((k = vr_seg_reader_next(&r, &rec, &off)) != VR_SEG_EOF)
			n += k == VR_SEG_RECORD;
		vr_seg_reader_close(&r);
	}
	closedir(d);
	close(fd);
	return n;
}

/* Voluntary context switches (sleeps) of this process's thread named comm
 * so far, from /proc: how often it was woken. */
static unsigned long thread_sleeps(const char *comm)
{
	char path[300], line[128];
	unsigned long n = 0;
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		bool match = fgets(line, sizeof(line), f) && strncmp(line, comm, strlen(comm)) == 0 &&
			     line[strlen(comm)] == '\n';
		fclose(f);
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", de->d_name);
		if (!match || !(f = fopen(path, "r")))
			continue;
		while (fgets(line, sizeof(line), f))
			sscanf(line, "voluntary_ctxt_switches: %lu", &n);
		fclose(f);
	}
	closedir(d);
	return n;
}

/* A flush per delivery-loop round does not cost a wake of the syncer
 * each, nor a sync: the syncer wakes and syncs about once per gap (10 ms)
 * whatever the rounds in between, and what they appended is all there
 * after a sync and after close. */
static void test_state_log_flush_batched(void **state)
{
	enum { ROUNDS = 1000 };
	char qid[2][VR_QID_MAX];
	struct vr_spool_log *log = log_started(2, qid);
	unsigned syncs = __atomic_load_n(&state_syncs, __ATOMIC_RELAXED);
	unsigned long sleeps = thread_sleeps("vr-statelog-0");
	uint64_t t0 = vr_clock_ms();
	for (unsigned i = 0; i < ROUNDS; i++) {
		assert_int_equal(log_ev(log, VR_STATE_DEFERRED, qid[1], 0, i + 1, 11 + i, 500 + i,
					"451 later"), 0);
		assert_int_equal(vr_spool_log_flush(log), 0);
		if (i % 10 == 0)
			usleep(100);        /* a loop that also waits for its sockets */
	}
	uint64_t ms = vr_clock_ms() - t0;
	syncs = __atomic_load_n(&state_syncs, __ATOMIC_RELAXED) - syncs;
	sleeps = thread_sleeps("vr-statelog-0") - sleeps;
	print_message("%u rounds in %" PRIu64 " ms: %u fdatasyncs, syncer slept %lu times\n",
		      ROUNDS, ms, syncs, sleeps);
	assert_true(syncs <= 2 + ms / 10);
	/* Per gap: its timed wait, the fdatasync's waits for the disk, now
	 * and then the mutex; never one per round. */
	assert_true(sleeps <= 10 + 6 * (ms / 10));
	assert_int_equal(vr_spool_log_sync(log), 0);
	assert_int_equal(vr_spool_log_pending(log), 0);
	assert_int_equal(state_records(), ROUNDS + 1);
	struct qfound f = { 0 };
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &f), 0);
	assert_int_equal(f.v[1].attempts, ROUNDS);
	assert_true(f.v[1].next_us == 500 + ROUNDS - 1);
	assert_int_equal(f.v[0].pending, 1);

	/* Flushed, not synced: close does it. */
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 1, 1, 2000, 0, "250 ok"), 0);
	assert_int_equal(vr_spool_log_flush(log), 0);
	vr_spool_log_close(log);
	assert_int_equal(state_records(), ROUNDS + 2);
	memset(&f, 0, sizeof(f));
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &f), 0);
	assert_int_equal(f.v[0].pending, 0);
}

/* A flushed record is in the file when flush returns, before its sync:
 * `queue show` sees it even while the disk hangs. */
static void test_state_log_flush_visible(void **state)
{
	char qid[1][VR_QID_MAX];
	struct vr_spool_log *log = log_started(1, qid);

	__atomic_store_n(&slow_waiting, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&slow_release, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&slow_segment, "/state/", __ATOMIC_RELEASE);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 1, 1, 11, 0, "250 ok"), 0);
	assert_int_equal(vr_spool_log_flush(log), 0);
	struct qfound f = { 0 };
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &f), 0);
	assert_int_equal(f.v[0].pending, 0);
	assert_int_equal(state_records(), 2);
	/* The syncer hangs in its fdatasync: not durable yet. */
	for (int i = 0; i < 5000 && !__atomic_load_n(&slow_waiting, __ATOMIC_ACQUIRE); i++)
		usleep(1000);
	assert_true(__atomic_load_n(&slow_waiting, __ATOMIC_ACQUIRE));
	assert_int_equal(vr_spool_log_pending(log), 1);
	__atomic_store_n(&slow_release, 1, __ATOMIC_RELEASE);
	assert_int_equal(vr_spool_log_sync(log), 0);
	assert_int_equal(vr_spool_log_pending(log), 0);
	vr_spool_log_close(log);
}

static void test_state_log_damage(void **state)
{
	char qid[2][VR_QID_MAX], err[256], path[512];
	struct vr_spool_envelope env = env_default;
	commit_two(2, qid, &env);

	struct vr_spool_log *log = vr_spool_log_open(dir, 1, err, sizeof(err));
	assert_non_null(log);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 0, 1, 11, 0, "250 a"), 0);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 1, 1, 12, 0, "250 b"), 0);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[1], 0, 1, 13, 0, "250 c"), 0);
	vr_spool_log_close(log);

	/* Flip a byte in the middle record's reply: it is lost, the others hold. */
	snprintf(path, sizeof(path), "%s/state/d1-0000000001.log", dir);
	uint8_t *p;
	size_t n;
	file_read(path, &p, &n);
	uint8_t *hit = memmem(p, n, "250 b", 5);
	assert_non_null(hit);
	*hit ^= 0x20;
	file_write(path, p, n);
	free(p);

	struct qfound f = { 0 };
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &f), 0);
	assert_int_equal(f.n, 2);
	assert_int_equal(f.v[0].rcpt[0], VR_STATE_DELIVERED);
	assert_int_equal(f.v[0].rcpt[1], 0);    /* tried again: never lost */
	assert_int_equal(f.v[0].pending, 1);
	assert_int_equal(f.v[1].pending, 1);

	/* Not a spool at all: said so. */
	assert_int_equal(vr_spool_queue_scan("/nonexistent/vr", qcollect, &f), -ENOENT);
}

/* The commit hook: every message made durable, where it lives. */
struct hooked {
	unsigned n;
	char qid[4][VR_QID_MAX];
	char segment[4][VR_SEG_NAME_MAX];
	uint64_t offset[4], size[4];
	unsigned n_rcpts[4];
};

static void on_commit(const struct vr_spool_msg *m, void *arg)
{
	struct hooked *h = arg;

	assert_true(h->n < 4);
	snprintf(h->qid[h->n], VR_QID_MAX, "%s", m->qid);
	snprintf(h->segment[h->n], VR_SEG_NAME_MAX, "%s", m->segment);
	h->offset[h->n] = m->offset;
	h->size[h->n] = m->size;
	h->n_rcpts[h->n] = m->n_rcpts;
	h->n++;
}

static void test_commit_hook(void **state)
{
	struct vr_spool *sp = spool_open(1);
	struct hooked h = { 0 };
	struct done d[3] = { 0 };
	uint8_t *body = body_make(3000, 7);

	vr_spool_on_commit(sp, on_commit, &h);
	assert_int_equal(vr_spool_start(sp), 0);
	for (unsigned i = 0; i < 3; i++)
		put(sp, 0, &env_default, body, 1000 * (i + 1), 700, &d[i]);
	reap_n(sp, 0, 3);
	vr_spool_close(sp);
	free(body);

	assert_int_equal(h.n, 3);
	struct found f = scan_all(NULL);
	assert_int_equal(f.n, 3);
	for (unsigned i = 0; i < 3; i++) {
		struct got *g = find(&f, h.qid[i]);
		assert_non_null(g);
		/* What the hook said is what a scan finds: enough to read the body. */
		assert_string_equal(h.segment[i], g->m.segment);
		assert_true(h.offset[i] == g->m.offset);
		assert_true(h.size[i] == 1000 * (i + 1));
		assert_int_equal(h.n_rcpts[i], 2);
	}
	found_free(&f);
}


/* Reads msg h[i] through sc whole: its body is want (n bytes). */
static void cached_read_check(struct vr_spool_segcache *sc, struct hooked *h, unsigned i,
			      const uint8_t *want, size_t n)
{
	struct vr_spool_msg m = { .segment = h->segment[i], .offset = h->offset[i],
				  .size = h->size[i], .n_rcpts = h->n_rcpts[i] };
	uint8_t back[4096];
	size_t got = 0;
	ssize_t r;

	memcpy(m.qid, h->qid[i], sizeof(m.qid));
	struct vr_spool_body *b = vr_spool_body_open_in(sc, &m);
	assert_non_null(b);
	while ((r = vr_spool_body_read(b, back + got, sizeof(back) - got)) > 0)
		got += (size_t)r;
	assert_int_equal(r, 0);
	assert_int_equal(got, n);
	assert_memory_equal(back, want, n);
	vr_spool_body_close(b);
}

/* How many of our fds are open on a file whose path has part. */
static unsigned fds_on(const char *part)
{
	unsigned n = 0;

	for (int fd = 0; fd < 1024; fd++)
		n += fd_path_has(fd, part);
	return n;
}

/* A thread's open segments: a message read through them is its body, also
 * one committed into the segment after it was opened there (the segment
 * grew), a message not at its place is refused, and a segment idle for a
 * minute is closed. */
static void test_segcache(void **state)
{
	struct vr_spool *sp = spool_open(1);
	struct hooked h = { 0 };
	struct done d[3] = { 0 };
	uint8_t *body = body_make(3000, 9);

	struct vr_spool_segcache *sc = vr_spool_segcache_new(dir);
	assert_non_null(sc);
	vr_spool_on_commit(sp, on_commit, &h);
	assert_int_equal(vr_spool_start(sp), 0);
	put(sp, 0, &env_default, body, 1000, 1000, &d[0]);
	reap_n(sp, 0, 1);
	cached_read_check(sc, &h, 0, body, 1000);
	put(sp, 0, &env_default, body + 1000, 2000, 2000, &d[1]);
	reap_n(sp, 0, 1);
	assert_string_equal(h.segment[1], h.segment[0]);
	cached_read_check(sc, &h, 1, body + 1000, 2000);
	cached_read_check(sc, &h, 0, body, 1000);
	vr_spool_close(sp);

	struct vr_spool_msg wrong = { .segment = h.segment[1], .offset = h.offset[1] + 1,
				      .size = h.size[1] };
	memcpy(wrong.qid, h.qid[1], sizeof(wrong.qid));
	assert_null(vr_spool_body_open_in(sc, &wrong));
	assert_int_equal(errno, EBADMSG);
	wrong.segment = "seg/w0-0000009999.seg";
	assert_null(vr_spool_body_open_in(sc, &wrong));
	assert_int_equal(errno, ENOENT);

	const char *base = strrchr(h.segment[0], '/') + 1;
	assert_int_equal(fds_on(base), 1);
	vr_spool_segcache_trim(sc, vr_clock_ms());            /* in use: kept */
	assert_int_equal(fds_on(base), 1);
	vr_spool_segcache_trim(sc, vr_clock_ms() + 61000);
	assert_int_equal(fds_on(base), 0);
	cached_read_check(sc, &h, 1, body + 1000, 2000);      /* opened again */
	vr_spool_segcache_free(sc);
	assert_int_equal(fds_on(base), 0);
	free(body);
}

/* The body pulled a piece at a time is the body, whatever the pieces. */
static void test_body_pull(void **state)
{
	struct vr_spool *sp = spool_open(1);
	struct done d[2] = { 0 };
	size_t n = 3u << 20;            /* several BODY records */
	uint8_t *body = body_make(n, 11), *back = malloc(n + 1);

	put(sp, 0, &env_default, body, n, 100000, &d[0]);
	put(sp, 0, &env_default, body, 5, 5, &d[1]);
	vr_spool_close(sp);
	struct found f = scan_all(NULL);
	assert_int_equal(f.n, 2);
	const struct vr_spool_msg *big = f.v[0].m.size == n ? &f.v[0].m : &f.v[1].m;

	static const size_t caps[] = { 1, 7, 4096, 1u << 21 };
	for (unsigned k = 0; k < VR_ARRAY_SIZE(caps); k++) {
		struct vr_spool_body *b = vr_spool_body_open(dir, big);
		assert_non_null(b);
		size_t got = 0;
		ssize_t r;
		/* pieces of 1 byte over 3 MiB are slow: take the first 64 KiB so */
		size_t cap = caps[k];
		while ((r = vr_spool_body_read(b, back + got, VR_MIN(cap, n - got + 1))) > 0) {
			got += (size_t)r;
			if (cap == 1 && got == 65536)
				cap = 65536;
		}
		assert_int_equal(r, 0);
		assert_int_equal(got, n);
		assert_memory_equal(back, body, n);
		assert_int_equal(vr_spool_body_read(b, back, 10), 0);   /* stays at the end */
		/* A second pass (sign, then send) reads the same bytes again,
		 * from the start, whether the first finished or not. */
		memset(back, 0, n);
		vr_spool_body_rewind(b);
		got = 0;
		while ((r = vr_spool_body_read(b, back + got, 1u << 20)) > 0)
			got += (size_t)r;
		assert_int_equal(r, 0);
		assert_int_equal(got, n);
		assert_memory_equal(back, body, n);
		vr_spool_body_rewind(b);
		assert_int_equal(vr_spool_body_read(b, back, 3), 3);
		vr_spool_body_rewind(b);
		assert_int_equal(vr_spool_body_read(b, back, 4096), 4096);
		assert_memory_equal(back, body, 4096);
		vr_spool_body_close(b);
	}

	/* Not the message at that place: refused at open. */
	struct vr_spool_msg wrong = *big;
	wrong.offset += 1;
	assert_null(vr_spool_body_open(dir, &wrong));
	assert_int_equal(errno, EBADMSG);
	/* A size that END does not confirm: refused at the end, not before. */
	wrong = *big;
	wrong.size -= 1;
	struct vr_spool_body *b = vr_spool_body_open(dir, &wrong);
	assert_non_null(b);
	ssize_t r;
	while ((r = vr_spool_body_read(b, back, 1u << 20)) > 0)
		;
	assert_int_equal(r, -EBADMSG);
	vr_spool_body_close(b);
	found_free(&f);
	free(body);
	free(back);
}

/* A small message is read in one piece of about its size: one whose
 * envelope (300 recipients) is longer than that still reads whole, and so
 * does each of the messages around it. */
static void test_body_pull_long_envelope(void **state)
{
	struct vr_spool *sp = spool_open(1);
	enum { N_RCPT = 300 };
	static char addrs[N_RCPT][64];
	const char *rcpts[N_RCPT];
	struct done d[3] = { 0 };
	uint8_t *body = body_make(3000, 5), *back = malloc(8192);

	for (unsigned i = 0; i < N_RCPT; i++) {
		snprintf(addrs[i], sizeof(addrs[i]), "recipient-number-%u@long.example.org", i);
		rcpts[i] = addrs[i];
	}
	struct vr_spool_envelope env = env_default;
	env.rcpts = rcpts;
	env.n_rcpts = N_RCPT;
	put(sp, 0, &env_default, body, 100, 100, &d[0]);
	put(sp, 0, &env, body + 100, 2000, 2000, &d[1]);
	put(sp, 0, &env_default, body + 2100, 900, 900, &d[2]);
	vr_spool_close(sp);
	struct found f = scan_all(NULL);
	assert_int_equal(f.n, 3);
	for (unsigned k = 0; k < 3; k++) {
		const struct vr_spool_msg *m = &f.v[k].m;
		size_t at = m->size == 100 ? 0 : m->size == 2000 ? 100 : 2100, got = 0;
		ssize_t r;
		struct vr_spool_body *b = vr_spool_body_open(dir, m);
		assert_non_null(b);
		while ((r = vr_spool_body_read(b, back + got, 8192 - got)) > 0)
			got += (size_t)r;
		assert_int_equal(r, 0);
		assert_int_equal(got, m->size);
		assert_memory_equal(back, body + at, got);
		vr_spool_body_close(b);
	}
	found_free(&f);
	free(body);
	free(back);
}

/* An hour-old segment is sealed: the next batch goes to a new one. */
static void test_segment_roll(void **state)
{
	struct vr_spool *sp = spool_open(1);
	struct done d[3] = { 0 };
	char qid[3][VR_QID_MAX];

	assert_int_equal(vr_spool_start(sp), 0);
	snprintf(qid[0], VR_QID_MAX, "%s", vr_spool_txn_qid(put(sp, 0, &env_default,
		 (const uint8_t *)"a\r\n", 3, 3, &d[0])));
	reap_n(sp, 0, 1);
	__atomic_store_n(&clock_skew_us, (int64_t)VR_SEG_ROLL_US, __ATOMIC_RELAXED);
	for (unsigned i = 1; i < 3; i++) {
		snprintf(qid[i], VR_QID_MAX, "%s", vr_spool_txn_qid(put(sp, 0, &env_default,
			 (const uint8_t *)"b\r\n", 3, 3, &d[i])));
		reap_n(sp, 0, 1);
	}
	__atomic_store_n(&clock_skew_us, 0, __ATOMIC_RELAXED);
	vr_spool_close(sp);

	struct found f = scan_all(NULL);
	assert_int_equal(f.n, 3);
	struct got *a = find(&f, qid[0]), *b = find(&f, qid[1]), *c = find(&f, qid[2]);
	assert_string_not_equal(a->m.segment, b->m.segment);
	assert_string_equal(b->m.segment, c->m.segment);   /* young again: no roll */
	found_free(&f);
}

static void note_seal(const char *name, void *arg)
{
	snprintf(arg, 64, "%s", name);
}

/* A state log moves to a new file after an hour; the old one is named. */
static void test_state_log_roll(void **state)
{
	char qid[2][VR_QID_MAX], err[256], sealed[64] = "", path[512];
	struct vr_spool_envelope env = env_default;
	commit_two(2, qid, &env);

	struct vr_spool_log *log = vr_spool_log_open(dir, 3, err, sizeof(err));
	assert_non_null(log);
	vr_spool_log_on_seal(log, note_seal, sealed);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 0, 1, 10, 0, "250"), 0);
	assert_int_equal(vr_spool_log_sync(log), 0);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[0], 1, 1, 11, 0, "250"), 0);
	assert_int_equal(vr_spool_log_sync(log), 0);
	assert_string_equal(sealed, "");
	__atomic_store_n(&clock_skew_us, (int64_t)VR_SEG_ROLL_US, __ATOMIC_RELAXED);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[1], 0, 1, 12, 0, "250"), 0);
	assert_int_equal(vr_spool_log_sync(log), 0);
	__atomic_store_n(&clock_skew_us, 0, __ATOMIC_RELAXED);
	assert_string_equal(sealed, "state/d3-0000000001.log");
	vr_spool_log_close(log);
	snprintf(path, sizeof(path), "%s/state", dir);
	assert_int_equal(dir_count(path), 2);

	/* Both files count. */
	struct qfound f = { 0 };
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &f), 0);
	assert_int_equal(f.v[0].pending, 0);
	assert_int_equal(f.v[1].pending, 1);
}

static void test_compact(void **state)
{
	char qid[4][VR_QID_MAX], err[256], path[512];
	struct vr_spool_envelope env = env_default;
	/* Run 1: two messages, both finished. Run 2: one finished, one not. */
	commit_two(2, qid, &env);
	commit_two(2, qid + 2, &env);
	struct vr_spool_log *log = vr_spool_log_open(dir, 0, err, sizeof(err));
	assert_non_null(log);
	for (unsigned m = 0; m < 3; m++)
		for (uint32_t r = 0; r < 2; r++)
			assert_int_equal(log_ev(log, m == 1 && r == 1 ? VR_STATE_BOUNCED :
						VR_STATE_DELIVERED, qid[m], r, 1, 10 + m, 0, "250 ok"), 0);
	assert_int_equal(log_ev(log, VR_SPOOL_DKIM, qid[3], VR_SPOOL_ALL, 0, 20, 0,
				"DKIM-Signature: x\r\n"), 0);
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[3], 1, 1, 21, 0, "250 ok"), 0);
	assert_int_equal(log_ev(log, VR_STATE_DEFERRED, qid[3], 0, 3, 22, 777, "451 no"), 0);
	assert_int_equal(log_ev(log, VR_STATE_HELD, qid[3], VR_SPOOL_ALL, 3, 23, 0, ""), 0);
	vr_spool_log_close(log);
	log = vr_spool_log_open(dir, 1, err, sizeof(err));
	assert_int_equal(log_ev(log, VR_STATE_DELIVERED, qid[2], 1, 1, 30, 0, "250 ok"), 0);
	vr_spool_log_close(log);

	struct qfound before = { 0 };
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &before), 0);
	assert_int_equal(before.n, 4);

	/* Nothing is old enough: no segment goes, the logs fold into one. */
	struct vr_spool_compact_stats cs;
	assert_int_equal(vr_spool_compact(dir, T_OLD, &cs), 0);
	assert_int_equal(cs.segments_removed, 0);
	assert_int_equal(cs.logs_replaced, 2);
	struct qfound after = { 0 };
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &after), 0);
	assert_memory_equal(&before, &after, sizeof(before));
	snprintf(path, sizeof(path), "%s/state", dir);
	assert_int_equal(dir_count(path), 1);

	/* Everything is old: run 1's segment (all final) goes, run 2's stays
	 * for its unfinished message, whose state survives as it was. */
	unsigned segs = seg_count();
	assert_int_equal(vr_spool_compact(dir, UINT64_MAX, &cs), 0);
	assert_int_equal(cs.segments_removed, 1);
	assert_int_equal(cs.messages_removed, 2);
	assert_int_equal(seg_count(), segs - 1);
	memset(&after, 0, sizeof(after));
	assert_int_equal(vr_spool_queue_scan(dir, qcollect, &after), 0);
	assert_int_equal(after.n, 2);
	assert_memory_equal(&after.v[0], &before.v[2], sizeof(after.v[0]));
	assert_memory_equal(&after.v[1], &before.v[3], sizeof(after.v[1]));
	assert_true(after.v[1].held);
	assert_true(after.v[1].next_us == 777);
	assert_int_equal(after.v[1].attempts, 3);
	assert_string_equal(after.v[1].dkim, "DKIM-Signature: x\r\n");
	assert_int_equal(dir_count(path), 1);
}

static int setup(void **state)
{
	if (!mkdtemp(tmpdir))
		return -1;
	/* Only errors from the spool's log, to keep the test output short. */
	vr_log_open(NULL, VR_LOG_ERR);
	return 0;
}

static int teardown(void **state)
{
	return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_round_trip, test_setup),
		cmocka_unit_test_setup(test_threads, test_setup),
		cmocka_unit_test_setup(test_group_commit, test_setup),
		cmocka_unit_test_setup_teardown(test_committers_independent, test_setup, faults_teardown),
		cmocka_unit_test_setup_teardown(test_start_failure, test_setup, faults_teardown),
		cmocka_unit_test_setup(test_close_commits, test_setup),
		cmocka_unit_test_setup(test_orphan_and_reap_max, test_setup),
		cmocka_unit_test_setup(test_bad_envelope, test_setup),
		cmocka_unit_test_setup(test_open_errors, test_setup),
		cmocka_unit_test_setup(test_empty_segments_removed, test_setup),
		cmocka_unit_test_setup(test_qid_after_restart, test_setup),
		cmocka_unit_test_setup(test_recovery_torn_tail, test_setup),
		cmocka_unit_test_setup(test_recovery_zero_tail, test_setup),
		cmocka_unit_test_setup(test_recovery_flip, test_setup),
		cmocka_unit_test_setup(test_forged_records_in_body, test_setup),
		cmocka_unit_test_setup(test_unknown_record_skipped, test_setup),
		cmocka_unit_test_setup(test_bad_segment_header, test_setup),
		cmocka_unit_test_setup(test_crash, test_setup),
		cmocka_unit_test_setup(test_fdatasync_failure, test_setup),
		cmocka_unit_test_setup(test_truncate_failure, test_setup),
		cmocka_unit_test_setup(test_file_size_limit, test_setup),
		cmocka_unit_test_setup_teardown(test_disk_full_tmpfs, test_setup, tmpfs_teardown),
		cmocka_unit_test(test_event_codec),
		cmocka_unit_test_setup(test_state_recovery, test_setup),
		cmocka_unit_test_setup(test_state_log_flush, test_setup),
		cmocka_unit_test_setup_teardown(test_state_log_sync_failure, test_setup, faults_teardown),
		cmocka_unit_test_setup(test_state_log_flush_batched, test_setup),
		cmocka_unit_test_setup_teardown(test_state_log_flush_visible, test_setup, faults_teardown),
		cmocka_unit_test_setup(test_state_log_damage, test_setup),
		cmocka_unit_test_setup(test_commit_hook, test_setup),
		cmocka_unit_test_setup(test_compact, test_setup),
		cmocka_unit_test_setup(test_body_pull, test_setup),
		cmocka_unit_test_setup(test_body_pull_long_envelope, test_setup),
		cmocka_unit_test_setup(test_segcache, test_setup),
		cmocka_unit_test_setup(test_segment_roll, test_setup),
		cmocka_unit_test_setup(test_state_log_roll, test_setup),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
