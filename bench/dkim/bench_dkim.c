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
 * kept). Rates are per user CPU second, which is what `openssl speed`
 * divides by (without -elapsed).
 *
 * A round runs `openssl speed -seconds S`, then S seconds of each of our
 * two ways, of OpenSSL's own signature loop in this process (what openssl
 * speed times) and of the hashing no signer can skip, in 100 ms slices
 * taken in turn. The ratio against openssl speed is the one asked for;
 * the ratio against the in-process loop is the steadier one on a machine
 * others are using, since all of them share each moment's load.
 *
 * Ed25519 is signed by libsodium (engine/dkim/key.c), so a round also
 * runs libsodium's own signature loop (crypto_sign_detached over 32 bytes,
 * what we sign, with the same key) in the same slices: the physical limit
 * for how we sign now. "reset/sod" is ours against it, and "sod ceil" and
 * "reset/sceil" are the ceiling below, against it instead of OpenSSL's.
 * (RSA stays on OpenSSL: those columns are "-".)
 *
 * The hashing no signer can skip: SHA-256 (OpenSSL's, EVP, one update
 * each) over the body and over the header block plus a signature field's
 * worth of bytes, the two digests DKIM asks for. "ceiling" is what a
 * signer doing nothing else would reach against the in-process loop,
 * sig / (sig + hash) in time per message; "reset/ceil" is how much of
 * that ceiling ours reaches. Medians over R rounds come last.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/evp.h>
#include <sodium.h>

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

/* What a slice runs: OpenSSL's own signature loop in this process (what
 * `openssl speed` times: one context set up once, then a signature of a
 * short message after another), libsodium's (Ed25519 only), or ours with a new signer per message or
 * one signer reset per message. */
enum way { RAW, SODIUM, NEW, RESET, HASH, N_WAYS };

struct bench {
	const struct vr_dkim_domain *d;
	const char *msg;
	size_t len;
	size_t body_off;             /* HASH: where the body starts */
	size_t hdr_len;              /* HASH: header block plus a signature field */
	EVP_MD *sha256;              /* HASH, fetched once as the signer does */
	EVP_MD_CTX *sha;
	EVP_MD_CTX *raw_md;          /* Ed25519 */
	EVP_PKEY_CTX *raw_pk;        /* RSA */
	uint8_t sk[crypto_sign_SECRETKEYBYTES]; /* SODIUM: the same key */
	struct vr_dkim_signer *kept; /* RESET */
	struct vr_buf out;
	double n[N_WAYS], user[N_WAYS], wall[N_WAYS];
};

