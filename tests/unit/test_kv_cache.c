/* Unit tests of the paged KV cache bookkeeping: layout arithmetic, the block allocator's free
 * list and reference counts, per-sequence block tables, prefix sharing and release. */
#include <stdlib.h>

#include "zerostart/kv_cache.h"
#include "zt.h"

static void test_layout(void) {
    zs_kv_layout_t l;
    zs_err_t err = {0};
    ZT_REQUIRE(zs_kv_layout_init(&l, 3, 2, 8, 4, ZS_F32, &err) == 0);
    ZT_CHECK(l.head_stride == 4 * 8 * 4);
    ZT_CHECK(l.kv_stride == 2 * l.head_stride);
    ZT_CHECK(l.layer_stride == 2 * l.kv_stride);
    ZT_CHECK(l.block_bytes == 3 * 2 * 2 * 4 * 8 * 4);
    /* every (layer, kv, head, slot) of a block is a distinct head_dim vector inside it */
    size_t vec = (size_t)l.head_dim * l.elem_size, n = 0;
    unsigned char *hit = calloc(l.block_bytes / vec, 1);
    ZT_REQUIRE(hit != NULL);
    for (int32_t layer = 0; layer < 3; layer++)
        for (int kv = 0; kv < 2; kv++)
            for (int32_t h = 0; h < 2; h++)
                for (int32_t s = 0; s < 4; s++) {
                    size_t off = zs_kv_offset(&l, 5, layer, kv, h, s);
                    ZT_CHECK(off >= 5 * l.block_bytes && off + vec <= 6 * l.block_bytes);
                    ZT_CHECK(off % vec == 0);
                    size_t idx = (off - 5 * l.block_bytes) / vec;
                    ZT_CHECK(hit[idx] == 0);
                    hit[idx] = 1;
                    n++;
                }
    ZT_CHECK(n == l.block_bytes / vec);
    free(hit);
    /* a head's slots are contiguous: slot s+1 follows slot s */
    ZT_CHECK(zs_kv_offset(&l, 0, 1, 1, 1, 3) - zs_kv_offset(&l, 0, 1, 1, 1, 2) == vec);
    ZT_CHECK(zs_kv_layout_init(&l, 0, 2, 8, 4, ZS_F32, &err) == ZS_EINVAL);
    ZT_CHECK(zs_kv_layout_init(&l, 1, 2, 8, 4, ZS_I32, NULL) == ZS_EUNSUPPORTED);
    ZT_REQUIRE(zs_kv_layout_init(&l, 1, 1, 2, 2, ZS_BF16, NULL) == 0);
    ZT_CHECK(l.block_bytes == 2 * 2 * 2 * 2);
}

static void test_alloc_free_refcount(void) {
    zs_kv_layout_t l;
    zs_kv_cache_t kv;
    zs_err_t err = {0};
    ZT_REQUIRE(zs_kv_layout_init(&l, 1, 1, 4, 4, ZS_F32, &err) == 0);
    ZT_REQUIRE(zs_kv_cache_init(&kv, &l, 3, NULL, &err) == 0);
    ZT_CHECK(zs_kv_free_blocks(&kv) == 3);
    int32_t a = -1, b = -1, c = -1, d = -1;
    ZT_CHECK(zs_kv_block_alloc(&kv, &a, &err) == 0);
    ZT_CHECK(zs_kv_block_alloc(&kv, &b, &err) == 0);
    ZT_CHECK(zs_kv_block_alloc(&kv, &c, &err) == 0);
    ZT_CHECK(a != b && b != c && a != c);
    ZT_CHECK(a >= 0 && a < 3 && b >= 0 && b < 3 && c >= 0 && c < 3);
    ZT_CHECK(zs_kv_free_blocks(&kv) == 0);
    ZT_CHECK(zs_kv_block_alloc(&kv, &d, &err) == ZS_EBUSY);
    ZT_CHECK_STR_CONTAINS(err.msg, "3 blocks");
    zs_err_clear(&err);
    ZT_CHECK(zs_kv_block_ref(&kv, b, &err) == 0);
    ZT_CHECK(zs_kv_block_refcount(&kv, b) == 2);
    ZT_CHECK(zs_kv_block_unref(&kv, b) == 1);
    ZT_CHECK(zs_kv_free_blocks(&kv) == 0);
    ZT_CHECK(zs_kv_block_unref(&kv, b) == 0);
    ZT_CHECK(zs_kv_free_blocks(&kv) == 1);
    ZT_CHECK(zs_kv_block_unref(&kv, b) == ZS_EINVAL); /* already free */
    ZT_CHECK(zs_kv_block_ref(&kv, b, &err) == ZS_EINVAL);
    ZT_CHECK(zs_kv_block_ref(&kv, 77, &err) == ZS_EINVAL);
    ZT_CHECK(zs_kv_block_unref(&kv, -1) == ZS_EINVAL);
    ZT_CHECK(zs_kv_block_alloc(&kv, &d, &err) == 0);
    ZT_CHECK(d == b); /* the freed block is reused */
    zs_kv_cache_destroy(&kv);
    ZT_CHECK(zs_kv_cache_init(&kv, &l, 0, NULL, &err) == ZS_EINVAL);
}

