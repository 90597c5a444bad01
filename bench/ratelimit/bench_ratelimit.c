/*
 * bench_ratelimit.c - reserve+confirm operations per second per core with a
 * million accounts while a writer changes 10,000 accounts' quotas a second:
 * engine/ratelimit (flat RCU index, lock-free windows) against two baselines in
 * the same run, a hash map behind one mutex and one behind a reader-writer
 * lock.
 *
 *   bench_ratelimit [--accounts N] [--seconds S] [--threads 1,2]
 *                   [--writer UPDATES_PER_S] [--hot N] [--maps rcu,mutex,rwlock]
 *                   [--speed SIMULATED_S_PER_S]
 *
 * The baselines keep the same windows (61 one-second and 61 one-minute
 * buckets, a calendar day, UTC) the way one writes them under a lock:
 * plain fields and running totals, O(1) per operation. The mutex map takes
 * its one lock for everything; the rwlock map looks up under the read lock
 * and updates an account under that account's spinlock, the writer takes
 * the write lock. Accounts are drawn uniformly from all of them, or with
 * --hot N from the first N (a working set that fits the caches).
 *
 * Time runs at an hour per real second (--speed) from a fresh day each run,
 * and the limits are raised (255/min, 15000/h, 10^6/day) so that nearly
 * every operation takes the granting path; the granted share is printed
 * (a small --hot set needs a faster clock to stay under 255 a minute). Rates
 * are per wall-clock second (all workers, and per worker) and per CPU
 * second a worker actually ran: on a shared machine the last is the speed
 * of one core. Workers format the ids they ask for (the relay has its
 * session's account id in cache) and report a quiescent state every 256
 * operations, as the relay's workers do once per loop. Before the runs it
 * prints what one dependent cache miss costs over a buffer the table's
 * size: the floor under any lookup of a random account.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <urcu-qsbr.h>

#include "vmrelay/common.h"
#include "vmrelay/policy.h"
#include "vmrelay/ratelimit.h"

#define PER_MINUTE 255
#define PER_HOUR 15000
#define QUOTA 1000000
#define SPAN 61
#define BASE_TIME INT64_C(1767225600)   /* 2026-01-01 00:00 UTC */
#define MAX_THREADS 64

enum map_kind { MAP_RCU, MAP_MUTEX, MAP_RWLOCK, MAP_N };
static const char *const map_name[MAP_N] = { "rcu", "mutex", "rwlock" };

static struct {
	unsigned accounts, seconds, hot, writer_rate, speed;
	unsigned threads[8], n_threads;
	bool map[MAP_N];
} opt = { 1000000, 3, 0, 10000, 3600, { 1, 2 }, 2, { true, true, true } };

static char **ids;

/*
 * Account a's id, "vps" and seven digits, written into buf (16 bytes). A
 * worker formats the id it asks for: in the relay the id comes from the
 * session's account, already in cache, so reading it from a 16 MB array
 * here would add a cache miss per operation that the relay does not have.
 */
static const char *id_of(unsigned a, char *buf)
{
	memcpy(buf, "vps", 3);
	for (int i = 9; i >= 3; i--, a /= 10)
		buf[i] = (char)('0' + a % 10);
	buf[10] = '\0';
	return buf;
}

/* --- the baselines --- */

struct bl_entry {
	pthread_spinlock_t lock;        /* rwlock map only */
	uint32_t head, day, day_count, quota, sec_total, min_total;
	uint8_t sec[SPAN], min[SPAN];
	uint8_t idlen;
	char id[];
};

struct bl_map {
	struct bl_entry **slot;         /* open addressing, at most half full */
	size_t mask;
	pthread_mutex_t mu;
	pthread_rwlock_t rw;
};

static uint64_t hash_id(const char *id, size_t len)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)id[i]) * UINT64_C(0x100000001b3);
	h ^= h >> 33;
	h *= UINT64_C(0xff51afd7ed558ccd);
	return h ^ (h >> 33);
}

static struct bl_entry *bl_lookup(const struct bl_map *m, const char *id)
{
	size_t len = strlen(id);

	for (size_t i = hash_id(id, len) & m->mask;; i = (i + 1) & m->mask) {
		struct bl_entry *e = m->slot[i];
		if (!e || (e->idlen == len && memcmp(e->id, id, len) == 0))
			return e;
	}
}

