/* The BPE model: turns one pre-token into ids the way tokenizers' models::bpe does it —
 * per-character vocabulary lookup (continuing_subword_prefix / end_of_word_suffix, byte
 * fallback to <0xNN>, unk and fuse_unk), ignore_merges whole-word hits, then merging the
 * lowest-ranked adjacent pair first with a binary heap (O(n log n) per word). */
#include "engine/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct sym {
    int32_t id;
    int32_t prev, next;    /* -1 at the ends */
    size_t len;            /* bytes covered; 0 = merged away */
} sym;

typedef struct merge {
    uint32_t rank;
    uint32_t pos;
    int32_t newid;
} merge;

typedef struct heap {
    merge *v;
    size_t n, cap;
} heap;

static int merge_less(const merge *a, const merge *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(heap *h, merge m) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        merge *v = realloc(h->v, cap * sizeof *v);
        if (v == NULL) return ZS_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_less(&m, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = m;
    return ZS_OK;
}

static merge heap_pop(heap *h) {
    merge top = h->v[0];
    merge last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && merge_less(&h->v[c + 1], &h->v[c])) c++;
        if (!merge_less(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

typedef struct syms {
    sym *v;
    size_t n, cap;
} syms;

static int syms_add(syms *w, int32_t id, size_t len) {
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        sym *v = realloc(w->v, cap * sizeof *v);
        if (v == NULL) return ZS_ENOMEM;
        w->v = v;
        w->cap = cap;
    }
    if (w->n >= INT32_MAX - 1) return ZS_ERANGE;
    sym *s = &w->v[w->n];
    s->id = id;
    s->len = len;
    s->prev = (int32_t)w->n - 1;
    s->next = (int32_t)w->n + 1;
    w->n++;
    return ZS_OK;
}

static int ids_push(int32_t **ids, size_t *n, size_t *cap, int32_t id) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        int32_t *v = realloc(*ids, c * sizeof *v);
        if (v == NULL) return ZS_ENOMEM;
        *ids = v;
        *cap = c;
    }
    (*ids)[(*n)++] = id;
    return ZS_OK;
}

/* Builds the initial symbols (tokenizers' BPE::merge_word before merge_all). */
static int initial_symbols(const tok_bpe *bpe, const char *s, size_t len, syms *w,
                           tok_buf *key) {
    int32_t unk = -1;
    size_t unk_len = 0;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t cl = tok_utf8_decode(s + i, &cp);
        int is_first = i == 0, is_last = i + cl >= len;
        key->len = 0;
        if (!is_first && bpe->prefix && tok_buf_put(key, bpe->prefix, bpe->prefix_len))
            return ZS_ENOMEM;
        if (tok_buf_put(key, s + i, cl)) return ZS_ENOMEM;
        if (is_last && bpe->suffix && tok_buf_put(key, bpe->suffix, bpe->suffix_len))
            return ZS_ENOMEM;
        i += cl;
        int32_t id = tok_map_get(&bpe->vocab, key->p, key->len);
        if (id >= 0) {
            if (unk >= 0) {
                if (syms_add(w, unk, unk_len)) return ZS_ENOMEM;
                unk = -1;
            }
            if (syms_add(w, id, cl)) return ZS_ENOMEM;
            continue;
        }
        if (bpe->byte_fallback) {
            int all = 1;
            for (size_t k = 0; k < key->len; k++)
                if (bpe->byte_ids[(unsigned char)key->p[k]] < 0) all = 0;
            if (all) {
                /* as in tokenizers, a pending unk is not flushed before byte tokens */
                for (size_t k = 0; k < key->len; k++)
                    if (syms_add(w, bpe->byte_ids[(unsigned char)key->p[k]], 1)) return ZS_ENOMEM;
                continue;
            }
        }
        if (bpe->unk_id >= 0) {
            if (unk >= 0 && bpe->fuse_unk) {
                unk_len += cl;
            } else {
                if (unk >= 0 && syms_add(w, unk, unk_len)) return ZS_ENOMEM;
                unk = bpe->unk_id;
                unk_len = cl;
            }
        }
        /* no unk token: the character is dropped, as tokenizers does */
    }
    if (unk >= 0 && syms_add(w, unk, unk_len)) return ZS_ENOMEM;
    if (w->n) w->v[w->n - 1].next = -1;
    return ZS_OK;
}

static int merge_all(const tok_bpe *bpe, syms *w, heap *h) {
    uint32_t rank;
    int32_t newid;
    for (size_t i = 0; i + 1 < w->n; i++)
        if (tok_pairmap_get(&bpe->merges, w->v[i].id, w->v[i + 1].id, &rank, &newid))
            if (heap_push(h, (merge){rank, (uint32_t)i, newid})) return ZS_ENOMEM;
    while (h->n) {
        merge top = heap_pop(h);
        sym *cur = &w->v[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        sym *right = &w->v[cur->next];
        if (!tok_pairmap_get(&bpe->merges, cur->id, right->id, &rank, &newid) ||
            newid != top.newid)
            continue; /* stale entry */
        cur->id = top.newid;
        cur->len += right->len;
        cur->next = right->next;
        right->len = 0;
        if (cur->next >= 0) w->v[cur->next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            sym *p = &w->v[cur->prev];
            if (tok_pairmap_get(&bpe->merges, p->id, cur->id, &rank, &newid))
                if (heap_push(h, (merge){rank, (uint32_t)cur->prev, newid})) return ZS_ENOMEM;
        }
        if (cur->next >= 0) {
            sym *nx = &w->v[cur->next];
            if (tok_pairmap_get(&bpe->merges, cur->id, nx->id, &rank, &newid))
                if (heap_push(h, (merge){rank, top.pos, newid})) return ZS_ENOMEM;
        }
    }
    return ZS_OK;
}

int tok_bpe_tokenize(const tok_bpe *bpe, const char *s, size_t len, int32_t **ids,
                     size_t *n, size_t *cap, zs_err_t *err) {
    if (len == 0) return ZS_OK;
    if (bpe->ignore_merges) {
        int32_t id = tok_map_get(&bpe->vocab, s, len);
        if (id >= 0) {
            if (ids_push(ids, n, cap, id)) goto oom;
            return ZS_OK;
        }
    }
    syms w = {0};
    heap h = {0};
    tok_buf key = {0};
    int rc = initial_symbols(bpe, s, len, &w, &key);
    if (rc == ZS_OK) rc = merge_all(bpe, &w, &h);
    for (size_t i = 0; rc == ZS_OK && i < w.n; i++)
        if (w.v[i].len) rc = ids_push(ids, n, cap, w.v[i].id);
    free(w.v);
    free(h.v);
    tok_buf_free(&key);
    if (rc == ZS_ERANGE)
        return zs_err_set(err, ZS_ERANGE, "tokenizer: pre-token of %zu bytes is too long", len);
    if (rc) goto oom;
    return ZS_OK;
oom:
    return zs_err_set(err, ZS_ENOMEM, "tokenizer: out of memory encoding a %zu-byte word", len);
}
