/* Kernel warm-up (src/server/warmup.c) on the CPU backend: it runs its throw-away forward
 * passes, leaves no sequence and no KV block behind, and the engine then computes exactly
 * what a fresh one does; a KV cache too small for it is skipped, not an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/warmup.h"
#include "zerostart/bundle.h"
#include "zerostart/synth.h"
#include "zt.h"

static char g_dir[64];

static zs_bundle_t *open_model(size_t kv_bytes, zs_err_t *err) {
    zs_bundle_opts_t bo;
    zs_bundle_opts_default(&bo);
    bo.engine.threads = 2;
    bo.engine.kv_bytes = kv_bytes;
    bo.engine.max_step_tokens = 32;
    zs_bundle_t *b = NULL;
    return zs_bundle_open(g_dir, &bo, &b, err) == ZS_OK ? b : NULL;
}

static int prompt_logits(zs_engine_t *e, float *out, zs_err_t *err) {
    int32_t seq, ids[7] = {3, 1, 4, 1, 5, 9, 2};
    int rc = zs_engine_seq_new(e, &seq, err);
    if (rc == ZS_OK) rc = zs_engine_prefill(e, seq, ids, 7, out, err);
    if (rc == ZS_OK) rc = zs_engine_decode(e, 1, &seq, &ids[2], out, err);
    zs_err_t ferr = {0};
    if (zs_engine_seq_free(e, seq, &ferr) != ZS_OK && rc == ZS_OK) rc = ferr.code;
    return rc;
}

static void test_warmup_leaves_engine_as_found(void) {
    zs_err_t err = {0};
    zs_bundle_t *a = open_model((size_t)4 << 20, &err), *b = open_model((size_t)4 << 20, &err);
    ZT_REQUIRE(a != NULL && b != NULL);
    int32_t vocab = zs_engine_config(a->engine)->vocab;
    float *la = malloc((size_t)vocab * sizeof *la), *lb = malloc((size_t)vocab * sizeof *lb);
    ZT_REQUIRE(la != NULL && lb != NULL);
    const zs_kv_cache_t *kv = zs_engine_kv(b->engine);
    uint32_t free0 = zs_kv_free_blocks(kv);
    int64_t ptok = -1;
    double ps = -1;
    ZT_CHECK_MSG(zs_srv_warmup(b->engine, 32, 512, &ptok, &ps, &err) == ZS_OK, "%s", err.msg);
    ZT_CHECK(ptok == 32 && ps > 0); /* the full-step prefill, timed */
    ZT_CHECK(zs_kv_free_blocks(kv) == free0);
    int32_t seq = -1;
    ZT_CHECK(zs_engine_seq_new(b->engine, &seq, &err) == ZS_OK && seq == 0); /* every id free again */
    ZT_CHECK(zs_engine_seq_free(b->engine, seq, &err) == ZS_OK);
    ZT_CHECK(prompt_logits(a->engine, la, &err) == ZS_OK);
    ZT_CHECK(prompt_logits(b->engine, lb, &err) == ZS_OK);
    ZT_CHECK(memcmp(la, lb, (size_t)vocab * sizeof *la) == 0);
    free(la);
    free(lb);
    zs_bundle_free(a);
    zs_bundle_free(b);
}

static void test_warmup_short_context_and_small_cache(void) {
    zs_err_t err = {0};
    zs_bundle_t *b = open_model((size_t)4 << 20, &err);
    ZT_REQUIRE(b != NULL);
    ZT_CHECK(zs_srv_warmup(b->engine, 256, 6, NULL, NULL, &err) == ZS_OK); /* a 6-token context */
    ZT_CHECK(zs_srv_warmup(b->engine, 256, 4, NULL, NULL, &err) == ZS_OK); /* nothing fits: skipped */
    size_t block_bytes = zs_engine_kv(b->engine)->layout.block_bytes;
    zs_bundle_free(b);
    /* a cache of three blocks: too small for two sequences and their decode steps: skipped */
    b = open_model(3 * block_bytes, &err);
    ZT_REQUIRE(b != NULL);
    const zs_kv_cache_t *kv = zs_engine_kv(b->engine);
    ZT_CHECK(kv->nblocks == 3);
    ZT_CHECK(zs_srv_warmup(b->engine, 256, 512, NULL, NULL, &err) == ZS_OK);
    ZT_CHECK(zs_kv_free_blocks(kv) == 3);
    zs_bundle_free(b);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/zs-warmup-%d", (int)getpid());
    zs_err_t err = {0};
    if (zs_synth_write(g_dir, zs_synth_shape("tiny"), 7, &err) != ZS_OK) {
        fprintf(stderr, "synth: %s\n", err.msg);
        return 1;
    }
    ZT_RUN(test_warmup_leaves_engine_as_found);
    ZT_RUN(test_warmup_short_context_and_small_cache);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return ZT_DONE();
}
