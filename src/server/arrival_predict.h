/* Request-arrival predictor of one model, for pre-warming: pure arithmetic over the arrival
 * times it is shown (no clock, no threads, no allocation), so tests drive it with synthetic
 * histories. Two estimates, the larger wins:
 *  - frequency: an exponentially decayed arrival rate (half-life `half_life_s`), read as a
 *    Poisson process: P(an arrival within w seconds) = 1 - exp(-rate * w);
 *  - recency / periodicity: an exponentially weighted mean of the gaps between arrivals and of
 *    their deviation; when at least three arrivals were seen and the gaps are regular (mean
 *    absolute deviation at most a quarter of the mean gap), the next arrival is expected at
 *    last + gap with a normal spread, and P is the chance it falls in [now, now + w] given it
 *    has not come before now (0 once it is overdue by more than three spreads). */
#ifndef ZS_SERVER_ARRIVAL_PREDICT_H
#define ZS_SERVER_ARRIVAL_PREDICT_H

#include <stdint.h>

typedef struct zs_pred {
    double half_life_s;          /* decay of the rate estimate */
    double rate;                 /* arrivals per second, as of t_last */
    double t_last;               /* last arrival; meaningless while n == 0 */
    double gap;                  /* weighted mean gap (seconds); 0 until the second arrival */
    double dev;                  /* weighted mean absolute deviation of the gaps */
    uint64_t n;                  /* arrivals seen */
} zs_pred_t;

/* Weight of the newest gap in the running means. */
#define ZS_PRED_GAP_WEIGHT 0.3
/* Gaps count as regular when dev <= this fraction of the mean gap. */
#define ZS_PRED_REGULAR 0.25

/* half_life_s <= 0 picks 300 s. */
void zs_pred_init(zs_pred_t *p, double half_life_s);
/* One arrival at time t (seconds on any monotonic clock). An arrival earlier than the last one
 * counts as simultaneous with it. */
void zs_pred_observe(zs_pred_t *p, double t);
/* Decayed arrival rate (per second) at time now. */
double zs_pred_rate(const zs_pred_t *p, double now);
/* Expected time of the next arrival from a regular pattern, with its spread in *sigma (may be
 * NULL); -1 when there is no regular pattern (fewer than three arrivals, irregular gaps). */
double zs_pred_next(const zs_pred_t *p, double *sigma);
/* Probability, in [0, 1], that the next arrival comes within [now, now + window_s]. */
double zs_pred_prob(const zs_pred_t *p, double now, double window_s);

#endif
