/* CUDA engine tests and driver (built by `make gpu-build`, run on a machine with a GPU).
 *
 *   test_cuda_engine compare DIR...        for each model directory: loads it to the CPU and to
 *                                          cuda:0, builds a CPU and a CUDA engine and compares
 *                                          logits at every position (whole prefill; chunked
 *                                          prefill with short steps and small KV blocks;
 *                                          token-by-token decode across block boundaries;
 *                                          batched decode of forked sequences) and greedy
 *                                          continuations. Relative error per position
 *                                          |a - b| / |b| <= 1e-2; one "ok"/"not ok" line per
 *                                          check with the error, last line "N passed, N failed"
 *   test_cuda_engine compare-tp N DIR...   for each model directory: a tensor-parallel CUDA engine
 *                                          over GPUs 0..N-1 (sliced load, NCCL) against the
 *                                          one-GPU engine on cuda:0: logits of every position
 *                                          (one call; calls of 5 with 7-token steps), token-by-
 *                                          token decode, batched decode of forked sequences and
 *                                          greedy 32 tokens up to the first near-tie, as above
 *   test_cuda_engine logits DIR OUT NGEN [--cpu] [--block N] [--step N] ids...
 *                                          logits of every prompt position as float32
 *                                          [n, vocab] to OUT, then NGEN greedy tokens (decode
 *                                          steps), printed on one line
 *   test_cuda_engine bench DIR [--prefill L,L,..] [--decode N] [--step N] [--reps N]
 *                                          CUDA prefill seconds per length (median of reps after
 *                                          a warm-up) and batch-1 decode tokens/s after a
 *                                          512-token prompt; one JSON object on stdout
 * Environment: ZS_CUDA_ATTN=simple makes the CUDA backend use its general attention kernel
 * everywhere (the comparison then covers both kernels). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu/gpu_rt.h"
#include "zerostart/ckpt.h"
#include "zerostart/engine.h"
#include "zerostart/load.h"
#include "zerostart/tp.h"

typedef struct {
    zs_ckpt_t *ck;
    zs_weights_t *w;
    zs_tp_weights_t *tw;
    zs_engine_t *e;
} model_t;

static void model_close(model_t *m) {
    zs_engine_free(m->e);
    zs_tp_weights_free(m->tw);
    zs_weights_free(m->w);
    zs_ckpt_close(m->ck);
    memset(m, 0, sizeof *m);
}

static int model_open(const char *dir, int cuda, int block, int step, uint32_t kv_blocks,
                      double kv_frac, model_t *m, zs_err_t *err) {
    memset(m, 0, sizeof *m);
    int rc = zs_ckpt_open(dir, &m->ck, err);
    if (rc) return rc;
    zs_load_opts_t lo;
    zs_load_opts_default(&lo);
    lo.device.kind = cuda ? ZS_DEV_CUDA : ZS_DEV_CPU;
    lo.device.index = 0;
    if ((rc = zs_load(m->ck, &lo, &m->w, err))) goto fail;
    zs_engine_opts_t eo;
    zs_engine_opts_default(&eo);
    eo.backend = cuda ? ZS_BACKEND_CUDA : ZS_BACKEND_CPU;
    eo.block_size = block;
    eo.max_step_tokens = step;
    eo.threads = 2;
    eo.kv_blocks = kv_blocks;
    eo.kv_gpu_fraction = kv_frac;
    if ((rc = zs_engine_create(m->ck, m->w, &eo, &m->e, err))) goto fail;
    return 0;
fail:
    model_close(m);
    return rc;
}

/* The model sliced over GPUs 0..ranks-1, every byte read once, in a tensor-parallel engine. */
static int model_open_tp(const char *dir, int ranks, int block, int step, model_t *m, zs_err_t *err) {
    memset(m, 0, sizeof *m);
    int rc = zs_ckpt_open(dir, &m->ck, err);
    if (rc) return rc;
    zs_tp_load_opts_t to;
    zs_tp_load_opts_default(&to);
    to.kind = ZS_DEV_CUDA;
    to.ranks = ranks;
    to.unit_bytes = 64 << 10; /* several units per tensor even on tiny models */
    rc = zs_tp_load(m->ck, &to, &m->tw, err);
    if (rc == 0 && m->tw->stats.read_bytes != m->ck->total_bytes)
        rc = zs_err_set(err, ZS_EIO, "sliced load read %llu bytes of %llu", (unsigned long long)m->tw->stats.read_bytes,
                        (unsigned long long)m->ck->total_bytes);
    zs_engine_opts_t eo;
    zs_engine_opts_default(&eo);
    eo.backend = ZS_BACKEND_CUDA;
    eo.block_size = block;
    eo.max_step_tokens = step;
    eo.kv_blocks = 512;
    if (rc == 0) rc = zs_engine_create_tp(m->tw, &eo, &m->e, err);
    if (rc) model_close(m);
    return rc;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int32_t argmax(const float *v, int32_t n) {
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng_next(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* ------------------------------------------------------------------------------------------
 * compare */

static int g_pass, g_fail;

static void report(const char *dir, const char *what, double err, int ok) {
    printf("%s %s %s (max rel err %.3g)\n", ok ? "ok" : "not ok", dir, what, err);
    if (ok) g_pass++;
    else g_fail++;
}

/* max over rows of |a - b| / |b| */
static double rel_err_rows(const float *a, const float *b, int32_t rows, int32_t V) {
    double worst = 0;
    for (int32_t r = 0; r < rows; r++) {
        double num = 0, den = 0;
        for (int32_t v = 0; v < V; v++) {
            double d = (double)a[(size_t)r * V + v] - b[(size_t)r * V + v];
            if (isnan(d)) return INFINITY;
            num += d * d;
            den += (double)b[(size_t)r * V + v] * b[(size_t)r * V + v];
        }
        double e = sqrt(num) / (sqrt(den) + 1e-30);
        if (e > worst) worst = e;
    }
    return worst;
}

/* all-position logits of ids, prefilled in calls of `chunk` tokens (0 = one call) */
static int run_all(zs_engine_t *e, const int32_t *ids, int32_t n, int32_t chunk, float *lg,
                   zs_err_t *err) {
    const int32_t V = zs_engine_config(e)->vocab;
    int32_t seq;
    int rc = zs_engine_seq_new(e, &seq, err);
    if (rc) return rc;
    if (chunk <= 0) chunk = n;
    for (int32_t at = 0; rc == 0 && at < n; at += chunk) {
        zs_engine_item_t it = {.seq = seq, .ids = ids + at, .n = n - at < chunk ? n - at : chunk};
        rc = zs_engine_forward(e, &it, 1, lg + (size_t)at * V, 1, err);
    }
    zs_engine_seq_free(e, seq, NULL);
    return rc;
}

/* logits of every position, one decode step per token */
static int run_decode(zs_engine_t *e, const int32_t *ids, int32_t n, float *lg, zs_err_t *err) {
    const int32_t V = zs_engine_config(e)->vocab;
    int32_t seq;
    int rc = zs_engine_seq_new(e, &seq, err);
    for (int32_t t = 0; rc == 0 && t < n; t++)
        rc = zs_engine_decode(e, 1, &seq, &ids[t], lg + (size_t)t * V, err);
    zs_engine_seq_free(e, seq, NULL);
    return rc;
}

/* prefill, then ngen greedy tokens with single decode steps; out[ngen]; margin[i] (may be NULL):
 * the gap between the top two logits at step i, relative to the range of that step's logits */
static int run_greedy(zs_engine_t *e, const int32_t *ids, int32_t n, int32_t ngen, int32_t *out,
                      float *lgbuf, double *margin, zs_err_t *err) {
    const int32_t V = zs_engine_config(e)->vocab;
    int32_t seq;
    int rc = zs_engine_seq_new(e, &seq, err);
    if (rc == 0) rc = zs_engine_prefill(e, seq, ids, n, lgbuf, err);
    for (int32_t i = 0; rc == 0 && i < ngen; i++) {
        out[i] = argmax(lgbuf, V);
        if (margin != NULL) {
            float top = lgbuf[out[i]], second = -INFINITY, lo = INFINITY;
            for (int32_t v = 0; v < V; v++) {
                if (v != out[i] && lgbuf[v] > second) second = lgbuf[v];
                if (lgbuf[v] < lo) lo = lgbuf[v];
            }
            margin[i] = top > lo ? (double)(top - second) / (double)(top - lo) : 0.0;
        }
        if (i + 1 < ngen) rc = zs_engine_decode(e, 1, &seq, &out[i], lgbuf, err);
    }
    zs_engine_seq_free(e, seq, NULL);
    return rc;
}

static int compare_one(const char *dir) {
    zs_err_t err = {0};
    model_t cpu, gpu, gpu2;
    if (model_open(dir, 0, 4, 256, 512, 0, &cpu, &err)) {
        fprintf(stderr, "%s: cpu: %s\n", dir, err.msg);
        g_fail++;
        return 1;
    }
    if (model_open(dir, 1, 4, 256, 512, 0, &gpu, &err)) {
        fprintf(stderr, "%s: cuda: %s\n", dir, err.msg);
        model_close(&cpu);
        g_fail++;
        return 1;
    }
    /* short steps and 16-position blocks: chunked prefill, tiles across step boundaries */
    if (model_open(dir, 1, 16, 7, 0, 0.05, &gpu2, &err)) {
        fprintf(stderr, "%s: cuda (kv_gpu_fraction): %s\n", dir, err.msg);
        model_close(&cpu);
        model_close(&gpu);
        g_fail++;
        return 1;
    }
    const zs_model_config_t *c = zs_engine_config(cpu.e);
    const int32_t V = c->vocab;
    int32_t n = 150; /* > 2 tiles of 64, many 4- and 16-position blocks */
    if (n > c->max_pos - 40) n = (int32_t)c->max_pos - 40;
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    float *ref = malloc((size_t)n * V * sizeof(float));
    float *got = malloc((size_t)n * V * sizeof(float));
    if (!ids || !ref || !got) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int32_t i = 0; i < n; i++) ids[i] = (int32_t)(rng_next() % (uint32_t)V);
    const double tol = 1e-2;
    int rc = run_all(cpu.e, ids, n, 0, ref, &err);
    if (rc) {
        fprintf(stderr, "%s: cpu forward: %s\n", dir, err.msg);
        g_fail++;
        goto out;
    }
    double e;
    rc = run_all(gpu.e, ids, n, 0, got, &err);
    e = rc ? INFINITY : rel_err_rows(got, ref, n, V);
    if (rc) fprintf(stderr, "  %s\n", err.msg);
    report(dir, "prefill (one call, 4-position blocks)", e, e <= tol);

    rc = run_all(gpu2.e, ids, n, 5, got, &err);
    e = rc ? INFINITY : rel_err_rows(got, ref, n, V);
    if (rc) fprintf(stderr, "  %s\n", err.msg);
    report(dir, "chunked prefill (calls of 5, steps of 7, 16-position blocks)", e, e <= tol);

    rc = run_all(gpu2.e, ids, n, 67, got, &err);
    e = rc ? INFINITY : rel_err_rows(got, ref, n, V);
    if (rc) fprintf(stderr, "  %s\n", err.msg);
    report(dir, "chunked prefill (calls of 67)", e, e <= tol);

    rc = run_decode(gpu.e, ids, n, got, &err);
    e = rc ? INFINITY : rel_err_rows(got, ref, n, V);
    if (rc) fprintf(stderr, "  %s\n", err.msg);
    report(dir, "token-by-token decode (4-position blocks)", e, e <= tol);

    rc = run_decode(gpu2.e, ids, 40, got, &err);
    e = rc ? INFINITY : rel_err_rows(got, ref, 40, V);
    if (rc) fprintf(stderr, "  %s\n", err.msg);
    report(dir, "token-by-token decode (16-position blocks)", e, e <= tol);

    { /* batched decode of 3 forks of a 16-token prefix, each continuing the prompt */
        int32_t base, s[3];
        rc = zs_engine_seq_new(gpu.e, &base, &err);
        if (rc == 0) rc = zs_engine_prefill(gpu.e, base, ids, 18, NULL, &err);
        for (int i = 0; rc == 0 && i < 3; i++) {
            rc = zs_engine_seq_fork(gpu.e, base, &s[i], &err); /* 16 positions */
            if (rc == 0 && i > 0) rc = zs_engine_prefill(gpu.e, s[i], ids + 16, i, NULL, &err);
        }
        /* fork i holds 16 + i positions of the prompt; append the next prompt token */
        double worst = 0;
        float *lg3 = malloc((size_t)3 * V * sizeof(float));
        for (int step = 0; rc == 0 && step < 6; step++) {
            int32_t tk[3];
            for (int i = 0; i < 3; i++) tk[i] = ids[16 + i + step];
            rc = zs_engine_decode(gpu.e, 3, s, tk, lg3, &err);
            for (int i = 0; rc == 0 && i < 3; i++) {
                double ei = rel_err_rows(lg3 + (size_t)i * V, ref + (size_t)(16 + i + step) * V, 1, V);
                if (ei > worst) worst = ei;
            }
        }
        free(lg3);
        if (rc) fprintf(stderr, "  %s\n", err.msg);
        e = rc ? INFINITY : worst;
        report(dir, "batched decode of 3 forked sequences", e, e <= tol);
        zs_engine_seq_free(gpu.e, base, NULL);
        for (int i = 0; i < 3; i++) zs_engine_seq_free(gpu.e, s[i], NULL);
    }

    { /* greedy continuations: identical up to the first step where the CPU reference's top two
       * logits are a near-tie (gap under 1e-3 of the logit range), where float summation order
       * may legitimately decide; a divergence at any clear margin fails */
        const int32_t ngen = 32;
        int32_t ga[32], gb[32];
        double margin[32];
        rc = run_greedy(cpu.e, ids, 20, ngen, ga, ref, margin, &err);
        if (rc == 0) rc = run_greedy(gpu.e, ids, 20, ngen, gb, got, NULL, &err);
        int32_t first_diff = ngen, first_tie = ngen;
        for (int32_t i = 0; i < ngen; i++) {
            if (first_diff == ngen && ga[i] != gb[i]) first_diff = i;
            if (first_tie == ngen && margin[i] < 1e-3) first_tie = i;
        }
        int ok = rc == 0 && first_diff >= first_tie;
        if (rc) fprintf(stderr, "  %s\n", err.msg);
        if (rc == 0 && first_diff < ngen) {
            fprintf(stderr, "  greedy: first difference at token %d (reference top-2 margin there %.2e; first near-tie at %d)\n",
                    first_diff, margin[first_diff], first_tie);
            fprintf(stderr, "  cpu :");
            for (int i = 0; i < ngen; i++) fprintf(stderr, " %d", ga[i]);
            fprintf(stderr, "\n  cuda:");
            for (int i = 0; i < ngen; i++) fprintf(stderr, " %d", gb[i]);
            fprintf(stderr, "\n");
        }
        report(dir, "greedy 32 tokens identical up to the first near-tie", ok ? 0.0 : 1.0, ok);
    }
out:
    free(ids);
    free(ref);
    free(got);
    model_close(&gpu2);
    model_close(&gpu);
    model_close(&cpu);
    return 0;
}

/* Tensor-parallel CUDA engine (GPUs 0..ranks-1) against the one-GPU engine. */
static int compare_tp_one(const char *dir, int ranks) {
    zs_err_t err = {0};
    model_t one, tp, tp7;
    char what[160];
    if (model_open(dir, 1, 4, 256, 512, 0, &one, &err)) {
        fprintf(stderr, "%s: cuda: %s\n", dir, err.msg);
        g_fail++;
        return 1;
    }
    if (model_open_tp(dir, ranks, 4, 256, &tp, &err) || model_open_tp(dir, ranks, 16, 7, &tp7, &err)) {
        fprintf(stderr, "%s: %d GPUs: %s\n", dir, ranks, err.msg);
        model_close(&tp);
        model_close(&one);
        g_fail++;
        return 1;
    }
    const int32_t V = zs_engine_config(one.e)->vocab;
    int32_t n = 100;
    if (n > zs_engine_config(one.e)->max_pos - 40) n = (int32_t)zs_engine_config(one.e)->max_pos - 40;
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    float *ref = malloc((size_t)n * V * sizeof(float)), *got = malloc((size_t)n * V * sizeof(float));
    if (!ids || !ref || !got) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int32_t i = 0; i < n; i++) ids[i] = (int32_t)(rng_next() % (uint32_t)V);
    const double tol = 1e-2;
    int rc = run_all(one.e, ids, n, 0, ref, &err);
    double e;
    struct {
        model_t *m;
        int32_t chunk;
        const char *name;
    } cases[] = {{&tp, 0, "prefill (one call)"}, {&tp7, 5, "chunked prefill (calls of 5, steps of 7)"}};
    for (size_t c = 0; rc == 0 && c < 2; c++) {
        int r2 = run_all(cases[c].m->e, ids, n, cases[c].chunk, got, &err);
        e = r2 ? INFINITY : rel_err_rows(got, ref, n, V);
        if (r2) fprintf(stderr, "  %s\n", err.msg);
        snprintf(what, sizeof what, "%d GPUs: %s", ranks, cases[c].name);
        report(dir, what, e, e <= tol);
    }
    if (rc == 0) {
        int r2 = run_decode(tp.e, ids, 40, got, &err);
        e = r2 ? INFINITY : rel_err_rows(got, ref, 40, V);
        if (r2) fprintf(stderr, "  %s\n", err.msg);
        snprintf(what, sizeof what, "%d GPUs: token-by-token decode", ranks);
        report(dir, what, e, e <= tol);
    }
    if (rc == 0) { /* greedy, identical up to the one-GPU engine's first near-tie */
        const int32_t ngen = 32;
        int32_t ga[32], gb[32];
        double margin[32];
        rc = run_greedy(one.e, ids, 20, ngen, ga, ref, margin, &err);
        int r2 = rc ? rc : run_greedy(tp.e, ids, 20, ngen, gb, got, NULL, &err);
        int32_t first_diff = ngen, first_tie = ngen;
        for (int32_t i = 0; r2 == 0 && i < ngen; i++) {
            if (first_diff == ngen && ga[i] != gb[i]) first_diff = i;
            if (first_tie == ngen && margin[i] < 1e-3) first_tie = i;
        }
        if (r2) fprintf(stderr, "  %s\n", err.msg);
        if (r2 == 0 && first_diff < first_tie)
            fprintf(stderr, "  greedy: first difference at token %d (margin %.2e)\n", first_diff, margin[first_diff]);
        snprintf(what, sizeof what, "%d GPUs: greedy 32 tokens identical up to the first near-tie", ranks);
        report(dir, what, r2 == 0 && first_diff >= first_tie ? 0.0 : 1.0, r2 == 0 && first_diff >= first_tie);
    }
    if (rc) {
        fprintf(stderr, "%s: one-GPU reference: %s\n", dir, err.msg);
        g_fail++;
    }
    free(ids);
    free(ref);
    free(got);
    model_close(&tp7);
    model_close(&tp);
    model_close(&one);
    return 0;
}

static int mode_compare_tp(int argc, char **argv) {
    int ranks = atoi(argv[2]);
    if (ranks < 1) {
        fprintf(stderr, "compare-tp: bad rank count '%s'\n", argv[2]);
        return 2;
    }
    for (int i = 3; i < argc; i++) compare_tp_one(argv[i], ranks);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}

static int mode_compare(int argc, char **argv) {
    for (int i = 2; i < argc; i++) compare_one(argv[i]);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------
 * kv-transfer: KV blocks to host memory and back on the GPU (the KV warm start's engine half):
 * a prefix exported (asynchronously, into pageable and into page-locked memory, while another
 * sequence keeps decoding) and imported into a new sequence continues like the prefix computed
 * in place; the exported bytes equal a synchronous copy of the same blocks. */

static int kv_transfer_one(const char *dir) {
    zs_err_t err = {0};
    model_t m;
    if (model_open(dir, 1, 16, 256, 256, 0, &m, &err)) {
        fprintf(stderr, "%s: %s\n", dir, err.msg);
        report(dir, "kv-transfer: open", 0, 0);
        return 1;
    }
    const int32_t V = zs_engine_config(m.e)->vocab, NB = 4, N = 4 * 16 + 9;
    const size_t bb = zs_engine_kv(m.e)->layout.block_bytes;
    int32_t ids[4 * 16 + 9], idx[4] = {0, 1, 2, 3};
    for (int32_t i = 0; i < N; i++) ids[i] = (int32_t)(rng_next() % (uint32_t)V);
    float *full = malloc((size_t)V * sizeof *full), *part = malloc((size_t)V * sizeof *part);
    uint8_t *pageable = malloc(NB * bb), *again = malloc(NB * bb), *locked = NULL;
    size_t lbytes = NB * bb;
    int ok = full && part && pageable && again;
    if (ok) {
        locked = aligned_alloc(4096, (lbytes + 4095) / 4096 * 4096);
        ok = locked != NULL && zs_gpu_host_register(locked, (lbytes + 4095) / 4096 * 4096, &err) == 0;
    }
    int32_t a = -1, b = -1, busy = -1;
    ok = ok && zs_engine_seq_new(m.e, &a, &err) == 0 && zs_engine_prefill(m.e, a, ids, N, full, &err) == 0;
    ok = ok && zs_engine_seq_new(m.e, &busy, &err) == 0 && zs_engine_prefill(m.e, busy, ids, 20, NULL, &err) == 0;
    uint64_t t1 = 0, t2 = 0;
    void *d1[4], *d2[4];
    const void *src[4];
    for (int i = 0; i < NB; i++) {
        d1[i] = pageable + i * bb;
        d2[i] = locked ? locked + i * bb : NULL;
        src[i] = d2[i];
    }
    /* two exports in flight while another sequence decodes */
    ok = ok && zs_engine_kv_export(m.e, a, idx, NB, d1, &t1, &err) == 0 &&
         zs_engine_kv_export(m.e, a, idx, NB, d2, &t2, &err) == 0;
    int32_t tok = ids[3];
    for (int k = 0; ok && k < 8; k++) ok = zs_engine_decode(m.e, 1, &busy, &tok, NULL, &err) == 0;
    ok = ok && zs_engine_kv_export_done(m.e, t2, 1, &err) == 1 && zs_engine_kv_export_done(m.e, t1, 0, &err) == 1;
    int same = ok && memcmp(pageable, locked, NB * bb) == 0;
    /* the exported blocks were held: freeing a and exporting again after a sync gives the same bytes */
    uint64_t t3 = 0;
    void *d3[4];
    for (int i = 0; i < NB; i++) d3[i] = again + i * bb;
    ok = ok && zs_engine_sync(m.e, &err) == 0 && zs_engine_kv_export(m.e, a, idx, NB, d3, &t3, &err) == 0 &&
         zs_engine_kv_export_done(m.e, t3, 1, &err) == 1;
    same = same && ok && memcmp(again, locked, NB * bb) == 0;
    report(dir, "kv-transfer: async exports equal a synchronous one", 0, same);
    ok = ok && zs_engine_seq_free(m.e, a, &err) == 0;
    /* import into a new sequence, prefill the tail only */
    ok = ok && zs_engine_seq_new(m.e, &b, &err) == 0 && zs_engine_seq_import(m.e, b, src, NB, &err) == 0 &&
         zs_engine_prefill(m.e, b, ids + NB * 16, N - NB * 16, part, &err) == 0;
    double e1 = ok ? rel_err_rows(part, full, 1, V) : 1;
    report(dir, "kv-transfer: imported prefix + tail prefill vs full prefill", e1, ok && e1 <= 2e-3);
    int32_t g1[16], g2[16];
    double margin[16];
    ok = ok && run_greedy(m.e, ids, N, 16, g1, full, margin, &err) == 0;
    /* greedy from the imported sequence, compared up to the reference's first near-tie */
    float *lg = part;
    int same_tokens = 1;
    for (int k = 0; ok && k < 16; k++) {
        g2[k] = argmax(lg, V);
        if (g2[k] != g1[k]) same_tokens = 0;
        if (margin[k] < 1e-3 || !same_tokens) break;
        ok = zs_engine_decode(m.e, 1, &b, &g2[k], lg, &err) == 0;
    }
    report(dir, "kv-transfer: greedy continuation after import", 0, ok && same_tokens);
    /* an import from pageable memory exported again before any step: the export (its own
     * stream) must wait for the import (layer by layer on another stream) */
    int32_t c = -1;
    uint64_t t4 = 0;
    memset(again, 0xa5, NB * bb);
    ok = ok && zs_engine_seq_new(m.e, &c, &err) == 0 &&
         zs_engine_seq_import(m.e, c, (const void *const *)d1, NB, &err) == 0 &&
         zs_engine_kv_export(m.e, c, idx, NB, d3, &t4, &err) == 0 && zs_engine_kv_export_done(m.e, t4, 1, &err) == 1;
    report(dir, "kv-transfer: pageable import exported before any step round-trips", 0,
           ok && memcmp(again, pageable, NB * bb) == 0);
    ok = ok && zs_engine_seq_free(m.e, c, &err) == 0;
    if (!ok) fprintf(stderr, "%s: %s\n", dir, err.msg);
    if (locked) zs_gpu_host_unregister(locked);
    free(locked);
    free(pageable);
    free(again);
    free(full);
    free(part);
    model_close(&m);
    return 0;
}

static int mode_kv_transfer(int argc, char **argv) {
    for (int i = 2; i < argc; i++) kv_transfer_one(argv[i]);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------
 * logits */

static int mode_logits(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: logits DIR OUT NGEN [--cpu] [--block N] [--step N] ids...\n");
        return 2;
    }
    const char *dir = argv[2], *outp = argv[3];
    int ngen = atoi(argv[4]), cuda = 1, block = 16, step = 256, i = 5;
    while (i < argc && strncmp(argv[i], "--", 2) == 0) {
        if (strcmp(argv[i], "--cpu") == 0) {
            cuda = 0;
            i++;
        } else if (i + 1 < argc && strcmp(argv[i], "--block") == 0) {
            block = atoi(argv[i + 1]);
            i += 2;
        } else if (i + 1 < argc && strcmp(argv[i], "--step") == 0) {
            step = atoi(argv[i + 1]);
            i += 2;
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    int32_t n = argc - i;
    if (n < 1 || ngen < 0) {
        fprintf(stderr, "error: no token ids\n");
        return 2;
    }
    int32_t *ids = malloc((size_t)(n + ngen + 1) * sizeof *ids);
    for (int32_t j = 0; j < n; j++) ids[j] = (int32_t)strtol(argv[i + j], NULL, 10);
    zs_err_t err = {0};
    model_t m;
    if (model_open(dir, cuda, block, step, cuda ? 0 : 4096, cuda ? 0.5 : 0, &m, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        free(ids);
        return 1;
    }
    const int32_t V = zs_engine_config(m.e)->vocab;
    float *lg = malloc((size_t)n * V * sizeof(float));
    int32_t seq;
    int rc = zs_engine_seq_new(m.e, &seq, &err);
    zs_engine_item_t it = {.seq = seq, .ids = ids, .n = n};
    if (rc == 0) rc = zs_engine_forward(m.e, &it, 1, lg, 1, &err);
    if (rc == 0) {
        FILE *f = fopen(outp, "wb");
        if (f == NULL || fwrite(lg, sizeof(float), (size_t)n * V, f) != (size_t)n * V) {
            fprintf(stderr, "error: writing %s\n", outp);
            rc = 1;
        }
        if (f) fclose(f);
    }
    float *last = lg + (size_t)(n - 1) * V;
    for (int g = 0; rc == 0 && g < ngen; g++) {
        int32_t tk = argmax(last, V);
        printf("%s%d", g ? " " : "", tk);
        if (g + 1 < ngen) rc = zs_engine_decode(m.e, 1, &seq, &tk, last, &err);
    }
    printf("\n");
    if (rc < 0) fprintf(stderr, "error: %s\n", err.msg);
    free(lg);
    free(ids);
    model_close(&m);
    return rc ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------
 * bench */

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int mode_bench(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench DIR [--prefill L,..] [--decode N] [--step N] [--reps N]\n");
        return 2;
    }
    const char *dir = argv[2];
    char lens_s[256] = "512,8192,32768";
    int ndec = 128, step = 8192, reps = 3;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--prefill") == 0) snprintf(lens_s, sizeof lens_s, "%s", argv[i + 1]);
        else if (strcmp(argv[i], "--decode") == 0) ndec = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--step") == 0) step = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[i + 1]);
    }
    if (reps < 1 || reps > 50) reps = 3;
    zs_err_t err = {0};
    model_t m;
    double t0 = now_s();
    if (model_open(dir, 1, 16, step, 0, 0.9, &m, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    const double t_open = now_s() - t0;
    const int32_t V = zs_engine_config(m.e)->vocab;
    const zs_kv_cache_t *kv = zs_engine_kv(m.e);
    printf("{\"open_load_engine_s\": %.3f, \"kv_blocks\": %u, \"kv_block_bytes\": %zu, \"kv_tokens\": %llu",
           t_open, kv->nblocks, kv->layout.block_bytes,
           (unsigned long long)kv->nblocks * (unsigned long long)kv->layout.block_size);
    float *lg = malloc((size_t)V * sizeof(float));
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(lens_s, ",", &save); rc == 0 && tok; tok = strtok_r(NULL, ",", &save)) {
        int32_t L = atoi(tok);
        if (L < 1) continue;
        int32_t *ids = malloc((size_t)L * sizeof *ids);
        for (int32_t j = 0; j < L; j++) ids[j] = (int32_t)(rng_next() % (uint32_t)V);
        double ts[64];
        for (int r = 0; rc == 0 && r <= reps; r++) {
            int32_t seq;
            rc = zs_engine_seq_new(m.e, &seq, &err);
            double a = now_s();
            if (rc == 0) rc = zs_engine_prefill(m.e, seq, ids, L, lg, &err);
            double dt = now_s() - a;
            zs_engine_seq_free(m.e, seq, NULL);
            if (r > 0) ts[r - 1] = dt; /* r == 0: warm-up */
        }
        free(ids);
        if (rc) break;
        qsort(ts, (size_t)reps, sizeof ts[0], cmp_d);
        printf(", \"prefill_%d_s\": %.5f", L, ts[reps / 2]);
        fflush(stdout);
    }
    if (rc == 0 && ndec > 0) {
        const int32_t L = 512;
        int32_t *ids = malloc((size_t)L * sizeof *ids);
        for (int32_t j = 0; j < L; j++) ids[j] = (int32_t)(rng_next() % (uint32_t)V);
        int32_t seq;
        rc = zs_engine_seq_new(m.e, &seq, &err);
        if (rc == 0) rc = zs_engine_prefill(m.e, seq, ids, L, lg, &err);
        double a = 0;
        const int warm = 8;
        for (int i = 0; rc == 0 && i < ndec + warm; i++) {
            if (i == warm) a = now_s();
            int32_t tk = argmax(lg, V);
            rc = zs_engine_decode(m.e, 1, &seq, &tk, lg, &err);
        }
        if (rc == 0) {
            double dt = now_s() - a;
            printf(", \"decode_tokens\": %d, \"decode_s\": %.4f, \"decode_tok_s\": %.2f", ndec, dt,
                   ndec / dt);
        }
        zs_engine_seq_free(m.e, seq, NULL);
        free(ids);
    }
    printf("}\n");
    if (rc) fprintf(stderr, "error: %s\n", err.msg);
    free(lg);
    model_close(&m);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "compare") == 0) return mode_compare(argc, argv);
    if (argc >= 4 && strcmp(argv[1], "compare-tp") == 0) return mode_compare_tp(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "logits") == 0) return mode_logits(argc, argv);
    if (argc >= 3 && strcmp(argv[1], "kv-transfer") == 0) return mode_kv_transfer(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "bench") == 0) return mode_bench(argc, argv);
    fprintf(stderr, "usage: %s compare DIR... | logits DIR OUT NGEN [opts] ids... | bench DIR [opts]\n",
            argv[0]);
    return 2;
}
