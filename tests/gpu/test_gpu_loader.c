/* GPU loader tests (run on a machine with a CUDA GPU by `make test-gpu`): loads to cuda:0
 * byte-identical to the files across thread counts, chunk sizes, staging bounds and I/O
 * modes; per-layer readiness while the load runs; two loads at once; the staging bound;
 * an invalid device refused. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu_rt.h"
#include "load/plan.h"
#include "zerostart/ckpt.h"
#include "zerostart/load.h"
#include "zerostart/verify.h"
#include "zt.h"

static const char *g_model;

static void load_verify(int threads, size_t chunk, size_t staging, int direct) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_model, &ck, &err) == ZS_OK);
    zs_load_opts_t o;
    zs_load_opts_default(&o);
    o.device.kind = ZS_DEV_CUDA;
    o.threads = threads;
    o.chunk_bytes = chunk;
    o.staging_bytes = staging;
    o.direct_io = direct;
    zs_weights_t *w = NULL;
    int rc = zs_load(ck, &o, &w, &err);
    ZT_CHECK_MSG(rc == ZS_OK, "%s", err.msg);
    if (rc == ZS_OK) {
        uint64_t n = 0;
        ZT_CHECK_MSG(zs_weights_verify(w, &n, &err) == ZS_OK, "%s", err.msg);
        ZT_CHECK(n == ck->total_bytes);
        ZT_CHECK(w->stats.staging_bytes <= (staging ? staging : (size_t)1 << 30));
        ZT_CHECK(w->bytes - ck->total_bytes <= (uint64_t)ZS_TENSOR_ALIGN * ck->ntensors);
        for (size_t i = 0; i < w->ntensors; i++) ZT_CHECK(w->tensors[i].offset % ZS_TENSOR_ALIGN == 0);
    }
    zs_weights_free(w);
    zs_ckpt_close(ck);
}

static void test_modes(void) {
    load_verify(16, 4u << 20, 0, -1);
    load_verify(4, 1u << 20, 0, 1);
    load_verify(8, 64u << 10, 0, 0);
    load_verify(16, 4u << 20, 20u << 20, -1); /* staging bound forces 2 threads */
}

static void test_layer_readiness(void) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_model, &ck, &err) == ZS_OK);
    zs_load_opts_t o;
    zs_load_opts_default(&o);
    o.device.kind = ZS_DEV_CUDA;
    o.chunk_bytes = 1u << 20;
    zs_load_t *ld = NULL;
    ZT_REQUIRE(zs_load_begin(ck, &o, &ld, &err) == ZS_OK);
    zs_weights_t *w = zs_load_weights(ld);
    char *buf = malloc(1u << 20);
    ZT_REQUIRE(buf != NULL);
    for (int l = 0; l < ck->nlayers; l++) {
        ZT_REQUIRE(zs_load_wait_layer(ld, l, &err) == ZS_OK);
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        const zs_tensor_t *t = zs_weights_find(w, name);
        ZT_REQUIRE(t != NULL && t->info->nbytes <= (1u << 20));
        ZT_REQUIRE(zs_gpu_memcpy_d2h(buf, t->data, t->info->nbytes, &err) == ZS_OK);
        const uint16_t *v = (const uint16_t *)buf;
        int ok = 1;
        for (uint64_t i = 0; i < t->info->nelem; i++) ok &= v[i] == 0x3F80;
        ZT_CHECK_MSG(ok, "layer %d norm not resident when its layer was reported ready", l);
    }
    free(buf);
    ZT_CHECK(zs_load_wait_layer(ld, -1, &err) == ZS_OK);
    zs_weights_t *out = NULL;
    ZT_CHECK(zs_load_finish(ld, &out, &err) == ZS_OK);
    ZT_CHECK(zs_weights_verify(out, NULL, &err) == ZS_OK);
    zs_weights_free(out);
    zs_ckpt_close(ck);
}

static void *concurrent(void *arg) {
    (void)arg;
    load_verify(4, 2u << 20, 0, -1);
    return NULL;
}

static void test_two_loads_at_once(void) {
    pthread_t a, b;
    ZT_REQUIRE(pthread_create(&a, NULL, concurrent, NULL) == 0);
    ZT_REQUIRE(pthread_create(&b, NULL, concurrent, NULL) == 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
}

static void test_bad_device(void) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_model, &ck, &err) == ZS_OK);
    zs_load_opts_t o;
    zs_load_opts_default(&o);
    o.device = (zs_device_t){ZS_DEV_CUDA, 99};
    zs_weights_t *w = NULL;
    ZT_CHECK(zs_load(ck, &o, &w, &err) == ZS_EINVAL);
    ZT_CHECK_STR_CONTAINS(err.msg, "cuda:99");
    zs_ckpt_close(ck);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_gpu_loader MODEL_DIR\n");
        return 2;
    }
    g_model = argv[1];
    if (zs_cuda_device_count() == 0) {
        fprintf(stderr, "no CUDA device: test_gpu_loader needs a GPU\n");
        return 1;
    }
    ZT_RUN(test_modes);
    ZT_RUN(test_layer_readiness);
    ZT_RUN(test_two_loads_at_once);
    ZT_RUN(test_bad_device);
    return ZT_DONE();
}