static void bl_init(struct bl_map *m, unsigned n)
{
	size_t cap = 1;

	while (cap < 2 * (size_t)n)
		cap <<= 1;
	m->slot = calloc(cap, sizeof(*m->slot));
	m->mask = cap - 1;
	pthread_rwlockattr_t ra;

	/* glibc's default prefers readers and starves the writer of its
	 * 10,000 updates a second; the scenario says it keeps that rate. */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_mutex_init(&m->mu, NULL);
	pthread_rwlock_init(&m->rw, &ra);
	pthread_rwlockattr_destroy(&ra);
	if (!m->slot)
		abort();
	for (unsigned a = 0; a < n; a++) {
		size_t len = strlen(ids[a]), i = hash_id(ids[a], len) & m->mask;
		struct bl_entry *e = calloc(1, sizeof(*e) + len + 1);
		if (!e)
			abort();
		pthread_spin_init(&e->lock, PTHREAD_PROCESS_PRIVATE);
		e->quota = QUOTA;
		e->idlen = (uint8_t)len;
		memcpy(e->id, ids[a], len + 1);
		while (m->slot[i])
			i = (i + 1) & m->mask;
		m->slot[i] = e;
	}
}

/* Empties the buckets the clock passed, then counts n if it fits. */
static bool bl_reserve(struct bl_entry *e, uint32_t n, uint32_t now)
{
	if (now < e->head)
		now = e->head;
	if (now > e->head) {
		for (uint32_t t = e->head + 1; t <= now && t <= e->head + SPAN; t++) {
			e->sec_total -= e->sec[t % SPAN];
			e->sec[t % SPAN] = 0;
		}
		for (uint32_t m = e->head / 60 + 1; m <= now / 60 && m <= e->head / 60 + SPAN; m++) {
			e->min_total -= e->min[m % SPAN];
			e->min[m % SPAN] = 0;
		}
		e->head = now;
	}
	if (now / 86400 != e->day) {
		e->day = now / 86400;
		e->day_count = 0;
	}
	if (e->day_count + n > e->quota || e->sec_total + n > PER_MINUTE ||
	    e->min_total + n > PER_HOUR)
		return false;
	e->sec[now % SPAN] += n;
	e->min[now / 60 % SPAN] += n;
	e->sec_total += n;
	e->min_total += n;
	e->day_count += n;
	return true;
}

/* --- the contenders --- */

static struct vr_rl *rl;
static struct bl_map bl;

static bool op_reserve_confirm(enum map_kind k, const char *id, uint32_t now)
{
	struct vr_rl_ticket tk;
	struct bl_entry *e;
	bool ok = false;

	switch (k) {
	case MAP_RCU:
		if (vr_rl_reserve(rl, id, 1, now, &tk, NULL) != 0)
			return false;
		vr_rl_confirm(rl, id, &tk);
		return true;
	case MAP_MUTEX:
		pthread_mutex_lock(&bl.mu);
		e = bl_lookup(&bl, id);
		ok = e && bl_reserve(e, 1, now);
		pthread_mutex_unlock(&bl.mu);
		return ok;
	case MAP_RWLOCK:
		pthread_rwlock_rdlock(&bl.rw);
		e = bl_lookup(&bl, id);
		if (e) {
			pthread_spin_lock(&e->lock);
			ok = bl_reserve(e, 1, now);
			pthread_spin_unlock(&e->lock);
		}
		pthread_rwlock_unlock(&bl.rw);
		return ok;
	case MAP_N:
		break;
	}
	abort();
}

static void op_update(enum map_kind k, const char *id, uint32_t quota)
{
	struct bl_entry *e;

	switch (k) {
	case MAP_RCU:
		if (vr_rl_set_daily(rl, id, quota) != 0)
			abort();
		return;
	case MAP_MUTEX:
		pthread_mutex_lock(&bl.mu);
		if ((e = bl_lookup(&bl, id)))
			e->quota = quota;
		pthread_mutex_unlock(&bl.mu);
		return;
	case MAP_RWLOCK:
		pthread_rwlock_wrlock(&bl.rw);
		if ((e = bl_lookup(&bl, id)))
			e->quota = quota;
		pthread_rwlock_unlock(&bl.rw);
		return;
	case MAP_N:
		break;
	}
	abort();
}

/* --- a run --- */

