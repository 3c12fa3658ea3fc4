/* Pre-warming policy: keeps a request-arrival predictor per served model (arrival_predict.h), fed
 * by the router with every queued request, and a thread that, every 50 ms, asks the scheduler
 * of a scaled-to-zero model to load it ahead of time (start-up trigger "prewarm") when the
 * predicted probability of a request within its start-up lead time (1 s + twice its expected
 * start) reaches the threshold and one of its devices is idle. What keeps it from delaying a
 * live request lives where the decisions are made: the start only takes free memory of an
 * idle device and never while a start waits for memory (zs_res_acquire_idle), an unused
 * pre-warm is the first victim of placement, and this thread cancels a pre-warm still loading
 * as soon as another model on its device (or a model waiting for its start) has requests.
 * One pre-warm per observed arrival: a model is not brought back again for the same
 * prediction. */
#ifndef ZS_SERVER_PREWARM_H
#define ZS_SERVER_PREWARM_H

#include "server/log.h"
#include "server/residency.h"
#include "server/serve_model.h"
#include "zerostart/err.h"

typedef struct zs_prewarm zs_prewarm_t;

/* Starts the policy thread over the server's models (their schedulers must exist). threshold:
 * probability in (0, 1]. */
int zs_prewarm_start(zs_srv_model_t *models, int nmodels, zs_res_t *res, double threshold,
                     const zs_slog_t *log, zs_prewarm_t **out, zs_err_t *err);
/* One request for model idx queued at time t (zs_now()); p may be NULL (pre-warming off). */
void zs_prewarm_observe(zs_prewarm_t *p, int idx, double t);
/* Stops and joins the thread (no pre-warm from now on; observing stays safe); idempotent,
 * NULL is a no-op. */
void zs_prewarm_stop(zs_prewarm_t *p);
/* Stops, then frees (no zs_prewarm_observe may run any more); NULL is a no-op. */
void zs_prewarm_free(zs_prewarm_t *p);

#endif
