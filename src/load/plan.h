/* Load planning: where each tensor lives inside the model's one allocation (offsets aligned
 * for vector loads, file-contiguous tensors kept contiguous so they copy as one range) and
 * the list of chunks to read, ordered by priority (embeddings, layer 0, layer 1, ...). */
#ifndef ZS_LOAD_PLAN_H
#define ZS_LOAD_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/ckpt.h"

#define ZS_TENSOR_ALIGN 256u   /* byte alignment of every tensor in the allocation */
#define ZS_PLAN_MAX_GAP 4096u  /* unused file bytes between tensors read through, not skipped */

typedef struct zs_chunk {
    uint32_t file;
    uint32_t priority;
    uint64_t src;          /* absolute file offset */
    uint64_t len;
    uint64_t dst;          /* offset in the allocation */
    size_t t_first, t_end; /* tensors (ckpt order) whose bytes may overlap this chunk */
} zs_chunk_t;

typedef struct zs_plan {
    uint64_t *dst;         /* per tensor: offset in the allocation */
    uint64_t alloc_bytes;
    zs_chunk_t *chunks;    /* sorted by (priority, file, src) */
    size_t nchunks;
    uint64_t read_bytes;   /* bytes the chunks read (tensor bytes + gaps) */
} zs_plan_t;

/* Default priorities: embeddings 0, layer L -> L + 1, everything else nlayers + 1. */
uint32_t zs_plan_default_priority(const zs_ckpt_t *ck, const zs_tensor_info_t *t);
int zs_plan_build(const zs_ckpt_t *ck, const uint32_t *priority, size_t chunk_bytes,
                  zs_plan_t *out, zs_err_t *err);
void zs_plan_free(zs_plan_t *p);

#endif
