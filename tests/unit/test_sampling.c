/* Unit tests of token sampling: greedy and top-k=1, seeded determinism, the distributions that
 * temperature / top-p / min-p / top-k leave (counted over many seeded draws, with bounds many
 * standard deviations wide so they cannot flake; the draws are deterministic anyway), the
 * penalties moving the argmax, stop conditions and parameter validation. */
#include <math.h>
#include <stdlib.h>

#include "zerostart/sampling.h"
#include "zt.h"

#define V 16

static void fill(float *lg, const double *probs, int n) {
    for (int i = 0; i < V; i++) lg[i] = -INFINITY;
    for (int i = 0; i < n; i++) lg[i] = (float)log(probs[i]);
}

/* Draws `draws` tokens with fresh copies of the logits; counts them. */
static int count_draws(zs_sampling_params_t *p, const float *lg, int draws, int *counts) {
    zs_sampler_t s;
    zs_err_t err = {0};
    if (zs_sampler_init(&s, p, V, &err)) return -1;
    for (int i = 0; i < V; i++) counts[i] = 0;
    float tmp[V];
    for (int d = 0; d < draws; d++) {
        memcpy(tmp, lg, sizeof tmp);
        int32_t t = -1;
        if (zs_sampler_sample(&s, tmp, &t, &err) || t < 0 || t >= V) {
            zs_sampler_free(&s);
            return -1;
        }
        counts[t]++;
    }
    zs_sampler_free(&s);
    return 0;
}

static void test_greedy_and_top_k1(void) {
    float lg[V];
    for (int i = 0; i < V; i++) lg[i] = (float)((i * 7) % 11) * 0.1f;
    lg[9] = 3.0f;
    zs_sampling_params_t p;
    zs_sampling_params_default(&p);
    p.temperature = 0;
    int c[V];
    ZT_REQUIRE(count_draws(&p, lg, 50, c) == 0);
    ZT_CHECK(c[9] == 50);
    zs_sampling_params_default(&p);
    p.top_k = 1;
    p.temperature = 2.0f;
    for (uint64_t seed = 0; seed < 20; seed++) {
        p.seed = seed;
        ZT_REQUIRE(count_draws(&p, lg, 10, c) == 0);
        ZT_CHECK(c[9] == 10);
    }
    /* ties go to the lower id */
    lg[3] = 3.0f;
    zs_sampling_params_default(&p);
    p.temperature = 0;
    ZT_REQUIRE(count_draws(&p, lg, 5, c) == 0);
    ZT_CHECK(c[3] == 5);
}

static void test_seed_determinism(void) {
    float lg[V];
    for (int i = 0; i < V; i++) lg[i] = 0.0f; /* uniform */
    zs_sampling_params_t p;
    zs_sampling_params_default(&p);
    zs_err_t err = {0};
    int32_t a[64], b[64], c[64];
    zs_sampler_t s;
    for (int run = 0; run < 3; run++) {
        p.seed = run == 2 ? 43 : 42;
        ZT_REQUIRE(zs_sampler_init(&s, &p, V, &err) == 0);
        for (int i = 0; i < 64; i++) {
            float tmp[V];
            memcpy(tmp, lg, sizeof tmp);
            int32_t *dst = run == 0 ? a : run == 1 ? b : c;
            ZT_REQUIRE(zs_sampler_sample(&s, tmp, &dst[i], &err) == 0);
        }
        zs_sampler_free(&s);
    }
    ZT_CHECK(memcmp(a, b, sizeof a) == 0);
    ZT_CHECK(memcmp(a, c, sizeof a) != 0);
    /* the generator itself: same seed, same stream; uniform in [0, 1) */
    uint64_t r1[4], r2[4];
    zs_rng_seed(r1, 7);
    zs_rng_seed(r2, 7);
    for (int i = 0; i < 100; i++) ZT_CHECK(zs_rng_next(r1) == zs_rng_next(r2));
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        double u = zs_rng_uniform(r1);
        ZT_CHECK(u >= 0 && u < 1);
        sum += u;
    }
    ZT_CHECK(fabs(sum / 10000 - 0.5) < 0.03); /* sd of the mean ~0.003 */
}

