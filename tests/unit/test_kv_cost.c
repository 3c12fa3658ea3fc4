/* The restore-or-recompute cost model (src/server/kv_cost.c): recomputing grows with the
 * position (attention), restoring does not; the choice restores from fast tiers, recomputes
 * when the disk is slower than the prefill, and cuts a prefix where that pays. */
#include <math.h>

#include "server/kv_cost.h"
#include "zt.h"

static zs_kv_cost_t model8b(double h2d, double disk, double tok_s) {
    zs_model_config_t c = {.hidden = 4096, .intermediate = 14336, .nlayers = 32, .nheads = 32, .nkv_heads = 8,
                           .head_dim = 128};
    zs_kv_cost_t m = {.h2d_gbps = h2d, .disk_gbps = disk, .prefill_tok_s = tok_s,
                      .attn_ratio = zs_kv_cost_attn_ratio(&c), .per_block_s = 2e-6,
                      .block_bytes = (size_t)2 << 20, .block_size = 16};
    return m;
}

static void test_shapes(void) {
    zs_kv_cost_t m = model8b(50, 1.7, 25000);
    /* 8B: linear work ~2 * 6.98e9 FLOP per token, attention 4 * 32 * 32 * 128 per position */
    ZT_CHECK(m.attn_ratio > 3.5e-5 && m.attn_ratio < 4.0e-5);
    double a = zs_kv_cost_recompute_s(&m, 0, 1), b = zs_kv_cost_recompute_s(&m, 1000, 1001);
    ZT_CHECK(b > a); /* a later block attends to more positions */
    ZT_CHECK(fabs(zs_kv_cost_recompute_s(&m, 0, 10) - (zs_kv_cost_recompute_s(&m, 0, 4) +
                                                       zs_kv_cost_recompute_s(&m, 4, 10))) < 1e-12);
    ZT_CHECK(zs_kv_cost_recompute_s(&m, 5, 5) == 0);
    double host = zs_kv_cost_restore_block_s(&m, ZS_KV_TIER_HOST), disk = zs_kv_cost_restore_block_s(&m, ZS_KV_TIER_DISK);
    ZT_CHECK(disk > host && host > 0);
    ZT_CHECK(fabs(host - ((double)(2 << 20) / 50e9 + 2e-6)) < 1e-12);
    ZT_CHECK(fabs(disk - ((double)(2 << 20) / 50e9 + (double)(2 << 20) / 1.7e9 + 2e-6)) < 1e-12);
    /* reads overlapping the copies: a disk block costs the slower of the two */
    m.overlap = 1;
    ZT_CHECK(fabs(zs_kv_cost_restore_block_s(&m, ZS_KV_TIER_DISK) - ((double)(2 << 20) / 1.7e9 + 2e-6)) < 1e-12);
    ZT_CHECK(zs_kv_cost_restore_block_s(&m, ZS_KV_TIER_HOST) == host);
    m.disk_gbps = 100; /* a read faster than the copy */
    ZT_CHECK(fabs(zs_kv_cost_restore_block_s(&m, ZS_KV_TIER_DISK) - host) < 1e-12);
}

