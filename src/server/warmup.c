/* Kernel warm-up (warmup.h): throw-away prefills and decodes, sequences freed afterwards. */
#include "server/warmup.h"

#include <stdlib.h>

#include "common/clock.h"
#include "zerostart/kv_cache.h"

int zs_srv_warmup(zs_engine_t *e, int32_t step_tokens, int64_t ctx, int64_t *prefill_tokens, double *prefill_s,
                  zs_err_t *err) {
    if (prefill_tokens) *prefill_tokens = 0;
    if (prefill_s) *prefill_s = 0;
    const zs_kv_cache_t *kv = zs_engine_kv(e);
    int32_t vocab = zs_engine_config(e)->vocab;
    uint32_t free0 = zs_kv_free_blocks(kv);
    /* two sequences must fit next to each other, each with room for the decode steps */
    int64_t room = (int64_t)free0 * kv->layout.block_size / 2 - 2 * kv->layout.block_size;
    int64_t big = step_tokens > 0 ? step_tokens : 256;
    if (big > ctx - 4) big = ctx - 4;
    if (big > room) big = room;
    int64_t small = big < 9 ? big : 9; /* just past the batched-decode path of the GPU kernels */
    if (small < 1 || vocab < 1) return 0; /* nothing sensible fits: skip */
    int32_t *ids = malloc((size_t)big * sizeof *ids);
    float *logits = malloc(2 * (size_t)vocab * sizeof *logits);
    int32_t seq[2] = {-1, -1};
    int rc = ids && logits ? 0 : zs_err_set(err, ZS_ENOMEM, "warm-up: out of memory");
    for (int64_t i = 0; i < big && ids; i++) ids[i] = (int32_t)((i * 7919 + 13) % vocab);
    if (rc == 0) rc = zs_engine_seq_new(e, &seq[0], err);
    if (rc == 0) rc = zs_engine_prefill(e, seq[0], ids, (int32_t)small, logits, err);
    for (int k = 0; k < 2 && rc == 0; k++) rc = zs_engine_decode(e, 1, seq, &ids[k], logits, err);
    /* mid-sized steps appended to it: on the H200 a server's first 64-token step measured
     * ~10 ms slower than the same step later, likely cuBLAS loading the kernels of a new
     * matrix-product size (bench/RESULTS.md, KV section) */
    static const int32_t mid[] = {64, 512};
    int64_t len = small + 2;
    for (size_t k = 0; k < sizeof mid / sizeof mid[0] && rc == 0; k++) {
        if (len + mid[k] > big) break;
        rc = zs_engine_prefill(e, seq[0], ids, mid[k], logits, err);
        len += mid[k];
    }
    if (rc == 0) rc = zs_engine_seq_new(e, &seq[1], err);
    double t0 = zs_now();
    if (rc == 0) rc = zs_engine_prefill(e, seq[1], ids, (int32_t)big, logits, err); /* waits: logits */
    if (rc == 0 && prefill_tokens) *prefill_tokens = big;
    if (rc == 0 && prefill_s) *prefill_s = zs_now() - t0;
    if (rc == 0) rc = zs_engine_decode(e, 2, seq, ids, logits, err);
    for (int k = 0; k < 2; k++) {
        zs_err_t ferr = {0};
        if (seq[k] >= 0 && zs_engine_seq_free(e, seq[k], &ferr) != 0 && rc == 0)
            rc = zs_err_set(err, ferr.code, "warm-up: %s", ferr.msg);
    }
    if (rc == 0 && zs_kv_free_blocks(kv) != free0)
        rc = zs_err_set(err, ZS_ESTATE, "warm-up: %u KV blocks free afterwards, %u before", zs_kv_free_blocks(kv),
                        free0);
    free(ids);
    free(logits);
    return rc;
}
