/* Tensor-parallel partitions (heads, rows, vocabulary) and slice planning: which bytes of each
 * tensor every rank holds and the read units + deliveries that bring them there, each file
 * byte read once (include/zerostart/tp.h). Executing a plan is tp_load.c's job. */
#include "zerostart/tp.h"

#include <stdlib.h>
#include <string.h>

#define TP_ALIGN 256u

static int tp_ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

void zs_tp_split(int64_t n, int ranks, int rank, int64_t *b, int64_t *e) {
    *b = n * rank / ranks;
    *e = n * (rank + 1) / ranks;
}

int zs_tp_check(const zs_model_config_t *c, int ranks, zs_err_t *err) {
    if (ranks < 1 || ranks > ZS_TP_MAX_RANKS)
        return zs_err_set(err, ZS_EINVAL, "tensor parallel: %d ranks (1 to %d supported)", ranks, ZS_TP_MAX_RANKS);
    if (c->nheads < ranks)
        return zs_err_set(err, ZS_EUNSUPPORTED, "tensor parallel: %d attention heads cannot be split over %d ranks",
                          c->nheads, ranks);
    if (c->intermediate < ranks)
        return zs_err_set(err, ZS_EUNSUPPORTED, "tensor parallel: intermediate_size %d cannot be split over %d ranks",
                          c->intermediate, ranks);
    if (c->vocab < ranks)
        return zs_err_set(err, ZS_EUNSUPPORTED, "tensor parallel: vocab_size %d cannot be split over %d ranks",
                          c->vocab, ranks);
    if (c->nkv_heads < 1 || c->nheads % c->nkv_heads != 0)
        return zs_err_set(err, ZS_EFORMAT, "tensor parallel: %d KV heads do not divide %d attention heads",
                          c->nkv_heads, c->nheads);
    return ZS_OK;
}

int zs_tp_heads(const zs_model_config_t *c, int ranks, int rank, zs_tp_heads_t *h, zs_err_t *err) {
    int rc = zs_tp_check(c, ranks, err);
    if (rc != ZS_OK) return rc;
    if (rank < 0 || rank >= ranks) return zs_err_set(err, ZS_EINVAL, "tensor parallel: rank %d of %d", rank, ranks);
    const int64_t K = c->nkv_heads, g = c->nheads / c->nkv_heads;
    if (K >= ranks) { /* whole KV groups */
        zs_tp_split(K, ranks, rank, &h->kv0, &h->kv1);
        h->q0 = h->kv0 * g;
        h->q1 = h->kv1 * g;
    } else { /* KV head k is shared by ranks [first, last), which split its g query heads */
        const int64_t k = (int64_t)rank * K / ranks;
        const int64_t first = (k * ranks + K - 1) / K, last = ((k + 1) * ranks + K - 1) / K;
        const int64_t m = last - first, j = rank - first;
        h->kv0 = k;
        h->kv1 = k + 1;
        h->q0 = k * g + g * j / m;
        h->q1 = k * g + g * (j + 1) / m;
    }
    if (h->q1 <= h->q0) /* cannot happen when heads >= ranks (g >= ceil(ranks / K) >= m) */
        return zs_err_set(err, ZS_EUNSUPPORTED, "tensor parallel: rank %d of %d gets no attention head", rank, ranks);
    return ZS_OK;
}

