/*
 * test_dkim.c - DKIM signing: canonical forms against RFC 6376's rules,
 * keys (every way a key file can be wrong), the signature field's shape
 * (h= list, folding), errors, chunking at every byte, and every signature
 * over a corpus of awkward messages verified by dkimpy and by opendkim
 * (tests/data/dkim/verify.py, run on /usr/bin/python3), each Ed25519 one
 * (libsodium's) byte for byte what OpenSSL signs.
 *
 * Keys are the test keys in tests/data/dkim (DKIM_TESTDATA).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "vmrelay/dkim.h"
#include "../../engine/dkim/dkim_impl.h"

static char dir[] = "/tmp/vr_test_dkim.XXXXXX";

static struct vr_dkim_key ed_key = {
	.selector = "ed1", .alg = VR_DKIM_ED25519_SHA256, .key = DKIM_TESTDATA "/ed25519.pem",
};
static struct vr_dkim_key rsa_key = {
	.selector = "rsa1", .alg = VR_DKIM_RSA_SHA256, .key = DKIM_TESTDATA "/rsa2048.pem",
};
static struct vr_dkim_domain ed_dom = { .name = "example.com", .keys = &ed_key, .n_keys = 1 };
static struct vr_dkim_domain rsa_dom = { .name = "example.com", .keys = &rsa_key, .n_keys = 1 };
static struct vr_dkim_key dual_keys[2];
static struct vr_dkim_domain dual_dom = { .name = "example.com", .keys = dual_keys, .n_keys = 2 };

#define NOW 1764806400u

/* --- helpers --- */

static void sha256_b64(const void *p, size_t n, char out[48])
{
	uint8_t md[32];

	EVP_Digest(p, n, md, NULL, EVP_sha256(), NULL);
	EVP_EncodeBlock((unsigned char *)out, md, 32);
}

static void body_b64(enum vr_dkim_canon canon, const char *body, size_t chunk, char out[48])
{
	struct vr_dkim_body b;
	uint8_t md[32];
	size_t n = strlen(body);

	assert_int_equal(vr_dkim_body_init(&b, canon), 0);
	for (size_t i = 0; i < n; i += chunk)
		assert_int_equal(vr_dkim_body_feed(&b, (const uint8_t *)body + i,
						   VR_MIN(chunk, n - i)), 0);
	assert_int_equal(vr_dkim_body_final(&b, md), 0);
	vr_dkim_body_free(&b);
	EVP_EncodeBlock((unsigned char *)out, md, 32);
}

/*
 * Signs msg (len bytes) with every key of d, fed in pieces: at cut (if
 * non-zero) and then every chunk bytes. Returns the signature fields
 * (malloc'd, NUL-terminated) or NULL with *rc and err set.
 */
static char *sign_cut(const struct vr_dkim_domain *d, const struct vr_dkim_opts *opts,
		      const char *msg, size_t len, size_t cut, size_t chunk, int *rc,
		      char *err, size_t errlen)
{
	struct vr_dkim_signer *s = vr_dkim_signer_new(d, NOW, opts);
	struct vr_buf out;
	size_t i = 0;

	assert_non_null(s);
	vr_buf_init(&out, 0);
	if (cut) {
		vr_dkim_signer_feed(s, msg, cut);
		i = cut;
	}
	for (; i < len; i += chunk)
		vr_dkim_signer_feed(s, msg + i, VR_MIN(chunk, len - i));
	*rc = vr_dkim_signer_finish(s, &out, err, errlen);
	vr_dkim_signer_free(s);
	if (*rc < 0) {
		assert_int_equal(out.len, 0);
		vr_buf_free(&out);
		return NULL;
	}
	char *text = strndup((const char *)vr_buf_head(&out), out.len);
	vr_buf_free(&out);
	return text;
}

static char *sign(const struct vr_dkim_domain *d, const struct vr_dkim_opts *opts,
		  const char *msg, size_t len)
{
	char err[256] = "";
	int rc;
	char *sig = sign_cut(d, opts, msg, len, 0, len ? len : 1, &rc, err, sizeof(err));

	if (!sig)
		fail_msg("signing failed (%d): %s", rc, err);
	return sig;
}

/* The value of tag t= in a signature field, whitespace removed. */
static char *tag(const char *sig, const char *t)
{
	static char v[2048];
	size_t tl = strlen(t), n = 0;
	const char *p = sig;

	/* Tags start the field's value or follow a ';' and whitespace. */
	while ((p = strstr(p, t))) {
		const char *q = p - 1;
		while (q > sig && strchr(" \t\r\n", *q))
			q--;
		if ((*q == ';' || *q == ':') && p[tl] == '=')
			break;
		p++;
	}
	assert_non_null(p);
	/* It ends at a ';' or with the field (a CRLF not folding). */
	for (p += tl + 1; *p && *p != ';' && n < sizeof(v) - 1; p++) {
		if (p[0] == '\r' && p[1] == '\n' && p[2] != ' ' && p[2] != '\t')
			break;
		if (!strchr(" \t\r\n", *p))
			v[n++] = *p;
	}
	v[n] = '\0';
	return v;
}

/* --- canonical forms --- */

