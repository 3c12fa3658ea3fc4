/* Request-arrival predictor (src/server/arrival_predict.c) on synthetic arrival histories: regular
 * patterns, irregular ones, decay of the rate, overdue predictions, edge cases. */
#include <math.h>

#include "server/arrival_predict.h"

#include "zt.h"

static zs_pred_t periodic(double period, int n, double t0) {
    zs_pred_t p;
    zs_pred_init(&p, 600);
    for (int i = 0; i < n; i++) zs_pred_observe(&p, t0 + i * period);
    return p;
}

static void test_no_history(void) {
    zs_pred_t p;
    zs_pred_init(&p, 0);
    ZT_CHECK(p.half_life_s == 300);
    ZT_CHECK(zs_pred_prob(&p, 100, 10) == 0);
    ZT_CHECK(zs_pred_rate(&p, 100) == 0);
    ZT_CHECK(zs_pred_next(&p, NULL) < 0);
    zs_pred_observe(&p, 5);
    ZT_CHECK(zs_pred_prob(&p, 5, 0) == 0); /* an empty window */
    ZT_CHECK(zs_pred_prob(&p, 5, -1) == 0);
}

static void test_regular_pattern_predicts_next(void) {
    zs_pred_t p = periodic(10, 4, 1000); /* arrivals at 1000, 1010, 1020, 1030 */
    double sd = 0;
    double next = zs_pred_next(&p, &sd);
    ZT_CHECK(fabs(next - 1040) < 1e-9);
    ZT_CHECK(sd >= 0.5 - 1e-12 && sd < 1); /* 5% of the gap: perfectly regular */
    /* right after an arrival: the next one is far outside a 2 s window */
    ZT_CHECK(zs_pred_prob(&p, 1030.1, 2) < 0.05);
    /* 2 s before it: half the spread falls in a 2 s window */
    double half = zs_pred_prob(&p, 1038, 2);
    ZT_CHECK(half > 0.4 && half < 0.6);
    /* 1 s before: almost certain within 2 s */
    ZT_CHECK(zs_pred_prob(&p, 1039, 2) > 0.95);
    /* probability grows as the expected arrival approaches */
    double prev = 0;
    for (double t = 1031; t <= 1039; t += 0.5) {
        double pr = zs_pred_prob(&p, t, 2);
        ZT_CHECK(pr >= prev - 1e-4); /* the decaying rate part may shrink a little */
        prev = pr;
    }
    /* due any moment while it is late by less than three spreads */
    ZT_CHECK(zs_pred_prob(&p, 1040.5, 1) > 0.9);
    /* overdue: the pattern broke, only the (low) rate remains */
    double overdue = zs_pred_prob(&p, 1045, 2);
    ZT_CHECK(overdue < 0.05);
    ZT_CHECK(overdue > 0); /* the decayed rate still says something */
}

static void test_two_arrivals_are_not_a_pattern(void) {
    zs_pred_t p = periodic(10, 2, 0);
    ZT_CHECK(zs_pred_next(&p, NULL) < 0);
    ZT_CHECK(zs_pred_prob(&p, 8, 2) < 0.05);
}

static void test_irregular_gaps_are_not_a_pattern(void) {
    zs_pred_t p;
    zs_pred_init(&p, 600);
    double t = 0;
    const double gaps[] = {2, 30, 5, 60, 3, 45};
    zs_pred_observe(&p, t);
    for (size_t i = 0; i < sizeof gaps / sizeof gaps[0]; i++) zs_pred_observe(&p, t += gaps[i]);
    ZT_CHECK(zs_pred_next(&p, NULL) < 0);
    ZT_CHECK(zs_pred_prob(&p, t + 20, 2) < 0.1);
}

static void test_small_jitter_still_a_pattern(void) {
    zs_pred_t p;
    zs_pred_init(&p, 600);
    const double t[] = {0, 10.2, 19.9, 30.1, 40.0, 49.8};
    for (int i = 0; i < 6; i++) zs_pred_observe(&p, t[i]);
    double sd = 0, next = zs_pred_next(&p, &sd);
    ZT_CHECK(next > 59 && next < 61);
    ZT_CHECK(sd > 0 && sd < 2.5);
    ZT_CHECK(zs_pred_prob(&p, next - 0.5, 2) > 0.7);
}

static void test_rate_is_frequency_and_decays(void) {
    /* about one a second, irregularly (gaps 0.2 s and 1.8 s): no pattern, only a rate */
    zs_pred_t p;
    zs_pred_init(&p, 600);
    double t = 0;
    for (int i = 0; i < 2000; i++) zs_pred_observe(&p, t += i % 2 ? 1.8 : 0.2);
    ZT_CHECK(zs_pred_next(&p, NULL) < 0);
    double r = zs_pred_rate(&p, t);
    ZT_CHECK(r > 0.8 && r < 1.05); /* builds up towards 1/s over a few half-lives */
    /* a busy model: likely within a few seconds by frequency alone */
    ZT_CHECK(zs_pred_prob(&p, t, 5) > 0.7);
    /* the rate halves every half-life */
    ZT_CHECK(fabs(zs_pred_rate(&p, t + 600) - r / 2) < 1e-9);
    /* long quiet: nothing predicted */
    ZT_CHECK(zs_pred_prob(&p, t + 6000, 5) < 0.01);
    /* rare arrivals give a low rate */
    zs_pred_t q;
    zs_pred_init(&q, 600);
    zs_pred_observe(&q, 0);
    ZT_CHECK(zs_pred_prob(&q, 1, 5) < 0.01);
}

static void test_out_of_order_arrival(void) {
    zs_pred_t p = periodic(10, 3, 100);
    double last = p.t_last;
    zs_pred_observe(&p, 50); /* an arrival from before the last: counts as simultaneous */
    ZT_CHECK(p.t_last == last);
    ZT_CHECK(p.n == 4);
    ZT_CHECK(p.gap < 10); /* a zero gap pulled the mean down */
    double pr = zs_pred_prob(&p, 130, 5);
    ZT_CHECK(pr >= 0 && pr <= 1);
}

int main(void) {
    ZT_RUN(test_no_history);
    ZT_RUN(test_regular_pattern_predicts_next);
    ZT_RUN(test_two_arrivals_are_not_a_pattern);
    ZT_RUN(test_irregular_gaps_are_not_a_pattern);
    ZT_RUN(test_small_jitter_still_a_pattern);
    ZT_RUN(test_rate_is_frequency_and_decays);
    ZT_RUN(test_out_of_order_arrival);
    return ZT_DONE();
}
