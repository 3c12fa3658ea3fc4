/* Kernel warm-up, once per server process and model: a throw-away forward pass through a
 * freshly started engine — a short prefill, decode steps of one and of two sequences, and a
 * prefill of a full scheduler step — so that what a backend pays on first use (CUDA module
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

/* step_tokens: the scheduler's step budget; ctx: the served context length. */
int zs_srv_warmup(zs_engine_t *e, int32_t step_tokens, int64_t ctx, zs_err_t *err);

#endif
