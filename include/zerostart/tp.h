/* Tensor-parallel slice planning: how a checkpoint is spread over N ranks (GPUs) without
 * reading a byte twice. Llama-family partitions: attention heads and MLP intermediate rows are
 * split across ranks (column-parallel q/k/v, gate/up: contiguous row ranges of [out, in]
 * weights), o_proj and down_proj are split along their input (row-parallel: a strided column
 * block of every row), embeddings and lm_head by vocabulary rows, norms replicated. KV heads
 * are split when there are at least as many as ranks; otherwise each rank gets the KV head its
 * query heads use (ranks sharing one). Splits need not be even.
 *
 * The plan is a list of read units (contiguous file ranges that together cover every tensor
 * byte exactly once) and, per unit, deliveries: 2-D copies (rows x width, with source and
 * destination pitches) into each rank's allocation. A unit shared by several ranks is read
 * once and copied to each. */
#ifndef ZEROSTART_TP_H
#define ZEROSTART_TP_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/ckpt.h"
#include "zerostart/err.h"
#include "zerostart/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zs_tp_kind {
    ZS_TP_REPLICATE = 0,          /* every rank gets the whole tensor */
    ZS_TP_ROWS = 1,               /* dim 0 split (contiguous row ranges) */
    ZS_TP_COLS = 2,               /* dim 1 split (a column block of every row) */
} zs_tp_kind_t;

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
/* Executes a plan into host buffers, one per rank of rank_bytes[r] bytes (reads each unit with
 * one buffered pread; the loader's GPU path does the same with pinned staging and 2-D copies). */
int zs_tp_load_host(const zs_ckpt_t *ck, const zs_tp_plan_t *p, void *const *rank_bufs, zs_err_t *err);

#ifdef __cplusplus
}
#endif
#endif
