/* Private to src/engine/tokenizer*.c: the in-memory form of a loaded tokenizer.json and the
 * helpers the tokenizer source files share (maps, buffers, UTF-8, regex matching, the
 * pre-tokenization "piece" lists). Nothing here is public API. */
#ifndef ZS_ENGINE_TOKENIZER_INTERNAL_H
#define ZS_ENGINE_TOKENIZER_INTERNAL_H

#include "zerostart/err.h"
#include "common/utf8.h"
#include "zerostart/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* ---- growable byte buffer (tokenizer_util.c) ---------------------------------------- */
typedef struct tok_buf {
    char *p;
    size_t len, cap;
} tok_buf;

/* Appends n bytes; keeps p NUL-terminated. Returns ZS_OK or ZS_ENOMEM. */
int tok_buf_put(tok_buf *b, const void *s, size_t n);
int tok_buf_putc(tok_buf *b, char c);
void tok_buf_free(tok_buf *b);

/* ---- string -> int32 map, open addressing, keys borrowed (tokenizer_util.c) ---------- */
typedef struct tok_map {
    size_t cap, count;     /* cap is a power of two */
    const char **key;
    uint32_t *klen;
    int32_t *val;
} tok_map;

int tok_map_init(tok_map *m, size_t expected);
void tok_map_free(tok_map *m);
/* Inserts k -> v. If k is present, leaves it and stores its value in *old (if non-NULL)
 * and returns 0; returns 1 when inserted; ZS_ENOMEM on allocation failure. */
int tok_map_put(tok_map *m, const char *k, size_t klen, int32_t v, int32_t *old);
/* Overwrites or inserts. */
int tok_map_set(tok_map *m, const char *k, size_t klen, int32_t v);
/* Returns the value or -1. */
int32_t tok_map_get(const tok_map *m, const char *k, size_t klen);

/* ---- (id, id) -> (rank, new id) map for BPE merges (tokenizer_util.c) ----------------- */
typedef struct tok_pairmap {
    size_t cap, count;
    uint64_t *key;         /* ((a << 32) | b) + 1; 0 = empty */
    uint32_t *rank;
    int32_t *newid;
} tok_pairmap;

int tok_pairmap_init(tok_pairmap *m, size_t expected);
void tok_pairmap_free(tok_pairmap *m);
/* Inserts or overwrites (a later duplicate merge wins, as in `tokenizers`). */
int tok_pairmap_set(tok_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t newid);
/* Returns 1 and fills rank/newid when present, else 0. */
int tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, uint32_t *rank, int32_t *newid);

/* ---- UTF-8 (tokenizer_util.c) -------------------------------------------------------- */
/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is invalid or truncated. */
size_t tok_utf8_valid_len(const unsigned char *s, size_t n);
/* Decodes the (valid) UTF-8 character at s; returns its byte length. */
size_t tok_utf8_decode(const char *s, uint32_t *cp);
/* Appends s[0..n) to out with every maximal invalid subsequence replaced by U+FFFD (the
 * policy of Python's errors='replace' and Rust's from_utf8_lossy). */
int tok_utf8_lossy(tok_buf *out, const char *s, size_t n);
int tok_utf8_is_valid(const char *s, size_t n);
/* Unicode White_Space property (Rust char::is_whitespace). */
int tok_is_whitespace(uint32_t cp);

/* ---- regular expressions (tokenizer_util.c) --------------------------------------------- */
typedef struct tok_spans {
    size_t *v;             /* pairs: start, end */
    size_t n, cap;         /* n = number of pairs */
} tok_spans;

void tok_spans_free(tok_spans *s);
/* Compiles a pattern with PCRE2_UTF|PCRE2_UCP (or PCRE2_LITERAL when literal). Refuses
 * patterns that can match the empty string and Oniguruma-specific escapes whose meaning
 * differs in PCRE2. `where` names the JSON field for error messages. */
int tok_re_compile(const char *pat, size_t len, int literal, const char *where,
                   pcre2_code **out, zs_err_t *err);
/* All non-overlapping leftmost matches in s[0..n) (valid UTF-8), appended to out. */
int tok_re_find_all(const pcre2_code *re, const char *s, size_t n, tok_spans *out,
                    zs_err_t *err);

/* ---- byte-level alphabet (tokenizer_util.c) --------------------------------------------- */
/* Code point GPT-2's bytes_to_unicode() assigns to byte b. */
uint32_t tok_byte_to_cp(unsigned b);
/* Byte for a byte-level code point, or -1. */
int tok_cp_to_byte(uint32_t cp);