static void test_plain_distribution(void) {
    const double pr[4] = {0.5, 0.25, 0.125, 0.125};
    float lg[V];
    fill(lg, pr, 4);
    zs_sampling_params_t p;
    zs_sampling_params_default(&p);
    p.seed = 1;
    int c[V];
    const int N = 40000;
    ZT_REQUIRE(count_draws(&p, lg, N, c) == 0);
    for (int i = 0; i < 4; i++)
        ZT_CHECK_MSG(fabs((double)c[i] / N - pr[i]) < 0.02, "token %d: %d draws", i, c[i]);
    for (int i = 4; i < V; i++) ZT_CHECK(c[i] == 0); /* -inf logits are never drawn */
}

static void test_temperature(void) {
    const double pr[2] = {0.6, 0.4};
    float lg[V];
    fill(lg, pr, 2);
    zs_sampling_params_t p;
    zs_sampling_params_default(&p);
    p.seed = 5;
    p.temperature = 0.25f; /* p ~ 0.6^4 : 0.4^4 = 0.835 : 0.165 */
    int c[V];
    const int N = 20000;
    ZT_REQUIRE(count_draws(&p, lg, N, c) == 0);
    double want = pow(0.6, 4) / (pow(0.6, 4) + pow(0.4, 4));
    ZT_CHECK_MSG(fabs((double)c[0] / N - want) < 0.03, "%d", c[0]);
    p.temperature = 4.0f; /* flatter: 0.6^.25 : 0.4^.25 -> 0.525 */
    ZT_REQUIRE(count_draws(&p, lg, N, c) == 0);
    want = pow(0.6, 0.25) / (pow(0.6, 0.25) + pow(0.4, 0.25));
    ZT_CHECK_MSG(fabs((double)c[0] / N - want) < 0.03, "%d", c[0]);
}

static void test_top_p_top_k_min_p(void) {
    const double pr[4] = {0.5, 0.3, 0.15, 0.05};
    float lg[V];
    fill(lg, pr, 4);
    zs_sampling_params_t p;
    zs_sampling_params_default(&p);
    p.seed = 9;
    int c[V];
    const int N = 20000;
    /* top_p 0.7: {0, 1} survive (0.5 < 0.7 <= 0.8), renormalized to 0.625 / 0.375 */
    p.top_p = 0.7f;
    ZT_REQUIRE(count_draws(&p, lg, N, c) == 0);
    ZT_CHECK(c[2] == 0 && c[3] == 0);
    ZT_CHECK_MSG(fabs((double)c[0] / N - 0.625) < 0.03, "%d", c[0]);
    /* top_p 0.4: only the first */
    p.top_p = 0.4f;
    ZT_REQUIRE(count_draws(&p, lg, 1000, c) == 0);
    ZT_CHECK(c[0] == 1000);
    /* top_k 3: token 3 never; the others keep their ratios 0.5 : 0.3 : 0.15 */
    zs_sampling_params_default(&p);
    p.seed = 10;
    p.top_k = 3;
    ZT_REQUIRE(count_draws(&p, lg, N, c) == 0);
    ZT_CHECK(c[3] == 0);
    ZT_CHECK_MSG(fabs((double)c[2] / N - 0.15 / 0.95) < 0.03, "%d", c[2]);
    /* min_p 0.2: threshold 0.1, token 3 (0.05) goes, token 2 (0.15) stays */
    zs_sampling_params_default(&p);
    p.seed = 11;
    p.min_p = 0.2f;
    ZT_REQUIRE(count_draws(&p, lg, N, c) == 0);
    ZT_CHECK(c[3] == 0);
    ZT_CHECK(c[2] > N / 10);
    /* min_p 0.7: only token 0 (0.3 < 0.35) */
    p.min_p = 0.7f;
    ZT_REQUIRE(count_draws(&p, lg, 1000, c) == 0);
    ZT_CHECK(c[0] == 1000);
}

