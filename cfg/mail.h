/*
 * mail.h - mail syntax, written once for every module: RFC 5322 address
 * lists and the set of addresses as SMTP compares them (mail_addr.c),
 * the RFC 3461 parameters xtext and NOTIFY (mail_param.c), and header
 * field names (mail_field.c, and mail_field_is() here).
 *
 * Every function is pure: it works on a buffer and a length (or a C
 * string), never reads past it, and has no side effects besides its
 * outputs.  Each parser has a libFuzzer target (tests/fuzz/fuzz_mail_*).
 * Who frees: strings returned by mail_xtext_encode()/mail_xtext_decode()
 * are malloc'd for the caller; a mail_addr_set owns its copies until
 * mail_addr_set_free().
 */
#ifndef RELAYQ_MAIL_H
#define RELAYQ_MAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* ---- RFC 5322 address lists (mail_addr.c) ---- */

/* The longest address (qualified) any caller may allow. */
#define MAIL_ADDR_LEN_MAX 511

enum mail_addr_result {
	MAIL_ADDR_OK = 0,
	MAIL_ADDR_BAD, /* a syntax error; see mail_addr_error.why */
	MAIL_ADDR_TOOLONG, /* an address over max_len bytes */
	MAIL_ADDR_TOOMANY, /* the callback's: one address too many */
};

/*
 * The parser follows RFC 5322 (display names, groups, comments, folding,
 * quoted local parts, domain literals, obsolete routes) as intake always
 * has; each flag below is a place where `relayq send` has always been
 * different, so that each caller keeps what it accepted before.
 */
/* One mailbox, or none: empty text, "<>" or "Name <>" is the null
 * sender, handed to the callback as "".  No group, no list. */
#define MAIL_ADDR_ONE 0x001u
/* The whole text is checked lexically (comments, quoted strings, domain
 * literals, stray characters) before any address is handed on. */
#define MAIL_ADDR_LEX_FIRST 0x002u
/* Inside quoted strings and domain literals any byte but NUL passes,
 * and a CR or LF anywhere is a blank (dropped from the address, not
 * required to be a fold); control bytes refuse the address only after
 * its length has been checked. */
#define MAIL_ADDR_LAX_QUOTES 0x004u
/* No '[' inside a domain literal. */
#define MAIL_ADDR_PLAIN_LITERAL 0x008u
/* A local part neither starts with a dot nor ends with one before its
 * '@' (intake takes both: real mail has them). */
#define MAIL_ADDR_STRICT_DOTS 0x010u
/* A domain is written solid: no blank or comment between its labels and
 * dots (intake reads "b . c" as "b.c"). */
#define MAIL_ADDR_SOLID_DOMAIN 0x020u
/* Groups are items of a flat list: an item is a group when the first of
 * < > @ , ; : in it is ':' (its display name may be empty), its members
 * are separated by commas, and another item may follow its ';' without
 * one (intake: a group needs a display name of words, its members may
 * follow each other, and a comma must follow it). */
#define MAIL_ADDR_FLAT_GROUPS 0x040u
/* A display name or local part of more than MAIL_ADDR_WORDS_MAX words
 * and dots is an error. */
#define MAIL_ADDR_WORD_LIMIT 0x080u
/* An address without a domain is qualified only when it has no '@' at
 * all (a quoted "a@b" is left as it is). */
#define MAIL_ADDR_QUALIFY_NO_AT 0x100u

#define MAIL_ADDR_WORDS_MAX 256

/* How to parse: the flags above, the domain for addresses that have none
 * (NULL: they are errors), and the longest address allowed (at most
 * MAIL_ADDR_LEN_MAX). */
struct mail_addr_syntax {
	unsigned flags;
	const char *qualify;
	size_t max_len;
};

/* What went wrong, beyond the result. */
struct mail_addr_error {
	const char *why; /* MAIL_ADDR_BAD: static text */
	size_t len; /* MAIL_ADDR_TOOLONG: the address's length */
	size_t local; /* MAIL_ADDR_TOOLONG: its local part's */
};

/* Receives each address found (unfolded, without comments, display name
 * or angle brackets, qualified); returns MAIL_ADDR_OK to go on or
 * another result, which ends the parse with it. */
typedef enum mail_addr_result mail_addr_fn(void *arg, const char *addr);

/*
 * Parses the address list S of LEN bytes and hands each address to FN in
 * order (duplicates too).  Returns MAIL_ADDR_OK, or the first failure
 * with *ERR filled; addresses handed on before a failure stay handed on.
 */
enum mail_addr_result mail_addrlist_parse(const char *s, size_t len,
    const struct mail_addr_syntax *syn, mail_addr_fn *fn, void *arg,
    struct mail_addr_error *err);

/* A mail_addr_fn that keeps the one address of a list: a new string in
 * *(char **)ARG (NULL before); a second address is MAIL_ADDR_TOOMANY. */
enum mail_addr_result mail_addr_one(void *arg, const char *addr);

