/*
 * test_log.c - the log's lines: written at once before the logging thread
 * starts, then through each thread's ring: every line whole and in its
 * thread's order, lost lines counted when a ring is full, the file opened
 * again after a move, and what the rings hold written out on exit().
 *
 * The files are real files and a real pipe; a full ring is made the way it
 * happens in a relay: nobody reads the pipe the log goes to.
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmrelay/log.h"

static char tmpdir[] = "/tmp/vr_test_log.XXXXXX";
static char path[300];

/* The whole of a file (or what a reader collected), NUL-terminated; free it. */
static char *slurp_fd(int fd)
{
	size_t len = 0, cap = 1 << 16;
	char *s = malloc(cap);
	ssize_t n;

	assert_non_null(s);
	while ((n = read(fd, s + len, cap - len - 1)) > 0) {
		len += (size_t)n;
		if (cap - len < 4096) {
			cap *= 2;
			s = realloc(s, cap);
			assert_non_null(s);
		}
	}
	s[len] = '\0';
	return s;
}

static char *slurp(const char *p)
{
	FILE *f = fopen(p, "r");

	assert_non_null(f);
	char *s = slurp_fd(fileno(f));
	fclose(f);
	return s;
}

/*
 * Checks every line of text: a whole log line, and for "event=seq t=T i=I"
 * lines, I follows the last I of T (no line lost, none out of order, when
 * gaps is 0) or at least exceeds it. Adds the seq lines per thread to got[]
 * and returns the lines the log_dropped notes say were lost.
 */
static unsigned long check_lines(char *text, unsigned threads, unsigned long *got, int gaps)
{
	long last[16];
	unsigned long lost = 0;

	assert_true(threads <= 16);
	for (unsigned t = 0; t < threads; t++)
		last[t] = -1;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		unsigned t;
		long i;
		unsigned long n;
		char *ev = strstr(line, "Z ");

		/* "2026-12-04T21:20:18.123Z level event=..." */
		assert_non_null(ev);
		assert_int_equal(ev - line, 23);
		if (sscanf(ev, "Z info event=seq t=%u i=%ld pad=", &t, &i) == 2) {
			assert_true(t < threads);
			if (gaps)
				assert_true(i > last[t]);
			else
				assert_int_equal(i, last[t] + 1);
			last[t] = i;
			got[t]++;
			assert_non_null(strstr(line, " end"));
		} else if (sscanf(ev, "Z warn event=log_dropped lines=%lu", &n) == 1) {
			assert_true(n > 0);
			lost += n;
		} else {
			fail_msg("unexpected line: %s", line);
		}
	}
	return lost;
}

struct writer {
	pthread_t th;
	unsigned t;
	unsigned long lines;
};

static void *write_seq(void *arg)
{
	struct writer *w = arg;

	vr_log_thread_async();
	for (unsigned long i = 0; i < w->lines; i++)
		vr_log_info("event=seq t=%u i=%lu pad=%s end", w->t, i,
			    "...................................");
	return NULL;
}

static void run_writers(unsigned threads, unsigned first, unsigned long lines)
{
	struct writer w[16];

	for (unsigned t = 0; t < threads; t++) {
		w[t] = (struct writer){ .t = first + t, .lines = lines };
		assert_int_equal(pthread_create(&w[t].th, NULL, write_seq, &w[t]), 0);
	}
	for (unsigned t = 0; t < threads; t++)
		pthread_join(w[t].th, NULL);
}

static void test_before_open_each_line_is_written_at_once(void **state)
{
	int saved = dup(STDERR_FILENO);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	assert_true(saved >= 0 && fd >= 0);
	dup2(fd, STDERR_FILENO);
	vr_log_err("event=config_error file=relay.ini");
	/* read back without any close or flush: it is in the file already */
	lseek(fd, 0, SEEK_SET);
	char *text = slurp_fd(fd);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fd);
	assert_non_null(strstr(text, "Z err event=config_error file=relay.ini\n"));
	free(text);
	unlink(path);
}

/* A thread that may block writes its own lines: they are in the file when
 * vr_log returns, with the logging thread running. */
static void test_other_threads_write_at_once(void **state)
{
	assert_int_equal(vr_log_open(path, VR_LOG_INFO), 0);
	vr_log_info("event=reload accounts=2");
	char *text = slurp(path);
	assert_non_null(strstr(text, "Z info event=reload accounts=2\n"));
	free(text);
	vr_log_close();
	unlink(path);
}

static void test_threads_lines_whole_and_in_order(void **state)
{
	unsigned long got[8] = { 0 };

	assert_int_equal(vr_log_open(path, VR_LOG_INFO), 0);
	/* 1000 lines of ~100 bytes each fit a thread's ring: none may be lost */
	run_writers(4, 0, 1000);
	/* these threads may take over the rings the first four left */
	run_writers(4, 4, 1000);
	vr_log_close();
	char *text = slurp(path);
	assert_int_equal(check_lines(text, 8, got, 0), 0);
	for (unsigned t = 0; t < 8; t++)
		assert_int_equal(got[t], 1000);
	free(text);
	unlink(path);
}

