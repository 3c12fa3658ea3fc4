/* zerostart generation engine: a Llama-family model (see model.h) on a compute backend,
 * with a paged KV cache shared by many sequences. Callers create sequences, append tokens
 * to them in forward steps (prefill: many tokens of one sequence; decode: one token for each
 * of many sequences; any mix works) and get logits back in host memory; sampling is
 * separate (sampling.h). Not thread-safe: one caller drives an engine. See docs/engine.md.
 * A tensor-parallel engine (zs_engine_create_tp) spreads the model over several ranks and is
 * driven through the same calls; see docs/tensor_parallel.md. */
#ifndef ZEROSTART_ENGINE_H
#define ZEROSTART_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/ckpt.h"
#include "zerostart/err.h"
#include "zerostart/kv_cache.h"
#include "zerostart/load.h"
#include "zerostart/model.h"
#include "zerostart/tp.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zs_backend_kind { ZS_BACKEND_CPU = 0, ZS_BACKEND_CUDA = 1 } zs_backend_kind_t;

typedef struct zs_engine_opts {
    zs_backend_kind_t backend;
    int threads;                  /* CPU backend threads (per rank); 0 = all online CPUs
                                     (tensor parallel: shared out between the ranks) */
    uint32_t kv_blocks;           /* KV capacity in blocks; 0: derive from kv_bytes */
    size_t kv_bytes;              /* KV capacity in bytes (per rank) when kv_blocks == 0;
                                     0 = 64 MiB */
    int32_t block_size;           /* positions per KV block; 0 = 16 */
    int32_t max_step_tokens;      /* tokens per forward step; longer inputs are split into
                                     several steps (chunked prefill); 0 = 256 */
    /* Weights still arriving (a load in progress, see zs_load_wait_layer): called before the
     * forward pass first uses the embeddings (stage -1), layer L (stage L) and the final norm
     * and lm_head (stage nlayers); returns 0 once they are resident, an error to fail the step.
     * Each stage is waited for once. NULL: the weights are all resident. */
    int (*wait_weights)(void *ctx, int32_t stage, zs_err_t *err);
    void *wait_ctx;
    double kv_gpu_fraction;       /* CUDA backend, when kv_blocks == 0 and kv_bytes == 0: KV
                                     capacity = this fraction, in (0, 1], of the GPU memory
                                     free (cudaMemGetInfo) once the weights and the activation
                                     buffers are allocated (clamped to the block-count limit).
                                     Leave room for the backend's scratch, allocated on first
                                     use: about max_step_tokens * intermediate_size * 2 bytes
                                     plus cuBLAS's workspace; 0.9 suits a dedicated GPU.
                                     0 = the kv_bytes default */
} zs_engine_opts_t;

void zs_engine_opts_default(zs_engine_opts_t *o);

typedef struct zs_engine zs_engine_t;

/* Builds an engine over loaded weights (their device must match the backend: CPU weights
 * for the CPU backend, weights on a CUDA device for the CUDA backend, which then runs on that
 * device; its KV cache is BF16, the CPU backend's F32). Parses ck->config_json and checks every tensor against it. ck and w
 * must outlive the engine. */
int zs_engine_create(const zs_ckpt_t *ck, const zs_weights_t *w, const zs_engine_opts_t *opts,
                     zs_engine_t **out, zs_err_t *err);
/* Same from config.json text and a tensor lookup (weights already on weights_device; for
 * ZS_DEV_CUDA the calling thread's current CUDA device). */
int zs_engine_create_from(const char *config_json, size_t len, zs_wlookup_fn lookup, void *ctx,
                          zs_device_kind_t weights_device, const zs_engine_opts_t *opts,
                          zs_engine_t **out, zs_err_t *err);
/* Tensor parallel: one rank per shard of w (w->kind picks the backend, which opts->backend must
 * match: CPU ranks are threads of this process, CUDA ranks one GPU each, talking through NCCL).
 * opts->wait_weights must be NULL (the shards are resident). The ranks run every forward step
 * together, each on its own thread; logits come back in host memory as from zs_engine_create.
 * A step that fails on any rank leaves the engine refusing further steps (ZS_ESTATE). w must
 * outlive the engine. */
int zs_engine_create_tp(const zs_tp_weights_t *w, const zs_engine_opts_t *opts, zs_engine_t **out,
                        zs_err_t *err);
void zs_engine_free(zs_engine_t *e);
/* Number of ranks (1 unless tensor parallel). */
int zs_engine_ranks(const zs_engine_t *e);
/* Every weight is resident: the engine stops calling opts.wait_weights. */
void zs_engine_weights_resident(zs_engine_t *e);

