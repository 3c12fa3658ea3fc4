/* Load planning (see plan.h): tensor placement in the allocation and the chunk schedule. */
#include "load/plan.h"

#include <stdlib.h>
#include <string.h>

uint32_t zs_plan_default_priority(const zs_ckpt_t *ck, const zs_tensor_info_t *t) {
    if (t->layer >= 0) return (uint32_t)t->layer + 1;
    if (strstr(t->name, "embed") != NULL) return 0;
    return (uint32_t)ck->nlayers + 1;
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

static int plan_cmp_chunk(const void *a, const void *b) {
    const zs_chunk_t *x = a, *y = b;
    if (x->priority != y->priority) return x->priority < y->priority ? -1 : 1;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    return x->src < y->src ? -1 : x->src > y->src;
}

typedef struct plan_run {
    uint32_t file;
    uint64_t src, end, dst;
    size_t t_first, t_end;
} plan_run_t;

static int plan_push_chunk(zs_plan_t *p, size_t *cap, zs_chunk_t c) {
    if (p->nchunks == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        zs_chunk_t *n = realloc(p->chunks, nc * sizeof *n);
        if (n == NULL) return -1;
        p->chunks = n;
        *cap = nc;
    }
    p->chunks[p->nchunks++] = c;
    return 0;
}

/* Splits a run at file offsets that are multiples of chunk_bytes (so O_DIRECT reads of
 * neighbouring chunks do not share blocks) and records each chunk's tensor range. */
static int plan_split_run(const zs_ckpt_t *ck, const uint32_t *prio, const plan_run_t *r,
                          size_t chunk_bytes, zs_plan_t *p, size_t *cap) {
    size_t t = r->t_first;
    for (uint64_t s = r->src; s < r->end;) {
        uint64_t e = (s / chunk_bytes + 1) * chunk_bytes;
        if (e > r->end) e = r->end;
        while (t < r->t_end && ck->tensors[t].file_offset + ck->tensors[t].nbytes <= s) t++;
        zs_chunk_t c = {.file = r->file, .priority = UINT32_MAX, .src = s, .len = e - s,
                        .dst = r->dst + (s - r->src), .t_first = t, .t_end = t};
        for (size_t u = t; u < r->t_end && ck->tensors[u].file_offset < e; u++) {
            if (ck->tensors[u].nbytes == 0) continue;
            c.t_end = u + 1;
            if (prio[u] < c.priority) c.priority = prio[u];
        }
        if (c.priority == UINT32_MAX) c.priority = 0;
        if (plan_push_chunk(p, cap, c) != 0) return -1;
        p->read_bytes += c.len;
        s = e;
    }
    return 0;
}

int zs_plan_build(const zs_ckpt_t *ck, const uint32_t *priority, size_t chunk_bytes,
                  zs_plan_t *out, zs_err_t *err) {
    memset(out, 0, sizeof *out);
    if (chunk_bytes < 4096 || chunk_bytes % 4096 != 0)
        return zs_err_set(err, ZS_EINVAL, "chunk size %zu must be a positive multiple of 4096",
                          chunk_bytes);
    uint32_t *prio = malloc((ck->ntensors + 1) * sizeof *prio);
    out->dst = calloc(ck->ntensors + 1, sizeof *out->dst);
    if (prio == NULL || out->dst == NULL) {
        free(prio);
        zs_plan_free(out);
        return zs_err_set(err, ZS_ENOMEM, "out of memory planning %zu tensors", ck->ntensors);
    }
    for (size_t i = 0; i < ck->ntensors; i++)
        prio[i] = priority ? priority[i] : zs_plan_default_priority(ck, &ck->tensors[i]);

    size_t cap = 0;
    uint64_t cur = 0; /* end of used bytes in the allocation */
    plan_run_t run = {0};
    int have_run = 0, rc = ZS_OK;
    for (size_t i = 0; i < ck->ntensors && rc == ZS_OK; i++) {
        const zs_tensor_info_t *t = &ck->tensors[i];
        if (t->nbytes == 0) {
            out->dst[i] = align_up(cur, ZS_TENSOR_ALIGN);
            continue;
        }
        /* Extend the current run when the tensor follows it closely in the same file and
         * lands aligned at the same file-to-allocation displacement. */
        if (have_run && t->file == run.file && t->file_offset >= run.end &&
            t->file_offset - run.end <= ZS_PLAN_MAX_GAP &&
            (run.dst + (t->file_offset - run.src)) % ZS_TENSOR_ALIGN == 0) {
            out->dst[i] = run.dst + (t->file_offset - run.src);
            run.end = t->file_offset + t->nbytes;
            run.t_end = i + 1;
        } else {
            if (have_run && plan_split_run(ck, prio, &run, chunk_bytes, out, &cap) != 0)
                rc = ZS_ENOMEM;
            run = (plan_run_t){.file = t->file, .src = t->file_offset,
                               .end = t->file_offset + t->nbytes,
                               .dst = align_up(cur, ZS_TENSOR_ALIGN), .t_first = i, .t_end = i + 1};
            have_run = 1;
            out->dst[i] = run.dst;
        }
        cur = run.dst + (run.end - run.src);
    }
    if (rc == ZS_OK && have_run && plan_split_run(ck, prio, &run, chunk_bytes, out, &cap) != 0)
        rc = ZS_ENOMEM;
    free(prio);
    if (rc != ZS_OK) {
        zs_plan_free(out);
        return zs_err_set(err, rc, "out of memory planning chunks");
    }
    out->alloc_bytes = align_up(cur > 0 ? cur : 1, ZS_TENSOR_ALIGN);
    qsort(out->chunks, out->nchunks, sizeof *out->chunks, plan_cmp_chunk);
    return ZS_OK;
}

void zs_plan_free(zs_plan_t *p) {
    free(p->dst);
    free(p->chunks);
    memset(p, 0, sizeof *p);
}