/* ---- loaded tokenizer ------------------------------------------------------------------ */
enum { TN_PREPEND, TN_REPLACE, TN_UNICODE };
typedef struct tok_norm_step {
    int kind;
    int form;              /* TN_UNICODE: unorm_form (engine/unicode_normalize.h) */
    char *str;             /* Prepend text / Replace content */
    size_t str_len;
    pcre2_code *re;        /* Replace pattern */
} tok_norm_step;

enum { TP_BYTELEVEL, TP_SPLIT, TP_METASPACE, TP_DIGITS };
enum { TB_REMOVED, TB_ISOLATED, TB_MERGED_PREV, TB_MERGED_NEXT, TB_CONTIGUOUS };
enum { TS_ALWAYS, TS_FIRST, TS_NEVER };
typedef struct tok_pre_step {
    int kind;
    int add_prefix_space;  /* ByteLevel */
    pcre2_code *re;        /* Split pattern, ByteLevel regex (NULL when use_regex=false), Digits */
    int behavior, invert;  /* Split */
    char repl[4];          /* Metaspace replacement (UTF-8) */
    size_t repl_len;
    int prepend_scheme, split;
} tok_pre_step;

enum { TD_BYTELEVEL, TD_REPLACE, TD_BYTEFALLBACK, TD_FUSE, TD_STRIP, TD_METASPACE };
typedef struct tok_dec_step {
    int kind;
    pcre2_code *re;        /* Replace pattern */
    char *str;             /* Replace content */
    size_t str_len;
    uint32_t cp;           /* Strip content, Metaspace replacement */
    size_t start, stop;    /* Strip */
    int prepend_never;     /* Metaspace */
} tok_dec_step;

typedef struct tok_added {
    char *content;         /* malloc'd */
    size_t len;
    char *norm;            /* normalized content (normalized tokens only; malloc'd) */
    size_t norm_len;
    int32_t id;
    unsigned char special, single_word, lstrip, rstrip, normalized;
} tok_added;

/* Added tokens matched on one text form: indices into zs_tok.added sorted by first
 * byte, then by length descending; first[b]..first[b+1] is the slice for byte b. */
typedef struct tok_matchset {
    uint32_t *idx;
    size_t n;
    uint32_t first[257];
} tok_matchset;

typedef struct tok_bpe {
    tok_map vocab;
    size_t vocab_count;    /* entries in the model vocab (tokenizers' get_vocab_size) */
    tok_pairmap merges;
    int32_t unk_id;        /* -1 when no unk_token */
    char *prefix, *suffix; /* continuing_subword_prefix / end_of_word_suffix or NULL */
    size_t prefix_len, suffix_len;
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_ids[256]; /* "<0xNN>" ids, -1 when absent */
} tok_bpe;

struct zs_tok {
    char *name;            /* file name for error messages */
    char *arena;           /* model vocab token strings */
    tok_bpe bpe;
    size_t vocab_size;     /* max id + 1 over model vocab and added tokens */
    const char **id_tok;   /* id -> token (NULL for ids without a token) */
    uint32_t *id_len;
    unsigned char *id_special; /* the id's token is a special added token */
    tok_added *added;
    size_t n_added;
    tok_map added_map;     /* content -> id */
    tok_matchset match_raw, match_norm;
    pcre2_code *word_re;   /* word-character class for single_word added tokens */
    tok_norm_step *norm;
    size_t n_norm;
    tok_pre_step *pre;
    size_t n_pre;
    int32_t *post_prefix, *post_suffix;
    size_t n_post_prefix, n_post_suffix;
    tok_dec_step *dec;
    size_t n_dec;
    int has_decoder;
    int32_t bos, eos;
};

/* ---- pieces: the text being pre-tokenized (tokenizer_pretok.c) -------------------------- */
typedef struct tok_piece {
    char *s;               /* normalized text; shares one allocation with orig */
    uint32_t *orig;        /* per byte: offset in the original text it came from */
    size_t len;
    int32_t added;         /* id when this piece is an added token, else -1 */
} tok_piece;

typedef struct tok_pieces {
    tok_piece *v;
    size_t n, cap;
} tok_pieces;

void tok_pieces_free(tok_pieces *p);
/* Splits text on added tokens, normalizes and pre-tokenizes the rest. */
int tok_pretokenize(const zs_tok_t *tok, const char *text, size_t len, tok_pieces *out,
                    zs_err_t *err);
/* Applies the normalizer steps to a standalone string (for normalized added tokens). */
int tok_normalize_string(const zs_tok_t *tok, const char *s, size_t len, char **out,
                         size_t *out_len, zs_err_t *err);

/* ---- BPE model (tokenizer_bpe.c) --------------------------------------------------------- */
/* Tokenizes one pre-token, appending ids to *ids (grown as needed). */
int tok_bpe_tokenize(const tok_bpe *bpe, const char *s, size_t len, int32_t **ids,
                     size_t *n, size_t *cap, zs_err_t *err);

#endif
