/*
 * conn.c - one blocking connection to a Redis server or Sentinel, for the
 * cluster thread and the control thread's quota commands: a TCP socket
 * with a connect and reply timeout, optionally an OpenSSL client session
 * that verifies the server's certificate against [cluster] tls_ca and the
 * server's name, hiredis's redisFormatCommandArgv to write a command and
 * its redisReader to parse the reply. Plain and TLS share this one path;
 * only the byte moving differs (read/write or SSL_read/SSL_write).
 *
 * hiredis 0.14 (Debian 12's) has no TLS, hence our own socket. The socket
 * is non-blocking and every wait is a poll() bounded by the call's
 * deadline, so a server that stops answering costs at most timeout_ms.
 * The TLS context, its files and the session's peer check (a host name,
 * or an IP address against IP SANs) are engine/tls's; only the I/O is
 * ours: engine/tls's sessions run over memory BIOs for the userspace
 * stack, while over a plain kernel socket an fd-bound SSL is the simpler
 * fit. OpenSSL writes to the socket itself, without MSG_NOSIGNAL: vmrelay
 * ignores SIGPIPE.
 */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmrelay/clock.h"
#include "vmrelay/common.h"
#include "vmrelay/tls.h"

#include "cluster_impl.h"

struct vr_cl_conn {
	int fd;
	SSL *ssl;                     /* NULL: plain TCP */
	redisReader *reader;
	uint32_t timeout_ms;
};

/*
 * The reader's reply objects. hiredis 0.14 sizes an array by what the
 * server announces ("*764870000" asks for 6 GB at once) and has no limit
 * of its own, so ours refuses an array longer than any reply we read,
 * which fails it as out of memory and drops the connection. Built as
 * hiredis builds its own (hiredis.c), so freeReplyObject frees them.
 */
#define REPLY_ELEMENTS_MAX 4096

/* A reply of type; reply_hang puts it into its parent array once complete. */
static redisReply *reply_new(int type)
{
	redisReply *r = calloc(1, sizeof(*r));

	if (r)
		r->type = type;
	return r;
}

static void *reply_hang(const redisReadTask *task, redisReply *r)
{
	if (task->parent) {
		redisReply *parent = task->parent->obj;
		parent->element[task->idx] = r;
	}
	return r;
}

static void *reply_string(const redisReadTask *task, char *str, size_t len)
{
	redisReply *r = reply_new(task->type);

	if (!r)
		return NULL;
	r->str = malloc(len + 1);
	if (!r->str) {
		free(r);
		return NULL;
	}
	memcpy(r->str, str, len);
	r->str[len] = '\0';
	r->len = len;
	return reply_hang(task, r);
}

static void *reply_array(const redisReadTask *task, int elements)
{
	if (elements > REPLY_ELEMENTS_MAX)
		return NULL;
	redisReply *r = reply_new(REDIS_REPLY_ARRAY);
	if (!r)
		return NULL;
	if (elements > 0) {
		r->element = calloc((size_t)elements, sizeof(*r->element));
		if (!r->element) {
			free(r);
			return NULL;
		}
	}
	r->elements = (size_t)VR_MAX(elements, 0);
	return reply_hang(task, r);
}

static void *reply_integer(const redisReadTask *task, long long value)
{
	redisReply *r = reply_new(REDIS_REPLY_INTEGER);

	if (!r)
		return NULL;
	r->integer = value;
	return reply_hang(task, r);
}

static void *reply_nil(const redisReadTask *task)
{
	redisReply *r = reply_new(REDIS_REPLY_NIL);

	return r ? reply_hang(task, r) : NULL;
}

static redisReplyObjectFunctions reply_fns = {
	.createString = reply_string, .createArray = reply_array,
	.createInteger = reply_integer, .createNil = reply_nil, .freeObject = freeReplyObject,
};

redisReader *vr_cl_reader_new(void)
{
	return redisReaderCreateWithFunctions(&reply_fns);
}

struct vr_tls_ctx *vr_cl_tls_ctx_new(const char *ca, const char *cert, const char *key,
				     char *err, size_t errlen)
{
	struct vr_tls_ctx *ctx = vr_tls_client_ctx_new(err, errlen);
	char why[400];

	if (!ctx)
		return NULL;
	/* engine/tls names the file; the setting in front says which one */
	if (vr_tls_client_ctx_verify(ctx, ca, why, sizeof(why)) < 0)
		snprintf(err, errlen, "tls_ca %s", why);
	else if (cert && vr_tls_client_ctx_cert(ctx, cert, why, sizeof(why)) < 0)
		snprintf(err, errlen, "tls_cert %s", why);
	else if (key && vr_tls_client_ctx_key(ctx, key, why, sizeof(why)) < 0)
		snprintf(err, errlen, "tls_key %s", why);
	else
		return ctx;
	vr_tls_ctx_free(ctx);
	return NULL;
}

/* Waits until fd is ready for events or the deadline passes. 0 or -1
 * (errno ETIMEDOUT). */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };

	for (;;) {
		uint64_t now = vr_clock_ms();
		if (now >= deadline) {
			errno = ETIMEDOUT;
			return -1;
		}
		int n = poll(&p, 1, (int)VR_MIN(deadline - now, (uint64_t)INT32_MAX));
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -1;
	}
}

