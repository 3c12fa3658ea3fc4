/* Engine test driver.
 *
 *   test_engine_driver                          self-test on an in-memory model (chunked vs
 *                                               whole prefill, batched vs single decode,
 *                                               prefix sharing, KV full, token id and config
 *                                               errors); last line "N passed, N failed"
 *   test_engine_driver logits DIR [opts] ids... logits of the last position (--all: every
 *                                               position), one line of floats per position
 *   test_engine_driver greedy DIR N [opts] ids. N greedy tokens; runs whole prefill + single
 *                                               decode, and chunked prefill + fork + batched
 *                                               decode, and fails unless both agree
 *   test_engine_driver config FILE              parses a config.json: "ok" or the error
 *   test_engine_driver check DIR                opens, loads and builds the engine: "ok" or
 *                                               the error
 * opts: --block N (KV block size), --step N (max tokens per step), --chunk N (tokens per
 * prefill call), --threads N, --tp N (a tensor-parallel engine of N simulated ranks on the CPU,
 * weights loaded with zs_tp_load). Errors go to stderr with exit status 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zerostart/ckpt.h"
#include "zerostart/engine.h"
#include "zerostart/kv_cache.h"
#include "zerostart/load.h"
#include "zerostart/model.h"
#include "zerostart/sampling.h"
#include "zerostart/tp.h"
#include "zt.h"

/* ------------------------------------------------------------------------------------------
 * CLI modes over a real model directory */

typedef struct {
    int block, step, chunk, threads, all, tp;
} drv_opts_t;

typedef struct {
    zs_ckpt_t *ck;
    zs_weights_t *w;
    zs_tp_weights_t *tw;
    zs_engine_t *e;
} drv_model_t;

static void drv_close(drv_model_t *m) {
    zs_engine_free(m->e);
    zs_tp_weights_free(m->tw);
    zs_weights_free(m->w);
    zs_ckpt_close(m->ck);
    memset(m, 0, sizeof *m);
}

static int drv_open(const char *dir, const drv_opts_t *o, drv_model_t *m, zs_err_t *err) {
    memset(m, 0, sizeof *m);
    int rc = zs_ckpt_open(dir, &m->ck, err);
    if (rc) return rc;
    if (o->tp > 0) {
        zs_tp_load_opts_t to;
        zs_tp_load_opts_default(&to);
        to.ranks = o->tp;
        to.threads = 2;
        to.unit_bytes = 4096; /* many units: column slices cut across several reads */
        rc = zs_tp_load(m->ck, &to, &m->tw, err);
        if (rc == 0 && m->tw->stats.read_bytes != m->ck->total_bytes)
            rc = zs_err_set(err, ZS_EIO, "tensor parallel load read %llu bytes, the checkpoint has %llu",
                            (unsigned long long)m->tw->stats.read_bytes, (unsigned long long)m->ck->total_bytes);
    } else {
        zs_load_opts_t lo;
        zs_load_opts_default(&lo);
        lo.device.kind = ZS_DEV_CPU;
        lo.threads = 2;
        rc = zs_load(m->ck, &lo, &m->w, err);
    }
    if (rc) {
        drv_close(m);
        return rc;
    }
    zs_engine_opts_t eo;
    zs_engine_opts_default(&eo);
    eo.block_size = o->block;
    eo.max_step_tokens = o->step;
    eo.threads = o->threads;
    eo.kv_blocks = 256;
    rc = m->tw ? zs_engine_create_tp(m->tw, &eo, &m->e, err) : zs_engine_create(m->ck, m->w, &eo, &m->e, err);
    if (rc) {
        drv_close(m);
        return rc;
    }
    return 0;
}

