/* The encode entry point (UTF-8 repair, pre-tokenization, BPE per piece, post-processor
 * special tokens) and the read-only vocabulary accessors of a loaded tokenizer. */
#include "engine/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

static int push_ids(int32_t **ids, size_t *n, size_t *cap, const int32_t *v, size_t k) {
    if (*n + k > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *n + k) c *= 2;
        int32_t *p = realloc(*ids, c * sizeof *p);
        if (p == NULL) return ZS_ENOMEM;
        *ids = p;
        *cap = c;
    }
    if (k) memcpy(*ids + *n, v, k * sizeof *v);
    *n += k;
    return ZS_OK;
}

int zs_tok_encode(const zs_tok_t *tok, const char *text, size_t len, int add_special,
                  int32_t **ids, size_t *n, zs_err_t *err) {
    if (ids) *ids = NULL;
    if (n) *n = 0;
    if (tok == NULL || ids == NULL || n == NULL || (text == NULL && len))
        return zs_err_set(err, ZS_EINVAL, "zs_tok_encode: NULL argument");
    if (len > UINT32_MAX / 4)
        return zs_err_set(err, ZS_ERANGE, "zs_tok_encode: text of %zu bytes is too long", len);
    tok_buf fixed = {0};
    if (len && !tok_utf8_is_valid(text, len)) {
        if (tok_utf8_lossy(&fixed, text, len))
            return zs_err_set(err, ZS_ENOMEM, "zs_tok_encode: out of memory");
        text = fixed.p;
        len = fixed.len;
    }
    tok_pieces pcs = {0};
    int32_t *out = NULL;
    size_t cnt = 0, cap = 0;
    int rc = tok_pretokenize(tok, text ? text : "", len, &pcs, err);
    if (rc == ZS_OK && add_special)
        rc = push_ids(&out, &cnt, &cap, tok->post_prefix, tok->n_post_prefix);
    for (size_t i = 0; rc == ZS_OK && i < pcs.n; i++) {
        const tok_piece *p = &pcs.v[i];
        if (p->added >= 0) rc = push_ids(&out, &cnt, &cap, &p->added, 1);
        else rc = tok_bpe_tokenize(&tok->bpe, p->s, p->len, &out, &cnt, &cap, err);
    }
    if (rc == ZS_OK && add_special)
        rc = push_ids(&out, &cnt, &cap, tok->post_suffix, tok->n_post_suffix);
    tok_pieces_free(&pcs);
    tok_buf_free(&fixed);
    if (rc) {
        free(out);
        if (rc == ZS_ENOMEM) return zs_err_set(err, rc, "zs_tok_encode: out of memory");
        return rc;
    }
    *ids = out;
    *n = cnt;
    return ZS_OK;
}

size_t zs_tok_vocab_size(const zs_tok_t *tok) { return tok ? tok->vocab_size : 0; }

int32_t zs_tok_token_to_id(const zs_tok_t *tok, const char *token, size_t len) {
    if (tok == NULL || (token == NULL && len)) return -1;
    if (token == NULL) token = "";
    int32_t id = tok_map_get(&tok->added_map, token, len);
    return id >= 0 ? id : tok_map_get(&tok->bpe.vocab, token, len);
}

const char *zs_tok_id_to_token(const zs_tok_t *tok, int32_t id, size_t *len) {
    if (tok == NULL || id < 0 || (size_t)id >= tok->vocab_size || tok->id_tok[id] == NULL)
        return NULL;
    if (len) *len = tok->id_len[id];
    return tok->id_tok[id];
}

int zs_tok_is_special(const zs_tok_t *tok, int32_t id) {
    if (tok == NULL || id < 0 || (size_t)id >= tok->vocab_size) return 0;
    return tok->id_special[id];
}

int32_t zs_tok_bos_id(const zs_tok_t *tok) { return tok ? tok->bos : -1; }
int32_t zs_tok_eos_id(const zs_tok_t *tok) { return tok ? tok->eos : -1; }