struct run {
	enum map_kind kind;
	int64_t t0;                     /* simulated epoch at the start */
	struct timespec start;
	_Atomic int ready, stop;
	unsigned nthreads;
};

struct worker {
	struct run *run;
	pthread_t th;
	unsigned idx;
	uint64_t ops, granted, updates;
	double secs, cpu;               /* wall and this thread's CPU seconds */
};

static double thread_cpu(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double since(const struct timespec *a)
{
	struct timespec b;

	clock_gettime(CLOCK_MONOTONIC, &b);
	return (double)(b.tv_sec - a->tv_sec) + (double)(b.tv_nsec - a->tv_nsec) / 1e9;
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A number below n, by multiplying rather than dividing (a 64-bit divide
 * costs as much as the cheapest map's whole operation). */
static unsigned pick(uint64_t *rng, unsigned n)
{
	return (unsigned)((xorshift(rng) >> 32) * n >> 32);
}

static void wait_start(struct run *r)
{
	atomic_fetch_add(&r->ready, 1);
	while (atomic_load(&r->ready) <= (int)r->nthreads)   /* + the main thread */
		;
}

static void *worker_main(void *p)
{
	struct worker *w = p;
	struct run *r = w->run;
	uint64_t rng = 0x9e3779b97f4a7c15 * (w->idx + 1);
	unsigned pool = opt.hot ? opt.hot : opt.accounts;
	/* Counted here, stored at the end: the workers' structs share cache
	 * lines, and a store per operation would bounce them between cores. */
	uint64_t ops = 0, granted = 0;
	char id[16];

	rcu_register_thread();
	wait_start(r);
	w->cpu = thread_cpu();
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		/* speed simulated seconds per real one, read every 256 operations. */
		uint32_t now = (uint32_t)(r->t0 + (int64_t)(since(&r->start) * opt.speed));
		for (int k = 0; k < 256; k++)
			granted += op_reserve_confirm(r->kind, id_of(pick(&rng, pool), id), now);
		ops += 256;
		/* A worker's loop iteration (DESIGN: one quiescent state each). */
		rcu_quiescent_state();
	}
	w->ops = ops;
	w->granted = granted;
	w->secs = since(&r->start);
	w->cpu = thread_cpu() - w->cpu;
	rcu_unregister_thread();
	return NULL;
}

/* Changes writer_rate quotas a second, in batches of ten per tick. */
static void *writer_main(void *p)
{
	struct worker *w = p;
	struct run *r = w->run;
	uint64_t rng = 12345;
	struct timespec next;
	char id[16];
	long tick = 10 * 1000000000L / (long)opt.writer_rate;

	rcu_register_thread();
	wait_start(r);
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		for (int k = 0; k < 10; k++, w->updates++)
			op_update(r->kind, id_of(pick(&rng, opt.accounts), id),
				  QUOTA - (uint32_t)(w->updates & 1));
		next.tv_nsec += tick;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		rcu_thread_offline();
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
		rcu_thread_online();
	}
	w->secs = since(&r->start);
	rcu_unregister_thread();
	return NULL;
}

/* Runs kind with n workers; returns operations per second, all threads. */
static double run(enum map_kind kind, unsigned n, unsigned round)
{
	struct run r = { .kind = kind, .nthreads = n + 1 };
	struct worker w[MAX_THREADS + 1];
	uint64_t ops = 0, granted = 0;
	double cpu = 0;

	/* A fresh day each run: earlier runs' counts do not fill the windows. */
	r.t0 = BASE_TIME + ((int64_t)opt.speed * opt.seconds * 2 / 86400 + 2) * 86400 * round;
	memset(w, 0, sizeof(w));
	for (unsigned i = 0; i <= n; i++) {
		w[i].run = &r;
		w[i].idx = i;
		if (pthread_create(&w[i].th, NULL, i < n ? worker_main : writer_main, &w[i]) != 0)
			abort();
	}
	while (atomic_load(&r.ready) < (int)r.nthreads)
		;
	clock_gettime(CLOCK_MONOTONIC, &r.start);
	atomic_fetch_add(&r.ready, 1);
	rcu_thread_offline();
	sleep(opt.seconds);
	atomic_store(&r.stop, 1);
	for (unsigned i = 0; i <= n; i++)
		pthread_join(w[i].th, NULL);
	rcu_thread_online();
	for (unsigned i = 0; i < n; i++) {
		ops += w[i].ops;
		granted += w[i].granted;
		cpu += w[i].cpu;
	}
	double secs = w[0].secs, rate = (double)ops / secs;
	printf("%-7s %7u %10.2f %12.2f %12.2f %8.1f%% %10.0f\n", map_name[kind], n, rate / 1e6,
	       rate / 1e6 / n, (double)ops / cpu / 1e6, 100.0 * (double)granted / (double)ops,
	       (double)w[n].updates / w[n].secs);
	fflush(stdout);
	return rate;
}

/* --- setup --- */

static long rss_bytes(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f || fscanf(f, "%ld %ld", &pages, &rss) != 2)
		abort();
	fclose(f);
	return rss * sysconf(_SC_PAGESIZE);
}