static int32_t greedy_after(zs_sampling_params_t *p, const int32_t *prompt, int np,
                            const int32_t *gen, int ng) {
    float lg[V];
    for (int i = 0; i < V; i++) lg[i] = -1.0f;
    lg[0] = 2.0f;
    lg[1] = 1.9f;
    lg[2] = -0.5f;
    lg[3] = -0.45f;
    zs_sampler_t s;
    zs_err_t err = {0};
    p->temperature = 0;
    if (zs_sampler_init(&s, p, V, &err)) return -100;
    if (zs_sampler_add_prompt(&s, prompt, (size_t)np, &err)) return -101;
    for (int i = 0; i < ng; i++)
        if (zs_sampler_accept(&s, gen[i], &err) < 0) return -102;
    int32_t t = -1;
    if (zs_sampler_sample(&s, lg, &t, &err)) t = -103;
    zs_sampler_free(&s);
    return t;
}

static void test_penalties(void) {
    zs_sampling_params_t p;
    const int32_t zero[1] = {0}, two[2] = {0, 0}, three[1] = {3};
    zs_sampling_params_default(&p);
    ZT_CHECK(greedy_after(&p, NULL, 0, NULL, 0) == 0);
    /* repetition: positive logit divided (2.0 / 1.5 < 1.9), prompt tokens count */
    p.repetition_penalty = 1.5f;
    ZT_CHECK(greedy_after(&p, zero, 1, NULL, 0) == 1);
    ZT_CHECK(greedy_after(&p, NULL, 0, zero, 1) == 1);
    p.repetition_penalty = 1.01f;
    ZT_CHECK(greedy_after(&p, zero, 1, NULL, 0) == 0);
    /* negative logits are multiplied: with the prompt [3], -0.45 * 1.5 drops below -0.5
     * (tested through the top two being removed by penalties) */
    zs_sampling_params_default(&p);
    p.presence_penalty = 10.0f;
    const int32_t both[2] = {0, 1};
    ZT_CHECK(greedy_after(&p, NULL, 0, both, 2) == 3);
    p.repetition_penalty = 1.5f;
    ZT_CHECK(greedy_after(&p, three, 1, both, 2) == 2);
    /* presence: once, regardless of count; applies to generated tokens only */
    zs_sampling_params_default(&p);
    p.presence_penalty = 0.5f;
    ZT_CHECK(greedy_after(&p, zero, 1, NULL, 0) == 0);
    ZT_CHECK(greedy_after(&p, NULL, 0, zero, 1) == 1);
    /* frequency: per occurrence (0.06 once keeps 0 on top, twice does not) */
    zs_sampling_params_default(&p);
    p.frequency_penalty = 0.06f;
    ZT_CHECK(greedy_after(&p, NULL, 0, zero, 1) == 0);
    ZT_CHECK(greedy_after(&p, NULL, 0, two, 2) == 1);
}

static int stop_on_pair(void *ctx, const int32_t *toks, size_t n) {
    int *calls = ctx;
    (*calls)++;
    return n >= 2 && toks[n - 2] == 4 && toks[n - 1] == 5;
}

