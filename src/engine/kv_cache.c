/* Paged KV cache bookkeeping: block layout arithmetic, the block allocator (free list and
 * reference counts) and per-sequence block tables. The pool memory belongs to the caller. */
#include "zerostart/kv_cache.h"

#include <stdlib.h>
#include <string.h>

int zs_kv_layout_init(zs_kv_layout_t *l, int32_t nlayers, int32_t nkv_heads, int32_t head_dim,
                      int32_t block_size, zs_dtype_t dtype, zs_err_t *err) {
    memset(l, 0, sizeof *l);
    size_t es;
    switch (dtype) {
    case ZS_F32: es = 4; break;
    case ZS_F16: case ZS_BF16: es = 2; break;
    default: return zs_err_set(err, ZS_EUNSUPPORTED, "kv cache: dtype %d not supported", (int)dtype);
    }
    if (nlayers < 1 || nlayers > 4096 || nkv_heads < 1 || nkv_heads > 4096 || head_dim < 1 ||
        head_dim > 4096 || block_size < 1 || block_size > 4096)
        return zs_err_set(err, ZS_EINVAL,
                          "kv cache: bad layout (layers %d, kv heads %d, head_dim %d, block %d)",
                          nlayers, nkv_heads, head_dim, block_size);
    l->nlayers = nlayers;
    l->nkv_heads = nkv_heads;
    l->head_dim = head_dim;
    l->block_size = block_size;
    l->dtype = dtype;
    l->elem_size = es;
    l->head_stride = (size_t)block_size * (size_t)head_dim * es;
    l->kv_stride = (size_t)nkv_heads * l->head_stride;
    l->layer_stride = 2 * l->kv_stride;
    l->block_bytes = (size_t)nlayers * l->layer_stride; /* <= 4096^4 * 2 * 4: fits 64 bits */
    return 0;
}

int zs_kv_cache_init(zs_kv_cache_t *kv, const zs_kv_layout_t *l, uint32_t nblocks, void *pool,
                     zs_err_t *err) {
    memset(kv, 0, sizeof *kv);
    if (nblocks < 1 || nblocks > (uint32_t)INT32_MAX / 4096u)
        return zs_err_set(err, ZS_EINVAL, "kv cache: block count %u out of range", nblocks);
    kv->layout = *l;
    kv->nblocks = nblocks;
    kv->pool = pool;
    kv->refcnt = calloc(nblocks, sizeof *kv->refcnt);
    kv->free_ids = malloc((size_t)nblocks * sizeof *kv->free_ids);
    if (kv->refcnt == NULL || kv->free_ids == NULL) {
        zs_kv_cache_destroy(kv);
        return zs_err_set(err, ZS_ENOMEM, "kv cache: out of memory for %u block entries", nblocks);
    }
    /* Stack ordered so that block 0 is handed out first. */
    for (uint32_t i = 0; i < nblocks; i++) kv->free_ids[i] = (int32_t)(nblocks - 1 - i);
    kv->nfree = nblocks;
    return 0;
}

void zs_kv_cache_destroy(zs_kv_cache_t *kv) {
    if (kv == NULL) return;
    free(kv->refcnt);
    free(kv->free_ids);
    memset(kv, 0, sizeof *kv);
}

int zs_kv_block_alloc(zs_kv_cache_t *kv, int32_t *id, zs_err_t *err) {
    if (kv->nfree == 0)
        return zs_err_set(err, ZS_EBUSY, "kv cache: all %u blocks are in use", kv->nblocks);
    int32_t b = kv->free_ids[--kv->nfree];
    kv->refcnt[b] = 1;
    *id = b;
    return 0;
}

static int valid_allocated(const zs_kv_cache_t *kv, int32_t id) {
    return id >= 0 && (uint32_t)id < kv->nblocks && kv->refcnt[id] > 0;
}

int zs_kv_block_ref(zs_kv_cache_t *kv, int32_t id, zs_err_t *err) {
    if (!valid_allocated(kv, id))
        return zs_err_set(err, ZS_EINVAL, "kv cache: block %d is not allocated", id);
    if (kv->refcnt[id] == UINT32_MAX)
        return zs_err_set(err, ZS_ERANGE, "kv cache: block %d reference count overflow", id);
    kv->refcnt[id]++;
    return 0;
}

