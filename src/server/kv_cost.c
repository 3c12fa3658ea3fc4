/* Restore-or-recompute cost model (see kv_cost.h). Recomputing block i costs its tokens'
 * linear work plus attention over every earlier position, so it grows with i; restoring a
 * block costs its bytes over the tier's bandwidth, the same for every block. */
#include "server/kv_cost.h"

double zs_kv_cost_attn_ratio(const zs_model_config_t *c) {
    double L = c->nlayers, H = c->nheads, K = c->nkv_heads, d = c->head_dim, hid = c->hidden,
           inter = c->intermediate;
    double lin = 2.0 * L * (hid * (H * d + 2.0 * K * d) + H * d * hid + 3.0 * hid * inter);
    if (lin <= 0) return 0;
    return 4.0 * L * H * d / lin;
}

double zs_kv_cost_recompute_s(const zs_kv_cost_t *m, int32_t a, int32_t b) {
    if (b <= a || m->prefill_tok_s <= 0) return 0;
    double bs = m->block_size;
    double n = (double)(b - a) * bs;            /* tokens */
    double p0 = (double)a * bs, p1 = (double)b * bs;
    double positions = (p0 + p1 - 1) * n / 2.0; /* sum of the positions each token attends to */
    return (n + m->attn_ratio * positions) / m->prefill_tok_s;
}

double zs_kv_cost_disk_gbps(const zs_kv_cost_t *m, double cached_frac) {
    if (cached_frac < 0) cached_frac = 0;
    if (cached_frac > 1) cached_frac = 1;
    double s = 0; /* seconds per GB */
    if (cached_frac > 0) {
        if (m->disk_cached_gbps <= 0) return 0;
        s += cached_frac / m->disk_cached_gbps;
    }
    if (cached_frac < 1) {
        if (m->disk_gbps <= 0) return 0;
        s += (1 - cached_frac) / m->disk_gbps;
    }
    return 1 / s;
}

double zs_kv_cost_restore_block_s(const zs_kv_cost_t *m, zs_kv_tier_t tier) {
    double bytes = (double)m->block_bytes;
    double copy = m->h2d_gbps > 0 ? bytes / (m->h2d_gbps * 1e9) : 0;
    double read = tier == ZS_KV_TIER_DISK && m->disk_gbps > 0 ? bytes / (m->disk_gbps * 1e9) : 0;
    return m->per_block_s + (m->overlap ? (copy > read ? copy : read) : copy + read);
}

int32_t zs_kv_cost_choose(const zs_kv_cost_t *m, int32_t from, int32_t to, const zs_kv_tier_t *tiers,
                          double *restore_s, double *recompute_s) {
    if (to < from) to = from;
    /* the prefill rate decides; host->device (measured by a probe that may finish later) adds
     * its part when known */
    const int measured = m->prefill_tok_s > 0;
    /* walk k from `from` to `to`: cost(k) = restore[from, k) + recompute[k, to) */
    double rest = 0, best_cost = 0, best_rest = 0;
    double recompute_all = zs_kv_cost_recompute_s(m, from, to);
    int32_t best = measured ? from : to;
    best_cost = recompute_all;
    if (!measured) {
        for (int32_t i = from; i < to; i++) rest += zs_kv_cost_restore_block_s(m, tiers[i - from]);
        best_rest = rest;
        best_cost = rest;
    } else {
        for (int32_t k = from + 1; k <= to; k++) {
            rest += zs_kv_cost_restore_block_s(m, tiers[k - 1 - from]);
            double c = rest + zs_kv_cost_recompute_s(m, k, to);
            if (c < best_cost) {
                best_cost = c;
                best = k;
                best_rest = rest;
            }
        }
    }
    if (restore_s) *restore_s = best_rest;
    if (recompute_s) *recompute_s = best_cost - best_rest;
    return best;
}
