/*
 * bench_dkim.c - DKIM signing: messages signed per second on one core,
 * against what OpenSSL itself signs per second with the same kind of key
 * on the same machine in the same run (`openssl speed`), the physical
 * limit: every message costs one signature plus our canonicalisation and
 * hashing. The ratio is the figure of merit (target >= 90%).
 *
 *   bench_dkim [--seconds S] [--rounds R] [--size BYTES] [--chunk BYTES]
 *              [--algs ed25519,rsa2048] [--simple]
 *
 * Each message is a plain 6 KB mail by default (typical headers, text
 * lines, a double space in each), fed to the signer in 4 KiB chunks the
 * way the spool reads a body, relaxed/relaxed (--simple: simple/simple,
 * which passes the body through unchanged), two ways: a new signer per
 * message (signer_new to signer_free) and one signer reset per message
 * (what a delivery thread does: no allocation, the key's signing context
 * kept). Both sides are divided by the user CPU time they took, which is
 * what `openssl speed` does (without -elapsed), so other load on the
 * machine does not skew the ratio; wall-clock rates are printed too. On a
 * machine others are using the three runs of a round still see different
 * loads, so there are R rounds (openssl, then ours both ways) and the
 * ratios printed last are the medians over the rounds.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/evp.h>

#include "vmrelay/common.h"
#include "vmrelay/dkim.h"

#define MAX_ROUNDS 15

static struct {
	unsigned seconds, rounds;
	size_t size, chunk;
	char algs[64];
	struct vr_dkim_opts canon;
} opt = { 5, 3, 6144, 4096, "ed25519,rsa2048", { VR_DKIM_RELAXED, VR_DKIM_RELAXED } };

static const struct {
	const char *name;            /* --algs and openssl speed's name */
	enum vr_dkim_alg alg;
	const char *match;           /* openssl speed's result line */
} algs[] = {
	{ "ed25519", VR_DKIM_ED25519_SHA256, "EdDSA (Ed25519)" },
	{ "rsa2048", VR_DKIM_RSA_SHA256, "rsa 2048 bits" },
};

static double user_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
}

static double wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *make_message(size_t size, size_t *len)
{
	static const char words[] =
		"the relay signs every message once when a delivery worker first picks it  up "
		"and stores the signature in the spool so that retries never sign again ";
	char *m = malloc(size + 128), *w = m;

	w += sprintf(w, "From: Alice Example <alice@example.com>\r\n"
		     "To: Bob Example <bob@example.org>\r\n"
		     "Cc: carol@example.org\r\n"
		     "Subject: Quarterly report, as discussed on the phone this morning\r\n"
		     "Date: Thu, 04 Dec 2026 18:00:00 +0000\r\n"
		     "Message-ID: <20261204180000.12345@mail.example.com>\r\n"
		     "MIME-Version: 1.0\r\n"
		     "Content-Type: text/plain; charset=utf-8\r\n"
		     "Content-Transfer-Encoding: 8bit\r\n"
		     "X-Mailer: bench_dkim\r\n"
		     "\r\n");
	for (size_t i = 0; (size_t)(w - m) + 80 <= size; i++) {
		memcpy(w, words + (i * 7) % 70, 72);
		w += 72;
		*w++ = '\r';
		*w++ = '\n';
	}
	*len = (size_t)(w - m);
	return m;
}

/* Messages signed in opt.seconds: each with a signer of its own, or all
 * with one signer reset between them. */
static void run_ours(const struct vr_dkim_domain *d, bool reuse, const char *msg, size_t len,
		     double *per_user_s, double *per_wall_s)
{
	struct vr_dkim_signer *s = reuse ? vr_dkim_signer_new(d, 1764871200, &opt.canon) : NULL;
	struct vr_buf out;
	char err[256];
	unsigned long n = 0;

	vr_buf_init(&out, 0);
	double u0 = user_s(), w0 = wall_s(), w = w0;
	while (w - w0 < opt.seconds) {
		for (int i = 0; i < 16; i++, n++) {
			if (!reuse)
				s = vr_dkim_signer_new(d, 1764871200, &opt.canon);
			else if (vr_dkim_signer_reset(s, d, 1764871200) < 0)
				s = NULL;
			if (!s) {
				fprintf(stderr, "bench_dkim: no signer\n");
				exit(1);
			}
			for (size_t off = 0; off < len; off += opt.chunk)
				vr_dkim_signer_feed(s, msg + off, VR_MIN(opt.chunk, len - off));
			vr_buf_reset(&out);
			if (vr_dkim_signer_finish(s, &out, err, sizeof(err)) < 0) {
				fprintf(stderr, "bench_dkim: signing failed: %s\n", err);
				exit(1);
			}
			if (!reuse)
				vr_dkim_signer_free(s);
		}
		w = wall_s();
	}
	*per_user_s = (double)n / (user_s() - u0);
	*per_wall_s = (double)n / (w - w0);
	if (reuse)
		vr_dkim_signer_free(s);
	vr_buf_free(&out);
}

