/* Tensor parallel on the CPU: the CPU communicator (all-reduce in a fixed rank order, the
 * same bits on every rank; all-gather; mismatched calls; abort), the rank threads, and the
 * tensor-parallel engine with 1-4 simulated ranks against the single-rank engine on the
 * synthetic "tiny" model (4 heads, 2 KV heads, 172 MLP rows, 512 vocabulary rows: uneven
 * splits for 3 ranks, KV heads shared for 3 and 4): logits of every position and greedy
 * continuations, bytes read equal to the checkpoint's tensor bytes, refusals. The variants of
 * the engine (biases, q/k norm, tied embeddings, sliding windows) are covered through the
 * engine driver by tests/py/test_tp.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/comm.h"
#include "engine/rank_threads.h"
#include "zerostart/engine.h"
#include "zerostart/sampling.h"
#include "zerostart/synth.h"
#include "zerostart/tp.h"
#include "zt.h"

static char g_dir[64];

/* --- communicator ------------------------------------------------------------------------ */

#define CN 1003 /* not a multiple of any rank count: uneven reduction chunks */

typedef struct {
    zs_comm_t *c;
    float buf[4][CN];
    float gathered[4][4 * CN];
    size_t n[4];        /* per rank count (mismatch test) */
    int fail_rank;      /* this rank fails instead of communicating (-1: none) */
} comm_ctx_t;

/* Values whose float sum depends on the order: a large value, small ones, its negation. */
static float comm_value(int rank, size_t i) {
    static const float v[4] = {1e8f, 1.0f, -1e8f, 0.5f};
    return v[(rank + (int)i) % 4] * (1.0f + (float)(i % 7) * 0.125f) + (float)rank * 0.25f;
}

static void comm_close(void *ctx) {
    comm_ctx_t *x = ctx;
    x->c->ops->abort(x->c);
}

static int job_reduce(void *ctx, int rank, zs_err_t *err) {
    comm_ctx_t *x = ctx;
    if (rank == x->fail_rank) return zs_err_set(err, ZS_EIO, "injected failure");
    for (size_t i = 0; i < CN; i++) x->buf[rank][i] = comm_value(rank, i);
    return x->c->ops->all_reduce_sum(x->c, rank, NULL, x->buf[rank], x->n[rank], err);
}

static int job_gather(void *ctx, int rank, zs_err_t *err) {
    comm_ctx_t *x = ctx;
    for (size_t i = 0; i < CN; i++) x->buf[rank][i] = (float)(rank * 100000 + (int)i);
    return x->c->ops->all_gather(x->c, rank, NULL, x->gathered[rank], x->buf[rank], CN, err);
}

static void test_comm_all_reduce_fixed_order(void) {
    for (int N = 1; N <= 4; N++) {
        comm_ctx_t *x = calloc(1, sizeof *x);
        zs_rank_threads_t *t = NULL;
        zs_err_t err = {0};
        ZT_REQUIRE(x != NULL);
        ZT_REQUIRE(zs_comm_cpu_create(N, &x->c, &err) == ZS_OK);
        ZT_REQUIRE(zs_rank_threads_create(N, &t, &err) == ZS_OK);
        x->fail_rank = -1;
        for (int r = 0; r < N; r++) x->n[r] = CN;
        for (int rep = 0; rep < 10; rep++) { /* many runs: thread timing must not matter */
            ZT_REQUIRE(zs_rank_threads_run(t, job_reduce, x, comm_close, x, &err) == ZS_OK);
            int same = 1;
            for (size_t i = 0; i < CN; i++) {
                float want = comm_value(0, i);
                for (int r = 1; r < N; r++) want += comm_value(r, i);
                for (int r = 0; r < N; r++) same &= memcmp(&x->buf[r][i], &want, sizeof want) == 0;
            }
            ZT_CHECK_MSG(same, "%d ranks, run %d: sums differ from the rank-order sum", N, rep);
        }
        zs_rank_threads_destroy(t);
        x->c->ops->destroy(x->c);
        free(x);
    }
}

static void test_comm_all_gather(void) {
    comm_ctx_t *x = calloc(1, sizeof *x);
    zs_rank_threads_t *t = NULL;
    zs_err_t err = {0};
    ZT_REQUIRE(x != NULL);
    ZT_REQUIRE(zs_comm_cpu_create(3, &x->c, &err) == ZS_OK);
    ZT_REQUIRE(zs_rank_threads_create(3, &t, &err) == ZS_OK);
    ZT_CHECK(zs_rank_threads_run(t, job_gather, x, comm_close, x, &err) == ZS_OK);
    for (int r = 0; r < 3; r++)
        for (int q = 0; q < 3; q++)
            for (size_t i = 0; i < CN; i += 97)
                ZT_CHECK(x->gathered[r][(size_t)q * CN + i] == (float)(q * 100000 + (int)i));
    zs_rank_threads_destroy(t);
    x->c->ops->destroy(x->c);
    free(x);
}