/*
 * What one cache miss costs here: a pointer chase in a random cycle over
 * one 64-byte line per slot of a buffer as big as the table, so every load
 * waits for the one before, as a lookup's loads do. No lookup of a random
 * account among a million can take less than one of these, which bounds
 * any map's operations per second per core. Returns ns per load.
 */
static double miss_ns(size_t bytes)
{
	size_t n = bytes / 64, *line = malloc(n * 64);
	uint64_t rng = 42;

	if (!line)
		abort();
	/* Sattolo's shuffle: one cycle through every line. */
	for (size_t i = 0; i < n; i++)
		line[i * 8] = i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = xorshift(&rng) % i, t = line[i * 8];
		line[i * 8] = line[j * 8];
		line[j * 8] = t;
	}
	size_t p = 0, loads = 4000000;
	/* CPU time, as the rates per CPU-second: other load does not count. */
	double t0 = thread_cpu();
	for (size_t k = 0; k < loads; k++)
		p = line[p * 8];
	double ns = (thread_cpu() - t0) * 1e9 / (double)loads;
	free(line);
	return p == SIZE_MAX ? 0 : ns;        /* p used: the chase is not optimised out */
}

/* Loads the accounts into engine/ratelimit; returns bytes per account. */
static double rl_setup(void)
{
	struct vr_rl_limits lim = { PER_MINUTE, PER_HOUR, QUOTA, "UTC" };
	char path[] = "/tmp/bench_ratelimit.XXXXXX", err[512];
	int fd = mkstemp(path);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	if (!f) {
		perror("bench_ratelimit: accounts file");
		exit(1);
	}
	for (unsigned a = 0; a < opt.accounts; a++)
		fprintf(f, "{\"id\":\"%s\",\"daily_quota\":%u}\n", ids[a], QUOTA);
	fclose(f);
	struct vr_accounts *t = vr_accounts_load_max(path, QUOTA, QUOTA, err, sizeof(err));
	unlink(path);
	rl = t ? vr_rl_new(&lim, err, sizeof(err)) : NULL;
	if (!rl) {
		fprintf(stderr, "bench_ratelimit: %s\n", err);
		exit(1);
	}
	long before = rss_bytes();
	if (vr_rl_sync(rl, t) != 0)
		abort();
	long after = rss_bytes();
	vr_accounts_free(t);
	return (double)(after - before) / opt.accounts;
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int parse_threads(const char *s)
{
	char buf[64], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", s);
	opt.n_threads = 0;
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (opt.n_threads == VR_ARRAY_SIZE(opt.threads) ||
		    parse_uint(tok, 1, MAX_THREADS, &opt.threads[opt.n_threads++]) < 0)
			return -1;
	return opt.n_threads ? 0 : -1;
}

static int parse_maps(const char *s)
{
	char buf[64], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", s);
	memset(opt.map, 0, sizeof(opt.map));
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		enum map_kind k = MAP_RCU;
		while (k < MAP_N && strcmp(tok, map_name[k]) != 0)
			k++;
		if (k == MAP_N)
			return -1;
		opt.map[k] = true;
	}
	return 0;
}

static const struct {
	struct option o;
	const char *help;
} options[] = {
	{ { "accounts", required_argument, NULL, 'a' }, "accounts loaded (1000000)" },
	{ { "seconds", required_argument, NULL, 's' }, "seconds per run (3)" },
	{ { "threads", required_argument, NULL, 't' }, "worker counts to run, e.g. 1,2 (1,2)" },
	{ { "writer", required_argument, NULL, 'w' }, "quota updates per second (10000)" },
	{ { "hot", required_argument, NULL, 'h' }, "draw accounts from the first N only (all)" },
	{ { "maps", required_argument, NULL, 'm' }, "which to run (rcu,mutex,rwlock)" },
	{ { "speed", required_argument, NULL, 'S' }, "simulated seconds per real second (3600)" },
};

