/*
 * test_core.c - buf, crc32c, log and config.
 *
 * The config tests write small INI files into a private temp directory and
 * check both what loads and, for each kind of mistake, that the message
 * names the file, the line and the key, and that the caller's struct is left
 * alone.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "vmrelay/buf.h"
#include "vmrelay/config.h"
#include "vmrelay/crc32c.h"
#include "vmrelay/log.h"
#include "vmrelay/utf8.h"

static char tmpdir[] = "/tmp/vr_test_core.XXXXXX";

/* --- buf --- */

static void test_buf_append_consume(void **state)
{
	struct vr_buf b;

	vr_buf_init(&b, 0);
	assert_int_equal(vr_buf_append(&b, "hello ", 6), 0);
	assert_int_equal(vr_buf_printf(&b, "%s %d", "world", 42), 0);
	assert_int_equal(vr_buf_len(&b), 14);
	assert_memory_equal(vr_buf_head(&b), "hello world 42", 14);
	vr_buf_consume(&b, 6);
	assert_memory_equal(vr_buf_head(&b), "world 42", 8);
	vr_buf_consume(&b, 100);
	assert_int_equal(vr_buf_len(&b), 0);
	vr_buf_free(&b);
}

static void test_buf_ceiling(void **state)
{
	struct vr_buf b;
	char big[1000];

	memset(big, 'x', sizeof(big));
	vr_buf_init(&b, 1500);
	assert_int_equal(vr_buf_append(&b, big, sizeof(big)), 0);
	assert_int_equal(vr_buf_append(&b, big, sizeof(big)), -ENOBUFS);
	assert_int_equal(vr_buf_len(&b), 1000);
	/* Room freed at the front is reused rather than refused. */
	vr_buf_consume(&b, 900);
	assert_int_equal(vr_buf_append(&b, big, sizeof(big)), 0);
	assert_int_equal(vr_buf_len(&b), 1100);
	vr_buf_free(&b);
}

static void test_buf_printf_long(void **state)
{
	struct vr_buf b;
	char s[2000];

	memset(s, 'a', sizeof(s) - 1);
	s[sizeof(s) - 1] = '\0';
	vr_buf_init(&b, 0);
	assert_int_equal(vr_buf_printf(&b, "<%s>", s), 0);
	assert_int_equal(vr_buf_len(&b), sizeof(s) + 1);
	assert_int_equal(vr_buf_head(&b)[0], '<');
	assert_int_equal(vr_buf_head(&b)[sizeof(s)], '>');
	vr_buf_free(&b);
}

/* --- crc32c: RFC 3720 B.4 --- */

static void test_crc32c_vectors(void **state)
{
	uint8_t p[32];

	memset(p, 0, sizeof(p));
	assert_int_equal(vr_crc32c(0, p, sizeof(p)), 0x8A9136AA);
	memset(p, 0xff, sizeof(p));
	assert_int_equal(vr_crc32c(0, p, sizeof(p)), 0x62A8AB43);
	for (unsigned i = 0; i < 32; i++)
		p[i] = (uint8_t)i;
	assert_int_equal(vr_crc32c(0, p, sizeof(p)), 0x46DD794E);
	for (unsigned i = 0; i < 32; i++)
		p[i] = (uint8_t)(31 - i);
	assert_int_equal(vr_crc32c(0, p, sizeof(p)), 0x113FDB5C);
	assert_int_equal(vr_crc32c(0, "123456789", 9), 0xE3069283);
	assert_int_equal(vr_crc32c(0, "", 0), 0);
}

static void test_crc32c_incremental_unaligned(void **state)
{
	uint8_t p[301];

	for (unsigned i = 0; i < sizeof(p); i++)
		p[i] = (uint8_t)(i * 7 + 3);
	uint32_t whole = vr_crc32c(0, p + 1, 300);
	for (size_t cut = 0; cut <= 300; cut += 13)
		assert_int_equal(vr_crc32c(vr_crc32c(0, p + 1, cut), p + 1 + cut, 300 - cut), whole);
}

/* --- log --- */

static void test_log_levels_and_quote(void **state)
{
	char out[64];

	assert_int_equal(vr_log_level_parse("err"), VR_LOG_ERR);
	assert_int_equal(vr_log_level_parse("debug"), VR_LOG_DEBUG);
	assert_int_equal(vr_log_level_parse("verbose"), -1);
	assert_string_equal(vr_log_quote(out, sizeof(out), "a \"b\"\r\n", 7),
			    "\"a \\\"b\\\"\\x0d\\x0a\"");
}