static int parse_opts(int argc, char **argv, int *i, drv_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->chunk = 3;
    o->threads = 2;
    while (*i < argc && strncmp(argv[*i], "--", 2) == 0) {
        const char *a = argv[(*i)++];
        if (strcmp(a, "--all") == 0) {
            o->all = 1;
            continue;
        }
        if (*i >= argc) return -1;
        int v = atoi(argv[(*i)++]);
        if (strcmp(a, "--block") == 0) o->block = v;
        else if (strcmp(a, "--step") == 0) o->step = v;
        else if (strcmp(a, "--chunk") == 0) o->chunk = v;
        else if (strcmp(a, "--threads") == 0) o->threads = v;
        else if (strcmp(a, "--tp") == 0) o->tp = v;
        else return -1;
    }
    return 0;
}

static int32_t *parse_ids(int argc, char **argv, int from, int32_t *n) {
    *n = argc - from;
    int32_t *ids = malloc((size_t)(*n > 0 ? *n : 1) * sizeof *ids);
    if (ids == NULL) return NULL;
    for (int i = from; i < argc; i++) ids[i - from] = (int32_t)strtol(argv[i], NULL, 10);
    return ids;
}

static int fail(const zs_err_t *err) {
    fprintf(stderr, "error: %s (%s)\n", err->msg, zs_status_name(err->code));
    return 1;
}

static int mode_logits(int argc, char **argv) {
    int i = 3;
    drv_opts_t o;
    if (argc < 4 || parse_opts(argc, argv, &i, &o)) {
        fprintf(stderr, "usage: logits DIR [opts] ids...\n");
        return 2;
    }
    int32_t n;
    int32_t *ids = parse_ids(argc, argv, i, &n);
    if (ids == NULL || n < 1) {
        free(ids);
        fprintf(stderr, "error: no token ids\n");
        return 2;
    }
    zs_err_t err = {0};
    drv_model_t m;
    if (drv_open(argv[2], &o, &m, &err)) {
        free(ids);
        return fail(&err);
    }
    const int32_t V = zs_engine_config(m.e)->vocab;
    float *lg = malloc((size_t)n * (size_t)V * sizeof *lg);
    int32_t seq = -1;
    int rc = lg ? zs_engine_seq_new(m.e, &seq, &err) : zs_err_set(&err, ZS_ENOMEM, "oom");
    /* prefill in calls of --chunk tokens (0: one call) */
    int32_t chunk = o.chunk > 0 ? o.chunk : n;
    for (int32_t at = 0; rc == 0 && at < n; at += chunk) {
        zs_engine_item_t it = {.seq = seq, .ids = ids + at, .n = n - at < chunk ? n - at : chunk};
        float *dst = o.all ? lg + (size_t)at * V : lg;
        rc = zs_engine_forward(m.e, &it, 1, dst, o.all, &err);
    }
    if (rc == 0) {
        int32_t rows = o.all ? n : 1;
        for (int32_t r = 0; r < rows; r++) {
            for (int32_t v = 0; v < V; v++)
                printf("%s%.9g", v ? " " : "", (double)lg[(size_t)r * V + v]);
            printf("\n");
        }
    }
    free(lg);
    free(ids);
    drv_close(&m);
    return rc ? fail(&err) : 0;
}

static int argmax_sample(zs_sampler_t *s, float *lg, int32_t *tok, zs_err_t *err) {
    return zs_sampler_sample(s, lg, tok, err);
}