static void sign_one(struct bench *b, enum way way)
{
	static const uint8_t data[36] = "a short message, as openssl speed's";
	uint8_t sig[512];
	size_t siglen = sizeof(sig);
	char err[256];
	int rc;

	if (way == HASH) {
		uint8_t md[32];
		if (EVP_DigestInit_ex(b->sha, b->sha256, NULL) != 1 ||
		    EVP_DigestUpdate(b->sha, b->msg + b->body_off, b->len - b->body_off) != 1 ||
		    EVP_DigestFinal_ex(b->sha, md, NULL) != 1 ||
		    EVP_DigestInit_ex(b->sha, b->sha256, NULL) != 1 ||
		    EVP_DigestUpdate(b->sha, b->msg, b->hdr_len) != 1 ||
		    EVP_DigestFinal_ex(b->sha, md, NULL) != 1) {
			fprintf(stderr, "bench_dkim: SHA-256 failed\n");
			exit(1);
		}
		return;
	}
	if (way == SODIUM) {
		unsigned long long n;
		if (crypto_sign_detached(sig, &n, data, 32, b->sk) != 0) {
			fprintf(stderr, "bench_dkim: libsodium's signature failed\n");
			exit(1);
		}
		return;
	}
	if (way == RAW) {
		rc = b->raw_md ? EVP_DigestSign(b->raw_md, sig, &siglen, data, 20)
			       : EVP_PKEY_sign(b->raw_pk, sig, &siglen, data, 36);
		if (rc != 1) {
			fprintf(stderr, "bench_dkim: OpenSSL's signature failed\n");
			exit(1);
		}
		return;
	}
	struct vr_dkim_signer *s = way == RESET ? b->kept
				   : vr_dkim_signer_new(b->d, 1764871200, &opt.canon);
	if (!s || (way == RESET && vr_dkim_signer_reset(s, b->d, 1764871200) < 0)) {
		fprintf(stderr, "bench_dkim: no signer\n");
		exit(1);
	}
	for (size_t off = 0; off < b->len; off += opt.chunk)
		vr_dkim_signer_feed(s, b->msg + off, VR_MIN(opt.chunk, b->len - off));
	vr_buf_reset(&b->out);
	if (vr_dkim_signer_finish(s, &b->out, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench_dkim: signing failed: %s\n", err);
		exit(1);
	}
	if (way == NEW)
		vr_dkim_signer_free(s);
}

/* One slice of 100 ms of one way, added to its totals. */
static void slice(struct bench *b, enum way way)
{
	double u0 = user_s(), w0 = wall_s(), w = w0;
	unsigned long n = 0;

	while (w - w0 < 0.1) {
		for (int i = 0; i < 8; i++, n++)
			sign_one(b, way);
		w = wall_s();
	}
	b->n[way] += (double)n;
	b->user[way] += user_s() - u0;
	b->wall[way] += w - w0;
}

/* opt.seconds of each way, in slices taken in turn, so that all three
 * see the same load on a shared machine. */
static void run_interleaved(struct bench *b)
{
	memset(b->n, 0, sizeof(b->n));
	memset(b->user, 0, sizeof(b->user));
	memset(b->wall, 0, sizeof(b->wall));
	while (b->wall[RESET] < opt.seconds)
		for (enum way w = RAW; w < N_WAYS; w++)
			if (w != SODIUM || b->raw_md)
				slice(b, w);
}

static void bench_init(struct bench *b, const struct vr_dkim_domain *d, const char *msg,
		       size_t len)
{
	EVP_PKEY *pkey = d->keys[0].pkey;

	memset(b, 0, sizeof(*b));
	b->d = d;
	b->msg = msg;
	b->len = len;
	vr_buf_init(&b->out, 0);
	b->kept = vr_dkim_signer_new(d, 1764871200, &opt.canon);
	if (d->keys[0].alg == VR_DKIM_ED25519_SHA256) {
		uint8_t seed[crypto_sign_SEEDBYTES], pk[crypto_sign_PUBLICKEYBYTES];
		size_t seedlen = sizeof(seed);
		b->raw_md = EVP_MD_CTX_new();
		if (!b->raw_md ||
		    EVP_DigestSignInit_ex(b->raw_md, NULL, NULL, NULL, NULL, pkey, NULL) != 1 ||
		    EVP_PKEY_get_raw_private_key(pkey, seed, &seedlen) != 1 ||
		    sodium_init() < 0 || crypto_sign_seed_keypair(pk, b->sk, seed) != 0)
			b->kept = NULL;
	} else {
		b->raw_pk = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
		if (!b->raw_pk || EVP_PKEY_sign_init(b->raw_pk) != 1)
			b->kept = NULL;
	}
	b->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	b->sha = EVP_MD_CTX_new();
	if (!b->kept || !b->sha256 || !b->sha) {
		fprintf(stderr, "bench_dkim: cannot set up signing\n");
		exit(1);
	}
	/* The signature field's length, from one signing. */
	sign_one(b, RESET);
	b->body_off = (size_t)(strstr(msg, "\r\n\r\n") + 4 - msg);
	b->hdr_len = VR_MIN(b->body_off + b->out.len, len);
}

static void bench_free(struct bench *b)
{
	vr_dkim_signer_free(b->kept);
	EVP_MD_CTX_free(b->sha);
	EVP_MD_free(b->sha256);
	EVP_MD_CTX_free(b->raw_md);
	EVP_PKEY_CTX_free(b->raw_pk);
	sodium_memzero(b->sk, sizeof(b->sk));
	vr_buf_free(&b->out);
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
	printf("bench_dkim: %zu-byte messages in %zu-byte chunks, %s, %u s per way and round, "
	       "rates per user CPU second (one core)\n", len, opt.chunk,
	       opt.canon.body == VR_DKIM_SIMPLE ? "simple/simple" : "relaxed/relaxed",
	       opt.seconds);
	printf("%-8s %5s %12s %12s %12s %12s %12s %12s %9s %9s %9s %9s %10s %9s %9s %11s\n",
	       "alg", "round", "speed sig/s", "inproc sig/s", "sodium sig/s", "hash only/s",
	       "new msg/s", "reset msg/s", "new/spd", "reset/spd", "reset/inp", "ceiling",
	       "reset/ceil", "reset/sod", "sod ceil", "reset/sceil");
	/* [alg][new/speed, reset/speed, reset/in-process, ceiling, reset/ceiling,
	 *  reset/sodium, sodium ceiling, reset/sodium ceiling][round] */
	double ratios[VR_ARRAY_SIZE(algs)][8][MAX_ROUNDS];
	for (size_t i = 0; i < VR_ARRAY_SIZE(algs); i++) {
		if (!strstr(opt.algs, algs[i].name))
			continue;
		EVP_PKEY *pkey = algs[i].alg == VR_DKIM_ED25519_SHA256
					 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
					 : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
		struct vr_dkim_key key = { .selector = "bench", .alg = algs[i].alg,
					   .key = "(generated)" };
		char err[256];
		if (!pkey || vr_dkim_key_adopt(&key, pkey, err, sizeof(err)) < 0) {
			fprintf(stderr, "bench_dkim: %s\n", pkey ? err : "no key generated");
			return 1;
		}
		struct vr_dkim_domain d = { .name = "example.com", .keys = &key, .n_keys = 1 };
		struct bench b;
		bench_init(&b, &d, msg, len);
		for (unsigned r = 0; r < opt.rounds; r++) {
			double speed = run_openssl(algs[i].name, algs[i].match);
			if (speed <= 0) {
				fprintf(stderr, "bench_dkim: no result from openssl speed %s\n",
					algs[i].name);
				return 1;
			}
			run_interleaved(&b);
			double rate[N_WAYS];
			for (enum way w = RAW; w < N_WAYS; w++)
				rate[w] = b.n[w] / b.user[w];
			ratios[i][0][r] = 100 * rate[NEW] / speed;
			ratios[i][1][r] = 100 * rate[RESET] / speed;
			ratios[i][2][r] = 100 * rate[RESET] / rate[RAW];
			/* Time per message: a signature plus the two digests. */
			double ceiling = (1 / rate[RAW]) / (1 / rate[RAW] + 1 / rate[HASH]);
			ratios[i][3][r] = 100 * ceiling;
			ratios[i][4][r] = 100 * rate[RESET] / (rate[RAW] * ceiling);
			char sod[16] = "-";
			if (b.n[SODIUM])
				snprintf(sod, sizeof(sod), "%.1f", rate[SODIUM]);
			printf("%-8s %5u %12.1f %12.1f %12s %12.1f %12.1f %12.1f %8.1f%% %8.1f%% "
			       "%8.1f%% %8.1f%% %9.1f%%", algs[i].name, r + 1, speed, rate[RAW], sod,
			       rate[HASH], rate[NEW], rate[RESET], ratios[i][0][r], ratios[i][1][r],
			       ratios[i][2][r], ratios[i][3][r], ratios[i][4][r]);
			if (b.n[SODIUM]) {
				double sceil = (1 / rate[SODIUM]) / (1 / rate[SODIUM] + 1 / rate[HASH]);
				ratios[i][5][r] = 100 * rate[RESET] / rate[SODIUM];
				ratios[i][6][r] = 100 * sceil;
				ratios[i][7][r] = 100 * rate[RESET] / (rate[SODIUM] * sceil);
				printf(" %8.1f%% %8.1f%% %10.1f%%\n", ratios[i][5][r], ratios[i][6][r],
				       ratios[i][7][r]);
			} else {
				printf(" %9s %9s %11s\n", "-", "-", "-");
			}
		}
		printf("%-8s median: new/speed %.1f%%, reset/speed %.1f%%, reset/in-process "
		       "%.1f%%, ceiling %.1f%%, reset/ceiling %.1f%% (hashed per message: %zu body "
		       "+ %zu header bytes; wall: ours ran %.0f%% of the time it was given)\n",
		       algs[i].name, median(ratios[i][0], opt.rounds),
		       median(ratios[i][1], opt.rounds), median(ratios[i][2], opt.rounds),
		       median(ratios[i][3], opt.rounds), median(ratios[i][4], opt.rounds),
		       b.len - b.body_off, b.hdr_len, 100 * b.user[RESET] / b.wall[RESET]);
		if (b.raw_md)
			printf("%-8s median against libsodium's loop: reset/sodium %.1f%%, ceiling "
			       "%.1f%%, reset/ceiling %.1f%%\n", algs[i].name,
			       median(ratios[i][5], opt.rounds), median(ratios[i][6], opt.rounds),
			       median(ratios[i][7], opt.rounds));
		bench_free(&b);
		vr_dkim_key_unload(&key);
	}
	free(msg);
	return 0;
}
