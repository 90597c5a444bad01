/*
 * test_io.c - the kernel-socket transport: its timer heap, the per-client
 * connection table (exactness under racing threads), and the whole io with
 * real sessions on 127.0.0.1, driven by plain sockets: banner, pregreet,
 * idle timeout, backpressure, QUIT and FIN, both connection limits, stop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>
#include <cmocka.h>
#include <urcu-qsbr.h>

#include "vmrelay/clock.h"
#include "vmrelay/config.h"
#include "vmrelay/io.h"
#include "vmrelay/log.h"
#include "vmrelay/policy.h"
#include "vmrelay/spool.h"
#include "../../engine/io/connlimit.h"
#include "../../engine/io/timer.h"

/* --- timer heap --- */

static void test_timer_order(void **state)
{
	enum { N = 500 };
	static struct vr_timer t[N];
	struct vr_timer_heap h;

	srand(7);
	vr_timer_heap_init(&h);
	for (int i = 0; i < N; i++)
		assert_int_equal(vr_timer_set(&h, &t[i], (uint64_t)(rand() % 1000)), 0);
	/* Move some earlier, some later, cancel some, re-arm some. */
	for (int i = 0; i < N; i += 3)
		assert_int_equal(vr_timer_set(&h, &t[i], (uint64_t)(rand() % 1000)), 0);
	for (int i = 1; i < N; i += 7)
		vr_timer_cancel(&h, &t[i]);
	for (int i = 1; i < N; i += 14)
		assert_int_equal(vr_timer_set(&h, &t[i], 5), 0);
	for (int i = 2; i < N; i += 11)
		assert_int_equal(vr_timer_set(&h, &t[i], UINT64_MAX), 0);

	unsigned armed = 0;
	for (int i = 0; i < N; i++)
		armed += t[i].pos != 0;
	assert_int_equal(h.n, armed);

	uint64_t last = 0;
	unsigned popped = 0;
	struct vr_timer *f;
	while ((f = vr_timer_first(&h))) {
		assert_true(f->deadline >= last);
		last = f->deadline;
		vr_timer_cancel(&h, f);
		assert_int_equal(f->pos, 0);
		popped++;
	}
	assert_int_equal(popped, armed);
	vr_timer_heap_free(&h);
}

/* --- per-client connection table --- */

static struct sockaddr_storage sa_of(const char *ip)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		ss.ss_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr), 1);
	} else {
		ss.ss_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr), 1);
	}
	return ss;
}

static uint64_t key_of(const char *ip)
{
	struct sockaddr_storage ss = sa_of(ip);
	return vr_connlimit_key((struct sockaddr *)&ss);
}

static void test_connlimit_keys(void **state)
{
	assert_true(key_of("192.0.2.1") == key_of("::ffff:192.0.2.1"));
	assert_true(key_of("192.0.2.1") != key_of("192.0.2.2"));
	assert_true(key_of("2001:db8:1:2::1") == key_of("2001:db8:1:2:ffff::9"));
	assert_true(key_of("2001:db8:1:2::1") != key_of("2001:db8:1:3::1"));
	/* No IPv4 client shares a key with any IPv6 /64. */
	assert_true(key_of("0.0.0.1") != key_of("::1"));
	assert_true(key_of("255.255.255.255") != key_of("ffff:ffff::1"));
}

static void test_connlimit_limit(void **state)
{
	struct vr_connlimit *cl = vr_connlimit_new(3, 1000);
	uint64_t *s[4], *other;
	uint64_t a = key_of("198.51.100.7"), b = key_of("198.51.100.8");

	assert_non_null(cl);
	for (int i = 0; i < 3; i++)
		assert_int_equal(vr_connlimit_acquire(cl, a, &s[i]), 0);
	assert_int_equal(vr_connlimit_acquire(cl, a, &s[3]), -EUSERS);
	assert_int_equal(vr_connlimit_count(cl, a), 3);
	/* Another client is counted apart. */
	assert_int_equal(vr_connlimit_acquire(cl, b, &other), 0);
	assert_int_equal(vr_connlimit_count(cl, b), 1);
	vr_connlimit_release(cl, s[0]);
	assert_int_equal(vr_connlimit_acquire(cl, a, &s[0]), 0);
	for (int i = 0; i < 3; i++)
		vr_connlimit_release(cl, s[i]);
	vr_connlimit_release(cl, other);
	assert_int_equal(vr_connlimit_count(cl, a), 0);
	assert_int_equal(vr_connlimit_count(cl, b), 0);
	assert_null(vr_connlimit_new(0, 10));
	assert_null(vr_connlimit_new(VR_CONNLIMIT_MAX + 1, 10));
	vr_connlimit_free(cl);
}

