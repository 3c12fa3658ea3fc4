/* Execution that overlaps the weight load: the engine asks for each stage (embeddings, every
 * layer, final norm + lm_head) once, in order, just before first use; a failing wait fails
 * the step cleanly; a bundle opened with overlap_load gives exactly the logits of one opened
 * after the load. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zerostart/bundle.h"
#include "zerostart/synth.h"
#include "zt.h"

static char g_dir[64];

typedef struct hook_log {
    int32_t stages[64];
    int n;
    int fail_at; /* stage that returns an error, or -100 */
} hook_log_t;

static int record_stage(void *ctx, int32_t stage, zs_err_t *err) {
    hook_log_t *h = ctx;
    if (h->n < 64) h->stages[h->n++] = stage;
    if (stage == h->fail_at) return zs_err_set(err, ZS_EIO, "weights for stage %d never arrived", stage);
    return ZS_OK;
}

static void test_stages_in_order_once(void) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    zs_weights_t *w = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_dir, &ck, &err) == ZS_OK && zs_load(ck, NULL, &w, &err) == ZS_OK);
    hook_log_t h = {.fail_at = -100};
    zs_engine_opts_t o;
    zs_engine_opts_default(&o);
    o.threads = 2;
    o.wait_weights = record_stage;
    o.wait_ctx = &h;
    zs_engine_t *e = NULL;
    ZT_REQUIRE(zs_engine_create(ck, w, &o, &e, &err) == ZS_OK);
    int32_t seq, ids[3] = {10, 20, 30}, nl = zs_engine_config(e)->nlayers;
    ZT_REQUIRE(zs_engine_seq_new(e, &seq, &err) == ZS_OK);
    ZT_REQUIRE(zs_engine_prefill(e, seq, ids, 3, NULL, &err) == ZS_OK);
    ZT_REQUIRE(zs_engine_decode(e, 1, &seq, &ids[0], NULL, &err) == ZS_OK);
    ZT_CHECK(h.n == nl + 2); /* asked once each, even across steps */
    for (int i = 0; i < h.n; i++) ZT_CHECK(h.stages[i] == i - 1);
    zs_engine_free(e);

    /* a wait that fails fails the step, and nothing is left half-done */
    hook_log_t f = {.fail_at = 1};
    o.wait_ctx = &f;
    ZT_REQUIRE(zs_engine_create(ck, w, &o, &e, &err) == ZS_OK);
    ZT_REQUIRE(zs_engine_seq_new(e, &seq, &err) == ZS_OK);
    zs_err_clear(&err);
    ZT_CHECK(zs_engine_prefill(e, seq, ids, 3, NULL, &err) == ZS_EIO);
    ZT_CHECK_STR_CONTAINS(err.msg, "stage 1");
    zs_engine_weights_resident(e); /* once everything is in, the hook is no longer asked */
    int before = f.n;
    int32_t seq2;
    ZT_REQUIRE(zs_engine_seq_new(e, &seq2, &err) == ZS_OK);
    ZT_CHECK(zs_engine_prefill(e, seq2, ids, 3, NULL, &err) == ZS_OK);
    ZT_CHECK(f.n == before);
    zs_engine_free(e);
    zs_weights_free(w);
    zs_ckpt_close(ck);
}