int zs_kv_block_unref(zs_kv_cache_t *kv, int32_t id) {
    if (!valid_allocated(kv, id)) return ZS_EINVAL;
    if (--kv->refcnt[id] == 0) kv->free_ids[kv->nfree++] = id;
    return (int)(kv->refcnt[id] > INT32_MAX ? INT32_MAX : kv->refcnt[id]);
}

uint32_t zs_kv_block_refcount(const zs_kv_cache_t *kv, int32_t id) {
    return id >= 0 && (uint32_t)id < kv->nblocks ? kv->refcnt[id] : 0;
}

void zs_kv_seq_init(zs_kv_seq_t *s) { memset(s, 0, sizeof *s); }

static int seq_grow(zs_kv_seq_t *s, int32_t need, zs_err_t *err) {
    if (need <= s->cap) return 0;
    int32_t cap = s->cap ? s->cap : 8;
    while (cap < need) cap = cap > INT32_MAX / 2 ? need : cap * 2;
    int32_t *nb = realloc(s->blocks, (size_t)cap * sizeof *nb);
    if (nb == NULL)
        return zs_err_set(err, ZS_ENOMEM, "kv cache: out of memory for a %d-block table", cap);
    s->blocks = nb;
    s->cap = cap;
    return 0;
}

int zs_kv_seq_reserve(zs_kv_cache_t *kv, zs_kv_seq_t *s, int64_t ntokens, zs_err_t *err) {
    const int64_t bs = kv->layout.block_size;
    if (ntokens < 0 || ntokens > (int64_t)kv->nblocks * bs)
        return zs_err_set(err, ZS_EBUSY,
                          "kv cache: %lld positions exceed the cache (%u blocks of %lld)",
                          (long long)ntokens, kv->nblocks, (long long)bs);
    int32_t need = (int32_t)((ntokens + bs - 1) / bs);
    if (need <= s->nblocks) return 0;
    uint32_t extra = (uint32_t)(need - s->nblocks);
    if (extra > kv->nfree)
        return zs_err_set(err, ZS_EBUSY,
                          "kv cache full: %u more blocks needed, %u of %u free", extra, kv->nfree,
                          kv->nblocks);
    int rc = seq_grow(s, need, err);
    if (rc) return rc;
    while (s->nblocks < need) {
        int32_t id = -1;
        rc = zs_kv_block_alloc(kv, &id, err); /* cannot fail: checked nfree */
        if (rc) return rc;
        s->blocks[s->nblocks++] = id;
    }
    return 0;
}

int zs_kv_seq_fork(zs_kv_cache_t *kv, zs_kv_seq_t *dst, const zs_kv_seq_t *src, zs_err_t *err) {
    if (dst->nblocks != 0 || dst->ntokens != 0)
        return zs_err_set(err, ZS_ESTATE, "kv cache: fork target sequence is not empty");
    const int64_t bs = kv->layout.block_size;
    int32_t full = (int32_t)(src->ntokens / bs);
    if (full > src->nblocks)
        return zs_err_set(err, ZS_ESTATE, "kv cache: source sequence table is inconsistent");
    int rc = seq_grow(dst, full, err);
    if (rc) return rc;
    for (int32_t i = 0; i < full; i++) {
        if ((rc = zs_kv_block_ref(kv, src->blocks[i], err))) {
            zs_kv_seq_release(kv, dst);
            return rc;
        }
        dst->blocks[dst->nblocks++] = src->blocks[i];
    }
    dst->ntokens = (int64_t)full * bs;
    return 0;
}

void zs_kv_seq_release(zs_kv_cache_t *kv, zs_kv_seq_t *s) {
    for (int32_t i = 0; i < s->nblocks; i++) (void)zs_kv_block_unref(kv, s->blocks[i]);
    free(s->blocks);
    memset(s, 0, sizeof *s);
}