/* Many clients at once, each below the limit: every one gets in, and after
 * they leave the table is empty again (free slots are reused). */
static void test_connlimit_many_clients(void **state)
{
	enum { CLIENTS = 20000 };
	struct vr_connlimit *cl = vr_connlimit_new(2, CLIENTS);
	static uint64_t *slot[CLIENTS];

	assert_non_null(cl);
	for (int round = 0; round < 3; round++) {
		for (uint64_t i = 0; i < CLIENTS; i++)
			assert_int_equal(vr_connlimit_acquire(cl, i * 7919 + round, &slot[i]), 0);
		for (int i = 0; i < CLIENTS; i++)
			vr_connlimit_release(cl, slot[i]);
	}
	vr_connlimit_free(cl);
}

#define RACE_THREADS 4
#define RACE_KEYS    4
#define RACE_LIMIT   1
#define RACE_ROUNDS  250000

struct race {
	struct vr_connlimit *cl;
	uint64_t key[RACE_KEYS];          /* clients sharing one bucket */
	unsigned holders[RACE_KEYS];      /* connections granted and not yet released */
	unsigned over;                    /* times a grant exceeded the limit */
	unsigned granted;
	unsigned seed;
};

static void *race_thread(void *arg)
{
	struct race *r = arg;
	unsigned seed = __atomic_fetch_add(&r->seed, 1, __ATOMIC_RELAXED);

	for (int i = 0; i < RACE_ROUNDS; i++) {
		unsigned k = (unsigned)rand_r(&seed) % RACE_KEYS;
		uint64_t *slot;
		if (vr_connlimit_acquire(r->cl, r->key[k], &slot) != 0)
			continue;
		if (__atomic_add_fetch(&r->holders[k], 1, __ATOMIC_SEQ_CST) > RACE_LIMIT)
			__atomic_fetch_add(&r->over, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&r->granted, 1, __ATOMIC_RELAXED);
		if (i % 16 == 0)
			sched_yield();          /* hold it across a reschedule now and then */
		__atomic_sub_fetch(&r->holders[k], 1, __ATOMIC_SEQ_CST);
		vr_connlimit_release(r->cl, slot);
	}
	return NULL;
}

/*
 * Threads take and give back connections of a few clients that share one
 * bucket, as fast as they can, so first connections race while the free
 * slots shift under them: never more than the limit at once, nothing leaks.
 */
static void test_connlimit_race(void **state)
{
	struct race r = { .cl = vr_connlimit_new(RACE_LIMIT, 64), .seed = 1 };
	pthread_t t[RACE_THREADS];

	assert_non_null(r.cl);
	unsigned n = 0;
	uint64_t home = vr_connlimit_bucket(r.cl, 1);
	for (uint64_t k = 1; n < RACE_KEYS; k++)
		if (vr_connlimit_bucket(r.cl, k) == home)
			r.key[n++] = k;
	for (int i = 0; i < RACE_THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, race_thread, &r), 0);
	for (int i = 0; i < RACE_THREADS; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(r.over, 0);
	assert_true(r.granted > RACE_ROUNDS);
	for (unsigned k = 0; k < RACE_KEYS; k++)
		assert_int_equal(vr_connlimit_count(r.cl, r.key[k]), 0);
	vr_connlimit_free(r.cl);
}

/* --- the io, on loopback --- */

struct relay {
	struct vr_config cfg;
	struct vr_smtp_stats stats[2];
	struct vr_smtpd srv;
	struct vr_io *io;
	pthread_t thread;
	int rc;
	char dir[64];
};

static void *relay_run(void *arg)
{
	struct relay *r = arg;
	r->rc = vr_io_run(r->io);
	return NULL;
}

static void listen_any(struct vr_listen *l, const char *text)
{
	char err[256];

	assert_int_equal(vr_config_parse_listen(text, l, err, sizeof(err)), 0);
	/* The config wants a real port; the test lets the kernel pick one. */
	if (l->addr.ss_family == AF_INET)
		((struct sockaddr_in *)&l->addr)->sin_port = 0;
	else
		((struct sockaddr_in6 *)&l->addr)->sin6_port = 0;
}

