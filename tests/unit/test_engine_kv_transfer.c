/* KV blocks to host memory and back (zs_engine_kv_export / zs_engine_seq_import), the engine
 * half of the KV warm start: a prompt whose prefix blocks were exported and imported into a
 * new sequence continues exactly like one computed in full (same logits, same greedy tokens),
 * on the CPU backend; bad arguments and a full cache are refused without changing anything. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zerostart/engine.h"
#include "zerostart/synth.h"
#include "zt.h"

static char g_dir[64];

typedef struct fixture {
    zs_ckpt_t *ck;
    zs_weights_t *w;
    zs_engine_t *e;
    int32_t V, bs;
    size_t bb;
} fixture_t;

static int fx_open(fixture_t *f, uint32_t kv_blocks, zs_err_t *err) {
    memset(f, 0, sizeof *f);
    int rc = zs_ckpt_open(g_dir, &f->ck, err);
    if (rc == ZS_OK) rc = zs_load(f->ck, NULL, &f->w, err);
    zs_engine_opts_t o;
    zs_engine_opts_default(&o);
    o.threads = 2;
    o.block_size = 4;
    o.kv_blocks = kv_blocks;
    o.max_step_tokens = 7; /* prompts span several steps */
    if (rc == ZS_OK) rc = zs_engine_create(f->ck, f->w, &o, &f->e, err);
    if (rc == ZS_OK) {
        f->V = zs_engine_config(f->e)->vocab;
        f->bs = zs_engine_kv(f->e)->layout.block_size;
        f->bb = zs_engine_kv(f->e)->layout.block_bytes;
    }
    return rc;
}

