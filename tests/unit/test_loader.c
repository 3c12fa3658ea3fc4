/* Loader tests on the CPU: every tensor byte-identical to its file across thread counts, chunk
 * sizes and I/O modes; per-layer readiness; concurrent loads; the plan's alignment and
 * priority order; truncated, missing and hostile files rejected with the path named; a file
 * system without O_DIRECT (tmpfs). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "load/plan.h"
#include "zerostart/ckpt.h"
#include "zerostart/load.h"
#include "zerostart/synth.h"
#include "zerostart/verify.h"
#include "zt.h"

static char g_dir[256];   /* a tiny synthetic model */

static void run(const char *cmd) {
    if (system(cmd) != 0) fprintf(stderr, "command failed: %s\n", cmd);
}

static int write_file(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (f == NULL) return -1;
    size_t w = fwrite(buf, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

/* Writes a single-file safetensors model from a header and data. */
static int write_st(const char *path, const char *hdr, const void *data, size_t dlen) {
    size_t hl = strlen(hdr);
    unsigned char *buf = malloc(8 + hl + dlen + 1);
    if (buf == NULL) return -1;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    if (dlen) memcpy(buf + 8 + hl, data, dlen);
    int rc = write_file(path, buf, 8 + hl + dlen);
    free(buf);
    return rc;
}

static int g_readahead;

static void load_and_verify(const char *dir, int threads, size_t chunk, int direct) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(dir, &ck, &err) == ZS_OK);
    zs_load_opts_t o;
    zs_load_opts_default(&o);
    o.threads = threads;
    o.chunk_bytes = chunk;
    o.direct_io = direct;
    o.readahead = g_readahead;
    zs_weights_t *w = NULL;
    int rc = zs_load(ck, &o, &w, &err);
    ZT_CHECK_MSG(rc == ZS_OK, "%s", err.msg);
    if (rc == ZS_OK) {
        uint64_t checked = 0;
        ZT_CHECK_MSG(zs_weights_verify(w, &checked, &err) == ZS_OK, "%s", err.msg);
        ZT_CHECK(checked == ck->total_bytes);
        ZT_CHECK(w->stats.bytes >= ck->total_bytes);
        for (size_t i = 0; i < w->ntensors; i++)
            ZT_CHECK(w->tensors[i].offset % ZS_TENSOR_ALIGN == 0);
        const zs_tensor_t *t = zs_weights_find(w, "model.norm.weight");
        ZT_REQUIRE(t != NULL);
        ZT_CHECK(((const uint16_t *)t->data)[0] == 0x3F80); /* synthetic norms are 1.0 in bf16 */
        ZT_CHECK(zs_weights_find(w, "no.such.tensor") == NULL);
    }
    zs_weights_free(w);
    zs_ckpt_close(ck);
}

static void test_load_matches_files(void) {
    static const int threads[] = {1, 3, 8};
    static const size_t chunks[] = {4096, 65536, 4u << 20};
    static const int modes[] = {-1, 0, 1};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) load_and_verify(g_dir, threads[i], chunks[j], modes[(i + j) % 3]);
}

/* Readahead strategy: uncached data fetched by posix_fadvise ahead of buffered readers. The
 * page cache is emptied for the files first where the kernel allows (POSIX_FADV_DONTNEED). */
static void test_readahead_strategy(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "for f in %s/*.safetensors; do dd if=$f iflag=nocache count=0 status=none; done", g_dir);
    run(cmd);
    g_readahead = 1;
    load_and_verify(g_dir, 3, 4096, -1);
    load_and_verify(g_dir, 2, 65536, 0);
    load_and_verify(g_dir, 2, 8192, 1); /* O_DIRECT forced: readahead is ignored */
    g_readahead = 0;
}

static void test_layer_readiness(void) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_dir, &ck, &err) == ZS_OK);
    ZT_CHECK(ck->nlayers == 2);
    zs_load_opts_t o;
    zs_load_opts_default(&o);
    o.chunk_bytes = 4096;
    o.threads = 2;
    zs_load_t *ld = NULL;
    ZT_REQUIRE(zs_load_begin(ck, &o, &ld, &err) == ZS_OK);
    for (int l = 0; l < ck->nlayers; l++) {
        ZT_CHECK(zs_load_wait_layer(ld, l, &err) == ZS_OK);
        /* once a layer is ready its bytes are final */
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        const zs_tensor_t *t = zs_weights_find(zs_load_weights(ld), name);
        ZT_REQUIRE(t != NULL);
        ZT_CHECK(((const uint16_t *)t->data)[t->info->nelem - 1] == 0x3F80);
    }
    ZT_CHECK(zs_load_wait_layer(ld, -1, &err) == ZS_OK);
    zs_err_clear(&err);
    ZT_CHECK(zs_load_wait_layer(ld, 2, &err) == ZS_EINVAL);
    ZT_CHECK(zs_load_wait_layer(ld, -2, NULL) == ZS_EINVAL);
    zs_weights_t *w = NULL;
    ZT_CHECK(zs_load_finish(ld, &w, &err) == ZS_OK);
    ZT_CHECK(zs_load_done != NULL);
    zs_weights_free(w);
    zs_ckpt_close(ck);
}