/* cfg changes go in before relay_start. */
static struct relay *relay_new(unsigned workers)
{
	struct relay *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	vr_config_defaults(&r->cfg);
	snprintf(r->cfg.hostname, sizeof(r->cfg.hostname), "relay.test");
	listen_any(&r->cfg.listen[0], "127.0.0.1:1");
	r->cfg.n_listen = 1;
	r->cfg.workers = workers;
	strcpy(r->dir, "/tmp/vr_test_io.XXXXXX");
	assert_non_null(mkdtemp(r->dir));
	snprintf(r->cfg.spool_dir, sizeof(r->cfg.spool_dir), "%s", r->dir);
	return r;
}

static void relay_start(struct relay *r)
{
	char err[256] = "";

	r->srv.cfg = &r->cfg;
	r->srv.stats = r->stats;
	r->srv.n_workers = r->cfg.workers;
	r->srv.spool = vr_spool_open(r->dir, r->cfg.workers, err, sizeof(err));
	assert_non_null(r->srv.spool);
	assert_int_equal(vr_spool_start(r->srv.spool), 0);
	r->io = vr_io_kernel_new(&r->srv, err, sizeof(err));
	if (!r->io)
		fail_msg("vr_io_kernel_new: %s", err);
	assert_int_not_equal(vr_io_bound_port(r->io, 0), 0);
	assert_int_equal(vr_io_bound_port(r->io, r->cfg.n_listen), 0);
	assert_int_equal(pthread_create(&r->thread, NULL, relay_run, r), 0);
}

/* Stops the io and checks vr_io_run returns within limit_ms. */
static void relay_stop(struct relay *r, uint64_t limit_ms)
{
	uint64_t t0 = vr_clock_ms();
	char cmd[128];

	vr_io_stop(r->io);
	pthread_join(r->thread, NULL);
	assert_int_equal(r->rc, 0);
	assert_true(vr_clock_ms() - t0 <= limit_ms);
	vr_io_free(r->io);
	vr_spool_close(r->srv.spool);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
	assert_int_equal(system(cmd), 0);
	free(r);
}