static void test_many_threads_lost_lines_all_counted(void **state)
{
	unsigned long got[4] = { 0 }, sum = 0;

	assert_int_equal(vr_log_open(path, VR_LOG_INFO), 0);
	run_writers(4, 0, 30000);
	vr_log_close();
	char *text = slurp(path);
	unsigned long lost = check_lines(text, 4, got, 1);
	for (unsigned t = 0; t < 4; t++)
		sum += got[t];
	assert_int_equal(sum + lost, 4 * 30000);
	free(text);
	unlink(path);
}

static void *read_all(void *arg)
{
	return slurp_fd(*(int *)arg);
}

static void test_full_ring_drops_counted_and_said(void **state)
{
	int p[2];
	char dev[64];
	unsigned long got[1] = { 0 };
	pthread_t reader;

	/* this thread is a worker from now on (and in the tests after this one) */
	vr_log_thread_async();
	assert_int_equal(pipe(p), 0);
	snprintf(dev, sizeof(dev), "/dev/fd/%d", p[1]);
	assert_int_equal(vr_log_open(dev, VR_LOG_INFO), 0);
	close(p[1]);                  /* the log's descriptor is the only writer */
	/* nobody reads: the logging thread stalls on the full pipe (64 KiB),
	 * the ring (128 KiB) fills, and this thread goes on without waiting */
	for (unsigned i = 0; i < 5000; i++)
		vr_log_info("event=seq t=0 i=%u pad=%s end", i,
			    "...................................");
	assert_int_equal(pthread_create(&reader, NULL, read_all, &p[0]), 0);
	struct timespec nap = { 0, 200 * 1000000L };
	nanosleep(&nap, NULL);
	/* room again: the count of lost lines comes before this one */
	vr_log_info("event=seq t=0 i=5000 pad=after end");
	vr_log_close();
	char *text;
	pthread_join(reader, (void **)&text);
	close(p[0]);
	unsigned long lost = check_lines(text, 1, got, 1);
	assert_true(lost > 0);
	assert_true(got[0] < 5000);
	assert_int_equal(got[0] + lost, 5001);
	free(text);
}

static void test_reopen_after_move(void **state)
{
	char moved[320];
	unsigned long got[1] = { 0 };

	snprintf(moved, sizeof(moved), "%s.1", path);
	assert_int_equal(vr_log_open(path, VR_LOG_INFO), 0);
	for (unsigned i = 0; i < 100; i++)
		vr_log_info("event=seq t=0 i=%u pad=x end", i);
	assert_int_equal(rename(path, moved), 0);        /* what logrotate does */
	assert_int_equal(vr_log_reopen(path), 0);
	for (unsigned i = 100; i < 200; i++)
		vr_log_info("event=seq t=0 i=%u pad=x end", i);
	vr_log_close();
	/* what was logged before the reopen is in the moved file, the rest in
	 * the new one: the first file's last line is 99, the new one's first 100 */
	char *old = slurp(moved), *cur = slurp(path);
	assert_int_equal(check_lines(old, 1, got, 0), 0);
	assert_int_equal(got[0], 100);
	assert_non_null(strstr(cur, " i=100 "));
	assert_null(strstr(cur, " i=99 "));
	free(old);
	free(cur);
	unlink(moved);
	unlink(path);
}

static void test_exit_writes_what_the_rings_hold(void **state)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		if (vr_log_open(path, VR_LOG_INFO) < 0)
			_exit(99);
		for (unsigned i = 0; i < 50; i++)
			vr_log_info("event=seq t=0 i=%u pad=x end", i);
		vr_log_err("event=fatal error=\"spool: no space\"");
		exit(3);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 3);
	char *text = slurp(path);
	assert_non_null(strstr(text, " i=49 pad=x end\n"));
	assert_non_null(strstr(text, "Z err event=fatal error=\"spool: no space\"\n"));
	free(text);
	unlink(path);
}

static int setup(void **state)
{
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(path, sizeof(path), "%s/log", tmpdir);
	return 0;
}

static int teardown(void **state)
{
	return rmdir(tmpdir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_before_open_each_line_is_written_at_once),
		cmocka_unit_test(test_other_threads_write_at_once),
		cmocka_unit_test(test_threads_lines_whole_and_in_order),
		cmocka_unit_test(test_many_threads_lost_lines_all_counted),
		cmocka_unit_test(test_full_ring_drops_counted_and_said),
		cmocka_unit_test(test_reopen_after_move),
		cmocka_unit_test(test_exit_writes_what_the_rings_hold),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
