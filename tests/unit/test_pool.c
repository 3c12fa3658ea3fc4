/* Hot model pool tests: fill then hit, loads from the pool byte-identical to the files, a
 * changed checkpoint refilled (never served stale), a filler killed with SIGKILL leaves
 * nothing behind, capacity with least-recently-used eviction that spares models in use,
 * concurrent acquires fill once, eviction of a model in use refused. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pool/segment.h"
#include "zerostart/pool.h"
#include "zerostart/synth.h"
#include "zerostart/verify.h"
#include "zt.h"

static char g_root[64], g_pool[128], g_a[128], g_b[128], g_big[128];

static void sh(const char *cmd) {
    if (system(cmd) != 0) fprintf(stderr, "command failed: %s\n", cmd);
}

static zs_pool_t *open_pool(uint64_t capacity) {
    zs_pool_opts_t o = {.dir = g_pool, .capacity = capacity, .threads = 2};
    zs_pool_t *p = NULL;
    zs_err_t err = {0};
    if (zs_pool_open(&o, &p, &err) != ZS_OK) fprintf(stderr, "pool open: %s\n", err.msg);
    return p;
}

static size_t pool_count(zs_pool_t *p) {
    zs_pool_entry_t *e = NULL;
    size_t n = 0;
    zs_err_t err = {0};
    zs_pool_list(p, &e, &n, &err);
    free(e);
    return n;
}

static void test_fill_hit_and_load(void) {
    zs_err_t err = {0};
    zs_pool_t *p = open_pool(0);
    ZT_REQUIRE(p != NULL);
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_a, &ck, &err) == ZS_OK);
    zs_pool_model_t *m = NULL;
    zs_pool_source_t how = 0;
    ZT_REQUIRE(zs_pool_acquire(p, ck, &m, &how, &err) == ZS_OK);
    ZT_CHECK(how == ZS_POOL_FILLED);
    uint64_t bytes = 0;
    ZT_CHECK(zs_load_alloc_bytes(ck, &bytes, &err) == ZS_OK && zs_pool_model_bytes(m) == bytes);
    ZT_CHECK(zs_pool_model_verify(m, &err) == ZS_OK);
    zs_load_opts_t o;
    zs_load_opts_default(&o);
    zs_pool_model_load_opts(m, &o);
    zs_weights_t *w = NULL;
    ZT_CHECK_MSG(zs_load(ck, &o, &w, &err) == ZS_OK, "%s", err.msg);
    ZT_CHECK_MSG(w && zs_weights_verify(w, NULL, &err) == ZS_OK, "%s", err.msg);
    zs_weights_free(w);
    zs_pool_release(m);
    ZT_REQUIRE(zs_pool_acquire(p, ck, &m, &how, &err) == ZS_OK);
    ZT_CHECK(how == ZS_POOL_HIT);
    /* a damaged segment is detected by its content hash */
    ((unsigned char *)zs_pool_model_data(m))[100] ^= 0xff;
    ZT_CHECK(zs_pool_model_verify(m, &err) == ZS_EIO);
    ZT_CHECK_STR_CONTAINS(err.msg, "damaged");
    ((unsigned char *)zs_pool_model_data(m))[100] ^= 0xff;
    zs_pool_release(m);
    ZT_CHECK(pool_count(p) == 1);
    zs_ckpt_close(ck);
    zs_pool_close(p);
}