static void *concurrent_main(void *arg) {
    (void)arg;
    load_and_verify(g_dir, 2, 8192, -1);
    return NULL;
}

static void test_concurrent_loads(void) {
    pthread_t th[4];
    for (int i = 0; i < 4; i++) ZT_REQUIRE(pthread_create(&th[i], NULL, concurrent_main, NULL) == 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
}

static void test_plan_order_and_padding(void) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_dir, &ck, &err) == ZS_OK);
    zs_plan_t p;
    ZT_REQUIRE(zs_plan_build(ck, NULL, 4096, &p, &err) == ZS_OK);
    for (size_t i = 1; i < p.nchunks; i++) ZT_CHECK(p.chunks[i - 1].priority <= p.chunks[i].priority);
    /* the first chunk holds the embeddings; the last priority is the tail (norm, lm_head) */
    const zs_chunk_t *c0 = &p.chunks[0];
    ZT_CHECK(c0->t_end > c0->t_first && strstr(ck->tensors[c0->t_first].name, "embed") != NULL);
    ZT_CHECK(p.chunks[p.nchunks - 1].priority == (uint32_t)ck->nlayers + 1);
    ZT_CHECK(p.alloc_bytes >= ck->total_bytes);
    ZT_CHECK(p.alloc_bytes - ck->total_bytes <= (uint64_t)ZS_TENSOR_ALIGN * ck->ntensors);
    uint64_t sum = 0;
    for (size_t i = 0; i < p.nchunks; i++) sum += p.chunks[i].len;
    ZT_CHECK(sum == p.read_bytes);
    zs_plan_free(&p);
    /* caller-given priorities: reverse the layers */
    uint32_t *prio = calloc(ck->ntensors, sizeof *prio);
    ZT_REQUIRE(prio != NULL);
    for (size_t i = 0; i < ck->ntensors; i++) prio[i] = ck->tensors[i].layer == 1 ? 0 : 5;
    ZT_REQUIRE(zs_plan_build(ck, prio, 4096, &p, &err) == ZS_OK);
    int has_layer1 = 0;
    for (size_t t = p.chunks[0].t_first; t < p.chunks[0].t_end; t++) has_layer1 |= ck->tensors[t].layer == 1;
    ZT_CHECK(has_layer1);
    ZT_CHECK(p.chunks[0].priority == 0);
    zs_plan_free(&p);
    free(prio);
    ZT_CHECK(zs_plan_build(ck, NULL, 1000, &p, &err) == ZS_EINVAL);
    zs_ckpt_close(ck);
}

static void expect_open_error(const char *path, int code, const char *needle) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    int rc = zs_ckpt_open(path, &ck, &err);
    ZT_CHECK_MSG(rc == code, "rc %d want %d: %s", rc, code, err.msg);
    ZT_CHECK_STR_CONTAINS(err.msg, needle);
    ZT_CHECK(ck == NULL);
    zs_ckpt_close(ck);
}

static void test_bad_files(void) {
    char d[300], p[400], cmd[900];
    snprintf(d, sizeof d, "%s-bad", g_dir);
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", d, d);
    run(cmd);
    /* too short for the length prefix */
    snprintf(p, sizeof p, "%s/short.safetensors", d);
    ZT_REQUIRE(write_file(p, "abc", 3) == 0);
    expect_open_error(p, ZS_EFORMAT, "too short");
    /* header length larger than the file */
    snprintf(p, sizeof p, "%s/hlen.safetensors", d);
    unsigned char big[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    ZT_REQUIRE(write_file(p, big, sizeof big) == 0);
    expect_open_error(p, ZS_EFORMAT, "does not fit");
    /* header length above the cap */
    unsigned char huge[16] = {0, 0, 0, 0, 0, 1, 0, 0};
    ZT_REQUIRE(write_file(p, huge, sizeof huge) == 0);
    expect_open_error(p, ZS_EFORMAT, "cap");
    /* tensor data cut off */
    snprintf(p, sizeof p, "%s/trunc.safetensors", d);
    float data[4] = {1, 2, 3, 4};
    ZT_REQUIRE(write_st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data, 8) == 0);
    expect_open_error(p, ZS_EFORMAT, "trunc.safetensors: tensor 'w'");
    /* missing path; directory with nothing in it */
    snprintf(p, sizeof p, "%s/missing", d);
    expect_open_error(p, ZS_ENOENT, "missing");
    snprintf(p, sizeof p, "%s/empty", d);
    mkdir(p, 0755);
    expect_open_error(p, ZS_ENOENT, "no model.safetensors");
}

