/*
 * drive.c - what both transports do the same way around a vr_session:
 * conn.c over kernel sockets and stack.c over the userspace TCP differ in
 * how bytes move, not in who is admitted, how output is handed on, or when
 * a session is woken next. Keeping that here keeps the two in step.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmrelay/log.h"
#include "io_impl.h"

const char *vr_io_admit(const struct vr_config *cfg, struct vr_connlimit *cl,
			unsigned n_conns, const struct sockaddr *peer, const char *ip,
			uint64_t **slot, char *reply, size_t len)
{
	const char *reason = NULL;
	char q[256];

	*slot = NULL;
	if (n_conns >= cfg->max_connections) {
		snprintf(reply, len, "421 4.7.0 %s too many connections\r\n", cfg->hostname);
		reason = "max_connections";
	} else if (cl) {
		int rc = vr_connlimit_acquire(cl, vr_connlimit_key(peer), slot);
		if (rc == 0)
			return NULL;
		snprintf(reply, len, "421 4.7.0 %s too many connections from %s\r\n",
			 cfg->hostname, ip);
		reason = rc == -EUSERS ? "max_conn_per_ip" : "connlimit_table";
		if (rc != -EUSERS)
			vr_log_warn("event=connlimit_table client=%s error=%s", ip, strerror(-rc));
	} else {
		return NULL;
	}
	vr_log_info("event=refused client=%s reason=%s reply=%s", ip, reason,
		    vr_log_quote(q, sizeof(q), reply, strcspn(reply, "\r")));
	return reason;
}

int vr_io_session_flush(struct vr_session *s, vr_io_send_fn *send_fn, void *arg)
{
	const uint8_t *p;
	size_t n;

	while ((n = vr_session_tx_peek(s, &p)) > 0) {
		ssize_t w = send_fn(arg, p, n);
		if (w < 0)
			return -1;
		if (w == 0)
			return 1;
		vr_session_tx_consume(s, (size_t)w);
	}
	return 0;
}

uint64_t vr_io_session_deadline(const struct vr_session *s, bool closing,
				uint64_t *drain_until, uint64_t now)
{
	uint64_t deadline = vr_session_deadline(s);

	if (closing) {
		/* A client that stops reading must not hold a finished session. */
		if (*drain_until == 0)
			*drain_until = now + IO_DRAIN_MS;
		deadline = VR_MIN(deadline, *drain_until);
	}
	return deadline <= now ? now + 1 : deadline;    /* tick next round, never spin */
}
