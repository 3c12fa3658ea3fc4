/* `zerostart pool ls|warm|evict|verify`: what is in the hot model pool, filling it, removing
 * a model, checking a segment's content hash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "common/clock.h"
#include "zerostart/pool.h"

static int pool_usage(void) {
    fprintf(stderr, "usage: zerostart pool ls [--pool-dir DIR]\n"
                    "       zerostart pool warm MODEL_DIR [--pool-dir DIR] [--pool-size SIZE]\n"
                    "       zerostart pool evict MODEL_DIR [--pool-dir DIR]\n"
                    "       zerostart pool verify MODEL_DIR [--pool-dir DIR]\n");
    return 2;
}

const char *zs_cli_pool_source_name(int how) {
    return how == ZS_POOL_HIT ? "hit" : how == ZS_POOL_FILLED ? "filled from storage"
                                                              : "refilled (checkpoint changed)";
}

static int pool_ls(zs_pool_t *p) {
    zs_err_t err = {0};
    zs_pool_entry_t *e;
    size_t n;
    if (zs_pool_list(p, &e, &n, &err) != ZS_OK) {
        fprintf(stderr, "zerostart pool: %s\n", err.msg);
        return 1;
    }
    printf("%-8s %-6s %12s  %-19s  %-16s  %s\n", "state", "in use", "bytes", "last used", "content hash", "model");
    for (size_t i = 0; i < n; i++) {
        char when[32] = "-";
        time_t t = (time_t)(e[i].last_used_ns / 1000000000);
        struct tm tm;
        if (e[i].last_used_ns > 0 && localtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        printf("%-8s %-6s %12llu  %-19s  %016llx  %s\n", e[i].state == ZS_POOL_READY ? "ready" : "filling",
               e[i].in_use ? "yes" : "no", (unsigned long long)e[i].bytes, when,
               (unsigned long long)e[i].content_hash, e[i].model_dir);
    }
    free(e);
    return 0;
}

int zs_cmd_pool(int argc, char **argv) {
    if (argc < 2) return pool_usage();
    const char *verb = argv[1], *model = NULL;
    zs_pool_opts_t po = {0};
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--pool-dir") == 0 && i + 1 < argc) po.dir = argv[++i];
        else if (strcmp(argv[i], "--pool-size") == 0 && i + 1 < argc) {
            if (zs_cli_parse_size(argv[++i], &po.capacity) != 0) return pool_usage();
        } else if (argv[i][0] != '-' && model == NULL) model = argv[i];
        else return pool_usage();
    }
    int needs_model = strcmp(verb, "ls") != 0;
    if (needs_model != (model != NULL)) return pool_usage();
    if (strcmp(verb, "ls") && strcmp(verb, "warm") && strcmp(verb, "evict") && strcmp(verb, "verify"))
        return pool_usage();
    zs_err_t err = {0};
    zs_pool_t *p = NULL;
    if (zs_pool_open(&po, &p, &err) != ZS_OK) {
        fprintf(stderr, "zerostart pool: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (strcmp(verb, "ls") == 0) {
        rc = pool_ls(p);
    } else if (strcmp(verb, "evict") == 0) {
        if (zs_pool_evict(p, model, &err) != ZS_OK) rc = 1;
        else printf("evicted %s\n", model);
    } else {
        zs_ckpt_t *ck = NULL;
        zs_pool_model_t *m = NULL;
        zs_pool_source_t how = ZS_POOL_HIT;
        double t0 = zs_now();
        if (zs_ckpt_open(model, &ck, &err) != ZS_OK) rc = 1;
        else if (strcmp(verb, "warm") == 0 ? zs_pool_acquire(p, ck, &m, &how, &err) != ZS_OK
                                           : zs_pool_attach(p, ck, &m, &err) != ZS_OK)
            rc = 1;
        else if (strcmp(verb, "verify") == 0 && zs_pool_model_verify(m, &err) != ZS_OK)
            rc = 1;
        if (rc == 0) {
            char b[32];
            printf("%s: %s, %s in %.3f s, content hash %016llx\n", model,
                   strcmp(verb, "verify") == 0 ? "verified" : zs_cli_pool_source_name(how),
                   zs_cli_fmt_bytes(zs_pool_model_bytes(m), b, sizeof b), zs_now() - t0,
                   (unsigned long long)zs_pool_model_hash(m));
        }
        zs_pool_release(m);
        zs_ckpt_close(ck);
    }
    if (rc != 0) fprintf(stderr, "zerostart pool %s: %s\n", verb, err.msg);
    zs_pool_close(p);
    return rc;
}
