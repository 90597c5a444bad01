/*
 * log.h - one-line, key=value log records to stderr or a file.
 *
 * Every line reads "TIMESTAMP LEVEL event=NAME key=value ...", so mail
 * administrators can grep them the way they grep Postfix logs; the queue ID
 * (qid=) ties an SMTP transaction to its later delivery attempts. Values with
 * spaces are quoted by the caller with vr_log_quote().
 *
 * Thread-safe: each line is formatted into a stack buffer and written with a
 * single write(2), so lines from different threads never interleave.
 */
#ifndef VR_LOG_H
#define VR_LOG_H

#include <stddef.h>
#include "vmrelay/common.h"

enum vr_log_level { VR_LOG_ERR, VR_LOG_WARN, VR_LOG_INFO, VR_LOG_DEBUG };

/* path NULL or "" or "stderr" logs to stderr. Returns 0 or -errno. */
int vr_log_open(const char *path, enum vr_log_level level);
void vr_log_close(void);
/* "err", "warn", "info", "debug" -> level; -1 if unknown. */
int vr_log_level_parse(const char *name);
int vr_log_enabled(enum vr_log_level level);

void vr_log(enum vr_log_level level, const char *fmt, ...) VR_PRINTF(2, 3);

#define vr_log_err(...)   vr_log(VR_LOG_ERR, __VA_ARGS__)
#define vr_log_warn(...)  vr_log(VR_LOG_WARN, __VA_ARGS__)
#define vr_log_info(...)  vr_log(VR_LOG_INFO, __VA_ARGS__)
#define vr_log_debug(...) \
	do { if (vr_log_enabled(VR_LOG_DEBUG)) vr_log(VR_LOG_DEBUG, __VA_ARGS__); } while (0)

/*
 * Copies s (at most len bytes) into out as a log value: printable ASCII is
 * kept, quotes and backslashes are escaped, anything else becomes \xNN, the
 * whole in double quotes. Returns out (always NUL-terminated).
 */
char *vr_log_quote(char *out, size_t outlen, const char *s, size_t len);

#endif
