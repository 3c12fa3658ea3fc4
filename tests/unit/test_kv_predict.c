/* Prefix prediction (src/server/kv_predict.c): a prefix shared by two prompts becomes an
 * entry, its count grows with use and decays with time, successors are learned per tenant,
 * tenants never see each other's prefixes, prefetched entries are not predicted again until
 * used, and the table stays within its size. */
#include <stdlib.h>
#include <string.h>

#include "server/kv_predict.h"
#include "zt.h"

#define BS 4

static void prompt(int32_t *ids, int n, int32_t base, int32_t tail) {
    for (int i = 0; i < n; i++) ids[i] = i < 8 ? base + i : tail + i; /* 2 shared blocks, then a tail */
}

static void test_learns_shared_prefix(void) {
    zs_kvp_t *p = NULL;
    zs_kvp_opts_t o = {.block_size = BS, .half_life_s = 100};
    ZT_REQUIRE(zs_kvp_create(&o, &p) == 0);
    zs_kv_ns_t ns, other;
    zs_kv_namespace("m", NULL, &ns, NULL);
    zs_kv_namespace("m", "tenant-b", &other, NULL);
    int32_t a[16], b[16], c[16];
    prompt(a, 16, 100, 1000);
    prompt(b, 16, 100, 2000);
    prompt(c, 16, 100, 3000);
    zs_kvp_pred_t out[4];
    ZT_CHECK(zs_kvp_observe(p, &ns, a, 16, 0) == 0);
    ZT_CHECK(zs_kvp_entries(p) == 0 && zs_kvp_predict(p, 0, 1, out, 4) == 0); /* seen once: nothing recurs */
    ZT_CHECK(zs_kvp_observe(p, &other, b, 16, 1) == 0); /* another tenant: not shared */
    ZT_CHECK(zs_kvp_entries(p) == 0);
    ZT_CHECK(zs_kvp_observe(p, &ns, b, 16, 2) == 0);
    ZT_REQUIRE(zs_kvp_entries(p) == 1);
    int n = zs_kvp_predict(p, 2, 2, out, 4);
    ZT_REQUIRE(n == 1);
    ZT_CHECK(out[0].nblocks == 2 && memcmp(out[0].ids, a, 8 * sizeof *a) == 0);
    ZT_CHECK(memcmp(out[0].ns.b, ns.b, sizeof ns.b) == 0);
    ZT_CHECK(out[0].score > 1.9 && out[0].score <= 2.0);
    ZT_CHECK(zs_kvp_observe(p, &ns, c, 16, 3) == 0); /* a third use counts, no new entry */
    ZT_CHECK(zs_kvp_entries(p) == 1);
    n = zs_kvp_predict(p, 3, 2, out, 4);
    ZT_CHECK(n == 1 && out[0].score > 2.9);
    /* decay: after 10 half-lives the count is below the threshold */
    ZT_CHECK(zs_kvp_predict(p, 1003, 2, out, 4) == 0);
    /* prefetched: not predicted again until a prompt uses it */
    n = zs_kvp_predict(p, 3, 1, out, 4);
    ZT_REQUIRE(n == 1);
    zs_kvp_mark_prefetched(p, out[0].entry);
    ZT_CHECK(zs_kvp_predict(p, 3, 1, out, 4) == 0);
    ZT_CHECK(zs_kvp_observe(p, &ns, a, 16, 4) == 0); /* a again: the whole of a recurs too */
    n = zs_kvp_predict(p, 4, 1, out, 4);
    ZT_CHECK(n == 2);
    int found2 = 0, found4 = 0;
    for (int i = 0; i < n; i++) {
        found2 |= out[i].nblocks == 2;
        found4 |= out[i].nblocks == 4;
    }
    ZT_CHECK(found2 && found4);
    /* a prompt shorter than a block, or empty: ignored */
    ZT_CHECK(zs_kvp_observe(p, &ns, a, 3, 5) == 0 && zs_kvp_observe(p, &ns, a, 0, 5) == 0);
    zs_kvp_free(p);
}

static void test_successors(void) {
    zs_kvp_t *p = NULL;
    zs_kvp_opts_t o = {.block_size = BS};
    ZT_REQUIRE(zs_kvp_create(&o, &p) == 0);
    zs_kv_ns_t ns;
    zs_kv_namespace("m", "t", &ns, NULL);
    /* two recurring contexts X and Y; the pattern X, Y, X, Y, ...: after X, Y is predicted */
    int32_t x[12], y[12];
    double t = 0;
    for (int round = 0; round < 4; round++) {
        prompt(x, 12, 100, 5000 + round * 100);
        ZT_CHECK(zs_kvp_observe(p, &ns, x, 12, t++) == 0);
        prompt(y, 12, 700, 9000 + round * 100);
        ZT_CHECK(zs_kvp_observe(p, &ns, y, 12, t++) == 0);
    }
    prompt(x, 12, 100, 7777);
    ZT_CHECK(zs_kvp_observe(p, &ns, x, 12, t++) == 0); /* now X again */
    zs_kvp_pred_t out[4];
    int n = zs_kvp_predict(p, t, 2, out, 4);
    ZT_REQUIRE(n >= 1);
    ZT_CHECK(out[0].successor == 1 && out[0].ids[0] == 700); /* Y follows X */
    zs_kvp_free(p);
}

static void test_bounded(void) {
    zs_kvp_t *p = NULL;
    zs_kvp_opts_t o = {.block_size = BS, .max_entries = 4, .recent = 3};
    ZT_REQUIRE(zs_kvp_create(&o, &p) == 0);
    zs_kv_ns_t ns;
    zs_kv_namespace("m", NULL, &ns, NULL);
    int32_t a[12];
    for (int i = 0; i < 40; i++) { /* 20 recurring prefixes, each seen twice in a row */
        prompt(a, 12, 1000 * (i / 2 + 1), 50 * i);
        ZT_CHECK(zs_kvp_observe(p, &ns, a, 12, i) == 0);
        ZT_CHECK(zs_kvp_entries(p) <= 4);
    }
    zs_kvp_pred_t out[8];
    int n = zs_kvp_predict(p, 40, 1, out, 8);
    ZT_CHECK(n >= 1 && n <= 4);
    ZT_CHECK(out[0].ids[0] == 20000); /* the newest keeps the highest decayed count */
    zs_kvp_free(p);
    zs_kvp_opts_t bad = {.block_size = 0};
    ZT_CHECK(zs_kvp_create(&bad, &p) == -1);
}

int main(void) {
    ZT_RUN(test_learns_shared_prefix);
    ZT_RUN(test_successors);
    ZT_RUN(test_bounded);
    return ZT_DONE();
}
