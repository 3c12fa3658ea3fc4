/* Automatic prefix caching: full KV blocks are identified by a chained hash of their token
 * ids (hash of the previous block's hash and this block's ids, seeded by the KV namespace:
 * model identity and tenant salt), mapped to an "owner": an
 * engine sequence whose first blocks hold them. Owners are running requests (registered once
 * their prompt is prefilled) or cache holders (a request's prompt blocks kept after it ended,
 * evicted least-recently-used when KV space is needed). A match is verified against the
 * owner's token ids and namespace, so neither a hash collision nor another tenant's blocks can
 * attach wrong KV. Owned by one scheduler
 * thread; not thread-safe. Engine sequences are created and freed by the caller. */
#ifndef ZS_SERVER_PREFIX_CACHE_H
#define ZS_SERVER_PREFIX_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/kvstore.h"

typedef struct zs_pc_owner {
    int32_t seq;          /* engine sequence holding the blocks; -1: slot unused */
    zs_kv_ns_t ns;        /* namespace the blocks belong to */
    int32_t *tokens;      /* nblocks * block_size ids */
    uint64_t *hashes;     /* nblocks chained hashes */
    int32_t nblocks;
    int holder;           /* 1: held only by the cache (evictable) */
    int kept;             /* a registered context's holder: evicted only for live requests */
    uint64_t last_use;
} zs_pc_owner_t;

typedef struct zs_pc_entry {
    uint64_t hash;
    int32_t owner;        /* -1: empty slot */
    int32_t block;
} zs_pc_entry_t;

typedef struct zs_pcache {
    int32_t bs;
    zs_pc_owner_t *owners;
    int32_t max_owners;
    zs_pc_entry_t *tab;
    size_t mask, nentries, max_entries;
    uint64_t clock;
} zs_pcache_t;

/* Returns 0 or -1 (out of memory). */
int zs_pcache_init(zs_pcache_t *c, int32_t block_size, int32_t max_owners, size_t max_entries);
void zs_pcache_destroy(zs_pcache_t *c);
/* Chained hashes of the nblocks full blocks of ids under namespace ns. */
void zs_pcache_hashes(const zs_kv_ns_t *ns, const int32_t *ids, int32_t nblocks, int32_t bs, uint64_t *out);
/* Longest cached prefix of ids[0..n) under ns of at most max_blocks blocks: returns the
 * number of blocks (0 = none) and the owner index in *owner. */
int32_t zs_pcache_match(zs_pcache_t *c, const zs_kv_ns_t *ns, const int32_t *ids, int64_t n,
                        int32_t max_blocks, int32_t *owner);
/* Same without counting a use (the LRU order stays). */
int32_t zs_pcache_peek(zs_pcache_t *c, const zs_kv_ns_t *ns, const int32_t *ids, int64_t n, int32_t max_blocks);
/* Registers the first nblocks full blocks of ids under ns, held by engine sequence seq.
 * Hashes already present keep their owner. Returns the owner index, or -1 when there is no
 * room (nothing registered) or no memory. */
int32_t zs_pcache_register(zs_pcache_t *c, const zs_kv_ns_t *ns, int32_t seq, const int32_t *ids,
                           int32_t nblocks, int holder);
/* The owner index whose sequence is seq, or -1. */
int32_t zs_pcache_owner_of(const zs_pcache_t *c, int32_t seq);
/* Moves owner idx to another sequence (a holder forked from the request's sequence). */
void zs_pcache_rebind(zs_pcache_t *c, int32_t idx, int32_t seq, int holder);
/* Removes owner idx and its entries. Returns its sequence (the caller frees it if it is a
 * holder). */
int32_t zs_pcache_drop(zs_pcache_t *c, int32_t idx);
/* Marks holder idx as a registered context's (see zs_pcache_lru_holder_unkept). */
void zs_pcache_keep(zs_pcache_t *c, int32_t idx);
/* Least-recently-used holder that is not kept, or -1 (idle-time work evicts only these). */
int32_t zs_pcache_lru_holder_unkept(const zs_pcache_t *c);
/* Least-recently-used holder index, or -1. */
int32_t zs_pcache_lru_holder(const zs_pcache_t *c);
int32_t zs_pcache_nholders(const zs_pcache_t *c);

#endif
