/* Test driver for the Python round-trip tests (tests/py/test_load_roundtrip.py).
 *   test_load_driver                      quick self-test (so the C runner counts it)
 *   test_load_driver dump PATH OUTDIR [THREADS CHUNK DIRECT]
 *       loads PATH on the CPU and writes OUTDIR/manifest.tsv (index, name, dtype, shape,
 *       bytes) and OUTDIR/<index>.bin with each tensor's loaded bytes.
 * Errors go to stderr with exit code 1. Built with ASan + UBSan like every unit test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zerostart/ckpt.h"
#include "zerostart/load.h"
#include "zt.h"

static int dump(const char *path, const char *out, int threads, long chunk, int direct) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    if (zs_ckpt_open(path, &ck, &err) != ZS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    zs_load_opts_t o;
    zs_load_opts_default(&o);
    o.threads = threads;
    o.chunk_bytes = (size_t)chunk;
    o.direct_io = direct;
    zs_weights_t *w = NULL;
    if (zs_load(ck, &o, &w, &err) != ZS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        zs_ckpt_close(ck);
        return 1;
    }
    char p[4096];
    snprintf(p, sizeof p, "%s/manifest.tsv", out);
    FILE *m = fopen(p, "w");
    int rc = m ? 0 : 1;
    for (size_t i = 0; i < w->ntensors && rc == 0; i++) {
        const zs_tensor_info_t *t = w->tensors[i].info;
        fprintf(m, "%zu\t%s\t%s\t", i, t->name, zs_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) fprintf(m, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        fprintf(m, "\t%llu\n", (unsigned long long)t->nbytes);
        snprintf(p, sizeof p, "%s/%zu.bin", out, i);
        FILE *b = fopen(p, "wb");
        if (b == NULL || fwrite(w->tensors[i].data, 1, t->nbytes, b) != t->nbytes) rc = 1;
        if (b && fclose(b) != 0) rc = 1;
    }
    if (m && fclose(m) != 0) rc = 1;
    if (rc) fprintf(stderr, "writing the dump to %s failed\n", out);
    zs_weights_free(w);
    zs_ckpt_close(ck);
    return rc;
}

static void test_self(void) {
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    ZT_CHECK(zs_ckpt_open("/nonexistent/zs-model", &ck, &err) == ZS_ENOENT);
    ZT_CHECK_STR_CONTAINS(err.msg, "/nonexistent/zs-model");
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "dump") == 0) {
        int threads = argc > 4 ? atoi(argv[4]) : 4;
        long chunk = argc > 5 ? atol(argv[5]) : 4L << 20;
        int direct = argc > 6 ? atoi(argv[6]) : -1;
        return dump(argv[2], argv[3], threads, chunk, direct);
    }
    ZT_RUN(test_self);
    return ZT_DONE();
}
