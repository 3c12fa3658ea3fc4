/* `zerostart probe`: measures the ceilings a load runs against — storage (O_DIRECT), page
 * cache (buffered, best over thread counts and chunk sizes) and pinned host->GPU copies —
 * and prints them as one JSON object. */
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

int zs_cmd_probe(int argc, char **argv) {
    const char *files[256];
    int nfiles = 0, nthreads = 1, nchunks = 1, direct = 0, cache = 0;
    uint64_t threads[PROBE_MAX] = {16}, chunks[PROBE_MAX] = {4u << 20}, h2d = 0;
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
    if (h2d) {
        zs_bw_result_t r;
        if (zs_bw_h2d(0, (size_t)h2d, 4, 5, &r, &err) != ZS_OK) {
            fprintf(stderr, "zerostart probe: %s\n", err.msg);
            return 1;
        }
        printf("%s\"h2d_pinned\":{\"gbps\":%.3f,\"seconds\":%.4f,\"bytes\":%.0f}", sep, r.gbps, r.seconds, r.bytes);
    }
    printf("}\n");
    return 0;
bad:
    fprintf(stderr, "usage: zerostart probe [--disk] [--cache] [--threads N[,N...]] [--chunk S[,S...]] "
                    "[--h2d SIZE] FILE...\n");
    return 2;
}