static void test_bad_index(void) {
    char d[300], p[400], cmd[900];
    snprintf(d, sizeof d, "%s-idx", g_dir);
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r %s %s", d, g_dir, d);
    run(cmd);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    const char *escape = "{\"weight_map\":{\"a\":\"../model-00001-of-00002.safetensors\"}}";
    ZT_REQUIRE(write_file(p, escape, strlen(escape)) == 0);
    expect_open_error(d, ZS_EFORMAT, "inside the model directory");
    const char *missing = "{\"weight_map\":{\"a\":\"nope.safetensors\"}}";
    ZT_REQUIRE(write_file(p, missing, strlen(missing)) == 0);
    expect_open_error(d, ZS_ENOENT, "nope.safetensors");
    const char *partial = "{\"weight_map\":{\"model.norm.weight\":\"model-00002-of-00002.safetensors\"}}";
    ZT_REQUIRE(write_file(p, partial, strlen(partial)) == 0);
    expect_open_error(d, ZS_EFORMAT, "not listed in the index");
    ZT_REQUIRE(write_file(p, "{\"weight_map\":", 14) == 0);
    expect_open_error(d, ZS_EFORMAT, "invalid JSON");
    ZT_REQUIRE(write_file(p, "{}", 2) == 0);
    expect_open_error(d, ZS_EFORMAT, "weight_map");
}

static void test_truncated_after_open(void) {
    char d[300], cmd[900], p[400];
    snprintf(d, sizeof d, "%s-late", g_dir);
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r %s %s", d, g_dir, d);
    run(cmd);
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(d, &ck, &err) == ZS_OK);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d);
    ZT_REQUIRE(truncate(p, 1000) == 0);
    for (int direct = -1; direct <= 1; direct++) {
        zs_load_opts_t o;
        zs_load_opts_default(&o);
        o.direct_io = direct;
        o.chunk_bytes = 8192;
        zs_weights_t *w = NULL;
        zs_err_clear(&err);
        int rc = zs_load(ck, &o, &w, &err);
        ZT_CHECK(rc == ZS_EIO);
        ZT_CHECK(w == NULL);
        ZT_CHECK_STR_CONTAINS(err.msg, "model-00002-of-00002.safetensors");
        ZT_CHECK_STR_CONTAINS(err.msg, "offset");
    }
    zs_ckpt_close(ck);
}

static void test_tmpfs_without_o_direct(void) {
    struct stat st;
    if (stat("/dev/shm", &st) != 0) {
        fprintf(stderr, "  (no /dev/shm: tmpfs case not run)\n");
        return;
    }
    char d[128], cmd[600];
    snprintf(d, sizeof d, "/dev/shm/zs-test-%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r %s %s", d, g_dir, d);
    run(cmd);
    load_and_verify(d, 2, 4096, 1);
    load_and_verify(d, 2, 65536, -1);
    snprintf(cmd, sizeof cmd, "rm -rf %s", d);
    run(cmd);
}

static void test_opts_validation(void) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_REQUIRE(zs_ckpt_open(g_dir, &ck, &err) == ZS_OK);
    zs_load_opts_t o;
    zs_load_opts_default(&o);
    o.chunk_bytes = 1000;
    zs_weights_t *w = NULL;
    ZT_CHECK(zs_load(ck, &o, &w, &err) == ZS_EINVAL);
    zs_load_opts_default(&o);
    o.device.kind = ZS_DEV_CUDA;
    zs_err_clear(&err);
    ZT_CHECK(zs_load(ck, &o, &w, &err) != ZS_OK); /* no GPU in this build */
    ZT_CHECK(w == NULL);
    zs_device_t dev;
    ZT_CHECK(zs_device_parse("cuda:3", &dev, &err) == ZS_OK && dev.kind == ZS_DEV_CUDA && dev.index == 3);
    ZT_CHECK(zs_device_parse("cpu", &dev, &err) == ZS_OK && dev.kind == ZS_DEV_CPU);
    zs_err_clear(&err);
    ZT_CHECK(zs_device_parse("cuda:-1", &dev, &err) == ZS_EINVAL);
    ZT_CHECK(zs_device_parse("gpu", &dev, NULL) == ZS_EINVAL);
    ZT_CHECK(zs_device_parse("cuda:1x", &dev, NULL) == ZS_EINVAL);
    zs_ckpt_close(ck);
}

int main(void) {
    char tmpl[] = "/tmp/zs-loader-XXXXXX";
    if (mkdtemp(tmpl) == NULL) return 1;
    snprintf(g_dir, sizeof g_dir, "%s/tiny", tmpl);
    zs_err_t err = {0};
    if (zs_synth_write(g_dir, zs_synth_shape("tiny"), 7, &err) != ZS_OK) {
        fprintf(stderr, "synth: %s\n", err.msg);
        return 1;
    }
    ZT_RUN(test_load_matches_files);
    ZT_RUN(test_readahead_strategy);
    ZT_RUN(test_layer_readiness);
    ZT_RUN(test_concurrent_loads);
    ZT_RUN(test_plan_order_and_padding);
    ZT_RUN(test_bad_files);
    ZT_RUN(test_bad_index);
    ZT_RUN(test_truncated_after_open);
    ZT_RUN(test_tmpfs_without_o_direct);
    ZT_RUN(test_opts_validation);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpl);
    run(cmd);
    return ZT_DONE();
}