static void test_changed_checkpoint_is_refilled(void) {
    zs_err_t err = {0};
    zs_pool_t *p = open_pool(0);
    ZT_REQUIRE(p != NULL);
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_a, &ck, &err) == ZS_OK);
    zs_pool_model_t *m = NULL;
    ZT_REQUIRE(zs_pool_acquire(p, ck, &m, NULL, &err) == ZS_OK);
    uint64_t old_hash = zs_pool_model_hash(m);
    zs_pool_release(m);
    /* rewrite the checkpoint with other weights (same sizes, new mtimes) */
    zs_ckpt_close(ck);
    ZT_REQUIRE(zs_synth_write(g_a, zs_synth_shape("tiny"), 99, &err) == ZS_OK);
    ZT_REQUIRE(zs_ckpt_open(g_a, &ck, &err) == ZS_OK);
    zs_err_clear(&err);
    ZT_CHECK(zs_pool_attach(p, ck, &m, &err) == ZS_ESTATE);
    ZT_CHECK_STR_CONTAINS(err.msg, "changed since it was pooled");
    zs_pool_source_t how = 0;
    ZT_REQUIRE(zs_pool_acquire(p, ck, &m, &how, &err) == ZS_OK);
    ZT_CHECK(how == ZS_POOL_REFILLED_STALE);
    ZT_CHECK(zs_pool_model_hash(m) != old_hash);
    zs_load_opts_t o;
    zs_load_opts_default(&o);
    zs_pool_model_load_opts(m, &o);
    zs_weights_t *w = NULL;
    ZT_CHECK(zs_load(ck, &o, &w, &err) == ZS_OK && zs_weights_verify(w, NULL, &err) == ZS_OK);
    zs_weights_free(w);
    zs_pool_release(m);
    zs_ckpt_close(ck);
    zs_pool_close(p);
}

/* Reads the state of the big model's segment, 0 if there is none. */
static int big_segment_state(void) {
    char real[1024], name[64], path[512];
    zs_err_t err = {0};
    if (zs_seg_name(g_big, real, sizeof real, name, sizeof name, &err) != ZS_OK) return -1;
    snprintf(path, sizeof path, "%s/%s", g_pool, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) return 0;
    zs_seg_header_t h;
    size_t got = fread(&h, sizeof h, 1, f);
    fclose(f);
    return got == 1 ? (int)h.state : -1;
}

static void test_filler_killed_leaves_nothing(void) {
    int saw_filling = 0;
    for (int attempt = 0; attempt < 5 && !saw_filling; attempt++) {
        pid_t pid = fork();
        ZT_REQUIRE(pid >= 0);
        if (pid == 0) {
            zs_pool_t *p = open_pool(0);
            zs_ckpt_t *ck = NULL;
            zs_pool_model_t *m = NULL;
            zs_err_t err = {0};
            if (p && zs_ckpt_open(g_big, &ck, &err) == ZS_OK) zs_pool_acquire(p, ck, &m, NULL, &err);
            _exit(0);
        }
        int state = 0;
        for (int i = 0; i < 20000 && (state = big_segment_state()) == 0; i++) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        saw_filling |= state == ZS_POOL_FILLING;
        zs_pool_t *p = open_pool(0); /* recovery runs here */
        ZT_REQUIRE(p != NULL);
        if (state == ZS_POOL_FILLING) ZT_CHECK(big_segment_state() == 0);
        else zs_pool_evict(p, g_big, NULL);
        zs_pool_close(p);
    }
    ZT_CHECK_MSG(saw_filling, "never caught the filler mid-fill");
}