int zs_tp_slice_of(const zs_model_config_t *c, const zs_tensor_info_t *t, int ranks, int rank,
                   zs_tp_slice_t *out, zs_err_t *err) {
    memset(out, 0, sizeof *out);
    const char *n = t->name;
    int64_t rows = t->ndim >= 1 ? t->shape[0] : 1, cols = t->ndim == 2 ? t->shape[1] : 0;
    int64_t hd = c->head_dim, unit = 0, b = 0, e = 0;
    zs_tp_kind_t kind = ZS_TP_REPLICATE;
    zs_tp_heads_t hs;
    int rc = zs_tp_heads(c, ranks, rank, &hs, err);
    if (rc != ZS_OK) return rc;
    int is_w = tp_ends_with(n, ".weight"), is_b = tp_ends_with(n, ".bias");
    if ((is_w || is_b) && strstr(n, "self_attn.q_proj.")) {
        kind = ZS_TP_ROWS, unit = hd, b = hs.q0, e = hs.q1;
    } else if ((is_w || is_b) && (strstr(n, "self_attn.k_proj.") || strstr(n, "self_attn.v_proj."))) {
        kind = ZS_TP_ROWS, unit = hd, b = hs.kv0, e = hs.kv1;
    } else if (is_w && strstr(n, "self_attn.o_proj.")) {
        kind = ZS_TP_COLS, unit = hd, b = hs.q0, e = hs.q1;
    } else if (is_w && (strstr(n, "mlp.gate_proj.") || strstr(n, "mlp.up_proj."))) {
        kind = ZS_TP_ROWS, unit = 1;
        zs_tp_split(c->intermediate, ranks, rank, &b, &e);
    } else if (is_w && strstr(n, "mlp.down_proj.")) {
        kind = ZS_TP_COLS, unit = 1;
        zs_tp_split(c->intermediate, ranks, rank, &b, &e);
    } else if (is_w && (tp_ends_with(n, "embed_tokens.weight") || tp_ends_with(n, "lm_head.weight"))) {
        kind = ZS_TP_ROWS, unit = 1;
        zs_tp_split(rows, ranks, rank, &b, &e);
    }
    out->kind = kind;
    uint64_t item = zs_dtype_size(t->dtype);
    if (kind == ZS_TP_REPLICATE || ranks == 1) {
        out->kind = ZS_TP_REPLICATE;
        out->begin = 0;
        out->end = rows;
        out->shape[0] = rows;
        out->shape[1] = cols;
        out->bytes = t->nbytes;
        return ZS_OK;
    }
    b *= unit;
    e *= unit;
    int64_t dim = kind == ZS_TP_ROWS ? rows : cols;
    if (t->ndim < 1 || t->ndim > 2 || (kind == ZS_TP_COLS && t->ndim != 2) || e > dim || b >= e)
        return zs_err_set(err, ZS_EFORMAT, "tensor parallel: tensor '%s' has a shape that does not match the config",
                          n);
    out->begin = b;
    out->end = e;
    out->shape[0] = kind == ZS_TP_ROWS ? e - b : rows;
    out->shape[1] = kind == ZS_TP_ROWS ? cols : e - b;
    out->bytes = (uint64_t)out->shape[0] * (uint64_t)(out->shape[1] ? out->shape[1] : 1) * item;
    return ZS_OK;
}

void zs_tp_plan_free(zs_tp_plan_t *p) {
    free(p->slices);
    free(p->rank_bytes);
    free(p->units);
    free(p->deliveries);
    memset(p, 0, sizeof *p);
}

typedef struct tp_builder {
    zs_tp_plan_t *p;
    size_t ucap, dcap;
} tp_builder_t;

static int tp_unit(tp_builder_t *bd, uint32_t file, uint64_t src, uint64_t len, size_t tensor) {
    zs_tp_plan_t *p = bd->p;
    if (p->nunits == bd->ucap) {
        bd->ucap = bd->ucap ? bd->ucap * 2 : 256;
        zs_tp_unit_t *u = realloc(p->units, bd->ucap * sizeof *u);
        if (u == NULL) return -1;
        p->units = u;
    }
    p->units[p->nunits++] = (zs_tp_unit_t){file, src, len, tensor, p->ndeliveries, 0};
    p->read_bytes += len;
    return 0;
}

static int tp_deliver(tp_builder_t *bd, zs_tp_delivery_t d) {
    zs_tp_plan_t *p = bd->p;
    if (p->ndeliveries == bd->dcap) {
        bd->dcap = bd->dcap ? bd->dcap * 2 : 1024;
        zs_tp_delivery_t *n = realloc(p->deliveries, bd->dcap * sizeof *n);
        if (n == NULL) return -1;
        p->deliveries = n;
    }
    p->deliveries[p->ndeliveries++] = d;
    p->units[p->nunits - 1].count++;
    return 0;
}