static void test_seq_reserve_slots(void) {
    zs_kv_layout_t l;
    zs_kv_cache_t kv;
    zs_err_t err = {0};
    ZT_REQUIRE(zs_kv_layout_init(&l, 2, 1, 4, 4, ZS_F32, &err) == 0);
    ZT_REQUIRE(zs_kv_cache_init(&kv, &l, 5, NULL, &err) == 0);
    zs_kv_seq_t s, t;
    zs_kv_seq_init(&s);
    zs_kv_seq_init(&t);
    ZT_CHECK(zs_kv_seq_reserve(&kv, &s, 0, &err) == 0 && s.nblocks == 0);
    ZT_CHECK(zs_kv_seq_reserve(&kv, &s, 1, &err) == 0 && s.nblocks == 1);
    ZT_CHECK(zs_kv_seq_reserve(&kv, &s, 4, &err) == 0 && s.nblocks == 1);
    ZT_CHECK(zs_kv_seq_reserve(&kv, &s, 9, &err) == 0 && s.nblocks == 3);
    ZT_CHECK(zs_kv_free_blocks(&kv) == 2);
    /* slots map positions through the table */
    for (int64_t p = 0; p < 9; p++)
        ZT_CHECK(zs_kv_seq_slot(&l, &s, p) == s.blocks[p / 4] * 4 + (int32_t)(p % 4));
    /* all or nothing: 3 more blocks are not there, nothing is taken */
    ZT_CHECK(zs_kv_seq_reserve(&kv, &t, 12, &err) == ZS_EBUSY);
    ZT_CHECK(t.nblocks == 0 && zs_kv_free_blocks(&kv) == 2);
    zs_err_clear(&err);
    ZT_CHECK(zs_kv_seq_reserve(&kv, &t, 21, &err) == ZS_EBUSY); /* more than the whole cache */
    zs_err_clear(&err);
    ZT_CHECK(zs_kv_seq_reserve(&kv, &t, 8, &err) == 0 && zs_kv_free_blocks(&kv) == 0);
    /* blocks of s and t are disjoint */
    for (int32_t i = 0; i < s.nblocks; i++)
        for (int32_t j = 0; j < t.nblocks; j++) ZT_CHECK(s.blocks[i] != t.blocks[j]);
    zs_kv_seq_release(&kv, &s);
    ZT_CHECK(s.nblocks == 0 && s.blocks == NULL && zs_kv_free_blocks(&kv) == 3);
    zs_kv_seq_release(&kv, &t);
    ZT_CHECK(zs_kv_free_blocks(&kv) == 5);
    zs_kv_cache_destroy(&kv);
}

