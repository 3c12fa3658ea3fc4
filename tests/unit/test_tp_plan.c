/* Tensor-parallel slice planning on the CPU: for 1..4 ranks (uneven splits of heads, MLP rows
 * and vocabulary; fewer KV heads than ranks, so ranks share KV heads) every checkpoint byte is
 * read exactly once, and each rank's buffer holds exactly its slices of a plain full load;
 * too many ranks for the heads is refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zerostart/load.h"
#include "zerostart/model.h"
#include "zerostart/synth.h"
#include "zerostart/tp.h"
#include "zt.h"

static char g_dir[64];

/* Checks that units cover every tensor byte exactly once. */
static void check_units_cover(const zs_ckpt_t *ck, const zs_tp_plan_t *p) {
    ZT_CHECK(p->read_bytes == ck->total_bytes);
    uint64_t *covered = calloc(ck->ntensors, sizeof *covered);
    ZT_REQUIRE(covered != NULL);
    for (size_t i = 0; i < p->nunits; i++) {
        const zs_tp_unit_t *u = &p->units[i];
        const zs_tensor_info_t *t = &ck->tensors[u->tensor];
        ZT_CHECK(u->file == t->file && u->src >= t->file_offset && u->src + u->len <= t->file_offset + t->nbytes);
        covered[u->tensor] += u->len;
    }
    for (size_t i = 0; i < ck->ntensors; i++) ZT_CHECK(covered[i] == ck->tensors[i].nbytes);
    free(covered);
}

/* Compares rank r's slice of tensor ti with the full tensor. */
static int slice_matches(const zs_ckpt_t *ck, const zs_weights_t *full, const zs_tp_plan_t *p, int r, size_t ti,
                         const char *rank_buf) {
    const zs_tensor_info_t *t = &ck->tensors[ti];
    const zs_tp_slice_t *s = &p->slices[(size_t)r * p->ntensors + ti];
    const char *src = full->tensors[ti].data, *dst = rank_buf + s->dst;
    uint64_t item = zs_dtype_size(t->dtype);
    int64_t rows = t->ndim >= 1 ? t->shape[0] : 1, cols = t->ndim == 2 ? t->shape[1] : 1;
    uint64_t row_bytes = (uint64_t)cols * item;
    if (s->kind == ZS_TP_REPLICATE) return s->bytes == t->nbytes && memcmp(dst, src, t->nbytes) == 0;
    if (s->kind == ZS_TP_ROWS)
        return memcmp(dst, src + (uint64_t)s->begin * row_bytes, (uint64_t)(s->end - s->begin) * row_bytes) == 0;
    uint64_t w = (uint64_t)(s->end - s->begin) * item;
    for (int64_t i = 0; i < rows; i++)
        if (memcmp(dst + (uint64_t)i * w, src + (uint64_t)i * row_bytes + (uint64_t)s->begin * item, w) != 0) return 0;
    return 1;
}

static void check_ranks(int ranks) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_dir, &ck, &err) == ZS_OK);
    zs_model_config_t cfg;
    ZT_REQUIRE(zs_model_config_parse(ck->config_json, strlen(ck->config_json), &cfg, &err) == ZS_OK);
    zs_weights_t *full = NULL;
    ZT_REQUIRE(zs_load(ck, NULL, &full, &err) == ZS_OK);
    zs_tp_plan_t p;
    ZT_REQUIRE(zs_tp_plan_build(ck, &cfg, ranks, 4096, &p, &err) == ZS_OK);
    check_units_cover(ck, &p);
    void *bufs[8] = {0};
    for (int r = 0; r < ranks; r++) {
        bufs[r] = malloc(p.rank_bytes[r] + 1);
        ZT_REQUIRE(bufs[r] != NULL);
        memset(bufs[r], 0xAB, p.rank_bytes[r] + 1);
    }
    ZT_REQUIRE(zs_tp_load_host(ck, &p, bufs, &err) == ZS_OK);
    int64_t q_rows_total = 0, kv_shared = 0;
    for (int r = 0; r < ranks; r++)
        for (size_t ti = 0; ti < ck->ntensors; ti++) {
            ZT_CHECK_MSG(slice_matches(ck, full, &p, r, ti, bufs[r]), "rank %d of %d, tensor %s", r, ranks,
                         ck->tensors[ti].name);
            const zs_tp_slice_t *s = &p.slices[(size_t)r * p.ntensors + ti];
            if (strcmp(ck->tensors[ti].name, "model.layers.0.self_attn.q_proj.weight") == 0) q_rows_total += s->shape[0];
            if (strcmp(ck->tensors[ti].name, "model.layers.0.self_attn.k_proj.weight") == 0)
                kv_shared += s->shape[0] / cfg.head_dim;
        }
    /* query heads are partitioned; KV heads are shared when there are fewer than ranks */
    ZT_CHECK(q_rows_total == (int64_t)cfg.nheads * cfg.head_dim);
    ZT_CHECK(ranks <= cfg.nkv_heads ? kv_shared == cfg.nkv_heads : kv_shared >= ranks);
    for (int r = 0; r < ranks; r++) free(bufs[r]);
    zs_tp_plan_free(&p);
    zs_weights_free(full);
    zs_ckpt_close(ck);
}

static void test_one_rank(void) { check_ranks(1); }
static void test_two_ranks(void) { check_ranks(2); }
static void test_three_ranks_uneven(void) { check_ranks(3); }
static void test_four_ranks_shared_kv_heads(void) { check_ranks(4); }

static void test_too_many_ranks(void) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_dir, &ck, &err) == ZS_OK);
    zs_model_config_t cfg;
    ZT_REQUIRE(zs_model_config_parse(ck->config_json, strlen(ck->config_json), &cfg, &err) == ZS_OK);
    zs_tp_plan_t p;
    ZT_CHECK(zs_tp_plan_build(ck, &cfg, 8, 4096, &p, &err) == ZS_EUNSUPPORTED);
    ZT_CHECK_STR_CONTAINS(err.msg, "attention heads");
    zs_err_clear(&err);
    ZT_CHECK(zs_tp_plan_build(ck, &cfg, 0, 4096, &p, &err) == ZS_EINVAL);
    zs_ckpt_close(ck);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/zs-tp-test-%d", (int)getpid());
    zs_err_t err = {0};
    if (zs_synth_write(g_dir, zs_synth_shape("tiny"), 11, &err) != ZS_OK) { /* 4 heads, 2 KV heads, 172 MLP */
        fprintf(stderr, "synth: %s\n", err.msg);
        return 1;
    }
    ZT_RUN(test_one_rank);
    ZT_RUN(test_two_ranks);
    ZT_RUN(test_three_ranks_uneven);
    ZT_RUN(test_four_ranks_shared_kv_heads);
    ZT_RUN(test_too_many_ranks);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return ZT_DONE();
}
