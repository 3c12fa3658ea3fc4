/* The kvstore key index: a chained hash map from block key to entry, with the LFU +
 * recency victim choice shared by the host and disk tiers. Callers lock. */
#include <stdlib.h>
#include <string.h>

#include "kvstore/kv_internal.h"

static size_t ix_slot(const kv_index_t *ix, const zs_kv_key_t *key) {
    uint64_t h;
    memcpy(&h, key->b, sizeof h); /* keys are SHA-256 outputs: uniformly distributed */
    return (size_t)(h & (ix->nbuckets - 1));
}

int kv_index_init(kv_index_t *ix) {
    memset(ix, 0, sizeof *ix);
    ix->nbuckets = 64;
    ix->buckets = calloc(ix->nbuckets, sizeof *ix->buckets);
    return ix->buckets ? ZS_OK : ZS_ENOMEM;
}

void kv_index_destroy(kv_index_t *ix, void (*free_ent)(kv_ent_t *)) {
    for (size_t i = 0; ix->buckets && i < ix->nbuckets; i++) {
        for (kv_ent_t *e = ix->buckets[i], *nx; e; e = nx) {
            nx = e->next;
            if (free_ent) free_ent(e);
            else free(e);
        }
    }
    free(ix->buckets);
    memset(ix, 0, sizeof *ix);
}

kv_ent_t *kv_index_find(const kv_index_t *ix, const zs_kv_key_t *key) {
    for (kv_ent_t *e = ix->buckets[ix_slot(ix, key)]; e; e = e->next)
        if (memcmp(e->key.b, key->b, ZS_KV_HASH_BYTES) == 0) return e;
    return NULL;
}

static int ix_grow(kv_index_t *ix) {
    size_t nb = ix->nbuckets * 2;
    kv_ent_t **b = calloc(nb, sizeof *b);
    if (b == NULL) return ZS_ENOMEM;
    kv_ent_t **old = ix->buckets;
    size_t on = ix->nbuckets;
    ix->buckets = b;
    ix->nbuckets = nb;
    for (size_t i = 0; i < on; i++) {
        for (kv_ent_t *e = old[i], *nx; e; e = nx) {
            nx = e->next;
            size_t s = ix_slot(ix, &e->key);
            e->next = b[s];
            b[s] = e;
        }
    }
    free(old);
    return ZS_OK;
}

int kv_index_insert(kv_index_t *ix, kv_ent_t *e) {
    if (ix->count + 1 > ix->nbuckets && ix_grow(ix) != ZS_OK && ix->count + 1 > 4 * ix->nbuckets)
        return ZS_ENOMEM; /* a failed grow only lengthens chains, up to a point */
    size_t s = ix_slot(ix, &e->key);
    e->next = ix->buckets[s];
    ix->buckets[s] = e;
    ix->count++;
    ix->bytes += e->bytes;
    return ZS_OK;
}

void kv_index_remove(kv_index_t *ix, kv_ent_t *e) {
    for (kv_ent_t **pp = &ix->buckets[ix_slot(ix, &e->key)]; *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            e->next = NULL;
            ix->count--;
            ix->bytes -= e->bytes;
            return;
        }
    }
}

void kv_index_touch(kv_index_t *ix, kv_ent_t *e) {
    if (e->freq < UINT64_MAX) e->freq++;
    e->tick = ++ix->tick;
}

/* O(entries). Blocks are large (hundreds of KiB to MiB), so a tier holds thousands, not
 * millions, of entries and a scan per eviction is cheap next to the copy it makes room for. */
kv_ent_t *kv_index_victim(const kv_index_t *ix, const kv_ent_t *keep) {
    kv_ent_t *best = NULL;
    for (size_t i = 0; i < ix->nbuckets; i++)
        for (kv_ent_t *e = ix->buckets[i]; e; e = e->next) {
            if (e == keep || e->pins > 0) continue;
            if (best == NULL || e->freq < best->freq || (e->freq == best->freq && e->tick < best->tick))
                best = e;
        }
    return best;
}
