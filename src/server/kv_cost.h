/* Restore or recompute: the cost model of the KV warm start. For a prompt whose blocks
 * [from, to) are held by the host or disk tier, it picks how many of them to bring back
 * (a prefix: blocks must be restored in order) so that restoring plus recomputing the rest
 * takes least time, from bandwidths and a prefill rate the server measures. Pure functions,
 * unit-tested in tests/unit/test_kv_cost.c. */
#ifndef ZS_SERVER_KV_COST_H
#define ZS_SERVER_KV_COST_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/kvstore.h"
#include "zerostart/model.h"

typedef struct zs_kv_cost {
    double h2d_gbps;            /* host memory -> KV cache (device) */
    double disk_gbps;           /* block files read from the disk (not in the page cache) */
    double disk_cached_gbps;    /* block files read from the page cache */
    double prefill_tok_s;       /* prefill tokens per second at short context (the linear part) */
    double attn_ratio;          /* attention cost of one token per earlier position, relative to
                                   the linear cost of one token (zs_kv_cost_attn_ratio) */
    double per_block_s;         /* fixed cost of restoring one block (lookups, copies' launch) */
    int overlap;                /* 1: disk reads overlap the host->device copies (the request
                                   takes blocks in as they are read), so a disk block costs the
                                   slower of the two; 0: the copies follow the reads */
    size_t block_bytes;
    int32_t block_size;
} zs_kv_cost_t;

/* attention FLOPs per token and per position attended / linear FLOPs per token, from the
 * model's shapes: 4 L H d / (2 L (hidden (H d + 2 K d) + H d hidden + 3 hidden inter)). */
double zs_kv_cost_attn_ratio(const zs_model_config_t *c);

/* Seconds to recompute blocks [a, b) (positions a*bs .. b*bs), given the prefix before a. */
double zs_kv_cost_recompute_s(const zs_kv_cost_t *m, int32_t a, int32_t b);
/* The rate of reading block files of which a fraction cached_frac (0..1) is in the page
 * cache: the harmonic mix of the two rates (0 when one is needed and unknown). */
double zs_kv_cost_disk_gbps(const zs_kv_cost_t *m, double cached_frac);
/* Seconds to restore one block from tier (disk: at disk_gbps, see zs_kv_cost_disk_gbps; plus
 * the copy to the device, or the slower of the two with overlap). */
double zs_kv_cost_restore_block_s(const zs_kv_cost_t *m, zs_kv_tier_t tier);

/* Blocks [from, to) can be restored, tiers[i - from] telling from where. Returns k in
 * [from, to]: restore [from, k), recompute [k, to) (and any later tokens, which cost the same
 * either way). *restore_s / *recompute_s (may be NULL) get the model's estimates for that
 * choice. Without a measured prefill rate (<= 0) everything is restored; an unknown
 * host->device rate (<= 0) counts as free (the disk part still counts). */
int32_t zs_kv_cost_choose(const zs_kv_cost_t *m, int32_t from, int32_t to, const zs_kv_tier_t *tiers,
                          double *restore_s, double *recompute_s);

#endif
