/*
 * log.c - key=value log lines, one write(2) each (see vmrelay/log.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "vmrelay/log.h"

static const char *const level_names[] = { "err", "warn", "info", "debug" };

/* Written at start and reload by the main thread; read by all (relaxed:
 * a line logged at the old level during a change is harmless). */
static int log_fd = STDERR_FILENO;
static int log_level = VR_LOG_INFO;

int vr_log_open(const char *path, enum vr_log_level level)
{
	int fd = STDERR_FILENO;

	if (path && *path && strcmp(path, "stderr") != 0) {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd < 0)
			return -errno;
	}
	int old = __atomic_exchange_n(&log_fd, fd, __ATOMIC_RELAXED);
	if (old != STDERR_FILENO && old != fd)
		close(old);
	__atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
	return 0;
}

void vr_log_close(void)
{
	vr_log_open(NULL, (enum vr_log_level)__atomic_load_n(&log_level, __ATOMIC_RELAXED));
}

int vr_log_level_parse(const char *name)
{
	for (size_t i = 0; i < VR_ARRAY_SIZE(level_names); i++)
		if (strcmp(name, level_names[i]) == 0)
			return (int)i;
	return -1;
}

int vr_log_enabled(enum vr_log_level level)
{
	return (int)level <= __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

void vr_log(enum vr_log_level level, const char *fmt, ...)
{
	char line[2048];
	struct timeval tv;
	struct tm tm;

	if (!vr_log_enabled(level))
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ",
			      (long)tv.tv_usec / 1000, level_names[level]);

	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += VR_MIN((size_t)m, sizeof(line) - n - 2);
	line[n++] = '\n';
	/* One write per line: atomic for O_APPEND files and for pipes up to
	 * PIPE_BUF, so concurrent threads never interleave within a line. */
	ssize_t w = write(__atomic_load_n(&log_fd, __ATOMIC_RELAXED), line, n);
	(void)w;
}

char *vr_log_quote(char *out, size_t outlen, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (outlen < 3) {
		if (outlen)
			out[0] = '\0';
		return out;
	}
	out[o++] = '"';
	for (size_t i = 0; i < len && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c >= 0x20 && c < 0x7f) {
			out[o++] = (char)c;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}
