/*
 * bench.h - vmrelay-bench's run configuration and its two modes: the load
 * generator (client.c) and the receiving sink (sink.c). main.c fills the
 * configuration from the command line and runs one of them.
 */
#ifndef VR_BENCH_H
#define VR_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "vmrelay/common.h"
#include "vmrelay/tls.h"
#include "hash.h"
#include "msg.h"

#define VR_BENCH_SOURCES_MAX 64

/* Exit statuses, as --help lists them. */
enum {
	VR_BENCH_EXIT_OK = 0,
	VR_BENCH_EXIT_FAILED = 1,    /* some message or recipient failed */
	VR_BENCH_EXIT_USAGE = 2,     /* bad command line or setup */
	VR_BENCH_EXIT_SIGNAL = 3,    /* the client was interrupted */
};

struct vr_bench_addr {
	struct sockaddr_storage sa;
	socklen_t len;
};

struct vr_bench_cfg {
	/* both modes */
	bool json;                   /* one JSON object instead of text */
	bool progress;               /* a live line on stderr (a TTY) */
	enum vr_bench_hash_alg hash;
	uint64_t messages;           /* client: messages to send; sink: to receive; 0: no bound */
	double duration;             /* seconds; 0: no bound */
	double timeout;              /* seconds a peer may stay silent */
	uint64_t seed;
	struct vr_tls_ctx *tls;      /* client: for STARTTLS; sink: offers STARTTLS */

	/* client */
	struct vr_bench_addr target;
	char target_name[VR_ADDRSTRLEN];     /* as vr_bench_addr_name() writes it */
	struct vr_bench_addr sources[VR_BENCH_SOURCES_MAX];
	unsigned nsources;
	unsigned sessions;
	unsigned rcpts;              /* per message */
	struct vr_bench_sizes sizes;
	char size_spec[64];
	bool reuse, pipelining, chunking, starttls;
	const char *from;
	const char *helo;
	const char **to;
	unsigned nto;
	const char *dpdk_eal;        /* NULL: kernel sockets; else the EAL line (io_dpdk.c) */
	const char *dpdk_ip;         /* the stack's A.B.C.D/N */

	/* sink */
	struct vr_bench_addr listen;
	char listen_name[VR_ADDRSTRLEN];
	double fail_rate;            /* share of messages refused at their end */
	unsigned reply_code;         /* how they are refused */
	uint64_t max_size;           /* SIZE announced and enforced */
};

/* Both return the process's exit status. */
int vr_bench_client_run(const struct vr_bench_cfg *cfg);
int vr_bench_sink_run(const struct vr_bench_cfg *cfg);

/* "192.0.2.1:25" or "[2001:db8::1]:25". */
void vr_bench_addr_name(const struct vr_bench_addr *a, char *out, size_t outlen);
/* A signalfd for SIGINT and SIGTERM (and SIGUSR1 if usr1), those blocked. */
int vr_bench_signalfd(bool usr1);

#endif