static void test_choices(void) {
    zs_kv_tier_t host[2048], disk[2048];
    for (int i = 0; i < 2048; i++) host[i] = ZS_KV_TIER_HOST, disk[i] = ZS_KV_TIER_DISK;
    /* 32k tokens from pinned host memory: restore everything */
    zs_kv_cost_t m = model8b(50, 1.7, 25000);
    double rs = 0, rc = 0;
    ZT_CHECK(zs_kv_cost_choose(&m, 0, 2048, host, &rs, &rc) == 2048);
    ZT_CHECK(rs > 0.05 && rs < 0.1 && rc == 0);
    /* a slow disk (0.2 GB/s) against a fast prefill: recomputing is faster for every prefix
     * length (restored blocks must be a prefix), so nothing is restored */
    zs_kv_cost_t slow = model8b(50, 0.2, 25000);
    int32_t k = zs_kv_cost_choose(&slow, 0, 2048, disk, &rs, &rc);
    ZT_CHECK(k == 0 && rs == 0 && rc > 0);
    /* the 1.7 GB/s disk and a slower prefill: restoring the 4.3 GB (~2.6 s) loses to recomputing
     * 32k tokens at 25k tok/s (~1.3 s + attention) but wins at 5k tok/s */
    int32_t k2 = zs_kv_cost_choose(&m, 0, 2048, disk, &rs, &rc);
    zs_kv_cost_t cpu = model8b(50, 1.7, 5000);
    int32_t k3 = zs_kv_cost_choose(&cpu, 0, 2048, disk, &rs, &rc);
    ZT_CHECK(k2 == 0);
    ZT_CHECK(k3 == 2048);
    /* mixed tiers: host blocks first, then disk: a cut between them can be best */
    zs_kv_tier_t mixed[2048];
    for (int i = 0; i < 2048; i++) mixed[i] = i < 1024 ? ZS_KV_TIER_HOST : ZS_KV_TIER_DISK;
    int32_t k4 = zs_kv_cost_choose(&m, 0, 2048, mixed, &rs, &rc);
    ZT_CHECK(k4 >= 1024); /* at least every host block */
    /* starting after blocks the GPU has */
    ZT_CHECK(zs_kv_cost_choose(&m, 100, 200, host, NULL, NULL) == 200);
    ZT_CHECK(zs_kv_cost_choose(&m, 100, 100, host, NULL, NULL) == 100);
    /* nothing measured yet: restore all */
    zs_kv_cost_t none = model8b(0, 0, 0);
    ZT_CHECK(zs_kv_cost_choose(&none, 0, 64, disk, &rs, &rc) == 64);
}

/* Disk reads at the page-cache or the disk rate by how much of the run is cached: a
 * restart's block files in the page cache are restored, the same files cold are recomputed. */
static void test_page_cache_share(void) {
    zs_kv_cost_t m = model8b(50, 1.7, 22000);
    m.disk_cached_gbps = 17;
    ZT_CHECK(fabs(zs_kv_cost_disk_gbps(&m, 0) - 1.7) < 1e-12);
    ZT_CHECK(fabs(zs_kv_cost_disk_gbps(&m, 1) - 17) < 1e-12);
    ZT_CHECK(fabs(zs_kv_cost_disk_gbps(&m, 0.5) - 1 / (0.5 / 17 + 0.5 / 1.7)) < 1e-12);
    ZT_CHECK(zs_kv_cost_disk_gbps(&m, -3) == zs_kv_cost_disk_gbps(&m, 0)); /* clamped */
    ZT_CHECK(zs_kv_cost_disk_gbps(&m, 7) == zs_kv_cost_disk_gbps(&m, 1));
    zs_kv_cost_t unknown = m;
    unknown.disk_cached_gbps = 0;
    ZT_CHECK(zs_kv_cost_disk_gbps(&unknown, 0.5) == 0 && zs_kv_cost_disk_gbps(&unknown, 0) == 1.7);
    zs_kv_tier_t disk[512];
    for (int i = 0; i < 512; i++) disk[i] = ZS_KV_TIER_DISK;
    zs_kv_cost_t warm = m, cold = m;
    warm.disk_gbps = zs_kv_cost_disk_gbps(&m, 1);
    cold.disk_gbps = zs_kv_cost_disk_gbps(&m, 0);
    /* 8k tokens (1.07 GB): ~0.06 s from the page cache, ~0.63 s from a 1.7 GB/s disk, against
     * ~0.4 s of prefill */
    ZT_CHECK(zs_kv_cost_choose(&warm, 0, 512, disk, NULL, NULL) == 512);
    ZT_CHECK(zs_kv_cost_choose(&cold, 0, 512, disk, NULL, NULL) == 0);
    /* the host->device probe has not reported yet: the disk rate and the prefill still decide */
    cold.h2d_gbps = 0;
    warm.h2d_gbps = 0;
    ZT_CHECK(zs_kv_cost_choose(&cold, 0, 512, disk, NULL, NULL) == 0);
    ZT_CHECK(zs_kv_cost_choose(&warm, 0, 512, disk, NULL, NULL) == 512);
}

int main(void) {
    ZT_RUN(test_shapes);
    ZT_RUN(test_choices);
    ZT_RUN(test_page_cache_share);
    return ZT_DONE();
}
