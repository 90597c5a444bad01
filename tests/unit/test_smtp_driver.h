/*
 * test_smtp_driver.h - drives real SMTP sessions in the smtp unit tests
 * the way a transport does: a real spool in a temporary directory with its
 * committer thread, a real accounts table published with RCU, real TLS on
 * both ends, and a clock the test moves.
 */
#ifndef TEST_SMTP_DRIVER_H
#define TEST_SMTP_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmrelay/buf.h"
#include "vmrelay/config.h"
#include "vmrelay/smtp.h"
#include "vmrelay/spool.h"
#include "vmrelay/tls.h"

/* The accounts table the fixture publishes. vps1 (host1.example.com) may
 * send as example.com and lists.example.net; pending.example is listed
 * but not verified. vps2 may send as example.org. vps3 sends as
 * hold.example, and over its quota its mail is held. */
#define DRV_VPS1_ADDR   "203.0.113.7"            /* vps1, registered */
#define DRV_VPS1_ADDR6  "2001:db8:7::25"         /* vps1's /64 */
#define DRV_STRANGER    "198.51.100.9"           /* nobody */
#define DRV_VPS3_ADDR   "203.0.113.9"            /* vps3, over_quota hold */
#define DRV_VPS1_TOKEN  "vps1-secret-token"
#define DRV_VPS2_TOKEN  "vps2-other-token"       /* vps2: no address, AUTH only */
#define DRV_HOSTNAME    "relay.example.net"

struct drv {
	char dir[64];
	char spool_dir[96];
	char accounts[96];
	char log[96];
	struct vr_config cfg;            /* sessions see this; tests may change it */
	struct vr_spool *spool;
	struct vr_tls_ctx *tls_server, *tls_client;
	struct vr_smtp_stats stats[1];
	struct vr_smtpd srv;
	/* the spool's status is replaced by this unless it is 1 */
	int force_status;
	/* slots the sessions reserved, confirmed and released (drv_limits) */
	uint32_t rl_reserved, rl_confirmed, rl_released;
};

extern struct drv drv;

/* cmocka group setup/teardown: the fixture above. */
int drv_setup(void **state);
int drv_teardown(void **state);
/* Base configuration for a test (what every test starts from): no
 * sending windows, so no limits. */
void drv_config_reset(void);
/* Sending windows for the published accounts (a day quota of 1000 each),
 * in drv.srv.rl; the slot counters start at 0. */
void drv_limits(uint32_t per_minute, uint32_t per_hour);
/* What account id's minute window counts now. */
uint32_t drv_used(const char *id);

/* One conversation. */
struct conv {
	struct vr_session *s;
	uint64_t now;
	struct vr_buf out;               /* all the server said, in plaintext */
	size_t seen;                     /* of out, already returned by conv_said() */
	struct vr_tls *tls;              /* client side, after STARTTLS / implicit */
	int kicks;
};

/* Opens a session from addr (IPv4 or IPv6 text) and ticks it at time 0;
 * with implicit_tls the client does the TLS handshake. */
void conv_open(struct conv *c, const char *addr, bool implicit_tls);
/* The same, choosing separately whether the client speaks TLS. */
void conv_open_mode(struct conv *c, const char *addr, bool implicit_tls, bool client_tls);
void conv_close(struct conv *c);
/* Sends bytes as the client, step octets per vr_session_rx() at most (the
 * session's rx_space permitting), waiting for the spool when it must. */
void conv_send(struct conv *c, const void *p, size_t n, size_t step);
void conv_sendf(struct conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Runs until the session waits for nothing but the client (or closed). */
void conv_settle(struct conv *c);
/* Moves the clock on and ticks. */
void conv_wait(struct conv *c, uint64_t ms);
/* What the server said since the last call (NUL-terminated, in a static
 * buffer valid until the next call). */
const char *conv_said(struct conv *c);
/* Says "STARTTLS" and completes the handshake as a client. */
void conv_starttls(struct conv *c);
bool conv_closed(const struct conv *c);

/* The queue ID in "250 2.0.0 Ok: queued as QID" within text, or NULL. */
const char *drv_qid(const char *text, char *qid, size_t len);
/* A committed message as the spool has it. */
struct drv_msg {
	char account[64], client[64], helo[256], from[300];
	char rcpt[4][300];
	unsigned n_rcpts;
	uint32_t flags;
	uint64_t received_us;
	char *body;                      /* malloc'd */
	size_t body_len;
};
/* Finds a message by queue ID in the spool; false if absent. */
bool drv_spool_find(const char *qid, struct drv_msg *m);
void drv_msg_free(struct drv_msg *m);
/* Number of intact messages in the spool. */
unsigned drv_spool_count(void);

#endif