static void test_capacity_lru_and_in_use(void) {
    zs_err_t err = {0};
    zs_pool_t *p0 = open_pool(0);
    ZT_REQUIRE(p0 != NULL);
    zs_pool_evict(p0, g_a, NULL);
    zs_pool_evict(p0, g_b, NULL);
    ZT_CHECK(pool_count(p0) == 0);
    zs_pool_close(p0);
    zs_ckpt_t *a = NULL, *b = NULL, *big = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_a, &a, &err) == ZS_OK && zs_ckpt_open(g_b, &b, &err) == ZS_OK &&
               zs_ckpt_open(g_big, &big, &err) == ZS_OK);
    uint64_t one;
    ZT_REQUIRE(zs_load_alloc_bytes(a, &one, &err) == ZS_OK);
    zs_pool_t *p = open_pool(one + one / 2); /* room for one tiny model */
    zs_pool_model_t *ma = NULL, *mb = NULL;
    ZT_REQUIRE(zs_pool_acquire(p, a, &ma, NULL, &err) == ZS_OK);
    zs_err_clear(&err);
    ZT_CHECK(zs_pool_acquire(p, b, &mb, NULL, &err) == ZS_ENOMEM); /* a is in use */
    ZT_CHECK_STR_CONTAINS(err.msg, "in use");
    zs_pool_release(ma);
    ZT_CHECK(zs_pool_acquire(p, b, &mb, NULL, &err) == ZS_OK); /* a evicted */
    ZT_CHECK(pool_count(p) == 1);
    zs_err_clear(&err);
    ZT_CHECK(zs_pool_attach(p, a, &ma, &err) == ZS_ENOENT);
    zs_err_clear(&err);
    ZT_CHECK(zs_pool_acquire(p, big, &ma, NULL, &err) == ZS_ENOMEM);
    ZT_CHECK_STR_CONTAINS(err.msg, "but the pool holds");
    zs_err_clear(&err);
    ZT_CHECK(zs_pool_evict(p, g_b, &err) == ZS_EBUSY);
    zs_pool_release(mb);
    ZT_CHECK(zs_pool_evict(p, g_b, &err) == ZS_OK);
    ZT_CHECK(pool_count(p) == 0);
    zs_pool_close(p);
    zs_ckpt_close(a);
    zs_ckpt_close(b);
    zs_ckpt_close(big);
}

static zs_ckpt_t *g_ck_conc;
static uint64_t g_hash[4];

static void *conc_main(void *arg) {
    int i = (int)(intptr_t)arg;
    zs_pool_t *p = open_pool(0);
    zs_pool_model_t *m = NULL;
    zs_err_t err = {0};
    if (p && zs_pool_acquire(p, g_ck_conc, &m, NULL, &err) == ZS_OK) g_hash[i] = zs_pool_model_hash(m);
    else fprintf(stderr, "concurrent acquire: %s\n", err.msg);
    zs_pool_release(m);
    zs_pool_close(p);
    return NULL;
}

static void test_concurrent_acquire(void) {
    zs_err_t err = {0};
    zs_pool_t *p = open_pool(0);
    ZT_REQUIRE(p != NULL);
    zs_pool_evict(p, g_a, NULL);
    ZT_REQUIRE(zs_ckpt_open(g_a, &g_ck_conc, &err) == ZS_OK);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) ZT_REQUIRE(pthread_create(&th[i], NULL, conc_main, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) ZT_CHECK(g_hash[i] != 0 && g_hash[i] == g_hash[0]);
    ZT_CHECK(pool_count(p) == 1);
    zs_ckpt_close(g_ck_conc);
    zs_pool_close(p);
}

int main(void) {
    snprintf(g_root, sizeof g_root, "/tmp/zs-pool-test-%d", (int)getpid());
    snprintf(g_pool, sizeof g_pool, "%s/pool", g_root);
    snprintf(g_a, sizeof g_a, "%s/a", g_root);
    snprintf(g_b, sizeof g_b, "%s/b", g_root);
    snprintf(g_big, sizeof g_big, "%s/big", g_root);
    zs_err_t err = {0};
    if (zs_synth_write(g_a, zs_synth_shape("tiny"), 1, &err) != ZS_OK ||
        zs_synth_write(g_b, zs_synth_shape("tiny"), 2, &err) != ZS_OK ||
        zs_synth_write(g_big, zs_synth_shape("small"), 3, &err) != ZS_OK) {
        fprintf(stderr, "synth: %s\n", err.msg);
        return 1;
    }
    ZT_RUN(test_fill_hit_and_load);
    ZT_RUN(test_changed_checkpoint_is_refilled);
    ZT_RUN(test_filler_killed_leaves_nothing);
    ZT_RUN(test_capacity_lru_and_in_use);
    ZT_RUN(test_concurrent_acquire);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
    sh(cmd);
    return ZT_DONE();
}
