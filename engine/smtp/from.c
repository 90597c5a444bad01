/*
 * from.c - the From field's mailbox-list (RFC 5322 §3.4, §3.6.2; see
 * hdr.h): which domains does this message claim to come from?
 *
 * A lexer turns the unfolded body into tokens, dropping comments and
 * folding whitespace (CFWS) between them: atoms (atext and dots, so a
 * dot-atom is one token), quoted strings, domain literals and the
 * specials < > @ , : ;. A recursive descent over the tokens then takes
 * each mailbox as "[phrase] <local@domain>" or "local@domain".
 *
 * An encoded word (RFC 2047) is made of atext, so in a display name it is
 * an ordinary atom and needs no decoding: it cannot name an address. One
 * that carries a special (a Q-encoded comma, say) is invalid in a phrase
 * (RFC 2047 §5(3)) and splits into pieces that fail here, which is as it
 * should be: a reader that decoded first would see another address.
 */
#include <string.h>

#include "hdr.h"

enum tok_kind { T_END, T_ATOM, T_QSTR, T_DLIT, T_SPECIAL };

struct tok {
	enum tok_kind kind;
	const uint8_t *p;          /* the token's text, quotes and brackets included */
	size_t len;
};

struct lex {
	const uint8_t *p;
	size_t n, i;
	const char *why;           /* the first fault found */
};