/* As mail_addr_fn, and where the address is written in the input: its
 * addr-spec is S[OFF, OFF+LEN) (the local part alone when it was
 * qualified; LEN 0 for the null sender).  Comments or folding inside
 * an addr-spec are inside the span. */
typedef enum mail_addr_result
mail_addr_span_fn(void *arg, const char *addr, size_t off, size_t len);

/* As mail_addrlist_parse(), with the span of each address (intake's
 * edits of the addresses in a header field). */
enum mail_addr_result mail_addrlist_spans(const char *s, size_t len,
    const struct mail_addr_syntax *syn, mail_addr_span_fn *fn, void *arg,
    struct mail_addr_error *err);

/* The offset of the '@' between address ADDR's local part and its
 * domain (the first outside a quoted string), or strlen(ADDR). */
size_t mail_addr_at(const char *addr);

/* A set of addresses as SMTP compares them (local part exactly, domain
 * in any case: RFC 5321 2.4), in the order added, with a hash index. */
struct mail_addr_set {
	char **v; /* the addresses (owned) */
	size_t n, cap;
	uint32_t *slot; /* i+1 of v[i], 0 = free; nslot a power of two */
	size_t nslot;
};

enum mail_set_result {
	MAIL_SET_ADDED,
	MAIL_SET_FOUND, /* the same mailbox was there: not added */
	MAIL_SET_FULL, /* MAX addresses there already: not added */
};

/* Adds a copy of ADDR unless the same mailbox is there or MAX (0: no
 * limit) addresses are; *IDX (if not NULL) gets its index either way. */
enum mail_set_result mail_addr_set_put(
    struct mail_addr_set *, const char *addr, size_t max, size_t *idx);
void mail_addr_set_free(struct mail_addr_set *);

/* ---- RFC 3461 parameters (mail_param.c) ---- */

/* Encodes S as xtext: every byte outside '!'..'~', '+' and '=' becomes
 * "+XX".  Returns a new string. */
char *mail_xtext_encode(const char *s);

/* Also takes lowercase hex digits in "+xx" (RFC 3461 has uppercase). */
#define MAIL_XTEXT_ANYCASE 0x1u

/*
 * Decodes xtext S of N bytes: "+XX" becomes the byte XX, any other '+'
 * stays as it is.  Returns a new string, NUL-terminated, of *OUTLEN
 * bytes (OUTLEN may be NULL; "+00" puts a NUL inside).
 */
char *
mail_xtext_decode(const char *s, size_t n, unsigned flags, size_t *outlen);

/* True if S (N bytes) is xtext as stored: '!'..'~' without '='. */
bool mail_xtext_valid(const char *s, size_t n);

/* NOTIFY conditions; the queue's QNOTIFY_* and the client's
 * SMTP_NOTIFY_* have the same values. */
#define MAIL_NOTIFY_NEVER 0x01u
#define MAIL_NOTIFY_SUCCESS 0x02u
#define MAIL_NOTIFY_FAILURE 0x04u
#define MAIL_NOTIFY_DELAY 0x08u

/* As sendmail's -N: no empty item (a trailing comma included), and
 * NEVER only once. */
#define MAIL_NOTIFY_STRICT 0x1u

/*
 * Parses a NOTIFY list S of N bytes (NEVER, or SUCCESS, FAILURE, DELAY
 * joined by commas; any case) into *BITS; false if it is not one.
 */
bool mail_notify_parse(const char *s, size_t n, unsigned flags, unsigned *bits);

/* Writes BITS as a NOTIFY value ("NEVER", "SUCCESS,DELAY") into BUF. */
void mail_notify_format(unsigned bits, char *buf, size_t len);

/* The NOTIFY of a recipient given twice (0: not given): every condition
 * either copy asked for (not given counts as FAILURE,DELAY, relayq's
 * default), so no notice asked for is lost; NEVER only when both say
 * NEVER. */
unsigned mail_notify_merge(unsigned a, unsigned b);

/* ---- header fields (mail_field.c) ---- */

/* The length of the field name LINE starts with: its run of printable
 * ASCII bytes other than ':' (the caller checks what follows). */
size_t mail_field_name_len(const char *line, size_t len);

/* True if field name NAME (N bytes) is WANT, in any case (inline: it
 * is called for every field with a constant WANT). */
