/*
 * ctl.c - the control socket's thread: accepts on the Unix socket, checks
 * each peer's credentials, splits what it sends into lines and answers each
 * with vr_ctl_exec (cmd.c).
 *
 * It also serves GET /metrics on [relay] metrics_listen (http.c parses the
 * request), one request per connection, to scrapers that are not checked:
 * the figures are no secret, and the endpoint can change nothing.
 *
 * One thread, one poll() over the listening sockets, an eventfd that says
 * stop, and up to CLIENTS_MAX control clients and HTTP_MAX scrapers, in
 * separate slots so that scrapers cannot crowd operators out; every socket
 * is non-blocking, so a client that sends half a line or stops reading
 * delays nobody, and a scraper gets HTTP_TIMEOUT_MS for its request. A client
 * whose replies pile up (OUT_MAX) or who sends a line longer than
 * VR_CTL_REQUEST_MAX gets an error line and is closed: control requests are
 * short, and memory stays bounded whatever a client does. Closing means
 * shutting our side down and discarding input until the client closes its
 * own: closing a Unix socket with unread input resets it, and the client
 * would lose the line that says why.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <urcu-qsbr.h>

#include "ctl_impl.h"
#include "http.h"
#include "vmrelay/wizard.h"
#include "vmrelay/log.h"

#define CLIENTS_MAX 32
#define HTTP_MAX 16
#define HTTP_TIMEOUT_MS 10000
#define SLOTS (CLIENTS_MAX + HTTP_MAX)
#define OUT_MAX (4u << 20)
/* The default [relay] control_group, used only if it exists. */
#define DEFAULT_GROUP "vmrelay"

struct client {
	int fd;
	bool closing;                 /* refused: send out, then only wait for EOF */
	struct vr_buf in, out;
	struct vr_http_req *http;     /* a scraper's request; NULL: a control client */
	uint64_t deadline_ms;         /* a scraper's, monotonic */
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int sock_path(const char *path, struct sockaddr_un *sun, char *err, size_t errlen)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path)) {
		snprintf(err, errlen, "control_socket %s: path longer than %zu bytes", path,
			 sizeof(sun->sun_path) - 1);
		return -1;
	}
	strcpy(sun->sun_path, path);
	return 0;
}

/* A socket file left by a relay that died is replaced; anything else at the
 * path, or a socket someone still answers on, is an error. */
static int clear_stale(const struct sockaddr_un *sun, char *err, size_t errlen)
{
	struct stat st;

	if (lstat(sun->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "control_socket %s: exists and is not a socket",
			 sun->sun_path);
		return -EEXIST;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0) {
		close(fd);
		snprintf(err, errlen, "control_socket %s: another process is serving it",
			 sun->sun_path);
		return -EADDRINUSE;
	}
	if (fd >= 0)
		close(fd);
	return unlink(sun->sun_path) < 0 ? -errno : 0;
}

