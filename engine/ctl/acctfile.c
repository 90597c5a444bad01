/*
 * acctfile.c - `account add`, `account remove` and the DNS wizard's marking
 * of a domain verified (vr_ctl_accounts_edit) edit the accounts file,
 * which stays the source of truth: the relay's table is only ever what a
 * reload made of that file.
 *
 * An edit writes the whole new file to a temporary file in the same
 * directory, loads that with the relay's own loader (so a line is judged
 * exactly as a reload would judge it: bad keys, duplicate ids and
 * addresses, quotas above the cap), and only then fsyncs it, renames it
 * over the file and fsyncs the directory. A crash leaves either the old
 * file or the new one, never half of one; a refused edit leaves the file
 * untouched.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ctl_impl.h"
#include "vmrelay/policy.h"

/* The file as it is, whole: accounts files are read whole by reload too. */
struct text {
	char *s;
	size_t len;
	mode_t mode;
};

static int read_all(const char *path, struct text *t, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	t->mode = st.st_mode & 07777;
	t->len = 0;
	t->s = malloc((size_t)st.st_size + 1);
	if (!t->s) {
		snprintf(err, errlen, "%s: out of memory", path);
		close(fd);
		return -1;
	}
	/* a file that shrinks meanwhile is read to its end; one that grows,
	 * to the size it had */
	while (t->len < (size_t)st.st_size) {
		ssize_t n = read(fd, t->s + t->len, (size_t)st.st_size - t->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			free(t->s);
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		t->len += (size_t)n;
	}
	t->s[t->len] = '\0';
	close(fd);
	return 0;
}

static int write_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = write(fd, s, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Puts parts[0..n) in place of the accounts file, if the result loads.
 * A loader error names the accounts file, not the temporary one, and the
 * line the result would have had.
 */
static int replace(struct vr_ctl *c, const struct text *old, const struct iovec *parts,
		   unsigned n, char *err, size_t errlen)
{
	const struct vr_config *cfg = c->ops.cfg;
	char tmp[PATH_MAX + 32], copy[PATH_MAX];
	int fd;

	snprintf(copy, sizeof(copy), "%s", cfg->accounts);
	const char *dir = dirname(copy);
	if (snprintf(tmp, sizeof(tmp), "%s/.vmrelay-accounts.XXXXXX", dir) >=
	    (int)sizeof(tmp) || (fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "%s: temporary file: %s", cfg->accounts, strerror(errno));
		return -1;
	}
	for (unsigned i = 0; i < n; i++) {
		if (write_all(fd, parts[i].iov_base, parts[i].iov_len) < 0)
			goto io_fail;
	}
	if (fchmod(fd, old->mode) < 0 || fsync(fd) < 0)
		goto io_fail;

	char why[1024];
	struct vr_accounts *t = vr_accounts_load_max(tmp, cfg->per_day, cfg->per_day_max, why,
						      sizeof(why));
	if (!t) {
		size_t skip = strncmp(why, tmp, strlen(tmp)) == 0 ? strlen(tmp) : 0;
		snprintf(err, errlen, "%s%s", skip ? cfg->accounts : "", why + skip);
		goto fail;
	}
	vr_accounts_free(t);
	if (rename(tmp, cfg->accounts) < 0)
		goto io_fail;
	close(fd);
	/* the rename itself must reach the disk before we say it is done */
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0) {
		snprintf(err, errlen, "%s: fsync of the directory: %s", dir, strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return -1;
	}
	close(dfd);
	return 0;
io_fail:
	snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
fail:
	close(fd);
	unlink(tmp);
	return -1;
}

int vr_ctl_accounts_add(struct vr_ctl *c, const char *line, char *id, size_t idlen, char *err,
			size_t errlen)
{
	json_error_t jerr;
	struct text old;

	/* One object on one line: anything else would not be the one account
	 * line the command promises (a comment or a blank is skipped by the
	 * loader and would add nothing). */
	if (strpbrk(line, "\r\n")) {
		snprintf(err, errlen, "an account is one line of JSON");
		return -1;
	}
	json_t *obj = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj) {
		snprintf(err, errlen, "bad JSON at column %d: %s", jerr.column, jerr.text);
		return -1;
	}
	json_t *idv = json_object_get(obj, "id");
	if (!json_is_object(obj) || !json_is_string(idv)) {
		snprintf(err, errlen, "an account is a JSON object with an \"id\"");
		json_decref(obj);
		return -1;
	}
	snprintf(id, idlen, "%s", json_string_value(idv));
	json_decref(obj);

	if (read_all(c->ops.cfg->accounts, &old, err, errlen) < 0)
		return -1;
	bool nl = old.len == 0 || old.s[old.len - 1] == '\n';
	struct iovec parts[] = {
		{ old.s, old.len },
		{ (void *)"\n", nl ? 0 : 1 },
		{ (void *)line, strlen(line) },
		{ (void *)"\n", 1 },
	};
	int rc = replace(c, &old, parts, VR_ARRAY_SIZE(parts), err, errlen);
	free(old.s);
	return rc;
}

/* Whether one line of the file is the account id's. */
static bool line_is(const char *s, size_t len, const char *id)
{
	json_t *obj = json_loadb(s, len, 0, NULL);
	json_t *v = json_object_get(obj, "id");
	bool is = json_is_string(v) && strcmp(json_string_value(v), id) == 0;

	json_decref(obj);
	return is;
}

int vr_ctl_accounts_remove(struct vr_ctl *c, const char *id, char *err, size_t errlen)
{
	struct text old;
	struct iovec *parts;
	unsigned n = 0, removed = 0;

	if (read_all(c->ops.cfg->accounts, &old, err, errlen) < 0)
		return -1;
	/* at most one part per line kept */
	size_t lines = 1;
	for (const char *p = old.s; (p = strchr(p, '\n')); p++)
		lines++;
	parts = calloc(lines, sizeof(*parts));
	if (!parts) {
		snprintf(err, errlen, "out of memory");
		free(old.s);
		return -1;
	}
	for (char *p = old.s, *end = old.s + old.len; p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl + 1 - p) : (size_t)(end - p);

		if (line_is(p, len, id))
			removed++;
		else
			parts[n++] = (struct iovec){ p, len };
		p += len;
	}
	int rc = -1;
	if (removed == 0)
		snprintf(err, errlen, "unknown account '%s' (not in %s)", id, c->ops.cfg->accounts);
	else
		rc = replace(c, &old, parts, n, err, errlen);
	free(parts);
	free(old.s);
	return rc;
}

