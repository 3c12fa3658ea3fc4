/* libFuzzer target: a whole .safetensors file (length prefix, header, data) written to a
 * temporary file, opened, loaded to host memory and verified byte for byte. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "zerostart/ckpt.h"
#include "zerostart/load.h"
#include "zerostart/verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (path[0] == '\0') snprintf(path, sizeof path, "/tmp/zs-fuzz-st-%d.safetensors", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (f == NULL) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    zs_err_t err = {0};
    zs_ckpt_t *ck = NULL;
    if (zs_ckpt_open(path, &ck, &err) == ZS_OK) {
        zs_load_opts_t o;
        zs_load_opts_default(&o);
        o.threads = 2;
        o.chunk_bytes = 4096;
        zs_weights_t *w = NULL;
        if (zs_load(ck, &o, &w, &err) == ZS_OK) {
            if (zs_weights_verify(w, NULL, &err) != ZS_OK) __builtin_trap();
            zs_weights_free(w);
        }
        zs_ckpt_close(ck);
    }
    unlink(path);
    return 0;
}