static void usage(void)
{
	fprintf(stderr, "usage: bench_ratelimit [options]\n");
	for (size_t i = 0; i < VR_ARRAY_SIZE(options); i++)
		fprintf(stderr, "  --%-9s N  %s\n", options[i].o.name, options[i].help);
	exit(2);
}

int main(int argc, char **argv)
{
	struct option longopts[VR_ARRAY_SIZE(options) + 1] = { 0 };
	double load[2][3], rate[MAP_N] = { 0 };
	int c;

	for (size_t i = 0; i < VR_ARRAY_SIZE(options); i++)
		longopts[i] = options[i].o;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'a': bad = parse_uint(optarg, 1, 10000000, &opt.accounts); break;
		case 's': bad = parse_uint(optarg, 1, 3600, &opt.seconds); break;
		case 't': bad = parse_threads(optarg); break;
		case 'w': bad = parse_uint(optarg, 10, 10000000, &opt.writer_rate); break;
		case 'h': bad = parse_uint(optarg, 1, UINT32_MAX, &opt.hot); break;
		case 'm': bad = parse_maps(optarg); break;
		case 'S': bad = parse_uint(optarg, 1, 1000000, &opt.speed); break;
		default: usage();
		}
		if (bad) {
			fprintf(stderr, "bench_ratelimit: bad value '%s' for --%s\n", optarg,
				argv[optind - 1] + 2);
			return 2;
		}
	}
	if (optind != argc)
		usage();
	if (opt.hot > opt.accounts)
		opt.hot = opt.accounts;

	ids = malloc(opt.accounts * sizeof(*ids));
	char *idbuf = malloc((size_t)opt.accounts * 16);
	if (!ids || !idbuf)
		abort();
	for (unsigned a = 0; a < opt.accounts; a++) {
		ids[a] = idbuf + (size_t)a * 16;
		id_of(a, ids[a]);
	}
	rcu_register_thread();
	double per_account = rl_setup();
	bl_init(&bl, opt.accounts);

	getloadavg(load[0], 3);
	printf("bench_ratelimit: %u accounts, %s, writer %u quota updates/s, %u s per run, "
	       "clock %ux\n", opt.accounts, opt.hot ? "hot set" : "uniform", opt.writer_rate,
	       opt.seconds, opt.speed);
	if (opt.hot)
		printf("  accounts drawn from the first %u\n", opt.hot);
	printf("  engine/ratelimit memory: %.0f bytes per account (RSS growth over the sync)\n",
	       per_account);
	double miss = miss_ns((size_t)(per_account * opt.accounts));
	printf("  a dependent cache miss over as many bytes: %.0f ns, so at most %.1fM "
	       "operations/s per core doing one, %.1fM doing two\n", miss, 1e3 / miss,
	       1e3 / miss / 2);
	printf("  load average before: %.2f %.2f %.2f (%ld CPUs online)\n", load[0][0], load[0][1],
	       load[0][2], sysconf(_SC_NPROCESSORS_ONLN));
	printf("%-7s %7s %10s %12s %12s %9s %10s\n", "map", "threads", "Mops/s", "per thread",
	       "per CPU-s", "granted", "updates/s");
	unsigned round = 0;
	for (unsigned i = 0; i < opt.n_threads; i++)
		for (enum map_kind k = MAP_RCU; k < MAP_N; k++)
			if (opt.map[k])
				rate[k] = run(k, opt.threads[i], round++);
	getloadavg(load[1], 3);
	if (rate[MAP_RCU] && rate[MAP_MUTEX] && rate[MAP_RWLOCK])
		printf("  at %u threads: rcu %.1fx the mutex map, %.1fx the rwlock map\n",
		       opt.threads[opt.n_threads - 1], rate[MAP_RCU] / rate[MAP_MUTEX],
		       rate[MAP_RCU] / rate[MAP_RWLOCK]);
	printf("  load average after: %.2f %.2f %.2f\n", load[1][0], load[1][1], load[1][2]);
	vr_rl_free(rl);
	rcu_unregister_thread();
	free(idbuf);
	free(ids);
	return 0;
}
