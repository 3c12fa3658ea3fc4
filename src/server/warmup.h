/* Kernel warm-up, once per server process and model: a throw-away forward pass through a
 * freshly started engine — a short prefill, decode steps of one and of two sequences,
 * prefills of 64 and 512 tokens and of a full scheduler step — so that what a backend pays on first use (CUDA module
 * loading, cuBLAS kernel selection and loading, first launches of every kernel, lazily sized
 * scratch buffers, decode-graph capture) is paid at server start, never on a request path:
 * the process keeps its CUDA context and loaded modules across scale-to-zero, so a model
 * brought back later runs warm. The engine is left as found (no sequence, every KV block
 * free). */
#ifndef ZS_SERVER_WARMUP_H
#define ZS_SERVER_WARMUP_H

#include <stdint.h>

#include "zerostart/engine.h"
#include "zerostart/err.h"

/* step_tokens: the scheduler's step budget; ctx: the served context length. *prefill_tokens
 * and *prefill_s (may be NULL) get the size and duration of the full-step prefill (0 when it
 * did not run): a first measure of the prefill rate for the KV cost model. */
int zs_srv_warmup(zs_engine_t *e, int32_t step_tokens, int64_t ctx, int64_t *prefill_tokens, double *prefill_s,
                  zs_err_t *err);

#endif