static int dial(const struct relay *r, unsigned listen_i, int rcvbuf)
{
	struct sockaddr_storage a = r->cfg.listen[listen_i].addr;
	struct timeval tv = { .tv_sec = 5 };
	int fd = socket(a.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	if (a.ss_family == AF_INET)
		((struct sockaddr_in *)&a)->sin_port = htons(vr_io_bound_port(r->io, listen_i));
	else
		((struct sockaddr_in6 *)&a)->sin6_port = htons(vr_io_bound_port(r->io, listen_i));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (connect(fd, (struct sockaddr *)&a, r->cfg.listen[listen_i].addrlen) < 0) {
		close(fd);
		return -errno;
	}
	return fd;
}

/* One reply line (CRLF stripped) into out; returns its length, or -1 on EOF
 * or timeout. Byte by byte: simple, and these are short. */
static int read_line(int fd, char *out, size_t cap)
{
	size_t n = 0;
	char c;

	while (recv(fd, &c, 1, 0) == 1) {
		if (c == '\n') {
			if (n && out[n - 1] == '\r')
				n--;
			out[n] = '\0';
			return (int)n;
		}
		if (n + 1 < cap)
			out[n++] = c;
	}
	return -1;
}

static void say(int fd, const char *s)
{
	assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* The server closed: EOF, not a timeout. */
static void assert_eof(int fd)
{
	char c;
	assert_int_equal(recv(fd, &c, 1, 0), 0);
}

static void expect_prefix(int fd, const char *prefix)
{
	char line[1024];

	if (read_line(fd, line, sizeof(line)) < 0)
		fail_msg("no reply, wanted '%s'", prefix);
	if (strncmp(line, prefix, strlen(prefix)) != 0)
		fail_msg("got '%s', wanted '%s...'", line, prefix);
}

static void test_io_banner_quit(void **state)
{
	struct relay *r = relay_new(2);
	relay_start(r);

	for (int i = 0; i < 4; i++) {
		int fd = dial(r, 0, 0);
		assert_true(fd >= 0);
		expect_prefix(fd, "220 relay.test");
		say(fd, "QUIT\r\n");
		expect_prefix(fd, "221 ");
		assert_eof(fd);
		close(fd);
	}
	relay_stop(r, 1000);
}

static void test_io_ipv6(void **state)
{
	struct relay *r = relay_new(1);

	listen_any(&r->cfg.listen[1], "[::1]:1");
	r->cfg.n_listen = 2;
	relay_start(r);
	int fd = dial(r, 1, 0);
	if (fd == -EADDRNOTAVAIL || fd == -ENETUNREACH) {
		relay_stop(r, 1000);
		skip();
	}
	assert_true(fd >= 0);
	expect_prefix(fd, "220 relay.test");
	close(fd);
	relay_stop(r, 1000);
}

/* greet_pause: bytes sent before the banner are refused; the io hands over
 * what is already waiting at accept, before the session's first tick. */
static void test_io_pregreet(void **state)
{
	struct relay *r = relay_new(1);
	r->cfg.greet_pause_ms = 300;
	relay_start(r);

	int fd = dial(r, 0, 0);
	assert_true(fd >= 0);
	say(fd, "EHLO early.example\r\n");
	expect_prefix(fd, "554 5.5.1");
	assert_eof(fd);
	close(fd);

	/* A patient client gets the banner after the pause. */
	uint64_t t0 = vr_clock_ms();
	fd = dial(r, 0, 0);
	expect_prefix(fd, "220 relay.test");
	assert_true(vr_clock_ms() - t0 >= 250);
	close(fd);
	relay_stop(r, 1000);
}

static void test_io_idle_timeout(void **state)
{
	struct relay *r = relay_new(1);
	r->cfg.idle_timeout_ms = 200;
	relay_start(r);

	int fd = dial(r, 0, 0);
	uint64_t t0 = vr_clock_ms();
	expect_prefix(fd, "220 ");
	expect_prefix(fd, "421 4.4.2");
	assert_true(vr_clock_ms() - t0 >= 150);
	assert_eof(fd);
	close(fd);
	relay_stop(r, 1000);
}

struct flood {
	int fd;
	unsigned n;
};

static void *flood_send(void *arg)
{
	const struct flood *f = arg;
	static const char cmd[] = "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n";

	for (unsigned i = 0; i < f->n; i += 5)
		if (send(f->fd, cmd, sizeof(cmd) - 1, MSG_NOSIGNAL) != sizeof(cmd) - 1)
			break;
	return NULL;
}

/*
 * A client pipelines far more commands than the relay buffers and reads
 * nothing for a while, with a small receive window: the relay's socket fills,
 * its session stops taking input, and only EPOLLOUT can get things moving
 * once the client reads. Every command still gets its reply.
 */
static void test_io_backpressure(void **state)
{
	enum { N = 200000 };
	struct relay *r = relay_new(1);
	relay_start(r);

	int fd = dial(r, 0, 4096);
	expect_prefix(fd, "220 ");
	say(fd, "EHLO client.example\r\n");
	char line[1024];
	while (read_line(fd, line, sizeof(line)) >= 0 && strncmp(line, "250 ", 4) != 0)
		assert_memory_equal(line, "250-", 4);

	struct flood f = { .fd = fd, .n = N };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, flood_send, &f), 0);
	usleep(300000);                 /* let everything back up */

	/* Count reply lines; each must be a 250. */
	static char buf[65536];
	unsigned replies = 0, bad = 0;
	bool at_start = true;
	while (replies < N) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			fail_msg("after %u of %d replies: %s", replies, N, n ? strerror(errno) : "EOF");
		for (ssize_t i = 0; i < n; i++) {
			if (at_start && buf[i] != '2')
				bad++;
			at_start = buf[i] == '\n';
			replies += at_start;
		}
	}
	pthread_join(t, NULL);
	assert_int_equal(bad, 0);
	say(fd, "QUIT\r\n");
	expect_prefix(fd, "221 ");
	close(fd);
	relay_stop(r, 1000);
}

static void test_io_conn_per_ip(void **state)
{
	struct relay *r = relay_new(2);
	r->cfg.max_conn_per_ip = 3;
	relay_start(r);

	int fd[3];
	for (int i = 0; i < 3; i++) {
		fd[i] = dial(r, 0, 0);
		expect_prefix(fd[i], "220 relay.test");
	}
	/* Across both workers: the fourth is refused whichever accepts it. */
	for (int i = 0; i < 4; i++) {
		int x = dial(r, 0, 0);
		expect_prefix(x, "421 4.7.0 relay.test too many connections from 127.0.0.1");
		assert_eof(x);
		close(x);
	}
	/* One leaves (QUIT, so its slot is free once the server closed it). */
	say(fd[0], "QUIT\r\n");
	expect_prefix(fd[0], "221 ");
	assert_eof(fd[0]);
	close(fd[0]);
	usleep(50000);
	fd[0] = dial(r, 0, 0);
	expect_prefix(fd[0], "220 relay.test");
	for (int i = 0; i < 3; i++)
		close(fd[i]);
	relay_stop(r, 6000);
}

