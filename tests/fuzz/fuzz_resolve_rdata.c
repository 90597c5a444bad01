/*
 * fuzz_resolve_rdata.c - libFuzzer harness for the resolver's rdata
 * decoders (engine/delivery/resolve_rdata.c), which read record data a DNS
 * server chose.
 *
 * The whole input is handed to each decoder as one record's rdata, in a
 * buffer of exactly its size (ASan catches a read past it). What a decoder
 * accepts must be well-formed: a name is lower-case letters, digits, '-',
 * '_' and single dots within 253 octets; a decoded name re-encodes to the
 * octets it consumed; TXT output never exceeds its input.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined
 * Run:   build-fuzz/tests/fuzz/fuzz_resolve_rdata -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resolve_rdata.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

/* name -> wire, to compare with what the decoder consumed */
static size_t encode(const char *name, uint8_t *out)
{
	size_t o = 0;

	while (*name) {
		const char *dot = strchr(name, '.');
		size_t n = dot ? (size_t)(dot - name) : strlen(name);

		out[o++] = (uint8_t)n;
		memcpy(out + o, name, n);
		o += n;
		name += n + (dot != NULL);
	}
	out[o++] = 0;
	return o;
}

static void check_name(const char *name)
{
	size_t n = strlen(name);

	CHECK(n <= VR_DNS_NAME_MAX);
	CHECK(n == 0 || (name[0] != '.' && name[n - 1] != '.' && !strstr(name, "..")));
	for (size_t i = 0; i < n; i++)
		CHECK((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
		      name[i] == '-' || name[i] == '_' || name[i] == '.');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *p = malloc(size ? size : 1), wire[VR_DNS_NAME_MAX + 2];
	char name[VR_DNS_NAME_MAX + 1], *txt = malloc(size + 1);
	struct vr_tlsa_rr rr;
	uint16_t pref;
	int n;
	long t;

	memcpy(p, data, size);
	n = vr_rdata_name(p, size, name);
	if (n >= 0) {
		check_name(name);
		CHECK((size_t)n <= size);
		/* same octets back, but for the case the decoder folded */
		CHECK(encode(name, wire) == (size_t)n);
		for (int i = 0; i < n; i++)
			CHECK(wire[i] == p[i] || (wire[i] >= 'a' && wire[i] <= 'z' && wire[i] - 32 == p[i]));
	}
	if (vr_rdata_mx(p, size, &pref, name) == 0) {
		check_name(name);
		CHECK(pref == (uint16_t)(p[0] << 8 | p[1]));
	}
	if (vr_rdata_tlsa(p, size, &rr) == 0)
		CHECK(rr.data == p + 3 && rr.len == size - 3);
	t = vr_rdata_txt(p, size, txt, size + 1);
	if (t >= 0)
		CHECK((size_t)t < size && txt[t] == '\0');
	free(txt);
	free(p);
	return 0;
}
