/* Which prompt prefixes will be asked for next, learned from the requests of one model: a
 * prefix that several prompts share (at least one full KV block — a system prompt, a
 * document, an earlier conversation turn) becomes an entry with a frequency x recency score
 * (a count decayed with a half-life), and the entry a request uses is recorded as the
 * successor of the entry the previous request of the same tenant used (which context tends to
 * follow which). Predictions are the successors of each tenant's last entry, then the entries
 * seen most (decayed); the scheduler brings them into the GPU cache while idle. Pure
 * bookkeeping, no threads; tested in tests/unit/test_kv_predict.c. */
#ifndef ZS_SERVER_KV_PREDICT_H
#define ZS_SERVER_KV_PREDICT_H

#include <stdint.h>

#include "zerostart/kvstore.h"

typedef struct zs_kvp zs_kvp_t;

typedef struct zs_kvp_opts {
    int32_t block_size;
    int max_entries;              /* 0 = 64 */
    int recent;                   /* prompts remembered to find shared prefixes; 0 = 32 */
    double half_life_s;           /* decay of the counts; 0 = 600 */
    int32_t max_blocks;           /* longest prefix considered; 0 = 8192 */
} zs_kvp_opts_t;

typedef struct zs_kvp_pred {
    uint64_t entry;               /* entry id (for zs_kvp_mark_prefetched) */
    zs_kv_ns_t ns;
    const int32_t *ids;           /* nblocks * block_size tokens, valid until the next observe */
    int32_t nblocks;
    double score;                 /* decayed count (successors: transition count) */
    int successor;                /* 1: predicted as the successor of a tenant's last entry */
} zs_kvp_pred_t;

int zs_kvp_create(const zs_kvp_opts_t *o, zs_kvp_t **out);
void zs_kvp_free(zs_kvp_t *p);
/* A prompt of n tokens under ns arrived at time now (seconds). 0, or -1 out of memory (the
 * observation is dropped; predictions stay valid). */
int zs_kvp_observe(zs_kvp_t *p, const zs_kv_ns_t *ns, const int32_t *ids, int64_t n, double now);
/* Up to k predictions, best first: successors (transition count >= min_count) of the last
 * entry of each tenant, then entries with a decayed count >= min_count; entries marked
 * prefetched since their last use are left out. Returns how many. */
int zs_kvp_predict(zs_kvp_t *p, double now, double min_count, zs_kvp_pred_t *out, int k);
/* The entry was brought into the GPU cache: not predicted again until a prompt uses it. */
void zs_kvp_mark_prefetched(zs_kvp_t *p, uint64_t entry);
int zs_kvp_entries(const zs_kvp_t *p);

#endif
