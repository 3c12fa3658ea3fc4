/* Private to src/engine: Unicode normalization forms NFC, NFD, NFKC and NFKD (UAX #15) on
 * UTF-8 text, as the reference `tokenizers` package applies them (its Rust crate's Unicode
 * 9.0 tables; see docs/tokenizer.md), and the layouts of the generated data tables in
 * src/engine/unicode_tables.c (tools/gen_unicode_tables.py). Nothing here is public API. */
#ifndef ZS_ENGINE_UNICODE_NORMALIZE_H
#define ZS_ENGINE_UNICODE_NORMALIZE_H

#include "zerostart/err.h"

#include <stddef.h>
#include <stdint.h>

typedef enum unorm_form { UNORM_NFC, UNORM_NFD, UNORM_NFKC, UNORM_NFKD } unorm_form;

/* Normalizes the UTF-8 text s[0..n) to `form`. On success *out is a malloc'd NUL-terminated
 * string of *out_len bytes (free it); when src is non-NULL, *src is a malloc'd array with,
 * for each output byte, the byte offset in s of the input character it is aligned to
 * (nondecreasing; output characters keep the positions of the input characters in order,
 * as tokenizers' alignments do). Invalid UTF-8 (including surrogates and overlong forms)
 * → ZS_EINVAL naming the byte offset; an unknown form → ZS_EINVAL; input of 4 GiB or more
 * → ZS_EINVAL; ZS_ENOMEM. On failure *out and *src are NULL. */
int unorm_utf8(unorm_form form, const char *s, size_t n, char **out, size_t *out_len,
               uint32_t **src, zs_err_t *err);

/* Canonical combining class of cp (0 for unassigned code points). */
unsigned unorm_ccc(uint32_t cp);

/* Parses "NFC", "NFD", "NFKC", "NFKD"; returns 0 and sets *form, or -1. */
int unorm_form_parse(const char *name, unorm_form *form);

/* ---- generated tables (src/engine/unicode_tables.c) ----------------------------------- */
typedef struct unorm_decomp_entry {
    uint32_t key;          /* cp << 8 | canonical_len << 5 | compat_len */
    uint16_t canon, compat; /* offsets into unorm_decomp_data */
} unorm_decomp_entry;

typedef struct unorm_comp_entry {
    uint32_t first, second, composite;
} unorm_comp_entry;

extern const char unorm_unicode_version[];
extern const unsigned unorm_ccc_shift;
extern const size_t unorm_ccc_index_len;
extern const uint8_t unorm_ccc_index[];
extern const uint8_t unorm_ccc_blocks[];
extern const size_t unorm_decomp_count;
extern const unorm_decomp_entry unorm_decomp[];
extern const uint32_t unorm_decomp_data[];
extern const size_t unorm_comp_count;
extern const unorm_comp_entry unorm_comp[];

#endif