/* One SSL_* call's want, waited for. 0 to try again, -1 to give up. */
static int ssl_wait(struct vr_cl_conn *c, int rc, uint64_t deadline)
{
	switch (SSL_get_error(c->ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		return wait_fd(c->fd, POLLIN, deadline);
	case SSL_ERROR_WANT_WRITE:
		return wait_fd(c->fd, POLLOUT, deadline);
	case SSL_ERROR_ZERO_RETURN:
		errno = 0;
		return -1;
	default:
		return -1;
	}
}

static int write_all(struct vr_cl_conn *c, const char *p, size_t n, uint64_t deadline)
{
	while (n > 0) {
		ssize_t w;
		if (c->ssl) {
			ERR_clear_error();
			int rc = SSL_write(c->ssl, p, (int)VR_MIN(n, (size_t)INT32_MAX));
			if (rc <= 0) {
				if (ssl_wait(c, rc, deadline) < 0)
					return -1;
				continue;
			}
			w = rc;
		} else {
			w = send(c->fd, p, n, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno != EAGAIN && errno != EINTR)
					return -1;
				if (wait_fd(c->fd, POLLOUT, deadline) < 0)
					return -1;
				continue;
			}
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Some bytes into buf: their count, or -1 (0 bytes: the peer closed). */
static ssize_t read_some(struct vr_cl_conn *c, char *buf, size_t cap, uint64_t deadline)
{
	for (;;) {
		if (c->ssl) {
			ERR_clear_error();
			int rc = SSL_read(c->ssl, buf, (int)cap);
			if (rc > 0)
				return rc;
			if (ssl_wait(c, rc, deadline) < 0)
				return -1;
			continue;
		}
		ssize_t n = recv(c->fd, buf, cap, 0);
		if (n > 0)
			return n;
		if (n == 0) {
			errno = 0;
			return -1;
		}
		if (errno != EAGAIN && errno != EINTR)
			return -1;
		if (wait_fd(c->fd, POLLIN, deadline) < 0)
			return -1;
	}
}

/* A non-blocking TCP connection to host:port within the deadline. */
static int tcp_connect(const char *host, int port, uint64_t deadline, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res, *ai;
	char service[8];
	int fd = -1, e = 0;

	snprintf(service, sizeof(service), "%d", port);
	int rc = getaddrinfo(host, service, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "%s: %s", host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			e = errno;
			continue;
		}
		socklen_t len = sizeof(e);
		if ((connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
		     (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == 0 &&
		      getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e == 0)))
			break;
		if (!e)
			e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, errlen, "connect: %s", strerror(e ? e : ECONNREFUSED));
		return -1;
	}
	/* one small command at a time: Nagle would only add delay */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* The TLS session on c->fd: the server's certificate must chain to the CA
 * and name `name` (an IP address is matched against IP SANs). */
static int tls_start(struct vr_cl_conn *c, struct vr_tls_ctx *ctx, const char *name,
		     uint64_t deadline, char *err, size_t errlen)
{
	char ssl[160];

	c->ssl = vr_tls_ssl_new(ctx, c->fd, name, err, errlen);
	if (!c->ssl)
		return -1;
	for (;;) {
		int rc = SSL_connect(c->ssl);
		if (rc == 1)
			return 0;
		long v = SSL_get_verify_result(c->ssl);
		if (v != X509_V_OK) {
			ERR_clear_error();
			snprintf(err, errlen, "TLS: server certificate not accepted for '%s': %s",
				 name, X509_verify_cert_error_string(v));
			return -1;
		}
		if (ssl_wait(c, rc, deadline) < 0) {
			snprintf(err, errlen, "TLS handshake: %s",
				 errno == ETIMEDOUT ? "timed out" : vr_tls_ssl_error(ssl, sizeof(ssl)));
			return -1;
		}
	}
}

struct vr_cl_conn *vr_cl_conn_open(const char *host, int port, struct vr_tls_ctx *tls,
				   const char *tls_name, uint32_t timeout_ms, char *err,
				   size_t errlen)
{
	uint64_t deadline = vr_clock_ms() + timeout_ms;
	struct vr_cl_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->fd = -1;
	c->timeout_ms = timeout_ms;
	c->reader = vr_cl_reader_new();
	c->fd = tcp_connect(host, port, deadline, err, errlen);
	if (!c->reader || c->fd < 0) {
		if (!c->reader)
			snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (tls && tls_start(c, tls, tls_name && tls_name[0] ? tls_name : host, deadline, err,
			     errlen) < 0)
		goto fail;
	return c;
fail:
	vr_cl_conn_close(c);
	return NULL;
}

struct redisReply *vr_cl_conn_cmd(struct vr_cl_conn *c, int argc, const char **argv,
				  char *err, size_t errlen)
{
	uint64_t deadline = vr_clock_ms() + c->timeout_ms;
	char *cmd, buf[16384];
	void *reply = NULL;
	int len = redisFormatCommandArgv(&cmd, argc, argv, NULL);

	if (len < 0) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	int rc = write_all(c, cmd, (size_t)len, deadline);
	redisFreeCommand(cmd);
	if (rc < 0)
		goto io_fail;
	for (;;) {
		if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
			snprintf(err, errlen, "protocol error: %s", c->reader->errstr);
			return NULL;
		}
		if (reply)
			return reply;
		ssize_t n = read_some(c, buf, sizeof(buf), deadline);
		if (n < 0)
			goto io_fail;
		if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
			snprintf(err, errlen, "protocol error: %s", c->reader->errstr);
			return NULL;
		}
	}
io_fail:
	if (errno == ETIMEDOUT)
		snprintf(err, errlen, "no reply in %u ms", c->timeout_ms);
	else
		snprintf(err, errlen, "%s", c->ssl ? vr_tls_ssl_error(buf, sizeof(buf))
			 : errno ? strerror(errno) : "connection closed");
	return NULL;
}

void vr_cl_conn_close(struct vr_cl_conn *c)
{
	if (!c)
		return;
	if (c->ssl) {
		/* a close_notify if it goes out at once; never waited for */
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		ERR_clear_error();
	}
	if (c->fd >= 0)
		close(c->fd);
	if (c->reader)
		redisReaderFree(c->reader);
	free(c);
}