static void test_body_empty(void **state)
{
	char b[48], want[48];

	/* RFC 6376 3.4.3: an empty simple body is CRLF; 3.4.4: relaxed, empty. */
	sha256_b64("", 0, want);
	assert_string_equal(want, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
	body_b64(VR_DKIM_RELAXED, "", 1, b);
	assert_string_equal(b, want);
	body_b64(VR_DKIM_RELAXED, "\r\n\r\n \t\r\n", 1, b);
	assert_string_equal(b, want);
	sha256_b64("\r\n", 2, want);
	assert_string_equal(want, "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=");
	body_b64(VR_DKIM_SIMPLE, "", 1, b);
	assert_string_equal(b, want);
	body_b64(VR_DKIM_SIMPLE, "\r\n\r\n\r\n", 1, b);
	assert_string_equal(b, want);
}

static void test_body_canon(void **state)
{
	static const struct {
		enum vr_dkim_canon canon;
		const char *in, *out;
	} cases[] = {
		/* WSP runs become one SP, WSP at the end of a line goes, a line
		 * of WSP only is empty, trailing empty lines go. */
		{ VR_DKIM_RELAXED, " a  \t b \t\r\n\t\r\nc\r\n\r\n \r\n", " a b\r\n\r\nc\r\n" },
		{ VR_DKIM_SIMPLE, " a  \t b \t\r\n\t\r\nc\r\n\r\n \r\n", " a  \t b \t\r\n\t\r\nc\r\n\r\n \r\n" },
		{ VR_DKIM_SIMPLE, "a\r\n\r\n\r\n", "a\r\n" },
		/* The last line's missing CRLF is added. */
		{ VR_DKIM_RELAXED, "a\r\nb  ", "a\r\nb\r\n" },
		{ VR_DKIM_SIMPLE, "a\r\nb  ", "a\r\nb  \r\n" },
		/* Empty lines inside the body stay. */
		{ VR_DKIM_RELAXED, "a\r\n\r\n\r\nb\r\n", "a\r\n\r\n\r\nb\r\n" },
		/* A lone CR or LF is a byte of its line. */
		{ VR_DKIM_RELAXED, "a\rb \n c\r\n", "a\rb \n c\r\n" },
		{ VR_DKIM_SIMPLE, "a\r\r\n\n\r\n", "a\r\r\n\n\r\n" },
		/* 8-bit bytes pass through. */
		{ VR_DKIM_RELAXED, "caf\xc3\xa9 \xff\r\n", "caf\xc3\xa9 \xff\r\n" },
	};

	for (size_t i = 0; i < VR_ARRAY_SIZE(cases); i++) {
		char want[48], got[48];
		sha256_b64(cases[i].out, strlen(cases[i].out), want);
		for (size_t chunk = 1; chunk <= strlen(cases[i].in); chunk++) {
			body_b64(cases[i].canon, cases[i].in, chunk, got);
			if (strcmp(got, want) != 0)
				fail_msg("case %zu, chunks of %zu: body hash differs", i, chunk);
		}
	}
}

/*
 * RFC 6376 3.4.3 and 3.4.4 read literally, on a whole body: lines end in
 * CRLF (the last one gets it if it lacks it), relaxed turns each WSP run
 * into one SP and drops the SP left at a line's end, trailing empty lines
 * go, and an empty simple body is one CRLF. Writes the canonical body to
 * out (room for 2 * n + 2 bytes) and returns its length.
 */
static bool wsp(char c)
{
	return c == ' ' || c == '\t';
}

static size_t body_reference(enum vr_dkim_canon canon, const char *in, size_t n, char *out)
{
	size_t o = 0, text_end = 0;   /* text_end: after the last non-empty line */

	for (size_t i = 0; i < n;) {
		const char *crlf = memmem(in + i, n - i, "\r\n", 2);
		size_t start = o, end = crlf ? (size_t)(crlf - in) : n;
		for (size_t j = i; j < end; j++) {
			if (canon == VR_DKIM_SIMPLE || !wsp(in[j]))
				out[o++] = in[j];
			else if (j == i || !wsp(in[j - 1]))
				out[o++] = ' ';
		}
		if (canon == VR_DKIM_RELAXED && o > start && wsp(in[end - 1]))
			o--;
		bool empty = o == start;
		out[o++] = '\r';
		out[o++] = '\n';
		if (!empty)
			text_end = o;
		i = crlf ? end + 2 : n;
	}
	o = text_end;
	if (canon == VR_DKIM_SIMPLE && o == 0) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	return o;
}

/*
 * The streaming canonicaliser against body_reference() on random bodies:
 * text with WSP runs, CRs, LFs and empty lines at every density, long
 * enough for the 16- and 64-byte scans, fed whole and in random chunks.
 */
static void test_body_random(void **state)
{
	static const char bytes[] = " \t\r\n";
	char in[600], ref[2 * sizeof(in) + 2];
	uint32_t x = 2463534242u;

	for (int round = 0; round < 20000; round++) {
		x ^= x << 13, x ^= x >> 17, x ^= x << 5;
		size_t n = x % sizeof(in);
		unsigned density = 1 + (x >> 10) % 60;    /* specials per 64 bytes */
		/* Half of them end in empty lines and lines of WSP only, which
		 * must all go, however many the 64-byte blocks swallow. */
		size_t tail = round % 4 < 2 ? n - VR_MIN(n, (x >> 16) % 150) : n;
		for (size_t i = 0; i < n; i++) {
			x ^= x << 13, x ^= x >> 17, x ^= x << 5;
			if (i >= tail && i + 1 < n) {
				if (x % 3 == 0 && i + 2 < n)
					in[i++] = x % 2 ? ' ' : '\t';
				in[i++] = '\r';
				in[i] = '\n';
			} else if (x % 64 < density)
				in[i] = bytes[(x >> 8) % 4];
			else if (x % 64 < density + 4 && i + 1 < n) {
				in[i++] = '\r';
				in[i] = '\n';
			} else
				in[i] = (char)('a' + (x >> 8) % 26);
		}
		for (enum vr_dkim_canon c = VR_DKIM_RELAXED; c <= VR_DKIM_SIMPLE; c++) {
			uint8_t want[32], got[32];
			size_t len = body_reference(c, in, n, ref);
			EVP_Digest(ref, len, want, NULL, EVP_sha256(), NULL);
			struct vr_dkim_body b;
			assert_int_equal(vr_dkim_body_init(&b, c), 0);
			uint32_t y = x;
			for (size_t i = 0; i < n;) {
				y ^= y << 13, y ^= y >> 17, y ^= y << 5;
				size_t k = round % 2 ? n - i : VR_MIN(n - i, 1 + y % 40);
				assert_int_equal(vr_dkim_body_feed(&b, (const uint8_t *)in + i, k), 0);
				i += k;
			}
			assert_int_equal(vr_dkim_body_final(&b, got), 0);
			vr_dkim_body_free(&b);
			if (memcmp(got, want, 32) != 0)
				fail_msg("round %d, %s: body hash differs for \"%.*s\"", round,
					 c == VR_DKIM_RELAXED ? "relaxed" : "simple", (int)n, in);
		}
	}
}

static void test_header_canon(void **state)
{
	static const struct {
		enum vr_dkim_canon canon;
		const char *in, *out;
	} cases[] = {
		{ VR_DKIM_RELAXED, "SubJect \t:  hello \r\n\t world  \r\n", "subject:hello world\r\n" },
		{ VR_DKIM_SIMPLE, "SubJect \t:  hello \r\n\t world  \r\n",
		  "SubJect \t:  hello \r\n\t world  \r\n" },
		{ VR_DKIM_RELAXED, "To:\r\n a@b\r\n", "to:a@b\r\n" },
		{ VR_DKIM_RELAXED, "X:\r\n", "x:\r\n" },
		{ VR_DKIM_RELAXED, "DKIM-Signature: v=1;\r\n\tb=", "dkim-signature:v=1; b=" },
		{ VR_DKIM_RELAXED, "Subject: \xc3\xa9t\xc3\xa9\t \xe2\x82\xac\r\n",
		  "subject:\xc3\xa9t\xc3\xa9 \xe2\x82\xac\r\n" },
	};

	for (size_t i = 0; i < VR_ARRAY_SIZE(cases); i++) {
		struct vr_buf out;
		vr_buf_init(&out, 0);
		assert_int_equal(vr_dkim_header_canon(cases[i].canon, (const uint8_t *)cases[i].in,
						      strlen(cases[i].in), &out), 0);
		assert_int_equal(out.len, strlen(cases[i].out));
		assert_memory_equal(vr_buf_head(&out), cases[i].out, out.len);
		vr_buf_free(&out);
	}
}

/* --- keys --- */

static void test_key_load(void **state)
{
	char err[512];
	static const struct {
		const char *file;
		enum vr_dkim_alg alg;
		int rc;
		const char *says;
	} bad[] = {
		{ "/nonexistent/k.pem", VR_DKIM_ED25519_SHA256, -ENOENT, "/nonexistent/k.pem: No such file" },
		{ DKIM_TESTDATA "/verify.py", VR_DKIM_ED25519_SHA256, -EINVAL, "not a PEM private key" },
		{ DKIM_TESTDATA "/rsa2048.pem", VR_DKIM_ED25519_SHA256, -EINVAL,
		  "key type RSA, but ed25519-sha256 needs ED25519" },
		{ DKIM_TESTDATA "/ed25519.pem", VR_DKIM_RSA_SHA256, -EINVAL,
		  "key type ED25519, but rsa-sha256 needs RSA" },
		{ DKIM_TESTDATA "/rsa512.pem", VR_DKIM_RSA_SHA256, -EKEYREJECTED,
		  "RSA key of 512 bits, at least 1024 needed" },
		{ DKIM_TESTDATA "/ed25519-encrypted.pem", VR_DKIM_ED25519_SHA256, -EINVAL,
		  "(or one with a passphrase)" },
		{ DKIM_TESTDATA, VR_DKIM_ED25519_SHA256, -EINVAL, "not a PEM private key" },
	};

	for (size_t i = 0; i < VR_ARRAY_SIZE(bad); i++) {
		struct vr_dkim_key k = { .selector = "s", .alg = bad[i].alg, .key = (char *)bad[i].file };
		err[0] = '\0';
		assert_int_equal(vr_dkim_key_load(&k, err, sizeof(err)), bad[i].rc);
		assert_null(k.pkey);
		if (!strstr(err, bad[i].says) || strncmp(err, bad[i].file, strlen(bad[i].file)) != 0)
			fail_msg("%s: said \"%s\", wanted \"%s\"", bad[i].file, err, bad[i].says);
	}

	struct vr_dkim_key k = { .selector = "s", .alg = VR_DKIM_RSA_SHA256,
				 .key = DKIM_TESTDATA "/rsa1024.pem" };
	assert_int_equal(vr_dkim_key_load(&k, err, sizeof(err)), 0);
	assert_non_null(k.pkey);
	vr_dkim_key_unload(&k);
	assert_null(k.pkey);
	vr_dkim_key_unload(&k);
}

static void test_key_public(void **state)
{
	struct vr_buf out;
	struct vr_dkim_key unloaded = { .selector = "s", .alg = VR_DKIM_RSA_SHA256, .key = "/x" };

	vr_buf_init(&out, 0);
	assert_int_equal(vr_dkim_key_public_b64(&ed_key, &out), 0);
	assert_int_equal(out.len, 44);       /* 32 bytes */
	vr_buf_reset(&out);
	assert_int_equal(vr_dkim_key_txt(&ed_key, &out), 0);
	assert_int_equal(out.len, strlen("v=DKIM1; k=ed25519; p=") + 44);
	assert_memory_equal(vr_buf_head(&out), "v=DKIM1; k=ed25519; p=", 22);
	vr_buf_reset(&out);
	assert_int_equal(vr_dkim_key_txt(&rsa_key, &out), 0);
	/* SubjectPublicKeyInfo of RSA-2048: 294 bytes, 392 in base64. */
	assert_int_equal(out.len, strlen("v=DKIM1; k=rsa; p=") + 392);
	assert_memory_equal(vr_buf_head(&out), "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOC", 46);
	vr_buf_reset(&out);
	assert_int_equal(vr_dkim_key_txt(&unloaded, &out), -EINVAL);
	assert_int_equal(out.len, 0);
	vr_buf_free(&out);
}

/* --- the signature field --- */

static const char basic[] =
	"From: Alice <alice@example.com>\r\n"
	"To: bob@example.org\r\n"
	"To: carol@example.org\r\n"
	"Subject: hello\r\n"
	"X-Mailer: not signed\r\n"
	"\r\n"
	"Hi Bob.\r\n";

static void test_field_shape(void **state)
{
	char *sig = sign(&dual_dom, NULL, basic, strlen(basic));

	/* Two fields, ed25519 first, in key order. */
	char *second = strstr(sig + 1, "\r\nDKIM-Signature: ");
	assert_non_null(second);
	assert_memory_equal(sig, "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; ", 58);
	assert_memory_equal(second + 2, "DKIM-Signature: v=1; a=rsa-sha256;", 34);
	assert_string_equal(tag(sig, "h"), "from:from:to:to:subject");
	assert_string_equal(tag(sig, "d"), "example.com");
	assert_string_equal(tag(sig, "s"), "ed1");
	assert_string_equal(tag(sig, "t"), "1764806400");
	assert_string_equal(tag(second, "s"), "rsa1");
	assert_null(strstr(sig, "l="));
	assert_int_equal(strlen(tag(second, "b")), 344);   /* 256 bytes */
	assert_int_equal(strlen(tag(sig, "b")), 88);       /* 64 bytes */

	/* Lines end in CRLF, stay within 78 columns; continuations start with a tab. */
	size_t fields = 0;
	for (char *line = sig, *eol; *line; line = eol + 2) {
		eol = strstr(line, "\r\n");
		assert_non_null(eol);
		assert_true(eol - line <= 78);
		assert_null(memchr(line, '\n', (size_t)(eol - line)));
		if (line[0] != '\t') {
			assert_memory_equal(line, "DKIM-Signature: ", 16);
			fields++;
		}
	}
	assert_int_equal(fields, 2);
	free(sig);

	/* simple/relaxed is said in c=. */
	struct vr_dkim_opts opts = { VR_DKIM_SIMPLE, VR_DKIM_RELAXED };
	sig = sign(&ed_dom, &opts, basic, strlen(basic));
	assert_string_equal(tag(sig, "c"), "simple/relaxed");
	free(sig);
}

/* Every field we sign, each as often as it occurs; names in any case. */
static void test_h_list(void **state)
{
	static const char msg[] =
		"reply-to: r@example.com\r\n"
		"CONTENT-TYPE: text/plain\r\n"
		"Mime-Version: 1.0\r\n"
		"Message-ID: <1@example.com>\r\n"
		"Date: Thu, 4 Dec 2026 18:00:00 +0000\r\n"
		"Subject: one\r\n"
		"Subject: two\r\n"
		"Cc: c@example.org\r\n"
		"fROM: a@example.com\r\n"
		"Received: not signed\r\n"
		"\r\n";
	char *sig = sign(&ed_dom, NULL, msg, strlen(msg));

	assert_string_equal(tag(sig, "h"), "from:from:cc:subject:subject:date:message-id:"
			    "mime-version:content-type:reply-to");
	free(sig);
}

/* --- errors --- */

static void expect_error(const struct vr_dkim_domain *d, const char *msg, size_t len, int rc,
			 const char *says)
{
	char err[256] = "";
	int got;

	assert_null(sign_cut(d, NULL, msg, len, 0, 4096, &got, err, sizeof(err)));
	assert_int_equal(got, rc);
	if (!strstr(err, says))
		fail_msg("said \"%s\", wanted \"%s\"", err, says);
}

/* A bare LF or CR in a header line is a byte of that line: the field
 * it is in and the ones after it are still found and signed. */
static void test_bare_lf_header(void **state)
{
	static const char msg[] = "Subject: a\nb\rc \n\r\nTo: t@example.org\r\n"
				  "X-Lf: \n\r\nFrom: a@example.com\r\n\r\nbody\r\n";
	char err[256];
	int rc;
	char *sig = sign(&ed_dom, NULL, msg, strlen(msg));
	char *bytes = sign_cut(&ed_dom, NULL, msg, strlen(msg), 0, 1, &rc, err, sizeof(err));

	assert_string_equal(tag(sig, "h"), "from:from:to:subject");
	assert_non_null(bytes);
	assert_string_equal(bytes, sig);
	free(bytes);
	free(sig);
}

static void test_errors(void **state)
{
	static const char no_from[] = "To: a@example.org\r\nSubject: x\r\n\r\nbody\r\n";
	static const char no_colon[] = "From: a@example.com\r\nThis is not a header\r\n\r\n";
	static const char cont[] = " From: a@example.com\r\n\r\n";

	expect_error(&ed_dom, no_from, strlen(no_from), -EBADMSG, "no From field");
	expect_error(&ed_dom, no_colon, strlen(no_colon), -EBADMSG,
		     "header line \"This is not a header\" has no colon");
	expect_error(&ed_dom, cont, strlen(cont), -EBADMSG, "starts with a continuation line");
	expect_error(&ed_dom, "", 0, -EBADMSG, "no From field");

	/* A header block over 1 MiB: refused, whatever the chunks. */
	size_t big = VR_DKIM_HEADER_MAX + 100;
	char *msg = malloc(big + 64);
	assert_non_null(msg);
	strcpy(msg, "From: a@example.com\r\nX-Long: ");
	size_t n = strlen(msg);
	for (; n < big; n += 50)
		memcpy(msg + n, "\r\n\txxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 50);
	memcpy(msg + n, "\r\n\r\nbody\r\n", 10);
	expect_error(&ed_dom, msg, n + 10, -EMSGSIZE, "longer than 1048576 bytes");
	/* Just under the limit is fine. */
	n = VR_DKIM_HEADER_MAX - 4 - 40;
	memcpy(msg + n, "\r\n\r\nbody\r\n", 10);
	char *sig = sign(&ed_dom, NULL, msg, n + 10);
	free(sig);
	free(msg);

	/* A domain whose key is not loaded. */
	struct vr_dkim_key k = { .selector = "s", .alg = VR_DKIM_RSA_SHA256, .key = "/x" };
	struct vr_dkim_domain d = { .name = "example.com", .keys = &k, .n_keys = 1 };
	errno = 0;
	assert_null(vr_dkim_signer_new(&d, NOW, NULL));
	assert_int_equal(errno, EINVAL);
	/* Nor one without keys: it would sign nothing and say it had. */
	d.n_keys = 0;
	errno = 0;
	assert_null(vr_dkim_signer_new(&d, NOW, NULL));
	assert_int_equal(errno, EINVAL);
}

/* A signature error leaves what out held alone. */
static void test_error_keeps_out(void **state)
{
	struct vr_dkim_signer *s = vr_dkim_signer_new(&ed_dom, NOW, NULL);
	struct vr_buf out;
	char err[128];

	vr_buf_init(&out, 0);
	assert_int_equal(vr_buf_append(&out, "kept", 4), 0);
	assert_int_equal(vr_dkim_signer_feed(s, "To: x\r\n\r\n", 9), 0);
	assert_int_equal(vr_dkim_signer_finish(s, &out, err, sizeof(err)), -EBADMSG);
	assert_int_equal(out.len, 4);
	vr_dkim_signer_free(s);

	/* Output that does not fit: -ENOBUFS, out as it was. */
	s = vr_dkim_signer_new(&ed_dom, NOW, NULL);
	vr_buf_free(&out);
	vr_buf_init(&out, 100);
	assert_int_equal(vr_dkim_signer_feed(s, basic, strlen(basic)), 0);
	assert_int_equal(vr_dkim_signer_finish(s, &out, err, sizeof(err)), -ENOBUFS);
	assert_int_equal(out.len, 0);
	vr_dkim_signer_free(s);
	vr_buf_free(&out);
}

/* --- choosing the domain from the header From --- */

static void test_new_for(void **state)
{
	struct vr_dkim_domain doms[2] = {
		{ .name = "other.example", .keys = &rsa_key, .n_keys = 1 },
		{ .name = "example.com", .keys = &ed_key, .n_keys = 1 },
	};
	struct vr_account acct = { .id = "vps1", .dkim = doms, .n_dkim = 2 };
	static const struct {
		const char *from;
		const char *d;           /* NULL: no key */
		int rc;
	} cases[] = {
		{ "From: a@Example.COM\r\n", "example.com", 0 },
		{ "From: \"x@other.example\" (c@other.example) <a@example.com>\r\n", "example.com", 0 },
		{ "From: Bob\r\n <b@other.example.>, a@example.com\r\n", "other.example", 0 },
		{ "From: a@sub.example.com\r\n", NULL, -ENOENT },
		{ "From: undisclosed\r\n", NULL, -EBADMSG },
	};

	assert_ptr_equal(vr_dkim_domain_find(&acct, "EXAMPLE.com", 11), &doms[1]);
	assert_null(vr_dkim_domain_find(&acct, "example.co", 10));
	for (size_t i = 0; i < VR_ARRAY_SIZE(cases); i++) {
		char msg[256], err[256] = "";
		struct vr_buf out;
		snprintf(msg, sizeof(msg), "%sSubject: x\r\n\r\nbody\r\n", cases[i].from);
		struct vr_dkim_signer *s = vr_dkim_signer_new_for(&acct, NOW, NULL);
		assert_non_null(s);
		vr_buf_init(&out, 0);
		assert_int_equal(vr_dkim_signer_feed(s, msg, strlen(msg)), 0);
		int rc = vr_dkim_signer_finish(s, &out, err, sizeof(err));
		if (rc != cases[i].rc)
			fail_msg("%s: %d (%s), wanted %d", cases[i].from, rc, err, cases[i].rc);
		if (cases[i].d) {
			char *sig = strndup((const char *)vr_buf_head(&out), out.len);
			assert_string_equal(tag(sig, "d"), cases[i].d);
			free(sig);
		} else if (rc == -ENOENT) {
			assert_string_equal(err, "account vps1 has no DKIM key for sub.example.com");
		}
		vr_buf_free(&out);
		vr_dkim_signer_free(s);
	}
}

/* --- the corpus: chunking and cross-verification --- */

struct corpus {
	const char *name;
	char *msg;
	size_t len;
};

static struct corpus corpus[16];
static size_t n_corpus;

static void corpus_add(const char *name, const char *msg, size_t len)
{
	assert_true(n_corpus < VR_ARRAY_SIZE(corpus));
	corpus[n_corpus].name = name;
	corpus[n_corpus].msg = malloc(len + 1);
	memcpy(corpus[n_corpus].msg, msg, len);
	corpus[n_corpus].len = len;
	n_corpus++;
}

#define HDRS "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: test\r\n" \
	"Date: Thu, 04 Dec 2026 18:00:00 +0000\r\nMessage-ID: <c@example.com>\r\n"

static void corpus_build(void)
{
	static const char *const fixed[][2] = {
		{ "basic", HDRS "\r\nHello.\r\n" },
		{ "empty-body", HDRS "\r\n" },
		{ "no-body-no-blank-line", HDRS },
		{ "blank-lines-only", HDRS "\r\n\r\n\r\n\r\n" },
		{ "trailing-blank-lines", HDRS "\r\nline\r\n\r\n  \r\n\t\r\n\r\n" },
		{ "folded-headers", "From: Alice\r\n\t<alice@example.com>\r\nTo: bob@example.org,\r\n"
		  "  carol@example.org\r\nSubject: a\r\n very\r\n\tlong   subject  \r\n\r\nbody\r\n" },
		{ "duplicate-headers", HDRS "To: second@example.org\r\nSubject: second\r\n"
		  "Cc: c1@example.org\r\nCc: c2@example.org\r\n\r\nbody\r\n" },
		{ "odd-case-names", "fRoM: alice@example.com\r\nTO: bob@example.org\r\n"
		  "sUBJECT: case\r\nmime-VERSION: 1.0\r\nContent-type: text/plain\r\n"
		  "REPLY-TO: r@example.com\r\n\r\nbody\r\n" },
		{ "utf8-8bit", "From: =?utf-8?q?Al=C3=AFce?= <alice@example.com>\r\nTo: b\xc3\xb6"
		  "b@example.org\r\nSubject: \xc3\xa9t\xc3\xa9 \xe2\x82\xac \xff\xfe\r\n"
		  "Content-Type: text/plain; charset=utf-8\r\n\r\n\xc3\xa9t\xc3\xa9\r\n\xff\r\n" },
		{ "whitespace", HDRS "X-Ws: a \t b\r\n\r\n  lead\r\nin  the\t\tmiddle \t \r\n"
		  "\t\r\ntabs\t\r\n" },
		{ "no-final-crlf", HDRS "\r\nfirst\r\nlast line without CRLF" },
		{ "no-final-crlf-wsp", HDRS "\r\nfirst\r\n   " },
	};
	for (size_t i = 0; i < VR_ARRAY_SIZE(fixed); i++)
		corpus_add(fixed[i][0], fixed[i][1], strlen(fixed[i][1]));

	/* Lines of 998 characters, in the header and the body. */
	char *m = malloc(4096), *w = m;
	w += sprintf(w, "%sX-Long: ", HDRS);
	memset(w, 'h', 998 - 8);
	w += 998 - 8;
	w += sprintf(w, "\r\n\r\n");
	for (int l = 0; l < 2; l++) {
		for (int c = 0; c < 998; c++)
			*w++ = c % 80 == 79 ? ' ' : (char)('a' + c % 26);
		w += sprintf(w, "\r\n");
	}
	corpus_add("long-lines", m, (size_t)(w - m));
	free(m);
}

/*
 * The signed header hash rebuilt here from the message and the signature
 * field alone (RFC 6376 3.7, 5.4.2: each name in h= takes that name's
 * next field from the bottom, none once they run out; then the signature
 * field through "b=" with no CRLF), hashed, and signed by OpenSSL's
 * EVP_DigestSign: base64 of that, which our b= (libsodium's) must equal.
 */
static void openssl_b(const char *msg, size_t len, const char *sig, enum vr_dkim_canon canon,
		      char *out)
{
	const char *end = memmem(msg, len, "\r\n\r\n", 4);   /* msg has no NUL */
	size_t hlen = end ? (size_t)(end - msg) + 2 : len;
	const char *fields[64];
	size_t flen[64], n = 0, used[64] = { 0 };
	struct vr_buf in;

	for (size_t i = 0; i < hlen; n++) {
		assert_true(n < VR_ARRAY_SIZE(fields));
		fields[n] = msg + i;
		do {
			const char *eol = memchr(msg + i, '\n', hlen - i);
			i = eol ? (size_t)(eol - msg) + 1 : hlen;
		} while (i < hlen && (msg[i] == ' ' || msg[i] == '\t'));
		flen[n] = (size_t)(msg + i - fields[n]);
	}
	vr_buf_init(&in, 0);
	char names[512];
	snprintf(names, sizeof(names), "%s", tag(sig, "h"));
	for (char *save, *name = strtok_r(names, ":", &save); name; name = strtok_r(NULL, ":", &save)) {
		size_t nl = strlen(name), j = n;
		while (j-- > 0) {
			if (flen[j] <= nl || strncasecmp(fields[j], name, nl) != 0 ||
			    fields[j][nl] != ':' || used[j])
				continue;
			used[j] = 1;
			assert_int_equal(vr_dkim_header_canon(canon, (const uint8_t *)fields[j], flen[j],
							      &in), 0);
			break;
		}
	}
	const char *b = sig;
	while ((b = strstr(b + 1, "b="))) {
		const char *q = b - 1;
		while (strchr(" \t\r\n", *q))
			q--;
		if (*q == ';')
			break;
	}
	assert_non_null(b);
	assert_int_equal(vr_dkim_header_canon(canon, (const uint8_t *)sig, (size_t)(b + 2 - sig),
					      &in), 0);

	uint8_t hash[32], raw[64];
	size_t rawlen = sizeof(raw);
	EVP_Digest(vr_buf_head(&in), in.len, hash, NULL, EVP_sha256(), NULL);
	vr_buf_free(&in);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	assert_non_null(md);
	assert_int_equal(EVP_DigestSignInit_ex(md, NULL, NULL, NULL, NULL, ed_key.pkey, NULL), 1);
	assert_int_equal(EVP_DigestSign(md, raw, &rawlen, hash, 32), 1);
	EVP_MD_CTX_free(md);
	assert_int_equal(rawlen, 64);
	EVP_EncodeBlock((unsigned char *)out, raw, 64);
}

/*
 * Ed25519 is deterministic (RFC 8032 5.1.6): libsodium, which signs, and
 * OpenSSL, which signed before, give the same b= for every corpus message
 * in all four canonicalisation pairs, alone and beside an RSA signature.
 */
static void test_ed25519_openssl_identical(void **state)
{
	static const struct vr_dkim_opts canons[] = {
		{ VR_DKIM_RELAXED, VR_DKIM_RELAXED }, { VR_DKIM_SIMPLE, VR_DKIM_SIMPLE },
		{ VR_DKIM_RELAXED, VR_DKIM_SIMPLE }, { VR_DKIM_SIMPLE, VR_DKIM_RELAXED },
	};
	const struct vr_dkim_domain *doms[] = { &ed_dom, &dual_dom };
	unsigned compared = 0;

	for (size_t d = 0; d < VR_ARRAY_SIZE(doms); d++)
		for (size_t c = 0; c < VR_ARRAY_SIZE(canons); c++)
			for (size_t i = 0; i < n_corpus; i++) {
				const struct corpus *m = &corpus[i];
				char *sig = sign(doms[d], &canons[c], m->msg, m->len), want[90];
				openssl_b(m->msg, m->len, sig, canons[c].header, want);
				if (strcmp(tag(sig, "b"), want) != 0)
					fail_msg("%s (%zu/%zu): b= %s, OpenSSL's %s", m->name, d, c,
						 tag(sig, "b"), want);
				compared++;
				free(sig);
			}
	assert_int_equal(compared, 2 * 4 * n_corpus);
}

static void test_chunks(void **state)
{
	static const struct vr_dkim_opts canons[] = {
		{ VR_DKIM_RELAXED, VR_DKIM_RELAXED }, { VR_DKIM_SIMPLE, VR_DKIM_SIMPLE },
	};

	/* Ed25519 is deterministic: the same message gives the same bytes
	 * however it is cut. */
	for (size_t c = 0; c < VR_ARRAY_SIZE(canons); c++) {
		for (size_t i = 0; i < n_corpus; i++) {
			const struct corpus *m = &corpus[i];
			char err[256];
			int rc;
			char *whole = sign(&ed_dom, &canons[c], m->msg, m->len);
			for (size_t cut = 1; cut < m->len; cut++) {
				char *part = sign_cut(&ed_dom, &canons[c], m->msg, m->len, cut,
						      m->len, &rc, err, sizeof(err));
				if (!part || strcmp(part, whole) != 0)
					fail_msg("%s cut at %zu: different signature", m->name, cut);
				free(part);
			}
			char *bytes = sign_cut(&ed_dom, &canons[c], m->msg, m->len, 0, 1, &rc, err,
					       sizeof(err));
			assert_non_null(bytes);
			assert_string_equal(bytes, whole);
			free(bytes);
			free(whole);
		}
	}
}

/* A signer made and freed on a thread that then exits (its spare is
 * destroyed with it: the ASan build's leak check sees to that) signs as
 * one made on this thread does. */
static void *sign_on_thread(void *arg)
{
	return sign(&ed_dom, NULL, arg, strlen(arg));
}

static void test_thread_spare(void **state)
{
	static const char msg[] = HDRS "\r\nbody\r\n";
	pthread_t t;
	void *there;

	assert_int_equal(pthread_create(&t, NULL, sign_on_thread, (void *)msg), 0);
	assert_int_equal(pthread_join(t, &there), 0);
	char *here = sign(&ed_dom, NULL, msg, strlen(msg));
	assert_string_equal(there, here);
	free(there);
	free(here);
}

/*
 * One signer reset between messages gives the bytes a fresh signer gives
 * (Ed25519 and RSA PKCS#1 v1.5 are both deterministic), through a failed
 * message, switching domains, and more keys than it keeps contexts for
 * (six copies of the Ed25519 key, each its own EVP_PKEY).
 */
static void test_reset(void **state)
{
	struct vr_dkim_key copies[6];
	struct vr_dkim_domain cdom[6];
	const struct vr_dkim_domain *doms[] = { &dual_dom, &ed_dom, &rsa_dom, &cdom[0], &cdom[1],
						&cdom[2], &cdom[3], &cdom[4], &cdom[5] };
	char err[256];
	struct vr_buf out;

	for (int i = 0; i < 6; i++) {
		copies[i] = ed_key;
		copies[i].pkey = NULL;
		assert_int_equal(vr_dkim_key_load(&copies[i], err, sizeof(err)), 0);
		cdom[i] = (struct vr_dkim_domain){ .name = "example.com", .keys = &copies[i],
						   .n_keys = 1 };
	}
	vr_buf_init(&out, 0);
	struct vr_dkim_signer *s = vr_dkim_signer_new(&ed_dom, NOW, NULL);
	assert_non_null(s);
	for (size_t round = 0; round < 2; round++) {
		for (size_t i = 0; i < n_corpus; i++) {
			const struct vr_dkim_domain *d = doms[(i + round) % VR_ARRAY_SIZE(doms)];
			char *want = sign(d, NULL, corpus[i].msg, corpus[i].len);
			assert_int_equal(vr_dkim_signer_reset(s, d, NOW), 0);
			assert_int_equal(vr_dkim_signer_feed(s, corpus[i].msg, corpus[i].len), 0);
			vr_buf_reset(&out);
			assert_int_equal(vr_dkim_signer_finish(s, &out, err, sizeof(err)), 0);
			assert_int_equal(out.len, strlen(want));
			assert_memory_equal(vr_buf_head(&out), want, out.len);
			free(want);

			/* A failure in between leaves nothing behind. */
			assert_int_equal(vr_dkim_signer_reset(s, d, NOW), 0);
			assert_int_equal(vr_dkim_signer_feed(s, "Bad\r\n\r\nx", 8), 0);
			vr_buf_reset(&out);
			assert_int_equal(vr_dkim_signer_finish(s, &out, err, sizeof(err)), -EBADMSG);
		}
	}
	/* reset_for chooses the domain again; a domain with an unloaded key
	 * is refused. */
	struct vr_account acct = { .id = "a", .dkim = &ed_dom, .n_dkim = 1 };
	assert_int_equal(vr_dkim_signer_reset_for(s, &acct, NOW), 0);
	assert_int_equal(vr_dkim_signer_feed(s, basic, strlen(basic)), 0);
	vr_buf_reset(&out);
	assert_int_equal(vr_dkim_signer_finish(s, &out, err, sizeof(err)), 0);
	char *want = sign(&ed_dom, NULL, basic, strlen(basic));
	assert_memory_equal(vr_buf_head(&out), want, strlen(want));
	free(want);
	/* Finished: more bytes or a second finish are mistakes, said so. */
	size_t len = out.len;
	assert_int_equal(vr_dkim_signer_feed(s, "x", 1), -EINVAL);
	assert_int_equal(vr_dkim_signer_finish(s, &out, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "the message is signed already: reset the signer for the next one");
	assert_int_equal(out.len, len);
	struct vr_dkim_key unloaded = { .selector = "s", .alg = VR_DKIM_RSA_SHA256, .key = "/x" };
	struct vr_dkim_domain ud = { .name = "example.com", .keys = &unloaded, .n_keys = 1 };
	assert_int_equal(vr_dkim_signer_reset(s, &ud, NOW), -EINVAL);

	/* Keys unloaded while the signer still holds their contexts stay
	 * valid for it (ASan would see a use after free otherwise). */
	for (int i = 0; i < 6; i++)
		vr_dkim_key_unload(&copies[i]);
	vr_dkim_signer_free(s);
	vr_buf_free(&out);
}

static void write_file(const char *name, const void *a, size_t alen, const void *b,
		       size_t blen)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(a, 1, alen, f), alen);
	if (blen)
		assert_int_equal(fwrite(b, 1, blen, f), blen);
	assert_int_equal(fclose(f), 0);
}

static void write_dns(void)
{
	struct vr_buf txt;

	vr_buf_init(&txt, 0);
	assert_int_equal(vr_buf_printf(&txt, "ed1._domainkey.example.com "), 0);
	assert_int_equal(vr_dkim_key_txt(&ed_key, &txt), 0);
	assert_int_equal(vr_buf_printf(&txt, "\nrsa1._domainkey.example.com "), 0);
	assert_int_equal(vr_dkim_key_txt(&rsa_key, &txt), 0);
	assert_int_equal(vr_buf_printf(&txt, "\n"), 0);
	write_file("dns.txt", vr_buf_head(&txt), txt.len, NULL, 0);
	vr_buf_free(&txt);
}

static int run_verify(bool quiet)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s/verify.py %s%s", DKIM_TESTDATA, dir,
		 quiet ? " >/dev/null" : "");
	return system(cmd);
}

