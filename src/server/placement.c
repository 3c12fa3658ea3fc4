/* Start-up-aware placement (placement.h): per GPU, the cheapest set of idle models to unload
 * and the transfer time from the weights' tier; the soonest start wins. Pure: no I/O, no
 * locks, no allocation. */
#include "server/placement.h"

#include <string.h>

const char *zs_place_tier_name(zs_place_tier_t t) {
    switch (t) {
    case ZS_TIER_POOL_PINNED: return "pool";
    case ZS_TIER_POOL: return "pool-unpinned";
    case ZS_TIER_PAGE_CACHE: return "page-cache";
    case ZS_TIER_DISK: return "disk";
    }
    return "unknown";
}

double zs_place_transfer_s(uint64_t bytes, zs_place_tier_t tier, double read_gbps, double h2d_gbps) {
    double h2d = h2d_gbps > 0 ? h2d_gbps : ZS_PLACE_DEFAULT_H2D_GBPS;
    double rd = read_gbps > 0 ? read_gbps : ZS_PLACE_DEFAULT_READ_GBPS;
    double bw;
    switch (tier) {
    case ZS_TIER_POOL_PINNED: bw = h2d; break;
    case ZS_TIER_POOL: bw = h2d * 0.5; break; /* staged through bounce buffers */
    default: bw = rd < h2d ? rd : h2d; break;
    }
    return (double)bytes / (bw * 1e9);
}

/* Order of victims: longest idle first; among equally idle, cheapest to bring back. */
static int victim_before(const zs_place_idle_t *a, const zs_place_idle_t *b) {
    if (a->idle_s != b->idle_s) return a->idle_s > b->idle_s;
    return a->reload_s < b->reload_s;
}

/* Plans the model on one GPU; 0 when it cannot fit now. */
static int plan_gpu(const zs_place_gpu_t *g, const zs_place_model_t *m, zs_place_result_t *r) {
    memset(r, 0, sizeof *r);
    int n = g->nidle < 0 ? 0 : g->nidle > ZS_PLACE_MAX_IDLE ? ZS_PLACE_MAX_IDLE : g->nidle;
    uint64_t free_b = g->free_bytes;
    if (free_b < m->bytes) {
        int order[ZS_PLACE_MAX_IDLE];
        for (int i = 0; i < n; i++) order[i] = i;
        for (int i = 1; i < n; i++) /* insertion sort: n is small */
            for (int j = i; j > 0 && victim_before(&g->idle[order[j]], &g->idle[order[j - 1]]); j--) {
                int t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        for (int k = 0; k < n && free_b < m->bytes; k++) {
            const zs_place_idle_t *v = &g->idle[order[k]];
            r->evict[r->nevict++] = v->model;
            r->evict_bytes += v->bytes;
            free_b += v->bytes;
            r->evict_s += ZS_PLACE_UNLOAD_S + ZS_PLACE_RELOAD_WEIGHT * (v->reload_s > 0 ? v->reload_s : 0);
        }
        if (free_b < m->bytes) return 0;
    }
    r->transfer_s = zs_place_transfer_s(m->weight_bytes, m->tier, m->read_gbps, g->h2d_gbps);
    r->est_s = r->evict_s + r->transfer_s;
    return 1;
}

int zs_place(const zs_place_gpu_t *gpus, int ngpus, const zs_place_model_t *m, zs_place_result_t *r) {
    memset(r, 0, sizeof *r);
    int best = -1, any_big_enough = 0;
    uint64_t best_left = 0;
    for (int i = 0; i < ngpus; i++) {
        const zs_place_gpu_t *g = &gpus[i];
        if (!g->allowed) continue;
        if (g->total_bytes >= m->bytes) any_big_enough = 1;
        zs_place_result_t c;
        if (!plan_gpu(g, m, &c)) continue;
        uint64_t left = g->free_bytes + c.evict_bytes - m->bytes;
        if (best < 0 || c.est_s < r->est_s || (c.est_s == r->est_s && left > best_left)) {
            *r = c;
            best = i;
            best_left = left;
        }
    }
    if (best < 0) {
        memset(r, 0, sizeof *r);
        r->gpu = any_big_enough ? ZS_PLACE_WAIT : ZS_PLACE_NEVER;
        return r->gpu;
    }
    r->gpu = best;
    return best;
}
