/* Tensor parallelism over N ranks (GPUs, or simulated ranks on the CPU): how a checkpoint is
 * spread over the ranks without reading a byte twice, and the loaded per-rank shards.
 *
 * Llama-family partitions: attention heads and MLP intermediate rows are split across ranks
 * (column-parallel q/k/v, gate/up: contiguous row ranges of [out, in] weights), o_proj and
 * down_proj along their input (row-parallel: a strided column block of every row),
 * embeddings and lm_head by vocabulary rows, norms (and the o_proj bias) replicated. Heads
 * follow the KV groups (zs_tp_heads): with at least as many KV heads as ranks, KV heads are
 * split and each rank takes the query heads that use them; otherwise ranks share a KV head
 * and split its query heads. Splits need not be even.
 *
 * The plan is a list of read units (contiguous file ranges that together cover every tensor
 * byte exactly once) and, per unit, deliveries: 2-D copies (rows x width, with source and
 * destination pitches) into each rank's allocation. A unit shared by several ranks is read
 * once and copied to each. zs_tp_load executes a plan with parallel readers into one
 * allocation per rank (host memory, or one GPU each). See docs/tensor_parallel.md. */
#ifndef ZEROSTART_TP_H
#define ZEROSTART_TP_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/ckpt.h"
#include "zerostart/err.h"
#include "zerostart/load.h"
#include "zerostart/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZS_TP_MAX_RANKS 64

typedef enum zs_tp_kind {
    ZS_TP_REPLICATE = 0,          /* every rank gets the whole tensor */
    ZS_TP_ROWS = 1,               /* dim 0 split (contiguous row ranges) */
    ZS_TP_COLS = 2,               /* dim 1 split (a column block of every row) */
} zs_tp_kind_t;

/* [begin, end) of n items for `rank` of `ranks` (n * rank / ranks onwards: sizes differ by at
 * most one when ranks does not divide n). */
void zs_tp_split(int64_t n, int ranks, int rank, int64_t *begin, int64_t *end);

/* The attention heads of one rank: query heads [q0, q1) and KV heads [kv0, kv1). Either whole
 * KV groups (at least as many KV heads as ranks) or one KV head shared with other ranks; in
 * both cases local query head h uses local KV head h / ((q1 - q0) / (kv1 - kv0)), the grouping
 * the backends' attention assumes. */
typedef struct zs_tp_heads {
    int64_t q0, q1, kv0, kv1;
} zs_tp_heads_t;

int zs_tp_heads(const zs_model_config_t *c, int ranks, int rank, zs_tp_heads_t *out, zs_err_t *err);
/* Whether a model can be split over `ranks` ranks: 1 <= ranks <= ZS_TP_MAX_RANKS and at least
 * one query head, intermediate row and vocabulary row per rank (errors name the dimension). */
int zs_tp_check(const zs_model_config_t *c, int ranks, zs_err_t *err);

typedef struct zs_tp_slice {
    zs_tp_kind_t kind;
    int64_t begin, end;           /* rows (ROWS) or columns (COLS) this rank holds */
    int64_t shape[2];             /* the rank's shard shape (shape[1] = 0 for 1-D) */
    uint64_t bytes;
    uint64_t dst;                 /* offset in the rank's allocation */
} zs_tp_slice_t;

typedef struct zs_tp_delivery {
    int32_t rank;
    uint64_t src_off;             /* offset of the first byte inside the unit */
    uint64_t src_pitch, dst_pitch, width, rows;
    uint64_t dst;                 /* offset in the rank's allocation */
} zs_tp_delivery_t;

typedef struct zs_tp_unit {
    uint32_t file;
    uint64_t src, len;            /* file range */
    size_t tensor;                /* index into ck->tensors */
    size_t first, count;          /* deliveries[first .. first + count) */
} zs_tp_unit_t;

typedef struct zs_tp_plan {
    int ranks;
    zs_tp_slice_t *slices;        /* [rank * ntensors + tensor] */
    size_t ntensors;
    uint64_t *rank_bytes;         /* allocation size per rank */
    zs_tp_unit_t *units;
    size_t nunits;
    zs_tp_delivery_t *deliveries;
    size_t ndeliveries;
    uint64_t read_bytes;          /* sum of unit lengths: the checkpoint's tensor bytes */
} zs_tp_plan_t;

