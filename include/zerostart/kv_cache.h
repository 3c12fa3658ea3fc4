/* zerostart paged KV cache bookkeeping. The cache is one pool of fixed-size blocks, each
 * holding `block_size` token positions of K and V for every layer and every KV head. Block
 * ids index the pool; a block's bytes are contiguous (block_bytes long at id * block_bytes),
 * so a block can be copied to host memory or disk and back as one unit.
 *
 * Layout of one block (elements of `dtype`, row-major):
 *     [layer][K=0 | V=1][kv_head][slot in block][head_dim]
 * so the K vectors of one head for the block's slots are contiguous.
 *
 * This module only does host-side bookkeeping (allocator with free list and reference
 * counts, per-sequence block tables); the pool memory itself is owned by the caller (the
 * engine allocates it on the backend). Blocks are shared between sequences only when full,
 * so shared blocks are never written and no copy-on-write is needed. Not thread-safe. */
#ifndef ZEROSTART_KV_CACHE_H
#define ZEROSTART_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/ckpt.h"
#include "zerostart/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zs_kv_layout {
    int32_t nlayers, nkv_heads, head_dim, block_size;
    zs_dtype_t dtype;          /* element type of the pool (the CPU backend uses ZS_F32) */
    size_t elem_size;
    size_t head_stride;        /* bytes between kv heads: block_size * head_dim * elem_size */
    size_t kv_stride;          /* bytes between the K and the V part of a layer */
    size_t layer_stride;       /* bytes between layers inside a block */
    size_t block_bytes;        /* bytes of one block (all layers, K and V) */
} zs_kv_layout_t;

int zs_kv_layout_init(zs_kv_layout_t *l, int32_t nlayers, int32_t nkv_heads, int32_t head_dim,
                      int32_t block_size, zs_dtype_t dtype, zs_err_t *err);
/* Byte offset of (block, layer, kv (0=K, 1=V), head, slot) from the pool start. */
static inline size_t zs_kv_offset(const zs_kv_layout_t *l, int32_t block, int32_t layer,
                                  int kv, int32_t head, int32_t slot) {
    return (size_t)block * l->block_bytes + (size_t)layer * l->layer_stride +
           (size_t)kv * l->kv_stride + (size_t)head * l->head_stride +
           (size_t)slot * (size_t)l->head_dim * l->elem_size;
}

typedef struct zs_kv_cache {
    zs_kv_layout_t layout;
    uint32_t nblocks;
    void *pool;                /* nblocks * block_bytes, caller-owned (backend memory) */
    uint32_t *refcnt;          /* per block; 0 = free */
    int32_t *free_ids;         /* stack of free block ids */
    uint32_t nfree;
} zs_kv_cache_t;

/* nblocks >= 1. pool may be NULL for pure bookkeeping (tests). */
int zs_kv_cache_init(zs_kv_cache_t *kv, const zs_kv_layout_t *l, uint32_t nblocks, void *pool,
                     zs_err_t *err);
void zs_kv_cache_destroy(zs_kv_cache_t *kv);
static inline uint32_t zs_kv_free_blocks(const zs_kv_cache_t *kv) { return kv->nfree; }

/* Takes a free block (refcount 1). ZS_EBUSY when the cache is full. */
int zs_kv_block_alloc(zs_kv_cache_t *kv, int32_t *id, zs_err_t *err);
/* Adds a reference to an allocated block. */
int zs_kv_block_ref(zs_kv_cache_t *kv, int32_t id, zs_err_t *err);
/* Drops a reference; the block returns to the free list at 0. Returns the new count, or a
 * negative status for an id that is not allocated. */
int zs_kv_block_unref(zs_kv_cache_t *kv, int32_t id);
uint32_t zs_kv_block_refcount(const zs_kv_cache_t *kv, int32_t id);

/* One sequence's block table: blocks[i] holds positions [i*bs, (i+1)*bs). */
typedef struct zs_kv_seq {
    int32_t *blocks;
    int32_t nblocks, cap;
    int64_t ntokens;           /* positions whose K/V are written */
} zs_kv_seq_t;

void zs_kv_seq_init(zs_kv_seq_t *s);
/* Makes the table cover `ntokens` positions, allocating blocks as needed: all or nothing
 * (ZS_EBUSY, nothing allocated, when too few blocks are free). */
int zs_kv_seq_reserve(zs_kv_cache_t *kv, zs_kv_seq_t *s, int64_t ntokens, zs_err_t *err);
/* Starts `dst` (empty) as a copy of `src`'s full blocks (shared, refcount + 1):
 * dst->ntokens = src->ntokens rounded down to a block multiple. */
int zs_kv_seq_fork(zs_kv_cache_t *kv, zs_kv_seq_t *dst, const zs_kv_seq_t *src, zs_err_t *err);
/* Drops every block reference and empties the table. */
void zs_kv_seq_release(zs_kv_cache_t *kv, zs_kv_seq_t *s);
/* Global slot (block * block_size + offset) of position pos; pos must be reserved. */
static inline int32_t zs_kv_seq_slot(const zs_kv_layout_t *l, const zs_kv_seq_t *s, int64_t pos) {
    return s->blocks[pos / l->block_size] * l->block_size + (int32_t)(pos % l->block_size);
}

#ifdef __cplusplus
}
#endif
#endif