static int logits_of(int overlap, float *out, int32_t vocab_cap, zs_err_t *err) {
    zs_bundle_opts_t bo;
    zs_bundle_opts_default(&bo);
    bo.overlap_load = overlap;
    bo.engine.threads = 2;
    bo.load.threads = 2;
    bo.load.chunk_bytes = 4096; /* many small chunks: layers arrive one after another */
    zs_bundle_t *b = NULL;
    int rc = zs_bundle_open(g_dir, &bo, &b, err);
    if (rc != ZS_OK) return rc;
    int32_t seq, ids[5] = {1, 2, 3, 4, 5};
    float *lg = malloc((size_t)zs_engine_config(b->engine)->vocab * sizeof *lg);
    rc = lg ? zs_engine_seq_new(b->engine, &seq, err) : ZS_ENOMEM;
    if (rc == ZS_OK) rc = zs_engine_prefill(b->engine, seq, ids, 5, lg, err);
    if (rc == ZS_OK) rc = zs_bundle_finish_load(b, err);
    if (rc == ZS_OK) memcpy(out, lg, (size_t)(zs_engine_config(b->engine)->vocab < vocab_cap ? zs_engine_config(b->engine)->vocab : vocab_cap) * sizeof *out);
    if (rc == ZS_OK && !(b->timeline.first_layer > 0 && b->timeline.first_layer <= b->timeline.weights))
        rc = zs_err_set(err, ZS_ESTATE, "timeline: layer 0 at %f, weights at %f", b->timeline.first_layer,
                        b->timeline.weights);
    free(lg);
    zs_bundle_free(b);
    return rc;
}

static void test_overlapped_bundle_same_logits(void) {
    static float a[1024], b[1024];
    zs_err_t err = {0};
    for (int rep = 0; rep < 3; rep++) {
        int rc = logits_of(1, a, 1024, &err);
        ZT_CHECK_MSG(rc == ZS_OK, "%s", err.msg);
        if (rc == ZS_OK) rc = logits_of(0, b, 1024, &err);
        ZT_CHECK_MSG(rc == ZS_OK, "%s", err.msg);
        if (rc != ZS_OK) return;
        ZT_CHECK(memcmp(a, b, sizeof a) == 0);
    }
}

/* Scale to zero in the middle of an overlapped load cancels it; the next reload (overlapped
 * too) serves the same logits, and zs_bundle_loading says when finishing would block. */
static void test_unload_during_load_then_reload(void) {
    static float ref[1024], got[1024];
    zs_err_t err = {0};
    int rc = logits_of(0, ref, 1024, &err);
    ZT_REQUIRE(rc == ZS_OK);
    zs_bundle_opts_t bo;
    zs_bundle_opts_default(&bo);
    bo.overlap_load = 1;
    bo.engine.threads = 2;
    bo.load.threads = 1;
    bo.load.chunk_bytes = 4096;
    zs_bundle_t *b = NULL;
    ZT_REQUIRE(zs_bundle_open(g_dir, &bo, &b, &err) == ZS_OK);
    for (int rep = 0; rep < 3; rep++) {
        zs_bundle_unload(b); /* possibly mid-load: cancelled, joined, freed */
        ZT_CHECK(b->engine == NULL && b->weights == NULL && b->loading == NULL);
        ZT_CHECK(!zs_bundle_loading(b));
        zs_err_clear(&err);
        ZT_REQUIRE(zs_bundle_reload(b, &bo, &err) == ZS_OK);
    }
    int32_t seq, ids[5] = {1, 2, 3, 4, 5};
    int32_t vocab = zs_engine_config(b->engine)->vocab;
    ZT_REQUIRE(vocab <= 1024);
    ZT_REQUIRE(zs_engine_seq_new(b->engine, &seq, &err) == ZS_OK);
    ZT_CHECK(zs_engine_prefill(b->engine, seq, ids, 5, got, &err) == ZS_OK);
    ZT_CHECK(zs_bundle_finish_load(b, &err) == ZS_OK);
    ZT_CHECK(!zs_bundle_loading(b));
    ZT_CHECK(b->weights != NULL && b->timeline.weights >= b->timeline.first_layer);
    ZT_CHECK(memcmp(ref, got, (size_t)vocab * sizeof *got) == 0);
    zs_bundle_free(b);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/zs-overlap-%d", (int)getpid());
    zs_err_t err = {0};
    if (zs_synth_write(g_dir, zs_synth_shape("small"), 5, &err) != ZS_OK) {
        fprintf(stderr, "synth: %s\n", err.msg);
        return 1;
    }
    ZT_RUN(test_stages_in_order_once);
    ZT_RUN(test_overlapped_bundle_same_logits);
    ZT_RUN(test_unload_during_load_then_reload);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return ZT_DONE();
}
