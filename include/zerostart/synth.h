/* Synthetic Llama-architecture checkpoints in Hugging Face layout (config.json, safetensors
 * shards, model.safetensors.index.json) with random weights: the built-in model of
 * `make demo` and the 8B- and 70B-shaped models of the benchmarks. */
#ifndef ZEROSTART_SYNTH_H
#define ZEROSTART_SYNTH_H

#include <stdint.h>

#include "zerostart/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zs_synth_shape {
    const char *name;
    int hidden, layers, intermediate, heads, kv_heads, vocab;
    int shards;
} zs_synth_shape_t;

/* Known shapes: "tiny" (a few MB), "small" (~0.5 GB), "llama3-8b" (16.06 GB), "llama3-70b"
 * (141.1 GB) and "llama3-70b-40l" (the 70B shape with 40 layers, 72.7 GB). NULL if unknown. */
const zs_synth_shape_t *zs_synth_shape(const char *name);
/* Total tensor bytes of a shape (bf16). */
uint64_t zs_synth_bytes(const zs_synth_shape_t *s);
/* Writes the checkpoint into dir (created if missing). Deterministic for a given seed. */
int zs_synth_write(const char *dir, const zs_synth_shape_t *s, uint64_t seed, zs_err_t *err);

#ifdef __cplusplus
}
#endif
#endif