const zs_model_config_t *zs_engine_config(const zs_engine_t *e);
/* The KV block bookkeeping (tensor parallel: its layout describes the whole model's KV heads;
 * each rank's pool holds the same blocks for its own KV heads, and pool is rank 0's). */
const zs_kv_cache_t *zs_engine_kv(const zs_engine_t *e);

/* --- sequences (ids are small non-negative integers, reused after free) --------------- */
int zs_engine_seq_new(zs_engine_t *e, int32_t *seq, zs_err_t *err);
/* New sequence sharing src's full KV blocks (a block-aligned prefix of src): its length is
 * src's length rounded down to the block size; the caller appends the rest of the prompt. */
int zs_engine_seq_fork(zs_engine_t *e, int32_t src, int32_t *dst, zs_err_t *err);
int zs_engine_seq_free(zs_engine_t *e, int32_t seq, zs_err_t *err);
/* Positions held by seq, or -1 for an invalid id. */
int64_t zs_engine_seq_len(const zs_engine_t *e, int32_t seq);
/* New sequence sharing only the first `ntokens` positions of src, which must be a multiple
 * of the block size and at most src's length rounded down to it (0 gives an empty
 * sequence). Used for prefix caching: a cached prompt prefix is attached to a new request. */
int zs_engine_seq_fork_prefix(zs_engine_t *e, int32_t src, int64_t ntokens, int32_t *dst,
                              zs_err_t *err);
/* Number of KV blocks in seq's block table (-1 for an invalid id); *blocks (when blocks is
 * not NULL) points at the table, valid until the next call that changes the sequence. */
int32_t zs_engine_seq_blocks(const zs_engine_t *e, int32_t seq, const int32_t **blocks);

/* --- moving KV blocks to and from host memory (the KV warm start, docs/kvstore.md) ------- */
/* Appends n full KV blocks to seq, whose length must be a multiple of the block size, from
 * host memory srcs[i] (zs_engine_kv(e)->layout.block_bytes each, in the KV cache's layout and
 * dtype: bytes an export of the same model configuration produced): allocates the blocks
 * (ZS_EBUSY when too few are free: nothing changes) and queues the copies ahead of the next
 * forward step, so the sequence then holds n * block_size more positions. srcs must stay
 * valid until the next zs_engine_forward or zs_engine_sync returns (page-locked memory makes
 * the copies asynchronous on a GPU). */
int zs_engine_seq_import(zs_engine_t *e, int32_t seq, const void *const *srcs, int32_t n,
                         zs_err_t *err);
/* Starts copying n full blocks of seq — block indices idx[i] of its table — to host memory
 * dsts[i], after every forward step issued so far and without waiting for them (on a GPU, on
 * a copy stream beside the compute). The blocks are held by the engine until the copy is
 * done, so seq may be freed at once. *ticket names the copy for zs_engine_kv_export_done. */
int zs_engine_kv_export(zs_engine_t *e, int32_t seq, const int32_t *idx, int32_t n, void *const *dsts,
                        uint64_t *ticket, zs_err_t *err);
/* 1 when export ticket has landed in host memory (its blocks are released), 0 while it runs
 * (wait = 1: blocks until done), or a negative status. */
int zs_engine_kv_export_done(zs_engine_t *e, uint64_t ticket, int wait, zs_err_t *err);
/* Waits for every queued operation (imports included). */
int zs_engine_sync(zs_engine_t *e, zs_err_t *err);

/* --- forward ---------------------------------------------------------------------------- */
typedef struct zs_engine_item {
    int32_t seq;
    const int32_t *ids;           /* tokens appended to seq */
    int32_t n;                    /* >= 1 */
} zs_engine_item_t;

/* Runs every item's tokens through the model (each sequence at most once per call). logits
 * (may be NULL) receives vocab floats per item for the item's last token, or, with
 * all_positions, per token of every item in order. Token ids are validated (outside the
 * vocabulary -> ZS_ERANGE naming the id); KV blocks are reserved up front (ZS_EBUSY when
 * the cache is full: nothing was computed, sequences keep their length). */
int zs_engine_forward(zs_engine_t *e, const zs_engine_item_t *items, int32_t nitems,
                      float *logits, int all_positions, zs_err_t *err);
/* One sequence, n tokens; logits (vocab floats, may be NULL) for the last one. */
int zs_engine_prefill(zs_engine_t *e, int32_t seq, const int32_t *ids, int32_t n, float *logits,
                      zs_err_t *err);
/* One token for each of nseq sequences; logits: nseq * vocab floats (may be NULL). */
int zs_engine_decode(zs_engine_t *e, int32_t nseq, const int32_t *seqs, const int32_t *ids,
                     float *logits, zs_err_t *err);

#ifdef __cplusplus
}
#endif
#endif
