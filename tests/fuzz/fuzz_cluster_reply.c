/*
 * fuzz_cluster_reply.c - libFuzzer harness for what a Redis server or a
 * Sentinel sends the cluster module (engine/cluster): the byte stream goes
 * through hiredis's redisReader with conn.c's reply objects
 * (vr_cl_reader_new), fed as conn.c feeds it, and every reply that
 * comes out through the readers of its meaning: the lease script's answer
 * (vr_cl_grant_parse) and a sentinel's master address (vr_cl_master_addr).
 *
 * The first byte sets the size of the pieces the rest is fed in (conn.c
 * feeds whatever one read returned). An accepted grant must be within its
 * bounds; an accepted master address must read back as host and port.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 * Run:   build-fuzz/tests/fuzz/fuzz_cluster_reply -max_total_time=60
 */
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static void judge(const redisReply *rep)
{
	struct vr_cl_grant g;
	char addr[VR_CL_ADDR_MAX], host[256];
	int port;

	if (vr_cl_grant_parse(rep, &g) == 0)
		CHECK(g.refused >= 0 && g.refused <= VR_RL_NWINDOWS && g.now >= 0 &&
		      g.resets_at >= 0);
	if (vr_cl_master_addr(rep, addr, sizeof(addr)) == 0) {
		CHECK(memchr(addr, '\0', sizeof(addr)));
		CHECK(vr_cl_split_addr(addr, host, sizeof(host), &port) == 0);
		CHECK(port > 0 && port < 65536);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t piece = (size_t)data[0] % 16 + 1;
	redisReader *rd = vr_cl_reader_new();

	CHECK(rd);
	data++;
	size--;
	for (size_t at = 0; at < size; at += piece) {
		size_t n = size - at < piece ? size - at : piece;
		if (redisReaderFeed(rd, (const char *)data + at, n) != REDIS_OK)
			break;
		void *rep;
		int rc;
		while ((rc = redisReaderGetReply(rd, &rep)) == REDIS_OK && rep) {
			judge(rep);
			freeReplyObject(rep);
		}
		if (rc != REDIS_OK)
			break;         /* a protocol error: conn.c drops the connection */
	}
	redisReaderFree(rd);
	return 0;
}