static void fx_close(fixture_t *f) {
    zs_engine_free(f->e);
    zs_weights_free(f->w);
    zs_ckpt_close(f->ck);
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static double max_rel_diff(const float *a, const float *b, int32_t n) {
    double num = 0, den = 0;
    for (int32_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0 ? num / den : num;
}

/* Greedy continuation of n tokens from seq whose last logits are in lg. */
static int greedy(fixture_t *f, int32_t seq, float *lg, int32_t *out, int n, zs_err_t *err) {
    for (int i = 0; i < n; i++) {
        out[i] = argmax(lg, f->V);
        int rc = zs_engine_decode(f->e, 1, &seq, &out[i], lg, err);
        if (rc) return rc;
    }
    return 0;
}

static void test_export_import_same_continuation(void) {
    fixture_t f;
    zs_err_t err = {0};
    ZT_REQUIRE_MSG(fx_open(&f, 64, &err) == ZS_OK, "%s", err.msg);
    enum { N = 19, NB = 4, GEN = 8 }; /* 4 full blocks of 4 + 3 tokens */
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = (i * 37 + 11) % f.V;
    float *full = malloc((size_t)f.V * sizeof(float)), *part = malloc((size_t)f.V * sizeof(float));
    ZT_REQUIRE(full && part);
    int32_t a, b;
    ZT_REQUIRE(zs_engine_seq_new(f.e, &a, &err) == ZS_OK);
    ZT_REQUIRE(zs_engine_prefill(f.e, a, ids, N, full, &err) == ZS_OK);

    /* export the 4 full blocks, then free the sequence */
    uint8_t *host = malloc(NB * f.bb);
    ZT_REQUIRE(host);
    memset(host, 0xcd, NB * f.bb);
    void *dst[NB];
    for (int i = 0; i < NB; i++) dst[i] = host + i * f.bb;
    uint64_t t = 0;
    int32_t idx[NB] = {0, 1, 2, 3};
    ZT_REQUIRE_MSG(zs_engine_kv_export(f.e, a, idx, NB, dst, &t, &err) == ZS_OK, "%s", err.msg);
    ZT_CHECK(zs_engine_kv_export_done(f.e, t, 1, &err) == 1);
    int32_t gen_full[GEN], gen_part[GEN];
    ZT_REQUIRE(greedy(&f, a, full, gen_full, GEN, &err) == ZS_OK);
    ZT_REQUIRE(zs_engine_seq_free(f.e, a, &err) == ZS_OK);
    uint32_t free_before = zs_kv_free_blocks(zs_engine_kv(f.e));

    /* import them into a new sequence and prefill only the tail */
    const void *src[NB];
    for (int i = 0; i < NB; i++) src[i] = host + i * f.bb;
    ZT_REQUIRE(zs_engine_seq_new(f.e, &b, &err) == ZS_OK);
    ZT_REQUIRE_MSG(zs_engine_seq_import(f.e, b, src, NB, &err) == ZS_OK, "%s", err.msg);
    ZT_CHECK(zs_engine_seq_len(f.e, b) == NB * f.bs);
    ZT_CHECK(zs_kv_free_blocks(zs_engine_kv(f.e)) == free_before - NB);
    ZT_REQUIRE(zs_engine_prefill(f.e, b, ids + NB * f.bs, N - NB * f.bs, part, &err) == ZS_OK);
    /* recompute the same prompt from scratch for the logits of that exact step */
    int32_t c;
    ZT_REQUIRE(zs_engine_seq_new(f.e, &c, &err) == ZS_OK);
    ZT_REQUIRE(zs_engine_prefill(f.e, c, ids, N, full, &err) == ZS_OK);
    double d = max_rel_diff(part, full, f.V);
    ZT_CHECK_MSG(d < 1e-5, "restored prefix: logits differ by %g of the largest", d);
    ZT_REQUIRE(greedy(&f, b, part, gen_part, GEN, &err) == ZS_OK);
    ZT_CHECK(memcmp(gen_full, gen_part, sizeof gen_full) == 0);

    /* importing a prefix onto a shared prefix: fork 2 blocks of c, import blocks 2..3 */
    int32_t g;
    ZT_REQUIRE(zs_engine_seq_fork_prefix(f.e, c, 2 * f.bs, &g, &err) == ZS_OK);
    ZT_REQUIRE(zs_engine_seq_import(f.e, g, src + 2, 2, &err) == ZS_OK);
    ZT_REQUIRE(zs_engine_prefill(f.e, g, ids + NB * f.bs, N - NB * f.bs, part, &err) == ZS_OK);
    d = max_rel_diff(part, full, f.V);
    ZT_CHECK_MSG(d < 1e-5, "forked + imported: logits differ by %g", d);

    free(host);
    free(full);
    free(part);
    fx_close(&f);
}

static void test_refusals(void) {
    fixture_t f;
    zs_err_t err = {0};
    ZT_REQUIRE_MSG(fx_open(&f, 6, &err) == ZS_OK, "%s", err.msg);
    int32_t ids[6] = {1, 2, 3, 4, 5, 6}, s;
    ZT_REQUIRE(zs_engine_seq_new(f.e, &s, &err) == ZS_OK);
    ZT_REQUIRE(zs_engine_prefill(f.e, s, ids, 6, NULL, &err) == ZS_OK); /* 1 full block + 2 */
    uint8_t *host = calloc(8, f.bb);
    ZT_REQUIRE(host);
    void *dst[8];
    const void *src[8];
    for (int i = 0; i < 8; i++) dst[i] = (void *)(src[i] = host + i * f.bb);
    uint64_t t;
    zs_err_t e1 = {0}, e2 = {0}, e3 = {0}, e4 = {0}, e5 = {0};
    int32_t idx[2] = {0, 1};
    ZT_CHECK(zs_engine_kv_export(f.e, s, idx, 2, dst, &t, &e1) == ZS_EINVAL); /* block 1 is partial */
    ZT_CHECK_STR_CONTAINS(e1.msg, "full");
    ZT_CHECK(zs_engine_kv_export(f.e, 99, idx, 1, dst, &t, &e2) == ZS_EINVAL);
    ZT_CHECK(zs_engine_seq_import(f.e, s, src, 1, &e3) == ZS_EINVAL); /* length 6: not whole blocks */
    ZT_CHECK_STR_CONTAINS(e3.msg, "whole number");
    ZT_CHECK(zs_engine_seq_len(f.e, s) == 6);
    /* the cache (6 blocks) has 4 free: importing 5 is refused and changes nothing */
    int32_t n;
    ZT_REQUIRE(zs_engine_seq_new(f.e, &n, &err) == ZS_OK);
    uint32_t fr = zs_kv_free_blocks(zs_engine_kv(f.e));
    ZT_CHECK(zs_engine_seq_import(f.e, n, src, 5, &e4) == ZS_EBUSY);
    ZT_CHECK(zs_engine_seq_len(f.e, n) == 0 && zs_kv_free_blocks(zs_engine_kv(f.e)) == fr);
    ZT_CHECK(zs_engine_seq_import(f.e, n, src, 4, &err) == ZS_OK && zs_engine_seq_len(f.e, n) == 4 * f.bs);
    ZT_CHECK(zs_engine_seq_import(f.e, n, NULL, 1, &e5) == ZS_EINVAL);
    free(host);
    fx_close(&f);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/zs-kvxfer-%d", (int)getpid());
    zs_err_t err = {0};
    if (zs_synth_write(g_dir, zs_synth_shape("tiny"), 9, &err) != ZS_OK) {
        fprintf(stderr, "synth: %s\n", err.msg);
        return 1;
    }
    ZT_RUN(test_export_import_same_continuation);
    ZT_RUN(test_refusals);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return ZT_DONE();
}