static void test_comm_mismatch_and_abort(void) {
    comm_ctx_t *x = calloc(1, sizeof *x);
    zs_rank_threads_t *t = NULL;
    zs_err_t err = {0};
    ZT_REQUIRE(x != NULL);
    ZT_REQUIRE(zs_comm_cpu_create(4, &x->c, &err) == ZS_OK);
    ZT_REQUIRE(zs_rank_threads_create(4, &t, &err) == ZS_OK);
    /* rank 2 asks for a different count: every rank fails, the error says why */
    x->fail_rank = -1;
    for (int r = 0; r < 4; r++) x->n[r] = r == 2 ? CN - 1 : CN;
    ZT_CHECK(zs_rank_threads_run(t, job_reduce, x, NULL, NULL, &err) == ZS_EINVAL);
    ZT_CHECK_STR_CONTAINS(err.msg, "rank 2 called all-reduce of 1002 floats");
    /* rank 1 fails before its collective: the others must not wait forever, and the error
     * returned is rank 1's own, not the cancellation of the others */
    zs_err_clear(&err);
    for (int r = 0; r < 4; r++) x->n[r] = CN;
    x->fail_rank = 1;
    ZT_CHECK(zs_rank_threads_run(t, job_reduce, x, comm_close, x, &err) == ZS_EIO);
    ZT_CHECK_STR_CONTAINS(err.msg, "rank 1: injected failure");
    /* an aborted communicator stays unusable */
    zs_err_clear(&err);
    x->fail_rank = -1;
    ZT_CHECK(zs_rank_threads_run(t, job_reduce, x, comm_close, x, &err) == ZS_ECANCELED);
    ZT_CHECK_STR_CONTAINS(err.msg, "aborted");
    zs_rank_threads_destroy(t);
    x->c->ops->destroy(x->c);
    free(x);
    /* no NCCL in a build without CUDA */
    zs_comm_t *c = NULL;
    int devs[2] = {0, 1};
    zs_err_clear(&err);
    ZT_CHECK(zs_comm_nccl_create(2, devs, &c, &err) == ZS_EUNSUPPORTED);
    ZT_CHECK(c == NULL);
}

/* --- engine -------------------------------------------------------------------------------- */

static const int32_t PROMPT[] = {5, 17, 33, 2, 60, 41, 8, 8, 19, 27, 50, 3, 11, 44, 38, 21, 7, 300, 0, 511, 400, 257};
#define NPROMPT ((int32_t)(sizeof PROMPT / sizeof PROMPT[0]))
#define NGEN 12

typedef struct {
    float *logits;       /* NPROMPT x vocab, every position */
    int32_t tokens[NGEN];
    float gaps[NGEN];    /* top-2 gap of the logits each token came from */
} run_out_t;

static float top2_gap(const float *l, int32_t V) {
    float a = -INFINITY, b = -INFINITY;
    for (int32_t i = 0; i < V; i++)
        if (l[i] > a) b = a, a = l[i];
        else if (l[i] > b) b = l[i];
    return a - b;
}