/* RFC 5322 atext, plus octets above 0x7f (RFC 6532 §3.2). */
static bool is_atext(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c >= 0x80 || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static bool is_ctl(uint8_t c)
{
	return (c < 32 && c != '\t') || c == 127;
}

static int lex_fail(struct lex *lx, const char *why)
{
	if (!lx->why)
		lx->why = why;
	return VR_ERR;
}

/* "\" and the octet it quotes: VCHAR, WSP or UTF-8 (RFC 6532). */
static int lex_pair(struct lex *lx)
{
	if (lx->i + 1 >= lx->n || is_ctl(lx->p[lx->i + 1]))
		return lex_fail(lx, "a backslash quoting nothing");
	lx->i += 2;
	return VR_OK;
}

/* A comment, nested ones within; lx->i at its "(". */
static int lex_comment(struct lex *lx)
{
	size_t depth = 0;

	while (lx->i < lx->n) {
		uint8_t c = lx->p[lx->i];
		if (c == '\\') {
			if (lex_pair(lx) < 0)
				return VR_ERR;
			continue;
		}
		if (is_ctl(c))
			return lex_fail(lx, "a control character");
		lx->i++;
		if (c == '(')
			depth++;
		else if (c == ')' && --depth == 0)
			return VR_OK;
	}
	return lex_fail(lx, "an unterminated comment");
}

/* A quoted string or a domain literal, up to its closing octet. */
static int lex_quoted(struct lex *lx, uint8_t close, const char *unterminated)
{
	for (lx->i++; lx->i < lx->n;) {
		uint8_t c = lx->p[lx->i];
		if (c == close) {
			lx->i++;
			return VR_OK;
		}
		if (is_ctl(c))
			return lex_fail(lx, "a control character");
		/* dtext has neither "[" nor the obsolete quoted pair */
		if (close == ']' && (c == '[' || c == '\\'))
			return lex_fail(lx, "a bad domain literal");
		if (c == '\\') {
			if (lex_pair(lx) < 0)
				return VR_ERR;
			continue;
		}
		lx->i++;
	}
	return lex_fail(lx, unterminated);
}

/* The next token after any CFWS. VR_OK or VR_ERR. */
static int lex_next(struct lex *lx, struct tok *t)
{
	for (;;) {
		if (lx->i == lx->n) {
			*t = (struct tok){ .kind = T_END, .p = lx->p + lx->i };
			return VR_OK;
		}
		uint8_t c = lx->p[lx->i];
		if (c == ' ' || c == '\t')
			lx->i++;
		else if (c != '(')
			break;
		else if (lex_comment(lx) < 0)
			return VR_ERR;
	}

	size_t start = lx->i;
	uint8_t c = lx->p[start];
	int rc = VR_OK;

	if (is_atext(c) || c == '.') {
		t->kind = T_ATOM;
		while (lx->i < lx->n && (is_atext(lx->p[lx->i]) || lx->p[lx->i] == '.'))
			lx->i++;
	} else if (c == '"') {
		t->kind = T_QSTR;
		rc = lex_quoted(lx, '"', "an unterminated quoted string");
	} else if (c == '[') {
		t->kind = T_DLIT;
		rc = lex_quoted(lx, ']', "an unterminated domain literal");
	} else if (c && strchr("<>@,:;", c)) {
		t->kind = T_SPECIAL;
		lx->i++;
	} else {
		return lex_fail(lx, c == ')' ? "an unbalanced ')'" :
			       is_ctl(c) ? "a control character" : "an unexpected character");
	}
	t->p = lx->p + start;
	t->len = lx->i - start;
	return rc;
}

static bool is_special(const struct tok *t, uint8_t c)
{
	return t->kind == T_SPECIAL && t->p[0] == c;
}

static bool is_word(const struct tok *t)
{
	return t->kind == T_ATOM || t->kind == T_QSTR;
}

/* dot-atom-text: no dot first, last, or next to another. */
static bool dots_ok(const struct tok *t)
{
	if (t->p[0] == '.' || t->p[t->len - 1] == '.')
		return false;
	for (size_t i = 1; i < t->len; i++)
		if (t->p[i] == '.' && t->p[i - 1] == '.')
			return false;
	return true;
}

/* "@" domain after the local part; t is at the "@" and ends after the
 * domain. */
static int addr_rest(struct lex *lx, const struct tok *local, struct tok *t,
		     vr_smtp_from_fn *fn, void *arg)
{
	if (local->kind == T_ATOM && !dots_ok(local))
		return lex_fail(lx, "a misplaced dot in the local part");
	if (!is_special(t, '@'))
		return lex_fail(lx, "an address without @domain");
	if (lex_next(lx, t) < 0)
		return VR_ERR;
	if (t->kind == T_ATOM ? !dots_ok(t) : t->kind != T_DLIT)
		return lex_fail(lx, t->kind == T_ATOM ? "a misplaced dot in the domain"
						      : "no domain after @");
	fn(arg, t->p, t->len);
	return lex_next(lx, t);
}

/* One mailbox; t is at its first token and ends after it. */
static int mailbox(struct lex *lx, struct tok *t, vr_smtp_from_fn *fn, void *arg)
{
	struct tok first = *t;
	unsigned words = 0;

	for (; is_word(t); words++)
		if (lex_next(lx, t) < 0)
			return VR_ERR;

	if (is_special(t, '@')) {
		/* addr-spec: the one word was its local part */
		if (words != 1)
			return lex_fail(lx, words ? "a local part of several words"
						  : "no local part before @");
		return addr_rest(lx, &first, t, fn, arg);
	}
	if (is_special(t, '<')) {
		/* name-addr: the words were the display name (obs-phrase lets
		 * dots follow its first word: "J. Smith") */
		if (words && first.p[0] == '.')
			return lex_fail(lx, "a display name starting with a dot");
		if (lex_next(lx, t) < 0)
			return VR_ERR;
		if (is_special(t, '@'))
			return lex_fail(lx, "a source route");
		if (!is_word(t))
			return lex_fail(lx, "no address inside <>");
		struct tok local = *t;
		if (lex_next(lx, t) < 0 || addr_rest(lx, &local, t, fn, arg) < 0)
			return VR_ERR;
		if (!is_special(t, '>'))
			return lex_fail(lx, "a missing >");
		return lex_next(lx, t);
	}
	if (is_special(t, ':') || is_special(t, ';'))
		return lex_fail(lx, "group syntax");
	if (words)
		return lex_fail(lx, "a display name without an address");
	if (t->kind == T_END || is_special(t, ','))
		return lex_fail(lx, "an empty list member");
	return lex_fail(lx, t->kind == T_DLIT ? "a domain literal out of place"
					      : "an unexpected >");
}

int vr_smtp_from_parse(const uint8_t *p, size_t n, vr_smtp_from_fn *fn, void *arg,
		       const char **why)
{
	struct lex lx = { .p = p, .n = n };
	struct tok t;

	if (lex_next(&lx, &t) < 0)
		goto bad;
	if (t.kind == T_END) {
		lex_fail(&lx, "no address");
		goto bad;
	}
	for (;;) {
		if (mailbox(&lx, &t, fn, arg) < 0)
			goto bad;
		if (t.kind == T_END)
			return VR_OK;
		if (!is_special(&t, ',')) {
			lex_fail(&lx, "no comma between addresses");
			goto bad;
		}
		if (lex_next(&lx, &t) < 0)
			goto bad;
	}
bad:
	*why = lx.why;
	return VR_ERR;
}