/* Sign/s from `openssl speed -seconds S NAME`: the third number after the
 * algorithm's name on its result line. */
static double run_openssl(const char *name, const char *match)
{
	char cmd[128], line[512];
	double rate = 0;

	snprintf(cmd, sizeof(cmd), "openssl speed -seconds %u %s 2>/dev/null", opt.seconds, name);
	FILE *p = popen(cmd, "r");
	if (!p)
		return 0;
	while (fgets(line, sizeof(line), p)) {
		char *at = strstr(line, match);
		double t_sign, t_verify;
		if (at && sscanf(at + strlen(match), " %lfs %lfs %lf", &t_sign, &t_verify, &rate) != 3)
			rate = 0;
	}
	pclose(p);
	return rate;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_dkim [--seconds S] [--rounds R (1-%d)] [--size BYTES] "
		"[--chunk BYTES] [--algs ed25519,rsa2048] [--simple]\n", MAX_ROUNDS);
	exit(2);
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), by_value);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "size", required_argument, NULL, 'z' },
		{ "chunk", required_argument, NULL, 'c' },
		{ "algs", required_argument, NULL, 'a' },
		{ "simple", no_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's': opt.seconds = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'r': opt.rounds = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'z': opt.size = strtoul(optarg, NULL, 10); break;
		case 'c': opt.chunk = strtoul(optarg, NULL, 10); break;
		case 'a': snprintf(opt.algs, sizeof(opt.algs), "%s", optarg); break;
		case 'S': opt.canon = (struct vr_dkim_opts){ VR_DKIM_SIMPLE, VR_DKIM_SIMPLE }; break;
		default: usage();
		}
	}
	if (optind != argc || !opt.seconds || opt.size < 1024 || !opt.chunk || !opt.rounds ||
	    opt.rounds > MAX_ROUNDS)
		usage();

	size_t len;
	char *msg = make_message(opt.size, &len);
	printf("bench_dkim: %zu-byte messages in %zu-byte chunks, %s, %u s per run, "
	       "rates per user CPU second (one core)\n", len, opt.chunk,
	       opt.canon.body == VR_DKIM_SIMPLE ? "simple/simple" : "relaxed/relaxed",
	       opt.seconds);
	printf("%-8s %5s %-7s %14s %14s %14s %7s\n", "alg", "round", "signer", "vmrelay msg/s",
	       "(wall msg/s)", "openssl sig/s", "ratio");
	double ratios[VR_ARRAY_SIZE(algs)][2][MAX_ROUNDS];
	for (size_t i = 0; i < VR_ARRAY_SIZE(algs); i++) {
		if (!strstr(opt.algs, algs[i].name))
			continue;
		EVP_PKEY *pkey = algs[i].alg == VR_DKIM_ED25519_SHA256
					 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
					 : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
		struct vr_dkim_key key = { .selector = "bench", .alg = algs[i].alg,
					   .key = "(generated)", .pkey = pkey };
		struct vr_dkim_domain d = { .name = "example.com", .keys = &key, .n_keys = 1 };
		for (unsigned r = 0; r < opt.rounds; r++) {
			double ssl = run_openssl(algs[i].name, algs[i].match), ours, ours_wall;
			if (ssl <= 0) {
				fprintf(stderr, "bench_dkim: no result from openssl speed %s\n",
					algs[i].name);
				return 1;
			}
			for (int reuse = 0; reuse < 2; reuse++) {
				run_ours(&d, reuse, msg, len, &ours, &ours_wall);
				ratios[i][reuse][r] = 100 * ours / ssl;
				printf("%-8s %5u %-7s %14.1f %14.1f %14.1f %6.1f%%\n", algs[i].name,
				       r + 1, reuse ? "reset" : "new", ours, ours_wall, ssl,
				       ratios[i][reuse][r]);
			}
		}
		EVP_PKEY_free(pkey);
	}
	printf("median ratio over %u rounds:", opt.rounds);
	for (size_t i = 0; i < VR_ARRAY_SIZE(algs); i++)
		if (strstr(opt.algs, algs[i].name))
			printf("  %s new %.1f%% reset %.1f%%", algs[i].name,
			       median(ratios[i][0], opt.rounds), median(ratios[i][1], opt.rounds));
	printf("\n");
	free(msg);
	return 0;
}