int vr_ctl_accounts_edit(struct vr_ctl *c, const char *id, vr_ctl_account_edit_fn *fn,
			 void *arg, char *err, size_t errlen)
{
	struct text old;
	char *line = NULL;
	int rc = -1;

	if (read_all(c->ops.cfg->accounts, &old, err, errlen) < 0)
		return -1;
	for (char *p = old.s, *end = old.s + old.len; p < end;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl + 1 - p) : (size_t)(end - p);

		if (!line_is(p, len, id)) {
			p += len;
			continue;
		}
		/* the line rewritten in full: keys in their order, one line */
		json_t *obj = json_loadb(p, len, JSON_REJECT_DUPLICATES, NULL);
		if (fn(obj, arg, err, errlen) == 0 &&
		    (line = json_dumps(obj, JSON_PRESERVE_ORDER | JSON_COMPACT)) == NULL)
			snprintf(err, errlen, "out of memory");
		json_decref(obj);
		if (line) {
			struct iovec parts[] = {
				{ old.s, (size_t)(p - old.s) },
				{ line, strlen(line) },
				{ (void *)"\n", 1 },
				{ p + len, (size_t)(end - p - len) },
			};
			rc = replace(c, &old, parts, VR_ARRAY_SIZE(parts), err, errlen);
		}
		free(line);
		free(old.s);
		return rc;
	}
	snprintf(err, errlen, "unknown account '%s' (not in %s)", id, c->ops.cfg->accounts);
	free(old.s);
	return -1;
}