static void test_fork_shares_full_blocks(void) {
    zs_kv_layout_t l;
    zs_kv_cache_t kv;
    zs_err_t err = {0};
    ZT_REQUIRE(zs_kv_layout_init(&l, 1, 1, 4, 4, ZS_F32, &err) == 0);
    ZT_REQUIRE(zs_kv_cache_init(&kv, &l, 8, NULL, &err) == 0);
    zs_kv_seq_t a, b, c;
    zs_kv_seq_init(&a);
    zs_kv_seq_init(&b);
    zs_kv_seq_init(&c);
    ZT_REQUIRE(zs_kv_seq_reserve(&kv, &a, 10, &err) == 0);
    a.ntokens = 10; /* written by the engine */
    ZT_REQUIRE(zs_kv_seq_fork(&kv, &b, &a, &err) == 0);
    ZT_CHECK(b.ntokens == 8 && b.nblocks == 2);
    ZT_CHECK(b.blocks[0] == a.blocks[0] && b.blocks[1] == a.blocks[1]);
    ZT_CHECK(zs_kv_block_refcount(&kv, a.blocks[0]) == 2);
    ZT_CHECK(zs_kv_block_refcount(&kv, a.blocks[2]) == 1); /* the partial block is not shared */
    ZT_CHECK(zs_kv_free_blocks(&kv) == 5);
    /* b grows into a block of its own */
    ZT_REQUIRE(zs_kv_seq_reserve(&kv, &b, 10, &err) == 0);
    ZT_CHECK(b.nblocks == 3 && b.blocks[2] != a.blocks[2]);
    /* fork into a non-empty sequence is refused */
    ZT_CHECK(zs_kv_seq_fork(&kv, &b, &a, &err) == ZS_ESTATE);
    zs_err_clear(&err);
    ZT_REQUIRE(zs_kv_seq_fork(&kv, &c, &b, &err) == 0);
    ZT_CHECK(zs_kv_block_refcount(&kv, a.blocks[0]) == 3);
    /* releasing the original keeps shared blocks alive for the others */
    int32_t shared0 = a.blocks[0];
    zs_kv_seq_release(&kv, &a);
    ZT_CHECK(zs_kv_block_refcount(&kv, shared0) == 2);
    ZT_CHECK(zs_kv_free_blocks(&kv) == 5); /* only a's partial block came back */
    zs_kv_seq_release(&kv, &b);
    zs_kv_seq_release(&kv, &c);
    ZT_CHECK(zs_kv_block_refcount(&kv, shared0) == 0);
    ZT_CHECK(zs_kv_free_blocks(&kv) == 8);
    zs_kv_cache_destroy(&kv);
}

static void test_many_sequences_churn(void) {
    /* allocate and free in a pattern; the free count must always equal blocks - held */
    zs_kv_layout_t l;
    zs_kv_cache_t kv;
    zs_err_t err = {0};
    ZT_REQUIRE(zs_kv_layout_init(&l, 1, 1, 2, 2, ZS_F32, &err) == 0);
    ZT_REQUIRE(zs_kv_cache_init(&kv, &l, 64, NULL, &err) == 0);
    zs_kv_seq_t s[8];
    for (int i = 0; i < 8; i++) zs_kv_seq_init(&s[i]);
    uint32_t state = 12345;
    for (int round = 0; round < 500; round++) {
        state = state * 1103515245u + 12345u;
        int i = (int)((state >> 16) % 8);
        if ((state >> 8) & 1) {
            zs_kv_seq_release(&kv, &s[i]);
        } else {
            int64_t want = s[i].nblocks * 2 + (int64_t)((state >> 20) % 7);
            int rc = zs_kv_seq_reserve(&kv, &s[i], want, &err);
            ZT_CHECK(rc == 0 || rc == ZS_EBUSY);
            zs_err_clear(&err);
        }
        uint32_t held = 0;
        for (int j = 0; j < 8; j++) held += (uint32_t)s[j].nblocks;
        ZT_CHECK(zs_kv_free_blocks(&kv) + held == 64);
    }
    for (int i = 0; i < 8; i++) zs_kv_seq_release(&kv, &s[i]);
    ZT_CHECK(zs_kv_free_blocks(&kv) == 64);
    zs_kv_cache_destroy(&kv);
}

int main(void) {
    ZT_RUN(test_layout);
    ZT_RUN(test_alloc_free_refcount);
    ZT_RUN(test_seq_reserve_slots);
    ZT_RUN(test_fork_shares_full_blocks);
    ZT_RUN(test_many_sequences_churn);
    return ZT_DONE();
}