static int listen_unix(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	int fd, rc;

	if (sock_path(path, &sun, err, errlen) < 0)
		return -1;
	err[0] = '\0';
	if ((rc = clear_stale(&sun, err, errlen)) < 0) {
		if (!err[0])
			snprintf(err, errlen, "control_socket %s: %s", path, strerror(-rc));
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* no window in which the socket is open to all: bind under a umask
	 * that leaves 0660, then chmod to say it outright */
	mode_t old = umask(0117);
	rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (rc < 0 || chmod(path, 0660) < 0 || listen(fd, 16) < 0) {
		snprintf(err, errlen, "control_socket %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		if (rc == 0)
			unlink(path);
		return -1;
	}
	return fd;
}

/* [relay] control_group: a named group must exist; the default only if it
 * does. The socket's group is set to it, so members can connect at all. */
static int resolve_group(struct vr_ctl *c, char *err, size_t errlen)
{
	const char *name = c->ops.cfg->control_group[0] ? c->ops.cfg->control_group
							: DEFAULT_GROUP;
	struct group *g = getgrnam(name);

	if (!g) {
		if (!c->ops.cfg->control_group[0])
			return 0;
		snprintf(err, errlen, "control_group '%s': no such group", name);
		return -1;
	}
	c->group = g->gr_gid;
	c->group_set = true;
	if (chown(c->ops.cfg->control_socket, (uid_t)-1, g->gr_gid) < 0) {
		snprintf(err, errlen, "control_socket %s: chown to group %s: %s",
			 c->ops.cfg->control_socket, name, strerror(errno));
		return -1;
	}
	return 0;
}

/* [relay] metrics_listen, if set: -1 after saying why in err, else 0. */
static int listen_metrics(struct vr_ctl *c, char *err, size_t errlen)
{
	const char *text = c->ops.cfg->metrics_listen;
	struct vr_listen l;
	int one = 1;

	if (!text[0])
		return 0;
	if (vr_config_parse_listen(text, &l, err, errlen) < 0 || l.implicit_tls) {
		if (l.implicit_tls)
			snprintf(err, errlen, "metrics_listen %s: no TLS here", text);
		return -1;
	}
	c->hfd = socket(l.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->hfd < 0 || setsockopt(c->hfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(c->hfd, (struct sockaddr *)&l.addr, l.addrlen) < 0 || listen(c->hfd, 16) < 0) {
		snprintf(err, errlen, "metrics_listen %s: %s", text, strerror(errno));
		return -1;
	}
	struct sockaddr_storage ss = { 0 };
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	getsockname(c->hfd, (struct sockaddr *)&ss, &len);
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
	c->metrics_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
				: ((struct sockaddr_in6 *)&ss)->sin6_port);
	vr_log_info(ss.ss_family == AF_INET ? "event=metrics_listen addr=%s:%u"
		    : "event=metrics_listen addr=[%s]:%u", host, (unsigned)c->metrics_port);
	return 0;
}

struct vr_ctl *vr_ctl_new(const struct vr_ctl_ops *ops, char *err, size_t errlen)
{
	struct vr_ctl *c = calloc(1, sizeof(*c));

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->ops = *ops;
	c->stop_fd = c->hfd = -1;
	c->lfd = listen_unix(ops->cfg->control_socket, err, errlen);
	if (c->lfd < 0)
		goto fail;
	if (resolve_group(c, err, errlen) < 0 || listen_metrics(c, err, errlen) < 0 ||
	    vr_ctl_dns_init(c, err, errlen) < 0)
		goto fail;
	c->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->stop_fd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto fail;
	}
	return c;
fail:
	vr_ctl_free(c);
	return NULL;
}

/* Root, the relay's own user, or a member (primary or supplementary) of
 * the control group. */
static bool peer_allowed(const struct vr_ctl *c, const struct ucred *cr)
{
	if (cr->uid == 0 || cr->uid == geteuid())
		return true;
	if (!c->group_set)
		return false;
	if (cr->gid == c->group)
		return true;

	struct passwd pw, *pwp;
	char pwbuf[4096];
	gid_t groups[256];
	int n = VR_ARRAY_SIZE(groups);

	if (getpwuid_r(cr->uid, &pw, pwbuf, sizeof(pwbuf), &pwp) != 0 || !pwp)
		return false;
	if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0)
		return false;
	for (int i = 0; i < n; i++) {
		if (groups[i] == c->group)
			return true;
	}
	return false;
}

static void client_close(struct client *cl)
{
	close(cl->fd);
	cl->fd = -1;
	vr_buf_free(&cl->in);
	vr_buf_free(&cl->out);
	free(cl->http);
	cl->http = NULL;
}

/* A last error line before closing. */
static void client_refuse(struct client *cl, const char *why)
{
	char line[256];
	int n = snprintf(line, sizeof(line), "{\"error\":\"%s\",\"ok\":false}\n", why);

	vr_buf_reset(&cl->out);
	vr_buf_append(&cl->out, line, (size_t)n);
	cl->closing = true;
}

/* A free slot in clients[lo, hi), or NULL. */
static struct client *slot(struct client *clients, unsigned lo, unsigned hi)
{
	for (unsigned i = lo; i < hi; i++)
		if (clients[i].fd < 0)
			return &clients[i];
	return NULL;
}

