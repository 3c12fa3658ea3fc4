/* Token sampling: parameter validation, penalties, greedy / temperature / top-k / top-p /
 * min-p selection with a per-request xoshiro256** generator, and stop decisions (stop ids,
 * max tokens, a stop-string hook). */
#include "zerostart/sampling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float v;
    int32_t id;
} cand_t;

void zs_sampling_params_default(zs_sampling_params_t *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void zs_rng_seed(uint64_t st[4], uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) st[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t zs_rng_next(uint64_t s[4]) {
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double zs_rng_uniform(uint64_t st[4]) { return (double)(zs_rng_next(st) >> 11) * 0x1p-53; }

void zs_sampler_free(zs_sampler_t *s) {
    if (s == NULL) return;
    free(s->stop_ids);
    free(s->counts);
    free(s->seen);
    free(s->generated);
    free(s->work);
    memset(s, 0, sizeof *s);
}

int zs_sampler_init(zs_sampler_t *s, const zs_sampling_params_t *p, int32_t vocab, zs_err_t *err) {
    memset(s, 0, sizeof *s);
    if (p == NULL) return zs_err_set(err, ZS_EINVAL, "sampling: NULL parameters");
    if (vocab < 1) return zs_err_set(err, ZS_EINVAL, "sampling: vocabulary size %d", vocab);
    if (!isfinite(p->temperature) || p->temperature < 0)
        return zs_err_set(err, ZS_EINVAL, "sampling: temperature %g must be >= 0",
                          (double)p->temperature);
    if (p->top_k < 0)
        return zs_err_set(err, ZS_EINVAL, "sampling: top_k %d must be >= 0", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return zs_err_set(err, ZS_EINVAL, "sampling: top_p %g must be in (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return zs_err_set(err, ZS_EINVAL, "sampling: min_p %g must be in [0, 1]", (double)p->min_p);
    if (!isfinite(p->repetition_penalty) || !(p->repetition_penalty > 0))
        return zs_err_set(err, ZS_EINVAL, "sampling: repetition_penalty %g must be > 0",
                          (double)p->repetition_penalty);
    if (!isfinite(p->presence_penalty))
        return zs_err_set(err, ZS_EINVAL, "sampling: presence_penalty must be finite");
    if (!isfinite(p->frequency_penalty))
        return zs_err_set(err, ZS_EINVAL, "sampling: frequency_penalty must be finite");
    if (p->max_tokens < 0)
        return zs_err_set(err, ZS_EINVAL, "sampling: max_tokens %d must be >= 0", p->max_tokens);
    if (p->nstop < 0 || (p->nstop > 0 && p->stop_ids == NULL))
        return zs_err_set(err, ZS_EINVAL, "sampling: bad stop token list");
    for (int32_t i = 0; i < p->nstop; i++)
        if (p->stop_ids[i] < 0 || p->stop_ids[i] >= vocab)
            return zs_err_set(err, ZS_ERANGE,
                              "sampling: stop token id %d is outside the vocabulary (%d)",
                              p->stop_ids[i], vocab);
    s->p = *p;
    s->vocab = vocab;
    if (p->nstop > 0) {
        s->stop_ids = malloc((size_t)p->nstop * sizeof *s->stop_ids);
        if (s->stop_ids == NULL) goto oom;
        memcpy(s->stop_ids, p->stop_ids, (size_t)p->nstop * sizeof *s->stop_ids);
    }
    s->p.stop_ids = s->stop_ids;
    s->counts = calloc((size_t)vocab, sizeof *s->counts);
    s->seen = calloc((size_t)vocab, 1);
    s->work = malloc((size_t)vocab * sizeof(cand_t));
    if (s->counts == NULL || s->seen == NULL || s->work == NULL) goto oom;
    zs_rng_seed(s->rng, p->seed);
    return 0;
oom:
    zs_sampler_free(s);
    return zs_err_set(err, ZS_ENOMEM, "sampling: out of memory for a %d-token vocabulary", vocab);
}

int zs_sampler_add_prompt(zs_sampler_t *s, const int32_t *ids, size_t n, zs_err_t *err) {
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= s->vocab)
            return zs_err_set(err, ZS_ERANGE,
                              "sampling: prompt token id %d at index %zu is outside the "
                              "vocabulary (%d)",
                              ids[i], i, s->vocab);
        s->seen[ids[i]] = 1;
    }
    return 0;
}

/* Descending by value, then ascending id: a total order, so results are reproducible. */
static int cand_cmp(const void *a, const void *b) {
    const cand_t *x = a, *y = b;
    if (x->v > y->v) return -1;
    if (x->v < y->v) return 1;
    return (x->id > y->id) - (x->id < y->id);
}

int zs_sampler_sample(zs_sampler_t *s, float *logits, int32_t *token, zs_err_t *err) {
    const int32_t V = s->vocab;
    const zs_sampling_params_t *p = &s->p;
    for (int32_t i = 0; i < V; i++)
        if (isnan(logits[i]))
            return zs_err_set(err, ZS_EINVAL, "sampling: logit of token %d is NaN", i);
    /* penalties */
    if (p->repetition_penalty != 1.0f)
        for (int32_t i = 0; i < V; i++)
            if (s->seen[i])
                logits[i] = logits[i] > 0 ? logits[i] / p->repetition_penalty
                                          : logits[i] * p->repetition_penalty;
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f)
        for (int32_t i = 0; i < V; i++)
            if (s->counts[i])
                logits[i] -= p->frequency_penalty * (float)s->counts[i] + p->presence_penalty;

    /* greedy */
    if (p->temperature == 0.0f || p->top_k == 1) {
        int32_t best = -1;
        for (int32_t i = 0; i < V; i++)
            if (logits[i] > -INFINITY && (best < 0 || logits[i] > logits[best])) best = i;
        if (best < 0) return zs_err_set(err, ZS_EINVAL, "sampling: every logit is -inf");
        *token = best;
        return 0;
    }

    cand_t *c = s->work;
    int32_t n = 0;
    for (int32_t i = 0; i < V; i++)
        if (logits[i] > -INFINITY) {
            c[n].v = logits[i] / p->temperature;
            c[n].id = i;
            n++;
        }
    if (n == 0) return zs_err_set(err, ZS_EINVAL, "sampling: every logit is -inf");
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    /* softmax over the survivors, in double */
    const double mx = c[0].v;
    double total = 0;
    double *pr = malloc((size_t)n * sizeof *pr);
    if (pr == NULL) return zs_err_set(err, ZS_ENOMEM, "sampling: out of memory");
    for (int32_t i = 0; i < n; i++) {
        pr[i] = exp((double)c[i].v - mx);
        total += pr[i];
    }
    /* top-p: smallest prefix whose mass reaches top_p */
    if (p->top_p < 1.0f) {
        double cum = 0;
        int32_t keep = 0;
        while (keep < n && cum < (double)p->top_p * total) cum += pr[keep++];
        if (keep < 1) keep = 1;
        n = keep;
    }
    /* min-p: relative to the most likely token (pr[0] is the max) */
    if (p->min_p > 0) {
        const double thr = (double)p->min_p * pr[0];
        int32_t keep = 1;
        while (keep < n && pr[keep] >= thr) keep++;
        n = keep;
    }
    double mass = 0;
    for (int32_t i = 0; i < n; i++) mass += pr[i];
    double u = zs_rng_uniform(s->rng) * mass;
    int32_t pick = n - 1;
    for (int32_t i = 0; i < n; i++) {
        if (u < pr[i]) {
            pick = i;
            break;
        }
        u -= pr[i];
    }
    *token = c[pick].id;
    free(pr);
    return 0;
}

int zs_sampler_accept(zs_sampler_t *s, int32_t token, zs_err_t *err) {
    if (token < 0 || token >= s->vocab)
        return zs_err_set(err, ZS_ERANGE, "sampling: token id %d is outside the vocabulary (%d)",
                          token, s->vocab);
    if (s->ngen == s->capgen) {
        size_t cap = s->capgen ? s->capgen * 2 : 64;
        int32_t *g = realloc(s->generated, cap * sizeof *g);
        if (g == NULL) return zs_err_set(err, ZS_ENOMEM, "sampling: out of memory");
        s->generated = g;
        s->capgen = cap;
    }
    s->generated[s->ngen++] = token;
    if (s->counts[token] < UINT32_MAX) s->counts[token]++;
    s->seen[token] = 1;
    for (int32_t i = 0; i < s->p.nstop; i++)
        if (s->stop_ids[i] == token) return ZS_SAMPLE_STOP_TOKEN;
    if (s->p.stop_check && s->p.stop_check(s->p.stop_ctx, s->generated, s->ngen))
        return ZS_SAMPLE_STOP_HOOK;
    if (s->p.max_tokens > 0 && s->ngen >= (size_t)s->p.max_tokens) return ZS_SAMPLE_STOP_MAX;
    return ZS_SAMPLE_CONTINUE;
}