static int32_t argmax(const float *l, int32_t V) {
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

/* Prefill in chunks of 5 (every position's logits), then NGEN greedy tokens decoded in a batch
 * with a second sequence (forked from the first), 4-position KV blocks, 7-token steps. */
static int engine_run(zs_engine_t *e, run_out_t *o, zs_err_t *err) {
    const int32_t V = zs_engine_config(e)->vocab;
    int32_t s = -1, f = -1;
    int rc = zs_engine_seq_new(e, &s, err);
    for (int32_t at = 0; rc == ZS_OK && at < NPROMPT; at += 5) {
        zs_engine_item_t it = {s, PROMPT + at, NPROMPT - at < 5 ? NPROMPT - at : 5};
        rc = zs_engine_forward(e, &it, 1, o->logits + (size_t)at * (size_t)V, 1, err);
    }
    if (rc == ZS_OK) rc = zs_engine_seq_fork(e, s, &f, err);
    float *two = malloc((size_t)2 * (size_t)V * sizeof *two);
    if (two == NULL) return zs_err_set(err, ZS_ENOMEM, "oom");
    const float *last = o->logits + (size_t)(NPROMPT - 1) * (size_t)V;
    int64_t shared = rc == ZS_OK ? zs_engine_seq_len(e, f) : 0;
    if (rc == ZS_OK) rc = zs_engine_prefill(e, f, PROMPT + shared, NPROMPT - (int32_t)shared, two + V, err);
    memcpy(two, last, (size_t)V * sizeof *two);
    for (int i = 0; rc == ZS_OK && i < NGEN; i++) {
        o->tokens[i] = argmax(two, V);
        o->gaps[i] = top2_gap(two, V);
        if (argmax(two + V, V) != o->tokens[i])
            rc = zs_err_set(err, ZS_EINVAL, "step %d: the forked sequence disagrees", i);
        int32_t seqs[2] = {s, f}, ids[2] = {o->tokens[i], o->tokens[i]};
        if (rc == ZS_OK) rc = zs_engine_decode(e, 2, seqs, ids, two, err);
    }
    free(two);
    return rc;
}

static void engine_opts(zs_engine_opts_t *o) {
    zs_engine_opts_default(o);
    o->threads = 1;
    o->block_size = 4;
    o->max_step_tokens = 7;
    o->kv_blocks = 64;
}

static void test_tp_engine_matches_single_rank(void) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_dir, &ck, &err) == ZS_OK);
    zs_load_opts_t lo;
    zs_load_opts_default(&lo);
    lo.threads = 2;
    zs_weights_t *w = NULL;
    ZT_REQUIRE(zs_load(ck, &lo, &w, &err) == ZS_OK);
    zs_engine_opts_t eo;
    engine_opts(&eo);
    zs_engine_t *e = NULL;
    ZT_REQUIRE(zs_engine_create(ck, w, &eo, &e, &err) == ZS_OK);
    const int32_t V = zs_engine_config(e)->vocab;
    run_out_t ref = {0}, got = {0};
    ref.logits = malloc((size_t)NPROMPT * (size_t)V * sizeof(float));
    got.logits = malloc((size_t)NPROMPT * (size_t)V * sizeof(float));
    ZT_REQUIRE(ref.logits != NULL && got.logits != NULL);
    ZT_REQUIRE(engine_run(e, &ref, &err) == ZS_OK);
    zs_engine_free(e);
    float range = 0;
    for (size_t i = 0; i < (size_t)NPROMPT * (size_t)V; i++) range = fmaxf(range, fabsf(ref.logits[i]));
    ZT_CHECK(range > 0.5f); /* the logits are not degenerate */

    for (int N = 1; N <= 4; N++) {
        zs_tp_load_opts_t to;
        zs_tp_load_opts_default(&to);
        to.ranks = N;
        to.threads = 3;
        to.unit_bytes = 1024; /* several units per tensor, column slices across units */
        zs_tp_weights_t *tw = NULL;
        ZT_REQUIRE(zs_tp_load(ck, &to, &tw, &err) == ZS_OK);
        /* every tensor byte read once; each rank got exactly its slices */
        ZT_CHECK_MSG(tw->stats.read_bytes == ck->total_bytes, "%d ranks: read %llu of %llu bytes", N,
                     (unsigned long long)tw->stats.read_bytes, (unsigned long long)ck->total_bytes);
        for (int r = 0; r < N; r++) {
            uint64_t want = 0;
            for (size_t ti = 0; ti < ck->ntensors; ti++) want += tw->plan.slices[(size_t)r * ck->ntensors + ti].bytes;
            ZT_CHECK(tw->delivered[r] == want);
        }
        e = NULL;
        ZT_REQUIRE(zs_engine_create_tp(tw, &eo, &e, &err) == ZS_OK);
        ZT_CHECK(zs_engine_ranks(e) == N);
        int rc = engine_run(e, &got, &err);
        ZT_CHECK_MSG(rc == ZS_OK, "%d ranks: %s", N, err.msg);
        float d = 0;
        for (size_t i = 0; rc == ZS_OK && i < (size_t)NPROMPT * (size_t)V; i++)
            d = fmaxf(d, fabsf(got.logits[i] - ref.logits[i]));
        ZT_CHECK_MSG(rc == ZS_OK && d <= 1e-4f * range, "%d ranks: logits differ by %g (range %g)", N, (double)d,
                     (double)range);
        for (int i = 0; rc == ZS_OK && i < NGEN; i++) {
            if (got.tokens[i] == ref.tokens[i]) continue;
            /* only a near-tie may flip, and everything after it may then differ */
            ZT_CHECK_MSG(ref.gaps[i] < 1e-5f * range, "%d ranks: token %d is %d, single rank %d (gap %g)", N, i,
                         got.tokens[i], ref.tokens[i], (double)ref.gaps[i]);
            break;
        }
        zs_engine_free(e);
        zs_tp_weights_free(tw);
    }
    free(ref.logits);
    free(got.logits);
    zs_weights_free(w);
    zs_ckpt_close(ck);
}