static void test_stops_and_validation(void) {
    zs_sampling_params_t p;
    zs_sampler_t s;
    zs_err_t err = {0};
    const int32_t stops[2] = {7, 2};
    zs_sampling_params_default(&p);
    p.stop_ids = stops;
    p.nstop = 2;
    p.max_tokens = 4;
    int calls = 0;
    p.stop_check = stop_on_pair;
    p.stop_ctx = &calls;
    ZT_REQUIRE(zs_sampler_init(&s, &p, V, &err) == 0);
    ZT_CHECK(zs_sampler_accept(&s, 1, &err) == ZS_SAMPLE_CONTINUE);
    ZT_CHECK(zs_sampler_accept(&s, 4, &err) == ZS_SAMPLE_CONTINUE);
    ZT_CHECK(zs_sampler_accept(&s, 5, &err) == ZS_SAMPLE_STOP_HOOK);
    ZT_CHECK(calls == 3);
    ZT_CHECK(zs_sampler_accept(&s, 2, &err) == ZS_SAMPLE_STOP_TOKEN);
    ZT_CHECK(zs_sampler_accept(&s, 16, &err) == ZS_ERANGE);
    ZT_CHECK_STR_CONTAINS(err.msg, "token id 16");
    zs_sampler_free(&s);
    p.stop_check = NULL;
    ZT_REQUIRE(zs_sampler_init(&s, &p, V, &err) == 0);
    for (int i = 0; i < 3; i++) ZT_CHECK(zs_sampler_accept(&s, 1, &err) == ZS_SAMPLE_CONTINUE);
    ZT_CHECK(zs_sampler_accept(&s, 1, &err) == ZS_SAMPLE_STOP_MAX);
    zs_sampler_free(&s);

    /* NaN logits and all -inf are errors */
    zs_sampling_params_default(&p);
    ZT_REQUIRE(zs_sampler_init(&s, &p, V, &err) == 0);
    float lg[V];
    for (int i = 0; i < V; i++) lg[i] = -INFINITY;
    int32_t t;
    zs_err_clear(&err);
    ZT_CHECK(zs_sampler_sample(&s, lg, &t, &err) == ZS_EINVAL);
    lg[4] = NAN;
    zs_err_clear(&err);
    ZT_CHECK(zs_sampler_sample(&s, lg, &t, &err) == ZS_EINVAL);
    ZT_CHECK_STR_CONTAINS(err.msg, "token 4");
    const int32_t badprompt[2] = {1, 99};
    zs_err_clear(&err);
    ZT_CHECK(zs_sampler_add_prompt(&s, badprompt, 2, &err) == ZS_ERANGE);
    ZT_CHECK_STR_CONTAINS(err.msg, "token id 99");
    zs_sampler_free(&s);

    int nb = 0;
#define BAD(body, name)                                                                          \
    do {                                                                                         \
        zs_sampling_params_default(&p);                                                          \
        body;                                                                                    \
        zs_err_clear(&err);                                                                      \
        ZT_CHECK(zs_sampler_init(&s, &p, V, &err) < 0);                                          \
        ZT_CHECK_STR_CONTAINS(err.msg, name);                                                    \
        nb++;                                                                                    \
    } while (0)
    BAD(p.temperature = -1, "temperature");
    BAD(p.temperature = NAN, "temperature");
    BAD(p.top_p = 0, "top_p");
    BAD(p.top_p = 1.5f, "top_p");
    BAD(p.min_p = -0.1f, "min_p");
    BAD(p.top_k = -2, "top_k");
    BAD(p.repetition_penalty = 0, "repetition_penalty");
    BAD(p.presence_penalty = INFINITY, "presence_penalty");
    BAD(p.frequency_penalty = NAN, "frequency_penalty");
    BAD(p.max_tokens = -1, "max_tokens");
    BAD((p.stop_ids = stops, p.nstop = 2, p.stop_ids = (const int32_t[]){3, 16}), "stop token id 16");
#undef BAD
    ZT_CHECK(nb == 11);
}

int main(void) {
    ZT_RUN(test_greedy_and_top_k1);
    ZT_RUN(test_seed_determinism);
    ZT_RUN(test_plain_distribution);
    ZT_RUN(test_temperature);
    ZT_RUN(test_top_p_top_k_min_p);
    ZT_RUN(test_penalties);
    ZT_RUN(test_stops_and_validation);
    return ZT_DONE();
}
