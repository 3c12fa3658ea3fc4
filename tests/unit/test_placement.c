/* Start-up-aware placement (src/server/placement.c) on simulated multi-GPU states. */
#include "server/placement.h"

#include "zt.h"

#define GB 1000000000ULL

static zs_place_gpu_t gpu(uint64_t total, uint64_t free_b, double h2d) {
    zs_place_gpu_t g;
    memset(&g, 0, sizeof g);
    g.allowed = 1;
    g.total_bytes = total;
    g.free_bytes = free_b;
    g.h2d_gbps = h2d;
    return g;
}

static void add_idle(zs_place_gpu_t *g, int model, uint64_t bytes, double idle_s, double reload_s) {
    g->idle[g->nidle++] = (zs_place_idle_t){.model = model, .bytes = bytes, .idle_s = idle_s, .reload_s = reload_s};
}

static void test_fits_on_faster_gpu(void) {
    zs_place_gpu_t g[2] = {gpu(80 * GB, 40 * GB, 25), gpu(80 * GB, 40 * GB, 50)};
    zs_place_model_t m = {.bytes = 20 * GB, .weight_bytes = 16 * GB, .tier = ZS_TIER_POOL_PINNED};
    zs_place_result_t r;
    ZT_CHECK(zs_place(g, 2, &m, &r) == 1);
    ZT_CHECK(r.nevict == 0);
    ZT_CHECK(r.est_s > 0.31 && r.est_s < 0.33); /* 16 GB at 50 GB/s */
}

static void test_prefers_free_gpu_over_eviction(void) {
    zs_place_gpu_t g[2] = {gpu(80 * GB, 5 * GB, 50), gpu(80 * GB, 30 * GB, 25)};
    add_idle(&g[0], 7, 30 * GB, 100, 1.0);
    zs_place_model_t m = {.bytes = 20 * GB, .weight_bytes = 16 * GB, .tier = ZS_TIER_POOL_PINNED};
    zs_place_result_t r;
    /* gpu 0: 0.32 s + unload 0.01 + 0.25 * 1.0 reload = 0.58 s; gpu 1: 0.64 s -> gpu 0 */
    ZT_CHECK(zs_place(g, 2, &m, &r) == 0);
    ZT_CHECK(r.nevict == 1 && r.evict[0] == 7);
    /* an expensive victim to bring back tips it to the free GPU */
    g[0].idle[0].reload_s = 10;
    ZT_CHECK(zs_place(g, 2, &m, &r) == 1);
    ZT_CHECK(r.nevict == 0);
}

static void test_evicts_lru_first_until_fit(void) {
    zs_place_gpu_t g[1] = {gpu(80 * GB, 2 * GB, 50)};
    add_idle(&g[0], 1, 10 * GB, 5, 0.2);   /* recently used */
    add_idle(&g[0], 2, 10 * GB, 500, 0.2); /* least recently used */
    add_idle(&g[0], 3, 10 * GB, 50, 0.2);
    zs_place_model_t m = {.bytes = 20 * GB, .weight_bytes = 16 * GB, .tier = ZS_TIER_POOL_PINNED};
    zs_place_result_t r;
    ZT_CHECK(zs_place(g, 1, &m, &r) == 0);
    ZT_CHECK(r.nevict == 2);
    ZT_CHECK(r.evict[0] == 2 && r.evict[1] == 3);
    ZT_CHECK(r.evict_bytes == 20 * GB);
}

static void test_wait_when_busy_models_hold_memory(void) {
    zs_place_gpu_t g[2] = {gpu(80 * GB, 10 * GB, 50), gpu(80 * GB, 1 * GB, 50)};
    add_idle(&g[1], 4, 5 * GB, 10, 0.1); /* not enough even after eviction */
    zs_place_model_t m = {.bytes = 20 * GB, .weight_bytes = 16 * GB, .tier = ZS_TIER_POOL_PINNED};
    zs_place_result_t r;
    ZT_CHECK(zs_place(g, 2, &m, &r) == ZS_PLACE_WAIT);
    ZT_CHECK(r.nevict == 0);
}

static void test_never_when_larger_than_every_gpu(void) {
    zs_place_gpu_t g[2] = {gpu(16 * GB, 16 * GB, 50), gpu(24 * GB, 24 * GB, 50)};
    zs_place_model_t m = {.bytes = 30 * GB, .weight_bytes = 28 * GB, .tier = ZS_TIER_DISK};
    zs_place_result_t r;
    ZT_CHECK(zs_place(g, 2, &m, &r) == ZS_PLACE_NEVER);
    ZT_CHECK(zs_place(g, 0, &m, &r) == ZS_PLACE_NEVER);
}

static void test_allowed_mask_and_tiers(void) {
    zs_place_gpu_t g[3] = {gpu(80 * GB, 80 * GB, 50), gpu(80 * GB, 80 * GB, 50), gpu(80 * GB, 80 * GB, 10)};
    g[0].allowed = g[1].allowed = 0;
    zs_place_model_t m = {.bytes = 20 * GB, .weight_bytes = 16 * GB, .tier = ZS_TIER_PAGE_CACHE, .read_gbps = 5};
    zs_place_result_t r;
    ZT_CHECK(zs_place(g, 3, &m, &r) == 2);
    /* page cache at 5 GB/s over a 10 GB/s link: the read is the bottleneck */
    ZT_CHECK(r.transfer_s > 3.19 && r.transfer_s < 3.21);
    ZT_CHECK(zs_place_transfer_s(16 * GB, ZS_TIER_POOL_PINNED, 5, 10) < zs_place_transfer_s(16 * GB, ZS_TIER_DISK, 1, 10));
    ZT_CHECK(zs_place_transfer_s(16 * GB, ZS_TIER_POOL_PINNED, 0, 0) > 0); /* defaults */
}

static void test_tie_goes_to_more_room(void) {
    zs_place_gpu_t g[2] = {gpu(80 * GB, 30 * GB, 50), gpu(80 * GB, 60 * GB, 50)};
    zs_place_model_t m = {.bytes = 20 * GB, .weight_bytes = 16 * GB, .tier = ZS_TIER_POOL_PINNED};
    zs_place_result_t r;
    ZT_CHECK(zs_place(g, 2, &m, &r) == 1);
}

int main(void) {
    ZT_RUN(test_fits_on_faster_gpu);
    ZT_RUN(test_prefers_free_gpu_over_eviction);
    ZT_RUN(test_evicts_lru_first_until_fit);
    ZT_RUN(test_wait_when_busy_models_hold_memory);
    ZT_RUN(test_never_when_larger_than_every_gpu);
    ZT_RUN(test_allowed_mask_and_tiers);
    ZT_RUN(test_tie_goes_to_more_room);
    return ZT_DONE();
}