static int never_wait(void *ctx, int32_t stage, zs_err_t *err) {
    (void)ctx;
    return zs_err_set(err, ZS_ESTATE, "stage %d waited for", stage);
}

static void test_tp_refusals(void) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_dir, &ck, &err) == ZS_OK);
    zs_tp_load_opts_t to;
    zs_tp_load_opts_default(&to);
    zs_tp_weights_t *tw = NULL;
    /* more ranks than attention heads; no ranks; too many ranks */
    to.ranks = 5;
    ZT_CHECK(zs_tp_load(ck, &to, &tw, &err) == ZS_EUNSUPPORTED);
    ZT_CHECK_STR_CONTAINS(err.msg, "4 attention heads cannot be split over 5 ranks");
    ZT_CHECK(tw == NULL);
    int bad[] = {0, -1, ZS_TP_MAX_RANKS + 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        zs_err_clear(&err);
        to.ranks = bad[i];
        ZT_CHECK(zs_tp_load(ck, &to, &tw, &err) == ZS_EINVAL);
        ZT_CHECK_STR_CONTAINS(err.msg, "ranks");
    }
    /* GPUs in a build without CUDA */
    zs_err_clear(&err);
    to.ranks = 2;
    to.kind = ZS_DEV_CUDA;
    ZT_CHECK(zs_tp_load(ck, &to, &tw, &err) == ZS_EINVAL);
    ZT_CHECK_STR_CONTAINS(err.msg, "GPU");
    /* the engine: no waiting for weights, backends matching the shards */
    to.kind = ZS_DEV_CPU;
    zs_err_clear(&err);
    ZT_REQUIRE(zs_tp_load(ck, &to, &tw, &err) == ZS_OK);
    zs_engine_opts_t eo;
    engine_opts(&eo);
    eo.backend = ZS_BACKEND_CUDA;
    zs_engine_t *e = NULL;
    ZT_CHECK(zs_engine_create_tp(tw, &eo, &e, &err) == ZS_EUNSUPPORTED);
    ZT_CHECK(e == NULL);
    engine_opts(&eo);
    eo.wait_weights = never_wait;
    zs_err_clear(&err);
    ZT_CHECK(zs_engine_create_tp(tw, &eo, &e, &err) == ZS_EINVAL);
    ZT_CHECK_STR_CONTAINS(err.msg, "wait_weights");
    /* request errors are found before any rank runs: the engine stays usable */
    engine_opts(&eo);
    eo.kv_blocks = 2;
    zs_err_clear(&err);
    ZT_REQUIRE(zs_engine_create_tp(tw, &eo, &e, &err) == ZS_OK);
    int32_t s;
    ZT_REQUIRE(zs_engine_seq_new(e, &s, &err) == ZS_OK);
    int32_t oob[2] = {3, 512};
    ZT_CHECK(zs_engine_prefill(e, s, oob, 2, NULL, &err) == ZS_ERANGE);
    zs_err_clear(&err);
    ZT_CHECK(zs_engine_prefill(e, s, PROMPT, 9, NULL, &err) == ZS_EBUSY); /* 2 blocks of 4 */
    zs_err_clear(&err);
    float *l = malloc(512 * sizeof *l);
    ZT_REQUIRE(l != NULL);
    ZT_CHECK(zs_engine_prefill(e, s, PROMPT, 8, l, &err) == ZS_OK);
    ZT_CHECK(zs_engine_seq_len(e, s) == 8);
    free(l);
    zs_engine_free(e);
    zs_tp_weights_free(tw);
    zs_ckpt_close(ck);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/zs-tp-engine-%d", (int)getpid());
    zs_err_t err = {0};
    if (zs_synth_write(g_dir, zs_synth_shape("tiny"), 7, &err) != ZS_OK) {
        fprintf(stderr, "synth: %s\n", err.msg);
        return 1;
    }
    ZT_RUN(test_comm_all_reduce_fixed_order);
    ZT_RUN(test_comm_all_gather);
    ZT_RUN(test_comm_mismatch_and_abort);
    ZT_RUN(test_tp_engine_matches_single_rank);
    ZT_RUN(test_tp_refusals);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return ZT_DONE();
}