static int tp_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Units and deliveries for one tensor whose per-rank slices are known. */
static int tp_plan_tensor(tp_builder_t *bd, const zs_ckpt_t *ck, size_t ti, uint64_t unit_bytes) {
    zs_tp_plan_t *p = bd->p;
    const zs_tensor_info_t *t = &ck->tensors[ti];
    const zs_tp_slice_t *s0 = &p->slices[ti];
    if (t->nbytes == 0) return 0;
    int64_t rows = t->ndim >= 1 ? t->shape[0] : 1;
    uint64_t row_bytes = t->nbytes / (uint64_t)(rows > 0 ? rows : 1);
    if (s0->kind == ZS_TP_COLS) {
        uint64_t k = unit_bytes / row_bytes ? unit_bytes / row_bytes : 1, item = zs_dtype_size(t->dtype);
        for (int64_t r0 = 0; r0 < rows; r0 += (int64_t)k) {
            uint64_t n = (uint64_t)(rows - r0) < k ? (uint64_t)(rows - r0) : k;
            if (tp_unit(bd, t->file, t->file_offset + (uint64_t)r0 * row_bytes, n * row_bytes, ti) != 0) return -1;
            for (int r = 0; r < p->ranks; r++) {
                const zs_tp_slice_t *s = &p->slices[(size_t)r * p->ntensors + ti];
                uint64_t width = (uint64_t)(s->end - s->begin) * item;
                if (tp_deliver(bd, (zs_tp_delivery_t){r, (uint64_t)s->begin * item, row_bytes, width, width, n,
                                                      s->dst + (uint64_t)r0 * width}) != 0)
                    return -1;
            }
        }
        return 0;
    }
    /* Rows (or replicated = all rows for every rank): cut dim 0 at every rank boundary, read
     * each piece once, copy it to every rank whose range holds it. */
    int64_t *cut = malloc(((size_t)p->ranks * 2 + 2) * sizeof *cut);
    if (cut == NULL) return -1;
    size_t nc = 0;
    cut[nc++] = 0;
    cut[nc++] = rows;
    for (int r = 0; r < p->ranks; r++) {
        cut[nc++] = p->slices[(size_t)r * p->ntensors + ti].begin;
        cut[nc++] = p->slices[(size_t)r * p->ntensors + ti].end;
    }
    qsort(cut, nc, sizeof *cut, tp_cmp_i64);
    int rc = 0;
    uint64_t k = unit_bytes / row_bytes ? unit_bytes / row_bytes : 1;
    for (size_t i = 0; i + 1 < nc && rc == 0; i++) {
        for (int64_t a = cut[i]; a < cut[i + 1] && rc == 0; a += (int64_t)k) {
            uint64_t n = (uint64_t)(cut[i + 1] - a) < k ? (uint64_t)(cut[i + 1] - a) : k;
            rc = tp_unit(bd, t->file, t->file_offset + (uint64_t)a * row_bytes, n * row_bytes, ti);
            for (int r = 0; r < p->ranks && rc == 0; r++) {
                const zs_tp_slice_t *s = &p->slices[(size_t)r * p->ntensors + ti];
                if (a < s->begin || a >= s->end) continue;
                rc = tp_deliver(bd, (zs_tp_delivery_t){r, 0, n * row_bytes, n * row_bytes, n * row_bytes, 1,
                                                       s->dst + (uint64_t)(a - s->begin) * row_bytes});
            }
        }
    }
    free(cut);
    return rc;
}

int zs_tp_plan_build(const zs_ckpt_t *ck, const zs_model_config_t *c, int ranks, uint64_t unit_bytes,
                     zs_tp_plan_t *out, zs_err_t *err) {
    memset(out, 0, sizeof *out);
    int rc0 = zs_tp_check(c, ranks, err);
    if (rc0 != ZS_OK) return rc0;
    if (unit_bytes == 0) return zs_err_set(err, ZS_EINVAL, "tensor parallel: unit size 0");
    out->ranks = ranks;
    out->ntensors = ck->ntensors;
    out->slices = calloc((size_t)ranks * (ck->ntensors + 1), sizeof *out->slices);
    out->rank_bytes = calloc((size_t)ranks, sizeof *out->rank_bytes);
    if (out->slices == NULL || out->rank_bytes == NULL) {
        zs_tp_plan_free(out);
        return zs_err_set(err, ZS_ENOMEM, "tensor parallel: out of memory");
    }
    for (size_t ti = 0; ti < ck->ntensors; ti++) {
        for (int r = 0; r < ranks; r++) {
            zs_tp_slice_t *s = &out->slices[(size_t)r * ck->ntensors + ti];
            int rc = zs_tp_slice_of(c, &ck->tensors[ti], ranks, r, s, err);
            if (rc != ZS_OK) {
                zs_tp_plan_free(out);
                return rc;
            }
            s->dst = (out->rank_bytes[r] + TP_ALIGN - 1) / TP_ALIGN * TP_ALIGN;
            out->rank_bytes[r] = s->dst + s->bytes;
        }
    }
    tp_builder_t bd = {out, 0, 0};
    for (size_t ti = 0; ti < ck->ntensors; ti++) {
        if (tp_plan_tensor(&bd, ck, ti, unit_bytes) != 0) {
            zs_tp_plan_free(out);
            return zs_err_set(err, ZS_ENOMEM, "tensor parallel: out of memory planning %s", ck->tensors[ti].name);
        }
    }
    return ZS_OK;
}