static int mode_greedy(int argc, char **argv) {
    int i = 4;
    drv_opts_t o;
    if (argc < 5 || parse_opts(argc, argv, &i, &o)) {
        fprintf(stderr, "usage: greedy DIR N [opts] ids...\n");
        return 2;
    }
    int steps = atoi(argv[3]);
    int32_t n;
    int32_t *ids = parse_ids(argc, argv, i, &n);
    if (ids == NULL || n < 1 || steps < 1) {
        free(ids);
        fprintf(stderr, "error: need N >= 1 and token ids\n");
        return 2;
    }
    zs_err_t err = {0};
    drv_model_t m;
    if (drv_open(argv[2], &o, &m, &err)) {
        free(ids);
        return fail(&err);
    }
    const int32_t V = zs_engine_config(m.e)->vocab;
    zs_sampling_params_t sp;
    zs_sampling_params_default(&sp);
    sp.temperature = 0;
    zs_sampler_t smp;
    int32_t *ta = calloc((size_t)steps, sizeof *ta), *tb = calloc((size_t)steps, sizeof *tb),
            *tc = calloc((size_t)steps, sizeof *tc);
    float *lg = malloc((size_t)3 * V * sizeof *lg);
    int rc = (ta && tb && tc && lg) ? zs_sampler_init(&smp, &sp, V, &err)
                                    : zs_err_set(&err, ZS_ENOMEM, "oom");
    int have_smp = rc == 0;
    int32_t a = -1, b = -1, c = -1, d = -1;
    /* path A: whole prompt in one call, then one decode call per token */
    if (rc == 0) rc = zs_engine_seq_new(m.e, &a, &err);
    if (rc == 0) rc = zs_engine_prefill(m.e, a, ids, n, lg, &err);
    for (int s = 0; rc == 0 && s < steps; s++) {
        if ((rc = argmax_sample(&smp, lg, &ta[s], &err))) break;
        if (s + 1 < steps) rc = zs_engine_decode(m.e, 1, &a, &ta[s], lg, &err);
    }
    /* path B: prompt in --chunk sized calls; C forks B's full blocks and prefills the rest;
     * D is an unrelated sequence; B, C and D then decode together in one batch */
    if (rc == 0) rc = zs_engine_seq_new(m.e, &b, &err);
    int32_t chunk = o.chunk > 0 ? o.chunk : n;
    for (int32_t at = 0; rc == 0 && at < n; at += chunk)
        rc = zs_engine_prefill(m.e, b, ids + at, n - at < chunk ? n - at : chunk, lg, &err);
    if (rc == 0) rc = zs_engine_seq_fork(m.e, b, &c, &err);
    int64_t shared = rc == 0 ? zs_engine_seq_len(m.e, c) : 0;
    float *lgc = lg + V, *lgd = lg + 2 * (size_t)V;
    if (rc == 0 && shared < n) rc = zs_engine_prefill(m.e, c, ids + shared, n - (int32_t)shared, lgc, &err);
    if (rc == 0 && shared == n) {
        /* nothing left to prefill: C needs the last token's logits, which B has */
        memcpy(lgc, lg, (size_t)V * sizeof *lg);
    }
    int32_t dprompt[3] = {ids[n - 1], ids[0], ids[n / 2]};
    if (rc == 0) rc = zs_engine_seq_new(m.e, &d, &err);
    if (rc == 0) rc = zs_engine_prefill(m.e, d, dprompt, 3, lgd, &err);
    for (int s = 0; rc == 0 && s < steps; s++) {
        int32_t td;
        if ((rc = argmax_sample(&smp, lg, &tb[s], &err))) break;
        if ((rc = argmax_sample(&smp, lgc, &tc[s], &err))) break;
        if ((rc = argmax_sample(&smp, lgd, &td, &err))) break;
        if (s + 1 < steps) {
            int32_t seqs[3] = {b, c, d}, next[3] = {tb[s], tc[s], td};
            rc = zs_engine_decode(m.e, 3, seqs, next, lg, &err);
        }
    }
    int bad = 0;
    if (rc == 0) {
        for (int s = 0; s < steps; s++) printf("%s%d", s ? " " : "", ta[s]);
        printf("\n");
        for (int s = 0; s < steps; s++)
            if (tb[s] != ta[s] || tc[s] != ta[s]) {
                fprintf(stderr, "mismatch at step %d: whole %d, chunked %d, forked %d\n", s,
                        ta[s], tb[s], tc[s]);
                bad = 1;
            }
    }
    if (have_smp) zs_sampler_free(&smp);
    free(ta);
    free(tb);
    free(tc);
    free(lg);
    free(ids);
    drv_close(&m);
    if (rc) return fail(&err);
    return bad ? 3 : 0;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        char *nb = realloc(buf, cap * 2);
        if (nb == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    *len = n;
    return buf;
}

static int mode_config(const char *path) {
    size_t len = 0;
    char *txt = read_file(path, &len);
    if (txt == NULL) {
        fprintf(stderr, "error: cannot read %s\n", path);
        return 2;
    }
    zs_model_config_t *c = malloc(sizeof *c);
    zs_err_t err = {0};
    int rc = c ? zs_model_config_parse(txt, len, c, &err) : zs_err_set(&err, ZS_ENOMEM, "oom");
    if (rc == 0) printf("ok %s layers=%d window=%d\n", zs_arch_name(c->arch), c->nlayers, c->sliding_window);
    free(c);
    free(txt);
    return rc ? fail(&err) : 0;
}

static int mode_check(const char *dir) {
    drv_opts_t o;
    memset(&o, 0, sizeof o);
    o.threads = 1;
    zs_err_t err = {0};
    drv_model_t m;
    if (drv_open(dir, &o, &m, &err)) return fail(&err);
    printf("ok\n");
    drv_close(&m);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Self-test: an in-memory Mistral-style model (sliding window 5) built from a PRNG */

#define ST_H 32
#define ST_I 48
#define ST_L 2
#define ST_NH 4
#define ST_NKV 2
#define ST_HD 8
#define ST_V 64

static const char *ST_CONFIG =
    "{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 32, "
    "\"intermediate_size\": 48, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
    "\"num_key_value_heads\": 2, \"vocab_size\": 64, \"max_position_embeddings\": 40, "
    "\"rms_norm_eps\": 1e-5, \"rope_theta\": 10000, \"sliding_window\": 5, "
    "\"eos_token_id\": 2}";

typedef struct {
    char name[64];
    float *data;
    int ndim;
    int64_t shape[2];
} st_tensor_t;

typedef struct {
    st_tensor_t t[64];
    int n;
} st_model_t;

static uint64_t st_rng = 88172645463325252ull;
static float st_rand(void) {
    st_rng ^= st_rng << 13;
    st_rng ^= st_rng >> 7;
    st_rng ^= st_rng << 17;
    return (float)((double)(st_rng >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static int st_add(st_model_t *m, const char *name, int64_t d0, int64_t d1, float scale, float bias) {
    if (m->n >= 64) return -1;
    st_tensor_t *t = &m->t[m->n];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    size_t ne = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    t->data = malloc(ne * sizeof(float));
    if (t->data == NULL) return -1;
    for (size_t i = 0; i < ne; i++) t->data[i] = bias + scale * st_rand();
    m->n++;
    return 0;
}

static void st_free(st_model_t *m) {
    for (int i = 0; i < m->n; i++) free(m->t[i].data);
    m->n = 0;
}

static int st_build(st_model_t *m) {
    memset(m, 0, sizeof *m);
    int rc = 0;
    rc |= st_add(m, "model.embed_tokens.weight", ST_V, ST_H, 1.0f, 0);
    rc |= st_add(m, "model.norm.weight", ST_H, 0, 0.2f, 1.0f);
    rc |= st_add(m, "lm_head.weight", ST_V, ST_H, 0.6f, 0);
    char n[96];
    for (int l = 0; l < ST_L; l++) {
#define ADD(suffix, d0, d1, sc, b)                                                               \
    do {                                                                                         \
        snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);                                  \
        rc |= st_add(m, n, d0, d1, sc, b);                                                       \
    } while (0)
        ADD("input_layernorm.weight", ST_H, 0, 0.2f, 1.0f);
        ADD("post_attention_layernorm.weight", ST_H, 0, 0.2f, 1.0f);
        ADD("self_attn.q_proj.weight", ST_NH * ST_HD, ST_H, 0.5f, 0);
        ADD("self_attn.k_proj.weight", ST_NKV * ST_HD, ST_H, 0.5f, 0);
        ADD("self_attn.v_proj.weight", ST_NKV * ST_HD, ST_H, 0.3f, 0);
        ADD("self_attn.o_proj.weight", ST_H, ST_NH * ST_HD, 0.3f, 0);
        ADD("mlp.gate_proj.weight", ST_I, ST_H, 0.3f, 0);
        ADD("mlp.up_proj.weight", ST_I, ST_H, 0.3f, 0);
        ADD("mlp.down_proj.weight", ST_H, ST_I, 0.3f, 0);
#undef ADD
    }
    return rc;
}

static int st_lookup(void *ctx, const char *name, zs_wref_t *out) {
    st_model_t *m = ctx;
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->t[i].name, name) == 0) {
            out->data = m->t[i].data;
            out->dtype = ZS_F32;
            out->ndim = m->t[i].ndim;
            out->shape[0] = m->t[i].shape[0];
            out->shape[1] = m->t[i].shape[1];
            return 0;
        }
    return 1;
}

static st_model_t g_model;

static zs_engine_t *st_engine(int block, int step, uint32_t kv_blocks) {
    zs_engine_opts_t o;
    zs_engine_opts_default(&o);
    o.block_size = block;
    o.max_step_tokens = step;
    o.kv_blocks = kv_blocks;
    o.threads = 2;
    zs_err_t err = {0};
    zs_engine_t *e = NULL;
    if (zs_engine_create_from(ST_CONFIG, strlen(ST_CONFIG), st_lookup, &g_model, ZS_DEV_CPU, &o,
                              &e, &err)) {
        fprintf(stderr, "  engine: %s\n", err.msg);
        return NULL;
    }
    return e;
}

static const int32_t PROMPT[] = {5, 17, 33, 2, 60, 41, 8, 8, 19, 27, 50, 3, 11, 44, 38, 21, 7, 63, 0, 30};
#define NPROMPT ((int32_t)(sizeof PROMPT / sizeof PROMPT[0]))

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

/* All-position logits of PROMPT with the given block size, step size and prefill chunking. */
static int st_all_logits(int block, int step, int chunk, float *out) {
    zs_engine_t *e = st_engine(block, step, 64);
    if (e == NULL) return -1;
    zs_err_t err = {0};
    int32_t s;
    int rc = zs_engine_seq_new(e, &s, &err);
    for (int32_t at = 0; rc == 0 && at < NPROMPT; at += chunk) {
        zs_engine_item_t it = {s, PROMPT + at, NPROMPT - at < chunk ? NPROMPT - at : chunk};
        rc = zs_engine_forward(e, &it, 1, out + (size_t)at * ST_V, 1, &err);
    }
    if (rc) fprintf(stderr, "  forward: %s\n", err.msg);
    zs_engine_free(e);
    return rc;
}

static void test_chunking_invariance(void) {
    static float ref[NPROMPT * ST_V], got[NPROMPT * ST_V];
    ZT_REQUIRE(st_all_logits(16, 256, NPROMPT, ref) == 0);
    const int cfg[][3] = {{4, 256, 1}, {4, 256, 3}, {3, 5, NPROMPT}, {1, 7, 4}, {7, 2, 6}};
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        ZT_REQUIRE(st_all_logits(cfg[i][0], cfg[i][1], cfg[i][2], got) == 0);
        float d = max_abs_diff(ref, got, (size_t)NPROMPT * ST_V);
        ZT_CHECK_MSG(d < 1e-4f, "block %d step %d chunk %d: max diff %g", cfg[i][0], cfg[i][1],
                     cfg[i][2], (double)d);
    }
    /* logits must actually depend on the position: the window makes later rows differ */
    ZT_CHECK(max_abs_diff(ref, ref + ST_V, ST_V) > 1e-3f);
}

static void test_batched_decode_and_fork(void) {
    zs_engine_t *e = st_engine(4, 8, 64);
    ZT_REQUIRE(e != NULL);
    zs_err_t err = {0};
    static float la[ST_V], lb[3 * ST_V], tmp[ST_V];
    int32_t a, b, c, d;
    ZT_REQUIRE(zs_engine_seq_new(e, &a, &err) == 0);
    ZT_REQUIRE(zs_engine_prefill(e, a, PROMPT, 10, la, &err) == 0);
    ZT_CHECK(zs_engine_seq_len(e, a) == 10);
    /* fork shares the two full blocks (8 positions) */
    ZT_REQUIRE(zs_engine_seq_fork(e, a, &b, &err) == 0);
    ZT_CHECK(zs_engine_seq_len(e, b) == 8);
    const zs_kv_cache_t *kv = zs_engine_kv(e);
    uint32_t free_before = zs_kv_free_blocks(kv);
    ZT_REQUIRE(zs_engine_prefill(e, b, PROMPT + 8, 2, tmp, &err) == 0);
    ZT_CHECK(zs_kv_free_blocks(kv) == free_before - 1); /* only the partial block is new */
    ZT_CHECK(max_abs_diff(la, tmp, ST_V) < 1e-5f);
    ZT_REQUIRE(zs_engine_seq_new(e, &c, &err) == 0);
    ZT_REQUIRE(zs_engine_prefill(e, c, PROMPT + 3, 5, tmp, &err) == 0);
    ZT_REQUIRE(zs_engine_seq_new(e, &d, &err) == 0);
    ZT_REQUIRE(zs_engine_prefill(e, d, PROMPT + 3, 5, tmp, &err) == 0);
    /* decode a, b, c together for 12 steps (crossing block and window boundaries); d alone
     * follows c's tokens and must match c's logits */
    int32_t na = 30, nb = 31, nc = 32;
    for (int s = 0; s < 12; s++) {
        int32_t seqs[3] = {a, b, c}, ids[3] = {na, nb, nc};
        ZT_REQUIRE(zs_engine_decode(e, 3, seqs, ids, lb, &err) == 0);
        ZT_REQUIRE(zs_engine_decode(e, 1, &d, &nc, tmp, &err) == 0);
        ZT_CHECK(max_abs_diff(lb + 2 * ST_V, tmp, ST_V) < 1e-5f);
        na = (na + 7) % ST_V;
        nb = (nb + 5) % ST_V;
        nc = (nc + 3) % ST_V;
    }
    ZT_CHECK(zs_engine_seq_len(e, a) == 22);
    ZT_CHECK(zs_engine_seq_free(e, b, &err) == 0);
    ZT_CHECK(zs_engine_seq_free(e, b, &err) == ZS_EINVAL);
    zs_engine_free(e);
}

static void test_errors(void) {
    zs_engine_t *e = st_engine(4, 8, 4); /* 16 positions of KV */
    ZT_REQUIRE(e != NULL);
    zs_err_t err = {0};
    int32_t s, s2;
    ZT_REQUIRE(zs_engine_seq_new(e, &s, &err) == 0);
    int32_t bad[3] = {1, 64, 2};
    ZT_CHECK(zs_engine_prefill(e, s, bad, 3, NULL, &err) == ZS_ERANGE);
    ZT_CHECK_STR_CONTAINS(err.msg, "token id 64");
    ZT_CHECK(zs_engine_seq_len(e, s) == 0);
    zs_err_clear(&err);
    bad[1] = -1;
    ZT_CHECK(zs_engine_prefill(e, s, bad, 3, NULL, &err) == ZS_ERANGE);
    zs_err_clear(&err);
    ZT_CHECK(zs_engine_prefill(e, 99, PROMPT, 3, NULL, &err) == ZS_EINVAL);
    zs_err_clear(&err);
    /* KV full: 17 positions need 5 blocks of 4 */
    ZT_CHECK(zs_engine_prefill(e, s, PROMPT, 17, NULL, &err) == ZS_EBUSY);
    ZT_CHECK(zs_engine_seq_len(e, s) == 0);
    zs_err_clear(&err);
    ZT_CHECK(zs_engine_prefill(e, s, PROMPT, 16, NULL, &err) == 0);
    ZT_REQUIRE(zs_engine_seq_new(e, &s2, &err) == 0);
    ZT_CHECK(zs_engine_prefill(e, s2, PROMPT, 1, NULL, &err) == ZS_EBUSY);
    zs_err_clear(&err);
    ZT_CHECK(zs_engine_seq_free(e, s, &err) == 0);
    ZT_CHECK(zs_engine_prefill(e, s2, PROMPT, 1, NULL, &err) == 0);
    /* the same sequence twice in one step */
    int32_t seqs[2] = {s2, s2}, ids[2] = {1, 2};
    ZT_CHECK(zs_engine_decode(e, 2, seqs, ids, NULL, &err) == ZS_EINVAL);
    ZT_CHECK_STR_CONTAINS(err.msg, "twice");
    zs_err_clear(&err);
    zs_engine_free(e);

    /* max_position_embeddings = 40 */
    e = st_engine(4, 64, 64);
    ZT_REQUIRE(e != NULL);
    static int32_t many[41];
    ZT_REQUIRE(zs_engine_seq_new(e, &s, &err) == 0);
    ZT_CHECK(zs_engine_prefill(e, s, many, 41, NULL, &err) == ZS_ERANGE);
    ZT_CHECK_STR_CONTAINS(err.msg, "max_position_embeddings");
    zs_err_clear(&err);
    ZT_CHECK(zs_engine_prefill(e, s, many, 40, NULL, &err) == 0);
    zs_engine_free(e);

    /* this build has no CUDA: the CUDA backend is refused, not crashed */
    zs_engine_opts_t o;
    zs_engine_opts_default(&o);
    o.backend = ZS_BACKEND_CUDA;
    e = NULL;
    ZT_CHECK(zs_engine_create_from(ST_CONFIG, strlen(ST_CONFIG), st_lookup, &g_model, ZS_DEV_CPU,
                                   &o, &e, &err) == ZS_EUNSUPPORTED);
    ZT_CHECK(e == NULL);
    /* KV sized from free GPU memory: CUDA only, fraction in [0, 1] */
    zs_engine_opts_default(&o);
    o.kv_gpu_fraction = 0.5;
    memset(&err, 0, sizeof err);
    ZT_CHECK(zs_engine_create_from(ST_CONFIG, strlen(ST_CONFIG), st_lookup, &g_model, ZS_DEV_CPU,
                                   &o, &e, &err) == ZS_EINVAL);
    ZT_CHECK_STR_CONTAINS(err.msg, "kv_gpu_fraction");
    o.backend = ZS_BACKEND_CUDA;
    o.kv_gpu_fraction = 1.5;
    ZT_CHECK(zs_engine_create_from(ST_CONFIG, strlen(ST_CONFIG), st_lookup, &g_model, ZS_DEV_CPU,
                                   &o, &e, &err) == ZS_EINVAL);
    ZT_CHECK(e == NULL);
}

static void test_weight_errors(void) {
    zs_engine_t *e = NULL;
    zs_err_t err = {0};
    /* wrong shape */
    int64_t save = g_model.t[3].shape[0];
    char name[64];
    snprintf(name, sizeof name, "%s", g_model.t[3].name);
    g_model.t[3].shape[0] = save + 1;
    ZT_CHECK(zs_engine_create_from(ST_CONFIG, strlen(ST_CONFIG), st_lookup, &g_model, ZS_DEV_CPU,
                                   NULL, &e, &err) == ZS_EFORMAT);
    ZT_CHECK_STR_CONTAINS(err.msg, name);
    g_model.t[3].shape[0] = save;
    zs_err_clear(&err);
    /* missing tensor */
    g_model.t[5].name[0] = 'X';
    memcpy(name, g_model.t[5].name + 1, sizeof name - 1);
    name[sizeof name - 1] = '\0';
    ZT_CHECK(zs_engine_create_from(ST_CONFIG, strlen(ST_CONFIG), st_lookup, &g_model, ZS_DEV_CPU,
                                   NULL, &e, &err) == ZS_ENOENT);
    ZT_CHECK_STR_CONTAINS(err.msg, name);
    g_model.t[5].name[0] = 'm';
    zs_err_clear(&err);
    /* weights on a GPU cannot feed the CPU backend */
    ZT_CHECK(zs_engine_create_from(ST_CONFIG, strlen(ST_CONFIG), st_lookup, &g_model, ZS_DEV_CUDA,
                                   NULL, &e, &err) == ZS_EINVAL);
    ZT_CHECK(e == NULL);
}

static void test_config_errors(void) {
    static const struct {
        const char *json, *needle;
    } cases[] = {
        {"{\"architectures\":[\"GPT2LMHeadModel\"]}", "architectures[0]"},
        {"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64}", "intermediate_size"},
        {"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":8,"
         "\"num_hidden_layers\":1,\"num_attention_heads\":5,\"vocab_size\":9}",
         "hidden_size"},
        {"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":8,"
         "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"num_key_value_heads\":3,"
         "\"vocab_size\":9}",
         "num_key_value_heads"},
        {"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":8,"
         "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":9,"
         "\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":2}}",
         "rope_scaling.type \"dynamic\" is not supported"},
        {"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":-64}", "hidden_size"},
        {"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":8,"
         "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":9,"
         "\"hidden_act\":\"gelu\"}",
         "hidden_act"},
        {"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":8,"
         "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":9,"
         "\"eos_token_id\":[2,9]}",
         "eos_token_id[1]"},
        {"[1,2]", "top level"},
        {"{", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        zs_model_config_t c;
        zs_err_t err = {0};
        int rc = zs_model_config_parse(cases[i].json, strlen(cases[i].json), &c, &err);
        ZT_CHECK_MSG(rc < 0, "case %zu accepted", i);
        ZT_CHECK_STR_CONTAINS(err.msg, cases[i].needle);
    }
    zs_model_config_t c;
    zs_err_t err = {0};
    ZT_CHECK(zs_model_config_parse(ST_CONFIG, strlen(ST_CONFIG), &c, &err) == 0);
    ZT_CHECK(c.arch == ZS_ARCH_MISTRAL && c.sliding_window == 5 && c.head_dim == 8);
    ZT_CHECK(zs_model_layer_window(&c, 0) == 5 && zs_model_layer_window(&c, 1) == 5);
    ZT_CHECK(c.n_eos == 1 && c.eos_ids[0] == 2 && c.bos_id == -1);
}

static int self_test(void) {
    if (st_build(&g_model) != 0) {
        fprintf(stderr, "out of memory building the self-test model\n");
        st_free(&g_model);
        return 1;
    }
    ZT_RUN(test_config_errors);
    ZT_RUN(test_chunking_invariance);
    ZT_RUN(test_batched_decode_and_fork);
    ZT_RUN(test_errors);
    ZT_RUN(test_weight_errors);
    st_free(&g_model);
    return ZT_DONE();
}

int main(int argc, char **argv) {
    if (argc == 1) return self_test();
    if (strcmp(argv[1], "logits") == 0) return mode_logits(argc, argv);
    if (strcmp(argv[1], "greedy") == 0) return mode_greedy(argc, argv);
    if (strcmp(argv[1], "config") == 0 && argc == 3) return mode_config(argv[2]);
    if (strcmp(argv[1], "check") == 0 && argc == 3) return mode_check(argv[2]);
    fprintf(stderr, "usage: %s [logits DIR [opts] ids... | greedy DIR N [opts] ids... | "
                    "config FILE | check DIR]\n",
            argv[0]);
    return 2;
}