static void test_io_max_connections(void **state)
{
	struct relay *r = relay_new(1);
	r->cfg.max_connections = 2;
	relay_start(r);

	int a = dial(r, 0, 0), b = dial(r, 0, 0);
	expect_prefix(a, "220 ");
	expect_prefix(b, "220 ");
	int c = dial(r, 0, 0);
	expect_prefix(c, "421 4.7.0 relay.test too many connections");
	assert_eof(c);
	close(c);
	close(a);
	close(b);
	relay_stop(r, 6000);
}

/* Stop: listeners close at once; a session in flight may finish. */
static void test_io_stop(void **state)
{
	struct relay *r = relay_new(2);
	relay_start(r);

	int fd = dial(r, 0, 0);
	expect_prefix(fd, "220 ");
	uint64_t t0 = vr_clock_ms();
	vr_io_stop(r->io);
	usleep(100000);
	assert_true(dial(r, 0, 0) == -ECONNREFUSED);
	say(fd, "NOOP\r\n");
	expect_prefix(fd, "250 ");
	say(fd, "QUIT\r\n");
	expect_prefix(fd, "221 ");
	close(fd);
	pthread_join(r->thread, NULL);
	assert_int_equal(r->rc, 0);
	/* Returned when the last session ended, not at the end of the grace. */
	assert_true(vr_clock_ms() - t0 < 2000);
	vr_io_free(r->io);
	vr_spool_close(r->srv.spool);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
	assert_int_equal(system(cmd), 0);
	free(r);
}

static uint64_t cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/*
 * Out of descriptors: the pending connection stays queued and its listener
 * readable, so a naive loop would spin on accept. The io pauses accepting
 * instead (no CPU burnt meanwhile) and takes the client once a descriptor
 * is free again.
 */
static void test_io_out_of_descriptors(void **state)
{
	struct relay *r = relay_new(1);
	relay_start(r);

	struct rlimit old, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	int next = dup(0);                      /* the lowest free descriptor */
	close(next);
	low = old;
	low.rlim_cur = (rlim_t)next + 3;        /* client a, its server side, client b */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);

	int a = dial(r, 0, 0);
	expect_prefix(a, "220 ");
	int b = dial(r, 0, 0);                  /* queued: the relay has no descriptor */
	assert_true(b >= 0);
	uint64_t cpu0 = cpu_ms();
	struct timeval tv = { .tv_usec = 300000 };
	setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char line[256];
	assert_int_equal(read_line(b, line, sizeof(line)), -1);
	assert_true(cpu_ms() - cpu0 < 150);     /* 300 ms waited, not spent */

	close(a);                               /* frees both of a's descriptors */
	tv.tv_sec = 5;
	setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	expect_prefix(b, "220 relay.test");
	close(b);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	relay_stop(r, 1000);
}

/* A second relay on the same port is an error, not a silent share. */
static void test_io_port_in_use(void **state)
{
	struct relay *r = relay_new(1);
	relay_start(r);

	struct vr_config cfg = r->cfg;
	struct vr_smtpd srv = r->srv;
	char err[256] = "";
	((struct sockaddr_in *)&cfg.listen[0].addr)->sin_port = htons(vr_io_bound_port(r->io, 0));
	srv.cfg = &cfg;
	assert_null(vr_io_kernel_new(&srv, err, sizeof(err)));
	assert_non_null(strstr(err, "Address already in use"));
	assert_non_null(strstr(err, "listen 127.0.0.1:1"));
	relay_stop(r, 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timer_order),
		cmocka_unit_test(test_connlimit_keys),
		cmocka_unit_test(test_connlimit_limit),
		cmocka_unit_test(test_connlimit_many_clients),
		cmocka_unit_test(test_connlimit_race),
		cmocka_unit_test(test_io_banner_quit),
		cmocka_unit_test(test_io_ipv6),
		cmocka_unit_test(test_io_pregreet),
		cmocka_unit_test(test_io_idle_timeout),
		cmocka_unit_test(test_io_backpressure),
		cmocka_unit_test(test_io_conn_per_ip),
		cmocka_unit_test(test_io_max_connections),
		cmocka_unit_test(test_io_stop),
		cmocka_unit_test(test_io_out_of_descriptors),
		cmocka_unit_test(test_io_port_in_use),
	};

	vr_log_open(NULL, VR_LOG_WARN);
	rcu_register_thread();
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	rcu_unregister_thread();
	return rc;
}