static void clean_dir(void)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -f %s/*.eml", dir);
	assert_int_equal(system(cmd), 0);
}

/*
 * Every corpus message, signed with ed25519, rsa and both, in all four
 * canonicalisation pairs, as the client will send it (signature fields
 * first, and the CRLF a message lacked at its end added), must verify
 * with dkimpy and opendkim. Then one altered message must not: the
 * verifiers are really looking.
 */
static void test_verify(void **state)
{
	static const struct {
		const char *name;
		const struct vr_dkim_domain *d;
	} keys[] = { { "ed", &ed_dom }, { "rsa", &rsa_dom }, { "dual", &dual_dom } };
	static const struct vr_dkim_opts canons[] = {
		{ VR_DKIM_RELAXED, VR_DKIM_RELAXED }, { VR_DKIM_SIMPLE, VR_DKIM_SIMPLE },
		{ VR_DKIM_RELAXED, VR_DKIM_SIMPLE }, { VR_DKIM_SIMPLE, VR_DKIM_RELAXED },
	};
	static const char *const cnames[] = { "rr", "ss", "rs", "sr" };

	write_dns();
	clean_dir();
	for (size_t k = 0; k < VR_ARRAY_SIZE(keys); k++) {
		for (size_t c = 0; c < VR_ARRAY_SIZE(canons); c++) {
			for (size_t i = 0; i < n_corpus; i++) {
				const struct corpus *m = &corpus[i];
				char *sig = sign(keys[k].d, &canons[c], m->msg, m->len);
				char name[128], *wire = malloc(m->len + 3);
				size_t n = m->len;
				memcpy(wire, m->msg, n);
				if (n < 2 || memcmp(wire + n - 2, "\r\n", 2) != 0) {
					memcpy(wire + n, "\r\n", 2);
					n += 2;
				}
				snprintf(name, sizeof(name), "%s-%s-%s.eml", m->name, keys[k].name,
					 cnames[c]);
				write_file(name, sig, strlen(sig), wire, n);
				free(wire);
				free(sig);
			}
		}
	}
	/* 0..23 Cc fields move where the lines fold: before a ';', inside
	 * and at the end of bh= and b=, before base64's '=' padding. */
	for (int n = 0; n < 24; n++) {
		char msg[2048] = "From: a@example.com\r\n", name[64];
		for (int i = 0; i < n; i++)
			strcat(msg, "Cc: c@example.org\r\n");
		strcat(msg, "\r\nbody\r\n");
		char *sig = sign(&dual_dom, NULL, msg, strlen(msg));
		snprintf(name, sizeof(name), "fold-%02d.eml", n);
		write_file(name, sig, strlen(sig), msg, strlen(msg));
		free(sig);
	}
	assert_int_equal(run_verify(false), 0);

	clean_dir();
	char *sig = sign(&dual_dom, NULL, basic, strlen(basic));
	char *bad = strdup(basic);
	strstr(bad, "Hi Bob")[0] = 'h';
	write_file("altered.eml", sig, strlen(sig), bad, strlen(bad));
	assert_int_not_equal(run_verify(true), 0);
	free(bad);
	free(sig);
	clean_dir();
}