static void accept_http(struct vr_ctl *c, struct client *clients)
{
	int fd = accept4(c->hfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct client *cl = slot(clients, CLIENTS_MAX, SLOTS);

	if (fd < 0)
		return;
	if (!cl) {
		vr_log_warn("event=metrics_refused reason=too_many_clients max=%u", HTTP_MAX);
		close(fd);
		return;
	}
	*cl = (struct client){ .fd = fd, .http = malloc(sizeof(*cl->http)),
			       .deadline_ms = now_ms() + HTTP_TIMEOUT_MS };
	vr_buf_init(&cl->in, 0);
	vr_buf_init(&cl->out, OUT_MAX);
	if (!cl->http) {
		client_close(cl);
		return;
	}
	vr_http_init(cl->http);
}

static void accept_one(struct vr_ctl *c, struct client *clients)
{
	int fd = accept4(c->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct ucred cr;
	socklen_t len = sizeof(cr);
	struct client *cl = slot(clients, 0, CLIENTS_MAX);

	if (fd < 0)
		return;
	if (!cl) {
		vr_log_warn("event=ctl_refused reason=too_many_clients max=%u", CLIENTS_MAX);
		close(fd);
		return;
	}
	*cl = (struct client){ .fd = fd };
	vr_buf_init(&cl->in, VR_CTL_REQUEST_MAX + 1);
	vr_buf_init(&cl->out, OUT_MAX);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
		vr_log_warn("event=ctl_refused reason=no_credentials error=\"%s\"",
			    strerror(errno));
		client_close(cl);
		return;
	}
	if (!peer_allowed(c, &cr)) {
		vr_log_warn("event=ctl_refused reason=credentials uid=%u gid=%u pid=%d",
			    (unsigned)cr.uid, (unsigned)cr.gid, (int)cr.pid);
		client_refuse(cl, "permission denied: only root and the control group may "
			      "use the control socket");
		return;
	}
	vr_log_debug("event=ctl_client uid=%u pid=%d", (unsigned)cr.uid, (int)cr.pid);
}

/* Answers every whole line in cl->in. */
static void client_lines(struct vr_ctl *c, struct client *cl)
{
	for (;;) {
		const char *p = (const char *)vr_buf_head(&cl->in);
		const char *nl = p ? memchr(p, '\n', vr_buf_len(&cl->in)) : NULL;

		if (!nl)
			break;
		size_t n = (size_t)(nl - p);
		/* "\r\n" as well, for people typing at socat */
		if (vr_ctl_exec(c, p, n && p[n - 1] == '\r' ? n - 1 : n, &cl->out) < 0) {
			client_refuse(cl, "reply too large or out of memory");
			return;
		}
		vr_buf_consume(&cl->in, n + 1);
	}
	if (vr_buf_len(&cl->in) > VR_CTL_REQUEST_MAX)
		client_refuse(cl, "request line too long");
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 414: return "URI Too Long";
	case 431: return "Request Header Fields Too Large";
	case 505: return "HTTP Version Not Supported";
	case 500: return "Internal Server Error";
	default: return "Bad Request";
	}
}

