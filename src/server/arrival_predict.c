/* Request-arrival predictor (arrival_predict.h): decayed rate and regular-gap estimates. */
#include "server/arrival_predict.h"

#include <math.h>

void zs_pred_init(zs_pred_t *p, double half_life_s) {
    p->half_life_s = half_life_s > 0 ? half_life_s : 300.0;
    p->rate = 0;
    p->t_last = 0;
    p->gap = 0;
    p->dev = 0;
    p->n = 0;
}

/* exp(-ln2 * dt / half-life): the weight an arrival dt seconds old still has. */
static double decay(const zs_pred_t *p, double dt) {
    return dt > 0 ? exp2(-dt / p->half_life_s) : 1.0;
}

void zs_pred_observe(zs_pred_t *p, double t) {
    const double lambda = log(2.0) / p->half_life_s;
    if (p->n == 0) {
        p->rate = lambda;
        p->t_last = t;
        p->n = 1;
        return;
    }
    double g = t > p->t_last ? t - p->t_last : 0;
    p->rate = p->rate * decay(p, g) + lambda;
    if (p->n == 1) {
        p->gap = g;
        p->dev = 0;
    } else {
        p->dev = (1 - ZS_PRED_GAP_WEIGHT) * p->dev + ZS_PRED_GAP_WEIGHT * fabs(g - p->gap);
        p->gap = (1 - ZS_PRED_GAP_WEIGHT) * p->gap + ZS_PRED_GAP_WEIGHT * g;
    }
    if (t > p->t_last) p->t_last = t;
    p->n++;
}

double zs_pred_rate(const zs_pred_t *p, double now) {
    if (p->n == 0) return 0;
    return p->rate * decay(p, now - p->t_last);
}

double zs_pred_next(const zs_pred_t *p, double *sigma) {
    if (p->n < 3 || p->gap <= 0 || p->dev > ZS_PRED_REGULAR * p->gap) return -1;
    /* a normal spread from the mean absolute deviation (sigma = 1.25 MAD), never below 5% of
     * the gap or 50 ms: arrivals from clients are never exact */
    double sd = 1.25 * p->dev;
    if (sd < 0.05 * p->gap) sd = 0.05 * p->gap;
    if (sd < 0.05) sd = 0.05;
    if (sigma) *sigma = sd;
    return p->t_last + p->gap;
}

static double norm_cdf(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

double zs_pred_prob(const zs_pred_t *p, double now, double window_s) {
    if (p->n == 0 || !(window_s > 0)) return 0;
    double poisson = 1.0 - exp(-zs_pred_rate(p, now) * window_s);
    double periodic = 0, sd = 0;
    double next = zs_pred_next(p, &sd);
    if (next >= 0 && now <= next + 3 * sd) {
        double lo = norm_cdf((now - next) / sd), hi = norm_cdf((now + window_s - next) / sd);
        double left = 1.0 - lo; /* the arrival has not come before now */
        periodic = left > 1e-12 ? (hi - lo) / left : 0;
    }
    double pr = periodic > poisson ? periodic : poisson;
    return pr < 0 ? 0 : pr > 1 ? 1 : pr;
}