static inline bool
mail_field_is(const char *name, size_t n, const char *want)
{
	return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* True if LINE (LEN bytes, its line end included or not) is an mbox
 * "From " separator: "From " not followed by blanks and a ':' (that is
 * a From: field). */
bool mail_mbox_from_is(const char *line, size_t len);

/* ---- local mail: aliases(5) and the sender map ----
 *
 * mail_alias.c and mail_map.c.  Both tables are parsed once from a file's text (pure parsers, fuzzed)
 * into an immutable table the caller frees; errors are "NAME:LINE:
 * message".  What intake does with them is in struct mail_local.
 */

enum mail_table_result {
	MAIL_TABLE_OK = 0,
	MAIL_TABLE_BAD, /* ERR says "NAME:LINE: what is wrong" */
};

/* Names followed from one recipient before the last is taken as it is
 * (sendmail stops at 10), names looked at, and addresses one recipient
 * expands to, at most. */
#define MAIL_ALIAS_DEPTH 16
#define MAIL_ALIAS_NODES 10000
#define MAIL_ALIAS_FANOUT 10000

/* What an alias target is. */
enum mail_alias_kind {
	MAIL_ALIAS_ADDR, /* an address with a domain (a local one is
			    expanded again) */
	MAIL_ALIAS_LOCAL, /* a local name, expanded again */
	MAIL_ALIAS_VERBATIM, /* \name: a local name not expanded again */
	MAIL_ALIAS_SKIP, /* |command, /file, :include:: not for relayq */
};

struct mail_alias_target {
	enum mail_alias_kind kind;
	/* ADDR: the address (no <>); LOCAL, VERBATIM: the name as
	 * written (VERBATIM without its backslash); SKIP: the entry as
	 * written */
	char *text;
};

struct mail_alias {
	char *name; /* lowercase, unquoted: the lookup key */
	int line;
	struct mail_alias_target *t;
	size_t n;
};

/* An aliases(5) file, parsed. */
struct mail_aliases {
	struct mail_alias *v; /* sorted by name, one per name */
	size_t n;
	/* "NAME:LINE: ..." for what is read but not used: |command,
	 * /file and :include: entries, a name given again (the first
	 * wins, as Postfix's postalias) */
	char **warn;
	size_t nwarn;
};

/*
 * Parses aliases(5) text BUF of LEN bytes (NAME for errors): "name:
 * target, target" logical lines (a line that starts with a blank
 * continues the one before; blank lines and lines starting with '#'
 * are skipped); a name may be quoted; targets are separated by commas
 * outside quotes, angle brackets and comments.  *OUT is freed with
 * mail_aliases_free().
 */
enum mail_table_result mail_aliases_parse(const char *name, const char *buf,
    size_t len, struct mail_aliases **out, char *err, size_t errlen);
void mail_aliases_free(struct mail_aliases *);
/* The alias of local part LOCAL (N bytes; quotes removed, any case), or
 * NULL. */
const struct mail_alias *
mail_aliases_find(const struct mail_aliases *, const char *local, size_t n);

/* One line of a sender map: KEY is "user@domain", "user" or "@domain"
 * (lowercase), VALUE an address or "@domain" (the user kept). */
struct mail_map_entry {
	char *key;
	char *value;
	int line;
};
struct mail_map {
	struct mail_map_entry *v; /* sorted by key */
	size_t n;
};

/*
 * Parses a sender map (Postfix's smtp_generic_maps shape: "KEY VALUE" a
 * line, blank lines and '#' comments skipped; a key given twice is an
 * error).  *OUT is freed with mail_map_free().
 */
enum mail_table_result mail_map_parse(const char *name, const char *buf,
    size_t len, struct mail_map **out, char *err, size_t errlen);
void mail_map_free(struct mail_map *);

/* What is local mail and what happens to it (intake, sendmail -bv). */
struct mail_local {
	const char *origin; /* added to unqualified addresses */
	const char *hostname; /* its domain is local too, as localhost */
	const struct mail_aliases *aliases; /* NULL: none */
	const char *fallback; /* local_fallback; NULL or "": none */
	const struct mail_map *sender_map; /* NULL: none */
};

/* True if address ADDR (qualified) is local mail: its domain is
 * origin, hostname or localhost, in any case. */
bool mail_local_is(const struct mail_local *, const char *addr);

/* What an expansion met besides the addresses it handed on. */
struct mail_expand_info {
	size_t skipped; /* |command, /file, :include: targets */
	size_t loops; /* names reached again (they add nothing) */
	bool empty; /* nothing but those: the name went to the fallback */
};

/*
 * Hands FN each address recipient ADDR (qualified) is delivered to: ADDR
 * itself unless it is local mail; else its local part's alias, expanded
 * again for each local target (a name reached again adds nothing, as in
 * sendmail; after MAIL_ALIAS_DEPTH names the last is taken as it is);
 * a local name without an alias goes to the fallback, else to
 * NAME@origin.  An expansion that yields nothing (loops, skipped
 * targets) hands on the fallback or ADDR's NAME@origin: no mail is
 * dropped.  Returns MAIL_ADDR_OK, what FN returned when it was not OK,
 * or MAIL_ADDR_TOOMANY past MAIL_ALIAS_FANOUT addresses or
 * MAIL_ALIAS_NODES names.  INFO may be NULL.
 */
enum mail_addr_result
mail_alias_expand(const struct mail_local *, const char *addr, mail_addr_fn *fn,
    void *arg, struct mail_expand_info *info);

/*
 * The sender map's address for ADDR (qualified): the value of
 * "user@domain", else of "user" when ADDR is local mail, else of
 * "@domain"; a value "@domain" keeps ADDR's user.  A malloc'd string,
 * or NULL when no key matches (or there is no map).
 */
char *mail_map_rewrite(const struct mail_local *, const char *addr);

#endif