static void test_log_file(void **state)
{
	char path[256], text[512];

	snprintf(path, sizeof(path), "%s/log", tmpdir);
	assert_int_equal(vr_log_open(path, VR_LOG_INFO), 0);
	vr_log_info("event=test n=%d", 1);
	vr_log_debug("event=hidden");
	vr_log_close();
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	assert_non_null(strstr(text, "Z info event=test n=1\n"));
	assert_null(strstr(text, "hidden"));
	unlink(path);
}

/* --- config --- */

static const char *write_ini(const char *text)
{
	static char path[256];

	snprintf(path, sizeof(path), "%s/relay.ini", tmpdir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

#define MINIMAL \
	"[relay]\nhostname = relay.test\nlisten = 127.0.0.1:2525\n" \
	"spool_dir = /tmp/spool\naccounts = /tmp/accounts.jsonl\n"

/* Loads text, expects failure with exactly "<path>:<suffix>" and cfg
 * unchanged. */
static void expect_error(const char *text, const char *suffix)
{
	struct vr_config cfg, before;
	char err[512], want[512];

	const char *path = write_ini(text);
	memset(&cfg, 0x5a, sizeof(cfg));
	before = cfg;
	assert_int_equal(vr_config_load(path, &cfg, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s%s", path, suffix);
	assert_string_equal(err, want);
	assert_memory_equal(&cfg, &before, sizeof(cfg));
}

static void test_config_design_example(void **state)
{
	static const char design[] =
		"[relay]\n"
		"hostname = relay.example.net\n"
		"listen = 0.0.0.0:25, 0.0.0.0:587, 0.0.0.0:2525, 0.0.0.0:465 tls=implicit\n"
		"spool_dir = /var/spool/vmrelay\n"
		"accounts = /etc/vmrelay/accounts.jsonl\n"
		"control_socket = /run/vmrelay/ctl.sock\n"
		"\n"
		"[io]\n"
		"mode = dpdk                 ; or kernel; --io on the command line overrides\n"
		"\n"
		"[dpdk]\n"
		"eal = -l 0-1 --no-huge -m 512 --no-pci --vdev=net_af_packet0,iface=veth-relay\n"
		"ip = 10.77.0.1/24\n"
		"\n"
		"[limits]\n"
		"per_minute = 60\n"
		"per_hour = 250\n"
		"per_day = 1000              ; default daily quota of an account\n"
		"per_day_max = 10000         ; the cap an operator may raise a quota to\n"
		"\n"
		"[tls]\n"
		"cert = /etc/vmrelay/tls.crt\n"
		"key = /etc/vmrelay/tls.key\n"
		"\n"
		"[delivery]\n"
		"smarthost = 127.0.0.9:2699  ; optional: every message to one next hop\n";
	struct vr_config cfg;
	char err[512] = "";

	int rc = vr_config_load(write_ini(design), &cfg, err, sizeof(err));
	assert_string_equal(err, "");
	assert_int_equal(rc, 0);
	assert_string_equal(cfg.hostname, "relay.example.net");
	assert_int_equal(cfg.n_listen, 4);
	static const uint16_t ports[] = { 25, 587, 2525, 465 };
	for (unsigned i = 0; i < 4; i++) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&cfg.listen[i].addr;
		assert_int_equal(sin->sin_family, AF_INET);
		assert_int_equal(ntohs(sin->sin_port), ports[i]);
		assert_int_equal(sin->sin_addr.s_addr, htonl(INADDR_ANY));
		assert_int_equal(cfg.listen[i].addrlen, sizeof(*sin));
		assert_int_equal(cfg.listen[i].implicit_tls, i == 3);
	}
	assert_string_equal(cfg.listen[3].text, "0.0.0.0:465 tls=implicit");
	assert_string_equal(cfg.spool_dir, "/var/spool/vmrelay");
	assert_string_equal(cfg.accounts, "/etc/vmrelay/accounts.jsonl");
	assert_string_equal(cfg.control_socket, "/run/vmrelay/ctl.sock");
	assert_int_equal(cfg.io_mode, VR_IO_DPDK);
	assert_string_equal(cfg.dpdk_eal,
			    "-l 0-1 --no-huge -m 512 --no-pci --vdev=net_af_packet0,iface=veth-relay");
	assert_string_equal(cfg.dpdk_ip, "10.77.0.1/24");
	assert_int_equal(cfg.per_minute, 60);
	assert_int_equal(cfg.per_hour, 250);
	assert_int_equal(cfg.per_day, 1000);
	assert_int_equal(cfg.per_day_max, 10000);
	assert_string_equal(cfg.tls_cert, "/etc/vmrelay/tls.crt");
	assert_string_equal(cfg.tls_key, "/etc/vmrelay/tls.key");
	assert_string_equal(cfg.smarthost, "127.0.0.9:2699");
	/* Not in the file: defaults. */
	assert_int_equal(cfg.workers, 1);
	assert_int_equal(cfg.log_level, VR_LOG_INFO);
	assert_int_equal(cfg.max_message_size, 25u << 20);
	assert_string_equal(cfg.timezone, "UTC");
}

static void test_config_defaults(void **state)
{
	struct vr_config cfg;

	vr_config_defaults(&cfg);
	assert_int_equal(cfg.io_mode, VR_IO_KERNEL);
	assert_int_equal(cfg.workers, 1);
	assert_int_equal(cfg.max_message_size, 25u << 20);
	assert_int_equal(cfg.max_recipients, 100);
	assert_int_equal(cfg.max_errors, 10);
	assert_int_equal(cfg.max_conn_per_ip, 50);
	assert_int_equal(cfg.max_connections, 10000);
	assert_int_equal(cfg.idle_timeout_ms, 300000);
	assert_int_equal(cfg.greet_pause_ms, 0);
	assert_int_equal(cfg.per_minute, 60);
	assert_int_equal(cfg.per_hour, 250);
	assert_int_equal(cfg.per_day, 1000);
	assert_int_equal(cfg.per_day_max, 10000);
	assert_int_equal(cfg.n_listen, 0);
	assert_string_equal(cfg.tls_cert, "");
	assert_string_equal(cfg.smarthost, "");
}

static void test_config_values(void **state)
{
	struct vr_config cfg;
	char err[512] = "";

	const char *path = write_ini("; a comment\n# another\n" MINIMAL
		"  log_level = debug   ; indented: a key, not a continuation\n"
		"[smtp]\nmax_message_size = 10M\nmax_recipients=5\n"
		"idle_timeout_ms = 1500\n"
		"[io]\nworkers = 64\nmode = kernel\n"
		"[limits]\nper_day = 20000\nper_day_max = 20000\n"
		"[delivery]\nworkers = 2\nsmarthost = [::1]:25\nretry_first_s = 60\n"
		"retry_max_s = 60\nresolver = 127.0.0.53\n"
		"[cluster]\nredis = localhost:6379\n"
		"[dns]\nspf_name = _spf.relay.example\n");
	assert_int_equal(vr_config_load(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.dns_spf_name, "_spf.relay.example");
	assert_int_equal(cfg.log_level, VR_LOG_DEBUG);
	assert_int_equal(cfg.max_message_size, 10u << 20);
	assert_int_equal(cfg.max_recipients, 5);
	assert_int_equal(cfg.idle_timeout_ms, 1500);
	assert_int_equal(cfg.workers, 64);
	assert_int_equal(cfg.per_day, 20000);
	assert_int_equal(cfg.delivery_workers, 2);
	assert_string_equal(cfg.smarthost, "[::1]:25");
	assert_string_equal(cfg.redis, "localhost:6379");
	assert_int_equal(cfg.retry_max_s, 60);
}

static void test_config_listen(void **state)
{
	struct vr_listen l;
	char err[256];

	assert_int_equal(vr_config_parse_listen(" [::1]:465  tls=implicit ", &l, err, sizeof(err)), 0);
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&l.addr;
	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(sin6->sin6_port), 465);
	assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
	assert_int_equal(l.addrlen, sizeof(*sin6));
	assert_true(l.implicit_tls);
	assert_string_equal(l.text, "[::1]:465  tls=implicit");

	assert_int_equal(vr_config_parse_listen("127.0.0.1:25", &l, err, sizeof(err)), 0);
	assert_false(l.implicit_tls);
	/* Port 0: any free port, for tests; two of them are not duplicates. */
	struct vr_config cfg;
	assert_int_equal(vr_config_load(write_ini("[relay]\nhostname = relay.test\n"
		"listen = 127.0.0.1:0, 127.0.0.1:0\nspool_dir = /s\naccounts = /a\n"), &cfg, err,
		sizeof(err)), 0);
	assert_int_equal(cfg.n_listen, 2);
	assert_int_equal(((struct sockaddr_in *)&cfg.listen[1].addr)->sin_port, 0);

	static const struct { const char *in, *err; } bad[] = {
		{ "127.0.0.1", "bad listen address '127.0.0.1': missing port" },
		{ "127.0.0.1:65536", "bad listen address '127.0.0.1:65536': bad port" },
		{ "127.0.0.1:x25", "bad listen address '127.0.0.1:x25': bad port" },
		{ "::1:25", "bad listen address '::1:25': not an IPv4 address or [IPv6]" },
		{ "[127.0.0.1]:25", "bad listen address '[127.0.0.1]:25': not an IPv4 address or [IPv6]" },
		{ "[::1]25", "bad listen address '[::1]25': missing port" },
		{ "localhost:25", "bad listen address 'localhost:25': not an IPv4 address or [IPv6]" },
		{ "1.2.3.4:25 tls=yes", "bad listen address '1.2.3.4:25 tls=yes': unknown option 'tls=yes'" },
		{ "", "bad listen address '': empty" },
	};
	for (size_t i = 0; i < VR_ARRAY_SIZE(bad); i++) {
		assert_int_equal(vr_config_parse_listen(bad[i].in, &l, err, sizeof(err)), -1);
		assert_string_equal(err, bad[i].err);
	}
}

static void test_config_errors(void **state)
{
	char seventeen[512] = "[relay]\nlisten = ";
	for (int i = 1; i <= 17; i++)
		snprintf(seventeen + strlen(seventeen), sizeof(seventeen) - strlen(seventeen),
			 "%s0.0.0.0:%d", i > 1 ? "," : "", i);
	strcat(seventeen, "\n");

	const struct { const char *ini, *err; } cases[] = {
		{ MINIMAL "listn = 1\n", ":6: unknown key 'listn' in [relay]" },
		{ MINIMAL "[relais]\nx = 1\n", ":6: unknown section [relais]" },
		{ "x = 1\n" MINIMAL, ":1: key 'x' outside any section" },
		{ MINIMAL "[io]\nworkers = many\n", ":7: 'workers' in [io]: bad number 'many'" },
		{ MINIMAL "[io]\nworkers = -1\n", ":7: 'workers' in [io]: bad number '-1'" },
		{ MINIMAL "[io]\nworkers = 65\n", ":7: 'workers' in [io]: 65 out of range 1..64" },
		{ MINIMAL "[io]\nworkers = 0\n", ":7: 'workers' in [io]: 0 out of range 1..64" },
		{ MINIMAL "[io]\nworkers = 99999999999999999999999\n",
		  ":7: 'workers' in [io]: bad number '99999999999999999999999'" },
		{ MINIMAL "[io]\nmode = netmap\n", ":7: 'mode' in [io]: 'netmap' is not kernel or dpdk" },
		{ MINIMAL "log_level = loud\n",
		  ":6: 'log_level' in [relay]: 'loud' is not err, warn, info or debug" },
		{ MINIMAL "[smtp]\nmax_message_size = 25x\n",
		  ":7: 'max_message_size' in [smtp]: bad size '25x' (a number of bytes, optionally with k, m or g)" },
		{ MINIMAL "[smtp]\nmax_message_size = 2g\n",
		  ":7: 'max_message_size' in [smtp]: 2g out of range 1024..1073741824" },
		{ "[relay]\nlisten = 127.0.0.1\n",
		  ":2: 'listen' in [relay]: bad listen address '127.0.0.1': missing port" },
		{ "[relay]\nlisten = 127.0.0.1:25, 127.0.0.1:25\n",
		  ":2: 'listen' in [relay]: '127.0.0.1:25' listed twice" },
		{ seventeen, ":2: 'listen' in [relay]: more than 16 listen addresses" },
		{ "[relay]\nhostname = bad_host.example\n",
		  ":2: 'hostname' in [relay]: bad host name 'bad_host.example'" },
		{ MINIMAL "[dns]\nkey_zone = _dkim..relay.example\n",
		  ":7: 'key_zone' in [dns]: bad DNS name '_dkim..relay.example'" },
		{ MINIMAL "hostname = again.test\n",
		  ":6: duplicate key 'hostname' in [relay] (first on line 2)" },
		{ MINIMAL "[dpdk]\nip = 10.77.0.1\n",
		  ":7: 'ip' in [dpdk]: '10.77.0.1' is not an IPv4 address/prefix such as 10.77.0.1/24" },
		{ MINIMAL "[delivery]\nsmarthost = mx.example\n",
		  ":7: 'smarthost' in [delivery]: 'mx.example' is not host:port or [IPv6]:port" },
		{ MINIMAL "[limits]\ntimezone = Mars/Olympus_Mons\n",
		  ":7: 'timezone' in [limits]: unknown time zone 'Mars/Olympus_Mons' (no /usr/share/zoneinfo/Mars/Olympus_Mons)" },
		{ MINIMAL "[limits]\nper_day = 20000\n",
		  ":7: per_day 20000 is above per_day_max 10000 in [limits]" },
		{ MINIMAL "[tls]\ncert = /x.crt\n", ":7: [tls] has cert but not key" },
		{ MINIMAL "[delivery]\nretry_max_s = 10\n",
		  ":7: retry_max_s 10 is below retry_first_s 300 in [delivery]" },
		{ "[relay]\nhostname = a.test\n", ": missing required key 'listen' in [relay]" },
		{ MINIMAL "this line has no equals sign\n",
		  ":6: syntax error (expected [section] or key = value)" },
		{ MINIMAL "[io\n", ":6: syntax error (expected [section] or key = value)" },
		/* inih only reports its syntax error by line: an earlier one wins
		 * over a later error of ours. */
		{ MINIMAL "oops\nlistn = 1\n", ":6: syntax error (expected [section] or key = value)" },
		{ MINIMAL "[dpdk]\neal = -l 0-1 --vdev=net_af_packet0,iface=veth-relay-with-a-long-name"
			  "-----------------------------------------------------------------------"
			  "-------------------------------------------------------------------\n",
		  ":7: line too long (more than 198 characters)" },
	};
	for (size_t i = 0; i < VR_ARRAY_SIZE(cases); i++)
		expect_error(cases[i].ini, cases[i].err);
}

static void test_config_missing_file(void **state)
{
	struct vr_config cfg;
	char err[512];

	memset(&cfg, 0, sizeof(cfg));
	assert_int_equal(vr_config_load("/nonexistent/relay.ini", &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent/relay.ini: No such file or directory");
	assert_int_equal(cfg.workers, 0);
}

static int setup(void **state)
{
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/relay.ini", tmpdir);
	unlink(path);
	return rmdir(tmpdir);
}

/* RFC 3629 boundaries: the first and last of each length, and the forms
 * that look like UTF-8 but are not (overlong, surrogate, > U+10FFFF,
 * truncated, stray continuation). */
static void test_utf8_seq(void **state)
{
	static const struct { const char *in; size_t n, want; } cases[] = {
		{ "A", 1, 1 }, { "", 1, 1 },
		{ "\xc2\x80", 2, 2 }, { "\xdf\xbf", 2, 2 },
		{ "\xe0\xa0\x80", 3, 3 }, { "\xef\xbf\xbf", 3, 3 },
		{ "\xf0\x90\x80\x80", 4, 4 }, { "\xf4\x8f\xbf\xbf", 4, 4 },
		{ "\xc0\x80", 2, 0 }, { "\xc1\xbf", 2, 0 },          /* overlong */
		{ "\xe0\x9f\xbf", 3, 0 }, { "\xf0\x8f\xbf\xbf", 4, 0 },
		{ "\xed\xa0\x80", 3, 0 },                            /* surrogate */
		{ "\xf4\x90\x80\x80", 4, 0 }, { "\xf5\x80\x80\x80", 4, 0 },
		{ "\x80", 1, 0 }, { "\xe2\x82", 2, 0 }, { "\xe2\x82\x41", 3, 0 },
	};
	(void)state;
	assert_int_equal(vr_utf8_seq((const uint8_t *)"A", 0), 0);
	for (size_t i = 0; i < VR_ARRAY_SIZE(cases); i++)
		assert_int_equal(vr_utf8_seq((const uint8_t *)cases[i].in, cases[i].n), cases[i].want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buf_append_consume),
		cmocka_unit_test(test_buf_ceiling),
		cmocka_unit_test(test_buf_printf_long),
		cmocka_unit_test(test_crc32c_vectors),
		cmocka_unit_test(test_crc32c_incremental_unaligned),
		cmocka_unit_test(test_utf8_seq),
		cmocka_unit_test(test_log_levels_and_quote),
		cmocka_unit_test(test_log_file),
		cmocka_unit_test(test_config_design_example),
		cmocka_unit_test(test_config_defaults),
		cmocka_unit_test(test_config_values),
		cmocka_unit_test(test_config_listen),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_config_missing_file),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