static int setup(void **state)
{
	char err[512];

	if (!mkdtemp(dir))
		return -1;
	if (vr_dkim_key_load(&ed_key, err, sizeof(err)) < 0 ||
	    vr_dkim_key_load(&rsa_key, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	dual_keys[0] = ed_key;
	dual_keys[1] = rsa_key;
	corpus_build();
	return 0;
}

static int teardown(void **state)
{
	char path[256];

	vr_dkim_key_unload(&ed_key);
	vr_dkim_key_unload(&rsa_key);
	for (size_t i = 0; i < n_corpus; i++)
		free(corpus[i].msg);
	for (const char *const *f = (const char *const[]){ "dns.txt", "opendkim.conf", NULL }; *f;
	     f++) {
		snprintf(path, sizeof(path), "%s/%s", dir, *f);
		unlink(path);
	}
	return rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_body_empty),
		cmocka_unit_test(test_body_canon),
		cmocka_unit_test(test_body_random),
		cmocka_unit_test(test_header_canon),
		cmocka_unit_test(test_key_load),
		cmocka_unit_test(test_key_public),
		cmocka_unit_test(test_field_shape),
		cmocka_unit_test(test_h_list),
		cmocka_unit_test(test_bare_lf_header),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_error_keeps_out),
		cmocka_unit_test(test_new_for),
		cmocka_unit_test(test_chunks),
		cmocka_unit_test(test_ed25519_openssl_identical),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_thread_spare),
		cmocka_unit_test(test_verify),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