/* The partition of one tensor of a Llama-family model for `ranks` ranks; ZS_EUNSUPPORTED for a
 * shape the partition cannot split (e.g. fewer attention heads than ranks). */
int zs_tp_slice_of(const zs_model_config_t *c, const zs_tensor_info_t *t, int ranks, int rank,
                   zs_tp_slice_t *out, zs_err_t *err);
/* Plans a load of ck over `ranks` ranks with read units of about unit_bytes. */
int zs_tp_plan_build(const zs_ckpt_t *ck, const zs_model_config_t *c, int ranks, uint64_t unit_bytes,
                     zs_tp_plan_t *out, zs_err_t *err);
void zs_tp_plan_free(zs_tp_plan_t *p);
/* Executes a plan into caller-owned host buffers, one per rank of rank_bytes[r] bytes, on the
 * calling thread (zs_tp_load does the same with parallel readers and its own allocations). */
int zs_tp_load_host(const zs_ckpt_t *ck, const zs_tp_plan_t *p, void *const *rank_bufs, zs_err_t *err);

/* --- loading (src/load/tp_load.c) ------------------------------------------------------- */
typedef struct zs_tp_load_opts {
    zs_device_kind_t kind;        /* ZS_DEV_CPU: one host buffer per rank (simulated ranks);
                                     ZS_DEV_CUDA: rank r on GPU devices[r] */
    int ranks;
    const int *devices;           /* CUDA ordinals [ranks]; NULL: 0 .. ranks - 1 */
    int threads;                  /* reader threads; 0: min(16, 2 x cores) */
    size_t unit_bytes;            /* read unit; 0: 4 MiB */
    int staging_slots;            /* pinned buffers per reader thread (CUDA); 0: 2, at most 8 */
    int direct_io;                /* -1 auto (O_DIRECT for data not in the page cache), 0 never,
                                     1 always */
} zs_tp_load_opts_t;

typedef struct zs_tp_load_stats {
    double setup_s;               /* plan, allocations (GPU contexts), staging */
    double read_s;                /* first read issued -> every copy complete */
    double total_s;               /* zs_tp_load called -> every shard resident */
    uint64_t read_bytes;          /* bytes read from the files: the checkpoint's tensor bytes */
    uint64_t bytes_direct;        /* of which read with O_DIRECT */
    int threads;
} zs_tp_load_stats_t;

typedef struct zs_tp_weights {
    const zs_ckpt_t *ckpt;
    zs_model_config_t cfg;        /* parsed from ckpt->config_json */
    zs_tp_plan_t plan;
    zs_device_kind_t kind;
    int ranks;
    int devices[ZS_TP_MAX_RANKS]; /* CUDA ordinal of each rank (-1 on the CPU) */
    void *base[ZS_TP_MAX_RANKS];  /* each rank's allocation of plan.rank_bytes[r] bytes */
    uint64_t delivered[ZS_TP_MAX_RANKS]; /* bytes copied into each rank */
    zs_tp_load_stats_t stats;
} zs_tp_weights_t;

void zs_tp_load_opts_default(zs_tp_load_opts_t *o);
/* Plans and loads ck over o->ranks ranks (ck must outlive the weights). Every tensor byte is
 * read once (stats.read_bytes == ck->total_bytes). */
int zs_tp_load(const zs_ckpt_t *ck, const zs_tp_load_opts_t *o, zs_tp_weights_t **out, zs_err_t *err);
void zs_tp_weights_free(zs_tp_weights_t *w);

/* A zs_wlookup_fn over one rank's shards: `name` resolves to a view into the rank's allocation
 * with the shard's shape. */
typedef struct zs_tp_rank_view {
    const zs_tp_weights_t *w;
    int rank;
} zs_tp_rank_view_t;
int zs_tp_lookup(void *rank_view, const char *name, zs_wref_t *out);

#ifdef __cplusplus
}
#endif
#endif
