/* libFuzzer target: model.safetensors.index.json content in a model directory that holds
 * one valid shard; the directory is opened (index parsed and cross-checked). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zerostart/ckpt.h"

static char g_dir[64];

static void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/zs-fuzz-idx-%d", (int)getpid());
    mkdir(g_dir, 0755);
    char p[128];
    snprintf(p, sizeof p, "%s/a.safetensors", g_dir);
    const char hdr[] = "{\"x\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
    FILE *f = fopen(p, "wb");
    if (f == NULL) return;
    uint64_t n = sizeof hdr - 1;
    fwrite(&n, 8, 1, f);
    fwrite(hdr, 1, n, f);
    fwrite("ab", 1, 2, f);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (g_dir[0] == '\0') setup();
    char p[128];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", g_dir);
    FILE *f = fopen(p, "wb");
    if (f == NULL) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    if (zs_ckpt_open(g_dir, &ck, &err) == ZS_OK) {
        if (zs_ckpt_find(ck, "x") == NULL) __builtin_trap();
        zs_ckpt_close(ck);
    } else if (err.msg[0] == '\0') {
        __builtin_trap(); /* every failure must say why */
    }
    return 0;
}