/* The response to a parsed (or refused) request; the connection then closes. */
static void http_respond(struct vr_ctl *c, struct client *cl, int status)
{
	struct vr_buf body;
	const struct vr_http_req *r = cl->http;
	static const char path[] = "/metrics";

	vr_buf_init(&body, OUT_MAX / 2);
	/* a query string is allowed and ignored, as Prometheus's own servers do */
	if (status == 200 && !(r->tlen >= sizeof(path) - 1 &&
			       memcmp(r->target, path, sizeof(path) - 1) == 0 &&
			       (r->tlen == sizeof(path) - 1 || r->target[sizeof(path) - 1] == '?')))
		status = 404;
	if (status == 200 && vr_ctl_metrics(c, &body) < 0)
		status = 500;
	if (status != 200) {
		vr_buf_reset(&body);
		vr_buf_printf(&body, "%d %s\n", status, reason(status));
	}
	vr_buf_reset(&cl->out);
	vr_buf_printf(&cl->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
		      "Content-Length: %zu\r\nConnection: close\r\n%s\r\n", status,
		      reason(status), status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
		      : "text/plain; charset=utf-8", vr_buf_len(&body),
		      status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (!(status == 200 && r->head_only))
		vr_buf_append(&cl->out, vr_buf_head(&body), vr_buf_len(&body));
	vr_buf_free(&body);
	cl->closing = true;
}

static void http_read(struct vr_ctl *c, struct client *cl)
{
	uint8_t p[2048];
	size_t used;
	ssize_t n = read(cl->fd, p, sizeof(p));

	if (n <= 0) {
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			client_close(cl);
		return;
	}
	int rc = vr_http_parse(cl->http, p, (size_t)n, &used);
	if (rc != VR_AGAIN)
		http_respond(c, cl, cl->http->status);
}

static void client_read(struct vr_ctl *c, struct client *cl)
{
	uint8_t *p;
	ssize_t n;

	if (cl->closing) {
		char sink[2048];
		n = read(cl->fd, sink, sizeof(sink));
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			client_close(cl);
		return;
	}
	p = vr_buf_reserve(&cl->in, 1024);

	if (!p) {
		client_refuse(cl, "request line too long");
		return;
	}
	/* no more than one request line can be pending, bounded */
	size_t room = VR_CTL_REQUEST_MAX + 1 - vr_buf_len(&cl->in);
	n = read(cl->fd, p, room < 1024 ? room : 1024);
	if (n <= 0) {
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			client_close(cl);
		return;
	}
	vr_buf_commit(&cl->in, (size_t)n);
	client_lines(c, cl);
}

static void client_write(struct client *cl)
{
	while (vr_buf_len(&cl->out)) {
		ssize_t n = send(cl->fd, vr_buf_head(&cl->out), vr_buf_len(&cl->out),
				 MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				client_close(cl);
			return;
		}
		vr_buf_consume(&cl->out, (size_t)n);
	}
	if (cl->closing)
		shutdown(cl->fd, SHUT_WR);
}

static void *ctl_thread(void *arg)
{
	struct vr_ctl *c = arg;
	struct client clients[SLOTS] = { 0 };
	struct pollfd pfd[3 + SLOTS];

	rcu_register_thread();
	for (unsigned i = 0; i < SLOTS; i++)
		clients[i].fd = -1;
	for (;;) {
		uint64_t now = now_ms(), next = UINT64_MAX;

		pfd[0] = (struct pollfd){ .fd = c->stop_fd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = c->lfd, .events = POLLIN };
		pfd[2] = (struct pollfd){ .fd = c->hfd, .events = POLLIN };
		for (unsigned i = 0; i < SLOTS; i++) {
			struct client *cl = &clients[i];
			/* a scraper too slow to ask, or to read the answer */
			if (cl->fd >= 0 && cl->http && now >= cl->deadline_ms)
				client_close(cl);
			if (cl->fd >= 0 && cl->http && cl->deadline_ms < next)
				next = cl->deadline_ms;
			pfd[3 + i] = (struct pollfd){ .fd = cl->fd, .events =
				(short)(POLLIN | (vr_buf_len(&cl->out) ? POLLOUT : 0)) };
		}
		int timeout = next == UINT64_MAX ? -1 : (int)(next - now) + 1;
		/* Offline while waiting (QSBR): a quiescent state each round,
		 * and no grace period waits for an idle control socket. */
		rcu_thread_offline();
		int n = poll(pfd, VR_ARRAY_SIZE(pfd), timeout);
		rcu_thread_online();
		if (n < 0) {
			if (errno == EINTR)
				continue;
			vr_log_err("event=ctl_failed error=\"poll: %s\"", strerror(errno));
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[1].revents & POLLIN)
			accept_one(c, clients);
		if (pfd[2].revents & POLLIN)
			accept_http(c, clients);
		for (unsigned i = 0; i < SLOTS; i++) {
			struct client *cl = &clients[i];
			short ev = pfd[3 + i].revents;

			if (cl->fd < 0 || pfd[3 + i].fd != cl->fd || !ev)
				continue;
			if ((ev & (POLLIN | POLLHUP | POLLERR)) && cl->http && !cl->closing)
				http_read(c, cl);
			else if (ev & (POLLIN | POLLHUP | POLLERR))
				client_read(c, cl);
			if (cl->fd >= 0 && vr_buf_len(&cl->out))
				client_write(cl);
		}
	}
	for (unsigned i = 0; i < SLOTS; i++)
		if (clients[i].fd >= 0)
			client_close(&clients[i]);
	rcu_unregister_thread();
	return NULL;
}

int vr_ctl_start(struct vr_ctl *c)
{
	int rc = pthread_create(&c->thread, NULL, ctl_thread, c);

	if (rc != 0)
		return -rc;
	c->started = true;
	return 0;
}

uint16_t vr_ctl_metrics_port(const struct vr_ctl *c)
{
	return c->metrics_port;
}

void vr_ctl_free(struct vr_ctl *c)
{
	if (!c)
		return;
	if (c->started) {
		uint64_t one = 1;
		if (write(c->stop_fd, &one, sizeof(one)) < 0)
			vr_log_err("event=ctl_failed error=\"eventfd: %s\"", strerror(errno));
		pthread_join(c->thread, NULL);
	}
	if (c->lfd >= 0) {
		close(c->lfd);
		unlink(c->ops.cfg->control_socket);
	}
	if (c->stop_fd >= 0)
		close(c->stop_fd);
	if (c->hfd >= 0)
		close(c->hfd);
	vr_wizard_free(c->wizard);
	free(c);
}
