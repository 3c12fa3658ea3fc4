/* `zerostart probe`: measures the ceilings a load runs against — storage (O_DIRECT), page
 * cache (buffered, best over thread counts and chunk sizes) and pinned host->GPU copies (with
 * --gpus N: into GPUs 0..N-1 at the same time, the ceiling of a tensor-parallel load) — and
 * prints them as one JSON object. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "zerostart/bandwidth.h"
#include "zerostart/load.h"

#define PROBE_MAX 16

/* Parses a comma-separated list of ints or sizes. */
static int parse_list(const char *s, int sizes, uint64_t *out, int *n) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == PROBE_MAX) return -1;
        long v;
        if (sizes ? zs_cli_parse_size(tok, &out[*n]) != 0
                  : (zs_cli_parse_int(tok, 1, 1024, &v) != 0 || (out[*n] = (uint64_t)v, 0)))
            return -1;
        (*n)++;
    }
    return *n > 0 ? 0 : -1;
}

typedef struct h2d_job {
    int dev;
    size_t bytes;
    int rc;
    zs_bw_result_t r;
    zs_err_t err;
} h2d_job_t;

static void *h2d_run(void *arg) {
    h2d_job_t *j = arg;
    j->rc = zs_bw_h2d(j->dev, j->bytes, 4, 5, &j->r, &j->err);
    return NULL;
}

/* Pinned host->GPU copies into GPUs 0..ngpus-1 at once, one thread each (each GPU's best
 * repetition; the repetitions of different GPUs overlap but are not synchronised). */
static int probe_h2d(size_t bytes, int ngpus, const char *sep) {
    h2d_job_t jobs[64];
    pthread_t th[64];
    int started[64] = {0};
    for (int g = 0; g < ngpus; g++) {
        jobs[g] = (h2d_job_t){.dev = g, .bytes = bytes};
        if (ngpus == 1) h2d_run(&jobs[g]);
        else if (pthread_create(&th[g], NULL, h2d_run, &jobs[g]) == 0) started[g] = 1;
        else jobs[g].rc = zs_err_set(&jobs[g].err, ZS_ENOMEM, "cannot start a thread for GPU %d", g);
    }
    for (int g = 0; g < ngpus; g++)
        if (started[g]) pthread_join(th[g], NULL);
    for (int g = 0; g < ngpus; g++)
        if (jobs[g].rc != ZS_OK) {
            fprintf(stderr, "zerostart probe: GPU %d: %s\n", g, jobs[g].err.msg);
            return 1;
        }
    printf("%s\"h2d_pinned\":{\"gbps\":%.3f,\"seconds\":%.4f,\"bytes\":%.0f}", sep, jobs[0].r.gbps,
           jobs[0].r.seconds, jobs[0].r.bytes);
    if (ngpus > 1) {
        double sum = 0;
        printf(",\"h2d_gpus\":[");
        for (int g = 0; g < ngpus; g++) {
            printf("%s{\"gpu\":%d,\"gbps\":%.3f}", g ? "," : "", g, jobs[g].r.gbps);
            sum += jobs[g].r.gbps;
        }
        printf("],\"h2d_concurrent_sum_gbps\":%.3f", sum);
    }
    return 0;
}

int zs_cmd_probe(int argc, char **argv) {
    const char *files[256];
    int nfiles = 0, nthreads = 1, nchunks = 1, direct = 0, cache = 0;
    uint64_t threads[PROBE_MAX] = {16}, chunks[PROBE_MAX] = {4u << 20}, h2d = 0;
    long ngpus = 1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(o, "--disk") == 0) direct = 1;
        else if (strcmp(o, "--cache") == 0) cache = 1;
        else if (strcmp(o, "--threads") == 0 && v) {
            if (parse_list(argv[++i], 0, threads, &nthreads) != 0) goto bad;
        } else if (strcmp(o, "--chunk") == 0 && v) {
            if (parse_list(argv[++i], 1, chunks, &nchunks) != 0) goto bad;
        } else if (strcmp(o, "--h2d") == 0 && v) {
            if (zs_cli_parse_size(argv[++i], &h2d) != 0 || h2d == 0) goto bad;
        } else if (strcmp(o, "--gpus") == 0 && v) {
            if (zs_cli_parse_int(argv[++i], 1, 64, &ngpus) != 0) goto bad;
        } else if (o[0] != '-' && nfiles < 256) files[nfiles++] = o;
        else goto bad;
    }
    if ((direct || cache) && nfiles == 0) goto bad;
    zs_err_t err = {0};
    printf("{");
    const char *sep = "";
    for (int pass = 0; pass < 2; pass++) {
        int is_disk = pass == 0;
        if ((is_disk && !direct) || (!is_disk && !cache)) continue;
        zs_bw_result_t best = {0};
        uint64_t bt = 0, bc = 0;
        for (int a = 0; a < nthreads; a++)
            for (int b = 0; b < nchunks; b++) {
                zs_bw_result_t r;
                if (zs_bw_read_files(files, nfiles, is_disk, (int)threads[a], (size_t)chunks[b], &r, &err) != ZS_OK) {
                    fprintf(stderr, "zerostart probe: %s\n", err.msg);
                    return 1;
                }
                fprintf(stderr, "%s threads=%llu chunk=%llu: %.2f GB/s\n", is_disk ? "disk" : "cache",
                        (unsigned long long)threads[a], (unsigned long long)chunks[b], r.gbps);
                if (r.gbps > best.gbps) {
                    best = r;
                    bt = threads[a];
                    bc = chunks[b];
                }
            }
        printf("%s\"%s\":{\"gbps\":%.3f,\"seconds\":%.4f,\"bytes\":%.0f,\"threads\":%llu,\"chunk\":%llu}", sep,
               is_disk ? "disk" : "pagecache", best.gbps, best.seconds, best.bytes, (unsigned long long)bt,
               (unsigned long long)bc);
        sep = ",";
    }
    if (h2d && probe_h2d((size_t)h2d, (int)ngpus, sep) != 0) return 1;
    printf("}\n");
    return 0;
bad:
    fprintf(stderr, "usage: zerostart probe [--disk] [--cache] [--threads N[,N...]] [--chunk S[,S...]] "
                    "[--h2d SIZE [--gpus N]] FILE...\n");
    return 2;
}
